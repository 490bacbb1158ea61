//! Interpreter stubs: how native code calls a function that is still interpreted.
//!
//! A stub is a native entry point (header `def_addr | KIND_STUB`) that takes a call per the
//! ABI of [`crate::abi`], stores its P parameters into a 16-byte-aligned array on the stack,
//! and returns `call_interp(ctx, depth, def_addr, array)` unchanged (`rax:rdx`). No depth
//! check and no safepoint poll: the interpreter does both itself.
//!
//! ```text
//! sub  rsp, 8*(P|1)              ; array at [rsp], rsp 16-aligned again
//! mov  [rsp], rdx ...            ; p0..p3 from registers, p4.. from the caller's frame
//! mov  rdx, imm64(def_addr)
//! mov  rcx, rsp
//! mov  rax, imm64(call_interp)
//! call rax
//! add  rsp, 8*(P|1)
//! ret
//! ```

use crate::abi::{Callbacks, CompiledCode};
use crate::emit_error::EmitError;

/// The largest stub: what to reserve before compiling one.
pub const MAX_STUB_SIZE: usize = 160;

/// A stub for an interpreted definition at `def_addr` (8-aligned) with `params` parameters
/// (0..=8), compiled for `base_addr` (16-aligned).
pub fn compile_stub(
    params: usize,
    def_addr: usize,
    callbacks: &Callbacks,
    base_addr: usize,
) -> Result<CompiledCode, EmitError> {
    if params > jitvm_vm::bytecode::MAX_PARAMS || def_addr % 8 != 0 || base_addr % 16 != 0 {
        return Err(EmitError::BadEnvironment(format!(
            "stub for {params} params, definition {def_addr:#x}, base {base_addr:#x}"
        )));
    }
    compile_stub_x86(params, def_addr, callbacks, base_addr)
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::useless_conversion)] // dynasm expands `Rq(r)` to `r.into()`
fn compile_stub_x86(
    params: usize,
    def_addr: usize,
    callbacks: &Callbacks,
    base_addr: usize,
) -> Result<CompiledCode, EmitError> {
    use crate::abi::{ENTRY_OFFSET, KIND_STUB};
    use dynasmrt::x64::X64Relocation;
    use dynasmrt::{dynasm, DynasmApi, VecAssembler};

    let mut ops = VecAssembler::<X64Relocation>::new(base_addr);
    let header = (def_addr | KIND_STUB) as u64;
    dynasm!(ops
        ; .arch x64
        ; .u64 0
        ; .u64 header
    );
    let mut frame = Vec::new();
    emit_interpreted_call(
        &mut ops,
        &mut frame,
        params,
        def_addr,
        callbacks.call_interp,
    );
    let bytes = ops
        .finalize()
        .map_err(|e| EmitError::Assembler(e.to_string()))?;
    debug_assert!(bytes.len() <= MAX_STUB_SIZE);
    let mut stub = CompiledCode {
        cold_offset: bytes.len(),
        bytes,
        entry_offset: ENTRY_OFFSET,
        notes: vec![(ENTRY_OFFSET, format!("interpreter stub, {params} params"))],
        frame,
        ..CompiledCode::default()
    };
    stub.finish_rows();
    Ok(stub)
}

/// The body of a stub: at a function's entry (nothing pushed yet, the call's arguments where
/// the ABI puts them), runs the definition at `def_addr` in the interpreter and returns what
/// `call_interp` returns. Also the baseline's way into the interpreter when the native stack
/// runs short (see "Depth and the native stack" in [`crate::abi`]). Adds to `rows` the
/// frame at each of its offsets.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::useless_conversion)] // dynasm expands `Rq(r)` to `r.into()`
pub(crate) fn emit_interpreted_call(
    ops: &mut dynasmrt::VecAssembler<dynasmrt::x64::X64Relocation>,
    rows: &mut Vec<crate::code_info::FrameRow>,
    params: usize,
    def_addr: usize,
    call_interp: usize,
) {
    use crate::code_info::pushed_frame;
    use dynasmrt::{dynasm, DynasmApi};

    // At entry rsp = 8 (mod 16); an odd number of words realigns it and holds P params.
    let frame = 8 * (params as i32 | 1);
    rows.push(pushed_frame(ops.offset().0, 8, &[]));
    dynasm!(ops ; .arch x64 ; sub rsp, frame);
    rows.push(pushed_frame(ops.offset().0, 8 + frame, &[]));
    const ARG_REGS: [u8; 4] = [2, 1, 8, 9]; // rdx, rcx, r8, r9
    for k in 0..params {
        let slot = 8 * k as i32;
        if let Some(&r) = ARG_REGS.get(k) {
            dynasm!(ops; .arch x64; mov QWORD [rsp + slot], Rq(r));
        } else {
            let incoming = frame + 8 + 8 * (k as i32 - 4);
            dynasm!(ops
                ; .arch x64
                ; mov rax, QWORD [rsp + incoming]
                ; mov QWORD [rsp + slot], rax
            );
        }
    }
    let def = def_addr as i64;
    let interp = call_interp as i64;
    dynasm!(ops
        ; .arch x64
        ; mov rdx, QWORD def
        ; mov rcx, rsp
        ; mov rax, QWORD interp
        ; call rax
        ; add rsp, frame
    );
    rows.push(pushed_frame(ops.offset().0, 8, &[]));
    dynasm!(ops ; .arch x64 ; ret);
}

#[cfg(not(target_arch = "x86_64"))]
fn compile_stub_x86(
    _params: usize,
    _def_addr: usize,
    _callbacks: &Callbacks,
    _base_addr: usize,
) -> Result<CompiledCode, EmitError> {
    Err(EmitError::UnsupportedTarget)
}
