//! The `.bc` language and its interpreter.
//!
//! - [`parse_module`] reads text into a verified [`Module`] (spec §2, §6).
//! - [`disassemble`] prints it back with offsets and stack heights.
//! - [`lower`] turns each function into the interpreter's register encoding.
//! - [`Program`] runs a module: threads, shared memory, output, traps, and the
//!   per-function dispatch entries that `patch` flips and the JIT tiers will fill.

pub mod bytecode;
pub mod diag;
pub mod dis;
pub mod interp;
pub mod lower;
pub mod parse;
pub mod program;
pub mod verify;

pub use bytecode::{BinOp, FuncId, Function, Instr, Module, Pos};
pub use diag::{Diagnostic, Diagnostics};
pub use dis::disassemble;
pub use parse::parse_module;
pub use program::{Program, RunConfig, Trap};
