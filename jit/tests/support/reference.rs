//! The test machine's interpreter: the VM's reference evaluator ([`jitvm_vm::reference`])
//! behind the machine's stubs. Every call it makes goes through the callee's dispatch slot
//! with the arity bridge, so interpreted and native code call each other as in the VM.

use super::Machine;
use jitvm_jit::abi::ThreadContext;
use jitvm_vm::reference::{self, Host};
use jitvm_vm::{FuncId, Trap};
use std::sync::atomic::AtomicI64;
use std::sync::Arc;

/// Runs `f(args)` at call depth `depth`.
///
/// # Safety
/// `ctx` must be the calling VM thread's context.
pub unsafe fn eval(
    m: &Arc<Machine>,
    ctx: *mut ThreadContext,
    depth: u64,
    f: FuncId,
    args: &[i64],
) -> Result<i64, Trap> {
    if depth > m.max_depth {
        return Err(Trap::StackOverflow);
    }
    // Unlike the VM's interpreter, this one recurses on the native stack: below the limit
    // (where native code sends a call it has no stack for) it gives up rather than fault.
    let marker = 0u8;
    // SAFETY: ctx is this thread's context, alive while native code runs.
    if (std::hint::black_box(&marker) as *const u8 as usize) < unsafe { (*ctx).stack_limit } {
        return Err(Trap::StackOverflow);
    }
    reference::run(&mut StubHost { m, ctx, depth }, &m.module, f, args)
}

/// One activation's view of the machine: calls leave through dispatch slots at `depth + 1`.
struct StubHost<'a> {
    m: &'a Arc<Machine>,
    ctx: *mut ThreadContext,
    depth: u64,
}

impl Host for StubHost<'_> {
    fn memory(&self) -> &[AtomicI64] {
        &self.m.memory
    }

    fn call(&mut self, g: FuncId, args: &[i64]) -> Result<i64, Trap> {
        let m = self.m;
        // SAFETY: the slot points at live code for g's arity; ctx is this thread's.
        unsafe { m.space.call(m.entry(g), self.ctx, self.depth + 1, args) }.into_result()
    }

    fn at_label(&mut self) {
        self.m.stop_if_ended(); // a loop head: threads of an ended program stop here
    }

    fn spawn(&mut self, f: FuncId, args: Vec<i64>) -> Result<i64, Trap> {
        self.m.spawn(f, args)
    }

    fn join(&mut self, handle: i64) -> Result<i64, Trap> {
        self.m.join(handle)
    }

    fn patch(&mut self, f: FuncId, g: FuncId) {
        self.m.patch(f, g)
    }

    fn print(&mut self, value: i64) {
        self.m.print(value)
    }

    fn putc(&mut self, value: i64) {
        self.m.putc(value)
    }
}
