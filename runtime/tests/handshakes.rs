//! Per-thread handshakes: the runtime asks only the threads that hold a retirement back,
//! through each one's own poll word, and whichever report frees a retirement reclaims it.

mod common;

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use common::{polling_loop, runtime, version};
use jitvm_runtime::{
    jitvm_safepoint_slow, Blob, CodePtr, Config, DispatchSlot, Guarantee, Runtime,
};

/// Publishes `code` in its own commit.
fn publish(rt: &Runtime, code: &[u8]) -> Blob {
    let mut tx = rt.transaction();
    let b = tx.stage(code, 16).unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    b
}

/// Retires `b` with a Strong commit.
fn retire(rt: &Runtime, b: Blob) {
    let mut tx = rt.transaction();
    tx.retire(b).unwrap();
    tx.commit(Guarantee::Strong).unwrap();
}

/// Waits up to 10 s for `cond`; whether it came true.
fn eventually(cond: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

/// `fn(stop, poll) -> i64`, the polling loop of `common`, published behind a slot that
/// reaches version 1.
type Loop = extern "sysv64" fn(*const AtomicU8, *const AtomicU32) -> i64;

fn publish_loop(rt: &Runtime, slot: &DispatchSlot) -> Blob {
    let v = publish(rt, &version(1));
    let mut tx = rt.transaction();
    tx.set_dispatch(slot, v.addr()).unwrap();
    let looper = tx
        .stage(
            &polling_loop(slot.as_ptr(), jitvm_safepoint_slow as *const () as usize),
            16,
        )
        .unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    looper
}

#[test]
fn a_thread_blocked_inside_native_code_holds_no_retirement_back_and_no_poll_word_stays_set() {
    let rt = runtime(true);
    let slot = rt.dispatch_slot(0);
    let looper = publish_loop(&rt, &slot);
    let doomed = publish(&rt, &version(7));
    let blocked = Barrier::new(2);
    let release = Barrier::new(2);
    let stop = AtomicU8::new(0);
    let spinning = Barrier::new(2);
    std::thread::scope(|s| {
        // Inside `enter`, waiting in `blocking` (a join, a lock, a write would).
        s.spawn(|| {
            let me = rt.register_thread().unwrap();
            me.enter(|_| {
                me.blocking(|| {
                    blocked.wait();
                    release.wait();
                })
            });
        });
        // Inside native code, polling its own word.
        s.spawn(|| {
            let me = rt.register_thread().unwrap();
            me.enter(|scope| {
                spinning.wait();
                // SAFETY: the loop has this signature and stays published.
                let f: Loop = unsafe { scope.func(CodePtr::new(looper.addr())) };
                f(&stop, me.poll_word())
            });
        });
        blocked.wait();
        spinning.wait();
        retire(&rt, doomed);
        // The spinning thread answers at its next poll; the blocked one is never waited for.
        assert!(
            eventually(|| rt.pending_retirements() == 0),
            "still pending: {:?}",
            rt.synchronize(Duration::ZERO)
        );
        assert_eq!(
            rt.threads_asked(),
            0,
            "every request was answered or withdrawn"
        );
        assert!(rt.lookup(doomed.addr()).is_none());
        release.wait();
        stop.store(1, Ordering::Release);
    });
}

#[test]
fn when_the_last_holdout_reports_by_a_quiescent_point_the_retirement_is_reclaimed_with_no_further_commit(
) {
    let rt = runtime(true);
    let doomed = publish(&rt, &version(7));
    let registered = Barrier::new(2);
    let committed = Barrier::new(2);
    let report = Barrier::new(2);
    let reported = Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            let me = rt.register_thread().unwrap();
            registered.wait();
            committed.wait();
            report.wait();
            me.quiescent(); // the commit lock is held: the holder must look again
            reported.wait();
        });
        registered.wait();
        retire(&rt, doomed); // this thread is not registered: only the other holds it
        committed.wait();
        assert_eq!(rt.pending_retirements(), 1);
        rt.with_commit_lock_held(|| {
            report.wait();
            reported.wait();
        });
        // Nobody commits or calls `reclaim`: letting go of the lock served the report.
        assert_eq!(rt.pending_retirements(), 0);
        assert_eq!(rt.threads_asked(), 0);
    });
}

#[test]
fn when_the_last_holdout_answers_at_a_poll_that_lost_the_lock_race_the_retirement_is_reclaimed() {
    let rt = runtime(true);
    let doomed = publish(&rt, &version(7));
    let entered = Barrier::new(2);
    let answer = Barrier::new(2);
    let answered = Barrier::new(2);
    let asked = AtomicU32::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let me = rt.register_thread().unwrap();
            me.enter(|scope| {
                entered.wait();
                answer.wait();
                asked.store(me.poll_word().load(Ordering::Acquire), Ordering::Relaxed);
                scope.safepoint(); // what native code's slow path calls
                answered.wait();
            });
        });
        entered.wait();
        retire(&rt, doomed);
        rt.with_commit_lock_held(|| {
            answer.wait();
            answered.wait();
        });
        assert_eq!(asked.load(Ordering::Relaxed), 1, "the holdout was asked");
        assert_eq!(rt.pending_retirements(), 0);
        assert_eq!(rt.threads_asked(), 0);
        assert_eq!(rt.slow_polls(), 1);
    });
}

#[test]
fn a_thread_spinning_in_a_retired_blob_polls_at_full_speed_and_the_blob_is_reclaimed_after_it_returns(
) {
    let rt = Runtime::new(Config {
        capacity: 1 << 20,
        poison: true, // running the loop after it was reclaimed would trap
        quarantine_bytes: 0,
        ..Config::default()
    })
    .unwrap();
    let slot = rt.dispatch_slot(0);
    let looper = publish_loop(&rt, &slot);
    let stop = AtomicU8::new(0);
    let spinning = Barrier::new(2);
    let polls = std::thread::scope(|s| {
        let spinner = s.spawn(|| {
            let me = rt.register_thread().unwrap();
            me.enter(|scope| {
                spinning.wait();
                // SAFETY: the loop has this signature; it stays mapped while pinned.
                let f: Loop = unsafe { scope.func(CodePtr::new(looper.addr())) };
                f(&stop, me.poll_word())
            })
        });
        spinning.wait();
        retire(&rt, looper);
        // It answers once, pinning the loop it runs; then it is not asked again but to look
        // again now and then.
        assert!(eventually(|| rt.slow_polls() >= 1));
        std::thread::sleep(Duration::from_millis(300));
        let polls = rt.slow_polls();
        assert_eq!(
            rt.pending_retirements(),
            1,
            "pinned: it still runs the loop"
        );
        assert!(rt.lookup(looper.addr()).is_some_and(|b| b.retired));
        stop.store(1, Ordering::Release);
        assert_eq!(spinner.join().unwrap(), 0, "calls saw versions in order");
        polls
    });
    // In 300 ms the loop went round millions of times; the slow path ran once, plus one
    // look-again per interval (1 ms doubling to 1 s: about 9 in 300 ms).
    assert!(polls <= 40, "{polls} slow paths");
    // Leaving native code released the pins: reclaimed with no further commit.
    assert_eq!(rt.pending_retirements(), 0);
    assert!(rt.lookup(looper.addr()).is_none());
}

#[test]
fn a_blob_pinned_by_a_frame_that_returned_is_reclaimed_while_its_thread_stays_in_native_code() {
    let rt = runtime(true);
    let slot = rt.dispatch_slot(0);
    let first = publish_loop(&rt, &slot);
    let second = publish_loop(&rt, &slot);
    let stop_first = AtomicU8::new(0);
    let stop_second = AtomicU8::new(0);
    let spinning = Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            let me = rt.register_thread().unwrap();
            me.enter(|scope| {
                spinning.wait();
                // SAFETY: both loops have this signature; each stays mapped while it runs.
                let f: Loop = unsafe { scope.func(CodePtr::new(first.addr())) };
                f(&stop_first, me.poll_word());
                let g: Loop = unsafe { scope.func(CodePtr::new(second.addr())) };
                g(&stop_second, me.poll_word())
            });
        });
        spinning.wait();
        retire(&rt, first);
        assert!(eventually(|| rt.slow_polls() >= 1), "answered once");
        assert_eq!(rt.pending_retirements(), 1, "pinned by the running frame");
        // The frame returns into Rust, which calls the second loop: still inside `enter`,
        // polling. Asked to look again, the thread finds the first loop off its stack.
        stop_first.store(1, Ordering::Release);
        assert!(
            eventually(|| rt.pending_retirements() == 0),
            "{:?}",
            rt.synchronize(Duration::ZERO)
        );
        stop_second.store(1, Ordering::Release);
    });
}

#[test]
fn an_interpreter_called_from_native_code_does_not_hold_reclamation_back() {
    let rt = runtime(true);
    let doomed = publish(&rt, &version(7));
    let entered = Barrier::new(2);
    let stop = AtomicU8::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let me = rt.register_thread().unwrap();
            me.enter(|_| {
                entered.wait();
                // An interpreter under native code: it reports at its own safepoints.
                while stop.load(Ordering::Acquire) == 0 {
                    me.quiescent();
                    std::hint::spin_loop();
                }
            });
        });
        entered.wait();
        retire(&rt, doomed);
        assert!(eventually(|| rt.pending_retirements() == 0));
        assert_eq!(rt.threads_asked(), 0);
        stop.store(1, Ordering::Release);
    });
}

#[test]
fn the_poll_compare_decodes_as_one_cmp_of_the_word_for_every_base_register() {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
    let regs = [
        Register::RAX,
        Register::RCX,
        Register::RDX,
        Register::RBX,
        Register::RSP,
        Register::RBP,
        Register::RSI,
        Register::RDI,
        Register::R8,
        Register::R9,
        Register::R10,
        Register::R11,
        Register::R12,
        Register::R13,
        Register::R14,
        Register::R15,
    ];
    for (n, reg) in regs.into_iter().enumerate() {
        for disp in [0i32, 56, -8, i32::MAX] {
            let bytes = jitvm_runtime::x86_64_poll_compare(n as u8, disp).unwrap();
            let mut d = Decoder::new(64, &bytes, DecoderOptions::NONE);
            let i = d.decode();
            assert_eq!(i.len(), bytes.len(), "one instruction: {bytes:x?}");
            assert_eq!(i.mnemonic(), Mnemonic::Cmp);
            assert_eq!(i.op0_kind(), OpKind::Memory);
            assert_eq!(i.memory_base(), reg);
            assert_eq!(i.memory_index(), Register::None);
            assert_eq!(i.memory_displacement64() as i64, disp as i64);
            assert_eq!(i.memory_size(), iced_x86::MemorySize::UInt32);
            assert_eq!(i.immediate(1), 0);
        }
    }
    assert!(jitvm_runtime::x86_64_poll_compare(16, 0).is_none());
}
