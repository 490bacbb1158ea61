//! The handles of threads that run JIT code (their records are in
//! `crate::registry`).
//!
//! Every thread that may run JIT code registers
//! ([`crate::Runtime::register_thread`]) and gets a [`ThreadHandle`]: owned,
//! `!Send`, deregistering on drop, and reachable from anywhere on the thread
//! through [`with_current_thread`] (native code calling back into Rust needs
//! it). A thread is registered with at most one runtime at a time.
//!
//! Each registered thread publishes what the reclaimer reads (see
//! [`crate::reclaim`]):
//!
//! * `quiescent`: the global epoch the thread last saw at a quiescent point,
//!   or `OFFLINE` while it is blocked outside JIT code;
//! * `entry`: the epoch at which the thread entered JIT code from outside
//!   (outermost [`ThreadHandle::enter`]), or `NOT_ENTERED`; a native
//!   safepoint ([`crate::safepoint`]) may raise it;
//! * `pins`: code addresses its last native safepoint found on its stack;
//! * its *poll word*: the runtime sets it to ask this one thread, if it is
//!   inside native code, to report at its next poll (a per-thread handshake,
//!   as HotSpot's JEP 312); it is the thread's own word, or one the client
//!   placed in its own per-thread context ([`ThreadHandle::with_poll_word`]).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::registry::{ThreadRecord, NOT_ENTERED, OFFLINE};
use crate::{Error, Runtime};

/// What a handle and the thread-local current handle share.
pub(crate) struct Inner {
    pub(crate) rt: Arc<Runtime>,
    pub(crate) rec: Arc<ThreadRecord>,
    /// Nesting depth of `enter`.
    pub(crate) depth: Cell<u32>,
    /// This thread has published pins that the outermost exit must clear.
    pub(crate) has_pins: Cell<bool>,
    /// The epoch of the last native safepoint that scanned the stack.
    pub(crate) polled: Cell<u64>,
    registered: Cell<bool>,
    /// The owning handle was dropped inside `enter`: deregister on exit.
    pub(crate) deregister_pending: Cell<bool>,
}

impl Inner {
    pub(crate) fn deregister(&self) {
        if self.registered.replace(false) {
            self.rt.registry().remove(&self.rec);
            self.rt
                .retired_slow_polls(self.rec.slow_polls.load(Ordering::Relaxed));
            // It held nothing back any more: whatever waited only for it is free.
            self.rt.request_reclaim();
        }
    }
}

/// Holds the current handle; deregisters it when the thread exits, even if
/// the owning handle was leaked.
struct Current(Cell<Option<Rc<Inner>>>);

impl Drop for Current {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            inner.deregister();
        }
    }
}

thread_local! {
    static CURRENT: Current = const { Current(Cell::new(None)) };
}

/// The calling thread's current registration, if any.
pub(crate) fn current_inner() -> Option<Rc<Inner>> {
    CURRENT
        .try_with(|c| {
            let cur = c.0.take();
            let copy = cur.clone();
            c.0.set(cur);
            copy
        })
        .ok()
        .flatten()
        .filter(|i| i.registered.get())
}

/// Runs `f` with the calling thread's current [`ThreadHandle`] (the one its
/// live registration returned), or `None` if it is not registered. This is
/// how Rust code called *from* native code reaches the handle. Nestable.
pub fn with_current_thread<R>(f: impl FnOnce(Option<&ThreadHandle>) -> R) -> R {
    let h = current_inner().map(ThreadHandle::lend);
    f(h.as_ref())
}

/// A registered thread: what it must hold to run JIT code. Owned (it keeps
/// its runtime alive through an `Arc`), not `Send` (it describes the thread
/// that created it); dropping the handle that
/// [`Runtime::register_thread`] returned deregisters the thread.
///
/// It cannot be sent to another thread:
///
/// ```compile_fail
/// fn send<T: Send>(_: T) {}
/// let rt = jitvm_runtime::Runtime::new(Default::default()).unwrap();
/// send(rt.register_thread().unwrap());
/// ```
///
/// Contract (what makes reclamation sound):
/// * JIT code runs only inside [`enter`](Self::enter) on a registered thread;
/// * [`quiescent`](Self::quiescent) is called only where the thread holds no
///   address of JIT code except activations covered by `enter`;
/// * native code that runs long polls this thread's poll word
///   ([`ThreadHandle::poll_word`], or the one given to
///   [`ThreadHandle::with_poll_word`]) and calls the native safepoint
///   ([`crate::jitvm_safepoint_slow`]) when it is set, at points where it
///   holds no code address other than return addresses on its stack; or
///   reclamation waits for it (it never frees early).
pub struct ThreadHandle {
    pub(crate) inner: Rc<Inner>,
    /// The handle `register_thread` returned (dropping it deregisters), as
    /// opposed to a view lent by `with_current_thread`.
    owner: bool,
}

impl std::fmt::Debug for ThreadHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadHandle")
            .field("tid", &self.inner.rec.tid)
            .field("depth", &self.inner.depth.get())
            .finish()
    }
}

/// The calling thread's stack as `[low, high)`, or `(0, 0)` if unknown.
fn current_stack() -> (usize, usize) {
    // SAFETY: pthread_getattr_np fills the zeroed attr for the calling
    // thread (which is alive); pthread_attr_getstack reads it; the attr is
    // destroyed once, after use.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return (0, 0);
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let r = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if r != 0 || addr.is_null() {
            return (0, 0);
        }
        (addr as usize, addr as usize + size)
    }
}

impl ThreadHandle {
    /// Registers the calling thread; `ack` is its signal-strategy
    /// acknowledgement counter (`sync::this_thread_ack`).
    pub(crate) fn register(rt: &Arc<Runtime>, ack: Arc<AtomicU64>) -> Result<ThreadHandle, Error> {
        rt.check_process()?;
        let busy = CURRENT
            .try_with(|c| {
                let cur = c.0.take();
                let busy = cur.as_ref().is_some_and(|i| i.registered.get());
                c.0.set(cur);
                busy
            })
            .unwrap_or(true);
        if busy {
            return Err(Error::AlreadyRegistered);
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let rec = Arc::new(ThreadRecord::new(tid, current_stack(), ack));
        {
            let mut threads = rt.registry().lock();
            // Stored under the lock, so a reclaimer scanning concurrently
            // either misses this thread (it holds no code yet) or sees a
            // current epoch.
            rec.quiescent
                .store(rt.epoch().load(Ordering::Acquire), Ordering::Release);
            threads.push(rec.clone());
        }
        let inner = Rc::new(Inner {
            rt: rt.clone(),
            rec,
            depth: Cell::new(0),
            has_pins: Cell::new(false),
            polled: Cell::new(u64::MAX),
            registered: Cell::new(true),
            deregister_pending: Cell::new(false),
        });
        let _ = CURRENT.try_with(|c| c.0.set(Some(inner.clone())));
        Ok(ThreadHandle { inner, owner: true })
    }

    /// A non-owning view of a registration (dropping it deregisters nothing).
    pub(crate) fn lend(inner: Rc<Inner>) -> ThreadHandle {
        ThreadHandle {
            inner,
            owner: false,
        }
    }

    /// Runs `f` with the calling thread's current handle; see
    /// [`with_current_thread`].
    pub fn with_current<R>(f: impl FnOnce(Option<&ThreadHandle>) -> R) -> R {
        with_current_thread(f)
    }

    /// The runtime this thread is registered with.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.inner.rt
    }

    /// Safepoint poll for interpreters and Rust code: "I hold no JIT code
    /// address except activations covered by [`enter`](Self::enter)".
    /// Outside `enter`: a load, a store and a fence, and if this thread was
    /// the one a retirement waited for, a reclamation. Inside `enter` (an
    /// interpreter that native code called) it is a native safepoint
    /// ([`safepoint_from_native`](Self::safepoint_from_native)): the
    /// activations below are pinned, so the thread holds nothing else back.
    #[inline]
    pub fn quiescent(&self) {
        if self.inner.depth.get() > 0 {
            self.safepoint_from_native();
        } else {
            self.report_quiescent();
        }
    }

    /// The quiescent point outside `enter`. The fence orders the store before
    /// the load of `waiting_below`, and the reclaimer stores that before it
    /// reads the horizons: either the reclaimer sees this report, or this
    /// thread sees that it was waited for and reclaims (no lost wakeup).
    pub(crate) fn report_quiescent(&self) {
        let i = &*self.inner;
        let rt = &i.rt;
        let before = i.rec.quiescent.load(Ordering::Relaxed);
        let e = rt.epoch().load(Ordering::Acquire);
        if before == e {
            return;
        }
        i.rec.quiescent.store(e, Ordering::Release);
        fence(Ordering::SeqCst);
        if before < rt.waiting_below() {
            rt.request_reclaim();
        }
    }

    /// Runs `f` (a blocking call: a join, a lock, I/O, sleep) with the thread
    /// marked offline, so reclamation does not wait for it. The same contract
    /// as [`quiescent`](Self::quiescent) holds for the whole of `f`: it holds
    /// no code address and runs no JIT code (no `enter` inside it).
    ///
    /// Inside `enter`, blocking is a native safepoint: the thread first pins
    /// what its stack holds (as a poll would), then holds nothing else back
    /// until `f` returns (its entry epoch no longer counts), and on return
    /// re-enters at the current epoch.
    pub fn blocking<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Online<'a>(&'a ThreadHandle);
        impl Drop for Online<'_> {
            fn drop(&mut self) {
                let i = &*self.0.inner;
                crate::offline::come_back(&i.rec.away);
                if i.depth.get() > 0 {
                    // Entry first, then quiescent (see `ThreadRecord::horizon`).
                    let e = i.rt.epoch().load(Ordering::Acquire);
                    i.rec.entry.store(e, Ordering::Release);
                    i.rec.quiescent.store(e, Ordering::Release);
                    i.polled.set(e);
                } else {
                    self.0.report_quiescent();
                }
            }
        }
        let i = &*self.inner;
        // If the stack could not be scanned, the entry epoch keeps covering it.
        if i.depth.get() > 0 && self.pin_stack_here() {
            i.rec.entry.store(NOT_ENTERED, Ordering::Release);
        }
        // A commit's signal would interrupt the blocking call: commits skip
        // offline threads, which serialize themselves on return (`Online`).
        crate::offline::go_away(&i.rec.away);
        i.rec.quiescent.store(OFFLINE, Ordering::Release);
        fence(Ordering::SeqCst);
        i.rt.request_reclaim_if_waited();
        let _online = Online(self);
        f()
    }

    /// The word the runtime sets to ask this thread to report at its next
    /// native poll (see [`crate::safepoint`]): nonzero means "call
    /// [`crate::jitvm_safepoint_slow`]". This is the thread's own word, in
    /// its registration (stable while the handle lives); a JIT that keeps a
    /// per-thread context can lend a word inside it instead with
    /// [`with_poll_word`](Self::with_poll_word), so its code polls with one
    /// compare against the context register.
    pub fn poll_word(&self) -> &AtomicU32 {
        self.inner.rec.own_poll()
    }

    /// Runs `f` with `word` as this thread's poll word (see
    /// [`poll_word`](Self::poll_word)): the runtime sets `word` to ask this
    /// thread to report, and never touches it after this returns. A request
    /// pending on the previous word moves to `word`, and back at the end.
    pub fn with_poll_word<R>(&self, word: &AtomicU32, f: impl FnOnce() -> R) -> R {
        struct Restore<'a> {
            rec: &'a ThreadRecord,
            previous: *const AtomicU32,
        }
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                self.rec.move_poll_word(self.previous);
            }
        }
        let rec = &*self.inner.rec;
        let previous = rec.move_poll_word(word);
        let _restore = Restore { rec, previous };
        f()
    }

    /// Native-poll answers this thread has made (its poll word was set).
    pub fn slow_polls(&self) -> u64 {
        self.inner.rec.slow_polls.load(Ordering::Relaxed)
    }

    /// The kernel thread id of this thread.
    pub fn tid(&self) -> i32 {
        self.inner.rec.tid
    }

    /// This thread's stack as `[low, high)` (what native safepoints scan), or `(0, 0)` if
    /// the system would not say.
    pub fn stack(&self) -> (usize, usize) {
        self.inner.rec.stack
    }
}

impl Drop for ThreadHandle {
    fn drop(&mut self) {
        if !self.owner {
            return;
        }
        let _ = CURRENT.try_with(|c| {
            let cur = c.0.take();
            match cur {
                Some(i) if Rc::ptr_eq(&i, &self.inner) => {}
                other => c.0.set(other),
            }
        });
        if self.inner.depth.get() > 0 {
            self.inner.deregister_pending.set(true);
        } else {
            self.inner.deregister();
        }
    }
}

impl Runtime {
    /// Registers the calling thread as one that may run JIT code, and makes
    /// the handle its current one ([`crate::with_current_thread`]).
    /// [`Error::AlreadyRegistered`] if the thread holds a live registration
    /// (with any runtime).
    pub fn register_thread(self: &Arc<Self>) -> Result<ThreadHandle, Error> {
        ThreadHandle::register(self, crate::sync::this_thread_ack())
    }
}
