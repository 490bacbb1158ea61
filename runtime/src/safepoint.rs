//! Native safepoints: long-running native code reports quiescence without
//! leaving.
//!
//! A thread inside one [`ThreadHandle::enter`] would hold back every
//! retirement made after it entered until it returns. Native code therefore
//! polls at loop back-edges and function entries:
//!
//! ```text
//!     mov rax, imm64(rt.poll_word())    ; stable address: the runtime is in an Arc
//!     cmp dword [rax], 0
//!     jne slow                          ; rarely taken
//! back:
//!     ...
//! slow:
//!     call jitvm_safepoint_slow         ; keep rsp 16-byte aligned; caller-saved regs are clobbered
//!     jmp back
//! ```
//!
//! The runtime sets the poll word when retirements are pending while some
//! thread is inside native code, and clears it when nothing is pending.
//!
//! The slow path ([`ThreadHandle::safepoint_from_native`]):
//!
//! 1. reads the epoch `E`; if this thread already polled at `E`, returns;
//! 2. scans its own stack, from its current stack pointer to the stack top,
//!    for words that fall inside the code region, and publishes them sorted
//!    and deduplicated as the thread's *pins*. On x86-64 every activation of
//!    JIT code on the stack has its return address there, and at a poll
//!    point native code holds no other code address, so every blob the
//!    thread may still return into is pinned (conservatively: any word that
//!    looks like a code address pins);
//! 3. raises the thread's entry epoch and quiescent epoch to `E` (in that
//!    order, after the pins);
//! 4. tries to reclaim (without waiting for the lock), so the last thread to
//!    poll frees the code.
//!
//! A retired blob is reclaimed only when every thread's horizon has passed
//! its tag **and** no thread's pins fall inside it (see [`crate::reclaim`]).
//! The pins are cleared when the outermost `enter` returns.

use std::sync::atomic::Ordering;

use crate::threads::{current_inner, ThreadHandle};

/// Loads one word of the stack. An `asm` load: the stack holds padding and
/// uninitialised slots that Rust code may not read as integers, but the
/// hardware load is what a conservative scan means.
#[inline(always)]
fn load_word(addr: usize) -> usize {
    let v: usize;
    // SAFETY: callers pass an 8-byte-aligned address between the current
    // stack pointer and the top of this thread's stack, which is mapped and
    // readable; the load has no other effect.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!("mov {v}, qword ptr [{a}]", a = in(reg) addr, v = lateout(reg) v,
            options(nostack, readonly, preserves_flags));
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!("ldr {v}, [{a}]", a = in(reg) addr, v = lateout(reg) v,
            options(nostack, readonly, preserves_flags));
        #[cfg(target_arch = "riscv64")]
        core::arch::asm!("ld {v}, 0({a})", a = in(reg) addr, v = lateout(reg) v,
            options(nostack, readonly, preserves_flags));
    }
    v
}

impl ThreadHandle {
    /// The native safepoint (see the module docs): reports that this thread,
    /// though inside native code, holds no code address but the return
    /// addresses on its stack, which it pins. Outside `enter` it is
    /// [`quiescent`](Self::quiescent). Returns quickly if the thread already
    /// polled at the current epoch.
    pub fn safepoint_from_native(&self) {
        let i = &*self.inner;
        let rt = &i.rt;
        if i.depth.get() == 0 {
            self.quiescent();
            rt.try_reclaim();
            return;
        }
        // 1. Already polled at this epoch: nothing retired since can be on
        //    the stack without this thread's horizon holding it back.
        let epoch = rt.epoch().load(Ordering::Acquire);
        if i.polled.get() == epoch {
            return;
        }
        // 2. Scan from here (this frame and everything above it: the native
        //    frames that called us) to the top of the stack.
        let marker = 0u8;
        let sp = std::hint::black_box(&marker) as *const u8 as usize;
        let (low, high) = i.rec.stack;
        if sp < low || sp >= high {
            return; // not on the registered stack (signal stack?): stay conservative
        }
        let mem = rt.mem();
        {
            let mut pins = i.rec.lock_pins();
            pins.clear();
            let mut a = (sp + 7) & !7;
            while a + 8 <= high {
                let w = load_word(a);
                if mem.contains(w) || w == mem.rx_base() + mem.capacity() {
                    pins.push(w);
                }
                a += 8;
            }
            pins.sort_unstable();
            pins.dedup();
            i.rec.has_pins.store(!pins.is_empty(), Ordering::Release);
            i.has_pins.set(true);
        }
        // 3. Entry first, then quiescent: a reclaimer that sees the new
        //    quiescent mark sees the new entry and the pins.
        i.rec.entry.store(epoch, Ordering::Release);
        i.rec.quiescent.store(epoch, Ordering::Release);
        i.polled.set(epoch);
        // 4. Free what this made free, if nobody is committing.
        rt.try_reclaim();
    }
}

/// The native slow path: what JIT code calls when the poll word is set.
/// Reports quiescence for the calling thread's current handle (see
/// [`ThreadHandle::safepoint_from_native`]); does nothing on an unregistered
/// thread. Clobbers only caller-saved registers; call it with the stack
/// 16-byte aligned.
#[cfg(target_arch = "x86_64")]
pub extern "sysv64" fn jitvm_safepoint_slow() {
    if let Some(inner) = current_inner() {
        let h = ThreadHandle::lend(inner);
        h.safepoint_from_native();
    }
}

/// The native slow path (C ABI on this architecture); see the x86-64 doc.
#[cfg(not(target_arch = "x86_64"))]
pub extern "C" fn jitvm_safepoint_slow() {
    if let Some(inner) = current_inner() {
        let h = ThreadHandle::lend(inner);
        h.safepoint_from_native();
    }
}
