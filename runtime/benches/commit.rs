//! Commit latency per strategy and guarantee, each against its own bare
//! serialization and against a bare
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)`, measured in the
//! same run with the same busy threads; then a commit of 1 blob against 100.
//!
//! Busy threads are registered threads spinning on calls through the patched
//! dispatch slot (`call qword [rax]` and `jmp qword [rax]` stubs, inside
//! `enter`), calling `quiescent()` after each. They are either *spread* over
//! all CPUs (round-robin from CPU 1, so the first avoids the committer's CPU
//! 0 and later ones share it) or *packed* on the last CPU. Bare calls and commits are interleaved sample by
//! sample so all see the same conditions. Each row stops at `JITVM_BENCH_N`
//! samples (default 2000, after 100 of warm-up) or after about 1 s.
//!
//! Only the commit path is timed: the transaction (stage = allocate + copy,
//! slot patches, retirements) and `commit`. The version's bytes are built
//! beforehand (compiling is not publishing).
//!
//! Run: `cargo bench -p jitvm-runtime` (prints Markdown tables).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jitvm_runtime::{
    bare_membarrier_sync_core, Blob, CodePtr, Config, DispatchSlot, Guarantee, Runtime, Strategy,
};

const WARMUP: usize = 100;
const ROW_BUDGET: Duration = Duration::from_millis(1000);

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

/// `mov rax, slot; jmp [rax]` (tail) or `sub rsp,8; mov rax, slot; call [rax]; add rsp,8; ret`.
fn stub(slot: &DispatchSlot, call: bool) -> Vec<u8> {
    let mut v = Vec::new();
    if call {
        v.extend_from_slice(&[0x48, 0x83, 0xEC, 0x08]);
    }
    v.extend_from_slice(&[0x48, 0xB8]);
    v.extend_from_slice(&(slot.as_ptr() as u64).to_le_bytes());
    if call {
        v.extend_from_slice(&[0xFF, 0x10, 0x48, 0x83, 0xC4, 0x08, 0xC3]);
    } else {
        v.extend_from_slice(&[0xFF, 0x20]);
    }
    v
}

type CodeFn = extern "sysv64" fn() -> u32;

/// What a commit replaces: `blobs` versions behind as many slots; the first
/// slot is what the busy threads call.
struct Target {
    slots: Vec<std::sync::Arc<DispatchSlot>>,
    stubs: [usize; 2],
    current: Vec<Blob>,
    spare: Vec<Blob>,
    code: Vec<u8>,
    k: u32,
}

impl Target {
    fn new(rt: &Runtime, blobs: usize) -> Target {
        let slots: Vec<_> = (0..blobs).map(|_| rt.dispatch_slot(0)).collect();
        let mut tx = rt.transaction();
        let c = tx.stage(&stub(&slots[0], true), 16).unwrap();
        let j = tx.stage(&stub(&slots[0], false), 16).unwrap();
        tx.commit(Guarantee::Strong).unwrap();
        let mut t = Target {
            stubs: [c.addr(), j.addr()],
            slots,
            current: Vec::with_capacity(blobs),
            spare: Vec::with_capacity(blobs),
            code: Vec::new(),
            k: 0,
        };
        t.next();
        t.commit(rt, Guarantee::Strong);
        t
    }

    fn next(&mut self) {
        self.k += 1;
        self.code = version(self.k);
    }

    fn commit(&mut self, rt: &Runtime, g: Guarantee) {
        let mut tx = rt.transaction();
        let mut new = std::mem::take(&mut self.spare);
        for slot in &self.slots {
            let b = tx.stage(&self.code, 16).unwrap();
            tx.set_dispatch(slot, b.addr()).unwrap();
            new.push(b);
        }
        for b in self.current.drain(..) {
            tx.retire(b).unwrap();
        }
        tx.commit(g).unwrap();
        self.spare = std::mem::replace(&mut self.current, new);
    }
}

fn p50_p99(mut v: Vec<u64>) -> (f64, f64) {
    v.sort_unstable();
    let at = |p: usize| v[(v.len() * p / 100).min(v.len() - 1)] as f64 / 1000.0;
    (at(50), at(99))
}

#[derive(Clone, Copy)]
enum Placement {
    Spread,
    Packed,
}

/// Runs `f` with `busy` threads spinning through `stubs`, registered with
/// `rt` and quiescent after every round of calls.
fn with_busy<R>(
    rt: &Arc<Runtime>,
    stubs: [usize; 2],
    busy: usize,
    place: Placement,
    f: impl FnOnce() -> R,
) -> R {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for i in 0..busy {
            let stop = &stop;
            s.spawn(move || {
                match place {
                    Placement::Spread => pin((i + 1) % cores()),
                    Placement::Packed => pin(cores() - 1),
                }
                let me = rt.register_thread().unwrap();
                while !stop.load(Ordering::Relaxed) {
                    me.enter(|scope| {
                        for stub in stubs {
                            // SAFETY: stubs are never retired while rt lives.
                            let f: CodeFn = unsafe { scope.func(CodePtr::new(stub)) };
                            std::hint::black_box(f());
                        }
                    });
                    me.quiescent();
                }
            });
        }
        while rt.registered_threads() < busy {
            std::thread::yield_now();
        }
        let r = f();
        stop.store(true, Ordering::Relaxed);
        r
    })
}

/// Pins the calling thread to `cpu` (best effort).
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes within it;
    // sched_setaffinity(0, ...) only changes this thread's affinity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// CPUs available, read once before any pinning.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn time(f: impl FnOnce()) -> u64 {
    let t = Instant::now();
    f();
    t.elapsed().as_nanos() as u64
}

fn runtime(st: Strategy) -> Arc<Runtime> {
    Runtime::new(Config {
        capacity: 64 << 20,
        strategy: Some(st),
        poison: false,
        ..Config::default()
    })
    .unwrap()
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.05 {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

fn main() {
    let n = samples_wanted();
    cores();
    pin(0);
    let membarrier = Strategy::Membarrier.is_available();
    println!(
        "cores: {} (committer pinned to CPU 0; busy threads spread round-robin over all CPUs from CPU 1, or packed on CPU {}), samples per row: up to {n} (after {WARMUP} warm-up) or {:.1} s",
        cores(),
        cores() - 1,
        ROW_BUDGET.as_secs_f64()
    );
    println!();
    println!("| strategy | busy | own bare p50 | SYNC_CORE p50 | Strong p50 | Strong p99 | Eventual p50 | Eventual p99 | Strong/own | Eventual/own | Strong/SYNC_CORE | Eventual/SYNC_CORE |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut bare_sync_core_busy = Vec::new();
    for st in Strategy::ALL {
        if !st.is_available() {
            println!("| {st} | unavailable | | | | | | | | | | |");
            continue;
        }
        let rt = runtime(st);
        let mut target = Target::new(&rt, 1);
        let configs = [
            (0, Placement::Spread),
            (1, Placement::Spread),
            (2, Placement::Spread),
            (4, Placement::Spread),
            (2, Placement::Packed),
            (4, Placement::Packed),
        ];
        for (busy, place) in configs {
            let stubs = target.stubs;
            let (own, sync, strong, eventual) = with_busy(&rt, stubs, busy, place, || {
                let (mut own, mut sync, mut strong, mut eventual) =
                    (vec![], vec![], vec![], vec![]);
                let start = Instant::now();
                for i in 0..WARMUP + n {
                    let o = time(|| rt.bare_serialize().unwrap());
                    let b = if membarrier {
                        time(|| bare_membarrier_sync_core().unwrap())
                    } else {
                        0
                    };
                    target.next();
                    let s = time(|| target.commit(&rt, Guarantee::Strong));
                    target.next();
                    let e = time(|| target.commit(&rt, Guarantee::Eventual));
                    if i >= WARMUP {
                        own.push(o);
                        sync.push(b);
                        strong.push(s);
                        eventual.push(e);
                    }
                    if i >= WARMUP + 50 && start.elapsed() > ROW_BUDGET {
                        break;
                    }
                }
                (own, sync, strong, eventual)
            });
            let (o50, _) = p50_p99(own);
            let (b50, _) = p50_p99(sync);
            let (s50, s99) = p50_p99(strong);
            let (e50, e99) = p50_p99(eventual);
            if busy > 0 && st == Strategy::Membarrier {
                bare_sync_core_busy.push(b50);
            }
            let busy = match place {
                Placement::Spread if busy > 0 => format!("{busy} spread"),
                Placement::Packed => format!("{busy} packed"),
                _ => "0".into(),
            };
            println!(
                "| {st} | {busy} | {o50:.1} | {b50:.1} | {s50:.1} | {s99:.1} | {e50:.1} | {e99:.1} | {} | {} | {} | {} |",
                ratio(s50, o50),
                ratio(e50, o50),
                ratio(s50, b50),
                ratio(e50, b50)
            );
        }
    }
    println!();
    println!("Latencies in microseconds (wall clock around each call). `own bare`: one serialization of the row's strategy alone (for `none`: nothing).");
    println!();

    // Batching: one commit of 100 blobs (100 slots re-pointed, 100 blobs
    // retired) against one of 1 blob, interleaved, each on its own runtime.
    // Busy threads are registered with the 1-blob runtime (a thread has one
    // registration); the 100-blob runtime has no registered threads, so its
    // serializations with membarrier still interrupt them (process-wide).
    println!("| strategy | guarantee | busy | samples | 1 blob p50 | 100 blobs p50 | 100/1 (p50) | per extra blob (p50) |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let st = jitvm_runtime::select_strategy(None).unwrap();
    let (rt1, rt100) = (runtime(st), runtime(st));
    let mut one = Target::new(&rt1, 1);
    let mut hundred = Target::new(&rt100, 100);
    let mut per_slot = f64::NAN;
    for g in [Guarantee::Strong, Guarantee::Eventual] {
        for busy in [0, 1] {
            let stubs = one.stubs;
            let (a, b) = with_busy(&rt1, stubs, busy, Placement::Spread, || {
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
            let count = a.len();
            let (a50, _) = p50_p99(a);
            let (b50, _) = p50_p99(b);
            let extra = (b50 - a50) * 1000.0 / 99.0;
            if busy == 0 && g == Guarantee::Strong {
                per_slot = extra;
            }
            println!(
                "| {st} | {g:?} | {busy} | {count} | {a50:.1} | {b50:.1} | {:.2} | {extra:.0} ns |",
                b50 / a50
            );
        }
    }
    println!();
    println!("Per extra blob: (100-blob p50 - 1-blob p50) / 99: stage, re-point a slot, retire, reclaim.");
    if let Some(b) = bare_sync_core_busy.iter().copied().reduce(f64::min) {
        println!();
        println!(
            "Live call patching: a dispatch-slot patch costs about {per_slot:.0} ns per extra slot in a batch (above) and no extra serialization; \
             Linux-style text_poke_bp on a live `call rel32` would need 3 serializations per batch, about {:.1} us at the bare SYNC_CORE p50 with busy threads ({b:.1} us), \
             i.e. {:.1}x a Strong commit's 2.",
            3.0 * b,
            1.5
        );
    }
}
