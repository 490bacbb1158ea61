//! A standalone test machine for native code: compiles a module's functions (or gives them
//! interpreter stubs backed by [`reference`], a tiny evaluator), one dispatch slot per
//! function, test callbacks writing into a buffer, and threads that enter native code
//! through the arity bridge. The VM proper does all this for real; these tests need none of
//! it.
#![allow(dead_code)]

pub mod code_space;
pub mod reference;

use code_space::{slot_addr, slot_target, CodeSpace, Slot};
use jitvm_jit::abi::{
    callbacks_for, CallbackHost, Callbacks, CompiledCode, ThreadContext, KIND_NATIVE,
    STACK_HEADROOM,
};
use jitvm_jit::baseline::{self, CompileEnv};
use jitvm_jit::stubs;
use jitvm_vm::state::Counter;
use jitvm_vm::threads::Reaper;
use jitvm_vm::Trap;
use jitvm_vm::{parse_module, FuncId, Function, Module};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// How a function runs in a test machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// Baseline-compiled.
    Native,
    /// An interpreter stub calling [`reference::eval`].
    Interp,
}

/// What a program did: its output and how `main` ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub result: Result<i64, Trap>,
}

impl Outcome {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// A definition as stubs see it: `def_addr` points at one of these (8-aligned).
#[repr(align(8))]
pub struct TestDef {
    pub func: FuncId,
}

pub struct Machine {
    pub module: Module,
    pub space: CodeSpace,
    pub slots: Box<[Slot]>,
    pub defs: Box<[TestDef]>,
    /// Per function: the compiled code (native tier) or stub, and its base address.
    pub code: Vec<(usize, CompiledCode)>,
    pub tiers: Vec<Tier>,
    pub memory: Box<[AtomicI64]>,
    pub max_depth: u64,
    /// Native stack per allowed call level for VM threads: the VM's 256 fits native code;
    /// the reference evaluator recurses natively and, unoptimised, needs far more.
    pub stack_per_level: AtomicUsize,
    /// Nonzero: every poll takes its slow path. Each thread's context starts with this value
    /// in its poll word, and [`Machine::end`] sets the word of every live context.
    pub poll_word: Box<AtomicU32>,
    /// The poll words of the thread contexts alive now (their addresses).
    live_polls: Mutex<HashSet<usize>>,
    pub safepoints: AtomicU64,
    pub interp_calls: AtomicU64,
    pub output: Mutex<Vec<u8>>,
    /// Unjoined threads: their OS thread and where they leave their result.
    threads: Mutex<HashMap<i64, (std::thread::ThreadId, Arc<Completion>)>>,
    /// Every OS thread started, joined once it finishes (never detached: see the VM's
    /// `threads::Reaper`).
    reaper: Arc<Reaper>,
    /// Spawned threads still running (at most 255 besides `main`, spec §4).
    running: AtomicUsize,
    next_handle: AtomicI64,
    /// How the program ended (main returned, or a thread trapped) and its output then.
    ended: Mutex<Option<Outcome>>,
    ended_cv: std::sync::Condvar,
    callbacks: Callbacks,
}

#[derive(Default)]
struct Completion {
    result: Mutex<Option<Result<i64, Trap>>>,
    done: std::sync::Condvar,
}

/// Per VM thread: what `ctx.vm` points at.
struct ThreadEnv {
    machine: Arc<Machine>,
}

/// The machine's callbacks: [`ThreadEnv`]'s.
pub fn callbacks() -> Callbacks {
    callbacks_for::<ThreadEnv>()
}

impl Machine {
    /// Every function native.
    pub fn load(src: &str, max_depth: u64) -> Arc<Machine> {
        Self::load_with(src, max_depth, |_, _| Tier::Native)
    }

    pub fn load_with(
        src: &str,
        max_depth: u64,
        tier: impl Fn(usize, &Function) -> Tier,
    ) -> Arc<Machine> {
        let module = parse_module(src.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"));
        Self::from_module(module, max_depth, tier)
    }

    pub fn from_module(
        module: Module,
        max_depth: u64,
        tier: impl Fn(usize, &Function) -> Tier,
    ) -> Arc<Machine> {
        Self::build(module, max_depth, tier, callbacks())
    }

    /// Every function native, calling `callbacks` instead of the machine's own.
    pub fn from_module_with_callbacks(
        module: Module,
        max_depth: u64,
        callbacks: Callbacks,
    ) -> Arc<Machine> {
        Self::build(module, max_depth, |_, _| Tier::Native, callbacks)
    }

    fn build(
        module: Module,
        max_depth: u64,
        tier: impl Fn(usize, &Function) -> Tier,
        callbacks: Callbacks,
    ) -> Arc<Machine> {
        let n = module.functions.len();
        let space = CodeSpace::new();
        let slots = (0..n).map(|_| space.new_slot()).collect();
        let mut m = Machine {
            memory: (0..module.memory_cells)
                .map(|_| AtomicI64::new(0))
                .collect(),
            tiers: module
                .functions
                .iter()
                .enumerate()
                .map(|(i, f)| tier(i, f))
                .collect(),
            module,
            space,
            slots,
            defs: (0..n as FuncId).map(|func| TestDef { func }).collect(),
            code: Vec::new(),
            max_depth,
            stack_per_level: AtomicUsize::new(256),
            poll_word: Box::new(AtomicU32::new(0)),
            live_polls: Mutex::new(HashSet::new()),
            safepoints: AtomicU64::new(0),
            interp_calls: AtomicU64::new(0),
            output: Mutex::new(Vec::new()),
            threads: Mutex::new(HashMap::new()),
            reaper: Reaper::new(),
            running: AtomicUsize::new(0),
            next_handle: AtomicI64::new(1),
            ended: Mutex::new(None),
            ended_cv: std::sync::Condvar::new(),
            callbacks,
        };
        m.code = m.install();
        Arc::new(m)
    }

    fn install(&self) -> Vec<(usize, CompiledCode)> {
        let env_for = |f: usize| CompileEnv {
            calls: jitvm_vm::CallMode::Slots,
            slot_addr: self.slots.iter().map(slot_addr).collect(),
            callbacks: self.callbacks,
            header: self.def_addr(f as FuncId) | KIND_NATIVE,
            count_as: None,
        };
        let mut batch = self.space.batch();
        let mut code = Vec::new();
        for (f, func) in self.module.functions.iter().enumerate() {
            let (base, c) = match self.tiers[f] {
                Tier::Native => batch
                    .stage(baseline::max_code_size(func), |addr| {
                        baseline::compile(func, &self.module, &env_for(f), addr)
                    })
                    .unwrap_or_else(|e| panic!("compiling {}: {e}", func.name)),
                Tier::Interp => batch
                    .stage(stubs::MAX_STUB_SIZE, |addr| {
                        stubs::compile_stub(
                            func.params.len(),
                            self.def_addr(f as FuncId),
                            &self.callbacks,
                            addr,
                        )
                    })
                    .expect("stub"),
            };
            batch.point(&self.slots[f], base + c.entry_offset);
            code.push((base, c));
        }
        batch.commit();
        code
    }

    pub fn def_addr(&self, f: FuncId) -> usize {
        &self.defs[f as usize] as *const TestDef as usize
    }

    pub fn func_id(&self, name: &str) -> FuncId {
        self.module.function_index(name).expect("function exists")
    }

    /// The entry point calls to `f` run now.
    pub fn entry(&self, f: FuncId) -> usize {
        slot_target(&self.slots[f as usize])
    }

    /// Runs `main` on a fresh thread until it returns or any thread traps, which ends the
    /// program (spec §6): output after that is not the program's. Threads still running
    /// then stop at their next safepoint and sleep forever.
    pub fn run_main(self: &Arc<Self>) -> Outcome {
        let main = self.func_id("main");
        let m = Arc::clone(self);
        let builder = std::thread::Builder::new().stack_size(self.thread_stack_bytes());
        self.reaper
            .spawn(builder, move || {
                let r = m.run_here(main, &[]);
                m.end(r);
            })
            .expect("thread");
        let mut ended = self.ended.lock().unwrap();
        loop {
            if let Some(outcome) = ended.as_ref() {
                return Outcome {
                    stdout: outcome.stdout.clone(),
                    result: outcome.result,
                };
            }
            ended = self.ended_cv.wait(ended).unwrap();
        }
    }

    /// The program ends with `result` unless it already ended.
    pub fn end(&self, result: Result<i64, Trap>) {
        let out = self.output.lock().unwrap();
        let mut ended = self.ended.lock().unwrap();
        if ended.is_none() {
            *ended = Some(Outcome {
                stdout: out.clone(),
                result,
            });
            self.poll_word.store(1, Ordering::SeqCst);
            for &word in self.live_polls.lock().unwrap().iter() {
                // SAFETY: a live context's word: `with_context` removes it (under this lock)
                // before the context goes away.
                unsafe { &*(word as *const AtomicU32) }.store(1, Ordering::SeqCst);
            }
            self.ended_cv.notify_all();
        }
    }

    /// At a safepoint: a thread of an ended program stops here for good.
    pub fn stop_if_ended(&self) {
        if self.ended.lock().unwrap().is_some() {
            loop {
                std::thread::park();
            }
        }
    }

    /// Calls function `name` with `args` at depth 1 on a fresh VM thread.
    pub fn call(self: &Arc<Self>, name: &str, args: &[i64]) -> Result<i64, Trap> {
        self.run_on_thread(self.func_id(name), args.to_vec())
    }

    fn run_on_thread(self: &Arc<Self>, f: FuncId, args: Vec<i64>) -> Result<i64, Trap> {
        let m = Arc::clone(self);
        std::thread::Builder::new()
            .stack_size(self.thread_stack_bytes())
            .spawn(move || m.run_here(f, &args))
            .expect("thread")
            .join()
            .expect("no panic")
    }

    /// Stack for a VM thread, sized like the VM's `RunConfig::thread_stack_bytes`.
    pub fn thread_stack_bytes(&self) -> usize {
        (8 << 20) + self.max_depth as usize * self.stack_per_level.load(Ordering::Relaxed)
    }

    /// Runs `f(args)` at depth 1 on this thread.
    pub fn run_here(self: &Arc<Self>, f: FuncId, args: &[i64]) -> Result<i64, Trap> {
        self.run_here_with(f, args, |_| {})
    }

    /// [`Machine::run_here`] with the thread context adjusted first.
    pub fn run_here_with(
        self: &Arc<Self>,
        f: FuncId,
        args: &[i64],
        adjust: impl FnOnce(&mut ThreadContext),
    ) -> Result<i64, Trap> {
        let entry = self.entry(f);
        self.with_context(|ctx| {
            // SAFETY: ctx points at a valid context for this thread.
            adjust(unsafe { &mut *ctx });
            // SAFETY: the slot points at live code for f's arity (installed above, never
            // freed while the machine lives); ctx is this thread's and outlives the call.
            unsafe { self.space.call(entry, ctx, 1, args) }.into_result()
        })
    }

    /// Runs `f` with a thread context for this thread (for calling native code by hand).
    pub fn with_context<R>(self: &Arc<Self>, f: impl FnOnce(*mut ThreadContext) -> R) -> R {
        let mut env = ThreadEnv {
            machine: Arc::clone(self),
        };
        let mut ctx = self.context(&mut env);
        let word = &ctx.poll as *const AtomicU32 as usize;
        self.live_polls.lock().unwrap().insert(word);
        struct Dead<'a>(&'a Machine, usize);
        impl Drop for Dead<'_> {
            fn drop(&mut self) {
                self.0.live_polls.lock().unwrap().remove(&self.1);
            }
        }
        let _dead = Dead(self, word);
        // After the insert: an `end` that missed this context set the flag before.
        ctx.poll
            .fetch_or(self.poll_word.load(Ordering::SeqCst), Ordering::SeqCst);
        f(&mut ctx)
    }

    fn context(&self, env: &mut ThreadEnv) -> ThreadContext {
        ThreadContext {
            memory_base: if self.memory.is_empty() {
                std::ptr::NonNull::dangling().as_ptr()
            } else {
                self.memory.as_ptr()
            },
            memory_cells: self.memory.len() as u64,
            max_depth: self.max_depth,
            stack_limit: stack_low() + STACK_HEADROOM,
            vm: env as *mut ThreadEnv as *mut std::ffi::c_void,
            // Test machines compile without profile counters (`count_as: None`).
            calls_left: std::ptr::null(),
            back_edges_left: std::ptr::null(),
            poll: AtomicU32::new(self.poll_word.load(Ordering::SeqCst)),
        }
    }

    pub fn print(&self, v: i64) {
        self.output
            .lock()
            .unwrap()
            .extend_from_slice(format!("{v}\n").as_bytes());
    }

    pub fn putc(&self, v: i64) {
        self.output.lock().unwrap().push(v as u8);
    }

    pub fn spawn(self: &Arc<Self>, f: FuncId, args: Vec<i64>) -> Result<i64, Trap> {
        let mut threads = self.threads.lock().unwrap();
        if self.running.fetch_add(1, Ordering::SeqCst) >= 255 {
            self.running.fetch_sub(1, Ordering::SeqCst);
            return Err(Trap::TooManyThreads);
        }
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let m = Arc::clone(self);
        let completion = Arc::new(Completion::default());
        let finished = Arc::clone(&completion);
        let builder = std::thread::Builder::new().stack_size(self.thread_stack_bytes());
        let t = self.reaper.spawn(builder, move || {
            let r = m.run_here(f, &args);
            if let Err(t) = r {
                m.end(Err(t));
            }
            m.running.fetch_sub(1, Ordering::SeqCst);
            *finished.result.lock().unwrap() = Some(r);
            finished.done.notify_all();
        });
        let Ok(id) = t else {
            self.running.fetch_sub(1, Ordering::SeqCst);
            return Err(Trap::TooManyThreads);
        };
        threads.insert(handle, (id, completion));
        Ok(handle)
    }

    pub fn join(&self, h: i64) -> Result<i64, Trap> {
        let completion = {
            let mut threads = self.threads.lock().unwrap();
            match threads.get(&h) {
                None => return Err(Trap::InvalidThreadHandle),
                Some((id, _)) if *id == std::thread::current().id() => {
                    return Err(Trap::InvalidThreadHandle)
                }
                Some(_) => threads.remove(&h).unwrap().1,
            }
        };
        let mut result = completion.result.lock().unwrap();
        loop {
            if let Some(r) = *result {
                return r;
            }
            result = completion.done.wait(result).unwrap();
        }
    }

    /// `patch f g`.
    pub fn patch(&self, f: FuncId, g: FuncId) {
        let target = self.entry(g);
        self.space.repoint(&self.slots[f as usize], target);
    }
}

/// Zeroed cells from the allocator's zeroed path (fresh pages), as the VM allocates them.
fn zeroed_memory(cells: usize) -> Box<[AtomicI64]> {
    let plain: Box<[i64]> = vec![0i64; cells].into_boxed_slice();
    let len = plain.len();
    let ptr = Box::into_raw(plain) as *mut AtomicI64;
    // SAFETY: AtomicI64 has the size and alignment of i64, and the allocation came from a
    // Box<[i64]> of `len` elements with that layout.
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) }
}

/// The lowest address of this thread's stack (above its guard page).
pub fn stack_low() -> usize {
    // SAFETY: pthread_getattr_np fills `attr` for the calling thread; it is destroyed after
    // reading the stack range out of it.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        assert_eq!(libc::pthread_getattr_np(libc::pthread_self(), &mut attr), 0);
        let mut addr = std::ptr::null_mut();
        let mut size = 0;
        assert_eq!(libc::pthread_attr_getstack(&attr, &mut addr, &mut size), 0);
        let mut guard = 0;
        libc::pthread_attr_getguardsize(&attr, &mut guard);
        libc::pthread_attr_destroy(&mut attr);
        addr as usize + guard
    }
}

impl CallbackHost for ThreadEnv {
    type Def = TestDef;

    fn print(&mut self, value: i64) {
        self.machine.print(value);
    }

    fn putc(&mut self, value: i64) {
        self.machine.putc(value);
    }

    fn params(&self, f: FuncId) -> usize {
        self.machine.module.functions[f as usize].params.len()
    }

    fn spawn(&mut self, f: FuncId, args: &[i64]) -> Result<i64, Trap> {
        self.machine.spawn(f, args.to_vec())
    }

    fn join(&mut self, handle: i64) -> Result<i64, Trap> {
        self.machine.join(handle)
    }

    fn patch(&mut self, f: FuncId, g: FuncId) {
        self.machine.patch(f, g);
    }

    fn safepoint(&mut self) {
        self.machine.safepoints.fetch_add(1, Ordering::Relaxed);
        self.machine.stop_if_ended();
        // Clobber every caller-saved register the ABI lets a callback clobber, so a slow path
        // that forgot to save one fails the tests.
        clobber_caller_saved();
    }

    fn profile(&mut self, _: FuncId, _: Counter) {
        unreachable!("test machines compile without profile counters")
    }

    fn def_params(&self, def: &TestDef) -> usize {
        self.params(def.func)
    }

    fn call_interp(
        &mut self,
        ctx: *mut ThreadContext,
        depth: u64,
        def: &TestDef,
        args: &[i64],
    ) -> Result<i64, Trap> {
        self.machine.interp_calls.fetch_add(1, Ordering::Relaxed);
        // SAFETY: ctx is the context of the thread native code runs on, passed to this call.
        unsafe { reference::eval(&self.machine, ctx, depth, def.func, args) }
    }
}

/// Writes junk into every caller-saved general register.
#[inline(never)]
pub fn clobber_caller_saved() {
    // SAFETY: only caller-saved registers are written, and all are declared clobbered.
    unsafe {
        std::arch::asm!(
            "mov rax, 0x5A5A5A5A5A5A5A5A",
            "mov rcx, rax", "mov rdx, rax", "mov rsi, rax", "mov rdi, rax",
            "mov r8, rax", "mov r9, rax", "mov r10, rax", "mov r11, rax",
            out("rax") _, out("rcx") _, out("rdx") _, out("rsi") _, out("rdi") _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        );
    }
}

/// Reads a conformance or example file relative to the workspace root.
pub fn workspace_file(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
