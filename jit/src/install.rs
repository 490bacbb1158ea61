//! Installing native code into a running program: compile, stage through the runtime, point
//! the dispatch slots at it, all in one transaction.
//!
//! The code is assembled knowing its final address: the runtime reserves the compiler's
//! upper bound ([`baseline::max_code_size`]), the compiler assembles for the reserved
//! address, and the reservation shrinks to what was used. Nothing is ever mapped writable
//! and executable: the runtime writes through its RW view and code runs from its RX view.
//!
//! A function that fails to compile (or finds no code memory) stays in the interpreter,
//! behind a stub, with a warning in the log; the run goes on.

use crate::abi::CompiledCode;
use crate::baseline::{self, CompileEnv};
use crate::native_thread::callbacks;
use crate::stubs::{compile_stub, MAX_STUB_SIZE};
use jitvm_runtime::{Error, Guarantee, Transaction};
use jitvm_vm::program::Program;
use jitvm_vm::FuncId;

/// What one function got.
#[derive(Debug)]
pub struct Installed {
    pub func: FuncId,
    /// The blob's address (the entry is [`crate::abi::ENTRY_OFFSET`] past it).
    pub addr: usize,
    /// Native code, or `None` for an interpreter stub.
    pub native: Option<CompiledCode>,
}

/// Compiles with the baseline JIT every function `native` selects, puts a stub in front of
/// every other, and publishes it all in one `Strong` commit. Returns what each function got.
/// Fails only if even the stubs cannot be published; then nothing changed.
pub fn install_baseline(program: &Program, native: &[bool]) -> Result<Vec<Installed>, Error> {
    let module = &program.module;
    let env = CompileEnv {
        slot_addr: (0..module.functions.len() as FuncId)
            .map(|f| program.slot_addr(f))
            .collect(),
        callbacks: callbacks(),
        poll_word: program.runtime().poll_word() as usize,
        header: 0,
    };
    let mut tx = program.runtime().transaction();
    let mut installed = Vec::with_capacity(module.functions.len());
    for (i, func) in module.functions.iter().enumerate() {
        let f = i as FuncId;
        let code = if native[i] {
            match stage_native(program, &mut tx, &env, f) {
                Ok(code) => Some(code),
                Err(e) => {
                    log::warn!("baseline: `{}` stays in the interpreter: {e}", func.name);
                    None
                }
            }
        } else {
            None
        };
        let (addr, native) = match code {
            Some((addr, code)) => (addr, Some(code)),
            None => (stage_stub(program, &mut tx, f)?, None),
        };
        installed.push(Installed {
            func: f,
            addr,
            native,
        });
    }
    for item in &installed {
        // SAFETY: each entry was just staged in `tx` with a header made by
        // `Program::header_word` for the definition of the same function (so the same
        // parameter count); native code follows the ABI and stubs lead to the
        // interpreter, and every slot gets one of them in this one transaction.
        unsafe {
            program.set_entry(&mut tx, item.func, item.addr + crate::abi::ENTRY_OFFSET)?;
        }
    }
    tx.commit(Guarantee::Strong)?;
    Ok(installed)
}

/// Compiles `f` for an address reserved in `tx` and stages it; returns the blob's address.
fn stage_native<'a>(
    program: &'a Program,
    tx: &mut Transaction<'a>,
    env: &CompileEnv,
    f: FuncId,
) -> Result<(usize, CompiledCode), String> {
    let func = &program.module.functions[f as usize];
    let env = CompileEnv {
        header: program.header_word(f, true),
        ..env.clone()
    };
    let mut staging = tx
        .reserve(baseline::max_code_size(func), 16)
        .map_err(|e| e.to_string())?;
    let code = baseline::compile(func, &program.module, &env, staging.addr())
        .map_err(|e| e.to_string())?;
    staging.buf()[..code.bytes.len()].copy_from_slice(&code.bytes);
    let blob = staging
        .finish(code.bytes.len())
        .map_err(|e| e.to_string())?;
    tx.set_owner(blob, f as u64).map_err(|e| e.to_string())?;
    Ok((blob.addr(), code))
}

/// Stages an interpreter stub for f's own definition; returns the blob's address.
fn stage_stub<'a>(
    program: &'a Program,
    tx: &mut Transaction<'a>,
    f: FuncId,
) -> Result<usize, Error> {
    let params = program.module.functions[f as usize].params.len();
    let def_addr = program.header_word(f, false);
    let mut staging = tx.reserve(MAX_STUB_SIZE, 16)?;
    let stub = compile_stub(params, def_addr, &callbacks(), staging.addr())
        .map_err(|_| Error::InvalidArgument("an interpreter stub"))?;
    staging.buf()[..stub.bytes.len()].copy_from_slice(&stub.bytes);
    let blob = staging.finish(stub.bytes.len())?;
    tx.set_owner(blob, f as u64)?;
    Ok(blob.addr())
}
