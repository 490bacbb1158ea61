//! `jitvm`: run, check and disassemble `.bc` programs.

use clap::{Parser, Subcommand};
use jitvm::{
    entry_point, function_tiers, instantiate, ir_listing, load, native_disassembly, FuncTier,
    Input, Tier,
};
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
        /// When the run ends (trap included), print per-function call and loop back-edge
        /// counts to stderr, and the JIT tiers' compile time per function and per instruction.
        #[arg(long)]
        stats: bool,
        /// Testing aid: run function NAME in TIER (interp, baseline or opt) whatever --tier says;
        /// repeat for several functions.
        #[arg(long = "func-tier", value_name = "NAME=TIER")]
        func_tier: Vec<FuncTier>,
        /// The `.bc` file, or `-` for standard input.
        file: PathBuf,
    },
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

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::new().filter("JITVM_LOG")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            tier,
            max_depth,
            stats,
            func_tier,
            file,
        } => run(
            tier,
            &func_tier,
            RunConfig { max_depth, stats },
            &Input::from_arg(&file),
        ),
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

fn run(tier: Tier, func_tiers: &[FuncTier], config: RunConfig, input: &Input) -> ExitCode {
    if let Some(refused) = refuse_tier(tier, &Tier::ALL) {
        return refused;
    }
    if let Some(t) = func_tiers.iter().find(|t| !t.tier.is_available()) {
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
    let tiers = match function_tiers(&module, tier, func_tiers) {
        Ok(tiers) => tiers,
        Err(e) => return fail(&format!("error: {e}\n")),
    };
    let program = match instantiate(module, &tiers, config) {
        Ok(program) => program,
        Err(e) => return fail(&format!("error: cannot start: {e}\n")),
    };
    program.run_main(main);
    program.exit_normally()
}
