//! The allocator of one region: where each blob goes, and what it is now.
//!
//! * **Small blobs** (<= [`SMALL_MAX`] bytes, the common case) are freed onto
//!   a LIFO list per size in granules and reused from it with one pop: no
//!   search, no tree update, and the bytes reused were recently written, so
//!   their pages are resident and their lines often still cached.
//! * **Large blobs, aligned requests and fresh memory** come from `free`,
//!   first-fit with coalescing over ranges keyed by their *end* (carving off
//!   the front of a range updates the value in place).
//! * When `free` has no fitting range, every small list is given back to it
//!   (coalescing) and the search is retried, so segregation never makes an
//!   allocation fail that one coalesced free list could satisfy.
//!
//! Every allocation has a [`Record`] (size, state, owner tag and a
//! *generation* that no other allocation of the process ever gets), and every
//! granule it covers maps to that record in `table`. So checking a handle,
//! finding the blob that contains an address and retiring a blob are each an
//! indexed load or two; a handle whose generation differs names memory that
//! was freed and perhaps reused, and is refused.

use std::collections::BTreeMap;

use super::{CodeStats, State, GRANULE};
use crate::Error;

/// Blobs of at most this many bytes are recycled through exact-size free
/// lists; larger ones go back to the coalescing range map.
pub(crate) const SMALL_MAX: usize = 4096;
const SMALL_CLASSES: usize = SMALL_MAX / GRANULE;

/// One allocation. Offsets and sizes are in bytes from the region start.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Record {
    pub(crate) start: usize,
    /// Rounded to the granule; what is reserved.
    pub(crate) size: usize,
    /// As the handle says (at most `size`).
    pub(crate) len: usize,
    pub(crate) state: State,
    pub(crate) gen: u64,
    pub(crate) owner: u64,
}

pub(crate) struct Allocator {
    capacity: usize,
    /// end -> start of each free range; ranges never touch (coalesced).
    free: BTreeMap<usize, usize>,
    /// `small[g - 1]`: free blocks of exactly `g` granules, by start granule.
    small: Vec<Vec<u32>>,
    /// Per granule carved so far: 1 + the index in `records` of the
    /// allocation covering it, or 0.
    table: Vec<u32>,
    records: Vec<Record>,
    spare_records: Vec<u32>,
    pub(crate) stats: CodeStats,
}

fn round_up(x: usize, to: usize) -> usize {
    (x + to - 1) & !(to - 1)
}

impl Allocator {
    pub(crate) fn new(capacity: usize) -> Allocator {
        // The first and last granule are never allocated: the region's base
        // and end addresses are common values on stacks (copies of the
        // mapping's bounds), and must not pin a blob in a conservative stack
        // scan (see crate::safepoint); no blob ends at the region's end either.
        let mut free = BTreeMap::new();
        free.insert(capacity - GRANULE, GRANULE);
        Allocator {
            capacity,
            free,
            small: vec![Vec::new(); SMALL_CLASSES],
            table: Vec::new(),
            records: Vec::new(),
            spare_records: Vec::new(),
            stats: CodeStats {
                capacity,
                ..CodeStats::default()
            },
        }
    }

    /// Reserves `len` bytes whose executable address (`base` + offset) is
    /// aligned to `align`; returns the record index. Sizes and alignments are
    /// checked here, so no arithmetic below can overflow: both are at most
    /// the capacity (1 GiB).
    pub(crate) fn allocate(
        &mut self,
        base: usize,
        len: usize,
        align: usize,
        state: State,
        owner: u64,
        gen: u64,
    ) -> Result<usize, Error> {
        if !align.is_power_of_two() {
            return Err(Error::InvalidArgument("alignment must be a power of two"));
        }
        if align > self.capacity {
            return Err(Error::InvalidArgument(
                "alignment larger than the code region",
            ));
        }
        if len > self.capacity {
            return Err(Error::InvalidArgument("size larger than the code region"));
        }
        let align = align.max(GRANULE);
        let size = round_up(len.max(1), GRANULE);
        let granules = size / GRANULE;
        // A recycled block of exactly this size, if its address is aligned
        // enough (always, for the usual GRANULE alignment).
        let reused = match self.small.get_mut(granules - 1) {
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
            Some(s) => s,
            None => match self.carve(base, size, align) {
                Some(s) => s,
                None => {
                    self.drain_small();
                    self.carve(base, size, align)
                        .ok_or(Error::OutOfCodeMemory {
                            requested: size,
                            capacity: self.capacity,
                            pending_retirements: 0,
                            held_back_by: Vec::new(),
                        })?
                }
            },
        };
        let rec = Record {
            start,
            size,
            len,
            state,
            gen,
            owner,
        };
        let idx = match self.spare_records.pop() {
            Some(i) => {
                self.records[i as usize] = rec;
                i as usize
            }
            None => {
                self.records.push(rec);
                self.records.len() - 1
            }
        };
        self.mark(start, size, idx as u32 + 1);
        *counter(&mut self.stats, state) += size;
        self.stats.allocations += 1;
        bump_high_water(&mut self.stats);
        Ok(idx)
    }

    fn mark(&mut self, start: usize, size: usize, value: u32) {
        let (g0, g1) = (start / GRANULE, (start + size) / GRANULE);
        if self.table.len() < g1 {
            self.table.resize(g1, 0);
        }
        self.table[g0..g1].fill(value);
    }

    /// First fit in `free`; `base` is the executable address of offset 0.
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
        Some(start)
    }

    /// Returns `[off, off + size)` to `free`, coalescing with its neighbours.
    fn release(&mut self, mut off: usize, mut size: usize) {
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

    /// Gives a free block to its small list, or to the range map.
    fn give_back(&mut self, off: usize, size: usize) {
        match self.small.get_mut(size / GRANULE - 1) {
            Some(list) => list.push((off / GRANULE) as u32),
            None => self.release(off, size),
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

    /// The record a handle names: it starts at `off`, has length `len` and
    /// generation `gen`.
    pub(crate) fn find(&self, off: usize, len: usize, gen: u64) -> Option<usize> {
        if off % GRANULE != 0 {
            return None;
        }
        let idx = (*self.table.get(off / GRANULE)?).checked_sub(1)? as usize;
        let r = self.records.get(idx)?;
        (r.start == off && r.len == len && r.gen == gen).then_some(idx)
    }

    /// The allocation covering byte `off`, if any.
    pub(crate) fn covering(&self, off: usize) -> Option<usize> {
        let idx = (*self.table.get(off / GRANULE)?).checked_sub(1)? as usize;
        Some(idx).filter(|&i| i < self.records.len())
    }

    pub(crate) fn record(&self, idx: usize) -> &Record {
        &self.records[idx]
    }

    pub(crate) fn set_owner(&mut self, idx: usize, owner: u64) {
        self.records[idx].owner = owner;
    }

    pub(crate) fn set_state(&mut self, idx: usize, to: State) {
        let r = &mut self.records[idx];
        let (from, size) = (r.state, r.size);
        r.state = to;
        *counter(&mut self.stats, from) -= size;
        *counter(&mut self.stats, to) += size;
    }

    /// Frees an allocation; its handles become stale.
    pub(crate) fn free(&mut self, idx: usize) {
        let r = self.records[idx];
        self.mark(r.start, r.size, 0);
        self.records[idx].gen = 0; // no handle has generation 0
        self.spare_records.push(idx as u32);
        *counter(&mut self.stats, r.state) -= r.size;
        self.stats.bytes_freed += r.size as u64;
        self.give_back(r.start, r.size);
    }

    /// Shrinks an allocation to `new_len` bytes (at most its length), giving
    /// the tail back.
    pub(crate) fn shrink(&mut self, idx: usize, new_len: usize) {
        let r = self.records[idx];
        let new_size = round_up(new_len.max(1), GRANULE);
        if new_size < r.size {
            let tail = r.size - new_size;
            self.mark(r.start + new_size, tail, 0);
            *counter(&mut self.stats, r.state) -= tail;
            // To the range map, not a size list: a reservation's tail usually
            // borders fresh memory and coalesces with it.
            self.release(r.start + new_size, tail);
        }
        let rec = &mut self.records[idx];
        rec.size = rec.size.min(new_size);
        rec.len = new_len;
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
