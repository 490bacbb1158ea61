//! `patch` against call sites an optimizing tier may inline (spec §5), run with the real
//! binary in every tier: worker threads loop calling `caller`, a small function that calls
//! the small leaf `f` (so `f` may be inlined into `caller` and `caller` into the loop), while
//! `main` patches `f` and, after each `patch` returns, `mstore`s the number of patches done.
//! A call a worker starts after it has loaded that number k must run patch k's definition
//! or a later patch's, and never anything else.
//!
//! Each definition `f` may have gives its own `caller(x) - 4x - 1`: `f` and `f_orig` (a
//! copy of `f`'s body, for patching back) 1, `g` 2 (with a compare-and-branch), `h` 3 (with
//! a memory load), `v4` .. `v16` 4 to 16 (of those shapes in turn). Patch k installs the
//! definition of value `k % L + 1` (L of them in a cycle, `f_orig` last). Every B patches
//! (and after the last) `main` waits until each worker has made `N` calls since it saw the
//! patch; with B + 2 <= L, a worker that saw k may get only the values of patches k to the
//! next such wait, so a stale definition shows. At those waits the check is exact: the
//! first `N` calls after seeing patch k run patch k's definition. Workers count violations
//! in a cell and return the set of values they saw as a bit mask; `main` joins them and
//! prints each mask (the part that must be set: the definitions of the waits), the number
//! of patches and the violations, which the tests compare exactly.
//!
//! The waits are few because a spin-wait in optimized code never offers the CPU: when
//! threads outnumber cores, each one costs a scheduler time slice (milliseconds).

use jitvm_conformance::{run_command, Outcome};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Calls a worker makes after seeing a patch before `main` may go past a wait.
const N: usize = 20;

/// `caller`, and the definitions of values 1 to 3. Cell 3 holds the 3 that `h` loads.
const CALLEES: &str = "
func f(x)
  load x
  push 4
  mul
  push 1
  add
  ret
end
func f_orig(x)
  load x
  push 4
  mul
  push 1
  add
  ret
end
func g(x)
  load x
  push 0
  lt
  jnz negative
  load x
  push 4
  mul
  push 2
  add
  ret
negative:
  load x
  push 2
  shl
  push 2
  add
  ret
end
func h(x)
  load x
  push 4
  mul
  push 3
  mload
  add
  ret
end
func caller(x)
  load x
  call f
  push 1
  add
  ret
end
";

/// The name of the definition of value `v` (1 to 16) that patches install.
fn definition(v: usize) -> String {
    match v {
        1 => "f_orig".into(),
        2 => "g".into(),
        3 => "h".into(),
        _ => format!("v{v}"),
    }
}

/// `v4` to `v16`: 4x + v computed three ways in turn (a shift, a branch, a load of cell
/// 32 + v, which `main` sets to v first).
fn more_definitions(values: usize) -> String {
    let mut src = String::new();
    for v in 4..=values {
        src += &match v % 3 {
            1 => format!("func v{v}(x)\n  load x\n  push 2\n  shl\n  push {v}\n  add\n  ret\nend\n"),
            2 => format!(
                "func v{v}(x)\n  load x\n  push {v}\n  gt\n  jz small\n  load x\n  push 4\n  mul\n  push {v}\n  add\n  ret\nsmall:\n  push {v}\n  load x\n  push 4\n  mul\n  add\n  ret\nend\n"
            ),
            _ => format!(
                "func v{v}(x)\n  load x\n  push 4\n  mul\n  push {}\n  mload\n  add\n  ret\nend\n",
                32 + v
            ),
        };
    }
    src
}

/// How a concurrent program patches.
#[derive(Clone, Copy)]
struct Plan {
    workers: usize,
    patches: usize,
    /// Definitions in the cycle (2 to 16).
    cycle: usize,
    /// Patches between waits.
    batch: usize,
    /// Calls each worker makes before the first patch: time to tier up by on-stack
    /// replacement.
    warm: usize,
}

impl Plan {
    /// The patches after which `main` waits for every worker: the multiples of the batch,
    /// and the last.
    fn waits(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.patches).step_by(self.batch).chain([self.patches])
    }

    /// What the program must print: each worker's mask (the definitions of the waits), the
    /// number of patches, and no violations.
    fn expected(&self) -> String {
        let mask: u64 = self
            .waits()
            .map(|k| 1 << (k % self.cycle + 1))
            .fold(0, |a, b| a | b);
        let mut out = format!("{mask}\n").repeat(self.workers);
        out += &format!("{}\n0\n", self.patches);
        out
    }

    /// The program. Memory: cell 0 the patches done (stored by `main` after each `patch`
    /// returns), 1 stop, 2 violations, 3 the 3 `h` loads, 8+w worker w's acknowledgement
    /// (patches it saw plus one, once it made enough calls since), 16+w and 24+w its last
    /// wrong value and when (patches seen * 1,000,000 + calls since), 32+v for `v{v}`.
    fn program(&self) -> String {
        let Plan {
            workers,
            patches,
            cycle,
            batch,
            warm,
        } = *self;
        assert!((1..=4).contains(&workers) && (2..=16).contains(&cycle));
        assert!(
            batch == 1 || batch + 2 <= cycle,
            "a stale definition must show"
        );
        let mask: u64 = self
            .waits()
            .map(|k| 1 << (k % cycle + 1))
            .fold(0, |a, b| a | b);
        let mut src = format!("memory 64\n{CALLEES}{}", more_definitions(cycle));

        // needed(k): calls a worker makes after seeing k patches before it acknowledges them.
        src += &format!(
            "func needed(k)\n  load k\n  jz warming\n  push {N}\n  ret\nwarming:\n  push {warm}\n  ret\nend\n"
        );
        // allowed(d, k, calls): whether value d may come from the calls-th call after seeing
        // k patches: exactly patch k's value early after a wait, else one of patches k to
        // the next wait.
        src += &format!(
            "
func allowed(d, k, calls)
  local hi
  load k
  push {batch}
  rem
  jz waited
  load k
  push {patches}
  eq
  jz window
waited:
  load calls
  load k
  call needed
  gt
  jnz window
  load d
  load k
  push {cycle}
  rem
  push 1
  add
  eq
  ret
window:
  load d
  push 1
  lt
  jnz wrong
  load d
  push {cycle}
  gt
  jnz wrong
  load k
  push {batch}
  div
  push 1
  add
  push {batch}
  mul
  dup
  push {patches}
  gt
  jz capped
  pop
  push {patches}
capped:
  store hi
  load d
  push 1
  sub
  load k
  sub
  push {cycle}
  rem
  push {cycle}
  add
  push {cycle}
  rem
  load hi
  load k
  sub
  le
  ret
wrong:
  push 0
  ret
end
"
        );
        src += "
func worker(w)
  local seen
  local calls
  local i
  local d
  local mask
  local ack
  load w
  push 1000003
  mul
  store i
loop:
  push 0
  mload
  store seen
  load seen
  load ack
  eq
  jnz counted
  push 0
  store calls
  load seen
  store ack
counted:
  load i
  call caller
  load i
  push 4
  mul
  sub
  push 1
  sub
  store d
  load calls
  push 1
  add
  store calls
  load mask
  push 1
  load d
  shl
  or
  store mask
  load d
  load seen
  load calls
  call allowed
  jnz right
  push 2
  push 1
  atomic_add
  pop
  push 16
  load w
  add
  load d
  mstore
  push 24
  load w
  add
  load seen
  push 1000000
  mul
  load calls
  add
  mstore
right:
  load calls
  load seen
  call needed
  lt
  jnz unacknowledged
  push 8
  load w
  add
  load seen
  push 1
  add
  mstore
unacknowledged:
  load i
  push 7
  add
  store i
  push 1
  mload
  jz loop
  load mask
  ret
end
";
        // wait_all(k): until every worker has acknowledged k patches.
        src += "func wait_all(k)\n";
        for w in 0..workers {
            src += &format!(
                "wait{w}:\n  push {}\n  mload\n  load k\n  push 1\n  add\n  lt\n  jnz wait{w}\n",
                8 + w
            );
        }
        src += "  push 0\n  ret\nend\n";

        src += "func main()\n  local k\n  local t\n";
        for w in 0..workers {
            src += &format!("  local h{w}\n");
        }
        src += "  push 3\n  push 3\n  mstore\n";
        for v in 4..=cycle {
            src += &format!("  push {}\n  push {v}\n  mstore\n", 32 + v);
        }
        for w in 0..workers {
            src += &format!("  push {w}\n  spawn worker\n  store h{w}\n");
        }
        src += &format!(
            "next:\n  load k\n  push {batch}\n  rem\n  jnz go\n  load k\n  call wait_all\n  pop\ngo:\n  load k\n  push {patches}\n  ge\n  jnz finish\n  load k\n  push 1\n  add\n  store k\n  load k\n  push {cycle}\n  rem\n  store t\n"
        );
        for t in 0..cycle {
            // Patch k installs the definition of value k % cycle + 1.
            src += &format!(
                "  load t\n  push {t}\n  eq\n  jz skip{t}\n  patch f {}\n  jmp patched\nskip{t}:\n",
                definition(t + 1)
            );
        }
        // After each patch returns: publish it. After the last: wait, stop, join, report.
        src += "patched:\n  push 0\n  load k\n  mstore\n  jmp next\n";
        src += "finish:\n  load k\n  call wait_all\n  pop\n  push 1\n  push 1\n  mstore\n";
        for w in 0..workers {
            src += &format!("  load h{w}\n  join\n  push {mask}\n  and\n  print\n");
        }
        src += "  load k\n  print\n  push 2\n  mload\n  dup\n  print\n  jz done\n";
        for w in 0..workers {
            src += &format!(
                "  push {}\n  mload\n  print\n  push {}\n  mload\n  print\n",
                16 + w,
                24 + w
            );
        }
        src += "done:\n  push 0\n  ret\nend\n";
        src
    }
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_jitvm"))
}

fn save(name: &str, text: &str) -> PathBuf {
    // One folder per run, so that runs at once do not overwrite each other's programs.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("inlined_patch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn run(file: &Path, flags: &[&str]) -> (Outcome, Duration) {
    let mut args = vec!["run".to_string()];
    args.extend(flags.iter().map(|s| s.to_string()));
    args.push(file.display().to_string());
    let start = Instant::now();
    let out = run_command(&binary(), &args, Duration::from_secs(60)).unwrap();
    (out, start.elapsed())
}

/// Runs `file` under each setting of flags and checks its exact stdout and status.
fn check(file: &Path, settings: &[&[&str]], expected: &str) {
    let mut failures = Vec::new();
    for flags in settings {
        let (out, took) = run(file, flags);
        eprintln!("{} {flags:?}: {took:.2?}", file.display());
        if *flags == ["--tier", "opt"] {
            // The copies these tests are about exist: `--stats` counts the guarded sites.
            let (stats, _) = run(file, &["--tier", "opt", "--stats"]);
            let sites: usize = stats
                .stderr
                .lines()
                .filter_map(|l| l.split("; inlined ").nth(1))
                .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
                .sum();
            if sites == 0 {
                failures.push(format!(
                    "`jitvm run --tier opt --stats {}` inlined nothing:\n{}",
                    file.display(),
                    stats.stderr
                ));
            }
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status != Some(0) || stdout != expected || out.timed_out {
            failures.push(format!(
                "`jitvm run {} {}`: status {:?}, signal {:?}, timed out {}, stdout:\n{stdout}\nexpected:\n{expected}\nstderr:\n{}",
                flags.join(" "),
                file.display(),
                out.status,
                out.signal,
                out.timed_out,
                out.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every tier, and tiering that compiles `caller`, `f` and the worker loop while it runs.
const TIERS: &[&[&str]] = &[
    &["--tier", "baseline"],
    &["--tier", "opt"],
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
        "5",
        "--opt-threshold",
        "50",
    ],
    // The loop in the baseline tier calling optimized code, and a definition interpreted.
    &[
        "--tier",
        "opt",
        "--func-tier",
        "worker=baseline",
        "--func-tier",
        "g=interp",
    ],
];

fn concurrent(name: &str, plan: Plan, settings: &[&[&str]]) {
    let file = save(name, &plan.program());
    check(&file, settings, &plan.expected());
    std::fs::remove_file(file).unwrap();
}

#[test]
fn workers_calling_through_an_inlined_site_see_only_the_new_definition_once_patch_has_returned() {
    let plan = Plan {
        workers: 3,
        patches: 1,
        cycle: 2,
        batch: 1,
        warm: 200,
    };
    // f before the patch, g after it.
    assert_eq!(plan.expected(), "6\n6\n6\n1\n0\n");
    concurrent("one_patch.bc", plan, TIERS);
}

#[test]
fn patching_back_to_a_copy_of_the_original_is_seen_as_promptly_as_the_patch_away_from_it() {
    let plan = Plan {
        workers: 3,
        patches: 2,
        cycle: 2,
        batch: 1,
        warm: 200,
    };
    concurrent("patch_back.bc", plan, TIERS);
}

#[test]
fn two_hundred_patches_while_two_workers_run_never_show_a_stale_or_foreign_definition() {
    let plan = Plan {
        workers: 2,
        patches: 200,
        cycle: 16,
        batch: 14,
        warm: 200,
    };
    concurrent("repeated_patches.bc", plan, TIERS);
}

#[test]
fn sixty_patches_while_four_workers_run_never_show_a_stale_or_foreign_definition() {
    let plan = Plan {
        workers: 4,
        patches: 60,
        cycle: 16,
        batch: 14,
        warm: 200,
    };
    concurrent("four_workers.bc", plan, TIERS);
}

#[test]
fn each_patch_of_a_cycle_of_three_is_seen_exactly_by_every_worker() {
    // A wait after every patch: every call early after a patch is checked exactly.
    let plan = Plan {
        workers: 2,
        patches: 12,
        cycle: 3,
        batch: 1,
        warm: 200,
    };
    assert_eq!(plan.expected(), "14\n14\n12\n0\n");
    concurrent("cycle_of_three.bc", plan, TIERS);
}

#[test]
fn a_worker_loop_entered_by_on_stack_replacement_sees_each_patch() {
    // Each worker is called once, so once its loop runs compiled code it got there by
    // on-stack replacement: from the baseline tier, from the interpreter straight to the
    // optimizing tier, and through both at the default thresholds. 30,000 calls before the
    // first patch pass every threshold below.
    let plan = Plan {
        workers: 2,
        patches: 40,
        cycle: 16,
        batch: 4,
        warm: 30_000,
    };
    let settings: &[&[&str]] = &[
        &[
            "--tier",
            "auto",
            "--baseline-threshold",
            "0",
            "--opt-threshold",
            "1000",
        ],
        &[
            "--tier",
            "auto",
            "--baseline-threshold",
            "500",
            "--opt-threshold",
            "0",
        ],
        &["--tier", "auto"],
    ];
    concurrent("osr.bc", plan, settings);
}

/// The check itself must catch a call site that lags behind: here `caller` calls `lag`,
/// which `main` patches to the previous definition just before each patch of `f`, so every
/// call after seeing patch k runs patch k-1's definition, as a stale inlined copy would.
#[test]
fn a_call_site_that_runs_the_definition_of_one_patch_before_is_counted_as_a_violation() {
    for (name, plan) in [
        (
            "lagging_cycle_of_three.bc",
            Plan {
                workers: 2,
                patches: 12,
                cycle: 3,
                batch: 1,
                warm: 200,
            },
        ),
        (
            "lagging_repeated_patches.bc",
            Plan {
                workers: 2,
                patches: 200,
                cycle: 16,
                batch: 14,
                warm: 200,
            },
        ),
    ] {
        let mut src = plan
            .program()
            .replace("  call f\n", "  call lag\n")
            .replace(
            "func caller(x)",
            "func lag(x)\n  load x\n  push 4\n  mul\n  push 1\n  add\n  ret\nend\nfunc caller(x)",
        );
        for t in 0..plan.cycle {
            let previous = if t == 0 { plan.cycle } else { t };
            let patch = format!("  patch f {}\n", definition(t + 1));
            let lagging = format!("  patch lag {}\n{patch}", definition(previous));
            assert!(src.contains(&patch));
            src = src.replace(&patch, &lagging);
        }
        let file = save(name, &src);
        let (out, _) = run(&file, &["--tier", "baseline"]);
        assert_eq!(out.status, Some(0), "{}", out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        let violations: u64 = lines[plan.workers + 1].parse().unwrap();
        assert!(violations > 0, "{name}: no violation seen:\n{stdout}");
        assert_ne!(stdout, plan.expected(), "{name}");
        std::fs::remove_file(file).unwrap();
    }
}

/// One thread: `main`'s loop calls `caller` 5,000 times and patches `f` at calls 2,000
/// (to `g`, in the loop), 3,000 (to `h`, inside a function the loop calls) and 4,000 (back
/// to `f_orig`); it prints each call number where the result changes and the new value.
const ONE_THREAD: &str = "
func to_h()
  patch f h
  push 0
  ret
end
func main()
  local i
  local d
  local last
  push 3
  push 3
  mstore
loop:
  load i
  push 2000
  eq
  jz not_g
  patch f g
not_g:
  load i
  push 3000
  eq
  jz not_h
  call to_h
  pop
not_h:
  load i
  push 4000
  eq
  jz not_back
  patch f f_orig
not_back:
  load i
  call caller
  load i
  push 4
  mul
  sub
  push 1
  sub
  store d
  load d
  load last
  eq
  jnz same
  load i
  print
  load d
  print
  load d
  store last
same:
  load i
  push 1
  add
  dup
  store i
  push 5000
  lt
  jnz loop
  push 0
  ret
end
";

#[test]
fn a_loop_in_one_thread_switches_definitions_exactly_at_each_patch() {
    let file = save("one_thread.bc", &format!("memory 8\n{CALLEES}{ONE_THREAD}"));
    let mut settings: Vec<&[&str]> = vec![&["--tier", "interp"]];
    // TIERS but its last row, which names the workers.
    settings.extend_from_slice(&TIERS[..TIERS.len() - 1]);
    settings.push(&[
        "--tier",
        "opt",
        "--func-tier",
        "main=baseline",
        "--func-tier",
        "g=interp",
    ]);
    settings.push(&[
        "--tier",
        "auto",
        "--baseline-threshold",
        "0",
        "--opt-threshold",
        "1000",
    ]);
    settings.push(&["--tier", "auto"]);
    check(&file, &settings, "0\n1\n2000\n2\n3000\n3\n4000\n1\n");
    std::fs::remove_file(file).unwrap();
}
