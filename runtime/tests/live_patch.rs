//! Live rel32 patching (`jitvm_runtime::live_patch`): sites that threads are running are
//! rewritten by the `int3` protocol, the SIGTRAP handler's emulation is really taken and
//! right, serialization failures leave no unknown `int3`, and misuse writes nothing.
#![cfg(target_arch = "x86_64")]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{call, rel32_caller, runtime};
use dynasm::dynasm;
use dynasmrt::{DynasmApi, DynasmLabelApi};
use jitvm_runtime::live_patch::{trap_counts, INT3};
use jitvm_runtime::{Blob, Error, Guarantee, Rel32Kind, Rel32Site, Runtime};

/// `k` when entered with the stack as a `call` leaves it (rsp = 8 mod 16), else 99.
fn aligned_version(k: i64) -> Vec<u8> {
    let mut ops = dynasmrt::VecAssembler::<dynasmrt::x64::X64Relocation>::new(0);
    dynasm!(ops
        ; .arch x64
        ; mov rax, rsp
        ; and rax, 15
        ; cmp rax, 8
        ; jne >bad
        ; mov rax, QWORD k
        ; ret
        ; bad:
        ; mov rax, 99
        ; ret
    );
    ops.finalize().unwrap()
}

/// Versions 1 and 2 and a caller whose site calls version 1, published.
fn publish_site(rt: &Runtime) -> (Blob, [Blob; 2], Rel32Site) {
    let mut tx = rt.transaction();
    let one = tx.stage(&aligned_version(1), 16).unwrap();
    let two = tx.stage(&aligned_version(2), 16).unwrap();
    let (code, at) = rel32_caller();
    let caller = tx.stage(&code, 16).unwrap();
    let site = rt.rel32_site(caller, at, Rel32Kind::Call).unwrap();
    tx.patch_rel32(site, one.addr()).unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    (caller, [one, two], site)
}

fn rx_bytes(b: Blob) -> Vec<u8> {
    // SAFETY: the blob lies inside the runtime's readable RX view, mapped while it lives.
    unsafe { std::slice::from_raw_parts(b.addr() as *const u8, b.len()) }.to_vec()
}

#[test]
fn a_site_patched_live_100000_times_while_eight_threads_call_through_it_returns_only_the_old_or_the_new_result(
) {
    let rt = runtime(true);
    let (caller, [one, two], site) = publish_site(&rt);
    let stop = AtomicBool::new(false);
    let (calls, wrong) = (AtomicU64::new(0), AtomicU64::new(0));
    let traps_before = trap_counts().emulated;
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let me = rt.register_thread().unwrap();
                me.enter(|scope| {
                    while !stop.load(Ordering::Relaxed) {
                        let r = call(scope, caller.addr());
                        calls.fetch_add(1, Ordering::Relaxed);
                        if r != 1 && r != 2 {
                            wrong.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            });
        }
        // Keep patching until the handler has been seen at work (it almost always has
        // been long before), and at least 100,000 times.
        let mut patches = 0u64;
        while patches < 100_000 || trap_counts().emulated == traps_before {
            let target = if patches % 2 == 0 { two } else { one };
            let mut tx = rt.transaction();
            tx.patch_live_rel32(site, target.addr()).unwrap();
            tx.commit(Guarantee::Strong).unwrap();
            assert_eq!(rt.rel32_target(site).unwrap(), target.addr());
            patches += 1;
            assert!(patches < 10_000_000, "no thread ever hit a site's int3");
        }
        stop.store(true, Ordering::Relaxed);
        eprintln!(
            "{patches} live patches, {} calls, {:?} traps",
            calls.load(Ordering::Relaxed),
            trap_counts()
        );
    });
    assert_eq!(
        wrong.load(Ordering::Relaxed),
        0,
        "a call returned a third value"
    );
    assert!(trap_counts().emulated > traps_before);
    assert_eq!(rx_bytes(caller)[site.addr() - caller.addr()], 0xE8);
}

#[test]
fn after_a_strong_live_patch_returns_every_call_runs_the_new_target() {
    let rt = runtime(false);
    let (caller, [one, two], site) = publish_site(&rt);
    let me = rt.register_thread().unwrap();
    for k in 0..200 {
        let (target, value) = if k % 2 == 0 { (two, 2) } else { (one, 1) };
        let mut tx = rt.transaction();
        tx.patch_live_rel32(site, target.addr()).unwrap();
        let info = tx.commit(Guarantee::Strong).unwrap();
        assert!(info.serializations >= 3, "three serializations: {info:?}");
        assert_eq!(me.enter(|scope| call(scope, caller.addr())), value);
    }
}

#[test]
fn a_failed_first_serialization_puts_the_first_byte_back_and_changes_nothing() {
    let rt = runtime(false);
    let (caller, [one, two], site) = publish_site(&rt);
    let before = rx_bytes(caller);
    let mut tx = rt.transaction();
    tx.patch_live_rel32(site, two.addr()).unwrap();
    rt.fail_serialization_after(1);
    let err = tx.commit(Guarantee::Strong).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Serialization {
                published: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(rx_bytes(caller), before);
    assert_eq!(rt.rel32_target(site).unwrap(), one.addr());
    let me = rt.register_thread().unwrap();
    assert_eq!(me.enter(|scope| call(scope, caller.addr())), 1);
}

#[test]
fn a_failed_second_serialization_leaves_a_breakpoint_the_handler_emulates_until_the_next_patch() {
    let rt = runtime(false);
    let (caller, [one, two], site) = publish_site(&rt);
    let mut tx = rt.transaction();
    tx.patch_live_rel32(site, two.addr()).unwrap();
    rt.fail_serialization_after(2);
    let err = tx.commit(Guarantee::Strong).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Serialization {
                published: true,
                ..
            }
        ),
        "{err:?}"
    );
    let offset = site.addr() - caller.addr();
    assert_eq!(rx_bytes(caller)[offset], INT3, "the site is left as int3");
    let me = rt.register_thread().unwrap();
    let traps = trap_counts().emulated;
    assert_eq!(
        me.enter(|scope| call(scope, caller.addr())),
        2,
        "emulated, aligned"
    );
    assert!(trap_counts().emulated > traps, "the handler did it");
    // A later patch of the same site finishes the protocol.
    let mut tx = rt.transaction();
    tx.patch_live_rel32(site, one.addr()).unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    assert_eq!(rx_bytes(caller)[offset], 0xE8);
    assert_eq!(me.enter(|scope| call(scope, caller.addr())), 1);
}

#[test]
fn live_patches_of_unpublished_retired_or_stale_sites_or_to_retired_targets_are_refused_and_write_nothing(
) {
    let rt = runtime(false);
    let (caller, [one, two], site) = publish_site(&rt);
    let before = rx_bytes(caller);
    let mut tx = rt.transaction();
    // A site in a blob this transaction stages: patch_rel32's job.
    let (code, at) = rel32_caller();
    let staged = tx.stage(&code, 16).unwrap();
    let staged_site = rt.rel32_site(staged, at, Rel32Kind::Call).unwrap();
    assert!(matches!(
        tx.patch_live_rel32(staged_site, one.addr()),
        Err(Error::InvalidSite(_))
    ));
    // The same site twice.
    tx.patch_live_rel32(site, two.addr()).unwrap();
    assert!(matches!(
        tx.patch_live_rel32(site, one.addr()),
        Err(Error::InvalidSite(_))
    ));
    drop(tx);
    // A target this transaction retires, and then a retired target.
    let mut tx = rt.transaction();
    tx.retire(two).unwrap();
    assert!(matches!(
        tx.patch_live_rel32(site, two.addr()),
        Err(Error::InvalidTarget(_))
    ));
    tx.commit(Guarantee::Strong).unwrap();
    let mut tx = rt.transaction();
    assert!(matches!(
        tx.patch_live_rel32(site, two.addr()),
        Err(Error::InvalidTarget(_))
    ));
    drop(tx);
    assert_eq!(rx_bytes(caller), before, "nothing written");
    // A site whose blob is retired, then reclaimed and its address reused.
    let mut tx = rt.transaction();
    tx.retire(caller).unwrap();
    assert!(matches!(
        tx.patch_live_rel32(site, one.addr()),
        Err(Error::InvalidSite(_))
    ));
    tx.commit(Guarantee::Strong).unwrap();
    rt.reclaim();
    let mut tx = rt.transaction();
    assert!(matches!(
        tx.patch_live_rel32(site, one.addr()),
        Err(Error::InvalidSite(_))
    ));
    let (code, _) = rel32_caller();
    let reused = tx.stage(&code, 16).unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    assert_eq!(reused.addr(), caller.addr(), "the address was reused");
    let mut tx = rt.transaction();
    assert!(matches!(
        tx.patch_live_rel32(site, one.addr()),
        Err(Error::InvalidSite(_))
    ));
    drop(tx);
    assert_eq!(rx_bytes(reused), code, "the stale handle wrote nothing");
}
