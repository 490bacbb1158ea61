//! Runs a folder of `.bc` conformance cases against a `jitvm` binary: the Rust twin of
//! `shared/conformance/run.py`, so `cargo test` can run the project's copy in every tier.
//!
//! A case `NAME.bc` runs as `JITVM run EXTRA... [NAME.args] NAME.bc` and must show
//! `NAME.out` exactly on stdout (none: empty), exit with `NAME.status` (none: 0), have every
//! non-empty line of `NAME.err` somewhere in stderr, finish within the timeout, not die by a
//! signal, and never print a Rust panic.

pub mod rng;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One conformance case and what it expects.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub file: PathBuf,
    pub args: Vec<String>,
    pub stdout: Vec<u8>,
    pub status: i32,
    pub stderr_lines: Vec<String>,
}

/// Every `*.bc` case in `dir`, sorted by name.
pub fn discover(dir: &Path) -> std::io::Result<Vec<Case>> {
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("bc") {
            continue;
        }
        let read = |ext: &str| std::fs::read(path.with_extension(ext)).ok();
        let text = |ext: &str| read(ext).map(|b| String::from_utf8_lossy(&b).into_owned());
        cases.push(Case {
            name: path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            args: text("args").map_or_else(Vec::new, |a| {
                a.split_whitespace().map(String::from).collect()
            }),
            stdout: read("out").unwrap_or_default(),
            status: text("status")
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
            stderr_lines: text("err").map_or_else(Vec::new, |e| {
                e.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(String::from)
                    .collect()
            }),
            file: path,
        });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(cases)
}

/// What one run of the binary produced.
#[derive(Debug)]
pub struct Outcome {
    pub status: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub timed_out: bool,
}

/// Runs `binary ARGS...` with stdin closed, killing it after `timeout`.
pub fn run_command(binary: &Path, args: &[String], timeout: Duration) -> std::io::Result<Outcome> {
    let mut child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Drain both pipes on their own threads so a chatty child never blocks on a full pipe.
    let mut out_pipe = child.stdout.take().expect("piped");
    let mut err_pipe = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if start.elapsed() > timeout => {
                timed_out = true;
                let _ = child.kill();
                break child.wait();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(e);
            }
        }
    };
    // Joined on every path, an error too: a dropped handle would detach a reader that may be
    // exiting at that moment (see the VM's `threads::Reaper`).
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let status = status?;
    use std::os::unix::process::ExitStatusExt;
    Ok(Outcome {
        status: status.code(),
        signal: status.signal(),
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        timed_out,
    })
}

/// Runs one case; `Err` says how it failed.
pub fn check_case(
    binary: &Path,
    case: &Case,
    extra: &[&str],
    timeout: Duration,
) -> Result<(), String> {
    let mut args = vec!["run".to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(case.args.iter().cloned());
    args.push(case.file.display().to_string());
    let out = run_command(binary, &args, timeout)
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    if out.timed_out {
        return Err(format!("no answer in {timeout:?}"));
    }
    if let Some(sig) = out.signal {
        return Err(format!("killed by signal {sig}"));
    }
    if out.stderr.contains("panicked at") {
        return Err(format!("Rust panic on stderr: {}", out.stderr.trim()));
    }
    if out.status != Some(case.status) {
        return Err(format!(
            "exit status {:?}, expected {}; stderr: {:?}",
            out.status,
            case.status,
            truncate(&out.stderr, 300)
        ));
    }
    if out.stdout != case.stdout {
        return Err(format!(
            "stdout differs: got {:?}, expected {:?}",
            truncate(&String::from_utf8_lossy(&out.stdout), 200),
            truncate(&String::from_utf8_lossy(&case.stdout), 200)
        ));
    }
    if let Some(missing) = case
        .stderr_lines
        .iter()
        .find(|l| !out.stderr.contains(l.as_str()))
    {
        return Err(format!(
            "stderr lacks {missing:?}; stderr: {:?}",
            truncate(&out.stderr, 300)
        ));
    }
    Ok(())
}

/// Runs every case in `dir`; returns one line per failure.
pub fn check_dir(
    binary: &Path,
    dir: &Path,
    extra: &[&str],
    timeout: Duration,
) -> std::io::Result<(usize, Vec<String>)> {
    let cases = discover(dir)?;
    let failures = cases
        .iter()
        .filter_map(|case| {
            check_case(binary, case, extra, timeout)
                .err()
                .map(|why| format!("FAIL {}: {why}", case.name))
        })
        .collect();
    Ok((cases.len(), failures))
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}
