//! Speed of baseline code in the standalone machine against the interpreter binary.
//! `cargo test --release -p jitvm-jit --test bench -- --ignored --nocapture`; compares with
//! `target/release/jitvm run --tier interp` when that binary has been built.

#![cfg(target_arch = "x86_64")]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};
use support::Machine;

fn best_of(runs: usize, mut f: impl FnMut() -> String) -> (Duration, String) {
    let mut best = Duration::MAX;
    let mut out = String::new();
    for _ in 0..runs {
        let t = Instant::now();
        out = f();
        best = best.min(t.elapsed());
    }
    (best, out)
}

#[test]
#[ignore = "a benchmark: run in release with --ignored --nocapture"]
fn baseline_against_the_interpreter() {
    // BENCH_DIR and JITVM_BIN override where the programs and the interpreter are.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let jitvm =
        std::env::var_os("JITVM_BIN").map_or_else(|| root.join("target/release/jitvm"), Into::into);
    let dir = std::env::var_os("BENCH_DIR")
        .map_or_else(|| root.join("../shared/bench"), std::path::PathBuf::from);
    let only = std::env::var("BENCH").ok();
    for bench in ["fib", "loop", "sieve"] {
        if only.as_deref().is_some_and(|o| o != bench) {
            continue;
        }
        let file = dir.join(format!("{bench}.bc"));
        let src = std::fs::read_to_string(&file).unwrap();
        // Compilation included, as in `jitvm run --tier baseline`.
        // BENCH_RUNS=1 BENCH_DIS=1 with `perf record` maps samples onto the printed code.
        let runs = std::env::var("BENCH_RUNS").map_or(5, |r| r.parse().unwrap());
        let (native, out) = best_of(runs, || {
            let m = Machine::load(&src, 10_000);
            let outcome = m.run_main();
            assert_eq!(outcome.result, Ok(0));
            if std::env::var_os("BENCH_DIS").is_some() {
                for (f, func) in m.module.functions.iter().enumerate() {
                    let (base, code) = &m.code[f];
                    let line = |i: usize| format!("{i:04}  {:?}", func.code[i]);
                    println!(
                        "{}",
                        jitvm_jit::disasm::disassemble(func, code, *base, line)
                    );
                }
            }
            outcome.stdout()
        });
        let interp = jitvm.exists().then(|| {
            best_of(3, || {
                let o = std::process::Command::new(&jitvm)
                    .args(["run", "--tier", "interp"])
                    .arg(&file)
                    .output()
                    .unwrap();
                String::from_utf8(o.stdout).unwrap()
            })
        });
        match interp {
            Some((t, interp_out)) => {
                assert_eq!(out, interp_out, "{bench}");
                println!(
                    "{bench:6} baseline {:8.1} ms   interp {:8.1} ms   speed-up {:5.1}x",
                    native.as_secs_f64() * 1e3,
                    t.as_secs_f64() * 1e3,
                    t.as_secs_f64() / native.as_secs_f64()
                );
            }
            None => println!(
                "{bench:6} baseline {:8.1} ms   (build target/release/jitvm to compare)",
                native.as_secs_f64() * 1e3
            ),
        }
    }
}
