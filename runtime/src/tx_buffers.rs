//! The vectors a [`crate::Transaction`] fills while it stages: blobs,
//! patches, retirements and their generations. Apart from the transaction so
//! that a [`crate::Staging`] reservation can add its blob without knowing the
//! transaction; the runtime keeps a few between transactions.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use crate::code_memory::Blob;
#[cfg(target_arch = "x86_64")]
use crate::patch::Rel32Site;

/// Hashes a blob generation (unique per allocation) with one multiply.
#[derive(Default)]
pub(crate) struct GenHasher(u64);

impl Hasher for GenHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A set of blob generations: O(1) "is this blob staged / retired here?".
pub(crate) type GenSet = HashSet<u64, BuildHasherDefault<GenHasher>>;

/// The vectors of a transaction. The runtime keeps a few between
/// transactions, so a commit of n blobs does not regrow them from empty.
#[derive(Default)]
pub(crate) struct TxBuffers {
    pub(crate) staged: Vec<Blob>,
    /// (address of a `DispatchSlot` borrowed for the transaction's `'a`,
    /// target). An address, not a reference, so the vector outlives `'a`.
    pub(crate) dispatch: Vec<(usize, usize)>,
    /// (site in a blob staged here, displacement).
    #[cfg(target_arch = "x86_64")]
    pub(crate) rel32: Vec<(Rel32Site, i32)>,
    /// (site in a published blob, target), patched live (`crate::live_patch`).
    #[cfg(target_arch = "x86_64")]
    pub(crate) live_rel32: Vec<(Rel32Site, usize)>,
    /// (site in a blob staged here, address of the `DispatchSlot` it mirrors), bound
    /// (`crate::bound_sites`) by the commit.
    #[cfg(target_arch = "x86_64")]
    pub(crate) bind: Vec<(Rel32Site, usize)>,
    pub(crate) retire: Vec<Blob>,
    /// Generations of `staged` and of `retire`.
    pub(crate) staged_gens: GenSet,
    pub(crate) retire_gens: GenSet,
    /// Code-region addresses that relocations and rel32 sites point at.
    pub(crate) targets: Vec<usize>,
}

impl TxBuffers {
    /// Records a blob staged by the transaction.
    pub(crate) fn add_staged(&mut self, b: Blob) {
        self.staged.push(b);
        self.staged_gens.insert(b.gen);
    }

    pub(crate) fn is_staged(&self, b: &Blob) -> bool {
        self.staged_gens.contains(&b.gen)
    }

    pub(crate) fn is_retired(&self, b: &Blob) -> bool {
        self.retire_gens.contains(&b.gen)
    }

    /// Empties every vector for reuse; false if one grew too large to keep.
    pub(crate) fn recycle(&mut self) -> bool {
        const KEEP: usize = 1 << 12;
        self.staged.clear();
        self.dispatch.clear();
        #[cfg(target_arch = "x86_64")]
        self.rel32.clear();
        #[cfg(target_arch = "x86_64")]
        self.live_rel32.clear();
        #[cfg(target_arch = "x86_64")]
        self.bind.clear();
        self.retire.clear();
        self.targets.clear();
        self.staged_gens.clear();
        self.retire_gens.clear();
        [
            self.staged.capacity(),
            self.dispatch.capacity(),
            self.retire.capacity(),
            self.targets.capacity(),
            self.staged_gens.capacity(),
            self.retire_gens.capacity(),
        ]
        .iter()
        .all(|&c| c <= KEEP)
    }
}
