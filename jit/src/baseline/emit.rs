//! One `emit_*` method per bytecode instruction: the bytecode-to-x86-64 mapping reads off
//! the page. Shared shapes (binary arithmetic, comparisons, branches, calls into Rust) are
//! helpers below the instruction methods; register moves and the spill machinery at the end.

// dynasm expands a dynamic register `Rq(r)` to `r.into()`, a no-op conversion for `u8`.
#![allow(clippy::useless_conversion)]

use super::frame::{Frame, Home};
use super::stack_model::*;
use super::{CompileEnv, CompileError};
use crate::abi::{
    status_of, CompiledCode, CTX_BACK_EDGES_LEFT, CTX_CALLS_LEFT, CTX_MAX_DEPTH, CTX_MEMORY_BASE,
    CTX_POLL, CTX_STACK_LIMIT, ENTRY_OFFSET, MAX_NATIVE_FRAME, SMALL_FRAME,
};
use crate::base_case::Operand;
use crate::magic::{unsigned_magic, DivPlan};
use dynasmrt::x64::X64Relocation;
use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi, VecAssembler};
use jitvm_vm::Trap;
use jitvm_vm::{BinOp, FuncId, Function, Instr, Module};

macro_rules! asm {
    ($s:ident; $($t:tt)*) => {
        dynasm!($s.ops ; .arch x64 ; $($t)*)
    };
}

/// The two-operand ALU instructions `op r64, r/m64|imm32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Alu {
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
    fn of(op: BinOp) -> Alu {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shift {
    Shl,
    Sar,
    Shr,
}

/// The ABI's registers for parameters p0..p3.
const ARG_REGS: [Reg; 4] = [RDX, RCX, R8, R9];

/// Out-of-line code, emitted after the body so hot paths fall through.
enum Cold {
    /// A safepoint poll's slow path (with a profile counter's, if it counts one): save the
    /// live registers into their canonical slots, call `safepoint(ctx)` (or
    /// `profile(ctx, f, counter)`), reload, resume.
    Poll {
        slow: DynamicLabel,
        resume: DynamicLabel,
        live: Vec<(Reg, i32)>,
        counter: Option<(FuncId, Counter)>,
    },
}

/// Which profile counter a poll site decrements (the `counter` argument of `profile`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counter {
    Calls = 0,
    BackEdges = 1,
}

/// A base case at the very start of a function (see `emit_base_case_guard`): return `ret`
/// unless `a` vs `b` satisfies `jump`, in which case go on at instruction `target`.
struct BaseCaseGuard {
    a: Opnd,
    b: Opnd,
    jump: Cond,
    ret: Opnd,
    target: u32,
}

/// Where a memory instruction's cell is, after its bounds check.
#[derive(Clone, Copy)]
enum CellAddr {
    /// `[base + index*8]`.
    Index(Reg),
    /// `[base + disp]`, a constant index already checked at compile time.
    Disp(i32),
}

pub(super) struct Emitter<'a> {
    ops: VecAssembler<X64Relocation>,
    func: &'a Function,
    module: &'a Module,
    env: &'a CompileEnv,
    frame: Frame,
    stack: StackModel,
    /// Per instruction: its label, if some jump targets it.
    labels: Vec<Option<DynamicLabel>>,
    /// Per instruction: whether a backward jump targets it (a loop header, aligned to 16
    /// bytes so that a loop runs the same whichever entry, the function's own or on-stack
    /// replacement's, placed it).
    loop_header: Vec<bool>,
    /// Epilogue for a trap: status already in `rdx`.
    exit: DynamicLabel,
    /// A callback returned a nonzero status in `rax`.
    exit_rax: DynamicLabel,
    /// Depth exhausted: trap before the frame exists.
    too_deep: DynamicLabel,
    /// Native stack short before the frame exists: run this call in the interpreter.
    stack_short: DynamicLabel,
    traps: Vec<(Trap, DynamicLabel)>,
    cold: Vec<Cold>,
    out: CompiledCode,
    /// Compile an on-stack-replacement entry at this loop header instead of the function's
    /// own entry (see `emit_osr_entry`).
    osr: Option<u32>,
}

impl<'a> Emitter<'a> {
    pub fn new(
        func: &'a Function,
        module: &'a Module,
        env: &'a CompileEnv,
        base_addr: usize,
    ) -> Emitter<'a> {
        let mut ops = VecAssembler::new(base_addr);
        let mut labels = vec![None; func.code.len()];
        for instr in &func.code {
            if let Some(t) = instr.target() {
                let slot = &mut labels[t as usize];
                if slot.is_none() {
                    *slot = Some(ops.new_dynamic_label());
                }
            }
        }
        let mut loop_header = vec![false; func.code.len()];
        for (i, instr) in func.code.iter().enumerate() {
            match instr.target() {
                Some(t) if t as usize <= i => loop_header[t as usize] = true,
                _ => {}
            }
        }
        let exit = ops.new_dynamic_label();
        let exit_rax = ops.new_dynamic_label();
        let too_deep = ops.new_dynamic_label();
        let stack_short = ops.new_dynamic_label();
        Emitter {
            ops,
            func,
            module,
            env,
            frame: Frame::layout(func, module),
            stack: StackModel::new(),
            labels,
            loop_header,
            exit,
            exit_rax,
            too_deep,
            stack_short,
            traps: Vec::new(),
            cold: Vec::new(),
            out: CompiledCode {
                entry_offset: ENTRY_OFFSET,
                ..CompiledCode::default()
            },
            osr: None,
        }
    }

    /// Makes this an on-stack-replacement entry at the loop header `header` (a label).
    pub fn at_loop_header(mut self, header: u32) -> Self {
        self.osr = Some(header);
        self
    }

    pub fn compile(mut self) -> Result<CompiledCode, CompileError> {
        let bytes = self.frame.total() as usize;
        if bytes > MAX_NATIVE_FRAME {
            return Err(CompileError::FrameTooLarge {
                bytes,
                bound: MAX_NATIVE_FRAME,
            });
        }
        let header = self.env.header as u64;
        asm!(self; .u64 0 ; .u64 header);
        debug_assert_eq!(self.offset(), ENTRY_OFFSET);
        self.emit_entry_checks();
        let (mut i, mut falls_through) = match (self.osr, self.base_case_guard()) {
            (Some(header), _) => {
                self.emit_osr_entry(header);
                (0, false)
            }
            (None, Some(guard)) => self.emit_base_case_guard(guard),
            (None, None) => {
                self.emit_frame_setup();
                (0, true)
            }
        };

        let code = &self.func.code;
        while i < code.len() {
            if let Some(label) = self.labels[i] {
                if falls_through {
                    self.canonicalize_below(self.stack.height());
                }
                self.stack.reset_spilled(self.func.heights[i] as usize);
                if self.loop_header[i] {
                    asm!(self; .align 16);
                }
                asm!(self; =>label);
            } else if !falls_through {
                self.stack.reset_spilled(self.func.heights[i] as usize);
            }
            debug_assert_eq!(self.stack.height(), self.func.heights[i] as usize);
            self.out.instr_offsets.push(self.offset());
            let consumed = self.emit_instr(i);
            for _ in 1..consumed {
                self.out.instr_offsets.push(self.offset());
            }
            falls_through = code[i + consumed - 1].falls_through();
            i += consumed;
        }

        self.out.cold_offset = self.offset();
        self.emit_cold();
        self.out.bytes = self
            .ops
            .finalize()
            .map_err(|e| CompileError::Assembler(e.to_string()))?;
        Ok(self.out)
    }

    /// Emits instruction `i`; returns how many instructions it consumed (2 when fused with
    /// the next one).
    fn emit_instr(&mut self, i: usize) -> usize {
        match self.func.code[i] {
            Instr::Push(c) => self.emit_push(c),
            Instr::Pop => self.emit_pop(),
            Instr::Dup => return self.emit_dup(i),
            Instr::Swap => self.emit_swap(),
            Instr::Over => self.emit_over(),
            Instr::Load(x) => self.emit_load(x),
            Instr::Store(x) => self.emit_store(x),
            Instr::Bin(op) => return self.emit_bin(i, op),
            Instr::Neg => self.emit_neg(),
            Instr::Not => return self.emit_not(i),
            Instr::Jmp(t) => self.emit_jmp(i, t),
            Instr::Jz(t) => self.emit_jz(i, t),
            Instr::Jnz(t) => self.emit_jnz(i, t),
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
            Instr::Print => self.emit_print(),
            Instr::Putc => self.emit_putc(),
            Instr::Assert => self.emit_assert(),
            Instr::Nop => {}
        }
        1
    }

    fn emit_bin(&mut self, i: usize, op: BinOp) -> usize {
        match op {
            BinOp::Add => return self.emit_add(i),
            BinOp::Sub => return self.emit_sub(i),
            BinOp::Mul => return self.emit_mul(i),
            BinOp::Div => self.emit_div(),
            BinOp::Rem => self.emit_rem(),
            BinOp::And => return self.emit_and(i),
            BinOp::Or => return self.emit_or(i),
            BinOp::Xor => return self.emit_xor(i),
            BinOp::Shl => self.emit_shl(),
            BinOp::Shr => self.emit_shr(),
            BinOp::Ushr => self.emit_ushr(),
            BinOp::Eq => return self.emit_eq(i),
            BinOp::Ne => return self.emit_ne(i),
            BinOp::Lt => return self.emit_lt(i),
            BinOp::Le => return self.emit_le(i),
            BinOp::Gt => return self.emit_gt(i),
            BinOp::Ge => return self.emit_ge(i),
        }
        1
    }

    // ---------------------------------------------------------------- prologue, epilogue

    /// Depth and native-stack checks before anything is pushed: too deep traps with a bare
    /// `ret`; too little native stack runs the call in the interpreter instead, whose frames
    /// are on the heap (see "Depth and the native stack" in [`crate::abi`]).
    fn emit_entry_checks(&mut self) {
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
    fn emit_frame_setup(&mut self) {
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
        for r in self.frame.saved.clone() {
            asm!(self; push Rq(r));
        }
        let size = self.frame.size;
        if size > 0 {
            asm!(self; sub rsp, size);
        }
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
    fn emit_osr_entry(&mut self, header: u32) {
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
    fn base_case_guard(&self) -> Option<BaseCaseGuard> {
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
    fn emit_base_case_guard(&mut self, g: BaseCaseGuard) -> (usize, bool) {
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

    fn emit_epilogue(&mut self) {
        let size = self.frame.size;
        if size > 0 {
            asm!(self; add rsp, size);
        }
        for r in self.frame.saved.clone().into_iter().rev() {
            asm!(self; pop Rq(r));
        }
        asm!(self; ret);
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

    fn emit_add(&mut self, i: usize) -> usize {
        self.binary(i, BinOp::Add)
    }

    fn emit_sub(&mut self, i: usize) -> usize {
        self.binary(i, BinOp::Sub)
    }

    fn emit_mul(&mut self, i: usize) -> usize {
        self.binary(i, BinOp::Mul)
    }

    fn emit_and(&mut self, i: usize) -> usize {
        self.binary(i, BinOp::And)
    }

    fn emit_or(&mut self, i: usize) -> usize {
        self.binary(i, BinOp::Or)
    }

    fn emit_xor(&mut self, i: usize) -> usize {
        self.binary(i, BinOp::Xor)
    }

    fn emit_div(&mut self) {
        self.divide(false);
    }

    fn emit_rem(&mut self) {
        self.divide(true);
    }

    fn emit_shl(&mut self) {
        self.shift(Shift::Shl, BinOp::Shl);
    }

    fn emit_shr(&mut self) {
        self.shift(Shift::Sar, BinOp::Shr);
    }

    fn emit_ushr(&mut self) {
        self.shift(Shift::Shr, BinOp::Ushr);
    }

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

    // ---------------------------------------------------------------- comparisons

    fn emit_eq(&mut self, i: usize) -> usize {
        self.comparison(i, BinOp::Eq)
    }

    fn emit_ne(&mut self, i: usize) -> usize {
        self.comparison(i, BinOp::Ne)
    }

    fn emit_lt(&mut self, i: usize) -> usize {
        self.comparison(i, BinOp::Lt)
    }

    fn emit_le(&mut self, i: usize) -> usize {
        self.comparison(i, BinOp::Le)
    }

    fn emit_gt(&mut self, i: usize) -> usize {
        self.comparison(i, BinOp::Gt)
    }

    fn emit_ge(&mut self, i: usize) -> usize {
        self.comparison(i, BinOp::Ge)
    }

    // ---------------------------------------------------------------- control flow

    fn emit_jmp(&mut self, i: usize, t: u32) {
        self.before_jump(i, t, 0);
        let label = self.label(t);
        asm!(self; jmp =>label);
    }

    fn emit_jz(&mut self, i: usize, t: u32) {
        self.branch_on_top(i, t, false);
    }

    fn emit_jnz(&mut self, i: usize, t: u32) {
        self.branch_on_top(i, t, true);
    }

    /// Arguments per the ABI, then `mov rax, slot; call qword [rax]`: one instruction loads
    /// the target and transfers, which is what `Guarantee::Strong` covers.
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
        let slot = self.env.slot_addr[f as usize] as i64;
        asm!(self; mov rax, QWORD slot);
        let site = self.offset();
        self.out.call_sites.push((i, site));
        let exit = self.exit;
        asm!(self; call QWORD [rax] ; test rdx, rdx ; jnz =>exit);
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

    fn emit_print(&mut self) {
        self.call_with_top(self.env.callbacks.print, "print");
    }

    fn emit_putc(&mut self) {
        self.call_with_top(self.env.callbacks.putc, "putc");
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

    // ================================================================ shared shapes

    /// The next instruction, if it may be fused into instruction `i` (no jump lands on it).
    fn fusable_next(&self, i: usize) -> Option<Instr> {
        let next = i + 1;
        (next < self.func.code.len() && self.labels[next].is_none()).then(|| self.func.code[next])
    }

    /// `add sub mul and or xor`, with constant folding and immediate operands. When the
    /// result is stored to a local at once (`store y`, or `dup; store y`) and y lives in a
    /// register, the result is computed right there: `load s; ..; add; store s` is one
    /// `add r13, ..`. Returns the instructions consumed.
    fn binary(&mut self, i: usize, op: BinOp) -> usize {
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

    /// `div`/`rem`: by a constant without `idiv`; by a variable with the zero check (trap)
    /// and the -1 case (`MIN / -1` faults in `idiv`) out of `idiv`'s way.
    fn divide(&mut self, rem: bool) {
        let op = if rem { BinOp::Rem } else { BinOp::Div };
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

    /// `shl shr ushr`: the count masked to 6 bits, as `shl/sar/shr` by `cl` do natively.
    fn shift(&mut self, kind: Shift, op: BinOp) {
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

    /// `eq ne lt le gt ge`, fused with a following `jz`/`jnz` into `cmp; jcc`.
    fn comparison(&mut self, i: usize, op: BinOp) -> usize {
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
    fn branch_on_top(&mut self, at: usize, t: u32, if_nonzero: bool) {
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
    fn before_jump(&mut self, at: usize, target: u32, keep: usize) {
        self.canonicalize_below(self.stack.height() - keep);
        if target as usize <= at {
            self.poll(Counter::BackEdges);
        }
    }

    /// Calls a status-returning callback `(ctx, top of stack)`.
    fn call_with_top(&mut self, callback: usize, name: &str) {
        self.spill_regs_below(self.stack.height() - 1);
        let (v, a) = self.pop();
        self.parallel_move(vec![(RDI, Opnd::Reg(RBX)), (RSI, a)]);
        self.stack.release(v);
        self.call_rust(callback, name);
        self.check_status_in_rax();
    }

    fn call_rust(&mut self, addr: usize, name: &str) {
        let at = self.offset();
        self.out.notes.push((at, format!("callback {name}")));
        let addr = addr as i64;
        asm!(self; mov rax, QWORD addr ; call rax);
    }

    fn check_status_in_rax(&mut self) {
        let exit = self.exit_rax;
        asm!(self; test rax, rax ; jnz =>exit);
    }

    /// Pushes the result of a call (in `rax`) as a new register entry.
    fn push_rax(&mut self) {
        let dst = self.alloc();
        asm!(self; mov Rq(dst), rax);
        self.stack.push(Val::Reg(dst));
    }

    /// The safepoint poll, `cmp dword [ctx + CTX_POLL], 0; jne slow`, after the
    /// profile counter's decrement when this function counts (see "Profiling" in
    /// [`crate::abi`]); both share one slow path.
    fn poll(&mut self, counter: Counter) {
        let slow = self.ops.new_dynamic_label();
        let resume = self.ops.new_dynamic_label();
        let counter = self.env.count_as.map(|f| (f, counter));
        if let Some((f, counter)) = counter {
            let at = self.offset();
            let name = match counter {
                Counter::Calls => "count the call",
                Counter::BackEdges => "count the back-edge",
            };
            self.out.notes.push((at, name.into()));
            let array = match counter {
                Counter::Calls => CTX_CALLS_LEFT,
                Counter::BackEdges => CTX_BACK_EDGES_LEFT,
            };
            let cell = 4 * f as i32;
            asm!(self
                ; mov rax, QWORD [rbx + array]
                ; sub DWORD [rax + cell], 1
                ; jz =>slow
            );
        }
        let at = self.offset();
        self.out.notes.push((at, "safepoint poll".into()));
        asm!(self
            ; cmp DWORD [rbx + CTX_POLL], 0
            ; jne =>slow
            ; =>resume
        );
        let live = (0..self.stack.height())
            .filter_map(|h| match self.stack.get(h) {
                Val::Reg(r) => Some((r, self.frame.spill(h))),
                _ => None,
            })
            .collect();
        self.cold.push(Cold::Poll {
            slow,
            resume,
            live,
            counter,
        });
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

    /// The landing pad for a trap: `mov edx, code; jmp exit`, emitted once.
    fn trap_label(&mut self, trap: Trap) -> DynamicLabel {
        if let Some(&(_, l)) = self.traps.iter().find(|(t, _)| *t == trap) {
            return l;
        }
        let l = self.ops.new_dynamic_label();
        self.traps.push((trap, l));
        l
    }

    fn label(&self, t: u32) -> DynamicLabel {
        self.labels[t as usize].expect("every jump target has a label")
    }

    fn emit_cold(&mut self) {
        for cold in std::mem::take(&mut self.cold) {
            match cold {
                Cold::Poll {
                    slow,
                    resume,
                    live,
                    counter,
                } => {
                    asm!(self; =>slow);
                    for &(r, o) in &live {
                        asm!(self; mov QWORD [rsp + o], Rq(r));
                    }
                    asm!(self; mov rdi, rbx);
                    match counter {
                        Some((f, counter)) => {
                            let (f, counter) = (f as i32, counter as i32);
                            asm!(self; mov esi, f ; mov edx, counter);
                            self.call_rust(self.env.callbacks.profile, "profile");
                        }
                        None => self.call_rust(self.env.callbacks.safepoint, "safepoint"),
                    }
                    for &(r, o) in &live {
                        asm!(self; mov Rq(r), QWORD [rsp + o]);
                    }
                    asm!(self; jmp =>resume);
                }
            }
        }
        for (trap, l) in std::mem::take(&mut self.traps) {
            let at = self.offset();
            self.out.notes.push((at, format!("trap: {trap}")));
            let code = status_of(trap) as i32;
            let exit = self.exit;
            asm!(self; =>l ; mov edx, code ; jmp =>exit);
        }
        let (exit, exit_rax) = (self.exit, self.exit_rax);
        let at = self.offset();
        self.out
            .notes
            .push((at, "status from a callback: leave with it".into()));
        asm!(self; =>exit_rax ; mov rdx, rax);
        let at = self.offset();
        self.out
            .notes
            .push((at, "leave with the status in rdx".into()));
        asm!(self; =>exit);
        self.emit_epilogue();
        self.emit_entry_exits();
    }

    /// Where the entry checks go, before any frame exists.
    fn emit_entry_exits(&mut self) {
        let (too_deep, short) = (self.too_deep, self.stack_short);
        let at = self.offset();
        self.out
            .notes
            .push((at, "deeper than --max-depth: stack overflow".into()));
        let overflow = status_of(Trap::StackOverflow) as i32;
        asm!(self; =>too_deep ; mov edx, overflow ; xor eax, eax ; ret);
        let at = self.offset();
        asm!(self; =>short);
        if self.osr.is_some() {
            // The interpreter enters a loop natively only with room for any native frame
            // (`MAX_NATIVE_FRAME`), so this is a guard, not a path programs take.
            self.out
                .notes
                .push((at, "no native stack for the frame: stack overflow".into()));
            asm!(self; mov edx, overflow ; xor eax, eax ; ret);
        } else {
            self.out.notes.push((
                at,
                "native stack short: run this call in the interpreter".into(),
            ));
            let def_addr = self.env.header & !7;
            let params = self.func.params.len();
            crate::stubs::emit_interpreted_call(
                &mut self.ops,
                params,
                def_addr,
                self.env.callbacks.call_interp,
            );
        }
    }

    // ================================================================ values and registers

    fn offset(&self) -> usize {
        self.ops.offset().0
    }

    /// Where the entry of value `v` at height `h` is.
    fn opnd(&self, v: Val, h: usize) -> Opnd {
        match v {
            Val::Const(c) => Opnd::constant(c),
            Val::Local(x) => self.home(x),
            Val::Reg(r) => Opnd::Reg(r),
            Val::Spilled => Opnd::Mem(self.frame.spill(h)),
        }
    }

    fn home(&self, x: u32) -> Opnd {
        match self.frame.homes[x as usize] {
            Home::Reg(r) => Opnd::Reg(r),
            Home::Mem(o) => Opnd::Mem(o),
        }
    }

    fn store_home(&mut self, x: u32, src: Opnd) {
        match self.frame.homes[x as usize] {
            Home::Reg(r) => self.load(r, src),
            Home::Mem(o) => self.store_slot(o, src),
        }
    }

    /// Pops the top entry: the value (to release once dead) and where it is.
    fn pop(&mut self) -> (Val, Opnd) {
        let v = self.stack.pop();
        (v, self.opnd(v, self.stack.height()))
    }

    /// Pops `n` entries, deepest first.
    fn pop_n(&mut self, n: usize) -> Vec<(Val, Opnd)> {
        let mut out: Vec<(Val, Opnd)> = (0..n).map(|_| self.pop()).collect();
        out.reverse();
        out
    }

    /// A register for a new value computed by instruction `i`: when the next instruction is
    /// a call taking that value as its last register argument, that argument register, so
    /// the call needs no move (`lea rdx, [r12-1]; ..; call`). `rdx` is not in the pool: it
    /// may hold a value only there, where nothing runs between the two instructions that
    /// uses it as scratch.
    fn alloc_result(&mut self, i: usize) -> Reg {
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
    fn alloc(&mut self) -> Reg {
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
    fn dst_for(&mut self, v: Val) -> Reg {
        match v {
            Val::Reg(r) => r,
            _ => self.alloc(),
        }
    }

    /// `v` (at `o`) in a register this instruction owns.
    fn owned_reg(&mut self, v: Val, o: Opnd) -> Reg {
        if let Val::Reg(r) = v {
            return r;
        }
        let r = self.alloc();
        self.load(r, o);
        r
    }

    /// A copy of the entry at height `h`, for `dup`/`over`: constants and locals are copied
    /// in the model only.
    fn copy_of(&mut self, h: usize) -> Val {
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
    fn unspilled(&mut self, v: Val, h: usize) -> Val {
        if v != Val::Spilled {
            return v;
        }
        let r = self.alloc();
        self.load(r, Opnd::Mem(self.frame.spill(h)));
        Val::Reg(r)
    }

    /// Takes `rcx` as a temporary, moving its owner (if any) to another register or its slot.
    fn claim_rcx(&mut self) {
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
    fn canonicalize_below(&mut self, n: usize) {
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
    fn spill_regs_below(&mut self, n: usize) {
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
    fn parallel_move(&mut self, mut moves: Vec<(Reg, Opnd)>) {
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

    /// `mov dst, src`. Never touches flags or other registers.
    fn load(&mut self, dst: Reg, src: Opnd) {
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
    fn store_slot(&mut self, off: i32, src: Opnd) {
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
    fn alu(&mut self, op: Alu, dst: Reg, src: Opnd) {
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
    fn compare(&mut self, a: Opnd, b: Opnd, c: Cond) -> Cond {
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
    fn test_zero(&mut self, a: Opnd) {
        match a {
            Opnd::Reg(r) => asm!(self; test Rq(r), Rq(r)),
            Opnd::Mem(o) => asm!(self; cmp QWORD [rsp + o], 0),
            Opnd::Imm(_) | Opnd::Imm64(_) => unreachable!("constants are decided statically"),
        }
    }

    fn setcc(&mut self, c: Cond, dst: Reg) {
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

    fn jcc(&mut self, c: Cond, l: DynamicLabel) {
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

/// Whether the entry owns a register the instruction may overwrite.
fn owns(v: Val) -> bool {
    matches!(v, Val::Reg(_))
}
