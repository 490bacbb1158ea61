//! Prints the module a seed generates: `cargo run -p jitvm-bcgen --example generate -- SEED
//! [LEN] [PROFILE]`, PROFILE one of `fuzz` (the default), `inlining`, `lowering`, `native`.

use jitvm_bcgen::Profile;
use jitvm_conformance::rng::Rng;

fn main() {
    let mut args = std::env::args().skip(1);
    let seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let len: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2048);
    let profile = match args.next().as_deref() {
        None | Some("fuzz") => Profile::FUZZ,
        Some("inlining") => Profile::INLINING,
        Some("lowering") => Profile::LOWERING,
        Some("native") => Profile::NATIVE,
        Some(other) => {
            eprintln!("unknown profile {other:?}: fuzz, inlining, lowering or native");
            std::process::exit(2);
        }
    };
    let mut rng = Rng::new(seed << 1 | 1);
    let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    print!("{}", jitvm_bcgen::generate_with(&bytes, &profile).text);
}
