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
        out.stderr
            .contains("tiering: 2 tier-ups and 0 on-stack-replacement entries in 2 commits"),
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
    assert!(
        out.stderr.contains("tiering: 0 tier-ups and 0 on-stack"),
        "{}",
        out.stderr
    );
}

#[test]
fn perf_map_names_every_published_blob() {
    if !NATIVE {
        return;
    }
    perf_map_run(&["--perf", "map"]);
}

#[test]
fn the_older_spelling_perf_map_still_writes_the_map() {
    if !NATIVE {
        return;
    }
    perf_map_run(&["--perf-map"]);
}

fn perf_map_run(flags: &[&str]) {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_jitvm"));
    let child = std::process::Command::new(binary)
        .arg("run")
        .args(flags)
        .arg(example("fib.bc"))
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

/// A function called once that loops: the interpreter's frame moves into native code at the
/// loop header (on-stack replacement), counted by `--stats` and shown by `--trace`.
const LONG_LOOP: &str = "func work(n)\n local i\n local s\nloop:\n load s\n load i\n push 7\n rem\n add\n store s\n load i\n push 1\n add\n dup\n store i\n load n\n lt\n jnz loop\n load s\n ret\nend\nfunc main()\n push 5000000\n call work\n print\n push 0\n ret\nend\n";

fn long_loop() -> String {
    let dir = std::env::temp_dir().join(format!("jitvm-tiering-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("long_loop.bc");
    std::fs::write(&path, LONG_LOOP).unwrap();
    path.display().to_string()
}

#[test]
fn a_hot_loop_leaves_the_interpreter_mid_call_in_each_native_tier() {
    if !NATIVE {
        return;
    }
    let prog = long_loop();
    for (flags, tier) in [
        (&[][..], "opt"),
        (&["--osr-tier", "baseline"][..], "baseline"),
        (&["--baseline-threshold=1", "--opt-threshold=0"][..], "opt"),
    ] {
        let mut args = vec!["run", "--trace", "--stats"];
        args.extend_from_slice(flags);
        args.push(&prog);
        let out = jitvm(&args);
        assert_eq!(out.status, Some(0), "{}", out.stderr);
        assert_eq!(out.stdout, b"14999995\n");
        let entry = format!("osr entry work at instruction 0: {tier}");
        assert!(out.stderr.contains(&entry), "no `{entry}`: {}", out.stderr);
        assert!(
            out.stderr.contains("osr work: the interpreter's frame enters native code at instruction 0 with 3 locals and 0 stack values"),
            "{}",
            out.stderr
        );
        let row = out
            .stderr
            .lines()
            .find(|l| l.starts_with("work "))
            .unwrap_or_else(|| panic!("{}", out.stderr));
        assert_eq!(
            row.split_whitespace().last(),
            Some("1"),
            "one transfer: {row}"
        );
        let calls: u64 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert_eq!(calls, 1, "{row}");
    }
}

#[test]
fn the_interpreter_alone_never_replaces_a_frame() {
    let out = jitvm(&["run", "--tier=interp", "--stats", &long_loop()]);
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    let row = out.stderr.lines().find(|l| l.starts_with("work ")).unwrap();
    assert_eq!(row.split_whitespace().last(), Some("0"), "{row}");
    assert!(row.contains(" 4999999 "), "every back-edge counted: {row}");
}

/// Forty functions that get hot (so the compile thread is busy tiering them up, waiting for
/// the dispatch lock in each commit) while `main` patches in a loop.
fn patching_while_tiering() -> String {
    let mut text = String::from("func a(x)\n  load x\n  push 1\n  add\n  ret\nend\n");
    text += "func b(x)\n  load x\n  push 2\n  add\n  ret\nend\n";
    for k in 0..40 {
        text += &format!(
            "func w{k}(n)\n  local i\nloop:\n  load i\n  push 1\n  add\n  dup\n  store i\n  \
             load n\n  lt\n  jnz loop\n  load i\n  ret\nend\n"
        );
    }
    text += "func main()\n  local k\nagain:\n";
    for k in 0..40 {
        text += &format!("  push 20\n  call w{k}\n  pop\n");
    }
    text += "  patch a b\n  load k\n  push 1\n  add\n  dup\n  store k\n  push 3000\n  lt\n  \
             jnz again\n  push 1\n  call a\n  print\n  push 0\n  ret\nend\n";
    text
}

#[test]
fn a_failed_patch_commit_ends_the_run_with_status_1_even_with_stats_and_tier_ups_in_flight() {
    if !NATIVE {
        return;
    }
    let dir = std::env::temp_dir().join(format!("jitvm-patch-fail-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("patching.bc");
    std::fs::write(&file, patching_while_tiering()).unwrap();
    let file = file.display().to_string();
    let mut failed_patches = 0;
    for n in [4, 8, 16, 32, 64, 128] {
        let n = n.to_string();
        let args = [
            "run",
            "--stats",
            "--baseline-threshold=1",
            "--opt-threshold=1",
            "--fail-serialization-after",
            &n,
            &file,
        ];
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_jitvm"));
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        // Generous for a loaded machine; the hang this guards against never ended at all.
        let out = run_command(&binary, &args, Duration::from_secs(120)).unwrap();
        assert!(
            !out.timed_out,
            "failure after {n}: the exit hung\n{}",
            out.stderr
        );
        if out.stderr.contains("error: cannot patch") {
            assert_eq!(out.status, Some(1), "{}", out.stderr);
            failed_patches += 1;
        } else {
            // The failure hit a tier-up's commit instead: the batch is given up, the run
            // goes on.
            assert_eq!(out.status, Some(0), "{}", out.stderr);
            assert_eq!(out.stdout, b"3\n", "{}", out.stderr);
        }
    }
    assert!(
        failed_patches >= 3,
        "most failures hit a patch: {failed_patches} of 6"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
