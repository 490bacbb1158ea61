//! Multithreaded stress: more threads than cores call through every kind of
//! call the JITs emit while a patcher keeps replacing the target, in poison
//! mode, for every strategy but `none`; and a thread that never leaves native
//! code while thousands of versions are published and retired.
//!
//! The patcher commits `Strong`, then stores the version number. A caller
//! that read version `v` before its call must never get an older version
//! (that would mean a thread started replaced code after a Strong commit
//! returned). Running reclaimed code executes the trap instruction and kills
//! the process with SIGTRAP, which fails the test loudly.
//!
//! Each strategy runs for `JITVM_STRESS_SECS` seconds (default 3). The tests
//! take turns (a lock), so each measures its strategy without the others'
//! threads competing for the cores.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{call_stubs, polling_loop, Sites};
use jitvm_runtime::{jitvm_safepoint_slow, CodePtr, Config, Guarantee, Runtime, Strategy};

static TURN: Mutex<()> = Mutex::new(());

fn my_turn() -> MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

fn secs() -> f64 {
    std::env::var("JITVM_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0)
}

fn callers() -> usize {
    // More threads than cores: at least 6, or twice the cores plus two.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (2 * cores + 2).max(6)
}

struct Outcome {
    commits: u64,
    calls: u64,
    violations: u64,
    high_water: usize,
    /// Bytes of code published in all (what the region would need without
    /// reclamation).
    published: u64,
    elapsed: Duration,
}

impl Outcome {
    /// Code memory stayed bounded: below 2 MiB, or (for long runs at high
    /// commit rates, where a caller preempted for a few hundred milliseconds
    /// holds back thousands of commits: inherent to QSBR) below a sixteenth
    /// of what was published. Fails if reclamation stops.
    fn bounded(&self) -> bool {
        self.high_water < 2 << 20 || (self.high_water as u64) * 16 < self.published
    }
}

fn poisoned_runtime(st: Strategy) -> std::sync::Arc<Runtime> {
    Runtime::new(Config {
        capacity: 16 << 20,
        strategy: Some(st),
        poison: true,
        quarantine_bytes: 64 << 10,
    })
    .unwrap()
}

/// Runs callers and a patcher for `duration` (or until `max_commits`).
fn run(st: Strategy, duration: Duration, max_commits: u64, threads: usize) -> Outcome {
    let rt = poisoned_runtime(st);
    let mut sites = Sites::publish(&rt, 1);
    let stubs = sites.stubs;
    let version = AtomicI64::new(1);
    let stop = AtomicBool::new(false);
    let calls = AtomicU64::new(0);
    let violations = AtomicU64::new(0);
    let start = Instant::now();
    let mut commits = 0u64;
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let me = rt.register_thread().unwrap();
                let (mut n, mut bad) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let v = version.load(Ordering::Acquire);
                    let r = call_stubs(&me, &stubs);
                    bad += r.iter().filter(|&&r| r < v).count() as u64;
                    n += 3;
                    // No code address is held here: a quiescent point.
                    me.quiescent();
                }
                calls.fetch_add(n, Ordering::Relaxed);
                violations.fetch_add(bad, Ordering::Relaxed);
            });
        }
        // The patcher (this thread, not registered: it never runs the code).
        let mut k = 1;
        while start.elapsed() < duration && commits < max_commits {
            k += 1;
            sites.replace(&rt, k, Guarantee::Strong);
            version.store(k, Ordering::Release);
            commits += 1;
            // Back-pressure, as a JIT would apply: callers reach quiescent points all the
            // time, but a loaded machine may not run one for a while; rather than let
            // retired code pile up meanwhile, wait for them (bounded memory whatever the
            // scheduler does).
            if rt.pending_retirements() > 1000 {
                rt.synchronize(Duration::from_secs(60)).unwrap();
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = start.elapsed();
    // After the callers have left, everything retired gets reclaimed.
    rt.synchronize(Duration::from_secs(10)).unwrap();
    assert_eq!(rt.pending_retirements(), 0);
    let me = rt.register_thread().unwrap();
    assert_eq!(
        call_stubs(&me, &stubs),
        [version.load(Ordering::Relaxed); 3]
    );
    let st = rt.stats();
    Outcome {
        commits,
        calls: calls.load(Ordering::Relaxed),
        violations: violations.load(Ordering::Relaxed),
        high_water: st.high_water,
        published: st.bytes_freed
            + (st.bytes_live + st.bytes_retired + st.bytes_quarantined) as u64,
        elapsed,
    }
}

fn stress(st: Strategy) {
    if !st.is_available() {
        eprintln!("stress {st}: unavailable here, skipped");
        return;
    }
    let _turn = my_turn();
    let threads = callers();
    let o = run(st, Duration::from_secs_f64(secs()), u64::MAX, threads);
    eprintln!(
        "stress {st}: {threads} callers, {} commits in {:.1} s ({:.0}/s), {} calls, {} violations, high-water {} bytes of {} published",
        o.commits,
        o.elapsed.as_secs_f64(),
        o.commits as f64 / o.elapsed.as_secs_f64(),
        o.calls,
        o.violations,
        o.high_water,
        o.published
    );
    assert_eq!(o.violations, 0, "a caller got a version older than it read");
    assert!(o.commits >= 10, "patcher made progress");
    assert!(o.calls >= 1000, "callers made progress");
    assert!(
        o.bounded(),
        "code memory bounded: {} of {}",
        o.high_water,
        o.published
    );
}

#[test]
fn stress_membarrier() {
    stress(Strategy::Membarrier);
}

#[test]
#[cfg(target_arch = "x86_64")]
fn stress_mprotect() {
    stress(Strategy::Mprotect);
}

#[test]
fn stress_signal() {
    stress(Strategy::Signal);
}

#[test]
fn hundred_thousand_commits_stay_bounded() {
    let _turn = my_turn();
    let st = jitvm_runtime::select_strategy(None).unwrap();
    let o = run(st, Duration::from_secs(600), 100_000, 1);
    eprintln!(
        "100k commits ({st}, 1 caller): {:.1} s, {} calls, high-water {} bytes",
        o.elapsed.as_secs_f64(),
        o.calls,
        o.high_water
    );
    assert_eq!(o.commits, 100_000);
    assert_eq!(o.violations, 0);
    // Working set: a few small blobs, plus the 64 KiB quarantine and the
    // retirements a preempted caller has not yet moved past (a caller off the
    // CPU cannot poll: inherent to QSBR). Without reclamation the 100,000
    // versions would take about 20 MB; the bound fails if reclamation stops.
    assert!(o.high_water < 2 << 20, "high-water {}", o.high_water);
    assert!(o.bounded());
}

#[test]
fn a_thread_that_never_leaves_native_code_does_not_hold_back_reclamation() {
    let _turn = my_turn();
    let st = jitvm_runtime::select_strategy(None).unwrap();
    let rt = poisoned_runtime(st);
    let mut sites = Sites::publish(&rt, 1);
    let mut tx = rt.transaction();
    let looper = tx
        .stage(
            &polling_loop(
                sites.slot.as_ptr(),
                jitvm_safepoint_slow as *const () as usize,
            ),
            16,
        )
        .unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    let stop = AtomicU8::new(0);
    let running = AtomicBool::new(false);
    let commits = 5000;
    let (disorder, stats, pending) = std::thread::scope(|s| {
        let native = s.spawn(|| {
            let me = rt.register_thread().unwrap();
            // One `enter` for the whole test: the loop only leaves at `stop`.
            me.enter(|scope| {
                running.store(true, Ordering::Release);
                // SAFETY: the loop has this signature and stays published.
                let f: extern "sysv64" fn(*const AtomicU8, *const AtomicU32) -> i64 =
                    unsafe { scope.func(CodePtr::new(looper.addr())) };
                f(&stop, me.poll_word())
            })
        });
        while !running.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        let start = Instant::now();
        for k in 2..2 + commits {
            sites.replace(&rt, k, Guarantee::Strong);
            // Every 500 commits, wait until the native thread has reported at a safepoint:
            // it does, from inside its one `enter`. (Without the wait the bound below would
            // depend on how often a loaded machine schedules that thread.)
            if k % 500 == 0 {
                rt.synchronize(Duration::from_secs(60)).unwrap();
            }
        }
        let elapsed = start.elapsed();
        // Still inside the same `enter`: everything retired is reclaimable.
        let synced = rt.synchronize(Duration::from_secs(20));
        let stats = rt.stats();
        let pending = rt.pending_retirements();
        stop.store(1, Ordering::Release);
        let disorder = native.join().unwrap();
        eprintln!(
            "native loop ({st}): {commits} commits in {:.2} s while one thread stayed in native code; high-water {} bytes, {pending} pending, synchronize {synced:?}",
            elapsed.as_secs_f64(),
            stats.high_water
        );
        synced.unwrap();
        (disorder, stats, pending)
    });
    assert_eq!(disorder, 0, "calls saw versions out of order");
    assert_eq!(pending, 0);
    // 5000 versions of up to 160 bytes plus their callers would be about
    // 1 MB without reclamation; the quarantine is 64 KiB.
    assert!(stats.high_water < 512 << 10, "{stats:?}");
}
