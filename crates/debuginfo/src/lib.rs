//! Makes JIT code visible to perf and gdb.
//!
//! The crate knows nothing about bytecode or the JIT: callers describe each
//! piece of machine code as a [`FunctionInfo`] (where it is, what it is
//! called, which source lines it came from, how to find its caller's frame)
//! and hand it to one of two consumers:
//!
//! - [`elf`] turns a batch of functions into an in-memory ELF object with
//!   DWARF, and [`gdb`] registers that object through the GDB JIT interface,
//!   so `bt` names JIT frames, prints `file:line` and unwinds through them.
//! - [`jitdump`] writes perf's jitdump file, which `perf inject --jit` turns
//!   into symbols and line tables for `perf report`.
//!
//! Modules: [`regs`] (DWARF register numbers), [`error`] (what can go wrong),
//! [`elf`], [`gdb`], [`jitdump`].

pub mod elf;
pub mod error;
pub mod gdb;
pub mod jitdump;
pub mod regs;

pub use error::{Error, Invalid};

/// One function of JIT code, as a profiler or debugger should see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionInfo {
    /// The symbol name, e.g. `jitvm:fib [baseline]`; no NUL bytes.
    pub name: String,
    /// First byte of the machine code, in the view that executes it.
    pub addr: u64,
    /// Bytes of machine code; more than zero.
    pub len: u64,
    /// The source file (the `.bc` script) that `lines` refer to.
    pub file: Option<String>,
    /// Source positions, sorted by offset, every offset below `len`.
    pub lines: Vec<LineRow>,
    /// Call-frame rules, sorted by offset, every offset below `len`.
    /// Empty means no call-frame information for this function.
    pub frame: Vec<FrameRow>,
}

/// From `offset` on (bytes from [`FunctionInfo::addr`]), the code belongs to
/// `line:column`, both 1-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineRow {
    pub offset: u32,
    pub line: u32,
    pub column: u32,
}

/// How to compute the canonical frame address (CFA, DWARF 5 section 6.4):
/// the value of the stack pointer in the caller just before the call, i.e.
/// the address above the return address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cfa {
    /// CFA = rsp + offset (8 at the first instruction).
    Rsp(i32),
    /// CFA = rbp + offset (16 once `push rbp; mov rbp, rsp` ran).
    Rbp(i32),
}

/// From `offset` on, the CFA is computed by `cfa`, and each callee-saved
/// register `(dwarf number, off)` in `saved` holds its caller's value at
/// CFA + off (off a negative multiple of 8). Registers not listed keep their
/// caller's value. The return address is always at CFA - 8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameRow {
    pub offset: u32,
    pub cfa: Cfa,
    pub saved: Vec<(u16, i32)>,
}

impl FunctionInfo {
    /// One past the last byte of code.
    pub(crate) fn end(&self) -> u64 {
        self.addr + self.len
    }

    /// Checks what [`elf::image`] and [`jitdump::JitDump::code_load`] rely on.
    pub fn validate(&self) -> Result<(), Error> {
        self.problem().map_or(Ok(()), |problem| {
            Err(Error::Invalid {
                function: self.name.clone(),
                problem,
            })
        })
    }

    fn problem(&self) -> Option<Invalid> {
        if self.len == 0 {
            return Some(Invalid::ZeroLength);
        }
        if self.len > u64::from(u32::MAX) || self.addr.checked_add(self.len).is_none() {
            return Some(Invalid::TooLong);
        }
        if self.name.contains('\0') {
            return Some(Invalid::NulInName);
        }
        if matches!(&self.file, Some(file) if file.is_empty() || file.contains('\0')) {
            return Some(Invalid::BadFile);
        }
        let rows = [
            (
                "line",
                self.lines.iter().map(|r| r.offset).collect::<Vec<_>>(),
            ),
            ("frame", self.frame.iter().map(|r| r.offset).collect()),
        ];
        for (table, offsets) in rows {
            for (index, &offset) in offsets.iter().enumerate() {
                if index > 0 && offset < offsets[index - 1] {
                    return Some(Invalid::Unsorted { table, index });
                }
                if u64::from(offset) >= self.len {
                    return Some(Invalid::PastEnd { table, index });
                }
            }
        }
        for (index, row) in self.frame.iter().enumerate() {
            for &(reg, off) in &row.saved {
                if off >= 0 || off % 8 != 0 || reg > regs::R15 {
                    return Some(Invalid::BadSave { index, reg, off });
                }
            }
        }
        None
    }
}
