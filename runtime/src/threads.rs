//! The registry of threads that run JIT code, and their handles.
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
//! * `pins`: code addresses its last native safepoint found on its stack.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::native::NativeScope;
use crate::{Error, Runtime};

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
    /// Signal-strategy acknowledgements of this OS thread.
    pub(crate) ack: Arc<AtomicU64>,
    pub(crate) tid: libc::pid_t,
    /// `[low, high)` of the thread's stack, or `(0, 0)` if unknown.
    pub(crate) stack: (usize, usize),
    /// Sorted, deduplicated code addresses found on the stack by the last
    /// native safepoint; `has_pins` says whether it is non-empty.
    pub(crate) pins: Mutex<Vec<usize>>,
    pub(crate) has_pins: AtomicBool,
}

impl ThreadRecord {
    /// The oldest epoch this thread may still hold code from: a retirement
    /// tagged `r` is safe from this thread once `horizon() > r` (and no pin
    /// of it falls inside the blob).
    pub(crate) fn horizon(&self) -> u64 {
        // Order matters: `quiescent` first (Acquire), then `entry`. A
        // quiescent mark newer than `r` was stored after any entry tagged
        // <= r in this thread's program order, so if we saw the mark we also
        // see that entry (or its later raising or clearing). See
        // crate::reclaim.
        let q = self.quiescent.load(Ordering::Acquire);
        let e = self.entry.load(Ordering::Acquire);
        q.min(e)
    }

    pub(crate) fn lock_pins(&self) -> MutexGuard<'_, Vec<usize>> {
        self.pins.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The set of registered threads of one runtime.
#[derive(Default)]
pub(crate) struct Registry {
    threads: Mutex<Vec<Arc<ThreadRecord>>>,
}

/// What the reclaimer needs from one pass over the registry.
pub(crate) struct Scan {
    /// Minimum horizon over all threads (`u64::MAX` if none).
    pub(crate) horizon: u64,
    /// Whether any thread is inside native code.
    pub(crate) entered: bool,
}

impl Registry {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Vec<Arc<ThreadRecord>>> {
        self.threads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The minimum horizon, and every thread's pins appended to `pins`
    /// (unsorted across threads).
    pub(crate) fn scan(&self, pins: &mut Vec<usize>) -> Scan {
        let threads = self.lock();
        let mut scan = Scan {
            horizon: u64::MAX,
            entered: false,
        };
        for t in threads.iter() {
            scan.horizon = scan.horizon.min(t.horizon());
            scan.entered |= t.entry.load(Ordering::Relaxed) != NOT_ENTERED;
            if t.has_pins.load(Ordering::Acquire) {
                pins.extend_from_slice(&t.lock_pins());
            }
        }
        scan
    }

    /// (tid, horizon, entered, pins) of every thread.
    pub(crate) fn report(&self) -> Vec<(i32, u64, bool, Vec<usize>)> {
        self.lock()
            .iter()
            .map(|t| {
                (
                    t.tid,
                    t.horizon(),
                    t.entry.load(Ordering::Relaxed) != NOT_ENTERED,
                    t.lock_pins().clone(),
                )
            })
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn remove(&self, rec: &Arc<ThreadRecord>) {
        self.lock().retain(|t| !Arc::ptr_eq(t, rec));
    }
}

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
    deregister_pending: Cell<bool>,
}

impl Inner {
    fn deregister(&self) {
        if self.registered.replace(false) {
            self.rt.registry().remove(&self.rec);
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
/// * native code that runs long polls [`Runtime::poll_word`] and calls the
///   native safepoint ([`crate::jitvm_safepoint_slow`]) when it is set, at
///   points where it holds no code address other than return addresses on
///   its stack; or reclamation waits for it (it never frees early).
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
    pub(crate) fn register(rt: &Arc<Runtime>) -> Result<ThreadHandle, Error> {
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
        let rec = Arc::new(ThreadRecord {
            quiescent: AtomicU64::new(0),
            entry: AtomicU64::new(NOT_ENTERED),
            ack: crate::sync::this_thread_ack(),
            // SAFETY: gettid has no preconditions.
            tid: unsafe { libc::gettid() },
            stack: current_stack(),
            pins: Mutex::new(Vec::new()),
            has_pins: AtomicBool::new(false),
        });
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
    /// address except activations covered by [`enter`](Self::enter)". One
    /// load and one store.
    #[inline]
    pub fn quiescent(&self) {
        let e = self.inner.rt.epoch().load(Ordering::Acquire);
        self.inner.rec.quiescent.store(e, Ordering::Release);
    }

    /// Runs `f` (a blocking call: a join, a lock, I/O, sleep) with the thread
    /// marked offline, so reclamation does not wait for it. The same contract
    /// as [`quiescent`](Self::quiescent) holds for the whole of `f`.
    pub fn blocking<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Online<'a>(&'a ThreadHandle);
        impl Drop for Online<'_> {
            fn drop(&mut self) {
                self.0.quiescent();
            }
        }
        self.inner.rec.quiescent.store(OFFLINE, Ordering::Release);
        let _online = Online(self);
        f()
    }

    /// **The** way to run JIT code: runs `f` with a [`NativeScope`], the only
    /// thing that turns a [`CodePtr`](crate::CodePtr) into a callable
    /// function. While the outermost `enter` lasts, nothing retired at or
    /// after its entry epoch is reclaimed (native safepoints can move that
    /// forward without leaving). Nestable; cheap: a counter, and on the
    /// outermost entry one load and one store (no lock, no system call).
    #[inline]
    pub fn enter<R>(&self, f: impl FnOnce(&NativeScope<'_>) -> R) -> R {
        struct Exit<'a>(&'a Inner);
        impl Drop for Exit<'_> {
            #[inline]
            fn drop(&mut self) {
                let i = self.0;
                let d = i.depth.get().saturating_sub(1);
                i.depth.set(d);
                if d == 0 {
                    i.rec.entry.store(NOT_ENTERED, Ordering::Release);
                    if i.has_pins.replace(false) {
                        i.rec.has_pins.store(false, Ordering::Release);
                        i.rec.lock_pins().clear();
                    }
                    if i.deregister_pending.get() {
                        i.deregister();
                    }
                }
            }
        }
        let i = &*self.inner;
        let d = i.depth.get();
        if d == 0 {
            let e = i.rt.epoch().load(Ordering::Acquire);
            i.rec.entry.store(e, Ordering::Release);
        }
        i.depth.set(d.saturating_add(1));
        let _exit = Exit(i);
        f(&NativeScope { handle: self })
    }

    /// True while inside [`enter`](Self::enter).
    pub fn is_entered(&self) -> bool {
        self.inner.depth.get() > 0
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
