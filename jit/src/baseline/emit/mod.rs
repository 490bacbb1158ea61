//! The baseline emitter: one pass over a function's bytecode, one `emit_*` method per
//! instruction, so the bytecode-to-x86-64 mapping reads off the page. Binary operators share
//! one method per shape (arithmetic, division, shifts, comparisons); the shapes, register
//! moves and the spill machinery, and the x86-64 primitives each have their module.
//!
//! - [`emitter`]: the emitter's state and its pass: labels, then each instruction at its
//!   offset, then the out-of-line code.
//! - [`prologue`]: entry checks, the frame, the shrink-wrapped base case, the on-stack
//!   replacement entry, the epilogue.
//! - [`instrs`]: `emit_instr`, which maps each instruction to its method, and the methods.
//! - [`arith`]: binary arithmetic and shifts: constant folding, immediate operands, results
//!   computed into the local that takes them.
//! - [`divide`]: `div` and `rem`: by a variable with `idiv`, by a constant with the plans of
//!   `crate::magic`.
//! - [`control`]: comparisons fused with branches, jumps, and calls into Rust.
//! - [`cold`]: the safepoint poll and the code after the body: poll slow paths, trap pads,
//!   the shared exits.
//! - [`regs`]: where stack entries are, register allocation, spilling, parallel moves.
//! - [`x86`]: x86-64 primitives on operands: `mov`, ALU forms, `cmp`, `setcc`, `jcc`.

// dynasm expands a dynamic register `Rq(r)` to `r.into()`, a no-op conversion for `u8`.
#![allow(clippy::useless_conversion)]

macro_rules! asm {
    ($s:ident; $($t:tt)*) => {
        dynasm!($s.ops ; .arch x64 ; $($t)*)
    };
}

mod arith;
mod cold;
mod control;
mod divide;
mod emitter;
mod instrs;
mod prologue;
mod regs;
mod x86;

pub(super) use emitter::Emitter;
