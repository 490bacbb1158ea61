//! A function the baseline cannot place (out of code memory) stays in the interpreter, behind
//! a stub, and the program still runs to the same result.
#![cfg(target_arch = "x86_64")]

use jitvm_jit::install::Jit;
use jitvm_jit::native_thread::native_thread;
use jitvm_jit::tier::Tier;
use jitvm_runtime::{Config, Runtime};
use jitvm_vm::{parse_module, Program, RunConfig};
use std::fmt::Write;
use std::sync::Arc;

#[test]
fn a_function_that_finds_no_code_memory_stays_in_the_interpreter_and_the_run_goes_on() {
    // `big` adds 1 three thousand times: its worst-case code size is far over 64 KiB.
    let mut src = String::from("func big(x)\n  load x\n");
    for _ in 0..3000 {
        src.push_str("  push 1\n  add\n");
    }
    src.push_str("  ret\nend\nfunc main()\n  push 4\n  call big\n  ret\nend\n");
    let module = parse_module(src.as_bytes()).unwrap();
    let runtime = Runtime::new(Config {
        capacity: 64 << 10,
        ..Config::default()
    })
    .unwrap();
    let program = Program::new(
        Arc::new(module),
        RunConfig::default(),
        runtime,
        Box::new(native_thread),
        None,
    );
    let (_, installed) =
        Jit::install(&program, &[Tier::Baseline; 2], false, false, None).expect("stubs fit");
    let mut got = String::new();
    for item in &installed {
        let _ = write!(got, "{}:{} ", item.func, item.native.is_some());
    }
    assert_eq!(got, "0:false 1:true ", "big falls back, main is native");
    assert_eq!(program.run_main(1), 3004);
}
