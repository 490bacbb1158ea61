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

/// A frame slot: parameters, then locals, then the operand stack.
pub type Slot = u32;

/// One interpreter instruction. `dst`, `a`, `b` are frame slots; `imm` is a constant;
/// `t` is an index into the function's op array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Mov {
        dst: Slot,
        src: Slot,
    },
    MovI {
        dst: Slot,
        imm: i64,
    },
    Swap {
        a: Slot,
        b: Slot,
    },
    Add {
        dst: Slot,
        a: Slot,
        b: Slot,
    },
    Sub {
        dst: Slot,
        a: Slot,
        b: Slot,
    },
    Mul {
        dst: Slot,
        a: Slot,
        b: Slot,
    },
    Div {
        dst: Slot,
        a: Slot,
        b: Slot,
    },
    Rem {
        dst: Slot,
        a: Slot,
        b: Slot,
    },
    And {
        dst: Slot,
        a: Slot,
        b: Slot,
    },
    Or {
        dst: Slot,
        a: Slot,
        b: Slot,
    },
    Xor {
        dst: Slot,
        a: Slot,
        b: Slot,
    },
    Shl {
        dst: Slot,
        a: Slot,
        b: Slot,
    },
    Shr {
        dst: Slot,
        a: Slot,
        b: Slot,
    },
    Ushr {
        dst: Slot,
        a: Slot,
        b: Slot,
    },
    Eq {
        dst: Slot,
        a: Slot,
        b: Slot,
    },
    Ne {
        dst: Slot,
        a: Slot,
        b: Slot,
    },
    Lt {
        dst: Slot,
        a: Slot,
        b: Slot,
    },
    Le {
        dst: Slot,
        a: Slot,
        b: Slot,
    },
    Gt {
        dst: Slot,
        a: Slot,
        b: Slot,
    },
    Ge {
        dst: Slot,
        a: Slot,
        b: Slot,
    },
    AddI {
        dst: Slot,
        a: Slot,
        imm: i64,
    },
    SubI {
        dst: Slot,
        a: Slot,
        imm: i64,
    },
    MulI {
        dst: Slot,
        a: Slot,
        imm: i64,
    },
    DivI {
        dst: Slot,
        a: Slot,
        imm: i64,
    },
    RemI {
        dst: Slot,
        a: Slot,
        imm: i64,
    },
    AndI {
        dst: Slot,
        a: Slot,
        imm: i64,
    },
    OrI {
        dst: Slot,
        a: Slot,
        imm: i64,
    },
    XorI {
        dst: Slot,
        a: Slot,
        imm: i64,
    },
    ShlI {
        dst: Slot,
        a: Slot,
        imm: i64,
    },
    ShrI {
        dst: Slot,
        a: Slot,
        imm: i64,
    },
    UshrI {
        dst: Slot,
        a: Slot,
        imm: i64,
    },
    EqI {
        dst: Slot,
        a: Slot,
        imm: i64,
    },
    NeI {
        dst: Slot,
        a: Slot,
        imm: i64,
    },
    LtI {
        dst: Slot,
        a: Slot,
        imm: i64,
    },
    LeI {
        dst: Slot,
        a: Slot,
        imm: i64,
    },
    GtI {
        dst: Slot,
        a: Slot,
        imm: i64,
    },
    GeI {
        dst: Slot,
        a: Slot,
        imm: i64,
    },
    Neg {
        dst: Slot,
        a: Slot,
    },
    Not {
        dst: Slot,
        a: Slot,
    },
    Jmp {
        t: u32,
    },
    Jz {
        a: Slot,
        t: u32,
    },
    Jnz {
        a: Slot,
        t: u32,
    },
    BrEq {
        a: Slot,
        b: Slot,
        t: u32,
    },
    BrNe {
        a: Slot,
        b: Slot,
        t: u32,
    },
    BrLt {
        a: Slot,
        b: Slot,
        t: u32,
    },
    BrLe {
        a: Slot,
        b: Slot,
        t: u32,
    },
    BrGt {
        a: Slot,
        b: Slot,
        t: u32,
    },
    BrGe {
        a: Slot,
        b: Slot,
        t: u32,
    },
    BrEqI {
        a: Slot,
        imm: i64,
        t: u32,
    },
    BrNeI {
        a: Slot,
        imm: i64,
        t: u32,
    },
    BrLtI {
        a: Slot,
        imm: i64,
        t: u32,
    },
    BrLeI {
        a: Slot,
        imm: i64,
        t: u32,
    },
    BrGtI {
        a: Slot,
        imm: i64,
        t: u32,
    },
    BrGeI {
        a: Slot,
        imm: i64,
        t: u32,
    },
    /// Calls through `f`'s dispatch entry; arguments are in `base..`, the result lands in `base`.
    Call {
        f: FuncId,
        base: Slot,
    },
    Ret {
        a: Slot,
    },
    RetI {
        imm: i64,
    },
    Mload {
        dst: Slot,
        idx: Slot,
    },
    Mstore {
        idx: Slot,
        val: Slot,
    },
    MstoreI {
        idx: Slot,
        imm: i64,
    },
    AtomicAdd {
        dst: Slot,
        idx: Slot,
        val: Slot,
    },
    Cas {
        dst: Slot,
        idx: Slot,
        expected: Slot,
        new: Slot,
    },
    /// Starts `f` on a new thread with the arguments in `base..`; the handle lands in `base`.
    Spawn {
        f: FuncId,
        base: Slot,
    },
    Join {
        dst: Slot,
        a: Slot,
    },
    Patch {
        f: FuncId,
        g: FuncId,
    },
    Print {
        a: Slot,
    },
    Putc {
        a: Slot,
    },
    Assert {
        a: Slot,
    },
}

impl Op {
    fn binary(op: BinOp, dst: Slot, a: Slot, b: Slot) -> Op {
        match op {
            BinOp::Add => Op::Add { dst, a, b },
            BinOp::Sub => Op::Sub { dst, a, b },
            BinOp::Mul => Op::Mul { dst, a, b },
            BinOp::Div => Op::Div { dst, a, b },
            BinOp::Rem => Op::Rem { dst, a, b },
            BinOp::And => Op::And { dst, a, b },
            BinOp::Or => Op::Or { dst, a, b },
            BinOp::Xor => Op::Xor { dst, a, b },
            BinOp::Shl => Op::Shl { dst, a, b },
            BinOp::Shr => Op::Shr { dst, a, b },
            BinOp::Ushr => Op::Ushr { dst, a, b },
            BinOp::Eq => Op::Eq { dst, a, b },
            BinOp::Ne => Op::Ne { dst, a, b },
            BinOp::Lt => Op::Lt { dst, a, b },
            BinOp::Le => Op::Le { dst, a, b },
            BinOp::Gt => Op::Gt { dst, a, b },
            BinOp::Ge => Op::Ge { dst, a, b },
        }
    }

    fn binary_imm(op: BinOp, dst: Slot, a: Slot, imm: i64) -> Op {
        match op {
            BinOp::Add => Op::AddI { dst, a, imm },
            BinOp::Sub => Op::SubI { dst, a, imm },
            BinOp::Mul => Op::MulI { dst, a, imm },
            BinOp::Div => Op::DivI { dst, a, imm },
            BinOp::Rem => Op::RemI { dst, a, imm },
            BinOp::And => Op::AndI { dst, a, imm },
            BinOp::Or => Op::OrI { dst, a, imm },
            BinOp::Xor => Op::XorI { dst, a, imm },
            BinOp::Shl => Op::ShlI { dst, a, imm },
            BinOp::Shr => Op::ShrI { dst, a, imm },
            BinOp::Ushr => Op::UshrI { dst, a, imm },
            BinOp::Eq => Op::EqI { dst, a, imm },
            BinOp::Ne => Op::NeI { dst, a, imm },
            BinOp::Lt => Op::LtI { dst, a, imm },
            BinOp::Le => Op::LeI { dst, a, imm },
            BinOp::Gt => Op::GtI { dst, a, imm },
            BinOp::Ge => Op::GeI { dst, a, imm },
        }
    }

    fn branch(cmp: BinOp, a: Slot, b: Slot, t: u32) -> Op {
        match cmp {
            BinOp::Eq => Op::BrEq { a, b, t },
            BinOp::Ne => Op::BrNe { a, b, t },
            BinOp::Lt => Op::BrLt { a, b, t },
            BinOp::Le => Op::BrLe { a, b, t },
            BinOp::Gt => Op::BrGt { a, b, t },
            BinOp::Ge => Op::BrGe { a, b, t },
            other => unreachable!("{other:?} is not a comparison"),
        }
    }

    fn branch_imm(cmp: BinOp, a: Slot, imm: i64, t: u32) -> Op {
        match cmp {
            BinOp::Eq => Op::BrEqI { a, imm, t },
            BinOp::Ne => Op::BrNeI { a, imm, t },
            BinOp::Lt => Op::BrLtI { a, imm, t },
            BinOp::Le => Op::BrLeI { a, imm, t },
            BinOp::Gt => Op::BrGtI { a, imm, t },
            BinOp::Ge => Op::BrGeI { a, imm, t },
            other => unreachable!("{other:?} is not a comparison"),
        }
    }

    /// The jump target, if this op can jump.
    pub fn target_mut(&mut self) -> Option<&mut u32> {
        match self {
            Op::Jmp { t }
            | Op::Jz { t, .. }
            | Op::Jnz { t, .. }
            | Op::BrEq { t, .. }
            | Op::BrNe { t, .. }
            | Op::BrLt { t, .. }
            | Op::BrLe { t, .. }
            | Op::BrGt { t, .. }
            | Op::BrGe { t, .. }
            | Op::BrEqI { t, .. }
            | Op::BrNeI { t, .. }
            | Op::BrLtI { t, .. }
            | Op::BrLeI { t, .. }
            | Op::BrGtI { t, .. }
            | Op::BrGeI { t, .. } => Some(t),
            _ => None,
        }
    }

    /// The destination of an op that only computes a value into a slot: such an op may be
    /// retargeted to write a local directly (`add; store s` becomes `s = a + b`).
    fn pure_dst_mut(&mut self) -> Option<&mut Slot> {
        match self {
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
}

/// A function in interpreter form.
#[derive(Clone, Debug)]
pub struct LoweredFunction {
    pub ops: Vec<Op>,
    pub params: u32,
    /// Parameters plus locals.
    pub slots: u32,
    /// Slots plus the deepest operand stack: how many slots a frame needs.
    pub frame_size: u32,
}

/// Where a value on the virtual stack is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Val {
    /// In its canonical slot (`slots + height`).
    Canon,
    /// The current value of another slot: a local, or the canonical slot of an entry below.
    Slot(Slot),
    Imm(i64),
}

struct Lowerer<'a> {
    ops: Vec<Op>,
    stack: Vec<Val>,
    slots: u32,
    /// First op of the current block: ops before it may be jumped over, so never retargeted.
    block_start: usize,
    memory_cells: i64,
    params: &'a dyn Fn(FuncId) -> u32,
}

impl Lowerer<'_> {
    fn canon(&self, height: usize) -> Slot {
        self.slots + height as u32
    }

    fn emit(&mut self, op: Op) {
        self.ops.push(op);
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
        match self.stack.pop().expect("verified height") {
            Val::Canon => Val::Slot(self.canon(k)),
            other => other,
        }
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
    fn compare_branch(&mut self, op: BinOp, jump_if: bool, target: u32) {
        let op = if jump_if { op } else { op.negated() };
        let (a, b, op) = self.pop_pair(op);
        // Flushing writes only canonical slots of entries below the operands, which the
        // operands can read only if those entries are already materialized: nothing changes.
        self.flush_all();
        self.emit(match b {
            Val::Imm(imm) => Op::branch_imm(op, a, imm, target),
            Val::Slot(s) => Op::branch(op, a, s, target),
            Val::Canon => unreachable!("operands are never Canon"),
        });
    }

    fn store(&mut self, local: Slot) {
        self.protect(local);
        let k = self.stack.len() - 1;
        let producer_is_last = |this: &Self, slot: Slot| {
            this.ops.len() > this.block_start
                && this
                    .ops
                    .last()
                    .and_then(|op| op.clone().pure_dst_mut().map(|d| *d))
                    == Some(slot)
        };
        match self.stack[k] {
            // `add; store x`: the add writes x directly.
            Val::Canon if producer_is_last(self, self.canon(k)) => {
                *self
                    .ops
                    .last_mut()
                    .and_then(Op::pure_dst_mut)
                    .expect("checked") = local;
                self.stack.pop();
            }
            // `add; dup; store x`: the add writes x, and the entry below now reads x.
            Val::Slot(s)
                if k > 0
                    && s == self.canon(k - 1)
                    && self.stack[k - 1] == Val::Canon
                    && producer_is_last(self, s) =>
            {
                *self
                    .ops
                    .last_mut()
                    .and_then(Op::pure_dst_mut)
                    .expect("checked") = local;
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

/// Lowers one verified function.
pub fn lower_function(module: &Module, f: &Function) -> LoweredFunction {
    let params = |g: FuncId| module.functions[g as usize].num_params();
    let n = f.code.len();
    let mut is_label = vec![false; n + 1];
    for l in &f.labels {
        is_label[l.target as usize] = true;
    }
    let mut lw = Lowerer {
        ops: Vec::with_capacity(n),
        stack: Vec::new(),
        slots: f.num_slots(),
        block_start: 0,
        memory_cells: module.memory_cells as i64,
        params: &params,
    };
    // Op index of each source instruction, for resolving jumps afterwards.
    let mut op_index = vec![0u32; n + 1];
    let mut i = 0;
    while i < n {
        if is_label[i] {
            if i > 0 && f.code[i - 1].falls_through() {
                lw.flush_all();
            }
            lw.stack = vec![Val::Canon; f.heights[i] as usize];
            lw.block_start = lw.ops.len();
        }
        // The verifier's height at a block start is the truth; deferred entries never cross it.
        debug_assert_eq!(lw.stack.len(), f.heights[i] as usize);
        op_index[i] = lw.ops.len() as u32;
        let instr = f.code[i];
        match instr {
            Instr::Push(c) => lw.stack.push(Val::Imm(c)),
            Instr::Msize => lw.stack.push(Val::Imm(lw.memory_cells)),
            Instr::Load(x) => lw.stack.push(Val::Slot(x)),
            Instr::Store(x) => lw.store(x),
            Instr::Pop => {
                lw.stack.pop();
            }
            Instr::Nop => {}
            Instr::Dup | Instr::Over => {
                let k = lw.stack.len() - if instr == Instr::Dup { 1 } else { 2 };
                let copy = match lw.stack[k] {
                    Val::Canon => Val::Slot(lw.canon(k)),
                    other => other,
                };
                lw.stack.push(copy);
            }
            Instr::Swap => {
                let k = lw.stack.len() - 2;
                if lw.stack[k] != Val::Canon && lw.stack[k + 1] != Val::Canon {
                    lw.stack.swap(k, k + 1);
                } else if lw.stack[k + 1] == Val::Slot(lw.canon(k)) {
                    // `dup; swap`: both entries hold the same value.
                } else {
                    lw.flush_entry(k + 1);
                    lw.flush_entry(k);
                    let (a, b) = (lw.canon(k), lw.canon(k + 1));
                    lw.emit(Op::Swap { a, b });
                }
            }
            Instr::Neg | Instr::Not => match lw.stack.last().copied() {
                Some(Val::Imm(c)) => {
                    let folded = if instr == Instr::Neg {
                        c.wrapping_neg()
                    } else {
                        (c == 0) as i64
                    };
                    *lw.stack.last_mut().expect("verified height") = Val::Imm(folded);
                }
                _ => {
                    let a = lw.pop_slot();
                    let dst = lw.push_result();
                    lw.emit(if instr == Instr::Neg {
                        Op::Neg { dst, a }
                    } else {
                        Op::Not { dst, a }
                    });
                }
            },
            Instr::Jmp(t) => {
                lw.flush_all();
                lw.emit(Op::Jmp { t });
            }
            Instr::Jz(t) | Instr::Jnz(t) => {
                let a = lw.pop_slot();
                lw.flush_all();
                lw.emit(if matches!(instr, Instr::Jz(_)) {
                    Op::Jz { a, t }
                } else {
                    Op::Jnz { a, t }
                });
            }
            Instr::Call(g) => {
                let base = lw.arguments((lw.params)(g));
                lw.push_result();
                lw.emit(Op::Call { f: g, base });
            }
            Instr::Spawn(g) => {
                let base = lw.arguments((lw.params)(g));
                lw.push_result();
                lw.emit(Op::Spawn { f: g, base });
            }
            Instr::Ret => match lw.pop() {
                Val::Imm(imm) => lw.emit(Op::RetI { imm }),
                Val::Slot(a) => lw.emit(Op::Ret { a }),
                Val::Canon => unreachable!(),
            },
            Instr::Mload => {
                let idx = lw.pop_slot();
                let dst = lw.push_result();
                lw.emit(Op::Mload { dst, idx });
            }
            Instr::Mstore => {
                let val = lw.pop();
                let idx = lw.pop_slot();
                lw.emit(match val {
                    Val::Imm(imm) => Op::MstoreI { idx, imm },
                    Val::Slot(val) => Op::Mstore { idx, val },
                    Val::Canon => unreachable!(),
                });
            }
            Instr::AtomicAdd => {
                let val = lw.pop_slot();
                let idx = lw.pop_slot();
                let dst = lw.push_result();
                lw.emit(Op::AtomicAdd { dst, idx, val });
            }
            Instr::Cas => {
                let new = lw.pop_slot();
                let expected = lw.pop_slot();
                let idx = lw.pop_slot();
                let dst = lw.push_result();
                lw.emit(Op::Cas {
                    dst,
                    idx,
                    expected,
                    new,
                });
            }
            Instr::Join => {
                let a = lw.pop_slot();
                let dst = lw.push_result();
                lw.emit(Op::Join { dst, a });
            }
            Instr::Patch(f, g) => lw.emit(Op::Patch { f, g }),
            Instr::Print => {
                let a = lw.pop_slot();
                lw.emit(Op::Print { a });
            }
            Instr::Putc => {
                let a = lw.pop_slot();
                lw.emit(Op::Putc { a });
            }
            Instr::Assert => {
                let a = lw.pop_slot();
                lw.emit(Op::Assert { a });
            }
            Instr::Bin(op) => {
                let next = f.code.get(i + 1).copied();
                let fusable = op.is_comparison() && !is_label[i + 1];
                match next {
                    Some(Instr::Jz(t)) if fusable => {
                        lw.compare_branch(op, false, t);
                        i += 1;
                        op_index[i] = lw.ops.len() as u32 - 1;
                    }
                    Some(Instr::Jnz(t)) if fusable => {
                        lw.compare_branch(op, true, t);
                        i += 1;
                        op_index[i] = lw.ops.len() as u32 - 1;
                    }
                    _ => lw.binary(op),
                }
            }
        }
        i += 1;
    }
    let mut ops = lw.ops;
    for op in &mut ops {
        if let Some(t) = op.target_mut() {
            *t = op_index[*t as usize];
        }
    }
    LoweredFunction {
        ops,
        params: f.num_params(),
        slots: f.num_slots(),
        frame_size: f.num_slots() + f.max_stack,
    }
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
    fn op_stays_small() {
        assert!(std::mem::size_of::<Op>() <= 24);
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
