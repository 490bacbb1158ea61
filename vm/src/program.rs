//! A module loaded for running: its definitions and the dispatch entries through which every
//! call goes, shared memory, the profile, output, its threads, and how the process ends.
//! It holds data; what runs it is elsewhere: the interpreter loop in [`crate::interp`], a
//! thread's body in the engine that builds the program (see [`ThreadBody`]).
//!
//! **Dispatch.** Each function `F` has one entry: an atomic pointer to the [`Definition`]
//! that calls to `F` run. A call is one acquire load of that entry ([`Program::dispatch`]).
//! `patch F G` stores G's current definition into F's entry with a release store
//! ([`Program::patch`], spec §5), so a thread that happens-after the patch loads the new
//! definition. These two functions are the only places the entries are read and written.

use crate::bytecode::{FuncId, Module};
use crate::lower::lower_function;
use crate::output::{report_write_error, Output};
use crate::profile::Profile;
use crate::regcode::LoweredFunction;
use crate::threads::Threads;
use crate::trap::Trap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicI64, AtomicPtr, AtomicUsize, Ordering};
use std::sync::Arc;

/// How a program runs.
#[derive(Clone, Copy, Debug)]
pub struct RunConfig {
    /// The deepest call nesting allowed in one thread (`main` is depth 1).
    pub max_depth: u32,
    /// Print the profile to stderr when the process ends, however it ends (`--stats`).
    pub stats: bool,
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
            stats: false,
        }
    }
}

/// Exit status after a trap (spec §6).
pub const EXIT_TRAP: i32 = 1;

/// One function body, ready to run. Immutable once built, except for `native_entry`.
pub struct Definition {
    /// The function whose body this is.
    pub func: FuncId,
    pub code: LoweredFunction,
    /// Entry point of compiled code for this body, or 0 while it runs in the interpreter.
    /// Reserved for the JIT tiers; when the runtime's `DispatchSlot` lands, the dispatch
    /// entries become `DispatchSlot`s and this moves into them (see [`Program::patch`]).
    pub native_entry: AtomicUsize,
}

/// Hook a tiering policy installs to hear that a definition got hotter. Called on the thread
/// that ran the code, once per [`crate::profile::PROFILE_BATCH`] events, so it must be quick.
pub type HotHook = dyn Fn(FuncId) + Send + Sync;

/// What a VM thread runs: `f(args)` on the calling thread, to its result or its trap. The
/// engine supplies it (today: a new `ThreadState` and the interpreter; with the JIT tiers:
/// native code where there is some), and [`Program::run_main`] and [`Program::spawn`] run it
/// on new threads.
pub type ThreadBody = dyn Fn(&Arc<Program>, FuncId, &[i64]) -> Result<i64, Trap> + Send + Sync;

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
    threads: Arc<Threads>,
    thread_body: Box<ThreadBody>,
}

impl Program {
    /// Lowers every function of `module` and sets up its memory. Threads run `thread_body`;
    /// `hot_hook`, if any, hears about every batch of profile counts.
    pub fn new(
        module: Arc<Module>,
        config: RunConfig,
        thread_body: Box<ThreadBody>,
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
        Arc::new(Program {
            memory: zeroed_memory(module.memory_cells as usize),
            profile: Profile::new(definitions.len()),
            module,
            definitions,
            dispatch,
            config,
            hot_hook,
            output: Output::default(),
            threads: Threads::new(config.thread_stack_bytes()),
            thread_body,
        })
    }

    pub fn definitions(&self) -> &[Definition] {
        &self.definitions
    }

    /// The definition a call to `f` runs now: one acquire load of f's dispatch entry. The
    /// other half of [`Program::patch`]; the runtime's `DispatchSlot` (an acquire-loaded code
    /// pointer that JIT code calls through) will be the one type of these entries.
    #[inline(always)]
    pub fn dispatch(&self, f: FuncId) -> &Definition {
        // SAFETY: entries only ever hold pointers into `self.definitions`, which lives as
        // long as `self` and is never mutated except through atomics.
        unsafe { &*self.dispatch[f as usize].load(Ordering::Acquire) }
    }

    /// `patch f g` (spec §5): calls to `f` run g's current definition from now on. The one
    /// place a dispatch entry is written: a release store, so a thread whose acquire load in
    /// [`Program::dispatch`] sees it also sees the definition it points to. When the runtime's
    /// `DispatchSlot` becomes the entry type, this is where its commit goes.
    pub fn patch(&self, f: FuncId, g: FuncId) {
        let definition = self.dispatch[g as usize].load(Ordering::Acquire);
        self.dispatch[f as usize].store(definition, Ordering::Release);
    }

    pub fn memory(&self) -> &[AtomicI64] {
        &self.memory
    }

    /// `print`: a failed write ends the process (see [`Program::exit_for_output`]).
    pub fn print(&self, value: i64) {
        if let Err(e) = self.output.print(value) {
            self.exit_for_output(e)
        }
    }

    /// `putc`: the low byte of `value`.
    pub fn putc(&self, value: i64) {
        if let Err(e) = self.output.write(&[value as u8]) {
            self.exit_for_output(e)
        }
    }

    /// Adds a thread's batch of counts to the profile and tells the hot hook.
    pub(crate) fn report_hot(&self, def: FuncId, calls: u32, back_edges: u32) {
        self.profile.add(def, calls, back_edges);
        if let Some(hook) = &self.hot_hook {
            hook(def);
        }
    }

    /// Whether more VM threads are running than there are CPUs to run them.
    pub(crate) fn oversubscribed(&self) -> bool {
        self.threads.oversubscribed()
    }

    /// Runs `main` on a VM thread (the engine's thread body) and returns its result. A trap
    /// anywhere ends the process (see [`Program::exit_with_trap`]).
    pub fn run_main(self: &Arc<Self>, main: FuncId) -> i64 {
        let program = Arc::clone(self);
        match self
            .threads
            .run_main(Box::new(move || program.run_thread(main, &[])))
        {
            Ok(result) => result,
            Err(e) => {
                let _ = writeln!(io::stderr(), "error: cannot start the main thread: {e}");
                std::process::exit(1)
            }
        }
    }

    /// `spawn f(args)`: starts a thread running the engine's thread body, returns its handle.
    pub fn spawn(self: &Arc<Self>, f: FuncId, args: &[i64]) -> Result<i64, Trap> {
        let program = Arc::clone(self);
        let args = args.to_vec();
        self.threads
            .spawn(Box::new(move || program.run_thread(f, &args)))
    }

    /// `join h`: waits for thread `h` and returns its result. Each handle joins once.
    pub fn join(&self, handle: i64) -> Result<i64, Trap> {
        self.threads.join(handle)
    }

    fn run_thread(self: &Arc<Self>, f: FuncId, args: &[i64]) -> i64 {
        match (self.thread_body)(self, f, args) {
            Ok(value) => value,
            Err(trap) => self.exit_with_trap(trap),
        }
    }

    /// Ends the process for a trap (spec §6): what was printed stays printed, the reason goes
    /// to stderr, the exit status is 1. Holding the output lock stops every other thread from
    /// printing after the trap.
    pub fn exit_with_trap(&self, trap: Trap) -> ! {
        // Output that cannot be written any more does not change what the trap reports.
        let (_hold, _) = self.output.flush_and_hold();
        let _ = writeln!(io::stderr(), "error: trap: {trap}");
        self.exit(EXIT_TRAP)
    }

    /// Ends the process after `main` returned: flush output, exit 0 (or as
    /// [`Program::exit_for_output`] says if the output cannot be written). Threads never
    /// joined are abandoned (spec §4).
    pub fn exit_normally(&self) -> ! {
        let (hold, written) = self.output.flush_and_hold();
        if let Err(e) = written {
            drop(hold);
            self.exit_for_output(e)
        }
        self.exit(0)
    }

    /// Ends the process because stdout cannot be written, as [`report_write_error`] says:
    /// silently when its reader has gone (as `| head` expects of a producer), otherwise with
    /// `error: cannot write output: ...`.
    pub fn exit_for_output(&self, error: io::Error) -> ! {
        let _hold = self.output.lock();
        self.exit(report_write_error(&error))
    }

    /// The last step of every ending: `--stats` if asked for, then the exit.
    fn exit(&self, status: i32) -> ! {
        if self.config.stats {
            let _ = io::stderr().write_all(self.profile.report(&self.module).as_bytes());
        }
        std::process::exit(status)
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
