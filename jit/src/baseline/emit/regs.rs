//! Values and registers: where a stack entry is, popping entries, allocating pool
//! registers (spilling when none is free), and moving entries to their canonical slots.

use super::emitter::Emitter;
use crate::baseline::frame::Home;
use crate::baseline::stack_model::*;
use dynasmrt::{dynasm, DynasmApi};
use jitvm_vm::Instr;

/// The ABI's registers for parameters p0..p3.
pub(super) const ARG_REGS: [Reg; 4] = [RDX, RCX, R8, R9];

impl Emitter<'_> {
    /// Where the entry of value `v` at height `h` is.
    pub(super) fn opnd(&self, v: Val, h: usize) -> Opnd {
        match v {
            Val::Const(c) => Opnd::constant(c),
            Val::Local(x) => self.home(x),
            Val::Reg(r) => Opnd::Reg(r),
            Val::Spilled => Opnd::Mem(self.frame.spill(h)),
        }
    }

    pub(super) fn home(&self, x: u32) -> Opnd {
        match self.frame.homes[x as usize] {
            Home::Reg(r) => Opnd::Reg(r),
            Home::Mem(o) => Opnd::Mem(o),
        }
    }

    pub(super) fn store_home(&mut self, x: u32, src: Opnd) {
        match self.frame.homes[x as usize] {
            Home::Reg(r) => self.load(r, src),
            Home::Mem(o) => self.store_slot(o, src),
        }
    }

    /// Pops the top entry: the value (to release once dead) and where it is.
    pub(super) fn pop(&mut self) -> (Val, Opnd) {
        let v = self.stack.pop();
        (v, self.opnd(v, self.stack.height()))
    }

    /// Pops `n` entries, deepest first.
    pub(super) fn pop_n(&mut self, n: usize) -> Vec<(Val, Opnd)> {
        let mut out: Vec<(Val, Opnd)> = (0..n).map(|_| self.pop()).collect();
        out.reverse();
        out
    }

    /// A register for a new value computed by instruction `i`: when the next instruction is
    /// a call taking that value as its last register argument, that argument register, so
    /// the call needs no move (`lea rdx, [r12-1]; ..; call`). `rdx` is not in the pool: it
    /// may hold a value only there, where nothing runs between the two instructions that
    /// uses it as scratch.
    pub(super) fn alloc_result(&mut self, i: usize) -> Reg {
        if let Some(Instr::Call(f)) = self.fusable_next(i) {
            let p = self.module.functions[f as usize].params.len();
            if let Some(&r) = ARG_REGS.get(p.wrapping_sub(1)) {
                if self.stack.is_free(r) {
                    self.stack.take(r);
                    return r;
                }
            }
        }
        self.alloc()
    }

    /// A free pool register; when none is, the deepest register entry is spilled for it.
    pub(super) fn alloc(&mut self) -> Reg {
        if let Some(r) = self.stack.alloc() {
            return r;
        }
        let h = self
            .stack
            .deepest_reg_entry()
            .expect("instructions hold at most four registers, the pool has seven");
        let Val::Reg(r) = self.stack.get(h) else {
            unreachable!()
        };
        self.store_slot(self.frame.spill(h), Opnd::Reg(r));
        self.stack.set(h, Val::Spilled);
        r // stays taken: ownership passes to the caller
    }

    /// The register a result replacing `v` goes to: `v`'s own, or a new one.
    pub(super) fn dst_for(&mut self, v: Val) -> Reg {
        match v {
            Val::Reg(r) => r,
            _ => self.alloc(),
        }
    }

    /// `v` (at `o`) in a register this instruction owns.
    pub(super) fn owned_reg(&mut self, v: Val, o: Opnd) -> Reg {
        if let Val::Reg(r) = v {
            return r;
        }
        let r = self.alloc();
        self.load(r, o);
        r
    }

    /// A copy of the entry at height `h`, for `dup`/`over`: constants and locals are copied
    /// in the model only.
    pub(super) fn copy_of(&mut self, h: usize) -> Val {
        let v = self.stack.get(h);
        match v {
            Val::Const(_) | Val::Local(_) => v,
            Val::Reg(_) | Val::Spilled => {
                let src = self.opnd(v, h);
                // If `alloc` spills this very entry it hands back its register, whose value
                // is still the one to copy.
                let r = self.alloc();
                self.load(r, src);
                Val::Reg(r)
            }
        }
    }

    /// A popped entry that was at height `h`, moved out of its height-bound slot.
    pub(super) fn unspilled(&mut self, v: Val, h: usize) -> Val {
        if v != Val::Spilled {
            return v;
        }
        let r = self.alloc();
        self.load(r, Opnd::Mem(self.frame.spill(h)));
        Val::Reg(r)
    }

    /// Takes `rcx` as a temporary, moving its owner (if any) to another register or its slot.
    pub(super) fn claim_rcx(&mut self) {
        match self.stack.owner_of(RCX) {
            None => self.stack.take(RCX),
            Some(h) => match self.stack.alloc() {
                Some(r) => {
                    asm!(self; mov Rq(r), rcx);
                    self.stack.set(h, Val::Reg(r));
                }
                None => {
                    self.store_slot(self.frame.spill(h), Opnd::Reg(RCX));
                    self.stack.set(h, Val::Spilled);
                }
            },
        }
    }

    /// Every entry below height `n` into its canonical slot (the state at a label).
    pub(super) fn canonicalize_below(&mut self, n: usize) {
        for h in 0..n {
            let v = self.stack.get(h);
            if v != Val::Spilled {
                let src = self.opnd(v, h);
                self.store_slot(self.frame.spill(h), src);
                self.stack.release(v);
                self.stack.set(h, Val::Spilled);
            }
        }
    }

    /// Register entries below height `n` into their slots: caller-saved registers die at a
    /// call. Constants and locals (callee-saved registers, frame slots) survive it.
    pub(super) fn spill_regs_below(&mut self, n: usize) {
        for h in 0..n {
            if let Val::Reg(r) = self.stack.get(h) {
                self.store_slot(self.frame.spill(h), Opnd::Reg(r));
                self.stack.release_reg(r);
                self.stack.set(h, Val::Spilled);
            }
        }
    }

    /// Moves values into registers all at once (call arguments): each destination is
    /// written only once no pending move still reads it; cycles go through `rax`.
    pub(super) fn parallel_move(&mut self, mut moves: Vec<(Reg, Opnd)>) {
        loop {
            moves.retain(|&(d, s)| s != Opnd::Reg(d));
            if moves.is_empty() {
                return;
            }
            let ready = (0..moves.len()).find(|&i| {
                let d = moves[i].0;
                !moves.iter().any(|&(_, s)| s == Opnd::Reg(d))
            });
            match ready {
                Some(i) => {
                    let (d, s) = moves.swap_remove(i);
                    self.load(d, s);
                }
                None => {
                    // A cycle: park one destination's current value in rax.
                    let d = moves[0].0;
                    asm!(self; mov rax, Rq(d));
                    for m in moves.iter_mut().filter(|m| m.1 == Opnd::Reg(d)) {
                        m.1 = Opnd::Reg(RAX);
                    }
                }
            }
        }
    }
}
