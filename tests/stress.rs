//! `jitvm stress`: hot patching under multithreaded load with tier-ups, in poison mode, for
//! each serialization strategy; and the check itself, which must catch a patcher that lies.

use jitvm::stress::StressArgs;
use jitvm_conformance::run_command;
use jitvm_vm::CallMode;
use std::path::PathBuf;
use std::time::Duration;

fn stress(strategy: &str, seconds: u32) {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_jitvm"));
    let args: Vec<String> = [
        "stress",
        "--threads=3",
        &format!("--seconds={seconds}"),
        &format!("--sync={strategy}"),
        "--poison",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = run_command(&binary, &args, Duration::from_secs(300)).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status, Some(0), "{stdout}\n{}", out.stderr);
    assert!(stdout.contains("\nviolations: 0\n"), "{stdout}");
    assert!(
        stdout.contains("W^X: 0 writable and executable mappings"),
        "{stdout}"
    );
    let patches: u64 = stdout
        .split("patches: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(patches > 0, "the patcher must have patched: {stdout}");
}

/// In-process stress arguments: 3 workers for 5 s in poison mode, with low thresholds so
/// that tier-ups happen while they run.
fn in_process(inlined: bool, calls: CallMode) -> StressArgs {
    StressArgs {
        threads: 3,
        seconds: 5.0,
        sync: None,
        poison: true,
        baseline_threshold: 10,
        opt_threshold: 100,
        trace: false,
        inlined,
        calls,
    }
}

#[test]
fn stress_with_membarrier_in_poison_mode_sees_no_violation() {
    if cfg!(target_arch = "x86_64") {
        stress("membarrier", 10);
    }
}

/// With `--calls direct` every patch rewrites the workers' `call rel32` to the target while
/// they run it (the runtime's int3 protocol): spec §5 must hold, and the handler must have
/// been at work.
#[test]
fn stress_with_direct_calls_rewritten_live_in_poison_mode_sees_no_violation() {
    if !cfg!(target_arch = "x86_64") {
        return;
    }
    let args = in_process(false, CallMode::Direct);
    let summary = jitvm::stress::run(&args, &jitvm::stress::program_text(3, false)).unwrap();
    let report = summary.report();
    assert!(summary.passed(), "{report}");
    assert!(summary.patches > 0, "{report}");
    let (sites, traps) = summary.direct_calls.expect("direct calls reported");
    assert!(
        sites > 0,
        "the workers' calls must be bound sites: {report}"
    );
    // Patches before the workers' loops reach native code have no site to rewrite.
    assert!(
        summary.serializations > 2 * summary.patches as u64,
        "patches rewrite live sites (three serializations each): {report}"
    );
    assert!(
        traps.emulated > 0,
        "no worker ever hit a site's int3: {report}"
    );
}

/// Workers call the patched function through a caller the optimizing tier inlined it into:
/// the inlined copy's guard must keep spec §5 as the dispatch slot does.
#[test]
fn stress_through_an_inlined_caller_sees_no_violation() {
    if !cfg!(target_arch = "x86_64") {
        return;
    }
    let args = in_process(true, CallMode::Slots);
    let summary = jitvm::stress::run(&args, &jitvm::stress::program_text(3, true)).unwrap();
    let report = summary.report();
    assert!(summary.passed(), "{report}");
    assert!(summary.patches > 0, "{report}");
    let line = summary
        .inlined_into_caller
        .unwrap_or_else(|| panic!("caller never reached the optimizing tier: {report}"));
    assert!(line.contains("inlined 1 sites"), "{line}");
}

#[test]
fn stress_with_signals_in_poison_mode_sees_no_violation() {
    if cfg!(target_arch = "x86_64") {
        stress("signal", 10);
    }
}

#[test]
fn stress_with_mprotect_in_poison_mode_sees_no_violation() {
    // mprotect is refused where TLB invalidation is broadcast (INVLPGB).
    if cfg!(target_arch = "x86_64") && jitvm_runtime::select_strategy(Some("mprotect")).is_ok() {
        stress("mprotect", 10);
    }
}

#[test]
fn the_stress_check_catches_a_patcher_that_counts_patches_it_never_made() {
    if !cfg!(target_arch = "x86_64") {
        return;
    }
    let args = StressArgs {
        threads: 2,
        seconds: 1.0,
        poison: false,
        baseline_threshold: 100,
        opt_threshold: 1000,
        ..in_process(false, CallMode::Slots)
    };
    let honest = jitvm::stress::program_text(args.threads, false);
    let lying = honest.replace("  patch target v", "  nop\n; was: patch target v");
    assert_ne!(honest, lying);
    let summary = jitvm::stress::run(&args, &lying).expect("runs");
    assert!(summary.patches > 100, "{}", summary.report());
    assert!(summary.violations > 0, "{}", summary.report());
    assert!(!summary.passed());
}
