//! Runs the differential check on seeded random modules until one fails or COUNT have
//! passed, without nightly: `cargo run --release -p jitvm-bcgen --example differential --
//! [COUNT] [FIRST_SEED] [PROFILE]`, PROFILE `fuzz` (the default) or `inlining`. Needs
//! `target/release/jitvm` (or `JITVM_BIN`).

use jitvm_bcgen::{diff, generate_with, Profile};
use jitvm_conformance::rng::Rng;
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let first: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let profile = match args.next().as_deref() {
        None | Some("fuzz") => Profile::FUZZ,
        Some("inlining") => Profile::INLINING,
        Some(other) => {
            eprintln!("unknown profile {other:?}: fuzz or inlining");
            std::process::exit(2);
        }
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let binary = std::env::var_os("JITVM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/jitvm"));
    let scratch = root.join("target/differential");
    let start = Instant::now();
    let mut traps = std::collections::BTreeMap::new();
    let mut lines = 0;
    for seed in first..first + count {
        let mut rng = Rng::new(seed << 1 | 1);
        let len = rng.index(4096);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        match diff::check(&binary, &generate_with(&bytes, &profile), &scratch) {
            Ok(seen) => {
                let reason = seen.trap.unwrap_or_else(|| "(no trap)".into());
                *traps.entry(reason).or_insert(0) += 1;
                lines += seen.stdout.iter().filter(|&&b| b == b'\n').count();
            }
            Err(report) => {
                eprintln!("seed {seed}: {report}");
                std::process::exit(1);
            }
        }
    }
    println!(
        "{count} modules agree in every tier ({lines} lines of output) in {:.1?}: {traps:?}",
        start.elapsed()
    );
}
