use super::*;

impl Gen<'_> {
    pub(super) fn function(&mut self, index: usize) -> String {
        let plan = &self.plans[index];
        let (params, mode, recursive) = (plan.params, plan.mode, plan.recursive);
        let (small, twin) = (plan.small, plan.twin);
        let limit = match (index, recursive) {
            (0, _) => self.profile.main_cost_limit,
            (_, true) => FUNC_COST_LIMIT / (RECURSION_MASK as u64 + 2),
            _ => FUNC_COST_LIMIT,
        };
        self.f = Body {
            index,
            mode,
            lines: Vec::new(),
            names: (0..params).map(|i| format!("p{i}")).collect(),
            protected: vec![false; params],
            height: 0,
            mult: 1,
            cost: 0,
            limit,
            labels: 0,
            loops: Vec::new(),
            nest: 0,
            small_loaded: false,
            small_called: false,
        };
        if mode == Mode::Worker || recursive {
            self.f.protected[0] = true;
        }
        let locals = if small {
            0
        } else {
            match self.below(8) {
                7 => 4 + self.below(12),
                n => n / 2,
            }
        };
        for _ in 0..locals {
            self.new_local("v", false);
        }

        if let Some(original) = twin {
            let (lines, cost) = self.small_bodies[original]
                .clone()
                .expect("a twin copies a later function, generated before it");
            (self.f.lines, self.f.cost) = (lines, cost);
        } else {
            self.body(index, recursive);
            self.op(Instr::Ret);
        }
        assert_eq!(self.f.height, 0, "the generator keeps stack heights");
        if small {
            self.small_bodies[index] = Some((self.f.lines.clone(), self.f.cost));
        }

        let levels = RECURSION_MASK as u64 + 2;
        let mut cost = if recursive {
            self.f.cost * levels
        } else {
            self.f.cost
        };
        let mut level = self.f.cost;
        for &(f, g) in &self.patches {
            if f == index {
                cost = cost.max(self.call_cost[g]);
                level = level.max(self.level_cost[g]);
            }
        }
        self.call_cost[index] = cost;
        self.level_cost[index] = level;

        let mut out = String::new();
        let name = self.plans[index].name.clone();
        let separator = if self.chance(1, 4) { " , " } else { ", " };
        let params = self.f.names[..params].join(separator);
        if self.chance(1, 5) {
            out.push_str(&format!("func {name} ( {params} )\n"));
        } else {
            out.push_str(&format!("func {name}({params})\n"));
        }
        for local in &self.f.names[self.plans[index].params..] {
            out.push_str(&format!("  local {local}\n"));
        }
        for line in &self.f.lines {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("end\n");
        out
    }

    /// The code of a function that is not a twin, up to the value its `ret` returns.
    fn body(&mut self, index: usize, recursive: bool) {
        let params = self.plans[index].params;
        if self.plans[index].small {
            return self.small_body();
        }
        if recursive {
            let recurse = self.new_label();
            self.load(0);
            if self.chance(1, 2) {
                self.push(0);
                self.bin(BinOp::Gt);
                self.emit(format!("jnz {recurse}"), 1, 0);
            } else {
                self.push(1);
                self.bin(BinOp::Lt);
                self.emit(format!("jz {recurse}"), 1, 0);
            }
            self.stmts(3);
            self.expr(MAX_EXPR_DEPTH);
            self.op(Instr::Ret);
            self.place(&recurse, 0);
            self.stmts(4);
            self.load(0);
            self.push(1);
            self.bin(BinOp::Sub);
            for _ in 1..params {
                self.expr(2);
            }
            self.emit(format!("call {}", self.plans[index].name), params, 1);
            if self.chance(1, 2) {
                self.expr(2);
                let op = self.pick(&[BinOp::Add, BinOp::Sub, BinOp::Xor, BinOp::Mul]);
                self.bin(op);
            }
        } else {
            self.stmts(12);
            let output = self.profile.output;
            if index == 0 && output {
                // What main computed shows even when it printed little.
                for local in 0..self.f.names.len() {
                    self.load(local);
                    self.op(Instr::Print);
                }
            }
            if index == 0 && self.chance(3, 4) && output {
                self.push(0);
            } else {
                self.expr(MAX_EXPR_DEPTH);
            }
            if index == 0 && !output {
                // Without output, what main computed shows in its result.
                for local in 0..self.f.names.len() {
                    self.load(local);
                    self.bin(BinOp::Xor);
                }
            }
        }
    }

    /// Whether the code being generated may hit this trap on purpose. Pure and worker code
    /// never traps, so threads that run at once cannot race to report different traps.
    pub(super) fn may_trap(&self, trap: Trap) -> bool {
        self.f.mode == Mode::Normal
            && match trap {
                Trap::DivisionByZero => self.traps.division_by_zero,
                Trap::OutOfBounds => self.traps.out_of_bounds,
                Trap::BadHandle => self.traps.bad_handle,
                Trap::FailedAssert => self.traps.failed_assert,
                Trap::StackOverflow => self.traps.stack_overflow,
            }
    }

    // ---- emission ----

    pub(super) fn emit(&mut self, instr: impl Into<String>, pops: usize, pushes: usize) {
        let instr = instr.into();
        assert!(self.f.height >= pops, "{instr} pops from an empty stack");
        self.f.height = self.f.height - pops + pushes;
        self.f.cost += self.f.mult;
        // Comments and blank lines now and then, without spending the input's bytes.
        let line = match self.f.lines.len() % 23 {
            7 => format!("  {instr} ; note"),
            15 => format!("\n\t{instr}"),
            _ => format!("  {instr}"),
        };
        self.f.lines.push(line);
    }

    /// A binary operator: `[a b] -> [a OP b]`.
    pub(super) fn bin(&mut self, op: BinOp) {
        self.emit(op.mnemonic(), 2, 1);
    }

    /// An instruction without operands, with its stack effect from the bytecode table.
    pub(super) fn op(&mut self, instr: Instr) {
        let (pops, pushes) = instr.stack_effect(|_| 0);
        self.emit(instr.mnemonic(), pops as usize, pushes as usize);
    }

    pub(super) fn new_label(&mut self) -> String {
        self.f.labels += 1;
        format!("L{}", self.f.labels)
    }

    /// Places a label that jumps reach with `height` (and so may the fall-through).
    pub(super) fn place(&mut self, label: &str, height: usize) {
        self.f.lines.push(format!("{label}:"));
        self.f.height = height;
    }

    pub(super) fn new_local(&mut self, prefix: &str, protected: bool) -> usize {
        let index = self.f.names.len();
        self.f.names.push(format!("{prefix}{index}"));
        self.f.protected.push(protected);
        index
    }

    /// A local operand: usually its name, sometimes its index in decimal or hex.
    pub(super) fn operand(&self, local: usize) -> String {
        match self.f.lines.len() % 13 {
            3 => local.to_string(),
            9 => format!("0x{local:x}"),
            _ => self.f.names[local].clone(),
        }
    }

    pub(super) fn load(&mut self, local: usize) {
        let operand = self.operand(local);
        self.emit(format!("load {operand}"), 0, 1);
    }

    pub(super) fn store(&mut self, local: usize) {
        let operand = self.operand(local);
        self.emit(format!("store {operand}"), 1, 0);
    }

    pub(super) fn push(&mut self, v: i64) {
        let literal = match self.below(8) {
            0 if v < 0 => format!("-0x{:x}", v.unsigned_abs()),
            0 => format!("0x{v:x}"),
            1 if v >= 0 => format!("0x{v:X}"),
            _ => v.to_string(),
        };
        self.emit(format!("push {literal}"), 0, 1);
    }

    pub(super) fn full(&self) -> bool {
        self.f.lines.len() >= MAX_LINES
    }

    pub(super) fn affordable(&self, cost: u64) -> bool {
        self.f
            .cost
            .saturating_add(self.f.mult.saturating_mul(cost.max(1)))
            <= self.f.limit
    }

    pub(super) fn assignable(&self) -> Vec<usize> {
        (0..self.f.names.len())
            .filter(|&i| !self.f.protected[i])
            .collect()
    }

    /// Functions this one may call: declared later, of a kind its own kind may run.
    pub(super) fn callees(&self) -> Vec<usize> {
        (self.f.index + 1..self.plans.len())
            .filter(|&j| self.f.mode == Mode::Normal || self.plans[j].mode == Mode::Pure)
            .filter(|&j| self.affordable(self.call_cost[j]))
            .collect()
    }
}
