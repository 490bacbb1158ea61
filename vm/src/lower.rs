//! Lowering a verified stack-machine function to the interpreter's register encoding.
//!
//! The verifier fixes the operand stack height before every instruction, so the value at
//! height `h` can live in a fixed frame slot: `slots + h` (parameters and locals come first).
//! That turns the stack machine into a register machine whose registers are frame slots,
//! and every instruction can name its operands directly instead of pushing and popping.
//!
//! Lowering walks each basic block with a *virtual stack*: `load x` and `push c` emit no code,
//! they push a reference to slot `x` or the constant `c`; the instruction that consumes them
//! reads the slot or embeds the constant. `load i; push 7; rem` becomes one `RemI` op, and
//! `lt; jnz L` one `BrLt`. At block boundaries (labels, jumps) every virtual entry is written
//! to its canonical slot, so all paths agree on where values are.
//!
//! Invariant that keeps the deferred references sound: an entry may refer to a canonical slot
//! only of an entry *below* it that is itself materialized (`Canon`). Writes to a canonical slot
//! therefore happen only when its own entry is flushed or produced, when nothing refers to it;
//! writes to a local first flush every entry that still refers to that local.

use crate::bytecode::{BinOp, FuncId, Function, Instr, Module};
use crate::regcode::{LoweredFunction, Op, Slot, Target};

/// Where a value on the virtual stack is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Val {
    /// In its canonical slot (`slots + height`).
    Canon,
    /// The current value of another slot: a local, or the canonical slot of an entry below.
    Slot(Slot),
    Imm(i64),
}

/// The state of one function's lowering: the ops so far and the virtual stack.
struct Lowerer<'a> {
    module: &'a Module,
    f: &'a Function,
    /// Whether a label names instruction `i` (a block starts there).
    is_label: Vec<bool>,
    /// Op index of each source instruction, for resolving jumps at the end.
    op_index: Vec<u32>,
    ops: Vec<Op>,
    stack: Vec<Val>,
    slots: u32,
    /// First op of the current block: ops before it may be jumped over, so never retargeted.
    block_start: usize,
}

/// Lowers one verified function: a walk over its instructions, one `gen_*` method each.
pub fn lower_function(module: &Module, f: &Function) -> LoweredFunction {
    let mut lw = Lowerer::new(module, f);
    let mut i = 0;
    while i < f.code.len() {
        lw.start_instruction(i);
        i += lw.gen_instruction(i);
    }
    lw.finish()
}

/// Lowers every function of `module`, in order.
pub fn lower_module(module: &Module) -> Vec<LoweredFunction> {
    module
        .functions
        .iter()
        .map(|f| lower_function(module, f))
        .collect()
}

impl<'a> Lowerer<'a> {
    fn new(module: &'a Module, f: &'a Function) -> Self {
        let n = f.code.len();
        let mut is_label = vec![false; n + 1];
        for l in &f.labels {
            is_label[l.target as usize] = true;
        }
        Lowerer {
            module,
            f,
            is_label,
            op_index: vec![0; n + 1],
            ops: Vec::with_capacity(n),
            stack: Vec::new(),
            slots: f.num_slots(),
            block_start: 0,
        }
    }

    /// At a label, values falling into the block go to their canonical slots, where the
    /// jumps into it leave theirs; the block starts with every entry materialized.
    fn start_instruction(&mut self, i: usize) {
        if self.is_label[i] {
            if i > 0 && self.f.code[i - 1].falls_through() {
                self.flush_all();
            }
            self.stack = vec![Val::Canon; self.f.heights[i] as usize];
            self.block_start = self.ops.len();
        }
        // The verifier's height at a block start is the truth; deferred entries never cross it.
        debug_assert_eq!(self.stack.len(), self.f.heights[i] as usize);
        self.op_index[i] = self.ops.len() as u32;
    }

    /// Emits instruction `i`; returns how many instructions that consumed (2 when a
    /// comparison fuses with the jump after it).
    fn gen_instruction(&mut self, i: usize) -> usize {
        match self.f.code[i] {
            Instr::Push(c) => self.gen_push(c),
            Instr::Bin(op) => return self.gen_bin(op, i),
            Instr::Pop => self.gen_pop(),
            Instr::Dup => self.gen_dup(),
            Instr::Swap => self.gen_swap(),
            Instr::Over => self.gen_over(),
            Instr::Load(x) => self.gen_load(x),
            Instr::Store(x) => self.gen_store(x),
            Instr::Neg => self.gen_neg(),
            Instr::Not => self.gen_not(),
            Instr::Jmp(t) => self.gen_jmp(t),
            Instr::Jz(t) => self.gen_jz(t),
            Instr::Jnz(t) => self.gen_jnz(t),
            Instr::Call(g) => self.gen_call(g),
            Instr::Ret => self.gen_ret(),
            Instr::Mload => self.gen_mload(),
            Instr::Mstore => self.gen_mstore(),
            Instr::AtomicAdd => self.gen_atomic_add(),
            Instr::Cas => self.gen_cas(),
            Instr::Msize => self.gen_msize(),
            Instr::Spawn(g) => self.gen_spawn(g),
            Instr::Join => self.gen_join(),
            Instr::Patch(f, g) => self.emit(Op::Patch { f, g }),
            Instr::Print => self.gen_print(),
            Instr::Putc => self.gen_putc(),
            Instr::Assert => self.gen_assert(),
            Instr::Nop => {}
        }
        1
    }

    /// Resolves jump targets from instruction indices to op indices.
    fn finish(self) -> LoweredFunction {
        let mut ops = self.ops;
        for op in &mut ops {
            if let Some(t) = op.target_mut() {
                *t = self.op_index[*t as usize];
            }
        }
        // Labels by op index; of several labels at one op (only `nop` and `pop` emit nothing
        // and push nothing), the first, whose height is the largest: a jump to any of them
        // leaves what that one expects in the canonical slots, give or take values it pops.
        let mut labels: Vec<(u32, u32)> = (0..self.f.code.len())
            .filter(|&i| self.is_label[i])
            .map(|i| (self.op_index[i], i as u32))
            .collect();
        labels.dedup_by_key(|&mut (op, _)| op);
        LoweredFunction {
            ops,
            params: self.f.num_params(),
            slots: self.slots,
            frame_size: self.slots + self.f.max_stack,
            labels,
        }
    }

    // One method per instruction.

    fn gen_push(&mut self, c: i64) {
        self.stack.push(Val::Imm(c));
    }

    fn gen_msize(&mut self) {
        self.gen_push(self.module.memory_cells as i64);
    }

    fn gen_load(&mut self, x: Slot) {
        self.stack.push(Val::Slot(x));
    }

    fn gen_pop(&mut self) {
        self.stack.pop();
    }

    fn gen_dup(&mut self) {
        self.stack.push(self.operand(self.stack.len() - 1));
    }

    fn gen_over(&mut self) {
        self.stack.push(self.operand(self.stack.len() - 2));
    }

    fn gen_swap(&mut self) {
        let k = self.stack.len() - 2;
        if self.stack[k] != Val::Canon && self.stack[k + 1] != Val::Canon {
            self.stack.swap(k, k + 1);
        } else if self.stack[k + 1] == Val::Slot(self.canon(k)) {
            // `dup; swap`: both entries hold the same value.
        } else {
            self.flush_entry(k + 1);
            self.flush_entry(k);
            let (a, b) = (self.canon(k), self.canon(k + 1));
            self.emit(Op::Swap { a, b });
        }
    }

    fn gen_neg(&mut self) {
        match self.stack.last_mut() {
            Some(Val::Imm(c)) => *c = c.wrapping_neg(),
            _ => {
                let a = self.pop_slot();
                let dst = self.push_result();
                self.emit(Op::Neg { dst, a });
            }
        }
    }

    fn gen_not(&mut self) {
        match self.stack.last_mut() {
            Some(Val::Imm(c)) => *c = (*c == 0) as i64,
            _ => {
                let a = self.pop_slot();
                let dst = self.push_result();
                self.emit(Op::Not { dst, a });
            }
        }
    }

    /// A binary operator; a comparison followed by `jz`/`jnz` in the same block becomes one
    /// compare-and-branch.
    fn gen_bin(&mut self, op: BinOp, i: usize) -> usize {
        let fusable = op.is_comparison() && !self.is_label[i + 1];
        let jump_if = match self.f.code.get(i + 1) {
            Some(Instr::Jz(t)) if fusable => Some((false, *t)),
            Some(Instr::Jnz(t)) if fusable => Some((true, *t)),
            _ => None,
        };
        match jump_if {
            Some((jump_if, t)) => {
                self.compare_branch(op, jump_if, t);
                self.op_index[i + 1] = self.ops.len() as u32 - 1;
                2
            }
            None => {
                self.binary(op);
                1
            }
        }
    }

    fn gen_jmp(&mut self, t: Target) {
        self.flush_all();
        self.emit(Op::Jmp { t });
    }

    fn gen_jz(&mut self, t: Target) {
        let a = self.pop_slot();
        self.flush_all();
        self.emit(Op::Jz { a, t });
    }

    fn gen_jnz(&mut self, t: Target) {
        let a = self.pop_slot();
        self.flush_all();
        self.emit(Op::Jnz { a, t });
    }

    fn gen_call(&mut self, f: FuncId) {
        let base = self.arguments(self.module.functions[f as usize].num_params());
        self.push_result();
        self.emit(Op::Call { f, base });
    }

    fn gen_spawn(&mut self, f: FuncId) {
        let base = self.arguments(self.module.functions[f as usize].num_params());
        self.push_result();
        self.emit(Op::Spawn { f, base });
    }

    fn gen_ret(&mut self) {
        match self.pop() {
            Val::Imm(imm) => self.emit(Op::RetI { imm }),
            Val::Slot(a) => self.emit(Op::Ret { a }),
            Val::Canon => unreachable!("pop never yields Canon"),
        }
    }

    fn gen_mload(&mut self) {
        let idx = self.pop_slot();
        let dst = self.push_result();
        self.emit(Op::Mload { dst, idx });
    }

    fn gen_mstore(&mut self) {
        let val = self.pop();
        let idx = self.pop_slot();
        self.emit(match val {
            Val::Imm(imm) => Op::MstoreI { idx, imm },
            Val::Slot(val) => Op::Mstore { idx, val },
            Val::Canon => unreachable!("pop never yields Canon"),
        });
    }

    fn gen_atomic_add(&mut self) {
        let val = self.pop_slot();
        let idx = self.pop_slot();
        let dst = self.push_result();
        self.emit(Op::AtomicAdd { dst, idx, val });
    }

    fn gen_cas(&mut self) {
        let new = self.pop_slot();
        let expected = self.pop_slot();
        let idx = self.pop_slot();
        let dst = self.push_result();
        self.emit(Op::Cas {
            dst,
            idx,
            expected,
            new,
        });
    }

    fn gen_join(&mut self) {
        let a = self.pop_slot();
        let dst = self.push_result();
        self.emit(Op::Join { dst, a });
    }

    fn gen_print(&mut self) {
        let a = self.pop_slot();
        self.emit(Op::Print { a });
    }

    fn gen_putc(&mut self) {
        let a = self.pop_slot();
        self.emit(Op::Putc { a });
    }

    fn gen_assert(&mut self) {
        let a = self.pop_slot();
        self.emit(Op::Assert { a });
    }

    fn gen_store(&mut self, local: Slot) {
        self.protect(local);
        let k = self.stack.len() - 1;
        match self.stack[k] {
            // `add; store x`: the add writes x directly.
            Val::Canon if self.last_op_writes(self.canon(k)) => {
                self.retarget_last_op(local);
                self.stack.pop();
            }
            // `add; dup; store x`: the add writes x, and the entry below now reads x.
            Val::Slot(s)
                if k > 0
                    && s == self.canon(k - 1)
                    && self.stack[k - 1] == Val::Canon
                    && self.last_op_writes(s) =>
            {
                self.retarget_last_op(local);
                self.stack.pop();
                self.stack[k - 1] = Val::Slot(local);
            }
            _ => match self.pop() {
                Val::Slot(src) if src == local => {}
                Val::Slot(src) => self.emit(Op::Mov { dst: local, src }),
                Val::Imm(imm) => self.emit(Op::MovI { dst: local, imm }),
                Val::Canon => unreachable!("pop never yields Canon"),
            },
        }
    }

    // The virtual stack.

    fn canon(&self, height: usize) -> Slot {
        self.slots + height as u32
    }

    fn emit(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// Whether the last op of this block only computes a value into `slot`.
    fn last_op_writes(&self, slot: Slot) -> bool {
        self.ops.len() > self.block_start
            && self.ops.last().and_then(|op| pure_dst(*op)) == Some(slot)
    }

    /// Makes the last op write `local` instead (see [`Self::last_op_writes`]).
    fn retarget_last_op(&mut self, local: Slot) {
        *self
            .ops
            .last_mut()
            .and_then(pure_dst_mut)
            .expect("checked by last_op_writes") = local;
    }

    /// Writes entry `k` to its canonical slot.
    fn flush_entry(&mut self, k: usize) {
        let dst = self.canon(k);
        match self.stack[k] {
            Val::Canon => return,
            Val::Slot(src) => self.emit(Op::Mov { dst, src }),
            Val::Imm(imm) => self.emit(Op::MovI { dst, imm }),
        }
        self.stack[k] = Val::Canon;
    }

    fn flush_all(&mut self) {
        for k in 0..self.stack.len() {
            self.flush_entry(k);
        }
    }

    /// Before `slot` is overwritten, materialize every entry that still reads it.
    fn protect(&mut self, slot: Slot) {
        for k in 0..self.stack.len() {
            if self.stack[k] == Val::Slot(slot) {
                self.flush_entry(k);
            }
        }
    }

    /// Pops the top entry as a slot operand, materializing a constant into its own slot.
    fn pop_slot(&mut self) -> Slot {
        let k = self.stack.len() - 1;
        let slot = match self.stack[k] {
            Val::Canon => self.canon(k),
            Val::Slot(s) => s,
            Val::Imm(_) => {
                self.flush_entry(k);
                self.canon(k)
            }
        };
        self.stack.pop();
        slot
    }

    fn pop(&mut self) -> Val {
        let k = self.stack.len() - 1;
        let top = self.operand(k);
        self.stack.pop();
        top
    }

    /// Pushes a result that an op is about to compute into the canonical slot; returns it.
    fn push_result(&mut self) -> Slot {
        self.stack.push(Val::Canon);
        self.canon(self.stack.len() - 1)
    }

    /// Entry `k` as an operand: a materialized entry is read from its canonical slot.
    fn operand(&self, k: usize) -> Val {
        match self.stack[k] {
            Val::Canon => Val::Slot(self.canon(k)),
            other => other,
        }
    }

    /// Pops the top two entries as operands `(a, b)` of `a OP b`, putting any constant on the
    /// right (exchanging the operands of `op` when that is allowed) and materializing a
    /// constant that must stay on the left. Returns the left slot, the right operand, and the
    /// operator to apply.
    fn pop_pair(&mut self, mut op: BinOp) -> (Slot, Val, BinOp) {
        let k = self.stack.len() - 2;
        let (mut a, mut b) = (self.operand(k), self.operand(k + 1));
        if matches!(a, Val::Imm(_)) && !matches!(b, Val::Imm(_)) {
            if op.is_commutative() {
                std::mem::swap(&mut a, &mut b);
            } else if op.is_comparison() {
                std::mem::swap(&mut a, &mut b);
                op = op.swapped();
            }
        }
        let a_slot = match a {
            Val::Slot(s) => s,
            _ => {
                // A constant on the left: entry k holds it, so flushing k materializes it.
                self.flush_entry(k);
                self.canon(k)
            }
        };
        self.stack.truncate(k);
        (a_slot, b, op)
    }

    fn binary(&mut self, op: BinOp) {
        let (a, b, op) = self.pop_pair(op);
        let dst = self.push_result();
        self.emit(match b {
            Val::Imm(imm) => Op::binary_imm(op, dst, a, imm),
            Val::Slot(s) => Op::binary(op, dst, a, s),
            Val::Canon => unreachable!("operands are never Canon"),
        });
    }

    /// `cmp; jz/jnz`: one fused compare-and-branch. `jump_if` is the comparison's truth value
    /// that takes the branch.
    fn compare_branch(&mut self, op: BinOp, jump_if: bool, target: Target) {
        let op = if jump_if { op } else { op.negated() };
        let (a, b, op) = self.pop_pair(op);
        // Flushing writes only canonical slots of entries below the operands, which the
        // operands can read only if those entries are already materialized: nothing changes.
        self.flush_all();
        let branch = match b {
            Val::Imm(imm) => Op::branch_imm(op, a, imm, target),
            Val::Slot(s) => Op::branch(op, a, s, target),
            Val::Canon => unreachable!("operands are never Canon"),
        };
        self.emit(branch.expect("only comparisons fuse with a jump"));
    }

    /// Materializes the top `n` entries (call or spawn arguments) and returns the first slot.
    fn arguments(&mut self, n: u32) -> Slot {
        let first = self.stack.len() - n as usize;
        for k in first..self.stack.len() {
            self.flush_entry(k);
        }
        self.stack.truncate(first);
        self.canon(first)
    }
}

/// The destination of an op that only computes a value into a slot: such an op may be
/// retargeted to write a local directly (`add; store s` becomes `s = a + b`).
fn pure_dst_mut(op: &mut Op) -> Option<&mut Slot> {
    match op {
        Op::Mov { dst, .. }
        | Op::MovI { dst, .. }
        | Op::Add { dst, .. }
        | Op::Sub { dst, .. }
        | Op::Mul { dst, .. }
        | Op::Div { dst, .. }
        | Op::Rem { dst, .. }
        | Op::And { dst, .. }
        | Op::Or { dst, .. }
        | Op::Xor { dst, .. }
        | Op::Shl { dst, .. }
        | Op::Shr { dst, .. }
        | Op::Ushr { dst, .. }
        | Op::Eq { dst, .. }
        | Op::Ne { dst, .. }
        | Op::Lt { dst, .. }
        | Op::Le { dst, .. }
        | Op::Gt { dst, .. }
        | Op::Ge { dst, .. }
        | Op::AddI { dst, .. }
        | Op::SubI { dst, .. }
        | Op::MulI { dst, .. }
        | Op::DivI { dst, .. }
        | Op::RemI { dst, .. }
        | Op::AndI { dst, .. }
        | Op::OrI { dst, .. }
        | Op::XorI { dst, .. }
        | Op::ShlI { dst, .. }
        | Op::ShrI { dst, .. }
        | Op::UshrI { dst, .. }
        | Op::EqI { dst, .. }
        | Op::NeI { dst, .. }
        | Op::LtI { dst, .. }
        | Op::LeI { dst, .. }
        | Op::GtI { dst, .. }
        | Op::GeI { dst, .. }
        | Op::Neg { dst, .. }
        | Op::Not { dst, .. }
        | Op::Mload { dst, .. } => Some(dst),
        _ => None,
    }
}

fn pure_dst(mut op: Op) -> Option<Slot> {
    pure_dst_mut(&mut op).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_module;

    fn lower_main(src: &str) -> Vec<Op> {
        let m = parse_module(src.as_bytes()).unwrap();
        let f = m.functions.iter().find(|f| f.name == "main").unwrap();
        lower_function(&m, f).ops
    }

    #[test]
    fn loads_and_constants_fold_into_operands() {
        // s += (i % 7) * (i % 13); i = i + 1; loop while i < n
        let ops = lower_main(
            "func main()\n local n\n local i\n local s\ntop:\n load s\n load i\n push 7\n rem\n load i\n push 13\n rem\n mul\n add\n store s\n load i\n push 1\n add\n dup\n store i\n load n\n lt\n jnz top\n load s\n ret\nend\n",
        );
        assert_eq!(
            ops,
            [
                Op::RemI {
                    dst: 4,
                    a: 1,
                    imm: 7
                },
                Op::RemI {
                    dst: 5,
                    a: 1,
                    imm: 13
                },
                Op::Mul { dst: 4, a: 4, b: 5 },
                Op::Add { dst: 2, a: 2, b: 4 },
                Op::AddI {
                    dst: 1,
                    a: 1,
                    imm: 1
                },
                Op::BrLt { a: 1, b: 0, t: 0 },
                Op::Ret { a: 2 },
            ]
        );
    }

    #[test]
    fn compare_with_constant_on_the_left_is_flipped() {
        let ops = lower_main("func main()\n local x\n push 3\n load x\n lt\n jz out\n push 1\n ret\nout:\n push 2\n ret\nend\n");
        // jump when !(3 < x), i.e. x <= 3
        assert_eq!(ops[0], Op::BrLeI { a: 0, imm: 3, t: 2 });
    }

    #[test]
    fn store_protects_pending_reads_of_the_local() {
        // push x's old value, overwrite x, then use the old value.
        let ops = lower_main(
            "func main()\n local x\n push 5\n store x\n load x\n push 9\n store x\n ret\nend\n",
        );
        assert_eq!(
            ops,
            [
                Op::MovI { dst: 0, imm: 5 },
                Op::Mov { dst: 1, src: 0 },
                Op::MovI { dst: 0, imm: 9 },
                Op::Ret { a: 1 },
            ]
        );
    }

    #[test]
    fn call_arguments_are_materialized_in_place() {
        let src = "func f(a, b)\n load a\n ret\nend\nfunc main()\n local x\n push 1\n load x\n push 2\n call f\n add\n ret\nend\n";
        let ops = lower_main(src);
        assert_eq!(
            ops,
            [
                Op::Mov { dst: 2, src: 0 },
                Op::MovI { dst: 3, imm: 2 },
                Op::Call { f: 0, base: 2 },
                Op::AddI {
                    dst: 1,
                    a: 2,
                    imm: 1
                },
                Op::Ret { a: 1 },
            ]
        );
    }
}
