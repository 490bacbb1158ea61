//! What a tier-up records when its commit fails part way.
#![cfg(target_arch = "x86_64")]

use jitvm_jit::install::{Jit, Job};
use jitvm_jit::native_thread::native_thread;
use jitvm_jit::tier::Tier;
use jitvm_runtime::{Config, Guarantee, Runtime};
use jitvm_vm::{parse_module, Program, RunConfig};
use std::sync::Arc;

const SRC: &str = "func f(x)\n  load x\n  push 1\nloop:\n  add\n  dup\n  push 100\n  lt\n  \
                   jz out\n  push 1\n  jmp loop\nout:\n  ret\nend\n\
                   func main()\n  push 4\n  call f\n  ret\nend\n";

#[test]
fn a_tier_up_published_without_its_guarantee_is_recorded_as_published() {
    let module = parse_module(SRC.as_bytes()).unwrap();
    let runtime = Runtime::new(Config::default()).unwrap();
    let program = Program::new(
        Arc::new(module),
        RunConfig::default(),
        runtime,
        Box::new(native_thread),
        None,
    );
    let interp = [Tier::Interp, Tier::Interp];
    let (jit, _) = Jit::install(&program, &interp, false, false, None).unwrap();
    let f = program.module.function_index("f").unwrap();
    // `loop`, the first label.
    let (header_op, header) = program.definitions()[f as usize].code.labels[0];
    // A Strong commit serializes twice: the second failing leaves it published.
    program.runtime().fail_serialization_after(2);
    let jobs = [
        Job::TierUp(f, Tier::Baseline),
        Job::Osr {
            func: f,
            header_op,
            header,
            tier: Tier::Baseline,
        },
    ];
    let batch = jit
        .tier_up_with(&program, &jobs, Guarantee::Strong)
        .expect("published, so not an error");
    assert!(batch.commit_error.is_some(), "the guarantee was not kept");
    assert_eq!(batch.done.len(), 1);
    assert_eq!(jit.tier_of(f), Tier::Baseline, "the published tier");
    assert!(
        program.resolve(program.entry(f)).1,
        "f's slot runs native code"
    );
    assert!(
        program.osr_entry(f, header_op).is_some(),
        "the published OSR entry is registered"
    );
    assert_eq!(program.run_main(1), 100);
}
