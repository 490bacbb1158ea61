//! How a blob's machine code maps back to what a debugger and a profiler show: the frame at
//! each code offset (call frame information, so that gdb unwinds through JIT frames to the
//! interpreter and `main`) and the bytecode instruction at each code offset (so that a
//! sample or a frame names a `.bc` line).
//!
//! The compilers fill both in the code they return (`abi::CompiledCode`, whose
//! `finish_rows` and `description` use the functions here); a [`Descriptions`] table, when the embedder
//! asks for one, keeps them by blob address from staging until the code hook takes them as
//! the blob is published (`jitvm --gdb`, `--perf jitdump`).

pub use jitvm_debuginfo::{Cfa, FrameRow};
use std::collections::HashMap;
use std::sync::Mutex;

/// From `offset` on, the code is bytecode instruction `instr`'s, or the function's own
/// (prologue, slow paths, exits) when `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceRow {
    pub offset: usize,
    pub instr: Option<u32>,
}

/// The frame at `offset` of code that keeps its return address at `[rsp + cfa - 8]`, with
/// the callee-saved registers `pushed` (hardware numbers, in push order) right below it:
/// every frame of the baseline's prologue and epilogue, of the stubs, and the entry of
/// optimized code.
pub fn pushed_frame(offset: usize, cfa: i32, pushed: &[u8]) -> FrameRow {
    let saved = pushed
        .iter()
        .enumerate()
        .map(|(k, &r)| {
            let dwarf = jitvm_debuginfo::regs::from_hw(r).expect("a general-purpose register");
            (dwarf, -16 - 8 * k as i32)
        })
        .collect();
    FrameRow {
        offset: offset as u32,
        cfa: Cfa::Rsp(cfa),
        saved,
    }
}

/// Puts a blob's rows in the form a consumer expects: one row per offset (the last recorded
/// there: an instruction that emits no code shares its offset with the next, whose row
/// wins, and a frame restated at the same offset replaces the earlier one), no row that
/// repeats the one before, none at or past `len`, the end of the code. Each compiler calls
/// it last.
pub fn finish(frame: &mut Vec<FrameRow>, source: &mut Vec<SourceRow>, len: usize) {
    dedup_rows(
        frame,
        len,
        |r| r.offset as usize,
        |a, b| a.cfa == b.cfa && a.saved == b.saved,
    );
    dedup_rows(source, len, |r| r.offset, |a, b| a.instr == b.instr);
}

fn dedup_rows<T>(
    rows: &mut Vec<T>,
    len: usize,
    offset: impl Fn(&T) -> usize,
    same: impl Fn(&T, &T) -> bool,
) {
    let mut out: Vec<T> = Vec::with_capacity(rows.len());
    for row in rows.drain(..) {
        debug_assert!(
            out.last().map_or(true, |l| offset(l) <= offset(&row)),
            "in code order"
        );
        if offset(&row) >= len {
            break;
        }
        if out.last().is_some_and(|l| offset(l) == offset(&row)) {
            out.pop();
        }
        if !out.last().is_some_and(|l| same(l, &row)) {
            out.push(row);
        }
    }
    *rows = out;
}

/// What a debugger or profiler needs about one blob besides its address and owner.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Description {
    pub frame: Vec<FrameRow>,
    pub source: Vec<SourceRow>,
    /// The bytes staged (for a profiler's copy of the code: perf annotate reads it).
    pub bytes: Vec<u8>,
    /// Where the instructions begin: the entry point, past the header of a function's blob
    /// (`abi::ENTRY_OFFSET`); 0 for a call stub, which has none.
    pub entry: usize,
}

impl Description {
    /// `bytes`, frameless code from its first byte on (a call stub).
    pub fn frameless(bytes: &[u8]) -> Description {
        Description {
            frame: vec![pushed_frame(0, 8, &[])],
            source: Vec::new(),
            bytes: bytes.to_vec(),
            entry: 0,
        }
    }
}

/// Descriptions of staged blobs, by address, until their publication takes them.
#[derive(Debug, Default)]
pub struct Descriptions {
    by_addr: Mutex<HashMap<usize, Description>>,
}

impl Descriptions {
    pub fn new() -> Descriptions {
        Descriptions::default()
    }

    /// Keeps the description of the blob staged at `addr` (replacing any earlier one: a
    /// blob whose commit failed leaves its entry, and the next blob there takes its place).
    pub fn record(&self, addr: usize, description: Description) {
        self.lock().insert(addr, description);
    }

    /// The description of the blob at `addr`, removed from the table.
    pub fn take(&self, addr: usize) -> Option<Description> {
        self.lock().remove(&addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Description>> {
        self.by_addr.lock().unwrap_or_else(|e| e.into_inner())
    }
}
