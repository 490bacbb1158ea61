//! The `.bc` language and its interpreter.
//!
//! From text to a checked module: [`parse`] reads it line by line ([`lex`] splits the words,
//! [`diag`] reports errors), [`resolve`] turns names into numbers, [`verify`] proves each
//! function's stack discipline, and [`bytecode`] is what comes out: its instruction table is
//! the one place an instruction is described. [`dis`] prints it back.
//!
//! From a module to running code: [`lower`] turns each function into the register code of
//! [`regcode`]; a [`Program`] holds everything a run shares (definitions and their dispatch
//! entries, memory, [`profile`], [`output`], [`threads`]); [`interp`] runs register code on a
//! thread's [`state::ThreadState`]. What a thread runs is the engine's choice
//! ([`program::ThreadBody`]). A [`trap`] ends the process.
//!
//! No module uses a module that uses it back (`tests/module_graph.rs` checks it): from the
//! bottom, `bytecode`, `trap`; then `diag`, `regcode`, `output`, `profile`, `threads`; then
//! `lex`, `verify`, `lower`, `dis`; `resolve`; `parse`; `program`; `state`; and `interp` on
//! top.

pub mod bytecode;
pub mod diag;
pub mod dis;
pub mod entry;
pub mod interp;
pub mod lex;
pub mod lower;
pub mod output;
pub mod parse;
pub mod profile;
pub mod program;
#[doc(hidden)]
pub mod reference;
pub mod regcode;
pub mod resolve;
pub mod state;
pub mod threads;
pub mod trap;
pub mod verify;

pub use bytecode::{BinOp, FuncId, Function, Instr, Module, Pos};
pub use diag::{Diagnostic, Diagnostics};
pub use dis::disassemble;
pub use parse::parse_module;
pub use program::{CallMode, Program, RunConfig};
pub use trap::Trap;
