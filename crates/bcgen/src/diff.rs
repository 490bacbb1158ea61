//! The differential check: run a module with `--tier interp` (the oracle) and with every
//! other tier setting, and compare what a user can observe.

use crate::gen::Generated;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The oracle's arguments to `jitvm run`.
pub const ORACLE_ARGS: &[&str] = &["--tier", "interp"];

/// Every other setting a module runs under, each compared with the oracle. Add a row to
/// test a new tier or tiering policy.
pub const CHECKED_TIER_ARGS: &[&[&str]] = &[
    &["--tier", "baseline"],
    &["--tier", "opt"],
    &["--tier", "auto"],
    // Everything compiled before it runs, straight to the optimizing tier.
    &[
        "--tier",
        "auto",
        "--baseline-threshold",
        "0",
        "--opt-threshold",
        "0",
    ],
    // Tier-ups and on-stack replacement at the first counted events, while the module runs.
    &[
        "--tier",
        "auto",
        "--baseline-threshold",
        "1",
        "--opt-threshold",
        "1",
    ],
    &[
        "--tier",
        "auto",
        "--baseline-threshold",
        "1",
        "--opt-threshold",
        "0",
    ],
    // Direct calls (`call rel32`), rewritten live by every tier-up and `patch`.
    &["--tier", "baseline", "--calls", "direct"],
    &["--tier", "opt", "--calls", "direct"],
    &[
        "--tier",
        "auto",
        "--calls",
        "direct",
        "--baseline-threshold",
        "1",
        "--opt-threshold",
        "1",
    ],
];

/// Generated modules run in well under a second; this only catches hangs.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// What a run showed: the exit status, stdout, and the trap line from stderr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    /// The first stderr line that starts `error: trap: `, if any.
    pub trap: Option<String>,
}

impl Observed {
    fn from_outcome(out: &jitvm_conformance::Outcome) -> Observed {
        Observed {
            status: out.status,
            stdout: out.stdout.clone(),
            trap: out
                .stderr
                .lines()
                .find(|l| l.starts_with("error: trap: "))
                .map(String::from),
        }
    }
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stdout = String::from_utf8_lossy(&self.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        write!(f, "status {:?}, trap {:?}, ", self.status, self.trap)?;
        if lines.len() > 40 {
            let tail = lines[lines.len() - 20..].join("\n");
            write!(
                f,
                "{} stdout lines, first 20:\n{}\n...\nlast 20:\n{tail}",
                lines.len(),
                lines[..20].join("\n")
            )
        } else {
            write!(f, "stdout:\n{stdout}")
        }
    }
}

/// Why a module failed the check.
#[derive(Debug)]
pub enum Failure {
    /// A tier disagreed with the oracle.
    Mismatch {
        args: Vec<String>,
        expected: Box<Observed>,
        actual: Box<Observed>,
    },
    /// A run crashed, hung, panicked or printed something no run may print (the oracle
    /// included: the generator promises valid, quick modules).
    BadRun { args: Vec<String>, why: String },
}

/// A failure with everything needed to reproduce it.
#[derive(Debug)]
pub struct Report {
    pub failure: Failure,
    pub program: String,
    /// Where the module was saved.
    pub saved: PathBuf,
    pub oracle_args: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "program:\n{}", self.program)?;
        match &self.failure {
            Failure::Mismatch {
                args,
                expected,
                actual,
            } => write!(
                f,
                "`jitvm run {}` differs from `jitvm run {}`\n--- interpreter: {expected}\n--- {}: {actual}",
                args.join(" "),
                self.oracle_args.join(" "),
                args.join(" ")
            )?,
            Failure::BadRun { args, why } => write!(f, "`jitvm run {}`: {why}", args.join(" "))?,
        }
        write!(
            f,
            "\nsaved as {} (reproduce: jitvm run ARGS {0}, ARGS as above)",
            self.saved.display()
        )
    }
}

/// The oracle's arguments for `module`.
pub fn oracle_args(module: &Generated) -> Vec<String> {
    with_module_args(ORACLE_ARGS, module)
}

/// The argument lists a module runs under besides the oracle: [`CHECKED_TIER_ARGS`], then
/// one run with each function in the tier the generator chose for it.
pub fn checked_args(module: &Generated) -> Vec<Vec<String>> {
    let mut all: Vec<Vec<String>> = CHECKED_TIER_ARGS
        .iter()
        .map(|args| with_module_args(args, module))
        .collect();
    let mut mixed = with_module_args(&["--tier", "interp"], module);
    for (name, tier) in &module.mixed_tiers {
        mixed.push(format!("--func-tier={name}={tier}"));
    }
    all.push(mixed);
    all
}

fn with_module_args(args: &[&str], module: &Generated) -> Vec<String> {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(module.run_args.iter().cloned());
    all
}

/// Runs `binary` on `module` under the oracle and every checked setting. `scratch` holds
/// the module while it runs and keeps it when the check fails.
pub fn check(binary: &Path, module: &Generated, scratch: &Path) -> Result<Observed, Box<Report>> {
    std::fs::create_dir_all(scratch).expect("scratch directory");
    let hash = fnv(module.text.as_bytes());
    let file = scratch.join(format!("running-{}-{hash:016x}.bc", std::process::id()));
    std::fs::write(&file, &module.text).expect("write the module");
    let result = check_file(binary, module, &file);
    let result = result.map_err(|failure| {
        let saved = scratch.join(format!("failure-{hash:016x}.bc"));
        std::fs::copy(&file, &saved).expect("keep the failing module");
        Box::new(Report {
            failure,
            program: module.text.clone(),
            saved,
            oracle_args: oracle_args(module),
        })
    });
    let _ = std::fs::remove_file(&file);
    result
}

fn check_file(binary: &Path, module: &Generated, file: &Path) -> Result<Observed, Failure> {
    let expected = run(binary, &oracle_args(module), file)?;
    for args in checked_args(module) {
        let actual = run(binary, &args, file)?;
        if actual != expected {
            return Err(Failure::Mismatch {
                args,
                expected: Box::new(expected),
                actual: Box::new(actual),
            });
        }
    }
    Ok(expected)
}

fn run(binary: &Path, args: &[String], file: &Path) -> Result<Observed, Failure> {
    let mut full = vec!["run".to_string()];
    full.extend(args.iter().cloned());
    full.push(file.display().to_string());
    let bad = |why: String| Failure::BadRun {
        args: args.to_vec(),
        why,
    };
    let out = jitvm_conformance::run_command(binary, &full, RUN_TIMEOUT)
        .map_err(|e| bad(format!("cannot run {}: {e}", binary.display())))?;
    if out.timed_out {
        return Err(bad(format!("no answer in {RUN_TIMEOUT:?}")));
    }
    if let Some(signal) = out.signal {
        return Err(bad(format!(
            "killed by signal {signal}; stderr: {}",
            out.stderr
        )));
    }
    if out.stderr.contains("panicked") {
        return Err(bad(format!("Rust panic: {}", out.stderr)));
    }
    let observed = Observed::from_outcome(&out);
    let expected_status = if observed.trap.is_some() { 1 } else { 0 };
    if out.status != Some(expected_status) {
        return Err(bad(format!(
            "exit status {:?} with stderr {:?}",
            out.status, out.stderr
        )));
    }
    Ok(observed)
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trap_line_is_what_stderr_says_after_error_trap() {
        let out = jitvm_conformance::Outcome {
            status: Some(1),
            signal: None,
            stdout: b"1\n".to_vec(),
            stderr: "error: trap: division by zero\n  in f at 3\n".into(),
            timed_out: false,
        };
        let seen = Observed::from_outcome(&out);
        assert_eq!(seen.trap.as_deref(), Some("error: trap: division by zero"));
        assert_eq!(seen.stdout, b"1\n");
    }

    #[test]
    fn a_mismatch_report_shows_the_program_both_outcomes_and_the_saved_file() {
        let expected = Observed {
            status: Some(0),
            stdout: b"7\n".to_vec(),
            trap: None,
        };
        let actual = Observed {
            status: Some(1),
            stdout: Vec::new(),
            trap: Some("error: trap: stack overflow".into()),
        };
        let report = Report {
            failure: Failure::Mismatch {
                args: vec!["--tier".into(), "opt".into()],
                expected: Box::new(expected),
                actual: Box::new(actual),
            },
            program: "func main()\n  push 0\n  ret\nend\n".into(),
            saved: PathBuf::from("/tmp/failure-1.bc"),
            oracle_args: vec!["--tier".into(), "interp".into()],
        };
        let shown = report.to_string();
        for part in [
            "func main()",
            "`jitvm run --tier opt` differs from `jitvm run --tier interp`",
            "stdout:\n7\n",
            "error: trap: stack overflow",
            "/tmp/failure-1.bc",
        ] {
            assert!(shown.contains(part), "{part:?} missing from:\n{shown}");
        }
    }

    #[test]
    fn every_module_also_runs_with_its_functions_in_mixed_tiers() {
        let module = crate::generate(&[7; 64]);
        let all = checked_args(&module);
        assert_eq!(all.len(), CHECKED_TIER_ARGS.len() + 1);
        let mixed = all.last().unwrap();
        assert_eq!(
            mixed
                .iter()
                .filter(|a| a.starts_with("--func-tier="))
                .count(),
            module.functions.len()
        );
    }
}
