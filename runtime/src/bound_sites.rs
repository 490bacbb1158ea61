//! Direct calls that mirror a dispatch slot (x86-64): a `call rel32`/`jmp rel32` site
//! *bound* to a [`DispatchSlot`] always transfers where the slot points.
//!
//! A JIT that calls a callee directly (no slot load, no stub) still has to follow the
//! callee's slot when it changes (a tier-up, a hot swap). It binds each such site to the
//! slot when it stages the site's blob ([`crate::Transaction::bind_rel32`]); from then on the
//! runtime keeps the rule
//!
//! > **a bound site's target is its slot's target**, after every commit,
//!
//! by writing the site in the commit that publishes its blob (nobody runs it yet), and by
//! patching it live ([`crate::live_patch`], three serializations) in every later commit that
//! moves its slot. So every check the runtime makes of slots holds for bound sites too: no
//! commit may retire what a slot still targets (`Error::SlotTargetsRetired`), so no bound
//! site targets retired code either, and `Guarantee::Strong` covers a bound site as it covers
//! `call qword [slot]`.
//!
//! A site stays bound while its blob may still run: live, and also retired but not yet
//! reclaimed (a thread whose stack pins retired code may call out of it, and must reach the
//! slot's new target, never the freed old one). Bindings of reclaimed blobs are dropped at the
//! next commit (a site's blob handle knows when its memory was reclaimed). At most
//! [`MAX_BOUND_SITES`] sites are bound at once, so that one commit can always patch every
//! site of every slot it moves; a JIT leaves further call sites on the slot.

use std::collections::HashMap;

use crate::code_memory::{CodeMemory, State};
use crate::live_patch::MAX_LIVE_SITES;
use crate::patch::Rel32Site;

/// The most sites bound at once, in the whole runtime: a commit that moves every slot must
/// still fit the live-patching table (the rest of the table is left for
/// [`crate::Transaction::patch_live_rel32`]).
pub const MAX_BOUND_SITES: usize = MAX_LIVE_SITES * 3 / 4;

/// The bound sites of one runtime, by slot address. Changed only by commits, under the
/// commit lock.
#[derive(Default)]
pub(crate) struct BoundSites {
    by_slot: HashMap<usize, Vec<Rel32Site>>,
    count: usize,
}

impl BoundSites {
    /// Drops the sites whose blob was reclaimed (its handle is stale, or it is quarantined
    /// in poison mode): nothing runs them any more.
    pub(crate) fn prune(&mut self, mem: &CodeMemory) {
        let mut count = 0;
        self.by_slot.retain(|_, sites| {
            sites.retain(|s| matches!(mem.state(s.blob), Some(State::Live | State::Retired)));
            count += sites.len();
            !sites.is_empty()
        });
        self.count = count;
    }

    /// How many sites are bound.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// The sites bound to the slot at `slot`.
    pub(crate) fn of_slot(&self, slot: usize) -> &[Rel32Site] {
        self.by_slot.get(&slot).map_or(&[], Vec::as_slice)
    }

    /// Whether a site at `addr` is bound.
    pub(crate) fn contains(&self, addr: usize) -> bool {
        self.by_slot.values().flatten().any(|s| s.addr() == addr)
    }

    /// Binds `site` to the slot at `slot` (published by the commit that holds the lock).
    pub(crate) fn bind(&mut self, slot: usize, site: Rel32Site) {
        self.by_slot.entry(slot).or_default().push(site);
        self.count += 1;
    }
}
