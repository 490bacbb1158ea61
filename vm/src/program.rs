//! A module loaded for running: its code, shared memory, threads, output, traps, and the
//! dispatch entries through which every call goes.
//!
//! **Dispatch.** Each function `F` has one entry: an atomic pointer to the [`Definition`]
//! that calls to `F` run. A call is one acquire load of that entry. `patch F G` stores G's
//! current definition into F's entry with a release store (spec §5), so a thread that
//! happens-after the patch loads the new definition. Each definition also carries a native
//! entry slot for the JIT tiers to fill; the interpreter leaves it empty.
//!
//! **Profiling.** Each thread counts calls and loop back-edges per definition in its own
//! array (no shared cache line on the hot path) and adds them to the shared [`Profile`] in
//! batches of [`PROFILE_BATCH`], where a tiering policy can watch them.

use crate::bytecode::{FuncId, Module};
use crate::interp::{self, ThreadState};
use crate::lower::{lower_function, LoweredFunction};
use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicI64, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;

/// The reasons a program traps (spec §6), worded exactly as the spec prints them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trap {
    DivisionByZero,
    MemoryOutOfBounds,
    StackOverflow,
    AssertionFailed,
    InvalidThreadHandle,
    TooManyThreads,
}

impl fmt::Display for Trap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trap::DivisionByZero => "division by zero",
            Trap::MemoryOutOfBounds => "memory access out of bounds",
            Trap::StackOverflow => "stack overflow",
            Trap::AssertionFailed => "assertion failed",
            Trap::InvalidThreadHandle => "invalid thread handle",
            Trap::TooManyThreads => "too many threads",
        })
    }
}

/// How a program runs.
#[derive(Clone, Copy, Debug)]
pub struct RunConfig {
    /// The deepest call nesting allowed in one thread (`main` is depth 1).
    pub max_depth: u32,
}

impl RunConfig {
    pub const DEFAULT_MAX_DEPTH: u32 = 10_000;
    pub const LIMIT_MAX_DEPTH: u32 = 1_000_000;

    /// Native stack for a VM thread: enough for the runtime itself plus a native frame per
    /// allowed call level, so JIT code calling JIT code `max_depth` deep cannot overflow it.
    /// Stacks are reserved, not committed: untouched pages cost nothing.
    pub fn thread_stack_bytes(&self) -> usize {
        (8 << 20) + self.max_depth as usize * 256
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            max_depth: Self::DEFAULT_MAX_DEPTH,
        }
    }
}

/// One function body, ready to run. Immutable once built, except for `native_entry`.
pub struct Definition {
    /// The function whose body this is.
    pub func: FuncId,
    pub code: LoweredFunction,
    /// Entry point of compiled code for this body, or 0 while it runs in the interpreter.
    /// Reserved for the JIT tiers.
    pub native_entry: AtomicUsize,
}

/// Calls and loop back-edges per definition, summed over threads in batches.
pub struct Profile {
    pub calls: Box<[AtomicU64]>,
    pub back_edges: Box<[AtomicU64]>,
}

/// Events a thread counts locally before adding them to the shared [`Profile`].
pub const PROFILE_BATCH: u32 = 1024;

/// Hook a tiering policy installs to hear that a definition got hotter. Called on the thread
/// that ran the code, once per [`PROFILE_BATCH`] events, so it must be quick.
pub type HotHook = dyn Fn(FuncId) + Send + Sync;

/// The most threads alive at once, `main` included (spec §4).
pub const MAX_THREADS: usize = 256;

/// Program output: one buffer for all threads, so a `print` line is never torn and output
/// follows the order in which threads wrote it. Flushed when it fills and at exit.
pub struct Output {
    buffer: Mutex<Vec<u8>>,
}

impl Output {
    const FLUSH_AT: usize = 64 * 1024;

    fn new() -> Self {
        Output {
            buffer: Mutex::new(Vec::with_capacity(Self::FLUSH_AT)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A poisoned lock only means another thread panicked mid-append; the bytes are fine.
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn write(&self, bytes: &[u8]) {
        let mut buf = self.lock();
        buf.extend_from_slice(bytes);
        if buf.len() >= Self::FLUSH_AT {
            write_stdout(&mut buf);
        }
    }

    pub fn print(&self, value: i64) {
        let mut digits = itoa::Buffer::new();
        let text = digits.format(value);
        let mut line = [0u8; 24];
        line[..text.len()].copy_from_slice(text.as_bytes());
        line[text.len()] = b'\n';
        self.write(&line[..=text.len()]);
    }

    /// Flushes everything and keeps the lock, so nothing else can print: for process exit.
    fn flush_and_hold(&self) -> MutexGuard<'_, Vec<u8>> {
        let mut buf = self.lock();
        write_stdout(&mut buf);
        buf
    }
}

fn write_stdout(buf: &mut Vec<u8>) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (EPIPE) must not crash the program; the output is simply lost.
    let _ = out.write_all(buf).and_then(|()| out.flush());
    buf.clear();
}

/// Where a spawned thread leaves its result for `join`. The OS thread itself is detached,
/// so a thread that finishes and is never joined releases its stack at once and costs only
/// this cell (a program may spawn any number of threads over its life).
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

/// The program's spawned threads.
struct Threads {
    /// Threads running now, `main` included.
    running: AtomicUsize,
    /// CPUs this process may run on.
    cpus: usize,
    next_handle: AtomicI64,
    /// Threads not yet joined, by handle: which OS thread it is, and its completion.
    unjoined: Mutex<HashMap<i64, (ThreadId, Arc<Completion>)>>,
}

/// A loaded module. Shared by all its threads through an `Arc`.
pub struct Program {
    pub module: Arc<Module>,
    definitions: Box<[Definition]>,
    /// One entry per function: the definition its calls run (see the module docs).
    dispatch: Box<[AtomicPtr<Definition>]>,
    memory: Box<[AtomicI64]>,
    pub config: RunConfig,
    pub profile: Profile,
    hot_hook: Option<Box<HotHook>>,
    output: Output,
    threads: Threads,
}

impl Program {
    pub fn new(module: Arc<Module>, config: RunConfig) -> Arc<Program> {
        Self::with_hot_hook(module, config, None)
    }

    pub fn with_hot_hook(
        module: Arc<Module>,
        config: RunConfig,
        hot_hook: Option<Box<HotHook>>,
    ) -> Arc<Program> {
        let definitions: Box<[Definition]> = module
            .functions
            .iter()
            .enumerate()
            .map(|(i, f)| Definition {
                func: i as FuncId,
                code: lower_function(&module, f),
                native_entry: AtomicUsize::new(0),
            })
            .collect();
        // The boxed slice never moves or shrinks, so these pointers stay valid for the
        // program's lifetime.
        let dispatch = definitions
            .iter()
            .map(|d| AtomicPtr::new(d as *const Definition as *mut Definition))
            .collect();
        let n = definitions.len();
        let counters = || (0..n).map(|_| AtomicU64::new(0)).collect::<Box<[_]>>();
        Arc::new(Program {
            memory: zeroed_memory(module.memory_cells as usize),
            module,
            definitions,
            dispatch,
            config,
            profile: Profile {
                calls: counters(),
                back_edges: counters(),
            },
            hot_hook,
            output: Output::new(),
            threads: Threads {
                running: AtomicUsize::new(0),
                cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
                next_handle: AtomicI64::new(1),
                unjoined: Mutex::new(HashMap::new()),
            },
        })
    }

    pub fn definitions(&self) -> &[Definition] {
        &self.definitions
    }

    /// The definition a call to `f` runs now. One acquire load.
    #[inline(always)]
    pub fn dispatch(&self, f: FuncId) -> &Definition {
        // SAFETY: entries only ever hold pointers into `self.definitions`, which lives as
        // long as `self` and is never mutated except through atomics.
        unsafe { &*self.dispatch[f as usize].load(Ordering::Acquire) }
    }

    /// `patch f g` (spec §5): calls to `f` run g's current definition from now on.
    pub fn patch(&self, f: FuncId, g: FuncId) {
        let definition = self.dispatch[g as usize].load(Ordering::Acquire);
        self.dispatch[f as usize].store(definition, Ordering::Release);
    }

    pub fn memory(&self) -> &[AtomicI64] {
        &self.memory
    }

    pub fn output(&self) -> &Output {
        &self.output
    }

    pub(crate) fn report_hot(&self, def: FuncId, calls: u32, back_edges: u32) {
        let i = def as usize;
        if calls > 0 {
            self.profile.calls[i].fetch_add(calls as u64, Ordering::Relaxed);
        }
        if back_edges > 0 {
            self.profile.back_edges[i].fetch_add(back_edges as u64, Ordering::Relaxed);
        }
        if let Some(hook) = &self.hot_hook {
            hook(def);
        }
    }

    /// Whether more VM threads are running than there are CPUs to run them.
    pub(crate) fn oversubscribed(&self) -> bool {
        self.threads.running.load(Ordering::Relaxed) > self.threads.cpus
    }

    /// Runs `main` on a VM thread and returns its result. A trap anywhere ends the process
    /// (see [`Program::exit_with_trap`]).
    pub fn run_main(self: &Arc<Self>, main: FuncId) -> i64 {
        self.threads.running.fetch_add(1, Ordering::SeqCst);
        let program = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("main".into())
            .stack_size(self.config.thread_stack_bytes())
            .spawn(move || program.run_thread(main, &[]));
        match thread.map(|t| t.join()) {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(e) => {
                eprintln!("error: cannot start the main thread: {e}");
                std::process::exit(1)
            }
        }
    }

    fn run_thread(self: &Arc<Self>, f: FuncId, args: &[i64]) -> i64 {
        let mut state = ThreadState::new(self.definitions.len());
        let result = interp::run(self, &mut state, f, args);
        state.flush_profile(self);
        self.threads.running.fetch_sub(1, Ordering::SeqCst);
        match result {
            Ok(value) => value,
            Err(trap) => self.exit_with_trap(trap),
        }
    }

    /// `spawn f(args)`: starts a thread and returns its handle.
    pub fn spawn(self: &Arc<Self>, f: FuncId, args: &[i64]) -> Result<i64, Trap> {
        if self.threads.running.fetch_add(1, Ordering::SeqCst) >= MAX_THREADS {
            self.threads.running.fetch_sub(1, Ordering::SeqCst);
            return Err(Trap::TooManyThreads);
        }
        let handle = self.threads.next_handle.fetch_add(1, Ordering::Relaxed);
        let program = Arc::clone(self);
        let args = args.to_vec();
        let completion = Arc::new(Completion::default());
        let finished = Arc::clone(&completion);
        let spawned = std::thread::Builder::new()
            .name(format!("vm-{handle}"))
            .stack_size(self.config.thread_stack_bytes())
            .spawn(move || finished.finish(program.run_thread(f, &args)));
        match spawned {
            Ok(thread) => {
                let id = thread.thread().id();
                drop(thread); // detach: `join` waits on the completion instead
                self.threads
                    .unjoined
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(handle, (id, completion));
                Ok(handle)
            }
            Err(_) => {
                // The OS refused a thread (memory or limits): the same condition as the cap.
                self.threads.running.fetch_sub(1, Ordering::SeqCst);
                Err(Trap::TooManyThreads)
            }
        }
    }

    /// `join h`: waits for thread `h` and returns its result. Each handle joins once.
    pub fn join(&self, handle: i64) -> Result<i64, Trap> {
        let completion = {
            let mut unjoined = self
                .threads
                .unjoined
                .lock()
                .unwrap_or_else(|e| e.into_inner());
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

    /// Ends the process for a trap (spec §6): what was printed stays printed, the reason goes
    /// to stderr, the exit status is 1. Holding the output lock stops every other thread from
    /// printing after the trap.
    pub fn exit_with_trap(&self, trap: Trap) -> ! {
        let _hold = self.output.flush_and_hold();
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "error: trap: {trap}");
        let _ = err.flush();
        std::process::exit(1)
    }

    /// Ends the process after `main` returned: flush output, exit 0. Threads never joined are
    /// abandoned (spec §4).
    pub fn exit_normally(&self) -> ! {
        let _hold = self.output.flush_and_hold();
        std::process::exit(0)
    }
}

/// Zeroed shared memory. `vec![0; n]` comes from the allocator's zeroed path (fresh pages
/// from the kernel), so an untouched 2 GiB memory costs no physical memory.
fn zeroed_memory(cells: usize) -> Box<[AtomicI64]> {
    let plain: Box<[i64]> = vec![0i64; cells].into_boxed_slice();
    let len = plain.len();
    let ptr = Box::into_raw(plain) as *mut AtomicI64;
    // SAFETY: AtomicI64 has the same size and alignment as i64 (documented guarantee), and
    // the allocation came from a Box<[i64]> of `len` elements with that same layout.
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) }
}
