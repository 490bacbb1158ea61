//! The real tools see JIT code: `perf record` + `perf inject --jit` + `perf report` name the
//! JIT functions of a run with `--perf jitdump`, and gdb's backtraces name JIT frames with
//! their `.bc` lines under `--gdb`, in both native tiers and with interpreted frames between.
//! `.ci/run` installs perf and gdb and sets `JITVM_REQUIRE_TOOLS`; a test skips (saying why)
//! only where the kernel refuses `perf_event_open` or ptrace, or, without that variable, where
//! the tool is not installed.
#![cfg(target_arch = "x86_64")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn jitvm() -> &'static str {
    env!("CARGO_BIN_EXE_jitvm")
}

fn program(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tools")
        .join(name)
}

/// A fresh directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jitvm-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether `tool` runs here; CI installs it, so there it must.
fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("JITVM_REQUIRE_TOOLS").is_none(),
            "{tool} is missing, and JITVM_REQUIRE_TOOLS is set (.ci/run installs it)"
        );
        eprintln!("skipped: {tool} is not installed");
    }
    found
}

/// `perf record` of `args`, in `dir`; `None` (the reason printed) where the kernel refuses.
fn perf_record(dir: &Path, args: &[&str]) -> Option<Output> {
    let out = Command::new("perf")
        .current_dir(dir)
        .args([
            "record",
            "-k",
            "1",
            "-e",
            "cpu-clock",
            "-o",
            "perf.data",
            "--",
        ])
        .arg(jitvm())
        .args(args)
        .output()
        .unwrap();
    let said = text(&out);
    if !out.status.success()
        && (said.contains("perf_event_open") || said.contains("perf_event_paranoid"))
    {
        eprintln!("skipped: the kernel refuses perf_event_open:\n{said}");
        return None;
    }
    assert!(out.status.success(), "perf record failed:\n{said}");
    Some(out)
}

/// Per symbol line of `perf report`: (percent, shared object, symbol).
fn report_rows(report: &str) -> Vec<(f64, String, String)> {
    report
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let pct: f64 = words.next()?.strip_suffix('%')?.parse().ok()?;
            let dso = words.next()?.to_string();
            let rest: Vec<&str> = words.collect();
            // `[.] symbol words...`
            let sym = rest
                .iter()
                .skip_while(|w| w.starts_with('[') && w.ends_with(']'))
                .copied();
            Some((pct, dso, sym.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

/// Where a sample in JIT code lands when perf cannot name it: the anonymous code mapping.
fn is_jit_dso(dso: &str) -> bool {
    dso.starts_with("jitted-")
        || dso.contains("anon")
        || dso.contains("/dev/zero")
        || dso == "[unknown]"
        || dso.starts_with("[JIT]")
}

#[test]
fn perf_inject_names_the_jit_functions_of_a_jitdump_run_with_their_tiers() {
    if !have("perf") {
        return;
    }
    let dir = scratch("perf-jitdump");
    let prog = program("hot.bc");
    let Some(_) = perf_record(
        &dir,
        &[
            "run",
            "--perf",
            "jitdump",
            "--tier",
            "baseline",
            prog.to_str().unwrap(),
        ],
    ) else {
        return;
    };
    let dumps: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".dump"))
        .collect();
    assert_eq!(dumps.len(), 1, "one jit-PID.dump in {}", dir.display());
    let inject = Command::new("perf")
        .current_dir(&dir)
        .args(["inject", "--jit", "-i", "perf.data", "-o", "perf.jit.data"])
        .output()
        .unwrap();
    assert!(inject.status.success(), "perf inject:\n{}", text(&inject));
    let report = Command::new("perf")
        .current_dir(&dir)
        .args([
            "report",
            "-i",
            "perf.jit.data",
            "--stdio",
            "--sort",
            "dso,sym",
        ])
        .output()
        .unwrap();
    assert!(report.status.success(), "perf report:\n{}", text(&report));
    let report = String::from_utf8_lossy(&report.stdout).to_string();
    let rows = report_rows(&report);
    let jit: Vec<_> = rows.iter().filter(|(_, dso, _)| is_jit_dso(dso)).collect();
    let total: f64 = jit.iter().map(|r| r.0).sum();
    let named: f64 = jit
        .iter()
        .filter(|(_, _, sym)| sym.starts_with("jitvm:"))
        .map(|r| r.0)
        .sum();
    assert!(
        total > 20.0,
        "the run spends its time in JIT code:\n{report}"
    );
    assert!(
        named >= 0.9 * total,
        "{named:.1}% of {total:.1}% in JIT code named jitvm:...:\n{report}"
    );
    for f in ["jitvm:fib [baseline]", "jitvm:count [baseline]"] {
        assert!(report.contains(f), "{f} in\n{report}");
    }
    // perf annotate: the function's instructions, its `.bc` lines between them.
    let annotate = Command::new("perf")
        .current_dir(&dir)
        .args([
            "annotate",
            "-i",
            "perf.jit.data",
            "--stdio",
            "jitvm:count [baseline]",
        ])
        .output()
        .unwrap();
    let annotate = String::from_utf8_lossy(&annotate.stdout).to_string();
    assert!(annotate.contains("Disassembly of jitted-"), "{annotate}");
    for (what, text) in [
        ("its func line", "func count(n)"),
        ("a loop line", "store s"),
        ("an instruction", "push   %r12"),
    ] {
        assert!(annotate.contains(text), "{what} ({text}) in\n{annotate}");
    }
    assert!(
        !annotate.contains("(bad)"),
        "only instructions, no header bytes:\n{annotate}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn perf_reads_the_perf_map_of_a_map_run() {
    if !have("perf") {
        return;
    }
    let dir = scratch("perf-map");
    let prog = program("hot.bc");
    let Some(_) = perf_record(
        &dir,
        &[
            "run",
            "--perf",
            "map",
            "--tier",
            "opt",
            prog.to_str().unwrap(),
        ],
    ) else {
        return;
    };
    let report = Command::new("perf")
        .current_dir(&dir)
        .args(["report", "-i", "perf.data", "--stdio", "--sort", "sym"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&report.stdout).to_string();
    // `count` is small and called once, so the optimizing tier inlines it into `main`.
    for f in ["jitvm:fib [opt]", "jitvm:main [opt]"] {
        assert!(report.contains(f), "{f} in\n{report}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// gdb's backtrace at the `print` callback of `frames.bc` run with `args`; `None` (the
/// reason printed) where ptrace is refused.
fn backtrace_at_print(args: &[&str]) -> Option<String> {
    let prog = program("frames.bc");
    let out = Command::new("gdb")
        .args(["-batch", "-nx"])
        .args(["-ex", "set debuginfod enabled off"])
        .args([
            "-ex",
            "break 'jitvm_jit::abi::host::print<jitvm_jit::native_thread::VmThread>'",
        ])
        .args(["-ex", "run", "-ex", "bt", "-ex", "kill"])
        .arg("--args")
        .arg(jitvm())
        .args(["run", "--gdb"])
        .args(args)
        .arg(&prog)
        .output()
        .unwrap();
    let said = text(&out);
    if said.contains("ptrace: Operation not permitted") {
        eprintln!("skipped: ptrace refused:\n{said}");
        return None;
    }
    Some(said)
}

/// The backtrace's frame lines (`#N ...`), in order.
fn frames(said: &str) -> Vec<&str> {
    said.lines().filter(|l| l.starts_with('#')).collect()
}

/// The index of the frame naming `function` at `frames.bc:line`.
fn frame_at(said: &str, function: &str, line: u32) -> usize {
    let want = format!("frames.bc:{line}");
    frames(said)
        .iter()
        .position(|f| f.contains(function) && f.contains(&want))
        .unwrap_or_else(|| panic!("no frame {function} at {want} in:\n{said}"))
}

#[test]
fn gdb_backtraces_name_baseline_frames_and_their_lines() {
    if !have("gdb") {
        return;
    }
    let Some(bt) = backtrace_at_print(&["--tier", "baseline"]) else {
        return;
    };
    let leaf = frame_at(&bt, "jitvm:leaf [baseline]", 5);
    let inner = frame_at(&bt, "jitvm:inner [baseline]", 12);
    let middle = frame_at(&bt, "jitvm:middle [baseline]", 18);
    let main = frame_at(&bt, "jitvm:main [baseline]", 24);
    assert!(leaf < inner && inner < middle && middle < main, "{bt}");
    assert!(
        frames(&bt).iter().any(|f| f.contains("start_thread")),
        "unwinds through the JIT frames to the thread's start:\n{bt}"
    );
}

#[test]
fn gdb_backtraces_name_optimized_frames_and_their_lines() {
    if !have("gdb") {
        return;
    }
    let Some(bt) = backtrace_at_print(&["--tier", "opt"]) else {
        return;
    };
    let leaf = frame_at(&bt, "jitvm:leaf [opt]", 5);
    let inner = frame_at(&bt, "jitvm:inner [opt]", 12);
    let middle = frame_at(&bt, "jitvm:middle [opt]", 18);
    assert!(leaf < inner && inner < middle, "{bt}");
    assert!(
        frames(&bt).iter().any(|f| f.contains("start_thread")),
        "{bt}"
    );
}

/// User plus system CPU time of process `pid`, in clock ticks (`proc(5)`: fields 14, 15).
fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from the `)` that ends it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The pid of the process whose command line is exactly `argv`.
fn pid_of(argv: &[String]) -> Option<i32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok())
        .find_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            (cmdline == want).then_some(pid)
        })
}

#[test]
fn gdb_interrupting_a_loop_in_jit_code_names_the_function_and_line_it_spins_in() {
    if !have("gdb") {
        return;
    }
    // A copy at a path of this test's own, so that the process is found by its command line.
    let dir = scratch("gdb-sigint");
    let prog = dir.join("spin.bc");
    std::fs::copy(program("spin.bc"), &prog).unwrap();
    let argv: Vec<String> = [
        jitvm(),
        "run",
        "--gdb",
        "--tier",
        "baseline",
        prog.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let gdb = Command::new("gdb")
        .args(["-batch", "-nx", "-ex", "set debuginfod enabled off"])
        .args([
            "-ex",
            "run",
            "-ex",
            "thread apply all bt",
            "-ex",
            "kill",
            "--args",
        ])
        .args(&argv)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the program to be running (it spins at once), then interrupt it as Ctrl-C would.
    let start = std::time::Instant::now();
    let pid = loop {
        if let Some(pid) = pid_of(&argv) {
            break Some(pid);
        }
        if start.elapsed() > std::time::Duration::from_secs(60) {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    if let Some(pid) = pid {
        // Spinning: it has run a third of a second of CPU time (its code is long published).
        while cpu_ticks(pid).is_some_and(|t| t < 33) && start.elapsed().as_secs() < 60 {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // SAFETY: a plain signal to a process this test started.
        unsafe { libc::kill(pid, libc::SIGINT) };
    }
    let out = gdb.wait_with_output().unwrap();
    let said = text(&out);
    if said.contains("ptrace: Operation not permitted") {
        eprintln!("skipped: ptrace refused:\n{said}");
        return;
    }
    assert!(
        pid.is_some(),
        "the program never started under gdb:\n{said}"
    );
    assert!(said.contains("SIGINT"), "{said}");
    let spin = said
        .lines()
        .find(|l| l.starts_with('#') && l.contains("jitvm:spin [baseline]"))
        .unwrap_or_else(|| panic!("no spin frame:\n{said}"));
    let line = spin.rsplit(':').next().unwrap().trim();
    assert!(
        ["5", "6", "7", "8", "9"].contains(&line),
        "a line of the loop: {spin}"
    );
    assert!(said.contains("jitvm:main [baseline]"), "{said}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gdb_backtraces_walk_baseline_interpreted_and_optimized_frames_together() {
    if !have("gdb") {
        return;
    }
    let tiers = [
        "--tier",
        "opt",
        "--func-tier",
        "leaf=baseline",
        "--func-tier",
        "inner=interp",
    ];
    let Some(bt) = backtrace_at_print(&tiers) else {
        return;
    };
    let leaf = frame_at(&bt, "jitvm:leaf [baseline]", 5);
    let middle = frame_at(&bt, "jitvm:middle [opt]", 18);
    let all = frames(&bt);
    // Between them: the interpreter running `inner`, entered through its stub.
    let between = &all[leaf + 1..middle];
    assert!(
        between.iter().any(|f| f.contains("jitvm:inner [interp]")),
        "the stub of interpreted inner between:\n{bt}"
    );
    assert!(
        between.iter().any(|f| f.contains("interp")),
        "interpreter frames between:\n{bt}"
    );
}
