//! Program output: one buffer for all threads, so a `print` line is never torn and output
//! follows the order in which threads wrote it. Written to stdout when it fills and at exit;
//! a write that fails is reported to the caller, which ends the run (see
//! [`crate::program::Program::exit_for_output`] and [`report_write_error`]).

use crate::threads::blocking;
use std::io::{self, Write};
use std::sync::{Mutex, MutexGuard, TryLockError};

/// Exit status when stdout cannot be written (`error: cannot write output: ...`).
pub const EXIT_OUTPUT_ERROR: i32 = 1;
/// Exit status when stdout is a pipe whose reader has gone (`jitvm run p.bc | head -1`): the
/// status a shell reports for a tool killed by `SIGPIPE` (128 + 13), with nothing printed.
pub const EXIT_BROKEN_PIPE: i32 = 141;

/// Says on stderr that stdout could not be written, unless its reader has simply gone, and
/// returns the status to exit with. Rust ignores `SIGPIPE`, so a closed pipe shows up here as
/// `EPIPE` rather than ending the process.
pub fn report_write_error(error: &io::Error) -> i32 {
    if error.kind() == io::ErrorKind::BrokenPipe {
        return EXIT_BROKEN_PIPE;
    }
    let _ = writeln!(io::stderr(), "error: cannot write output: {error}");
    EXIT_OUTPUT_ERROR
}

pub struct Output {
    buffer: Mutex<Vec<u8>>,
}

impl Default for Output {
    fn default() -> Self {
        Output {
            buffer: Mutex::new(Vec::with_capacity(Self::FLUSH_AT)),
        }
    }
}

impl Output {
    /// Buffered bytes that make a write to stdout. Also bounds how much a program writes into
    /// a closed pipe before it learns that it is closed.
    const FLUSH_AT: usize = 64 * 1024;

    /// The buffer, locked: while it is held, no thread can print.
    pub fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A poisoned lock only means another thread panicked mid-append; the bytes are fine.
        match self.buffer.try_lock() {
            Ok(buf) => buf,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            // Waiting for another printer: offline meanwhile (see `threads::blocking`).
            Err(TryLockError::WouldBlock) => {
                blocking(|| self.buffer.lock().unwrap_or_else(|e| e.into_inner()))
            }
        }
    }

    pub fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let mut buf = self.lock();
        buf.extend_from_slice(bytes);
        if buf.len() >= Self::FLUSH_AT {
            // A write to a slow pipe may wait: blocked meanwhile (see `threads::blocking`).
            blocking(|| write_stdout(&mut buf))?;
        }
        Ok(())
    }

    /// `print`: the value and a newline, appended as one piece.
    pub fn print(&self, value: i64) -> io::Result<()> {
        let mut digits = itoa::Buffer::new();
        let text = digits.format(value);
        let mut line = [0u8; 24];
        line[..text.len()].copy_from_slice(text.as_bytes());
        line[text.len()] = b'\n';
        self.write(&line[..=text.len()])
    }

    /// Writes out everything buffered and keeps the lock, so nothing else can print: for
    /// process exit.
    pub fn flush_and_hold(&self) -> (MutexGuard<'_, Vec<u8>>, io::Result<()>) {
        let mut buf = self.lock();
        let written = write_stdout(&mut buf);
        (buf, written)
    }
}

/// Writes `buf` to stdout and empties it, even when the write fails: output that cannot be
/// written is not kept to be tried again.
fn write_stdout(buf: &mut Vec<u8>) -> io::Result<()> {
    let mut out = io::stdout().lock();
    let written = out.write_all(buf).and_then(|()| out.flush());
    buf.clear();
    written
}
