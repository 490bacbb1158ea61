//! VM threads: `spawn`, `join`, the cap on threads alive at once and the handles not yet
//! joined. This module runs closures and knows neither programs nor interpreters: what a
//! thread runs is the closure it is handed (a program hands it the engine's thread body,
//! today the interpreter, later native code).
//!
//! Spawned OS threads are detached, and each leaves its result in a completion cell that
//! `join` waits on: a thread that finishes and is never joined gives its stack back at once
//! and costs only that cell, so a program may spawn any number of threads over its life.

use crate::trap::Trap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::ThreadId;

/// What a VM thread runs; its result is what `join` returns.
pub type ThreadMain = Box<dyn FnOnce() -> i64 + Send>;

/// The most threads alive at once, `main` included (spec §4).
pub const MAX_THREADS: usize = 256;

/// Where a spawned thread leaves its result for `join`.
#[derive(Default)]
struct Completion {
    result: Mutex<Option<i64>>,
    done: Condvar,
}

impl Completion {
    fn finish(&self, value: i64) {
        *self.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
        self.done.notify_all();
    }

    fn wait(&self) -> i64 {
        let mut result = self.result.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(value) = *result {
                return value;
            }
            result = self.done.wait(result).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The threads of one program.
pub struct Threads {
    /// Threads running now, `main` included.
    running: AtomicUsize,
    /// CPUs this process may run on.
    cpus: usize,
    /// Native stack reserved for each thread.
    stack_bytes: usize,
    next_handle: AtomicI64,
    /// Threads not yet joined, by handle: which OS thread it is, and its completion.
    unjoined: Mutex<HashMap<i64, (ThreadId, Arc<Completion>)>>,
}

/// Counts a thread as running until it is dropped, however the thread ends.
struct Running(Arc<Threads>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Threads {
    /// No threads yet; each will get `stack_bytes` of native stack (reserved, not committed).
    pub fn new(stack_bytes: usize) -> Arc<Threads> {
        Arc::new(Threads {
            running: AtomicUsize::new(0),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            stack_bytes,
            next_handle: AtomicI64::new(1),
            unjoined: Mutex::new(HashMap::new()),
        })
    }

    /// Runs `body` as the program's first thread and waits for its result. `Err` if the OS
    /// would not start it.
    pub fn run_main(self: &Arc<Self>, body: ThreadMain) -> std::io::Result<i64> {
        self.running.fetch_add(1, Ordering::SeqCst);
        let running = Running(Arc::clone(self));
        let thread = std::thread::Builder::new()
            .name("main".into())
            .stack_size(self.stack_bytes)
            .spawn(move || {
                let _running = running;
                body()
            })?;
        match thread.join() {
            Ok(result) => Ok(result),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// `spawn`: starts `body` on a new thread and returns its handle, or traps `too many
    /// threads` when [`MAX_THREADS`] are running (or the OS refuses a thread, which is the
    /// same condition).
    pub fn spawn(self: &Arc<Self>, body: ThreadMain) -> Result<i64, Trap> {
        if self.running.fetch_add(1, Ordering::SeqCst) >= MAX_THREADS {
            self.running.fetch_sub(1, Ordering::SeqCst);
            return Err(Trap::TooManyThreads);
        }
        let running = Running(Arc::clone(self));
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let completion = Arc::new(Completion::default());
        let finished = Arc::clone(&completion);
        let spawned = std::thread::Builder::new()
            .name(format!("vm-{handle}"))
            .stack_size(self.stack_bytes)
            .spawn(move || {
                let value = {
                    let _running = running;
                    body()
                };
                finished.finish(value);
            });
        match spawned {
            Ok(thread) => {
                // Detached: `join` waits on the completion instead.
                let id = thread.thread().id();
                drop(thread);
                self.unjoined
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(handle, (id, completion));
                Ok(handle)
            }
            Err(_) => Err(Trap::TooManyThreads),
        }
    }

    /// `join h`: waits for thread `h` and returns its result. Each handle joins once.
    pub fn join(&self, handle: i64) -> Result<i64, Trap> {
        let completion = {
            let mut unjoined = self.unjoined.lock().unwrap_or_else(|e| e.into_inner());
            match unjoined.get(&handle) {
                None => return Err(Trap::InvalidThreadHandle),
                // A thread waiting for itself would wait forever; its own handle is not one
                // it can join.
                Some((id, _)) if *id == std::thread::current().id() => {
                    return Err(Trap::InvalidThreadHandle)
                }
                Some(_) => unjoined.remove(&handle).expect("present").1,
            }
        };
        Ok(completion.wait())
    }

    /// Whether more VM threads are running than there are CPUs to run them.
    pub fn oversubscribed(&self) -> bool {
        self.running.load(Ordering::Relaxed) > self.cpus
    }
}

/// Runs `f`, a wait (a join, a contended lock), with the calling VM thread marked offline in
/// the runtime, so code reclamation does not wait for it meanwhile.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    let mut f = Some(f);
    let waited = jitvm_runtime::with_current_thread(|handle| {
        handle.map(|h| h.blocking(|| (f.take().expect("runs once"))()))
    });
    match waited {
        Some(result) => result,
        None => (f.take().expect("runs once"))(),
    }
}

/// Tells the runtime that the calling VM thread is at a safepoint: it holds no address of
/// native code except on activations inside the runtime's `enter`.
pub fn quiescent() {
    jitvm_runtime::with_current_thread(|handle| {
        if let Some(h) = handle {
            h.quiescent()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spawned_closure_runs_and_joins_once() {
        let threads = Threads::new(1 << 20);
        let main = Arc::clone(&threads);
        let result = threads.run_main(Box::new(move || {
            let h = main.spawn(Box::new(|| 41)).unwrap();
            let value = main.join(h).unwrap();
            assert_eq!(main.join(h), Err(Trap::InvalidThreadHandle));
            value + 1
        }));
        assert_eq!(result.unwrap(), 42);
        assert_eq!(threads.running.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn threads_past_the_cap_are_refused() {
        let threads = Threads::new(1 << 16);
        threads.running.store(MAX_THREADS, Ordering::SeqCst);
        assert_eq!(threads.spawn(Box::new(|| 0)), Err(Trap::TooManyThreads));
        assert_eq!(threads.running.load(Ordering::SeqCst), MAX_THREADS);
    }
}
