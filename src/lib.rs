//! The jitvm engine: reads a `.bc` program, picks the tiers it may run in, decides what each
//! of its threads runs, and runs it.
//!
//! The crates underneath: `jitvm-vm` (bytecode, verifier, interpreter), `jitvm-runtime`
//! (code memory and the machinery that changes code while threads run it) and `jitvm-jit`
//! (the native backends). This crate owns the policy that ties them together.

pub mod perf_map;
pub mod stats;
pub mod stress;
pub mod tiering;
pub mod trace;

use clap::ValueEnum;
use jitvm_runtime::{Config, Runtime, Strategy};
use jitvm_vm::interp;
use jitvm_vm::state::ThreadState;
use jitvm_vm::{parse_module, Diagnostic, Diagnostics, FuncId, Module, Program, RunConfig, Trap};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
pub use tiering::Thresholds;
use tiering::{CompileLog, Policy};

/// Which execution tiers a run may use: `jitvm run --tier NAME`, where NAME is the variant's
/// name in lower case and the doc line its help.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Tier {
    /// The interpreter only.
    Interp,
    /// Every function compiled by the baseline JIT before it runs.
    Baseline,
    /// Every function compiled by the optimizing JIT (Cranelift) before it runs.
    Opt,
    /// Start in the interpreter and tier up what gets hot, with the tiers this build has.
    Auto,
}

impl Tier {
    /// Every tier, as `--tier` lists them.
    pub const ALL: [Tier; 4] = [Tier::Interp, Tier::Baseline, Tier::Opt, Tier::Auto];

    /// Whether this build can run the tier. Native tiers need x86-64; asking for a tier this
    /// build lacks is refused rather than silently run in another tier.
    pub fn is_available(self) -> bool {
        match self {
            Tier::Interp | Tier::Auto => true,
            Tier::Baseline | Tier::Opt => cfg!(target_arch = "x86_64"),
        }
    }
}

/// The tier's `--tier` name.
impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.to_possible_value().expect("no tier is hidden");
        f.write_str(value.get_name())
    }
}

/// The largest program `jitvm` reads (16 MiB). Larger input is refused after reading no more
/// than this, so `jitvm check /dev/zero` ends at once with bounded memory.
pub const MAX_INPUT_BYTES: usize = 16 << 20;

/// Where a program comes from: a file, or standard input for `-`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    File(PathBuf),
    Stdin,
}

impl Input {
    /// `-` is standard input, anything else a path (`./-` for a file named `-`).
    pub fn from_arg(arg: &Path) -> Input {
        if arg == Path::new("-") {
            Input::Stdin
        } else {
            Input::File(arg.to_path_buf())
        }
    }

    /// The name messages give it: the path, or `<stdin>`.
    pub fn name(&self) -> String {
        match self {
            Input::File(path) => path.display().to_string(),
            Input::Stdin => "<stdin>".to_string(),
        }
    }

    /// The whole input, if it is no larger than [`MAX_INPUT_BYTES`].
    pub fn read(&self) -> Result<Vec<u8>, LoadError> {
        match self {
            Input::File(path) => {
                let file = std::fs::File::open(path).map_err(LoadError::Read)?;
                // A regular file says how large it is: refuse it unread, or read it into a
                // buffer of the right size. Anything else (a pipe, a device) just gets read.
                let size = file
                    .metadata()
                    .ok()
                    .filter(|m| m.is_file())
                    .map(|m| m.len());
                if size.is_some_and(|size| size > MAX_INPUT_BYTES as u64) {
                    return Err(LoadError::TooLarge);
                }
                read_limited(file, size.unwrap_or(0) as usize)
            }
            Input::Stdin => read_limited(std::io::stdin().lock(), 0),
        }
    }
}

/// Reads `source` to its end, or refuses it as soon as it has given one byte more than
/// [`MAX_INPUT_BYTES`]: the buffer never grows past the limit.
fn read_limited(source: impl Read, expected: usize) -> Result<Vec<u8>, LoadError> {
    let mut bytes = Vec::with_capacity(expected + 1);
    let mut source = source.take(MAX_INPUT_BYTES as u64 + 1);
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = match source.read(&mut chunk) {
            Ok(0) => return Ok(bytes),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(LoadError::Read(e)),
        };
        if bytes.len() + n > MAX_INPUT_BYTES {
            return Err(LoadError::TooLarge);
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
}

/// Why a program could not be run: each renders as the line(s) `jitvm` prints before exit 2.
#[derive(Debug)]
pub enum LoadError {
    Read(std::io::Error),
    TooLarge,
    Invalid(Diagnostics),
    Main(Diagnostic),
}

impl LoadError {
    pub fn render(&self, path: &str) -> String {
        match self {
            LoadError::Read(e) => {
                Diagnostic::file(format!("cannot read the file: {e}")).render(path) + "\n"
            }
            LoadError::TooLarge => {
                Diagnostic::file(format!(
                    "the program is larger than {} MiB, the most jitvm reads",
                    MAX_INPUT_BYTES >> 20
                ))
                .render(path)
                    + "\n"
            }
            LoadError::Invalid(d) => d.render(path),
            LoadError::Main(d) => format!("{}\n", d.render(path)),
        }
    }
}

/// Reads, parses and verifies a module.
pub fn load(input: &Input) -> Result<Module, LoadError> {
    let bytes = input.read()?;
    parse_module(&bytes).map_err(LoadError::Invalid)
}

/// The function `run` starts: `main`, taking no parameters (spec §4, §6).
pub fn entry_point(module: &Module) -> Result<FuncId, LoadError> {
    let main = module
        .function_index("main")
        .ok_or_else(|| LoadError::Main(Diagnostic::file("no function `main` to run")))?;
    let f = &module.functions[main as usize];
    if !f.params.is_empty() {
        return Err(LoadError::Main(Diagnostic::at(
            f.pos,
            format!(
                "`main` must take no parameters, but takes {}",
                f.params.len()
            ),
        )));
    }
    Ok(main)
}

/// Set to `1` to run the code runtime in poison mode: reclaimed code is filled with trap
/// instructions and quarantined, so a thread that runs freed code stops at once. A testing
/// aid, as `JITVM_SYNC` (read by the runtime: which core-serialization strategy) is.
pub const POISON_ENV: &str = "JITVM_POISON";

/// The runtime's configuration for a run: its defaults, and the environment's testing aids.
pub fn runtime_config() -> Config {
    Config {
        poison: std::env::var(POISON_ENV).is_ok_and(|v| v == "1"),
        ..Config::default()
    }
}

/// One `--func-tier NAME=TIER`: run function NAME in TIER whatever `--tier` says (under
/// `--tier auto` it stays there). A testing aid, to mix tiers at will.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuncTier {
    pub name: String,
    pub tier: Tier,
}

impl std::str::FromStr for FuncTier {
    type Err = String;
    fn from_str(s: &str) -> Result<FuncTier, String> {
        let (name, tier) = s
            .split_once('=')
            .ok_or_else(|| format!("expected NAME=TIER, got `{s}`"))?;
        let tier = Tier::from_str(tier, false)?;
        if tier == Tier::Auto {
            return Err(format!(
                "a function's tier is interp, baseline or opt, not `{tier}`"
            ));
        }
        Ok(FuncTier {
            name: name.to_string(),
            tier,
        })
    }
}

/// Everything `jitvm run` lets a user choose about how a program runs.
#[derive(Clone, Debug)]
pub struct Options {
    pub tier: Tier,
    pub func_tiers: Vec<FuncTier>,
    /// For `--tier auto`.
    pub thresholds: Thresholds,
    /// The core-serialization strategy; `None`: `JITVM_SYNC`, else the runtime's choice.
    pub sync: Option<Strategy>,
    /// Write `/tmp/perf-PID.map` as code is published.
    pub perf_map: bool,
    /// Poison reclaimed code (as `JITVM_POISON=1` does).
    pub poison: bool,
    /// Testing aid: make the N-th serialization of the run fail (1: the first), to drive
    /// the paths that end a run whose commit failed.
    pub fail_serialization_after: Option<u64>,
    pub run: RunConfig,
}

/// A `--sync` value: membarrier, mprotect, signal or none.
pub fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse().map_err(|e: jitvm_runtime::Error| e.to_string())
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tier: Tier::Auto,
            func_tiers: Vec::new(),
            thresholds: Thresholds::default(),
            sync: None,
            perf_map: false,
            poison: false,
            fail_serialization_after: None,
            run: RunConfig::default(),
        }
    }
}

/// The tier each function of `module` starts in: `Baseline` or `Opt` for every function
/// under `--tier baseline` or `--tier opt`, the interpreter under `--tier interp` and
/// `--tier auto` (which moves them up as they get hot), with `overrides` applied. An
/// override naming no function is an error.
pub fn function_tiers(
    module: &Module,
    tier: Tier,
    overrides: &[FuncTier],
) -> Result<Vec<Tier>, String> {
    let start = match tier {
        Tier::Baseline => Tier::Baseline,
        Tier::Opt => Tier::Opt,
        Tier::Interp | Tier::Auto => Tier::Interp,
    };
    let mut tiers = vec![start; module.functions.len()];
    for o in overrides {
        let f = module
            .function_index(&o.name)
            .ok_or_else(|| format!("--func-tier: no function `{}`", o.name))?;
        tiers[f as usize] = o.tier;
    }
    Ok(tiers)
}

/// Builds the program for `module` as `options` say: a runtime for its code; with native
/// tiers, every function installed in its first tier before anything runs; under
/// `--tier auto`, the tiering policy and its compile thread (see [`tiering`]). Then
/// [`Program::run_main`] runs it.
pub fn start(module: Module, options: &Options) -> Result<Arc<Program>, String> {
    let tiers = function_tiers(&module, options.tier, &options.func_tiers)?;
    let defaults = runtime_config();
    let runtime = Runtime::new(Config {
        strategy: options.sync,
        poison: defaults.poison || options.poison,
        ..defaults
    })
    .map_err(|e| e.to_string())?;
    if let Some(n) = options.fail_serialization_after {
        runtime.fail_serialization_after(n);
    }
    let perf = match options.perf_map {
        true => Some(
            perf_map::PerfMap::create(
                &perf_map::path(),
                module.functions.iter().map(|f| f.name.clone()).collect(),
            )
            .map_err(|e| format!("cannot write {}: {e}", perf_map::path().display()))?,
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
    let program = build(module, options, &tiers, runtime)?;
    if let Some(perf) = perf {
        program.add_exit_hook(Box::new(move || perf.flush()));
    }
    Ok(program)
}

/// The program of [`start`], its runtime made.
fn build(
    module: Module,
    options: &Options,
    tiers: &[Tier],
    runtime: Arc<Runtime>,
) -> Result<Arc<Program>, String> {
    let auto = options.tier == Tier::Auto && cfg!(target_arch = "x86_64");
    if !auto && tiers.iter().all(|&t| t == Tier::Interp) {
        let program = Program::new(
            Arc::new(module),
            options.run,
            runtime,
            Box::new(interpreter_thread),
            None,
        );
        program.add_patch_observer(Box::new(trace::patch));
        program.set_stats_report(Box::new(|p| stats::report(p, None)));
        return Ok(program);
    }
    native_program(
        module,
        tiers,
        auto.then_some(options.thresholds),
        options.run,
        runtime,
    )
}

/// [`start`] with each function in the tier `tiers` gives it and no tiering (for tests that
/// choose tiers per function).
pub fn instantiate(
    module: Module,
    tiers: &[Tier],
    config: RunConfig,
) -> Result<Arc<Program>, String> {
    let runtime = Runtime::new(runtime_config()).map_err(|e| e.to_string())?;
    if tiers.iter().all(|&t| t == Tier::Interp || t == Tier::Auto) {
        return Ok(Program::new(
            Arc::new(module),
            config,
            runtime,
            Box::new(interpreter_thread),
            None,
        ));
    }
    native_program(module, tiers, None, config, runtime)
}

/// The installer's tier for an engine tier.
#[cfg(target_arch = "x86_64")]
fn native_tier(t: Tier) -> jitvm_jit::install::NativeTier {
    use jitvm_jit::install::NativeTier;
    match t {
        Tier::Baseline => NativeTier::Baseline,
        Tier::Opt => NativeTier::Opt,
        Tier::Interp | Tier::Auto => NativeTier::Interp,
    }
}

/// A program with native code: every function installed in its tier (`tiers`, or for
/// `auto`, the thresholds' first tier where `tiers` does not pin one) behind its dispatch
/// slot, and with `thresholds`, the tiering policy and its compile thread.
#[cfg(target_arch = "x86_64")]
fn native_program(
    module: Module,
    tiers: &[Tier],
    thresholds: Option<Thresholds>,
    mut config: RunConfig,
    runtime: Arc<Runtime>,
) -> Result<Arc<Program>, String> {
    use jitvm_jit::install::Jit;
    let n = module.functions.len();
    // Under auto, a function is pinned by --func-tier (its tier is not Interp here); the
    // others start where the thresholds say.
    let pinned: Vec<bool> = tiers
        .iter()
        .map(|&t| thresholds.is_some() && t != Tier::Interp)
        .collect();
    let first: Vec<_> = tiers
        .iter()
        .zip(&pinned)
        .map(|(&t, &pinned)| match thresholds {
            Some(th) if !pinned => th.first_tier(),
            _ => native_tier(t),
        })
        .collect();
    let compiles = CompileLog::new(n);
    let policy = thresholds.map(|th| {
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
    let (jit, installed) = Jit::install(&program, &first, false, policy.is_some())
        .map_err(|e| format!("cannot install native code: {e}"))?;
    {
        let mut log = compiles.lock().unwrap_or_else(|e| e.into_inner());
        for item in &installed {
            log.record(item.func, item.tier, item.compile_time);
        }
    }
    let jit = Arc::new(jit);
    if let Some(policy) = &policy {
        tiering::start_compiler(&program, policy, &jit)
            .map_err(|e| format!("cannot start the compile thread: {e}"))?;
    }
    program.add_patch_observer(Box::new(trace::patch));
    let sources = stats::StatsSources {
        tier: Box::new(move |f| jit.tier_of(f)),
        compiles,
    };
    program.set_stats_report(Box::new(move |p| stats::report(p, Some(&sources))));
    Ok(program)
}

#[cfg(not(target_arch = "x86_64"))]
fn native_program(
    _module: Module,
    _tiers: &[Tier],
    _thresholds: Option<Thresholds>,
    _config: RunConfig,
    _runtime: Arc<Runtime>,
) -> Result<Arc<Program>, String> {
    Err("native tiers need an x86-64 machine".to_string())
}

/// Every function of `module` compiled by `tier`'s JIT and installed (nothing runs).
#[cfg(target_arch = "x86_64")]
fn install_all(
    module: Module,
    tier: Tier,
    want_ir: bool,
) -> Result<(Arc<Program>, Vec<jitvm_jit::install::Installed>), String> {
    let runtime = Runtime::new(runtime_config()).map_err(|e| e.to_string())?;
    let tiers = vec![native_tier(tier); module.functions.len()];
    let program = Program::new(
        Arc::new(module),
        RunConfig::default(),
        runtime,
        Box::new(interpreter_thread),
        None,
    );
    let installed = jitvm_jit::install::install(&program, &tiers, want_ir)
        .map_err(|e| format!("cannot install native code: {e}"))?;
    Ok((program, installed))
}

/// Each function's Cranelift IR before and after optimization, as `jitvm dis --ir` prints it.
#[cfg(target_arch = "x86_64")]
pub fn ir_listing(module: Module) -> Result<String, String> {
    let (program, installed) = install_all(module, Tier::Opt, true)?;
    let mut out = String::new();
    for item in &installed {
        let name = &program.module.functions[item.func as usize].name;
        match &item.ir {
            Some((before, after)) => out.push_str(&format!(
                "; func {name}: before optimization\n{before}\n; func {name}: after optimization\n{after}\n"
            )),
            None => out.push_str(&format!("; func {name}: not compiled (see the log)\n\n")),
        }
    }
    Ok(out)
}

#[cfg(not(target_arch = "x86_64"))]
pub fn ir_listing(_module: Module) -> Result<String, String> {
    Err("native tiers need an x86-64 machine".to_string())
}

/// Every function of `module` compiled by `tier`'s JIT (baseline or opt) and installed
/// (nothing runs), as `jitvm dis --native` prints it: each bytecode instruction followed by
/// its machine code, patch sites marked (for opt: the calls to call stubs).
#[cfg(target_arch = "x86_64")]
pub fn native_disassembly(module: Module, tier: Tier) -> Result<String, String> {
    let (program, installed) = install_all(module, tier, false)?;
    let module = &program.module;
    let mut out = String::new();
    for item in &installed {
        let f = &module.functions[item.func as usize];
        out.push_str(&format!(
            "func {}    ; #{}: {} code at {:#x}\n",
            f.name,
            item.func,
            tier,
            item.addr + jitvm_jit::abi::ENTRY_OFFSET
        ));
        match &item.native {
            Some(code) => out.push_str(&jitvm_jit::disasm::disassemble(f, code, item.addr, |i| {
                jitvm_vm::dis::instruction(module, f, i)
            })),
            None => out.push_str("  ; not compiled: runs in the interpreter (see the log)\n"),
        }
        out.push_str("end\n\n");
    }
    Ok(out)
}

#[cfg(not(target_arch = "x86_64"))]
pub fn native_disassembly(_module: Module, _tier: Tier) -> Result<String, String> {
    Err("native tiers need an x86-64 machine".to_string())
}

/// A thread that runs `f(args)` in the interpreter: its own [`ThreadState`], counted calls
/// added to the profile when it ends, trap or not.
pub fn interpreter_thread(program: &Arc<Program>, f: FuncId, args: &[i64]) -> Result<i64, Trap> {
    let mut state = ThreadState::new(program);
    let result = interp::run_function(program, &mut state, f, args, 0);
    state.flush_profile(program);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_tiers_are_the_tier_options_values() {
        assert_eq!(Tier::ALL[..], *Tier::value_variants());
        let names: Vec<String> = Tier::ALL.iter().map(Tier::to_string).collect();
        assert_eq!(names, ["interp", "baseline", "opt", "auto"]);
    }
}
