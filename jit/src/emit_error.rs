//! Why the dynasm emitters (the baseline compiler and the interpreter stubs) could not
//! produce a piece of machine code. Both report it, so it sits under both.

use std::fmt;

/// Why machine code could not be emitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmitError {
    /// Native tiers exist only on x86-64.
    UnsupportedTarget,
    /// The environment does not fit the module (a slot address missing, say).
    BadEnvironment(String),
    /// The assembler refused the code (a bug).
    Assembler(String),
    /// The code came out larger than [`crate::baseline::max_code_size`] promised (a bug).
    TooLarge { len: usize, bound: usize },
    /// The native frame would pass [`crate::abi::MAX_NATIVE_FRAME`]: the function stays in
    /// the interpreter, whose frames are on the heap.
    FrameTooLarge { bytes: usize, bound: usize },
}

impl fmt::Display for EmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmitError::UnsupportedTarget => f.write_str("native code is only supported on x86-64"),
            EmitError::BadEnvironment(why) => write!(f, "bad compile environment: {why}"),
            EmitError::Assembler(why) => write!(f, "assembler error: {why}"),
            EmitError::TooLarge { len, bound } => {
                write!(f, "code of {len} bytes exceeds its bound of {bound}")
            }
            EmitError::FrameTooLarge { bytes, bound } => {
                write!(
                    f,
                    "a native frame of {bytes} bytes exceeds the limit of {bound}"
                )
            }
        }
    }
}

impl std::error::Error for EmitError {}
