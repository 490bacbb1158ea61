//! The native disassembly printer (`jitvm dis --native`): each bytecode instruction followed
//! by the machine code it became (iced-x86, Intel syntax, absolute addresses), with patch
//! sites and the compiler's remarks (callbacks, polls, trap exits) marked.

use crate::abi::CompiledCode;
use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter};
use jitvm_vm::{Function, Instr};
use std::fmt::Write;

/// Prints `code` (compiled from `func`, installed at `base_addr`). `bytecode_line(i)` is the
/// text shown for bytecode instruction `i` (say, the interpreter's `dis` line).
pub fn disassemble(
    func: &Function,
    code: &CompiledCode,
    base_addr: usize,
    bytecode_line: impl Fn(usize) -> String,
) -> String {
    let mut out = String::new();
    let start = code.entry_offset.min(code.bytes.len());
    let ip = (base_addr + start) as u64;
    let mut decoder = Decoder::with_ip(64, &code.bytes[start..], ip, DecoderOptions::NONE);
    let mut formatter = IntelFormatter::new();
    let opts = formatter.options_mut();
    opts.set_first_operand_char_index(8);
    opts.set_space_after_operand_separator(true);
    opts.set_hex_prefix("0x");
    opts.set_hex_suffix("");
    opts.set_uppercase_hex(false);

    // Section boundaries: (code offset, heading), in code order.
    let mut sections: Vec<(usize, String)> = vec![(start, "; prologue".to_string())];
    for (i, &off) in code.instr_offsets.iter().enumerate() {
        sections.push((off, format!("; {}", bytecode_line(i))));
    }
    if code.cold_offset < code.bytes.len() {
        sections.push((code.cold_offset, "; out of line".to_string()));
    }
    // Cranelift orders code as it likes (instructions it moved or merged have no offset of
    // their own): print headings in code order.
    sections.retain(|s| s.0 != usize::MAX);
    sections.sort_by_key(|s| s.0);
    let mut next_section = 0;

    let mut text = String::new();
    let mut instr = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut instr);
        let off = (instr.ip() - base_addr as u64) as usize;
        // Headings at or before this instruction (fused instructions have empty ranges).
        while next_section < sections.len() && sections[next_section].0 <= off {
            let _ = writeln!(out, "{}", sections[next_section].1);
            next_section += 1;
        }
        text.clear();
        formatter.format(&instr, &mut text);
        let mut remarks: Vec<String> = code
            .notes
            .iter()
            .filter(|(o, _)| *o == off)
            .map(|(_, n)| n.clone())
            .collect();
        for &(i, site) in &code.call_sites {
            if site == off {
                let callee = match func.code.get(i) {
                    Some(Instr::Call(f)) => format!("function #{f}"),
                    _ => "the callee".to_string(),
                };
                // Optimized code calls its callee's call stub directly: the stub's
                // `jmp qword [slot]` reads the slot.
                if instr.is_call_near() {
                    remarks.push(format!(
                        "<- patch site: call stub of {callee} (jmp through its dispatch slot)"
                    ));
                } else {
                    remarks.push(format!("<- patch site: dispatch slot of {callee}"));
                }
            }
        }
        if remarks.is_empty() {
            let _ = writeln!(out, "  {:016x}  {}", instr.ip(), text);
        } else {
            let _ = writeln!(
                out,
                "  {:016x}  {:<40} ; {}",
                instr.ip(),
                text,
                remarks.join("; ")
            );
        }
    }
    for (_, heading) in &sections[next_section..] {
        let _ = writeln!(out, "{heading}");
    }
    out
}
