//! What can go wrong building or starting a program, as one type the CLI prints.

use std::fmt;
use std::path::PathBuf;

/// Why a program could not be built or started; `jitvm` prints `error: cannot start: ` and
/// this (or, for `--func-tier`, `error: ` and this), then exits 2.
#[derive(Debug)]
pub enum EngineError {
    /// `--func-tier` named no function of the program.
    NoSuchFunction(String),
    /// The code runtime could not be made.
    Runtime(jitvm_runtime::Error),
    /// `--perf map` could not create its file.
    PerfMap {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `--perf jitdump` could not create its file.
    Jitdump(jitvm_debuginfo::Error),
    /// Not even the interpreter stubs could be published.
    Install(jitvm_runtime::Error),
    /// The tiering policy's compile thread did not start.
    CompileThread(std::io::Error),
    /// A native tier in a build without them.
    NoNativeTiers,
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::NoSuchFunction(name) => write!(f, "--func-tier: no function `{name}`"),
            EngineError::Runtime(e) => write!(f, "{e}"),
            EngineError::PerfMap { path, source } => {
                write!(f, "cannot write {}: {source}", path.display())
            }
            EngineError::Jitdump(e) => write!(f, "--perf jitdump: {e}"),
            EngineError::Install(e) => write!(f, "cannot install native code: {e}"),
            EngineError::CompileThread(e) => write!(f, "cannot start the compile thread: {e}"),
            EngineError::NoNativeTiers => f.write_str("native tiers need an x86-64 machine"),
        }
    }
}

impl std::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EngineError::Runtime(e) | EngineError::Install(e) => Some(e),
            EngineError::PerfMap { source, .. } => Some(source),
            EngineError::CompileThread(e) => Some(e),
            EngineError::Jitdump(e) => Some(e),
            EngineError::NoSuchFunction(_) | EngineError::NoNativeTiers => None,
        }
    }
}
