//! The Rust half of the native ABI ([`crate::abi`]): a VM thread that may run native code,
//! the bridge through which the interpreter (or a thread's start) enters native code, and the
//! callbacks through which native code calls back into the VM.
//!
//! The contract with the runtime, in the order a thread meets it:
//!
//! 1. every VM thread is registered with the program's runtime for its whole life
//!    ([`Program`] does it before the thread body runs);
//! 2. [`native_thread`] is the thread body: it builds the thread's [`ThreadContext`] and
//!    starts `f` natively or in the interpreter, whichever its entry says;
//! 3. every call into native code goes through `enter_native`, inside the runtime's
//!    `ThreadHandle::enter`, so code on this thread's stack is never freed under it;
//! 4. native code polls its thread's poll word (in the [`ThreadContext`], lent to the runtime
//!    with `ThreadHandle::with_poll_word`) at function entries and loop back-edges and calls
//!    `safepoint` when the runtime has asked this thread to report; the safepoint reports
//!    quiescence without leaving (the runtime pins the code still on the stack), so a long
//!    native loop never holds reclamation back;
//! 5. the interpreter reports quiescence at its profile batches (inside native code that is a
//!    native safepoint too), and a thread that waits (join, a contended output lock, a write
//!    to stdout, the dispatch lock) is blocked meanwhile: it pins its stack first, then holds
//!    nothing else back until it returns.

use crate::abi::{
    call_native, callbacks_for, CallbackHost, Callbacks, ThreadContext, NATIVE_ENTRY_ROOM,
    STACK_HEADROOM,
};
use jitvm_runtime::{with_current_thread, CodePtr, ThreadHandle};
use jitvm_vm::entry::Entry;
use jitvm_vm::interp;
use jitvm_vm::program::{Definition, Program};
use jitvm_vm::state::{Counter, ThreadState};
use jitvm_vm::{FuncId, Trap};
use std::ffi::c_void;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

/// What the callbacks reach through [`ThreadContext::vm`]: the thread's program, runtime
/// registration and interpreter state.
struct VmThread<'a> {
    program: &'a Arc<Program>,
    handle: &'a ThreadHandle,
    /// The interpreter state of the run that called out most recently (see
    /// [`enter_native`]): a nested interpreter run puts its frames above that run's.
    state: *mut ThreadState,
}

/// The addresses of the callbacks, for the compilers: [`VmThread`]'s.
pub fn callbacks() -> Callbacks {
    // The lifetime is the thread's, not 'static: a callback only borrows the `VmThread` for
    // its own run, and `native_thread` keeps the thread's alive longer than that.
    callbacks_for::<VmThread<'static>>()
}

/// The thread body of a program with native code: runs `f(args)` on this thread, natively if
/// f's entry is native code, else in the interpreter (which calls out to native callees).
pub fn native_thread(program: &Arc<Program>, f: FuncId, args: &[i64]) -> Result<i64, Trap> {
    with_current_thread(|handle| {
        let Some(handle) = handle else {
            // Not a registered VM thread (a test calling the body directly): interpret.
            let mut state = ThreadState::new(program);
            return interp::run_function(program, &mut state, f, args, 0);
        };
        let mut state = ThreadState::new(program);
        let mut vm = VmThread {
            program,
            handle,
            state: std::ptr::null_mut(),
        };
        let memory = program.memory();
        let (calls_left, back_edges_left) = state.counters();
        let mut ctx = ThreadContext {
            memory_base: memory.as_ptr(),
            memory_cells: memory.len() as u64,
            max_depth: program.config.max_depth as u64,
            stack_limit: stack_limit(handle),
            vm: &mut vm as *mut VmThread as *mut c_void,
            calls_left,
            back_edges_left,
            poll: AtomicU32::new(0),
        };
        // Below this the interpreter runs native entries' definitions itself (abi.rs, "Depth
        // and the native stack").
        let floor = ctx.stack_limit.saturating_add(NATIVE_ENTRY_ROOM);
        let ctx = &mut ctx as *mut ThreadContext;
        state.set_native(enter_native, ctx as *mut c_void, floor);
        // SAFETY: `ctx` points at the context above, alive until this function returns; the
        // poll word is atomic, so native code and the runtime may write it meanwhile.
        let poll = unsafe { &(*ctx).poll };
        // The runtime asks this thread through the word native code polls (abi.rs).
        handle.with_poll_word(poll, || {
            let entry = program.entry(f);
            let result = match program.resolve(entry) {
                (_, true) => enter_native(program, &mut state, entry, 1, args),
                (def, false) => interp::run(program, &mut state, def, args, 0),
            };
            state.flush_profile(program);
            result
        })
    })
}

/// Calls the native `entry` at call depth `depth` with `args`, inside the runtime's
/// `enter`. The interpreter's bridge ([`jitvm_vm::state::NativeCall`]).
fn enter_native(
    program: &Arc<Program>,
    st: &mut ThreadState,
    entry: Entry,
    depth: u32,
    args: &[i64],
) -> Result<i64, Trap> {
    let ctx = st.native_context() as *mut ThreadContext;
    debug_assert!(!ctx.is_null(), "set by native_thread");
    // SAFETY: `native_thread` set the context for this thread; it and the `VmThread` it
    // points to live on that function's stack frame, below every call into native code.
    let vm = unsafe { &mut *((*ctx).vm as *mut VmThread) };
    debug_assert!(Arc::ptr_eq(vm.program, program));
    // Callbacks reach the interpreter state through a pointer made from this borrow, which
    // is not used again until native code returns.
    let caller_state = std::mem::replace(&mut vm.state, st as *mut ThreadState);
    let ret = vm.handle.enter(|scope| {
        // SAFETY: `entry` is a native entry of this program (its header says so), which
        // follows the ABI for the callee's parameter count, `args.len()`; `ctx` is this
        // thread's context; we are inside `enter` on the registered thread.
        unsafe { call_native(scope, CodePtr::new(entry.addr()), ctx, depth as u64, args) }
    });
    vm.state = caller_state;
    ret.into_result()
}

/// The lowest address native frames may reach: the thread's stack end plus headroom for the
/// Rust code (callbacks, a nested interpreter) that runs below the deepest native frame. An
/// unknown stack makes every native call trap rather than risk a fault.
fn stack_limit(handle: &ThreadHandle) -> usize {
    match handle.stack() {
        (0, 0) => usize::MAX,
        (low, _) => low + STACK_HEADROOM,
    }
}

impl CallbackHost for VmThread<'_> {
    type Def = Definition;

    fn print(&mut self, value: i64) {
        self.program.print(value);
    }

    fn putc(&mut self, value: i64) {
        self.program.putc(value);
    }

    fn params(&self, f: FuncId) -> usize {
        self.program.module.functions[f as usize].params.len()
    }

    fn spawn(&mut self, f: FuncId, args: &[i64]) -> Result<i64, Trap> {
        self.program.spawn(f, args)
    }

    fn join(&mut self, handle: i64) -> Result<i64, Trap> {
        self.program.join(handle)
    }

    fn patch(&mut self, f: FuncId, g: FuncId) {
        self.program.patch(f, g);
    }

    fn safepoint(&mut self) {
        self.handle.safepoint_from_native();
    }

    fn profile(&mut self, f: FuncId, counter: Counter) {
        // SAFETY: as in `call_interp`: the thread's interpreter state, not in use meanwhile.
        let st = unsafe { &mut *self.state };
        st.report_if_due(self.program, f, counter);
        self.handle.safepoint_from_native();
    }

    fn def_params(&self, def: &Definition) -> usize {
        def.code.params as usize
    }

    fn call_interp(
        &mut self,
        _ctx: *mut ThreadContext,
        depth: u64,
        def: &Definition,
        args: &[i64],
    ) -> Result<i64, Trap> {
        // SAFETY: `state` was set from the interpreter state of the run that entered native
        // code (or the thread's own), which is not used until native code returns.
        let st = unsafe { &mut *self.state };
        interp::run(self.program, st, def, args, depth as u32 - 1)
    }
}
