//! Serializing the *calling* core.
//!
//! Every strategy serializes the other cores; the committing thread may run
//! the new code itself right after `commit`, so it serializes its own core
//! too (Intel SDM vol. 3A §8.1.3: the executing processor must execute a
//! serializing instruction after the modification; ARM ARM B2.2.5: an `isb`).

/// Executes a core-serializing instruction on the calling core.
///
/// On x86-64 this is `SERIALIZE` where the CPU has it, else an `iretq` to the
/// next instruction (what Linux's `sync_core()` does). Not `CPUID`: it is
/// serializing too, but under a hypervisor it always exits to the host, which
/// measured about 9 µs per call on the machine in the chapter's table.
#[inline]
pub(crate) fn serialize_self() {
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

/// `iretq` to the following instruction: IRET is a serializing instruction
/// (Intel SDM vol. 3A §8.3 "Serializing Instructions") and, unlike CPUID,
/// never exits to a hypervisor.
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
