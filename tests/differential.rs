//! Differential testing: random valid modules from `jitvm-bcgen` run in every
//! tier, and each must show what the interpreter shows: stdout, exit status, trap reason.
//!
//! The cases are a fixed sequence so CI is repeatable: set `PROPTEST_RNG_SEED` for another
//! sequence and `PROPTEST_CASES` for more of them. Failures are not persisted to files; a
//! failing module is saved (its path is in the message) and belongs in `tests/conformance/`
//! once fixed, as `docs/fuzzing.md` describes. Longer runs: the `cargo fuzz` targets in
//! `fuzz/`.

use jitvm_bcgen::{diff, generate};
use proptest::prelude::*;
use proptest::test_runner::{RngSeed, TestCaseError};
use std::path::PathBuf;

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_jitvm"))
}

fn scratch() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("differential")
}

fn config() -> ProptestConfig {
    let mut config = ProptestConfig {
        failure_persistence: None,
        max_shrink_time: 120_000,
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 256;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x6a69_7476_6d11);
    }
    config
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_tier_agrees_with_the_interpreter_on_generated_modules(
        bytes in prop::collection::vec(any::<u8>(), 0..4096)
    ) {
        let module = generate(&bytes);
        if let Err(report) = diff::check(&binary(), &module, &scratch()) {
            return Err(TestCaseError::fail(report.to_string()));
        }
    }
}

/// The check itself must catch a tier that differs: a stand-in `jitvm` that prints one
/// extra line under `--tier opt` has to be reported, with the tier and the program.
#[test]
fn a_tier_that_prints_something_else_is_reported() {
    let dir = scratch().join("liar");
    std::fs::create_dir_all(&dir).unwrap();
    let liar = dir.join("jitvm");
    let script = format!(
        "#!/bin/sh\ncase \"$*\" in *'--tier opt '*) echo 42 ;; esac\nexec '{}' \"$@\"\n",
        binary().display()
    );
    std::fs::write(&liar, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&liar, std::fs::Permissions::from_mode(0o755)).unwrap();

    let module = generate(&[]);
    let report = diff::check(&liar, &module, &dir).expect_err("the liar must be caught");
    let shown = report.to_string();
    assert!(shown.contains("--tier opt"), "{shown}");
    assert!(shown.contains(&module.text), "{shown}");
    assert_eq!(std::fs::read_to_string(&report.saved).unwrap(), module.text);
    // The real binary agrees with itself on the same module.
    diff::check(&binary(), &module, &dir).unwrap();
}
