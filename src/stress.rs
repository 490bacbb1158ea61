//! `jitvm stress`: hot patching under multithreaded load, checked as it runs.
//!
//! The stress is a `.bc` program ([`program_text`]) run by the real engine (`--tier auto`,
//! so its functions tier up under load):
//!
//! - `v0` .. `v7`: eight versions of one function; `vK(x)` returns `16 * x + K`, each by a
//!   loop of its own length, so the result names the version that ran.
//! - `target`: the function the workers call; its own body is `v0`'s.
//! - `patcher`: a thread that runs `patch target vK` for K = 1, 2, .. 7, 0, 1, .. and, after
//!   each patch returns, stores the number of patches done in cell [`SEQ`].
//! - `caller(x)`: with `--inlined`, workers call `target` through it, a function small
//!   enough that the optimizing tier inlines `target` into it behind a guard (see
//!   `jit/src/opt/inline.rs`), so the check below covers inlined copies too.
//! - `worker(w)`: threads that load the patch count `n1`, call `target(x)`, load it again as
//!   `n2`, and check spec §5: once patch `n1` has returned (and the worker saw its count), a
//!   call runs the version of patch `n1` or of a later one, and the call cannot have seen a
//!   patch later than `n2 + 1` (the count after patch `m` is stored before patch `m + 1`
//!   begins). So the version must be `m mod 8` for some `m` in `n1 ..= n2 + 1`; any other
//!   result is a violation, counted in cell [`VIOLATIONS`].
//!
//! The harness sets cell [`STOP`] after the given time, samples the counters for a progress
//! bar (or a line a second when stderr is not a terminal), checks `/proc/self/maps` for a
//! writable and executable mapping each second, and prints a summary. Exit status 1 on any
//! violation or W^X breach; a worker that traps or crashes ends the process with status 1
//! as any trap does.

use crate::engine::start;
use crate::error::EngineError;
use crate::input::{entry_point, LoadError};
use crate::options::{self as knob, Options, TierChoice};
use crate::tiering::Thresholds;
use hdrhistogram::Histogram;
use jitvm_runtime::Strategy;
use jitvm_vm::{parse_module, CallMode, RunConfig};
use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Memory cells the program and the harness share.
pub const STOP: usize = 0;
pub const SEQ: usize = 1;
pub const VIOLATIONS: usize = 2;
/// The last violation: n1, n2 and the version that ran.
pub const LAST_VIOLATION: usize = 3;
/// Worker w counts its calls in cell `CALLS + 8 * w` (a cache line each).
pub const CALLS: usize = 64;
/// Versions of the patched function.
pub const VERSIONS: usize = 8;

/// `jitvm stress` options.
#[derive(clap::Args, Clone, Debug)]
pub struct StressArgs {
    #[arg(long, help = knob::STRESS_THREADS.meaning, default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=250))]
    pub threads: u32,
    #[arg(long, help = knob::STRESS_SECONDS.meaning, default_value_t = 10.0)]
    pub seconds: f64,
    #[arg(long, help = knob::STRESS_SYNC.meaning, value_name = "STRATEGY",
          value_parser = knob::parse_strategy)]
    pub sync: Option<Strategy>,
    #[arg(long, help = knob::STRESS_POISON.meaning)]
    pub poison: bool,
    // Low, so that tier-ups happen under load.
    #[arg(long, help = knob::STRESS_BASELINE_THRESHOLD.meaning, value_name = "N",
          default_value_t = 100)]
    pub baseline_threshold: u64,
    #[arg(long, help = knob::STRESS_OPT_THRESHOLD.meaning, value_name = "N",
          default_value_t = 1000)]
    pub opt_threshold: u64,
    #[arg(long, help = knob::STRESS_TRACE.meaning)]
    pub trace: bool,
    #[arg(long, help = knob::STRESS_INLINED.meaning)]
    pub inlined: bool,
    #[arg(long, help = knob::STRESS_CALLS.meaning, value_name = "MODE",
          default_value = "slots", value_parser = knob::parse_calls)]
    pub calls: CallMode,
}

/// Why a stress run could not start.
#[derive(Debug)]
pub enum StressError {
    /// The stress program does not load (a bug in [`program_text`], or a test's edit).
    Program(LoadError),
    Start(EngineError),
}

impl fmt::Display for StressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StressError::Program(e) => f.write_str(&e.render("<stress>")),
            StressError::Start(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StressError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StressError::Program(_) => None,
            StressError::Start(e) => Some(e),
        }
    }
}

/// The stress program for `workers` worker threads.
pub fn program_text(workers: u32, inlined: bool) -> String {
    let k = VERSIONS;
    let mut s = format!(
        "; jitvm stress: {workers} workers, {k} versions\nmemory {}\n",
        CALLS + 8 * workers as usize
    );
    // vK(x): a loop of K + 1 iterations adds 16x each time; then take 16x K back, add K.
    let version = |name: &str, v: usize| {
        format!(
            "func {name}(x)\n  local i\n  local acc\nloop:\n  load acc\n  load x\n  push 16\n  mul\n  add\n  store acc\n  load i\n  push 1\n  add\n  dup\n  store i\n  push {}\n  lt\n  jnz loop\n  load acc\n  load x\n  push {}\n  mul\n  sub\n  push {v}\n  add\n  ret\nend\n",
            v + 1,
            16 * v
        )
    };
    for v in 0..k {
        s += &version(&format!("v{v}"), v);
    }
    s += &version("target", 0);
    s += "func caller(x)\n  load x\n  call target\n  ret\nend\n";
    // The patcher: one round of patches per loop iteration, the count stored after each.
    s += "func patcher()\n  local n\nloop:\n";
    for v in (1..k).chain([0]) {
        let _ = write!(
            s,
            "  push {STOP}\n  mload\n  jnz done\n  patch target v{v}\n  load n\n  push 1\n  add\n  store n\n  push {SEQ}\n  load n\n  mstore\n"
        );
    }
    s += "  jmp loop\ndone:\n  load n\n  ret\nend\n";
    let _ = write!(
        s,
        "func worker(w)
  local x
  local n1
  local r
  local n2
  local v
  local d
  local calls
loop:
  push {STOP}
  mload
  jnz done
  push {SEQ}
  mload
  store n1
  load x
  call {callee}
  store r
  push {SEQ}
  mload
  store n2
  load r
  load x
  push 16
  mul
  sub
  store v
  load v
  load n1
  sub
  push {k}
  rem
  push {k}
  add
  push {k}
  rem
  store d
  load d
  load n2
  push 1
  add
  load n1
  sub
  le
  jnz ok
  push {VIOLATIONS}
  push 1
  atomic_add
  pop
  push {LAST_VIOLATION}
  load n1
  mstore
  push {}
  load n2
  mstore
  push {}
  load v
  mstore
ok:
  load calls
  push 1
  add
  store calls
  load w
  push 8
  mul
  push {CALLS}
  add
  load calls
  mstore
  load x
  push 1
  add
  push 1000
  rem
  store x
  jmp loop
done:
  load calls
  ret
end
",
        LAST_VIOLATION + 1,
        LAST_VIOLATION + 2,
        callee = if inlined { "caller" } else { "target" },
    );
    s += "func main()\n";
    for w in 0..workers {
        let _ = write!(s, "  push {w}\n  spawn worker\n  store h{w}\n");
    }
    s += "  spawn patcher\n  join\n  pop\n";
    for w in 0..workers {
        let _ = write!(s, "  load h{w}\n  join\n  pop\n");
    }
    s += "  push 0\n  ret\nend\n";
    // Locals for the handles, declared at the top of main.
    let handles: String = (0..workers).map(|w| format!("  local h{w}\n")).collect();
    s.replace("func main()\n", &format!("func main()\n{handles}"))
}

/// Counts mappings of this process that are writable and executable at once.
fn writable_and_executable_mappings() -> std::io::Result<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    Ok(maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|perms| perms.contains('w') && perms.contains('x'))
        .count())
}

/// What the harness samples while the program runs.
struct Sample {
    calls: u64,
    commits: u64,
    violations: i64,
}

/// What a stress run measured.
#[derive(Clone, Debug)]
pub struct Summary {
    pub seconds: f64,
    pub calls: u64,
    pub patches: i64,
    /// Every commit: patches and tier-ups.
    pub commits: u64,
    pub serializations: u64,
    /// Patch latency quantiles (p50, p99, max), in microseconds.
    pub patch_latency_us: (f64, f64, f64),
    pub high_water_bytes: usize,
    pub live_bytes: usize,
    pub freed_bytes: u64,
    /// Writable-and-executable mappings seen, in how many samples of the process's maps.
    pub wx_mappings: usize,
    pub wx_samples: u64,
    pub violations: i64,
    /// The last violation: (n1, n2, version run).
    pub last_violation: (i64, i64, i64),
    /// With `--inlined`: caller's line of the `--stats` compile times (its tier, and the
    /// sites inlined into it), or `None` if it never reached the optimizing tier.
    pub inlined_into_caller: Option<String>,
    /// With `--calls direct`: the sites bound to slots at the end, and the calls the
    /// runtime's `SIGTRAP` handler emulated (threads that hit a site being rewritten) or
    /// sent back to a site rewritten meanwhile, during the run.
    pub direct_calls: Option<(usize, jitvm_runtime::live_patch::TrapCounts)>,
}

impl Summary {
    /// Whether the run kept every guarantee.
    pub fn passed(&self) -> bool {
        self.violations == 0 && self.wx_mappings == 0
    }

    /// The lines `jitvm stress` prints.
    pub fn report(&self) -> String {
        let per_s = |n: f64| n / self.seconds.max(1e-9);
        let mut out = format!("ran {:.1} s\n", self.seconds);
        let _ = writeln!(
            out,
            "calls: {} ({:.0}/s), patches: {} ({:.0}/s), commits: {} ({:.0}/s, tier-ups included)",
            self.calls,
            per_s(self.calls as f64),
            self.patches,
            per_s(self.patches as f64),
            self.commits,
            per_s(self.commits as f64)
        );
        let (p50, p99, max) = self.patch_latency_us;
        let _ = writeln!(
            out,
            "patch latency (request to return of a Strong commit): p50 {p50:.1} us, p99 {p99:.1} us, max {max:.1} us"
        );
        let _ = writeln!(
            out,
            "code memory: high-water {:.1} KiB, live {:.1} KiB at the end, {:.1} KiB freed; {} serializations",
            self.high_water_bytes as f64 / 1024.0,
            self.live_bytes as f64 / 1024.0,
            self.freed_bytes as f64 / 1024.0,
            self.serializations
        );
        let _ = writeln!(
            out,
            "W^X: {} writable and executable mappings in {} samples of /proc/self/maps",
            self.wx_mappings, self.wx_samples
        );
        if let Some(line) = &self.inlined_into_caller {
            let _ = writeln!(out, "through an inlined caller: {}", line.trim());
        }
        if let Some((sites, traps)) = &self.direct_calls {
            let _ = writeln!(
                out,
                "direct calls: {sites} sites bound to slots; the int3 handler emulated {} calls and sent {} back to their site",
                traps.emulated, traps.rerun
            );
        }
        let _ = writeln!(out, "violations: {}", self.violations);
        if self.violations > 0 {
            let (n1, n2, v) = self.last_violation;
            let _ = writeln!(
                out,
                "last violation: a worker saw patch count {n1} before its call and {n2} after, \
                 and its call ran v{v}"
            );
        }
        out
    }
}

/// Runs `jitvm stress` and prints its summary; the process exit status.
pub fn main(args: &StressArgs) -> ExitCode {
    match run(args, &program_text(args.threads, args.inlined)) {
        Ok(summary) => {
            print!("{}", summary.report());
            if summary.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs a stress program (`text`, laid out as [`program_text`]'s) as `args` say.
pub fn run(args: &StressArgs, text: &str) -> Result<Summary, StressError> {
    let module =
        parse_module(text.as_bytes()).map_err(|d| StressError::Program(LoadError::Invalid(d)))?;
    let main = entry_point(&module).map_err(StressError::Program)?;
    let options = Options {
        tier: TierChoice::Auto,
        thresholds: Thresholds {
            baseline: args.baseline_threshold,
            opt: args.opt_threshold,
            // The workers' loops move into baseline code and call through the slots, so
            // that their calls are the patched calls (with `--inlined`, through a caller
            // the optimizing tier compiled with the target inlined) rather than copies in
            // the loop's own optimized code.
            osr: jitvm_jit::tier::Tier::Baseline,
        },
        sync: args.sync,
        poison: args.poison,
        run: RunConfig {
            calls: args.calls,
            ..RunConfig::default()
        },
        ..Options::default()
    };
    let traps_before = jitvm_runtime::live_patch::trap_counts();
    let program = start(module, &options).map_err(StressError::Start)?;
    // Every patch's latency, request to return (lock wait included), in nanoseconds.
    let latencies = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds"),
    ));
    {
        let latencies = Arc::clone(&latencies);
        program.add_patch_observer(Box::new(move |_, e| {
            let ns = e.latency.as_nanos().clamp(1, 60_000_000_000) as u64;
            let _ = latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(ns);
        }));
    }
    let runtime = Arc::clone(program.runtime());
    println!(
        "jitvm stress: {} workers and a patcher for {} s, sync {}, poison {}, thresholds {}/{}",
        args.threads,
        args.seconds,
        runtime.strategy(),
        if runtime.config().poison { "on" } else { "off" },
        args.baseline_threshold,
        args.opt_threshold
    );

    let began = Instant::now();
    let runner = {
        let program = Arc::clone(&program);
        std::thread::spawn(move || program.run_main(main))
    };
    let memory = |cell: usize| program.memory()[cell].load(Ordering::Acquire);
    let sample = || Sample {
        calls: (0..args.threads as usize)
            .map(|w| memory(CALLS + 8 * w) as u64)
            .sum(),
        commits: runtime.epoch_now(),
        violations: memory(VIOLATIONS),
    };
    let duration = Duration::from_secs_f64(args.seconds.max(0.0));
    let progress = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(duration.as_millis() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {percent:>3}% {msg}",
            )
            .expect("valid template"),
        );
        bar
    });
    let mut wx_samples = 0u64;
    let mut wx_found = 0usize;
    let mut last = (Instant::now(), sample());
    let mut next_line = Instant::now() + Duration::from_secs(1);
    while began.elapsed() < duration {
        std::thread::sleep(
            Duration::from_millis(100).min(duration.saturating_sub(began.elapsed())),
        );
        if Instant::now() >= next_line
            || progress.is_some() && last.0.elapsed() >= Duration::from_millis(500)
        {
            let now = sample();
            let dt = last.0.elapsed().as_secs_f64();
            let line = format!(
                "{:.0} calls/s, {:.0} commits/s, {} violations, code high-water {} KiB",
                (now.calls - last.1.calls) as f64 / dt,
                (now.commits - last.1.commits) as f64 / dt,
                now.violations,
                runtime.stats().high_water >> 10
            );
            match &progress {
                Some(bar) => {
                    bar.set_position(began.elapsed().as_millis() as u64);
                    bar.set_message(line);
                }
                None => eprintln!("[{:>6.1} s] {line}", began.elapsed().as_secs_f64()),
            }
            last = (Instant::now(), now);
        }
        if Instant::now() >= next_line {
            next_line += Duration::from_secs(1);
            match writable_and_executable_mappings() {
                Ok(n) => {
                    wx_samples += 1;
                    wx_found += n;
                }
                Err(e) => eprintln!("warning: cannot read /proc/self/maps: {e}"),
            }
        }
    }
    program.memory()[STOP].store(1, Ordering::Release);
    let _ = runner.join();
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let end = sample();
    let hist = latencies.lock().unwrap_or_else(|e| e.into_inner());
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    let code = runtime.stats();
    Ok(Summary {
        seconds: began.elapsed().as_secs_f64(),
        calls: end.calls,
        patches: memory(SEQ),
        commits: end.commits,
        serializations: runtime.serializations(),
        patch_latency_us: (us(0.5), us(0.99), hist.max() as f64 / 1e3),
        high_water_bytes: code.high_water,
        live_bytes: code.bytes_live,
        freed_bytes: code.bytes_freed,
        wx_mappings: wx_found,
        wx_samples,
        violations: end.violations,
        last_violation: (
            memory(LAST_VIOLATION),
            memory(LAST_VIOLATION + 1),
            memory(LAST_VIOLATION + 2),
        ),
        inlined_into_caller: args
            .inlined
            .then(|| inlined_into("caller", &program.stats_text()))
            .flatten(),
        direct_calls: (args.calls == CallMode::Direct).then(|| {
            let now = jitvm_runtime::live_patch::trap_counts();
            let traps = jitvm_runtime::live_patch::TrapCounts {
                emulated: now.emulated - traps_before.emulated,
                rerun: now.rerun - traps_before.rerun,
            };
            (runtime.bound_site_count(), traps)
        }),
    })
}

/// `function`'s optimized-compile line of a `--stats` report, if it has one.
fn inlined_into(function: &str, stats: &str) -> Option<String> {
    stats
        .lines()
        .find(|l| {
            let mut words = l.split_whitespace();
            words.next() == Some(function) && words.next() == Some("opt")
        })
        .map(str::to_string)
}
