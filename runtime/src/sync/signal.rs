//! Serialize registered threads by signalling each and waiting for it.
//!
//! The runtime sends every registered thread a private real-time signal and
//! waits until each handler has bumped that thread's acknowledgement counter.
//! The kernel delivers a signal on the way back to user space, and the return
//! from the handler (`rt_sigreturn`, which leaves the kernel by `iret` on
//! x86-64, a serializing instruction: Intel SDM vol. 3A §8.3) serializes the
//! thread's core before it runs its own code again. Covers registered threads
//! only.
//!
//! A signalled thread that was blocked in a system call runs the handler and
//! then, because the handler is installed with `SA_RESTART`, *some* calls
//! resume. Not all: signal(7) ("Interruption of system calls and library
//! functions by signal handlers") lists calls that are never restarted and
//! fail with `EINTR` whatever `SA_RESTART` says, among them `nanosleep`,
//! `clock_nanosleep`, `poll`, `ppoll`, `select`, `epoll_wait`, `sigtimedwait`
//! and socket calls with a timeout. So every blocking call in this project
//! retries on `EINTR` (see `sleep.rs`), and code that registers a thread
//! must do the same around its own blocking calls.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::offline;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::registry::Registry;

/// How long a commit waits for one thread's acknowledgement before it fails
/// (a thread that blocks the signal, or is stopped by a debugger).
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

thread_local! {
    // Read by the signal handler: a const-initialised Cell of a raw pointer
    // has no lazy initialisation and no destructor, so reading it is
    // async-signal-safe.
    static ACK_PTR: Cell<*const AtomicU64> = const { Cell::new(std::ptr::null()) };
    // Owns the counter ACK_PTR points to for the whole life of the thread.
    static ACK_OWNER: AckOwner = const { AckOwner(std::cell::OnceCell::new()) };
}

struct AckOwner(std::cell::OnceCell<Arc<AtomicU64>>);

impl Drop for AckOwner {
    fn drop(&mut self) {
        // Before the counter may go away, the handler must stop using it. A
        // signal that arrives later reads null and does nothing.
        let _ = ACK_PTR.try_with(|p| p.set(std::ptr::null()));
    }
}

/// The calling thread's acknowledgement counter (shared with its registry
/// record, which keeps it alive while the runtime may wait on it).
pub(crate) fn this_thread_ack() -> Arc<AtomicU64> {
    ACK_OWNER
        .try_with(|o| {
            let a = o.0.get_or_init(|| Arc::new(AtomicU64::new(0)));
            let _ = ACK_PTR.try_with(|p| p.set(Arc::as_ptr(a)));
            a.clone()
        })
        // Thread exiting: a counter nobody bumps; the waiter sees the thread
        // gone (tgkill fails) and stops waiting.
        .unwrap_or_else(|_| Arc::new(AtomicU64::new(0)))
}

extern "C" fn ack_handler(_sig: libc::c_int) {
    // Async-signal-safe: a const thread-local read and an atomic increment;
    // errno is not touched.
    let p = ACK_PTR.try_with(|p| p.get()).unwrap_or(std::ptr::null());
    if !p.is_null() {
        // SAFETY: a non-null ACK_PTR points into the Arc held by this thread's
        // ACK_OWNER, which nulls ACK_PTR before it can be dropped; the handler
        // runs on this same thread, so it cannot race with that drop.
        unsafe { (*p).fetch_add(1, Ordering::Release) };
    }
}

/// Installs the acknowledgement handler once per process, on a real-time
/// signal nobody else has a handler for. Returns the signal number.
pub(crate) fn install() -> Result<libc::c_int, String> {
    static SIGNO: OnceLock<Result<libc::c_int, String>> = OnceLock::new();
    SIGNO
        .get_or_init(|| {
            // Search downwards from SIGRTMAX: libraries that use real-time
            // signals (glibc's own SIGRTMIN+0..2, profilers) start at the
            // bottom.
            for sig in (libc::SIGRTMIN() + 3..=libc::SIGRTMAX()).rev() {
                // SAFETY: a zeroed sigaction is a valid out-parameter;
                // sigaction with a null `act` only reads the disposition.
                let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
                if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0 {
                    continue;
                }
                if old.sa_sigaction != libc::SIG_DFL {
                    continue; // someone uses it
                }
                // SAFETY: installs a handler that is async-signal-safe (see
                // ack_handler). SA_RESTART restarts the system calls that can
                // be restarted; the others fail with EINTR (module docs).
                let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
                act.sa_sigaction = ack_handler as *const () as usize;
                act.sa_flags = libc::SA_RESTART;
                unsafe { libc::sigemptyset(&mut act.sa_mask) };
                if unsafe { libc::sigaction(sig, &act, std::ptr::null_mut()) } == 0 {
                    return Ok(sig);
                }
            }
            Err("no free real-time signal".to_string())
        })
        .clone()
}

fn tgkill(tid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: tgkill only sends a signal; using kernel tids (not pthread_t)
    // means a thread that has already exited yields ESRCH, never UB.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, sig) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Clears `SIGNALLING` on each word it holds when dropped, however
/// `signal_all` ends, so no thread waits forever to go offline.
struct Signalled<'a>(Vec<&'a AtomicU32>);

impl Drop for Signalled<'_> {
    fn drop(&mut self) {
        for word in &self.0 {
            offline::signal_landed(word);
        }
    }
}

/// Signals every registered thread but the caller and waits for each
/// acknowledgement; offline threads are skipped and owe a serialization.
pub(crate) fn signal_all(registry: &Registry, signo: libc::c_int) -> Result<(), String> {
    // The registry lock is held throughout so no thread deregisters (and
    // exits) between being signalled and acknowledging. A thread blocked on
    // this lock still runs the handler: the futex wait is interrupted (and
    // retried by the lock).
    let threads = registry.lock();
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    let mut pending: Vec<(libc::pid_t, &AtomicU64, u64)> = Vec::with_capacity(threads.len());
    let mut signalled = Signalled(Vec::with_capacity(threads.len()));
    for t in threads.iter().filter(|t| t.tid != me) {
        // 2. Online: mark and signal. Offline: leave it a serialization owed.
        let away = &t.away;
        if !offline::mark_for_signal(away) {
            continue;
        }
        signalled.0.push(away);
        let before = t.ack.load(Ordering::Acquire);
        match tgkill(t.tid, signo) {
            Ok(()) => pending.push((t.tid, &t.ack, before)),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {} // exited
            Err(e) => return Err(format!("tgkill({}): {e}", t.tid)),
        }
    }
    let deadline = Instant::now() + ACK_TIMEOUT;
    for (tid, ack, before) in pending {
        let mut spins = 0u32;
        while ack.load(Ordering::Acquire) == before {
            spins += 1;
            if spins % 1024 == 0 {
                if tgkill(tid, 0).is_err() {
                    break; // the thread exited
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "thread {tid} did not run the signal handler within {} s (signal blocked?)",
                        ACK_TIMEOUT.as_secs()
                    ));
                }
            }
            std::thread::yield_now();
        }
    }
    Ok(())
}
