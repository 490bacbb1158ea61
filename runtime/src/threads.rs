//! The registry of VM threads and their per-thread reclamation state.
//!
//! Every thread that may run JIT code registers ([`crate::Runtime::register_thread`])
//! and gets a [`ThreadHandle`], an RAII guard that deregisters on drop. The
//! handle carries the two words the reclaimer reads (see [`crate::reclaim`]):
//!
//! * `quiescent`: the global epoch the thread last saw at a quiescent point, or
//!   `OFFLINE` while it is blocked outside JIT code;
//! * `entry`: the epoch at which the thread entered JIT code from outside
//!   (outermost entry), or `NOT_ENTERED`.
//!
//! It also carries the signal strategy's acknowledgement counter and the
//! kernel thread id to signal.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::Runtime;

/// `quiescent` value of a thread blocked outside JIT code.
pub(crate) const OFFLINE: u64 = u64::MAX;
/// `entry` value of a thread that is not inside JIT code.
pub(crate) const NOT_ENTERED: u64 = u64::MAX;

/// Shared per-thread state. Aligned to two cache lines so that one thread's
/// quiescent stores never false-share with another's.
#[repr(align(128))]
pub(crate) struct ThreadRecord {
    pub(crate) quiescent: AtomicU64,
    pub(crate) entry: AtomicU64,
    /// Signal-strategy acknowledgements; shared by every record of this OS
    /// thread (a thread may be registered with several runtimes).
    pub(crate) ack: Arc<AtomicU64>,
    pub(crate) tid: libc::pid_t,
}

impl ThreadRecord {
    /// The oldest epoch this thread may still hold code from: a retirement
    /// tagged `r` is safe from this thread once `horizon() > r`.
    pub(crate) fn horizon(&self) -> u64 {
        // Order matters: `quiescent` first (Acquire), then `entry`. A
        // quiescent mark newer than `r` was stored after any entry tagged
        // <= r in this thread's program order, so if we saw the mark we also
        // see that entry (or its later clearing). See crate::reclaim.
        let q = self.quiescent.load(Ordering::Acquire);
        let e = self.entry.load(Ordering::Acquire);
        q.min(e)
    }
}

thread_local! {
    // Read by the signal handler: a const-initialised Cell of a raw pointer
    // has no lazy initialisation and no destructor, so reading it is
    // async-signal-safe.
    pub(crate) static ACK_PTR: Cell<*const AtomicU64> = const { Cell::new(std::ptr::null()) };
    // Owns the counter ACK_PTR points to for the whole life of the thread.
    static ACK_OWNER: std::cell::OnceCell<Arc<AtomicU64>> = const { std::cell::OnceCell::new() };
}

fn this_thread_ack() -> Arc<AtomicU64> {
    ACK_OWNER.with(|o| {
        let a = o.get_or_init(|| Arc::new(AtomicU64::new(0)));
        ACK_PTR.with(|p| p.set(Arc::as_ptr(a)));
        a.clone()
    })
}

/// The set of registered threads of one runtime.
#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) threads: Mutex<Vec<Arc<ThreadRecord>>>,
}

impl Registry {
    /// The minimum horizon over all registered threads (`u64::MAX` if none).
    pub(crate) fn horizon(&self) -> u64 {
        let threads = self.threads.lock().unwrap();
        threads
            .iter()
            .map(|t| t.horizon())
            .min()
            .unwrap_or(u64::MAX)
    }

    pub(crate) fn len(&self) -> usize {
        self.threads.lock().unwrap().len()
    }
}

/// A registered VM thread. Not `Send`: it describes the thread that created
/// it. Dropping it deregisters the thread.
///
/// Contract (what makes reclamation sound):
/// * only registered threads run JIT code;
/// * [`ThreadHandle::quiescent`] is called only where the thread holds no
///   address of JIT code except activations covered by an
///   [`ThreadHandle::enter`] guard;
/// * a thread that runs JIT code for a long time calls `quiescent` now and
///   then, or reclamation waits for it (it never frees early).
pub struct ThreadHandle<'rt> {
    rt: &'rt Runtime,
    rec: Arc<ThreadRecord>,
    depth: Cell<u32>,
    _not_send: PhantomData<*const ()>,
}

impl<'rt> ThreadHandle<'rt> {
    pub(crate) fn register(rt: &'rt Runtime) -> ThreadHandle<'rt> {
        let rec = Arc::new(ThreadRecord {
            quiescent: AtomicU64::new(0),
            entry: AtomicU64::new(NOT_ENTERED),
            ack: this_thread_ack(),
            // SAFETY: gettid has no preconditions.
            tid: unsafe { libc::gettid() },
        });
        {
            let mut threads = rt.registry().threads.lock().unwrap();
            // Stored under the lock, so a reclaimer scanning concurrently
            // either misses this thread (it holds no code yet) or sees a
            // current epoch.
            rec.quiescent
                .store(rt.epoch().load(Ordering::Acquire), Ordering::Release);
            threads.push(rec.clone());
        }
        ThreadHandle {
            rt,
            rec,
            depth: Cell::new(0),
            _not_send: PhantomData,
        }
    }

    /// Safepoint poll: "I hold no JIT code address except activations covered
    /// by an [`enter`](Self::enter) guard." One load and one store.
    #[inline]
    pub fn quiescent(&self) {
        let e = self.rt.epoch().load(Ordering::Acquire);
        self.rec.quiescent.store(e, Ordering::Release);
    }

    /// Runs `f` (a blocking call: a lock, I/O, sleep) with the thread marked
    /// offline, so reclamation does not wait for it. The same contract as
    /// [`quiescent`](Self::quiescent) holds for the whole of `f`.
    pub fn blocking<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Online<'a, 'rt>(&'a ThreadHandle<'rt>);
        impl Drop for Online<'_, '_> {
            fn drop(&mut self) {
                self.0.quiescent();
            }
        }
        self.rec.quiescent.store(OFFLINE, Ordering::Release);
        let _online = Online(self);
        f()
    }

    /// Marks entry into JIT code from outside (the "oldest native entry"):
    /// while the outermost guard lives, nothing retired at or after the entry
    /// epoch is reclaimed, so `quiescent` may be called from inside JIT code
    /// (a safepoint poll) without freeing code that is on this thread's stack.
    /// Nested guards are cheap (a counter).
    pub fn enter(&self) -> JitEntry<'_, 'rt> {
        let d = self.depth.get();
        if d == 0 {
            let e = self.rt.epoch().load(Ordering::Acquire);
            self.rec.entry.store(e, Ordering::Release);
        }
        self.depth.set(d + 1);
        JitEntry { handle: self }
    }

    /// The kernel thread id of this thread.
    pub fn tid(&self) -> i32 {
        self.rec.tid
    }
}

impl Drop for ThreadHandle<'_> {
    fn drop(&mut self) {
        let mut threads = self.rt.registry().threads.lock().unwrap();
        threads.retain(|t| !Arc::ptr_eq(t, &self.rec));
    }
}

/// Guard returned by [`ThreadHandle::enter`].
pub struct JitEntry<'h, 'rt> {
    handle: &'h ThreadHandle<'rt>,
}

impl Drop for JitEntry<'_, '_> {
    fn drop(&mut self) {
        let h = self.handle;
        let d = h.depth.get() - 1;
        h.depth.set(d);
        if d == 0 {
            h.rec.entry.store(NOT_ENTERED, Ordering::Release);
        }
    }
}
