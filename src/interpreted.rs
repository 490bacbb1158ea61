//! Programs and threads that run in the interpreter only: what a run with no native code
//! is, and what the native side builds its listings on.

use jitvm_runtime::Runtime;
use jitvm_vm::interp;
use jitvm_vm::state::ThreadState;
use jitvm_vm::{FuncId, Module, Program, RunConfig, Trap};
use std::sync::Arc;

/// A program whose threads run in the interpreter, with no hot hook (nothing tiers up).
pub(crate) fn interpreted(
    module: Module,
    config: RunConfig,
    runtime: Arc<Runtime>,
) -> Arc<Program> {
    Program::new(
        Arc::new(module),
        config,
        runtime,
        Box::new(interpreter_thread),
        None,
    )
}

/// A thread that runs `f(args)` in the interpreter: its own [`ThreadState`], counted calls
/// added to the profile when it ends, trap or not.
pub fn interpreter_thread(program: &Arc<Program>, f: FuncId, args: &[i64]) -> Result<i64, Trap> {
    let mut state = ThreadState::new(program);
    let result = interp::run_function(program, &mut state, f, args, 0);
    state.flush_profile(program);
    result
}
