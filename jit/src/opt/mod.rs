//! The optimizing JIT: bytecode to Cranelift IR ([`translate`]), compiled by
//! `cranelift-codegen` with `opt_level=speed` for the host, under the same ABI as the
//! baseline ([`crate::abi`]).
//!
//! Not `cranelift-jit`: it writes code where the code runs, which the runtime's W^X double
//! mapping never allows. `cranelift-codegen` gives position-independent bytes plus
//! relocations, which installation hands to the runtime's `Transaction::stage_relocated`.
//! Calls between functions go through per-callee [`call_stubs`].
//! After inlining, [`thread_status`] sends each jump that passes a known status straight to
//! the side of the status test it selects. The safepoint poll's slow path calls Rust through [`preserving_call`], which clobbers no
//! register, so a loop keeps its values in registers across the poll.

pub mod call_stubs;
pub mod inline;
pub mod preserving_call;
pub mod ranges;
pub mod thread_status;
pub mod translate;

use crate::abi::{Callbacks, MAX_NATIVE_FRAME, OPT_ENTRY_OFFSET};
use cranelift_codegen::binemit::Reloc as ClifReloc;
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::{ExternalName, UserExternalNameRef};
use cranelift_codegen::isa::unwind::UnwindInst;
use cranelift_codegen::isa::{self, LookupError, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable, SetError};
use cranelift_codegen::{CodegenError, Context, Final, FinalizedRelocTarget, MachSrcLoc};
use jitvm_runtime::RelocKind;
use jitvm_vm::{FuncId, Module};
use std::fmt;

/// What the translator needs from the world the code runs in.
#[derive(Clone, Debug)]
pub struct OptEnv {
    pub callbacks: Callbacks,
    /// Each function's dispatch slot, by `FuncId`, for the guards of inlined calls.
    pub slots: Vec<usize>,
    /// Each function's definition as entry headers name it (`def_addr`, kind bit clear).
    pub defs: Vec<usize>,
    /// Whether small callees are inlined (see [`inline`]).
    pub inline: bool,
}

/// Code Cranelift produced, laid out as a blob (header first), with what installation must
/// fix up.
#[derive(Clone, Debug, Default)]
pub struct OptCode {
    /// The blob: zero bytes, the header word, then the code (entry at
    /// [`OPT_ENTRY_OFFSET`]).
    pub code: crate::abi::CompiledCode,
    /// Relocations with blob offsets, targets still symbolic: `Err(F)` is F's call stub.
    pub relocs: Vec<(usize, RelocKind, Result<usize, FuncId>, i64)>,
    /// The CLIF before and after optimization (filled when asked for); "before" is after
    /// inlining.
    pub ir: Option<(String, String)>,
    /// What inlining did.
    pub inlining: inline::InlineReport,
}

/// Why the optimizing JIT could not be set up, or could not compile a function: each
/// renders as the line the log gives it.
#[derive(Debug)]
pub enum OptError {
    /// Cranelift refused one of our settings.
    Setting {
        setting: &'static str,
        value: &'static str,
        source: SetError,
    },
    /// Cranelift refused a CPU feature this machine has.
    Feature {
        feature: &'static str,
        source: SetError,
    },
    /// No x86-64 backend in this Cranelift.
    Lookup(LookupError),
    /// The ISA could not be built from its flags.
    Isa(CodegenError),
    /// Compiling the function failed.
    Codegen(CodegenError),
    /// The native frame would pass [`MAX_NATIVE_FRAME`]: the function stays where it is.
    FrameTooLarge { bytes: usize },
    /// A relocation kind installation cannot apply.
    Relocation(ClifReloc),
    /// A relocation target installation cannot resolve (its debug form).
    RelocationTarget(String),
    /// Cranelift's record of the prologue says what a debugger's unwinder cannot follow.
    Unwind(&'static str),
    /// Inlining a guarded site went wrong (a bug: the site was ours).
    Inline(&'static str),
}

impl fmt::Display for OptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptError::Setting {
                setting,
                value,
                source,
            } => write!(f, "{setting}={value}: {source}"),
            OptError::Feature { feature, source } => write!(f, "{feature}: {source}"),
            OptError::Lookup(e) => write!(f, "{e}"),
            OptError::Isa(e) => write!(f, "{e}"),
            OptError::Codegen(e) => write!(f, "cranelift: {e:?}"),
            OptError::FrameTooLarge { bytes } => write!(
                f,
                "a native frame of {bytes} bytes exceeds the limit of {MAX_NATIVE_FRAME}"
            ),
            OptError::Relocation(k) => write!(f, "unsupported relocation {k:?}"),
            OptError::RelocationTarget(t) => write!(f, "unsupported relocation target {t}"),
            OptError::Unwind(what) => write!(f, "unwind information: {what}"),
            OptError::Inline(what) => write!(f, "inlining: {what}"),
        }
    }
}

impl std::error::Error for OptError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OptError::Setting { source, .. } | OptError::Feature { source, .. } => Some(source),
            OptError::Lookup(e) => Some(e),
            OptError::Isa(e) | OptError::Codegen(e) => Some(e),
            _ => None,
        }
    }
}

/// The host ISA with `opt_level=speed` and the CPU features this machine has.
pub fn host_isa() -> Result<OwnedTargetIsa, OptError> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, setting: &'static str, value: &'static str| {
        f.set(setting, value).map_err(|source| OptError::Setting {
            setting,
            value,
            source,
        })
    };
    set(&mut flags, "opt_level", "speed")?;
    set(
        &mut flags,
        "enable_verifier",
        if cfg!(debug_assertions) {
            "true"
        } else {
            "false"
        },
    )?;
    let mut builder = isa::lookup_by_name("x86_64-unknown-linux-gnu").map_err(OptError::Lookup)?;
    macro_rules! feature {
        ($($f:tt => $name:expr),*) => {$(
            if std::arch::is_x86_feature_detected!($f) {
                builder
                    .enable($name)
                    .map_err(|source| OptError::Feature { feature: $name, source })?;
            }
        )*};
    }
    feature!("sse3" => "has_sse3", "ssse3" => "has_ssse3", "sse4.1" => "has_sse41",
        "sse4.2" => "has_sse42", "popcnt" => "has_popcnt", "avx" => "has_avx",
        "avx2" => "has_avx2", "bmi1" => "has_bmi1", "bmi2" => "has_bmi2",
        "lzcnt" => "has_lzcnt");
    builder
        .finish(settings::Flags::new(flags))
        .map_err(OptError::Isa)
}

/// Compiles function `f` of `module` (with `osr`, its on-stack-replacement entry at that loop
/// header: see [`translate::translate`]); `header` is its header word (`def_addr | 1`).
pub fn compile(
    module: &Module,
    f: FuncId,
    env: &OptEnv,
    isa: &dyn isa::TargetIsa,
    header: usize,
    want_ir: bool,
    osr: Option<u32>,
) -> Result<OptCode, OptError> {
    let config = isa.frontend_config();
    let inliner = inline::Inliner::new(module, env);
    let clif = translate::translate(module, f, env, config, header & !7, osr, &inliner);
    let mut ctx = Context::for_function(clif);
    let inlining = inline::inline_sites(&mut ctx, &inliner, |g, chain| {
        translate::translate_inlined(module, g, env, config, chain, &inliner)
    })?;
    thread_status::thread_known_statuses(&mut ctx.func);
    let before = want_ir.then(|| ctx.func.display().to_string());
    ctx.compile(isa, &mut ControlPlane::default())
        .map_err(|e| OptError::Codegen(e.inner))?;
    let after = want_ir.then(|| ctx.func.display().to_string());
    let compiled = ctx.compiled_code().expect("just compiled");
    // The frame below the return address: the saved frame pointer and everything below it
    // (callee-saved registers, slots, spills, outgoing arguments).
    let below_fp = compiled
        .buffer
        .frame_layout()
        .map_or(0, |l| l.frame_to_fp_offset as usize);
    let frame_bytes = below_fp + 8;
    if frame_bytes > MAX_NATIVE_FRAME {
        return Err(OptError::FrameTooLarge { bytes: frame_bytes });
    }
    let body = compiled.code_buffer();

    // A leading base case is tested before Cranelift's frame is built (see
    // `crate::base_case`); the function proper follows, 16-aligned.
    let prefix = crate::base_case::leading_base_case(&module.functions[f as usize])
        .filter(|_| osr.is_none())
        .map(|bc| crate::base_case::guard_prefix(&bc))
        .unwrap_or_default();
    let body_at = OPT_ENTRY_OFFSET + prefix.len();
    let mut bytes = vec![0u8; OPT_ENTRY_OFFSET];
    // The header is the word before the entry, as in every blob.
    bytes[OPT_ENTRY_OFFSET - 8..].copy_from_slice(&(header as u64).to_le_bytes());
    bytes.extend_from_slice(&prefix);
    bytes.extend_from_slice(body);

    let user_name = |r: UserExternalNameRef| {
        let name = &ctx.func.params.user_named_funcs()[r];
        (name.namespace == inline::CALL_STUB)
            .then_some(name.index)
            .ok_or(OptError::Inline("a guarded site left uninlined"))
    };
    let mut relocs = Vec::new();
    let mut call_sites = Vec::new();
    let mut direct_calls = Vec::new();
    let srclocs = compiled.buffer.get_srclocs_sorted();
    let instr_at = |off: u32| {
        srclocs
            .iter()
            .find(|s| s.start <= off && off < s.end && !s.loc.is_default())
            .map(|s| s.loc.bits() as usize)
    };
    for r in compiled.buffer.relocs() {
        let kind = match r.kind {
            ClifReloc::Abs8 => RelocKind::Abs8,
            ClifReloc::X86PCRel4 | ClifReloc::X86CallPCRel4 | ClifReloc::X86CallPLTRel4 => {
                RelocKind::PcRel4
            }
            k => return Err(OptError::Relocation(k)),
        };
        let target = match &r.target {
            FinalizedRelocTarget::ExternalName(ExternalName::User(n)) => Err(user_name(*n)?),
            FinalizedRelocTarget::Func(off) => Ok(*off as usize + body_at),
            t => return Err(OptError::RelocationTarget(format!("{t:?}"))),
        };
        if let (Err(_), ClifReloc::X86CallPCRel4 | ClifReloc::X86CallPLTRel4) = (&target, r.kind) {
            // The `call rel32` starts one byte (E8) before its displacement.
            let site = r.offset as usize - 1 + body_at;
            call_sites.push((instr_at(r.offset).unwrap_or(0), site));
            if let (Err(g), Some(0xE8)) = (&target, bytes.get(site)) {
                direct_calls.push((site, *g));
            }
        }
        relocs.push((r.offset as usize + body_at, kind, target, r.addend));
    }

    let n = module.functions[f as usize].code.len();
    let mut instr_offsets = vec![usize::MAX; n];
    for s in srclocs {
        if !s.loc.is_default() {
            let i = s.loc.bits() as usize;
            if i < n {
                instr_offsets[i] = instr_offsets[i].min(s.start as usize + body_at);
            }
        }
    }
    let len = bytes.len();
    let frame = frame_rows(&compiled.buffer.unwind_info, body_at)?;
    let source = source_rows(srclocs, body_at, !prefix.is_empty());
    let mut code = crate::abi::CompiledCode {
        bytes,
        entry_offset: OPT_ENTRY_OFFSET,
        instr_offsets,
        call_sites,
        direct_calls,
        notes: if prefix.is_empty() {
            Vec::new()
        } else {
            vec![
                (OPT_ENTRY_OFFSET, "base case, before any frame".to_string()),
                (
                    body_at,
                    "the function: its frame, then the body".to_string(),
                ),
            ]
        },
        cold_offset: len,
        frame,
        source,
    };
    code.finish_rows();
    Ok(OptCode {
        code,
        relocs,
        ir: before.zip(after),
        inlining,
    })
}

/// The frame at each offset, from Cranelift's record of its prologue (the rules of its own
/// System V unwinder, `isa::unwind::systemv`): frameless until the body's prologue pushes
/// `rbp` (the leading base case runs on the caller's frame); then the CFA follows `rsp`
/// until `rbp` is set, and `rbp` after, with each callee-saved register where the prologue
/// stored it. Epilogues are not described (Cranelift records none): in the few bytes
/// between an epilogue's `pop rbp` and its `ret` an unwinder sees a wrong frame.
fn frame_rows(
    unwind: &[(u32, UnwindInst)],
    body_at: usize,
) -> Result<Vec<crate::code_info::FrameRow>, OptError> {
    use crate::code_info::{pushed_frame, Cfa, FrameRow};
    use jitvm_debuginfo::regs;
    let mut rows = vec![pushed_frame(OPT_ENTRY_OFFSET, 8, &[])];
    let mut cfa = Cfa::Rsp(8);
    let mut saved: Vec<(u16, i32)> = Vec::new();
    let mut clobbers_below_cfa = 0i32;
    for &(at, ref inst) in unwind {
        match *inst {
            UnwindInst::PushFrameRegs {
                offset_upward_to_caller_sp,
            } => {
                let up = offset_upward_to_caller_sp as i32;
                cfa = Cfa::Rsp(up);
                saved.push((regs::RBP, -up));
            }
            UnwindInst::DefineNewFrame {
                offset_upward_to_caller_sp,
                offset_downward_to_clobbers,
            } => {
                cfa = Cfa::Rbp(offset_upward_to_caller_sp as i32);
                clobbers_below_cfa =
                    (offset_upward_to_caller_sp + offset_downward_to_clobbers) as i32;
            }
            // With a frame pointer the CFA does not move when `rsp` does.
            UnwindInst::StackAlloc { .. } => continue,
            UnwindInst::SaveReg {
                clobber_offset,
                reg,
            } => {
                let dwarf = regs::from_hw(reg.hw_enc()).ok_or(OptError::Unwind(
                    "a saved register that is not general-purpose",
                ))?;
                saved.push((dwarf, clobber_offset as i32 - clobbers_below_cfa));
            }
            UnwindInst::RegStackOffset { .. } => {
                return Err(OptError::Unwind(
                    "a register recovered from a stack offset, which x86-64 frames never need",
                ))
            }
            UnwindInst::Aarch64SetPointerAuth { .. } => {
                return Err(OptError::Unwind("an AArch64 unwind record on x86-64"))
            }
        }
        rows.push(FrameRow {
            offset: (at as usize + body_at) as u32,
            cfa,
            saved: saved.clone(),
        });
    }
    Ok(rows)
}

/// The bytecode instruction at each offset, from the source locations the translation
/// gave each instruction (an instruction's index; the default location is the function's
/// own code: prologue, epilogue, traps). A leading base case tests instruction 0's operands.
fn source_rows(
    srclocs: &[MachSrcLoc<Final>],
    body_at: usize,
    base_case: bool,
) -> Vec<crate::code_info::SourceRow> {
    use crate::code_info::SourceRow;
    let mut rows = vec![SourceRow {
        offset: OPT_ENTRY_OFFSET,
        instr: base_case.then_some(0),
    }];
    let mut end = 0;
    for s in srclocs {
        if s.start > end {
            rows.push(SourceRow {
                offset: end as usize + body_at,
                instr: None,
            });
        }
        rows.push(SourceRow {
            offset: s.start as usize + body_at,
            instr: (!s.loc.is_default()).then(|| s.loc.bits()),
        });
        end = s.end;
    }
    rows.push(SourceRow {
        offset: end as usize + body_at,
        instr: None,
    });
    rows
}
