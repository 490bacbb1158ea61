//! Building a program and starting it: a runtime for its code, each function in its first
//! tier, and under `--tier auto` the tiering policy and its compile thread (see
//! [`crate::tiering`]); then [`Program::run_main`] runs it.

use crate::options::{runtime_config, FuncTier, Options, TierChoice};
use crate::tiering::Thresholds;
use crate::{native, perf_map, stats, trace};
use jitvm_jit::tier::Tier;
use jitvm_runtime::{Config, Runtime};
use jitvm_vm::interp;
use jitvm_vm::state::ThreadState;
use jitvm_vm::{FuncId, Module, Program, RunConfig, Trap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Why a program could not be built or started; `jitvm` prints `error: cannot start: ` and
/// this (or, for `--func-tier`, `error: ` and this), then exits 2.
#[derive(Debug)]
pub enum EngineError {
    /// `--func-tier` named no function of the program.
    NoSuchFunction(String),
    /// The code runtime could not be made.
    Runtime(jitvm_runtime::Error),
    /// `--perf-map` could not create its file.
    PerfMap {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not even the interpreter stubs could be published.
    Install(jitvm_runtime::Error),
    /// The tiering policy's compile thread did not start.
    CompileThread(std::io::Error),
    /// A native tier in a build without them.
    NoNativeTiers,
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::NoSuchFunction(name) => write!(f, "--func-tier: no function `{name}`"),
            EngineError::Runtime(e) => write!(f, "{e}"),
            EngineError::PerfMap { path, source } => {
                write!(f, "cannot write {}: {source}", path.display())
            }
            EngineError::Install(e) => write!(f, "cannot install native code: {e}"),
            EngineError::CompileThread(e) => write!(f, "cannot start the compile thread: {e}"),
            EngineError::NoNativeTiers => f.write_str("native tiers need an x86-64 machine"),
        }
    }
}

impl std::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EngineError::Runtime(e) | EngineError::Install(e) => Some(e),
            EngineError::PerfMap { source, .. } => Some(source),
            EngineError::CompileThread(e) => Some(e),
            EngineError::NoSuchFunction(_) | EngineError::NoNativeTiers => None,
        }
    }
}

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
        true => Some(
            perf_map::PerfMap::create(
                &perf_map::path(),
                module.functions.iter().map(|f| f.name.clone()).collect(),
            )
            .map_err(|source| EngineError::PerfMap {
                path: perf_map::path(),
                source,
            })?,
        ),
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

/// A program whose threads run in the interpreter, with no hot hook (nothing tiers up).
pub(crate) fn interpreted(
    module: Module,
    config: RunConfig,
    runtime: Arc<Runtime>,
) -> Arc<Program> {
    Program::new(
        Arc::new(module),
        config,
        runtime,
        Box::new(interpreter_thread),
        None,
    )
}

/// A thread that runs `f(args)` in the interpreter: its own [`ThreadState`], counted calls
/// added to the profile when it ends, trap or not.
pub fn interpreter_thread(program: &Arc<Program>, f: FuncId, args: &[i64]) -> Result<i64, Trap> {
    let mut state = ThreadState::new(program);
    let result = interp::run_function(program, &mut state, f, args, 0);
    state.flush_profile(program);
    result
}
