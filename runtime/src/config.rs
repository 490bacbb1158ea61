//! Runtime configuration, and the names of the serialization strategies
//! (their implementations are in [`crate::sync`]).

use std::fmt;

/// How a [`crate::Runtime`] is built.
#[derive(Clone, Debug)]
pub struct Config {
    /// Size of the code region in bytes (at most 1 GiB, so every rel32
    /// reaches). Address space only: pages are backed when first written.
    pub capacity: usize,
    /// The serialization strategy; `None` means `JITVM_SYNC` if set, else the
    /// first that works (see [`crate::select_strategy`]).
    pub strategy: Option<Strategy>,
    /// Poison mode, to make reclamation bugs loud: reclaimed code is filled
    /// with the architecture's trap instruction and quarantined before reuse,
    /// and fresh staging buffers start filled with it.
    pub poison: bool,
    /// In poison mode, how many reclaimed bytes to keep poisoned before
    /// reusing the oldest.
    pub quarantine_bytes: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            capacity: 64 << 20,
            strategy: None,
            poison: false,
            quarantine_bytes: 256 << 10,
        }
    }
}

/// How every thread is made to execute a core-serializing instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)` (membarrier(2)):
    /// every running thread of the process executes a core-serializing
    /// instruction before the call returns; threads not running do so before
    /// they next return to user space.
    Membarrier,
    /// x86-64 only: downgrade the protection of a private page so the kernel
    /// shoots down its TLB entry on every CPU running this process by IPI;
    /// the interrupt return serializes those CPUs. Relies on kernel
    /// implementation details; refused on CPUs with broadcast TLB
    /// invalidation (AMD `INVLPGB`), and never chosen automatically.
    Mprotect,
    /// Signal every registered thread with a real-time signal and wait until
    /// each has run the handler; the return from the handler serializes.
    /// Covers registered threads only.
    Signal,
    /// No serialization at all (commits report 0 serializations). Unsound
    /// for real use: for measuring overhead only.
    None,
}

impl Strategy {
    /// Every strategy.
    pub const ALL: [Strategy; 4] = [
        Strategy::Membarrier,
        Strategy::Mprotect,
        Strategy::Signal,
        Strategy::None,
    ];

    /// The name used by `JITVM_SYNC`.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Membarrier => "membarrier",
            Strategy::Mprotect => "mprotect",
            Strategy::Signal => "signal",
            Strategy::None => "none",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
