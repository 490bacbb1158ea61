//! `jitvm`: run, check and disassemble `.bc` programs.

use clap::{Parser, Subcommand};
use jitvm::{
    entry_point, ir_listing, load, native_disassembly, start, FuncTier, Input, Options, Thresholds,
    Tier,
};
use jitvm_runtime::Strategy;
use jitvm_vm::lower::lower_module;
use jitvm_vm::output::report_write_error;
use jitvm_vm::RunConfig;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// A small JIT compiler and VM that hot-patches code while other threads run it.
#[derive(Parser)]
#[command(name = "jitvm", version, about, long_about = None, after_help = EXIT_STATUS)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXIT_STATUS: &str = "\
FILE is a `.bc` program of at most 16 MiB, or `-` to read it from standard input.

Exit status:
  0    success
  1    a trap at run time (`error: trap: REASON` on stderr), or stdout could not be
       written (`error: cannot write output: ...`)
  2    a usage error, or a static error in the program (`FILE:LINE:COL: error: ...`)
  141  stdout is a pipe whose reader has gone (`jitvm run p.bc | head -1`); nothing
       is printed, as for a tool killed by SIGPIPE";

#[derive(Subcommand)]
enum Command {
    /// Run a program: calls `main()` and exits when it returns.
    #[command(after_help = EXIT_STATUS)]
    Run {
        /// Execution tier.
        #[arg(long, value_enum, default_value_t = Tier::Auto)]
        tier: Tier,
        /// Deepest call nesting allowed per thread (main is depth 1).
        #[arg(long, default_value_t = RunConfig::DEFAULT_MAX_DEPTH,
              value_parser = clap::value_parser!(u32).range(1..=RunConfig::LIMIT_MAX_DEPTH as i64))]
        max_depth: u32,
        /// --tier auto: calls plus loop back-edges in the interpreter before a function
        /// is compiled by the baseline JIT (0: before its first call).
        #[arg(long, value_name = "N", default_value_t = Thresholds::DEFAULT_BASELINE)]
        baseline_threshold: u64,
        /// --tier auto: calls plus loop back-edges in baseline code before a function is
        /// compiled by the optimizing JIT (0: straight to it, skipping the baseline).
        #[arg(long, value_name = "N", default_value_t = Thresholds::DEFAULT_OPT)]
        opt_threshold: u64,
        /// How code changes reach the other cores: membarrier, mprotect, signal or none
        /// (default: $JITVM_SYNC, else membarrier where the kernel has it, else signal).
        #[arg(long, value_name = "STRATEGY", value_parser = jitvm::parse_strategy)]
        sync: Option<Strategy>,
        /// Log a line per tier-up and per patch to stderr (the log target `jitvm::trace`:
        /// the same as JITVM_LOG=jitvm::trace=info).
        #[arg(long)]
        trace: bool,
        /// When the run ends (trap included), print to stderr per function its counted
        /// calls and loop back-edges, its tier and its compile times, and the code
        /// runtime's totals: commits, serializations, code bytes live, retired and freed.
        #[arg(long)]
        stats: bool,
        /// Write /tmp/perf-PID.map as code is published, so `perf report` names JIT frames.
        #[arg(long)]
        perf_map: bool,
        /// Testing aid: run function NAME in TIER (interp, baseline or opt) whatever --tier
        /// says, and keep it there; repeat for several functions.
        #[arg(long = "func-tier", value_name = "NAME=TIER")]
        func_tier: Vec<FuncTier>,
        /// Testing aid: the N-th serialization of the run fails (1: the first).
        #[arg(long, value_name = "N", hide = true)]
        fail_serialization_after: Option<u64>,
        /// The `.bc` file, or `-` for standard input.
        file: PathBuf,
    },
    /// Hot-patch under load: worker threads call functions through the real engine while
    /// they tier up and a patcher thread swaps their definitions with `patch`; every result
    /// is checked against the definition in force (spec §5). Exits 1 on any violation.
    Stress(jitvm::stress::StressArgs),
    /// Parse and verify a program without running it.
    #[command(after_help = EXIT_STATUS)]
    Check {
        /// The `.bc` file, or `-` for standard input.
        file: PathBuf,
    },
    /// Print each function's instructions with offsets and operand stack heights.
    #[command(after_help = EXIT_STATUS)]
    Dis {
        /// Also show the interpreter's register code (`R[3] := R[1] + 1`).
        #[arg(long)]
        lowered: bool,
        /// Show each function's bytecode interleaved with the machine code the native tier
        /// makes of it, patch sites marked.
        #[arg(long, conflicts_with = "lowered")]
        native: bool,
        /// Show each function's Cranelift IR before and after optimization.
        #[arg(long, conflicts_with_all = ["lowered", "native"])]
        ir: bool,
        /// The native tier `--native` shows: baseline or opt.
        #[arg(long, value_enum, default_value_t = Tier::Baseline, requires = "native")]
        tier: Tier,
        /// The `.bc` file, or `-` for standard input.
        file: PathBuf,
    },
}

/// A usage or static error.
const STATIC_ERROR: u8 = 2;

/// Logging to stderr: the filter of JITVM_LOG (else RUST_LOG), plus the trace target when
/// `trace` is asked for.
fn init_log(trace: bool) {
    let mut builder = env_logger::Builder::new();
    if trace {
        builder.filter_module(jitvm::trace::TARGET, log::LevelFilter::Info);
    }
    if let Ok(filters) = std::env::var("JITVM_LOG").or_else(|_| std::env::var("RUST_LOG")) {
        builder.parse_filters(&filters);
    }
    builder.format_timestamp_micros().init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let trace = matches!(cli.command, Command::Run { trace: true, .. })
        || matches!(&cli.command, Command::Stress(a) if a.trace);
    init_log(trace);
    match cli.command {
        Command::Run {
            tier,
            max_depth,
            baseline_threshold,
            opt_threshold,
            sync,
            trace: _,
            stats,
            perf_map,
            func_tier,
            fail_serialization_after,
            file,
        } => {
            let options = Options {
                tier,
                func_tiers: func_tier,
                thresholds: Thresholds {
                    baseline: baseline_threshold,
                    opt: opt_threshold,
                },
                sync,
                perf_map,
                poison: false,
                fail_serialization_after,
                run: RunConfig {
                    max_depth,
                    stats,
                    ..RunConfig::default()
                },
            };
            run(&options, &Input::from_arg(&file))
        }
        Command::Stress(args) => jitvm::stress::main(&args),
        Command::Check { file } => {
            let input = Input::from_arg(&file);
            match load(&input) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fail(&e.render(&input.name())),
            }
        }
        Command::Dis {
            lowered,
            native,
            ir,
            tier,
            file,
        } => {
            let input = Input::from_arg(&file);
            if ir {
                if let Some(refused) = refuse_tier(Tier::Opt, &[Tier::Opt]) {
                    return refused;
                }
                return match load(&input) {
                    Ok(module) => match ir_listing(module) {
                        Ok(text) => print_out(&text),
                        Err(e) => fail(&format!("error: {e}\n")),
                    },
                    Err(e) => fail(&e.render(&input.name())),
                };
            }
            if native {
                if let Some(refused) = refuse_tier(tier, &[Tier::Baseline, Tier::Opt]) {
                    return refused;
                }
                return match load(&input) {
                    Ok(module) => match native_disassembly(module, tier) {
                        Ok(text) => print_out(&text),
                        Err(e) => fail(&format!("error: {e}\n")),
                    },
                    Err(e) => fail(&e.render(&input.name())),
                };
            }
            match load(&input) {
                Ok(module) => {
                    let code = lowered.then(|| lower_module(&module));
                    print_out(&jitvm_vm::disassemble(&module, code.as_deref()))
                }
                Err(e) => fail(&e.render(&input.name())),
            }
        }
    }
}

fn fail(message: &str) -> ExitCode {
    let _ = std::io::stderr().write_all(message.as_bytes());
    ExitCode::from(STATIC_ERROR)
}

/// Writes `text` to stdout; a failed write exits as a failed write of a run does.
fn print_out(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => ExitCode::from(report_write_error(&e) as u8),
    }
}

/// The refusal of a tier this build lacks (or, for `dis --native`, one that is not native).
fn refuse_tier(tier: Tier, allowed: &[Tier]) -> Option<ExitCode> {
    if !allowed.contains(&tier) {
        return Some(fail(&format!(
            "error: tier `{tier}` has no native code to show; use --tier baseline or opt\n"
        )));
    }
    if !tier.is_available() {
        let why = if cfg!(target_arch = "x86_64") {
            "its JIT backend has not landed yet"
        } else {
            "native code needs an x86-64 machine"
        };
        return Some(fail(&format!(
            "error: tier `{tier}` is not available in this build ({why}); \
             use --tier interp or --tier auto\n"
        )));
    }
    None
}

fn run(options: &Options, input: &Input) -> ExitCode {
    if let Some(refused) = refuse_tier(options.tier, &Tier::ALL) {
        return refused;
    }
    if let Some(t) = options.func_tiers.iter().find(|t| !t.tier.is_available()) {
        return refuse_tier(t.tier, &Tier::ALL).expect("unavailable");
    }
    let path = input.name();
    let module = match load(input) {
        Ok(m) => m,
        Err(e) => return fail(&e.render(&path)),
    };
    let main = match entry_point(&module) {
        Ok(main) => main,
        Err(e) => return fail(&e.render(&path)),
    };
    if let Err(e) = jitvm::function_tiers(&module, options.tier, &options.func_tiers) {
        return fail(&format!("error: {e}\n"));
    }
    let program = match start(module, options) {
        Ok(program) => program,
        Err(e) => return fail(&format!("error: cannot start: {e}\n")),
    };
    program.run_main(main);
    program.exit_normally()
}
