//! Running, timing and checking: each run is one whole process, timed from spawn to exit
//! with a monotonic clock, and its exit status and stdout are checked before its time is
//! kept. Times of whole processes are what a user of `jitvm run` waits for: start-up,
//! parsing, compiling and tiering up count, as they do for the peers.

use std::fmt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Instant;

use crate::commands::{Command, Kind};
use crate::programs::Program;

/// A run whose exit status or output was not the expected one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The command line, for the message.
    pub command: String,
    /// Why: the exit status, or a line-by-line diff of stdout (`-` expected, `+` printed).
    pub problem: String,
    /// The end of stderr, which usually says what went wrong.
    pub stderr: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "`{}`: {}", self.command, self.problem)?;
        if !self.stderr.is_empty() {
            writeln!(f, "its stderr ends:")?;
            for line in self.stderr.lines() {
                writeln!(f, "  | {line}")?;
            }
        }
        Ok(())
    }
}

/// How many bytes of stderr a mismatch keeps: enough for a trap message and a backtrace.
const STDERR_TAIL: usize = 2000;

/// Checks one run's exit status and stdout against `expected`, exactly (byte for byte: a
/// missing final newline is a difference too).
pub fn check(command: &str, expected: &str, output: &Output) -> Result<(), Mismatch> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let problem = if !output.status.success() {
        match output.status.code() {
            Some(code) => format!("exited with status {code} instead of 0"),
            None => format!("was ended by {}", output.status),
        }
    } else if stdout != expected {
        format!(
            "stdout differs from the expected output:\n{}",
            diff(expected, &stdout)
        )
    } else {
        return Ok(());
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    let start = stderr.len().saturating_sub(STDERR_TAIL);
    let start = (start..stderr.len())
        .find(|&i| stderr.is_char_boundary(i))
        .unwrap_or(0);
    Err(Mismatch {
        command: command.to_string(),
        problem,
        stderr: stderr[start..].trim_end().to_string(),
    })
}

/// A line-by-line diff of two short outputs: lines that agree are shown with two spaces,
/// differing lines as `- expected` and `+ actual`. The outputs are a few numbers, so
/// comparing position by position says everything an edit script would.
pub fn diff(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (
        expected.split_inclusive('\n').collect(),
        actual.split_inclusive('\n').collect(),
    );
    let shown = |line: &str| match line.strip_suffix('\n') {
        Some(l) => l.to_string(),
        None => format!("{line}   (no newline at the end)"),
    };
    let mut out = String::new();
    for i in 0..e.len().max(a.len()) {
        match (e.get(i), a.get(i)) {
            (Some(x), Some(y)) if x == y => out += &format!("    {}\n", shown(x)),
            (x, y) => {
                if let Some(x) = x {
                    out += &format!("  - {}\n", shown(x));
                }
                if let Some(y) = y {
                    out += &format!("  + {}\n", shown(y));
                }
            }
        }
    }
    if a.is_empty() {
        out += "  (nothing was printed)\n";
    }
    out
}

/// Runs `command` once from `root` with stdin closed, returning its wall-clock seconds, or
/// why the run does not count.
pub fn run_once(command: &Command, root: &Path, expected: &str) -> Result<f64, Mismatch> {
    let shown = command.display(root);
    let start = Instant::now();
    let output = std::process::Command::new(&command.program)
        .args(&command.args)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    let seconds = start.elapsed().as_secs_f64();
    let output = output.map_err(|e| Mismatch {
        command: shown.clone(),
        problem: format!("cannot be started: {e}"),
        stderr: String::new(),
    })?;
    check(&shown, expected, &output)?;
    Ok(seconds)
}

/// Every kept time of one program's commands, and the runs that failed.
#[derive(Debug, Default)]
pub struct Measured {
    /// Per command that ran, in the report's order: its seconds, one per round it passed.
    pub times: Vec<(Kind, Vec<f64>)>,
    /// Commands that failed a check, with the first failure. A failed command is not run
    /// again for this program: one wrong answer is enough to know it is wrong.
    pub failures: Vec<(Kind, Mismatch)>,
}

/// Runs `commands` for `program` for `rounds` rounds, each round running every command
/// once in order, so that a change in the machine's load during the measurement (another
/// build starting, the CPU clocking down) falls on every command alike instead of on
/// whichever ran at that moment. `progress` gets each round's line.
pub fn measure(
    program: &Program,
    commands: &[Command],
    rounds: usize,
    root: &Path,
    mut progress: impl FnMut(&str),
) -> Measured {
    let mut measured = Measured {
        times: commands.iter().map(|c| (c.kind, Vec::new())).collect(),
        failures: Vec::new(),
    };
    for round in 1..=rounds {
        let mut line = format!("{} round {round}/{rounds}:", program.name);
        for (i, command) in commands.iter().enumerate() {
            if measured.failures.iter().any(|(k, _)| *k == command.kind) {
                continue;
            }
            match run_once(command, root, &program.expected) {
                Ok(seconds) => {
                    measured.times[i].1.push(seconds);
                    line += &format!("  {} {seconds:.3}s", command.kind.label());
                }
                Err(mismatch) => {
                    line += &format!("  {} FAILED", command.kind.label());
                    measured.failures.push((command.kind, mismatch));
                }
            }
        }
        progress(&line);
    }
    measured
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    fn output(code: i32, stdout: &str, stderr: &str) -> Output {
        Output {
            // A status as `wait` reports it: the exit code in the high byte.
            status: ExitStatus::from_raw(code << 8),
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_run_that_prints_the_expected_output_and_exits_0_passes() {
        assert_eq!(check("c", "1\n2\n", &output(0, "1\n2\n", "noise")), Ok(()));
    }

    #[test]
    fn a_run_whose_output_differs_from_the_peer_is_reported() {
        let err = check(
            "jitvm run --tier opt fib.bc",
            "9227465\n",
            &output(0, "9227466\n", ""),
        )
        .unwrap_err();
        assert_eq!(err.command, "jitvm run --tier opt fib.bc");
        assert!(
            err.problem.contains("- 9227465") && err.problem.contains("+ 9227466"),
            "{}",
            err.problem
        );
        let shown = err.to_string();
        assert!(shown.contains("jitvm run --tier opt fib.bc"), "{shown}");
    }

    #[test]
    fn a_run_that_exits_nonzero_is_reported_with_its_stderr_even_if_its_output_matches() {
        let err = check(
            "c",
            "1\n",
            &output(1, "1\n", "error: trap: stack overflow\n"),
        )
        .unwrap_err();
        assert!(
            err.problem.contains("status 1 instead of 0"),
            "{}",
            err.problem
        );
        assert_eq!(err.stderr, "error: trap: stack overflow");
    }

    #[test]
    fn a_missing_final_newline_is_a_difference() {
        let err = check("c", "1\n", &output(0, "1", "")).unwrap_err();
        assert!(
            err.problem.contains("no newline at the end"),
            "{}",
            err.problem
        );
    }

    #[test]
    fn the_diff_shows_agreeing_lines_and_each_side_of_a_differing_one() {
        assert_eq!(diff("1\n2\n", "1\n3\n4\n"), "    1\n  - 2\n  + 3\n  + 4\n");
        assert_eq!(diff("1\n", ""), "  - 1\n  (nothing was printed)\n");
    }

    #[test]
    fn measuring_keeps_one_time_per_round_and_stops_running_a_command_once_it_fails() {
        let program = Program {
            name: "p".into(),
            bc: "p.bc".into(),
            c: "p.c".into(),
            lua: "p.lua".into(),
            what: String::new(),
            expected: "7\n".into(),
        };
        let sh = |script: &str| Command {
            kind: Kind::Gcc,
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
        };
        let good = sh("echo 7");
        let bad = Command {
            kind: Kind::Lua54,
            ..sh("echo 8")
        };
        let mut lines = Vec::new();
        let measured = measure(&program, &[good, bad], 3, Path::new("/"), |l| {
            lines.push(l.to_string())
        });
        assert_eq!(measured.times[0].1.len(), 3);
        assert!(measured.times[1].1.is_empty());
        assert_eq!(measured.failures.len(), 1);
        assert_eq!(measured.failures[0].0, Kind::Lua54);
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].contains("lua5.4 FAILED") && !lines[1].contains("lua5.4"),
            "{lines:?}"
        );
    }
}
