//! Hot-patching running code with `jitvm-runtime`: the example to copy.
//!
//! 1. create the runtime (code memory + a serialization strategy);
//! 2. assemble version 1 with dynasm and publish it behind two calls: a stub
//!    that calls through a dispatch slot (`jmp qword [slot]`, the sequence
//!    the JITs emit), and a function that reaches it by `call rel32` (patched
//!    while staged, and reached itself through a second slot);
//! 3. start threads that register and call both in a loop, inside `enter`;
//! 4. publish version 2 with a `Strong` commit while they run: from the moment
//!    `commit` returns, every call that starts returns 2;
//! 5. `synchronize`: version 1 goes from retired to reclaimed once every
//!    thread has passed a quiescent point;
//! 6. the same for code that threads are *inside*: a loop that polls each
//!    thread's own poll word is retired and replaced while three threads spin
//!    in it. They answer once (their stacks pin the old loop), run on at full
//!    speed, reach the new loop on their next call, and the old loop is
//!    reclaimed once they have returned out of it.
//!
//! Anything unexpected (a stale result, an error, a hang) ends the process
//! with a message and a non-zero status; a watchdog ends it after 60 s.
//!
//! Run: `cargo run --release --example hotpatch` (`RUST_LOG=info` for more).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::Duration;

use dynasm::dynasm;
use dynasmrt::x64::X64Relocation;
use dynasmrt::{DynasmApi, DynasmLabelApi, VecAssembler};
use jitvm_runtime::{
    jitvm_safepoint_slow, rel32_site_padding, x86_64_poll_compare, Blob, Config, DispatchSlot,
    Guarantee, Rel32Kind, Runtime, ThreadHandle, Transaction, NOP,
};

/// What JIT code looks like to Rust: a C-ABI function returning a number.
type JitFn = extern "sysv64" fn() -> i64;

type Failure = Box<dyn std::error::Error>;

/// A "compiled function": returns `version`.
fn assemble_version(version: i64) -> Vec<u8> {
    let mut ops = VecAssembler::<X64Relocation>::new(0);
    dynasm!(ops ; .arch x64 ; mov rax, QWORD version ; ret);
    ops.finalize().expect("assembles")
}

/// A function that reaches another by a direct `call rel32`; the commit that
/// publishes it fills in the displacement (sites are only patched while
/// nobody can run them). Returns (code, offset of the opcode).
fn assemble_direct_caller() -> (Vec<u8>, usize) {
    let mut ops = VecAssembler::<X64Relocation>::new(0);
    dynasm!(ops ; .arch x64 ; sub rsp, 8); // keep the stack 16-byte aligned
    let pad = rel32_site_padding(ops.offset().0);
    dynasm!(ops ; .arch x64 ; .bytes std::iter::repeat(NOP).take(pad));
    let site = ops.offset().0;
    dynasm!(ops ; .arch x64 ; .bytes [0xE8u8, 0, 0, 0, 0] ; add rsp, 8 ; ret);
    (ops.finalize().expect("assembles"), site)
}

/// A stub that tail-calls through a dispatch slot: `jmp qword [slot]`, load
/// and transfer in one instruction (what `Guarantee::Strong` covers).
fn assemble_slot_stub(slot: &DispatchSlot) -> Vec<u8> {
    let mut ops = VecAssembler::<X64Relocation>::new(0);
    dynasm!(ops
        ; .arch x64
        ; mov rax, QWORD slot.as_ptr() as i64
        ; jmp QWORD [rax]
    );
    ops.finalize().expect("assembles")
}

/// Stages version `k` and a direct caller of it; returns both.
fn stage_version(rt: &Runtime, tx: &mut Transaction<'_>, k: i64) -> Result<(Blob, Blob), Failure> {
    let v = tx.stage(&assemble_version(k), 16)?;
    let (code, at) = assemble_direct_caller();
    let direct = tx.stage(&code, 16)?;
    tx.patch_rel32(rt.rel32_site(direct, at, Rel32Kind::Call)?, v.addr())?;
    tx.set_owner(v, k as u64)?;
    Ok((v, direct))
}

/// Calls both stubs inside `enter`.
fn call_both(me: &ThreadHandle, stubs: [Blob; 2]) -> [i64; 2] {
    me.enter(|scope| {
        stubs.map(|s| {
            // SAFETY: the stubs are published JitFn code, never retired.
            let f: JitFn = unsafe { scope.func(s.code()) };
            f()
        })
    })
}

fn main() {
    env_logger::init();
    // A hang is a failure too. The watchdog never finishes (it ends the process), so the
    // detach when its handle drops at the end of `main` cannot race its exit.
    let _watchdog = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(60));
        eprintln!("hotpatch: FAILED: still running after 60 s");
        std::process::exit(2);
    });
    if let Err(e) = run() {
        eprintln!("hotpatch: FAILED: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Failure> {
    // 1. The runtime. Poison mode fills reclaimed code with int3, so a bug
    //    that ran freed code would crash here instead of going unnoticed.
    let rt = Runtime::new(Config {
        poison: true,
        quarantine_bytes: 0,
        ..Config::default()
    })?;
    println!("sync strategy: {}", rt.strategy());
    // This thread calls JIT code too, so it registers.
    let me = rt.register_thread()?;

    // 2. Publish version 1, its direct caller and both stubs in one
    //    transaction. Nothing can run staged bytes until commit.
    let slot = rt.dispatch_slot(0);
    let direct_slot = rt.dispatch_slot(0);
    let mut tx = rt.transaction();
    let (v1, direct1) = stage_version(&rt, &mut tx, 1)?;
    let stubs = [
        tx.stage(&assemble_slot_stub(&slot), 16)?,
        tx.stage(&assemble_slot_stub(&direct_slot), 16)?,
    ];
    tx.set_dispatch(&slot, v1.addr())?;
    tx.set_dispatch(&direct_slot, direct1.addr())?;
    tx.commit(Guarantee::Strong)?;
    println!("published v1 at {:#x}", v1.addr());
    if call_both(&me, stubs) != [1, 1] {
        return Err("v1 not reached".into());
    }

    // 3. Threads that run JIT code register, enter for each call, and call
    //    `quiescent()` where they hold no code address (between calls).
    let published = AtomicU64::new(1); // the newest version whose commit returned
    let stop = AtomicBool::new(false);
    let stale = AtomicU64::new(0);
    let calls = AtomicU64::new(0);
    let started = Barrier::new(4);
    std::thread::scope(|s| -> Result<(), Failure> {
        for _ in 0..3 {
            s.spawn(|| {
                let me = rt.register_thread();
                started.wait();
                let me = match me {
                    Ok(me) => me,
                    Err(e) => {
                        eprintln!("hotpatch: FAILED: register_thread: {e}");
                        std::process::exit(1);
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    let before = published.load(Ordering::Acquire) as i64;
                    for got in call_both(&me, stubs) {
                        if got < before {
                            stale.fetch_add(1, Ordering::Relaxed); // never happens
                        }
                    }
                    calls.fetch_add(2, Ordering::Relaxed);
                    me.quiescent();
                }
            });
        }
        started.wait();
        std::thread::sleep(Duration::from_millis(50));

        // 4. Version 2: stage, re-point both slots, retire v1, commit Strong.
        let result = (|| -> Result<(), Failure> {
            let mut tx = rt.transaction();
            let (v2, direct2) = stage_version(&rt, &mut tx, 2)?;
            tx.set_dispatch(&slot, v2.addr())?;
            tx.set_dispatch(&direct_slot, direct2.addr())?;
            tx.retire(v1)?;
            tx.retire(direct1)?;
            let info = tx.commit(Guarantee::Strong)?;
            published.store(2, Ordering::Release);
            println!(
                "published v2 at {:#x} with {} core serializations; {} calls so far",
                v2.addr(),
                info.serializations,
                calls.load(Ordering::Relaxed)
            );
            // Every call that starts now returns 2, on this thread too.
            if call_both(&me, stubs) != [2, 2] {
                return Err("a call after the Strong commit did not reach v2".into());
            }
            me.quiescent();
            println!("v1 is retired: {:?}", rt.stats());

            // 5. Wait until every thread has moved past v1: it is reclaimed
            //    (poisoned and freed). An error names the threads in the way.
            std::thread::sleep(Duration::from_millis(50));
            rt.synchronize(Duration::from_secs(10))?;
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        result
    })?;
    let stats = rt.stats();
    println!("v1 reclaimed:  {stats:?}");
    let stale = stale.load(Ordering::Relaxed);
    println!(
        "{} calls, {stale} returned a version older than the one published before the call",
        calls.load(Ordering::Relaxed)
    );
    if stale != 0 {
        return Err(format!("{stale} calls ran replaced code").into());
    }
    if stats.bytes_retired != 0 || stats.bytes_freed == 0 || rt.lookup(v1.addr()).is_some() {
        return Err("v1 was not reclaimed".into());
    }
    replace_a_running_loop(&rt, &me)
}

/// A loop that polls: `fn(stop: *const AtomicBool, poll: *const AtomicU32) -> i64`. It spins
/// until `*stop`, testing the calling thread's poll word at every iteration with the
/// runtime's one-instruction compare (the JIT's poll), and returns `version`.
fn assemble_polling_loop(version: i64) -> Vec<u8> {
    const RBX: u8 = 3;
    let poll = x86_64_poll_compare(RBX, 0).expect("a register");
    let slow = jitvm_safepoint_slow as *const () as i64;
    let mut ops = VecAssembler::<X64Relocation>::new(0);
    dynasm!(ops
        ; .arch x64
        ; push rbx                 // callee-saved: they survive the slow path's call
        ; push r12
        ; sub rsp, 8               // rsp 16-byte aligned at the call
        ; mov rbx, rsi             // the poll word
        ; mov r12, rdi             // the stop flag
        ; top:
        ; .bytes poll              // cmp dword [rbx], 0
        ; jne >slow
        ; back:
        ; cmp BYTE [r12], 0
        ; je <top
        ; mov rax, QWORD version
        ; add rsp, 8
        ; pop r12
        ; pop rbx
        ; ret
        ; slow:                    // asked to report: the runtime's native safepoint
        ; mov rax, QWORD slow
        ; call rax
        ; jmp <back
    );
    ops.finalize().expect("assembles")
}

type LoopFn = extern "sysv64" fn(*const AtomicBool, *const AtomicU32) -> i64;

/// Step 6: retire and replace a polling loop while threads spin in it.
fn replace_a_running_loop(rt: &std::sync::Arc<Runtime>, me: &ThreadHandle) -> Result<(), Failure> {
    let slot = rt.dispatch_slot(0);
    let mut tx = rt.transaction();
    let loop1 = tx.stage(&assemble_polling_loop(1), 16)?;
    let stub = tx.stage(&assemble_slot_stub(&slot), 16)?;
    tx.set_dispatch(&slot, loop1.addr())?;
    tx.commit(Guarantee::Strong)?;
    let (stop_first, stop_second) = (AtomicBool::new(false), AtomicBool::new(false));
    let spinning = Barrier::new(4);
    let got = std::thread::scope(|s| -> Result<Vec<[i64; 2]>, Failure> {
        let threads: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let me = rt.register_thread().expect("registers");
                    me.enter(|scope| {
                        // SAFETY: the stub tail-calls the slot's loop, a LoopFn; every loop
                        // the slot reaches stays published while it runs.
                        let f: LoopFn = unsafe { scope.func(stub.code()) };
                        spinning.wait();
                        let first = f(&stop_first, me.poll_word());
                        // Out of the old loop, still inside native code: the next call
                        // starts the new one.
                        let second = f(&stop_second, me.poll_word());
                        [first, second]
                    })
                })
            })
            .collect();
        spinning.wait();
        std::thread::sleep(Duration::from_millis(20));
        // Publish loop 2 and retire loop 1, which all three threads are running.
        let mut tx = rt.transaction();
        let loop2 = tx.stage(&assemble_polling_loop(2), 16)?;
        tx.set_dispatch(&slot, loop2.addr())?;
        tx.retire(loop1)?;
        tx.commit(Guarantee::Strong)?;
        me.quiescent(); // this thread holds no code address: only the spinners' stacks do
        std::thread::sleep(Duration::from_millis(300));
        let polls = rt.slow_polls();
        let pinned = rt.lookup(loop1.addr()).is_some_and(|b| b.retired);
        println!(
            "loop 1 retired while 3 threads spin in it: still kept ({pinned}), {polls} slow \
             paths in 300 ms (each thread answered, then looked again now and then)"
        );
        stop_first.store(true, Ordering::Release);
        // The threads return out of loop 1 into loop 2: once they have, it is reclaimed.
        rt.synchronize(Duration::from_secs(10))?;
        let reclaimed = rt.lookup(loop1.addr()).is_none();
        stop_second.store(true, Ordering::Release);
        let got = threads
            .into_iter()
            .map(|t| t.join().expect("no panic"))
            .collect();
        if !pinned || !reclaimed {
            return Err(
                format!("loop 1 kept while run: {pinned}, then reclaimed: {reclaimed}").into(),
            );
        }
        // 3 threads, intervals from 1 ms doubling: about 10 looks each in 300 ms.
        if polls > 100 {
            return Err(format!(
                "{polls} slow paths: threads in retired code were asked again and again"
            )
            .into());
        }
        Ok(got)
    })?;
    println!(
        "each thread returned {:?} (loop 1, then loop 2); loop 1 reclaimed",
        got[0]
    );
    if got.iter().any(|g| *g != [1, 2]) {
        return Err(format!("unexpected loop versions: {got:?}").into());
    }
    Ok(())
}
