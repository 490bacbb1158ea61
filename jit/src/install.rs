//! Installing native code into a running program: compile, stage through the runtime, point
//! the dispatch slots at it, all in one transaction.
//!
//! The code is assembled knowing its final address: the runtime reserves the compiler's
//! upper bound ([`baseline::max_code_size`]), the compiler assembles for the reserved
//! address, and the reservation shrinks to what was used. Nothing is ever mapped writable
//! and executable: the runtime writes through its RW view and code runs from its RX view.
//!
//! Optimized code (Cranelift) comes as position-independent bytes plus relocations, staged
//! with `Transaction::stage_relocated`; its calls go to per-callee call stubs
//! ([`crate::opt::call_stubs`]) staged in the same transaction, one per function of the
//! program.
//!
//! A function that fails to compile (or finds no code memory) stays in the interpreter,
//! behind a stub, with a warning in the log; the run goes on.

use crate::abi::CompiledCode;
use crate::baseline::{self, CompileEnv};
use crate::native_thread::callbacks;
use crate::stubs::{compile_stub, MAX_STUB_SIZE};
use jitvm_runtime::{Error, Guarantee, Reloc, RelocKind, Transaction};
use jitvm_vm::program::Program;
use jitvm_vm::FuncId;

/// The tier a function is installed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NativeTier {
    /// An interpreter stub.
    Interp,
    /// The dynasm baseline.
    Baseline,
    /// Cranelift.
    Opt,
}

/// What one function got.
#[derive(Debug)]
pub struct Installed {
    pub func: FuncId,
    /// The tier it got (a failed compile falls back to `Interp`).
    pub tier: NativeTier,
    /// How long compiling it took (zero for stubs).
    pub compile_time: std::time::Duration,
    /// Cranelift IR before and after optimization, when asked for.
    pub ir: Option<(String, String)>,
    /// The blob's address (the entry is [`crate::abi::ENTRY_OFFSET`] past it).
    pub addr: usize,
    /// Native code, or `None` for an interpreter stub.
    pub native: Option<CompiledCode>,
}

/// Compiles with the baseline JIT every function `native` selects, puts a stub in front of
/// every other, and publishes it all in one `Strong` commit. Returns what each function got.
/// Fails only if even the stubs cannot be published; then nothing changed.
pub fn install_baseline(program: &Program, native: &[bool]) -> Result<Vec<Installed>, Error> {
    let tiers: Vec<NativeTier> = native
        .iter()
        .map(|&n| {
            if n {
                NativeTier::Baseline
            } else {
                NativeTier::Interp
            }
        })
        .collect();
    install(program, &tiers, false)
}

/// Installs every function in its tier (`tiers`, by `FuncId`), all in one `Strong` commit;
/// `want_ir` keeps Cranelift's IR for `dis --ir`. A function that fails to compile gets an
/// interpreter stub and a warning. Fails only if even the stubs cannot be published.
pub fn install(
    program: &Program,
    tiers: &[NativeTier],
    want_ir: bool,
) -> Result<Vec<Installed>, Error> {
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
    let opt = if tiers.contains(&NativeTier::Opt) {
        match OptSetup::new(&mut tx, &env) {
            Ok(o) => Some(o),
            Err(e) => {
                log::warn!("opt: no optimizing JIT: {e}");
                None
            }
        }
    } else {
        None
    };
    for (i, func) in module.functions.iter().enumerate() {
        let f = i as FuncId;
        let start = std::time::Instant::now();
        let mut ir = None;
        let code = match (tiers[i], &opt) {
            (NativeTier::Interp, _) => None,
            (NativeTier::Baseline, _) => match stage_native(program, &mut tx, &env, f) {
                Ok(code) => Some((NativeTier::Baseline, code)),
                Err(e) => {
                    log::warn!("baseline: `{}` stays in the interpreter: {e}", func.name);
                    None
                }
            },
            (NativeTier::Opt, None) => None,
            (NativeTier::Opt, Some(o)) => match o.stage(program, &mut tx, f, want_ir) {
                Ok(((addr, code), clif)) => {
                    ir = clif;
                    Some((NativeTier::Opt, (addr, code)))
                }
                Err(e) => {
                    log::warn!("opt: `{}` stays in the interpreter: {e}", func.name);
                    None
                }
            },
        };
        let compile_time = start.elapsed();
        let (tier, addr, native) = match code {
            Some((tier, (addr, code))) => (tier, addr, Some(code)),
            None => (NativeTier::Interp, stage_stub(program, &mut tx, f)?, None),
        };
        installed.push(Installed {
            func: f,
            tier,
            compile_time,
            ir,
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

/// The optimizing JIT's per-install state: the host ISA and the call stubs.
struct OptSetup {
    isa: cranelift_codegen::isa::OwnedTargetIsa,
    env: crate::opt::OptEnv,
    /// The call stub of each function, by `FuncId`.
    stubs: Vec<usize>,
}

impl OptSetup {
    /// Builds the ISA and stages one call stub per function of the program.
    fn new(tx: &mut Transaction<'_>, env: &CompileEnv) -> Result<OptSetup, String> {
        let isa = crate::opt::host_isa()?;
        let mut stubs = Vec::with_capacity(env.slot_addr.len());
        for (f, &slot) in env.slot_addr.iter().enumerate() {
            let bytes = crate::opt::call_stubs::call_stub(slot);
            let blob = tx
                .stage_relocated(&bytes, 16, &[])
                .map_err(|e| e.to_string())?;
            tx.set_owner(blob, f as u64).map_err(|e| e.to_string())?;
            stubs.push(blob.addr());
        }
        Ok(OptSetup {
            isa,
            env: crate::opt::OptEnv {
                callbacks: env.callbacks,
                poll_word: env.poll_word,
            },
            stubs,
        })
    }

    /// Compiles `f` with Cranelift and stages it with its relocations resolved.
    #[allow(clippy::type_complexity)]
    fn stage<'a>(
        &self,
        program: &'a Program,
        tx: &mut Transaction<'a>,
        f: FuncId,
        want_ir: bool,
    ) -> Result<((usize, CompiledCode), Option<(String, String)>), String> {
        let header = program.header_word(f, true);
        let out = crate::opt::compile(&program.module, f, &self.env, &*self.isa, header, want_ir)?;
        let relocs: Vec<Reloc> = out
            .relocs
            .iter()
            .map(|&(offset, kind, target, addend)| Reloc {
                offset,
                kind,
                target: target.unwrap_or_else(|g| self.stubs[g as usize]),
                addend,
            })
            .collect();
        // Relocations inside the blob itself (constant pools) are relative: PC-relative ones
        // need no fix-up, absolute ones would need the blob's address, which Cranelift's
        // x86-64 code for these functions never asks for.
        if out.relocs.iter().any(|r| r.2.is_ok()) {
            return Err("a relocation into the function itself".to_string());
        }
        let blob = tx
            .stage_relocated(&out.code.bytes, 16, &relocs)
            .map_err(|e| e.to_string())?;
        tx.set_owner(blob, f as u64).map_err(|e| e.to_string())?;
        // The copy kept for the disassembly gets the same fix-ups the runtime applied.
        let mut code = out.code;
        for r in &relocs {
            let value = (r.target as i64).wrapping_add(r.addend);
            match r.kind {
                RelocKind::Abs8 => {
                    code.bytes[r.offset..r.offset + 8].copy_from_slice(&value.to_le_bytes())
                }
                RelocKind::PcRel4 => {
                    let rel = value.wrapping_sub((blob.addr() + r.offset) as i64) as i32;
                    code.bytes[r.offset..r.offset + 4].copy_from_slice(&rel.to_le_bytes());
                }
            }
        }
        Ok(((blob.addr(), code), out.ir))
    }
}
