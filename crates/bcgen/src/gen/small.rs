//! Small callees ([`Profile::small_callees`]): the functions an inliner inlines, the loops
//! that call them, and the patches an inlined call site must notice.
//!
//! A small callee is a leaf of a few instructions on its parameters and constants: at most
//! one compare-and-branch (two `ret`s), one memory load and one call of another small
//! callee, and no loop, so it always returns. A pure one loads only cells below the
//! workers' (which no thread stores to while workers run), so workers may call it too. A
//! *twin* has the very lines of a later small callee of its shape (whose own calls go
//! further forward still), so `patch TWIN ORIGINAL` changes nothing observable: `main`
//! may do it while its workers run, as long as no other patch changes what either runs.

use super::*;

impl Gen<'_> {
    /// The kind, parameters and recursion of a small callee planned as `mode` and `params`:
    /// often the shape of the small callee planned before it, so that patches and twins
    /// find partners; else often pure, so that workers may call it.
    pub(super) fn small_shape(&mut self, mode: Mode, params: usize) -> (Mode, usize, bool) {
        let before = self.plans.iter().rev().find(|p| p.small);
        if let Some((mode, params)) = before.map(|p| (p.mode, p.params)) {
            if self.chance(1, 2) {
                return (mode, params, false);
            }
        }
        let mode = if self.chance(1, 2) { Mode::Pure } else { mode };
        (mode, params.min(3), false)
    }

    /// Once the plans are made: which small callees are twins, and patches between small
    /// callees of one shape (twins with their originals among them). Some twins and their
    /// originals are kept out of other patches, so patching one to the other never changes
    /// what runs (see [`Gen::stable_twin_patches`]).
    pub(super) fn plan_twins_and_small_patches(&mut self) {
        let workers = self.plans.iter().any(|p| p.mode == Mode::Worker);
        let pair = workers && self.chance(3, 4);
        if pair {
            // A pure twin and its original, last, for `main` to patch while workers run.
            let params = self.below(4);
            for twin in [Some(self.plans.len() + 1), None] {
                self.plans.push(Plan {
                    name: format!("f{}", self.plans.len()),
                    params,
                    mode: Mode::Pure,
                    recursive: false,
                    small: true,
                    twin,
                });
            }
        }
        let count = self.plans.len();
        let mut kept = vec![false; count];
        if pair {
            self.patches.push((count - 2, count - 1));
            (kept[count - 2], kept[count - 1]) = (true, true);
        }
        for f in 1..count {
            if !self.plans[f].small || self.plans[f].twin.is_some() {
                continue;
            }
            let originals: Vec<usize> = (f + 1..count)
                .filter(|&t| self.same_shape(f, t) && self.plans[t].twin.is_none() && !kept[t])
                .collect();
            if originals.is_empty() || !self.chance(1, 2) {
                continue;
            }
            let t = self.pick(&originals);
            self.plans[f].twin = Some(t);
            if self.chance(2, 3) {
                self.patches.push((f, t));
                let unpatched = |g: usize| self.patches.iter().all(|&(a, b)| a != g || b == g);
                if self.plans[f].mode == Mode::Pure
                    && unpatched(t)
                    && self
                        .patches
                        .iter()
                        .all(|&(a, b)| a != f || b == f || b == t)
                {
                    kept[f] = true;
                    kept[t] = true;
                }
            }
        }
        let small: Vec<usize> = (1..count)
            .filter(|&f| self.plans[f].small && !kept[f])
            .collect();
        for _ in 0..self.below(5) {
            if small.is_empty() {
                break;
            }
            let f = self.pick(&small);
            let targets: Vec<usize> = (f + 1..count).filter(|&g| self.same_shape(f, g)).collect();
            if !targets.is_empty() {
                let g = self.pick(&targets);
                self.patches.push((f, g));
            }
        }
    }

    /// Patches of a pure twin to its original that change nothing observable whenever they
    /// run: no patch makes the twin run anything but itself or its original, and none makes
    /// the original run anything but itself.
    pub(super) fn stable_twin_patches(&self) -> Vec<(usize, usize)> {
        let mut stable: Vec<(usize, usize)> = self
            .patches
            .iter()
            .copied()
            .filter(|&(f, t)| self.plans[f].twin == Some(t) && self.plans[f].mode == Mode::Pure)
            .filter(|&(f, t)| {
                self.patches
                    .iter()
                    .all(|&(a, b)| (a != f || b == f || b == t) && (a != t || b == t))
            })
            .collect();
        stable.dedup();
        stable
    }

    /// In a concurrent section, once the workers are spawned: a few patches of twins to
    /// their originals, which may land while workers run inlined copies of either.
    pub(super) fn patch_twins_while_workers_run(&mut self) {
        let stable = self.stable_twin_patches();
        if stable.is_empty() {
            return;
        }
        for _ in 0..1 + self.below(3) {
            let (f, t) = self.pick(&stable);
            let (f, t) = (self.plans[f].name.clone(), self.plans[t].name.clone());
            self.emit(format!("patch {f} {t}"), 0, 0);
        }
    }

    /// A small callee's code up to its result: a value of a few operations, or a
    /// compare-and-branch that returns one of two such values.
    pub(super) fn small_body(&mut self) {
        if self.chance(1, 3) {
            let other = self.new_label();
            self.small_operand();
            self.small_operand();
            let comparisons: Vec<BinOp> = BinOp::ALL
                .into_iter()
                .filter(|op| op.is_comparison())
                .collect();
            let cmp = self.pick(&comparisons);
            self.bin(cmp);
            let jump = self.pick(&["jz", "jnz"]);
            self.emit(format!("{jump} {other}"), 1, 0);
            self.small_value(1);
            self.op(Instr::Ret);
            self.place(&other, 0);
            self.small_value(1);
        } else {
            self.small_value(3);
        }
    }

    /// A parameter or a constant, then up to `max_ops` operations on it.
    fn small_value(&mut self, max_ops: usize) {
        self.small_operand();
        for _ in 0..self.below(max_ops + 1) {
            let load = !self.f.small_loaded && self.small_load_allowed();
            let callees = self.small_callees_here();
            match self.weighted(&[
                6,                                      // binary operator
                2,                                      // unary operator
                if load { 2 } else { 0 },               // memory load
                if callees.is_empty() { 0 } else { 2 }, // call of a small callee
            ]) {
                0 => {
                    self.small_operand();
                    let op = self.pick(&BinOp::ALL);
                    if matches!(op, BinOp::Div | BinOp::Rem)
                        && (!self.may_trap(Trap::DivisionByZero) || self.chance(3, 4))
                    {
                        self.push(1);
                        self.bin(BinOp::Or);
                    }
                    self.bin(op);
                }
                1 => {
                    let op = self.pick(&super::roles::UNARY);
                    self.op(op);
                }
                2 => {
                    self.f.small_loaded = true;
                    self.small_load();
                    let op = self.pick(&[BinOp::Add, BinOp::Xor, BinOp::Sub]);
                    self.bin(op);
                }
                _ => {
                    self.f.small_called = true;
                    let callee = self.pick(&callees);
                    for _ in 0..self.plans[callee].params {
                        self.small_operand();
                    }
                    let name = self.plans[callee].name.clone();
                    self.emit(format!("call {name}"), self.plans[callee].params, 1);
                    let cost = self.call_cost[callee];
                    self.f.cost = self.f.cost.saturating_add(self.f.mult.saturating_mul(cost));
                    let op = self.pick(&[BinOp::Add, BinOp::Xor, BinOp::Mul, BinOp::Sub]);
                    self.bin(op);
                }
            }
        }
    }

    /// A parameter (mostly) or a constant.
    fn small_operand(&mut self) {
        let params = self.plans[self.f.index].params;
        if params > 0 && self.chance(2, 3) {
            let p = self.below(params);
            self.load(p);
        } else {
            let v = self.value();
            self.push(v);
        }
    }

    /// The cells a small callee may load: a pure one only those below the workers'.
    fn small_cells(&self) -> i64 {
        let cells = self.memory.unwrap_or(0);
        match self.f.mode {
            Mode::Normal => cells,
            _ => cells.min(WORKER_BASE),
        }
    }

    /// Only with cells to load (a callee that trapped on every call would end most
    /// programs at their first loop).
    fn small_load_allowed(&self) -> bool {
        self.small_cells() > 0
    }

    /// `mload` of a cell from a parameter or a constant: in bounds, except now and then
    /// where this callee may trap.
    fn small_load(&mut self) {
        if self.f.mode == Mode::Normal {
            self.index(0);
        } else {
            // The largest power of two that fits, minus one, masks into bounds.
            let cells = self.small_cells();
            let mask = (1i64 << (63 - cells.leading_zeros())) - 1;
            self.small_operand();
            self.push(mask);
            self.bin(BinOp::And);
        }
        self.op(Instr::Mload);
    }

    /// The small callees this small callee may still call (one call each).
    fn small_callees_here(&self) -> Vec<usize> {
        if self.f.small_called {
            return Vec::new();
        }
        self.callees()
            .into_iter()
            .filter(|&j| self.plans[j].small)
            .collect()
    }

    /// Small callees this code may call every trip of a loop.
    pub(super) fn hot_callees(&self) -> Vec<usize> {
        self.callees()
            .into_iter()
            .filter(|&j| {
                self.plans[j].small && self.affordable((MAX_TRIPS + 1) * (self.call_cost[j] + 30))
            })
            .collect()
    }

    /// A loop that calls a small callee every trip, with the counter or what the calls
    /// returned so far among the arguments, and folds the results into a local: the call
    /// site an inliner is for. Where the code may patch, one trip may patch the callee (or
    /// another function), and the trips after it must run the new definition.
    pub(super) fn hot_loop(&mut self) {
        let callees = self.hot_callees();
        if callees.is_empty() {
            return self.op(Instr::Nop);
        }
        let callee = self.pick(&callees);
        let base = self.f.height;
        let sum = self.new_local("s", false);
        let counter = self.counter(2);
        let (top, done) = (self.new_label(), self.new_label());
        let saved = self.enter_loop();
        self.f.loops.push((done.clone(), base));
        self.place(&top, base);
        self.exit_test(counter, &done);
        let params = self.plans[callee].params;
        for _ in 0..params {
            match self.below(3) {
                0 => self.load(counter),
                1 => self.load(sum),
                _ => self.leaf(),
            }
        }
        let name = self.plans[callee].name.clone();
        self.emit(format!("call {name}"), params, 1);
        let cost = self.call_cost[callee];
        self.f.cost = self.f.cost.saturating_add(self.f.mult.saturating_mul(cost));
        self.load(sum);
        let op = self.pick(&[BinOp::Add, BinOp::Xor, BinOp::Sub]);
        self.bin(op);
        self.store(sum);
        if self.f.mode == Mode::Normal && !self.patches.is_empty() && self.chance(1, 2) {
            let own: Vec<(usize, usize)> = self
                .patches
                .iter()
                .copied()
                .filter(|&(f, _)| f == callee)
                .collect();
            let (f, g) = if own.is_empty() {
                self.pick(&self.patches.clone())
            } else {
                self.pick(&own)
            };
            let skip = self.new_label();
            self.load(counter);
            let trip = 1 + self.below(MAX_TRIPS as usize) as i64;
            self.push(trip);
            self.bin(BinOp::Eq);
            self.emit(format!("jz {skip}"), 1, 0);
            let (f, g) = (self.plans[f].name.clone(), self.plans[g].name.clone());
            self.emit(format!("patch {f} {g}"), 0, 0);
            self.place(&skip, base);
        }
        self.block(1);
        self.count_down(counter);
        self.emit(format!("jmp {top}"), 0, 0);
        self.f.loops.pop();
        self.leave_loop(saved);
        self.place(&done, base);
        if self.f.mode == Mode::Worker {
            self.push(ACCUMULATOR);
            self.load(sum);
            self.op(Instr::AtomicAdd);
            self.op(Instr::Pop);
        } else if self.f.mode == Mode::Normal && self.profile.output && self.chance(1, 2) {
            self.load(sum);
            self.op(Instr::Print);
        }
    }
}
