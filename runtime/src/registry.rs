//! The registry: one record per registered thread, published for the reclaimer (see
//! [`crate::reclaim`]) and the handshakes (see [`crate::handshake`]): what each thread last
//! reported, where it entered JIT code, the code its stack pins, and its poll word. The
//! handles that own the records are [`crate::threads`]; the runtime holds the registry.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

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
    /// Signal-strategy handshake for offline threads (see [`crate::offline`]):
    /// 0 while online.
    pub(crate) away: AtomicU32,
    pub(crate) tid: libc::pid_t,
    /// `[low, high)` of the thread's stack, or `(0, 0)` if unknown.
    pub(crate) stack: (usize, usize),
    /// Sorted, deduplicated code addresses found on the stack by the last
    /// native safepoint; `has_pins` says whether it is non-empty.
    pub(crate) pins: Mutex<Vec<usize>>,
    pub(crate) has_pins: AtomicBool,
    /// Set by the reclaimer: some of `pins` fall inside a pending retirement.
    pub(crate) pins_hold: AtomicBool,
    /// The word this thread's native code polls: null for `own_poll`, else a
    /// word the client lent for the duration of [`ThreadHandle::with_poll_word`].
    /// Locked whenever another thread writes through it, so a lent word is
    /// never written after the lending closure returns.
    poll_at: Mutex<PollAt>,
    own_poll: AtomicU32,
    /// Times this thread answered a request on its poll word.
    pub(crate) slow_polls: AtomicU64,
}

/// Where a thread's poll word is (see `ThreadRecord::poll_at`).
struct PollAt(*const AtomicU32);

// SAFETY: the pointer is either null or a word lent by `with_poll_word`,
// valid (and only dereferenced under the lock) until that call returns; an
// `AtomicU32` may be written from any thread.
unsafe impl Send for PollAt {}

impl ThreadRecord {
    /// The record of thread `tid` (its stack `stack`), not yet in JIT code; `ack` is where
    /// the signal strategy's handler acknowledges.
    pub(crate) fn new(tid: i32, stack: (usize, usize), ack: Arc<AtomicU64>) -> ThreadRecord {
        ThreadRecord {
            quiescent: AtomicU64::new(0),
            entry: AtomicU64::new(NOT_ENTERED),
            ack,
            away: AtomicU32::new(0),
            tid,
            stack,
            pins: Mutex::new(Vec::new()),
            has_pins: AtomicBool::new(false),
            pins_hold: AtomicBool::new(false),
            poll_at: Mutex::new(PollAt(std::ptr::null())),
            own_poll: AtomicU32::new(0),
            slow_polls: AtomicU64::new(0),
        }
    }

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

    /// The thread's own poll word, the one it polls unless a client placed another.
    pub(crate) fn own_poll(&self) -> &AtomicU32 {
        &self.own_poll
    }

    /// Makes `word` (null: the thread's own) the word this thread polls, moving a request
    /// pending on the old word to it; returns the old word's address.
    pub(crate) fn move_poll_word(&self, word: *const AtomicU32) -> *const AtomicU32 {
        let mut at = self.lock_poll();
        let pending = self.word(&at).swap(0, Ordering::AcqRel);
        let previous = std::mem::replace(&mut at.0, word);
        self.word(&at).fetch_or(pending, Ordering::AcqRel);
        previous
    }

    fn lock_poll(&self) -> MutexGuard<'_, PollAt> {
        self.poll_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn word<'a>(&'a self, at: &'a PollAt) -> &'a AtomicU32 {
        if at.0.is_null() {
            &self.own_poll
        } else {
            // SAFETY: a non-null pointer is a word lent by `with_poll_word`,
            // alive while it is installed, and the caller holds the lock that
            // uninstalling it takes.
            unsafe { &*at.0 }
        }
    }

    /// Asks this thread to report at its next poll (`true`), or withdraws
    /// the request. Only the reclaimer asks; the thread withdraws its own
    /// request when it answers ([`Self::take_request`]).
    pub(crate) fn ask(&self, yes: bool) {
        let at = self.lock_poll();
        let word = self.word(&at);
        if (word.load(Ordering::Relaxed) != 0) != yes {
            word.store(yes as u32, Ordering::Release);
        }
    }

    /// Whether this thread's poll word was set; clears it. Called by the
    /// thread itself before it answers, so a request made after this point
    /// is seen at its next poll.
    pub(crate) fn take_request(&self) -> bool {
        let at = self.lock_poll();
        self.word(&at).swap(0, Ordering::AcqRel) != 0
    }

    /// Whether this thread's poll word is set.
    pub(crate) fn is_asked(&self) -> bool {
        let at = self.lock_poll();
        self.word(&at).load(Ordering::Acquire) != 0
    }

    /// Whether this thread is inside native code and not blocked, so that a
    /// poll can answer a request.
    pub(crate) fn can_answer(&self) -> bool {
        self.entry.load(Ordering::Relaxed) != NOT_ENTERED
    }
}

/// The set of registered threads of one runtime.
#[derive(Default)]
pub(crate) struct Registry {
    threads: Mutex<Vec<Arc<ThreadRecord>>>,
}

impl Registry {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Vec<Arc<ThreadRecord>>> {
        self.threads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The minimum horizon over all threads (`u64::MAX` if none), and every
    /// thread's pins appended to `pins` (unsorted across threads).
    pub(crate) fn scan(&self, pins: &mut Vec<usize>) -> u64 {
        let threads = self.lock();
        let mut horizon = u64::MAX;
        for t in threads.iter() {
            horizon = horizon.min(t.horizon());
            if t.has_pins.load(Ordering::Acquire) {
                pins.extend_from_slice(&t.lock_pins());
            }
        }
        horizon
    }

    /// What every thread publishes, for diagnostics.
    pub(crate) fn report(&self) -> Vec<ThreadReport> {
        self.lock()
            .iter()
            .map(|t| ThreadReport {
                tid: t.tid,
                quiescent: t.quiescent.load(Ordering::Acquire),
                entry: t.entry.load(Ordering::Acquire),
                pins: t.lock_pins().clone(),
                slow_polls: t.slow_polls.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Runs `f` on every registered thread.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&ThreadRecord)) {
        for t in self.lock().iter() {
            f(t);
        }
    }

    /// Slow-path answers of the threads registered now.
    pub(crate) fn slow_polls(&self) -> u64 {
        self.lock()
            .iter()
            .map(|t| t.slow_polls.load(Ordering::Relaxed))
            .sum()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn remove(&self, rec: &Arc<ThreadRecord>) {
        self.lock().retain(|t| !Arc::ptr_eq(t, rec));
    }
}

/// One thread's published state, as [`Registry::report`] read it.
pub(crate) struct ThreadReport {
    pub(crate) tid: i32,
    pub(crate) quiescent: u64,
    pub(crate) entry: u64,
    pub(crate) pins: Vec<usize>,
    pub(crate) slow_polls: u64,
}
