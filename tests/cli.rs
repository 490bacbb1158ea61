//! The command line: subcommands, exit statuses and messages.

use jitvm::TierChoice as Tier;
use jitvm_conformance::{run_command, Outcome};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn jitvm(args: &[&str]) -> Outcome {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_jitvm"));
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    run_command(&binary, &args, Duration::from_secs(60)).unwrap()
}

fn case(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conformance")
        .join(name)
        .display()
        .to_string()
}

fn temp_file(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("jitvm-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn version_and_help() {
    let out = jitvm(&["--version"]);
    assert_eq!(out.status, Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("jitvm {}", env!("CARGO_PKG_VERSION"))
    );
    let out = jitvm(&["--help"]);
    assert_eq!(out.status, Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["run", "check", "dis"] {
        assert!(help.contains(word), "{help}");
    }
    let out = jitvm(&["run", "--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("--max-depth"));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["frobnicate"][..],
        &["run"][..],
        &["run", "--tier", "turbo", "x.bc"][..],
        &["run", "--max-depth", "0", "x.bc"][..],
        &["run", "--max-depth", "1000001", "x.bc"][..],
        &["run", "--max-depth", "-5", "x.bc"][..],
    ] {
        let out = jitvm(args);
        assert_eq!(out.status, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn missing_file_names_the_file() {
    for sub in ["run", "check", "dis"] {
        let out = jitvm(&[sub, "/nonexistent/prog.bc"]);
        assert_eq!(out.status, Some(2));
        assert!(
            out.stderr
                .starts_with("/nonexistent/prog.bc:1:1: error: cannot read the file"),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn check_reports_errors_with_positions_and_accepts_valid_files() {
    let out = jitvm(&["check", &case("fib.bc")]);
    assert_eq!(
        (out.status, out.stdout.len(), out.stderr.as_str()),
        (Some(0), 0, "")
    );
    let bad = case("err_unknown_instr.bc");
    let out = jitvm(&["check", &bad]);
    assert_eq!(out.status, Some(2));
    assert_eq!(
        out.stderr,
        format!("{bad}:3:3: error: unknown instruction `frobnicate`\n")
    );
}

#[test]
fn main_is_needed_only_to_run() {
    let lib = temp_file("lib.bc", "func helper()\n  push 0\n  ret\nend\n");
    assert_eq!(jitvm(&["check", &lib]).status, Some(0));
    let out = jitvm(&["run", &lib]);
    assert_eq!(out.status, Some(2));
    assert!(
        out.stderr
            .starts_with(&format!("{lib}:1:1: error: no function `main`")),
        "{}",
        out.stderr
    );
    let with_params = temp_file("params.bc", "\nfunc main(x)\n  load x\n  ret\nend\n");
    let out = jitvm(&["run", &with_params]);
    assert_eq!(out.status, Some(2));
    assert!(
        out.stderr.starts_with(&format!(
            "{with_params}:2:6: error: `main` must take no parameters"
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn dis_shows_offsets_and_heights() {
    let out = jitvm(&["dis", &case("fib.bc")]);
    assert_eq!(out.status, Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("func fib(n)"), "{text}");
    assert!(
        text.contains("recurse:\n  0006    [   0]  load n\n"),
        "{text}"
    );
    assert!(text.contains("  0009    [   1]  call fib\n"), "{text}");
    let lowered = jitvm(&["dis", "--lowered", &case("fib.bc")]);
    assert!(String::from_utf8_lossy(&lowered.stdout).contains("R[1] := call #0(R[1], ...)"));
}

#[test]
fn stats_count_every_call_and_back_edge() {
    // fib(20) makes C(20) calls where C(n) = 1 + C(n-1) + C(n-2), C(0) = C(1) = 1: 21891.
    let prog = temp_file(
        "fib20.bc",
        "func fib(n)\n load n\n push 2\n lt\n jz r\n load n\n ret\nr:\n load n\n push 1\n sub\n call fib\n load n\n push 2\n sub\n call fib\n add\n ret\nend\n\
         func main()\n local i\nloop:\n load i\n push 1\n add\n dup\n store i\n push 5000\n lt\n jnz loop\n push 20\n call fib\n print\n push 0\n ret\nend\n",
    );
    // The interpreter counts every call; under auto, counting stops in optimized code.
    let out = jitvm(&["run", "--tier=interp", "--stats", &prog]);
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, b"6765\n");
    let row = |name: &str| -> Vec<u64> {
        let line = out
            .stderr
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{}", out.stderr));
        line.split_whitespace()
            .skip(1)
            .take(2)
            .map(|n| n.parse().unwrap())
            .collect()
    };
    assert_eq!(row("fib"), [21891, 0]);
    assert_eq!(row("main"), [1, 4999]);
}

/// `jitvm run PROG` with stdout and stderr piped to this test.
fn spawn_run(prog: &str) -> std::process::Child {
    use std::process::{Command, Stdio};
    Command::new(env!("CARGO_BIN_EXE_jitvm"))
        .args(["run", prog])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn output_survives_a_closed_pipe() {
    let prog = temp_file(
        "chatty.bc",
        "func main()\n local i\nloop:\n load i\n print\n load i\n push 1\n add\n dup\n store i\n push 200000\n lt\n jnz loop\n push 0\n ret\nend\n",
    );
    let mut child = spawn_run(&prog);
    drop(child.stdout.take()); // the reader goes away, as with `| head -1`
    let out = child.wait_with_output().unwrap();
    // A closed pipe ends the run silently, with the status a shell shows for SIGPIPE.
    assert_eq!(
        out.status.code(),
        Some(141),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

/// Runs `script` under `sh` with `$0` the `jitvm` binary, so a test can redirect and limit
/// it as a user would.
fn shell(script: &str) -> std::process::Output {
    std::process::Command::new("sh")
        .args(["-c", script, env!("CARGO_BIN_EXE_jitvm")])
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn input_past_the_size_limit_is_refused_having_read_no_more_than_the_limit() {
    let limit_mib = jitvm::MAX_INPUT_BYTES >> 20;
    let message = format!(":1:1: error: the program is larger than {limit_mib} MiB");
    // With 512 MiB of address space, reading /dev/zero to its end fails by an abort.
    for sub in ["check", "run", "dis"] {
        let start = std::time::Instant::now();
        let out = shell(&format!("ulimit -v 524288; exec \"$0\" {sub} /dev/zero"));
        assert_eq!(out.status.code(), Some(2), "{sub}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).starts_with(&format!("/dev/zero{message}")),
            "{}",
            text(&out.stderr)
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{sub} took {:?}",
            start.elapsed()
        );
        assert!(out.stdout.is_empty());
    }
    // A file one byte past the limit is refused; one at the limit is read (and parsed).
    let dir = std::env::temp_dir().join(format!("jitvm-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, size) in [
        ("over.bc", jitvm::MAX_INPUT_BYTES + 1),
        ("at.bc", jitvm::MAX_INPUT_BYTES),
    ] {
        let path = dir.join(name);
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(size as u64).unwrap(); // sparse: all NUL bytes
        let path = path.display().to_string();
        let out = jitvm(&["check", &path]);
        assert_eq!(out.status, Some(2), "{}", out.stderr);
        let refused = out.stderr.starts_with(&format!("{path}{message}"));
        assert_eq!(refused, name == "over.bc", "{}", out.stderr);
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn error_messages_quote_tokens_short_and_with_invisible_characters_escaped() {
    let long = "9".repeat(10_000_000);
    let nuls = "\0".repeat(100_000);
    let source = format!(
        "func main()\n  fr\u{a0}ob\n  push 1\u{b}\n  {nuls}\n  push 2\r3\n  push {long}\n  push 0\n  ret\nend\n"
    );
    let prog = temp_file("invisible.bc", &source);
    let out = jitvm(&["check", &prog]);
    assert_eq!(out.status, Some(2));
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{prog}:2:3: error: unknown instruction `fr\\u{{a0}}ob`"),
            format!("{prog}:3:8: error: malformed integer literal `1\\x0b`"),
            format!(
                "{prog}:4:3: error: unknown instruction `{}...`",
                "\\0".repeat(32)
            ),
            format!("{prog}:5:8: error: malformed integer literal `2\\r3`"),
            format!(
                "{prog}:6:8: error: integer literal `{}...` does not fit in i64",
                "9".repeat(32)
            ),
        ]
    );
}

#[test]
fn a_run_whose_output_cannot_be_written_fails_with_a_message() {
    let prog = temp_file(
        "hello.bc",
        "func main()\n  push 42\n  print\n  push 0\n  ret\nend\n",
    );
    let out = shell(&format!("exec \"$0\" run {prog} > /dev/full"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "error: cannot write output: No space left on device (os error 28)\n"
    );
    let out = shell(&format!("exec \"$0\" dis {prog} > /dev/full"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).starts_with("error: cannot write output: "));
}

#[test]
fn a_run_printing_forever_into_a_closed_pipe_stops_at_once() {
    use std::io::BufRead;
    let prog = temp_file(
        "forever.bc",
        "func main()\n local i\nloop:\n load i\n print\n load i\n push 1\n add\n store i\n jmp loop\nend\n",
    );
    let mut child = spawn_run(&prog);
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap(); // as `| head -1` does, then the pipe closes
    assert_eq!(first, "0\n");
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("still running 20 s after its reader went away");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(status.code(), Some(141));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(stderr, "");
}

#[test]
fn stats_are_printed_when_the_program_traps() {
    let prog = temp_file(
        "trap_stats.bc",
        "func f()\n push 1\n ret\nend\nfunc main()\n call f\n push 0\n div\n ret\nend\n",
    );
    let out = jitvm(&["run", "--stats", &prog]);
    assert_eq!(out.status, Some(1));
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines[0], "error: trap: division by zero");
    let counts = |name: &str| {
        let row = lines
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{lines:?}"));
        row.split_whitespace().skip(1).take(2).collect::<Vec<_>>()
    };
    assert_eq!(counts("f "), ["1", "0"]);
    assert_eq!(counts("main "), ["1", "0"]);
}

#[test]
fn help_says_what_each_exit_status_means() {
    for args in [&["--help"][..], &["run", "--help"][..]] {
        let out = jitvm(args);
        assert_eq!(out.status, Some(0));
        let help = text(&out.stdout);
        assert!(help.contains("Exit status:"), "{help}");
        for status in ["0 ", "1 ", "2 ", "141 "] {
            assert!(
                help.lines().any(|l| l.trim_start().starts_with(status)),
                "no line for status {status}: {help}"
            );
        }
        let limit = format!("at most {} MiB", jitvm::MAX_INPUT_BYTES >> 20);
        assert!(help.contains(&limit), "{help}");
        assert!(help.contains("`-`"), "{help}");
    }
}

#[test]
fn a_dash_reads_the_program_from_standard_input() {
    let out =
        shell("printf 'func main()\\n push 7\\n print\\n push 0\\n ret\\nend\\n' | \"$0\" run -");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"7\n");
    let out = shell("printf 'func main()\\n  frob\\nend\\n' | \"$0\" check -");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "<stdin>:2:3: error: unknown instruction `frob`\n"
    );
    let out = shell("printf 'func main()\\n push 0\\n ret\\nend\\n' | \"$0\" dis -");
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("func main()"));
    let out = shell("ulimit -v 524288; exec \"$0\" check - < /dev/zero");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("<stdin>:1:1: error: the program is larger than"));
}

#[test]
fn the_tier_option_takes_exactly_the_engines_tiers() {
    use clap::ValueEnum;
    let names: Vec<String> = Tier::value_variants()
        .iter()
        .map(|t| t.to_possible_value().unwrap().get_name().to_string())
        .collect();
    let expected: Vec<String> = Tier::ALL.iter().map(|t| t.to_string()).collect();
    assert_eq!(names, expected);
    let help = text(&jitvm(&["run", "--help"]).stdout);
    for tier in Tier::ALL {
        assert!(help.contains(&format!("{tier}:")), "{help}");
        let out = jitvm(&["run", "--tier", &tier.to_string(), "/nonexistent.bc"]);
        assert_eq!(out.status, Some(2));
        assert!(!out.stderr.contains("invalid value"), "{}", out.stderr);
    }
}

#[test]
fn dis_native_interleaves_bytecode_and_machine_code_with_patch_sites_marked() {
    let out = jitvm(&["dis", "--native", &case("fib.bc")]);
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    let text = String::from_utf8_lossy(&out.stdout);
    if !cfg!(target_arch = "x86_64") {
        return;
    }
    assert!(text.contains("func fib"), "{text}");
    // The bytecode line, then the machine code it became.
    let call = text.find("call fib").expect("the bytecode call");
    let site = text[call..]
        .find("call    qword ptr [rax]")
        .expect("the call through the slot");
    assert!(text[call + site..]
        .lines()
        .next()
        .unwrap()
        .contains("patch site: dispatch slot"));
    let out = jitvm(&["dis", "--native", "--tier", "interp", &case("fib.bc")]);
    assert_eq!(out.status, Some(2));
    assert!(out.stderr.contains("no native code"), "{}", out.stderr);
}

#[test]
fn func_tier_picks_a_tier_per_function_and_refuses_what_it_cannot_run() {
    let fib = case("fib.bc");
    for args in [
        &["run", "--func-tier=fib=baseline", &fib][..],
        &["run", "--tier=baseline", "--func-tier=main=interp", &fib][..],
        &["run", "--func-tier=fib=opt", &fib][..],
        &["run", "--tier=opt", "--func-tier=main=baseline", &fib][..],
    ] {
        let out = jitvm(args);
        assert_eq!(out.status, Some(0), "{args:?}: {}", out.stderr);
        assert!(String::from_utf8_lossy(&out.stdout).ends_with("75025\n"));
    }
    for (args, says) in [
        (
            &["run", "--func-tier=nope=baseline", &fib][..],
            "no function `nope`",
        ),
        (&["run", "--func-tier=fib", &fib][..], "NAME=TIER"),
        (
            &["run", "--func-tier=fib=auto", &fib][..],
            "interp, baseline or opt",
        ),
    ] {
        let out = jitvm(args);
        assert_eq!(out.status, Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn dis_native_tier_opt_marks_the_calls_to_call_stubs_as_patch_sites() {
    let out = jitvm(&["dis", "--native", "--tier", "opt", &case("fib.bc")]);
    if !cfg!(target_arch = "x86_64") {
        assert_eq!(out.status, Some(2));
        return;
    }
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("func fib    ; #0: opt code at"), "{text}");
    let site = text
        .lines()
        .find(|l| l.contains("patch site: call stub of function #0"))
        .expect("a marked call");
    assert!(site.contains("call    0x"), "a direct call: {site}");
}

#[test]
fn dis_ir_prints_each_functions_cranelift_ir_before_and_after_optimization() {
    let out = jitvm(&["dis", "--ir", &case("fib.bc")]);
    if !cfg!(target_arch = "x86_64") {
        assert_eq!(out.status, Some(2));
        return;
    }
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["fib", "main"] {
        assert!(text.contains(&format!("; func {name}: before optimization")));
        assert!(text.contains(&format!("; func {name}: after optimization")));
    }
    // Calls to fib's call stub (`u0:0`) and guarded sites whose copies were inlined (`u1:N`).
    assert!(text.contains("= colocated u0:0 "), "{text}");
    assert!(text.contains("= colocated u1:0 "), "{text}");
    assert!(text.contains("system_v"));
}

#[test]
fn stats_report_each_jit_compiled_functions_compile_time_in_total_and_per_instruction() {
    let fib = case("fib.bc");
    let out = jitvm(&[
        "run",
        "--tier=opt",
        "--func-tier=main=baseline",
        "--stats",
        &fib,
    ]);
    if !cfg!(target_arch = "x86_64") {
        assert_eq!(out.status, Some(2));
        return;
    }
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("compile times (JIT tiers):"),
        "{}",
        out.stderr
    );
    for (name, tier) in [("fib", "opt"), ("main", "baseline")] {
        let line = out
            .stderr
            .lines()
            .find(|l| l.trim_start().starts_with(name) && l.contains(" us/instr"))
            .unwrap_or_else(|| panic!("no compile time for {name}: {}", out.stderr));
        assert!(line.contains(tier), "{line}");
    }
}
