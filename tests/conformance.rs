//! The project's copy of the conformance cases (`tests/conformance/`), run against the built
//! `jitvm` binary in every tier this build supports. Tiers it does not support must be
//! refused with exit status 2, never run in another tier.

use jitvm::TierChoice as Tier;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_jitvm"))
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

fn run_tier(tier: Tier) {
    run_with(&[&format!("--tier={tier}")]);
}

fn run_with(flags: &[&str]) {
    let tier = flags.join(" ");
    let (total, failures) =
        jitvm_conformance::check_dir(&binary(), &cases_dir(), flags, Duration::from_secs(120))
            .expect("cases readable");
    assert!(
        total >= 55,
        "expected the shared cases and the project's own, found {total}"
    );
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed in tier {tier}:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn conformance_in_every_available_tier() {
    for tier in Tier::ALL {
        if tier.is_available() {
            run_tier(tier);
        }
    }
}

/// `--tier auto` moves functions up while the program runs: with thresholds of 0 every
/// function starts compiled, with 1 they tier up at their first counted events (so tier-ups
/// land while the cases run), and each serialization strategy publishes them.
#[test]
fn conformance_under_tiering_with_every_threshold_and_strategy() {
    if !Tier::Baseline.is_available() {
        return;
    }
    for flags in [
        &["--tier=auto", "--baseline-threshold=0", "--opt-threshold=0"][..],
        &["--tier=auto", "--baseline-threshold=1", "--opt-threshold=1"][..],
        &["--tier=auto", "--baseline-threshold=1", "--opt-threshold=0"][..],
        &["--tier=auto", "--baseline-threshold=0", "--opt-threshold=3"][..],
        &["--tier=auto", "--sync=membarrier"][..],
        &[
            "--tier=auto",
            "--baseline-threshold=1",
            "--opt-threshold=1",
            "--sync=signal",
        ][..],
    ] {
        run_with(flags);
    }
    // mprotect is refused on machines that broadcast TLB invalidation (INVLPGB).
    if jitvm_runtime::select_strategy(Some("mprotect")).is_ok() {
        run_with(&[
            "--tier=auto",
            "--baseline-threshold=1",
            "--opt-threshold=1",
            "--sync=mprotect",
        ]);
    }
}

/// `--calls direct`: native code calls `call rel32` straight to the callee's code, and every
/// tier-up and `patch` rewrites those calls while they run; in each native tier and while
/// tiering up.
#[test]
fn conformance_with_direct_calls_in_every_native_tier_and_under_tiering() {
    if !Tier::Baseline.is_available() {
        return;
    }
    for flags in [
        &["--calls=direct", "--tier=baseline"][..],
        &["--calls=direct", "--tier=opt"][..],
        &["--calls=direct", "--tier=auto"][..],
        &[
            "--calls=direct",
            "--tier=auto",
            "--baseline-threshold=1",
            "--opt-threshold=1",
        ][..],
        &[
            "--calls=direct",
            "--tier=auto",
            "--baseline-threshold=0",
            "--opt-threshold=3",
        ][..],
    ] {
        run_with(flags);
    }
}

#[test]
fn unavailable_tiers_are_refused_with_status_2() {
    let case = cases_dir().join("fib.bc");
    for tier in Tier::ALL.into_iter().filter(|t| !t.is_available()) {
        let args = [
            "run".to_string(),
            format!("--tier={tier}"),
            case.display().to_string(),
        ];
        let out =
            jitvm_conformance::run_command(&binary(), &args, Duration::from_secs(30)).unwrap();
        assert_eq!(out.status, Some(2), "tier {tier}: {out:?}");
        assert!(
            out.stdout.is_empty(),
            "tier {tier} must not run the program"
        );
        assert!(
            out.stderr
                .contains(&format!("tier `{tier}` is not available")),
            "{}",
            out.stderr
        );
    }
}
