//! Building a program and starting it: a runtime for its code, each function in its first
//! tier, and under `--tier auto` the tiering policy and its compile thread (see
//! [`crate::tiering`]); then [`Program::run_main`] runs it.

use crate::code_events::CodeEvents;
use crate::error::EngineError;
use crate::interpreted::interpreted;
use crate::options::{runtime_config, FuncTier, Options, TierChoice};
use crate::tiering::Thresholds;
use crate::{native, stats, trace};
use jitvm_jit::code_info::Descriptions;
use jitvm_jit::tier::Tier;
use jitvm_runtime::{Config, Runtime};
use jitvm_vm::{Module, Program, RunConfig};
use std::sync::Arc;

/// The tier each function of `module` starts in: `Baseline` or `Opt` for every function
/// under `--tier baseline` or `--tier opt`, the interpreter under `--tier interp` and
/// `--tier auto` (which moves them up as they get hot), with `overrides` applied. An
/// override naming no function is an error.
pub fn function_tiers(
    module: &Module,
    choice: TierChoice,
    overrides: &[FuncTier],
) -> Result<Vec<Tier>, EngineError> {
    let start = choice.tier().unwrap_or(Tier::Interp);
    let mut tiers = vec![start; module.functions.len()];
    for o in overrides {
        let f = module
            .function_index(&o.name)
            .ok_or_else(|| EngineError::NoSuchFunction(o.name.clone()))?;
        tiers[f as usize] = o.tier;
    }
    Ok(tiers)
}

/// Builds the program for `module` as `options` say: a runtime for its code; with native
/// tiers, every function installed in its first tier before anything runs; under
/// `--tier auto`, the tiering policy and its compile thread (see [`crate::tiering`]). Then
/// [`Program::run_main`] runs it.
pub fn start(module: Module, options: &Options) -> Result<Arc<Program>, EngineError> {
    let tiers = function_tiers(&module, options.tier, &options.func_tiers)?;
    let defaults = runtime_config();
    let runtime = Runtime::new(Config {
        strategy: options.sync,
        poison: defaults.poison || options.poison,
        ..defaults
    })
    .map_err(EngineError::Runtime)?;
    if let Some(n) = options.fail_serialization_after {
        runtime.fail_serialization_after(n);
    }
    let events = CodeEvents::new(&module, options)?;
    if let Some(events) = &events {
        let events = Arc::clone(events);
        runtime.set_code_hook(Box::new(move |batch| events.on_events(batch)));
    }
    // Auto tiers up with the tiers this build has: none, it only interprets.
    let tiering = (options.tier == TierChoice::Auto && Tier::Baseline.is_available())
        .then_some(options.thresholds);
    let descriptions = events.as_ref().and_then(|e| e.descriptions());
    let program = build(module, &tiers, tiering, options.run, runtime, descriptions)?;
    if let Some(events) = events {
        program.add_exit_hook(Box::new(move || events.at_exit()));
    }
    Ok(program)
}

/// [`start`] with each function in the tier `tiers` gives it and no tiering (for tests that
/// choose tiers per function).
pub fn instantiate(
    module: Module,
    tiers: &[Tier],
    config: RunConfig,
) -> Result<Arc<Program>, EngineError> {
    let runtime = Runtime::new(runtime_config()).map_err(EngineError::Runtime)?;
    build(module, tiers, None, config, runtime, None)
}

/// The program of [`start`] and [`instantiate`], its runtime made: interpreted if every
/// function is and nothing tiers up, else with native code ([`crate::native`]).
fn build(
    module: Module,
    tiers: &[Tier],
    tiering: Option<Thresholds>,
    config: RunConfig,
    runtime: Arc<Runtime>,
    descriptions: Option<Arc<Descriptions>>,
) -> Result<Arc<Program>, EngineError> {
    if tiering.is_none() && tiers.iter().all(|&t| t == Tier::Interp) {
        let program = interpreted(module, config, runtime);
        program.add_patch_observer(Box::new(trace::patch));
        program.set_stats_report(Box::new(|p| stats::report(p, None)));
        return Ok(program);
    }
    native::program(module, tiers, tiering, config, runtime, descriptions)
}
