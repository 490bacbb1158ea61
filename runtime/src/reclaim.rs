//! Reclamation of replaced code: epochs, quiescent points, oldest entries.
//!
//! A global epoch advances by one at the end of every commit. A retired blob
//! gets a *tag* `r`: the epoch value that the commit advanced from, taken only
//! once a serialization that completed **after** the patches that made the
//! blob unreachable (for `Strong`, its own second serialization; for
//! `Eventual`, the first serialization of a later commit). From then on no
//! thread can *start* the blob. It can still be running on a thread that
//! started it earlier; that thread is safe once its *horizon* exceeds `r`:
//!
//! ```text
//! horizon(t) = min(quiescent(t), entry(t))      safe to free tag r  <=>  min over t > r
//! ```
//!
//! * `quiescent(t)` is the epoch the thread read at its last quiescent point
//!   (QSBR, as in HotSpot's safepoint polls or userspace RCU). A value > `r`
//!   means it read the epoch after the advance, so it has since passed a point
//!   where it held no code address except activations covered by `entry`.
//!   Threads blocked in the kernel via `blocking` are `OFFLINE` (= infinity).
//! * `entry(t)` is the epoch of the thread's outermost entry into JIT code, or
//!   infinity outside it ("per-thread epoch of the oldest native entry"). It
//!   covers activations still on the stack when the thread polls from inside
//!   JIT code: an activation begun at epoch `<= r` may be the retired blob, so
//!   it blocks reclamation until the thread leaves. A stack walk (HotSpot, V8)
//!   would be more precise; this is what needs no frame pointers.
//!
//! Poison mode: a blob whose tag has passed the horizon is filled with `int3`
//! and kept in a bounded FIFO quarantine before its bytes are reused. Any
//! execution of reclaimed code (a reclamation bug) then traps with SIGTRAP at
//! once instead of silently running whatever was allocated there next; the
//! quarantine bound keeps code memory bounded.

use std::collections::VecDeque;

use crate::code_memory::{Blob, CodeMemory, State, GRANULE};

#[derive(Default)]
pub(crate) struct Reclaimer {
    /// Retired by `Eventual` commits; waiting for a serialization.
    pub(crate) eventual: Vec<Blob>,
    /// (tag, blob), tags non-decreasing.
    waiting: VecDeque<(u64, Blob)>,
    quarantine: VecDeque<Blob>,
    quarantine_bytes: usize,
    /// Scratch for `reclaim`, kept to avoid regrowing it every commit.
    done: Vec<Blob>,
}

fn size_of(b: Blob) -> usize {
    b.len().max(1).div_ceil(GRANULE) * GRANULE
}

impl Reclaimer {
    /// Tags retirements at the end of a commit that advanced the epoch from
    /// `tag`: the blobs retired by earlier `Eventual` commits (its first
    /// serialization covered them) and, if `strong`, the commit's own
    /// `retired` (its second did); otherwise those wait in `eventual` for the
    /// next commit. Leaves `retired` empty.
    pub(crate) fn tag(&mut self, tag: u64, retired: &mut Vec<Blob>, strong: bool) {
        debug_assert!(self.waiting.back().map_or(true, |&(t, _)| t <= tag));
        self.waiting
            .extend(self.eventual.drain(..).map(|b| (tag, b)));
        if strong {
            self.waiting.extend(retired.drain(..).map(|b| (tag, b)));
        } else {
            self.eventual.append(retired);
        }
    }

    /// Frees (or poisons and quarantines) every blob whose tag is below
    /// `horizon`. Returns the number of blobs reclaimed.
    pub(crate) fn reclaim(
        &mut self,
        mem: &CodeMemory,
        horizon: u64,
        poison: bool,
        quarantine_limit: usize,
    ) -> usize {
        let mut done = std::mem::take(&mut self.done);
        done.clear();
        while let Some(&(tag, blob)) = self.waiting.front() {
            if tag >= horizon {
                break;
            }
            self.waiting.pop_front();
            done.push(blob);
        }
        if poison {
            for b in &done {
                mem.poison(*b);
                self.quarantine_bytes += size_of(*b);
            }
            mem.transition_all(&done, State::Retired, State::Quarantined)
                .expect("retired blobs");
            self.quarantine.extend(done.iter().copied());
            let mut out = Vec::new();
            while self.quarantine_bytes > quarantine_limit {
                let b = self.quarantine.pop_front().unwrap();
                self.quarantine_bytes -= size_of(b);
                out.push(b);
            }
            mem.free_all(&out, State::Quarantined)
                .expect("quarantined blobs");
        } else {
            mem.free_all(&done, State::Retired).expect("retired blobs");
        }
        let n = done.len();
        self.done = done;
        n
    }

    /// Number of retired blobs not yet reclaimed.
    pub(crate) fn pending(&self) -> usize {
        self.eventual.len() + self.waiting.len()
    }
}
