//! Instruction-cache maintenance, one function per architecture.
//!
//! [`flush_icache`] makes bytes written through the RW view (`rw`) visible to
//! instruction fetch through the RX view (`rx`) **on the calling core's
//! memory system**; what is already in flight in any core's pipeline is dealt
//! with by core serialization, which lives in [`crate::sync`] (the calling
//! core in `sync::local`, the others in the strategies), the way Wasmtime
//! separates `clear_cache` from `pipeline_flush_mt`. The commit calls it once
//! per staged range, before the first serialization, and the reclaimer after
//! poisoning.
//!
//! Only the x86-64 path is built and tested in this project's CI; the aarch64
//! and riscv64 paths compile on their own targets and are untested here.

/// x86-64 needs no maintenance: instruction caches are coherent with data
/// caches, and a store to code is seen by later fetches once the executing
/// core has serialized (Intel SDM vol. 3A §8.1.3 "Handling Self- and
/// Cross-Modifying Code"). What remains is the stale prefetched or decoded
/// state of cores, which only a serializing instruction on each clears.
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
    // It only fails for invalid flags; nothing to recover, and no panic.
    debug_assert_eq!(r, 0, "riscv_flush_icache failed");
}

#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
compile_error!("jitvm-runtime supports x86_64, aarch64 and riscv64 only");
