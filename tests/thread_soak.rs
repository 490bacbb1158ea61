//! Soak test for threads that finish unjoined. Dropping a `JoinHandle` detaches its thread,
//! and on this platform a detach that races the thread's exit crashed the process with
//! `SIGSEGV` about once in 90 runs of `spawn_unjoined_many.bc` (see `docs/interpreter.md`,
//! section 8). The VM never detaches now; this runs the programs that found the crash many
//! times, three processes at a time as the report did, and fails on any exit by a signal.

use jitvm_conformance::run_command;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Runs of each program in each mode. 50 x 2 programs x 2 modes = 200 runs.
const RUNS: usize = 50;
/// Processes at once, as in the report that found the crash.
const AT_ONCE: usize = 3;

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_jitvm"))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn threads_that_finish_unjoined_never_end_the_process_by_a_signal() {
    let programs = [
        // 40,000 threads that finish unjoined, at most 128 in flight.
        (repo("tests/conformance/spawn_unjoined_many.bc"), "40000\n"),
        // 20,000 threads that finish while main spawns the next, at most 4 in flight.
        (repo("tests/soak/spawn_while_finishing.bc"), "20000\n"),
    ];
    let modes: [&[&str]; 2] = [&["--tier", "interp"], &[]];
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        for (program, expected) in &programs {
            for mode in modes {
                let mut args = vec!["run".to_string()];
                args.extend(mode.iter().map(|s| s.to_string()));
                args.push(program.display().to_string());
                runs.push((args, *expected));
            }
        }
    }

    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..AT_ONCE)
            .map(|_| {
                s.spawn(|| loop {
                    let Some((args, expected)) = runs.get(next.fetch_add(1, Ordering::Relaxed))
                    else {
                        return;
                    };
                    // Generous: one run takes a few seconds here, more on a loaded machine.
                    let outcome = run_command(&binary(), args, Duration::from_secs(300))
                        .expect("jitvm starts");
                    let failed = if let Some(signal) = outcome.signal {
                        Some(format!("killed by signal {signal}"))
                    } else if outcome.timed_out {
                        Some("timed out".to_string())
                    } else if outcome.status != Some(0) || outcome.stdout != expected.as_bytes() {
                        Some(format!(
                            "status {:?}, stdout {:?}, stderr {:?}",
                            outcome.status,
                            String::from_utf8_lossy(&outcome.stdout),
                            outcome.stderr
                        ))
                    } else {
                        None
                    };
                    if let Some(why) = failed {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{}: {why}", args.join(" ")));
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} runs failed:\n{}",
        failures.len(),
        runs.len(),
        failures.join("\n")
    );
}
