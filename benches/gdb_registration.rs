//! What `--gdb` costs: a program of 10,000 functions, every one compiled by the baseline JIT
//! and published before `main` runs, timed as whole processes with and without `--gdb`, both
//! on their own (gdb's hook is then an empty function) and under gdb (which reads each
//! registered object as it arrives). Commands are interleaved round by round, so all see the
//! same machine; medians of `ROUNDS`. The goal: registering the 10,000 functions under gdb
//! adds well under a second (the median of `--gdb` minus the median without it).
//!
//! Run: `cargo build --release && cargo bench --bench gdb_registration` (the binary is
//! `JITVM_BIN`, default `target/release/jitvm`). Prints a Markdown table.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FUNCTIONS: usize = 10_000;
const ROUNDS: usize = 5;

fn binary() -> PathBuf {
    std::env::var_os("JITVM_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/jitvm"),
        PathBuf::from,
    )
}

/// `FUNCTIONS` small functions, and a `main` that calls every hundredth.
fn program() -> String {
    let mut src = String::new();
    for k in 0..FUNCTIONS {
        src.push_str(&format!(
            "func f{k}(x)\n  load x\n  push {k}\n  add\n  ret\nend\n\n"
        ));
    }
    src.push_str("func main()\n  push 0\n");
    for k in (0..FUNCTIONS).step_by(100) {
        src.push_str(&format!("  call f{k}\n"));
    }
    src.push_str("  print\n  push 0\n  ret\nend\n");
    src
}

/// One timed run of `command`, which must succeed.
fn time(command: &[String]) -> Duration {
    let start = Instant::now();
    let status = Command::new(&command[0])
        .args(&command[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{}: {e}", command[0]));
    let took = start.elapsed();
    assert!(status.success(), "{command:?}: {status}");
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let jitvm = binary();
    assert!(
        jitvm.exists(),
        "{}: build it first (cargo build --release)",
        jitvm.display()
    );
    let file = std::env::temp_dir().join(format!("jitvm-gdb-bench-{}.bc", std::process::id()));
    std::fs::write(&file, program()).unwrap();
    let run = |gdb: bool| {
        let mut c = vec![jitvm.display().to_string(), "run".into()];
        if gdb {
            c.push("--gdb".into());
        }
        c.extend([
            "--tier".into(),
            "baseline".into(),
            file.display().to_string(),
        ]);
        c
    };
    let under_gdb = |inner: Vec<String>| {
        let mut c: Vec<String> = ["gdb", "-batch", "-nx", "-ex", "set debuginfod enabled off"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        c.extend(["-ex".into(), "run".into(), "--args".into()]);
        c.extend(inner);
        c
    };
    let have_gdb = Command::new("gdb").arg("--version").output().is_ok();
    let mut rows: Vec<(&str, Vec<String>)> =
        vec![("jitvm run", run(false)), ("jitvm run --gdb", run(true))];
    if have_gdb {
        rows.push(("gdb: jitvm run", under_gdb(run(false))));
        rows.push(("gdb: jitvm run --gdb", under_gdb(run(true))));
    } else {
        eprintln!("gdb is not installed: only the runs without it");
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); rows.len()];
    for _ in 0..ROUNDS {
        for (k, (_, command)) in rows.iter().enumerate() {
            times[k].push(time(command));
        }
    }
    let medians: Vec<Duration> = times.into_iter().map(median).collect();
    println!("{FUNCTIONS} functions, --tier baseline, medians of {ROUNDS} interleaved rounds\n");
    println!("| command | median |");
    println!("|---|---|");
    for ((name, _), m) in rows.iter().zip(&medians) {
        println!("| `{name}` | {:.3} s |", m.as_secs_f64());
    }
    let cost =
        |with: usize, without: usize| medians[with].as_secs_f64() - medians[without].as_secs_f64();
    println!("\nregistration, no debugger attached: {:.3} s", cost(1, 0));
    if have_gdb {
        let attached = cost(3, 2);
        let verdict = if attached < 1.0 { "under" } else { "OVER" };
        println!("registration under gdb: {attached:.3} s ({verdict} the goal of 1 s)");
    }
    let _ = std::fs::remove_file(&file);
}
