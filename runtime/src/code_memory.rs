//! Code memory: one reserved region, mapped twice from one memfd.
//!
//! The region is a `memfd` of `capacity` bytes mapped **twice**: a read+write
//! view that only the runtime writes through, and a read+execute view that is
//! the only place code runs from. No page is ever writable and executable at
//! once, and publishing code never needs `mprotect`: an `mprotect` flip per
//! commit would itself cost a TLB shootdown, and would fault every thread that
//! is running a neighbouring blob on the same page while it is read-only-not-
//! executable. Because every code address lies inside the one RX view, any two
//! code addresses are within `rel32` reach (the capacity is capped at 1 GiB).
//!
//! Writing through the RW view and executing through the RX view is still
//! cross-modifying code as far as the CPU is concerned (same physical page,
//! different virtual address), so the serialization rules in [`crate::sync`]
//! apply in full.
//!
//! The allocator keeps exact-size free lists for small blobs and a first-fit
//! `BTreeMap` of free ranges for everything else, in 16-byte granules; see
//! [`Allocator`]. A JIT stages and frees many small blobs per commit (a
//! method plus its stubs), so the per-blob cost matters once a batch is large.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Mutex;

use memmap2::{Mmap, MmapMut, MmapOptions};

use crate::Error;

/// Allocation granule: every blob starts on (at least) a 16-byte boundary.
pub const GRANULE: usize = 16;

/// Largest region we accept, so that any two code addresses differ by less than
/// 2 GiB and every `rel32` between them is encodable.
pub const MAX_CAPACITY: usize = 1 << 30;

/// The `int3` opcode: what poisoned code is filled with.
pub const POISON_BYTE: u8 = 0xCC;

/// A block of code in the region. It is a plain handle (copyable, no
/// lifetime); the runtime checks on every use that it still names a live
/// allocation of *this* runtime, so a stale or foreign handle is an error, not
/// undefined behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Blob {
    pub(crate) addr: usize,
    pub(crate) len: usize,
}

impl Blob {
    /// The executable address of the first byte (in the RX view).
    pub fn addr(&self) -> usize {
        self.addr
    }
    /// The executable address as a pointer (what you transmute to a function).
    pub fn entry(&self) -> *const u8 {
        self.addr as *const u8
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
        addr >= self.addr && addr < self.addr + self.len
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
    /// Cumulative bytes handed back to the free list.
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
    /// Published (or about to be, under the commit lock).
    Live,
    Retired,
    Quarantined,
}

impl State {
    /// Code in the low [`STATE_BITS`] of a table entry; 0 means "none".
    fn code(self) -> u32 {
        self as u32 + 1
    }

    fn from_code(code: u32) -> Option<State> {
        match code {
            1 => Some(State::Staged),
            2 => Some(State::Live),
            3 => Some(State::Retired),
            4 => Some(State::Quarantined),
            _ => None,
        }
    }
}

const STATE_BITS: u32 = 3;

/// Blobs of at most this many bytes are recycled through exact-size free
/// lists; larger ones go back to the coalescing range map.
pub(crate) const SMALL_MAX: usize = 4096;
const SMALL_CLASSES: usize = SMALL_MAX / GRANULE;

/// The allocator of one region. Offsets are from the region start.
///
/// * **Small blobs** (<= [`SMALL_MAX`] bytes, the common case) are freed onto
///   a LIFO list per size in granules and reused from it with one pop: no
///   search, no tree update, and the bytes reused are ones recently written,
///   so their pages are resident and their lines often still cached.
/// * **Large blobs, aligned requests and fresh memory** come from `free`,
///   first-fit with coalescing over ranges keyed by their *end* (carving off
///   the front of a range updates the value in place).
/// * When `free` has no fitting range, every small list is given back to it
///   (coalescing) and the search is retried, so segregation never makes an
///   allocation fail that one coalesced free list could satisfy.
///
/// Allocation state lives in `table`, one `u32` per granule of the region
/// carved so far (a quarter of the bytes ever carved, never the whole
/// region): `size_in_granules << STATE_BITS | state` at each allocation's first
/// granule, 0 elsewhere. Checking, transitioning and freeing a blob are each
/// one indexed load and store.
struct Allocator {
    /// end -> start of each free range; ranges never touch (coalesced).
    free: BTreeMap<usize, usize>,
    /// `small[g - 1]`: free blocks of exactly `g` granules, by start granule.
    small: Vec<Vec<u32>>,
    /// Per granule: the allocation starting there, see above.
    table: Vec<u32>,
    stats: CodeStats,
}

impl Allocator {
    /// First fit in `free`; `base` is the executable address of offset 0 (the
    /// alignment is of the executable address).
    fn carve(&mut self, base: usize, size: usize, align: usize) -> Option<usize> {
        let mut found = None;
        for (&end, fstart) in self.free.iter_mut() {
            let start = round_up(base + *fstart, align) - base;
            if start + size <= end {
                let gap = (start > *fstart).then_some((start, *fstart));
                *fstart = start + size; // carve off the front, in place
                found = Some((end, start, gap));
                break;
            }
        }
        let (end, start, gap) = found?;
        if start + size == end {
            self.free.remove(&end);
        }
        if let Some((gap_end, gap_start)) = gap {
            self.free.insert(gap_end, gap_start); // alignment padding stays free
        }
        let granules = (start + size) / GRANULE;
        if self.table.len() < granules {
            self.table.resize(granules, 0);
        }
        Some(start)
    }

    /// Returns `[off, off + size)` to `free`, coalescing with its neighbours.
    fn release(&mut self, mut off: usize, mut size: usize) {
        // Coalesce with the range ending where this one starts, and with the
        // range starting where this one ends.
        if let Some(pstart) = self.free.remove(&off) {
            size += off - pstart;
            off = pstart;
        }
        let end = off + size;
        match self.free.range_mut(end + 1..).next() {
            Some((_, nstart)) if *nstart == end => *nstart = off,
            _ => {
                self.free.insert(end, off);
            }
        }
    }

    /// Gives every small free block back to `free`, coalescing.
    fn drain_small(&mut self) {
        let mut small = std::mem::take(&mut self.small);
        for (i, list) in small.iter_mut().enumerate() {
            for g in list.drain(..) {
                self.release(g as usize * GRANULE, (i + 1) * GRANULE);
            }
        }
        self.small = small;
    }

    /// The rounded size and state of the allocation at `off`, if `blob_len`
    /// fits it.
    fn entry(&self, off: usize, blob_len: usize) -> Option<(usize, State)> {
        if off % GRANULE != 0 {
            return None;
        }
        let e = *self.table.get(off / GRANULE)?;
        let size = (e >> STATE_BITS) as usize * GRANULE;
        let state = State::from_code(e & ((1 << STATE_BITS) - 1))?;
        (blob_len <= size).then_some((size, state))
    }

    fn set_entry(&mut self, off: usize, size: usize, state: State) {
        self.table[off / GRANULE] = ((size / GRANULE) as u32) << STATE_BITS | state.code();
    }
}

/// The double-mapped region and its allocator.
pub(crate) struct CodeMemory {
    rw_base: usize,
    rx_base: usize,
    capacity: usize,
    alloc: Mutex<Allocator>,
    // Kept to unmap on drop; accessed through the bases above.
    _rw: MmapMut,
    _rx: Mmap,
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
        // SAFETY: memfd_create takes a NUL-terminated name and flags; it
        // returns a fresh descriptor or -1.
        let fd = unsafe { libc::memfd_create(c"jitvm-code".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::Io(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by memfd_create and nothing else owns
        // it; the File takes sole ownership and closes it.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(capacity as u64)?;
        // SAFETY: the memfd is private to this object: nobody else can resize
        // or truncate it under the mappings (the usual hazard of file maps).
        // The RW view is never mapped executable.
        let rw = unsafe { MmapOptions::new().len(capacity).map_mut(&file)? };
        // SAFETY: as above; the RX view is never mapped writable.
        let rx = unsafe { MmapOptions::new().len(capacity).map_exec(&file)? };
        let mut free = BTreeMap::new();
        free.insert(capacity, 0);
        Ok(CodeMemory {
            rw_base: rw.as_ptr() as usize,
            rx_base: rx.as_ptr() as usize,
            capacity,
            alloc: Mutex::new(Allocator {
                free,
                small: vec![Vec::new(); SMALL_CLASSES],
                table: Vec::new(),
                stats: CodeStats {
                    capacity,
                    ..CodeStats::default()
                },
            }),
            _rw: rw,
            _rx: rx,
        })
    }

    pub(crate) fn rx_base(&self) -> usize {
        self.rx_base
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// True if `addr` is an executable address of this region.
    pub(crate) fn contains(&self, addr: usize) -> bool {
        addr >= self.rx_base && addr < self.rx_base + self.capacity
    }

    /// The RW-view alias of executable address `rx`.
    pub(crate) fn rw_of(&self, rx: usize) -> usize {
        debug_assert!(self.contains(rx));
        rx - self.rx_base + self.rw_base
    }

    pub(crate) fn stats(&self) -> CodeStats {
        self.alloc.lock().unwrap().stats
    }

    /// Allocates `len` bytes aligned to `align`, as [`State::Live`].
    #[cfg(test)]
    pub(crate) fn allocate(&self, len: usize, align: usize) -> Result<Blob, Error> {
        self.allocate_as(len, align, State::Live)
    }

    /// Allocates `len` bytes aligned to `align` (a power of two; at least
    /// [`GRANULE`] is applied), in `state`.
    pub(crate) fn allocate_as(
        &self,
        len: usize,
        align: usize,
        state: State,
    ) -> Result<Blob, Error> {
        if !align.is_power_of_two() {
            return Err(Error::InvalidArgument("alignment must be a power of two"));
        }
        let align = align.max(GRANULE);
        let size = round_up(len.max(1), GRANULE);
        let granules = size / GRANULE;
        let base = self.rx_base;
        let mut a = self.alloc.lock().unwrap();
        // A recycled block of exactly this size, if its address is aligned
        // enough (always, for the usual GRANULE alignment).
        let reused = match a.small.get_mut(granules.wrapping_sub(1)) {
            Some(list) => match list.last() {
                Some(&g) if (base + g as usize * GRANULE) & (align - 1) == 0 => {
                    list.pop();
                    Some(g as usize * GRANULE)
                }
                _ => None,
            },
            None => None,
        };
        let start = match reused {
            Some(start) => start,
            None => match a.carve(base, size, align) {
                Some(start) => start,
                None => {
                    a.drain_small();
                    a.carve(base, size, align).ok_or(Error::OutOfCodeMemory {
                        requested: size,
                        capacity: self.capacity,
                    })?
                }
            },
        };
        // The size fits the entry: the region has at most 2^26 granules.
        a.set_entry(start, size, state);
        *counter(&mut a.stats, state) += size;
        a.stats.allocations += 1;
        bump_high_water(&mut a.stats);
        Ok(Blob {
            addr: base + start,
            len,
        })
    }

    /// Checks that `blob` is an allocation of this region in `state`.
    #[cfg(test)]
    pub(crate) fn check(&self, blob: Blob, state: State) -> Result<(), Error> {
        match self.state(blob) {
            Some(st) if st == state => Ok(()),
            _ => Err(Error::InvalidBlob),
        }
    }

    /// The state of `blob`, if it names an allocation of this region.
    pub(crate) fn state(&self, blob: Blob) -> Option<State> {
        let a = self.alloc.lock().unwrap();
        self.lookup(&a, blob).map(|(_, st)| st)
    }

    /// The rounded size and state of the allocation `blob` names.
    fn lookup(&self, a: &Allocator, blob: Blob) -> Option<(usize, State)> {
        if !self.contains(blob.addr) {
            return None;
        }
        a.entry(blob.addr - self.rx_base, blob.len)
    }

    /// Moves every blob from `from` to `to` under one lock; all or nothing
    /// (a blob not in `from`, or listed twice, fails the whole call).
    pub(crate) fn transition_all(
        &self,
        blobs: &[Blob],
        from: State,
        to: State,
    ) -> Result<(), Error> {
        let mut a = self.alloc.lock().unwrap();
        self.transition_locked(&mut a, blobs, from, to)
    }

    /// A commit's accounting, under one lock and all or nothing: `retire`
    /// goes from Live to Retired (a blob that is staged, retired already or
    /// listed twice fails the call), then `staged` from Staged to Live.
    pub(crate) fn publish(&self, staged: &[Blob], retire: &[Blob]) -> Result<(), Error> {
        let mut a = self.alloc.lock().unwrap();
        self.transition_locked(&mut a, retire, State::Live, State::Retired)?;
        let r = self.transition_locked(&mut a, staged, State::Staged, State::Live);
        debug_assert!(r.is_ok(), "a transaction's staged blobs are Staged");
        r
    }

    fn transition_locked(
        &self,
        a: &mut Allocator,
        blobs: &[Blob],
        from: State,
        to: State,
    ) -> Result<(), Error> {
        let mut moved = 0;
        for (i, b) in blobs.iter().enumerate() {
            match self.lookup(a, *b) {
                Some((size, st)) if st == from => {
                    a.set_entry(b.addr - self.rx_base, size, to);
                    moved += size;
                }
                _ => {
                    for done in &blobs[..i] {
                        let (size, _) = self.lookup(a, *done).unwrap();
                        a.set_entry(done.addr - self.rx_base, size, from);
                    }
                    return Err(Error::InvalidBlob);
                }
            }
        }
        *counter(&mut a.stats, from) -= moved;
        *counter(&mut a.stats, to) += moved;
        Ok(())
    }

    /// Returns `blob` (currently in `from`) to the free lists.
    #[cfg(test)]
    pub(crate) fn free(&self, blob: Blob, from: State) -> Result<(), Error> {
        self.free_all(&[blob], from)
    }

    /// Frees every blob (each must be in `from`) under one lock. Stops at the
    /// first that is not.
    pub(crate) fn free_all(&self, blobs: &[Blob], from: State) -> Result<(), Error> {
        let mut a = self.alloc.lock().unwrap();
        for blob in blobs {
            let size = match self.lookup(&a, *blob) {
                Some((size, st)) if st == from => size,
                _ => return Err(Error::InvalidBlob),
            };
            let off = blob.addr - self.rx_base;
            a.table[off / GRANULE] = 0;
            *counter(&mut a.stats, from) -= size;
            a.stats.bytes_freed += size as u64;
            match a.small.get_mut(size / GRANULE - 1) {
                Some(list) => list.push((off / GRANULE) as u32),
                None => a.release(off, size),
            }
        }
        Ok(())
    }

    /// Mutable RW-view slice of a staged blob.
    ///
    /// Callers guarantee the blob is staged and not yet published: no thread
    /// can be executing these bytes, and only one transaction holds it.
    #[allow(clippy::mut_from_ref)]
    pub(crate) fn staged_slice(&self, blob: Blob) -> &mut [u8] {
        // SAFETY: the blob's bytes are inside the RW view and belong to one
        // staging transaction, which holds the only reference; nothing executes
        // them before commit.
        unsafe { std::slice::from_raw_parts_mut(self.rw_of(blob.addr) as *mut u8, blob.len) }
    }

    /// Fills the whole allocation of `blob` with `int3`.
    pub(crate) fn poison(&self, blob: Blob) {
        let size = round_up(blob.len.max(1), GRANULE);
        let dst = self.rw_of(blob.addr);
        // SAFETY: the rounded size is exactly what the allocator reserved for
        // this blob, inside the RW view; the reclaimer only poisons blobs no
        // thread can be executing.
        unsafe { std::ptr::write_bytes(dst as *mut u8, POISON_BYTE, size) }
    }
}

fn counter(s: &mut CodeStats, st: State) -> &mut usize {
    match st {
        State::Staged | State::Live => &mut s.bytes_live,
        State::Retired => &mut s.bytes_retired,
        State::Quarantined => &mut s.bytes_quarantined,
    }
}

fn bump_high_water(s: &mut CodeStats) {
    let used = s.bytes_live + s.bytes_retired + s.bytes_quarantined;
    s.high_water = s.high_water.max(used);
}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_and_counters() {
        let m = CodeMemory::new(1 << 20).unwrap();
        let a = m.allocate(5, 1).unwrap();
        let b = m.allocate(100, 256).unwrap();
        assert_eq!(a.addr() % GRANULE, 0);
        assert_eq!(b.addr() % 256, 0);
        let s = m.stats();
        assert_eq!(s.bytes_live, 16 + 112);
        assert_eq!(s.high_water, 16 + 112);
        assert!(m.allocate(1, 3).is_err());
    }

    #[test]
    fn reuse_and_coalescing() {
        let m = CodeMemory::new(4096).unwrap();
        let a = m.allocate(1024, 16).unwrap();
        let b = m.allocate(1024, 16).unwrap();
        let c = m.allocate(1024, 16).unwrap();
        let d = m.allocate(1024, 16).unwrap();
        assert!(matches!(
            m.allocate(16, 16),
            Err(Error::OutOfCodeMemory { .. })
        ));
        m.free(b, State::Live).unwrap();
        m.free(c, State::Live).unwrap();
        // b and c coalesced: a 2048-byte blob fits exactly where they were.
        let e = m.allocate(2048, 16).unwrap();
        assert_eq!(e.addr(), b.addr());
        // Freeing everything leaves one range: the whole region is allocatable.
        for x in [a, d, e] {
            m.free(x, State::Live).unwrap();
        }
        let all = m.allocate(4096, 16).unwrap();
        assert_eq!(all.addr(), m.rx_base());
        m.free(all, State::Live).unwrap();
        // Alignment padding stays allocatable and coalesces back.
        let small = m.allocate(16, 16).unwrap();
        let big = m.allocate(64, 1024).unwrap();
        assert_eq!(big.addr() - m.rx_base(), 1024);
        let fill = m.allocate(1008, 16).unwrap();
        assert_eq!(fill.addr(), small.addr() + 16, "the gap was reused");
        for x in [big, small, fill] {
            m.free(x, State::Live).unwrap();
        }
        assert_eq!(m.allocate(4096, 16).unwrap().addr(), m.rx_base());
        let s = m.stats();
        assert_eq!(s.bytes_freed, 4 * 1024 + 2048 + 4096 + 16 + 64 + 1008);
        assert_eq!(s.high_water, 4096);
    }

    #[test]
    fn states_are_checked() {
        let m = CodeMemory::new(4096).unwrap();
        let a = m.allocate(64, 16).unwrap();
        assert!(m.free(a, State::Retired).is_err());
        m.transition_all(&[a], State::Live, State::Retired).unwrap();
        assert_eq!(m.stats().bytes_retired, 64);
        assert!(m.transition_all(&[a], State::Live, State::Retired).is_err());
        m.free(a, State::Retired).unwrap();
        // Double free and foreign handles are errors.
        assert!(m.free(a, State::Retired).is_err());
        let foreign = Blob { addr: 16, len: 1 };
        assert!(m.check(foreign, State::Live).is_err());
    }

    #[test]
    fn small_blocks_are_reused_by_size() {
        let m = CodeMemory::new(1 << 20).unwrap();
        let a = m.allocate(40, 16).unwrap(); // 48 bytes
        let b = m.allocate(100, 16).unwrap(); // 112 bytes
        let c = m.allocate(40, 16).unwrap();
        m.free(a, State::Live).unwrap();
        m.free(c, State::Live).unwrap();
        m.free(b, State::Live).unwrap();
        // Same size class, most recently freed first; other sizes do not
        // take them (no splitting) and carve fresh memory instead.
        assert_eq!(m.allocate(33, 16).unwrap().addr(), c.addr());
        let other = m.allocate(16, 16).unwrap();
        assert!(other.addr() > c.addr());
        assert_eq!(m.allocate(48, 16).unwrap().addr(), a.addr());
        assert_eq!(m.allocate(112, 16).unwrap().addr(), b.addr());
        // A cached block that is not aligned enough is skipped.
        let d = m.allocate(64, 16).unwrap();
        let e = m.allocate(64, 16).unwrap();
        let misaligned = if d.addr() % 128 != 0 { d } else { e };
        m.free(misaligned, State::Live).unwrap();
        let f = m.allocate(64, 128).unwrap();
        assert_eq!(f.addr() % 128, 0);
        assert_ne!(f.addr(), misaligned.addr());
        let s = m.stats();
        assert_eq!(s.allocations, 10);
        assert_eq!(s.bytes_live, 48 + 16 + 48 + 112 + 64 + 64);
        assert_eq!(s.bytes_freed, 48 + 48 + 112 + 64);
        assert_eq!(s.high_water, s.bytes_live);
    }

    #[test]
    fn large_blocks_coalesce_and_exhaustion_drains_small_lists() {
        let m = CodeMemory::new(64 << 10).unwrap();
        // Large blobs go back to the range map and coalesce at once.
        let big: Vec<_> = (0..4).map(|_| m.allocate(8 << 10, 16).unwrap()).collect();
        for b in &big[1..3] {
            m.free(*b, State::Live).unwrap();
        }
        assert_eq!(m.allocate(16 << 10, 16).unwrap().addr(), big[1].addr());
        // Fill the rest with small blobs, free them all (they sit in the
        // small lists), then ask for one range spanning them: the lists are
        // drained into the range map, coalesced, and it fits.
        let rest = (64 << 10) - 4 * (8 << 10);
        let small: Vec<_> = (0..rest / 64)
            .map(|_| m.allocate(64, 16).unwrap())
            .collect();
        assert!(matches!(
            m.allocate(16, 16),
            Err(Error::OutOfCodeMemory { .. })
        ));
        for b in &small {
            m.free(*b, State::Live).unwrap();
        }
        let whole = m.allocate(rest, 16).unwrap();
        assert_eq!(whole.addr(), small[0].addr());
        assert!(matches!(
            m.allocate(16, 16),
            Err(Error::OutOfCodeMemory { requested: 16, .. })
        ));
        let s = m.stats();
        assert_eq!(s.bytes_live, 64 << 10);
        assert_eq!(s.high_water, 64 << 10);
    }

    #[test]
    fn staged_blobs_count_as_live_and_publish_is_all_or_nothing() {
        let m = CodeMemory::new(4096).unwrap();
        let old = m.allocate(32, 16).unwrap();
        let new = m.allocate_as(32, 16, State::Staged).unwrap();
        assert_eq!(m.stats().bytes_live, 64);
        assert_eq!(m.state(new), Some(State::Staged));
        // Retiring a staged blob fails and changes nothing.
        assert!(m.publish(&[new], &[old, new]).is_err());
        assert_eq!(m.state(old), Some(State::Live));
        assert_eq!(m.state(new), Some(State::Staged));
        m.publish(&[new], &[old]).unwrap();
        assert_eq!(m.state(old), Some(State::Retired));
        assert_eq!(m.state(new), Some(State::Live));
        let s = m.stats();
        assert_eq!((s.bytes_live, s.bytes_retired), (32, 32));
        // A handle longer than its allocation, or inside one, is not a blob.
        assert_eq!(m.state(Blob { len: 33, ..new }), None);
        let inner = Blob {
            addr: new.addr() + 16,
            len: 1,
        };
        assert_eq!(m.state(inner), None);
    }

    #[test]
    fn write_is_visible_in_rx_view_and_poison() {
        let m = CodeMemory::new(4096).unwrap();
        let a = m.allocate(4, 16).unwrap();
        m.staged_slice(a).copy_from_slice(&[1, 2, 3, 4]);
        // SAFETY: a.addr() is inside the readable RX view.
        let rx = unsafe { std::slice::from_raw_parts(a.entry(), 4) };
        assert_eq!(rx, &[1, 2, 3, 4]);
        m.poison(a);
        // SAFETY: as above.
        let rx = unsafe { std::slice::from_raw_parts(a.entry(), 16) };
        assert!(rx.iter().all(|&b| b == POISON_BYTE));
    }
}
