//! Calls and loop back-edges per definition: what a tiering policy watches and `jitvm run
//! --stats` prints.
//!
//! Each thread counts in its own array (no shared cache line on the hot path, see
//! [`crate::state::ThreadState`]) and adds its counts here in batches of [`Profile::batch`]
//! events ([`PROFILE_BATCH`] unless a tiering policy asks for smaller ones). The baseline
//! JIT's code counts in the same arrays; optimized code does not count.

use crate::bytecode::{FuncId, Module};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Events a thread counts locally, by default, before adding them to the shared [`Profile`].
pub const PROFILE_BATCH: u32 = 1024;

/// Calls and loop back-edges per definition, summed over threads in batches.
pub struct Profile {
    pub calls: Box<[AtomicU64]>,
    pub back_edges: Box<[AtomicU64]>,
    batch: u32,
}

impl Profile {
    /// A profile whose threads report every `batch` events (1 to [`PROFILE_BATCH`]).
    pub fn new(definitions: usize, batch: u32) -> Self {
        let counters = || (0..definitions).map(|_| AtomicU64::new(0)).collect();
        Profile {
            calls: counters(),
            back_edges: counters(),
            batch: batch.clamp(1, PROFILE_BATCH),
        }
    }

    /// How many events of one kind a thread counts before it reports them.
    pub fn batch(&self) -> u32 {
        self.batch
    }

    /// Calls plus back-edges reported so far for `def`.
    pub fn events(&self, def: FuncId) -> u64 {
        let i = def as usize;
        self.calls[i].load(Ordering::Relaxed) + self.back_edges[i].load(Ordering::Relaxed)
    }

    /// Adds a thread's batch of counts for definition `def`.
    pub fn add(&self, def: FuncId, calls: u32, back_edges: u32) {
        let i = def as usize;
        if calls > 0 {
            self.calls[i].fetch_add(calls as u64, Ordering::Relaxed);
        }
        if back_edges > 0 {
            self.back_edges[i].fetch_add(back_edges as u64, Ordering::Relaxed);
        }
    }

    /// The table `jitvm run --stats` prints: each function that ran, with its counts.
    pub fn report(&self, module: &Module) -> String {
        let mut out = String::from("function                          calls     back-edges\n");
        for (i, f) in module.functions.iter().enumerate() {
            let calls = self.calls[i].load(Ordering::Relaxed);
            let loops = self.back_edges[i].load(Ordering::Relaxed);
            if calls + loops > 0 {
                let _ = writeln!(out, "{:<28} {:>12} {:>14}", f.name, calls, loops);
            }
        }
        out
    }
}
