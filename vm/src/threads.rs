//! VM threads: `spawn`, `join`, the cap on threads alive at once and the handles not yet
//! joined. This module runs closures and knows neither programs nor interpreters: what a
//! thread runs is the closure it is handed (a program hands it the engine's thread body,
//! today the interpreter, later native code).
//!
//! Each spawned thread leaves its result in a completion cell that `join` waits on. Its OS
//! thread is never detached: a [`Reaper`] keeps every `JoinHandle` and joins the OS threads
//! that have finished (at each `spawn`, and when the program's threads are dropped), so a
//! thread that finishes and is never joined gives its stack back soon after and costs only
//! its completion cell until then. Why not detach: glibc's `pthread_detach` of a thread that
//! is exiting at that moment crashed this VM (see `docs/interpreter.md`, section 8).

use crate::trap::Trap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::{JoinHandle, ThreadId};

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

/// The OS threads a host started and has not joined yet. Never detach a thread that may
/// already have exited: dropping a `JoinHandle` calls `pthread_detach`, and on glibc 2.36
/// (kernel 6.18) that crashed (`SIGSEGV` in `pthread_detach`) about once in 90 runs of a
/// program whose 40,000 threads finish unjoined. So every handle stays here until its thread
/// has said it finished, and is then joined, which cannot race the thread's exit.
///
/// Reaping is proportional to the threads that finished since the last reap, so a host
/// that calls [`Reaper::reap`] at every spawn keeps spawn's cost flat.
#[derive(Default)]
pub struct Reaper {
    state: Mutex<ReaperState>,
}

#[derive(Default)]
struct ReaperState {
    next_key: u64,
    /// Every OS thread started and not yet joined, by key.
    handles: HashMap<u64, JoinHandle<()>>,
    /// Keys of threads whose closure has returned: joining them waits at most for the
    /// thread's own exit path.
    finished: Vec<u64>,
}

impl Reaper {
    /// A reaper with no threads.
    pub fn new() -> Arc<Reaper> {
        Arc::new(Reaper::default())
    }

    /// Starts `body` on a thread made by `builder`, keeping its handle; joins the threads that
    /// finished since the last reap first. The thread reports itself finished as the last
    /// thing its closure does (holding the reaper weakly, so it never keeps it alive).
    pub fn spawn(
        self: &Arc<Self>,
        builder: std::thread::Builder,
        body: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<ThreadId> {
        self.reap();
        let reaper = Arc::downgrade(self);
        // The lock is held across the OS spawn so the new thread's report (which takes it)
        // always finds its handle already recorded.
        let mut state = self.lock();
        let key = state.next_key;
        state.next_key += 1;
        let thread = builder.spawn(move || {
            body();
            Reaper::report_finished(&reaper, key);
        })?;
        let id = thread.thread().id();
        state.handles.insert(key, thread);
        Ok(id)
    }

    fn report_finished(reaper: &Weak<Reaper>, key: u64) {
        if let Some(reaper) = reaper.upgrade() {
            reaper.lock().finished.push(key);
        }
    }

    /// Joins every thread that has reported finishing. Never waits for a running thread.
    pub fn reap(&self) {
        let done: Vec<JoinHandle<()>> = {
            let mut state = self.lock();
            let ReaperState {
                handles, finished, ..
            } = &mut *state;
            // A thread that reported is still on its way out (its closure's result, its
            // thread-locals); joining it now would wait for that, so it waits for a later reap.
            let mut done = Vec::new();
            finished.retain(|key| match handles.get(key) {
                Some(thread) if thread.is_finished() => {
                    done.extend(handles.remove(key));
                    false
                }
                Some(_) => true,
                None => false,
            });
            done
        };
        // Outside the lock: a thread on its way out may still need it (its report is done,
        // but another thread of the same host may be reporting).
        for thread in done {
            join_finished(thread);
        }
    }

    /// OS threads started and not yet joined.
    pub fn unreaped(&self) -> usize {
        self.lock().handles.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReaperState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Reaper {
    /// Joins the finished threads and leaves the rest running, still undetached: a thread a
    /// program abandoned (spec §4) may run until the process exits, and waiting for it
    /// could wait forever. Its handle is forgotten, which keeps its stack until the process
    /// ends: the price of never racing its exit with a detach.
    fn drop(&mut self) {
        let state = std::mem::take(self.state.get_mut().unwrap_or_else(|e| e.into_inner()));
        let mut handles = state.handles;
        for key in state.finished {
            if let Some(thread) = handles.remove(&key) {
                join_finished(thread);
            }
        }
        for (_, running) in handles {
            std::mem::forget(running);
        }
    }
}

/// Joins a thread whose closure has returned, unless it is the calling thread (the last
/// owner of a reaper can be a thread it started), which is forgotten instead: joining
/// oneself would deadlock and dropping the handle would detach.
fn join_finished(thread: JoinHandle<()>) {
    if thread.thread().id() == std::thread::current().id() {
        std::mem::forget(thread);
    } else if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic)
    }
}

/// Joins `thread` if it has finished and forgets it otherwise: for a helper thread (a compile
/// thread, a reader) whose owner goes away before it may have ended. Never detaches.
pub fn join_or_forget<T>(thread: JoinHandle<T>) {
    if thread.is_finished() && thread.thread().id() != std::thread::current().id() {
        let _ = thread.join();
    } else {
        std::mem::forget(thread);
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
    /// Every OS thread started, until it is joined once it has finished.
    reaper: Arc<Reaper>,
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
            reaper: Reaper::new(),
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
        let builder = std::thread::Builder::new()
            .name(format!("vm-{handle}"))
            .stack_size(self.stack_bytes);
        let spawned = self.reaper.spawn(builder, move || {
            let value = {
                let _running = running;
                body()
            };
            finished.finish(value);
        });
        match spawned {
            Ok(id) => {
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
