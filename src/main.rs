//! `jitvm`: run, check and disassemble `.bc` programs.

use clap::Parser;
use jitvm::cli::{Cli, Command};
use jitvm::options::{gdb_from_env, PerfOutput, ENV_LOG, ENV_RUST_LOG};
use jitvm::{
    entry_point, function_tiers, ir_listing, load, native_disassembly, start, Input, Options,
    Thresholds, TierChoice,
};
use jitvm_vm::lower::lower_module;
use jitvm_vm::output::report_write_error;
use jitvm_vm::RunConfig;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// A usage or static error.
const STATIC_ERROR: u8 = 2;

/// Logging to stderr: the filter of JITVM_LOG (else RUST_LOG), plus the trace target when
/// `trace` is asked for.
fn init_log(trace: bool) {
    let mut builder = env_logger::Builder::new();
    if trace {
        builder.filter_module(jitvm::trace::TARGET, log::LevelFilter::Info);
    }
    if let Ok(filters) = std::env::var(ENV_LOG.name).or_else(|_| std::env::var(ENV_RUST_LOG.name)) {
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
            osr_tier,
            sync,
            trace: _,
            stats,
            perf,
            perf_map,
            gdb,
            calls,
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
                    osr: osr_tier,
                },
                sync,
                perf: perf.or(perf_map.then_some(PerfOutput::Map)),
                gdb: gdb || gdb_from_env(),
                // Absolute, so that gdb finds the source wherever it runs.
                script: (file != Path::new("-"))
                    .then(|| std::path::absolute(&file).unwrap_or_else(|_| file.clone())),
                poison: false,
                fail_serialization_after,
                run: RunConfig {
                    max_depth,
                    stats,
                    inline: !(gdb || gdb_from_env()),
                    calls,
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
                if let Some(refused) = refuse_tier(TierChoice::Opt, &[TierChoice::Opt]) {
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
                let native = [TierChoice::Baseline, TierChoice::Opt];
                if let Some(refused) = refuse_tier(tier, &native) {
                    return refused;
                }
                let tier = tier.tier().expect("a native tier");
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
fn refuse_tier(tier: TierChoice, allowed: &[TierChoice]) -> Option<ExitCode> {
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
    if let Some(refused) = refuse_tier(options.tier, &TierChoice::ALL) {
        return refused;
    }
    if let Some(t) = options.func_tiers.iter().find(|t| !t.tier.is_available()) {
        return refuse_tier(t.tier.into(), &TierChoice::ALL).expect("unavailable");
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
    if let Err(e) = function_tiers(&module, options.tier, &options.func_tiers) {
        return fail(&format!("error: {e}\n"));
    }
    let program = match start(module, options) {
        Ok(program) => program,
        Err(e) => return fail(&format!("error: cannot start: {e}\n")),
    };
    program.run_main(main);
    program.exit_normally()
}
