//! Native safepoints: long-running native code reports quiescence without
//! leaving.
//!
//! A thread inside one [`ThreadHandle::enter`] would hold back every
//! retirement made after it entered until it returns. Native code therefore
//! polls its thread's poll word ([`ThreadHandle::poll_word`], or the word it
//! lent with [`ThreadHandle::with_poll_word`]) at loop back-edges and
//! function entries:
//!
//! ```text
//!     cmp dword [ctx + POLL], 0         ; this thread's word, in its context
//!     jne slow                          ; taken only when this thread was asked
//! back:
//!     ...
//! slow:
//!     call jitvm_safepoint_slow         ; keep rsp 16-byte aligned; caller-saved regs are clobbered
//!     jmp back
//! ```
//!
//! The runtime sets a thread's word only to ask that thread to report (see
//! `crate::handshake`): its horizon holds a retirement back, or its pins do
//! and it should look again.
//!
//! The slow path ([`ThreadHandle::safepoint_from_native`]):
//!
//! 1. clears the poll word (a request made after this is seen at the next
//!    poll); if it was not set and this thread already answered at the
//!    current epoch `E`, returns;
//! 2. outside `enter` it is a quiescent point, and stops here;
//! 3. scans its own stack, from the stack pointer at the call (recorded by a
//!    small assembly trampoline, so the slow path's own frames, whose unused
//!    slots hold stale values of earlier calls, are not scanned) to the stack
//!    top, for words that fall inside the code region, and publishes them sorted
//!    and deduplicated as the thread's *pins*. On x86-64 every activation of
//!    JIT code on the stack has its return address there, and at a poll
//!    point native code holds no other code address, so every blob the
//!    thread may still return into is pinned (conservatively: any word that
//!    looks like a code address pins);
//! 4. raises the thread's entry epoch and quiescent epoch to `E` (in that
//!    order, after the pins), then a full fence;
//! 5. reclaims if anything waits for threads; if a commit holds the lock,
//!    the holder looks again when it lets go, so the last thread to answer
//!    frees the code.
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
    /// addresses on its stack (from the caller's frame up), which it pins.
    /// Outside `enter` it is [`quiescent`](Self::quiescent). Returns quickly
    /// if the thread already polled at the current epoch.
    #[inline(never)]
    pub fn safepoint_from_native(&self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the trampoline calls `safepoint_here(self, rsp_at_call)`
        // synchronously; `self` outlives the call.
        unsafe {
            jitvm_runtime_safepoint_here_v1(self as *const ThreadHandle as *const core::ffi::c_void)
        };
        #[cfg(not(target_arch = "x86_64"))]
        {
            let marker = 0u8;
            let sp = std::hint::black_box(&marker) as *const u8 as usize;
            self.safepoint_scanning_from(sp);
        }
    }

    /// The native safepoint proper. Answers when the runtime asked (this
    /// thread's poll word was set) or when the epoch moved since the last
    /// answer; otherwise returns at once (the profile path calls it too).
    fn safepoint_scanning_from(&self, sp: usize) {
        let i = &*self.inner;
        let rt = &i.rt;
        // 1. Withdraw the request first: one made after this is seen at the
        //    next poll.
        let asked = i.rec.take_request();
        if asked {
            i.rec.slow_polls.fetch_add(1, Ordering::Relaxed);
        }
        if i.depth.get() == 0 {
            self.report_quiescent();
            return;
        }
        // 2. Neither asked nor a new epoch: the pins and entry published at
        //    this epoch still cover everything on the stack.
        let epoch = rt.epoch().load(Ordering::Acquire);
        if !asked && i.polled.get() == epoch {
            return;
        }
        // 3. Pin what the stack holds, from the caller's frame up.
        if !self.pin_stack_from(sp) {
            return;
        }
        // 4. Entry first, then quiescent: a reclaimer that sees the new
        //    quiescent mark sees the new entry and the pins. The fence orders
        //    them before the load in `request_reclaim_if_waited` (see
        //    `ThreadHandle::report_quiescent`).
        i.rec.entry.store(epoch, Ordering::Release);
        i.rec.quiescent.store(epoch, Ordering::Release);
        i.polled.set(epoch);
        std::sync::atomic::fence(Ordering::SeqCst);
        // 5. Free what this made free. If a commit holds the lock, it looks
        //    again when it lets go (no lost wakeup).
        rt.request_reclaim_if_waited();
    }

    /// Scans this thread's stack from the caller of the function this is
    /// inlined into (conservatively: a few of the caller's own frames too)
    /// and publishes the pins. For `blocking`, which must always rescan.
    #[inline(always)]
    pub(crate) fn pin_stack_here(&self) -> bool {
        let marker = 0u8;
        let sp = std::hint::black_box(&marker) as *const u8 as usize;
        self.pin_stack_from(sp)
    }

    /// Step 3 of the safepoint: scans `[sp, top)` for words inside the code
    /// region and publishes them, sorted and deduplicated, as this thread's
    /// pins. `false` (nothing published) if `sp` is not on the registered
    /// stack (a signal stack?): the thread then stays conservative.
    fn pin_stack_from(&self, sp: usize) -> bool {
        let i = &*self.inner;
        let (low, high) = i.rec.stack;
        if sp < low || sp >= high {
            return false;
        }
        let mem = i.rt.mem();
        let mut pins = i.rec.lock_pins();
        pins.clear();
        let mut a = (sp + 7) & !7;
        while a + 8 <= high {
            let w = load_word(a);
            if mem.contains(w) {
                pins.push(w);
            }
            a += 8;
        }
        pins.sort_unstable();
        pins.dedup();
        i.rec.has_pins.store(!pins.is_empty(), Ordering::Release);
        i.has_pins.set(true);
        true
    }
}

/// The x86-64 poll's compare, `cmp dword [base + disp], 0` (with a 32-bit
/// displacement), for a JIT to emit followed by its own `jne` to the slow
/// path (which calls [`jitvm_safepoint_slow`]). `base` is the register
/// number (0 = `rax` .. 15 = `r15`) that holds, at the poll, the address
/// `disp` bytes before the thread's poll word: the word itself from
/// [`ThreadHandle::poll_word`] (with `disp` 0), or the context that holds
/// the word lent with [`ThreadHandle::with_poll_word`]. One instruction, no
/// load of an immediate address; the word is per thread, so the same code
/// serves every thread. `None` for a register number above 15.
#[cfg(target_arch = "x86_64")]
pub fn x86_64_poll_compare(base: u8, disp: i32) -> Option<Vec<u8>> {
    if base > 15 {
        return None;
    }
    // Intel SDM vol. 2: CMP r/m32, imm8 is 83 /7 ib; ModRM mod=10 (disp32),
    // reg=7, rm=base; rm=100 (rsp, r12) needs a SIB byte (base only: 0x24);
    // REX.B extends rm to r8..r15.
    let mut bytes = Vec::with_capacity(9);
    if base >= 8 {
        bytes.push(0x41);
    }
    bytes.push(0x83);
    bytes.push(0b10_111_000 | (base & 7));
    if base & 7 == 4 {
        bytes.push(0x24);
    }
    bytes.extend_from_slice(&disp.to_le_bytes());
    bytes.push(0);
    Some(bytes)
}

/// Called by the trampolines with the stack pointer at their entry.
#[cfg(target_arch = "x86_64")]
extern "sysv64" fn safepoint_slow_at(sp: usize) {
    if let Some(inner) = current_inner() {
        ThreadHandle::lend(inner).safepoint_scanning_from(sp);
    }
}

#[cfg(target_arch = "x86_64")]
extern "sysv64" fn safepoint_here_at(h: *const core::ffi::c_void, sp: usize) {
    // SAFETY: `h` is the `&self` that `safepoint_from_native` passed to the
    // trampoline, alive for this synchronous call.
    unsafe { &*(h as *const ThreadHandle) }.safepoint_scanning_from(sp);
}

// Two trampolines that record the stack pointer at their entry (pointing at
// the return address into the caller) and pass it on, keeping the stack
// 16-byte aligned for the call (rsp is 8 mod 16 on entry). Hidden global
// symbols with a versioned name, so two copies of the crate cannot clash.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".pushsection .text.jitvm_runtime_safepoint,\"ax\",@progbits",
    ".p2align 4",
    ".globl jitvm_runtime_safepoint_slow_v1",
    ".hidden jitvm_runtime_safepoint_slow_v1",
    "jitvm_runtime_safepoint_slow_v1:",
    "mov rdi, rsp",
    "sub rsp, 8",
    "call {slow}",
    "add rsp, 8",
    "ret",
    ".p2align 4",
    ".globl jitvm_runtime_safepoint_here_v1",
    ".hidden jitvm_runtime_safepoint_here_v1",
    "jitvm_runtime_safepoint_here_v1:",
    "mov rsi, rsp",
    "sub rsp, 8",
    "call {here}",
    "add rsp, 8",
    "ret",
    ".popsection",
    slow = sym safepoint_slow_at,
    here = sym safepoint_here_at,
);

#[cfg(target_arch = "x86_64")]
extern "sysv64" {
    fn jitvm_runtime_safepoint_here_v1(h: *const core::ffi::c_void);
    /// The native slow path: what JIT code calls (`call` with the stack
    /// 16-byte aligned) when the poll word is set. Reports quiescence for the
    /// calling thread's current handle, pinning the code on its stack from
    /// the caller's frame up (see [`ThreadHandle::safepoint_from_native`]);
    /// does nothing on an unregistered thread. Clobbers only caller-saved
    /// registers. Take its address with `jitvm_safepoint_slow as usize`.
    /// Calling it from Rust is sound (an ordinary sysv64 function), but Rust
    /// code should call [`ThreadHandle::safepoint_from_native`].
    #[link_name = "jitvm_runtime_safepoint_slow_v1"]
    pub fn jitvm_safepoint_slow();
}

/// The native slow path (C ABI on this architecture); see the x86-64 doc.
#[cfg(not(target_arch = "x86_64"))]
pub extern "C" fn jitvm_safepoint_slow() {
    if let Some(inner) = current_inner() {
        let h = ThreadHandle::lend(inner);
        h.safepoint_from_native();
    }
}
