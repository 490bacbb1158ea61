//! Where a program comes from and how it is read: a file or standard input, at most
//! [`MAX_INPUT_BYTES`], parsed and verified, with its entry point; [`LoadError`] is every
//! way that fails, rendered as the lines `jitvm` prints before exit 2.

use jitvm_vm::{parse_module, Diagnostic, Diagnostics, FuncId, Module};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest program `jitvm` reads (16 MiB). Larger input is refused after reading no more
/// than this, so `jitvm check /dev/zero` ends at once with bounded memory.
pub const MAX_INPUT_BYTES: usize = 16 << 20;

/// Where a program comes from: a file, or standard input for `-`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    File(PathBuf),
    Stdin,
}

impl Input {
    /// `-` is standard input, anything else a path (`./-` for a file named `-`).
    pub fn from_arg(arg: &Path) -> Input {
        if arg == Path::new("-") {
            Input::Stdin
        } else {
            Input::File(arg.to_path_buf())
        }
    }

    /// The name messages give it: the path, or `<stdin>`.
    pub fn name(&self) -> String {
        match self {
            Input::File(path) => path.display().to_string(),
            Input::Stdin => "<stdin>".to_string(),
        }
    }

    /// The whole input, if it is no larger than [`MAX_INPUT_BYTES`].
    pub fn read(&self) -> Result<Vec<u8>, LoadError> {
        match self {
            Input::File(path) => {
                let file = std::fs::File::open(path).map_err(LoadError::Read)?;
                // A regular file says how large it is: refuse it unread, or read it into a
                // buffer of the right size. Anything else (a pipe, a device) just gets read.
                let size = file
                    .metadata()
                    .ok()
                    .filter(|m| m.is_file())
                    .map(|m| m.len());
                if size.is_some_and(|size| size > MAX_INPUT_BYTES as u64) {
                    return Err(LoadError::TooLarge);
                }
                read_limited(file, size.unwrap_or(0) as usize)
            }
            Input::Stdin => read_limited(std::io::stdin().lock(), 0),
        }
    }
}

/// Reads `source` to its end, or refuses it as soon as it has given one byte more than
/// [`MAX_INPUT_BYTES`]: the buffer never grows past the limit.
fn read_limited(source: impl Read, expected: usize) -> Result<Vec<u8>, LoadError> {
    let mut bytes = Vec::with_capacity(expected + 1);
    let mut source = source.take(MAX_INPUT_BYTES as u64 + 1);
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = match source.read(&mut chunk) {
            Ok(0) => return Ok(bytes),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(LoadError::Read(e)),
        };
        if bytes.len() + n > MAX_INPUT_BYTES {
            return Err(LoadError::TooLarge);
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
}

/// Why a program could not be run: each renders as the line(s) `jitvm` prints before exit 2.
#[derive(Debug)]
pub enum LoadError {
    Read(std::io::Error),
    TooLarge,
    Invalid(Diagnostics),
    Main(Diagnostic),
}

impl LoadError {
    pub fn render(&self, path: &str) -> String {
        match self {
            LoadError::Read(e) => {
                Diagnostic::file(format!("cannot read the file: {e}")).render(path) + "\n"
            }
            LoadError::TooLarge => {
                Diagnostic::file(format!(
                    "the program is larger than {} MiB, the most jitvm reads",
                    MAX_INPUT_BYTES >> 20
                ))
                .render(path)
                    + "\n"
            }
            LoadError::Invalid(d) => d.render(path),
            LoadError::Main(d) => format!("{}\n", d.render(path)),
        }
    }
}

/// Reads, parses and verifies a module.
pub fn load(input: &Input) -> Result<Module, LoadError> {
    let bytes = input.read()?;
    parse_module(&bytes).map_err(LoadError::Invalid)
}

/// The function `run` starts: `main`, taking no parameters (spec §4, §6).
pub fn entry_point(module: &Module) -> Result<FuncId, LoadError> {
    let main = module
        .function_index("main")
        .ok_or_else(|| LoadError::Main(Diagnostic::file("no function `main` to run")))?;
    let f = &module.functions[main as usize];
    if !f.params.is_empty() {
        return Err(LoadError::Main(Diagnostic::at(
            f.pos,
            format!(
                "`main` must take no parameters, but takes {}",
                f.params.len()
            ),
        )));
    }
    Ok(main)
}
