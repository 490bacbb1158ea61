//! Behaviour of the public API: patch sites, W^X, reclamation ordering,
//! batching, poison mode, errors, and every strategy.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::Duration;

use common::{as_fn, call_stubs, version, Sites};
use jitvm_runtime::{Config, Error, Guarantee, Rel32Kind, Runtime, Strategy};

fn runtime(poison: bool) -> Runtime {
    Runtime::new(Config {
        capacity: 4 << 20,
        poison,
        quarantine_bytes: 4096,
        ..Config::default()
    })
    .unwrap()
}

#[test]
fn patch_sites_round_trip() {
    let rt = runtime(false);
    let mut sites = Sites::publish(&rt, 1);
    assert_eq!(sites.call_all(), [1, 1, 1]);
    assert_eq!(sites.call_site.target(), sites.current.addr());
    assert_eq!(sites.jmp_site.target(), sites.current.addr());
    for k in 2..50 {
        sites.replace(&rt, k, Guarantee::Strong);
        assert_eq!(sites.call_all(), [k, k, k]);
        assert_eq!(sites.slot.get(), sites.current.addr());
        assert_eq!(sites.call_site.target(), sites.current.addr());
    }
    // The instruction bytes of a site: opcode + aligned displacement.
    let op = sites.call_site.addr();
    // SAFETY: the site is inside a published blob of the readable RX view.
    assert_eq!(unsafe { *(op as *const u8) }, 0xE8);
    assert_eq!((op + 1) % 4, 0);
}

#[test]
fn code_is_never_writable_and_executable() {
    let rt = runtime(false);
    let sites = Sites::publish(&rt, 7);
    assert_eq!(sites.call_all(), [7, 7, 7]);
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let ours: Vec<&str> = maps.lines().filter(|l| l.contains("jitvm-code")).collect();
    assert!(ours.len() >= 2, "expected RW and RX views: {ours:?}");
    for l in &ours {
        let perms = l.split_whitespace().nth(1).unwrap();
        assert!(
            !(perms.contains('w') && perms.contains('x')),
            "W+X mapping: {l}"
        );
    }
    assert!(ours.iter().any(|l| l.contains(" rw-s ")));
    assert!(ours.iter().any(|l| l.contains(" r-xs ")));
    // And nothing else in the process is W+X either.
    for l in maps.lines() {
        let perms = l.split_whitespace().nth(1).unwrap();
        assert!(!(perms.contains('w') && perms.contains('x')), "{l}");
    }
}

#[test]
fn strong_retirement_waits_for_quiescence() {
    let rt = runtime(false);
    let me = rt.register_thread();
    let mut sites = Sites::publish(&rt, 1);
    let old = sites.current;
    let info = sites.replace(&rt, 2, Guarantee::Strong);
    assert_eq!(info.serializations, 2);
    // This thread has not been quiescent since the commit: the old version
    // must still be there.
    assert_eq!(rt.pending_retirements(), 1);
    assert!(rt.stats().bytes_retired >= old.len());
    assert_eq!(rt.reclaim(), 0);
    me.quiescent();
    assert_eq!(rt.reclaim(), 1);
    assert_eq!(rt.stats().bytes_retired, 0);
    assert_eq!(rt.pending_retirements(), 0);
}

#[test]
fn eventual_retirement_waits_for_a_later_serialization() {
    let rt = runtime(false);
    let me = rt.register_thread();
    let mut sites = Sites::publish(&rt, 1);
    let info = sites.replace(&rt, 2, Guarantee::Eventual);
    assert_eq!(info.serializations, 1);
    // Quiescent, but no serialization has happened since the patch: a core
    // may still start the old version, so it is not reclaimable.
    me.quiescent();
    assert_eq!(rt.reclaim(), 0);
    assert_eq!(rt.pending_retirements(), 1);
    // The next commit's first serialization covers it; this thread must
    // then pass one more quiescent point.
    let info = rt.transaction().commit(Guarantee::Eventual).unwrap();
    assert_eq!(info.serializations, 1);
    assert_eq!(rt.reclaim(), 0);
    me.quiescent();
    assert_eq!(rt.reclaim(), 1);
    assert_eq!(sites.call_all(), [2, 2, 2]);
}

#[test]
fn entered_thread_blocks_reclamation_until_it_leaves() {
    let rt = runtime(false);
    let me = rt.register_thread();
    let mut sites = Sites::publish(&rt, 1);
    let entry = me.enter(); // as if an activation of version 1 were on the stack
    sites.replace(&rt, 2, Guarantee::Strong);
    me.quiescent(); // a safepoint poll from inside JIT code
    assert_eq!(rt.reclaim(), 0, "an activation begun before retirement");
    // A nested entry does not move the oldest entry.
    drop(me.enter());
    me.quiescent();
    assert_eq!(rt.reclaim(), 0);
    drop(entry);
    assert_eq!(rt.reclaim(), 1);
    // An entry begun after the retirement does not block it.
    let _e = me.enter();
    sites.replace(&rt, 3, Guarantee::Strong);
    assert_eq!(rt.reclaim(), 0);
    drop(_e);
    me.quiescent();
    assert_eq!(rt.reclaim(), 1);
}

#[test]
fn blocked_and_departed_threads_do_not_block_reclamation() {
    let rt = runtime(false);
    let mut sites = Sites::publish(&rt, 1);
    let go = Barrier::new(2);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let h = rt.register_thread();
            h.blocking(|| {
                go.wait();
                while !done.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
        });
        go.wait();
        sites.replace(&rt, 2, Guarantee::Strong);
        assert_eq!(rt.pending_retirements(), 0, "offline thread ignored");
        done.store(true, Ordering::Release);
    });
    // A thread that registered and left does not count either.
    std::thread::scope(|s| {
        s.spawn(|| drop(rt.register_thread()));
    });
    assert_eq!(rt.registered_threads(), 0);
    sites.replace(&rt, 3, Guarantee::Strong);
    assert_eq!(rt.pending_retirements(), 0);
}

#[test]
fn serializations_do_not_grow_with_the_batch() {
    let rt = runtime(false);
    let slots: Vec<_> = (0..100)
        .map(|_| jitvm_runtime::DispatchSlot::new(0))
        .collect();
    for n in [1usize, 100] {
        for g in [Guarantee::Strong, Guarantee::Eventual] {
            let before = rt.serializations();
            let mut tx = rt.transaction();
            for (i, slot) in slots.iter().take(n).enumerate() {
                let b = tx.stage(&version(i as i64), 16).unwrap();
                tx.set_dispatch(slot, b.addr());
            }
            let info = tx.commit(g).unwrap();
            let expect = if g == Guarantee::Strong { 2 } else { 1 };
            assert_eq!(info.serializations, expect);
            assert_eq!(rt.serializations() - before, expect as u64);
            for (i, slot) in slots.iter().take(n).enumerate() {
                // SAFETY: the slot points at a published version blob.
                assert_eq!(unsafe { as_fn(slot.get()) }(), i as i64);
            }
        }
    }
}

#[test]
fn poison_mode_fills_reclaimed_code_with_int3_and_stays_bounded() {
    let rt = runtime(true);
    let mut sites = Sites::publish(&rt, 1);
    let old = sites.current;
    sites.replace(&rt, 2, Guarantee::Strong);
    // No registered threads: reclaimed (poisoned) at once.
    assert_eq!(rt.pending_retirements(), 0);
    // SAFETY: the blob is quarantined (not reused), still inside the RX view.
    let bytes = unsafe { std::slice::from_raw_parts(old.entry(), old.len()) };
    assert!(bytes.iter().all(|&b| b == 0xCC), "{bytes:x?}");
    for k in 3..2000 {
        sites.replace(&rt, k, Guarantee::Strong);
    }
    let s = rt.stats();
    assert!(s.bytes_quarantined <= 4096, "{s:?}");
    assert!(s.high_water < 16 << 10, "{s:?}");
    assert!(s.bytes_freed > 0);
    assert_eq!(sites.call_all(), [1999, 1999, 1999]);
}

#[test]
fn misuse_is_an_error_and_changes_nothing() {
    let rt = runtime(false);
    let mut sites = Sites::publish(&rt, 1);
    // Retiring twice.
    let v = sites.current;
    sites.replace(&rt, 2, Guarantee::Strong);
    let mut tx = rt.transaction();
    tx.retire(v);
    assert!(matches!(
        tx.commit(Guarantee::Strong),
        Err(Error::InvalidBlob)
    ));
    // A failed commit leaves the sites alone.
    let mut tx = rt.transaction();
    let b = tx.stage(&version(9), 16).unwrap();
    tx.set_dispatch(&sites.slot, b.addr());
    tx.retire(sites.current);
    tx.retire(sites.current);
    assert!(tx.commit(Guarantee::Strong).is_err());
    assert_eq!(sites.call_all(), [2, 2, 2]);
    assert_eq!(rt.stats().bytes_retired, 0);
    // A site with a misaligned displacement or a wrong opcode.
    let mut tx = rt.transaction();
    let b = tx
        .stage(&[0x90, 0x90, 0x90, 0xE8, 0, 0, 0, 0, 0xC3], 16)
        .unwrap();
    assert!(rt.rel32_site(b, 3, Rel32Kind::Call).is_ok());
    assert!(rt.rel32_site(b, 3, Rel32Kind::Jmp).is_err());
    assert!(rt.rel32_site(b, 2, Rel32Kind::Call).is_err());
    assert!(rt.rel32_site(b, 7, Rel32Kind::Call).is_err());
    drop(tx); // uncommitted: staged blob freed
    assert!(rt.rel32_site(b, 3, Rel32Kind::Call).is_err());
    // Exhaustion.
    let mut tx = rt.transaction();
    assert!(matches!(
        tx.stage(&vec![0; 8 << 20], 16),
        Err(Error::OutOfCodeMemory { .. })
    ));
}

#[test]
fn every_strategy_commits_with_running_threads() {
    for st in Strategy::ALL {
        let rt = Runtime::new(Config {
            capacity: 1 << 20,
            strategy: Some(st),
            poison: true,
            ..Config::default()
        })
        .unwrap();
        assert_eq!(rt.strategy(), st);
        let mut sites = Sites::publish(&rt, 1);
        let stubs = sites.stubs;
        let stop = AtomicBool::new(false);
        let ready = Barrier::new(3);
        std::thread::scope(|s| {
            // One thread runs JIT code; one is blocked in the kernel (the
            // signal strategy must still get its acknowledgement).
            s.spawn(|| {
                let h = rt.register_thread();
                ready.wait();
                while !stop.load(Ordering::Relaxed) {
                    assert!(call_stubs(&stubs).iter().all(|&r| r >= 1));
                    h.quiescent();
                }
            });
            s.spawn(|| {
                let h = rt.register_thread();
                ready.wait();
                h.blocking(|| std::thread::sleep(Duration::from_millis(300)));
            });
            ready.wait();
            for k in 2..30 {
                sites.replace(&rt, k, Guarantee::Strong);
                assert_eq!(sites.call_all(), [k, k, k], "{st}");
            }
            stop.store(true, Ordering::Relaxed);
        });
    }
}
