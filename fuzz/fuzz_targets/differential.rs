//! Bytes -> a random valid module (jitvm-bcgen) -> `jitvm run` in every tier, each compared
//! with the interpreter. Runs the release binary: `JITVM_BIN`, else `target/release/jitvm`
//! (build it first: `cargo build --release`). Mismatching modules are saved under
//! `fuzz/artifacts/differential/modules/` as well as libFuzzer's crash input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn binary() -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let path = std::env::var_os("JITVM_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/jitvm")
            });
        assert!(
            path.is_file(),
            "no jitvm binary at {} (cargo build --release, or set JITVM_BIN)",
            path.display()
        );
        path
    })
}

fuzz_target!(|data: &[u8]| {
    let module = jitvm_bcgen::generate(data);
    let scratch = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("artifacts/differential/modules");
    if let Err(report) = jitvm_bcgen::diff::check(binary(), &module, &scratch) {
        panic!("{report}");
    }
});
