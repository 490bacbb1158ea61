//! `--perf-map`: `/tmp/perf-PID.map`, the file `perf report` reads to name frames in JIT code
//! (the format of the Linux kernel's `tools/perf/Documentation/jit-interface.txt`): one line
//! per code blob, `START SIZE NAME` with START and SIZE in hexadecimal, written as each blob
//! is published. A reclaimed blob's line stays: perf has no way to remove one, and a later
//! blob at the same address gets a later line.

use jitvm_jit::install::{blob_owner, BlobKind};
use jitvm_runtime::CodeEvent;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Mutex;

/// Where perf looks for the map of the current process.
pub fn path() -> PathBuf {
    PathBuf::from(format!("/tmp/perf-{}.map", std::process::id()))
}

/// The name perf shows for a blob of function `name`.
fn symbol(name: &str, kind: BlobKind) -> String {
    match kind {
        BlobKind::Code(tier) => format!("jitvm:{name} [{}]", tier.name()),
        BlobKind::CallStub => format!("jitvm:{name} [call stub]"),
    }
}

/// Creates the map and returns the code hook that appends a line to it for every blob the
/// runtime publishes. `names` are the program's function names, by `FuncId`.
pub fn hook(names: Vec<String>) -> std::io::Result<impl Fn(CodeEvent) + Send + Sync> {
    let file = Mutex::new(BufWriter::new(File::create(path())?));
    Ok(move |event| {
        if let CodeEvent::Published { addr, len, owner } = event {
            let (f, kind) = blob_owner(owner);
            let name = names.get(f as usize).map_or("?", String::as_str);
            let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
            // Flushed line by line: the process may end with `exit` at any moment, and a
            // profiler reads the file after the run.
            let _ = writeln!(file, "{addr:x} {len:x} {}", symbol(name, kind));
            let _ = file.flush();
        }
    })
}
