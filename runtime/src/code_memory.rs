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
//! The allocator is first-fit with coalescing over a `BTreeMap` of free ranges
//! keyed by their *end* (so carving a blob off the front of a range updates the
//! value in place, no tree restructuring), in 16-byte granules. It is not on any hot path (one call per staged blob),
//! so simplicity wins over speed.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
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
    Live,
    Retired,
    Quarantined,
}

struct Allocation {
    /// Rounded size actually taken from the free list.
    size: usize,
    state: State,
}

struct Allocator {
    /// end -> start of each free range; ranges never touch (coalesced).
    free: BTreeMap<usize, usize>,
    /// offset -> allocation, for every byte range not in `free`.
    blobs: HashMap<usize, Allocation, BuildHasherDefault<AddrHasher>>,
    stats: CodeStats,
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

/// Hashes blob offsets (distinct multiples of 16) by one multiplication:
/// SipHash's flooding resistance buys nothing for addresses we chose.
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, x: usize) {
        self.0 = (x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
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
                blobs: HashMap::default(),
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

    /// Allocates `len` bytes aligned to `align` (a power of two; at least
    /// [`GRANULE`] is applied).
    pub(crate) fn allocate(&self, len: usize, align: usize) -> Result<Blob, Error> {
        if !align.is_power_of_two() {
            return Err(Error::InvalidArgument("alignment must be a power of two"));
        }
        let align = align.max(GRANULE);
        let size = round_up(len.max(1), GRANULE);
        let mut a = self.alloc.lock().unwrap();
        // First fit. Alignment is of the executable address.
        let base = self.rx_base;
        let mut found = None;
        for (&end, fstart) in a.free.iter_mut() {
            let start = round_up(base + *fstart, align) - base;
            if start + size <= end {
                let gap = (start > *fstart).then_some((start, *fstart));
                *fstart = start + size; // carve off the front, in place
                found = Some((end, start, gap));
                break;
            }
        }
        let Some((end, start, gap)) = found else {
            return Err(Error::OutOfCodeMemory {
                requested: size,
                capacity: self.capacity,
            });
        };
        if start + size == end {
            a.free.remove(&end);
        }
        if let Some((gap_end, gap_start)) = gap {
            a.free.insert(gap_end, gap_start); // alignment padding stays free
        }
        a.blobs.insert(
            start,
            Allocation {
                size,
                state: State::Live,
            },
        );
        a.stats.bytes_live += size;
        a.stats.allocations += 1;
        bump_high_water(&mut a.stats);
        Ok(Blob {
            addr: self.rx_base + start,
            len,
        })
    }

    /// Checks that `blob` is an allocation of this region in `state`.
    pub(crate) fn check(&self, blob: Blob, state: State) -> Result<(), Error> {
        let a = self.alloc.lock().unwrap();
        self.lookup(&a, blob)
            .filter(|al| al.state == state)
            .map(|_| ())
            .ok_or(Error::InvalidBlob)
    }

    fn lookup<'a>(&self, a: &'a Allocator, blob: Blob) -> Option<&'a Allocation> {
        if !self.contains(blob.addr) {
            return None;
        }
        a.blobs
            .get(&(blob.addr - self.rx_base))
            .filter(|al| blob.len <= al.size)
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
        let mut moved = 0;
        for (i, b) in blobs.iter().enumerate() {
            let ok = self.lookup(&a, *b).is_some_and(|al| al.state == from);
            if !ok {
                for done in &blobs[..i] {
                    self.set_state(&mut a, *done, to, from);
                }
                return Err(Error::InvalidBlob);
            }
            self.set_state(&mut a, *b, from, to);
            moved += 1;
        }
        debug_assert_eq!(moved, blobs.len());
        Ok(())
    }

    fn set_state(&self, a: &mut Allocator, blob: Blob, from: State, to: State) {
        let al = a.blobs.get_mut(&(blob.addr - self.rx_base)).unwrap();
        al.state = to;
        let size = al.size;
        *counter(&mut a.stats, from) -= size;
        *counter(&mut a.stats, to) += size;
    }

    /// Returns `blob` (currently in `from`) to the free list, coalescing.
    #[cfg(test)]
    pub(crate) fn free(&self, blob: Blob, from: State) -> Result<(), Error> {
        self.free_all(&[blob], from)
    }

    /// Frees every blob (each must be in `from`) under one lock. Stops at the
    /// first that is not.
    pub(crate) fn free_all(&self, blobs: &[Blob], from: State) -> Result<(), Error> {
        let mut a = self.alloc.lock().unwrap();
        for blob in blobs {
            let mut off = blob.addr.wrapping_sub(self.rx_base);
            let mut size = match self.lookup(&a, *blob) {
                Some(al) if al.state == from => al.size,
                _ => return Err(Error::InvalidBlob),
            };
            a.blobs.remove(&off);
            *counter(&mut a.stats, from) -= size;
            a.stats.bytes_freed += size as u64;
            // Coalesce with the range ending where this one starts, and with
            // the range starting where this one ends.
            if let Some(pstart) = a.free.remove(&off) {
                size += off - pstart;
                off = pstart;
            }
            let end = off + size;
            match a.free.range_mut(end + 1..).next() {
                Some((_, nstart)) if *nstart == end => *nstart = off,
                _ => {
                    a.free.insert(end, off);
                }
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
        State::Live => &mut s.bytes_live,
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
