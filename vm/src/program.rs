//! A module loaded for running: its definitions and the dispatch entries through which every
//! call goes, shared memory, the profile, output, its threads, and how the process ends.
//! It holds data; what runs it is elsewhere: the interpreter loop in [`crate::interp`], a
//! thread's body in the engine that builds the program (see [`ThreadBody`]).
//!
//! **Dispatch.** Each function `F` has one runtime [`DispatchSlot`] holding an [`Entry`]: the
//! address calls to `F` start at, with a header naming the [`Definition`] it runs and whether
//! it is native code (see [`crate::entry`]). Native code calls through the slot
//! (`call qword [slot]`); the interpreter loads it ([`Program::entry`]) and reads the header.
//! `patch F G` points F's slot at G's entry in one runtime transaction committed with
//! `Guarantee::Strong` ([`Program::patch`], spec §5): once it returns, no thread starts a
//! call to F that runs anything but G's definition. A JIT installs code with
//! [`Program::set_entry`] before anything runs, and tiers a definition up while threads run
//! with [`Program::commit_code`], which moves every slot that runs the definition to its
//! new code. These are the only places the slots are read and written.
//!
//! **The dispatch lock.** `patch` and `commit_code` read slots and then write them; each
//! holds the program's dispatch lock from the read to the end of its commit, so a tier-up
//! that lands after a patch sees the patched slot (it runs another definition now) and
//! leaves it alone. Invariant under the lock: every slot that runs definition D holds D's
//! current entry.

use crate::bytecode::{FuncId, Module};
use crate::entry::{header_word, Entry, KIND_MASK, NATIVE};
use crate::lower::lower_function;
use crate::output::{report_write_error, Output};
use crate::profile::Profile;
use crate::regcode::LoweredFunction;
use crate::threads::{blocking, Threads};
use crate::trap::Trap;
use jitvm_runtime::{DispatchSlot, Guarantee, Runtime, Transaction};
use std::io::{self, Write};
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How a program runs.
#[derive(Clone, Copy, Debug)]
pub struct RunConfig {
    /// The deepest call nesting allowed in one thread (`main` is depth 1).
    pub max_depth: u32,
    /// Print the profile to stderr when the process ends, however it ends (`--stats`).
    pub stats: bool,
    /// How many calls (or back-edges) of a definition a thread counts before it reports
    /// them to the profile (1 to [`crate::profile::PROFILE_BATCH`]): a tiering policy with
    /// low thresholds needs small batches to see them crossed.
    pub profile_batch: u32,
    /// Whether an optimizing JIT may inline small callees. Off under `--gdb`: a debugger's
    /// backtrace then names every function's own frame (no inlined-frame records are
    /// written).
    pub inline: bool,
    /// How native code calls a function (`--calls`).
    pub calls: CallMode,
}

/// How native code calls a function. Both keep `patch` exact (spec §5); they differ in what
/// a call and a change of target cost (see `docs/cross-modifying-code.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CallMode {
    /// Load the callee's dispatch slot and call through it: a change of target stores one
    /// word.
    #[default]
    Slots,
    /// `call rel32` straight to the callee's code: a change of target rewrites every such
    /// call while threads may run it (the runtime's live patching, three serializations).
    Direct,
}

impl RunConfig {
    pub const DEFAULT_MAX_DEPTH: u32 = 10_000;
    pub const LIMIT_MAX_DEPTH: u32 = 1_000_000;

    /// Native stack for a VM thread: enough for the runtime itself plus what one call level
    /// usually takes, so `max_depth` nested calls of ordinary frames run natively. Native
    /// code calling native code takes a frame of tens of bytes; a call that crosses between
    /// native code and the interpreter (a stub, the interpreter's loop, the way back in)
    /// takes about 250 bytes (measured: 1,000,000 alternating levels used 246 MB); 512
    /// leaves room. A speed setting, not a limit: native code that finds the stack short
    /// (wide frames) runs the call in the interpreter, whose frames are on the heap (see
    /// `docs/native-code.md`). Stacks are reserved, not committed: untouched pages cost
    /// nothing.
    pub fn thread_stack_bytes(&self) -> usize {
        (8 << 20) + self.max_depth as usize * 512
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            max_depth: Self::DEFAULT_MAX_DEPTH,
            stats: false,
            profile_batch: crate::profile::PROFILE_BATCH,
            inline: true,
            calls: CallMode::Slots,
        }
    }
}

/// Exit status after a trap (spec §6).
pub const EXIT_TRAP: i32 = 1;

/// Exit status when the runtime fails under the program (it cannot keep `patch`'s
/// guarantee): as a trap, the run did not complete.
pub const EXIT_INTERNAL: i32 = 1;

/// One function body, ready to run: immutable. Its compiled code, if any, is in the entries
/// that name it (see [`crate::entry`]).
///
/// A definition is also its own interpreted entry: its first word is a header naming itself,
/// and the entry is the address just past it. So an interpreted call finds the definition at
/// `entry - 8` without waiting for the header's load (see [`Program::resolve`]).
#[repr(C)]
pub struct Definition {
    /// `header_word(self, interpreted)`: this definition's own address.
    header: usize,
    /// The function whose body this is.
    pub func: FuncId,
    pub code: LoweredFunction,
}

/// Hook a tiering policy installs to hear that a definition got hotter. Called on the thread
/// that ran the code, once per batch of events (see [`RunConfig::profile_batch`]), so it must
/// be quick. For a batch of back-edges counted by the interpreter, the op index of the loop
/// header the last one jumped to (where on-stack replacement would enter).
pub type HotHook = dyn Fn(&Program, FuncId, Option<u32>) + Send + Sync;

/// What `patch F G` did, for an engine that traces or measures patches
/// ([`Program::set_patch_observer`]).
#[derive(Clone, Copy, Debug)]
pub struct PatchEvent {
    pub f: FuncId,
    pub g: FuncId,
    /// F's entry before and after, and the definitions they run.
    pub old_entry: usize,
    pub new_entry: usize,
    pub old_def: FuncId,
    pub new_def: FuncId,
    /// From the request to the commit's return, waiting for the dispatch lock included.
    pub latency: Duration,
    pub commit: jitvm_runtime::CommitInfo,
}

/// Hears every patch, under the dispatch lock (so patches arrive one at a time, in order).
pub type PatchObserver = dyn Fn(&Program, &PatchEvent) + Send + Sync;

/// Makes the `--stats` text when the process ends.
pub type StatsReport = dyn Fn(&Program) -> String + Send + Sync;

/// What a VM thread runs: `f(args)` on the calling thread, to its result or its trap. The
/// engine supplies it (today: a new `ThreadState` and the interpreter; with the JIT tiers:
/// native code where there is some), and [`Program::run_main`] and [`Program::spawn`] run it
/// on new threads.
pub type ThreadBody = dyn Fn(&Arc<Program>, FuncId, &[i64]) -> Result<i64, Trap> + Send + Sync;

/// A loaded module. Shared by all its threads through an `Arc`.
pub struct Program {
    pub module: Arc<Module>,
    definitions: Box<[Definition]>,
    /// One slot per function: the entry its calls run (see the module docs).
    slots: Box<[Arc<DispatchSlot>]>,
    /// Where code lives and changes: every VM thread registers with it, and every change
    /// of a slot is one of its transactions.
    runtime: Arc<Runtime>,
    memory: Box<[AtomicI64]>,
    pub config: RunConfig,
    pub profile: Profile,
    hot_hook: Option<Box<HotHook>>,
    /// Held from reading a slot to committing its change (see the module docs).
    dispatch_lock: Mutex<()>,
    /// On-stack-replacement entries: `(definition, loop header op, entry)`, published code
    /// taking `(ctx, depth, frame)` (see [`Program::set_osr_entry`]).
    osr_entries: std::sync::RwLock<Vec<(FuncId, u32, usize)>>,
    /// Per definition: activations moved into native code by on-stack replacement.
    pub osr_transfers: Box<[std::sync::atomic::AtomicU64]>,
    patch_observers: std::sync::RwLock<Vec<Box<PatchObserver>>>,
    /// The engine's `--stats` text, in place of the profile's own table.
    stats_report: OnceLock<Box<StatsReport>>,
    /// Run as the process exits, before `--stats` (an engine's files to finish writing).
    exit_hooks: std::sync::RwLock<Vec<Box<dyn Fn() + Send + Sync>>>,
    output: Output,
    threads: Arc<Threads>,
    thread_body: Box<ThreadBody>,
}

impl Program {
    /// Lowers every function of `module`, points every slot at its own definition's
    /// interpreted entry, and sets up its memory. Threads run `thread_body` and register
    /// with `runtime`; `hot_hook`, if any, hears about every batch of profile counts.
    pub fn new(
        module: Arc<Module>,
        config: RunConfig,
        runtime: Arc<Runtime>,
        thread_body: Box<ThreadBody>,
        hot_hook: Option<Box<HotHook>>,
    ) -> Arc<Program> {
        let mut definitions: Box<[Definition]> = module
            .functions
            .iter()
            .enumerate()
            .map(|(i, f)| Definition {
                header: 0,
                func: i as FuncId,
                code: lower_function(&module, f),
            })
            .collect();
        // The boxed slice never moves or shrinks, so these addresses stay valid for the
        // program's lifetime.
        for d in definitions.iter_mut() {
            d.header = header_word(d as *const Definition as usize, false);
        }
        let slots = definitions
            .iter()
            .map(|d| runtime.dispatch_slot(d as *const Definition as usize + 8))
            .collect();
        let n = definitions.len();
        Arc::new(Program {
            memory: zeroed_memory(module.memory_cells as usize),
            profile: Profile::new(definitions.len(), config.profile_batch),
            module,
            definitions,
            slots,
            runtime,
            config,
            hot_hook,
            dispatch_lock: Mutex::new(()),
            osr_entries: Default::default(),
            osr_transfers: (0..n)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
            patch_observers: Default::default(),
            stats_report: OnceLock::new(),
            exit_hooks: std::sync::RwLock::new(Vec::new()),
            output: Output::default(),
            threads: Threads::new(config.thread_stack_bytes()),
            thread_body,
        })
    }

    /// Sets what `--stats` prints, in place of the profile's table (once; later calls are
    /// ignored).
    /// The `--stats` report as it would read now (the engine's, else the profile's).
    pub fn stats_text(&self) -> String {
        match self.stats_report.get() {
            Some(report) => report(self),
            None => self.profile.report(&self.module),
        }
    }

    pub fn set_stats_report(&self, report: Box<StatsReport>) {
        let _ = self.stats_report.set(report);
    }

    /// Adds `hook` to what runs as the process exits, however it exits (a trap, `main`'s
    /// return, a failed write), before `--stats`.
    pub fn add_exit_hook(&self, hook: Box<dyn Fn() + Send + Sync>) {
        self.exit_hooks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(hook);
    }

    /// Adds an observer that hears every `patch` from now on.
    pub fn add_patch_observer(&self, observer: Box<PatchObserver>) {
        self.patch_observers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(observer);
    }

    /// Takes the dispatch lock; a VM thread waiting for it is offline meanwhile.
    fn lock_dispatch(&self) -> std::sync::MutexGuard<'_, ()> {
        let lock = || self.dispatch_lock.lock().unwrap_or_else(|e| e.into_inner());
        match self.dispatch_lock.try_lock() {
            Ok(guard) => guard,
            Err(_) => blocking(lock),
        }
    }

    pub fn definitions(&self) -> &[Definition] {
        &self.definitions
    }

    /// The runtime this program's code lives in.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The entry a call to `f` runs now: one acquire load of f's slot. The other half of
    /// [`Program::patch`] and [`Program::set_entry`].
    #[inline(always)]
    pub fn entry(&self, f: FuncId) -> Entry {
        Entry(self.slots[f as usize].get())
    }

    /// The definition `entry` runs.
    #[inline(always)]
    pub fn definition(&self, entry: Entry) -> &Definition {
        self.resolve(entry).0
    }

    /// The definition `entry` runs, and whether the entry is native code. An interpreted
    /// entry is the address just past its definition's header word, which names the
    /// definition itself.
    #[inline(always)]
    pub fn resolve(&self, entry: Entry) -> (&Definition, bool) {
        let own = entry.addr().wrapping_sub(8);
        let header = entry.header();
        if header != own {
            // A branch, not a select, so an interpreted call's definition need not wait
            // for the header's load.
            return Self::resolve_installed(header);
        }
        // SAFETY: the header names the definition it heads, `own`: a definition of this
        // program (interpreted entries by construction, installed ones by `set_entry`'s
        // contract), and `self.definitions` lives as long as `self`.
        (unsafe { &*(own as *const Definition) }, false)
    }

    /// [`Program::resolve`] for an entry a JIT installed: native code or a stub.
    #[cold]
    #[inline(never)]
    fn resolve_installed<'p>(header: usize) -> (&'p Definition, bool) {
        // SAFETY: as in `resolve`, the header names a definition of the program.
        let def = unsafe { &*((header & !KIND_MASK) as *const Definition) };
        (def, header & NATIVE != 0)
    }

    /// The address of f's dispatch slot, for native code to call through
    /// (`mov rax, imm64(slot); call qword [rax]`). Valid as long as the program.
    pub fn slot_addr(&self, f: FuncId) -> usize {
        self.slots[f as usize].as_ptr() as usize
    }

    /// The header word of an entry that runs `def` (natively if `native`).
    pub fn header_word(&self, def: FuncId, native: bool) -> usize {
        header_word(
            &self.definitions[def as usize] as *const Definition as usize,
            native,
        )
    }

    /// `def`'s entry that has no code behind it, only a header (see [`crate::entry`]).
    pub fn interp_entry(&self, def: FuncId) -> usize {
        &self.definitions[def as usize] as *const Definition as usize + 8
    }

    /// Adds "point f's slot at `entry`" to `tx`, a transaction of this program's runtime.
    ///
    /// # Safety
    /// `entry` must be an entry as [`crate::entry`] describes: published code of `tx`'s
    /// runtime (staged in `tx` or live), 16-aligned, with a header word at `entry - 8` made
    /// by [`Program::header_word`] for a definition of this program whose function takes
    /// as many parameters as `f`; native entries follow the JIT's ABI, interpreted ones are
    /// stubs into the interpreter. Once any slot holds native code, every slot must hold
    /// executable code (a stub where a definition is interpreted).
    pub unsafe fn set_entry<'a>(
        &'a self,
        tx: &mut Transaction<'a>,
        f: FuncId,
        entry: usize,
    ) -> Result<(), jitvm_runtime::Error> {
        tx.set_dispatch(&self.slots[f as usize], entry)
    }

    /// Binds a direct call to `f` (a `call rel32` in code staged in `tx`) to f's dispatch
    /// slot: from this commit on it goes wherever the slot goes
    /// ([`jitvm_runtime::bound_sites`]). An error (the runtime binds no more sites) leaves
    /// the site as its caller wrote it.
    #[cfg(target_arch = "x86_64")]
    pub fn bind_call<'a>(
        &'a self,
        tx: &mut Transaction<'a>,
        site: jitvm_runtime::Rel32Site,
        f: FuncId,
    ) -> Result<(), jitvm_runtime::Error> {
        tx.bind_rel32(site, &self.slots[f as usize])
    }

    /// `patch f g` (spec §5): calls to `f` run g's current entry (its definition and its
    /// compiled code) from now on. One runtime transaction committed `Strong` under the
    /// dispatch lock: when it returns no thread will start a call to `f` that runs anything
    /// else, a thread that happens-after it loads the new entry, and no tier-up in flight
    /// can undo it (see the module docs). A commit that fails (the runtime could not
    /// serialize the other cores) ends the process: the guarantee cannot be kept.
    pub fn patch(&self, f: FuncId, g: FuncId) {
        let start = Instant::now();
        let dispatch = self.lock_dispatch();
        let old_entry = self.slots[f as usize].get();
        let new_entry = self.slots[g as usize].get();
        let mut tx = self.runtime.transaction();
        let committed = tx
            .set_dispatch(&self.slots[f as usize], new_entry)
            .and_then(|()| tx.commit(Guarantee::Strong));
        match committed {
            Ok(commit) => {
                let observers = self
                    .patch_observers
                    .read()
                    .unwrap_or_else(|e| e.into_inner());
                if !observers.is_empty() {
                    let event = PatchEvent {
                        f,
                        g,
                        old_entry,
                        new_entry,
                        old_def: self.definition(Entry(old_entry)).func,
                        new_def: self.definition(Entry(new_entry)).func,
                        latency: start.elapsed(),
                        commit,
                    };
                    for observer in observers.iter() {
                        observer(self, &event);
                    }
                }
            }
            Err(e) => {
                // Exit without the dispatch lock: the compile thread may be waiting for it
                // while holding what `--stats` reads on the way out.
                drop(dispatch);
                let _hold = self.output.flush_and_hold();
                let _ = writeln!(io::stderr(), "error: cannot patch: {e}");
                self.exit(EXIT_INTERNAL)
            }
        }
    }

    /// Tier-ups: for each `(def, entry)` of `code`, every slot that now runs definition
    /// `def` runs `entry` instead, all in `tx`, committed with `guarantee` under the
    /// dispatch lock. Slots that run other definitions (a patched function) are left alone,
    /// so a tier-up never undoes a patch. Returns the commit and, per item of `code`, how
    /// many slots it moved.
    ///
    /// # Safety
    /// Each entry must be as [`Program::set_entry`] requires for definition `def`, and
    /// every slot must hold executable code already (stubs were installed first).
    pub unsafe fn commit_code<'a>(
        &'a self,
        mut tx: Transaction<'a>,
        code: &[(FuncId, usize)],
        guarantee: Guarantee,
    ) -> Result<(jitvm_runtime::CommitInfo, Vec<usize>), jitvm_runtime::Error> {
        let _dispatch = self.lock_dispatch();
        let mut moved = vec![0; code.len()];
        for slot in self.slots.iter() {
            let (running, _) = self.resolve(Entry(slot.get()));
            if let Some(k) = code.iter().position(|&(def, _)| def == running.func) {
                tx.set_dispatch(slot, code[k].1)?;
                moved[k] += 1;
            }
        }
        Ok((tx.commit(guarantee)?, moved))
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
    pub(crate) fn report_hot(&self, def: FuncId, calls: u32, back_edges: u32, header: Option<u32>) {
        self.profile.add(def, calls, back_edges);
        if let Some(hook) = &self.hot_hook {
            hook(self, def, header);
        }
    }

    /// The on-stack-replacement entry of `def` at the loop header at op `header`, if one
    /// was published.
    pub fn osr_entry(&self, def: FuncId, header: u32) -> Option<Entry> {
        let entries = self.osr_entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .find(|&&(d, h, _)| d == def && h == header)
            .map(|&(_, _, entry)| Entry(entry))
    }

    /// Publishes `entry` as def's on-stack-replacement entry at the loop header at op
    /// `header` (in def's lowered code; [`crate::regcode::LoweredFunction::labels`] names
    /// its instruction). An interpreter running def that counts a batch of back-edges to
    /// that header calls it with the frame `R[0 .. slots + height]` and returns what it
    /// returns, as def's `ret`.
    ///
    /// # Safety
    /// `entry` must be published code of this program's runtime that stays published as
    /// long as the program, with a header word for `def` (as [`Program::set_entry`]), that
    /// follows the JIT's ABI for one parameter, a pointer to that frame, and runs def's body
    /// from that loop header with those values.
    pub unsafe fn set_osr_entry(&self, def: FuncId, header: u32, entry: usize) {
        let mut entries = self.osr_entries.write().unwrap_or_else(|e| e.into_inner());
        if !entries.iter().any(|&(d, h, _)| d == def && h == header) {
            entries.push((def, header, entry));
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
        blocking(|| self.threads.join(handle))
    }

    /// A VM thread: registered with the runtime for its whole life (so code is never freed
    /// under it, and native code and callbacks reach it as the current thread), running the
    /// engine's body.
    fn run_thread(self: &Arc<Self>, f: FuncId, args: &[i64]) -> i64 {
        let _registration = match self.runtime.register_thread() {
            Ok(handle) => handle,
            Err(e) => {
                let _hold = self.output.flush_and_hold();
                let _ = writeln!(io::stderr(), "error: cannot start a VM thread: {e}");
                self.exit(EXIT_INTERNAL)
            }
        };
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

    /// The last step of every ending: the exit hooks, `--stats` if asked for, then the exit.
    fn exit(&self, status: i32) -> ! {
        for hook in self
            .exit_hooks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            hook();
        }
        if self.config.stats {
            let _ = io::stderr().write_all(self.stats_text().as_bytes());
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
