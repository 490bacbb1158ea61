//! The signal strategy never interrupts a thread that is offline (blocked inside
//! `ThreadHandle::blocking`): it cannot be running code a commit changes, and it serializes
//! its own core on the way back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jitvm_runtime::{Config, Guarantee, Runtime, Strategy};

/// One raw `nanosleep`, not retried: `Err(errno)` if something cut it short.
fn nanosleep_once(d: Duration) -> Result<(), i32> {
    let req = libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    };
    let mut rem = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both pointers are to live timespecs.
    match unsafe { libc::nanosleep(&req, &mut rem) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)),
    }
}

#[test]
fn a_sleep_inside_blocking_is_never_cut_short_by_a_hundred_signal_commits() {
    let rt = Runtime::new(Config {
        strategy: Some(Strategy::Signal),
        ..Config::default()
    })
    .unwrap();
    let asleep = Arc::new(AtomicBool::new(false));
    let sleeper = {
        let rt = Arc::clone(&rt);
        let asleep = Arc::clone(&asleep);
        std::thread::spawn(move || {
            let handle = rt.register_thread().unwrap();
            handle.blocking(|| {
                asleep.store(true, Ordering::SeqCst);
                let start = Instant::now();
                let slept = nanosleep_once(Duration::from_millis(200));
                (slept, Instant::now(), start.elapsed())
            })
        })
    };
    while !asleep.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    for _ in 0..100 {
        rt.transaction().commit(Guarantee::Strong).unwrap();
    }
    let commits_done = Instant::now();
    let (slept, woke, took) = sleeper.join().unwrap();
    assert_eq!(slept, Ok(()), "the sleep was interrupted (errno {slept:?})");
    assert!(took >= Duration::from_millis(200), "slept only {took:?}");
    // The commits all ran while it slept (on a loaded machine they may not have: then
    // this run proves less, but nothing false).
    if commits_done < woke {
        assert!(rt.serializations() >= 200, "each commit serialized twice");
    }
}
