//! The words of a `.bc` line: tokens with their positions, identifiers and integer
//! literals (spec §2). The parser reads lines with these; the resolver reads literals.

use crate::bytecode::Pos;
use crate::diag::quote;

/// A token and where it starts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Token<'a> {
    pub text: &'a str,
    pub pos: Pos,
}
/// No kind of line needs more than its first four tokens to be read or reported (an
/// instruction, two operands, and an extra one to complain about), so a line of millions of
/// tokens costs no more than a line of four.
pub(crate) const TOKENS_READ: usize = 4;

/// The first [`TOKENS_READ`] tokens of a line.
pub(crate) fn tokens(line: &str, line_no: u32) -> Vec<Token<'_>> {
    let mut out = Vec::with_capacity(TOKENS_READ);
    let mut start = None;
    for (i, c) in line
        .char_indices()
        .chain(std::iter::once((line.len(), ' ')))
    {
        let sep = c == ' ' || c == '\t';
        match (start, sep) {
            (None, false) => start = Some(i),
            (Some(s), true) => {
                out.push(Token {
                    text: &line[s..i],
                    pos: Pos {
                        line: line_no,
                        col: s as u32 + 1,
                    },
                });
                if out.len() == TOKENS_READ {
                    break;
                }
                start = None;
            }
            _ => {}
        }
    }
    out
}

pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// An integer literal (§2): optional `-`, then decimal digits or `0x` and hex digits.
pub fn parse_literal(s: &str) -> Result<i64, String> {
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (digits, radix) = match body.strip_prefix("0x") {
        Some(hex) => (hex, 16),
        None => (body, 10),
    };
    let well_formed = !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix));
    if !well_formed {
        return Err(format!("malformed integer literal {}", quote(s)));
    }
    let too_big = || format!("integer literal {} does not fit in i64", quote(s));
    // Parse the magnitude as u64 so that -9223372036854775808 is representable.
    let magnitude = u64::from_str_radix(digits, radix).map_err(|_| too_big())?;
    let value = if negative {
        if magnitude > i64::MIN.unsigned_abs() {
            None
        } else {
            Some((magnitude as i64).wrapping_neg())
        }
    } else {
        i64::try_from(magnitude).ok()
    };
    value.ok_or_else(too_big)
}
