//! perf's jitdump file (linux tools/perf/Documentation/jitdump-specification.txt).
//!
//! `perf record -k mono` samples the program; the file `jit-<pid>.dump`
//! lists each function's name, address, code and lines with the time it
//! became live; `perf inject --jit` finds the file through the program's
//! executable mmap of it (which `perf record` logs) and turns every record
//! into an ELF object that `perf report` resolves samples against. Because
//! each record carries a timestamp, code that later reuses an address is
//! told apart from what was there before.

use crate::{Error, FunctionInfo};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// "JiTD" read as a little-endian u32 (the spec's JITHEADER_MAGIC).
const MAGIC: u32 = 0x4A69_5444;
const VERSION: u32 = 1;
const HEADER_SIZE: u32 = 40;
const EM_X86_64: u32 = 62;
const JIT_CODE_LOAD: u32 = 0;
const JIT_CODE_DEBUG_INFO: u32 = 2;
/// id, total_size, timestamp.
const RECORD_HEADER_SIZE: usize = 16;

/// An open jitdump file.
pub struct JitDump {
    path: PathBuf,
    out: BufWriter<File>,
    /// The marker mapping of the file's first page.
    marker: *mut libc::c_void,
    marker_len: usize,
    /// JIT_CODE_LOAD's code_index: unique and increasing.
    code_index: u64,
}

// SAFETY: `marker` is only an address to munmap; nothing reads through it.
unsafe impl Send for JitDump {}

/// Now on CLOCK_MONOTONIC in nanoseconds: the clock `perf record -k mono`
/// stamps samples with, so records and samples can be ordered.
pub fn timestamp() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl JitDump {
    /// Creates `dir/jit-<pid>.dump`, writes the file header and maps its
    /// first page executable, the mark `perf inject --jit` looks for.
    pub fn create(dir: &Path) -> Result<JitDump, Error> {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u32;
        let path = dir.join(format!("jit-{pid}.dump"));
        // Readable too: the marker mapping needs it.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        let mut header = Vec::with_capacity(HEADER_SIZE as usize);
        for word in [MAGIC, VERSION, HEADER_SIZE, EM_X86_64, 0, pid] {
            header.extend_from_slice(&word.to_le_bytes());
        }
        header.extend_from_slice(&timestamp().to_le_bytes());
        header.extend_from_slice(&0u64.to_le_bytes()); // flags: no arch timestamp
        (&file).write_all(&header)?;

        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        // SAFETY: a new private read+exec mapping of an open file; it
        // aliases no Rust memory and is only ever unmapped.
        let marker = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if marker == libc::MAP_FAILED {
            return Err(Error::Io(std::io::Error::last_os_error()));
        }
        Ok(JitDump {
            path,
            out: BufWriter::new(file),
            marker,
            marker_len: page,
            code_index: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that `code` (the bytes at `f.addr`) is live from now on: its
    /// lines (JIT_CODE_DEBUG_INFO) if it has any, then the code itself
    /// (JIT_CODE_LOAD), which perf inject expects in that order.
    pub fn code_load(&mut self, f: &FunctionInfo, code: &[u8]) -> Result<(), Error> {
        f.validate()?;
        if code.len() as u64 != f.len {
            return Err(Error::CodeLength {
                function: f.name.clone(),
                len: f.len,
                code: code.len(),
            });
        }
        let now = timestamp();
        if let (Some(file), false) = (&f.file, f.lines.is_empty()) {
            // perf inject ends its line sequence at the last entry's address
            // (tools/perf/util/genelf_debug.c), so an extra entry at the end
            // of the code keeps the last row from covering nothing.
            let last = f.lines[f.lines.len() - 1].line;
            let entries = f
                .lines
                .iter()
                .map(|row| (f.addr + u64::from(row.offset), row.line))
                .chain([(f.end(), last)]);
            let mut body = Vec::new();
            body.extend_from_slice(&f.addr.to_le_bytes());
            body.extend_from_slice(&(f.lines.len() as u64 + 1).to_le_bytes());
            for (addr, line) in entries {
                body.extend_from_slice(&addr.to_le_bytes());
                body.extend_from_slice(&line.to_le_bytes());
                body.extend_from_slice(&0u32.to_le_bytes()); // discriminator
                body.extend_from_slice(file.as_bytes());
                body.push(0);
            }
            self.record(JIT_CODE_DEBUG_INFO, now, &body)?;
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u32;
        let mut body = Vec::with_capacity(48 + f.name.len() + code.len());
        body.extend_from_slice(&pid.to_le_bytes());
        body.extend_from_slice(&tid.to_le_bytes());
        body.extend_from_slice(&f.addr.to_le_bytes()); // vma
        body.extend_from_slice(&f.addr.to_le_bytes()); // code_addr
        body.extend_from_slice(&f.len.to_le_bytes());
        body.extend_from_slice(&self.code_index.to_le_bytes());
        body.extend_from_slice(f.name.as_bytes());
        body.push(0);
        body.extend_from_slice(code);
        self.code_index += 1;
        self.record(JIT_CODE_LOAD, now, &body)?;
        // A process that exits without dropping this (std::process::exit)
        // still leaves every record whole.
        self.out.flush()?;
        Ok(())
    }

    fn record(&mut self, id: u32, timestamp: u64, body: &[u8]) -> Result<(), Error> {
        let total = u32::try_from(RECORD_HEADER_SIZE + body.len()).map_err(|_| {
            Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "jitdump record over 4 GiB",
            ))
        })?;
        self.out.write_all(&id.to_le_bytes())?;
        self.out.write_all(&total.to_le_bytes())?;
        self.out.write_all(&timestamp.to_le_bytes())?;
        self.out.write_all(body)?;
        Ok(())
    }

    /// Flushes the file and removes the marker mapping.
    pub fn close(mut self) -> Result<(), Error> {
        let flushed = self.out.flush();
        self.unmap();
        flushed.map_err(Error::Io)
    }

    fn unmap(&mut self) {
        if !self.marker.is_null() {
            // SAFETY: `marker` is the mapping made in create, not unmapped yet.
            unsafe { libc::munmap(self.marker, self.marker_len) };
            self.marker = std::ptr::null_mut();
        }
    }
}

impl Drop for JitDump {
    fn drop(&mut self) {
        // Errors cannot be reported here; close() reports them.
        let _ = self.out.flush();
        self.unmap();
    }
}
