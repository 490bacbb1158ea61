//! Arbitrary bytes into the front end: parsing and verifying never panic, and a module that
//! verifies lowers to register code, disassembles, and compiles in both JITs.

#![no_main]

use jitvm::Tier;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(module) = jitvm_vm::parse_module(data) else {
        return;
    };
    let lowered = jitvm_vm::lower::lower_module(&module);
    jitvm_vm::disassemble(&module, Some(&lowered));
    for tier in [Tier::Baseline, Tier::Opt] {
        if tier.is_available() {
            jitvm::native_disassembly(module.clone(), tier).expect("a verified module compiles");
        }
    }
});
