//! Entry and exit: the depth and native-stack checks, the frame, the shrink-wrapped leading
//! base case, the on-stack-replacement entry, and the epilogue.

use super::cold::Counter;
use super::emitter::Emitter;
use super::regs::ARG_REGS;
use crate::abi::{CTX_MAX_DEPTH, CTX_STACK_LIMIT, SMALL_FRAME};
use crate::base_case::Operand;
use crate::baseline::stack_model::*;
use crate::code_info::pushed_frame;
use dynasmrt::{dynasm, DynasmApi, DynasmLabelApi};

/// A base case at the very start of a function (see `emit_base_case_guard`): return `ret`
/// unless `a` vs `b` satisfies `jump`, in which case go on at instruction `target`.
pub(super) struct BaseCaseGuard {
    a: Opnd,
    b: Opnd,
    jump: Cond,
    ret: Opnd,
    target: u32,
}

impl Emitter<'_> {
    /// Depth and native-stack checks before anything is pushed: too deep traps with a bare
    /// `ret`; too little native stack runs the call in the interpreter instead, whose frames
    /// are on the heap (see "Depth and the native stack" in [`crate::abi`]).
    pub(super) fn emit_entry_checks(&mut self) {
        let below = -self.frame.total();
        let (too_deep, short) = (self.too_deep, self.stack_short);
        asm!(self
            ; cmp rsi, QWORD [rdi + CTX_MAX_DEPTH]
            ; ja =>too_deep
        );
        if self.frame.total() as usize <= SMALL_FRAME {
            // Within the slack the ABI allows below the limit: one compare of rsp itself.
            asm!(self; cmp rsp, QWORD [rdi + CTX_STACK_LIMIT] ; jb =>short);
        } else {
            asm!(self
                ; lea rax, [rsp + below]
                ; cmp rax, QWORD [rdi + CTX_STACK_LIMIT]
                ; jb =>short
            );
        }
    }

    /// The frame, ctx into `rbx`, `depth + 1` into its slot, locals into their homes, and
    /// the entry safepoint poll.
    pub(super) fn emit_frame_setup(&mut self) {
        self.emit_frame();
        let params = self.func.params.len();
        for slot in 0..self.func.num_slots() as usize {
            if !self.frame.used[slot] {
                continue;
            }
            let src = match slot {
                k if k < 4 && k < params => Opnd::Reg(ARG_REGS[k]),
                k if k < params => Opnd::Mem(self.frame.incoming_param(k)),
                _ => Opnd::Imm(0),
            };
            self.store_home(slot as u32, src);
        }
        self.poll(Counter::Calls);
    }

    /// The frame itself: callee-saved registers pushed, the frame allocated, ctx into `rbx`,
    /// `depth + 1` into its slot. Touches only `rax` besides.
    fn emit_frame(&mut self) {
        let saved = self.frame.saved.clone();
        for (k, &r) in saved.iter().enumerate() {
            asm!(self; push Rq(r));
            self.frame_row(k + 1, false);
        }
        let size = self.frame.size;
        if size > 0 {
            asm!(self; sub rsp, size);
        }
        self.frame_row(saved.len(), true);
        asm!(self; mov rbx, rdi);
        if self.frame.has_calls {
            let slot = self.frame.depth_slot;
            asm!(self; lea rax, [rsi + 1] ; mov QWORD [rsp + slot], rax);
        }
    }

    /// On-stack replacement: the entry takes `(ctx, depth, frame)`, `frame` pointing at the
    /// interpreter's frame at loop header `header`: the function's slots (parameters, then
    /// locals), then the operand stack there. It builds the frame as the function's own
    /// entry does (the depth is the running activation's), moves the locals to their homes
    /// and the stack entries to their canonical slots (the state every jump to a label
    /// leaves), and jumps to the header. The body after it is the whole function, as
    /// compiled for its own entry (whose start this code never reaches).
    pub(super) fn emit_osr_entry(&mut self, header: u32) {
        let at = self.offset();
        self.out.notes.push((
            at,
            format!("on-stack replacement: the frame from the interpreter, then jump to {header}"),
        ));
        self.emit_frame();
        // `rdx` (the frame pointer) is no home and no scratch here.
        let slots = self.func.num_slots() as usize;
        for slot in 0..slots {
            if self.frame.used[slot] {
                let src = 8 * slot as i32;
                asm!(self; mov rax, QWORD [rdx + src]);
                self.store_home(slot as u32, Opnd::Reg(RAX));
            }
        }
        for h in 0..self.func.heights[header as usize] as usize {
            let (src, dst) = (8 * (slots + h) as i32, self.frame.spill(h));
            asm!(self; mov rax, QWORD [rdx + src] ; mov QWORD [rsp + dst], rax);
        }
        let label = self.label(header);
        asm!(self; jmp =>label);
    }

    /// The function's leading base case ([`crate::base_case`]), in this emitter's terms.
    pub(super) fn base_case_guard(&self) -> Option<BaseCaseGuard> {
        let bc = crate::base_case::leading_base_case(self.func)?;
        let opnd = |o| match o {
            Operand::Const(c) => Opnd::constant(c),
            Operand::Param(p) => Opnd::Reg(ARG_REGS[p]),
        };
        let cond = Cond::of(bc.op);
        Some(BaseCaseGuard {
            a: opnd(bc.a),
            b: opnd(bc.b),
            jump: if bc.body_if { cond } else { cond.negate() },
            ret: opnd(bc.ret),
            target: bc.target,
        })
    }

    /// Shrink-wrapping for the base case: its test and its return run on the ABI's
    /// registers before any frame exists (no push, no store: a leaf call costs little more
    /// than `call`/`ret`); the frame is built, and the entry poll made, only on the way to
    /// the rest of the body. Returns where the body goes on: (instruction, falls into it).
    pub(super) fn emit_base_case_guard(&mut self, g: BaseCaseGuard) -> (usize, bool) {
        let frame_path = self.ops.new_dynamic_label();
        for _ in 0..4 {
            self.out.instr_offsets.push(self.offset());
        }
        // Only rax is scratch here: every other register may hold a parameter.
        let cc = self.compare(g.a, g.b, g.jump);
        self.jcc(cc, frame_path);
        for _ in 0..2 {
            self.out.instr_offsets.push(self.offset());
        }
        self.load(RAX, g.ret);
        asm!(self; xor edx, edx ; ret ; =>frame_path);
        let at = self.offset();
        self.out
            .notes
            .push((at, "past the base case: build the frame".into()));
        self.emit_frame_setup();
        if g.target == 6 {
            (6, true)
        } else {
            let label = self.label(g.target);
            asm!(self; jmp =>label);
            (6, false)
        }
    }

    pub(super) fn emit_epilogue(&mut self) {
        let size = self.frame.size;
        let saved = self.frame.saved.clone();
        if size > 0 {
            asm!(self; add rsp, size);
            self.frame_row(saved.len(), false);
        }
        for (k, &r) in saved.iter().enumerate().rev() {
            asm!(self; pop Rq(r));
            self.frame_row(k, false);
        }
        asm!(self; ret);
        // What follows a `ret` in the body runs with the whole frame.
        self.frame_row(saved.len(), true);
    }

    /// Records for the unwinder the frame from here on: the first `pushed` callee-saved
    /// registers pushed, and the frame below them `allocated` or not.
    pub(super) fn frame_row(&mut self, pushed: usize, allocated: bool) {
        let below = if allocated { self.frame.size } else { 0 };
        let cfa = 8 + 8 * pushed as i32 + below;
        let row = pushed_frame(self.offset(), cfa, &self.frame.saved[..pushed]);
        self.out.frame.push(row);
    }
}
