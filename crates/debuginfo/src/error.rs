//! What can go wrong describing, writing or recording JIT code.

use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// A [`FunctionInfo`](crate::FunctionInfo) breaks one of its rules.
    Invalid {
        function: String,
        problem: Invalid,
    },
    /// Two functions of one image share bytes.
    Overlap {
        first: String,
        second: String,
    },
    /// The code handed to [`code_load`](crate::jitdump::JitDump::code_load)
    /// is not `len` bytes long.
    CodeLength {
        function: String,
        len: u64,
        code: usize,
    },
    Io(std::io::Error),
    Object(object::write::Error),
    Dwarf(gimli::write::Error),
}

/// Which rule of [`FunctionInfo`](crate::FunctionInfo) a description breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalid {
    ZeroLength,
    /// `len` over 4 GiB (DWARF's FDE length and the row offsets are 32-bit),
    /// or `addr + len` past the end of the address space.
    TooLong,
    NulInName,
    /// `file` is `Some("")` or holds a NUL.
    BadFile,
    /// `table` ("line" or "frame") row `index` has a smaller offset than the one before.
    Unsorted {
        table: &'static str,
        index: usize,
    },
    /// `table` row `index` starts at or past `len`.
    PastEnd {
        table: &'static str,
        index: usize,
    },
    /// A frame row saves `reg` at CFA + `off`, and `off` is not a negative
    /// multiple of 8 or `reg` is not a general-purpose register.
    BadSave {
        index: usize,
        reg: u16,
        off: i32,
    },
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::ZeroLength => write!(f, "zero length"),
            Invalid::TooLong => write!(f, "too long"),
            Invalid::NulInName => write!(f, "NUL in name"),
            Invalid::BadFile => write!(f, "file is empty or holds a NUL"),
            Invalid::Unsorted { table, index } => {
                write!(f, "{table} row {index} is out of order")
            }
            Invalid::PastEnd { table, index } => {
                write!(
                    f,
                    "{table} row {index} starts at or past the end of the code"
                )
            }
            Invalid::BadSave { index, reg, off } => {
                write!(f, "frame row {index} saves register {reg} at CFA{off:+}")
            }
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid { function, problem } => write!(f, "function {function:?}: {problem}"),
            Error::Overlap { first, second } => {
                write!(f, "functions {first:?} and {second:?} overlap")
            }
            Error::CodeLength {
                function,
                len,
                code,
            } => write!(
                f,
                "function {function:?} has len {len} but {code} bytes of code"
            ),
            Error::Io(e) => write!(f, "I/O: {e}"),
            Error::Object(e) => write!(f, "writing ELF: {e}"),
            Error::Dwarf(e) => write!(f, "writing DWARF: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Object(e) => Some(e),
            Error::Dwarf(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<object::write::Error> for Error {
    fn from(e: object::write::Error) -> Self {
        Error::Object(e)
    }
}

impl From<gimli::write::Error> for Error {
    fn from(e: gimli::write::Error) -> Self {
        Error::Dwarf(e)
    }
}
