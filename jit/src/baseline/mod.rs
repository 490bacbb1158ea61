//! The baseline JIT: one pass over a function's bytecode with dynasm, x86-64.
//!
//! Not a memory stack machine: `stack_model` tracks, at compile time, where each operand
//! stack entry is (a constant, a local, a register, or its frame slot), so `load i; push 1;
//! add; store i` becomes `lea r8, [r13+1]; mov r13, r8`. Values go to canonical frame slots
//! only where control flow merges, at calls, and when registers run out. Peepholes: constant
//! folding, compare-and-branch fusion (`lt; jnz L` is `cmp; jl L`), immediate operands,
//! `dup; store x` as `store x; load x`, results computed straight into the local they are
//! stored to or the argument register of the call that takes them, division by constants
//! without `idiv` (`crate::magic`), and shrink-wrapping of a leading base case (fib's `n < 2`
//! returns before any frame exists).
//!
//! `emit` has one method per bytecode instruction; `frame` lays out the native frame and
//! picks the locals that live in callee-saved registers.
//!
//! Register conventions (beyond the ABI of [`crate::abi`]):
//!
//! | register | holds |
//! |---|---|
//! | `rbx` | `ctx` for the whole body |
//! | `r12, r13, r14, r15, rbp` | up to five locals, the most used first |
//! | `r8..r11, rsi, rdi, rcx` | operand stack values (the pool) |
//! | `rax, rdx` | scratch within one instruction; never hold a stack value |
//! | `[rsp + depth_slot]` | `depth + 1`, what callees receive |

// Only the x86-64 emitter uses these; elsewhere they are compiled but idle.
#[cfg(target_arch = "x86_64")]
mod emit;
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod frame;
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod stack_model;

pub use crate::abi::{Callbacks, CompiledCode};
use crate::emit_error::EmitError;
use jitvm_vm::{Function, Module};

/// What the compiler needs to know about the world the code will run in.
#[derive(Clone, Debug)]
pub struct CompileEnv {
    /// Address of the dispatch slot of each function, by `FuncId`.
    pub slot_addr: Vec<usize>,
    pub callbacks: Callbacks,
    /// The header word: `def_addr | KIND_NATIVE`.
    pub header: usize,
    /// Count calls and back-edges as this function in the thread's profile counters (see
    /// "Profiling" in [`crate::abi`]), or not at all.
    pub count_as: Option<jitvm_vm::FuncId>,
    /// How calls to functions are made: through the slot, or `call rel32` for the
    /// installer to bind ([`crate::abi`], "Direct calls").
    pub calls: jitvm_vm::CallMode,
}

/// Bytes per instruction [`max_code_size`] allows. The largest instructions are a call or
/// `spawn` with eight arguments from memory or wide constants (~175 bytes) and a backward
/// branch with its counter, its poll and their slow path saving seven registers (~190). Each
/// instruction creates at most two stack entries, and an entry costs at most ~40 bytes of
/// moves over its life (materialised once, spilled or canonicalised once; a spilled entry is
/// only ever reloaded into a new entry).
const BYTES_PER_INSTR: usize = 320;

/// A safe upper bound on the size of [`compile`]'s output for `func`, whatever the
/// environment: reserve this much, compile at the reserved address, then shrink. (The
/// prologue, moving up to eight parameters and zeroing locals, and the shared exits fit in
/// the constant and per-slot terms; the way into the interpreter when the stack runs short
/// is a stub's body.)
pub fn max_code_size(func: &Function) -> usize {
    768 + crate::stubs::MAX_STUB_SIZE
        + 16 * func.num_slots() as usize
        + BYTES_PER_INSTR * func.code.len()
}

/// Compiles `func` (a function of `module`) for the address `base_addr` (16-aligned), where
/// the returned bytes must be copied; the entry point is `base_addr + entry_offset`.
pub fn compile(
    func: &Function,
    module: &Module,
    env: &CompileEnv,
    base_addr: usize,
) -> Result<CompiledCode, EmitError> {
    check_env(module, env, base_addr)?;
    compile_x86(func, module, env, base_addr, None)
}

/// A safe upper bound on the size of [`compile_osr`]'s output for `func` at `header`.
pub fn max_osr_code_size(func: &Function, header: u32) -> usize {
    max_code_size(func) + 16 * (func.num_slots() as usize + func.heights[header as usize] as usize)
}

/// Compiles an on-stack-replacement entry of `func` at loop header `header` (a label) for
/// `base_addr`: native code taking `(ctx, depth, frame)` that runs the rest of an
/// activation the interpreter started, `frame` pointing at its slots and then its operand
/// stack at the header (see `jitvm_vm::program::Program::set_osr_entry`).
pub fn compile_osr(
    func: &Function,
    module: &Module,
    env: &CompileEnv,
    base_addr: usize,
    header: u32,
) -> Result<CompiledCode, EmitError> {
    if !func.labels.iter().any(|l| l.target == header) {
        return Err(EmitError::BadEnvironment(format!(
            "instruction {header} of `{}` is not a label",
            func.name
        )));
    }
    check_env(module, env, base_addr)?;
    compile_x86(func, module, env, base_addr, Some(header))
}

/// What both entry points require of the environment: a slot address per function of the
/// module, and a 16-aligned base address (entries are 16-aligned: see [`crate::abi`]).
fn check_env(module: &Module, env: &CompileEnv, base_addr: usize) -> Result<(), EmitError> {
    if env.slot_addr.len() != module.functions.len() {
        return Err(EmitError::BadEnvironment(format!(
            "{} slot addresses for {} functions",
            env.slot_addr.len(),
            module.functions.len()
        )));
    }
    if base_addr % 16 != 0 {
        return Err(EmitError::BadEnvironment(format!(
            "base address {base_addr:#x} is not 16-aligned"
        )));
    }
    Ok(())
}

/// Emits the function's own entry, or with `osr` an on-stack-replacement entry at that loop
/// header, and checks the code against its size bound ([`max_code_size`],
/// [`max_osr_code_size`]). Only x86-64 has an emitter: elsewhere, `UnsupportedTarget`.
#[cfg(target_arch = "x86_64")]
fn compile_x86(
    func: &Function,
    module: &Module,
    env: &CompileEnv,
    base_addr: usize,
    osr: Option<u32>,
) -> Result<CompiledCode, EmitError> {
    let mut emitter = emit::Emitter::new(func, module, env, base_addr);
    if let Some(header) = osr {
        emitter = emitter.at_loop_header(header);
    }
    let code = emitter.compile()?;
    let bound = match osr {
        Some(header) => max_osr_code_size(func, header),
        None => max_code_size(func),
    };
    if code.bytes.len() > bound {
        return Err(EmitError::TooLarge {
            len: code.bytes.len(),
            bound,
        });
    }
    Ok(code)
}

#[cfg(not(target_arch = "x86_64"))]
fn compile_x86(
    _func: &Function,
    _module: &Module,
    _env: &CompileEnv,
    _base_addr: usize,
    _osr: Option<u32>,
) -> Result<CompiledCode, EmitError> {
    Err(EmitError::UnsupportedTarget)
}
