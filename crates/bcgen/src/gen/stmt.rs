use super::*;

impl Gen<'_> {
    pub(super) fn counter(&mut self, depth: usize) -> usize {
        if self.chance(1, 2) {
            self.expr(depth.min(2));
            self.push(7);
            self.bin(BinOp::And);
        } else {
            let trips = self.below(MAX_TRIPS as usize + 1) as i64;
            self.push(trips);
        }
        let counter = self.new_local("c", true);
        self.store(counter);
        counter
    }

    pub(super) fn count_down(&mut self, counter: usize) {
        self.load(counter);
        self.push(1);
        self.bin(BinOp::Sub);
        self.store(counter);
    }

    /// Loop head: leaves the loop when the counter has reached 0.
    pub(super) fn exit_test(&mut self, counter: usize, done: &str) {
        self.load(counter);
        match self.below(3) {
            0 => self.emit(format!("jz {done}"), 1, 0),
            1 => {
                self.push(0);
                self.bin(BinOp::Gt);
                self.emit(format!("jz {done}"), 1, 0);
            }
            _ => {
                self.push(1);
                self.bin(BinOp::Lt);
                self.emit(format!("jnz {done}"), 1, 0);
            }
        }
    }

    pub(super) fn enter_loop(&mut self) -> u64 {
        let saved = self.f.mult;
        self.f.mult = self.f.mult.saturating_mul(MAX_TRIPS + 1);
        self.f.nest += 1;
        saved
    }

    pub(super) fn leave_loop(&mut self, saved: u64) {
        self.f.mult = saved;
        self.f.nest -= 1;
    }

    pub(super) fn accumulating_loop(&mut self, depth: usize) {
        let base = self.f.height;
        self.expr(depth);
        let counter = self.counter(depth);
        let (top, done) = (self.new_label(), self.new_label());
        let saved = self.enter_loop();
        self.place(&top, base + 1);
        self.exit_test(counter, &done);
        if self.chance(1, 4) {
            self.expr(depth);
            self.emit(format!("jnz {done}"), 1, 0);
        }
        self.expr(depth);
        let op = self.pick(&[BinOp::Add, BinOp::Xor, BinOp::Mul, BinOp::Sub, BinOp::Or]);
        self.bin(op);
        self.count_down(counter);
        self.emit(format!("jmp {top}"), 0, 0);
        self.leave_loop(saved);
        self.place(&done, base + 1);
    }

    // ---- statements: each leaves the stack as it found it ----

    pub(super) fn block(&mut self, max: usize) {
        let before = self.f.height;
        for _ in 0..self.below(max + 1) {
            if self.full() {
                break;
            }
            self.stmt();
            assert_eq!(self.f.height, before, "a statement keeps the stack height");
        }
    }

    pub(super) fn stmts(&mut self, max: usize) {
        self.block(max)
    }

    pub(super) fn stmt(&mut self) {
        let normal = self.f.mode == Mode::Normal;
        let nested = self.f.nest < MAX_NEST;
        let loops = nested && self.affordable(MAX_TRIPS * 20);
        let can_break = self
            .f
            .loops
            .last()
            .is_some_and(|&(_, height)| height == self.f.height);
        let output = normal && self.profile.output;
        let fused = nested && self.profile.compare_branches;
        let concurrent = self.f.index == 0
            && self.f.nest == 0
            && self.f.height == 0
            && self.concurrent_sections < 2
            && self.plans.iter().any(|p| p.mode == Mode::Worker);
        // With small callees: more patches and concurrent sections, and hot loops.
        let more = if self.profile.small_callees { 2 } else { 1 };
        let patches = if normal && !self.patches.is_empty() {
            more
        } else {
            0
        };
        let sections = if concurrent { 3 * more } else { 0 };
        let hot = self.profile.small_callees && nested && !self.hot_callees().is_empty();
        match self.weighted(&[
            1,                                                // nop
            if output { 10 } else { 0 },                      // print
            if output { 1 } else { 0 },                       // putc
            if self.assignable().is_empty() { 0 } else { 3 }, // store
            if self.f.mode == Mode::Worker
                || (normal && self.memory.unwrap_or(0) > 0)
                || self.may_trap(Trap::OutOfBounds)
            {
                2
            } else {
                0
            }, // mstore
            1,                                                // pop
            if normal { 1 } else { 0 },                       // assert
            if nested { 2 } else { 0 },                       // if
            if nested { 2 } else { 0 },                       // if-else
            if loops { 3 } else { 0 },                        // loop
            if can_break { 1 } else { 0 },                    // break
            if nested && self.f.height == 0 { 1 } else { 0 }, // early return
            patches,                                          // patch
            if self.f.mode == Mode::Worker { 2 } else { 0 },  // add to the accumulator
            sections,                                         // concurrent section
            if fused { 3 } else { 0 },                        // if on a comparison
            if hot { 4 } else { 0 },                          // loop calling a small callee
        ]) {
            0 => self.op(Instr::Nop),
            1 => {
                self.expr(MAX_EXPR_DEPTH);
                self.op(Instr::Print);
            }
            2 => {
                self.expr(2);
                self.op(Instr::Putc);
            }
            3 => {
                self.expr(MAX_EXPR_DEPTH);
                let targets = self.assignable();
                let target = self.pick(&targets);
                self.store(target);
            }
            4 => {
                self.index(2);
                self.expr(MAX_EXPR_DEPTH - 1);
                self.op(Instr::Mstore);
            }
            5 => {
                self.expr(MAX_EXPR_DEPTH);
                self.op(Instr::Pop);
            }
            6 => {
                self.expr(3);
                // Most asserts hold, so programs run on past them.
                match self.below(4) {
                    0 if self.may_trap(Trap::FailedAssert) => {}
                    1 => {
                        self.push(1);
                        self.bin(BinOp::Or);
                    }
                    _ => {
                        self.op(Instr::Dup);
                        self.bin(BinOp::Eq);
                    }
                }
                self.op(Instr::Assert);
            }
            7 => {
                let skip = self.new_label();
                let base = self.f.height;
                self.expr(3);
                let jump = self.pick(&["jz", "jnz"]);
                self.emit(format!("{jump} {skip}"), 1, 0);
                self.nested_block(3);
                self.place(&skip, base);
            }
            8 => {
                let (other, end) = (self.new_label(), self.new_label());
                let base = self.f.height;
                self.expr(3);
                self.emit(format!("jz {other}"), 1, 0);
                self.nested_block(3);
                self.emit(format!("jmp {end}"), 0, 0);
                self.place(&other, base);
                self.nested_block(3);
                self.place(&end, base);
            }
            9 => self.counted_loop(),
            10 => {
                let done = self.f.loops.last().expect("in a loop").0.clone();
                self.expr(2);
                self.emit(format!("jnz {done}"), 1, 0);
            }
            11 => {
                let skip = self.new_label();
                self.expr(3);
                self.emit(format!("jz {skip}"), 1, 0);
                self.nested_block(2);
                self.expr(3);
                self.op(Instr::Ret);
                self.place(&skip, 0);
            }
            12 => {
                let (f, g) = self.pick(&self.patches.clone());
                let (f, g) = (self.plans[f].name.clone(), self.plans[g].name.clone());
                self.emit(format!("patch {f} {g}"), 0, 0);
            }
            13 => {
                self.push(ACCUMULATOR);
                self.expr(2);
                self.op(Instr::AtomicAdd);
                self.op(Instr::Pop);
            }
            14 => self.concurrent_section(),
            15 => {
                // `CMP; jz/jnz`: the pair the lowering fuses into one branch.
                let skip = self.new_label();
                let base = self.f.height;
                self.expr(3);
                self.expr(3);
                let comparisons: Vec<BinOp> = BinOp::ALL
                    .into_iter()
                    .filter(|op| op.is_comparison())
                    .collect();
                let cmp = self.pick(&comparisons);
                self.bin(cmp);
                let jump = self.pick(&["jz", "jnz"]);
                self.emit(format!("{jump} {skip}"), 1, 0);
                self.nested_block(3);
                self.place(&skip, base);
            }
            _ => self.hot_loop(),
        }
    }

    pub(super) fn nested_block(&mut self, max: usize) {
        self.f.nest += 1;
        self.block(max);
        self.f.nest -= 1;
    }

    pub(super) fn counted_loop(&mut self) {
        let base = self.f.height;
        let counter = self.counter(2);
        let (top, done) = (self.new_label(), self.new_label());
        let saved = self.enter_loop();
        self.f.loops.push((done.clone(), base));
        self.place(&top, base);
        if self.chance(1, 3) {
            // Test at the bottom: the body runs at least once.
            self.block(4);
            self.load(counter);
            self.push(1);
            self.bin(BinOp::Sub);
            self.op(Instr::Dup);
            self.store(counter);
            self.push(0);
            self.bin(BinOp::Gt);
            self.emit(format!("jnz {top}"), 1, 0);
        } else {
            self.exit_test(counter, &done);
            self.block(4);
            self.count_down(counter);
            self.emit(format!("jmp {top}"), 0, 0);
        }
        self.f.loops.pop();
        self.leave_loop(saved);
        self.place(&done, base);
    }

    /// `main` spawns workers on distinct slots, joins them in some order, then reads
    /// their cells. Nothing between the spawns and the last join prints, traps or touches
    /// memory, so the output is the same whatever the threads' timing.
    pub(super) fn concurrent_section(&mut self) {
        let workers: Vec<usize> = (1..self.plans.len())
            .filter(|&j| self.plans[j].mode == Mode::Worker)
            .collect();
        let count = 1 + self.below(MAX_WORKERS as usize);
        let mut handles = Vec::new();
        self.f.mode = Mode::Pure;
        for slot in 0..count {
            let worker = self.pick(&workers);
            if !self.affordable(self.call_cost[worker] + SPAWN_COST) {
                break;
            }
            self.push(slot as i64);
            for _ in 1..self.plans[worker].params {
                self.expr(2);
            }
            let name = self.plans[worker].name.clone();
            self.emit(format!("spawn {name}"), self.plans[worker].params, 1);
            self.f.cost += self.call_cost[worker] + SPAWN_COST;
            let handle = self.new_local("h", true);
            self.store(handle);
            handles.push(handle);
        }
        self.f.mode = Mode::Normal;
        if handles.is_empty() {
            return;
        }
        if self.profile.small_callees {
            self.patch_twins_while_workers_run();
        }
        self.concurrent_sections += 1;
        let mut order = handles.clone();
        for i in (1..order.len()).rev() {
            let j = self.below(i + 1);
            order.swap(i, j);
        }
        for handle in order {
            self.load(handle);
            self.op(Instr::Join);
            self.op(Instr::Print);
        }
        for slot in 0..handles.len() as i64 {
            for cell in 0..WORKER_CELLS {
                self.push(WORKER_BASE + slot * WORKER_CELLS + cell);
                self.op(Instr::Mload);
                self.op(Instr::Print);
            }
        }
        self.push(ACCUMULATOR);
        self.op(Instr::Mload);
        self.op(Instr::Print);
    }
}
