//! jitvm's native backends and the calling convention they share.
//!
//! - [`abi`]: THE native ABI (read its docs first): function signature, [`abi::ThreadContext`],
//!   trap statuses, dispatch-slot calls, entry headers, safepoints, Rust callbacks, and the
//!   arity bridge [`abi::call_native`] through which Rust enters native code.
//! - [`tier`]: what a function's dispatch slot runs (interpreter, baseline, opt): the one
//!   [`tier::Tier`] the installer, the tiering policy and the reports share.
//! - [`emit_error`]: why the dynasm emitters (baseline, stubs) could not emit code.
//! - [`baseline`]: the baseline JIT, one pass with dynasm over a function's bytecode, with a
//!   compile-time model of the operand stack.
//! - [`opt`]: the optimizing JIT, bytecode to Cranelift IR compiled by `cranelift-codegen`,
//!   same ABI; its calls go through per-callee call stubs (`opt::call_stubs`).
//! - [`base_case`]: a function's leading base case, which both tiers test before building a
//!   frame.
//! - `magic`: the plans for division by a constant without `idiv`, which both tiers follow.
//! - [`stubs`]: interpreter stubs, native entry points that run a definition in the
//!   interpreter (`call_interp`).
//! - [`code_info`]: what a debugger and a profiler need to map a blob's machine code back:
//!   its frame at each offset (for unwinding) and its bytecode instruction at each offset.
//! - [`disasm`]: bytecode interleaved with machine code, for `jitvm dis --native`.
//! - [`native_thread`]: the Rust half of the ABI: a VM thread's context, the bridge through
//!   which the interpreter enters native code (inside the runtime's `enter`), and the
//!   callbacks native code makes (`print`, `spawn`, `patch`, the safepoint, the interpreter).
//! - [`install`]: compiling a program's functions, each in its tier (interpreter stub,
//!   baseline or opt), and publishing them in one runtime transaction.
//!
//! Native code exists for x86-64 only; elsewhere the compilers return
//! [`emit_error::EmitError::UnsupportedTarget`], and `native_thread` and `install` are not
//! built (the engine refuses native tiers).

pub mod abi;
pub mod base_case;
pub mod baseline;
pub mod code_info;
pub mod disasm;
pub mod emit_error;
#[cfg(target_arch = "x86_64")]
pub mod install;
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) mod magic;
#[cfg(target_arch = "x86_64")]
pub mod native_thread;
#[cfg(target_arch = "x86_64")]
pub mod opt;
pub mod stubs;
pub mod tier;
