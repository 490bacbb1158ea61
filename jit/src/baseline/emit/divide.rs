//! `div` and `rem`: by a variable with `idiv` behind its two guards, by a constant without
//! `idiv`, following the plans of `crate::magic` instruction by instruction.

use super::emitter::Emitter;
use super::x86::Alu;
use crate::baseline::stack_model::*;
use crate::magic::{unsigned_magic, DivPlan};
use dynasmrt::{dynasm, DynasmApi, DynasmLabelApi};
use jitvm_vm::{BinOp, Trap};

impl Emitter<'_> {
    /// `div`/`rem`: by a constant without `idiv`; by a variable with the zero check (trap)
    /// and the -1 case (`MIN / -1` faults in `idiv`) out of `idiv`'s way.
    pub(super) fn divide(&mut self, op: BinOp) {
        let rem = op == BinOp::Rem;
        let (vb, b) = self.pop();
        let (va, a) = self.pop();
        if let Val::Const(d) = vb {
            if let Val::Const(n) = va {
                if let Some(r) = op.eval(n, d) {
                    return self.stack.push(Val::Const(r));
                }
            }
            return self.divide_by_constant(va, a, d, rem);
        }
        // Allocate before branching, so a spill it needs runs on every path.
        let dst = self.dst_for(va);
        let zero = self.trap_label(Trap::DivisionByZero);
        let minus_one = self.ops.new_dynamic_label();
        let done = self.ops.new_dynamic_label();
        self.test_zero(b);
        asm!(self; je =>zero);
        match b {
            Opnd::Reg(r) => asm!(self; cmp Rq(r), -1),
            Opnd::Mem(o) => asm!(self; cmp QWORD [rsp + o], -1),
            _ => unreachable!("constant divisors are handled above"),
        }
        asm!(self; je =>minus_one);
        self.load(RAX, a);
        asm!(self; cqo);
        match b {
            Opnd::Reg(r) => asm!(self; idiv Rq(r)),
            Opnd::Mem(o) => asm!(self; idiv QWORD [rsp + o]),
            _ => unreachable!(),
        }
        if rem {
            asm!(self; mov Rq(dst), rdx);
        } else {
            asm!(self; mov Rq(dst), rax);
        }
        asm!(self; jmp =>done ; =>minus_one);
        if rem {
            self.load(dst, Opnd::Imm(0));
        } else {
            self.load(dst, a);
            asm!(self; neg Rq(dst));
        }
        asm!(self; =>done);
        self.stack.release(vb);
        self.stack.push(Val::Reg(dst));
    }

    /// Division by a constant: the arithmetic of [`DivPlan::quotient`], instruction by
    /// instruction; a remainder is `n - q * d`.
    fn divide_by_constant(&mut self, va: Val, a: Opnd, d: i64, rem: bool) {
        match DivPlan::new(d) {
            DivPlan::Zero => {
                let zero = self.trap_label(Trap::DivisionByZero);
                asm!(self; jmp =>zero);
                self.stack.release(va);
                self.stack.push(Val::Const(0)); // unreachable
            }
            DivPlan::One if !rem => self.stack.push(va),
            DivPlan::One | DivPlan::MinusOne if rem => {
                self.stack.release(va);
                self.stack.push(Val::Const(0));
            }
            DivPlan::One | DivPlan::MinusOne => {
                let dst = self.owned_reg(va, a);
                asm!(self; neg Rq(dst));
                self.stack.push(Val::Reg(dst));
            }
            DivPlan::Min if !rem => {
                let cond = self.compare(a, Opnd::Imm64(i64::MIN), Cond::E);
                self.stack.release(va);
                let dst = self.alloc();
                self.setcc(cond, dst);
                self.stack.push(Val::Reg(dst));
            }
            DivPlan::Min => {
                // n % MIN is n, except MIN % MIN = 0.
                let dst = self.owned_reg(va, a);
                asm!(self
                    ; mov rax, QWORD i64::MIN
                    ; cmp Rq(dst), rax
                    ; mov eax, 0
                    ; cmove Rq(dst), rax
                );
                self.stack.push(Val::Reg(dst));
            }
            DivPlan::Pow2 { k, negative } => {
                let dst = self.owned_reg(va, a);
                let k8 = k as i8;
                asm!(self; mov rax, Rq(dst));
                if k > 1 {
                    asm!(self; sar rax, 63);
                }
                let bias_shift = (64 - k) as i8;
                asm!(self; shr rax, bias_shift ; add rax, Rq(dst));
                if rem {
                    let mask = -(1i64 << k);
                    match i32::try_from(mask) {
                        Ok(m) => asm!(self; and rax, m),
                        Err(_) => asm!(self; mov rdx, QWORD mask ; and rax, rdx),
                    }
                    asm!(self; sub Rq(dst), rax);
                } else {
                    asm!(self; sar rax, k8);
                    if negative {
                        asm!(self; neg rax);
                    }
                    asm!(self; mov Rq(dst), rax);
                }
                self.stack.push(Val::Reg(dst));
            }
            DivPlan::Magic { m, s, add_n, sub_n } => {
                // A non-negative dividend (the usual case: counters, indices) takes the
                // unsigned plan, one `mul` and a shift; a negative one the signed sequence.
                // Either leaves the quotient in rdx.
                let quotient = self.ops.new_dynamic_label();
                let non_negative = self.ops.new_dynamic_label();
                if d > 1 {
                    match a {
                        Opnd::Reg(r) => asm!(self; test Rq(r), Rq(r)),
                        Opnd::Mem(o) => asm!(self; cmp QWORD [rsp + o], 0),
                        _ => unreachable!("constant dividends are folded"),
                    }
                    asm!(self; jns =>non_negative);
                }
                asm!(self; mov rax, QWORD m);
                match a {
                    Opnd::Reg(r) => asm!(self; imul Rq(r)),
                    Opnd::Mem(o) => asm!(self; imul QWORD [rsp + o]),
                    _ => unreachable!("constant dividends are folded"),
                }
                if add_n {
                    self.alu(Alu::Add, RDX, a);
                }
                if sub_n {
                    self.alu(Alu::Sub, RDX, a);
                }
                if s > 0 {
                    let s = s as i8;
                    asm!(self; sar rdx, s);
                }
                asm!(self; mov rax, rdx ; shr rax, 63 ; add rdx, rax);
                if d > 1 {
                    let (um, us) = unsigned_magic(d as u64);
                    let (um, us) = (um as i64, us as i8);
                    asm!(self; jmp =>quotient ; =>non_negative ; mov rax, QWORD um);
                    match a {
                        Opnd::Reg(r) => asm!(self; mul Rq(r)),
                        Opnd::Mem(o) => asm!(self; mul QWORD [rsp + o]),
                        _ => unreachable!("constant dividends are folded"),
                    }
                    if us > 0 {
                        asm!(self; shr rdx, us);
                    }
                }
                asm!(self; =>quotient);
                // The quotient is in rdx. (`imul rdx, -d; lea dst, [n + rdx]` saves the copy
                // of n but measured 1.5x slower on the loop benchmark on AMD EPYC.)
                let dst = if rem {
                    let dst = self.owned_reg(va, a);
                    match i32::try_from(d) {
                        Ok(d) => asm!(self; imul rdx, rdx, d),
                        Err(_) => asm!(self; mov rax, QWORD d ; imul rdx, rax),
                    }
                    asm!(self; sub Rq(dst), rdx);
                    dst
                } else {
                    let dst = self.dst_for(va);
                    asm!(self; mov Rq(dst), rdx);
                    dst
                };
                self.stack.push(Val::Reg(dst));
            }
        }
    }
}
