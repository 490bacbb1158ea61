use super::*;

impl Gen<'_> {
    // ---- expressions: each pushes exactly one value ----

    pub(super) fn expr(&mut self, depth: usize) {
        let before = self.f.height;
        if depth == 0 || self.full() {
            self.leaf();
        } else {
            self.compound(depth - 1);
        }
        assert_eq!(self.f.height, before + 1, "an expression pushes one value");
    }

    pub(super) fn leaf(&mut self) {
        if !self.f.names.is_empty() && self.chance(1, 2) {
            let local = self.below(self.f.names.len());
            self.load(local);
        } else {
            let v = self.value();
            self.push(v);
        }
    }

    pub(super) fn compound(&mut self, depth: usize) {
        let normal = self.f.mode == Mode::Normal;
        let memory = self.f.mode != Mode::Pure;
        let loops = self.f.nest < MAX_NEST && self.affordable(MAX_TRIPS * 20);
        let callees = self.callees();
        let tee = !self.assignable().is_empty();
        // Small callees are what an inliner is for: called twice as often.
        let calls = match (callees.is_empty(), self.profile.small_callees) {
            (true, _) => 0,
            (false, false) => 3,
            (false, true) => 6,
        };
        match self.weighted(&[
            3,                                                  // leaf
            6,                                                  // binary operator
            4,                                                  // operator with a corner constant
            2,                                                  // unary operator
            2,                                                  // stack shuffles
            2,                                                  // conditional value
            calls,                                              // call
            if memory { 2 } else { 0 },                         // memory
            if normal && self.profile.threads { 1 } else { 0 }, // spawn and join at once
            if loops { 1 } else { 0 },                          // statements under a live value
            if loops { 1 } else { 0 }, // loop that accumulates on the stack
            if tee { 1 } else { 0 },   // store a copy
            if self.may_trap(Trap::BadHandle) { 1 } else { 0 }, // join what cannot be joined
            1,                         // many values at once
        ]) {
            0 => self.leaf(),
            1 => self.binary(depth),
            2 => {
                self.expr(depth);
                let op = self.pick(CONST_OPS);
                let constant = match op {
                    BinOp::Div | BinOp::Rem
                        if self.may_trap(Trap::DivisionByZero) && self.chance(1, 12) =>
                    {
                        0
                    }
                    BinOp::Div | BinOp::Rem => self.pick(DIVISORS),
                    BinOp::Shl | BinOp::Shr | BinOp::Ushr => self.pick(SHIFTS),
                    _ => self.pick(CORNERS),
                };
                self.push(constant);
                self.bin(op);
            }
            3 => {
                self.expr(depth);
                let op = self.pick(&super::roles::UNARY);
                self.op(op);
            }
            4 => self.shuffle(depth),
            5 => {
                let (other, end) = (self.new_label(), self.new_label());
                let base = self.f.height;
                self.expr(depth);
                let jump = self.pick(&["jz", "jnz"]);
                self.emit(format!("{jump} {other}"), 1, 0);
                self.expr(depth);
                self.emit(format!("jmp {end}"), 0, 0);
                self.place(&other, base);
                self.expr(depth);
                self.place(&end, base + 1);
            }
            6 => {
                let small: Vec<usize> = if self.profile.small_callees {
                    callees
                        .iter()
                        .copied()
                        .filter(|&j| self.plans[j].small)
                        .collect()
                } else {
                    Vec::new()
                };
                let callee = if !small.is_empty() && self.chance(2, 3) {
                    self.pick(&small)
                } else {
                    self.pick(&callees)
                };
                self.call(callee, "call", depth);
            }
            7 => self.memory_op(depth),
            8 => self.spawn_join(depth, false),
            9 => {
                self.expr(depth);
                // A `jnz` out of this block would leave the value on the stack.
                let loops = std::mem::take(&mut self.f.loops);
                self.nested_block(2);
                self.f.loops = loops;
            }
            10 => self.accumulating_loop(depth),
            11 => {
                self.expr(depth);
                self.op(Instr::Dup);
                let targets = self.assignable();
                let target = self.pick(&targets);
                self.store(target);
            }
            13 => {
                // Deeper than the registers a JIT keeps the stack in.
                let width = 2 + self.below(40);
                for _ in 0..width {
                    self.leaf();
                }
                for _ in 1..width {
                    let op = self.pick(&[
                        BinOp::Add,
                        BinOp::Xor,
                        BinOp::Sub,
                        BinOp::Mul,
                        BinOp::Or,
                        BinOp::Lt,
                    ]);
                    self.bin(op);
                }
            }
            _ => {
                // Rare: the first one ends the program.
                if self.may_trap(Trap::BadHandle) && self.chance(1, 6) {
                    self.spawn_join(depth, true);
                } else if self.may_trap(Trap::BadHandle) && self.chance(1, 6) {
                    let handle = self.pick(&[0, -1, i64::MIN]);
                    self.push(handle);
                    self.op(Instr::Join);
                } else {
                    self.leaf();
                }
            }
        }
    }

    pub(super) fn binary(&mut self, depth: usize) {
        let op = self.pick(&BinOp::ALL);
        self.expr(depth);
        self.expr(depth);
        // Random divisors are often 0 (comparisons give 0 half the time); keep most
        // divisions running, and every one in code that must not trap.
        if matches!(op, BinOp::Div | BinOp::Rem)
            && (!self.may_trap(Trap::DivisionByZero) || self.chance(3, 4))
        {
            self.push(1);
            self.bin(BinOp::Or);
        }
        self.bin(op);
    }

    pub(super) fn shuffle(&mut self, depth: usize) {
        match self.below(4) {
            0 => {
                self.expr(depth);
                self.op(Instr::Dup);
                let op = self.pick(&[
                    BinOp::Add,
                    BinOp::Mul,
                    BinOp::Sub,
                    BinOp::Xor,
                    BinOp::Eq,
                    BinOp::Shl,
                ]);
                self.bin(op);
            }
            1 => {
                self.expr(depth);
                self.expr(depth);
                self.op(Instr::Swap);
                let op = self.pick(&[BinOp::Sub, BinOp::Shl, BinOp::Lt, BinOp::Ushr, BinOp::And]);
                self.bin(op);
            }
            2 => {
                self.expr(depth);
                self.expr(depth);
                self.op(Instr::Over);
                let op = self.pick(&[BinOp::Sub, BinOp::Mul, BinOp::Gt]);
                self.bin(op);
                let op = self.pick(&[BinOp::Add, BinOp::Xor, BinOp::Le]);
                self.bin(op);
            }
            _ => {
                self.expr(depth);
                self.expr(depth);
                self.op(Instr::Pop);
            }
        }
    }

    /// Arguments for `callee` and the call (or spawn) itself.
    pub(super) fn call(&mut self, callee: usize, instr: &str, depth: usize) {
        let (params, recursive) = (self.plans[callee].params, self.plans[callee].recursive);
        for i in 0..params {
            if i == 0 && recursive {
                let overflow = self.may_trap(Trap::StackOverflow)
                    && self.level_cost[callee] <= OVERFLOW_LEVEL_COST
                    && self.chance(1, 4);
                self.expr(depth);
                if overflow {
                    self.push(OVERFLOW_DEPTH);
                    self.bin(BinOp::Or);
                } else {
                    self.push(RECURSION_MASK);
                    self.bin(BinOp::And);
                }
            } else {
                self.expr(depth);
            }
        }
        let name = &self.plans[callee].name;
        self.emit(format!("{instr} {name}"), params, 1);
        let cost = self.call_cost[callee];
        self.f.cost = self.f.cost.saturating_add(self.f.mult.saturating_mul(cost));
    }

    pub(super) fn spawn_join(&mut self, depth: usize, join_twice: bool) {
        let callees: Vec<usize> = (self.f.index + 1..self.plans.len())
            .filter(|&j| self.affordable(self.call_cost[j] + SPAWN_COST))
            .collect();
        if callees.is_empty() {
            return self.leaf();
        }
        let callee = self.pick(&callees);
        self.call(callee, "spawn", depth);
        self.f.cost += self.f.mult * SPAWN_COST;
        if join_twice {
            self.op(Instr::Dup);
            self.op(Instr::Join);
            self.op(Instr::Pop);
        }
        self.op(Instr::Join);
    }

    /// Pushes a memory index: a worker's own cell, else mostly one in bounds.
    pub(super) fn index(&mut self, depth: usize) {
        if self.f.mode == Mode::Worker {
            self.load(0);
            self.push(WORKER_CELLS);
            self.bin(BinOp::Mul);
            self.push(WORKER_BASE);
            self.bin(BinOp::Add);
            self.expr(depth);
            self.push(WORKER_CELLS - 1);
            self.bin(BinOp::And);
            self.bin(BinOp::Add);
            return;
        }
        let cells = self.memory.unwrap_or(0);
        if cells > 0 && !(self.may_trap(Trap::OutOfBounds) && self.chance(1, 20)) {
            if self.chance(1, 2) {
                let cell = self.below(cells as usize) as i64;
                self.push(cell);
            } else {
                // The largest power of two that fits, minus one, masks into bounds.
                let mask = (1i64 << (63 - cells.leading_zeros())) - 1;
                self.expr(depth);
                self.push(mask);
                self.bin(BinOp::And);
            }
        } else {
            match self.below(3) {
                0 => self.push(cells),
                1 => self.push(-1),
                _ => self.expr(depth),
            }
        }
    }

    pub(super) fn memory_op(&mut self, depth: usize) {
        // Without cells every access traps: mostly ask for the size instead.
        if self.memory.unwrap_or(0) == 0 && !self.may_trap(Trap::OutOfBounds) {
            return self.op(Instr::Msize);
        }
        match self.below(4) {
            0 => {
                self.index(depth);
                self.op(Instr::Mload);
            }
            1 => {
                self.index(depth);
                self.expr(depth);
                self.op(Instr::AtomicAdd);
            }
            2 => {
                self.index(depth);
                self.expr(depth);
                self.expr(depth);
                self.op(Instr::Cas);
            }
            _ => self.op(Instr::Msize),
        }
    }
}
