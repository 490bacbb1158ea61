//! Misuse of the safe API: every stale, foreign or out-of-range input is an
//! error that changes nothing, and a commit that fails half-way leaves the
//! state its documentation promises. No panics.

mod common;

use common::{call, rel32_caller, runtime, version};
use jitvm_runtime::{Error, Guarantee, Rel32Kind, Reloc, RelocKind, Runtime, TRAP_INSTRUCTION};

/// Publishes `code` in its own Strong commit.
fn publish(rt: &Runtime, code: &[u8]) -> jitvm_runtime::Blob {
    let mut tx = rt.transaction();
    let b = tx.stage(code, 16).unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    b
}

/// Retires `b` and reclaims it (no registered threads: at once).
fn retire_and_reclaim(rt: &Runtime, b: jitvm_runtime::Blob) {
    let mut tx = rt.transaction();
    tx.retire(b).unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    rt.reclaim();
    assert_eq!(rt.pending_retirements(), 0);
}

fn rx_bytes(b: jitvm_runtime::Blob) -> Vec<u8> {
    // SAFETY: the blob lies inside the runtime's readable RX view, which stays
    // mapped while the runtime lives.
    unsafe { std::slice::from_raw_parts(b.addr() as *const u8, b.len()) }.to_vec()
}

#[test]
fn a_stale_blob_handle_is_refused_after_its_address_is_reused() {
    let rt = runtime(false);
    let a = publish(&rt, &version(1));
    retire_and_reclaim(&rt, a);
    let b = publish(&rt, &version(1)); // same size: reuses a's bytes
    assert_eq!(b.addr(), a.addr(), "the address was reused");
    let mut tx = rt.transaction();
    assert!(matches!(tx.retire(a), Err(Error::InvalidBlob)));
    assert!(matches!(tx.set_owner(a, 7), Err(Error::InvalidBlob)));
    assert!(tx.commit(Guarantee::Strong).is_ok());
    assert!(matches!(
        rt.rel32_site(a, 0, Rel32Kind::Call),
        Err(Error::InvalidBlob)
    ));
    // b is untouched: still live, not retired by the stale handle.
    let info = rt.lookup(b.addr()).unwrap();
    assert_eq!(info.blob, b);
    assert!(!info.retired);
    assert_eq!(rt.stats().bytes_retired, 0);
}

#[test]
fn a_stale_rel32_site_is_refused_and_writes_nothing_after_its_blob_is_reused() {
    let rt = runtime(false);
    let (code, at) = rel32_caller();
    let mut tx = rt.transaction();
    let c = tx.stage(&code, 16).unwrap();
    let site = rt.rel32_site(c, at, Rel32Kind::Call).unwrap();
    let target = tx.stage(&version(5), 16).unwrap();
    tx.patch_rel32(site, target.addr()).unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    assert_eq!(rt.rel32_target(site).unwrap(), target.addr());
    retire_and_reclaim(&rt, c);
    // New, unrelated code of the same size at the same address.
    let mut tx = rt.transaction();
    let filler = vec![0x90u8; code.len()];
    let reuse = tx.stage(&filler, 16).unwrap();
    assert_eq!(reuse.addr(), c.addr());
    assert!(matches!(
        tx.patch_rel32(site, target.addr()),
        Err(Error::InvalidSite(_))
    ));
    tx.commit(Guarantee::Strong).unwrap();
    assert_eq!(rx_bytes(reuse), filler, "the stale site wrote nothing");
    assert!(rt.rel32_target(site).is_err());
}

#[test]
fn retiring_a_blob_twice_is_refused_and_changes_nothing() {
    let rt = runtime(false);
    let a = publish(&rt, &version(1));
    let mut tx = rt.transaction();
    tx.retire(a).unwrap();
    assert!(matches!(tx.retire(a), Err(Error::InvalidBlob)));
    tx.commit(Guarantee::Strong).unwrap();
    let _keep = rt.register_thread().unwrap(); // keeps `a` retired, not reclaimed
    let mut tx = rt.transaction();
    assert!(matches!(tx.retire(a), Err(Error::InvalidBlob)));
    let staged = tx.stage(&version(2), 16).unwrap();
    assert!(
        matches!(tx.retire(staged), Err(Error::InvalidBlob)),
        "staged, not live"
    );
}

#[test]
fn a_blob_of_another_runtime_is_refused() {
    let rt1 = runtime(false);
    let rt2 = runtime(false);
    let a = publish(&rt1, &version(1));
    let mut tx = rt2.transaction();
    assert!(matches!(tx.retire(a), Err(Error::InvalidBlob)));
    assert!(rt2.rel32_site(a, 0, Rel32Kind::Call).is_err());
    assert!(rt2.lookup(a.addr()).is_none());
}

#[test]
fn huge_sizes_and_alignments_are_invalid_arguments() {
    let rt = runtime(false);
    let mut tx = rt.transaction();
    let before = rt.stats();
    let invalid =
        |r: Result<jitvm_runtime::Blob, Error>| matches!(r, Err(Error::InvalidArgument(_)));
    assert!(invalid(tx.stage_with(usize::MAX, 16, |_, _| {})));
    assert!(invalid(tx.stage_with(usize::MAX - 15, 16, |_, _| {})));
    assert!(invalid(tx.stage_with(1 << 40, 16, |_, _| {})));
    assert!(invalid(tx.stage(&[0xC3], 1 << 63)));
    assert!(invalid(tx.stage(&[0xC3], usize::MAX)));
    assert!(invalid(tx.stage(&[0xC3], 0)));
    assert!(invalid(tx.stage(&[0xC3], 24)));
    assert!(invalid(tx.stage(&[0xC3], 1 << 40)));
    assert!(matches!(
        tx.reserve(usize::MAX, 16),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(tx.reserve(16, 3), Err(Error::InvalidArgument(_))));
    assert_eq!(rt.stats().bytes_live, before.bytes_live);
}

#[test]
fn rel32_site_offsets_near_usize_max_are_invalid_sites() {
    let rt = runtime(false);
    let mut tx = rt.transaction();
    let (code, at) = rel32_caller();
    let b = tx.stage(&code, 16).unwrap();
    for off in [
        usize::MAX,
        usize::MAX - 4,
        usize::MAX - 3,
        code.len() - 4,
        code.len(),
    ] {
        assert!(
            matches!(
                rt.rel32_site(b, off, Rel32Kind::Call),
                Err(Error::InvalidSite(_))
            ),
            "offset {off}"
        );
    }
    assert!(rt.rel32_site(b, at, Rel32Kind::Call).is_ok());
    assert!(
        rt.rel32_site(b, at, Rel32Kind::Jmp).is_err(),
        "wrong opcode"
    );
    assert!(
        rt.rel32_site(b, at - 1, Rel32Kind::Call).is_err(),
        "misaligned"
    );
}

#[test]
fn relocations_outside_the_code_or_out_of_range_are_errors() {
    let rt = runtime(false);
    let code = [0u8; 16];
    let r = |offset, kind, target, addend| Reloc {
        offset,
        kind,
        target,
        addend,
    };
    let mut tx = rt.transaction();
    let before = rt.stats().bytes_live;
    for bad in [
        r(usize::MAX, RelocKind::Abs8, 0, 0),
        r(usize::MAX - 3, RelocKind::PcRel4, 0, 0),
        r(9, RelocKind::Abs8, 0, 0),
        r(13, RelocKind::PcRel4, 0, 0),
        r(0, RelocKind::Abs8, usize::MAX, 1),
        r(0, RelocKind::Abs8, 0, -1),
    ] {
        assert!(
            matches!(
                tx.stage_relocated(&code, 16, &[bad]),
                Err(Error::InvalidArgument(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        tx.stage_relocated(&code, 16, &[r(0, RelocKind::PcRel4, 1 << 40, 0)]),
        Err(Error::OutOfRange)
    ));
    assert!(matches!(
        tx.stage_relocated(&code, 16, &[r(0, RelocKind::PcRel4, 0x1000, i64::MIN)]),
        Err(Error::OutOfRange)
    ));
    assert_eq!(rt.stats().bytes_live, before, "nothing staged on error");
}

#[test]
fn a_failed_first_serialization_leaves_every_slot_and_blob_as_it_was() {
    let rt = runtime(false);
    let me = rt.register_thread().unwrap();
    let slot = rt.dispatch_slot(0);
    let mut tx = rt.transaction();
    let v1 = tx.stage(&version(1), 16).unwrap();
    tx.set_dispatch(&slot, v1.addr()).unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    let before = rt.stats();

    let mut tx = rt.transaction();
    let v2 = tx.stage(&version(2), 16).unwrap();
    tx.set_dispatch(&slot, v2.addr()).unwrap();
    tx.retire(v1).unwrap();
    rt.fail_serialization_after(1);
    match tx.commit(Guarantee::Strong) {
        Err(Error::Serialization {
            published: false, ..
        }) => {}
        other => panic!("expected an unpublished serialization failure: {other:?}"),
    }
    assert_eq!(slot.get(), v1.addr(), "no slot changed");
    assert_eq!(rt.pending_retirements(), 0, "no retirement recorded");
    assert!(!rt.lookup(v1.addr()).unwrap().retired);
    assert!(rt.lookup(v2.addr()).is_none(), "the staged blob was freed");
    assert_eq!(rt.stats().bytes_live, before.bytes_live);
    assert_eq!(me.enter(|s| call(s, slot.get())), 1);

    // Retrying with a new transaction works.
    let mut tx = rt.transaction();
    let v2 = tx.stage(&version(2), 16).unwrap();
    tx.set_dispatch(&slot, v2.addr()).unwrap();
    tx.retire(v1).unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    assert_eq!(me.enter(|s| call(s, slot.get())), 2);
}

#[test]
fn a_failed_second_serialization_publishes_but_keeps_the_old_code_until_a_later_serialization() {
    let rt = runtime(false);
    let me = rt.register_thread().unwrap();
    let slot = rt.dispatch_slot(0);
    let mut tx = rt.transaction();
    let v1 = tx.stage(&version(1), 16).unwrap();
    tx.set_dispatch(&slot, v1.addr()).unwrap();
    tx.commit(Guarantee::Strong).unwrap();

    let mut tx = rt.transaction();
    let v2 = tx.stage(&version(2), 16).unwrap();
    tx.set_dispatch(&slot, v2.addr()).unwrap();
    tx.retire(v1).unwrap();
    rt.fail_serialization_after(2);
    match tx.commit(Guarantee::Strong) {
        Err(Error::Serialization {
            published: true, ..
        }) => {}
        other => panic!("expected a published serialization failure: {other:?}"),
    }
    assert_eq!(slot.get(), v2.addr(), "steps 1-5 happened");
    assert_eq!(me.enter(|s| call(s, slot.get())), 2);
    me.quiescent();
    assert_eq!(rt.reclaim(), 0, "kept until a serialization succeeds");
    assert_eq!(rt.pending_retirements(), 1);
    // An empty Strong commit restores the promise.
    let info = rt.transaction().commit(Guarantee::Strong).unwrap();
    assert_eq!(info.serializations, 2);
    assert_eq!(rt.pending_retirements(), 1, "waits for this thread now");
    me.quiescent();
    assert_eq!(rt.pending_retirements(), 0, "its report reclaimed it");
}

#[test]
fn a_dispatch_target_inside_retired_or_unpublished_code_is_refused() {
    let rt = runtime(false);
    let _me = rt.register_thread().unwrap(); // keeps retired blobs retired
    let slot = rt.dispatch_slot(0);
    let live = publish(&rt, &version(1));
    let old = publish(&rt, &version(2));
    let mut tx = rt.transaction();
    tx.retire(old).unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    let mut tx = rt.transaction();
    // Retired in an earlier transaction: start or inside.
    assert!(matches!(
        tx.set_dispatch(&slot, old.addr()),
        Err(Error::InvalidTarget(_))
    ));
    assert!(matches!(
        tx.set_dispatch(&slot, old.addr() + 3),
        Err(Error::InvalidTarget(_))
    ));
    // Free memory of the region.
    let free = rt.code_range().end - 64;
    assert!(matches!(
        tx.set_dispatch(&slot, free),
        Err(Error::InvalidTarget(_))
    ));
    // Retired in this transaction, whichever order.
    tx.retire(live).unwrap();
    assert!(matches!(
        tx.set_dispatch(&slot, live.addr()),
        Err(Error::InvalidTarget(_))
    ));
    drop(tx);
    let mut tx = rt.transaction();
    tx.set_dispatch(&slot, live.addr()).unwrap();
    tx.retire(live).unwrap();
    assert!(matches!(
        tx.commit(Guarantee::Strong),
        Err(Error::InvalidTarget(_))
    ));
    assert_eq!(slot.get(), 0, "the failed commit changed nothing");
    assert!(!rt.lookup(live.addr()).unwrap().retired);
    // Another transaction's staged blob is not reachable either.
    let mut other = rt.transaction();
    let foreign = other.stage(&version(3), 16).unwrap();
    let mut tx = rt.transaction();
    assert!(tx.set_dispatch(&slot, foreign.addr()).is_err());
    // Allowed: a live blob (start or inside), this transaction's staged
    // blob, and anything outside the region (a Rust function, a heap header).
    tx.set_dispatch(&slot, live.addr()).unwrap();
    tx.set_dispatch(&slot, live.addr() + 2).unwrap();
    let mine = tx.stage(&version(4), 16).unwrap();
    tx.set_dispatch(&slot, mine.addr()).unwrap();
    let header = Box::new(0u64);
    tx.set_dispatch(&slot, &*header as *const u64 as usize)
        .unwrap();
    tx.set_dispatch(&slot, mine.addr()).unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    assert_eq!(slot.get(), mine.addr());
}

#[test]
fn a_published_rel32_site_cannot_be_patched() {
    let rt = runtime(false);
    let (code, at) = rel32_caller();
    let mut tx = rt.transaction();
    let c = tx.stage(&code, 16).unwrap();
    let v = tx.stage(&version(1), 16).unwrap();
    let site = rt.rel32_site(c, at, Rel32Kind::Call).unwrap();
    tx.patch_rel32(site, v.addr()).unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    let bytes = rx_bytes(c);
    let mut tx = rt.transaction();
    let v2 = tx.stage(&version(2), 16).unwrap();
    assert!(matches!(
        tx.patch_rel32(site, v2.addr()),
        Err(Error::InvalidSite(_))
    ));
    tx.commit(Guarantee::Strong).unwrap();
    assert_eq!(rx_bytes(c), bytes);
    assert_eq!(rt.rel32_target(site).unwrap(), v.addr());
}

#[test]
fn registering_a_thread_twice_is_an_error_not_a_panic() {
    let rt = runtime(false);
    let other = runtime(false);
    let h = rt.register_thread().unwrap();
    assert!(matches!(
        rt.register_thread(),
        Err(Error::AlreadyRegistered)
    ));
    assert!(matches!(
        other.register_thread(),
        Err(Error::AlreadyRegistered)
    ));
    assert_eq!(rt.registered_threads(), 1);
    drop(h);
    assert_eq!(rt.registered_threads(), 0);
    let h = other.register_thread().unwrap();
    assert_eq!(other.registered_threads(), 1);
    drop(h);
}

#[test]
fn an_unfinished_staging_frees_its_memory_and_finish_keeps_only_what_was_used() {
    let rt = runtime(true);
    let slot = rt.dispatch_slot(0);
    let before = rt.stats().bytes_live;
    let mut tx = rt.transaction();
    {
        let mut s = tx.reserve(4096, 16).unwrap();
        assert_eq!(s.capacity(), 4096);
        assert!(s
            .buf()
            .iter()
            .enumerate()
            .all(|(i, &b)| b == TRAP_INSTRUCTION[i % TRAP_INSTRUCTION.len()]));
    }
    assert_eq!(rt.stats().bytes_live, before, "dropped unfinished: freed");
    let s = tx.reserve(64, 16).unwrap();
    assert!(matches!(s.finish(65), Err(Error::InvalidArgument(_))));
    assert_eq!(rt.stats().bytes_live, before, "a failed finish frees it");
    let mut s = tx.reserve(4096, 16).unwrap();
    let code = version(9);
    s.buf()[..code.len()].copy_from_slice(&code);
    let at = s.addr();
    let b = s.finish(code.len()).unwrap();
    assert_eq!(b.addr(), at);
    assert_eq!(b.len(), code.len());
    assert_eq!(rt.stats().bytes_live, before + code.len().div_ceil(16) * 16);
    tx.set_dispatch(&slot, b.addr()).unwrap();
    tx.set_owner(b, 99).unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    let me = rt.register_thread().unwrap();
    assert_eq!(me.enter(|s| call(s, slot.get())), 9);
    assert_eq!(rt.lookup(b.addr() + 1).unwrap().owner, 99);
}

#[test]
fn staged_relocations_are_applied_at_the_final_address() {
    use dynasm::dynasm;
    use dynasmrt::{x64::X64Relocation, DynasmApi, VecAssembler};
    let rt = runtime(false);
    let me = rt.register_thread().unwrap();
    let mut tx = rt.transaction();
    let callee = tx.stage(&version(42), 16).unwrap();
    // sub rsp, 8; call rel32 (0); add rsp, 8; ret  -- and  mov rax, imm64 (0); ret
    let mut ops = VecAssembler::<X64Relocation>::new(0);
    dynasm!(ops ; .arch x64 ; sub rsp, 8 ; .bytes [0xE8u8, 0, 0, 0, 0] ; add rsp, 8 ; ret);
    let caller = ops.finalize().unwrap();
    let pcrel = Reloc {
        offset: 5,
        kind: RelocKind::PcRel4,
        target: callee.addr(),
        addend: -4,
    };
    let c = tx.stage_relocated(&caller, 16, &[pcrel]).unwrap();
    let mut ops = VecAssembler::<X64Relocation>::new(0);
    dynasm!(ops ; .arch x64 ; mov rax, QWORD 0 ; ret);
    let abs = Reloc {
        offset: 2,
        kind: RelocKind::Abs8,
        target: 1234,
        addend: 5,
    };
    let a = tx
        .stage_relocated(&ops.finalize().unwrap(), 16, &[abs])
        .unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    me.enter(|s| {
        assert_eq!(call(s, c.addr()), 42);
        assert_eq!(call(s, a.addr()), 1239);
    });
}

/// A JIT author who forgets one `set_dispatch`: the commit that retires the code a slot
/// still targets fails, publishes nothing, and the old code stays callable.
#[test]
fn retiring_the_code_a_slot_still_targets_fails_unless_the_same_commit_re_points_the_slot() {
    let rt = runtime(false);
    let me = rt.register_thread().unwrap();
    let slot = rt.dispatch_slot(0);
    let other = rt.dispatch_slot(0);
    let mut tx = rt.transaction();
    let v1 = tx.stage(&version(1), 16).unwrap();
    tx.set_dispatch(&slot, v1.addr()).unwrap();
    tx.set_dispatch(&other, v1.addr() + 1).unwrap(); // inside v1, not at its start
    tx.commit(Guarantee::Strong).unwrap();

    // Re-points `slot` only: `other` still targets v1.
    let mut tx = rt.transaction();
    let v2 = tx.stage(&version(2), 16).unwrap();
    tx.set_dispatch(&slot, v2.addr()).unwrap();
    tx.retire(v1).unwrap();
    let refused = tx.commit(Guarantee::Strong);
    assert!(
        matches!(refused, Err(Error::SlotTargetsRetired { slot: s, target })
            if s == other.as_ptr() as usize && target == v1.addr() + 1),
        "{refused:?}"
    );
    assert_eq!(slot.get(), v1.addr(), "nothing was published");
    assert_eq!(rt.lookup(v1.addr()).map(|b| b.retired), Some(false));
    assert_eq!(
        me.enter(|s| call(s, v1.addr())),
        1,
        "the old code still runs"
    );

    // Re-pointing both, the same retirement commits.
    let mut tx = rt.transaction();
    let v2 = tx.stage(&version(2), 16).unwrap();
    tx.set_dispatch(&slot, v2.addr()).unwrap();
    tx.set_dispatch(&other, v2.addr()).unwrap();
    tx.retire(v1).unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    assert_eq!(other.get(), v2.addr());
}

#[test]
fn a_slot_of_another_runtime_is_refused() {
    let rt = runtime(false);
    let elsewhere = runtime(false);
    let foreign = elsewhere.dispatch_slot(0);
    let mut tx = rt.transaction();
    assert!(matches!(
        tx.set_dispatch(&foreign, 0x1000),
        Err(Error::ForeignSlot)
    ));
}
