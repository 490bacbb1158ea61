//! Code memory: one region, mapped twice (`mapping.rs`), carved by an
//! allocator (`allocator.rs`), named by checked handles ([`Blob`]).
//!
//! Writing through the RW view and executing through the RX view is still
//! cross-modifying code as far as the CPU is concerned (same physical page,
//! different virtual address), so the serialization rules in [`crate::sync`]
//! apply in full. Because every code address lies inside the one RX view,
//! any two code addresses are within `rel32` reach (the capacity is capped at
//! 1 GiB).

mod allocator;
mod mapping;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use allocator::Allocator;
pub(crate) use mapping::page_size;
use mapping::DoubleMapping;

use crate::icache::flush_icache;
use crate::Error;

/// Allocation granule: every blob starts on (at least) a 16-byte boundary.
pub const GRANULE: usize = 16;

/// Largest region we accept, so that any two code addresses differ by less
/// than 2 GiB and every `rel32` between them is encodable.
pub const MAX_CAPACITY: usize = 1 << 30;

/// The architecture's own trap instruction, little-endian: what poisoned
/// code and fresh staging buffers are filled with (repeated; blobs are
/// 16-byte aligned, so the pattern is instruction-aligned).
#[cfg(target_arch = "x86_64")]
pub const TRAP_INSTRUCTION: &[u8] = &[0xCC]; // int3
/// The architecture's own trap instruction (see the x86-64 doc).
#[cfg(target_arch = "aarch64")]
pub const TRAP_INSTRUCTION: &[u8] = &[0x00, 0x00, 0x20, 0xD4]; // brk #0
/// The architecture's own trap instruction (see the x86-64 doc).
#[cfg(target_arch = "riscv64")]
pub const TRAP_INSTRUCTION: &[u8] = &[0x73, 0x00, 0x10, 0x00]; // ebreak

/// Generations of allocations, process-wide: a handle from one runtime can
/// never match an allocation of another, nor a later one at its address.
static NEXT_GEN: AtomicU64 = AtomicU64::new(1);

/// A block of code in the region: a plain, copyable handle. Every use is
/// checked against the allocation it names (address, length and a
/// generation unique in the process), so a stale, foreign or twice-retired
/// handle is an error that changes nothing, even after its address was
/// reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Blob {
    pub(crate) addr: usize,
    pub(crate) len: usize,
    pub(crate) gen: u64,
}

impl Blob {
    /// The executable address of the first byte (in the RX view), for
    /// emitters and relocations.
    pub fn addr(&self) -> usize {
        self.addr
    }
    /// The executable address as a raw pointer, for reading the bytes (to
    /// call the code, use [`Blob::code`] with
    /// [`NativeScope::func`](crate::NativeScope::func)).
    pub fn entry(&self) -> *const u8 {
        self.addr as *const u8
    }
    /// The first byte as a [`CodePtr`], what
    /// [`NativeScope::func`](crate::NativeScope::func) turns into a function.
    pub fn code(&self) -> CodePtr {
        CodePtr(self.addr)
    }
    /// Length in bytes, as staged.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True for a zero-length blob.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// True if `addr` lies inside this blob.
    pub fn contains(&self, addr: usize) -> bool {
        addr >= self.addr && addr - self.addr < self.len
    }
}

/// An address of code, as JIT code and dispatch slots hold it. Only
/// [`NativeScope::func`](crate::NativeScope::func) turns one into a callable
/// function, so calls into JIT code go through
/// [`ThreadHandle::enter`](crate::ThreadHandle::enter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CodePtr(pub(crate) usize);

impl CodePtr {
    /// Wraps an address (for example a dispatch slot's target).
    pub const fn new(addr: usize) -> CodePtr {
        CodePtr(addr)
    }
    /// The address.
    pub const fn addr(self) -> usize {
        self.0
    }
}

/// Byte counters of the region; see [`crate::Runtime::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodeStats {
    /// Size of the region.
    pub capacity: usize,
    /// Bytes of blobs that are staged or published and not retired.
    pub bytes_live: usize,
    /// Bytes of retired blobs waiting until no thread can run them.
    pub bytes_retired: usize,
    /// Bytes of reclaimed blobs that are poisoned and held in quarantine.
    pub bytes_quarantined: usize,
    /// Cumulative bytes handed back to the free lists.
    pub bytes_freed: u64,
    /// Peak of `bytes_live + bytes_retired + bytes_quarantined`.
    pub high_water: usize,
    /// Number of allocations ever made.
    pub allocations: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Allocated by a transaction that has not committed: unreachable.
    Staged,
    /// Published.
    Live,
    Retired,
    Quarantined,
}

/// The double-mapped region and its allocator.
pub(crate) struct CodeMemory {
    map: DoubleMapping,
    alloc: Mutex<Allocator>,
}

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

impl CodeMemory {
    pub(crate) fn new(capacity: usize) -> Result<CodeMemory, Error> {
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(Error::InvalidArgument("capacity must be in 1..=1 GiB"));
        }
        let capacity = round_up(capacity, page_size());
        Ok(CodeMemory {
            map: DoubleMapping::new(capacity)?,
            alloc: Mutex::new(Allocator::new(capacity)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Allocator> {
        self.alloc.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn rx_base(&self) -> usize {
        self.map.rx
    }

    pub(crate) fn capacity(&self) -> usize {
        self.map.len
    }

    /// True if `addr` is an executable address of this region.
    pub(crate) fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.map.rx) < self.map.len
    }

    /// The RW-view alias of executable address `rx` (inside the region).
    pub(crate) fn rw_of(&self, rx: usize) -> usize {
        rx - self.map.rx + self.map.rw
    }

    pub(crate) fn stats(&self) -> CodeStats {
        self.lock().stats
    }

    /// Allocates `len` bytes aligned to `align` (a power of two; at least
    /// [`GRANULE`] is applied), in `state`.
    pub(crate) fn allocate_as(
        &self,
        len: usize,
        align: usize,
        state: State,
        owner: u64,
    ) -> Result<Blob, Error> {
        let gen = NEXT_GEN.fetch_add(1, Ordering::Relaxed);
        let mut a = self.lock();
        let idx = a.allocate(self.map.rx, len, align, state, owner, gen)?;
        Ok(Blob {
            addr: self.map.rx + a.record(idx).start,
            len,
            gen,
        })
    }

    fn index(&self, a: &Allocator, blob: Blob) -> Option<usize> {
        if !self.contains(blob.addr) {
            return None;
        }
        a.find(blob.addr - self.map.rx, blob.len, blob.gen)
    }

    /// The state of `blob`, if it names an allocation of this region.
    pub(crate) fn state(&self, blob: Blob) -> Option<State> {
        let a = self.lock();
        self.index(&a, blob).map(|i| a.record(i).state)
    }

    /// Sets the owner tag of `blob`, which must be in `state`.
    pub(crate) fn set_owner(&self, blob: Blob, state: State, owner: u64) -> Result<(), Error> {
        let mut a = self.lock();
        match self.index(&a, blob) {
            Some(i) if a.record(i).state == state => {
                a.set_owner(i, owner);
                Ok(())
            }
            _ => Err(Error::InvalidBlob),
        }
    }

    /// The blob covering `addr`, its state and owner.
    pub(crate) fn covering(&self, addr: usize) -> Option<(Blob, State, u64)> {
        if !self.contains(addr) {
            return None;
        }
        let a = self.lock();
        let r = a.record(a.covering(addr - self.map.rx)?);
        let blob = Blob {
            addr: self.map.rx + r.start,
            len: r.len,
            gen: r.gen,
        };
        Some((blob, r.state, r.owner))
    }

    /// Moves every blob from `from` to `to` under one lock; all or nothing
    /// (a blob not in `from`, or listed twice, fails the whole call).
    pub(crate) fn transition_all(
        &self,
        blobs: &[Blob],
        from: State,
        to: State,
    ) -> Result<(), Error> {
        let mut a = self.lock();
        self.transition_locked(&mut a, blobs, from, to)
    }

    /// A commit's accounting, under one lock and all or nothing: `retire`
    /// goes from Live to Retired, then `staged` from Staged to Live.
    pub(crate) fn publish(&self, staged: &[Blob], retire: &[Blob]) -> Result<(), Error> {
        let mut a = self.lock();
        self.transition_locked(&mut a, retire, State::Live, State::Retired)?;
        if let Err(e) = self.transition_locked(&mut a, staged, State::Staged, State::Live) {
            let undo = self.transition_locked(&mut a, retire, State::Retired, State::Live);
            debug_assert!(undo.is_ok());
            return Err(e);
        }
        Ok(())
    }

    /// Whether [`publish`](Self::publish) would succeed; changes nothing.
    pub(crate) fn check_publish(&self, staged: &[Blob], retire: &[Blob]) -> Result<(), Error> {
        let mut a = self.lock();
        self.transition_locked(&mut a, retire, State::Live, State::Retired)?;
        let r = self.transition_locked(&mut a, staged, State::Staged, State::Live);
        if r.is_ok() {
            let undo = self.transition_locked(&mut a, staged, State::Live, State::Staged);
            debug_assert!(undo.is_ok());
        }
        let undo = self.transition_locked(&mut a, retire, State::Retired, State::Live);
        debug_assert!(undo.is_ok());
        r
    }

    fn transition_locked(
        &self,
        a: &mut Allocator,
        blobs: &[Blob],
        from: State,
        to: State,
    ) -> Result<(), Error> {
        for (i, b) in blobs.iter().enumerate() {
            match self.index(a, *b) {
                Some(idx) if a.record(idx).state == from => a.set_state(idx, to),
                _ => {
                    for done in &blobs[..i] {
                        if let Some(idx) = self.index(a, *done) {
                            a.set_state(idx, from);
                        }
                    }
                    return Err(Error::InvalidBlob);
                }
            }
        }
        Ok(())
    }

    /// Frees every blob (each must be in `from`) under one lock; all or
    /// nothing.
    pub(crate) fn free_all(&self, blobs: &[Blob], from: State) -> Result<(), Error> {
        let mut a = self.lock();
        let ok = blobs
            .iter()
            .all(|b| matches!(self.index(&a, *b), Some(i) if a.record(i).state == from));
        if !ok {
            return Err(Error::InvalidBlob);
        }
        for b in blobs {
            // Listed twice: the second lookup fails (generation cleared).
            if let Some(i) = self.index(&a, *b) {
                a.free(i);
            }
        }
        Ok(())
    }

    /// Shrinks a staged blob to `new_len` (at most its length), returning
    /// the tail to the allocator.
    pub(crate) fn shrink(&self, blob: Blob, new_len: usize) -> Result<Blob, Error> {
        if new_len > blob.len {
            return Err(Error::InvalidArgument(
                "used length exceeds the reserved length",
            ));
        }
        let mut a = self.lock();
        match self.index(&a, blob) {
            Some(i) if a.record(i).state == State::Staged => {
                a.shrink(i, new_len);
                Ok(Blob {
                    len: new_len,
                    ..blob
                })
            }
            _ => Err(Error::InvalidBlob),
        }
    }

    /// Mutable RW-view slice of a staged blob.
    ///
    /// Callers guarantee the blob is staged by them and not yet published:
    /// no thread can be executing these bytes, and only they hold it.
    #[allow(clippy::mut_from_ref)]
    pub(crate) fn staged_slice(&self, blob: Blob) -> &mut [u8] {
        // SAFETY: the blob's bytes are inside the RW view (the handle was
        // just produced or checked by the allocator) and belong to one
        // staging transaction, which holds the only reference; nothing
        // executes them before commit.
        unsafe { std::slice::from_raw_parts_mut(self.rw_of(blob.addr) as *mut u8, blob.len) }
    }

    /// Fills `[rx, rx + len)` (through the RW view) with the trap pattern.
    /// Callers guarantee no thread executes or otherwise uses the range.
    pub(crate) fn fill_trap(&self, rx: usize, len: usize) {
        let dst = self.rw_of(rx) as *mut u8;
        for i in 0..len {
            let b = TRAP_INSTRUCTION[(rx + i) % TRAP_INSTRUCTION.len()];
            // SAFETY: `[rx, rx + len)` lies inside one allocation of the
            // region (caller), so the RW alias is mapped and writable; nobody
            // else uses it.
            unsafe { dst.add(i).write(b) };
        }
    }

    /// Fills each blob's whole allocation with the trap instruction, then does
    /// the architecture's cache maintenance over it, so a stale fetch of
    /// reclaimed code traps too.
    pub(crate) fn poison_all(&self, blobs: &[Blob]) {
        let a = self.lock();
        for b in blobs {
            if let Some(i) = self.index(&a, *b) {
                let size = a.record(i).size;
                self.fill_trap(b.addr, size);
                flush_icache(self.rw_of(b.addr) as *const u8, b.addr as *const u8, size);
            }
        }
    }

    /// The owner tags of `blobs` (0 for a stale handle).
    pub(crate) fn owners(&self, blobs: &[Blob], out: &mut Vec<u64>) {
        let a = self.lock();
        out.extend(
            blobs
                .iter()
                .map(|b| self.index(&a, *b).map_or(0, |i| a.record(i).owner)),
        );
    }

    /// Reads the byte at executable address `rx` of a checked blob, through
    /// the RW view (always readable).
    pub(crate) fn read_byte(&self, rx: usize) -> u8 {
        // SAFETY: callers pass an address inside a checked allocation, so its
        // RW alias is mapped for the runtime's whole life; a volatile read of
        // a byte cannot tear.
        unsafe { std::ptr::read_volatile(self.rw_of(rx) as *const u8) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(m: &CodeMemory, len: usize, align: usize) -> Blob {
        m.allocate_as(len, align, State::Live, 0).unwrap()
    }

    #[test]
    fn alignment_and_counters() {
        let m = CodeMemory::new(1 << 20).unwrap();
        let a = live(&m, 5, 1);
        let b = live(&m, 100, 256);
        assert_eq!(a.addr() % GRANULE, 0);
        assert_eq!(b.addr() % 256, 0);
        let s = m.stats();
        assert_eq!(s.bytes_live, 16 + 112);
        assert_eq!(s.high_water, 16 + 112);
        assert!(m.allocate_as(1, 3, State::Live, 0).is_err());
    }

    #[test]
    fn reuse_and_coalescing() {
        // The first and last granule are never allocated.
        let m = CodeMemory::new(4096).unwrap();
        let usable = 4096 - 2 * GRANULE;
        let [a, b, c] = [0; 3].map(|_| live(&m, 1024, 16));
        let d = live(&m, usable - 3 * 1024, 16);
        assert_eq!(a.addr(), m.rx_base() + GRANULE);
        assert!(matches!(
            m.allocate_as(16, 16, State::Live, 0),
            Err(Error::OutOfCodeMemory { .. })
        ));
        m.free_all(&[b, c], State::Live).unwrap();
        let e = live(&m, 2048, 16);
        assert_eq!(e.addr(), b.addr());
        m.free_all(&[a, d, e], State::Live).unwrap();
        let all = live(&m, usable, 16);
        assert_eq!(all.addr(), m.rx_base() + GRANULE);
        m.free_all(&[all], State::Live).unwrap();
        let small = live(&m, 16, 16);
        let big = live(&m, 64, 1024);
        assert_eq!(big.addr() - m.rx_base(), 1024);
        let fill = live(&m, 1024 - 32, 16);
        assert_eq!(fill.addr(), small.addr() + 16, "the gap was reused");
        m.free_all(&[big, small, fill], State::Live).unwrap();
        assert_eq!(live(&m, usable, 16).addr(), m.rx_base() + GRANULE);
    }

    #[test]
    fn states_generations_and_covering() {
        let m = CodeMemory::new(4096).unwrap();
        let a = live(&m, 64, 16);
        assert!(m.free_all(&[a], State::Retired).is_err());
        m.transition_all(&[a], State::Live, State::Retired).unwrap();
        assert!(m.transition_all(&[a], State::Live, State::Retired).is_err());
        m.free_all(&[a], State::Retired).unwrap();
        assert!(m.free_all(&[a], State::Retired).is_err());
        let b = live(&m, 64, 16);
        assert_eq!(b.addr(), a.addr(), "address reused");
        assert_eq!(m.state(a), None, "old handle stale");
        assert_eq!(m.state(b), Some(State::Live));
        assert_eq!(m.covering(b.addr() + 63).map(|c| c.0), Some(b));
        assert_eq!(m.covering(b.addr() + 64), None);
    }

    #[test]
    fn shrink_gives_the_tail_back() {
        let m = CodeMemory::new(4096).unwrap();
        let a = m.allocate_as(1000, 16, State::Staged, 0).unwrap();
        let a = m.shrink(a, 20).unwrap();
        assert_eq!(m.covering(a.addr() + 40), None);
        assert_eq!(m.stats().bytes_live, 32);
        let b = live(&m, 16, 16);
        assert_eq!(b.addr(), a.addr() + 32);
    }

    #[test]
    fn write_is_visible_in_rx_view_and_poison() {
        let m = CodeMemory::new(4096).unwrap();
        let a = m.allocate_as(4, 16, State::Staged, 0).unwrap();
        m.staged_slice(a).copy_from_slice(&[1, 2, 3, 4]);
        // SAFETY: a.addr() is inside the readable RX view.
        let rx = unsafe { std::slice::from_raw_parts(a.addr() as *const u8, 4) };
        assert_eq!(rx, &[1, 2, 3, 4]);
        m.poison_all(&[a]);
        // SAFETY: as above.
        let rx = unsafe { std::slice::from_raw_parts(a.addr() as *const u8, 16) };
        for (i, &b) in rx.iter().enumerate() {
            assert_eq!(b, TRAP_INSTRUCTION[i % TRAP_INSTRUCTION.len()]);
        }
    }
}
