//! The disassembler: a verified module back as text, each instruction with its offset and
//! the operand stack height before it, and optionally the interpreter's lowered ops.

use crate::bytecode::{FuncId, Function, Module, Operands};
use crate::regcode::LoweredFunction;
use std::fmt::Write;

/// Disassembles `module`. With `lowered` (one entry per function, as
/// [`crate::lower::lower_module`] makes them), each function is followed by its register code
/// in the notation of [`crate::regcode`].
pub fn disassemble(module: &Module, lowered: Option<&[LoweredFunction]>) -> String {
    let mut out = String::new();
    if module.memory_cells > 0 {
        let _ = writeln!(out, "memory {}\n", module.memory_cells);
    }
    for (index, f) in module.functions.iter().enumerate() {
        if index > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "func {}({})    ; #{index}: {} params, {} locals, max stack {}",
            f.name,
            f.params.join(", "),
            f.params.len(),
            f.locals.len(),
            f.max_stack
        );
        for local in &f.locals {
            let _ = writeln!(out, "  local {local}");
        }
        let _ = writeln!(out, "  ; offset  height  instruction");
        // Labels by the instruction they name (several may name one), built once.
        let mut labels_at: Vec<Vec<&str>> = vec![Vec::new(); f.code.len() + 1];
        for label in &f.labels {
            labels_at[label.target as usize].push(&label.name);
        }
        for (i, names) in labels_at.iter().take(f.code.len()).enumerate() {
            for name in names {
                let _ = writeln!(out, "{name}:");
            }
            let _ = writeln!(out, "  {}", instruction(module, f, i));
        }
        for label in f
            .labels
            .iter()
            .filter(|l| l.target as usize == f.code.len())
        {
            let _ = writeln!(out, "{}:", label.name);
        }
        let _ = writeln!(out, "end");
        if let Some(code) = lowered.map(|all| &all[index]) {
            let _ = writeln!(
                out,
                "  ; lowered: {} ops, frame of {} slots (slots 0..{} are parameters and locals)",
                code.ops.len(),
                code.frame_size,
                code.slots
            );
            for (i, op) in code.ops.iter().enumerate() {
                let _ = writeln!(out, "  ; {i:04}  {op}");
            }
        }
    }
    out
}

/// Instruction `i` of `f` as the disassembly shows it: offset, stack height before it,
/// mnemonic and operands (`0003    [   1]  jz recurse  ; -> 0006`). The native disassembly
/// heads each instruction's machine code with this line.
pub fn instruction(module: &Module, f: &Function, i: usize) -> String {
    let instr = f.code[i];
    let func = |g: FuncId| &module.functions[g as usize].name;
    let operands = match instr.operands() {
        Operands::None => String::new(),
        Operands::Imm(c) => format!(" {c}"),
        Operands::Local(s) => format!(" {}", f.slot_name(s)),
        Operands::Label(t) => {
            let name = f
                .labels
                .iter()
                .find(|l| l.target == t)
                .map_or("?", |l| &l.name);
            format!(" {name}  ; -> {t:04}")
        }
        Operands::Func(g) => format!(" {}", func(g)),
        Operands::TwoFuncs(a, b) => format!(" {} {}", func(a), func(b)),
    };
    format!(
        "{i:04}    [{:>4}]  {}{operands}",
        f.heights[i],
        instr.mnemonic()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::lower_module;
    use crate::parse_module;

    #[test]
    fn shows_offsets_heights_and_labels() {
        let m = parse_module(b"func main()\n local x\n push 1\ntop:\n jz done\n jmp top\ndone:\n push 0\n ret\nend\n");
        // `jmp top` reaches `top` with height 0 but the fallthrough brings 1: not valid.
        assert!(m.is_err());
        let m = parse_module(b"func main()\n local x\ntop:\n load x\n jz done\n jmp top\ndone:\n push 0\n ret\nend\n").unwrap();
        let text = disassemble(&m, Some(&lower_module(&m)));
        assert!(text.contains("func main()"), "{text}");
        assert!(text.contains("top:\n  0000    [   0]  load x\n"), "{text}");
        assert!(
            text.contains("  0001    [   1]  jz done  ; -> 0003\n"),
            "{text}"
        );
        assert!(text.contains("; lowered: "), "{text}");
    }
}
