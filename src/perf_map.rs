//! `--perf map`: `/tmp/perf-PID.map`, the file `perf report` reads to name frames in JIT code
//! (the format of the Linux kernel's `tools/perf/Documentation/jit-interface.txt`): one line
//! per code blob, `START SIZE NAME` with START and SIZE in hexadecimal, written as each blob
//! is published. A reclaimed blob's line stays: perf has no way to remove one, and a later
//! blob at the same address gets a later line.
//!
//! The runtime reports a publication from inside a commit, while the VM holds its dispatch
//! lock, so the hook only queues the line: a writer thread writes and flushes it, and the
//! process's exit writes what is still queued ([`PerfMap::flush`]). A slow disk never delays
//! a `patch`.

use jitvm_jit::install::{blob_owner, BlobKind};
use jitvm_runtime::CodeEvent;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Where perf looks for the map of the current process.
pub fn path() -> PathBuf {
    PathBuf::from(format!("/tmp/perf-{}.map", std::process::id()))
}

/// The name perf (and gdb) show for a blob of function `name`.
pub fn symbol(name: &str, kind: BlobKind) -> String {
    match kind {
        BlobKind::Code(tier) => format!("jitvm:{name} [{}]", tier.name()),
        BlobKind::CallStub => format!("jitvm:{name} [call stub]"),
    }
}

/// The map file and the lines not yet in it.
struct Shared {
    names: Vec<String>,
    /// Lock order: `file`, then `queue`, so lines reach the file in the order queued.
    file: Mutex<BufWriter<File>>,
    queue: Mutex<Queue>,
    queued: Condvar,
}

#[derive(Default)]
struct Queue {
    lines: Vec<String>,
    stop: bool,
}

impl Shared {
    /// Moves every queued line into the file and flushes it. The caller holds `file`.
    fn write_queued(&self, file: &mut BufWriter<File>) {
        let lines = std::mem::take(&mut self.queue.lock().unwrap_or_else(|e| e.into_inner()).lines);
        for line in lines {
            let _ = file.write_all(line.as_bytes());
        }
        let _ = file.flush();
    }
}

/// A perf map being written: see the module docs.
pub struct PerfMap {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

impl PerfMap {
    /// Creates the map at `path` for a program whose functions are `names` (by `FuncId`),
    /// with its writer thread.
    pub fn create(path: &Path, names: Vec<String>) -> std::io::Result<Arc<PerfMap>> {
        let shared = Arc::new(Shared {
            names,
            file: Mutex::new(BufWriter::new(File::create(path)?)),
            queue: Mutex::new(Queue::default()),
            queued: Condvar::new(),
        });
        let served = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("jitvm-perf-map".into())
            .spawn(move || write_loop(&served))?;
        Ok(Arc::new(PerfMap {
            shared,
            writer: Some(writer),
        }))
    }

    /// The code hook's part: queues a line for each published blob. Never waits for the file.
    pub fn on_event(&self, event: CodeEvent) {
        if let CodeEvent::Published { addr, len, owner } = event {
            let (f, kind) = blob_owner(owner);
            let name = self
                .shared
                .names
                .get(f as usize)
                .map_or("?", String::as_str);
            let line = format!("{addr:x} {len:x} {}\n", symbol(name, kind));
            let mut queue = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.lines.push(line);
            self.shared.queued.notify_one();
        }
    }

    /// Writes every queued line now (at exit: the process may end at any moment after, and
    /// a profiler reads the file after the run).
    pub fn flush(&self) {
        let mut file = self.shared.file.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.write_queued(&mut file);
    }
}

impl Drop for PerfMap {
    fn drop(&mut self) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stop = true;
        self.shared.queued.notify_one();
        if let Some(writer) = self.writer.take() {
            jitvm_vm::threads::join_or_forget(writer);
        }
    }
}

/// The writer thread: waits for lines, writes them, until told to stop.
fn write_loop(shared: &Shared) {
    loop {
        {
            let mut queue = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            while queue.lines.is_empty() && !queue.stop {
                queue = shared.queued.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
            if queue.stop && queue.lines.is_empty() {
                return;
            }
        }
        let mut file = shared.file.lock().unwrap_or_else(|e| e.into_inner());
        shared.write_queued(&mut file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    /// The map is a pipe nobody reads: once its buffer fills, every write blocks. Publishing
    /// must go on regardless, as it must while a disk is slow.
    #[test]
    fn publishing_never_waits_for_the_map_file() {
        let dir = std::env::temp_dir().join(format!("jitvm-perf-map-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("map");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        // Opened for reading first (non-blocking), so creating the map's writer end does not
        // wait; then never read until the end.
        // SAFETY: as above.
        let reader = unsafe { libc::open(c_path.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) };
        assert!(reader >= 0);
        let map = PerfMap::create(&fifo, vec!["f".repeat(200)]).unwrap();
        let (done, published) = channel();
        let publisher = Arc::clone(&map);
        let events = std::thread::spawn(move || {
            // About 1 MB of lines: far more than a pipe holds.
            for k in 0..4000usize {
                publisher.on_event(CodeEvent::Published {
                    addr: 0x1000 + 16 * k,
                    len: 16,
                    owner: 0,
                });
            }
            done.send(()).unwrap();
        });
        let finished = published.recv_timeout(Duration::from_secs(60));
        // Drain the pipe so the writer can finish, then stop it.
        let mut buf = vec![0u8; 1 << 16];
        let drained = std::thread::spawn(move || {
            let mut total = 0usize;
            loop {
                // SAFETY: reads into a buffer of that length.
                let n = unsafe { libc::read(reader, buf.as_mut_ptr().cast(), buf.len()) };
                match n {
                    0 => break,
                    n if n > 0 => total += n as usize,
                    _ => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            // SAFETY: our descriptor, closed once.
            unsafe { libc::close(reader) };
            total
        });
        assert!(finished.is_ok(), "a publication waited for the map file");
        events.join().unwrap();
        map.flush();
        drop(map);
        let total = drained.join().unwrap();
        assert!(
            total > 4000 * 200,
            "every line reached the file: {total} bytes"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
