//! # jitvm-runtime: changing machine code while other threads run it
//!
//! The part of a JIT that is hard to get right and has nothing to do with
//! any particular language: where code lives, how new code is made safe to
//! run on every core, how calls are redirected to it, and when the code it
//! replaced may be freed. The modules, in reading order:
//!
//! 1. [`code_memory`]: one region of shared memory mapped twice (RW to write, RX
//!    to run; never both), an allocator, and checked handles ([`Blob`]).
//! 2. [`icache`] (cache maintenance) and [`sync`] (core serialization of the
//!    calling core and of all the others: one [`Strategy`] per file).
//! 3. `registry`, [`threads`], [`native`], [`safepoint`], `handshake`: what
//!    each registered thread publishes, its handle ([`ThreadHandle`]), the one
//!    way into JIT code ([`ThreadHandle::enter`]), safepoints for native code
//!    that runs long, and how the runtime asks one thread at a time to report
//!    (per-thread poll words).
//! 4. [`patch`]: [`DispatchSlot`]s (and x86-64 `Rel32Site`s), and exactly
//!    which call sequences `Guarantee::Strong` covers.
//!    [`live_patch`] (x86-64): rewriting a published `call rel32`/`jmp rel32`
//!    by Linux's `text_poke_bp` protocol, with its `SIGTRAP` handler.
//!    [`bound_sites`] (x86-64): direct calls bound to a slot, which every
//!    commit that moves the slot patches live.
//! 5. [`publish`], [`staging`], [`reloc`], `tx_buffers`: a [`Transaction`] stages code
//!    (copied, reserved and shrunk, or relocated), patches and retirements,
//!    and [`Transaction::commit`] publishes them with one or two
//!    serializations in all.
//! 6. [`reclaim`]: replaced code is freed (or, in poison mode, filled with
//!    the trap instruction) once no thread can be running it;
//!    `synchronize` waits for it ([`Runtime::synchronize`]).
//! 7. [`code_map`]: address to blob lookup and a publish/reclaim hook.
//! 8. [`error`], [`config`], [`runtime`], [`fork`]: the rest. No module uses
//!    one that uses it back (`tests/module_graph.rs`): [`Runtime`] owns the
//!    parts below it, and what keeps or borrows a runtime (a handle, a
//!    transaction, `synchronize`) sits above it and adds its methods there.
//!
//! ## One page of use
//!
//! A thread registers, a function is published behind a dispatch slot and
//! called through a stub (`jmp qword [slot]`), the call is re-pointed by a
//! `Strong` commit, and the old code is retired and reclaimed:
//!
//! ```
//! use std::time::Duration;
//! use jitvm_runtime::{Config, Guarantee, Runtime, ThreadHandle};
//! # fn main() -> Result<(), jitvm_runtime::Error> {
//! let rt = Runtime::new(Config::default())?;
//! let me = rt.register_thread()?; // every thread that runs JIT code
//!
//! // mov eax, k; ret
//! let version = |k: u8| [0xB8, k, 0, 0, 0, 0xC3];
//! // mov rax, imm64(&slot); jmp qword [rax]: a covered Strong sequence
//! let slot = rt.dispatch_slot(0);
//! let mut stub = vec![0x48, 0xB8];
//! stub.extend_from_slice(&(slot.as_ptr() as u64).to_le_bytes());
//! stub.extend_from_slice(&[0xFF, 0x20]);
//!
//! let mut tx = rt.transaction();
//! let v1 = tx.stage(&version(1), 16)?;
//! let caller = tx.stage(&stub, 16)?;
//! tx.set_dispatch(&slot, v1.addr())?;
//! tx.commit(Guarantee::Strong)?;
//!
//! // Every call into JIT code goes through `enter`.
//! let call = |me: &ThreadHandle| {
//!     me.enter(|scope| {
//!         // SAFETY: `caller` is published code with this signature.
//!         let f: extern "C" fn() -> i32 = unsafe { scope.func(caller.code()) };
//!         f()
//!     })
//! };
//! assert_eq!(call(&me), 1);
//!
//! let mut tx = rt.transaction();
//! let v2 = tx.stage(&version(2), 16)?;
//! tx.set_dispatch(&slot, v2.addr())?;
//! tx.retire(v1)?;
//! tx.commit(Guarantee::Strong)?; // from here on no thread starts v1
//! assert_eq!(call(&me), 2);
//!
//! rt.synchronize(Duration::from_secs(10))?; // v1 is reclaimed
//! assert_eq!(rt.pending_retirements(), 0);
//! assert!(rt.lookup(v1.addr()).is_none());
//! # Ok(()) }
//! ```
//!
//! When a `Strong` commit returns, no thread will start the old code; it is
//! freed (or poisoned) once every registered thread has been quiescent since,
//! or has reported at a native safepoint without it on its stack.

#[cfg(target_arch = "x86_64")]
pub mod bound_sites;
pub mod code_map;
pub mod code_memory;
pub mod config;
pub mod error;
pub mod fork;
mod handshake;
pub mod icache;
#[cfg(target_arch = "x86_64")]
pub mod live_patch;
pub mod native;
mod offline;
pub mod patch;
pub mod publish;
pub mod reclaim;
mod registry;
pub mod reloc;
pub mod runtime;
pub mod safepoint;
mod sleep;
pub mod staging;
pub mod sync;
mod synchronize;
pub mod threads;
mod tx_buffers;

pub use code_map::{BlobInfo, CodeEvent, CodeHook};
pub use code_memory::{Blob, CodePtr, CodeStats, TRAP_INSTRUCTION};
pub use config::{Config, Strategy};
pub use error::{Error, HeldBack};
pub use native::NativeScope;
pub use patch::DispatchSlot;
#[cfg(target_arch = "x86_64")]
pub use patch::{emit_rel32_site, rel32_site_padding, Rel32Kind, Rel32Site, NOP, REL32_LEN};
pub use publish::{CommitInfo, Guarantee, Transaction};
pub use reloc::{Reloc, RelocKind};
pub use runtime::Runtime;
pub use safepoint::jitvm_safepoint_slow;
#[cfg(target_arch = "x86_64")]
pub use safepoint::x86_64_poll_compare;
pub use staging::Staging;
#[doc(hidden)]
pub use sync::{bare_membarrier_sync_core, mprotect_refusal_for};
pub use sync::{select_strategy, SYNC_ENV};
pub use threads::{with_current_thread, ThreadHandle};
