//! Code generators shared by the integration tests, assembled with dynasm at
//! run time.
#![allow(dead_code)]

use dynasm::dynasm;
use dynasmrt::x64::X64Relocation;
use dynasmrt::{DynasmApi, VecAssembler};
use jitvm_runtime::{rel32_site_padding, Rel32Kind, REL32_LEN};

type Asm = VecAssembler<X64Relocation>;

/// The signature of every generated function.
pub type CodeFn = extern "sysv64" fn() -> i64;

/// Turns an executable address into a callable function.
///
/// # Safety
/// `addr` must be the RX address of a published blob holding a function with
/// the `CodeFn` ABI (returns an i64 in rax, clobbers only caller-saved
/// registers), and the blob must stay published while the function is used.
pub unsafe fn as_fn(addr: usize) -> CodeFn {
    // SAFETY: forwarded to the caller (see above).
    unsafe { std::mem::transmute::<usize, CodeFn>(addr) }
}

/// Version `k`: `mov rax, k; ret`, preceded by a k-dependent run of nops so
/// versions have different sizes (11 to 143 bytes) and exercise the allocator.
pub fn version(k: i64) -> Vec<u8> {
    let mut ops = Asm::new(0);
    let pad = (k.rem_euclid(13) * 11) as usize;
    dynasm!(ops
        ; .arch x64
        ; .bytes std::iter::repeat(0x90u8).take(pad)
        ; mov rax, QWORD k
        ; ret
    );
    ops.finalize().unwrap()
}

/// A stub that calls indirectly through the dispatch slot at `slot`.
pub fn dispatch_stub(slot: *const usize) -> Vec<u8> {
    let mut ops = Asm::new(0);
    dynasm!(ops
        ; .arch x64
        ; sub rsp, 8
        ; mov rax, QWORD slot as i64
        ; call QWORD [rax]
        ; add rsp, 8
        ; ret
    );
    ops.finalize().unwrap()
}

/// A stub containing a patchable rel32 site of `kind` (displacement zero for
/// now). `Call` calls and returns; `Jmp` tail-jumps. Returns the bytes and the
/// offset of the site's opcode.
pub fn rel32_stub(kind: Rel32Kind) -> (Vec<u8>, usize) {
    let mut ops = Asm::new(0);
    let site;
    match kind {
        Rel32Kind::Call => {
            dynasm!(ops ; .arch x64 ; sub rsp, 8);
            let pad = rel32_site_padding(ops.offset().0);
            dynasm!(ops ; .arch x64 ; .bytes std::iter::repeat(0x90u8).take(pad));
            site = ops.offset().0;
            dynasm!(ops
                ; .arch x64
                ; .bytes [0xE8u8, 0, 0, 0, 0]
                ; add rsp, 8
                ; ret
            );
        }
        Rel32Kind::Jmp => {
            dynasm!(ops ; .arch x64 ; xor eax, eax);
            let pad = rel32_site_padding(ops.offset().0);
            dynasm!(ops ; .arch x64 ; .bytes std::iter::repeat(0x90u8).take(pad));
            site = ops.offset().0;
            dynasm!(ops ; .arch x64 ; .bytes [0xE9u8, 0, 0, 0, 0] ; int3);
        }
    }
    let code = ops.finalize().unwrap();
    assert_eq!((site + 1) % 4, 0);
    assert!(site + REL32_LEN <= code.len());
    (code, site)
}

use jitvm_runtime::{Blob, CommitInfo, DispatchSlot, Guarantee, Rel32Site, Runtime};

/// The three kinds of patch site, published, all pointing at one version.
pub struct Sites {
    /// Read by the dispatch stub; boxed so its address is stable.
    pub slot: Box<DispatchSlot>,
    pub call_site: Rel32Site,
    pub jmp_site: Rel32Site,
    /// Entry addresses of the dispatch, call and jmp stubs.
    pub stubs: [usize; 3],
    /// The version all three sites point at.
    pub current: Blob,
}

impl Sites {
    /// Publishes version `first` and the three stubs in one transaction.
    pub fn publish(rt: &Runtime, first: i64) -> Sites {
        let slot = Box::new(DispatchSlot::new(0));
        let (call_code, call_at) = rel32_stub(Rel32Kind::Call);
        let (jmp_code, jmp_at) = rel32_stub(Rel32Kind::Jmp);
        let mut tx = rt.transaction();
        let v = tx.stage(&version(first), 16).unwrap();
        let d = tx.stage(&dispatch_stub(slot.as_ptr()), 16).unwrap();
        let c = tx.stage(&call_code, 16).unwrap();
        let j = tx.stage(&jmp_code, 16).unwrap();
        let call_site = rt.rel32_site(c, call_at, Rel32Kind::Call).unwrap();
        let jmp_site = rt.rel32_site(j, jmp_at, Rel32Kind::Jmp).unwrap();
        tx.set_dispatch(&slot, v.addr());
        tx.patch_rel32(call_site, v.addr()).unwrap();
        tx.patch_rel32(jmp_site, v.addr()).unwrap();
        tx.commit(Guarantee::Strong).unwrap();
        Sites {
            call_site,
            jmp_site,
            stubs: [d.addr(), c.addr(), j.addr()],
            current: v,
            slot,
        }
    }

    /// Stages version `k`, points every site at it and retires the previous
    /// version, in one commit.
    pub fn replace(&mut self, rt: &Runtime, k: i64, g: Guarantee) -> CommitInfo {
        let mut tx = rt.transaction();
        let v = tx.stage(&version(k), 16).unwrap();
        tx.set_dispatch(&self.slot, v.addr());
        tx.patch_rel32(self.call_site, v.addr()).unwrap();
        tx.patch_rel32(self.jmp_site, v.addr()).unwrap();
        tx.retire(self.current);
        let info = tx.commit(g).unwrap();
        self.current = v;
        info
    }

    /// Calls through every site; returns the three results.
    pub fn call_all(&self) -> [i64; 3] {
        call_stubs(&self.stubs)
    }
}

/// Calls each stub of [`Sites::stubs`]. The stubs must still be published
/// (they are never retired by these tests while the runtime lives).
pub fn call_stubs(stubs: &[usize; 3]) -> [i64; 3] {
    // SAFETY: the stubs are published blobs following the CodeFn ABI, never
    // retired while their runtime lives.
    stubs.map(|s| unsafe { as_fn(s) }())
}
