//! Division and remainder: a zero divisor traps, `MIN / -1` never reaches `idiv`, and
//! constant divisors follow the shared multiply-by-magic plans (`crate::magic`). Where the
//! operands' intervals ([`crate::opt::ranges`]) rule a case out, its code goes: the signed
//! plan for a dividend never negative, the zero trap and the -1 detour for a divisor never
//! either.

use super::Translator;
use crate::abi::status_of;
use crate::magic::{unsigned_magic, DivPlan};
use crate::opt::ranges::Range;
use cranelift_codegen::ir::{condcodes::IntCC, types::I64, InstBuilder, Value};
use jitvm_vm::Trap;

impl Translator<'_> {
    /// `a / d` or `a % d`, with `ra` and `rd` what `a` and `d` can be.
    pub(super) fn divide(
        &mut self,
        a: Value,
        d: Value,
        rem: bool,
        (ra, rd): (Range, Range),
    ) -> Value {
        let non_negative = ra.is_non_negative();
        match self.const_of(d) {
            None => {
                if rd.contains(0) {
                    self.trap_if_zero(d);
                }
            }
            Some(0) => self.trap_if_zero(d),
            Some(c) if rem && non_negative && c > 0 && c.count_ones() == 1 => {
                return self.b.ins().band_imm_s(a, c - 1);
            }
            Some(-1) => {
                return if rem {
                    self.iconst(0)
                } else {
                    self.b.ins().ineg(a)
                };
            }
            Some(c) => {
                // The shared multiply-by-magic plans, as the baseline divides (with an
                // unsigned path for a non-negative dividend, which Cranelift's own rules for
                // constant divisors lack), and `n - q * d` for the remainder.
                let q = self.div_const(a, c, non_negative);
                return if rem {
                    let qd = self.b.ins().imul_imm_s(q, c);
                    self.b.ins().isub(a, qd)
                } else {
                    q
                };
            }
        }
        if non_negative && rd.lo >= 0 {
            // Both non-negative (and d not 0): the unsigned division is the signed one.
            return if rem {
                self.b.ins().urem(a, d)
            } else {
                self.b.ins().udiv(a, d)
            };
        }
        if !rd.contains(-1) {
            return if rem {
                self.b.ins().srem(a, d)
            } else {
                self.b.ins().sdiv(a, d)
            };
        }
        // MIN / -1 would fault in `idiv`: divide by 1 instead and fix the result.
        let minus1 = self.b.ins().icmp_imm_s(IntCC::Equal, d, -1);
        let one = self.iconst(1);
        let safe = self.b.ins().select(minus1, one, d);
        if rem {
            let r = self.b.ins().srem(a, safe);
            let zero = self.iconst(0);
            self.b.ins().select(minus1, zero, r)
        } else {
            let q = self.b.ins().sdiv(a, safe);
            let n = self.b.ins().ineg(a);
            self.b.ins().select(minus1, n, q)
        }
    }

    /// `n / d` for a constant `d` other than 0, without a division instruction; `n` is
    /// known not to be negative where `non_negative`.
    fn div_const(&mut self, n: Value, d: i64, non_negative: bool) -> Value {
        match DivPlan::new(d) {
            DivPlan::Zero => unreachable!("division by a constant zero traps before"),
            DivPlan::One => n,
            DivPlan::MinusOne => self.b.ins().ineg(n),
            DivPlan::Min => {
                let t = self.b.ins().icmp_imm_s(IntCC::Equal, n, i64::MIN);
                self.b.ins().uextend(I64, t)
            }
            DivPlan::Pow2 { k, negative: false } if non_negative => {
                self.b.ins().ushr_imm_s(n, k as i64)
            }
            DivPlan::Pow2 { k, negative } => {
                let sign = self.b.ins().sshr_imm_s(n, 63);
                let bias = self.b.ins().ushr_imm_s(sign, 64 - k as i64);
                let biased = self.b.ins().iadd(n, bias);
                let q = self.b.ins().sshr_imm_s(biased, k as i64);
                if negative {
                    self.b.ins().ineg(q)
                } else {
                    q
                }
            }
            DivPlan::Magic { m, s, add_n, sub_n } => {
                // A non-negative dividend (counters, indices) takes the unsigned plan, one
                // `mul` and a shift, as the baseline does; a negative one the signed plan.
                if d > 1 && non_negative {
                    return self.unsigned_quotient(n, d);
                }
                let (fast, slow, join) = if d > 1 {
                    let fast = self.b.create_block();
                    let slow = self.b.create_block();
                    let join = self.b.create_block();
                    self.b.append_block_param(join, I64);
                    let non_negative =
                        self.b
                            .ins()
                            .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, n, 0);
                    self.b.ins().brif(non_negative, fast, &[], slow, &[]);
                    self.b.switch_to_block(fast);
                    let q = self.unsigned_quotient(n, d);
                    self.b.ins().jump(join, &[q.into()]);
                    self.b.switch_to_block(slow);
                    (Some(fast), Some(slow), Some(join))
                } else {
                    (None, None, None)
                };
                let mv = self.iconst(m);
                let mut q = self.b.ins().smulhi(n, mv);
                if add_n {
                    q = self.b.ins().iadd(q, n);
                }
                if sub_n {
                    q = self.b.ins().isub(q, n);
                }
                let q = self.b.ins().sshr_imm_s(q, s as i64);
                let sign = self.b.ins().ushr_imm_s(q, 63);
                let q = self.b.ins().iadd(q, sign);
                match (fast, slow, join) {
                    (Some(_), Some(_), Some(join)) => {
                        self.b.ins().jump(join, &[q.into()]);
                        self.b.switch_to_block(join);
                        self.b.block_params(join)[0]
                    }
                    _ => q,
                }
            }
        }
    }

    /// `n / d` for `n >= 0` and `d > 1` not a power of two: one `mul` and a shift.
    fn unsigned_quotient(&mut self, n: Value, d: i64) -> Value {
        let (um, us) = unsigned_magic(d as u64);
        let umv = self.iconst(um as i64);
        let q = self.b.ins().umulhi(n, umv);
        self.b.ins().ushr_imm_s(q, us as i64)
    }

    fn trap_if_zero(&mut self, v: Value) {
        let t = self.trap_block(status_of(Trap::DivisionByZero));
        let cont = self.b.create_block();
        self.b.ins().brif(v, cont, &[], t, &[]);
        self.b.switch_to_block(cont);
    }
}
