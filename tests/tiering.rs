//! `--tier auto` as users see it: tier-ups traced and counted, the perf map, `--sync`.

use jitvm_conformance::{run_command, Outcome};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn jitvm(args: &[&str]) -> Outcome {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_jitvm"));
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    run_command(&binary, &args, Duration::from_secs(60)).unwrap()
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
        .display()
        .to_string()
}

const NATIVE: bool = cfg!(target_arch = "x86_64");

#[test]
fn trace_shows_each_tier_up_with_its_tiers_times_and_bytes() {
    if !NATIVE {
        return;
    }
    let out = jitvm(&["run", "--trace", &example("fib.bc")]);
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, b"832040\n");
    let ups: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("jitvm::trace") && l.contains("tier-up fib:"))
        .collect();
    assert_eq!(ups.len(), 2, "{}", out.stderr);
    assert!(ups[0].contains("interp -> baseline"), "{}", ups[0]);
    assert!(ups[1].contains("baseline -> opt"), "{}", ups[1]);
    for line in ups {
        for word in ["compiled in", " bytes", "commit of", "serialization"] {
            assert!(line.contains(word), "{line}");
        }
    }
}

#[test]
fn trace_shows_each_patch_with_what_the_function_runs_before_and_after() {
    let prog = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/patch.bc");
    let out = jitvm(&[
        "run",
        "--trace",
        "--tier=interp",
        &prog.display().to_string(),
    ]);
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    let patches: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("] patch "))
        .collect();
    assert!(!patches.is_empty(), "{}", out.stderr);
    for line in patches {
        assert!(line.contains(" runs ") && line.contains(", was "), "{line}");
        assert!(line.contains("2 serialization"), "a Strong commit: {line}");
    }
}

#[test]
fn without_trace_nothing_is_logged() {
    let out = jitvm(&["run", &example("fib.bc")]);
    assert_eq!(out.status, Some(0));
    assert_eq!(out.stderr, "");
}

#[test]
fn stats_show_each_functions_tier_and_the_runtimes_totals() {
    if !NATIVE {
        return;
    }
    let out = jitvm(&["run", "--stats", &example("fib.bc")]);
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    let fib = out
        .stderr
        .lines()
        .find(|l| l.starts_with("fib "))
        .unwrap_or_else(|| panic!("{}", out.stderr));
    let cols: Vec<&str> = fib.split_whitespace().collect();
    assert_eq!(cols[3], "opt", "{fib}");
    let calls: u64 = cols[1].parse().unwrap();
    assert!(
        calls >= 1_000,
        "fib counted its calls before tiering up: {fib}"
    );
    assert!(calls < 1_664_079, "optimized code does not count: {fib}");
    let totals = out
        .stderr
        .lines()
        .find(|l| l.starts_with("runtime: "))
        .unwrap_or_else(|| panic!("{}", out.stderr));
    for word in ["commits", "serializations", "live", "retired", "freed"] {
        assert!(totals.contains(word), "{totals}");
    }
    assert!(
        out.stderr.contains("tiering: 2 tier-ups in 2 commits"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_threshold_of_zero_compiles_before_the_first_call() {
    if !NATIVE {
        return;
    }
    let out = jitvm(&[
        "run",
        "--stats",
        "--baseline-threshold=0",
        "--opt-threshold=0",
        &example("fib.bc"),
    ]);
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    for name in ["fib ", "main "] {
        let row = out
            .stderr
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{}", out.stderr));
        assert_eq!(row.split_whitespace().nth(3), Some("opt"), "{row}");
    }
    assert!(out.stderr.contains("tiering: 0 tier-ups"), "{}", out.stderr);
}

#[test]
fn perf_map_names_every_published_blob() {
    if !NATIVE {
        return;
    }
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_jitvm"));
    let child = std::process::Command::new(binary)
        .args(["run", "--perf-map", &example("fib.bc")])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let map = PathBuf::from(format!("/tmp/perf-{}.map", child.id()));
    let status = child.wait_with_output().unwrap().status;
    assert!(status.success());
    let text = std::fs::read_to_string(&map).unwrap();
    let _ = std::fs::remove_file(&map);
    for line in text.lines() {
        let mut parts = line.splitn(3, ' ');
        let start = usize::from_str_radix(parts.next().unwrap(), 16);
        let size = usize::from_str_radix(parts.next().unwrap(), 16);
        assert!(start.is_ok() && size.is_ok_and(|s| s > 0), "{line}");
        assert!(parts.next().unwrap().starts_with("jitvm:"), "{line}");
    }
    for symbol in [
        "jitvm:fib [interp]",
        "jitvm:fib [baseline]",
        "jitvm:fib [opt]",
        "jitvm:main [interp]",
    ] {
        assert!(text.contains(symbol), "no {symbol} in\n{text}");
    }
}

#[test]
fn sync_chooses_the_strategy_and_rejects_unknown_ones() {
    let out = jitvm(&["run", "--sync=signal", "--stats", &example("fib.bc")]);
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("(signal)"), "{}", out.stderr);
    let out = jitvm(&["run", "--sync=telepathy", &example("fib.bc")]);
    assert_eq!(out.status, Some(2));
    assert!(out.stderr.contains("telepathy"), "{}", out.stderr);
}
