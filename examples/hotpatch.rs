//! Hot-patching running code with `jitvm-runtime`: the example to copy.
//!
//! 1. create the runtime (code memory + a serialization strategy);
//! 2. assemble version 1 with dynasm and publish it behind two patch sites, a
//!    dispatch slot (indirect call) and a `call rel32`;
//! 3. start threads that register and call through both sites in a loop;
//! 4. publish version 2 with a `Strong` commit while they run: from the moment
//!    `commit` returns, every call that starts returns 2;
//! 5. watch version 1 go from retired to freed once every thread has passed a
//!    quiescent point.
//!
//! Run: `cargo run --release --example hotpatch` (`RUST_LOG=info` for more).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::Duration;

use dynasm::dynasm;
use dynasmrt::x64::X64Relocation;
use dynasmrt::{DynasmApi, VecAssembler};
use jitvm_runtime::{rel32_site_padding, Config, DispatchSlot, Guarantee, Rel32Kind, Runtime, NOP};

/// What JIT code looks like to Rust: a C-ABI function returning a number.
type JitFn = extern "sysv64" fn() -> i64;

/// A "compiled function": returns `version`. Position-independent, so it can
/// be assembled before we know where it will live.
fn assemble_version(version: i64) -> Vec<u8> {
    let mut ops = VecAssembler::<X64Relocation>::new(0);
    dynasm!(ops
        ; .arch x64
        ; mov rax, QWORD version
        ; ret
    );
    ops.finalize().unwrap()
}

/// A caller that reaches the function through a direct `call rel32`. The
/// runtime patches the call's 4-byte displacement with one atomic store, which
/// is only atomic for instruction fetch if it is 4-byte aligned: pad with
/// `rel32_site_padding` before the opcode. Returns (code, offset of opcode).
fn assemble_direct_caller() -> (Vec<u8>, usize) {
    let mut ops = VecAssembler::<X64Relocation>::new(0);
    dynasm!(ops ; .arch x64 ; sub rsp, 8); // keep the stack 16-byte aligned
    let pad = rel32_site_padding(ops.offset().0);
    dynasm!(ops ; .arch x64 ; .bytes std::iter::repeat(NOP).take(pad));
    let site = ops.offset().0;
    // E8 + disp32: the displacement is filled in by the commit.
    dynasm!(ops ; .arch x64 ; .bytes [0xE8u8, 0, 0, 0, 0] ; add rsp, 8 ; ret);
    (ops.finalize().unwrap(), site)
}

/// A caller that reaches the function through a dispatch slot: load the code
/// pointer from memory, call it.
fn assemble_indirect_caller(slot: &DispatchSlot) -> Vec<u8> {
    let mut ops = VecAssembler::<X64Relocation>::new(0);
    dynasm!(ops
        ; .arch x64
        ; mov rax, QWORD slot.as_ptr() as i64
        ; jmp QWORD [rax]
    );
    ops.finalize().unwrap()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();

    // 1. The runtime. Poison mode fills reclaimed code with int3, so a bug
    //    that ran freed code would crash here instead of going unnoticed.
    let rt = Runtime::new(Config {
        poison: true,
        quarantine_bytes: 0,
        ..Config::default()
    })?;
    println!("sync strategy: {}", rt.strategy());

    // 2. Publish version 1 and both callers in one transaction. Staging copies
    //    bytes into the writable view; nothing can run them until commit.
    let slot = DispatchSlot::new(0);
    let (direct_code, site_offset) = assemble_direct_caller();
    let mut tx = rt.transaction();
    let v1 = tx.stage(&assemble_version(1), 16)?;
    let direct = tx.stage(&direct_code, 16)?;
    let indirect = tx.stage(&assemble_indirect_caller(&slot), 16)?;
    let site = rt.rel32_site(direct, site_offset, Rel32Kind::Call)?;
    tx.set_dispatch(&slot, v1.addr());
    tx.patch_rel32(site, v1.addr())?;
    tx.commit(Guarantee::Strong)?;
    println!("published v1 at {:#x}", v1.addr());

    // SAFETY: both callers are published blobs with the JitFn ABI, and are
    // never retired while the threads below use them.
    let callers: [JitFn; 2] = unsafe {
        [
            std::mem::transmute::<usize, JitFn>(direct.addr()),
            std::mem::transmute::<usize, JitFn>(indirect.addr()),
        ]
    };

    // 3. Threads that run JIT code register, and call `quiescent()` where they
    //    hold no code address (here: between calls).
    let published = AtomicU64::new(1); // the newest version whose commit returned
    let stop = AtomicBool::new(false);
    let stale = AtomicU64::new(0);
    let calls = AtomicU64::new(0);
    let started = Barrier::new(4);
    std::thread::scope(|s| -> Result<(), jitvm_runtime::Error> {
        for _ in 0..3 {
            s.spawn(|| {
                let me = rt.register_thread();
                started.wait();
                while !stop.load(Ordering::Relaxed) {
                    for f in callers {
                        let before = published.load(Ordering::Acquire) as i64;
                        let got = f();
                        if got < before {
                            stale.fetch_add(1, Ordering::Relaxed); // never happens
                        }
                        calls.fetch_add(1, Ordering::Relaxed);
                        me.quiescent();
                    }
                }
            });
        }
        started.wait();
        std::thread::sleep(Duration::from_millis(50));

        // 4. Version 2: stage, re-point both sites, retire v1, commit Strong.
        let mut tx = rt.transaction();
        let v2 = tx.stage(&assemble_version(2), 16)?;
        tx.set_dispatch(&slot, v2.addr());
        tx.patch_rel32(site, v2.addr())?;
        tx.retire(v1);
        let info = tx.commit(Guarantee::Strong)?;
        published.store(2, Ordering::Release);
        println!(
            "published v2 at {:#x} with {} core serializations; {} calls so far",
            v2.addr(),
            info.serializations,
            calls.load(Ordering::Relaxed)
        );
        // Every call that starts now returns 2, on this thread too.
        assert_eq!(callers.map(|f| f()), [2, 2]);
        println!("v1 is retired: {:?}", rt.stats());

        // 5. Let the threads run on: each passes a quiescent point, after
        //    which v1 can be reclaimed (here, poisoned and freed).
        std::thread::sleep(Duration::from_millis(50));
        rt.reclaim();
        stop.store(true, Ordering::Relaxed);
        Ok(())
    })?;
    rt.reclaim();
    let stats = rt.stats();
    println!("v1 reclaimed:  {stats:?}");
    println!(
        "{} calls, {} returned a version older than the one published before the call",
        calls.load(Ordering::Relaxed),
        stale.load(Ordering::Relaxed)
    );
    assert_eq!(stale.load(Ordering::Relaxed), 0);
    assert_eq!(stats.bytes_retired, 0);
    assert!(stats.bytes_freed > 0);
    Ok(())
}
