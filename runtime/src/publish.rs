//! Publication: the transaction a JIT uses to change running code.
//!
//! A [`Transaction`] stages new blobs (copied into the RW view right away;
//! nothing points at them yet), the patches that will point at them, and the
//! blobs they replace. [`Transaction::commit`] then, under one lock:
//!
//! 1. writes the initial targets of rel32 sites that live inside blobs staged
//!    by this same transaction (they are unreachable, so plain initialisation);
//! 2. does instruction-cache maintenance over each staged range (nothing on
//!    x86-64);
//! 3. **serializes every core once**, so no core can hold a stale prefetch of
//!    the new bytes by the time anything points at them;
//! 4. applies every patch (release stores to dispatch slots, aligned atomic
//!    stores of rel32 displacements);
//! 5. for [`Guarantee::Strong`], **serializes again**: a core that had already
//!    fetched an old `call`/`jmp` has now discarded it, so once `commit`
//!    returns no thread will start any replaced code. [`Guarantee::Eventual`]
//!    skips this; its retirements wait for the next commit's step 3;
//! 6. advances the epoch, tags the retirements that are now unreachable, and
//!    reclaims whatever every thread has moved past.
//!
//! So a commit costs one or two serializations whatever the number of blobs
//! and patches: batch them.

use std::sync::atomic::Ordering;

use crate::code_memory::{Blob, State};
use crate::icache::flush_icache;
use crate::patch::{rel32_disp, store_disp, DispatchSlot, Rel32Site};
use crate::{Error, Runtime};

/// What [`Transaction::commit`] guarantees when it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Guarantee {
    /// No thread will start any code this transaction replaced (two
    /// serializations). Needed when the old code becomes *wrong* (a failed
    /// speculation, a changed class hierarchy).
    Strong,
    /// New code is visible everywhere before anything points at it, but a
    /// thread may still start old code until the next serialization (one
    /// serialization). Enough for tier-ups, where old code is merely slower.
    Eventual,
}

/// What a commit did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// Core serializations performed: 1 or 2, independent of the batch size.
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
    staged: Vec<Blob>,
    dispatch: Vec<(&'a DispatchSlot, usize)>,
    rel32: Vec<(Rel32Site, i32)>,
    retire: Vec<Blob>,
}

impl<'a> Transaction<'a> {
    pub(crate) fn new(rt: &'a Runtime) -> Transaction<'a> {
        Transaction {
            rt,
            staged: Vec::new(),
            dispatch: Vec::new(),
            rel32: Vec::new(),
            retire: Vec::new(),
        }
    }

    /// Allocates a blob aligned to `align` and copies `code` into it.
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
        let mem = self.rt.mem();
        let blob = mem.allocate(len, align)?;
        self.staged.push(blob);
        fill(mem.staged_slice(blob), blob.addr());
        Ok(blob)
    }

    /// Points `slot` at `target` when the transaction commits.
    pub fn set_dispatch(&mut self, slot: &'a DispatchSlot, target: usize) {
        self.dispatch.push((slot, target));
    }

    /// Points a rel32 `call`/`jmp` site at `target` when the transaction
    /// commits. Fails if `target` is out of rel32 reach.
    pub fn patch_rel32(&mut self, site: Rel32Site, target: usize) -> Result<(), Error> {
        let disp = rel32_disp(site.opcode, target).ok_or(Error::OutOfRange)?;
        self.rel32.push((site, disp));
        Ok(())
    }

    /// Marks `blob` as replaced: after the commit it is reclaimed once no
    /// thread can be running it.
    pub fn retire(&mut self, blob: Blob) {
        self.retire.push(blob);
    }

    /// Publishes everything; see the module docs for the steps. On error
    /// nothing has been changed.
    pub fn commit(mut self, guarantee: Guarantee) -> Result<CommitInfo, Error> {
        let rt = self.rt;
        let mem = rt.mem();
        let mut rec = rt.commit_lock();

        // Validate first, so a failing commit changes nothing.
        let mut staged: Vec<usize> = self.staged.iter().map(|b| b.addr()).collect();
        staged.sort_unstable();
        let is_staged = |b: &Blob| staged.binary_search(&b.addr()).is_ok();
        for (site, _) in &self.rel32 {
            if mem.check(site.blob, State::Live).is_err() {
                return Err(Error::InvalidSite("site is not in a live blob"));
            }
        }
        if self.retire.iter().any(is_staged) {
            return Err(Error::InvalidBlob);
        }
        // Retirement is accounting only until the epoch advances; all or
        // nothing.
        mem.transition_all(&self.retire, State::Live, State::Retired)?;

        // 1. Initial targets of sites inside blobs nobody can reach yet.
        let (init, live): (Vec<_>, Vec<_>) = std::mem::take(&mut self.rel32)
            .into_iter()
            .partition(|(s, _)| is_staged(&s.blob));
        for (site, disp) in &init {
            store_disp(mem.rw_of(site.disp_addr()), *disp);
        }
        // 2. Cache maintenance over everything written.
        for b in &self.staged {
            flush_icache(mem.rw_of(b.addr()) as *const u8, b.entry(), b.len());
        }
        // 3. First serialization: new bytes are visible to every core before
        //    any pointer to them is. Eventual retirements of earlier commits
        //    are unreachable from here on.
        rt.serializer().serialize_all(rt.registry());
        let mut serializations = 1;
        let mut covered = std::mem::take(&mut rec.eventual);

        // 4. Patches.
        for (slot, target) in &self.dispatch {
            slot.publish(*target);
        }
        for (site, disp) in &live {
            store_disp(mem.rw_of(site.disp_addr()), *disp);
        }

        // 5. Second serialization for Strong.
        match guarantee {
            Guarantee::Strong => {
                rt.serializer().serialize_all(rt.registry());
                serializations += 1;
                covered.append(&mut self.retire);
            }
            Guarantee::Eventual => rec.eventual.append(&mut self.retire),
        }

        // 6. Advance the epoch (release: a thread that reads the new epoch at
        //    a quiescent point also sees every dispatch slot store above),
        //    tag, reclaim.
        let epoch = rt.epoch().fetch_add(1, Ordering::AcqRel);
        rec.push(epoch, covered);
        self.staged.clear(); // published: no longer ours to free on drop
        let reclaimed = rt.reclaim_locked(&mut rec);
        Ok(CommitInfo {
            serializations,
            epoch,
            reclaimed,
        })
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        // Uncommitted: nothing points at the staged blobs, free them.
        let _ = self.rt.mem().free_all(&self.staged, State::Live);
    }
}
