//! Native code for a program (x86-64 only: the one place the engine depends on the
//! architecture; elsewhere `lib.rs` puts a stand-in that refuses native tiers): every
//! function installed in its tier behind its dispatch slot, the tiering policy wired in,
//! and the listings of `dis --native` and `dis --ir`.

pub mod listing;

use crate::error::EngineError;
use crate::interpreted::interpreted;
use crate::options::runtime_config;
use crate::tiering::{self, CompileLog, Policy, Thresholds};
use crate::{stats, trace};
use jitvm_jit::code_info::Descriptions;
use jitvm_jit::install::{Installed, Jit};
use jitvm_jit::tier::Tier;
use jitvm_runtime::Runtime;
use jitvm_vm::{Module, Program, RunConfig};
use std::sync::Arc;

/// A program with native code: every function installed in its tier (`tiers`, or with
/// `tiering`, the thresholds' first tier where `tiers` does not pin one) behind its dispatch
/// slot, and with `tiering`, the tiering policy and its compile thread.
pub(crate) fn program(
    module: Module,
    tiers: &[Tier],
    tiering: Option<Thresholds>,
    mut config: RunConfig,
    runtime: Arc<Runtime>,
    descriptions: Option<Arc<Descriptions>>,
) -> Result<Arc<Program>, EngineError> {
    let n = module.functions.len();
    // Under auto, a function is pinned by --func-tier (its tier is not Interp here); the
    // others start where the thresholds say.
    let pinned: Vec<bool> = tiers
        .iter()
        .map(|&t| tiering.is_some() && t != Tier::Interp)
        .collect();
    let first: Vec<Tier> = tiers
        .iter()
        .zip(&pinned)
        .map(|(&t, &pinned)| match tiering {
            Some(th) if !pinned => th.first_tier(),
            _ => t,
        })
        .collect();
    let compiles = CompileLog::new(n);
    let policy = tiering.map(|th| {
        config.profile_batch = th.profile_batch();
        Policy::new(th, &first, &pinned, Arc::clone(&compiles))
    });
    let hook = policy.clone().map(|policy| {
        Box::new(move |p: &Program, f, header| policy.on_report(p, f, header))
            as Box<jitvm_vm::program::HotHook>
    });
    let program = Program::new(
        Arc::new(module),
        config,
        runtime,
        Box::new(jitvm_jit::native_thread::native_thread),
        hook,
    );
    let (jit, installed) = Jit::install(&program, &first, false, policy.is_some(), descriptions)
        .map_err(EngineError::Install)?;
    {
        let mut log = compiles.lock().unwrap_or_else(|e| e.into_inner());
        for item in &installed {
            log.record(item.func, item.tier, item.compile_time, item.inlining);
        }
    }
    let jit = Arc::new(jit);
    if let Some(policy) = &policy {
        tiering::start_compiler(&program, policy, &jit).map_err(EngineError::CompileThread)?;
        let policy = Arc::downgrade(policy);
        program.add_exit_hook(Box::new(move || {
            if let Some(policy) = policy.upgrade() {
                policy.close();
            }
        }));
    }
    program.add_patch_observer(Box::new(trace::patch));
    let sources = stats::StatsSources {
        tier: Box::new(move |f| jit.tier_of(f)),
        compiles,
    };
    program.set_stats_report(Box::new(move |p| stats::report(p, Some(&sources))));
    Ok(program)
}

/// Every function of `module` compiled in `tier` and installed, for a listing (nothing
/// runs).
fn compile_all(
    module: Module,
    tier: Tier,
    want_ir: bool,
) -> Result<(Arc<Program>, Vec<Installed>), EngineError> {
    let runtime = Runtime::new(runtime_config()).map_err(EngineError::Runtime)?;
    let tiers = vec![tier; module.functions.len()];
    let program = interpreted(module, RunConfig::default(), runtime);
    let (_, installed) =
        Jit::install(&program, &tiers, want_ir, false, None).map_err(EngineError::Install)?;
    Ok((program, installed))
}
