//! Differential test of the lowering: random verified programs run in the interpreter (which
//! runs the register-lowered code) and in the reference evaluator written straight from the
//! spec must return the same value, leave the same memory, and trap the same way. The
//! programs are `jitvm-bcgen`'s [`Profile::LOWERING`]: values pending across blocks,
//! if-then jumps, fused compare-branches, bounded loops, calls and memory.

use jitvm_bcgen::{generate_seeded, Profile};
use jitvm_vm::bytecode::{FuncId, Module};
use jitvm_vm::interp;
use jitvm_vm::reference::{self, Host};
use jitvm_vm::state::ThreadState;
use jitvm_vm::{parse_module, Program, RunConfig, Trap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// The reference evaluator's host here: a call recurses straight into the evaluator.
struct Direct<'a> {
    module: &'a Module,
    memory: Box<[AtomicI64]>,
}

impl Host for Direct<'_> {
    fn memory(&self) -> &[AtomicI64] {
        &self.memory
    }

    fn call(&mut self, f: FuncId, args: &[i64]) -> Result<i64, Trap> {
        let module = self.module;
        reference::run(self, module, f, args)
    }
}

#[test]
fn lowered_interpreter_matches_the_reference_evaluator() {
    let mut trapped = 0;
    let runs: u64 = 1500;
    for seed in 1..=runs {
        let src = generate_seeded(seed, 4096, &Profile::LOWERING).text;
        let module = parse_module(src.as_bytes()).unwrap_or_else(|e| {
            panic!("the generator made an invalid program (seed {seed}): {e}\n{src}")
        });
        let main = module.function_index("main").unwrap();
        let mut host = Direct {
            module: &module,
            memory: (0..module.memory_cells)
                .map(|_| AtomicI64::new(0))
                .collect(),
        };
        let expected = reference::run(&mut host, &module, main, &[]);
        let memory: Vec<i64> = host
            .memory
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();

        let no_threads = Box::new(
            |_: &Arc<Program>, _: FuncId, _: &[i64]| -> Result<i64, Trap> {
                unreachable!("the generated programs never spawn")
            },
        );
        let program = Program::new(
            Arc::new(module),
            RunConfig::default(),
            jitvm_runtime::Runtime::new(Default::default()).unwrap(),
            no_threads,
            None,
        );
        let mut state = ThreadState::new(&program);
        let got = interp::run_function(&program, &mut state, main, &[], 0);
        assert_eq!(got, expected, "seed {seed}: results differ\n{src}");
        if expected.is_ok() {
            let got_memory: Vec<i64> = program
                .memory()
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect();
            assert_eq!(got_memory, memory, "seed {seed}: memory differs\n{src}");
        } else {
            trapped += 1;
        }
    }
    // Most programs must run to the end, or the comparison says little.
    assert!(trapped < runs / 2, "{trapped} of {runs} programs trapped");
}
