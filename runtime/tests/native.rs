//! What the JITs rely on around native code: the current handle from a
//! callback, stack pins at native safepoints, the poll word, `synchronize`
//! and out-of-memory diagnostics, and the code map.

mod common;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use common::{call, runtime, version};
use dynasm::dynasm;
use dynasmrt::{x64::X64Relocation, DynasmApi, VecAssembler};
use jitvm_runtime::{
    jitvm_safepoint_slow, with_current_thread, Blob, CodeEvent, Config, Error, Guarantee, Runtime,
    ThreadHandle,
};

/// `sub rsp, 8; mov rax, imm64(f); call rax; add rsp, 8; ret`: native code
/// that calls back into Rust, with its return address on the stack.
fn calls_back(f: usize) -> Vec<u8> {
    let mut ops = VecAssembler::<X64Relocation>::new(0);
    dynasm!(ops
        ; .arch x64
        ; sub rsp, 8
        ; mov rax, QWORD f as i64
        ; call rax
        ; add rsp, 8
        ; ret
    );
    ops.finalize().unwrap()
}

thread_local! {
    static SEEN: RefCell<Option<(i32, bool)>> = const { RefCell::new(None) };
    static RETIRE: RefCell<Option<(Arc<Runtime>, Blob)>> = const { RefCell::new(None) };
}

extern "sysv64" fn look_at_current() -> i64 {
    let seen = with_current_thread(|h| h.map(|h| (h.tid(), h.is_entered())));
    SEEN.with(|s| *s.borrow_mut() = seen);
    7
}

#[test]
fn native_code_can_reach_the_current_thread_handle_from_a_callback() {
    let rt = runtime(false);
    assert!(with_current_thread(|h| h.is_none()));
    let me = rt.register_thread().unwrap();
    let mut tx = rt.transaction();
    let f = tx
        .stage(&calls_back(look_at_current as *const () as usize), 16)
        .unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    assert_eq!(me.enter(|s| call(s, f.addr())), 7);
    assert_eq!(SEEN.with(|s| *s.borrow()), Some((me.tid(), true)));
    assert!(ThreadHandle::with_current(
        |h| h.is_some_and(|h| !h.is_entered())
    ));
    drop(me);
    assert!(with_current_thread(|h| h.is_none()));
}

/// Retires the blob RETIRE names (the one that called us), polls as native
/// code would, and checks it is still there.
extern "sysv64" fn retire_my_caller_and_poll() -> i64 {
    RETIRE.with(|r| {
        let r = r.borrow();
        let (rt, me) = r.as_ref().unwrap();
        let mut tx = rt.transaction();
        tx.retire(*me).unwrap();
        tx.commit(Guarantee::Strong).unwrap();
        assert_eq!(
            my_poll_word(),
            1,
            "this entered thread holds it back: asked"
        );
        // SAFETY: a sysv64 function without arguments; as native code calls it.
        unsafe { jitvm_safepoint_slow() };
        rt.reclaim();
        let info = rt.lookup(me.addr()).expect("still on this stack: pinned");
        assert!(info.retired);
        assert_eq!(rt.pending_retirements(), 1);
    });
    11
}

/// The calling thread's poll word: nonzero when the runtime asks it to report.
fn my_poll_word() -> u32 {
    with_current_thread(|h| h.unwrap().poll_word().load(Ordering::Acquire))
}

#[test]
fn code_on_a_native_stack_is_not_reclaimed_until_its_activation_returns() {
    let rt = Runtime::new(Config {
        capacity: 1 << 20,
        poison: true,
        quarantine_bytes: 0,
        ..Config::default()
    })
    .unwrap();
    let me = rt.register_thread().unwrap();
    let mut tx = rt.transaction();
    let f = tx
        .stage(
            &calls_back(retire_my_caller_and_poll as *const () as usize),
            16,
        )
        .unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    RETIRE.with(|r| *r.borrow_mut() = Some((rt.clone(), f)));
    // Returning into `f` after the callback would trap if it had been
    // reclaimed (poison mode).
    assert_eq!(me.enter(|s| call(s, f.addr())), 11);
    // Left native code: the pins are gone, and leaving reclaimed what they held.
    assert_eq!(rt.pending_retirements(), 0);
    assert!(rt.lookup(f.addr()).is_none());
    assert_eq!(my_poll_word(), 0, "nothing pending");
    assert_eq!(rt.threads_asked(), 0);
    RETIRE.with(|r| *r.borrow_mut() = None);
}

#[test]
fn a_native_safepoint_releases_code_the_thread_is_not_inside() {
    let rt = runtime(false);
    let me = rt.register_thread().unwrap();
    // The blob's handle never lives on this thread's stack, not even in a
    // stale slot of an inlined call (the scan is conservative: a handle there
    // would pin it too): helper threads publish, retire and try to reclaim.
    let cell: Box<Mutex<Option<Blob>>> = Box::new(Mutex::new(None)); // on the heap
    let on_helper =
        |f: &(dyn Fn() -> usize + Sync)| std::thread::scope(|s| s.spawn(f).join().unwrap());
    on_helper(&|| {
        let mut tx = rt.transaction();
        *cell.lock().unwrap() = Some(tx.stage(&version(1), 16).unwrap());
        tx.commit(Guarantee::Strong).unwrap();
        0
    });
    me.enter(|scope| {
        on_helper(&|| {
            let mut tx = rt.transaction();
            tx.retire(cell.lock().unwrap().take().unwrap()).unwrap();
            tx.commit(Guarantee::Strong).unwrap();
            0
        });
        me.quiescent();
        assert_eq!(on_helper(&|| rt.reclaim()), 0, "the entry epoch holds it");
        scope.safepoint(); // scans the stack: the blob is not on it
        assert_eq!(rt.pending_retirements(), 0, "the safepoint reclaimed it");
    });
}

#[test]
fn synchronize_times_out_naming_the_thread_that_holds_reclamation_back() {
    let rt = runtime(false);
    let old = {
        let mut tx = rt.transaction();
        let b = tx.stage(&version(1), 16).unwrap();
        tx.commit(Guarantee::Strong).unwrap();
        b
    };
    let ready = Barrier::new(2);
    let release = Mutex::new(());
    let gate = release.lock().unwrap();
    let tid = AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let h = rt.register_thread().unwrap();
            tid.store(h.tid() as usize, Ordering::Relaxed);
            ready.wait();
            // Waits without `blocking`: holds reclamation back.
            drop(release.lock().unwrap());
        });
        ready.wait();
        let mut tx = rt.transaction();
        tx.retire(old).unwrap();
        tx.commit(Guarantee::Strong).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let t = std::time::Instant::now();
        match rt.synchronize(Duration::from_millis(200)) {
            Err(Error::Timeout {
                pending_retirements,
                held_back_by,
                ..
            }) => {
                assert!(t.elapsed() >= Duration::from_millis(200));
                assert_eq!(pending_retirements, 1);
                assert_eq!(held_back_by.len(), 1);
                let hb = &held_back_by[0];
                assert_eq!(hb.tid as usize, tid.load(Ordering::Relaxed));
                assert!(hb.since >= Some(Duration::from_millis(200)), "{hb:?}");
                let msg = Error::Timeout {
                    waited: t.elapsed(),
                    pending_retirements,
                    held_back_by: held_back_by.clone(),
                }
                .to_string();
                assert!(msg.contains(&format!("thread {}", hb.tid)), "{msg}");
            }
            other => panic!("expected a timeout: {other:?}"),
        }
        drop(gate);
    });
    rt.synchronize(Duration::from_secs(10)).unwrap();
    assert_eq!(rt.pending_retirements(), 0);
}

#[test]
fn running_out_of_code_memory_names_the_threads_holding_reclamation_back() {
    let rt = Runtime::new(Config {
        capacity: 64 << 10,
        ..Config::default()
    })
    .unwrap();
    let ready = Barrier::new(2);
    let release = Mutex::new(());
    let gate = release.lock().unwrap();
    std::thread::scope(|s| {
        let holder = s.spawn(|| {
            let h = rt.register_thread().unwrap();
            ready.wait();
            drop(release.lock().unwrap());
            h.tid()
        });
        ready.wait();
        let mut current = None;
        let err = loop {
            let mut tx = rt.transaction();
            let b = match tx.stage(&[0xC3; 1000], 16) {
                Ok(b) => b,
                Err(e) => break e,
            };
            if let Some(old) = current.replace(b) {
                tx.retire(old).unwrap();
            }
            tx.commit(Guarantee::Strong).unwrap();
        };
        drop(gate);
        let tid = holder.join().unwrap();
        match err {
            Error::OutOfCodeMemory {
                pending_retirements,
                held_back_by,
                ..
            } => {
                assert!(pending_retirements > 50);
                assert_eq!(held_back_by.len(), 1);
                assert_eq!(held_back_by[0].tid, tid);
            }
            other => panic!("expected out of code memory: {other}"),
        }
    });
}

#[test]
fn the_code_map_finds_blobs_and_the_hook_sees_publication_and_reclamation() {
    let rt = runtime(false);
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    rt.set_code_hook(Box::new(move |events| {
        sink.lock().unwrap().extend_from_slice(events)
    }));
    let slot = rt.dispatch_slot(0);
    let mut tx = rt.transaction();
    let a = tx.stage(&version(1), 16).unwrap();
    tx.set_owner(a, 17).unwrap();
    tx.set_dispatch(&slot, a.addr()).unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    let info = rt.lookup(a.addr() + a.len() - 1).unwrap();
    assert_eq!((info.blob, info.owner, info.retired), (a, 17, false));
    assert!(rt.lookup(a.addr() + 4096).is_none());
    let mut tx = rt.transaction();
    let b = tx.stage(&version(2), 16).unwrap();
    tx.set_dispatch(&slot, b.addr()).unwrap();
    tx.retire(a).unwrap();
    tx.commit(Guarantee::Strong).unwrap(); // no threads: reclaimed at once
    assert!(rt.lookup(a.addr()).is_none());
    let ev = events.lock().unwrap().clone();
    assert_eq!(
        ev,
        vec![
            CodeEvent::Published {
                addr: a.addr(),
                len: a.len(),
                owner: 17
            },
            CodeEvent::Published {
                addr: b.addr(),
                len: b.len(),
                owner: 0
            },
            CodeEvent::Reclaimed {
                addr: a.addr(),
                len: a.len(),
                owner: 17
            },
        ]
    );
    // A panicking hook is contained.
    rt.set_code_hook(Box::new(|_| panic!("hook")));
    let mut tx = rt.transaction();
    tx.stage(&version(3), 16).unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    rt.remove_code_hook();
}

#[test]
fn enter_is_nestable_and_leaves_cleanly_on_panic() {
    let rt = runtime(false);
    let me = rt.register_thread().unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        me.enter(|_| me.enter(|_| panic!("inside")))
    }));
    assert!(r.is_err());
    assert!(!me.is_entered());
    let stop = AtomicBool::new(false);
    assert!(me.enter(|s| s.handle().enter(|_| !stop.load(Ordering::Relaxed))));
}

extern "C" fn ignore(_: libc::c_int) {}

#[test]
fn a_wait_interrupted_by_signals_still_waits_its_full_timeout() {
    // SIGURG with a handler installed without SA_RESTART: nanosleep fails
    // with EINTR every time it arrives (signal(7)).
    // SAFETY: installs a no-op handler for a signal nothing else here uses.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = ignore as *const () as usize;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(libc::SIGURG, &act, std::ptr::null_mut());
    }
    let rt = runtime(false);
    let old = {
        let mut tx = rt.transaction();
        let b = tx.stage(&version(1), 16).unwrap();
        tx.commit(Guarantee::Strong).unwrap();
        b
    };
    let ready = Barrier::new(2);
    let release = Mutex::new(());
    let gate = release.lock().unwrap();
    let waiter_tid = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let _h = rt.register_thread().unwrap();
            ready.wait();
            drop(release.lock().unwrap()); // holds reclamation back
        });
        ready.wait();
        let mut tx = rt.transaction();
        tx.retire(old).unwrap();
        tx.commit(Guarantee::Strong).unwrap();
        let waiter = s.spawn(|| {
            // SAFETY: gettid has no preconditions.
            waiter_tid.store(unsafe { libc::gettid() } as usize, Ordering::Release);
            let t = std::time::Instant::now();
            let r = rt.synchronize(Duration::from_millis(300));
            done.store(true, Ordering::Release);
            (r, t.elapsed())
        });
        while waiter_tid.load(Ordering::Acquire) == 0 {
            std::thread::yield_now();
        }
        let tid = waiter_tid.load(Ordering::Acquire) as libc::pid_t;
        while !done.load(Ordering::Acquire) {
            // SAFETY: signals a thread of this process that is alive until
            // `done` (the scope joins it only afterwards).
            unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGURG) };
            std::thread::sleep(Duration::from_micros(200));
        }
        let (r, waited) = waiter.join().unwrap();
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        drop(gate);
    });
    rt.synchronize(Duration::from_secs(10)).unwrap();
}
