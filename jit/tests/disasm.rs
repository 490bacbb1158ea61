//! The native disassembly: bytecode interleaved with its machine code, patch sites marked.

#![cfg(target_arch = "x86_64")]

mod support;

use jitvm_jit::disasm::disassemble;
use support::{Machine, Tier};

#[test]
fn disassembly_interleaves_bytecode_and_marks_patch_sites() {
    let src = support::workspace_file("examples/fib.bc");
    let m = Machine::load(&src, 100);
    let fib = m.func_id("fib") as usize;
    let func = &m.module.functions[fib];
    let (base, code) = &m.code[fib];
    let text = disassemble(func, code, *base, |i| {
        format!("{i:04}  {}", func.code[i].mnemonic())
    });
    println!("{text}");
    assert!(text.starts_with("; prologue\n"));
    for (i, instr) in func.code.iter().enumerate() {
        assert!(
            text.contains(&format!("; {i:04}  {}", instr.mnemonic())),
            "{i}"
        );
    }
    let sites = text
        .matches("<- patch site: dispatch slot of function #")
        .count();
    assert_eq!(sites, 2, "fib calls itself twice");
    assert!(text.contains("call    qword ptr [rax]"));
    assert!(text.contains("safepoint poll"));
    assert!(text.contains("; out of line"));
    // fib's base case returns before any register is pushed.
    let machine: Vec<&str> = text.lines().filter(|l| l.starts_with("  ")).collect();
    let first = |m: &str| machine.iter().position(|l| l.contains(m)).unwrap();
    assert!(first("  ret") < first("  push "));
    // Addresses are the ones the code runs at.
    assert!(text.contains(&format!("{:016x}", base + code.entry_offset)));
}

#[test]
fn stubs_disassemble_too() {
    let src = support::workspace_file("examples/fib.bc");
    let m = Machine::load_with(&src, 100, |_, _| Tier::Interp);
    let (base, code) = &m.code[0];
    let text = disassemble(&m.module.functions[0], code, *base, |i| format!("{i}"));
    assert!(text.contains("interpreter stub"));
    assert!(text.contains("call    rax"));
}

/// `DIS_FILE=path.bc cargo test -p jitvm-jit --test disasm -- --ignored --nocapture`
/// prints the native code of every function of a file.
#[test]
#[ignore = "a tool: prints DIS_FILE's native code"]
fn print_dis_file() {
    let Ok(path) = std::env::var("DIS_FILE") else {
        return;
    };
    let src = std::fs::read_to_string(path).unwrap();
    let m = Machine::load(&src, 100);
    for (f, func) in m.module.functions.iter().enumerate() {
        let (base, code) = &m.code[f];
        println!("func {}: {} bytes", func.name, code.bytes.len());
        let line = |i: usize| format!("{i:04}  {:?}", func.code[i]);
        println!("{}", disassemble(func, code, *base, line));
    }
}
