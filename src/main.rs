//! `jitvm`: run, check and disassemble `.bc` programs.

use clap::{Parser, Subcommand, ValueEnum};
use jitvm::{entry_point, instantiate, load, profile_report, Tier};
use jitvm_vm::RunConfig;
use std::path::PathBuf;
use std::process::ExitCode;

/// A small JIT compiler and VM that hot-patches code while other threads run it.
///
/// Exit status: 0 success, 1 trap at run time, 2 usage or static error.
#[derive(Parser)]
#[command(name = "jitvm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a program: calls `main()` and exits when it returns.
    Run {
        /// Execution tier: interp, baseline, opt, or auto (tier up what gets hot).
        #[arg(long, value_enum, default_value_t = TierArg::Auto)]
        tier: TierArg,
        /// Deepest call nesting allowed per thread (main is depth 1).
        #[arg(long, default_value_t = RunConfig::DEFAULT_MAX_DEPTH,
              value_parser = clap::value_parser!(u32).range(1..=RunConfig::LIMIT_MAX_DEPTH as i64))]
        max_depth: u32,
        /// After the run, print per-function call and loop back-edge counts to stderr.
        #[arg(long)]
        stats: bool,
        /// The `.bc` file.
        file: PathBuf,
    },
    /// Parse and verify a program without running it.
    Check { file: PathBuf },
    /// Print each function's instructions with offsets and operand stack heights.
    Dis {
        /// Also show the interpreter's lowered register code.
        #[arg(long)]
        lowered: bool,
        file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum TierArg {
    Interp,
    Baseline,
    Opt,
    Auto,
}

impl From<TierArg> for Tier {
    fn from(t: TierArg) -> Tier {
        match t {
            TierArg::Interp => Tier::Interp,
            TierArg::Baseline => Tier::Baseline,
            TierArg::Opt => Tier::Opt,
            TierArg::Auto => Tier::Auto,
        }
    }
}

const STATIC_ERROR: u8 = 2;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::new().filter("JITVM_LOG")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            tier,
            max_depth,
            stats,
            file,
        } => run(tier.into(), RunConfig { max_depth }, stats, &file),
        Command::Check { file } => match load(&file) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e.render(&file.display().to_string())),
        },
        Command::Dis { lowered, file } => match load(&file) {
            Ok(module) => {
                print!("{}", jitvm_vm::disassemble(&module, lowered));
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.render(&file.display().to_string())),
        },
    }
}

fn fail(message: &str) -> ExitCode {
    eprint!("{message}");
    ExitCode::from(STATIC_ERROR)
}

fn run(tier: Tier, config: RunConfig, stats: bool, file: &std::path::Path) -> ExitCode {
    if !tier.is_available() {
        return fail(&format!(
            "error: tier `{tier}` is not available in this build (its JIT backend has not landed yet); \
             use --tier interp or --tier auto\n"
        ));
    }
    let path = file.display().to_string();
    let module = match load(file) {
        Ok(m) => m,
        Err(e) => return fail(&e.render(&path)),
    };
    let main = match entry_point(&module) {
        Ok(main) => main,
        Err(e) => return fail(&e.render(&path)),
    };
    let program = instantiate(module, tier, config);
    program.run_main(main);
    if stats {
        eprint!("{}", profile_report(&program));
    }
    program.exit_normally()
}
