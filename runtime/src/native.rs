//! Entering native code: the scope through which every call into JIT code
//! goes.
//!
//! A [`crate::CodePtr`] is only an address. The one function that
//! makes it callable, [`NativeScope::func`], exists only on the scope that
//! [`ThreadHandle::enter`] lends, so a call into JIT code without a
//! registered, entered thread (which reclamation could not see) does not
//! type-check by accident. Emitters still get raw `usize` addresses
//! ([`crate::Blob::addr`]).

use std::sync::atomic::Ordering;

use crate::code_memory::CodePtr;
use crate::registry::NOT_ENTERED;
use crate::threads::{Inner, ThreadHandle};

/// Proof that the current thread is registered and inside
/// [`ThreadHandle::enter`]; lent to the closure passed to `enter`.
pub struct NativeScope<'h> {
    pub(crate) handle: &'h ThreadHandle,
}

impl<'h> NativeScope<'h> {
    /// The handle that entered.
    pub fn handle(&self) -> &'h ThreadHandle {
        self.handle
    }

    /// The function at `code`, as the function-pointer type `F` (for example
    /// `extern "sysv64" fn(i64) -> i64`).
    ///
    /// # Safety
    /// `F` must be a function-pointer type whose ABI and signature match the
    /// code at `code`; the code must be published by the runtime of this
    /// scope's handle (or be other valid code) and the function may be called
    /// only inside this scope (do not keep it past the `enter` closure).
    pub unsafe fn func<F: Copy>(&self, code: CodePtr) -> F {
        const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<usize>()) };
        // SAFETY: `F` is pointer-sized (checked at compile time) and, by the
        // caller's contract, a function pointer type matching the code.
        unsafe { std::mem::transmute_copy::<usize, F>(&code.0) }
    }

    /// A native safepoint from Rust: the same as
    /// [`ThreadHandle::safepoint_from_native`].
    pub fn safepoint(&self) {
        self.handle.safepoint_from_native()
    }
}

impl ThreadHandle {
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
                    // A full barrier (a locked exchange): the reclaimer either
                    // sees this thread out, or this thread sees it was waited
                    // for (`waiting_below`) and reclaims.
                    let entry = i.rec.entry.swap(NOT_ENTERED, Ordering::SeqCst);
                    let mut pinned = false;
                    if i.has_pins.replace(false) {
                        i.rec.has_pins.store(false, Ordering::Release);
                        pinned = i.rec.pins_hold.swap(false, Ordering::AcqRel);
                        i.rec.lock_pins().clear();
                    }
                    if i.deregister_pending.get() {
                        i.deregister();
                    } else if pinned || entry < i.rt.waiting_below() {
                        i.rt.request_reclaim();
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
}
