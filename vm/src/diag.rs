//! Static errors, rendered as `PATH:LINE:COL: error: MESSAGE` (spec §6).

use crate::bytecode::Pos;
use std::fmt;

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

/// The errors of one file, in source order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// How many errors are worth printing: past this, the rest are usually echoes.
    pub const SHOWN: usize = 20;

    pub fn sorted(mut self) -> Self {
        self.0.sort_by_key(|d| d.pos);
        self
    }

    /// Every error as `PATH:LINE:COL: error: ...`, one per line, capped at [`Self::SHOWN`].
    pub fn render(&self, path: &str) -> String {
        let mut out = String::new();
        for d in self.0.iter().take(Self::SHOWN) {
            out.push_str(&d.render(path));
            out.push('\n');
        }
        if self.0.len() > Self::SHOWN {
            out.push_str(&format!(
                "{path}: error: {} more errors not shown\n",
                self.0.len() - Self::SHOWN
            ));
        }
        out
    }
}

impl std::error::Error for Diagnostics {}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}
