//! Entering native code: the scope through which every call into JIT code
//! goes.
//!
//! A [`crate::CodePtr`] is only an address. The one function that
//! makes it callable, [`NativeScope::func`], exists only on the scope that
//! [`ThreadHandle::enter`] lends, so a call into JIT code without a
//! registered, entered thread (which reclamation could not see) does not
//! type-check by accident. Emitters still get raw `usize` addresses
//! ([`crate::Blob::addr`]).

use crate::code_memory::CodePtr;
use crate::threads::ThreadHandle;

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
