//! The command line's shape (clap): subcommands and their flags. Each flag's help is its
//! line in the knob table ([`crate::options::KNOBS`]); `src/main.rs` does what they ask.

use crate::options::{self as knob, FuncTier, PerfOutput, TierChoice};
use crate::tiering::Thresholds;
use clap::{Parser, Subcommand};
use jitvm_jit::tier::Tier;
use jitvm_runtime::Strategy;
use jitvm_vm::{CallMode, RunConfig};
use std::path::PathBuf;

/// A small JIT compiler and VM that hot-patches code while other threads run it.
#[derive(Parser)]
#[command(name = "jitvm", version, about, long_about = None, after_help = EXIT_STATUS)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What `--help` says about input and exit status.
pub const EXIT_STATUS: &str = "\
FILE is a `.bc` program of at most 16 MiB, or `-` to read it from standard input.

Exit status:
  0    success
  1    a trap at run time (`error: trap: REASON` on stderr), or stdout could not be
       written (`error: cannot write output: ...`)
  2    a usage error, or a static error in the program (`FILE:LINE:COL: error: ...`)
  141  stdout is a pipe whose reader has gone (`jitvm run p.bc | head -1`); nothing
       is printed, as for a tool killed by SIGPIPE";

#[derive(Subcommand)]
pub enum Command {
    /// Run a program: calls `main()` and exits when it returns.
    #[command(after_help = EXIT_STATUS)]
    Run {
        #[arg(long, help = knob::RUN_TIER.meaning, value_enum, default_value_t = TierChoice::Auto)]
        tier: TierChoice,
        #[arg(long, help = knob::RUN_MAX_DEPTH.meaning, default_value_t = RunConfig::DEFAULT_MAX_DEPTH,
              value_parser = clap::value_parser!(u32).range(1..=RunConfig::LIMIT_MAX_DEPTH as i64))]
        max_depth: u32,
        #[arg(long, help = knob::RUN_BASELINE_THRESHOLD.meaning, value_name = "N",
              default_value_t = Thresholds::DEFAULT_BASELINE)]
        baseline_threshold: u64,
        #[arg(long, help = knob::RUN_OPT_THRESHOLD.meaning, value_name = "N",
              default_value_t = Thresholds::DEFAULT_OPT)]
        opt_threshold: u64,
        #[arg(long, help = knob::RUN_OSR_TIER.meaning, value_name = "TIER",
              default_value = "opt", value_parser = knob::parse_osr_tier)]
        osr_tier: Tier,
        #[arg(long, help = knob::RUN_SYNC.meaning, value_name = "STRATEGY",
              value_parser = knob::parse_strategy)]
        sync: Option<Strategy>,
        #[arg(long, help = knob::RUN_TRACE.meaning)]
        trace: bool,
        #[arg(long, help = knob::RUN_STATS.meaning)]
        stats: bool,
        #[arg(long, help = knob::RUN_PERF.meaning, value_enum, value_name = "OUTPUT")]
        perf: Option<PerfOutput>,
        #[arg(long, help = knob::RUN_PERF_MAP.meaning, hide = true, conflicts_with = "perf")]
        perf_map: bool,
        #[arg(long, help = knob::RUN_GDB.meaning)]
        gdb: bool,
        #[arg(long, help = knob::RUN_CALLS.meaning, value_name = "MODE",
              default_value = "slots", value_parser = knob::parse_calls)]
        calls: CallMode,
        #[arg(long = "func-tier", help = knob::RUN_FUNC_TIER.meaning, value_name = "NAME=TIER")]
        func_tier: Vec<FuncTier>,
        #[arg(long, help = knob::RUN_FAIL_SERIALIZATION_AFTER.meaning, value_name = "N",
              hide = true)]
        fail_serialization_after: Option<u64>,
        /// The `.bc` file, or `-` for standard input.
        file: PathBuf,
    },
    /// Hot-patch under load: worker threads call functions through the real engine while
    /// they tier up and a patcher thread swaps their definitions with `patch`; every result
    /// is checked against the definition in force (spec §5). Exits 1 on any violation.
    Stress(crate::stress::StressArgs),
    /// Parse and verify a program without running it.
    #[command(after_help = EXIT_STATUS)]
    Check {
        /// The `.bc` file, or `-` for standard input.
        file: PathBuf,
    },
    /// Print each function's instructions with offsets and operand stack heights.
    #[command(after_help = EXIT_STATUS)]
    Dis {
        #[arg(long, help = knob::DIS_LOWERED.meaning)]
        lowered: bool,
        #[arg(long, help = knob::DIS_NATIVE.meaning, conflicts_with = "lowered")]
        native: bool,
        #[arg(long, help = knob::DIS_IR.meaning, conflicts_with_all = ["lowered", "native"])]
        ir: bool,
        #[arg(long, help = knob::DIS_TIER.meaning, value_enum,
              default_value_t = TierChoice::Baseline, requires = "native")]
        tier: TierChoice,
        /// The `.bc` file, or `-` for standard input.
        file: PathBuf,
    },
}
