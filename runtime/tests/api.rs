//! Behaviour of the public API: patch sites, W^X, reclamation ordering,
//! batching, poison mode, and every strategy.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::Duration;

use common::{call, call_stubs, runtime, version, Sites};
use jitvm_runtime::{Config, Guarantee, Runtime, Strategy, TRAP_INSTRUCTION};

#[test]
fn every_call_sequence_reaches_the_newest_version_after_each_commit() {
    let rt = runtime(false);
    let me = rt.register_thread().unwrap();
    let mut sites = Sites::publish(&rt, 1);
    assert_eq!(sites.call_all(&me), [1, 1, 1]);
    for k in 2..50 {
        sites.replace(&rt, k, Guarantee::Strong);
        assert_eq!(sites.call_all(&me), [k, k, k]);
        assert_eq!(sites.slot.get(), sites.current.addr());
        me.quiescent();
    }
}

#[test]
fn code_is_never_writable_and_executable() {
    let rt = runtime(false);
    let me = rt.register_thread().unwrap();
    let sites = Sites::publish(&rt, 7);
    assert_eq!(sites.call_all(&me), [7, 7, 7]);
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let ours: Vec<&str> = maps.lines().filter(|l| l.contains("/dev/zero")).collect();
    assert!(ours.len() >= 2, "expected RW and RX views: {ours:?}");
    assert!(ours.iter().any(|l| l.contains(" rw-s ")));
    assert!(ours.iter().any(|l| l.contains(" r-xs ")));
    for l in maps.lines() {
        let perms = l.split_whitespace().nth(1).unwrap();
        assert!(!(perms.contains('w') && perms.contains('x')), "W+X: {l}");
    }
}

#[test]
fn strong_retirement_waits_for_quiescence() {
    let rt = runtime(false);
    let me = rt.register_thread().unwrap();
    let mut sites = Sites::publish(&rt, 1);
    let old = sites.current;
    let info = sites.replace(&rt, 2, Guarantee::Strong);
    assert_eq!(info.serializations, 2);
    // This thread has not been quiescent since the commit: the old version
    // must still be there.
    assert_eq!(rt.pending_retirements(), 2);
    assert!(rt.stats().bytes_retired >= old.len());
    assert_eq!(rt.reclaim(), 0);
    // The report itself reclaims: this thread was the one the retirement waited for.
    me.quiescent();
    assert_eq!(rt.pending_retirements(), 0);
    assert_eq!(rt.stats().bytes_retired, 0);
}

#[test]
fn eventual_retirement_waits_for_a_later_serialization() {
    let rt = runtime(false);
    let me = rt.register_thread().unwrap();
    let mut sites = Sites::publish(&rt, 1);
    let info = sites.replace(&rt, 2, Guarantee::Eventual);
    assert_eq!(info.serializations, 1);
    me.quiescent();
    assert_eq!(rt.reclaim(), 0, "no serialization since the patch");
    rt.transaction().commit(Guarantee::Eventual).unwrap();
    assert_eq!(rt.reclaim(), 0);
    assert_eq!(rt.pending_retirements(), 2);
    me.quiescent();
    assert_eq!(rt.pending_retirements(), 0);
    assert_eq!(sites.call_all(&me), [2, 2, 2]);
}

#[test]
fn an_entered_thread_blocks_reclamation_until_it_leaves() {
    let rt = runtime(false);
    let me = rt.register_thread().unwrap();
    let mut sites = Sites::publish(&rt, 1);
    me.enter(|_| {
        // As if an activation of version 1 were on the stack.
        sites.replace(&rt, 2, Guarantee::Strong);
        assert_eq!(rt.reclaim(), 0, "an activation begun before retirement");
        me.enter(|_| ()); // nesting does not move the entry
        assert_eq!(rt.reclaim(), 0);
        assert_eq!(rt.pending_retirements(), 2);
    });
    // Out of native code, its first quiescent point reclaims it (no other commit needed).
    assert_eq!(rt.pending_retirements(), 2);
    me.quiescent();
    assert_eq!(rt.pending_retirements(), 0);
    // An entry begun after the retirement does not block it; the quiescent
    // mark from before it still does, until the next quiescent point.
    me.enter(|_| {
        sites.replace(&rt, 3, Guarantee::Strong);
        assert_eq!(rt.reclaim(), 0);
    });
    assert_eq!(rt.pending_retirements(), 2);
    me.quiescent();
    assert_eq!(rt.pending_retirements(), 0);
}

#[test]
fn a_quiescent_point_inside_native_code_is_a_native_safepoint() {
    // An interpreter that native code called reports at its own safepoints with
    // `quiescent()`: inside `enter` that pins the stack and moves the entry, so it holds
    // back only what the stack really holds (here: nothing).
    let rt = runtime(false);
    let me = rt.register_thread().unwrap();
    let mut sites = Sites::publish(&rt, 1);
    me.enter(|_| {
        sites.replace(&rt, 2, Guarantee::Strong);
        assert_eq!(rt.pending_retirements(), 2);
        me.quiescent();
        assert_eq!(rt.pending_retirements(), 0, "nothing of it on the stack");
    });
}

#[test]
fn blocked_and_departed_threads_do_not_block_reclamation() {
    let rt = runtime(false);
    let mut sites = Sites::publish(&rt, 1);
    let go = Barrier::new(2);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let h = rt.register_thread().unwrap();
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
    std::thread::scope(|s| {
        s.spawn(|| drop(rt.register_thread().unwrap()));
    });
    assert_eq!(rt.registered_threads(), 0);
    sites.replace(&rt, 3, Guarantee::Strong);
    assert_eq!(rt.pending_retirements(), 0);
}

#[test]
fn a_thread_that_exits_with_its_handle_leaked_is_deregistered() {
    let rt = runtime(false);
    let rt2 = rt.clone();
    // A joined (not scoped) thread: join waits for its thread-local
    // destructors, which deregister it.
    std::thread::spawn(move || std::mem::forget(rt2.register_thread().unwrap()))
        .join()
        .unwrap();
    assert_eq!(rt.registered_threads(), 0);
}

#[test]
fn serializations_do_not_grow_with_the_batch() {
    let rt = runtime(false);
    let me = rt.register_thread().unwrap();
    let slots: Vec<_> = (0..100).map(|_| rt.dispatch_slot(0)).collect();
    for n in [1usize, 100] {
        for g in [Guarantee::Strong, Guarantee::Eventual] {
            let before = rt.serializations();
            let mut tx = rt.transaction();
            for (i, slot) in slots.iter().take(n).enumerate() {
                let b = tx.stage(&version(i as i64), 16).unwrap();
                tx.set_dispatch(slot, b.addr()).unwrap();
            }
            let info = tx.commit(g).unwrap();
            let expect = if g == Guarantee::Strong { 2 } else { 1 };
            assert_eq!(info.serializations, expect);
            assert_eq!(rt.serializations() - before, expect as u64);
            me.enter(|s| {
                for (i, slot) in slots.iter().take(n).enumerate() {
                    assert_eq!(call(s, slot.get()), i as i64);
                }
            });
        }
    }
}

#[test]
fn poison_mode_fills_reclaimed_code_with_the_trap_instruction_and_stays_bounded() {
    let rt = runtime(true);
    let me = rt.register_thread().unwrap();
    let mut sites = Sites::publish(&rt, 1);
    let old = sites.current;
    sites.replace(&rt, 2, Guarantee::Strong);
    me.quiescent();
    rt.reclaim();
    assert_eq!(rt.pending_retirements(), 0);
    // SAFETY: the blob is quarantined (not reused), still inside the RX view.
    let bytes = unsafe { std::slice::from_raw_parts(old.addr() as *const u8, old.len()) };
    for (i, &b) in bytes.iter().enumerate() {
        assert_eq!(
            b,
            TRAP_INSTRUCTION[i % TRAP_INSTRUCTION.len()],
            "{bytes:x?}"
        );
    }
    drop(me);
    for k in 3..2000 {
        sites.replace(&rt, k, Guarantee::Strong);
    }
    let s = rt.stats();
    assert!(s.bytes_quarantined <= 4096, "{s:?}");
    assert!(s.high_water < 16 << 10, "{s:?}");
    let me = rt.register_thread().unwrap();
    assert_eq!(sites.call_all(&me), [1999, 1999, 1999]);
}

#[test]
fn every_strategy_commits_with_running_threads() {
    for st in Strategy::ALL {
        if !st.is_available() {
            continue;
        }
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
                let h = rt.register_thread().unwrap();
                ready.wait();
                while !stop.load(Ordering::Relaxed) {
                    assert!(call_stubs(&h, &stubs).iter().all(|&r| r >= 1));
                    h.quiescent();
                }
            });
            s.spawn(|| {
                let h = rt.register_thread().unwrap();
                ready.wait();
                h.blocking(|| std::thread::sleep(Duration::from_millis(300)));
            });
            ready.wait();
            let me = rt.register_thread().unwrap();
            for k in 2..30 {
                sites.replace(&rt, k, Guarantee::Strong);
                assert_eq!(sites.call_all(&me), [k, k, k], "{st}");
                me.quiescent();
            }
            stop.store(true, Ordering::Relaxed);
        });
    }
}
