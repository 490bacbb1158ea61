//! `jitvm-bench`: builds jitvm and the C peers, runs every program of `bench/programs` in
//! each jitvm tier and each installed peer round by round, checks every run, prints the
//! table of medians and writes it to `bench/results.md`, with a chart in
//! `bench/results.svg`. Exits 1 when any run printed the wrong output or failed (after
//! reporting the rest), 2 when the suite could not be set up.
//!
//! Run it as `cargo run --release -p jitvm-bench -- [OPTIONS]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use jitvm_bench::commands::{commands_for, Kind, Runners, Tier};
use jitvm_bench::report::{markdown, table, Conditions, Row};
use jitvm_bench::{chart, programs, run, toolchain};

/// Runs the benchmark suite of bench/programs in every jitvm tier and in gcc -O2, LuaJIT
/// and Lua 5.4, and reports median times and ratios.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// How many rounds; each runs every command of a program once, in order.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Only these programs (comma-separated names, e.g. fib,sieve).
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    only: Vec<String>,
    /// The jitvm tiers to run (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "TIER,...", default_values_t = Tier::ALL.to_vec())]
    tiers: Vec<Tier>,
    /// Leave out the interpreter, the slowest command (same as --tiers without interp).
    #[arg(long)]
    no_interp: bool,
    /// Use this jitvm binary instead of building one with `cargo build --release`.
    #[arg(long, value_name = "PATH")]
    jitvm: Option<PathBuf>,
    /// Where to write the chart (relative paths are from the workspace root).
    #[arg(long, value_name = "PATH", default_value = "bench/results.svg")]
    svg: PathBuf,
    /// Where to write the table as Markdown (relative paths are from the workspace root).
    #[arg(long, value_name = "PATH", default_value = "bench/results.md")]
    markdown: PathBuf,
}

fn main() -> ExitCode {
    match suite(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("jitvm-bench: {message}");
            ExitCode::from(2)
        }
    }
}

/// Runs the suite; `Ok(false)` when some run failed its check.
fn suite(args: Args) -> Result<bool, String> {
    let root = toolchain::workspace_root();
    let all = programs::discover(&root.join("bench/programs"))?;
    let selected = programs::select(all, &args.only)?;

    let mut tiers = args.tiers.clone();
    tiers.sort();
    tiers.dedup();
    if args.no_interp {
        tiers.retain(|&t| t != Tier::Interp);
    }
    let jitvm = match &args.jitvm {
        Some(path) => path.clone(),
        None => toolchain::build_jitvm(&root, true)?,
    };

    // The peers: those whose tool is missing are skipped, and the report says so.
    let mut missing = Vec::new();
    let mut tool = |kind: Kind| {
        let found = toolchain::find_on_path(kind.tool()?);
        if found.is_none() {
            eprintln!(
                "note: {} is not installed; the {} peer is skipped",
                kind.tool()?,
                kind.label()
            );
            missing.push(kind);
        }
        found
    };
    let gcc = tool(Kind::Gcc);
    let luajit = tool(Kind::LuaJit);
    let lua54 = tool(Kind::Lua54);
    let gcc_out = match gcc {
        Some(gcc) => {
            let dir = toolchain::target_dir(&root).join("bench-peers");
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for program in &selected {
                toolchain::compile_c(&gcc, &program.c, &dir.join(&program.name))?;
            }
            Some(dir)
        }
        None => None,
    };
    let runners = Runners {
        jitvm,
        tiers,
        gcc_out,
        luajit,
        lua54,
    };

    let conditions = Conditions::of_this_machine(args.rounds as usize, missing);
    eprintln!("{}\n", conditions.describe());
    let mut columns: Vec<Kind> = Vec::new();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for program in &selected {
        let commands = commands_for(program, &runners);
        columns = commands.iter().map(|c| c.kind).collect();
        let measured = run::measure(program, &commands, args.rounds as usize, &root, |line| {
            eprintln!("{line}")
        });
        for (_, mismatch) in &measured.failures {
            eprintln!("\nFAILED: {}: {mismatch}", program.name);
        }
        rows.push(Row::new(&program.name, &measured));
        failures.extend(
            measured
                .failures
                .into_iter()
                .map(|(_, m)| (program.name.clone(), m)),
        );
    }

    println!("\n{}", table(&columns, &rows));
    let md_path = root.join(&args.markdown);
    std::fs::write(&md_path, markdown(&conditions, &columns, &rows))
        .map_err(|e| format!("{}: {e}", md_path.display()))?;
    let svg_path = root.join(&args.svg);
    match chart::write_svg(&svg_path, &columns, &rows) {
        Ok(()) => println!("wrote {} and {}", md_path.display(), svg_path.display()),
        Err(e) => println!("wrote {}; no chart: {e}", md_path.display()),
    }
    if let Some((mean, count)) = jitvm_bench::report::baseline_over_opt(&rows) {
        println!("geometric mean of baseline / opt over {count} programs: {mean:.2}");
    }
    if !failures.is_empty() {
        eprintln!("\n{} run(s) failed their check:", failures.len());
        for (program, mismatch) in &failures {
            eprintln!("{program}: {mismatch}");
        }
        return Ok(false);
    }
    Ok(true)
}
