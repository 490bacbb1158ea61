//! What `jitvm dis --ir` and `jitvm dis --native` print.

use super::compile_all;
use crate::error::EngineError;
use jitvm_jit::tier::Tier;
use jitvm_vm::Module;

/// Each function's Cranelift IR before and after optimization, as `jitvm dis --ir` prints it.
pub fn ir_listing(module: Module) -> Result<String, EngineError> {
    let (program, installed) = compile_all(module, Tier::Opt, true)?;
    let mut out = String::new();
    for item in &installed {
        let name = &program.module.functions[item.func as usize].name;
        match &item.ir {
            Some((before, after)) => out.push_str(&format!(
                "; func {name}: before optimization\n{before}\n; func {name}: after optimization\n{after}\n"
            )),
            None => out.push_str(&format!("; func {name}: not compiled (see the log)\n\n")),
        }
    }
    Ok(out)
}

/// Every function of `module` compiled by `tier`'s JIT (baseline or opt) and installed
/// (nothing runs), as `jitvm dis --native` prints it: each bytecode instruction followed by
/// its machine code, patch sites marked (for opt: the calls to call stubs).
pub fn native_disassembly(module: Module, tier: Tier) -> Result<String, EngineError> {
    let (program, installed) = compile_all(module, tier, false)?;
    let module = &program.module;
    let mut out = String::new();
    for item in &installed {
        let f = &module.functions[item.func as usize];
        out.push_str(&format!(
            "func {}    ; #{}: {} code at {:#x}\n",
            f.name, item.func, tier, item.entry
        ));
        match &item.native {
            Some(code) => out.push_str(&jitvm_jit::disasm::disassemble(f, code, item.addr, |i| {
                jitvm_vm::dis::instruction(module, f, i)
            })),
            None => out.push_str("  ; not compiled: runs in the interpreter (see the log)\n"),
        }
        out.push_str("end\n\n");
    }
    Ok(out)
}
