//! The compile-time model of the operand stack (as in V8's Liftoff and Wasmtime's Winch).
//!
//! Each entry is where its value is *now*: a constant not yet materialised, a local not yet
//! copied, a register of the pool, or its canonical frame slot (one 8-byte slot per stack
//! height). Code is emitted only when a value must move: operands into an instruction, and
//! everything into canonical slots where control flow merges (labels, jumps) and where
//! caller-saved registers die (calls).

use jitvm_vm::BinOp;

/// An x86-64 register number as dynasm's `Rq(n)` takes it.
pub type Reg = u8;

pub const RAX: Reg = 0;
pub const RCX: Reg = 1;
pub const RDX: Reg = 2;
pub const RBX: Reg = 3;
pub const RBP: Reg = 5;
pub const RSI: Reg = 6;
pub const RDI: Reg = 7;
pub const R8: Reg = 8;
pub const R9: Reg = 9;
pub const R10: Reg = 10;
pub const R11: Reg = 11;
pub const R12: Reg = 12;
pub const R13: Reg = 13;
pub const R14: Reg = 14;
pub const R15: Reg = 15;

/// Caller-saved registers that hold operand stack values, in allocation order: `rcx` last
/// because variable shifts need it, `rax`/`rdx` never (they are the scratch pair that
/// `idiv`, `cmpxchg`, one-operand `imul` and every return value use).
pub const POOL: [Reg; 7] = [R8, R9, R10, R11, RSI, RDI, RCX];

/// Callee-saved registers that hold locals, most preferred first (`rbx` holds ctx).
pub const LOCAL_REGS: [Reg; 5] = [R12, R13, R14, R15, RBP];

/// One operand stack entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Val {
    Const(i64),
    /// The current value of local slot `n`; materialised before that local is stored to.
    Local(u32),
    /// A pool register this entry owns.
    Reg(Reg),
    /// In the canonical frame slot of the entry's height.
    Spilled,
}

/// Where an instruction finds an operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opnd {
    Reg(Reg),
    /// `qword [rsp + offset]`.
    Mem(i32),
    /// A constant that fits a sign-extended imm32.
    Imm(i32),
    /// Any other constant (needs a `mov r64, imm64`).
    Imm64(i64),
}

impl Opnd {
    pub fn constant(c: i64) -> Opnd {
        match i32::try_from(c) {
            Ok(i) => Opnd::Imm(i),
            Err(_) => Opnd::Imm64(c),
        }
    }
}

/// A signed condition code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    E,
    Ne,
    L,
    Le,
    G,
    Ge,
}

impl Cond {
    /// The condition of a comparison operator.
    pub fn of(op: BinOp) -> Cond {
        match op {
            BinOp::Eq => Cond::E,
            BinOp::Ne => Cond::Ne,
            BinOp::Lt => Cond::L,
            BinOp::Le => Cond::Le,
            BinOp::Gt => Cond::G,
            BinOp::Ge => Cond::Ge,
            other => unreachable!("{other:?} is not a comparison"),
        }
    }

    pub fn negate(self) -> Cond {
        match self {
            Cond::E => Cond::Ne,
            Cond::Ne => Cond::E,
            Cond::L => Cond::Ge,
            Cond::Le => Cond::G,
            Cond::G => Cond::Le,
            Cond::Ge => Cond::L,
        }
    }

    /// The condition with the operands exchanged: `a C b == b C' a`.
    pub fn swap(self) -> Cond {
        match self {
            Cond::L => Cond::G,
            Cond::Le => Cond::Ge,
            Cond::G => Cond::L,
            Cond::Ge => Cond::Le,
            c => c,
        }
    }
}

/// The operand stack (index = height) and which pool registers are free.
///
/// Popping an entry does not free its register: the instruction still reads it. The emitter
/// calls [`StackModel::release`] once the value is dead, so the allocator never hands out a
/// register an instruction is still using.
#[derive(Debug)]
pub struct StackModel {
    vals: Vec<Val>,
    /// Bit `r` set: pool register `r` is free.
    free: u16,
}

/// The pool, plus `rdx` for a call's last argument computed just before the call (see the
/// emitter's `alloc_result`); [`StackModel::alloc`] never hands out `rdx`.
fn pool_mask() -> u16 {
    POOL.iter().fold(1 << RDX, |m, &r| m | 1 << r)
}

impl Default for StackModel {
    fn default() -> Self {
        Self::new()
    }
}

impl StackModel {
    pub fn new() -> StackModel {
        StackModel {
            vals: Vec::with_capacity(64),
            free: pool_mask(),
        }
    }

    pub fn height(&self) -> usize {
        self.vals.len()
    }

    pub fn push(&mut self, v: Val) {
        if let Val::Reg(r) = v {
            debug_assert!(self.free & (1 << r) == 0, "pushing a free register");
        }
        self.vals.push(v);
    }

    pub fn pop(&mut self) -> Val {
        self.vals
            .pop()
            .expect("the verifier proved the stack deep enough")
    }

    /// The entry at height `h`.
    pub fn get(&self, h: usize) -> Val {
        self.vals[h]
    }

    pub fn set(&mut self, h: usize, v: Val) {
        self.vals[h] = v;
    }

    /// Marks `r` taken (by a new entry or a temporary).
    pub fn take(&mut self, r: Reg) {
        debug_assert!(self.free & (1 << r) != 0, "register {r} taken twice");
        self.free &= !(1 << r);
    }

    pub fn is_free(&self, r: Reg) -> bool {
        self.free & (1 << r) != 0
    }

    /// A free pool register, taken; `None` when all are in use.
    pub fn alloc(&mut self) -> Option<Reg> {
        let r = POOL.into_iter().find(|&r| self.is_free(r))?;
        self.take(r);
        Some(r)
    }

    /// Frees the register of a dead value (no-op for other values).
    pub fn release(&mut self, v: Val) {
        if let Val::Reg(r) = v {
            self.release_reg(r);
        }
    }

    pub fn release_reg(&mut self, r: Reg) {
        debug_assert!(POOL.contains(&r) || r == RDX);
        debug_assert!(self.free & (1 << r) == 0, "register {r} freed twice");
        self.free |= 1 << r;
    }

    /// The deepest entry held in a register (the best spill victim: used last).
    pub fn deepest_reg_entry(&self) -> Option<usize> {
        self.vals.iter().position(|v| matches!(v, Val::Reg(_)))
    }

    /// The height of the entry that owns `r`, if one does.
    pub fn owner_of(&self, r: Reg) -> Option<usize> {
        self.vals.iter().position(|&v| v == Val::Reg(r))
    }

    /// Every entry is in its canonical slot and no register is in use: the state at a label.
    pub fn reset_spilled(&mut self, height: usize) {
        self.vals.clear();
        self.vals.resize(height, Val::Spilled);
        self.free = pool_mask();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_are_handed_out_once_until_released() {
        let mut m = StackModel::new();
        let regs: Vec<Reg> = (0..POOL.len()).map(|_| m.alloc().unwrap()).collect();
        assert_eq!(regs, POOL);
        assert_eq!(m.alloc(), None);
        m.release_reg(R10);
        assert_eq!(m.alloc(), Some(R10));
    }

    #[test]
    fn conditions_negate_and_swap_like_the_operators() {
        for op in BinOp::ALL.into_iter().filter(|o| o.is_comparison()) {
            assert_eq!(Cond::of(op).negate(), Cond::of(op.negated()));
            assert_eq!(Cond::of(op).swap(), Cond::of(op.swapped()));
        }
    }
}
