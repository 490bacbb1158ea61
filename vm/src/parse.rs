//! The `.bc` text format (spec §2) to a resolved [`Module`].
//!
//! Parsing is line oriented and never fails fast: every malformed line is reported, then
//! names are resolved ([`crate::resolve`]), then each function is verified (see
//! [`crate::verify`]). The result
//! holds no names the interpreter has to look up at run time.

use crate::bytecode::{Instr, Module, Pos, MAX_MEMORY_CELLS};
use crate::diag::{quote, Diagnostic, Diagnostics};
use crate::lex::{is_identifier, parse_literal, tokens, Token};
use crate::resolve::{resolve, RawFunction, RawInstr};

/// Parses and verifies a module. Errors come back sorted by position.
pub fn parse_module(src: &[u8]) -> Result<Module, Diagnostics> {
    let text = match std::str::from_utf8(src) {
        Ok(text) => text,
        Err(e) => return Err(invalid_utf8(src, e.valid_up_to()).into()),
    };
    // Editors on some systems start UTF-8 files with a byte-order mark; it is not a token.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parser = Parser::default();
    for (index, line) in text.split('\n').enumerate() {
        parser.line(index as u32 + 1, line);
    }
    parser.finish()
}

fn invalid_utf8(src: &[u8], valid_up_to: usize) -> Diagnostic {
    let before = &src[..valid_up_to];
    let line = before.iter().filter(|&&b| b == b'\n').count() as u32 + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let col = (valid_up_to - line_start) as u32 + 1;
    Diagnostic::at(Pos { line, col }, "the file is not valid UTF-8 text")
}

/// Everything the parser knows while it reads the file line by line.
#[derive(Default)]
struct Parser<'a> {
    errors: Diagnostics,
    memory_cells: u64,
    memory_seen: bool,
    /// Functions read to their `end` (or to where a missing `end` was noticed).
    functions: Vec<RawFunction<'a>>,
    /// The function being read, from its `func` line on.
    current: Option<RawFunction<'a>>,
    last_line: u32,
}

impl<'a> Parser<'a> {
    fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.errors.push(Diagnostic::at(pos, message));
    }

    /// Reads one line of the file.
    fn line(&mut self, line_no: u32, line: &'a str) {
        self.last_line = line_no;
        // Tolerate CRLF files: the \r is part of the line terminator, not a token.
        let line = line.strip_suffix('\r').unwrap_or(line);
        let code = line.split(';').next().unwrap_or("");
        let toks = tokens(code, line_no);
        let Some(first) = toks.first().copied() else {
            return;
        };
        if self.current.is_none() {
            return self.top_level_line(code, &toks);
        }
        match first.text {
            "end" => self.end_line(&toks),
            "func" | "memory" => {
                let name = self.current.as_ref().map_or("", |f| f.name.text);
                self.error(
                    first.pos,
                    format!(
                        "`{}` inside function {}: the function has no `end`",
                        first.text,
                        quote(name)
                    ),
                );
                // Recover by closing the function and reading this line at top level.
                self.close_function(first.pos);
                self.top_level_line(code, &toks);
            }
            "local" => self.local_line(&toks),
            label if label.ends_with(':') && toks.len() == 1 => self.label_line(first),
            _ => self.instruction_line(&toks),
        }
    }

    fn close_function(&mut self, end: Pos) {
        if let Some(mut func) = self.current.take() {
            func.end = end;
            self.functions.push(func);
        }
    }

    fn end_line(&mut self, toks: &[Token<'a>]) {
        if let Some(extra) = toks.get(1) {
            self.error(extra.pos, "unexpected text after `end`");
        }
        self.close_function(toks[0].pos);
    }

    fn local_line(&mut self, toks: &[Token<'a>]) {
        let first = toks[0];
        let started = self.current.as_ref().is_some_and(|f| !f.instrs.is_empty());
        if started {
            self.error(
                first.pos,
                "`local` must come before the function's first instruction",
            );
        } else if toks.len() != 2 {
            let pos = toks.get(2).map_or(first.pos, |t| t.pos);
            self.error(pos, "`local` takes exactly one name");
        } else if !is_identifier(toks[1].text) {
            let message = format!("{} is not a valid local name", quote(toks[1].text));
            self.error(toks[1].pos, message);
        } else if let Some(func) = self.current.as_mut() {
            func.locals.push(toks[1]);
        }
    }

    fn label_line(&mut self, token: Token<'a>) {
        let name = &token.text[..token.text.len() - 1];
        if !is_identifier(name) {
            let message = format!("{} is not a valid label name", quote(name));
            return self.error(token.pos, message);
        }
        if let Some(func) = self.current.as_mut() {
            let at = func.instrs.len() as u32;
            let label = Token {
                text: name,
                pos: token.pos,
            };
            func.labels.push((label, at));
        }
    }

    fn top_level_line(&mut self, code: &'a str, toks: &[Token<'a>]) {
        let first = toks[0];
        match first.text {
            "memory" => self.memory_line(toks),
            "func" => self.func_line(code, first),
            other => {
                let message = if other.starts_with("func") {
                    "expected `func NAME(PARAMS)`".to_string()
                } else {
                    format!(
                        "{} outside a function (only `memory` and `func` may appear at top level)",
                        quote(other)
                    )
                };
                self.error(first.pos, message);
            }
        }
    }

    fn memory_line(&mut self, toks: &[Token<'a>]) {
        let first = toks[0];
        if self.memory_seen {
            return self.error(first.pos, "a second `memory` line");
        }
        self.memory_seen = true;
        match toks {
            [_, size] => match parse_literal(size.text) {
                Ok(cells) if (0..=MAX_MEMORY_CELLS as i64).contains(&cells) => {
                    self.memory_cells = cells as u64
                }
                Ok(cells) => self.error(
                    size.pos,
                    format!("memory size {cells} is out of range (0 to {MAX_MEMORY_CELLS} cells)"),
                ),
                Err(msg) => self.error(size.pos, msg),
            },
            [_] => self.error(first.pos, "`memory` needs a size in cells"),
            [_, _, extra, ..] => self.error(extra.pos, "unexpected text after the memory size"),
            [] => unreachable!("a line with no tokens is skipped"),
        }
    }

    fn func_line(&mut self, code: &'a str, first: Token<'a>) {
        let after = first.pos.col as usize - 1 + "func".len();
        let (name, params) = match parse_header(code, after, first.pos.line) {
            Ok(header) => header,
            Err(e) => {
                self.errors.push(e);
                // Keep reading the body so its own errors are found, under a name that
                // cannot clash with a real one.
                let nameless = Token {
                    text: "",
                    pos: first.pos,
                };
                (nameless, Vec::new())
            }
        };
        self.current = Some(RawFunction {
            name,
            params,
            locals: Vec::new(),
            instrs: Vec::new(),
            labels: Vec::new(),
            end: first.pos,
        });
    }

    fn instruction_line(&mut self, toks: &[Token<'a>]) {
        let mnemonic = toks[0];
        let instr = match self.check_operands(toks) {
            Ok(instr) => Some(instr),
            Err(e) => {
                self.errors.push(e);
                None
            }
        };
        if let Some(func) = self.current.as_mut() {
            func.instrs.push(RawInstr {
                mnemonic,
                operands: if instr.is_some() {
                    toks[1..].to_vec()
                } else {
                    Vec::new()
                },
                instr,
            });
        }
    }

    /// The instruction an instruction line names, if it has the operands it needs.
    fn check_operands(&self, toks: &[Token<'a>]) -> Result<Instr, Diagnostic> {
        let mnemonic = toks[0];
        let Some(instr) = Instr::lookup(mnemonic.text) else {
            let hint = if mnemonic.text.ends_with(':') {
                " (a label stands alone on its line)"
            } else {
                ""
            };
            return Err(Diagnostic::at(
                mnemonic.pos,
                format!("unknown instruction {}{hint}", quote(mnemonic.text)),
            ));
        };
        let wanted = instr.operands().count();
        let operands = &toks[1..];
        if operands.len() < wanted {
            return Err(Diagnostic::at(
                mnemonic.pos,
                format!(
                    "`{}` needs {wanted} operand{}",
                    mnemonic.text,
                    if wanted == 1 { "" } else { "s" }
                ),
            ));
        }
        if let Some(extra) = operands.get(wanted) {
            let message = if wanted == 0 {
                format!(
                    "`{}` takes no operand, found {}",
                    mnemonic.text,
                    quote(extra.text)
                )
            } else {
                format!(
                    "unexpected extra operand {} for `{}`",
                    quote(extra.text),
                    mnemonic.text
                )
            };
            return Err(Diagnostic::at(extra.pos, message));
        }
        Ok(instr)
    }

    /// After the last line: reports a function left open, then resolves and verifies.
    fn finish(mut self) -> Result<Module, Diagnostics> {
        if let Some(func) = self.current.take() {
            let message = format!(
                "function {} has no `end` (the file ends at line {})",
                quote(func.name.text),
                self.last_line
            );
            self.error(func.name.pos, message);
        }
        let module = resolve(&self.functions, self.memory_cells, &mut self.errors);
        if self.errors.is_empty() {
            Ok(module)
        } else {
            Err(self.errors)
        }
    }
}

/// `func NAME ( P , P )`, spaces allowed around the punctuation.
fn parse_header(
    line: &str,
    start: usize,
    line_no: u32,
) -> Result<(Token<'_>, Vec<Token<'_>>), Diagnostic> {
    let bytes = line.as_bytes();
    let at = |i: usize| Pos {
        line: line_no,
        col: i as u32 + 1,
    };
    let skip_blanks = |mut i: usize| {
        while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
            i += 1;
        }
        i
    };
    let word = |i: usize| {
        let mut j = i;
        while j < bytes.len() && !b" \t(),".contains(&bytes[j]) {
            j += 1;
        }
        j
    };
    let ident = |i: usize, what: &str| -> Result<(Token<'_>, usize), Diagnostic> {
        let j = word(i);
        let text = &line[i..j];
        if is_identifier(text) {
            Ok((Token { text, pos: at(i) }, j))
        } else if text.is_empty() {
            Err(Diagnostic::at(at(i), format!("expected a {what}")))
        } else {
            Err(Diagnostic::at(
                at(i),
                format!("{} is not a valid {what}", quote(text)),
            ))
        }
    };

    if start < bytes.len() && !matches!(bytes[start], b' ' | b'\t') {
        return Err(Diagnostic::at(at(0), "expected `func NAME(PARAMS)`"));
    }
    let i = skip_blanks(start);
    let (name, i) = ident(i, "function name")?;
    let mut i = skip_blanks(i);
    if bytes.get(i) != Some(&b'(') {
        return Err(Diagnostic::at(
            at(i),
            "expected `(` after the function name",
        ));
    }
    i = skip_blanks(i + 1);
    let mut params = Vec::new();
    if bytes.get(i) == Some(&b')') {
        i += 1;
    } else {
        loop {
            let (param, j) = ident(i, "parameter name")?;
            params.push(param);
            i = skip_blanks(j);
            match bytes.get(i) {
                Some(b',') => i = skip_blanks(i + 1),
                Some(b')') => {
                    i += 1;
                    break;
                }
                _ => {
                    return Err(Diagnostic::at(
                        at(i),
                        "expected `,` or `)` in the parameter list",
                    ))
                }
            }
        }
    }
    let i = skip_blanks(i);
    if i < bytes.len() {
        return Err(Diagnostic::at(
            at(i),
            "unexpected text after the parameter list",
        ));
    }
    Ok((name, params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytecode::BinOp;

    fn errors(src: &str) -> Vec<String> {
        match parse_module(src.as_bytes()) {
            Ok(_) => Vec::new(),
            Err(d) => d.first.iter().map(|d| d.to_string()).collect(),
        }
    }

    fn first_error(src: &str) -> String {
        errors(src).into_iter().next().expect("an error")
    }

    #[test]
    fn literals() {
        assert_eq!(parse_literal("0"), Ok(0));
        assert_eq!(parse_literal("-17"), Ok(-17));
        assert_eq!(parse_literal("0xff"), Ok(255));
        assert_eq!(parse_literal("0xFF"), Ok(255));
        assert_eq!(parse_literal("-0x10"), Ok(-16));
        assert_eq!(parse_literal("9223372036854775807"), Ok(i64::MAX));
        assert_eq!(parse_literal("-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(parse_literal("-0x8000000000000000"), Ok(i64::MIN));
        assert!(parse_literal("9223372036854775808").is_err());
        assert!(parse_literal("-9223372036854775809").is_err());
        assert!(parse_literal("0x8000000000000000").is_err());
        assert!(parse_literal("99999999999999999999999").is_err());
        for bad in [
            "", "-", "0x", "12abc", "+5", "0X10", "1_000", "--1", "0xg", " 1",
        ] {
            assert!(parse_literal(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn identifiers() {
        assert!(is_identifier("a"));
        assert!(is_identifier("_x.y9"));
        assert!(!is_identifier("9a"));
        assert!(!is_identifier(".a"));
        assert!(!is_identifier("a-b"));
        assert!(!is_identifier(""));
    }

    #[test]
    fn header_spacing_and_resolution() {
        let m = parse_module(
            b"memory 0x10\nfunc f ( a ,b , c )\n local x\n load c\n load 3\n add\n ret\nend\nfunc main()\n push 1\n push 2\n push 3\n call f\n ret\nend\n",
        )
        .unwrap();
        assert_eq!(m.memory_cells, 16);
        let f = &m.functions[0];
        assert_eq!(f.params, ["a", "b", "c"]);
        assert_eq!(f.locals, ["x"]);
        assert_eq!(
            f.code,
            [
                Instr::Load(2),
                Instr::Load(3),
                Instr::Bin(BinOp::Add),
                Instr::Ret
            ]
        );
        assert_eq!(m.functions[1].code[3], Instr::Call(0));
        assert_eq!(m.functions[1].max_stack, 3);
    }

    #[test]
    fn labels_comments_and_crlf() {
        let m = parse_module(
            b"; leading comment\r\nfunc main() ; trailing\r\n\tpush 0\r\ntop:\r\n  jz top2 ;c\r\ntop2:\r\n  push 0\r\n  ret\r\nend\r\n",
        )
        .unwrap();
        let f = &m.functions[0];
        assert_eq!(
            f.code,
            [Instr::Push(0), Instr::Jz(2), Instr::Push(0), Instr::Ret]
        );
        let labels: Vec<_> = f
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.target, l.pos.line))
            .collect();
        assert_eq!(labels, [("top", 1, 4), ("top2", 2, 6)]);
        assert_eq!(f.heights, [0, 1, 0, 1]);
    }

    #[test]
    fn positions_of_errors() {
        assert_eq!(
            first_error("func main()\n  push 1\n  frob\n  ret\nend\n"),
            "3:3: error: unknown instruction `frob`"
        );
        assert!(first_error("func main()\n  push 12abc\n  ret\nend\n")
            .starts_with("2:8: error: malformed"));
        assert!(first_error("func main()\n  push\n  ret\nend\n")
            .starts_with("2:3: error: `push` needs 1 operand"));
        assert!(first_error("func main()\n  push 1\n  add 2\n  ret\nend\n").starts_with("3:7:"));
        assert!(first_error("push 1\nfunc main()\n  push 0\n  ret\nend\n").starts_with("1:1:"));
        assert!(first_error("memory 4\nmemory 8\n").starts_with("2:1: error: a second"));
        assert!(first_error("memory 268435457\n").starts_with("1:8:"));
        assert!(first_error("memory -1\n").starts_with("1:8:"));
        assert!(
            first_error("func f(a,b,c,d,e,f,g,h,i)\n push 0\n ret\nend\n").starts_with("1:24:")
        );
        assert!(first_error("func f(a,a)\n push 0\n ret\nend\n").starts_with("1:10:"));
        assert!(first_error("func f(a)\n local a\n push 0\n ret\nend\n").starts_with("2:8:"));
        assert!(first_error("func f(a,)\n push 0\n ret\nend\n").starts_with("1:10:"));
        assert!(first_error("func 9f()\n push 0\n ret\nend\n").starts_with("1:6:"));
        assert!(first_error("func f() x\n push 0\n ret\nend\n").starts_with("1:10:"));
        assert!(first_error("func main()\n push 0\n ret\n").contains("no `end`"));
        assert!(first_error("func main()\n push 0\n local x\n ret\nend\n").starts_with("3:2:"));
        assert!(first_error("func main()\n load 0\n ret\nend\n")
            .starts_with("2:7: error: local index 0 is out of range"));
        assert!(first_error("func main()\n local a\n load b\n ret\nend\n")
            .starts_with("3:7: error: unknown local"));
        assert!(first_error("func main()\n call nope\n ret\nend\n")
            .starts_with("2:7: error: unknown function"));
        assert!(
            first_error("func main()\n jmp nope\nend\n").starts_with("2:6: error: unknown label")
        );
        assert!(first_error("func main()\nx:\nx:\n push 0\n ret\nend\n")
            .starts_with("3:1: error: label `x` is defined twice"));
        assert!(
            first_error("func f()\n push 1\n ret\nend\nfunc f()\n push 1\n ret\nend\n")
                .starts_with("5:6:")
        );
        assert!(first_error("func f(a)\n load a\n ret\nend\nfunc g()\n push 1\n ret\nend\nfunc main()\n patch f g\n push 0\n ret\nend\n").starts_with("10:2:"));
        assert!(first_error("end\n").starts_with("1:1:"));
        assert!(first_error("func main()\n push 0\n ret\nend extra\n").starts_with("4:5:"));
    }

    #[test]
    fn errors_around_broken_lines_are_still_found_and_never_invented() {
        // The underflow before an unknown function is reported too.
        let errs = errors("func main()\n  add\n  call nope\n  ret\nend\n");
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("2:3: error: `add` pops 2"), "{errs:?}");
        assert!(
            errs[1].starts_with("3:8: error: unknown function"),
            "{errs:?}"
        );
        // Nothing is concluded past a broken line: `push 1; push 2; ret` after it could be
        // anything the author meant, and a malformed `push` does not make `add` underflow.
        let errs = errors("func main()\n  frob\n  push 1\n  push 2\n  ret\nend\n");
        assert_eq!(errs, ["2:3: error: unknown instruction `frob`"]);
        let errs = errors("func main()\n  push 1\n  push 1x\n  add\n  ret\nend\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
    }

    #[test]
    fn byte_order_mark_is_ignored() {
        let m = parse_module("\u{feff}func main()\n push 0\n ret\nend\n".as_bytes()).unwrap();
        assert_eq!(m.functions[0].name, "main");
    }

    #[test]
    fn invalid_utf8_is_located() {
        let e = parse_module(b"func main()\n  push \xff\n").unwrap_err();
        assert_eq!(e.first[0].pos, Some(Pos { line: 2, col: 8 }));
    }

    #[test]
    fn several_errors_are_all_reported_in_order() {
        let errs = errors("func main()\n  bogus\n  push x\n  ret\nend\nfoo\n");
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0].starts_with("2:3:"));
        assert!(errs[1].starts_with("3:8:"));
        assert!(errs[2].starts_with("6:1:"));
    }

    #[test]
    fn local_by_index_and_names_with_dots() {
        let m = parse_module(
            b"func a.b(x)\n local y.z\n load 1\n load 0\n add\n store y.z\n load y.z\n ret\nend\n",
        )
        .unwrap();
        assert_eq!(m.functions[0].code[0], Instr::Load(1));
        assert_eq!(m.functions[0].code[3], Instr::Store(1));
    }
}
