//! The code map: address to blob, with the owner tag the JIT set, and a hook
//! on publication, reclamation and pinning (for a `perf` map, a disassembler,
//! a profiler, a trace).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::code_memory::Blob;

/// What [`crate::Runtime::lookup`] finds at an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// The blob containing the address.
    pub blob: Blob,
    /// The owner tag set when staging ([`crate::Transaction::set_owner`];
    /// 0 if none), for example a function index.
    pub owner: u64,
    /// True if the blob is retired but not reclaimed yet (threads may still
    /// be finishing it).
    pub retired: bool,
}

/// An event reported to the code hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeEvent {
    /// A blob became reachable (its commit published it).
    Published {
        /// Executable address.
        addr: usize,
        /// Length in bytes.
        len: usize,
        /// Owner tag.
        owner: u64,
    },
    /// A retired blob was reclaimed: its bytes are no longer that code.
    Reclaimed {
        /// Executable address.
        addr: usize,
        /// Length in bytes.
        len: usize,
        /// Owner tag.
        owner: u64,
    },
    /// A thread's stack (its pins, from its last native safepoint) began to
    /// hold a retired blob back: it is still running inside it, or a frame
    /// of it has not returned. It is not asked again until it may help.
    PinnedBy {
        /// Kernel thread id of the thread.
        tid: i32,
    },
}

/// A code hook: called with each batch of events (see [`crate::Runtime::set_code_hook`]).
pub type CodeHook = Box<dyn Fn(&[CodeEvent]) + Send + Sync>;

pub(crate) type Hook = Arc<dyn Fn(&[CodeEvent]) + Send + Sync>;

/// The installed hook, if any.
#[derive(Default)]
pub(crate) struct Hooks {
    hook: RwLock<Option<Hook>>,
    set: AtomicBool,
}

impl Hooks {
    pub(crate) fn set(&self, hook: Option<Hook>) {
        let mut h = self.hook.write().unwrap_or_else(|p| p.into_inner());
        self.set.store(hook.is_some(), Ordering::Release);
        *h = hook;
    }

    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Calls the hook once with the events of one commit or reclamation (a
    /// batch: a debugger registration costs per call, not per blob); a
    /// panicking hook is contained (logged) so it cannot leave the runtime
    /// half-way through anything.
    pub(crate) fn fire(&self, events: &[CodeEvent]) {
        if events.is_empty() {
            return;
        }
        let hook = self.hook.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(h) = hook {
            if catch_unwind(AssertUnwindSafe(|| h(events))).is_err() {
                log::error!("jitvm-runtime: code hook panicked on {events:?}");
            }
        }
    }
}
