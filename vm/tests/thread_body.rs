//! A program runs every thread, `main` and spawned alike, with the body it was built with:
//! the engine decides what a thread runs (the interpreter today, native code later).

use jitvm_vm::interp;
use jitvm_vm::state::ThreadState;
use jitvm_vm::{parse_module, FuncId, Program, RunConfig, Trap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[test]
fn every_thread_runs_the_body_the_program_was_built_with() {
    let module = parse_module(
        b"func worker(x)\n load x\n ret\nend\nfunc main()\n push 5\n spawn worker\n join\n push 7\n spawn worker\n join\n add\n ret\nend\n",
    )
    .unwrap();
    let main = module.function_index("main").unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&started);
    // `main` in the interpreter; `worker` stands in for native code that returns 1000 + x.
    let body = move |program: &Arc<Program>, f: FuncId, args: &[i64]| -> Result<i64, Trap> {
        count.fetch_add(1, Ordering::SeqCst);
        if f == main {
            let mut state = ThreadState::new(program);
            interp::run_function(program, &mut state, f, args, 0)
        } else {
            Ok(1000 + args[0])
        }
    };
    let program = Program::new(
        Arc::new(module),
        RunConfig::default(),
        jitvm_runtime::Runtime::new(Default::default()).unwrap(),
        Box::new(body),
        None,
    );
    assert_eq!(program.run_main(main), 2012);
    assert_eq!(started.load(Ordering::SeqCst), 3);
}
