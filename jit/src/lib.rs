//! jitvm's native backends and the calling convention they share.
//!
//! - [`abi`]: THE native ABI (read its docs first): function signature, [`abi::ThreadContext`],
//!   trap statuses, dispatch-slot calls, entry headers, safepoints, Rust callbacks, and the
//!   arity bridge [`abi::call_native`] through which Rust enters native code.
//! - [`baseline`]: the baseline JIT, one pass with dynasm over a function's bytecode, with a
//!   compile-time model of the operand stack.
//! - [`stubs`]: interpreter stubs, native entry points that run a definition in the
//!   interpreter (`call_interp`).
//! - [`disasm`]: bytecode interleaved with machine code, for `jitvm dis --native`.
//!
//! Native code exists for x86-64 only; elsewhere the compilers return
//! [`baseline::CompileError::UnsupportedTarget`]. Installing code (the runtime's staging
//! transactions) and entering it are the VM's business.

pub mod abi;
pub mod baseline;
pub mod disasm;
#[cfg(target_arch = "x86_64")]
pub mod install;
#[cfg(target_arch = "x86_64")]
pub mod native_thread;
pub mod stubs;
