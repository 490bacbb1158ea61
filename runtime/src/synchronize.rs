//! Waiting for reclamation: [`Runtime::synchronize`] returns once everything retired before
//! it is freed, settling owed serializations and asking the threads that hold code back.
//! It sits above the runtime, the threads and the native safepoint it drives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::handshake;
use crate::publish::Guarantee;
use crate::threads::{current_inner, ThreadHandle};
use crate::{Error, Runtime};

impl Runtime {
    /// Waits until everything retired before the call is reclaimed, or
    /// `timeout` passes: then [`Error::Timeout`] names the threads holding it
    /// back and since when. Retirements of `Eventual` commits get the
    /// serialization they wait for (an empty commit); the poll word asks
    /// native code to report. If the calling thread is registered with this
    /// runtime it is not waited for: it reports at each step (as a native
    /// safepoint if it is inside native code) and waits offline.
    pub fn synchronize(&self, timeout: Duration) -> Result<(), Error> {
        self.check_process()?;
        let start = Instant::now();
        let target = self.commit_lock().next_serial();
        let me = current_inner()
            .filter(|i| std::ptr::eq(Arc::as_ptr(&i.rt), self))
            .map(ThreadHandle::lend);
        loop {
            let needs_serialization = {
                let rec = self.commit_lock();
                if rec.oldest_serial().map_or(true, |s| s >= target) {
                    return Ok(());
                }
                rec.awaits_serialization()
            };
            if needs_serialization {
                self.transaction().commit(Guarantee::Eventual)?;
            }
            // A thread whose pins hold the retirement answered once; ask it to
            // look again (its frame may have returned out of the code since).
            handshake::ask_pinning_threads(self.registry());
            if let Some(h) = &me {
                if h.is_entered() {
                    h.safepoint_from_native();
                } else {
                    h.quiescent();
                }
            }
            let mut events = Vec::new();
            let done = {
                let mut rec = self.commit_lock();
                self.reclaim_locked(&mut rec, &mut events);
                rec.oldest_serial().map_or(true, |s| s >= target)
            };
            self.hooks().fire(&events);
            if done {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                let (pending_retirements, held_back_by) = self.held_back();
                return Err(Error::Timeout {
                    waited: start.elapsed(),
                    pending_retirements,
                    held_back_by,
                });
            }
            let nap = || crate::sleep::sleep(Duration::from_micros(500));
            match &me {
                Some(h) => h.blocking(nap),
                None => nap(),
            }
        }
    }
}
