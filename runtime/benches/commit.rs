//! Commit latency per strategy and guarantee, beside a bare
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)` measured in the
//! same run with the same busy threads; and a commit of 1 blob against 100.
//!
//! Busy threads are registered threads spinning on calls through the patched
//! sites (a dispatch slot and a `call rel32`), calling `quiescent()` after
//! each. Bare calls and commits are interleaved sample by sample so both see
//! the same conditions. Each row stops at `JITVM_BENCH_N` samples (default
//! 2000, after 100 of warm-up) or after about 1.5 s, whichever comes first.
//!
//! Only the commit path is timed: the transaction (stage = allocate + copy,
//! slot and site patches, retirements) and `commit`, i.e. what publication
//! costs a JIT per blob. The version's bytes are built beforehand (compiling
//! is not publishing), the same way for 1 and for 100 blobs.
//!
//! Run: `cargo bench -p jitvm-runtime` (prints a Markdown table).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jitvm_runtime::{
    bare_membarrier_sync_core, emit_rel32_site, Blob, Config, DispatchSlot, Guarantee, Rel32Kind,
    Rel32Site, Runtime, Strategy,
};

const WARMUP: usize = 100;
const ROW_BUDGET: Duration = Duration::from_millis(1500);

fn samples_wanted() -> usize {
    std::env::var("JITVM_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
}

/// `mov eax, k; ret`
fn version(k: u32) -> Vec<u8> {
    let mut v = vec![0xB8];
    v.extend_from_slice(&k.to_le_bytes());
    v.push(0xC3);
    v
}

/// `mov rax, slot; jmp [rax]`
fn dispatch_stub(slot: &DispatchSlot) -> Vec<u8> {
    let mut v = vec![0x48, 0xB8];
    v.extend_from_slice(&(slot.as_ptr() as u64).to_le_bytes());
    v.extend_from_slice(&[0xFF, 0x20]);
    v
}

/// `call rel32; ret` with the displacement aligned; returns (bytes, site).
fn call_stub() -> (Vec<u8>, usize) {
    let mut v = Vec::new();
    let at = emit_rel32_site(&mut v, Rel32Kind::Call);
    v.push(0xC3);
    (v, at)
}

type CodeFn = extern "sysv64" fn() -> u32;

/// # Safety
/// `addr` must be a published blob with the `CodeFn` ABI.
unsafe fn as_fn(addr: usize) -> CodeFn {
    // SAFETY: forwarded to the caller.
    unsafe { std::mem::transmute::<usize, CodeFn>(addr) }
}

/// What a commit replaces: `blobs` versions behind as many slots, the first
/// slot and the call site being what the busy threads call.
struct Target {
    // Heap elements of a Vec never built again: stable addresses.
    slots: Vec<DispatchSlot>,
    site: Rel32Site,
    stubs: [usize; 2],
    current: Vec<Blob>,
    /// Reused for the blobs of the next commit (no allocation while timed).
    spare: Vec<Blob>,
    /// The bytes of the next version, built by `next` outside the timed
    /// region: compiling is not part of committing.
    code: Vec<u8>,
    k: u32,
}

impl Target {
    fn new(rt: &Runtime, blobs: usize) -> Target {
        let slots: Vec<_> = (0..blobs).map(|_| DispatchSlot::new(0)).collect();
        let (code, at) = call_stub();
        let mut tx = rt.transaction();
        let d = tx.stage(&dispatch_stub(&slots[0]), 16).unwrap();
        let c = tx.stage(&code, 16).unwrap();
        let site = rt.rel32_site(c, at, Rel32Kind::Call).unwrap();
        tx.commit(Guarantee::Strong).unwrap();
        let mut t = Target {
            slots,
            site,
            stubs: [d.addr(), c.addr()],
            current: Vec::with_capacity(blobs),
            spare: Vec::with_capacity(blobs),
            code: Vec::new(),
            k: 0,
        };
        t.next();
        t.commit(rt, Guarantee::Strong);
        t
    }

    /// Prepares the next version's bytes (untimed).
    fn next(&mut self) {
        self.k += 1;
        self.code = version(self.k);
    }

    /// One commit replacing every blob with the prepared version: what a JIT
    /// does per blob at publication (stage = allocate + copy, re-point a
    /// slot, retire the old blob), and what the commit does for it.
    fn commit(&mut self, rt: &Runtime, g: Guarantee) {
        let mut tx = rt.transaction();
        let mut new = std::mem::take(&mut self.spare);
        for slot in &self.slots {
            let b = tx.stage(&self.code, 16).unwrap();
            tx.set_dispatch(slot, b.addr());
            new.push(b);
        }
        tx.patch_rel32(self.site, new[0].addr()).unwrap();
        for b in self.current.drain(..) {
            tx.retire(b);
        }
        tx.commit(g).unwrap();
        self.spare = std::mem::replace(&mut self.current, new);
    }
}

fn percentiles(mut v: Vec<u64>) -> (f64, f64) {
    v.sort_unstable();
    let at = |p: usize| v[(v.len() * p / 100).min(v.len() - 1)] as f64 / 1000.0;
    (at(50), at(99))
}

/// Runs `f` with `busy` threads spinning through `stubs`, registered with
/// every runtime in `rts` and quiescent in each after every call.
fn with_busy<R>(rts: &[&Runtime], stubs: [usize; 2], busy: usize, f: impl FnOnce() -> R) -> R {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for i in 0..busy {
            let stop = &stop;
            s.spawn(move || {
                if cores() > 1 {
                    pin(1 + i % (cores() - 1));
                }
                let me: Vec<_> = rts.iter().map(|rt| rt.register_thread()).collect();
                while !stop.load(Ordering::Relaxed) {
                    for stub in stubs {
                        // SAFETY: stubs are never retired while rt lives.
                        std::hint::black_box(unsafe { as_fn(stub) }());
                        for h in &me {
                            h.quiescent();
                        }
                    }
                }
            });
        }
        while rts.iter().any(|rt| rt.registered_threads() < busy) {
            std::thread::yield_now();
        }
        let r = f();
        stop.store(true, Ordering::Relaxed);
        r
    })
}

/// Pins the calling thread to `cpu` (best effort). The committing thread
/// gets CPU 0 and busy threads the others, so a busy thread never preempts
/// the committer mid-measurement and every serialization with busy threads
/// must reach another CPU.
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes within it;
    // sched_setaffinity(0, ...) only changes this thread's affinity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// CPUs available to the process, read once before any pinning (afterwards
/// `available_parallelism` would report the pinned thread's single CPU).
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Minor page faults of the calling thread so far.
fn minor_faults() -> i64 {
    // SAFETY: getrusage writes one rusage into the zeroed struct we own.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        ru.ru_minflt
    }
}

fn time(f: impl FnOnce()) -> u64 {
    let t = Instant::now();
    f();
    t.elapsed().as_nanos() as u64
}

fn runtime(st: Strategy) -> Runtime {
    Runtime::new(Config {
        capacity: 64 << 20,
        strategy: Some(st),
        poison: false,
        ..Config::default()
    })
    .unwrap()
}

fn main() {
    let n = samples_wanted();
    cores();
    if cores() > 1 {
        pin(0);
    }
    let membarrier = Strategy::Membarrier.is_available();
    println!(
        "cores: {} (committer pinned to CPU 0, busy threads to the others), samples per row: up to {n} (after {WARMUP} warm-up) or {:.1} s",
        cores(),
        ROW_BUDGET.as_secs_f64()
    );
    if !membarrier {
        println!("membarrier SYNC_CORE unavailable: bare column omitted");
    }
    println!();
    println!("| strategy | busy | samples | bare p50 | bare p99 | Strong p50 | Strong p99 | Eventual p50 | Eventual p99 | Strong/bare | Eventual/bare |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for st in Strategy::ALL {
        if !st.is_available() {
            println!("| {st} | unavailable |");
            continue;
        }
        let rt = runtime(st);
        let mut target = Target::new(&rt, 1);
        for busy in [0, 1, 2, 4, 8] {
            let stubs = target.stubs;
            let (bare, strong, eventual) = with_busy(&[&rt], stubs, busy, || {
                let (mut bare, mut strong, mut eventual) = (vec![], vec![], vec![]);
                let start = Instant::now();
                for i in 0..WARMUP + n {
                    let b = if membarrier {
                        time(bare_membarrier_sync_core)
                    } else {
                        0
                    };
                    target.next();
                    let s = time(|| target.commit(&rt, Guarantee::Strong));
                    target.next();
                    let e = time(|| target.commit(&rt, Guarantee::Eventual));
                    if i >= WARMUP {
                        bare.push(b);
                        strong.push(s);
                        eventual.push(e);
                    }
                    if i >= WARMUP + 50 && start.elapsed() > ROW_BUDGET {
                        break;
                    }
                }
                (bare, strong, eventual)
            });
            let count = strong.len();
            let (b50, b99) = percentiles(bare);
            let (s50, s99) = percentiles(strong);
            let (e50, e99) = percentiles(eventual);
            println!(
                "| {st} | {busy} | {count} | {b50:.1} | {b99:.1} | {s50:.1} | {s99:.1} | {e50:.1} | {e99:.1} | {:.2} | {:.2} |",
                s50 / b50,
                e50 / b50
            );
        }
    }
    println!();
    println!("Latencies in microseconds (wall clock around each call).");
    println!();

    // Batching: one commit of 100 blobs (100 slots re-pointed, 100 blobs
    // retired) against one of 1 blob, same strategy, interleaved. Each target
    // has its own runtime, so each commit reclaims only what its own target
    // retired (with one runtime, the 1-blob commit would often free the
    // 100-blob commit's retirements); the busy threads are registered with
    // both and are quiescent in both after every call.
    println!("| strategy | guarantee | busy | samples | 1 blob p50 | 100 blobs p50 | 1 blob p99 | 100 blobs p99 | 100/1 (p50) | per extra blob (p50) | page faults |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let st = jitvm_runtime::select_strategy(None).unwrap();
    let (rt1, rt100) = (runtime(st), runtime(st));
    let mut one = Target::new(&rt1, 1);
    let mut hundred = Target::new(&rt100, 100);
    for g in [Guarantee::Strong, Guarantee::Eventual] {
        for busy in [0, 1, 2] {
            let stubs = one.stubs;
            let faults = minor_faults();
            let (a, b) = with_busy(&[&rt1, &rt100], stubs, busy, || {
                let (mut a, mut b) = (vec![], vec![]);
                let start = Instant::now();
                for i in 0..WARMUP + n {
                    one.next();
                    hundred.next();
                    let x = time(|| one.commit(&rt1, g));
                    let y = time(|| hundred.commit(&rt100, g));
                    if i >= WARMUP {
                        a.push(x);
                        b.push(y);
                    }
                    if i >= WARMUP + 50 && start.elapsed() > ROW_BUDGET {
                        break;
                    }
                }
                (a, b)
            });
            let faults = minor_faults() - faults;
            let count = a.len();
            let (a50, a99) = percentiles(a);
            let (b50, b99) = percentiles(b);
            println!(
                "| {st} | {g:?} | {busy} | {count} | {a50:.1} | {b50:.1} | {a99:.1} | {b99:.1} | {:.2} | {:.0} ns | {faults} |",
                b50 / a50,
                (b50 - a50) * 1000.0 / 99.0
            );
        }
    }
    println!();
    println!("Per extra blob: (100-blob p50 - 1-blob p50) / 99. Page faults: minor faults of the committing thread during the row.");
    for (name, rt) in [("1-blob", &rt1), ("100-blob", &rt100)] {
        let s = rt.stats();
        println!(
            "code memory of the {name} runtime after the batching runs: live {} B, retired {} B, high-water {} B",
            s.bytes_live, s.bytes_retired, s.high_water
        );
    }
}
