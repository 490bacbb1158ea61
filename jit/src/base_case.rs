//! A leading base case, `a; b; CMP; jz/jnz L; v; ret` with `a`, `b` and `v` constants or
//! register parameters and `L` past the `ret` (fib's `n < 2 -> n`): both native tiers test
//! it and return before building any frame (shrink-wrapping), so a leaf call costs little
//! more than `call`/`ret`. The baseline emits the test inline
//! (`Emitter::emit_base_case_guard`); optimized code gets [`guard_prefix`] in front of
//! Cranelift's function, which always builds its frame first.

use jitvm_vm::{BinOp, Function, Instr};

/// A value the base case reads without a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    Const(i64),
    /// Parameter k < 4: in an argument register (see [`crate::abi`]).
    Param(usize),
}

/// A leading base case; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaseCase {
    pub a: Operand,
    pub b: Operand,
    /// A comparison.
    pub op: BinOp,
    /// The result of `a OP b` that goes on to the body at `target`; the other returns `ret`.
    pub body_if: bool,
    pub ret: Operand,
    pub target: u32,
}

/// The base case `func` opens with, if it has one.
pub fn leading_base_case(func: &Function) -> Option<BaseCase> {
    let code = &func.code;
    // Nothing may jump into the first six instructions: they run only as the guard.
    if code.len() < 7 || code.iter().filter_map(|i| i.target()).any(|t| t < 6) {
        return None;
    }
    let operand = |instr: Instr| match instr {
        Instr::Push(c) => Some(Operand::Const(c)),
        Instr::Load(p) if (p as usize) < func.params.len().min(4) => {
            Some(Operand::Param(p as usize))
        }
        _ => None,
    };
    let (a, b, ret) = (operand(code[0])?, operand(code[1])?, operand(code[4])?);
    let Instr::Bin(op) = code[2] else { return None };
    if !op.is_comparison() {
        return None;
    }
    let (target, body_if) = match code[3] {
        Instr::Jz(t) => (t, false),
        Instr::Jnz(t) => (t, true),
        _ => return None,
    };
    let is_param = |o: Operand| matches!(o, Operand::Param(_));
    (code[5] == Instr::Ret && target > 5 && (is_param(a) || is_param(b))).then_some(BaseCase {
        a,
        b,
        op,
        body_if,
        ret,
        target,
    })
}

/// Machine code that runs `bc` and returns its value, or falls into the code placed right
/// after it (padded to 16 bytes) with every argument register as it came: the function's
/// own entry, which tests the base case again on its way to the body. A call too deep for
/// `max_depth`, or short of native stack, falls through too, so the function's own checks
/// see it (the baseline's entry makes the same checks before its base case). Position
/// independent: only jumps within itself.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::useless_conversion)] // dynasm expands `Rq(r)` to `r.into()`
pub fn guard_prefix(bc: &BaseCase) -> Vec<u8> {
    use crate::abi::{CTX_MAX_DEPTH, CTX_STACK_LIMIT};
    use dynasmrt::x64::X64Relocation;
    use dynasmrt::{dynasm, DynasmApi, DynasmLabelApi, VecAssembler};

    // p0..p3: rdx, rcx, r8, r9.
    const ARG_REGS: [u8; 4] = [2, 1, 8, 9];
    let mut ops = VecAssembler::<X64Relocation>::new(0);
    let body = ops.new_dynamic_label();
    // As the baseline: the body decides what a call too deep, or short of native stack,
    // does (traps, or runs in the interpreter).
    dynasm!(ops
        ; .arch x64
        ; cmp rsi, QWORD [rdi + CTX_MAX_DEPTH]
        ; ja =>body
        ; cmp rsp, QWORD [rdi + CTX_STACK_LIMIT]
        ; jb =>body
    );
    // Compare with a register on the left; exchanging the operands mirrors the condition.
    let (left, right, op) = match (bc.a, bc.b) {
        (Operand::Param(p), other) => (ARG_REGS[p], other, bc.op),
        (Operand::Const(c), Operand::Param(p)) => (ARG_REGS[p], Operand::Const(c), bc.op.swapped()),
        (Operand::Const(_), Operand::Const(_)) => unreachable!("a base case reads a parameter"),
    };
    match right {
        Operand::Param(p) => dynasm!(ops ; .arch x64 ; cmp Rq(left), Rq(ARG_REGS[p])),
        Operand::Const(c) => match i32::try_from(c) {
            Ok(c) => dynasm!(ops ; .arch x64 ; cmp Rq(left), c),
            Err(_) => dynasm!(ops ; .arch x64 ; mov rax, QWORD c ; cmp Rq(left), rax),
        },
    }
    // Jump to the body when `left op right` is `body_if`.
    let op = if bc.body_if { op } else { op.negated() };
    match op {
        BinOp::Eq => dynasm!(ops ; .arch x64 ; je =>body),
        BinOp::Ne => dynasm!(ops ; .arch x64 ; jne =>body),
        BinOp::Lt => dynasm!(ops ; .arch x64 ; jl =>body),
        BinOp::Le => dynasm!(ops ; .arch x64 ; jle =>body),
        BinOp::Gt => dynasm!(ops ; .arch x64 ; jg =>body),
        BinOp::Ge => dynasm!(ops ; .arch x64 ; jge =>body),
        other => unreachable!("{other:?} is not a comparison"),
    }
    match bc.ret {
        Operand::Param(p) => dynasm!(ops ; .arch x64 ; mov rax, Rq(ARG_REGS[p])),
        Operand::Const(c) => dynasm!(ops ; .arch x64 ; mov rax, QWORD c),
    }
    dynasm!(ops ; .arch x64 ; xor edx, edx ; ret);
    while ops.offset().0 % 16 != 0 {
        dynasm!(ops ; .arch x64 ; int3);
    }
    dynasm!(ops ; .arch x64 ; =>body);
    ops.finalize().expect("labels all defined")
}
