//! Binary arithmetic (`add sub mul and or xor`) and shifts, with constant folding,
//! immediate operands, and results computed straight into the local that takes them.

use super::emitter::Emitter;
use super::x86::Alu;
use crate::baseline::frame::Home;
use crate::baseline::stack_model::*;
use dynasmrt::{dynasm, DynasmApi};
use jitvm_vm::{BinOp, Instr};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shift {
    Shl,
    Sar,
    Shr,
}

impl Shift {
    /// The x86 shift of a shift operator: `shr` is arithmetic (`sar`), `ushr` logical.
    fn of(op: BinOp) -> Shift {
        match op {
            BinOp::Shl => Shift::Shl,
            BinOp::Shr => Shift::Sar,
            BinOp::Ushr => Shift::Shr,
            other => unreachable!("{other:?} is not a shift"),
        }
    }
}

impl Emitter<'_> {
    /// `add sub mul and or xor`, with constant folding and immediate operands. When the
    /// result is stored to a local at once (`store y`, or `dup; store y`) and y lives in a
    /// register, the result is computed right there: `load s; ..; add; store s` is one
    /// `add r13, ..`. Returns the instructions consumed.
    pub(super) fn binary(&mut self, i: usize, op: BinOp) -> usize {
        let (mut vb, mut b) = self.pop();
        let (mut va, mut a) = self.pop();
        if let (Val::Const(x), Val::Const(y)) = (va, vb) {
            let folded = op.eval(x, y).expect("not a division");
            self.stack.push(Val::Const(folded));
            return 1;
        }
        if let Some((y, h, consumed)) = self.store_target(i) {
            if op.is_commutative() && vb == Val::Local(y) && va != Val::Local(y) {
                std::mem::swap(&mut va, &mut vb);
                std::mem::swap(&mut a, &mut b);
            }
            // Writing h first must not destroy an operand still to be read.
            let into_place = va == Val::Local(y) || (!owns(va) && vb != Val::Local(y));
            if into_place {
                self.compute_into(op, h, a, b);
                self.stack.release(vb);
                if consumed == 3 {
                    self.stack.push(Val::Local(y)); // `dup; store y`
                }
                return consumed;
            }
        }
        // Compute into an operand's own register when one has it; constants go right.
        let is_const = |o: Opnd| matches!(o, Opnd::Imm(_) | Opnd::Imm64(_));
        if op.is_commutative() && (is_const(a) || (!owns(va) && owns(vb))) {
            std::mem::swap(&mut va, &mut vb);
            std::mem::swap(&mut a, &mut b);
        }
        // A fresh register for `local +/- imm`: one `lea`.
        if let (false, Opnd::Reg(ar), Opnd::Imm(k)) = (owns(va), a, b) {
            let k = match op {
                BinOp::Add => Some(k),
                BinOp::Sub => k.checked_neg(),
                _ => None,
            };
            if let Some(k) = k {
                let dst = self.alloc_result(i);
                asm!(self; lea Rq(dst), [Rq(ar) + k]);
                self.stack.push(Val::Reg(dst));
                return 1;
            }
        }
        let dst = match (op, b) {
            (BinOp::Mul, Opnd::Imm(k)) if !is_const(a) => {
                let dst = self.dst_for(va);
                match a {
                    Opnd::Reg(r) => asm!(self; imul Rq(dst), Rq(r), k),
                    Opnd::Mem(o) => asm!(self; imul Rq(dst), QWORD [rsp + o], k),
                    _ => unreachable!(),
                }
                dst
            }
            _ => {
                let dst = match va {
                    Val::Reg(r) => r,
                    _ => {
                        let r = self.alloc_result(i);
                        self.load(r, a);
                        r
                    }
                };
                self.alu(Alu::of(op), dst, b);
                dst
            }
        };
        self.stack.release(vb);
        self.stack.push(Val::Reg(dst));
        1
    }

    /// If instruction `i`'s result goes straight into a local held in a register (the next
    /// instructions are `store y` or `dup; store y`) and nothing on the stack still reads
    /// y's old value: (y, its register, instructions consumed).
    fn store_target(&self, i: usize) -> Option<(u32, Reg, usize)> {
        let (y, consumed) = match self.fusable_next(i)? {
            Instr::Store(y) => (y, 2),
            Instr::Dup => match self.fusable_next(i + 1)? {
                Instr::Store(y) => (y, 3),
                _ => return None,
            },
            _ => return None,
        };
        let Home::Reg(h) = self.frame.homes[y as usize] else {
            return None;
        };
        let reads_y = (0..self.stack.height()).any(|k| self.stack.get(k) == Val::Local(y));
        (!reads_y).then_some((y, h, consumed))
    }

    /// `h = a OP b` for a local's register `h`, where `b` is not `h` unless `a` is.
    fn compute_into(&mut self, op: BinOp, h: Reg, a: Opnd, b: Opnd) {
        match (op, a, b) {
            (BinOp::Mul, Opnd::Reg(r), Opnd::Imm(k)) => asm!(self; imul Rq(h), Rq(r), k),
            (BinOp::Mul, Opnd::Mem(o), Opnd::Imm(k)) => asm!(self; imul Rq(h), QWORD [rsp + o], k),
            (BinOp::Add, Opnd::Reg(r), Opnd::Imm(k)) if r != h => {
                asm!(self; lea Rq(h), [Rq(r) + k])
            }
            _ => {
                self.load(h, a);
                self.alu(Alu::of(op), h, b);
            }
        }
    }

    /// `shl shr ushr`: the count masked to 6 bits, as `shl/sar/shr` by `cl` do natively.
    pub(super) fn shift(&mut self, op: BinOp) {
        let kind = Shift::of(op);
        let (vb, b) = self.pop();
        let (mut va, mut a) = self.pop();
        if let (Val::Const(x), Val::Const(y)) = (va, vb) {
            return self
                .stack
                .push(Val::Const(op.eval(x, y).expect("shifts never trap")));
        }
        if let Val::Const(c) = vb {
            let dst = self.owned_reg(va, a);
            let n = (c & 63) as i8;
            if n != 0 {
                match kind {
                    Shift::Shl => asm!(self; shl Rq(dst), n),
                    Shift::Sar => asm!(self; sar Rq(dst), n),
                    Shift::Shr => asm!(self; shr Rq(dst), n),
                }
            }
            return self.stack.push(Val::Reg(dst));
        }
        // The count goes to rcx, which this instruction then holds as a temporary.
        if vb != Val::Reg(RCX) {
            if va == Val::Reg(RCX) {
                let r = self.alloc(); // never rcx: it is taken
                self.load(r, a);
                va = Val::Reg(r);
                a = Opnd::Reg(r);
            } else {
                self.claim_rcx();
            }
            self.load(RCX, b);
            self.stack.release(vb);
        }
        let dst = self.owned_reg(va, a);
        match kind {
            Shift::Shl => asm!(self; shl Rq(dst), cl),
            Shift::Sar => asm!(self; sar Rq(dst), cl),
            Shift::Shr => asm!(self; shr Rq(dst), cl),
        }
        self.stack.release_reg(RCX);
        self.stack.push(Val::Reg(dst));
    }
}

/// Whether the entry owns a register the instruction may overwrite.
fn owns(v: Val) -> bool {
    matches!(v, Val::Reg(_))
}
