//! The verifier (spec §6): proves every instruction is reached with one known operand stack
//! height, that nothing underflows or exceeds [`MAX_STACK`], that `ret` leaves exactly one
//! value, and that no path runs past `end`. Every tier relies on these facts: the interpreter
//! and both JITs index stack slots by the heights recorded here without checking.

use crate::bytecode::{Function, Instr, Pos, MAX_STACK};
use crate::diag::Diagnostic;

/// Verifies `f` and records its per-instruction heights and maximum stack depth.
/// `arity[g]` is the parameter count of function `g`. Returns the first error in source order.
pub fn verify(f: &mut Function, arity: &[u32]) -> Result<(), Diagnostic> {
    let n = f.code.len();
    let end_pos = f.positions[n];
    let mut heights: Vec<Option<u32>> = vec![None; n + 1];
    let mut errors: Vec<Diagnostic> = Vec::new();
    let mut max_stack = 0;
    let mut worklist = vec![0usize];
    heights[0] = Some(0);

    while let Some(i) = worklist.pop() {
        let h = heights[i].expect("only instructions with a height are queued");
        if i == n {
            errors.push(Diagnostic::at(
                end_pos,
                format!("control reaches the `end` of `{}` without `ret`", f.name),
            ));
            continue;
        }
        let instr = f.code[i];
        let pos = f.positions[i];
        let (pops, pushes) = instr.stack_effect(|g| arity[g as usize]);
        if pops > h {
            errors.push(Diagnostic::at(
                pos,
                format!(
                    "`{}` pops {pops} value{} but the operand stack holds {h}",
                    instr.mnemonic(),
                    if pops == 1 { "" } else { "s" }
                ),
            ));
            continue;
        }
        if instr == Instr::Ret && h != 1 {
            errors.push(Diagnostic::at(
                pos,
                format!("`ret` needs exactly one value on the operand stack, found {h}"),
            ));
            continue;
        }
        let next = h - pops + pushes;
        if next > MAX_STACK {
            errors.push(Diagnostic::at(
                pos,
                format!("the operand stack grows deeper than {MAX_STACK} values"),
            ));
            continue;
        }
        max_stack = max_stack.max(next).max(h);
        let successors = instr
            .target()
            .map(|t| t as usize)
            .into_iter()
            .chain(instr.falls_through().then_some(i + 1));
        for s in successors {
            match heights[s] {
                None => {
                    heights[s] = Some(next);
                    worklist.push(s);
                }
                Some(seen) if seen != next => {
                    let (what, at) = label_at(f, s as u32).unwrap_or(("instruction".into(), pos));
                    errors.push(Diagnostic::at(
                        at,
                        format!("{what} is reached with operand stack heights {seen} and {next}"),
                    ));
                }
                Some(_) => {}
            }
        }
    }
    if errors.is_empty() {
        if let Some(i) = heights[..n].iter().position(Option::is_none) {
            errors.push(Diagnostic::at(
                f.positions[i],
                format!("unreachable instruction `{}`", f.code[i].mnemonic()),
            ));
        }
    }
    if let Some(first) = errors.into_iter().min_by_key(|d| d.pos) {
        return Err(first);
    }
    f.heights = heights[..n]
        .iter()
        .map(|h| h.expect("all reachable"))
        .collect();
    f.max_stack = max_stack;
    Ok(())
}

fn label_at(f: &Function, index: u32) -> Option<(String, Pos)> {
    let label = f.labels.iter().find(|l| l.target == index)?;
    Some((format!("label `{}`", label.name), label.pos))
}
