//! The tier a function's dispatch slot runs: the one vocabulary the installer, the tiering
//! policy, `--stats`, `--trace` and the engine share. The command line's `--tier` choice,
//! which adds `auto`, is the engine's own type (`jitvm::TierChoice`).

use std::fmt;

/// What a function runs, lowest first: tier-ups only go up (`Ord`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// The interpreter (natively: an interpreter stub in front of it).
    Interp,
    /// The dynasm baseline.
    Baseline,
    /// Cranelift.
    Opt,
}

impl Tier {
    /// Every tier, lowest first.
    pub const ALL: [Tier; 3] = [Tier::Interp, Tier::Baseline, Tier::Opt];

    /// Its `--tier` name.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Interp => "interp",
            Tier::Baseline => "baseline",
            Tier::Opt => "opt",
        }
    }

    /// Whether this build can run it: native tiers need x86-64.
    pub fn is_available(self) -> bool {
        self == Tier::Interp || cfg!(target_arch = "x86_64")
    }
}

/// Its `--tier` name.
impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
