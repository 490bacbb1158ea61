//! A call into Rust that clobbers no register, for the optimized code's safepoint poll.
//!
//! A poll's slow path is a call, and an ordinary (System V) call clobbers nine general
//! registers. Cranelift's register allocator then keeps a loop's values out of those
//! registers, or spills and reloads them around the poll on the loop's hot path, though
//! the call almost never happens. Called with Cranelift's `preserve_all` convention, this
//! thunk makes the slow path clobber nothing: the loop keeps every register.
//!
//! `jitvm_jit_preserving_call_v1(arg = rdi, callback = rsi)` saves every register the
//! System V ABI lets `callback` clobber (rax, rcx, rdx, rsi, rdi, r8 to r11, xmm0 to xmm15),
//! calls `callback(arg)` with the stack 16-byte aligned, restores them and returns. The
//! callee-saved registers are the callback's to keep, as always. Flags are not preserved:
//! Cranelift keeps none live across a call.
//!
//! ```text
//! entry:  rsp = 8 (mod 16), the return address at [rsp]
//!         push rax, rcx, rdx, rsi, rdi, r8, r9, r10, r11   ; 72 bytes: rsp = 0 (mod 16)
//!         sub  rsp, 256 ; movdqu [rsp + 16k], xmm<k>       ; k = 0..15
//!         call rsi                                          ; rdi is still `arg`
//!         movdqu xmm<k>, [rsp + 16k] ; add rsp, 256 ; pop r11 .. rax
//!         ret
//! ```
//!
//! The CFI directives describe the frame at every instruction, so debuggers and profilers
//! unwind through the thunk from inside the callback.

use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{AbiParam, Signature};
use cranelift_codegen::isa::CallConv;

/// The signature optimized code calls the thunk with: `(arg, callback)`, no results,
/// nothing clobbered.
pub fn signature() -> Signature {
    let mut sig = Signature::new(CallConv::PreserveAll);
    sig.params.extend([AbiParam::new(I64), AbiParam::new(I64)]);
    sig
}

/// The thunk's address, for optimized code to call with [`signature`].
pub fn address() -> usize {
    jitvm_jit_preserving_call_v1 as *const () as usize
}

extern "sysv64" {
    /// Not callable from Rust: it is entered with Cranelift's `preserve_all` convention.
    fn jitvm_jit_preserving_call_v1();
}

// A hidden global symbol with a versioned name, so two copies of the crate cannot clash.
core::arch::global_asm!(
    ".pushsection .text.jitvm_jit_preserving_call,\"ax\",@progbits",
    ".p2align 4",
    ".globl jitvm_jit_preserving_call_v1",
    ".hidden jitvm_jit_preserving_call_v1",
    ".type jitvm_jit_preserving_call_v1,@function",
    "jitvm_jit_preserving_call_v1:",
    ".cfi_startproc",
    "push rax",
    ".cfi_adjust_cfa_offset 8",
    "push rcx",
    ".cfi_adjust_cfa_offset 8",
    "push rdx",
    ".cfi_adjust_cfa_offset 8",
    "push rsi",
    ".cfi_adjust_cfa_offset 8",
    "push rdi",
    ".cfi_adjust_cfa_offset 8",
    "push r8",
    ".cfi_adjust_cfa_offset 8",
    "push r9",
    ".cfi_adjust_cfa_offset 8",
    "push r10",
    ".cfi_adjust_cfa_offset 8",
    "push r11",
    ".cfi_adjust_cfa_offset 8",
    "sub rsp, 256",
    ".cfi_adjust_cfa_offset 256",
    "movdqu [rsp], xmm0",
    "movdqu [rsp + 16], xmm1",
    "movdqu [rsp + 32], xmm2",
    "movdqu [rsp + 48], xmm3",
    "movdqu [rsp + 64], xmm4",
    "movdqu [rsp + 80], xmm5",
    "movdqu [rsp + 96], xmm6",
    "movdqu [rsp + 112], xmm7",
    "movdqu [rsp + 128], xmm8",
    "movdqu [rsp + 144], xmm9",
    "movdqu [rsp + 160], xmm10",
    "movdqu [rsp + 176], xmm11",
    "movdqu [rsp + 192], xmm12",
    "movdqu [rsp + 208], xmm13",
    "movdqu [rsp + 224], xmm14",
    "movdqu [rsp + 240], xmm15",
    "call rsi",
    "movdqu xmm0, [rsp]",
    "movdqu xmm1, [rsp + 16]",
    "movdqu xmm2, [rsp + 32]",
    "movdqu xmm3, [rsp + 48]",
    "movdqu xmm4, [rsp + 64]",
    "movdqu xmm5, [rsp + 80]",
    "movdqu xmm6, [rsp + 96]",
    "movdqu xmm7, [rsp + 112]",
    "movdqu xmm8, [rsp + 128]",
    "movdqu xmm9, [rsp + 144]",
    "movdqu xmm10, [rsp + 160]",
    "movdqu xmm11, [rsp + 176]",
    "movdqu xmm12, [rsp + 192]",
    "movdqu xmm13, [rsp + 208]",
    "movdqu xmm14, [rsp + 224]",
    "movdqu xmm15, [rsp + 240]",
    "add rsp, 256",
    ".cfi_adjust_cfa_offset -256",
    "pop r11",
    ".cfi_adjust_cfa_offset -8",
    "pop r10",
    ".cfi_adjust_cfa_offset -8",
    "pop r9",
    ".cfi_adjust_cfa_offset -8",
    "pop r8",
    ".cfi_adjust_cfa_offset -8",
    "pop rdi",
    ".cfi_adjust_cfa_offset -8",
    "pop rsi",
    ".cfi_adjust_cfa_offset -8",
    "pop rdx",
    ".cfi_adjust_cfa_offset -8",
    "pop rcx",
    ".cfi_adjust_cfa_offset -8",
    "pop rax",
    ".cfi_adjust_cfa_offset -8",
    "ret",
    ".cfi_endproc",
    ".size jitvm_jit_preserving_call_v1, . - jitvm_jit_preserving_call_v1",
    ".popsection",
);

#[cfg(test)]
mod tests {
    use super::address;
    use std::arch::asm;
    use std::sync::atomic::{AtomicU64, Ordering};

    static SEEN: AtomicU64 = AtomicU64::new(0);

    /// A callback that writes every register the System V ABI lets it clobber.
    extern "sysv64" fn clobber_everything(arg: u64) {
        SEEN.store(arg, Ordering::SeqCst);
        // SAFETY: writes only registers declared clobbered.
        unsafe {
            asm!(
                "mov rax, -1", "mov rcx, -1", "mov rdx, -1", "mov rsi, -1", "mov rdi, -1",
                "mov r8, -1", "mov r9, -1", "mov r10, -1", "mov r11, -1",
                "pcmpeqd xmm0, xmm0", "pcmpeqd xmm1, xmm1", "pcmpeqd xmm7, xmm7",
                "pcmpeqd xmm8, xmm8", "pcmpeqd xmm15, xmm15",
                out("rax") _, out("rcx") _, out("rdx") _, out("rsi") _, out("rdi") _,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                out("xmm0") _, out("xmm1") _, out("xmm7") _, out("xmm8") _, out("xmm15") _,
            );
        }
    }

    #[test]
    fn a_call_through_the_thunk_runs_the_callback_and_leaves_every_register_as_it_was() {
        let callback = clobber_everything as extern "sysv64" fn(u64) as usize as u64;
        let (mut rax, mut rcx, mut rdx, mut rsi, mut rdi) = (1u64, 2u64, 3u64, callback, 77u64);
        let (mut r8, mut r9, mut r10, mut r11) = (8u64, 9u64, 10u64, 11u64);
        let (mut x0, mut x1, mut x7, mut x8, mut x15) = (0.5f64, 1.5f64, 7.5f64, 8.5f64, 15.5f64);
        // SAFETY: the thunk is entered as `preserve_all` code would enter it (rdi = arg,
        // rsi = callback, the stack aligned for a call, as `asm!` without `nostack`
        // guarantees) and, by its contract, changes no register but the flags.
        unsafe {
            asm!(
                "call {thunk}",
                thunk = in(reg) address(),
                inout("rax") rax, inout("rcx") rcx, inout("rdx") rdx, inout("rsi") rsi,
                inout("rdi") rdi, inout("r8") r8, inout("r9") r9, inout("r10") r10,
                inout("r11") r11, inout("xmm0") x0, inout("xmm1") x1, inout("xmm7") x7,
                inout("xmm8") x8, inout("xmm15") x15,
            );
        }
        assert_eq!(SEEN.load(Ordering::SeqCst), 77, "the callback got rdi");
        assert_eq!((rax, rcx, rdx, rsi, rdi), (1, 2, 3, callback, 77));
        assert_eq!((r8, r9, r10, r11), (8, 9, 10, 11));
        assert_eq!((x0, x1, x7, x8, x15), (0.5, 1.5, 7.5, 8.5, 15.5));
    }
}
