//! The runtime: code memory, a serialization strategy, a thread registry, a
//! reclaimer and a code map, shared by every thread through an `Arc`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::code_map::{BlobInfo, CodeEvent, Hooks};
use crate::code_memory::{CodeMemory, CodeStats, State};
use crate::error::HeldBack;
use crate::publish::{Guarantee, Transaction, TxBuffers};
use crate::reclaim::{pins_any, Reclaimer};
use crate::sync::{select_strategy, Serializer, Strategy, SYNC_ENV};
use crate::threads::{current_inner, Registry, ThreadHandle};
#[cfg(target_arch = "x86_64")]
use crate::{
    code_memory::Blob,
    patch::{displaced, make_site, Rel32Kind, Rel32Site},
};
use crate::{fork, Config, Error};

/// Code memory, a serialization strategy, a thread registry, a reclaimer and
/// a code map. Create it with [`Runtime::new`] and share the `Arc`: threads
/// register with it, every thread may commit.
pub struct Runtime {
    mem: CodeMemory,
    serializer: Serializer,
    registry: Registry,
    epoch: AtomicU64,
    /// Nonzero: native code should call the safepoint slow path.
    poll: AtomicU32,
    /// Commits are serialized by this lock, which also guards the reclaimer.
    /// Committing is rare and each commit costs a serialization anyway.
    commit: Mutex<Reclaimer>,
    /// Vectors of finished transactions, reused by the next ones.
    spare_tx: Mutex<Vec<TxBuffers>>,
    hooks: Hooks,
    config: Config,
    forks: u64,
}

// Shared by every thread through an `Arc`.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Runtime>();
};

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("code", &self.code_range())
            .field("strategy", &self.strategy())
            .finish()
    }
}

impl Runtime {
    /// Maps the code region and prepares the strategy.
    pub fn new(config: Config) -> Result<Arc<Runtime>, Error> {
        let strategy = match config.strategy {
            Some(s) => s,
            None => select_strategy(std::env::var(SYNC_ENV).ok().as_deref())?,
        };
        let rt = Runtime {
            mem: CodeMemory::new(config.capacity)?,
            serializer: Serializer::new(strategy)?,
            registry: Registry::default(),
            epoch: AtomicU64::new(0),
            poll: AtomicU32::new(0),
            commit: Mutex::new(Reclaimer::default()),
            spare_tx: Mutex::new(Vec::new()),
            hooks: Hooks::default(),
            config,
            forks: fork::generation(),
        };
        log::info!(
            "jitvm-runtime: {} bytes of code memory at {:#x}, sync strategy {}",
            rt.mem.capacity(),
            rt.mem.rx_base(),
            strategy
        );
        Ok(Arc::new(rt))
    }

    /// The strategy in use.
    pub fn strategy(&self) -> Strategy {
        self.serializer.strategy()
    }

    /// The configuration the runtime was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The executable address range of the code region.
    pub fn code_range(&self) -> std::ops::Range<usize> {
        self.mem.rx_base()..self.mem.rx_base() + self.mem.capacity()
    }

    /// Registers the calling thread as one that may run JIT code, and makes
    /// the handle its current one ([`crate::with_current_thread`]).
    /// [`Error::AlreadyRegistered`] if the thread holds a live registration
    /// (with any runtime).
    pub fn register_thread(self: &Arc<Self>) -> Result<ThreadHandle, Error> {
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

    /// The poll word native code checks at loop back-edges and function
    /// entries (see [`crate::safepoint`]): nonzero means "call
    /// [`crate::jitvm_safepoint_slow`]". Its address is stable for the life
    /// of the runtime (it lives in the `Arc`).
    pub fn poll_word(&self) -> *const AtomicU32 {
        &self.poll
    }

    /// The blob (live, or retired and not yet reclaimed) containing `addr`,
    /// with its owner tag: for trap reporting, disassembly, profiling.
    pub fn lookup(&self, addr: usize) -> Option<BlobInfo> {
        match self.mem.covering(addr)? {
            (blob, State::Live, owner) => Some(BlobInfo {
                blob,
                owner,
                retired: false,
            }),
            (blob, State::Retired, owner) => Some(BlobInfo {
                blob,
                owner,
                retired: true,
            }),
            _ => None,
        }
    }

    /// Installs the hook called with a [`CodeEvent`] when a commit publishes
    /// a blob and when a retired blob is reclaimed (for a `perf` map). It is
    /// called on the committing or reclaiming thread (possibly a thread at a
    /// native safepoint), after the runtime's locks are released; it may
    /// call [`lookup`](Self::lookup) and even commit. A panic in it is
    /// caught and logged. Replaces any previous hook.
    pub fn set_code_hook(&self, hook: Box<dyn Fn(CodeEvent) + Send + Sync>) {
        self.hooks.set(Some(Arc::from(hook)));
    }

    /// Removes the code hook.
    pub fn remove_code_hook(&self) {
        self.hooks.set(None);
    }

    /// Byte counters of the code region.
    pub fn stats(&self) -> CodeStats {
        self.mem.stats()
    }

    /// Retired blobs not yet reclaimed.
    pub fn pending_retirements(&self) -> usize {
        self.commit_lock().pending()
    }

    /// Core serializations performed so far (0 with [`Strategy::None`]).
    pub fn serializations(&self) -> u64 {
        self.serializer.count()
    }

    /// The current epoch (advances once per commit).
    pub fn epoch_now(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Reclaims every retired blob no thread can still be running (commits
    /// and native safepoints do this too). Returns how many were reclaimed
    /// (0 in a fork child).
    pub fn reclaim(&self) -> usize {
        if self.check_process().is_err() {
            return 0;
        }
        let mut events = Vec::new();
        let n = {
            let mut rec = self.commit_lock();
            self.reclaim_locked(&mut rec, &mut events)
        };
        self.hooks.fire(&events);
        n
    }

    /// Waits until everything retired before the call is reclaimed, or
    /// `timeout` passes: then [`Error::Timeout`] names the threads holding it
    /// back and since when. Retirements of `Eventual` commits get the
    /// serialization they wait for (an empty commit); the poll word asks
    /// native code to report. If the calling thread is registered with this
    /// runtime it is not waited for: it reports at each step (as a native
    /// safepoint if it is inside native code) and waits offline.
    pub fn synchronize(&self, timeout: Duration) -> Result<(), Error> {
        self.check_process()?;
        let start = Instant::now();
        let target = self.commit_lock().next_serial();
        let me = current_inner()
            .filter(|i| std::ptr::eq(Arc::as_ptr(&i.rt), self))
            .map(ThreadHandle::lend);
        loop {
            let needs_serialization = {
                let rec = self.commit_lock();
                if rec.oldest_serial().map_or(true, |s| s >= target) {
                    return Ok(());
                }
                rec.awaits_serialization()
            };
            if needs_serialization {
                self.transaction().commit(Guarantee::Eventual)?;
            }
            if let Some(h) = &me {
                if h.is_entered() {
                    h.safepoint_from_native();
                } else {
                    h.quiescent();
                }
            }
            let mut events = Vec::new();
            let done = {
                let mut rec = self.commit_lock();
                self.reclaim_locked(&mut rec, &mut events);
                rec.oldest_serial().map_or(true, |s| s >= target)
            };
            self.hooks.fire(&events);
            if done {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                let (pending_retirements, held_back_by) = self.held_back();
                return Err(Error::Timeout {
                    waited: start.elapsed(),
                    pending_retirements,
                    held_back_by,
                });
            }
            let nap = || crate::sleep::sleep(Duration::from_micros(500));
            match &me {
                Some(h) => h.blocking(nap),
                None => nap(),
            }
        }
    }

    /// A rel32 site at `offset` in `blob` (staged or live), which must hold
    /// the opcode for `kind` there with a 4-byte-aligned displacement (emit
    /// it with [`crate::emit_rel32_site`] or pad with
    /// [`crate::rel32_site_padding`]). Offsets are checked:
    /// [`Error::InvalidSite`] past the blob (including offsets near
    /// `usize::MAX`), [`Error::InvalidBlob`] for a stale blob.
    #[cfg(target_arch = "x86_64")]
    pub fn rel32_site(
        &self,
        blob: Blob,
        offset: usize,
        kind: Rel32Kind,
    ) -> Result<Rel32Site, Error> {
        make_site(&self.mem, blob, offset, kind)
    }

    /// The address a rel32 site currently transfers to; an error if its blob
    /// is no longer staged or live.
    #[cfg(target_arch = "x86_64")]
    pub fn rel32_target(&self, site: Rel32Site) -> Result<usize, Error> {
        if !matches!(self.mem.state(site.blob), Some(State::Staged | State::Live)) {
            return Err(Error::InvalidSite(
                "the site's blob is retired or reclaimed",
            ));
        }
        let d = site.disp_addr();
        let bytes = [0, 1, 2, 3].map(|i| self.mem.read_byte(d + i));
        Ok(displaced(site.opcode, i32::from_le_bytes(bytes)))
    }

    /// Makes the `n`-th serialization from now fail (1: the next), to test
    /// the failure paths of [`Transaction::commit`].
    #[doc(hidden)]
    pub fn fail_serialization_after(&self, n: u64) {
        self.serializer.fail_after(n);
    }

    /// One serialization of this runtime's strategy and nothing else, for
    /// benchmarks.
    #[doc(hidden)]
    pub fn bare_serialize(&self) -> Result<(), Error> {
        self.serializer.serialize_all(&self.registry).map(|_| ())
    }

    /// Threads holding back pending retirements, and how many are pending.
    pub(crate) fn held_back(&self) -> (usize, Vec<HeldBack>) {
        let rec = self.commit_lock();
        let (max_tag, blobs) = rec.waiting_for_threads();
        let now = Instant::now();
        let threads = self
            .registry
            .report()
            .into_iter()
            .filter_map(|(tid, horizon, entered, pins)| {
                let behind = max_tag.is_some_and(|t| horizon <= t);
                let pinning = pins_any(&pins, &blobs);
                (behind || pinning).then(|| HeldBack {
                    tid,
                    since: rec
                        .epoch_start(horizon.saturating_add(1))
                        .map_or(Duration::ZERO, |t| now.saturating_duration_since(t)),
                    entered,
                    pinning,
                })
            })
            .collect();
        (rec.pending(), threads)
    }

    /// Reclaims under the commit lock; reclaim events are appended to
    /// `events` (if a hook is set) for firing after the lock is released.
    pub(crate) fn reclaim_locked(&self, rec: &mut Reclaimer, events: &mut Vec<CodeEvent>) -> usize {
        if self.check_process().is_err() {
            return 0; // never write the parent's memory
        }
        let hook = self.hooks.is_set();
        let mut owners = Vec::new();
        let (n, entered) = rec.reclaim(
            &self.mem,
            &self.registry,
            self.config.poison,
            self.config.quarantine_bytes,
            hook.then_some(&mut owners),
        );
        if hook {
            events.extend(
                rec.done
                    .iter()
                    .zip(owners)
                    .map(|(b, owner)| CodeEvent::Reclaimed {
                        addr: b.addr(),
                        len: b.len(),
                        owner,
                    }),
            );
        }
        let ask = rec.awaits_threads() && entered;
        self.poll.store(ask as u32, Ordering::Release);
        n
    }

    /// Reclaims if no commit holds the lock (native safepoints).
    pub(crate) fn try_reclaim(&self) {
        if self.check_process().is_err() {
            return;
        }
        let mut events = Vec::new();
        match self.commit.try_lock() {
            Ok(mut rec) => {
                self.reclaim_locked(&mut rec, &mut events);
            }
            Err(std::sync::TryLockError::Poisoned(p)) => {
                self.reclaim_locked(&mut p.into_inner(), &mut events);
            }
            Err(std::sync::TryLockError::WouldBlock) => return,
        }
        self.hooks.fire(&events);
    }

    /// `Err(ForkedChild)` in a fork child (one atomic load).
    pub(crate) fn check_process(&self) -> Result<(), Error> {
        if fork::generation() != self.forks {
            return Err(Error::ForkedChild);
        }
        Ok(())
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
    pub(crate) fn hooks(&self) -> &Hooks {
        &self.hooks
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
