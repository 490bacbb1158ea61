//! Patch sites: the places that point at code and are changed at commit.
//!
//! 1. [`DispatchSlot`]: a word in ordinary memory holding a code address. JIT
//!    code calls through it (`mov rax, [slot]; call rax`). It is changed with a
//!    release store; readers need at least an acquire load (a plain `mov` on
//!    x86-64, `ldar` or `ldr` plus the commit's serialization on arm64).
//! 2. [`Rel32Site`]: an x86-64 `call rel32` (`E8 disp32`) or `jmp rel32`
//!    (`E9 disp32`) whose 4-byte displacement is naturally aligned, so one
//!    aligned 32-bit store changes it. An aligned doubleword access never
//!    crosses a cache line and is atomic (Intel SDM vol. 3A §8.1.1), so a
//!    fetching core sees the old or the new displacement, never a mix; the
//!    serialization in the commit handles stale prefetch (§8.1.3). The emitter
//!    pads with [`rel32_site_padding`] so the displacement lands aligned.

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

/// The one-byte `nop`, for padding before a rel32 site.
pub const NOP: u8 = 0x90;

/// A code pointer in memory, flipped atomically by a commit.
///
/// JIT code reads it through its address ([`DispatchSlot::as_ptr`]), so it
/// must not move while code may read it: keep it in a `Box`, an `Arc` or a
/// `static`, and outliving the code that reads it.
#[repr(transparent)]
#[derive(Debug)]
pub struct DispatchSlot(AtomicUsize);

impl DispatchSlot {
    /// A slot initially pointing at `target` (any code address, or a Rust
    /// function's address for an interpreter fallback).
    pub const fn new(target: usize) -> DispatchSlot {
        DispatchSlot(AtomicUsize::new(target))
    }

    /// The current target (acquire load).
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// The address of the cell, for JIT code to load from.
    pub fn as_ptr(&self) -> *const usize {
        self.0.as_ptr() as *const usize
    }

    /// Only commits change a slot: the release store orders the copy of the
    /// new code before the pointer to it.
    pub(crate) fn publish(&self, target: usize) {
        self.0.store(target, Ordering::Release)
    }
}

/// Which rel32 instruction a site is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rel32Kind {
    /// `call rel32`, opcode `E8`.
    Call,
    /// `jmp rel32`, opcode `E9`.
    Jmp,
}

impl Rel32Kind {
    /// The opcode byte.
    pub fn opcode(self) -> u8 {
        match self {
            Rel32Kind::Call => 0xE8,
            Rel32Kind::Jmp => 0xE9,
        }
    }
}

/// Length of a rel32 call or jmp instruction.
pub const REL32_LEN: usize = 5;

/// Number of [`NOP`] bytes to emit at `offset_of_opcode` (an offset from a
/// blob start, blobs being at least 16-byte aligned) so that the opcode that
/// follows has its 4-byte displacement naturally aligned: the opcode must sit
/// at 3 mod 4.
pub fn rel32_site_padding(offset_of_opcode: usize) -> usize {
    (3 + 4 - offset_of_opcode % 4) % 4
}

/// Appends padding and a rel32 `kind` instruction with a zero displacement to
/// `code`; returns the opcode's offset. The real target is set by
/// [`crate::Transaction::patch_rel32`] in the commit that publishes the blob.
pub fn emit_rel32_site(code: &mut Vec<u8>, kind: Rel32Kind) -> usize {
    let pad = rel32_site_padding(code.len());
    code.extend(std::iter::repeat(NOP).take(pad));
    let at = code.len();
    code.extend_from_slice(&[kind.opcode(), 0, 0, 0, 0]);
    at
}

/// A validated, patchable rel32 site inside a blob of the code region. Make
/// one with [`crate::Runtime::rel32_site`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rel32Site {
    pub(crate) kind: Rel32Kind,
    /// The blob holding the site; a patch is refused once it is retired.
    pub(crate) blob: crate::Blob,
    /// Executable address of the opcode byte.
    pub(crate) opcode: usize,
}

impl Rel32Site {
    /// The instruction kind.
    pub fn kind(&self) -> Rel32Kind {
        self.kind
    }
    /// Executable address of the opcode byte.
    pub fn addr(&self) -> usize {
        self.opcode
    }
    /// Address of the displacement (4-byte aligned).
    pub fn disp_addr(&self) -> usize {
        self.opcode + 1
    }
    /// The address the instruction currently transfers to.
    ///
    /// The site must belong to a blob that has not been reclaimed.
    pub fn target(&self) -> usize {
        // SAFETY: the displacement is 4-byte aligned inside the readable RX
        // view (checked when the site was made). An atomic load of read-only
        // memory is permitted for lock-free sizes.
        let disp =
            unsafe { AtomicI32::from_ptr(self.disp_addr() as *mut i32) }.load(Ordering::Acquire);
        displaced(self.opcode, disp)
    }
}

/// Target of a rel32 instruction at `opcode` with displacement `disp`.
pub(crate) fn displaced(opcode: usize, disp: i32) -> usize {
    (opcode + REL32_LEN).wrapping_add(disp as isize as usize)
}

/// The displacement from a rel32 instruction at `opcode` to `target`, if it
/// fits in 32 bits.
pub(crate) fn rel32_disp(opcode: usize, target: usize) -> Option<i32> {
    let delta = (target as i64).wrapping_sub((opcode + REL32_LEN) as i64);
    i32::try_from(delta).ok()
}

/// Writes `disp` with one aligned atomic 32-bit store at `rw_disp` (the RW
/// alias of a site's displacement).
pub(crate) fn store_disp(rw_disp: usize, disp: i32) {
    debug_assert_eq!(rw_disp % 4, 0);
    // SAFETY: `rw_disp` is the 4-byte-aligned RW alias of a validated site's
    // displacement inside a live blob. Stores to it happen only under the
    // commit lock, and the only concurrent readers are instruction fetches
    // (and `Rel32Site::target`), which see the old or the new value: an
    // aligned 4-byte store is single-copy atomic (Intel SDM vol. 3A §8.1.1).
    unsafe { AtomicI32::from_ptr(rw_disp as *mut i32) }.store(disp, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_aligns_displacement() {
        for off in 0..64 {
            let pad = rel32_site_padding(off);
            assert!(pad < 4);
            assert_eq!((off + pad + 1) % 4, 0, "offset {off}");
        }
        let mut code = vec![0x55, 0x48, 0x89, 0xe5]; // some prologue
        let at = emit_rel32_site(&mut code, Rel32Kind::Call);
        assert_eq!((at + 1) % 4, 0);
        assert_eq!(code[at], 0xE8);
        assert!(code[4..at].iter().all(|&b| b == NOP));
    }

    #[test]
    fn displacement_math() {
        let op = 0x1000_0003;
        let t = 0x1000_8000;
        let d = rel32_disp(op, t).unwrap();
        assert_eq!(displaced(op, d), t);
        let d = rel32_disp(op, 0x1000).unwrap();
        assert_eq!(displaced(op, d), 0x1000);
        assert!(rel32_disp(0, 1 << 40).is_none());
    }
}
