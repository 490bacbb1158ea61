//! jitdump end to end: perf records examples/perf_demo.rs, `perf inject
//! --jit` turns its dump into objects, and `perf report` must put the
//! samples in the JIT function, at its line.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Says why the test did nothing, on stderr itself: libtest would swallow a
/// `println!` from a passing test.
macro_rules! skip {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipped: {}", format!($($arg)*));
    }};
}

/// `cargo test` builds the package's examples into target/<profile>/examples.
fn demo() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(|deps| deps.parent()).unwrap();
    profile
        .join("examples")
        .join(format!("perf_demo{}", std::env::consts::EXE_SUFFIX))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn perf_reports_samples_in_jit_code_by_name_and_line() {
    let demo = demo();
    assert!(
        demo.exists(),
        "{} is missing: `cargo test` builds it, a `--test` filter does not \
         (run `cargo build --example perf_demo` with the same profile first)",
        demo.display()
    );
    let dir = std::env::temp_dir().join(format!("jitvm-debuginfo-perf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // perf keeps a build-id cache under $HOME/.debug: keep it in the scratch dir.
    let perf = |args: &[&str]| {
        Command::new("perf")
            .args(args)
            .current_dir(&dir)
            .env("HOME", &dir)
            .output()
    };
    let record = match perf(&[
        "record",
        "-k",
        "mono",
        "-o",
        "perf.data",
        demo.to_str().unwrap(),
        dir.to_str().unwrap(),
    ]) {
        Ok(output) => output,
        Err(e) => {
            skip!("perf cannot be run ({e})");
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
    };
    if !record.status.success() {
        // perf_event_paranoid, a container without perf events, ...
        skip!("perf record failed here:\n{}", text(&record));
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let inject = perf(&["inject", "--jit", "-i", "perf.data", "-o", "jit.data"]).unwrap();
    assert!(inject.status.success(), "{}", text(&inject));
    let report = perf(&[
        "report",
        "-i",
        "jit.data",
        "--stdio",
        "--sort",
        "sym,srcline",
    ])
    .unwrap();
    let report = text(&report);
    std::fs::remove_dir_all(&dir).unwrap();
    let top = report
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap_or_else(|| panic!("an empty report:\n{report}"));
    println!("{top}");
    assert!(
        top.contains("jitvm:spin [baseline]") && top.contains("spin.bc:2"),
        "{report}"
    );
}
