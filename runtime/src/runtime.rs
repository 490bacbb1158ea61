//! The runtime: code memory, a serialization strategy, a thread registry, a
//! reclaimer and a code map, shared by every thread through an `Arc`.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError, Weak};
use std::time::{Duration, Instant};

use crate::code_map::{BlobInfo, CodeEvent, CodeHook, Hooks};
use crate::code_memory::{CodeMemory, CodeStats, State};
use crate::config::Strategy;
use crate::error::HeldBack;
use crate::handshake::{self, Pinned, Reasker};
use crate::patch::DispatchSlot;
use crate::reclaim::{pins_any, Reclaimer};
use crate::registry::{Registry, NOT_ENTERED, OFFLINE};
use crate::sync::{select_strategy, Serializer, SYNC_ENV};
use crate::tx_buffers::TxBuffers;
#[cfg(target_arch = "x86_64")]
use crate::{
    bound_sites::BoundSites,
    code_memory::Blob,
    patch::{encoded_target, make_site, Rel32Kind, Rel32Site},
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
    /// One more than the largest tag of a retirement waiting for threads'
    /// horizons, 0 if none: a thread whose horizon is below it was waited
    /// for, and reclaims when it reports. Stored before the reclaimer reads
    /// the horizons (see `ThreadHandle::report_quiescent`).
    waiting_below: AtomicU64,
    /// Some retirement waits only for pins on a thread's stack.
    pins_pending: AtomicBool,
    /// A report asked for a reclamation while the lock was held: whoever
    /// holds it looks again when it lets go.
    reclaim_wanted: AtomicBool,
    /// Slow-path answers of threads that have deregistered.
    slow_polls_done: AtomicU64,
    /// Asks threads whose pins hold retirements to look again (see
    /// [`crate::handshake`]).
    reasker: Reasker,
    /// This runtime, for the re-ask thread (which must not keep it alive).
    me: Weak<Runtime>,
    /// Commits are serialized by this lock, which also guards the reclaimer.
    /// Committing is rare and each commit costs a serialization anyway.
    commit: Mutex<Reclaimer>,
    /// Vectors of finished transactions, reused by the next ones.
    spare_tx: Mutex<Vec<TxBuffers>>,
    hooks: Hooks,
    /// Every dispatch slot this runtime has made, kept until it goes (JIT code
    /// may load a slot at any time).
    slots: Mutex<Vec<Arc<DispatchSlot>>>,
    /// Direct-call sites that mirror a slot; changed only under the commit lock.
    #[cfg(target_arch = "x86_64")]
    bound: Mutex<BoundSites>,
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
        let mem = CodeMemory::new(config.capacity)?;
        let serializer = Serializer::new(strategy)?;
        let rt = Arc::new_cyclic(|me| Runtime {
            mem,
            serializer,
            registry: Registry::default(),
            epoch: AtomicU64::new(0),
            waiting_below: AtomicU64::new(0),
            pins_pending: AtomicBool::new(false),
            reclaim_wanted: AtomicBool::new(false),
            slow_polls_done: AtomicU64::new(0),
            reasker: Reasker::default(),
            me: me.clone(),
            commit: Mutex::new(Reclaimer::default()),
            spare_tx: Mutex::new(Vec::new()),
            hooks: Hooks::default(),
            slots: Mutex::new(Vec::new()),
            #[cfg(target_arch = "x86_64")]
            bound: Mutex::new(BoundSites::default()),
            config,
            forks: fork::generation(),
        });
        log::info!(
            "jitvm-runtime: {} bytes of code memory at {:#x}, sync strategy {}",
            rt.mem.capacity(),
            rt.mem.rx_base(),
            strategy
        );
        Ok(rt)
    }

    /// A new dispatch slot initially pointing at `target` (any address: code
    /// of this runtime, or a Rust function such as an interpreter fallback;
    /// only commits change it). The runtime keeps it as long as the runtime
    /// lives, so JIT code may load it at any time, and a commit that retires
    /// the code it targets fails unless it re-points it too.
    pub fn dispatch_slot(&self, target: usize) -> Arc<DispatchSlot> {
        let slot = Arc::new(DispatchSlot::new(target, self.id()));
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&slot));
        slot
    }

    /// The sites bound to slots ([`crate::bound_sites`]); a commit holds it, under the
    /// commit lock, from validation to publication.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn bound_sites(&self) -> MutexGuard<'_, BoundSites> {
        self.bound.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many direct-call sites are bound to dispatch slots now (counting those of
    /// reclaimed blobs until the next commit drops them).
    #[cfg(target_arch = "x86_64")]
    pub fn bound_site_count(&self) -> usize {
        self.bound_sites().len()
    }

    /// Every slot made by [`Runtime::dispatch_slot`], for commit validation.
    pub(crate) fn slots(&self) -> MutexGuard<'_, Vec<Arc<DispatchSlot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What this runtime's slots carry as their owner: its address (stable:
    /// a runtime lives in an `Arc`).
    pub(crate) fn id(&self) -> usize {
        self as *const Runtime as usize
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

    /// Number of registered threads.
    pub fn registered_threads(&self) -> usize {
        self.registry.len()
    }

    /// How many times native code answered a request on its thread's poll
    /// word (took the poll's slow path because it was asked), over every
    /// thread registered so far.
    pub fn slow_polls(&self) -> u64 {
        self.slow_polls_done.load(Ordering::Relaxed) + self.registry.slow_polls()
    }

    /// Threads whose poll word is set now (asked to report at their next
    /// poll and not yet answered).
    pub fn threads_asked(&self) -> usize {
        let mut n = 0;
        self.registry.for_each(|t| n += t.is_asked() as usize);
        n
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

    /// Installs the hook called with the [`CodeEvent`]s of a commit (the
    /// blobs it published) and of a reclamation (the blobs it freed, the
    /// threads that pin retired code): one call per batch, for a `perf` map,
    /// jitdump or a debugger's registry. It is called on the committing or
    /// reclaiming thread (possibly a thread at a
    /// native safepoint), after the runtime's locks are released; it may
    /// call [`lookup`](Self::lookup) and even commit. A panic in it is
    /// caught and logged. Replaces any previous hook.
    pub fn set_code_hook(&self, hook: CodeHook) {
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

    /// A rel32 site at `offset` in `blob` (staged or live), which must hold
    /// the opcode for `kind` there (emit it with [`crate::emit_rel32_site`],
    /// which also aligns the displacement). Offsets are checked:
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
        Ok(encoded_target(&self.mem, &site))
    }

    /// Makes the `n`-th serialization from now fail (1: the next), to test
    /// the failure paths of [`Transaction::commit`].
    #[doc(hidden)]
    pub fn fail_serialization_after(&self, n: u64) {
        self.serializer.fail_after(n);
    }

    /// Runs `f` while holding the commit lock, as a long commit would: for
    /// tests of what happens to threads that report meanwhile.
    #[doc(hidden)]
    pub fn with_commit_lock_held<R>(&self, f: impl FnOnce() -> R) -> R {
        let _held = self.commit_lock();
        f()
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
            .filter_map(|t| {
                let horizon = t.quiescent.min(t.entry);
                let behind = max_tag.is_some_and(|tag| horizon <= tag);
                let pinning = pins_any(&t.pins, &blobs);
                (behind || pinning).then(|| HeldBack {
                    tid: t.tid,
                    since: behind.then(|| {
                        rec.epoch_start(horizon.saturating_add(1))
                            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
                    }),
                    entered: t.entry != NOT_ENTERED,
                    entry_epoch: (t.entry != NOT_ENTERED).then_some(t.entry),
                    offline: t.quiescent == OFFLINE,
                    pinning,
                    pins: t.pins.len(),
                    slow_polls: t.slow_polls,
                })
            })
            .collect();
        (rec.pending(), threads)
    }

    /// Reclaims under the commit lock; reclaim events are appended to
    /// `events` (if a hook is set) for firing after the lock is released.
    /// Then asks exactly the threads that can help (see "Asking one thread"
    /// in `docs/cross-modifying-code.md`):
    ///
    /// 1. publish `waiting_below` (conservatively, before the horizons are
    ///    read), so a thread reporting meanwhile knows it was waited for;
    /// 2. reclaim what every horizon has passed and no pin holds;
    /// 3. set the poll word of each thread inside native code whose horizon
    ///    holds a retirement back, clear every other (a thread whose pins
    ///    alone hold one has answered: it is not asked again here);
    /// 4. publish the exact `waiting_below` and whether pins hold anything.
    pub(crate) fn reclaim_locked(&self, rec: &mut Reclaimer, events: &mut Vec<CodeEvent>) -> usize {
        if self.check_process().is_err() {
            return 0; // never write the parent's memory
        }
        // 1.
        self.waiting_below
            .store(rec.waiting_max_tag().map_or(0, |t| t + 1), Ordering::SeqCst);
        fence(Ordering::SeqCst);
        // 2.
        let hook = self.hooks.is_set();
        let mut owners = Vec::new();
        let n = rec.reclaim(
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
        // 3.
        let waiting_tag = rec.waiting_max_tag();
        let pinned = rec.pinned_blobs();
        let pins_pending = handshake::ask_threads(&self.registry, waiting_tag, &pinned, |tid| {
            if hook {
                events.push(CodeEvent::PinnedBy { tid });
            }
        });
        // 4.
        self.waiting_below
            .store(waiting_tag.map_or(0, |t| t + 1), Ordering::SeqCst);
        self.pins_pending.store(pins_pending, Ordering::Release);
        if pins_pending {
            self.reasker.start(self.me.clone());
        }
        n
    }

    /// `waiting_below` (see its field): 0 when no retirement waits for a
    /// thread's horizon.
    pub(crate) fn waiting_below(&self) -> u64 {
        self.waiting_below.load(Ordering::SeqCst)
    }

    /// A thread reported something that may make a retirement free: reclaim
    /// now, or, if a commit holds the lock, leave it to the holder, which
    /// looks again when it lets go ([`CommitGuard`]). Never waits.
    pub(crate) fn request_reclaim(&self) {
        self.reclaim_wanted.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.serve_reclaim_requests();
    }

    /// [`Self::request_reclaim`] if any retirement waits for threads at all
    /// (the caller has just reported, after a fence).
    pub(crate) fn request_reclaim_if_waited(&self) {
        if self.waiting_below() != 0 || self.pins_pending.load(Ordering::Acquire) {
            self.request_reclaim();
        }
    }

    /// Reclaims while requests are outstanding and the lock is free.
    fn serve_reclaim_requests(&self) {
        if self.check_process().is_err() {
            return;
        }
        while self.reclaim_wanted.load(Ordering::SeqCst) {
            let mut rec = match self.commit.try_lock() {
                Ok(rec) => rec,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return, // the holder looks again
            };
            self.reclaim_wanted.store(false, Ordering::SeqCst);
            let mut events = Vec::new();
            self.reclaim_locked(&mut rec, &mut events);
            drop(rec);
            fence(Ordering::SeqCst);
            self.hooks.fire(&events);
        }
    }

    /// Whether some retirement waits only for pins on threads' stacks.
    pub(crate) fn pins_pending(&self) -> bool {
        self.pins_pending.load(Ordering::Acquire)
    }

    /// Adds the slow-path answers of a thread that deregisters.
    pub(crate) fn retired_slow_polls(&self, n: u64) {
        self.slow_polls_done.fetch_add(n, Ordering::Relaxed);
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
    /// The commit lock. Letting go of it serves the reclamation requests
    /// made while it was held.
    pub(crate) fn commit_lock(&self) -> CommitGuard<'_> {
        CommitGuard {
            rt: self,
            guard: Some(self.commit.lock().unwrap_or_else(|p| p.into_inner())),
        }
    }
}

/// The commit lock, held. Dropping it releases the lock and then, if a thread
/// asked for a reclamation meanwhile (and found the lock taken), reclaims for
/// it: two threads reporting at once cannot both walk away.
pub(crate) struct CommitGuard<'a> {
    rt: &'a Runtime,
    guard: Option<MutexGuard<'a, Reclaimer>>,
}

impl std::ops::Deref for CommitGuard<'_> {
    type Target = Reclaimer;
    fn deref(&self) -> &Reclaimer {
        self.guard.as_ref().expect("held until drop")
    }
}

impl std::ops::DerefMut for CommitGuard<'_> {
    fn deref_mut(&mut self) -> &mut Reclaimer {
        self.guard.as_mut().expect("held until drop")
    }
}

impl Drop for CommitGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        // Orders the unlock before the load: a requester that found the lock
        // taken stored `reclaim_wanted` before it looked (see `request_reclaim`).
        fence(Ordering::SeqCst);
        if self.rt.reclaim_wanted.load(Ordering::SeqCst) {
            self.rt.serve_reclaim_requests();
        }
    }
}

impl Pinned for Runtime {
    fn pins_pending(&self) -> bool {
        Runtime::pins_pending(self)
    }

    fn registry(&self) -> &Registry {
        Runtime::registry(self)
    }
}
