//! Offline threads and the signal strategy: a commit never interrupts a
//! blocking call.
//!
//! A thread inside [`crate::ThreadHandle::blocking`] runs no code a commit
//! changes, so the signal strategy (`sync::signal`) does not signal it: it
//! would only cut the blocking call short (`nanosleep` fails with `EINTR`
//! whatever `SA_RESTART` says, signal(7)). Instead the thread owes a
//! serialization and makes it itself on its way back. The handshake, on one
//! word per thread (`ThreadRecord::away`), every access sequentially
//! consistent:
//!
//! 1. going offline ([`go_away`]): `0 -> AWAY` by compare-and-swap; if a
//!    signal is in flight (`SIGNALLING`), yield until it has landed;
//! 2. the signaller, per thread ([`mark_for_signal`]): `0 -> SIGNALLING`,
//!    then signal, wait for the acknowledgement and clear the bit
//!    ([`signal_landed`]); or `AWAY -> AWAY | OWED` and skip the thread;
//! 3. coming back ([`come_back`]): swap to `0`; if `OWED` was set, execute a
//!    serializing instruction before running anything the commit changed.
//!
//! Either the signaller's step 2 comes first in the single total order, and
//! the returning thread sees `OWED`; or the thread is back first, and is
//! signalled as any running thread. The other strategies never touch the
//! word (membarrier and mprotect interrupt only running cores).

use std::sync::atomic::{AtomicU32, Ordering};

/// `ThreadRecord::away` bits (see the module docs).
const AWAY: u32 = 1;
/// A commit skipped this offline thread: it serializes itself on return.
const OWED: u32 = 2;
/// The signaller has signalled this online thread and waits for it.
const SIGNALLING: u32 = 4;

/// Step 1: the calling thread goes offline (its `away` word is `word`).
pub(crate) fn go_away(word: &AtomicU32) {
    while word
        .compare_exchange(0, AWAY, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        // A signal is on its way to this thread: a system call's return
        // delivers it, the handler acknowledges, the signaller clears the bit.
        std::thread::yield_now();
    }
}

/// Step 3: the calling thread is back online.
pub(crate) fn come_back(word: &AtomicU32) {
    if word.swap(0, Ordering::SeqCst) & OWED != 0 {
        serialize_this_core();
    }
}

/// Executes a serializing instruction on the calling thread's core, so it
/// runs no instruction fetched before the commit that skipped it. CPUID
/// exits to the hypervisor under virtualization (microseconds), a price paid
/// once per commit that skipped this thread, on its way out of a blocking
/// call, never by the commit.
fn serialize_this_core() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: CPUID has no side effects besides its outputs; it is a
    // serializing instruction (Intel SDM vol. 3A §8.3, "Serializing
    // Instructions"), which is what it is executed for here.
    #[allow(unused_unsafe)]
    unsafe {
        let _ = std::arch::x86_64::__cpuid(0);
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: ISB only synchronizes context: instructions after it are
    // fetched anew (ARM ARM, "Context synchronization event").
    unsafe {
        std::arch::asm!("isb", options(nostack, preserves_flags));
    }
}

/// Step 2, the signaller's mark: true if the thread is online and now marked
/// `SIGNALLING` (signal it, then [`signal_landed`]); false if it is offline
/// and owes a serialization (skip it). Only one signaller runs at a time (it
/// holds the registry lock).
pub(crate) fn mark_for_signal(word: &AtomicU32) -> bool {
    loop {
        let s = word.load(Ordering::SeqCst);
        if s & AWAY != 0 {
            let owed = s | OWED;
            if s == owed
                || word
                    .compare_exchange(s, owed, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                return false;
            }
        } else if word
            .compare_exchange(0, SIGNALLING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return true;
        }
    }
}

/// The signal to a thread marked by [`mark_for_signal`] was acknowledged (or
/// will not be): it may go offline.
pub(crate) fn signal_landed(word: &AtomicU32) {
    word.fetch_and(!SIGNALLING, Ordering::SeqCst);
}
