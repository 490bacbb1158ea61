//! Every conformance case and example, run natively in the standalone test machine and
//! compared with the cases' expected output, status and trap reason, in four set-ups:
//! all baseline, all interpreted (stubs), a mix, and all baseline with every safepoint poll
//! taking its slow path (so slow paths must preserve every live value).

#![cfg(target_arch = "x86_64")]

mod support;

use jitvm_vm::parse_module;
use std::path::Path;
use std::sync::atomic::Ordering::SeqCst;
use support::{Machine, Tier};

#[derive(Clone, Copy, Debug)]
enum Setup {
    Native,
    Interp,
    Mixed,
    NativePolling,
}

const SETUPS: [Setup; 4] = [
    Setup::Native,
    Setup::Interp,
    Setup::Mixed,
    Setup::NativePolling,
];

fn machine(src: &str, max_depth: u64, setup: Setup) -> std::sync::Arc<Machine> {
    let m = Machine::load_with(src, max_depth, |i, f| match setup {
        Setup::Native | Setup::NativePolling => Tier::Native,
        Setup::Interp => Tier::Interp,
        // main native, then alternate, so calls cross tiers both ways.
        Setup::Mixed if f.name == "main" || i % 2 == 0 => Tier::Native,
        Setup::Mixed => Tier::Interp,
    });
    if let Setup::NativePolling = setup {
        m.poll_word.store(1, SeqCst);
    }
    // This harness, unlike the VM, sizes each thread's stack to hold every level natively
    // (its reference evaluator recurses on the native stack): room for the widest frame.
    let widest = m
        .module
        .functions
        .iter()
        .map(|f| 16 * (f.num_slots() as usize + *f.heights.iter().max().unwrap_or(&0) as usize))
        .max()
        .unwrap_or(0);
    let base = match setup {
        Setup::Interp | Setup::Mixed => 16 << 10,
        Setup::Native | Setup::NativePolling => 256,
    };
    m.stack_per_level.store(base + widest, SeqCst);
    m
}

/// Runs one case; `Err` describes a mismatch.
fn check_case(bc: &Path, setup: Setup) -> Result<bool, String> {
    let Ok(src) = String::from_utf8(std::fs::read(bc).map_err(|e| e.to_string())?) else {
        return Ok(false); // not UTF-8: a static-error case
    };
    let runnable = parse_module(src.as_bytes()).is_ok_and(|m| {
        m.function_index("main")
            .is_some_and(|f| m.functions[f as usize].params.is_empty())
    });
    if !runnable {
        return Ok(false); // a static-error case: nothing runs
    }
    let side = |ext: &str| std::fs::read_to_string(bc.with_extension(ext)).ok();
    let mut max_depth = 10_000;
    if let Some(args) = side("args") {
        let words: Vec<&str> = args.split_whitespace().collect();
        for w in words.windows(2) {
            if w[0] == "--max-depth" {
                max_depth = w[1].parse().unwrap();
            }
        }
    }
    let expected_out = side("out").unwrap_or_default();
    let expected_status: i32 = side("status").map_or(0, |s| s.trim().parse().unwrap());
    let expected_err = side("err").unwrap_or_default();

    // The reference evaluator behind stubs recurses on the native stack (the VM's
    // interpreter does not), so only native set-ups run the million-deep cases.
    if max_depth > 20_000 && matches!(setup, Setup::Interp | Setup::Mixed) {
        return Ok(false);
    }
    let outcome = machine(&src, max_depth, setup).run_main();
    let status = if outcome.result.is_ok() { 0 } else { 1 };
    let stderr = match outcome.result {
        Ok(_) => String::new(),
        Err(t) => format!("error: trap: {t}"),
    };
    let mut problems = Vec::new();
    if outcome.stdout() != expected_out {
        problems.push(format!(
            "stdout {:?}, expected {:?}",
            outcome.stdout(),
            expected_out
        ));
    }
    if status != expected_status {
        problems.push(format!(
            "status {status} ({stderr}), expected {expected_status}"
        ));
    }
    for line in expected_err.lines().filter(|l| !l.trim().is_empty()) {
        if !stderr.contains(line.trim()) {
            problems.push(format!("stderr {stderr:?} lacks {line:?}"));
        }
    }
    if problems.is_empty() {
        Ok(true)
    } else {
        Err(problems.join("; "))
    }
}

fn run_dir(setup: Setup) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bc"))
        .collect();
    cases.sort();
    let mut ran = 0;
    let mut failures = Vec::new();
    let only = std::env::var("CASE").ok();
    for case in &cases {
        if only
            .as_ref()
            .is_some_and(|o| !case.to_string_lossy().contains(o.as_str()))
        {
            continue;
        }
        eprintln!("{setup:?}: {}", case.display());
        match check_case(case, setup) {
            Ok(true) => ran += 1,
            Ok(false) => {}
            Err(why) => failures.push(format!("{}: {why}", case.display())),
        }
    }
    assert!(
        only.is_some() || ran >= 40,
        "only {ran} runnable cases found in {}",
        dir.display()
    );
    assert!(
        failures.is_empty(),
        "{setup:?}: {} of {ran} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_conformance_case_passes_natively() {
    run_dir(Setup::Native);
}

#[test]
fn every_conformance_case_passes_through_interpreter_stubs() {
    run_dir(Setup::Interp);
}

#[test]
fn every_conformance_case_passes_with_native_and_interpreted_functions_mixed() {
    run_dir(Setup::Mixed);
}

#[test]
fn every_conformance_case_passes_when_every_safepoint_poll_takes_its_slow_path() {
    run_dir(Setup::NativePolling);
}

fn example(name: &str, setup: Setup) -> String {
    let src = support::workspace_file(&format!("examples/{name}"));
    let out = machine(&src, 10_000, setup).run_main();
    assert_eq!(out.result, Ok(0), "{name} in {setup:?}");
    out.stdout()
}

#[test]
fn examples_print_what_they_promise_in_every_setup() {
    for setup in SETUPS {
        assert_eq!(example("fib.bc", setup), "832040\n");
        assert_eq!(example("sieve.bc", setup), "9592\n99991\n");
        assert_eq!(example("threads.bc", setup), "4203\n4203\n");
        assert_eq!(example("hotswap.bc", setup), "1\n2\n1\n");
    }
}

#[test]
fn mandelbrot_draws_the_same_picture_native_and_interpreted() {
    let native = example("mandelbrot.bc", Setup::Native);
    assert_eq!(native.lines().count(), 24);
    assert_eq!(native, example("mandelbrot.bc", Setup::Interp));
    assert_eq!(native, example("mandelbrot.bc", Setup::NativePolling));
}
