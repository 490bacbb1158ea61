//! Building a program and starting it: a runtime for its code, each function in its first
//! tier, and under `--tier auto` the tiering policy and its compile thread (see
//! [`crate::tiering`]); then [`Program::run_main`] runs it.

use crate::error::EngineError;
use crate::interpreted::interpreted;
use crate::options::{runtime_config, FuncTier, Options, TierChoice};
use crate::tiering::Thresholds;
use crate::{native, perf_map, stats, trace};
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
    let perf = match options.perf_map {
        true => {
            let path = perf_map::path();
            let names = module.functions.iter().map(|f| f.name.clone()).collect();
            let map = perf_map::PerfMap::create(&path, names)
                .map_err(|source| EngineError::PerfMap { path, source })?;
            Some(map)
        }
        false => None,
    };
    if perf.is_some() || trace::enabled() {
        let perf = perf.clone();
        runtime.set_code_hook(Box::new(move |event| {
            if let Some(perf) = &perf {
                perf.on_event(event);
            }
            trace::code_event(event);
        }));
    }
    // Auto tiers up with the tiers this build has: none, it only interprets.
    let tiering = (options.tier == TierChoice::Auto && Tier::Baseline.is_available())
        .then_some(options.thresholds);
    let program = build(module, &tiers, tiering, options.run, runtime)?;
    if let Some(perf) = perf {
        program.add_exit_hook(Box::new(move || perf.flush()));
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
    build(module, tiers, None, config, runtime)
}

/// The program of [`start`] and [`instantiate`], its runtime made: interpreted if every
/// function is and nothing tiers up, else with native code ([`crate::native`]).
fn build(
    module: Module,
    tiers: &[Tier],
    tiering: Option<Thresholds>,
    config: RunConfig,
    runtime: Arc<Runtime>,
) -> Result<Arc<Program>, EngineError> {
    if tiering.is_none() && tiers.iter().all(|&t| t == Tier::Interp) {
        let program = interpreted(module, config, runtime);
        program.add_patch_observer(Box::new(trace::patch));
        program.set_stats_report(Box::new(|p| stats::report(p, None)));
        return Ok(program);
    }
    native::program(module, tiers, tiering, config, runtime)
}
