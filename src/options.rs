//! Every knob of `jitvm` in one table ([`KNOBS`]): each command-line flag and environment
//! variable, with its default and its meaning, one line each (as YJIT's `options.rs`). The
//! values stay with the layer that owns them (flags parse in [`crate::cli`] into
//! [`Options`], `RunConfig` (vm), [`Thresholds`] and the runtime's `Config`; the runtime
//! reads `JITVM_SYNC` itself); this table is what they say to a user: `--help` prints each
//! flag's `meaning` as its help, and a test checks that `--help` and the README's list of
//! options name every knob here and nothing else, with the same defaults.
//!
//! Also here: what `jitvm run` lets a user choose ([`Options`], [`TierChoice`],
//! [`FuncTier`]) and the runtime configuration the environment asks for
//! ([`runtime_config`]).

use crate::tiering::Thresholds;
use jitvm_jit::tier::Tier;
use jitvm_runtime::{Config, Strategy};
use jitvm_vm::{CallMode, RunConfig};
use std::fmt;
use std::path::PathBuf;

/// Where a knob is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// A flag of `jitvm run`.
    Run,
    /// A flag of `jitvm stress`.
    Stress,
    /// A flag of `jitvm dis`.
    Dis,
    /// An environment variable `jitvm` reads.
    Env,
    /// An environment variable the tests and benches read (never `jitvm` itself).
    TestEnv,
}

impl Scope {
    /// The subcommand whose `--help` lists the knob (`None`: an environment variable).
    pub fn command(self) -> Option<&'static str> {
        match self {
            Scope::Run => Some("run"),
            Scope::Stress => Some("stress"),
            Scope::Dis => Some("dis"),
            Scope::Env | Scope::TestEnv => None,
        }
    }
}

/// What a knob is when it is not given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Initial {
    /// A value, which `--help` shows as `[default: VALUE]`.
    Value(&'static str),
    /// No value: what happens then (`off` for a switch).
    Absent(&'static str),
}

/// One knob: where it is set, its name there, its default, what it sets, and its meaning
/// (a flag's `--help` line).
#[derive(Clone, Copy, Debug)]
pub struct Knob {
    pub scope: Scope,
    /// `--flag` or `ENV_VAR`.
    pub name: &'static str,
    pub initial: Initial,
    /// Where the value lands.
    pub sets: &'static str,
    pub meaning: &'static str,
    /// Left out of `--help` (a testing aid for the tests alone).
    pub hidden: bool,
}

/// Defines each knob as a constant (a flag's clap `help` is its `.meaning`) and [`KNOBS`],
/// all of them in order.
macro_rules! knobs {
    ($($id:ident: $scope:ident $name:literal = $initial:expr, sets $sets:literal, $meaning:literal $(, $hidden:ident)?;)*) => {
        $(pub const $id: Knob = Knob { scope: Scope::$scope, name: $name, initial: $initial, sets: $sets, meaning: $meaning, hidden: knobs!(@hidden $($hidden)?) };)*
        /// Every knob, in the order `--help` gives them.
        pub const KNOBS: &[Knob] = &[$($id),*];
    };
    (@hidden) => { false };
    (@hidden hidden) => { true };
}

use Initial::{Absent, Value};

knobs! {
    RUN_TIER: Run "--tier" = Value("auto"), sets "Options::tier", "Execution tier";
    RUN_MAX_DEPTH: Run "--max-depth" = Value("10000"), sets "RunConfig::max_depth", "Deepest call nesting allowed per thread (main is depth 1)";
    RUN_BASELINE_THRESHOLD: Run "--baseline-threshold" = Value("1000"), sets "Thresholds::baseline", "--tier auto: calls plus loop back-edges in the interpreter before a function is compiled by the baseline JIT (0: before its first call)";
    RUN_OPT_THRESHOLD: Run "--opt-threshold" = Value("10000"), sets "Thresholds::opt", "--tier auto: calls plus loop back-edges in baseline code before a function is compiled by the optimizing JIT (0: straight to it, skipping the baseline)";
    RUN_OSR_TIER: Run "--osr-tier" = Value("opt"), sets "Thresholds::osr", "--tier auto: the tier an interpreted loop moves into mid-call (on-stack replacement) once its function's events reach --baseline-threshold: opt (the interpreter runs the loop while Cranelift compiles it; calls in the loop can be inlined) or baseline (sooner, slower code)";
    RUN_SYNC: Run "--sync" = Absent("$JITVM_SYNC, else membarrier where the kernel has it, else signal"), sets "runtime Config::strategy", "How code changes reach the other cores: membarrier, mprotect, signal or none (default: $JITVM_SYNC, else membarrier where the kernel has it, else signal)";
    RUN_TRACE: Run "--trace" = Absent("off"), sets "the log filter", "Log a line per tier-up and per patch to stderr (the log target `jitvm::trace`: the same as JITVM_LOG=jitvm::trace=info)";
    RUN_STATS: Run "--stats" = Absent("off"), sets "RunConfig::stats", "When the run ends (trap included), print to stderr per function its counted calls and loop back-edges, its tier and its compile times, and the code runtime's totals: commits, serializations, code bytes live, retired and freed";
    RUN_PERF: Run "--perf" = Absent("off"), sets "Options::perf", "Tell perf about JIT code as it is published: `map` writes /tmp/perf-PID.map (perf report names JIT functions; no lines, no annotate), `jitdump` writes jit-PID.dump (after `perf record -k 1` and `perf inject --jit`: names, .bc lines and perf annotate, a reused address attributed to the code loaded there last)";
    RUN_PERF_MAP: Run "--perf-map" = Absent("off"), sets "Options::perf", "The same as --perf map (its older spelling)", hidden;
    RUN_GDB: Run "--gdb" = Absent("$JITVM_GDB, else off"), sets "Options::gdb", "Register JIT code with gdb as it is published (the GDB JIT interface: each function's name, .bc lines and frame), so that gdb's backtraces name JIT frames (the optimizing tier then inlines nothing, so every function keeps its frame); off by default, it costs time per commit (the same as JITVM_GDB=1)";
    RUN_CALLS: Run "--calls" = Value("slots"), sets "RunConfig::calls", "How native code calls a function: slots (through its dispatch slot; patch and tier-ups store one word) or direct (call rel32 straight to its code; patch and tier-ups rewrite those calls while they run, by Linux's int3 protocol: three serializations per commit)";
    RUN_FUNC_TIER: Run "--func-tier" = Absent("none"), sets "Options::func_tiers", "Testing aid: run function NAME in TIER (interp, baseline or opt) whatever --tier says, and keep it there; repeat for several functions";
    RUN_FAIL_SERIALIZATION_AFTER: Run "--fail-serialization-after" = Absent("never"), sets "Options::fail_serialization_after", "Testing aid: the N-th serialization of the run fails (1: the first)", hidden;
    STRESS_THREADS: Stress "--threads" = Value("4"), sets "StressArgs::threads", "Worker threads (1 to 250); a patcher thread runs besides them";
    STRESS_SECONDS: Stress "--seconds" = Value("10"), sets "StressArgs::seconds", "How long to run";
    STRESS_SYNC: Stress "--sync" = Absent("as for `run`"), sets "runtime Config::strategy", "How code changes reach the other cores (as for `run`)";
    STRESS_POISON: Stress "--poison" = Absent("off"), sets "runtime Config::poison", "Fill reclaimed code with trap instructions and quarantine it, so that a thread that runs freed code stops at once (the same as JITVM_POISON=1)";
    STRESS_BASELINE_THRESHOLD: Stress "--baseline-threshold" = Value("100"), sets "Thresholds::baseline", "Tier-up threshold to the baseline JIT, as for `run --tier auto` (low, so that tier-ups happen under load)";
    STRESS_OPT_THRESHOLD: Stress "--opt-threshold" = Value("1000"), sets "Thresholds::opt", "Tier-up threshold to the optimizing JIT, as for `run --tier auto` (low, so that tier-ups happen under load)";
    STRESS_TRACE: Stress "--trace" = Absent("off"), sets "the log filter", "Log a line per tier-up (and per patch: many) to stderr";
    STRESS_INLINED: Stress "--inlined" = Absent("off"), sets "StressArgs::inlined", "Workers call the patched function through a small caller that the optimizing tier inlines it into (behind its guard), so the check covers inlined copies";
    STRESS_CALLS: Stress "--calls" = Value("slots"), sets "RunConfig::calls", "How native code calls a function, as for `run`: slots or direct (every patch then rewrites the direct calls the workers are running)";
    DIS_LOWERED: Dis "--lowered" = Absent("off"), sets "dis", "Also show the interpreter's register code (`R[3] := R[1] + 1`)";
    DIS_NATIVE: Dis "--native" = Absent("off"), sets "dis", "Show each function's bytecode interleaved with the machine code the native tier makes of it, patch sites marked";
    DIS_IR: Dis "--ir" = Absent("off"), sets "dis", "Show each function's Cranelift IR before and after optimization";
    DIS_TIER: Dis "--tier" = Value("baseline"), sets "dis --native", "The native tier `--native` shows: baseline or opt";
    ENV_SYNC: Env "JITVM_SYNC" = Absent("membarrier where the kernel has it, else signal"), sets "runtime Config::strategy", "The core-serialization strategy when --sync is not given: membarrier, mprotect, signal or none (read by the runtime)";
    ENV_POISON: Env "JITVM_POISON" = Absent("off"), sets "runtime Config::poison", "1: poison mode, reclaimed code filled with trap instructions and quarantined (a testing aid; stress --poison does the same)";
    ENV_GDB: Env "JITVM_GDB" = Absent("off"), sets "Options::gdb", "1: register JIT code with gdb, as --gdb does";
    ENV_JITDUMPDIR: Env "JITDUMPDIR" = Absent("the current directory"), sets "--perf jitdump", "The directory --perf jitdump writes jit-PID.dump in (the variable perf's other JIT agents read)";
    ENV_LOG: Env "JITVM_LOG" = Absent("RUST_LOG"), sets "the log filter", "Logging to stderr, an env_logger filter (`debug`, `jitvm::trace=info`)";
    ENV_RUST_LOG: Env "RUST_LOG" = Absent("no logging"), sets "the log filter", "The log filter when JITVM_LOG is not set";
    TEST_BIN: TestEnv "JITVM_BIN" = Absent("target/release/jitvm"), sets "differential tests, fuzzing, benches", "The jitvm binary the differential checks and the benchmarks run";
    TEST_STRESS_SECS: TestEnv "JITVM_STRESS_SECS" = Absent("3"), sets "runtime/tests/stress.rs", "Seconds each serialization strategy runs in the runtime's stress test";
    TEST_REQUIRE_TOOLS: TestEnv "JITVM_REQUIRE_TOOLS" = Absent("unset: a missing tool skips its test"), sets "tests/perf_gdb.rs", "Set (by .ci/run, which installs them): perf and gdb must be installed, their tests never skip for want of them";
    TEST_BENCH_N: TestEnv "JITVM_BENCH_N" = Absent("2000"), sets "runtime/benches/commit.rs", "Samples per row of the runtime's commit benchmark";
}

/// Set to `1` to run the code runtime in poison mode ([`ENV_POISON`]).
pub const POISON_ENV: &str = ENV_POISON.name;

/// The runtime's configuration for a run: its defaults, and the environment's testing aids.
pub fn runtime_config() -> Config {
    Config {
        poison: std::env::var(POISON_ENV).is_ok_and(|v| v == "1"),
        ..Config::default()
    }
}

/// Which execution tiers a run may use: `jitvm run --tier NAME`, where NAME is the variant's
/// name in lower case and the doc line its help. All but `Auto` are a [`Tier`] for every
/// function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TierChoice {
    /// The interpreter only.
    Interp,
    /// Every function compiled by the baseline JIT before it runs.
    Baseline,
    /// Every function compiled by the optimizing JIT (Cranelift) before it runs.
    Opt,
    /// Start in the interpreter and tier up what gets hot, with the tiers this build has.
    Auto,
}

impl TierChoice {
    /// Every choice, as `--tier` lists them.
    pub const ALL: [TierChoice; 4] = [
        TierChoice::Interp,
        TierChoice::Baseline,
        TierChoice::Opt,
        TierChoice::Auto,
    ];

    /// The one tier every function runs in; `None` for `Auto`.
    pub fn tier(self) -> Option<Tier> {
        match self {
            TierChoice::Interp => Some(Tier::Interp),
            TierChoice::Baseline => Some(Tier::Baseline),
            TierChoice::Opt => Some(Tier::Opt),
            TierChoice::Auto => None,
        }
    }

    /// Whether this build can run the choice. Native tiers need x86-64; asking for a tier
    /// this build lacks is refused rather than silently run in another tier.
    pub fn is_available(self) -> bool {
        self.tier().map_or(true, Tier::is_available)
    }
}

impl From<Tier> for TierChoice {
    fn from(tier: Tier) -> TierChoice {
        match tier {
            Tier::Interp => TierChoice::Interp,
            Tier::Baseline => TierChoice::Baseline,
            Tier::Opt => TierChoice::Opt,
        }
    }
}

/// The choice's `--tier` name.
impl fmt::Display for TierChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use clap::ValueEnum;
        let value = self.to_possible_value().expect("no tier is hidden");
        f.write_str(value.get_name())
    }
}

/// One `--func-tier NAME=TIER`: run function NAME in TIER whatever `--tier` says (under
/// `--tier auto` it stays there). A testing aid, to mix tiers at will.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuncTier {
    pub name: String,
    pub tier: Tier,
}

/// Why a `--func-tier` value does not parse; clap prints it after the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FuncTierError {
    /// No `=`.
    NotNameEqTier(String),
    /// Not a `--tier` name (clap's words).
    UnknownTier(String),
    /// `auto`, which is no one tier.
    Auto,
}

impl fmt::Display for FuncTierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FuncTierError::NotNameEqTier(s) => write!(f, "expected NAME=TIER, got `{s}`"),
            FuncTierError::UnknownTier(why) => f.write_str(why),
            FuncTierError::Auto => write!(
                f,
                "a function's tier is interp, baseline or opt, not `{}`",
                TierChoice::Auto
            ),
        }
    }
}

impl std::error::Error for FuncTierError {}

impl std::str::FromStr for FuncTier {
    type Err = FuncTierError;
    fn from_str(s: &str) -> Result<FuncTier, FuncTierError> {
        use clap::ValueEnum;
        let (name, tier) = s
            .split_once('=')
            .ok_or_else(|| FuncTierError::NotNameEqTier(s.to_string()))?;
        let choice = TierChoice::from_str(tier, false).map_err(FuncTierError::UnknownTier)?;
        Ok(FuncTier {
            name: name.to_string(),
            tier: choice.tier().ok_or(FuncTierError::Auto)?,
        })
    }
}

/// Everything `jitvm run` lets a user choose about how a program runs.
#[derive(Clone, Debug)]
pub struct Options {
    pub tier: TierChoice,
    pub func_tiers: Vec<FuncTier>,
    /// For `--tier auto`.
    pub thresholds: Thresholds,
    /// The core-serialization strategy; `None`: `JITVM_SYNC`, else the runtime's choice.
    pub sync: Option<Strategy>,
    /// What `perf` is told about JIT code (`--perf`).
    pub perf: Option<PerfOutput>,
    /// Register JIT code with gdb (`--gdb`, `JITVM_GDB=1`).
    pub gdb: bool,
    /// The script's path as debug information names it (absolute, so that gdb finds it).
    pub script: Option<PathBuf>,
    /// Poison reclaimed code (as `JITVM_POISON=1` does).
    pub poison: bool,
    /// Testing aid: make the N-th serialization of the run fail (1: the first), to drive
    /// the paths that end a run whose commit failed.
    pub fail_serialization_after: Option<u64>,
    pub run: RunConfig,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tier: TierChoice::Auto,
            func_tiers: Vec::new(),
            thresholds: Thresholds::default(),
            sync: None,
            perf: None,
            gdb: false,
            script: None,
            poison: false,
            fail_serialization_after: None,
            run: RunConfig::default(),
        }
    }
}

/// What `--perf` writes for the profiler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PerfOutput {
    /// `/tmp/perf-PID.map`: a line per published blob, `START SIZE NAME`.
    Map,
    /// `jit-PID.dump` in `$JITDUMPDIR` or the current directory: perf's jitdump format.
    Jitdump,
}

/// `JITVM_GDB=1`: register JIT code with gdb ([`ENV_GDB`]).
pub fn gdb_from_env() -> bool {
    std::env::var(ENV_GDB.name).is_ok_and(|v| v == "1")
}

/// Where `--perf jitdump` writes its file ([`ENV_JITDUMPDIR`]).
pub fn jitdump_dir() -> PathBuf {
    std::env::var_os(ENV_JITDUMPDIR.name).map_or_else(|| PathBuf::from("."), PathBuf::from)
}

/// A `--sync` value: membarrier, mprotect, signal or none.
/// `--osr-tier`: a native tier.
pub fn parse_osr_tier(s: &str) -> Result<Tier, String> {
    match s {
        "baseline" => Ok(Tier::Baseline),
        "opt" => Ok(Tier::Opt),
        _ => Err(format!("`{s}` is not baseline or opt")),
    }
}

pub fn parse_calls(s: &str) -> Result<CallMode, String> {
    match s {
        "slots" => Ok(CallMode::Slots),
        "direct" => Ok(CallMode::Direct),
        _ => Err(format!("`{s}` is not slots or direct")),
    }
}

pub fn parse_strategy(s: &str) -> Result<Strategy, jitvm_runtime::Error> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// `jitvm COMMAND -h`: one line per flag, its default at the end.
    fn short_help(command: &str) -> String {
        let mut cli = crate::cli::Cli::command();
        cli.find_subcommand_mut(command)
            .expect("a subcommand")
            .render_help()
            .to_string()
    }

    /// The `--flags` that start a line of `help` (clap's own `--help` and `--version` aside).
    fn flags_in_help(help: &str) -> Vec<String> {
        help.lines()
            .filter_map(|l| l.trim_start().strip_prefix("--"))
            .map(|rest| format!("--{}", rest.split([' ', '=']).next().unwrap_or_default()))
            .filter(|f| f != "--help" && f != "--version")
            .collect()
    }

    /// The README's section on the command line.
    fn readme_options() -> String {
        let readme = include_str!("../README.md");
        let start = readme.find("## The command line").expect("the section");
        let end = readme[start + 2..]
            .find("\n## ")
            .map_or(readme.len(), |e| start + 2 + e);
        readme[start..end].to_string()
    }

    #[test]
    fn every_flag_in_help_is_a_knob_and_every_knob_is_in_help_with_its_default() {
        for command in ["run", "stress", "dis"] {
            let help = short_help(command);
            let knobs: Vec<&Knob> = KNOBS
                .iter()
                .filter(|k| k.scope.command() == Some(command))
                .collect();
            for flag in flags_in_help(&help) {
                assert!(
                    knobs.iter().any(|k| k.name == flag && !k.hidden),
                    "`jitvm {command} --help` has {flag}, the table of knobs does not"
                );
            }
            for knob in knobs {
                let line = help
                    .lines()
                    .find(|l| l.trim_start().starts_with(&format!("{} ", knob.name)));
                let Some(line) = line else {
                    assert!(knob.hidden, "`jitvm {command} --help` lacks {}", knob.name);
                    continue;
                };
                assert!(!knob.hidden, "{} is hidden, yet in --help", knob.name);
                assert!(line.contains(knob.meaning), "{}: {line}", knob.name);
                match knob.initial {
                    Initial::Value(v) => assert!(
                        line.contains(&format!("[default: {v}]")),
                        "{}: the table's default is {v}: {line}",
                        knob.name
                    ),
                    Initial::Absent(_) => {
                        assert!(!line.contains("[default:"), "{}: {line}", knob.name)
                    }
                }
            }
        }
    }

    #[test]
    fn the_readme_names_every_knob_and_no_other_flag() {
        let readme = readme_options();
        for knob in KNOBS {
            assert!(
                readme.contains(knob.name),
                "README.md's command line section does not name {}",
                knob.name
            );
        }
        let flags = readme
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|w| w.starts_with("--") && w.len() > 2);
        for flag in flags {
            assert!(
                flag == "--help" || flag == "--version" || KNOBS.iter().any(|k| k.name == flag),
                "README.md names {flag}, the table of knobs does not"
            );
        }
    }

    #[test]
    fn the_defaults_are_the_owning_layers() {
        let value = |k: Knob| match k.initial {
            Initial::Value(v) => v.to_string(),
            Initial::Absent(_) => panic!("{} has a default value", k.name),
        };
        let t = Thresholds::default();
        assert_eq!(value(RUN_BASELINE_THRESHOLD), t.baseline.to_string());
        assert_eq!(value(RUN_OPT_THRESHOLD), t.opt.to_string());
        assert_eq!(value(RUN_OSR_TIER), t.osr.to_string());
        assert_eq!(
            value(RUN_MAX_DEPTH),
            RunConfig::default().max_depth.to_string()
        );
        assert_eq!(value(RUN_TIER), Options::default().tier.to_string());
        assert_eq!(jitvm_runtime::SYNC_ENV, ENV_SYNC.name);
    }
}
