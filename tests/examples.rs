//! The example scripts a newcomer runs first must keep working and printing what their
//! comments promise.

use std::path::{Path, PathBuf};
use std::time::Duration;

fn run_example(name: &str) -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    let args = ["run".to_string(), file.display().to_string()];
    let out = jitvm_conformance::run_command(
        &PathBuf::from(env!("CARGO_BIN_EXE_jitvm")),
        &args,
        Duration::from_secs(120),
    )
    .unwrap();
    assert_eq!(out.status, Some(0), "{name}: {}", out.stderr);
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn fib() {
    assert_eq!(run_example("fib.bc"), "832040\n");
}

#[test]
fn sieve() {
    assert_eq!(run_example("sieve.bc"), "9592\n99991\n");
}

#[test]
fn threads() {
    assert_eq!(run_example("threads.bc"), "4203\n4203\n");
}

#[test]
fn hotswap() {
    assert_eq!(run_example("hotswap.bc"), "1\n2\n1\n");
}

#[test]
fn mandelbrot() {
    let art = run_example("mandelbrot.bc");
    let rows: Vec<&str> = art.lines().collect();
    assert_eq!(rows.len(), 24);
    assert!(rows.iter().all(|r| r.len() == 64));
    // The set is symmetric about the real axis: row y mirrors row 24 - y (cy is nearly exact).
    assert_eq!(
        rows[12 - 4].chars().filter(|&c| c == '@').count(),
        rows[12 + 4].chars().filter(|&c| c == '@').count()
    );
    // The main cardioid contains the origin: x = 48 is cx = 0, row 12 is cy ~ 0.
    assert_eq!(rows[12].as_bytes()[48], b'@');
    assert_eq!(rows[0].trim(), "", "the top row is outside the set");
}
