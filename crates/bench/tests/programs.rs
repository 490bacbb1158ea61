//! Every program of `bench/programs` is a valid `.bc` (parsed and verified by
//! `jitvm check`, which runs nothing), documents its expected output, and has its C and
//! Lua peers. Nothing is timed here: timing belongs to the suite, not to `cargo test` on a
//! busy machine.

use std::path::PathBuf;
use std::process::Command;

use jitvm_bench::programs::discover;
use jitvm_bench::toolchain::{build_jitvm, workspace_root};

/// The jitvm binary of the profile these tests were built in. `cargo test --workspace`
/// has just built it next to this test's own directory (the root package's tests need it),
/// so it is used as it is; building it again here could rebuild it with other features.
/// Run alone (`cargo test -p jitvm-bench`), the test builds it.
fn jitvm() -> PathBuf {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("jitvm")));
    match beside {
        Some(path) if path.is_file() => path,
        _ => build_jitvm(&workspace_root(), !cfg!(debug_assertions)).expect("building jitvm"),
    }
}

#[test]
fn every_program_verifies_documents_its_output_and_has_its_c_and_lua_peers() {
    // discover() refuses a program whose header lacks the expected output or whose peers
    // are missing, so success here covers those.
    let programs = discover(&workspace_root().join("bench/programs")).expect("the programs");
    assert!(programs.len() >= 9, "{} programs", programs.len());
    for name in ["fib", "loop", "sieve"] {
        assert!(
            programs.iter().any(|p| p.name == name),
            "the shared {name} is missing"
        );
    }
    let jitvm = jitvm();
    for program in &programs {
        assert!(
            program.c.is_file() && program.lua.is_file(),
            "{}",
            program.name
        );
        let output = Command::new(&jitvm)
            .arg("check")
            .arg(&program.bc)
            .output()
            .expect("running jitvm check");
        assert!(
            output.status.success(),
            "jitvm check {}: {}\n{}",
            program.bc.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
