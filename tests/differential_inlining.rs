//! Differential testing for an inliner: `jitvm-bcgen`'s [`Profile::INLINING`] modules
//! (small callees called from loops and other functions, patched to each other between
//! calls, at one trip of a loop that calls them, and, twin to original, while workers call
//! them) run in every tier, and each must show what the interpreter shows.
//!
//! As in `tests/differential.rs`: a fixed sequence of cases (`PROPTEST_RNG_SEED` for
//! another, `PROPTEST_CASES` for more), no failure files; a failing module is saved and its
//! path is in the message. `cargo run --release -p jitvm-bcgen --example differential --
//! COUNT FIRST_SEED inlining` runs longer without proptest.

use jitvm_bcgen::{diff, generate_with, Profile};
use proptest::prelude::*;
use proptest::test_runner::{RngSeed, TestCaseError};
use std::path::PathBuf;

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_jitvm"))
}

fn scratch() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("differential-inlining")
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
        config.rng_seed = RngSeed::Fixed(0x6a69_7476_6d19);
    }
    config
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_tier_agrees_with_the_interpreter_on_modules_of_small_callees_and_patches(
        bytes in prop::collection::vec(any::<u8>(), 0..4096)
    ) {
        let module = generate_with(&bytes, &Profile::INLINING);
        if let Err(report) = diff::check(&binary(), &module, &scratch()) {
            return Err(TestCaseError::fail(report.to_string()));
        }
    }
}
