//! Dispatch entries: what a function's dispatch slot holds.
//!
//! Every function `F` has one runtime `DispatchSlot` (see [`crate::program`]). It holds an
//! *entry*: the address a call to `F` starts at. The word just below every entry is its
//! *header*: the address of the [`crate::program::Definition`] whose body the entry runs,
//! with bit 0 set ([`NATIVE`]) when the entry is native code that follows the JIT's ABI.
//!
//! ```text
//!   entry - 8:  def_addr | kind      kind 1: native code, 0: interpreted
//!   entry:      first instruction    (native code or an interpreter stub), or nothing
//! ```
//!
//! So one acquire load of the slot tells every caller what to run: native code calls the
//! entry (`call qword [slot]`); the interpreter reads the header and either interprets the
//! definition or calls out to the native code. `patch F G` copies G's entry into F's slot,
//! body and compiled code together, in one runtime transaction.
//!
//! Until a JIT installs code, a definition's entry is the definition itself, whose first
//! word is its header: a header in ordinary memory and nothing executable after it. No native code can call it, because there is none; a JIT
//! replaces every such entry with an executable stub before it installs its first native
//! function (the contract of [`crate::program::Program::set_entry`]).

/// Header bit: the entry is native code (set) or runs in the interpreter (clear).
pub const NATIVE: usize = 1;

/// Header bits that are not part of the definition's address (definitions are 8-aligned).
pub const KIND_MASK: usize = 7;

/// An entry read from a dispatch slot. Only [`crate::program::Program::entry`] makes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry(pub(crate) usize);

impl Entry {
    /// The address calls start at.
    #[inline(always)]
    pub fn addr(self) -> usize {
        self.0
    }

    /// The header word below the entry.
    #[inline(always)]
    pub fn header(self) -> usize {
        // SAFETY: every value a program's slots hold is an entry with a readable header
        // word below it (a definition of the program, or code installed under the
        // contract of `Program::set_entry`, which stays mapped while this thread can still
        // reach it: it has not passed a safepoint since it loaded the slot).
        unsafe { *((self.0 - 8) as *const usize) }
    }

    /// Whether the entry is native code.
    #[inline(always)]
    pub fn is_native(self) -> bool {
        self.header() & NATIVE != 0
    }
}

/// The header word of an entry for the definition at `def_addr`.
pub fn header_word(def_addr: usize, native: bool) -> usize {
    debug_assert_eq!(def_addr & KIND_MASK, 0, "definitions are 8-aligned");
    def_addr | if native { NATIVE } else { 0 }
}
