//! Core serialization: making every core that may run new code execute a
//! serializing instruction first.
//!
//! Cross-modifying code (Intel SDM vol. 3A §8.1.3 "Handling Self- and
//! Cross-Modifying Code") requires each processor that will execute modified
//! code to execute a *serializing instruction* after the modification and
//! before running it; otherwise it may run stale prefetched or decoded bytes.
//! The ARM ARM (B2.2.5) likewise requires a context synchronization event
//! (`isb`) on each PE after the cache maintenance. A JIT cannot make other
//! threads execute `cpuid` or `isb`, so it asks the kernel to interrupt them;
//! each [`Strategy`] is one way to do so, one file each. The calling core
//! serializes itself (`local.rs`). `Serializer::serialize_all` is the single
//! place all of this happens.

mod local;
mod membarrier;
mod mprotect;
mod signal;

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) use signal::this_thread_ack;

use crate::config::Strategy;
use crate::registry::Registry;
use crate::Error;

impl Strategy {
    /// Whether this strategy works in this process (performs its one-time
    /// setup: membarrier registration, signal handler installation).
    pub fn is_available(self) -> bool {
        prepare(self).is_ok()
    }
}

impl FromStr for Strategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Strategy, Error> {
        Strategy::ALL
            .into_iter()
            .find(|st| st.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| Error::UnknownStrategy(s.to_string()))
    }
}

/// Name of the environment variable that forces a strategy.
pub const SYNC_ENV: &str = "JITVM_SYNC";

/// Chooses a strategy: `forced` (the value of `JITVM_SYNC`, if set) must parse
/// and work; otherwise membarrier if it works, else signal. `mprotect` (kernel
/// implementation details) and `none` (no serialization) are only ever used
/// when asked for by name.
pub fn select_strategy(forced: Option<&str>) -> Result<Strategy, Error> {
    if let Some(s) = forced {
        let st: Strategy = s.parse()?;
        prepare(st)?;
        return Ok(st);
    }
    match prepare(Strategy::Membarrier) {
        Ok(()) => Ok(Strategy::Membarrier),
        Err(e) => {
            log::debug!("{e}");
            prepare(Strategy::Signal).map(|()| Strategy::Signal)
        }
    }
}

/// One-time, process-global setup of a strategy.
pub(crate) fn prepare(st: Strategy) -> Result<(), Error> {
    let unavailable = |reason: String| Error::StrategyUnavailable {
        strategy: st,
        reason,
    };
    match st {
        Strategy::Membarrier => membarrier::register().map_err(unavailable),
        Strategy::Mprotect => match mprotect::refusal() {
            Some(reason) => Err(unavailable(reason)),
            None => Ok(()),
        },
        Strategy::Signal => signal::install().map(|_| ()).map_err(unavailable),
        Strategy::None => Ok(()),
    }
}

/// Why the mprotect strategy would be refused on a machine whose CPUID says
/// `cpuid_invlpgb` and whose `/proc/cpuinfo` reads `cpuinfo` (`None`: it
/// would be accepted). For tests of the refusal on machines without INVLPGB.
#[doc(hidden)]
pub fn mprotect_refusal_for(cpuid_invlpgb: bool, cpuinfo: &str) -> Option<String> {
    mprotect::refusal_for(cpuid_invlpgb, cpuinfo)
}

/// One bare `membarrier(PRIVATE_EXPEDITED_SYNC_CORE)`, for comparison in
/// benchmarks.
#[doc(hidden)]
pub fn bare_membarrier_sync_core() -> Result<(), Error> {
    let fail = |reason: String| Error::StrategyUnavailable {
        strategy: Strategy::Membarrier,
        reason,
    };
    membarrier::register().map_err(fail)?;
    membarrier::sync_core().map_err(fail)
}

/// A strategy plus its per-runtime state.
pub(crate) struct Serializer {
    strategy: Strategy,
    page: Option<mprotect::MprotectPage>,
    signo: libc::c_int,
    count: AtomicU64,
    /// Test hook: the serialization that makes `attempts` reach this value
    /// fails (0: none does).
    fail_at: AtomicU64,
    attempts: AtomicU64,
}

impl Serializer {
    pub(crate) fn new(strategy: Strategy) -> Result<Serializer, Error> {
        prepare(strategy)?;
        let page = match strategy {
            Strategy::Mprotect => Some(mprotect::MprotectPage::new()?),
            _ => None,
        };
        let signo = match strategy {
            Strategy::Signal => signal::install().unwrap_or(0),
            _ => 0,
        };
        if strategy == Strategy::None {
            log::warn!("jitvm-runtime: sync strategy `none` performs NO core serialization; measurement only, cross-modified code may run stale");
        }
        Ok(Serializer {
            strategy,
            page,
            signo,
            count: AtomicU64::new(0),
            fail_at: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
        })
    }

    pub(crate) fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Serializations performed so far (none for `none`).
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Makes the `n`-th serialization from now fail (1: the next one).
    pub(crate) fn fail_after(&self, n: u64) {
        let now = self.attempts.load(Ordering::Relaxed);
        self.fail_at.store(now + n, Ordering::Relaxed);
    }

    /// Makes every registered thread (and, for membarrier and mprotect, every
    /// running thread of the process) execute a core-serializing instruction
    /// before it next executes user code, and the caller too. Also a full
    /// memory barrier on every such thread. Returns how many serializations
    /// that was: 1, or 0 for `none`.
    pub(crate) fn serialize_all(&self, registry: &Registry) -> Result<u32, Error> {
        let attempt = self.attempts.fetch_add(1, Ordering::Relaxed) + 1;
        let fail = |reason: String| Error::Serialization {
            strategy: self.strategy,
            published: false,
            reason,
        };
        if self.fail_at.load(Ordering::Relaxed) == attempt {
            return Err(fail("failure injected by a test".into()));
        }
        match self.strategy {
            Strategy::Membarrier => membarrier::sync_core().map_err(fail)?,
            Strategy::Mprotect => match &self.page {
                Some(p) => p.shootdown().map_err(fail)?,
                None => return Err(fail("no mprotect page".into())),
            },
            Strategy::Signal => signal::signal_all(registry, self.signo).map_err(fail)?,
            Strategy::None => return Ok(0),
        }
        local::serialize_self();
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names() {
        for st in Strategy::ALL {
            assert_eq!(st.name().parse::<Strategy>().unwrap(), st);
        }
        assert_eq!(
            " MemBarrier ".parse::<Strategy>().unwrap(),
            Strategy::Membarrier
        );
        assert!(matches!(
            "bogus".parse::<Strategy>(),
            Err(Error::UnknownStrategy(_))
        ));
    }

    #[test]
    fn selection() {
        let auto = select_strategy(None).unwrap();
        assert!(matches!(auto, Strategy::Membarrier | Strategy::Signal));
        if Strategy::Membarrier.is_available() {
            assert_eq!(auto, Strategy::Membarrier);
        }
        assert_eq!(select_strategy(Some("signal")).unwrap(), Strategy::Signal);
        assert_eq!(select_strategy(Some("none")).unwrap(), Strategy::None);
        assert!(select_strategy(Some("nope")).is_err());
    }
}
