//! Installing native code into a running program: compile, stage through the runtime, point
//! the dispatch slots at it.
//!
//! A [`Jit`] is the native side of one program: the code each definition runs now, and the
//! optimizing JIT's call stubs. [`Jit::install`] puts every function in its first tier before
//! anything runs (one `Strong` commit); [`Jit::tier_up`] moves definitions up while threads
//! run them (one `Eventual` commit per batch, through [`Program::commit_code`], which leaves
//! patched slots alone), and retires the code they replace.
//!
//! The code is assembled knowing its final address: the runtime reserves the compiler's
//! upper bound ([`baseline::max_code_size`]), the compiler assembles for the reserved
//! address, and the reservation shrinks to what was used. Nothing is ever mapped writable
//! and executable: the runtime writes through its RW view and code runs from its RX view.
//!
//! Optimized code (Cranelift) comes as position-independent bytes plus relocations, staged
//! with `Transaction::stage_relocated`; its calls go to per-callee call stubs
//! ([`crate::opt::call_stubs`]), one per function of the program, staged once with the first
//! install and shared by every later compile.
//!
//! A function that fails to compile (or finds no code memory) stays where it was (at first:
//! in the interpreter, behind a stub), with a warning in the log; the run goes on.

use crate::abi::{CompiledCode, OPT_BLOB_ALIGN};
use crate::baseline::{self, CompileEnv};
use crate::code_info::{Description, Descriptions};
use crate::emit_error::EmitError;
use crate::native_thread::callbacks;
pub use crate::opt::inline::InlineReport;
use crate::stubs::{compile_stub, MAX_STUB_SIZE};
use jitvm_runtime::{Blob, CommitInfo, Error, Guarantee, Rel32Kind, Reloc, RelocKind, Transaction};
use jitvm_vm::program::Program;
use jitvm_vm::{CallMode, FuncId};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::tier::Tier;

/// Why one function (or one on-stack-replacement entry) was not compiled: it keeps the tier
/// it has, and this is the warning the log or `--trace` gives.
#[derive(Debug)]
pub enum CompileError {
    /// The baseline compiler or a stub could not emit the code.
    Emit(EmitError),
    Opt(crate::opt::OptError),
    /// The runtime could not take the code (no code memory, say).
    Runtime(Error),
    /// The optimizing JIT could not be set up on this machine.
    NoOptimizingJit,
    /// Cranelift's code relocates into itself, which installation does not fix up.
    SelfRelocation,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompileError::Emit(e) => write!(f, "{e}"),
            CompileError::Opt(e) => write!(f, "{e}"),
            CompileError::Runtime(e) => write!(f, "{e}"),
            CompileError::NoOptimizingJit => f.write_str("no optimizing JIT on this machine"),
            CompileError::SelfRelocation => f.write_str("a relocation into the function itself"),
        }
    }
}

impl std::error::Error for CompileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CompileError::Emit(e) => Some(e),
            CompileError::Opt(e) => Some(e),
            CompileError::Runtime(e) => Some(e),
            CompileError::NoOptimizingJit | CompileError::SelfRelocation => None,
        }
    }
}

impl From<EmitError> for CompileError {
    fn from(e: EmitError) -> Self {
        CompileError::Emit(e)
    }
}

impl From<crate::opt::OptError> for CompileError {
    fn from(e: crate::opt::OptError) -> Self {
        CompileError::Opt(e)
    }
}

impl From<Error> for CompileError {
    fn from(e: Error) -> Self {
        CompileError::Runtime(e)
    }
}

/// What a blob is, in the owner tag the runtime keeps for it (`Transaction::set_owner`):
/// the function in the low 32 bits, the kind above. A perf map or a trace reads it back with
/// [`blob_owner`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobKind {
    Code(Tier),
    /// An optimized-code call stub of the function.
    CallStub,
}

fn owner_tag(f: FuncId, kind: BlobKind) -> u64 {
    let k: u64 = match kind {
        BlobKind::Code(Tier::Interp) => 0,
        BlobKind::Code(Tier::Baseline) => 1,
        BlobKind::Code(Tier::Opt) => 2,
        BlobKind::CallStub => 3,
    };
    (k << 32) | f as u64
}

/// The function and kind of a blob from its owner tag.
pub fn blob_owner(owner: u64) -> (FuncId, BlobKind) {
    let kind = match owner >> 32 {
        0 => BlobKind::Code(Tier::Interp),
        1 => BlobKind::Code(Tier::Baseline),
        2 => BlobKind::Code(Tier::Opt),
        _ => BlobKind::CallStub,
    };
    (owner as u32 as FuncId, kind)
}

/// What one function got.
#[derive(Debug)]
pub struct Installed {
    pub func: FuncId,
    /// The tier it got (a failed compile falls back to `Interp`).
    pub tier: Tier,
    /// How long compiling it took (zero for stubs).
    pub compile_time: Duration,
    /// Cranelift IR before and after optimization, when asked for.
    pub ir: Option<(String, String)>,
    /// The blob's address.
    pub addr: usize,
    /// The entry point ([`CompiledCode::entry_at`] the blob's address).
    pub entry: usize,
    /// Native code, or `None` for an interpreter stub.
    pub native: Option<CompiledCode>,
    /// What inlining did (optimized code only).
    pub inlining: InlineReport,
}

/// One definition moved up by [`Jit::tier_up`].
#[derive(Clone, Debug)]
pub struct TierUp {
    pub func: FuncId,
    pub from: Tier,
    pub to: Tier,
    pub compile_time: Duration,
    /// Bytes of the new blob.
    pub code_bytes: usize,
    /// Dispatch slots now running it (0 if every function that ran it was patched away).
    pub slots: usize,
    /// What inlining did (optimized code only).
    pub inlining: InlineReport,
}

/// A compile job for [`Jit::tier_up`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Job {
    /// Move a definition up to a tier.
    TierUp(FuncId, Tier),
    /// Compile a definition's on-stack-replacement entry in a tier, at the loop header that
    /// is op `header_op` of its lowered code and instruction `header` of its bytecode.
    Osr {
        func: FuncId,
        header_op: u32,
        header: u32,
        tier: Tier,
    },
}

/// An on-stack-replacement entry [`Jit::tier_up`] published.
#[derive(Clone, Debug)]
pub struct OsrCompiled {
    pub func: FuncId,
    /// The loop header's instruction.
    pub header: u32,
    pub tier: Tier,
    pub compile_time: Duration,
    pub code_bytes: usize,
    /// What inlining did (optimized code only).
    pub inlining: InlineReport,
}

/// What one [`Jit::tier_up`] did: the tier-ups it published together, in one commit.
#[derive(Debug, Default)]
pub struct TierUpBatch {
    pub done: Vec<TierUp>,
    pub osr: Vec<OsrCompiled>,
    /// Definitions that failed to compile (they keep their tier), with why.
    pub failed: Vec<(FuncId, Tier, CompileError)>,
    /// On-stack-replacement entries that failed to compile, by definition and loop header
    /// (op index), with why: that loop keeps running where it runs, the function may
    /// still tier up.
    pub failed_osr: Vec<(FuncId, u32, Tier, CompileError)>,
    /// The commit published everything but could not keep its guarantee (a serialization
    /// failed after publishing: `Error::Serialization { published: true }`). What it
    /// published is recorded as usual.
    pub commit_error: Option<Error>,
    /// The commit, and how long it took; `None` when nothing compiled.
    pub commit: Option<(CommitInfo, Duration)>,
}

/// The native side of one program; see the module docs.
pub struct Jit {
    env: CompileEnv,
    /// The call stub of each function, by `FuncId`, if optimized code or direct calls
    /// need them (`crate::opt::call_stubs`).
    stubs: Vec<usize>,
    opt: Option<OptSetup>,
    /// Where each staged blob's description goes, for a debugger or profiler.
    descriptions: Option<Arc<Descriptions>>,
    /// Per definition (by `FuncId`): the blob its entry is in, and its tier.
    code: Mutex<Vec<(Blob, Tier)>>,
}

impl Jit {
    /// Installs every function in its tier (`tiers`, by `FuncId`), all in one `Strong`
    /// commit, and returns the program's `Jit` with what each function got. `want_ir` keeps
    /// Cranelift's IR for `dis --ir`; `opt_later` stages the optimizing JIT's call stubs even
    /// if no function is optimized yet, for [`Jit::tier_up`]. With `descriptions`, every
    /// blob it stages (here and in later tier-ups) leaves its frame and source rows there,
    /// by address, for the code hook to take at publication. A function that fails to
    /// compile gets an interpreter stub and a warning. Fails only if even the stubs cannot
    /// be published.
    pub fn install(
        program: &Program,
        tiers: &[Tier],
        want_ir: bool,
        opt_later: bool,
        descriptions: Option<Arc<Descriptions>>,
    ) -> Result<(Jit, Vec<Installed>), Error> {
        let module = &program.module;
        let env = CompileEnv {
            slot_addr: (0..module.functions.len() as FuncId)
                .map(|f| program.slot_addr(f))
                .collect(),
            callbacks: callbacks(),
            header: 0,
            count_as: None,
            calls: program.config.calls,
        };
        let mut tx = program.runtime().transaction();
        // Unbound direct calls and optimized code call through these.
        let stubs = if opt_later || tiers.contains(&Tier::Opt) || env.calls == CallMode::Direct {
            stage_call_stubs(&mut tx, &env, descriptions.as_deref())?
        } else {
            Vec::new()
        };
        let mut installed = Vec::with_capacity(module.functions.len());
        let mut blobs = Vec::with_capacity(module.functions.len());
        let opt = if opt_later || tiers.contains(&Tier::Opt) {
            match OptSetup::new(program, &env, stubs.clone()) {
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
            let start = Instant::now();
            let mut notes = OptNotes::default();
            let code = match (tiers[i], &opt) {
                (Tier::Interp, _) | (Tier::Opt, None) => None,
                (Tier::Baseline, _) => {
                    match stage_native(program, &mut tx, &env, &stubs, f, None) {
                        Ok(code) => Some((Tier::Baseline, code)),
                        Err(e) => {
                            log::warn!("baseline: `{}` stays in the interpreter: {e}", func.name);
                            None
                        }
                    }
                }
                (Tier::Opt, Some(o)) => match o.stage(program, &mut tx, f, want_ir, None) {
                    Ok((code, opt_notes)) => {
                        notes = opt_notes;
                        Some((Tier::Opt, code))
                    }
                    Err(e) => {
                        log::warn!("opt: `{}` stays in the interpreter: {e}", func.name);
                        None
                    }
                },
            };
            let compile_time = start.elapsed();
            let (tier, blob, entry, native) = match code {
                Some((tier, (blob, code))) => {
                    describe(descriptions.as_deref(), blob, &code);
                    (tier, blob, code.entry_at(blob.addr()), Some(code))
                }
                None => {
                    let (blob, stub) = stage_stub(program, &mut tx, f)?;
                    describe(descriptions.as_deref(), blob, &stub);
                    (Tier::Interp, blob, stub.entry_at(blob.addr()), None)
                }
            };
            blobs.push((blob, tier));
            installed.push(Installed {
                func: f,
                tier,
                compile_time,
                ir: notes.ir,
                addr: blob.addr(),
                entry,
                native,
                inlining: notes.inlining,
            });
        }
        for item in &installed {
            // SAFETY: each entry was just staged in `tx` with a header made by
            // `Program::header_word` for the definition of the same function (so the same
            // parameter count); native code follows the ABI and stubs lead to the
            // interpreter, and every slot gets one of them in this one transaction.
            unsafe {
                program.set_entry(&mut tx, item.func, item.entry)?;
            }
        }
        tx.commit(Guarantee::Strong)?;
        let jit = Jit {
            env,
            stubs,
            opt,
            descriptions,
            code: Mutex::new(blobs),
        };
        Ok((jit, installed))
    }

    /// The tier definition `f` runs in now.
    pub fn tier_of(&self, f: FuncId) -> Tier {
        self.code.lock().unwrap_or_else(|e| e.into_inner())[f as usize].1
    }

    /// Whether this `Jit` can compile in `tier`.
    pub fn has_tier(&self, tier: Tier) -> bool {
        tier != Tier::Opt || self.opt.is_some()
    }

    /// Compiles each job (a tier-up to a tier above the definition's current one, or an
    /// on-stack-replacement entry) and publishes them together: one transaction, committed
    /// `Eventual` (old code is merely slower, so a thread may still start it until the next
    /// serialization), in which every slot that runs one of the definitions moves to its new
    /// code and the code it replaces is retired (reclaimed once no thread can be running
    /// it); on-stack-replacement entries are handed to the program once published. Runs
    /// while other threads run the program; never stops them. A definition that fails to
    /// compile keeps its tier.
    pub fn tier_up(&self, program: &Program, jobs: &[Job]) -> Result<TierUpBatch, Error> {
        self.tier_up_with(program, jobs, Guarantee::Eventual)
    }

    /// [`Jit::tier_up`] committed with `guarantee`: `Strong` makes "no thread starts the
    /// replaced code" hold when it returns. If the commit publishes but cannot keep that
    /// guarantee, the batch is still what was published, with the error in
    /// [`TierUpBatch::commit_error`]; other commit errors change nothing.
    pub fn tier_up_with(
        &self,
        program: &Program,
        jobs: &[Job],
        guarantee: Guarantee,
    ) -> Result<TierUpBatch, Error> {
        let mut code = self.code.lock().unwrap_or_else(|e| e.into_inner());
        let mut tx = program.runtime().transaction();
        let mut batch = TierUpBatch::default();
        let mut entries = Vec::new();
        let mut blobs = Vec::new();
        let mut osr_entries = Vec::new();
        for &job in jobs {
            let (f, to) = match job {
                Job::TierUp(f, to) => (f, to),
                Job::Osr {
                    func,
                    header_op,
                    header,
                    tier,
                } => {
                    let start = Instant::now();
                    match self.stage_osr(program, &mut tx, func, header, tier) {
                        Ok((entry, bytes, inlining)) => {
                            osr_entries.push((func, header_op, entry));
                            batch.osr.push(OsrCompiled {
                                func,
                                header,
                                tier,
                                compile_time: start.elapsed(),
                                code_bytes: bytes,
                                inlining,
                            });
                        }
                        Err(e) => batch.failed_osr.push((func, header_op, tier, e)),
                    }
                    continue;
                }
            };
            let from = code[f as usize].1;
            if to <= from {
                continue;
            }
            let start = Instant::now();
            let mut inlining = InlineReport::default();
            let staged = match (to, &self.opt) {
                (Tier::Baseline, _) => {
                    stage_native(program, &mut tx, &self.env, &self.stubs, f, None)
                }
                (Tier::Opt, Some(o)) => o.stage(program, &mut tx, f, false, None).map(|c| {
                    inlining = c.1.inlining;
                    c.0
                }),
                (Tier::Opt, None) => Err(CompileError::NoOptimizingJit),
                (Tier::Interp, _) => unreachable!("not above any tier"),
            };
            match staged {
                Ok((blob, native)) => {
                    describe(self.descriptions.as_deref(), blob, &native);
                    entries.push((f, native.entry_at(blob.addr())));
                    blobs.push((blob, to));
                    batch.done.push(TierUp {
                        func: f,
                        from,
                        to,
                        compile_time: start.elapsed(),
                        code_bytes: native.bytes.len(),
                        slots: 0,
                        inlining,
                    });
                }
                Err(e) => batch.failed.push((f, to, e)),
            }
        }
        if entries.is_empty() && osr_entries.is_empty() {
            return Ok(batch);
        }
        for item in &batch.done {
            tx.retire(code[item.func as usize].0)?;
        }
        let start = Instant::now();
        // SAFETY: each entry was just staged in `tx`, headed by `Program::header_word` for
        // its own definition, and follows the ABI; every slot already holds executable code
        // (`install` put a stub or code in each).
        let moved = match unsafe { program.commit_code(tx, &entries, guarantee) } {
            Ok((commit, moved)) => {
                batch.commit = Some((commit, start.elapsed()));
                moved
            }
            Err(
                e @ Error::Serialization {
                    published: true, ..
                },
            ) => {
                // Published, with a weaker guarantee: the code is live and the old code
                // retired, so record it all.
                batch.commit_error = Some(e);
                vec![0; entries.len()]
            }
            Err(e) => return Err(e),
        };
        for ((item, blob), slots) in batch.done.iter_mut().zip(blobs).zip(moved) {
            item.slots = slots;
            code[item.func as usize] = blob;
        }
        for (f, header_op, entry) in osr_entries {
            // SAFETY: published by the commit above and never retired; headed for f's
            // definition, and compiled by `stage_osr` as an entry at that loop header.
            unsafe { program.set_osr_entry(f, header_op, entry) };
        }
        Ok(batch)
    }

    /// Compiles and stages def `f`'s on-stack-replacement entry at instruction `header` in
    /// `tier`; returns its entry and its size.
    fn stage_osr<'a>(
        &self,
        program: &'a Program,
        tx: &mut Transaction<'a>,
        f: FuncId,
        header: u32,
        tier: Tier,
    ) -> Result<(usize, usize, InlineReport), CompileError> {
        let ((blob, code), inlining) = match (tier, &self.opt) {
            (Tier::Opt, Some(o)) => {
                let (code, notes) = o.stage(program, tx, f, false, Some(header))?;
                (code, notes.inlining)
            }
            (Tier::Opt, None) => return Err(CompileError::NoOptimizingJit),
            _ => (
                stage_native(program, tx, &self.env, &self.stubs, f, Some(header))?,
                InlineReport::default(),
            ),
        };
        describe(self.descriptions.as_deref(), blob, &code);
        Ok((code.entry_at(blob.addr()), code.bytes.len(), inlining))
    }
}

/// Leaves `code`'s description in `table` under `blob`'s address.
fn describe(table: Option<&Descriptions>, blob: Blob, code: &CompiledCode) {
    if let Some(table) = table {
        table.record(blob.addr(), code.description());
    }
}

/// Compiles `f` with the baseline JIT for an address reserved in `tx` and stages it (with
/// `osr`, its on-stack-replacement entry at that loop header). The code counts its calls and
/// back-edges, so that it can tier up.
fn stage_native<'a>(
    program: &'a Program,
    tx: &mut Transaction<'a>,
    env: &CompileEnv,
    stubs: &[usize],
    f: FuncId,
    osr: Option<u32>,
) -> Result<(Blob, CompiledCode), CompileError> {
    let func = &program.module.functions[f as usize];
    let env = CompileEnv {
        header: program.header_word(f, true),
        count_as: Some(f),
        ..env.clone()
    };
    let bound = match osr {
        Some(header) => baseline::max_osr_code_size(func, header),
        None => baseline::max_code_size(func),
    };
    let mut staging = tx.reserve(bound, 16)?;
    let code = match osr {
        Some(header) => baseline::compile_osr(func, &program.module, &env, staging.addr(), header),
        None => baseline::compile(func, &program.module, &env, staging.addr()),
    }?;
    staging.buf()[..code.bytes.len()].copy_from_slice(&code.bytes);
    let blob = staging.finish(code.bytes.len())?;
    tx.set_owner(blob, owner_tag(f, BlobKind::Code(Tier::Baseline)))?;
    bind_direct_calls(program, tx, blob, &code, stubs)?;
    Ok((blob, code))
}

/// With direct calls, binds each `call rel32` of `code` (staged as `blob`) to its callee's
/// dispatch slot, so that the commit points it where the slot points and every later commit
/// that moves the slot rewrites it ([`jitvm_runtime::bound_sites`]). A call the runtime has
/// no room to bind calls the callee's call stub, which reads the slot: slower, as exact.
fn bind_direct_calls<'a>(
    program: &'a Program,
    tx: &mut Transaction<'a>,
    blob: Blob,
    code: &CompiledCode,
    stubs: &[usize],
) -> Result<(), Error> {
    if program.config.calls != CallMode::Direct {
        return Ok(());
    }
    for &(offset, callee) in &code.direct_calls {
        let site = program
            .runtime()
            .rel32_site(blob, offset, Rel32Kind::Call)?;
        if let Err(e) = program.bind_call(tx, site, callee) {
            log::debug!("a direct call stays on its call stub: {e}");
            tx.patch_rel32(site, stubs[callee as usize])?;
        }
    }
    Ok(())
}

/// Stages one call stub per function of the program (`crate::opt::call_stubs`): what
/// optimized code calls, and unbound direct calls.
fn stage_call_stubs(
    tx: &mut Transaction<'_>,
    env: &CompileEnv,
    descriptions: Option<&Descriptions>,
) -> Result<Vec<usize>, Error> {
    let mut stubs = Vec::with_capacity(env.slot_addr.len());
    for (f, &slot) in env.slot_addr.iter().enumerate() {
        let bytes = crate::opt::call_stubs::call_stub(slot);
        let blob = tx.stage_relocated(&bytes, 16, &[])?;
        tx.set_owner(blob, owner_tag(f as FuncId, BlobKind::CallStub))?;
        if let Some(table) = descriptions {
            table.record(blob.addr(), Description::frameless(&bytes));
        }
        stubs.push(blob.addr());
    }
    Ok(stubs)
}

/// Stages an interpreter stub for f's own definition.
fn stage_stub<'a>(
    program: &'a Program,
    tx: &mut Transaction<'a>,
    f: FuncId,
) -> Result<(Blob, CompiledCode), Error> {
    let params = program.module.functions[f as usize].params.len();
    let def_addr = program.header_word(f, false);
    let mut staging = tx.reserve(MAX_STUB_SIZE, 16)?;
    let stub = compile_stub(params, def_addr, &callbacks(), staging.addr())
        .map_err(|_| Error::InvalidArgument("an interpreter stub"))?;
    staging.buf()[..stub.bytes.len()].copy_from_slice(&stub.bytes);
    let blob = staging.finish(stub.bytes.len())?;
    tx.set_owner(blob, owner_tag(f, BlobKind::Code(Tier::Interp)))?;
    Ok((blob, stub))
}

/// What an optimizing compile leaves besides its code.
#[derive(Default)]
struct OptNotes {
    /// Cranelift IR before and after optimization, when asked for.
    ir: Option<(String, String)>,
    inlining: InlineReport,
}

/// The optimizing JIT's per-install state: the host ISA and the call stubs.
struct OptSetup {
    isa: cranelift_codegen::isa::OwnedTargetIsa,
    env: crate::opt::OptEnv,
    /// The call stub of each function, by `FuncId`.
    stubs: Vec<usize>,
}

impl OptSetup {
    /// Builds the ISA; optimized code calls the call stubs `stubs`.
    fn new(
        program: &Program,
        env: &CompileEnv,
        stubs: Vec<usize>,
    ) -> Result<OptSetup, CompileError> {
        let isa = crate::opt::host_isa()?;
        Ok(OptSetup {
            isa,
            env: crate::opt::OptEnv {
                callbacks: env.callbacks,
                slots: env.slot_addr.clone(),
                defs: (0..env.slot_addr.len() as FuncId)
                    .map(|g| program.header_word(g, false))
                    .collect(),
                inline: program.config.inline,
            },
            stubs,
        })
    }

    /// Compiles `f` with Cranelift and stages it with its relocations resolved.
    fn stage<'a>(
        &self,
        program: &'a Program,
        tx: &mut Transaction<'a>,
        f: FuncId,
        want_ir: bool,
        osr: Option<u32>,
    ) -> Result<((Blob, CompiledCode), OptNotes), CompileError> {
        let header = program.header_word(f, true);
        let module = &program.module;
        let out = crate::opt::compile(module, f, &self.env, &*self.isa, header, want_ir, osr)?;
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
            return Err(CompileError::SelfRelocation);
        }
        let blob = tx.stage_relocated(&out.code.bytes, OPT_BLOB_ALIGN, &relocs)?;
        tx.set_owner(blob, owner_tag(f, BlobKind::Code(Tier::Opt)))?;
        bind_direct_calls(program, tx, blob, &out.code, &self.stubs)?;
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
        let notes = OptNotes {
            ir: out.ir,
            inlining: out.inlining,
        };
        Ok(((blob, code), notes))
    }
}
