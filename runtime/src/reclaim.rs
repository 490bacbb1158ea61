//! Reclamation of replaced code: epochs, quiescent points, oldest entries,
//! stack pins.
//!
//! A global epoch advances by one at the end of every commit. A retired blob
//! gets a *tag* `r`: the epoch value that the commit advanced from, taken only
//! once a serialization that completed **after** the patches that made the
//! blob unreachable (for `Strong`, its own second serialization; for
//! `Eventual`, the first serialization of a later commit). From then on no
//! thread can *start* the blob. It can still be running on a thread that
//! started it earlier; that thread is safe once its *horizon* exceeds `r` and
//! none of its *pins* falls inside the blob:
//!
//! ```text
//! horizon(t) = min(quiescent(t), entry(t))
//! reclaim blob tagged r  <=>  min over t of horizon(t) > r  and  no pin of any t in the blob
//! ```
//!
//! * `quiescent(t)` is the epoch the thread read at its last quiescent point
//!   (QSBR, as in userspace RCU). A value > `r` means it read the epoch after
//!   the advance, so it has since passed a point where it held no code
//!   address except activations covered by `entry`. Threads blocked in the
//!   kernel via `blocking` are `OFFLINE` (= infinity).
//! * `entry(t)` is the epoch of the thread's outermost entry into JIT code, or
//!   infinity outside it. It covers activations still on the stack when the
//!   thread polls from inside JIT code: an activation begun at epoch `<= r`
//!   may be of the retired blob.
//! * A native safepoint ([`crate::safepoint`]) raises `entry` to the current
//!   epoch after recording, as *pins*, every code address on the thread's
//!   stack: activations begun before are then covered by the pins instead,
//!   so a thread that stays in native code for good holds back only the
//!   blobs it is actually inside.
//!
//! Poison mode: a blob that becomes reclaimable is filled with the trap
//! instruction, followed by cache maintenance, and kept in a bounded FIFO
//! quarantine before its bytes are reused. Any execution of reclaimed code (a
//! reclamation bug) then traps at once instead of silently running whatever
//! was allocated there next; the quarantine bound keeps code memory bounded.

use std::collections::VecDeque;
use std::time::Instant;

use crate::code_memory::{Blob, CodeMemory, State, GRANULE};
use crate::registry::Registry;

/// How many epoch start times are kept for diagnostics.
const EPOCH_TIMES: usize = 4096;

#[derive(Default)]
pub(crate) struct Reclaimer {
    /// (serial, blob) retired by `Eventual` commits; waiting for a
    /// serialization.
    eventual: Vec<(u64, Blob)>,
    /// (tag, serial, blob), tags non-decreasing.
    waiting: VecDeque<(u64, u64, Blob)>,
    /// Past the horizon but pinned by some thread's stack.
    pinned: Vec<(u64, u64, Blob)>,
    quarantine: VecDeque<Blob>,
    quarantine_bytes: usize,
    /// The blobs the last `reclaim` reclaimed.
    pub(crate) done: Vec<Blob>,
    /// Scratch.
    pins: Vec<usize>,
    out: Vec<Blob>,
    /// Serial number of the next retirement.
    next_serial: u64,
    /// (epoch, when the commit that started it returned), most recent last.
    epoch_times: VecDeque<(u64, Instant)>,
}

fn size_of(b: Blob) -> usize {
    b.len().max(1).div_ceil(GRANULE) * GRANULE
}

/// Whether a pin falls inside `b` or on its end (a return address after a
/// final call instruction).
fn pinned(pins: &[usize], b: Blob) -> bool {
    let i = pins.partition_point(|&p| p < b.addr());
    i < pins.len() && pins[i] - b.addr() <= b.len()
}

impl Reclaimer {
    /// Tags retirements at the end of a commit that advanced the epoch from
    /// `tag`: the blobs retired by earlier `Eventual` commits (its first
    /// serialization covered them) and, if `strong`, the commit's own
    /// `retired` (its second did); otherwise those wait in `eventual` for the
    /// next commit. Leaves `retired` empty.
    pub(crate) fn tag(&mut self, tag: u64, retired: &mut Vec<Blob>, strong: bool) {
        self.waiting
            .extend(self.eventual.drain(..).map(|(s, b)| (tag, s, b)));
        for b in retired.drain(..) {
            let s = self.next_serial;
            self.next_serial += 1;
            if strong {
                self.waiting.push_back((tag, s, b));
            } else {
                self.eventual.push((s, b));
            }
        }
    }

    /// Records that epoch `epoch` began now.
    pub(crate) fn epoch_began(&mut self, epoch: u64) {
        if self.epoch_times.len() == EPOCH_TIMES {
            self.epoch_times.pop_front();
        }
        self.epoch_times.push_back((epoch, Instant::now()));
    }

    /// When epoch `epoch` began (or the oldest time known, if it is older).
    pub(crate) fn epoch_start(&self, epoch: u64) -> Option<Instant> {
        let i = self.epoch_times.partition_point(|&(e, _)| e < epoch);
        self.epoch_times
            .get(i)
            .or(self.epoch_times.front())
            .map(|&(_, t)| t)
    }

    /// Frees (or poisons and quarantines) every blob whose tag is below the
    /// registry's horizon and that no thread pins. If `owners` is given, the
    /// owner tags of the reclaimed blobs are appended to it (before they are
    /// freed). Returns the number reclaimed; the blobs are in `self.done`.
    pub(crate) fn reclaim(
        &mut self,
        mem: &CodeMemory,
        registry: &Registry,
        poison: bool,
        quarantine_limit: usize,
        owners: Option<&mut Vec<u64>>,
    ) -> usize {
        let mut pins = std::mem::take(&mut self.pins);
        pins.clear();
        let horizon = registry.scan(&mut pins);
        pins.sort_unstable();
        let mut done = std::mem::take(&mut self.done);
        done.clear();
        // Blobs past the horizon stay past it (every later horizon is at
        // least the epoch at that time), so only their pins are re-checked.
        let mut i = 0;
        while i < self.pinned.len() {
            let b = self.pinned[i].2;
            if pinned(&pins, b) {
                i += 1;
            } else {
                done.push(b);
                self.pinned.swap_remove(i);
            }
        }
        while let Some(&(tag, serial, blob)) = self.waiting.front() {
            if tag >= horizon {
                break;
            }
            self.waiting.pop_front();
            if pinned(&pins, blob) {
                self.pinned.push((tag, serial, blob));
            } else {
                done.push(blob);
            }
        }
        if let Some(o) = owners {
            mem.owners(&done, o);
        }
        // The transitions below cannot fail (these blobs are Retired, each
        // listed once, and only this lock's holder changes them); a failure
        // would be a bug, reported in debug builds and never a panic in
        // release builds.
        if poison {
            mem.poison_all(&done);
            let r = mem.transition_all(&done, State::Retired, State::Quarantined);
            debug_assert!(r.is_ok(), "retired blobs");
            for b in &done {
                self.quarantine_bytes += size_of(*b);
                self.quarantine.push_back(*b);
            }
            let mut out = std::mem::take(&mut self.out);
            out.clear();
            while self.quarantine_bytes > quarantine_limit {
                let Some(b) = self.quarantine.pop_front() else {
                    break;
                };
                self.quarantine_bytes -= size_of(b);
                out.push(b);
            }
            let r = mem.free_all(&out, State::Quarantined);
            debug_assert!(r.is_ok(), "quarantined blobs");
            self.out = out;
        } else {
            let r = mem.free_all(&done, State::Retired);
            debug_assert!(r.is_ok(), "retired blobs");
        }
        let n = done.len();
        self.done = done;
        self.pins = pins;
        n
    }

    /// The largest tag of a retirement waiting for threads' horizons.
    pub(crate) fn waiting_max_tag(&self) -> Option<u64> {
        self.waiting.back().map(|w| w.0)
    }

    /// The blobs past every horizon that a thread's pins still hold.
    pub(crate) fn pinned_blobs(&self) -> Vec<Blob> {
        self.pinned.iter().map(|p| p.2).collect()
    }

    /// Number of retired blobs not yet reclaimed.
    pub(crate) fn pending(&self) -> usize {
        self.eventual.len() + self.waiting.len() + self.pinned.len()
    }

    /// Whether some retirement waits for a serialization.
    pub(crate) fn awaits_serialization(&self) -> bool {
        !self.eventual.is_empty()
    }

    /// The serial the next retirement will get.
    pub(crate) fn next_serial(&self) -> u64 {
        self.next_serial
    }

    /// The smallest serial still pending, if any.
    pub(crate) fn oldest_serial(&self) -> Option<u64> {
        let a = self.eventual.iter().map(|e| e.0);
        let b = self.waiting.iter().map(|w| w.1);
        let c = self.pinned.iter().map(|p| p.1);
        a.chain(b).chain(c).min()
    }

    /// The largest tag waiting for threads, and the blobs that wait.
    pub(crate) fn waiting_for_threads(&self) -> (Option<u64>, Vec<Blob>) {
        let max_tag = self
            .waiting
            .iter()
            .map(|w| w.0)
            .chain(self.pinned.iter().map(|p| p.0))
            .max();
        let blobs = self
            .waiting
            .iter()
            .map(|w| w.2)
            .chain(self.pinned.iter().map(|p| p.2))
            .collect();
        (max_tag, blobs)
    }
}

/// Whether any of `pins` (sorted) falls inside any of `blobs`.
pub(crate) fn pins_any(pins: &[usize], blobs: &[Blob]) -> bool {
    blobs.iter().any(|b| pinned(pins, *b))
}
