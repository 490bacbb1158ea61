//! Prints the module a seed generates: `cargo run -p jitvm-bcgen --example generate -- SEED [LEN]`.

use jitvm_conformance::rng::Rng;

fn main() {
    let mut args = std::env::args().skip(1);
    let seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let len: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2048);
    let mut rng = Rng::new(seed << 1 | 1);
    let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    print!("{}", jitvm_bcgen::generate(&bytes).text);
}
