//! The command line: subcommands, exit statuses and messages.

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
    let out = jitvm(&["run", "--stats", &prog]);
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
            .map(|n| n.parse().unwrap())
            .collect()
    };
    assert_eq!(row("fib"), [21891, 0]);
    assert_eq!(row("main"), [1, 4999]);
}

#[test]
fn output_survives_a_closed_pipe() {
    use std::process::{Command, Stdio};
    let prog = temp_file(
        "chatty.bc",
        "func main()\n local i\nloop:\n load i\n print\n load i\n push 1\n add\n dup\n store i\n push 200000\n lt\n jnz loop\n push 0\n ret\nend\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_jitvm"))
        .args(["run", &prog])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
