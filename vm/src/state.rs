//! Per-thread interpreter state, apart from the loop that runs it (as clox keeps `vm.h` apart
//! from `vm.c`, and Lua `lstate.c` from `lvm.c`).
//!
//! Frames live in one growable register file per thread. Calls and returns push and pop a
//! small frame record instead of recursing on the native stack, so `--max-depth 1000000`
//! needs no native stack at all.

use crate::bytecode::FuncId;
use crate::entry::Entry;
use crate::program::{Definition, Program};
use crate::threads::quiescent;
use crate::trap::Trap;
use std::cell::Cell;
use std::ffi::c_void;
use std::sync::Arc;

/// How the interpreter calls native code: the engine's bridge, given the program, this
/// thread's state (for callbacks into a nested interpreter), the native entry, the callee's
/// call depth (`main` is 1) and the arguments.
pub type NativeCall = fn(&Arc<Program>, &mut ThreadState, Entry, u32, &[i64]) -> Result<i64, Trap>;

/// A suspended caller: the definition it runs, where it resumes, where its frame starts.
pub(crate) struct Frame {
    pub(crate) def: *const Definition,
    pub(crate) pc: usize,
    pub(crate) base: usize,
}

/// What one VM thread keeps for the interpreter: its registers, its suspended frames, and its
/// share of the profile. The engine's thread body makes one per thread and hands it to every
/// [`crate::interp::run`] on that thread.
pub struct ThreadState {
    /// All frames of the thread, one after the other (a callee's frame starts at its
    /// caller's first argument slot).
    pub(crate) regs: Vec<i64>,
    /// The suspended callers of every run on this thread, innermost last.
    pub(crate) frames: Vec<Frame>,
    /// Registers below this are in use by a run suspended lower on the native stack (one
    /// that called out to native code); a new run puts its first frame here. 0 when no run is
    /// suspended. The run that calls out sets it and restores it when the call returns.
    pub(crate) reg_top: usize,
    /// Per definition: calls / back-edges left before the next report to the shared profile.
    /// Cells, because the baseline JIT's code counts in them too (through the pointers
    /// [`ThreadState::counters`] gives), while this thread's interpreter is suspended.
    calls_left: Box<[Cell<u32>]>,
    back_edges_left: Box<[Cell<u32>]>,
    /// The profile's batch size: what a counter restarts from.
    batch: u32,
    /// Back-edge batches until this thread next offers its CPU (see `offer_cpu`).
    batches_until_yield: u32,
    /// The bridge to native code, on a thread that may meet some (see [`NativeCall`]).
    pub(crate) native_call: Option<NativeCall>,
    /// The engine's per-thread native context, for its bridge and callbacks.
    native_context: *mut c_void,
    /// The interpreter calls or enters native code only while the native stack pointer is
    /// above this address; below it, it runs the callee itself (see [`ThreadState::set_native`]).
    native_floor: usize,
}

/// How many loop iterations a thread runs between offers of its CPU, when the program has
/// more running threads than the machine has CPUs.
const BACK_EDGES_PER_YIELD: u32 = 16 * crate::profile::PROFILE_BATCH;

/// Which counter a batch report is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Counter {
    Calls = 0,
    BackEdges = 1,
}

impl ThreadState {
    /// The state of a new thread of `program`.
    pub fn new(program: &Program) -> Self {
        let batch = program.profile.batch();
        let counters = || {
            (0..program.definitions().len())
                .map(|_| Cell::new(batch))
                .collect()
        };
        ThreadState {
            regs: vec![0; 4096],
            frames: Vec::with_capacity(256),
            reg_top: 0,
            calls_left: counters(),
            back_edges_left: counters(),
            batch,
            batches_until_yield: BACK_EDGES_PER_YIELD / batch,
            native_call: None,
            native_context: std::ptr::null_mut(),
            native_floor: usize::MAX,
        }
    }

    /// Lets this thread's interpreter call native entries through `call`, with `context`
    /// (the engine's, opaque here), while this thread's native stack is above `floor`.
    /// Without it, or below the floor, the interpreter runs a native entry's definition
    /// itself: the same behaviour, only slower. Interpreted frames are on the heap, so a
    /// recursion that has used up the native stack goes on, as deep as `--max-depth` allows.
    pub fn set_native(&mut self, call: NativeCall, context: *mut c_void, floor: usize) {
        self.native_call = Some(call);
        self.native_context = context;
        self.native_floor = floor;
    }

    /// The bridge to native code, if this thread has one and the native stack has room for
    /// a call through it here.
    #[inline(always)]
    pub(crate) fn native_call_here(&self) -> Option<NativeCall> {
        let call = self.native_call?;
        // Where this frame is on the native stack: near enough to the stack pointer, since
        // the floor leaves far more room than any frame between here and the call.
        let marker = 0u8;
        let here = std::hint::black_box(&marker) as *const u8 as usize;
        (here > self.native_floor).then_some(call)
    }

    /// The context given to [`ThreadState::set_native`] (null before).
    pub fn native_context(&self) -> *mut c_void {
        self.native_context
    }

    /// Adds the counts not yet reported to the shared profile (at thread exit).
    pub fn flush_profile(&mut self, program: &Program) {
        for def in 0..self.calls_left.len() {
            let calls = self.batch - self.calls_left[def].replace(self.batch);
            let back_edges = self.batch - self.back_edges_left[def].replace(self.batch);
            if calls + back_edges > 0 {
                program.report_hot(def as FuncId, calls, back_edges, None);
            }
        }
    }

    /// Where native code counts: the calls-left and back-edges-left arrays, one `u32` per
    /// definition. Code that decrements a counter to 0 calls [`ThreadState::report_if_due`],
    /// which restarts it. Valid as long as this state; used only while this thread runs.
    pub fn counters(&self) -> (*const Cell<u32>, *const Cell<u32>) {
        (self.calls_left.as_ptr(), self.back_edges_left.as_ptr())
    }

    /// Native code's slow path for its counters: if `def`'s `counter` has reached 0, report
    /// the batch and restart the counter. Not a safepoint: native code polls on its own.
    pub fn report_if_due(&mut self, program: &Program, def: FuncId, counter: Counter) {
        let i = def as usize;
        match counter {
            Counter::Calls if self.calls_left[i].get() == 0 => {
                self.calls_left[i].set(self.batch);
                program.report_hot(def, self.batch, 0, None);
            }
            Counter::BackEdges if self.back_edges_left[i].get() == 0 => {
                self.back_edges_left[i].set(self.batch);
                program.report_hot(def, 0, self.batch, None);
                self.offer_cpu(program);
            }
            _ => {}
        }
    }

    #[inline(always)]
    pub(crate) fn count_call(&mut self, program: &Program, def: FuncId) {
        // SAFETY: `def` indexes a definition, and both arrays have one entry per definition.
        let left = unsafe { self.calls_left.get_unchecked(def as usize) };
        left.set(left.get() - 1);
        if left.get() == 0 {
            self.report_calls(program, def);
        }
    }

    /// Counts a back-edge of `def` to op `header`; true when that completed a batch, which
    /// is when the interpreter looks for an on-stack-replacement entry.
    #[inline(always)]
    pub(crate) fn count_back_edge(&mut self, program: &Program, def: FuncId, header: u32) -> bool {
        // SAFETY: as in `count_call`.
        let left = unsafe { self.back_edges_left.get_unchecked(def as usize) };
        left.set(left.get() - 1);
        if left.get() == 0 {
            self.report_back_edges(program, def, header);
            return true;
        }
        false
    }

    /// A batch of calls for the profile; the batch is also a safepoint (see
    /// [`crate::threads::quiescent`]). Out of line: it runs once per batch.
    #[cold]
    #[inline(never)]
    fn report_calls(&mut self, program: &Program, def: FuncId) {
        self.calls_left[def as usize].set(self.batch);
        program.report_hot(def, self.batch, 0, None);
        quiescent();
    }

    /// A batch of back-edges: for the profile, a safepoint, and a chance to offer the CPU.
    #[cold]
    #[inline(never)]
    fn report_back_edges(&mut self, program: &Program, def: FuncId, header: u32) {
        self.back_edges_left[def as usize].set(self.batch);
        program.report_hot(def, 0, self.batch, Some(header));
        quiescent();
        self.offer_cpu(program);
    }

    /// A loop that runs long without calling anything may be a spin-wait for another thread
    /// (`mload` until a flag changes). When threads outnumber CPUs, the thread it waits for may
    /// not be running at all, and spinning out a whole scheduler time slice (milliseconds)
    /// delays it. So long loops offer the CPU now and then, as a VM safepoint would; a
    /// compute-bound loop loses only a context switch per few hundred microseconds.
    #[cold]
    fn offer_cpu(&mut self, program: &Program) {
        self.batches_until_yield -= 1;
        if self.batches_until_yield == 0 {
            self.batches_until_yield = BACK_EDGES_PER_YIELD / self.batch;
            if program.oversubscribed() {
                std::thread::yield_now();
            }
        }
    }

    /// Makes the register file at least `len` slots long. Moves it: callers re-derive pointers.
    /// Running out of memory for frames is the program's stack overflowing, not a crash.
    #[cold]
    pub(crate) fn grow(&mut self, len: usize) -> Result<(), Trap> {
        let new_len = len.max(self.regs.len() * 2);
        self.regs
            .try_reserve_exact(new_len - self.regs.len())
            .map_err(|_| Trap::StackOverflow)?;
        self.regs.resize(new_len, 0);
        Ok(())
    }
}
