//! Instruction-cache maintenance, one function per architecture.
//!
//! [`flush_icache`] makes bytes written through the RW view (`rw`) visible to
//! instruction fetch through the RX view (`rx`) **on the calling core's
//! memory system**; what is already in flight in *other* cores' pipelines is
//! dealt with by the core serialization in [`crate::sync`]. The commit calls
//! it once per staged range, before the first serialization.
//!
//! Only the x86-64 path is built and tested in this project's CI; the aarch64
//! and riscv64 paths compile on their own targets and are untested here.

/// x86-64 needs no maintenance: instruction caches are coherent with data
/// caches (snooped), and stores to code are detected by the processor (Intel
/// SDM vol. 3A §8.1.3). What remains is the stale prefetch/decoded state of
/// *other* cores, which only a serializing instruction on those cores clears.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn flush_icache(_rw: *const u8, _rx: *const u8, _len: usize) {}

/// aarch64 (ARM ARM B2.2.5 and D7.5 "Cache maintenance"): clean the data cache
/// to the point of unification (`dc cvau`, by the address we wrote through),
/// `dsb ish`, invalidate the instruction cache (`ic ivau`, by the address we
/// execute through), `dsb ish`, `isb`. Line sizes come from `CTR_EL0`; its IDC
/// and DIC bits say when the clean or the invalidate can be skipped.
/// Untested in this project (compiled only on aarch64).
#[cfg(target_arch = "aarch64")]
pub fn flush_icache(rw: *const u8, rx: *const u8, len: usize) {
    use core::arch::asm;
    if len == 0 {
        return;
    }
    let ctr: u64;
    // SAFETY: CTR_EL0 is readable from EL0 on Linux (the kernel enables
    // SCTLR_EL1.UCT or traps and emulates it).
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
    let dline = 4usize << ((ctr >> 16) & 0xf);
    let iline = 4usize << (ctr & 0xf);
    let idc = (ctr >> 28) & 1 == 1;
    let dic = (ctr >> 29) & 1 == 1;
    if !idc {
        let mut a = (rw as usize) & !(dline - 1);
        while a < rw as usize + len {
            // SAFETY: `dc cvau` on a mapped address only cleans a cache line;
            // it does not change memory contents.
            unsafe { asm!("dc cvau, {}", in(reg) a, options(nostack)) };
            a += dline;
        }
    }
    // SAFETY: barriers have no memory-safety preconditions.
    unsafe { asm!("dsb ish", options(nostack)) };
    if !dic {
        let mut a = (rx as usize) & !(iline - 1);
        while a < rx as usize + len {
            // SAFETY: `ic ivau` on a mapped address only invalidates a line.
            unsafe { asm!("ic ivau, {}", in(reg) a, options(nostack)) };
            a += iline;
        }
        // SAFETY: as above.
        unsafe { asm!("dsb ish", options(nostack)) };
    }
    // SAFETY: as above.
    unsafe { asm!("isb", options(nostack)) };
}

/// riscv64: `fence.i` only affects the local hart, so Linux offers the
/// `riscv_flush_icache` syscall; flags 0 (not `SYS_RISCV_FLUSH_ICACHE_LOCAL`)
/// asks for all harts of the process. Untested in this project.
#[cfg(target_arch = "riscv64")]
pub fn flush_icache(_rw: *const u8, rx: *const u8, len: usize) {
    const SYS_RISCV_FLUSH_ICACHE: libc::c_long = 259;
    // SAFETY: the syscall takes an address range and flags and only performs
    // cache maintenance; it never touches memory contents.
    let r = unsafe { libc::syscall(SYS_RISCV_FLUSH_ICACHE, rx, rx.wrapping_add(len), 0usize) };
    assert_eq!(r, 0, "riscv_flush_icache failed");
}

#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
compile_error!("jitvm-runtime supports x86_64, aarch64 and riscv64 only");

/// Executes a core-serializing instruction on the *calling* core: the
/// committing thread may itself run the new code afterwards, and membarrier
/// and the other strategies promise serialization of the *other* cores.
///
/// On x86-64 this is `SERIALIZE` where the CPU has it, else an `iretq` to the
/// next instruction (what Linux's `sync_core()` does). Not `CPUID`: it is
/// serializing too, but under a hypervisor it always exits to the host, which
/// measured about 9 µs per call on the machine in the chapter's table.
#[inline]
pub fn serialize_self() {
    #[cfg(target_arch = "x86_64")]
    {
        if has_serialize() {
            // SAFETY: SERIALIZE (0F 01 E8, CPUID.07H.0H:EDX[14], checked
            // above) only waits for prior instructions to complete; it touches
            // no memory, registers or flags.
            unsafe {
                core::arch::asm!(".byte 0x0f, 0x01, 0xe8", options(nostack, preserves_flags))
            };
        } else {
            iret_to_self();
        }
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `isb` has no memory-safety preconditions.
    unsafe {
        core::arch::asm!("isb", options(nostack))
    };
    #[cfg(target_arch = "riscv64")]
    // SAFETY: `fence.i` has no memory-safety preconditions.
    unsafe {
        core::arch::asm!("fence.i", options(nostack))
    };
}

#[cfg(target_arch = "x86_64")]
fn has_serialize() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    static HAS: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 yes, 2 no
    match HAS.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let max = core::arch::x86_64::__cpuid(0).eax;
            let yes = max >= 7 && core::arch::x86_64::__cpuid_count(7, 0).edx & (1 << 14) != 0;
            HAS.store(if yes { 1 } else { 2 }, Ordering::Relaxed);
            yes
        }
    }
}

/// `iretq` to the following instruction: IRET is serializing (Intel SDM vol.
/// 3A §8.3) and, unlike CPUID, never exits to a hypervisor.
#[cfg(target_arch = "x86_64")]
fn iret_to_self() {
    // SAFETY: builds a same-privilege interrupt frame (SS, RSP, RFLAGS, CS,
    // RIP of label 2) on the stack and returns through it, so execution
    // continues at label 2 with RSP, RFLAGS and the segments unchanged. The
    // block uses the stack (no `nostack`), so the compiler keeps the red zone
    // free and RSP aligned.
    unsafe {
        core::arch::asm!(
            "mov {tmp:e}, ss",
            "push {tmp}",
            "push rsp",
            "add qword ptr [rsp], 8",
            "pushfq",
            "mov {tmp:e}, cs",
            "push {tmp}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "iretq",
            "2:",
            tmp = out(reg) _,
        )
    };
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    #[test]
    fn serializing_instructions_return() {
        super::serialize_self();
        super::iret_to_self();
        let x = std::hint::black_box(41) + 1;
        assert_eq!(x, 42);
    }
}
