//! Runtime configuration.

use crate::sync::Strategy;

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
