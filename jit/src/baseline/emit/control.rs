//! Control flow and calls: comparisons (fused with a following branch into `cmp; jcc`),
//! conditional branches, what every jump does first, and calls into Rust callbacks.

use super::cold::Counter;
use super::emitter::Emitter;
use crate::baseline::stack_model::*;
use dynasmrt::{dynasm, DynasmApi, DynasmLabelApi};
use jitvm_vm::{BinOp, Instr};

impl Emitter<'_> {
    /// `eq ne lt le gt ge`, fused with a following `jz`/`jnz` into `cmp; jcc`.
    pub(super) fn comparison(&mut self, i: usize, op: BinOp) -> usize {
        let cond = Cond::of(op);
        let (at, target, jump_if) = match self.fusable_next(i) {
            Some(Instr::Jnz(t)) => (i + 1, t, cond),
            Some(Instr::Jz(t)) => (i + 1, t, cond.negate()),
            _ => {
                let (vb, b) = self.pop();
                let (va, a) = self.pop();
                if let (Val::Const(x), Val::Const(y)) = (va, vb) {
                    self.stack
                        .push(Val::Const(op.eval(x, y).expect("comparisons never trap")));
                    return 1;
                }
                let cc = self.compare(a, b, cond);
                self.stack.release(va);
                self.stack.release(vb);
                let dst = self.alloc();
                self.setcc(cc, dst);
                self.stack.push(Val::Reg(dst));
                return 1;
            }
        };
        self.before_jump(at, target, 2);
        let (vb, b) = self.pop();
        let (va, a) = self.pop();
        let label = self.label(target);
        if let (Val::Const(x), Val::Const(y)) = (va, vb) {
            let holds = op.eval(x, y) == Some(1);
            if holds == (jump_if == cond) {
                asm!(self; jmp =>label);
            }
            return 2;
        }
        let cc = self.compare(a, b, jump_if);
        self.stack.release(va);
        self.stack.release(vb);
        self.jcc(cc, label);
        2
    }

    /// `jz`/`jnz` (or a fused `not; jz`): jump on the top of stack being (non)zero.
    pub(super) fn branch_on_top(&mut self, at: usize, t: u32, if_nonzero: bool) {
        self.before_jump(at, t, 1);
        let (v, a) = self.pop();
        let label = self.label(t);
        match v {
            Val::Const(c) => {
                if (c != 0) == if_nonzero {
                    asm!(self; jmp =>label);
                }
            }
            _ => {
                self.test_zero(a);
                self.stack.release(v);
                if if_nonzero {
                    asm!(self; jne =>label);
                } else {
                    asm!(self; je =>label);
                }
            }
        }
    }

    /// Before a jump from instruction `at` to `target`: every entry but the top `keep`
    /// (the jump's own operands) goes to its canonical slot, the label's state; a backward
    /// jump polls the safepoint.
    pub(super) fn before_jump(&mut self, at: usize, target: u32, keep: usize) {
        self.canonicalize_below(self.stack.height() - keep);
        if target as usize <= at {
            self.poll(Counter::BackEdges);
        }
    }

    // ---------------------------------------------------------------- calls into Rust

    /// Calls a status-returning callback `(ctx, top of stack)`.
    pub(super) fn call_with_top(&mut self, callback: usize, name: &str) {
        self.spill_regs_below(self.stack.height() - 1);
        let (v, a) = self.pop();
        self.parallel_move(vec![(RDI, Opnd::Reg(RBX)), (RSI, a)]);
        self.stack.release(v);
        self.call_rust(callback, name);
        self.check_status_in_rax();
    }

    pub(super) fn call_rust(&mut self, addr: usize, name: &str) {
        let at = self.offset();
        self.out.notes.push((at, format!("callback {name}")));
        let addr = addr as i64;
        asm!(self; mov rax, QWORD addr ; call rax);
    }

    pub(super) fn check_status_in_rax(&mut self) {
        let exit = self.exit_rax;
        asm!(self; test rax, rax ; jnz =>exit);
    }

    /// Pushes the result of a call (in `rax`) as a new register entry.
    pub(super) fn push_rax(&mut self) {
        let dst = self.alloc();
        asm!(self; mov Rq(dst), rax);
        self.stack.push(Val::Reg(dst));
    }
}
