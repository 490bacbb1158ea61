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

use std::marker::PhantomData;
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
    buf: TxBuffers,
    /// The slots in `buf.dispatch` are borrowed for `'a`.
    _slots: PhantomData<&'a DispatchSlot>,
}

/// The vectors of a transaction. The runtime keeps a few between
/// transactions ([`Runtime::tx_buffers`]), so a commit of n blobs does not
/// regrow them from empty (about a dozen reallocations for n = 100).
#[derive(Default)]
pub(crate) struct TxBuffers {
    staged: Vec<Blob>,
    /// (address of a `DispatchSlot` borrowed for the transaction's `'a`,
    /// target). An address, not a reference, so the vector outlives `'a`.
    dispatch: Vec<(usize, usize)>,
    /// (site, displacement, whether the site is in a staged blob).
    rel32: Vec<(Rel32Site, i32, bool)>,
    retire: Vec<Blob>,
}

impl TxBuffers {
    /// Empties every vector for reuse; false if one grew too large to keep.
    pub(crate) fn recycle(&mut self) -> bool {
        const KEEP: usize = 1 << 12;
        self.staged.clear();
        self.dispatch.clear();
        self.rel32.clear();
        self.retire.clear();
        [
            self.staged.capacity(),
            self.dispatch.capacity(),
            self.rel32.capacity(),
            self.retire.capacity(),
        ]
        .iter()
        .all(|&c| c <= KEEP)
    }
}

impl<'a> Transaction<'a> {
    pub(crate) fn new(rt: &'a Runtime) -> Transaction<'a> {
        Transaction {
            rt,
            buf: rt.tx_buffers(),
            _slots: PhantomData,
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
        let blob = mem.allocate_as(len, align, State::Staged)?;
        self.buf.staged.push(blob);
        fill(mem.staged_slice(blob), blob.addr());
        Ok(blob)
    }

    /// Points `slot` at `target` when the transaction commits.
    pub fn set_dispatch(&mut self, slot: &'a DispatchSlot, target: usize) {
        let addr = slot as *const DispatchSlot as usize;
        self.buf.dispatch.push((addr, target));
    }

    /// Points a rel32 `call`/`jmp` site at `target` when the transaction
    /// commits. Fails if `target` is out of rel32 reach.
    pub fn patch_rel32(&mut self, site: Rel32Site, target: usize) -> Result<(), Error> {
        let disp = rel32_disp(site.opcode, target).ok_or(Error::OutOfRange)?;
        self.buf.rel32.push((site, disp, false));
        Ok(())
    }

    /// Marks `blob` as replaced: after the commit it is reclaimed once no
    /// thread can be running it.
    pub fn retire(&mut self, blob: Blob) {
        self.buf.retire.push(blob);
    }

    /// Publishes everything; see the module docs for the steps. On error
    /// nothing has been changed.
    pub fn commit(mut self, guarantee: Guarantee) -> Result<CommitInfo, Error> {
        let rt = self.rt;
        let mem = rt.mem();
        let mut rec = rt.commit_lock();
        let b = &mut self.buf;

        // Validate first, so a failing commit changes nothing. A site in a
        // blob that is still staged (here or, a misuse, in another open
        // transaction) is unreachable, so it is initialised before the
        // serialization; any other must be in a published blob.
        for (site, _, staged) in &mut b.rel32 {
            *staged = match mem.state(site.blob) {
                Some(State::Staged) => true,
                Some(State::Live) => false,
                _ => return Err(Error::InvalidSite("site is not in a live blob")),
            };
        }
        // Retirement is accounting only until the epoch advances; all or
        // nothing. A staged blob cannot be retired: it is not Live yet.
        mem.publish(&b.staged, &b.retire)?;

        // 1. Initial targets of sites inside blobs nobody can reach yet.
        for (site, disp, _) in b.rel32.iter().filter(|r| r.2) {
            store_disp(mem.rw_of(site.disp_addr()), *disp);
        }
        // 2. Cache maintenance over everything written.
        for b in &b.staged {
            flush_icache(mem.rw_of(b.addr()) as *const u8, b.entry(), b.len());
        }
        // 3. First serialization: new bytes are visible to every core before
        //    any pointer to them is. Eventual retirements of earlier commits
        //    are unreachable from here on.
        rt.serializer().serialize_all(rt.registry());
        let mut serializations = 1;

        // 4. Patches.
        for &(slot, target) in &b.dispatch {
            // SAFETY: `slot` is the address of a `&'a DispatchSlot` given to
            // `set_dispatch`; the transaction holds that borrow (`_slots`), so
            // the slot is alive and unmoved.
            let slot = unsafe { &*(slot as *const DispatchSlot) };
            slot.publish(target);
        }
        for (site, disp, _) in b.rel32.iter().filter(|r| !r.2) {
            store_disp(mem.rw_of(site.disp_addr()), *disp);
        }

        // 5. Second serialization for Strong.
        let strong = guarantee == Guarantee::Strong;
        if strong {
            rt.serializer().serialize_all(rt.registry());
            serializations += 1;
        }

        // 6. Advance the epoch (release: a thread that reads the new epoch at
        //    a quiescent point also sees every dispatch slot store above),
        //    tag (earlier Eventual retirements, covered by step 3, and for
        //    Strong this commit's, covered by step 5), reclaim.
        let epoch = rt.epoch().fetch_add(1, Ordering::AcqRel);
        rec.tag(epoch, &mut b.retire, strong);
        b.staged.clear(); // published: no longer ours to free on drop
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
        if !self.buf.staged.is_empty() {
            let _ = self.rt.mem().free_all(&self.buf.staged, State::Staged);
        }
        self.rt.recycle_tx_buffers(std::mem::take(&mut self.buf));
    }
}
