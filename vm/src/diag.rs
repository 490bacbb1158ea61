//! Static errors, rendered as `PATH:LINE:COL: error: MESSAGE` (spec §6), and how they quote
//! the text they complain about.

use crate::bytecode::Pos;
use std::fmt::{self, Write};

/// The most characters of a token an error message quotes; longer ones end in `...`.
pub const QUOTE_CHARS: usize = 32;

/// `token` in backticks, as error messages quote what they complain about: at most
/// [`QUOTE_CHARS`] characters, then `...`, and escaped so that nothing is invisible or hidden:
/// ASCII controls as `\0`, `\t`, `\r`, `\n` or `\x0b`, and Unicode that is blank or
/// unprintable (a no-break space, a zero-width space, a byte-order mark) as `\u{a0}`. A
/// backslash is doubled, so an escape always means an escaped character.
pub fn quote(token: &str) -> String {
    let mut out = String::with_capacity(QUOTE_CHARS + 8);
    out.push('`');
    for (n, c) in token.chars().enumerate() {
        if n == QUOTE_CHARS {
            out.push_str("...");
            break;
        }
        match c {
            '\0' => out.push_str("\\0"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            // Printable ASCII, and Unicode that is visible (`escape_debug` leaves it alone).
            c if c.is_ascii() || !(c.is_whitespace() || c.escape_debug().nth(1).is_some()) => {
                out.push(c)
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    out.push('`');
    out
}

/// One static error. `pos` is `None` for errors about the file as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub pos: Option<Pos>,
    pub message: String,
}

impl Diagnostic {
    pub fn at(pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            pos: Some(pos),
            message: message.into(),
        }
    }

    pub fn file(message: impl Into<String>) -> Self {
        Diagnostic {
            pos: None,
            message: message.into(),
        }
    }

    /// The line a compiler prints: `PATH:LINE:COL: error: MESSAGE`. The spec asks for this
    /// form for every static error, so one about the whole file points at its start.
    pub fn render(&self, path: &str) -> String {
        let pos = self.pos.unwrap_or(Pos { line: 1, col: 1 });
        format!("{path}:{}:{}: error: {}", pos.line, pos.col, self.message)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some(pos) => write!(f, "{pos}: error: {}", self.message),
            None => write!(f, "error: {}", self.message),
        }
    }
}

/// The errors of one file: the first [`Self::SHOWN`] in source order, and how many in all.
/// Only those few are kept, so a file with millions of bad lines costs no more memory than
/// one with twenty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics {
    /// The earliest errors by position (errors at one position in the order found).
    pub first: Vec<Diagnostic>,
    /// Every error found, kept or not.
    pub total: usize,
}

impl Diagnostics {
    /// How many errors are worth printing: past this, the rest are usually echoes.
    pub const SHOWN: usize = 20;

    pub fn push(&mut self, d: Diagnostic) {
        self.total += 1;
        let at = self.first.partition_point(|e| e.pos <= d.pos);
        if at < Self::SHOWN {
            self.first.insert(at, d);
            self.first.truncate(Self::SHOWN);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The first errors as `PATH:LINE:COL: error: ...`, one per line, then how many more.
    pub fn render(&self, path: &str) -> String {
        let mut out = String::new();
        for d in &self.first {
            out.push_str(&d.render(path));
            out.push('\n');
        }
        if self.total > self.first.len() {
            out.push_str(&format!(
                "{path}: error: {} more errors not shown\n",
                self.total - self.first.len()
            ));
        }
        out
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        let mut all = Diagnostics::default();
        all.push(d);
        all
    }
}

impl std::error::Error for Diagnostics {}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.first {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_errors_are_kept_and_all_are_counted() {
        let mut all = Diagnostics::default();
        let at = |line| Diagnostic::at(Pos { line, col: 1 }, format!("line {line}"));
        for line in (1..=100_000).rev() {
            all.push(at(line));
        }
        all.push(at(3));
        assert_eq!(all.total, 100_001);
        let lines: Vec<u32> = all.first.iter().map(|d| d.pos.unwrap().line).collect();
        assert_eq!(lines[..4], [1, 2, 3, 3]);
        assert_eq!(lines.len(), Diagnostics::SHOWN);
        assert!(all
            .render("p.bc")
            .ends_with("p.bc: error: 99981 more errors not shown\n"));
    }

    #[test]
    fn quoting_shows_invisible_characters() {
        assert_eq!(quote("frob"), "`frob`");
        assert_eq!(quote("a\u{a0}b"), "`a\\u{a0}b`");
        assert_eq!(quote("\u{b}"), "`\\x0b`");
        assert_eq!(quote("\0\0"), "`\\0\\0`");
        assert_eq!(quote("x\ry"), "`x\\ry`");
        assert_eq!(quote("\u{200b}\u{feff}\u{7f}"), "`\\u{200b}\\u{feff}\\x7f`");
        assert_eq!(quote("a\\b"), "`a\\\\b`");
        // Visible Unicode stays as it is.
        assert_eq!(quote("größe→λ"), "`größe→λ`");
    }

    #[test]
    fn quoting_shortens_long_tokens() {
        let long = "9".repeat(10_000_000);
        assert_eq!(quote(&long), format!("`{}...`", "9".repeat(QUOTE_CHARS)));
        let exactly = "x".repeat(QUOTE_CHARS);
        assert_eq!(quote(&exactly), format!("`{exactly}`"));
        assert_eq!(quote(&"\0".repeat(100_000)).len(), 2 * QUOTE_CHARS + 5);
    }
}
