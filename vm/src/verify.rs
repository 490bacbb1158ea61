//! The verifier (spec §6): proves every instruction is reached with one known operand stack
//! height, that nothing underflows or exceeds [`MAX_STACK`], that `ret` leaves exactly one
//! value, and that no path runs past `end`. Every tier relies on these facts: the interpreter
//! and both JITs index stack slots by the heights recorded here without checking.

use crate::bytecode::{Function, Instr, Label, MAX_STACK};
use crate::diag::Diagnostic;

/// Verifies `f` and records its per-instruction heights and maximum stack depth.
/// `arity[g]` is the parameter count of function `g`. `opaque[i]` marks an instruction that
/// failed to parse or resolve (already reported): nothing is concluded past it, so every
/// error this returns is real. Returns the first error in source order.
pub fn verify(f: &mut Function, arity: &[u32], opaque: &[bool]) -> Result<(), Diagnostic> {
    let n = f.code.len();
    let end_pos = f.positions[n];
    let mut heights: Vec<Option<u32>> = vec![None; n + 1];
    let mut errors: Vec<Diagnostic> = Vec::new();
    let mut max_stack = 0;
    // The first label naming each instruction, for pointing height errors at it; and whether
    // a target's mismatch was already reported (one error per label keeps this linear).
    let mut label_of: Vec<Option<&Label>> = vec![None; n + 1];
    for label in f.labels.iter().rev() {
        label_of[label.target as usize] = Some(label);
    }
    let mut mismatch_reported = vec![false; n + 1];
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
        if opaque[i] {
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
                Some(seen) if seen != next && !mismatch_reported[s] => {
                    mismatch_reported[s] = true;
                    let (what, at) = match label_of[s] {
                        Some(label) => (format!("label `{}`", label.name), label.pos),
                        None => ("instruction".to_string(), pos),
                    };
                    errors.push(Diagnostic::at(
                        at,
                        format!("{what} is reached with operand stack heights {seen} and {next}"),
                    ));
                }
                Some(_) => {}
            }
        }
    }
    let any_opaque = opaque.contains(&true);
    if errors.is_empty() && !any_opaque {
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
    if any_opaque {
        return Ok(()); // the caller has errors to report; heights would be incomplete
    }
    f.heights = heights[..n]
        .iter()
        .map(|h| h.expect("all reachable"))
        .collect();
    f.max_stack = max_stack;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::bytecode::Pos;
    use crate::parse_module;

    fn error(src: &str) -> (Pos, String) {
        let d = parse_module(src.as_bytes())
            .expect_err("should not verify")
            .first
            .remove(0);
        (d.pos.expect("positioned"), d.message)
    }

    fn at(line: u32, col: u32) -> Pos {
        Pos { line, col }
    }

    #[test]
    fn records_heights_and_max_stack() {
        let m =
            parse_module(b"func main()\n push 1\n push 2\n over\n add\n add\n ret\nend\n").unwrap();
        let f = &m.functions[0];
        assert_eq!(f.heights, [0, 1, 2, 3, 2, 1]);
        assert_eq!(f.max_stack, 3);
    }

    #[test]
    fn underflow_names_the_instruction() {
        let (pos, msg) = error("func main()\n push 1\n swap\n ret\nend\n");
        assert_eq!(pos, at(3, 2));
        assert!(
            msg.contains("`swap` pops 2 values but the operand stack holds 1"),
            "{msg}"
        );
        // A call pops its callee's parameters.
        let (pos, _) =
            error("func f(a, b)\n load a\n ret\nend\nfunc main()\n push 1\n call f\n ret\nend\n");
        assert_eq!(pos, at(7, 2));
    }

    #[test]
    fn label_heights_must_agree() {
        let (pos, msg) =
            error("func main()\n push 1\n push 2\n jz join\n push 3\njoin:\n ret\nend\n");
        assert_eq!(pos, at(6, 1), "{msg}");
        assert!(
            msg.contains("label `join`") && msg.contains('1') && msg.contains('2'),
            "{msg}"
        );
        // A loop whose body leaves a value behind each iteration.
        let (pos, _) = error("func main()\ntop:\n push 1\n push 1\n jnz top\n ret\nend\n");
        assert_eq!(pos, at(2, 1));
    }

    #[test]
    fn ret_needs_exactly_one_value() {
        assert_eq!(
            error("func main()\n push 1\n push 2\n ret\nend\n").0,
            at(4, 2)
        );
        assert_eq!(error("func main()\n ret\nend\n").0, at(2, 2));
    }

    #[test]
    fn falling_off_the_end_is_an_error() {
        let (pos, msg) = error("func main()\n push 0\n jz out\n push 1\n ret\nout:\nend\n");
        assert_eq!(pos, at(7, 1));
        assert!(msg.contains("without `ret`"), "{msg}");
        assert_eq!(error("func main()\nend\n").0, at(2, 1));
        assert_eq!(error("func main()\n push 0\n pop\nend\n").0, at(4, 1));
    }

    #[test]
    fn unreachable_code_is_an_error() {
        let (pos, msg) = error("func main()\n push 0\n ret\n push 1\n ret\nend\n");
        assert_eq!(pos, at(4, 2));
        assert!(msg.contains("unreachable"), "{msg}");
        // A labelled block that nothing jumps to is unreachable too.
        assert_eq!(
            error("func main()\n push 0\n ret\ndead:\n push 1\n ret\nend\n").0,
            at(5, 2)
        );
        // A backward jump makes code reachable only through the loop: fine.
        parse_module(b"func main()\n jmp start\nback:\n push 0\n ret\nstart:\n jmp back\nend\n")
            .unwrap();
    }

    #[test]
    fn stack_depth_is_capped_at_1024() {
        let mut src = String::from("func main()\n");
        for _ in 0..1024 {
            src.push_str(" push 1\n");
        }
        let mut ok = src.clone();
        for _ in 0..1023 {
            ok.push_str(" pop\n");
        }
        ok.push_str(" ret\nend\n");
        assert_eq!(
            parse_module(ok.as_bytes()).unwrap().functions[0].max_stack,
            1024
        );
        src.push_str(" push 1\n ret\nend\n");
        let (pos, msg) = error(&src);
        assert_eq!(pos, at(1026, 2));
        assert!(msg.contains("deeper than 1024"), "{msg}");
    }

    #[test]
    fn first_error_in_source_order_per_function() {
        // An underflow (line 4) and a ret-height error (line 9) on different paths.
        let (pos, _) =
            error("func main()\n push 0\n jz a\n add\n ret\na:\n push 1\n push 1\n ret\nend\n");
        assert_eq!(pos, at(4, 2));
    }
}
