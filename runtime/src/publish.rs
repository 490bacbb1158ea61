//! Publication: the transaction a JIT uses to change running code.
//!
//! A [`Transaction`] stages new blobs (copied into the RW view right away;
//! nothing points at them yet), the patches that will point at them, and the
//! blobs they replace; [`Transaction::commit`] publishes them all with one or
//! two serializations. Batch: the cost does not grow with the number of
//! blobs and patches.

use std::marker::PhantomData;
use std::sync::atomic::Ordering;

use crate::code_map::CodeEvent;
use crate::code_memory::{Blob, State};
use crate::icache::flush_icache;
use crate::patch::DispatchSlot;
#[cfg(target_arch = "x86_64")]
use crate::patch::{rel32_disp, Rel32Site};
use crate::reloc::{apply, Reloc};
use crate::staging::Staging;
use crate::tx_buffers::TxBuffers;
use crate::{Error, Runtime};

/// What [`Transaction::commit`] guarantees when it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Guarantee {
    /// No thread will *start* any code this transaction replaced (two
    /// serializations), for the call sequences listed in [`crate::patch`].
    /// Needed when the old code becomes *wrong* (a failed speculation, a
    /// changed class hierarchy, a `patch` the program can observe).
    Strong,
    /// New code is visible everywhere before anything points at it, but a
    /// thread may still start old code until the next serialization (one
    /// serialization). Enough for tier-ups, where old code is merely slower.
    Eventual,
}

/// What a commit did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// Core serializations performed: 1 (Eventual) or 2 (Strong) whatever
    /// the batch size, 0 with [`crate::Strategy::None`].
    pub serializations: u32,
    /// The epoch this commit advanced from (the tag of its retirements when
    /// `Strong`).
    pub epoch: u64,
    /// Retired blobs reclaimed by this commit (from this or earlier commits).
    pub reclaimed: usize,
}

/// A batch of code changes; see the module docs. Dropping it uncommitted
/// frees its staged blobs and changes nothing.
pub struct Transaction<'a> {
    rt: &'a Runtime,
    buf: TxBuffers,
    /// The slots in `buf.dispatch` are borrowed for `'a`.
    _slots: PhantomData<&'a DispatchSlot>,
}

/// The patch-target rule: an address outside the code region is allowed
/// (a Rust function, an interpreter trampoline, a heap header); one inside it
/// must lie in a live blob that is not being retired, or in a blob staged by
/// the same transaction.
fn check_target(rt: &Runtime, buf: &TxBuffers, target: usize) -> Result<(), Error> {
    if !rt.mem().contains(target) {
        return Ok(());
    }
    match rt.mem().covering(target) {
        Some((b, State::Live, _)) if !buf.is_retired(&b) => Ok(()),
        Some((_, State::Live, _)) => Err(Error::InvalidTarget(
            "inside a blob this transaction retires",
        )),
        Some((b, State::Staged, _)) if buf.is_staged(&b) => Ok(()),
        Some((_, State::Retired | State::Quarantined, _)) => {
            Err(Error::InvalidTarget("inside a retired blob"))
        }
        _ => Err(Error::InvalidTarget(
            "inside the code region but not in a live blob or one staged by this transaction",
        )),
    }
}

/// A live site's rule (see [`Transaction::patch_live_rel32`]), checked when it is added
/// and again at commit.
#[cfg(target_arch = "x86_64")]
fn check_live_site(rt: &Runtime, buf: &TxBuffers, site: &Rel32Site) -> Result<(), Error> {
    match rt.mem().state(site.blob) {
        Some(State::Live) if !buf.is_retired(&site.blob) => {}
        Some(State::Live) => {
            return Err(Error::InvalidSite(
                "the site's blob is retired by this transaction",
            ))
        }
        Some(State::Staged) => {
            return Err(Error::InvalidSite(
                "the site's blob is not published yet; patch_rel32 writes staged sites",
            ))
        }
        _ => {
            return Err(Error::InvalidSite(
                "the site's blob is retired or reclaimed",
            ))
        }
    }
    check_first_byte(rt, site)
}

/// A site patched live starts with its opcode, or with an `int3` that the live-patching
/// table still emulates (a commit whose step-2 serialization failed left it).
#[cfg(target_arch = "x86_64")]
fn check_first_byte(rt: &Runtime, site: &Rel32Site) -> Result<(), Error> {
    let first = rt.mem().read_byte(site.addr());
    let left_as_int3 = first == crate::live_patch::INT3 && crate::live_patch::left_as_int3(site);
    if first != site.kind().opcode() && !left_as_int3 {
        return Err(Error::InvalidSite(
            "the site's first byte is not its opcode",
        ));
    }
    Ok(())
}

/// Step 1 for bound sites ([`crate::bound_sites`]): drops the bindings of reclaimed blobs,
/// queues the staged write of each site bound here (to its slot's target after the
/// commit), and returns the live patches that keep the sites of the slots this commit moves
/// on their slots' new targets. Refuses an explicit live patch of a bound site, a target out
/// of reach, and more live sites than one commit patches. Changes nothing else.
#[cfg(target_arch = "x86_64")]
fn bound_site_patches(
    rt: &Runtime,
    b: &mut TxBuffers,
    bound: &mut crate::bound_sites::BoundSites,
) -> Result<Vec<(Rel32Site, usize)>, Error> {
    bound.prune(rt.mem());
    let after = |b: &TxBuffers, slot: usize| match b.dispatch.iter().rev().find(|d| d.0 == slot) {
        Some(&(_, t)) => t,
        // SAFETY: `slot` is the address of a `&'a DispatchSlot` given to `bind_rel32` or
        // `set_dispatch`, borrowed by the transaction for `'a`.
        None => unsafe { &*(slot as *const DispatchSlot) }.get(),
    };
    let mut writes = Vec::with_capacity(b.bind.len());
    for &(site, slot) in &b.bind {
        let disp = rel32_disp(site.opcode, after(b, slot)).ok_or(Error::OutOfRange)?;
        writes.push((site, disp));
    }
    let mut live = Vec::new();
    let mut moved: Vec<usize> = b.dispatch.iter().map(|d| d.0).collect();
    moved.sort_unstable();
    moved.dedup();
    for slot in moved {
        let target = after(b, slot);
        for &site in bound.of_slot(slot) {
            // Live or retired (bindings of reclaimed blobs were pruned): either may run.
            check_first_byte(rt, &site)?;
            if current_target(rt, &site) == target {
                continue;
            }
            rel32_disp(site.opcode, target).ok_or(Error::OutOfRange)?;
            live.push((site, target));
        }
    }
    if b.live_rel32.iter().any(|(s, _)| bound.contains(s.addr())) {
        return Err(Error::InvalidSite(
            "the site is bound to a dispatch slot, which moves it",
        ));
    }
    if live.len() + b.live_rel32.len() > crate::live_patch::MAX_LIVE_SITES {
        return Err(Error::InvalidSite(
            "more live sites than one commit patches",
        ));
    }
    b.rel32.extend(writes);
    Ok(live)
}

/// Where a site transfers now: its displacement's target, or the target the live-patching
/// table emulates while the site is left as `int3`.
#[cfg(target_arch = "x86_64")]
fn current_target(rt: &Runtime, site: &Rel32Site) -> usize {
    if let Some(t) = crate::live_patch::emulated_target(site) {
        return t;
    }
    crate::patch::encoded_target(rt.mem(), site)
}

/// Step 1's rule for slots: after this commit, no slot of the runtime may
/// target a blob it retires (calls through the slot would run freed code).
/// A slot's target after the commit is the last `set_dispatch` of it here,
/// else what it holds now.
fn check_slots_leave_retired(rt: &Runtime, buf: &TxBuffers) -> Result<(), Error> {
    for slot in rt.slots().iter() {
        let addr = slot.as_ptr() as usize;
        let target = match buf.dispatch.iter().rev().find(|&&(s, _)| s == addr) {
            Some(&(_, t)) => t,
            None => slot.get(),
        };
        if !rt.mem().contains(target) {
            continue;
        }
        if let Some((blob, _, _)) = rt.mem().covering(target) {
            if buf.is_retired(&blob) {
                return Err(Error::SlotTargetsRetired { slot: addr, target });
            }
        }
    }
    Ok(())
}

impl<'a> Transaction<'a> {
    pub(crate) fn new(rt: &'a Runtime) -> Transaction<'a> {
        Transaction {
            rt,
            buf: rt.tx_buffers(),
            _slots: PhantomData,
        }
    }

    /// Allocates staged memory, reclaiming first if the region is full; an
    /// allocation that still fails names the threads holding code back.
    fn alloc(&mut self, len: usize, align: usize) -> Result<Blob, Error> {
        let rt = self.rt;
        rt.check_process()?;
        let try_alloc = || rt.mem().allocate_as(len, align, State::Staged, 0);
        match try_alloc() {
            Err(Error::OutOfCodeMemory { .. }) => {}
            r => return r,
        }
        rt.reclaim();
        match try_alloc() {
            Err(Error::OutOfCodeMemory {
                requested,
                capacity,
                ..
            }) => {
                let (pending_retirements, held_back_by) = rt.held_back();
                Err(Error::OutOfCodeMemory {
                    requested,
                    capacity,
                    pending_retirements,
                    held_back_by,
                })
            }
            r => r,
        }
    }

    /// Allocates a blob aligned to `align` (a power of two) and copies `code`
    /// into it.
    pub fn stage(&mut self, code: &[u8], align: usize) -> Result<Blob, Error> {
        self.stage_with(code.len(), align, |buf, _| buf.copy_from_slice(code))
    }

    /// Allocates `len` bytes aligned to `align` and lets `fill` write them;
    /// `fill` also gets the blob's executable address, for position-dependent
    /// code.
    pub fn stage_with(
        &mut self,
        len: usize,
        align: usize,
        fill: impl FnOnce(&mut [u8], usize),
    ) -> Result<Blob, Error> {
        let blob = self.alloc(len, align)?;
        self.buf.add_staged(blob);
        if self.rt.config().poison {
            let padded = len.max(1).div_ceil(16) * 16;
            self.rt.mem().fill_trap(blob.addr() + len, padded - len);
        }
        fill(self.rt.mem().staged_slice(blob), blob.addr());
        Ok(blob)
    }

    /// Reserves `max_len` bytes aligned to `align` for in-place assembly; see
    /// [`Staging`]. The reservation's address is final.
    pub fn reserve(&mut self, max_len: usize, align: usize) -> Result<Staging<'_>, Error> {
        let blob = self.alloc(max_len, align)?;
        if self.rt.config().poison {
            let padded = max_len.max(1).div_ceil(16) * 16;
            self.rt.mem().fill_trap(blob.addr(), padded);
        }
        Ok(Staging {
            rt: self.rt,
            buf: &mut self.buf,
            blob: Some(blob),
        })
    }

    /// Stages `code` and applies `relocs` to it at its final address. A
    /// relocation outside the code, or whose value does not fit, is an error
    /// ([`Error::InvalidArgument`], or [`Error::OutOfRange`] for a PC-relative
    /// one); so is a target inside the code region that is not a live blob or
    /// one staged by this transaction. Nothing is staged on error.
    pub fn stage_relocated(
        &mut self,
        code: &[u8],
        align: usize,
        relocs: &[Reloc],
    ) -> Result<Blob, Error> {
        let blob = self.alloc(code.len(), align)?;
        // Checked with the new blob counted as staged: code may refer to
        // itself.
        self.buf.add_staged(blob);
        let mut result = relocs.iter().try_for_each(|r| self.check_target(r.target));
        if result.is_ok() {
            let buf = self.rt.mem().staged_slice(blob);
            buf.copy_from_slice(code);
            result = relocs.iter().try_for_each(|r| apply(buf, blob.addr(), r));
        }
        if let Err(e) = result {
            self.buf.staged.pop();
            self.buf.staged_gens.remove(&blob.gen);
            let _ = self.rt.mem().free_all(&[blob], State::Staged);
            return Err(e);
        }
        let mem = self.rt.mem();
        self.buf
            .targets
            .extend(relocs.iter().map(|r| r.target).filter(|&t| mem.contains(t)));
        Ok(blob)
    }

    /// Sets the owner tag of a blob staged by this transaction (what
    /// [`Runtime::lookup`] and the code hook report).
    pub fn set_owner(&mut self, blob: Blob, owner: u64) -> Result<(), Error> {
        if !self.buf.is_staged(&blob) {
            return Err(Error::InvalidBlob);
        }
        self.rt.mem().set_owner(blob, State::Staged, owner)
    }

    fn check_target(&self, target: usize) -> Result<(), Error> {
        check_target(self.rt, &self.buf, target)
    }

    /// Points `slot` at `target` when the transaction commits (release
    /// store). A target outside the code region is allowed (a Rust function,
    /// an interpreter trampoline); one inside it must be in a live blob that
    /// this transaction does not retire, or in a blob staged by it:
    /// otherwise [`Error::InvalidTarget`] (checked here and again at commit).
    /// The slot must be one of this runtime's ([`Error::ForeignSlot`]).
    pub fn set_dispatch(&mut self, slot: &'a DispatchSlot, target: usize) -> Result<(), Error> {
        if slot.owner() != self.rt.id() {
            return Err(Error::ForeignSlot);
        }
        self.check_target(target)?;
        let addr = slot as *const DispatchSlot as usize;
        self.buf.dispatch.push((addr, target));
        Ok(())
    }

    /// Points a rel32 `call`/`jmp` site at `target` when the transaction
    /// commits. The site must be in a blob staged by this transaction: a
    /// published site may be running and is not patchable (see
    /// [`crate::patch`]; call through a [`DispatchSlot`]). The target follows
    /// the [`set_dispatch`](Self::set_dispatch) rule and must be in rel32
    /// reach ([`Error::OutOfRange`]).
    #[cfg(target_arch = "x86_64")]
    pub fn patch_rel32(&mut self, site: Rel32Site, target: usize) -> Result<(), Error> {
        if !self.buf.is_staged(&site.blob) {
            return Err(match self.rt.mem().state(site.blob) {
                Some(State::Live) => Error::InvalidSite(
                    "the site is published and may be running; patch calls through a DispatchSlot",
                ),
                Some(State::Staged) => {
                    Error::InvalidSite("the site's blob is staged by another transaction")
                }
                _ => Error::InvalidSite("the site's blob is retired or reclaimed"),
            });
        }
        self.check_target(target)?;
        let disp = rel32_disp(site.opcode, target).ok_or(Error::OutOfRange)?;
        self.buf.rel32.push((site, disp));
        if self.rt.mem().contains(target) {
            self.buf.targets.push(target);
        }
        Ok(())
    }

    /// Points a rel32 `call`/`jmp` site in a *published* blob, which threads may be running,
    /// at `target` when the transaction commits, by the `int3` protocol of
    /// [`crate::live_patch`] (three serializations for all the live sites of one commit).
    /// The site's blob must be live and not retired by this transaction, its first byte
    /// its opcode, the site patched once here; the target follows the
    /// [`set_dispatch`](Self::set_dispatch) rule and must be in rel32 reach
    /// ([`Error::OutOfRange`]). At most [`crate::live_patch::MAX_LIVE_SITES`] per commit.
    /// The site must be a whole instruction that no code jumps into the middle of: the
    /// runtime cannot check that, the code's compiler knows it.
    #[cfg(target_arch = "x86_64")]
    pub fn patch_live_rel32(&mut self, site: Rel32Site, target: usize) -> Result<(), Error> {
        check_live_site(self.rt, &self.buf, &site)?;
        if self
            .buf
            .live_rel32
            .iter()
            .any(|(s, _)| s.addr() == site.addr())
        {
            return Err(Error::InvalidSite(
                "the site is patched twice in one transaction",
            ));
        }
        if self.buf.live_rel32.len() == crate::live_patch::MAX_LIVE_SITES {
            return Err(Error::InvalidSite(
                "more live sites than one commit patches",
            ));
        }
        self.check_target(target)?;
        rel32_disp(site.opcode, target).ok_or(Error::OutOfRange)?;
        self.buf.live_rel32.push((site, target));
        if self.rt.mem().contains(target) {
            self.buf.targets.push(target);
        }
        Ok(())
    }

    /// Binds a rel32 site in a blob staged by this transaction to `slot`
    /// ([`crate::bound_sites`]): the commit writes the site with the slot's target
    /// after the commit, and every later commit that moves the slot patches the site
    /// live to the slot's new target, for as long as the site's blob may run. The
    /// slot's targets must stay in rel32 reach of the site ([`Error::OutOfRange`] at
    /// the commit that would break that). [`Error::InvalidSite`] if the site is not
    /// staged here or bound twice, or when [`crate::bound_sites::MAX_BOUND_SITES`]
    /// sites are bound already (leave that call on the slot); [`Error::ForeignSlot`]
    /// for another runtime's slot.
    #[cfg(target_arch = "x86_64")]
    pub fn bind_rel32(&mut self, site: Rel32Site, slot: &'a DispatchSlot) -> Result<(), Error> {
        if slot.owner() != self.rt.id() {
            return Err(Error::ForeignSlot);
        }
        if !self.buf.is_staged(&site.blob) {
            return Err(Error::InvalidSite(
                "a site is bound in the transaction that stages its blob",
            ));
        }
        if self.buf.bind.iter().any(|(s, _)| s.addr() == site.addr()) {
            return Err(Error::InvalidSite("the site is bound twice"));
        }
        // Counted as of the last commit, which pruned reclaimed blobs' sites.
        let bound = self.rt.bound_sites().len();
        if bound + self.buf.bind.len() >= crate::bound_sites::MAX_BOUND_SITES {
            return Err(Error::InvalidSite(
                "as many sites are bound as the runtime binds",
            ));
        }
        self.buf
            .bind
            .push((site, slot as *const DispatchSlot as usize));
        Ok(())
    }

    /// Marks a published `blob` as replaced: after the commit it is reclaimed
    /// once no thread can be running it. A blob that is not live (stale,
    /// foreign, staged, already retired) or is listed twice is
    /// [`Error::InvalidBlob`], and nothing is recorded.
    pub fn retire(&mut self, blob: Blob) -> Result<(), Error> {
        if self.rt.mem().state(blob) != Some(State::Live) || self.buf.is_retired(&blob) {
            return Err(Error::InvalidBlob);
        }
        self.buf.retire.push(blob);
        self.buf.retire_gens.insert(blob.gen);
        Ok(())
    }

    /// Publishes everything.
    ///
    /// **The promise**: when a [`Guarantee::Strong`] commit returns `Ok`, no
    /// thread will start the code it replaced (through the call sequences
    /// [`crate::patch`] lists), and the new code is safe to run on every
    /// core. With [`Guarantee::Eventual`] the new code is safe to run
    /// everywhere, but a thread may start replaced code until the next
    /// serialization.
    ///
    /// **The steps**, in this order, under the runtime's commit lock
    /// (concurrent commits queue):
    ///
    /// 1. validate everything, changing nothing: staged blobs, retirements
    ///    (live, each once), every patch and relocation target (the
    ///    [`set_dispatch`](Self::set_dispatch) rule, against the state *now*),
    ///    and that no dispatch slot of the runtime will target a blob this
    ///    commit retires ([`Error::SlotTargetsRetired`]);
    /// 2. write the rel32 sites inside staged blobs (nobody can reach them);
    ///    record the live rel32 sites for the `SIGTRAP` handler and write
    ///    their `int3`s ([`crate::live_patch`]);
    /// 3. instruction-cache maintenance over each staged range (nothing on
    ///    x86-64);
    /// 4. **serialize every core** (first serialization): no core can hold a
    ///    stale copy of the new bytes before anything points at them; earlier
    ///    `Eventual` retirements become unreachable;
    /// 5. mark staged blobs live and retired ones retired, then store every
    ///    dispatch slot (release), then the live sites' displacements;
    /// 6. `Strong` (or live sites): **serialize again**: every core has
    ///    finished what it had in flight, so none starts replaced code from
    ///    here on through a slot; then, for live sites, their opcode bytes
    ///    back and **a third serialization**: no core runs a site's old
    ///    instruction from here on;
    /// 7. advance the epoch, tag the retirements that are now unreachable,
    ///    reclaim what every thread has moved past, update the poll word,
    ///    and (after releasing the lock) report published and reclaimed
    ///    blobs to the code hook.
    ///
    /// **On error**:
    /// * validation (step 1) or a fork child ([`Error::ForkedChild`]):
    ///   nothing happened;
    /// * [`Error::Serialization`] with `published: false` (step 4 failed):
    ///   nothing was published, no slot changed, no retirement recorded; the
    ///   staged blobs are freed. The old code keeps running. The caller may
    ///   stage again in a new transaction and retry.
    /// * [`Error::Serialization`] with `published: true` (step 6 failed):
    ///   steps 1-5 happened (the new code is live and safe to run, the slots
    ///   point at it, the retirements are recorded) but only the `Eventual`
    ///   guarantee holds: a thread may still start the replaced code, which
    ///   is therefore kept until a later serialization succeeds. To obtain
    ///   the Strong promise, commit an empty transaction with
    ///   `Guarantee::Strong` (or call [`Runtime::synchronize`]); when it
    ///   returns `Ok`, it holds.
    pub fn commit(mut self, guarantee: Guarantee) -> Result<CommitInfo, Error> {
        let rt = self.rt;
        rt.check_process()?;
        let mem = rt.mem();
        let mut rec = rt.commit_lock();
        let b = &mut self.buf;

        // 1. Validate; nothing changes before this passes.
        mem.check_publish(&b.staged, &b.retire)?;
        for &t in b.dispatch.iter().map(|(_, t)| t).chain(&b.targets) {
            check_target(rt, b, t)?;
        }
        if !b.retire.is_empty() {
            check_slots_leave_retired(rt, b)?;
        }
        #[cfg(target_arch = "x86_64")]
        for (site, _) in &b.live_rel32 {
            check_live_site(rt, b, site)?;
        }
        //    Bound sites follow their slots: new ones are written with their
        //    blobs, those of moved slots join the live sites.
        #[cfg(target_arch = "x86_64")]
        let mut bound = rt.bound_sites();
        #[cfg(target_arch = "x86_64")]
        let bound_live = bound_site_patches(rt, b, &mut bound)?;

        // 2. rel32 sites inside blobs nobody can reach yet.
        #[cfg(target_arch = "x86_64")]
        for (site, disp) in &b.rel32 {
            let rw = mem.rw_of(site.disp_addr()) as *mut [u8; 4];
            // SAFETY: the site was checked inside a blob staged by this
            // transaction (which holds it exclusively; nothing executes it
            // before step 5), so its RW alias is mapped and ours to write.
            unsafe { rw.write(disp.to_le_bytes()) };
        }
        // 2b. Live sites, the protocol's step 1 (`crate::live_patch`): each known to the
        //     SIGTRAP handler, then `int3` over its first byte.
        #[cfg(target_arch = "x86_64")]
        let mut live = {
            let sites: Vec<_> = b
                .live_rel32
                .iter()
                .chain(&bound_live)
                .map(|&(site, target)| (site, target, mem.rw_of(site.addr())))
                .collect();
            crate::live_patch::LiveBatch::begin(&sites)
        };
        // 3. Cache maintenance over everything written.
        for s in &b.staged {
            flush_icache(
                mem.rw_of(s.addr()) as *const u8,
                s.addr() as *const u8,
                s.len(),
            );
        }
        // 4. First serialization (also the live sites' first). On failure nothing
        //    is published: the live sites get their first bytes back, and dropping
        //    `self` frees the staged blobs.
        let mut serializations = match rt.serializer().serialize_all(rt.registry()) {
            Ok(n) => n,
            Err(e) => {
                #[cfg(target_arch = "x86_64")]
                live.roll_back();
                return Err(e);
            }
        };

        #[cfg(target_arch = "x86_64")]
        live.retarget();

        // 5. Accounting (validated in step 1 under this lock: cannot fail),
        //    then the patches.
        let published = mem.publish(&b.staged, &b.retire);
        debug_assert!(published.is_ok());
        published?;
        #[cfg(target_arch = "x86_64")]
        for &(site, slot) in &b.bind {
            bound.bind(slot, site);
        }
        #[cfg(target_arch = "x86_64")]
        drop(bound);
        for &(slot, target) in &b.dispatch {
            // SAFETY: `slot` is the address of a `&'a DispatchSlot` given to
            // `set_dispatch`; the transaction holds that borrow (`_slots`), so
            // the slot is alive and unmoved.
            let slot = unsafe { &*(slot as *const DispatchSlot) };
            slot.publish(target);
        }
        //    The live sites' new displacements, behind their `int3`s.
        #[cfg(target_arch = "x86_64")]
        live.write_displacements();
        #[cfg(target_arch = "x86_64")]
        let live_sites = !live.is_empty();
        #[cfg(not(target_arch = "x86_64"))]
        let live_sites = false;

        // 6. Second serialization for Strong. If it fails the commit stands
        //    as Eventual: its retirements wait for a later serialization.
        //    Live sites need it whatever the guarantee (their step 2); if it fails
        //    they stay `int3`, emulated by the handler, which is correct.
        let mut failure = None;
        let mut serialize_again = || match rt.serializer().serialize_all(rt.registry()) {
            Ok(n) => {
                serializations += n;
                true
            }
            Err(e) => {
                failure = Some(e);
                false
            }
        };
        let needed = guarantee == Guarantee::Strong || live_sites;
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
        let second = !needed || serialize_again();
        //    Then live sites, the protocol's step 3: first bytes back, and the
        //    third serialization, after which no core runs a site's old instruction.
        #[cfg(target_arch = "x86_64")]
        if live_sites && second {
            live.write_opcodes();
            serialize_again();
        }
        let strong = guarantee == Guarantee::Strong && failure.is_none();
        #[cfg(target_arch = "x86_64")]
        drop(live);

        // 7. Advance the epoch (release: a thread that reads the new epoch at
        //    a quiescent point also sees every slot store above), tag,
        //    reclaim, report.
        let epoch = rt.epoch().fetch_add(1, Ordering::AcqRel);
        rec.epoch_began(epoch + 1);
        rec.tag(epoch, &mut b.retire, strong);
        let mut events = Vec::new();
        if rt.hooks().is_set() {
            let mut owners = Vec::with_capacity(b.staged.len());
            mem.owners(&b.staged, &mut owners);
            events.extend(
                b.staged
                    .iter()
                    .zip(owners)
                    .map(|(s, owner)| CodeEvent::Published {
                        addr: s.addr(),
                        len: s.len(),
                        owner,
                    }),
            );
        }
        b.staged.clear(); // published: no longer ours to free on drop
        let reclaimed = rt.reclaim_locked(&mut rec, &mut events);
        drop(rec);
        rt.hooks().fire(&events);
        match failure {
            Some(Error::Serialization {
                strategy, reason, ..
            }) => Err(Error::Serialization {
                strategy,
                published: true,
                reason,
            }),
            Some(e) => Err(e),
            None => Ok(CommitInfo {
                serializations,
                epoch,
                reclaimed,
            }),
        }
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        // Uncommitted: nothing points at the staged blobs, free them.
        if !self.buf.staged.is_empty() {
            let _ = self.rt.mem().free_all(&self.buf.staged, State::Staged);
        }
        self.rt.recycle_tx_buffers(std::mem::take(&mut self.buf));
    }
}

impl Runtime {
    /// Starts a transaction.
    pub fn transaction(&self) -> Transaction<'_> {
        Transaction::new(self)
    }
}
