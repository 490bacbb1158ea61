//! Why a program stops at run time (spec §6).

use std::fmt;

/// The reasons a program traps, worded exactly as the spec prints them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trap {
    DivisionByZero,
    MemoryOutOfBounds,
    StackOverflow,
    AssertionFailed,
    InvalidThreadHandle,
    TooManyThreads,
}

impl fmt::Display for Trap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trap::DivisionByZero => "division by zero",
            Trap::MemoryOutOfBounds => "memory access out of bounds",
            Trap::StackOverflow => "stack overflow",
            Trap::AssertionFailed => "assertion failed",
            Trap::InvalidThreadHandle => "invalid thread handle",
            Trap::TooManyThreads => "too many threads",
        })
    }
}
