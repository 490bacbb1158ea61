//! x86-64 primitives on operands (a register, a frame slot, an immediate): `mov` to and
//! from frame slots, the two-operand ALU forms, `cmp`, `test`, `setcc`, `jcc`.

use super::emitter::Emitter;
use crate::baseline::stack_model::*;
use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi};
use jitvm_vm::BinOp;

/// The two-operand ALU instructions `op r64, r/m64|imm32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Alu {
    Add,
    Sub,
    And,
    Or,
    Xor,
    Cmp,
    Imul,
}

impl Alu {
    /// The two-operand instruction of a binary operator that is one.
    pub(super) fn of(op: BinOp) -> Alu {
        match op {
            BinOp::Add => Alu::Add,
            BinOp::Sub => Alu::Sub,
            BinOp::Mul => Alu::Imul,
            BinOp::And => Alu::And,
            BinOp::Or => Alu::Or,
            BinOp::Xor => Alu::Xor,
            other => unreachable!("{other:?} is not a plain ALU operation"),
        }
    }
}

impl Emitter<'_> {
    /// `mov dst, src`. Never touches flags or other registers.
    pub(super) fn load(&mut self, dst: Reg, src: Opnd) {
        match src {
            Opnd::Reg(r) if r == dst => {}
            Opnd::Reg(r) => asm!(self; mov Rq(dst), Rq(r)),
            Opnd::Mem(o) => asm!(self; mov Rq(dst), QWORD [rsp + o]),
            Opnd::Imm(c) if c >= 0 => asm!(self; mov Rd(dst), c),
            Opnd::Imm(c) => asm!(self; mov Rq(dst), c),
            Opnd::Imm64(c) => asm!(self; mov Rq(dst), QWORD c),
        }
    }

    /// `mov qword [rsp + off], src`, through `rax` when `src` is memory or a wide constant.
    pub(super) fn store_slot(&mut self, off: i32, src: Opnd) {
        match src {
            Opnd::Reg(r) => asm!(self; mov QWORD [rsp + off], Rq(r)),
            Opnd::Imm(c) => asm!(self; mov QWORD [rsp + off], c),
            Opnd::Mem(o) if o == off => {}
            Opnd::Mem(_) | Opnd::Imm64(_) => {
                self.load(RAX, src);
                asm!(self; mov QWORD [rsp + off], rax);
            }
        }
    }

    /// `op dst, src`; a wide constant goes through a scratch register first.
    pub(super) fn alu(&mut self, op: Alu, dst: Reg, src: Opnd) {
        let src = match src {
            Opnd::Imm64(_) => {
                let scratch = if dst == RAX { RDX } else { RAX };
                self.load(scratch, src);
                Opnd::Reg(scratch)
            }
            Opnd::Imm(k) if op == Alu::Imul => {
                asm!(self; imul Rq(dst), Rq(dst), k);
                return;
            }
            src => src,
        };
        macro_rules! forms {
            ($($op:ident => $mn:tt),*) => {
                match (op, src) {
                    $(
                        (Alu::$op, Opnd::Reg(s)) => asm!(self; $mn Rq(dst), Rq(s)),
                        (Alu::$op, Opnd::Mem(o)) => asm!(self; $mn Rq(dst), QWORD [rsp + o]),
                    )*
                    (Alu::Add, Opnd::Imm(k)) => asm!(self; add Rq(dst), k),
                    (Alu::Sub, Opnd::Imm(k)) => asm!(self; sub Rq(dst), k),
                    (Alu::And, Opnd::Imm(k)) => asm!(self; and Rq(dst), k),
                    (Alu::Or, Opnd::Imm(k)) => asm!(self; or Rq(dst), k),
                    (Alu::Xor, Opnd::Imm(k)) => asm!(self; xor Rq(dst), k),
                    (Alu::Cmp, Opnd::Imm(k)) => asm!(self; cmp Rq(dst), k),
                    _ => unreachable!("{op:?} {src:?}"),
                }
            };
        }
        forms!(Add => add, Sub => sub, And => and, Or => or, Xor => xor, Cmp => cmp, Imul => imul);
    }

    /// `cmp` for `a C b`; returns the condition to test (swapped when the operands are).
    pub(super) fn compare(&mut self, a: Opnd, b: Opnd, c: Cond) -> Cond {
        let is_const = |o: Opnd| matches!(o, Opnd::Imm(_) | Opnd::Imm64(_));
        let (a, b, c) = if is_const(a) && !is_const(b) {
            (b, a, c.swap())
        } else {
            (a, b, c)
        };
        match (a, b) {
            (Opnd::Reg(r), b) => self.alu(Alu::Cmp, r, b),
            (Opnd::Mem(o), Opnd::Reg(s)) => asm!(self; cmp QWORD [rsp + o], Rq(s)),
            (Opnd::Mem(o), Opnd::Imm(k)) => asm!(self; cmp QWORD [rsp + o], k),
            (a, b) => {
                self.load(RAX, a);
                self.alu(Alu::Cmp, RAX, b);
            }
        }
        c
    }

    /// Sets ZF from `a == 0`.
    pub(super) fn test_zero(&mut self, a: Opnd) {
        match a {
            Opnd::Reg(r) => asm!(self; test Rq(r), Rq(r)),
            Opnd::Mem(o) => asm!(self; cmp QWORD [rsp + o], 0),
            Opnd::Imm(_) | Opnd::Imm64(_) => unreachable!("constants are decided statically"),
        }
    }

    pub(super) fn setcc(&mut self, c: Cond, dst: Reg) {
        match c {
            Cond::E => asm!(self; sete Rb(dst)),
            Cond::Ne => asm!(self; setne Rb(dst)),
            Cond::L => asm!(self; setl Rb(dst)),
            Cond::Le => asm!(self; setle Rb(dst)),
            Cond::G => asm!(self; setg Rb(dst)),
            Cond::Ge => asm!(self; setge Rb(dst)),
        }
        asm!(self; movzx Rd(dst), Rb(dst));
    }

    pub(super) fn jcc(&mut self, c: Cond, l: DynamicLabel) {
        match c {
            Cond::E => asm!(self; je =>l),
            Cond::Ne => asm!(self; jne =>l),
            Cond::L => asm!(self; jl =>l),
            Cond::Le => asm!(self; jle =>l),
            Cond::G => asm!(self; jg =>l),
            Cond::Ge => asm!(self; jge =>l),
        }
    }
}
