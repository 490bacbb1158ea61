//! Patching a live `call rel32`/`jmp rel32`: Linux's `text_poke_bp` in user space.
//!
//! A published site may be executing on another core while it changes, which the Intel SDM
//! (vol. 3A §8.1.3, "Handling Self- and Cross-Modifying Code") allows only if every core
//! that may run the new bytes serializes between the write and the run; an aligned 4-byte
//! store of the displacement is atomic as *data* (§8.1.1) and promises nothing about what
//! another core *fetches*. The kernel's protocol (`text_poke_bp_batch` in
//! `arch/x86/kernel/alternative.c`) never lets a core fetch a half-written instruction:
//!
//! 1. write `int3` (`CC`) over the first byte of every site; **serialize every core**;
//! 2. write the other four bytes (the new displacement); **serialize every core**;
//! 3. write the first byte back (`E8` or `E9`); **serialize every core**.
//!
//! At any moment a core runs the whole old instruction, the whole new one, or the `int3`,
//! whose handler does what the new instruction would and returns. Each "serialize every
//! core" is what `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)` gives user space
//! ([`crate::sync`]); the handler is a `SIGTRAP` handler (below). The runtime runs the
//! three steps inside [`crate::Transaction::commit`], for every site the transaction
//! patches live (a batch: the same three serializations for any number of sites), and
//! merges step 1's serialization with the commit's own first one. Sites bound to dispatch
//! slots ([`crate::bound_sites`]) go through the same batch when their slot moves.
//!
//! # The handler
//!
//! Installed once per process (the first time a transaction patches a live site), with
//! `sigaction(2)`, keeping the previous disposition. On a `SIGTRAP` from an `int3`
//! (`si_code == SI_KERNEL`) at `rip - 1`:
//!
//! - a site in the table of sites being patched: emulate the instruction: for a call,
//!   push the return address (`site + 5`) as the `call` would (same stack alignment) and go
//!   to the target; for a jmp, go to the target. The target is the *old* one until step 1's
//!   serialization has returned (the new one may be code the same commit stages, not yet
//!   safe to fetch, and freed if that serialization fails), the new one from then on;
//! - a site whose patch has ended since the trap (its handler ran late, after step 3): go
//!   back to the site and run the instruction now there;
//! - anything else is not ours: the previous handler runs (or, if there was none, the
//!   default action: the process dies of `SIGTRAP`, as poisoned code must make it).
//!
//! The handler reads only atomics in a fixed table; it takes no lock and allocates
//! nothing (async-signal-safe, `signal-safety(7)`).
//!
//! # Failure midway
//!
//! - Step 1's serialization fails: each site gets its old first byte back (its old
//!   displacement never changed), so a core that still runs the stale `int3` is sent back
//!   to the old instruction. Nothing was published.
//! - Step 2's fails: the sites stay `int3`, their entries keep the new target: every call
//!   through them is emulated, correctly, until a later transaction patches them again (the
//!   runtime accepts a site that is still `int3` when the table knows it). The commit
//!   reports `published: true` (the `Eventual` promise), as for dispatch slots.
//! - Step 3's fails: the new instruction is in place and every stale `int3` is still
//!   emulated; again `published: true`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::patch::{displaced, Rel32Kind, Rel32Site, REL32_LEN};

/// The `int3` opcode.
pub const INT3: u8 = 0xCC;

/// The most sites one commit may patch live (the table's size).
pub const MAX_LIVE_SITES: usize = 1024;

/// An entry's state, in [`Entry::state`].
const FREE: usize = 0;
/// Being patched (or left as `int3`): emulate `target`.
const EMULATE: usize = 1;
/// Patched; the first byte is back: a late handler runs the site again.
const DONE: usize = 2;

/// One site of the table, a seqlock: the writer (under [`TABLE_LOCK`]) makes `seq` odd,
/// writes the fields, makes it even again; a reader that saw the same even `seq` before and
/// after reading the fields read one consistent entry.
struct Entry {
    seq: AtomicUsize,
    addr: AtomicUsize,
    target: AtomicUsize,
    kind: AtomicUsize,
    state: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)] // only to initialize the array
const FREE_ENTRY: Entry = Entry {
    seq: AtomicUsize::new(0),
    addr: AtomicUsize::new(0),
    target: AtomicUsize::new(0),
    kind: AtomicUsize::new(0),
    state: AtomicUsize::new(FREE),
};

/// The sites being patched, or left as `int3`, or patched, in every runtime of the process
/// (the handler is the process's). Written only under a runtime's commit lock and
/// [`TABLE_LOCK`].
static TABLE: [Entry; MAX_LIVE_SITES] = [FREE_ENTRY; MAX_LIVE_SITES];
/// Serializes writers from several runtimes.
static TABLE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The lowest and one past the highest site address ever patched live: a late trap whose
/// entry was reused for another site is recognised by its address and its restored byte.
static LIVE_LO: AtomicUsize = AtomicUsize::new(usize::MAX);
static LIVE_HI: AtomicUsize = AtomicUsize::new(0);

/// Calls and jumps the handler emulated, and late traps it sent back to the site.
static EMULATED: AtomicU64 = AtomicU64::new(0);
static RERUN: AtomicU64 = AtomicU64::new(0);

/// How often the `SIGTRAP` handler did its work, since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapCounts {
    /// Threads that hit a site's `int3` and were sent on as the new instruction would.
    pub emulated: u64,
    /// Threads whose handler ran after the site was restored, sent back to run it.
    pub rerun: u64,
}

/// The counts so far.
pub fn trap_counts() -> TrapCounts {
    TrapCounts {
        emulated: EMULATED.load(Ordering::Relaxed),
        rerun: RERUN.load(Ordering::Relaxed),
    }
}

/// What an entry said, read consistently.
#[derive(Clone, Copy)]
struct Snapshot {
    index: usize,
    target: usize,
    kind: usize,
    state: usize,
}

impl Entry {
    /// The entry, if it is the site at `addr`'s and was not being written.
    fn read(&self, index: usize, addr: usize) -> Option<Snapshot> {
        let before = self.seq.load(Ordering::Acquire);
        if before % 2 == 1 || self.addr.load(Ordering::Relaxed) != addr {
            return None;
        }
        let snap = Snapshot {
            index,
            target: self.target.load(Ordering::Relaxed),
            kind: self.kind.load(Ordering::Relaxed),
            state: self.state.load(Ordering::Relaxed),
        };
        std::sync::atomic::fence(Ordering::Acquire);
        (self.seq.load(Ordering::Relaxed) == before && snap.state != FREE).then_some(snap)
    }

    /// Writes the fields. Only under [`TABLE_LOCK`].
    fn write(&self, addr: usize, target: usize, kind: usize, state: usize) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq + 1, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        self.addr.store(addr, Ordering::Relaxed);
        self.target.store(target, Ordering::Relaxed);
        self.kind.store(kind, Ordering::Relaxed);
        self.state.store(state, Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
    }

    /// Changes only the state. Only under [`TABLE_LOCK`].
    fn set_state(&self, state: usize) {
        let (addr, target, kind) = (
            self.addr.load(Ordering::Relaxed),
            self.target.load(Ordering::Relaxed),
            self.kind.load(Ordering::Relaxed),
        );
        self.write(addr, target, kind, state);
    }
}

/// The entry for the site at `addr`, if the table has one.
fn entry_of(addr: usize) -> Option<Snapshot> {
    TABLE.iter().enumerate().find_map(|(k, e)| e.read(k, addr))
}

/// The target the table emulates for `site`, if it keeps the site as `int3`.
pub(crate) fn emulated_target(site: &Rel32Site) -> Option<usize> {
    entry_of(site.addr())
        .filter(|e| e.state == EMULATE)
        .map(|e| e.target)
}

/// Whether `site` is one the table keeps as `int3` (step 2's serialization failed), so its
/// first byte is `int3` and not its opcode.
pub(crate) fn left_as_int3(site: &Rel32Site) -> bool {
    entry_of(site.addr()).is_some_and(|e| e.state == EMULATE)
}

/// One commit's sites, through the protocol's steps (see the module docs). Holds the
/// table's lock from [`LiveBatch::begin`] to drop.
pub(crate) struct LiveBatch {
    /// (site, new target, the RW alias of its opcode byte, its table entry).
    sites: Vec<(Rel32Site, usize, usize, usize)>,
    _table: Option<std::sync::MutexGuard<'static, ()>>,
}

impl LiveBatch {
    pub(crate) fn empty() -> LiveBatch {
        LiveBatch {
            sites: Vec::new(),
            _table: None,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }

    /// Step 1's writes: installs the handler, records each site's entry, then writes `int3`
    /// over each first byte. Until [`LiveBatch::retarget`] an entry emulates the site's *old*
    /// target: before step 1's serialization a core that hits the `int3` must do what the old
    /// instruction does, because the new target may be code this commit stages, which no
    /// core may fetch before that serialization (and which is freed if it fails). `sites`
    /// are (site, new target, RW alias of the opcode byte), validated by the caller.
    pub(crate) fn begin(sites: &[(Rel32Site, usize, usize)]) -> LiveBatch {
        if sites.is_empty() {
            return LiveBatch::empty();
        }
        install_handler();
        let lock = TABLE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // Entries of earlier batches are no longer needed once no core can hold their stale
        // `int3`: every batch ends with a serialization, so only entries left emulating
        // (step 2 failed) are kept, and reused for their own site.
        let mut out = Vec::with_capacity(sites.len());
        for &(site, target, rw) in sites {
            let (k, old) = match entry_of(site.addr()) {
                Some(e) if e.state == EMULATE => (e.index, e.target),
                found => {
                    let k = found.map_or_else(
                        || free_slot(&out).expect("MAX_LIVE_SITES checked by the caller"),
                        |e| e.index,
                    );
                    // SAFETY: the RW alias of the site's displacement, inside its blob.
                    let disp = unsafe { std::ptr::read_volatile((rw + 1) as *const [u8; 4]) };
                    (k, displaced(site.addr(), i32::from_le_bytes(disp)))
                }
            };
            TABLE[k].write(site.addr(), old, site.kind() as usize, EMULATE);
            LIVE_LO.fetch_min(site.addr(), Ordering::Release);
            LIVE_HI.fetch_max(site.addr() + 1, Ordering::Release);
            out.push((site, target, rw, k));
        }
        for &(_, _, rw, _) in &out {
            // SAFETY: `rw` is the RW alias of a live site's opcode byte, mapped for the
            // runtime's life; a byte store cannot tear, and the table knows the site
            // before any core can fetch the `int3`.
            unsafe { std::ptr::write_volatile(rw as *mut u8, INT3) };
        }
        LiveBatch {
            sites: out,
            _table: Some(lock),
        }
    }

    /// Step 1's serialization succeeded: every core sees the `int3`s and may run the new
    /// targets, so the handler now sends trapped threads there.
    pub(crate) fn retarget(&self) {
        for &(site, target, _, k) in &self.sites {
            TABLE[k].write(site.addr(), target, site.kind() as usize, EMULATE);
        }
    }

    /// Step 1's serialization failed: the old first bytes back (the old displacement never
    /// left), entries done, so a core that still runs a stale `int3` is sent back to the
    /// old instruction.
    pub(crate) fn roll_back(&mut self) {
        for &(site, _, rw, k) in &self.sites {
            // SAFETY: as in `begin`.
            unsafe { std::ptr::write_volatile(rw as *mut u8, site.kind().opcode()) };
            TABLE[k].set_state(DONE);
        }
        self.sites.clear();
    }

    /// Step 2's writes: every new displacement. No alignment is needed: behind an `int3`
    /// that every core has seen, no core fetches these bytes as an instruction (a site is a
    /// whole instruction nothing jumps into), so they may change in any order.
    pub(crate) fn write_displacements(&self) {
        for &(site, target, rw, _) in &self.sites {
            let disp = crate::patch::rel32_disp(site.addr(), target).expect("checked in reach");
            // SAFETY: the displacement's RW alias (a byte array: no alignment needed),
            // behind an `int3` every core has seen (step 1's serialization).
            unsafe { std::ptr::write_volatile((rw + 1) as *mut [u8; 4], disp.to_le_bytes()) };
        }
    }

    /// Step 3's writes: every first byte back; entries say the site is done.
    pub(crate) fn write_opcodes(&self) {
        for &(site, _, rw, k) in &self.sites {
            // SAFETY: as in `begin`; the new displacement is behind the `int3` on every
            // core (step 2's serialization).
            unsafe { std::ptr::write_volatile(rw as *mut u8, site.kind().opcode()) };
            TABLE[k].set_state(DONE);
        }
    }
}

/// A table entry to reuse, not taken by this batch: a free one, else a done one (a trap
/// on its old `int3` whose handler runs only now finds the byte restored, see the handler).
fn free_slot(taken: &[(Rel32Site, usize, usize, usize)]) -> Option<usize> {
    let state = |k: usize| TABLE[k].state.load(Ordering::Relaxed);
    let untaken = |k: &usize| !taken.iter().any(|t| t.3 == *k);
    (0..MAX_LIVE_SITES)
        .filter(untaken)
        .find(|&k| state(k) == FREE)
        .or_else(|| {
            (0..MAX_LIVE_SITES)
                .filter(untaken)
                .find(|&k| state(k) == DONE)
        })
}

/// The disposition before ours, called for traps that are not ours.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// Installs the `SIGTRAP` handler once per process.
fn install_handler() {
    PREVIOUS.get_or_init(|| {
        // SAFETY: a zeroed `sigaction` is a valid value of the C struct; `sigemptyset` and
        // `sigaction(2)` get valid pointers. SA_SIGINFO: the handler takes the siginfo
        // and ucontext it reads.
        unsafe {
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = on_sigtrap as extern "C" fn(_, _, _) as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut new.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            let rc = libc::sigaction(libc::SIGTRAP, &new, &mut old);
            assert_eq!(rc, 0, "sigaction(SIGTRAP) with valid arguments");
            old
        }
    });
}

/// How many times the handler looks for a site's entry before it takes the trap as foreign.
const LOOKS: usize = 1000;

extern "C" fn on_sigtrap(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo and ucontext (SA_SIGINFO); the interrupted
    // thread's registers are ours to change until we return.
    unsafe {
        let uc = &mut *(ctx as *mut libc::ucontext_t);
        let gregs = &mut uc.uc_mcontext.gregs;
        let rip = gregs[libc::REG_RIP as usize] as usize;
        if (*info).si_code == libc::SI_KERNEL {
            let at = rip.wrapping_sub(1);
            let patched_here =
                (LIVE_LO.load(Ordering::Acquire)..LIVE_HI.load(Ordering::Acquire)).contains(&at);
            // An entry is being written for a few instructions at a time: look again then.
            for _ in 0..LOOKS {
                match entry_of(at) {
                    Some(e) if e.state == EMULATE => {
                        if e.kind == Rel32Kind::Call as usize {
                            // What `call` does: push the return address, then jump. The
                            // kernel put the signal frame below the red zone, so the word
                            // below the interrupted rsp is free (a `call` writes it too).
                            let rsp = gregs[libc::REG_RSP as usize] as usize - 8;
                            *(rsp as *mut usize) = at + REL32_LEN;
                            gregs[libc::REG_RSP as usize] = rsp as i64;
                        }
                        gregs[libc::REG_RIP as usize] = e.target as i64;
                        EMULATED.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    // A site whose patch ended after this trap: run what is there now
                    // (the new instruction, or a newer batch's `int3`, which the table
                    // knows by the time it traps again).
                    Some(_) => return rerun(gregs, at),
                    None if !patched_here => break,
                    // A site whose entry went to another site since: its byte was
                    // executed, so it is mapped; restored, it runs again.
                    None if std::ptr::read_volatile(at as *const u8) != INT3 => {
                        return rerun(gregs, at)
                    }
                    // Still `int3` and no entry: a batch may have been writing the entry
                    // and the `int3` since the look above; a foreign `int3` ends the loop.
                    None => std::hint::spin_loop(),
                }
            }
        }
        chain(sig, info, ctx);
    }
}

/// Sends the interrupted thread back to the site at `at`.
fn rerun(gregs: &mut [libc::greg_t], at: usize) {
    gregs[libc::REG_RIP as usize] = at as i64;
    RERUN.fetch_add(1, Ordering::Relaxed);
}

/// Passes a trap that is not ours to the disposition before ours.
///
/// # Safety
/// The arguments of a `SIGTRAP` handler invocation.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let Some(prev) = PREVIOUS.get() else { return };
    match prev.sa_sigaction {
        libc::SIG_DFL | libc::SIG_IGN => {
            // The default action, as if we had never been installed: SIGTRAP is blocked
            // while this handler runs, so the raised one is delivered, with the default
            // disposition, when it returns (an `int3` trap cannot be ignored either).
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(libc::SIGTRAP, &dfl, std::ptr::null_mut());
            libc::raise(libc::SIGTRAP);
        }
        handler if prev.sa_flags & libc::SA_SIGINFO != 0 => {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(handler);
            f(sig, info, ctx);
        }
        handler => {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
            f(sig);
        }
    }
}
