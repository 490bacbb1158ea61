//! `fork` policy: a child process cannot change code.
//!
//! The code region is a shared anonymous mapping, so after `fork` parent and
//! child write the *same* physical bytes while each has its own copy of the
//! allocator: the child's next allocation would be the parent's next, and
//! its reclamation would poison or free the parent's code. So every runtime
//! call that could write code memory (registering, staging, committing,
//! reclaiming, synchronizing) returns [`crate::Error::ForkedChild`] in a
//! child (checked with one atomic load: a `pthread_atfork` child handler
//! counts forks; a child made by a raw `clone` system call, which runs no
//! fork handlers, is not detected). Code already published stays callable
//! there (it is only read).
//! A child that needs a JIT creates a new [`crate::Runtime`]: its own region.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn in_child() {
    // Async-signal-safe: one atomic add.
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// Installs the `pthread_atfork` child handler (once) and returns the number
/// of forks this process is removed from its ancestors by.
pub(crate) fn generation() -> u64 {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a handler that only does an atomic add; glibc
        // runs it in the child after fork().
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
    FORKS.load(Ordering::Relaxed)
}
