//! Asking one thread at a time: per-thread poll words, and looking again at
//! threads whose stacks pin retired code.
//!
//! The anchor is HotSpot's thread-local handshakes (JEP 312): the runtime
//! asks *one* thread, through *that thread's* poll word, and a thread that
//! has answered is not asked again until something new needs it. Native code
//! polls its own word (one compare), so asking costs nothing to the threads
//! not asked. The rules, each applied under the commit lock by
//! [`ask_threads`] after every reclamation pass:
//!
//! 1. **Ask a thread whose horizon holds a retirement back, if it can
//!    answer**: it is inside native code and not blocked (a blocked thread
//!    has already published its pins and holds nothing else; an interpreter
//!    outside native code answers at its own quiescent points).
//! 2. **Withdraw every other request**, except from a thread whose pins hold
//!    a retirement (it may have been asked to look again, rule 3).
//! 3. **Being inside retired code is not a reason to ask again.** A thread
//!    whose pins alone hold a blob has answered; its pins are known. They are
//!    released when it leaves native code (its outermost `enter` returns and
//!    reclaims), and otherwise by looking again, now and then: while pins hold
//!    anything, a helper thread ([`Reasker`]) asks the pinning threads to
//!    rescan at growing intervals (1 ms, doubling to 1 s, as HotSpot's
//!    `GuaranteedSafepointInterval` bounds how long a safepoint-free stretch
//!    lasts), and [`crate::Runtime::synchronize`] asks them at each step. A
//!    frame that runs for good in retired code pays one stack scan per
//!    interval; the blob is reclaimed at most one interval after the frame
//!    returns out of it.
//!
//! A thread answers by clearing its own word *before* it reports
//! (`ThreadRecord::take_request`), so a request made while it reports is
//! seen at its next poll, never lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::code_memory::Blob;
use crate::reclaim::pins_any;
use crate::registry::Registry;

/// The first interval at which pinning threads are asked to look again.
const FIRST_LOOK: Duration = Duration::from_millis(1);
/// The longest interval.
const LONGEST_LOOK: Duration = Duration::from_secs(1);

/// Rules 1 and 2 (see the module docs) for every registered thread, given
/// the largest tag waiting for horizons and the blobs that only pins hold.
/// Records in each thread whether its pins hold one of `pinned`; calls
/// `newly_pinning(tid)` for each thread whose pins began to. Returns whether
/// any thread's pins hold a retirement.
pub(crate) fn ask_threads(
    registry: &Registry,
    waiting_tag: Option<u64>,
    pinned: &[Blob],
    mut newly_pinning: impl FnMut(i32),
) -> bool {
    let mut pins_hold = false;
    registry.for_each(|t| {
        let behind = waiting_tag.is_some_and(|tag| t.horizon() <= tag);
        let holds = !pinned.is_empty()
            && t.has_pins.load(Ordering::Acquire)
            && pins_any(&t.lock_pins(), pinned);
        if behind && t.can_answer() {
            t.ask(true);
        } else if !holds {
            t.ask(false);
        }
        if holds && !t.pins_hold.swap(true, Ordering::AcqRel) {
            newly_pinning(t.tid);
        } else if !holds {
            t.pins_hold.store(false, Ordering::Release);
        }
        pins_hold |= holds;
    });
    pins_hold
}

/// Rule 3: asks every thread whose pins hold a retirement, and that can
/// answer, to rescan its stack at its next poll.
pub(crate) fn ask_pinning_threads(registry: &Registry) {
    registry.for_each(|t| {
        if t.pins_hold.load(Ordering::Acquire) && t.can_answer() {
            t.ask(true);
        }
    });
}

/// What the helper asks of the runtime it serves (the runtime implements it; named here so
/// that this module needs nothing above it).
pub(crate) trait Pinned: Send + Sync + 'static {
    /// Some retirement waits only for pins on a thread's stack.
    fn pins_pending(&self) -> bool;
    /// The threads to ask.
    fn registry(&self) -> &Registry;
}

/// The helper thread of rule 3: runs while pins hold retirements, asking the
/// pinning threads to look again at growing intervals, and ends when nothing
/// is pinned. Started on demand ([`Reasker::start`]); its handle is kept and
/// joined, never detached.
#[derive(Default)]
pub(crate) struct Reasker {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct Shared {
    /// A helper is running (or starting).
    running: AtomicBool,
    /// The runtime is going away: the helper ends now.
    stop: Mutex<bool>,
    wake: Condvar,
}

impl Reasker {
    /// Makes sure a helper runs for `rt` (called when pins begin to hold a
    /// retirement). Cheap when one already does.
    pub(crate) fn start<R: Pinned>(&self, rt: Weak<R>) {
        if self.shared.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut thread = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = thread.take() {
            // It cleared `running` as its last act: joining waits only for its exit.
            let _ = old.join();
        }
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("jitvm-reasker".into())
            .spawn(move || look_again(&shared, &rt));
        match spawned {
            Ok(handle) => *thread = Some(handle),
            Err(e) => {
                // Reclamation still happens when the pinning threads leave native
                // code or `synchronize` runs; only the prompt re-ask is lost.
                log::warn!("jitvm-runtime: cannot start the re-ask thread: {e}");
                self.shared.running.store(false, Ordering::Release);
            }
        }
    }
}

impl Drop for Reasker {
    fn drop(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self
            .thread
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            // The runtime's last reference may be the helper's own (a brief upgrade).
            if thread.thread().id() == std::thread::current().id() {
                std::mem::forget(thread);
            } else {
                let _ = thread.join();
            }
        }
    }
}

/// The helper's loop: sleep, ask the pinning threads, double the interval;
/// end when no pins hold anything (or the runtime is gone).
fn look_again<R: Pinned>(shared: &Shared, rt: &Weak<R>) {
    let mut interval = FIRST_LOOK;
    loop {
        {
            let stop = shared.stop.lock().unwrap_or_else(|p| p.into_inner());
            let (stop, _) = shared
                .wake
                .wait_timeout_while(stop, interval, |stop| !*stop)
                .unwrap_or_else(|p| p.into_inner());
            if *stop {
                return;
            }
        }
        let Some(rt) = rt.upgrade() else { return };
        if !rt.pins_pending() {
            shared.running.store(false, Ordering::SeqCst);
            // A pin that appeared since would have found `running` set and
            // started nobody: look once more before leaving.
            if !rt.pins_pending() || shared.running.swap(true, Ordering::SeqCst) {
                return;
            }
        }
        ask_pinning_threads(rt.registry());
        interval = (interval * 2).min(LONGEST_LOOK);
    }
}
