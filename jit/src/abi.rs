//! # The native ABI: the one contract every native tier of jitvm follows
//!
//! The baseline JIT (dynasm, [`crate::baseline`]), the interpreter stubs ([`crate::stubs`])
//! and the optimizing JIT (Cranelift, `CallConv::SystemV`, `crate::opt`) all produce code that obeys this
//! page unchanged, so code from any tier calls code from any other, and the VM calls all of
//! them through one bridge ([`call_native`]). x86-64 only; other targets refuse native tiers.
//!
//! ## Functions
//!
//! A `.bc` function with `P` parameters (0..=8) compiles to
//!
//! ```text
//! extern "sysv64" fn(ctx: *mut ThreadContext, depth: u64, p0: i64, .., p{P-1}: i64) -> NativeRet
//! ```
//!
//! so `rdi` = ctx, `rsi` = depth, `rdx, rcx, r8, r9` = p0..p3, p4..p7 on the stack (SysV
//! order), and the [`NativeRet`] comes back in `rax` (value) : `rdx` (status). `depth` is the
//! callee's own call depth: the caller's depth + 1, `main` is 1. Registers follow SysV:
//! `rbx, rbp, r12..r15` are preserved, everything else may be clobbered; `rsp` is 16-byte
//! aligned at every `call`.
//!
//! ## Traps: a status every caller checks
//!
//! `status` 0 is a normal return of `value`; anything else is a trap code ([`status_of`],
//! [`trap_of`]: 1 division by zero, 2 memory out of bounds, 3 stack overflow, 4 assertion
//! failed, 5 invalid thread handle, 6 too many threads). After **every** call (to native code
//! or to a Rust callback that returns a status) the caller tests the status and, when nonzero,
//! returns at once with the same status through its ordinary epilogue (callee-saved registers
//! and `rsp` restored). Nothing ever unwinds or `longjmp`s across Rust frames: a trap is just
//! a chain of early returns back to the Rust code that entered native code, which reports it.
//! Traps a function detects itself (division by zero, out of bounds, assertion, depth) leave
//! through the same exit with the code in `rdx`.
//!
//! ## Depth and the native stack
//!
//! Only depth traps: the prologue traps `stack overflow` when `depth > ctx.max_depth`,
//! exactly the interpreter's rule (a call that would nest deeper than the limit traps). The
//! native stack running short is not the program's business: when
//! `rsp - frame_bytes < ctx.stack_limit` the call runs in the interpreter instead, whose
//! frames live on the heap, so a program traps where the interpreter traps whatever its
//! frames cost natively. The baseline's prologue goes, before building its frame, to a copy of
//! an interpreter stub's body (`call_interp` with its own definition); the optimizing tier,
//! whose check follows Cranelift's prologue, calls `call_interp` from a cold block. A frame
//! of at most [`SMALL_FRAME`] bytes may compare `rsp` itself, so frames reach at most that
//! far below the limit; no native frame is larger than [`MAX_NATIVE_FRAME`] (a function that
//! would need more stays interpreted). The interpreter, for its part, calls or enters native
//! code only while at least [`NATIVE_ENTRY_ROOM`] is left above the limit (the VM's
//! `ThreadState::set_native`), so the interpreter behind a stack-short call never calls
//! native code again, and an on-stack-replacement entry always has room for its frame.
//!
//! A function keeps its depth (for the baseline: `depth + 1` in a frame slot) and passes
//! `depth + 1` to its callees: no read-modify-write of memory per call. The VM sets
//! `stack_limit` some way above the real end of the thread's stack: Rust callbacks (and the
//! interpreter behind a stub) run below the deepest native frame, so leave them room (at
//! least [`STACK_HEADROOM`]).
//!
//! ## The per-thread context
//!
//! [`ThreadContext`] is `#[repr(C)]` with fixed offsets (`CTX_*`, checked by tests). It
//! belongs to one VM thread and lives as long as that thread runs native code. Native code
//! reads it; only the VM writes it. `memory_cells` equals the module's `memory` size, which
//! compiled code also bakes in as a constant (`msize`, bounds checks).
//!
//! ## Memory
//!
//! `mload` is a bounds check (unsigned `i < cells`, else trap 2) and a plain `mov` (an acquire
//! load on x86-64's TSO); `mstore` a plain `mov` store (a release store on TSO); `atomic_add`
//! is `lock xadd` and `cas` is `lock cmpxchg` (both sequentially consistent).
//!
//! ## Calls between functions: dispatch slots
//!
//! Each function has one dispatch slot, an 8-byte word the VM owns (a runtime
//! `DispatchSlot`), holding the entry point calls to that function run now. A call is exactly
//!
//! ```text
//! mov rax, imm64(slot address)
//! call qword [rax]
//! ```
//!
//! so loading the target and transferring control are one instruction: the runtime's
//! `Guarantee::Strong` covers exactly that (once a commit returns, no thread starts the old
//! target), which `mov rax, [slot]; call rax` would not. `patch F G` is a commit that points
//! F's slot at what G's slot holds. Optimized code, whose calls Cranelift places, instead
//! makes a direct `call rel32` to F's call stub, `mov rax, imm64(slot); jmp qword [rax]`: the
//! same covered load-and-transfer, as a tail jump (`crate::opt::call_stubs`).
//!
//! ## Direct calls (`--calls direct`)
//!
//! With [`jitvm_vm::CallMode::Direct`] a call is instead `call rel32` straight to the
//! callee's entry (the baseline pads it so the displacement is aligned; the optimizing tier's
//! calls to call stubs are retargeted), listed in [`CompiledCode::direct_calls`]. The
//! installer binds each to the callee's dispatch slot in the transaction that stages it
//! (`Transaction::bind_rel32`): the runtime then keeps it equal to the slot, rewriting it by
//! the `int3` protocol in every commit that moves the slot (`jitvm_runtime::bound_sites`), so
//! `patch` stays Strong. A call the runtime has no room to bind goes to the callee's call
//! stub.
//!
//! ## Entry headers
//!
//! Every entry point `E` (compiled function or interpreter stub) is 16-byte aligned and has an
//! 8-byte header word at `E - 8`: `def_addr | kind`, kind bit 0 = 1 for native code
//! ([`KIND_NATIVE`]), 0 for an interpreter stub ([`KIND_STUB`]). `def_addr` is 8-aligned and
//! opaque to the compilers (the VM's definition). A blob is laid out as 8 bytes of zero, the
//! header at [`HEADER_OFFSET`] and the entry at [`ENTRY_OFFSET`]; blobs are 16-aligned.
//! Optimized code pads further, to put its entry on a cache line ([`OPT_ENTRY_OFFSET`]):
//! every [`CompiledCode`] says where its entry is.
//!
//! ## Safepoints
//!
//! Native code polls at its entry and at every backward jump with one compare against the
//! context register: `cmp dword [ctx + CTX_POLL], 0; jne slow` (a compiler may test a leaf
//! base case first and poll only on the path past it: that path cannot loop or call). The
//! poll word is this thread's own, in its [`ThreadContext`], lent to the runtime for the
//! thread's life (`ThreadHandle::with_poll_word`): the runtime sets it only to ask *this*
//! thread to report, because a retirement waits for its horizon, and the thread clears it
//! when it answers. A thread whose stack merely pins retired code has answered and is not
//! asked again, so a loop that runs long in retired code runs at full speed (see
//! `docs/cross-modifying-code.md`, "Asking one thread"). The out-of-line slow path saves every live value,
//! calls `safepoint(ctx)`, restores and resumes. The VM's `safepoint` is the runtime's native
//! safepoint (`ThreadHandle::safepoint_from_native`): it pins the code whose return addresses
//! are on this thread's stack and reports the thread quiescent without leaving, so a thread in
//! a long native loop never holds back the freeing of code it is not running. At a poll,
//! native code holds no code address except the return addresses on its stack: that is what
//! makes the report true.
//!
//! ## Profiling: counters for tiering up
//!
//! Baseline code counts, so that a tiering policy can move it up to optimized code; optimized
//! code does not. At its entry (past a leading base case, with the entry poll) and at every
//! backward jump (with that poll), function `f` decrements its counter in the thread's
//! arrays, `ctx.calls_left[f]` or `ctx.back_edges_left[f]`, and goes to the poll's slow path
//! when it reaches 0 as when the poll word is set:
//!
//! ```text
//! mov rax, [rbx + CTX_CALLS_LEFT]   ; or CTX_BACK_EDGES_LEFT
//! sub dword [rax + 4*f], 1
//! jz  slow
//! cmp dword [rbx + CTX_POLL], 0
//! jne slow
//! ```
//!
//! The slow path calls `profile(ctx, f, counter)`, which reports the batch to the VM's profile
//! if the counter is 0 (and restarts it), then runs the safepoint. The arrays are the
//! interpreter's own ([`jitvm_vm::state::ThreadState::counters`]), so a function's events
//! count the same whichever tier ran them.
//!
//! ## On-stack-replacement entries
//!
//! An entry at a loop header of function F (`baseline::compile_osr`, or `opt::compile` with
//! `osr`) is a native function `(ctx, depth, frame: *const i64) -> NativeRet` with F's
//! header word: `depth` is the running activation's own, and `frame` points at the
//! interpreter's frame at the header, F's slots (parameters, then locals) followed by the
//! operand stack there (its height is the verifier's). It builds F's frame, reads `frame`
//! before anything else, and runs F's body from the header; its result is the activation's.
//!
//! ## Threads and the runtime: the contract
//!
//! 1. Every VM thread is registered with the program's runtime for its whole life.
//! 2. Every entry into native code from Rust goes through the runtime's
//!    `ThreadHandle::enter` ([`call_native`] takes its `NativeScope`); while the outermost
//!    entry lasts, code the thread may return into is not freed.
//! 3. Native code polls its own word as above; the interpreter reports quiescence at its
//!    profile batches (inside native code, a native safepoint: its stack is pinned).
//! 4. A thread that waits (`join`, a contended output lock, a write to stdout, the dispatch
//!    lock) is blocked in the runtime meanwhile (`ThreadHandle::blocking`): it pins the code
//!    its stack holds first, so it holds back only that, and is never asked to report.
//!
//! [`crate::native_thread`] is the Rust side of all of it: the thread body, the bridge the
//! interpreter calls native code through, and the callbacks.
//!
//! ## Rust callbacks
//!
//! The VM passes their addresses in [`Callbacks`]; native code calls them with
//! `mov rax, imm64; call rax`, `ctx` in `rdi`, `rsp` 16-byte aligned, and assumes every
//! caller-saved register clobbered. Signatures (all `extern "sysv64"`):
//!
//! | callback | signature | |
//! |---|---|---|
//! | `print` | `(ctx, v: i64) -> u64` | status |
//! | `putc` | `(ctx, v: i64) -> u64` | status |
//! | `spawn` | `(ctx, f: u64, args: *const i64) -> NativeRet` | value = handle; `args`: F's P parameters in order |
//! | `join` | `(ctx, h: i64) -> NativeRet` | value = the thread's result |
//! | `patch` | `(ctx, f: u64, g: u64) -> u64` | status |
//! | `safepoint` | `(ctx)` | no result |
//! | `profile` | `(ctx, f: u64, counter: u64)` | no result; `counter` 0 = calls, 1 = back-edges |
//! | `call_interp` | `(ctx, depth: u64, def_addr: usize, args: *const i64) -> NativeRet` | stubs, and calls that find the native stack short |
//!
//! `f` and `g` are function indices (`FuncId`). Each row is a method of [`CallbackHost`],
//! whose shims ([`callbacks_for`]) turn the raw arguments into slices and the results into
//! statuses; the VM's thread and the tests' machine are its two hosts.
//!
//! ## Interpreter stubs and the way in
//!
//! A function still interpreted is reached from native code through a stub (header
//! `def_addr | 0`) that stores its P parameters in a stack array and tail-returns
//! `call_interp(ctx, depth, def_addr, array)`; the interpreter checks depth itself. The
//! interpreter reads the header of the entry a slot holds: for native code it calls it through
//! [`call_native`] (the engine's bridge, `native_thread::enter_native`), passing the callee's
//! depth; for a stub it interprets the definition itself, without a detour through the stub.

use jitvm_vm::Trap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicI64, AtomicU32};

/// What a native function returns, in `rax` : `rdx`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NativeRet {
    /// The result, meaningful when `status` is [`STATUS_OK`].
    pub value: i64,
    /// [`STATUS_OK`] or a trap code ([`status_of`]).
    pub status: u64,
}

impl NativeRet {
    pub fn ok(value: i64) -> NativeRet {
        NativeRet {
            value,
            status: STATUS_OK,
        }
    }

    pub fn trap(trap: Trap) -> NativeRet {
        NativeRet {
            value: 0,
            status: status_of(trap),
        }
    }

    /// `Ok(value)` or the trap the status names. An unknown nonzero status (a bug) panics.
    pub fn into_result(self) -> Result<i64, Trap> {
        if self.status == STATUS_OK {
            Ok(self.value)
        } else {
            Err(trap_of(self.status).expect("native code returned an unknown status"))
        }
    }
}

/// A normal return.
pub const STATUS_OK: u64 = 0;

/// The status that reports `trap`: 1 + its position in [`Trap`]'s declaration.
pub fn status_of(trap: Trap) -> u64 {
    match trap {
        Trap::DivisionByZero => 1,
        Trap::MemoryOutOfBounds => 2,
        Trap::StackOverflow => 3,
        Trap::AssertionFailed => 4,
        Trap::InvalidThreadHandle => 5,
        Trap::TooManyThreads => 6,
    }
}

/// The trap a nonzero status reports; `None` for 0 and for codes no trap has.
pub fn trap_of(status: u64) -> Option<Trap> {
    Some(match status {
        1 => Trap::DivisionByZero,
        2 => Trap::MemoryOutOfBounds,
        3 => Trap::StackOverflow,
        4 => Trap::AssertionFailed,
        5 => Trap::InvalidThreadHandle,
        6 => Trap::TooManyThreads,
        _ => return None,
    })
}

/// One VM thread's state as native code sees it. Offsets are ABI: see the `CTX_*` constants.
#[repr(C)]
#[derive(Debug)]
pub struct ThreadContext {
    /// The module's shared memory, `memory_cells` cells (dangling but aligned when 0).
    pub memory_base: *const AtomicI64,
    /// Its size in cells: the module's `memory` declaration.
    pub memory_cells: u64,
    /// The deepest call allowed (`--max-depth`); `main` is depth 1.
    pub max_depth: u64,
    /// The lowest address a native frame may reach (see the module docs on headroom).
    pub stack_limit: usize,
    /// The engine's per-thread state, for its callbacks. Native code never reads it.
    pub vm: *mut c_void,
    /// The thread's profile counters, one `u32` per function (`FuncId`): calls and loop
    /// back-edges left until the next report. Baseline code decrements them (see
    /// "Profiling" in the module docs).
    pub calls_left: *const std::cell::Cell<u32>,
    pub back_edges_left: *const std::cell::Cell<u32>,
    /// This thread's poll word: nonzero asks native code to call `safepoint` at its next
    /// poll. The runtime writes it (lent with `ThreadHandle::with_poll_word`).
    pub poll: AtomicU32,
}

pub const CTX_MEMORY_BASE: i32 = 0;
pub const CTX_MEMORY_CELLS: i32 = 8;
pub const CTX_MAX_DEPTH: i32 = 16;
pub const CTX_STACK_LIMIT: i32 = 24;
pub const CTX_VM: i32 = 32;
pub const CTX_CALLS_LEFT: i32 = 40;
pub const CTX_BACK_EDGES_LEFT: i32 = 48;
pub const CTX_POLL: i32 = 56;

/// Stack to leave below `stack_limit` for Rust callbacks and the interpreter behind stubs.
pub const STACK_HEADROOM: usize = 256 << 10;

/// The largest native frame either tier builds: a function whose frame would be larger is
/// left to the interpreter. With [`SMALL_FRAME`], the furthest native code reaches below
/// `stack_limit`; a small part of [`STACK_HEADROOM`].
pub const MAX_NATIVE_FRAME: usize = 32 << 10;

/// Stack the interpreter wants left above `stack_limit` before it calls or enters native
/// code: more than any native frame, so a native callee that finds the stack short (and
/// runs in a nested interpreter below it) leaves that interpreter below this line.
pub const NATIVE_ENTRY_ROOM: usize = 2 * MAX_NATIVE_FRAME;

/// Frames this small may check `rsp >= stack_limit` instead of `rsp - frame >= stack_limit`:
/// they end at most this far below the limit, well within [`STACK_HEADROOM`].
pub const SMALL_FRAME: usize = 1024;

/// Offset of the header word in a blob.
pub const HEADER_OFFSET: usize = 8;
/// Offset of the entry point in a blob (16-aligned when the blob is).
pub const ENTRY_OFFSET: usize = 16;
/// Where optimized code's blob puts its entry: the start of its second cache line, the blob
/// being [`OPT_BLOB_ALIGN`]-aligned (the header is still the word before the entry).
/// Cranelift places loop heads and call returns wherever the code falls (it cannot align a
/// block), and how the front end fetches them (cache lines, the micro-op cache) depends on
/// the code's position modulo a line: a fixed phase makes the same code run at the same
/// speed wherever it is installed. Measured: `ack` ran 1.2x slower compiled by a tier-up
/// than compiled up front, from nothing but the 16-byte phase it landed at.
pub const OPT_ENTRY_OFFSET: usize = 64;
/// The alignment of optimized code's blobs: a cache line.
pub const OPT_BLOB_ALIGN: usize = 64;
/// Header kind bit: native code (the VM's definition of an entry, `jitvm_vm::entry`).
pub const KIND_NATIVE: usize = jitvm_vm::entry::NATIVE;
/// Header kind bit: an interpreter stub.
pub const KIND_STUB: usize = 0;

/// The definition address and whether the code is native, from an entry point's header.
///
/// # Safety
/// `entry` must be the entry point of a live blob laid out as described above.
pub unsafe fn read_header(entry: usize) -> (usize, bool) {
    // SAFETY: the caller guarantees a live blob, whose header word sits 8 bytes before
    // `entry` and is 8-aligned (entries are 16-aligned).
    let word = unsafe { *((entry - 8) as *const usize) };
    (word & !7, word & KIND_NATIVE != 0)
}

/// Addresses of the Rust callbacks native code calls (see the module docs for signatures).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Callbacks {
    pub print: usize,
    pub putc: usize,
    pub spawn: usize,
    pub join: usize,
    pub patch: usize,
    pub safepoint: usize,
    pub call_interp: usize,
    pub profile: usize,
}

/// Code a compiler produced, to be copied to a 16-aligned address (the one it was compiled
/// for). Offsets are from the start of `bytes`.
#[derive(Clone, Debug, Default)]
pub struct CompiledCode {
    /// The whole blob: 8 zero bytes, the header word, then code.
    pub bytes: Vec<u8>,
    /// Where the entry point is ([`ENTRY_OFFSET`]).
    pub entry_offset: usize,
    /// Code offset of each bytecode instruction (empty for stubs), for disassembly.
    pub instr_offsets: Vec<usize>,
    /// (bytecode instruction index, code offset of its `call qword [rax]`, or for optimized
    /// code of its `call rel32` to the callee's call stub): the patch sites.
    pub call_sites: Vec<(usize, usize)>,
    /// (code offset of a `call rel32` opcode, callee): the calls the installer may bind to
    /// the callee's dispatch slot in [`jitvm_vm::CallMode::Direct`] (see "Direct calls"
    /// above). Optimized code lists its calls to call stubs here in either mode.
    pub direct_calls: Vec<(usize, jitvm_vm::FuncId)>,
    /// (code offset, remark) for the disassembly: callbacks, polls, trap exits.
    pub notes: Vec<(usize, String)>,
    /// Where the out-of-line code (slow paths, trap exits) starts; `bytes.len()` if none.
    pub cold_offset: usize,
    /// The frame from each offset on, for a debugger's unwinder ([`crate::code_info`]).
    pub frame: Vec<crate::code_info::FrameRow>,
    /// The bytecode instruction from each offset on, for line tables.
    pub source: Vec<crate::code_info::SourceRow>,
}

impl CompiledCode {
    /// The entry point of this code once copied to `blob_addr`.
    pub fn entry_at(&self, blob_addr: usize) -> usize {
        blob_addr + self.entry_offset
    }

    /// Puts the frame and source rows in final form ([`crate::code_info::finish`]); each
    /// compiler calls it last.
    pub fn finish_rows(&mut self) {
        crate::code_info::finish(&mut self.frame, &mut self.source, self.bytes.len());
    }

    /// What a debugger or a profiler needs to know about this code.
    pub fn description(&self) -> crate::code_info::Description {
        crate::code_info::Description {
            frame: self.frame.clone(),
            source: self.source.clone(),
            bytes: self.bytes.clone(),
            entry: self.entry_offset,
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub use bridge::*;

#[cfg(target_arch = "x86_64")]
mod bridge {
    use super::{NativeRet, ThreadContext};
    use jitvm_runtime::{CodePtr, NativeScope};

    type Ctx = *mut ThreadContext;
    pub type PrintFn = extern "sysv64" fn(Ctx, i64) -> u64;
    pub type PutcFn = extern "sysv64" fn(Ctx, i64) -> u64;
    pub type SpawnFn = extern "sysv64" fn(Ctx, u64, *const i64) -> NativeRet;
    pub type JoinFn = extern "sysv64" fn(Ctx, i64) -> NativeRet;
    pub type PatchFn = extern "sysv64" fn(Ctx, u64, u64) -> u64;
    pub type SafepointFn = extern "sysv64" fn(Ctx);
    pub type CallInterpFn = extern "sysv64" fn(Ctx, u64, usize, *const i64) -> NativeRet;
    pub type ProfileFn = extern "sysv64" fn(Ctx, u64, u64);

    /// Calls the native entry point `entry` of a function with `args.len()` parameters.
    ///
    /// # Safety
    /// `entry` must be the entry of published code following this ABI for exactly
    /// `args.len()` parameters (at most 8), and `ctx` must point to a valid
    /// [`ThreadContext`] for this thread. `scope` (the runtime's "enter native code") keeps
    /// the code, and all it may call, alive until this returns.
    pub unsafe fn call_native(
        scope: &NativeScope<'_>,
        entry: CodePtr,
        ctx: Ctx,
        depth: u64,
        args: &[i64],
    ) -> NativeRet {
        macro_rules! call {
            ($($a:ident),*) => {{
                // SAFETY: by the caller's contract `entry` is code with exactly this
                // signature: ctx, depth, then one i64 per argument; `scope` proves the
                // thread is inside the runtime's `enter`.
                let f: extern "sysv64" fn(Ctx, u64 $(, call!(@ty $a))*) -> NativeRet =
                    unsafe { scope.func(entry) };
                let &[$($a),*] = args else { unreachable!() };
                f(ctx, depth $(, $a)*)
            }};
            (@ty $a:ident) => { i64 };
        }
        match args.len() {
            0 => call!(),
            1 => call!(a0),
            2 => call!(a0, a1),
            3 => call!(a0, a1, a2),
            4 => call!(a0, a1, a2, a3),
            5 => call!(a0, a1, a2, a3, a4),
            6 => call!(a0, a1, a2, a3, a4, a5),
            7 => call!(a0, a1, a2, a3, a4, a5, a6),
            8 => call!(a0, a1, a2, a3, a4, a5, a6, a7),
            n => panic!("call_native: {n} arguments, the ABI allows at most 8"),
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub use host::*;

#[cfg(target_arch = "x86_64")]
mod host {
    use super::bridge::*;
    use super::{Callbacks, NativeRet, ThreadContext, STATUS_OK};
    use jitvm_vm::state::Counter;
    use jitvm_vm::{FuncId, Trap};

    /// The Rust side of the callbacks, one method per [`Callbacks`] field: the VM's thread
    /// (`crate::native_thread`) and the tests' machine implement it, and [`callbacks_for`]
    /// makes the `extern "sysv64"` shims native code calls, so both share one table. A new
    /// callback is a method here, its shim below, its field and its row in the module docs.
    pub trait CallbackHost {
        /// What the `def_addr` of a stub compiled for this host points at.
        type Def;
        fn print(&mut self, value: i64);
        fn putc(&mut self, value: i64);
        /// F's parameter count: how many values `spawn`'s `args` holds.
        fn params(&self, f: FuncId) -> usize;
        fn spawn(&mut self, f: FuncId, args: &[i64]) -> Result<i64, Trap>;
        fn join(&mut self, handle: i64) -> Result<i64, Trap>;
        fn patch(&mut self, f: FuncId, g: FuncId);
        fn safepoint(&mut self);
        fn profile(&mut self, f: FuncId, counter: Counter);
        /// The parameter count of the function `def` defines: how many `args` its stub passes.
        fn def_params(&self, def: &Self::Def) -> usize;
        /// Runs `def(args)` in the interpreter at call depth `depth`, for a stub (or a call
        /// that found the native stack short) on the thread of `ctx`.
        fn call_interp(
            &mut self,
            ctx: *mut ThreadContext,
            depth: u64,
            def: &Self::Def,
            args: &[i64],
        ) -> Result<i64, Trap>;
    }

    /// The callbacks of host `H`, for the compilers.
    ///
    /// Their contract: native code compiled with them is entered with a [`ThreadContext`]
    /// whose `vm` points at an `H` that lives, and is not otherwise in use, while the
    /// callback runs; a stub compiled with them has the address of an `H::Def` as its
    /// `def_addr`. The shims rely on both.
    pub fn callbacks_for<H: CallbackHost>() -> Callbacks {
        Callbacks {
            print: print::<H> as PrintFn as usize,
            putc: putc::<H> as PutcFn as usize,
            spawn: spawn::<H> as SpawnFn as usize,
            join: join::<H> as JoinFn as usize,
            patch: patch::<H> as PatchFn as usize,
            safepoint: safepoint::<H> as SafepointFn as usize,
            call_interp: call_interp::<H> as CallInterpFn as usize,
            profile: profile::<H> as ProfileFn as usize,
        }
    }

    /// The host behind `ctx`.
    ///
    /// # Safety
    /// `ctx` is the context native code compiled with [`callbacks_for::<H>`] was entered
    /// with, and passes to its callbacks.
    unsafe fn host<'a, H>(ctx: *mut ThreadContext) -> &'a mut H {
        // SAFETY: by the contract of `callbacks_for`, `vm` points at a live `H` nothing else
        // uses during the callback.
        unsafe { &mut *((*ctx).vm as *mut H) }
    }

    fn ret(result: Result<i64, Trap>) -> NativeRet {
        match result {
            Ok(value) => NativeRet::ok(value),
            Err(trap) => NativeRet::trap(trap),
        }
    }

    extern "sysv64" fn print<H: CallbackHost>(ctx: *mut ThreadContext, value: i64) -> u64 {
        // SAFETY: native code passes the context it was entered with.
        unsafe { host::<H>(ctx) }.print(value);
        STATUS_OK
    }

    extern "sysv64" fn putc<H: CallbackHost>(ctx: *mut ThreadContext, value: i64) -> u64 {
        // SAFETY: as in `print`.
        unsafe { host::<H>(ctx) }.putc(value);
        STATUS_OK
    }

    extern "sysv64" fn spawn<H: CallbackHost>(
        ctx: *mut ThreadContext,
        f: u64,
        args: *const i64,
    ) -> NativeRet {
        // SAFETY: as in `print`.
        let host = unsafe { host::<H>(ctx) };
        let n = host.params(f as FuncId);
        // SAFETY: native code passes F's parameters, in order, in an array of at least `n`.
        let args = unsafe { std::slice::from_raw_parts(args, n) };
        ret(host.spawn(f as FuncId, args))
    }

    extern "sysv64" fn join<H: CallbackHost>(ctx: *mut ThreadContext, handle: i64) -> NativeRet {
        // SAFETY: as in `print`.
        ret(unsafe { host::<H>(ctx) }.join(handle))
    }

    extern "sysv64" fn patch<H: CallbackHost>(ctx: *mut ThreadContext, f: u64, g: u64) -> u64 {
        // SAFETY: as in `print`.
        unsafe { host::<H>(ctx) }.patch(f as FuncId, g as FuncId);
        STATUS_OK
    }

    extern "sysv64" fn safepoint<H: CallbackHost>(ctx: *mut ThreadContext) {
        // SAFETY: as in `print`.
        unsafe { host::<H>(ctx) }.safepoint();
    }

    extern "sysv64" fn profile<H: CallbackHost>(ctx: *mut ThreadContext, f: u64, counter: u64) {
        let counter = match counter {
            0 => Counter::Calls,
            _ => Counter::BackEdges,
        };
        // SAFETY: as in `print`.
        unsafe { host::<H>(ctx) }.profile(f as FuncId, counter);
    }

    extern "sysv64" fn call_interp<H: CallbackHost>(
        ctx: *mut ThreadContext,
        depth: u64,
        def_addr: usize,
        args: *const i64,
    ) -> NativeRet {
        // SAFETY: as in `print`.
        let host = unsafe { host::<H>(ctx) };
        // SAFETY: a stub compiled with these callbacks passes the address of an `H::Def`
        // (the contract of `callbacks_for`), which lives as long as the stub.
        let def = unsafe { &*(def_addr as *const H::Def) };
        let n = host.def_params(def);
        // SAFETY: the stub passes its `n` parameters in an array.
        let args = unsafe { std::slice::from_raw_parts(args, n) };
        ret(host.call_interp(ctx, depth, def, args))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn thread_context_offsets_are_the_ones_native_code_uses() {
        assert_eq!(
            offset_of!(ThreadContext, memory_base),
            CTX_MEMORY_BASE as usize
        );
        assert_eq!(
            offset_of!(ThreadContext, memory_cells),
            CTX_MEMORY_CELLS as usize
        );
        assert_eq!(offset_of!(ThreadContext, max_depth), CTX_MAX_DEPTH as usize);
        assert_eq!(
            offset_of!(ThreadContext, stack_limit),
            CTX_STACK_LIMIT as usize
        );
        assert_eq!(offset_of!(ThreadContext, vm), CTX_VM as usize);
        assert_eq!(
            offset_of!(ThreadContext, calls_left),
            CTX_CALLS_LEFT as usize
        );
        assert_eq!(
            offset_of!(ThreadContext, back_edges_left),
            CTX_BACK_EDGES_LEFT as usize
        );
        assert_eq!(offset_of!(ThreadContext, poll), CTX_POLL as usize);
        assert_eq!(std::mem::size_of::<ThreadContext>(), 64);
    }

    #[test]
    fn native_ret_is_two_words_value_first() {
        assert_eq!(std::mem::size_of::<NativeRet>(), 16);
        assert_eq!(offset_of!(NativeRet, value), 0);
        assert_eq!(offset_of!(NativeRet, status), 8);
    }

    #[test]
    fn status_codes_round_trip_in_trap_order() {
        let all = [
            Trap::DivisionByZero,
            Trap::MemoryOutOfBounds,
            Trap::StackOverflow,
            Trap::AssertionFailed,
            Trap::InvalidThreadHandle,
            Trap::TooManyThreads,
        ];
        for (i, t) in all.into_iter().enumerate() {
            assert_eq!(status_of(t), i as u64 + 1);
            assert_eq!(trap_of(status_of(t)), Some(t));
        }
        assert_eq!(trap_of(0), None);
        assert_eq!(trap_of(7), None);
    }
}
