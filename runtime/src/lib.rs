//! # jitvm-runtime: changing machine code while other threads run it
//!
//! This crate is the part of a JIT that is hard to get right and has nothing
//! to do with any particular language: where code lives, how new code is made
//! safe to run on every core, how call sites are redirected to it, and when
//! the code it replaced may be freed. Read it top to bottom:
//!
//! 1. **Code memory** ([`code_memory`]): one region, mapped twice from a memfd
//!    — a read+write view the runtime writes through and a read+execute view
//!    code runs from. Never writable and executable at once, no `mprotect` per
//!    commit, every code address within `rel32` reach of every other.
//! 2. **Synchronization** ([`sync`], [`icache`]): writing code that another
//!    core may execute is *cross-modifying code*. After the write, every core
//!    that may run it must execute a serializing instruction (Intel SDM vol. 3A
//!    §8.1.3; ARM ARM B2.2.5 plus cache maintenance). A [`Strategy`]
//!    (`membarrier`, `mprotect`, `signal`, `none`) makes every thread do that.
//! 3. **Threads** ([`threads`]): threads that run JIT code register and get a
//!    [`ThreadHandle`]; they call [`ThreadHandle::quiescent`] at safepoints.
//! 4. **Patch sites** ([`patch`]): a [`DispatchSlot`] (a code pointer in
//!    memory) or a [`Rel32Site`] (an x86-64 `call`/`jmp rel32` with an aligned
//!    displacement), each changed with one atomic store.
//! 5. **Publication** ([`publish`]): a [`Transaction`] stages blobs, patches and
//!    retirements, and [`Transaction::commit`] publishes them with one or two
//!    serializations in all.
//! 6. **Reclamation** ([`reclaim`]): replaced code is freed (or, in poison
//!    mode, filled with `int3`) once every thread has moved past it.
//!
//! ```no_run
//! use jitvm_runtime::{Config, DispatchSlot, Guarantee, Runtime};
//! # fn main() -> Result<(), jitvm_runtime::Error> {
//! let rt = Runtime::new(Config::default())?;
//! let _me = rt.register_thread(); // on every thread that runs JIT code
//!
//! let slot = Box::new(DispatchSlot::new(0));
//! let mut tx = rt.transaction();
//! let v1 = tx.stage(&[0xB8, 1, 0, 0, 0, 0xC3], 16)?; // mov eax, 1; ret
//! tx.set_dispatch(&slot, v1.addr());
//! tx.commit(Guarantee::Strong)?;
//!
//! let mut tx = rt.transaction();
//! let v2 = tx.stage(&[0xB8, 2, 0, 0, 0, 0xC3], 16)?;
//! tx.set_dispatch(&slot, v2.addr());
//! tx.retire(v1);
//! tx.commit(Guarantee::Strong)?; // from here on no thread starts v1
//! # Ok(()) }
//! ```
//!
//! When a `Strong` commit returns, no thread will start the old code; it is
//! freed (or poisoned) once every registered thread has been quiescent since.

pub mod code_memory;
pub mod icache;
pub mod patch;
pub mod publish;
pub mod reclaim;
pub mod sync;
pub mod threads;

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard, OnceLock};

pub use code_memory::{Blob, CodeStats};
pub use patch::{
    emit_rel32_site, rel32_site_padding, DispatchSlot, Rel32Kind, Rel32Site, NOP, REL32_LEN,
};
pub use publish::{CommitInfo, Guarantee, Transaction};
pub use sync::{bare_membarrier_sync_core, select_strategy, Strategy, SYNC_ENV};
pub use threads::{JitEntry, ThreadHandle};

use code_memory::{CodeMemory, State};
use publish::TxBuffers;
use reclaim::Reclaimer;
use sync::Serializer;
use threads::Registry;

/// Errors of this crate.
#[derive(Debug)]
pub enum Error {
    /// No free range large enough in the code region.
    OutOfCodeMemory {
        /// Bytes asked for (rounded to the granule).
        requested: usize,
        /// Size of the region.
        capacity: usize,
    },
    /// A blob handle that is not a live allocation of this runtime (stale,
    /// foreign, retired twice).
    InvalidBlob,
    /// A patch site that is malformed or not inside a live blob.
    InvalidSite(&'static str),
    /// A rel32 target farther than ±2 GiB.
    OutOfRange,
    /// A bad configuration value.
    InvalidArgument(&'static str),
    /// `JITVM_SYNC` (or a parse) named no strategy.
    UnknownStrategy(String),
    /// The strategy does not work here.
    StrategyUnavailable {
        /// Which one.
        strategy: Strategy,
        /// Why.
        reason: String,
    },
    /// A system call failed.
    Io(std::io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::OutOfCodeMemory {
                requested,
                capacity,
            } => write!(
                f,
                "out of code memory ({requested} bytes requested, region {capacity})"
            ),
            Error::InvalidBlob => f.write_str("not a live blob of this runtime"),
            Error::InvalidSite(why) => write!(f, "invalid patch site: {why}"),
            Error::OutOfRange => f.write_str("rel32 target out of range"),
            Error::InvalidArgument(why) => write!(f, "invalid argument: {why}"),
            Error::UnknownStrategy(s) => write!(
                f,
                "unknown sync strategy {s:?} (membarrier|mprotect|signal|none)"
            ),
            Error::StrategyUnavailable { strategy, reason } => {
                write!(f, "sync strategy {strategy} unavailable: {reason}")
            }
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Io(e)
    }
}

/// Runtime configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Size of the code region in bytes (at most 1 GiB, so every rel32
    /// reaches). Address space only: pages are backed when first written.
    pub capacity: usize,
    /// The serialization strategy; `None` means `JITVM_SYNC` if set, else the
    /// first that works (see [`select_strategy`]).
    pub strategy: Option<Strategy>,
    /// Fill reclaimed code with `int3` and quarantine it before reuse.
    pub poison: bool,
    /// In poison mode, how many reclaimed bytes to keep poisoned before
    /// reusing the oldest.
    pub quarantine_bytes: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            capacity: 64 << 20,
            strategy: None,
            poison: false,
            quarantine_bytes: 256 << 10,
        }
    }
}

/// Code memory, a serialization strategy, a thread registry and a reclaimer.
/// Share it by reference (it is `Sync`); [`Runtime::global`] offers one per
/// process.
pub struct Runtime {
    mem: CodeMemory,
    serializer: Serializer,
    registry: Registry,
    epoch: AtomicU64,
    /// Commits are serialized by this lock, which also guards the reclaimer.
    /// Committing is rare and each commit costs a serialization anyway.
    commit: Mutex<Reclaimer>,
    /// Vectors of finished transactions, reused by the next ones.
    spare_tx: Mutex<Vec<TxBuffers>>,
    config: Config,
}

impl Runtime {
    /// Maps the code region and prepares the strategy.
    pub fn new(config: Config) -> Result<Runtime, Error> {
        let strategy = match config.strategy {
            Some(s) => s,
            None => select_strategy(std::env::var(SYNC_ENV).ok().as_deref())?,
        };
        let rt = Runtime {
            mem: CodeMemory::new(config.capacity)?,
            serializer: Serializer::new(strategy)?,
            registry: Registry::default(),
            epoch: AtomicU64::new(0),
            commit: Mutex::new(Reclaimer::default()),
            spare_tx: Mutex::new(Vec::new()),
            config,
        };
        log::info!(
            "jitvm-runtime: {} bytes of code memory at {:#x}, sync strategy {}",
            rt.mem.capacity(),
            rt.mem.rx_base(),
            strategy
        );
        Ok(rt)
    }

    /// A process-wide runtime with [`Config::default`], created on first use.
    /// Panics if it cannot be created.
    pub fn global() -> &'static Runtime {
        static GLOBAL: OnceLock<Runtime> = OnceLock::new();
        GLOBAL.get_or_init(|| Runtime::new(Config::default()).expect("jitvm-runtime"))
    }

    /// The strategy in use.
    pub fn strategy(&self) -> Strategy {
        self.serializer.strategy()
    }

    /// The configuration the runtime was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Registers the calling thread as one that may run JIT code.
    pub fn register_thread(&self) -> ThreadHandle<'_> {
        ThreadHandle::register(self)
    }

    /// Number of registered threads.
    pub fn registered_threads(&self) -> usize {
        self.registry.len()
    }

    /// Starts a transaction.
    pub fn transaction(&self) -> Transaction<'_> {
        Transaction::new(self)
    }

    /// A patchable rel32 site at `offset` in `blob`, which must hold the
    /// opcode for `kind` there with a 4-byte-aligned displacement (emit it
    /// with [`emit_rel32_site`] or pad with [`rel32_site_padding`]).
    pub fn rel32_site(
        &self,
        blob: Blob,
        offset: usize,
        kind: Rel32Kind,
    ) -> Result<Rel32Site, Error> {
        if !matches!(self.mem.state(blob), Some(State::Staged | State::Live)) {
            return Err(Error::InvalidBlob);
        }
        if offset + REL32_LEN > blob.len() {
            return Err(Error::InvalidSite("site extends past the blob"));
        }
        let opcode = blob.addr() + offset;
        if (opcode + 1) % 4 != 0 {
            return Err(Error::InvalidSite("displacement not 4-byte aligned"));
        }
        // SAFETY: `opcode` is inside a live blob of the readable RX view.
        let byte = unsafe { *(opcode as *const u8) };
        if byte != kind.opcode() {
            return Err(Error::InvalidSite("opcode does not match the kind"));
        }
        Ok(Rel32Site { kind, blob, opcode })
    }

    /// Byte counters of the code region.
    pub fn stats(&self) -> CodeStats {
        self.mem.stats()
    }

    /// Retired blobs not yet reclaimed.
    pub fn pending_retirements(&self) -> usize {
        self.commit_lock().pending()
    }

    /// Serializations performed so far.
    pub fn serializations(&self) -> u64 {
        self.serializer.count()
    }

    /// Reclaims every retired blob no thread can still be running (commits do
    /// this too). Returns how many were reclaimed.
    pub fn reclaim(&self) -> usize {
        let mut rec = self.commit_lock();
        self.reclaim_locked(&mut rec)
    }

    pub(crate) fn reclaim_locked(&self, rec: &mut Reclaimer) -> usize {
        let horizon = self.registry.horizon();
        rec.reclaim(
            &self.mem,
            horizon,
            self.config.poison,
            self.config.quarantine_bytes,
        )
    }

    pub(crate) fn mem(&self) -> &CodeMemory {
        &self.mem
    }
    pub(crate) fn serializer(&self) -> &Serializer {
        &self.serializer
    }
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }
    pub(crate) fn epoch(&self) -> &AtomicU64 {
        &self.epoch
    }
    /// Empty transaction vectors, recycled if any are spare.
    pub(crate) fn tx_buffers(&self) -> TxBuffers {
        self.spare_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default()
    }
    /// Keeps a finished transaction's vectors (a few, and not huge ones).
    pub(crate) fn recycle_tx_buffers(&self, mut buf: TxBuffers) {
        const KEEP: usize = 4;
        if buf.recycle() {
            let mut spare = self.spare_tx.lock().unwrap_or_else(|p| p.into_inner());
            if spare.len() < KEEP {
                spare.push(buf);
            }
        }
    }
    pub(crate) fn commit_lock(&self) -> MutexGuard<'_, Reclaimer> {
        self.commit.lock().unwrap_or_else(|p| p.into_inner())
    }
}
