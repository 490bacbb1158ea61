//! Speed of baseline code in the standalone machine against the interpreter binary.
//! `cargo test --release -p jitvm-jit --test bench -- --ignored --nocapture`; compares with
//! `target/release/jitvm run --tier interp` when that binary has been built.

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
    for bench in ["fib", "loop", "sieve"] {
        let file = dir.join(format!("{bench}.bc"));
        let src = std::fs::read_to_string(&file).unwrap();
        // Compilation included, as in `jitvm run --tier baseline`.
        let (native, out) = best_of(5, || {
            let m = Machine::load(&src, 10_000);
            let outcome = m.run_main();
            assert_eq!(outcome.result, Ok(0));
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
