//! One `emit_*` method per bytecode instruction, and `emit_instr`, which picks it; binary
//! operators go straight to their shape's method (see [`super::arith`], [`super::divide`],
//! [`super::control`]). Memory instructions share their bounds check, `checked_cell`.

use super::emitter::Emitter;
use super::regs::ARG_REGS;
use crate::abi::CTX_MEMORY_BASE;
use crate::baseline::stack_model::*;
use dynasmrt::{dynasm, DynasmApi, DynasmLabelApi};
use jitvm_vm::{BinOp, CallMode, FuncId, Instr, Trap};

/// Where a memory instruction's cell is, after its bounds check.
#[derive(Clone, Copy)]
enum CellAddr {
    /// `[base + index*8]`.
    Index(Reg),
    /// `[base + disp]`, a constant index already checked at compile time.
    Disp(i32),
}

impl Emitter<'_> {
    /// Emits instruction `i`; returns how many instructions it consumed (2 when fused with
    /// the next one). Binary operators go to their shape: [`Emitter::binary`],
    /// [`Emitter::divide`], [`Emitter::shift`], [`Emitter::comparison`].
    pub(super) fn emit_instr(&mut self, i: usize) -> usize {
        match self.func.code[i] {
            Instr::Push(c) => self.emit_push(c),
            Instr::Pop => self.emit_pop(),
            Instr::Dup => return self.emit_dup(i),
            Instr::Swap => self.emit_swap(),
            Instr::Over => self.emit_over(),
            Instr::Load(x) => self.emit_load(x),
            Instr::Store(x) => self.emit_store(x),
            Instr::Bin(op) => match op {
                BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::And | BinOp::Or | BinOp::Xor => {
                    return self.binary(i, op)
                }
                BinOp::Div | BinOp::Rem => self.divide(op),
                BinOp::Shl | BinOp::Shr | BinOp::Ushr => self.shift(op),
                BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                    return self.comparison(i, op)
                }
            },
            Instr::Neg => self.emit_neg(),
            Instr::Not => return self.emit_not(i),
            Instr::Jmp(t) => self.emit_jmp(i, t),
            Instr::Jz(t) => self.branch_on_top(i, t, false),
            Instr::Jnz(t) => self.branch_on_top(i, t, true),
            Instr::Call(f) => self.emit_call(i, f),
            Instr::Ret => self.emit_ret(),
            Instr::Mload => self.emit_mload(),
            Instr::Mstore => self.emit_mstore(),
            Instr::AtomicAdd => self.emit_atomic_add(),
            Instr::Cas => self.emit_cas(),
            Instr::Msize => self.emit_msize(),
            Instr::Spawn(f) => self.emit_spawn(f),
            Instr::Join => self.emit_join(),
            Instr::Patch(f, g) => self.emit_patch(f, g),
            Instr::Print => self.call_with_top(self.env.callbacks.print, "print"),
            Instr::Putc => self.call_with_top(self.env.callbacks.putc, "putc"),
            Instr::Assert => self.emit_assert(),
            Instr::Nop => {}
        }
        1
    }

    // ---------------------------------------------------------------- stack instructions

    fn emit_push(&mut self, c: i64) {
        self.stack.push(Val::Const(c));
    }

    fn emit_pop(&mut self) {
        let v = self.stack.pop();
        self.stack.release(v);
    }

    fn emit_dup(&mut self, i: usize) -> usize {
        // `dup; store x` is `store x; load x`: the value need not be copied.
        if let Some(Instr::Store(x)) = self.fusable_next(i) {
            self.emit_store(x);
            self.stack.push(Val::Local(x));
            return 2;
        }
        let h = self.stack.height() - 1;
        let copy = self.copy_of(h);
        self.stack.push(copy);
        1
    }

    fn emit_swap(&mut self) {
        // A spilled entry is tied to its height's slot, so moving one means loading it.
        let h = self.stack.height();
        let b = self.stack.pop();
        let a = self.stack.pop();
        let b = self.unspilled(b, h - 1);
        let a = self.unspilled(a, h - 2);
        self.stack.push(b);
        self.stack.push(a);
    }

    fn emit_over(&mut self) {
        let h = self.stack.height() - 2;
        let copy = self.copy_of(h);
        self.stack.push(copy);
    }

    fn emit_load(&mut self, x: u32) {
        self.stack.push(Val::Local(x));
    }

    fn emit_store(&mut self, x: u32) {
        let (v, src) = self.pop();
        if v == Val::Local(x) {
            return;
        }
        // Entries still reading the old value of x get their own copy first.
        for h in 0..self.stack.height() {
            if self.stack.get(h) == Val::Local(x) {
                let home = self.home(x);
                let r = self.alloc();
                self.load(r, home);
                self.stack.set(h, Val::Reg(r));
            }
        }
        self.store_home(x, src);
        self.stack.release(v);
    }

    // ---------------------------------------------------------------- arithmetic

    fn emit_neg(&mut self) {
        let (v, a) = self.pop();
        if let Val::Const(c) = v {
            return self.stack.push(Val::Const(c.wrapping_neg()));
        }
        let dst = self.owned_reg(v, a);
        asm!(self; neg Rq(dst));
        self.stack.push(Val::Reg(dst));
    }

    fn emit_not(&mut self, i: usize) -> usize {
        // `not; jz L` is `jnz L`, and `not; jnz L` is `jz L`.
        match self.fusable_next(i) {
            Some(Instr::Jz(t)) => {
                self.branch_on_top(i + 1, t, true);
                return 2;
            }
            Some(Instr::Jnz(t)) => {
                self.branch_on_top(i + 1, t, false);
                return 2;
            }
            _ => {}
        }
        let (v, a) = self.pop();
        if let Val::Const(c) = v {
            self.stack.push(Val::Const((c == 0) as i64));
            return 1;
        }
        let cond = self.compare(a, Opnd::Imm(0), Cond::E);
        self.stack.release(v);
        let dst = self.alloc();
        self.setcc(cond, dst);
        self.stack.push(Val::Reg(dst));
        1
    }

    // ---------------------------------------------------------------- control flow

    fn emit_jmp(&mut self, i: usize, t: u32) {
        self.before_jump(i, t, 0);
        let label = self.label(t);
        asm!(self; jmp =>label);
    }

    /// Arguments per the ABI, then `mov rax, slot; call qword [rax]`: one instruction loads
    /// the target and transfers, which is what `Guarantee::Strong` covers. With direct calls,
    /// a `call rel32` (its displacement aligned) that the installer binds to the slot.
    fn emit_call(&mut self, i: usize, f: FuncId) {
        let p = self.module.functions[f as usize].params.len();
        let base = self.stack.height() - p;
        self.spill_regs_below(base);
        let args = self.pop_n(p);
        for (k, &(_, arg)) in args.iter().enumerate().skip(4) {
            self.store_slot(8 * (k as i32 - 4), arg);
        }
        let mut moves: Vec<(Reg, Opnd)> = ARG_REGS
            .into_iter()
            .zip(args.iter().map(|&(_, o)| o))
            .collect();
        moves.push((RDI, Opnd::Reg(RBX)));
        moves.push((RSI, Opnd::Mem(self.frame.depth_slot)));
        self.parallel_move(moves);
        for (v, _) in args {
            self.stack.release(v);
        }
        let exit = self.exit;
        match self.env.calls {
            CallMode::Slots => {
                let slot = self.env.slot_addr[f as usize] as i64;
                asm!(self; mov rax, QWORD slot);
                self.out.call_sites.push((i, self.offset()));
                asm!(self; call QWORD [rax]);
            }
            CallMode::Direct => {
                let pad = jitvm_runtime::rel32_site_padding(self.offset());
                asm!(self; .bytes std::iter::repeat(jitvm_runtime::NOP).take(pad));
                let site = self.offset();
                self.out.call_sites.push((i, site));
                self.out.direct_calls.push((site, f));
                asm!(self; .bytes [0xE8u8, 0, 0, 0, 0]);
            }
        }
        asm!(self; test rdx, rdx ; jnz =>exit);
        let dst = self.alloc_result(i);
        asm!(self; mov Rq(dst), rax);
        self.stack.push(Val::Reg(dst));
    }

    fn emit_ret(&mut self) {
        let (v, a) = self.pop();
        self.load(RAX, a);
        self.stack.release(v);
        asm!(self; xor edx, edx);
        self.emit_epilogue();
    }

    // ---------------------------------------------------------------- memory

    fn emit_mload(&mut self) {
        let (vi, i) = self.pop();
        let Some((vi, cell)) = self.checked_cell(vi, i) else {
            return self.stack.push(Val::Const(0)); // unreachable: the check always traps
        };
        // The loaded value replaces the index, in the index's register if it owns one.
        let dst = self.dst_for(vi);
        asm!(self; mov rax, QWORD [rbx + CTX_MEMORY_BASE]);
        match cell {
            CellAddr::Index(r) => asm!(self; mov Rq(dst), QWORD [rax + Rq(r) * 8]),
            CellAddr::Disp(d) => asm!(self; mov Rq(dst), QWORD [rax + d]),
        }
        self.stack.push(Val::Reg(dst));
    }

    fn emit_mstore(&mut self) {
        let (vv, v) = self.pop();
        let (vi, i) = self.pop();
        let Some((vi, cell)) = self.checked_cell(vi, i) else {
            return self.stack.release(vv);
        };
        let v = match v {
            Opnd::Mem(_) | Opnd::Imm64(_) => {
                self.load(RDX, v);
                Opnd::Reg(RDX)
            }
            v => v,
        };
        asm!(self; mov rax, QWORD [rbx + CTX_MEMORY_BASE]);
        match (cell, v) {
            (CellAddr::Index(r), Opnd::Reg(s)) => asm!(self; mov QWORD [rax + Rq(r) * 8], Rq(s)),
            (CellAddr::Index(r), Opnd::Imm(c)) => asm!(self; mov QWORD [rax + Rq(r) * 8], c),
            (CellAddr::Disp(d), Opnd::Reg(s)) => asm!(self; mov QWORD [rax + d], Rq(s)),
            (CellAddr::Disp(d), Opnd::Imm(c)) => asm!(self; mov QWORD [rax + d], c),
            _ => unreachable!("value moved into a register above"),
        }
        self.stack.release(vi);
        self.stack.release(vv);
    }

    fn emit_atomic_add(&mut self) {
        let (vd, d) = self.pop();
        let (vi, i) = self.pop();
        let Some((vi, cell)) = self.checked_cell(vi, i) else {
            self.stack.release(vd);
            return self.stack.push(Val::Const(0));
        };
        let dst = self.owned_reg(vd, d);
        asm!(self; mov rax, QWORD [rbx + CTX_MEMORY_BASE]);
        match cell {
            CellAddr::Index(r) => asm!(self; lock xadd QWORD [rax + Rq(r) * 8], Rq(dst)),
            CellAddr::Disp(c) => asm!(self; lock xadd QWORD [rax + c], Rq(dst)),
        }
        self.stack.release(vi);
        self.stack.push(Val::Reg(dst));
    }

    fn emit_cas(&mut self) {
        let (vn, n) = self.pop();
        let (ve, e) = self.pop();
        let (vi, i) = self.pop();
        let Some((vi, cell)) = self.checked_cell(vi, i) else {
            self.stack.release(vn);
            self.stack.release(ve);
            return self.stack.push(Val::Const(0));
        };
        let (vn, new) = match n {
            Opnd::Reg(r) => (vn, r),
            _ => {
                let r = self.owned_reg(vn, n);
                (Val::Reg(r), r)
            }
        };
        self.load(RAX, e);
        asm!(self; mov rdx, QWORD [rbx + CTX_MEMORY_BASE]);
        match cell {
            CellAddr::Index(r) => asm!(self; lock cmpxchg QWORD [rdx + Rq(r) * 8], Rq(new)),
            CellAddr::Disp(c) => asm!(self; lock cmpxchg QWORD [rdx + c], Rq(new)),
        }
        self.stack.release(vn);
        self.stack.release(ve);
        self.stack.release(vi);
        self.push_rax();
    }

    fn emit_msize(&mut self) {
        self.stack.push(Val::Const(self.module.memory_cells as i64));
    }

    /// Bounds-checks a memory index (`0 <= i < cells`, one unsigned compare) and says where
    /// the cell is; `None` when a constant index is out of bounds (the trap jump is emitted).
    /// The index entry may come back changed (loaded into a register it then owns).
    fn checked_cell(&mut self, vi: Val, i: Opnd) -> Option<(Val, CellAddr)> {
        let cells = self.module.memory_cells;
        let oob = self.trap_label(Trap::MemoryOutOfBounds);
        if let Val::Const(c) = vi {
            if (c as u64) < cells {
                return Some((vi, CellAddr::Disp(c as i32 * 8)));
            }
            asm!(self; jmp =>oob);
            return None;
        }
        let (vi, r) = match i {
            Opnd::Reg(r) => (vi, r),
            _ => {
                let r = self.owned_reg(vi, i);
                (Val::Reg(r), r)
            }
        };
        // cells <= 2^28 fits an imm32.
        let cells = cells as i32;
        asm!(self; cmp Rq(r), cells ; jae =>oob);
        Some((vi, CellAddr::Index(r)))
    }

    // ---------------------------------------------------------------- calls into Rust

    /// `spawn(ctx, f, args)` with F's arguments stored in order at `[rsp]`.
    fn emit_spawn(&mut self, f: FuncId) {
        let p = self.module.functions[f as usize].params.len();
        let base = self.stack.height() - p;
        self.spill_regs_below(base);
        let args = self.pop_n(p);
        for (k, &(v, arg)) in args.iter().enumerate() {
            self.store_slot(8 * k as i32, arg);
            self.stack.release(v);
        }
        asm!(self; mov rdi, rbx ; mov esi, f as i32 ; mov rdx, rsp);
        self.call_rust(self.env.callbacks.spawn, "spawn");
        let exit = self.exit;
        asm!(self; test rdx, rdx ; jnz =>exit);
        self.push_rax();
    }

    fn emit_join(&mut self) {
        self.spill_regs_below(self.stack.height() - 1);
        let (v, h) = self.pop();
        self.parallel_move(vec![(RDI, Opnd::Reg(RBX)), (RSI, h)]);
        self.stack.release(v);
        self.call_rust(self.env.callbacks.join, "join");
        let exit = self.exit;
        asm!(self; test rdx, rdx ; jnz =>exit);
        self.push_rax();
    }

    fn emit_patch(&mut self, f: FuncId, g: FuncId) {
        self.spill_regs_below(self.stack.height());
        asm!(self; mov rdi, rbx ; mov esi, f as i32 ; mov edx, g as i32);
        self.call_rust(self.env.callbacks.patch, "patch");
        self.check_status_in_rax();
    }

    fn emit_assert(&mut self) {
        let (v, a) = self.pop();
        let failed = self.trap_label(Trap::AssertionFailed);
        match v {
            Val::Const(0) => asm!(self; jmp =>failed),
            Val::Const(_) => {}
            _ => {
                self.test_zero(a);
                asm!(self; je =>failed);
            }
        }
        self.stack.release(v);
    }
}
