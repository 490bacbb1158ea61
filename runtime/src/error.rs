//! The one error type of the crate. Every safe call reports misuse and system
//! failures here instead of panicking, in release builds too.

use std::fmt;
use std::time::Duration;

use crate::config::Strategy;

/// A registered thread that holds back reclamation, named in
/// [`Error::OutOfCodeMemory`] and [`Error::Timeout`], with what it has
/// published (see `crate::reclaim`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldBack {
    /// Kernel thread id (`gettid`), as `ps -L` and `/proc/PID/task` show it.
    pub tid: i32,
    /// If the thread's horizon holds a retirement back: how long ago the
    /// first commit it has not acknowledged (by a quiescent point or a
    /// native safepoint) returned. `None` if it has acknowledged every
    /// commit and only its pins hold code back.
    pub since: Option<Duration>,
    /// True if the thread is inside [`crate::ThreadHandle::enter`] and not
    /// blocked: it can answer at its next native poll.
    pub entered: bool,
    /// The epoch of its outermost entry into native code, as its last native
    /// safepoint raised it, if it is entered.
    pub entry_epoch: Option<u64>,
    /// True if it is blocked ([`crate::ThreadHandle::blocking`]).
    pub offline: bool,
    /// True if the thread's last native safepoint found code of a pending
    /// retirement on its stack (an activation that has not returned yet).
    pub pinning: bool,
    /// How many code addresses its last native safepoint found on its stack.
    pub pins: usize,
    /// How many times it has answered a request at a native poll.
    pub slow_polls: u64,
}

impl fmt::Display for HeldBack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "thread {} (", self.tid)?;
        match self.since {
            Some(since) => write!(f, "no quiescent point for {:.3} s", since.as_secs_f64())?,
            None => f.write_str("acknowledged every commit")?,
        }
        if let Some(epoch) = self.entry_epoch {
            write!(f, ", inside native code since epoch {epoch}")?;
        }
        if self.offline {
            f.write_str(", blocked")?;
        }
        if self.pinning {
            write!(
                f,
                ", retired code on its stack ({} code addresses pinned)",
                self.pins
            )?;
        }
        write!(f, ", {} native polls answered)", self.slow_polls)
    }
}

fn list(f: &mut fmt::Formatter<'_>, threads: &[HeldBack]) -> fmt::Result {
    if threads.is_empty() {
        return Ok(());
    }
    f.write_str("; held back by ")?;
    for (i, t) in threads.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{t}")?;
    }
    Ok(())
}

/// Errors of this crate.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No free range large enough in the code region, even after reclaiming
    /// what could be reclaimed.
    OutOfCodeMemory {
        /// Bytes asked for (rounded to the granule).
        requested: usize,
        /// Size of the region.
        capacity: usize,
        /// Retired blobs that could not be reclaimed yet.
        pending_retirements: usize,
        /// The threads that keep them from being reclaimed, and since when.
        held_back_by: Vec<HeldBack>,
    },
    /// A blob handle that is not a live allocation of this runtime: stale
    /// (its memory was reclaimed, possibly reused), foreign, retired twice,
    /// or not staged by this transaction where that is required.
    InvalidBlob,
    /// A patch site that is malformed, stale, or not patchable here.
    InvalidSite(&'static str),
    /// A patch or relocation target that points into the code region but
    /// not into a live blob (or one staged by the same transaction).
    InvalidTarget(&'static str),
    /// A commit would retire a blob that a dispatch slot still targets (and
    /// the transaction does not re-point): calls through the slot would run
    /// freed code. Nothing was published.
    SlotTargetsRetired {
        /// The slot's address ([`crate::DispatchSlot::as_ptr`]).
        slot: usize,
        /// What it targets, inside a blob the commit retires.
        target: usize,
    },
    /// A dispatch slot made by another runtime.
    ForeignSlot,
    /// A PC-relative target farther than ±2 GiB.
    OutOfRange,
    /// A bad size, alignment, offset or configuration value.
    InvalidArgument(&'static str),
    /// `JITVM_SYNC` (or a parse) named no strategy.
    UnknownStrategy(String),
    /// The strategy does not work here.
    StrategyUnavailable {
        /// Which one.
        strategy: Strategy,
        /// Why.
        reason: String,
    },
    /// Core serialization failed during a commit; see
    /// [`crate::Transaction::commit`] for the state it leaves.
    Serialization {
        /// The strategy that failed.
        strategy: Strategy,
        /// False: nothing was published, no slot changed. True: the commit
        /// is published with only the `Eventual` guarantee.
        published: bool,
        /// What failed.
        reason: String,
    },
    /// The calling thread is already registered (with this or another
    /// runtime) through a live [`crate::ThreadHandle`].
    AlreadyRegistered,
    /// This process is a `fork` child of the one that created the runtime.
    /// The child shares the code memory with its parent, so every call that
    /// could write it is refused.
    ForkedChild,
    /// [`crate::Runtime::synchronize`] gave up.
    Timeout {
        /// How long it waited.
        waited: Duration,
        /// Retired blobs still not reclaimed.
        pending_retirements: usize,
        /// The threads that keep them from being reclaimed, and since when.
        held_back_by: Vec<HeldBack>,
    },
    /// A system call failed.
    Io(std::io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::OutOfCodeMemory {
                requested,
                capacity,
                pending_retirements,
                held_back_by,
            } => {
                write!(
                    f,
                    "out of code memory ({requested} bytes requested, region {capacity}, {pending_retirements} retired blobs not reclaimable yet)"
                )?;
                list(f, held_back_by)
            }
            Error::InvalidBlob => {
                f.write_str("not a live blob of this runtime (stale, foreign or retired)")
            }
            Error::InvalidSite(why) => write!(f, "invalid patch site: {why}"),
            Error::InvalidTarget(why) => write!(f, "invalid patch target: {why}"),
            Error::SlotTargetsRetired { slot, target } => write!(
                f,
                "the dispatch slot at {slot:#x} still targets {target:#x}, in a blob this \
                 commit retires: re-point the slot in the same transaction"
            ),
            Error::ForeignSlot => f.write_str("the dispatch slot belongs to another runtime"),
            Error::OutOfRange => f.write_str("PC-relative target out of ±2 GiB range"),
            Error::InvalidArgument(why) => write!(f, "invalid argument: {why}"),
            Error::UnknownStrategy(s) => write!(
                f,
                "unknown sync strategy {s:?} (membarrier|mprotect|signal|none)"
            ),
            Error::StrategyUnavailable { strategy, reason } => {
                write!(f, "sync strategy {strategy} unavailable: {reason}")
            }
            Error::Serialization {
                strategy,
                published,
                reason,
            } => write!(
                f,
                "core serialization ({strategy}) failed {}: {reason}",
                if *published {
                    "after publishing (only the Eventual guarantee holds)"
                } else {
                    "before publishing (nothing changed)"
                }
            ),
            Error::AlreadyRegistered => {
                f.write_str("this thread is already registered with a jitvm runtime")
            }
            Error::ForkedChild => f.write_str(
                "runtime used in a fork child: its code memory is shared with the parent",
            ),
            Error::Timeout {
                waited,
                pending_retirements,
                held_back_by,
            } => {
                write!(
                    f,
                    "timed out after {:.3} s with {pending_retirements} retired blobs not reclaimed",
                    waited.as_secs_f64()
                )?;
                list(f, held_back_by)
            }
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Io(e)
    }
}
