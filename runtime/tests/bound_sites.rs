//! Direct calls bound to a dispatch slot (`jitvm_runtime::bound_sites`): a bound site goes
//! where its slot goes after every commit, while threads call through it, also in retired
//! code a stack may still run; bindings go with their reclaimed blobs; misuse is refused.
#![cfg(target_arch = "x86_64")]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{call, rel32_caller, runtime, version};
use jitvm_runtime::live_patch::trap_counts;
use jitvm_runtime::{Blob, Error, Guarantee, Rel32Kind, Rel32Site, Runtime};

/// Versions 1 and 2, the slot on version 1, and a caller whose site is bound to the slot.
fn publish_bound(
    rt: &Runtime,
) -> (
    Blob,
    [Blob; 2],
    Rel32Site,
    std::sync::Arc<jitvm_runtime::DispatchSlot>,
) {
    let slot = rt.dispatch_slot(0);
    let mut tx = rt.transaction();
    let one = tx.stage(&version(1), 16).unwrap();
    let two = tx.stage(&version(2), 16).unwrap();
    let (code, at) = rel32_caller();
    let caller = tx.stage(&code, 16).unwrap();
    let site = rt.rel32_site(caller, at, Rel32Kind::Call).unwrap();
    tx.set_dispatch(&slot, one.addr()).unwrap();
    tx.bind_rel32(site, &slot).unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    (caller, [one, two], site, slot)
}

/// The target of the rel32 instruction at `site` as the RX view holds it.
fn target_in_memory(site: usize) -> usize {
    // SAFETY: `site` is inside a blob of the runtime's RX view, which stays mapped.
    let disp = unsafe { std::ptr::read_volatile((site + 1) as *const [u8; 4]) };
    (site + 5).wrapping_add(i32::from_le_bytes(disp) as isize as usize)
}

#[test]
fn a_bound_site_is_written_with_its_slot_and_follows_every_move_while_four_threads_call_it() {
    let rt = runtime(true);
    let (caller, [one, two], site, slot) = publish_bound(&rt);
    assert_eq!(rt.rel32_target(site).unwrap(), one.addr());
    assert_eq!(rt.bound_site_count(), 1);
    let stop = AtomicBool::new(false);
    let wrong = AtomicU64::new(0);
    let traps_before = trap_counts().emulated;
    let me = rt.register_thread().unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let me = rt.register_thread().unwrap();
                me.enter(|scope| {
                    while !stop.load(Ordering::Relaxed) {
                        let r = call(scope, caller.addr());
                        if r != 1 && r != 2 {
                            wrong.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            });
        }
        for k in 0..20_000 {
            let (target, value) = if k % 2 == 0 { (two, 2) } else { (one, 1) };
            let mut tx = rt.transaction();
            tx.set_dispatch(&slot, target.addr()).unwrap();
            let info = tx.commit(Guarantee::Strong).unwrap();
            assert!(info.serializations >= 3, "a moved bound site: {info:?}");
            assert_eq!(rt.rel32_target(site).unwrap(), slot.get());
            assert_eq!(me.enter(|scope| call(scope, caller.addr())), value);
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert_eq!(wrong.load(Ordering::Relaxed), 0, "a third value");
    eprintln!("{:?} traps (before: {traps_before})", trap_counts());
}

#[test]
fn a_commit_that_leaves_a_slot_where_it_is_does_not_patch_its_sites() {
    let rt = runtime(false);
    let (_, [one, _], _, slot) = publish_bound(&rt);
    let mut tx = rt.transaction();
    tx.set_dispatch(&slot, one.addr()).unwrap();
    let info = tx.commit(Guarantee::Eventual).unwrap();
    assert_eq!(info.serializations, 1, "{info:?}");
}

#[test]
fn a_bound_site_in_retired_code_still_follows_its_slot_until_the_code_is_reclaimed() {
    let rt = runtime(true);
    let (caller, [one, two], site, slot) = publish_bound(&rt);
    // A thread that has entered and not left holds the retired caller back.
    let entered = AtomicBool::new(false);
    let leave = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let me = rt.register_thread().unwrap();
            me.enter(|_| {
                entered.store(true, Ordering::Release);
                while !leave.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
            });
        });
        while !entered.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        let mut tx = rt.transaction();
        tx.retire(caller).unwrap();
        tx.commit(Guarantee::Strong).unwrap();
        let mut tx = rt.transaction();
        tx.set_dispatch(&slot, two.addr()).unwrap();
        tx.retire(one).unwrap();
        tx.commit(Guarantee::Strong).unwrap();
        assert_eq!(
            target_in_memory(site.addr()),
            two.addr(),
            "the retired caller must not call the retired version"
        );
        assert_eq!(rt.bound_site_count(), 1);
        leave.store(true, Ordering::Release);
    });
    rt.synchronize(Duration::from_secs(10)).unwrap();
    let mut tx = rt.transaction();
    tx.set_dispatch(&slot, two.addr()).unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    assert_eq!(rt.bound_site_count(), 0, "reclaimed with its blob");
}

#[test]
fn binding_a_published_site_a_site_twice_or_another_runtimes_slot_is_refused() {
    let rt = runtime(false);
    let (_, [one, _], site, slot) = publish_bound(&rt);
    let other = runtime(false);
    let foreign = other.dispatch_slot(0);
    let mut tx = rt.transaction();
    assert!(matches!(
        tx.bind_rel32(site, &slot),
        Err(Error::InvalidSite(_))
    ));
    let (code, at) = rel32_caller();
    let caller = tx.stage(&code, 16).unwrap();
    let fresh = rt.rel32_site(caller, at, Rel32Kind::Call).unwrap();
    assert!(matches!(
        tx.bind_rel32(fresh, &foreign),
        Err(Error::ForeignSlot)
    ));
    tx.bind_rel32(fresh, &slot).unwrap();
    assert!(matches!(
        tx.bind_rel32(fresh, &slot),
        Err(Error::InvalidSite(_))
    ));
    tx.commit(Guarantee::Strong).unwrap();
    assert_eq!(rt.rel32_target(fresh).unwrap(), one.addr());
    assert_eq!(rt.bound_site_count(), 2);
}

#[test]
fn a_bound_site_is_not_patched_to_anything_but_its_slot() {
    let rt = runtime(false);
    let (caller, [one, two], site, _slot) = publish_bound(&rt);
    let before = target_in_memory(site.addr());
    let mut tx = rt.transaction();
    tx.patch_live_rel32(site, two.addr()).unwrap();
    assert!(matches!(
        tx.commit(Guarantee::Strong),
        Err(Error::InvalidSite(_))
    ));
    assert_eq!(before, one.addr());
    assert_eq!(target_in_memory(site.addr()), one.addr());
    let me = rt.register_thread().unwrap();
    assert_eq!(me.enter(|scope| call(scope, caller.addr())), 1);
}

#[test]
fn a_slot_cannot_leave_its_bound_sites_on_code_the_commit_retires() {
    let rt = runtime(false);
    let (_, [one, _], site, _slot) = publish_bound(&rt);
    let mut tx = rt.transaction();
    tx.retire(one).unwrap();
    assert!(matches!(
        tx.commit(Guarantee::Strong),
        Err(Error::SlotTargetsRetired { .. })
    ));
    assert_eq!(target_in_memory(site.addr()), one.addr());
}
