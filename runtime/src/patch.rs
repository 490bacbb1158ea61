//! Patch sites: the places that point at code and are changed at commit.
//!
//! # Dispatch slots: the way to patch live calls
//!
//! A [`DispatchSlot`] is a word in ordinary memory holding a code address,
//! changed only by [`crate::Transaction::set_dispatch`] at commit, with a
//! release store. Changing a *data* word that code loads is ordinary memory
//! ordering, not cross-modifying code, so it is sound on every architecture;
//! the commit's serializations make the *new code* the slot points at safe to
//! fetch (Intel SDM vol. 3A §8.1.3) before the slot is stored.
//!
//! # What `Guarantee::Strong` covers, exactly
//!
//! "When a Strong commit returns, no thread will *start* the old code." That
//! holds for a transfer whose **target load and control transfer are one
//! instruction**, because the commit's second serialization makes every
//! core finish whatever it had in flight and the slot store is visible to
//! every load after it (the serialization is also a full memory barrier on
//! each core):
//!
//! | emitted sequence | covered |
//! |---|---|
//! | `mov rax, imm64(slot.as_ptr()); call qword [rax]` | **yes** |
//! | `mov rax, imm64(slot.as_ptr()); jmp qword [rax]` (tail call) | **yes** |
//! | `call qword [rip + disp32]` / `jmp qword [rip + disp32]` naming the slot | **yes** |
//! | `mov rax, [slot]; call rax` (target loaded into a register first) | **no** |
//! | Rust: `slot.get()` then calling it later | **no** |
//!
//! In the uncovered forms a thread may load the old target just before the
//! commit and call it just after. Both JITs emit `call qword [reg]` with the
//! slot's address in the register (or `jmp qword [reg]`). Rust code (an
//! interpreter calling compiled code) reads the slot inside
//! [`ThreadHandle::enter`](crate::ThreadHandle::enter) and calls at once:
//! that call may start the old code if the read raced with the commit (the
//! call began before the commit returned), and reclamation still protects it
//! because the thread passes no quiescent point in between.
//!
//! # rel32 sites (x86-64): staged, or live by the int3 protocol
//!
//! A [`Rel32Site`] is a `call rel32`/`jmp rel32` inside a blob.
//! [`crate::Transaction::patch_rel32`] writes it while its blob is staged by
//! the same transaction, before any thread can fetch it: a direct call
//! between blobs published together, written once. Patching a `call rel32`
//! that another core may be executing is cross-modifying code that the SDM
//! (§8.1.3) only allows with the executing core serializing around the
//! change; an aligned 4-byte store being atomic (§8.1.1) is a rule about
//! *data* accesses and promises nothing about what another core fetches as
//! instructions. So [`crate::Transaction::patch_live_rel32`] rewrites a
//! published site by Linux's `text_poke_bp` protocol (int3 on the first byte,
//! serialize, write the rest, serialize, restore the first byte, serialize)
//! with a `SIGTRAP` handler redirecting threads that hit the int3
//! ([`crate::live_patch`]). It costs three serializations per batch instead
//! of the one or two a commit needs; dispatch slots cost one store and one
//! extra load per call. `patch_rel32` on a published blob is an error.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::code_memory::CodePtr;
#[cfg(target_arch = "x86_64")]
pub use x86::*;

/// A code pointer in memory, changed atomically by a commit.
///
/// JIT code reads it through its address ([`DispatchSlot::as_ptr`]) at any
/// moment, so the runtime owns every slot: [`crate::Runtime::dispatch_slot`]
/// makes one and keeps it until the runtime itself goes, so no slot is freed
/// while code may load it, and the runtime knows every slot a commit must
/// keep away from retired code (see [`crate::Transaction::commit`], step 1).
#[repr(C)]
#[derive(Debug)]
pub struct DispatchSlot {
    /// First, so the slot's address is the word JIT code loads.
    target: AtomicUsize,
    /// The runtime that made it (its address): a transaction of another
    /// runtime refuses the slot.
    owner: usize,
}

impl DispatchSlot {
    /// A slot of the runtime at `owner` initially pointing at `target`: any
    /// code address, or a non-code address such as a Rust function (an
    /// interpreter fallback).
    pub(crate) const fn new(target: usize, owner: usize) -> DispatchSlot {
        DispatchSlot {
            target: AtomicUsize::new(target),
            owner,
        }
    }

    pub(crate) fn owner(&self) -> usize {
        self.owner
    }

    /// The current target (acquire load).
    pub fn get(&self) -> usize {
        self.target.load(Ordering::Acquire)
    }

    /// The current target as a [`CodePtr`].
    pub fn code(&self) -> CodePtr {
        CodePtr(self.get())
    }

    /// The address of the cell, for JIT code to load from.
    pub fn as_ptr(&self) -> *const usize {
        self.target.as_ptr() as *const usize
    }

    /// Only commits change a slot: the release store orders the copy of the
    /// new code before the pointer to it.
    pub(crate) fn publish(&self, target: usize) {
        self.target.store(target, Ordering::Release)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::code_memory::{Blob, CodeMemory, State};
    use crate::Error;

    /// The one-byte `nop`, for padding before a rel32 site.
    pub const NOP: u8 = 0x90;

    /// Length of a rel32 call or jmp instruction.
    pub const REL32_LEN: usize = 5;

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

    /// Number of [`NOP`] bytes to emit at `offset_of_opcode` (an offset from
    /// a blob start, blobs being at least 16-byte aligned) so that the opcode
    /// that follows has its 4-byte displacement naturally aligned (the opcode
    /// at 3 mod 4): not required, but a displacement then never straddles a
    /// cache line.
    pub fn rel32_site_padding(offset_of_opcode: usize) -> usize {
        (3 + 4 - offset_of_opcode % 4) % 4
    }

    /// Appends padding and a rel32 `kind` instruction with a zero
    /// displacement to `code`; returns the opcode's offset. The target is set
    /// by [`crate::Transaction::patch_rel32`] in the commit that publishes
    /// the blob.
    pub fn emit_rel32_site(code: &mut Vec<u8>, kind: Rel32Kind) -> usize {
        let pad = rel32_site_padding(code.len());
        code.extend(std::iter::repeat(NOP).take(pad));
        let at = code.len();
        code.extend_from_slice(&[kind.opcode(), 0, 0, 0, 0]);
        at
    }

    /// A validated rel32 site inside a blob (make one with
    /// [`crate::Runtime::rel32_site`]). It carries its blob's handle, so a
    /// site whose blob was retired or reclaimed is refused.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Rel32Site {
        pub(crate) kind: Rel32Kind,
        pub(crate) blob: Blob,
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
        /// Address of the displacement.
        pub fn disp_addr(&self) -> usize {
            self.opcode + 1
        }
        /// The blob holding the site.
        pub fn blob(&self) -> Blob {
            self.blob
        }
    }

    /// Checks and makes a site: `offset` (checked arithmetic) inside a
    /// staged or live `blob`, opcode matching. The displacement need not be
    /// aligned: a staged site is written before anything runs it, a live one
    /// behind an `int3` ([`crate::live_patch`]), never by a bare store that a
    /// core might fetch half-written.
    pub(crate) fn make_site(
        mem: &CodeMemory,
        blob: Blob,
        offset: usize,
        kind: Rel32Kind,
    ) -> Result<Rel32Site, Error> {
        if !matches!(mem.state(blob), Some(State::Staged | State::Live)) {
            return Err(Error::InvalidBlob);
        }
        match offset.checked_add(REL32_LEN) {
            Some(end) if end <= blob.len() => {}
            _ => return Err(Error::InvalidSite("site extends past the blob")),
        }
        let opcode = blob.addr() + offset;
        if mem.read_byte(opcode) != kind.opcode() {
            return Err(Error::InvalidSite("opcode does not match the kind"));
        }
        Ok(Rel32Site { kind, blob, opcode })
    }

    /// Where the rel32 instruction at `site` transfers, as its bytes in `mem` say.
    pub(crate) fn encoded_target(mem: &CodeMemory, site: &Rel32Site) -> usize {
        let d = site.disp_addr();
        let bytes = [0, 1, 2, 3].map(|i| mem.read_byte(d + i));
        displaced(site.opcode, i32::from_le_bytes(bytes))
    }

    /// Target of a rel32 instruction at `opcode` with displacement `disp`.
    pub(crate) fn displaced(opcode: usize, disp: i32) -> usize {
        (opcode + REL32_LEN).wrapping_add(disp as isize as usize)
    }

    /// The displacement from a rel32 instruction at `opcode` to `target`, if
    /// it fits in 32 bits.
    pub(crate) fn rel32_disp(opcode: usize, target: usize) -> Option<i32> {
        let delta = target as i128 - (opcode as i128 + REL32_LEN as i128);
        i32::try_from(delta).ok()
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
            let mut code = vec![0x55, 0x48, 0x89, 0xe5];
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
            assert!(rel32_disp(usize::MAX - 2, 0).is_none());
        }
    }
}
