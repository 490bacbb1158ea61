//! Code generators and helpers shared by the integration tests, assembled
//! with dynasm at run time.
#![allow(dead_code)]

use std::sync::Arc;

use dynasm::dynasm;
use dynasmrt::x64::X64Relocation;
use dynasmrt::{DynasmApi, DynasmLabelApi, VecAssembler};
use jitvm_runtime::{
    rel32_site_padding, Blob, CodePtr, CommitInfo, Config, DispatchSlot, Guarantee, NativeScope,
    Rel32Kind, Runtime, ThreadHandle, REL32_LEN,
};

type Asm = VecAssembler<X64Relocation>;

/// The signature of every generated function.
pub type CodeFn = extern "sysv64" fn() -> i64;

/// A runtime with the default strategy.
pub fn runtime(poison: bool) -> Arc<Runtime> {
    Runtime::new(Config {
        capacity: 4 << 20,
        poison,
        quarantine_bytes: 4096,
        ..Config::default()
    })
    .unwrap()
}

/// Calls the `CodeFn` at `addr` inside `scope`.
pub fn call(scope: &NativeScope<'_>, addr: usize) -> i64 {
    // SAFETY: every address the tests pass is a published blob following the
    // CodeFn ABI, still published while called.
    let f: CodeFn = unsafe { scope.func(CodePtr::new(addr)) };
    f()
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

/// `sub rsp, 8; mov rax, slot; call qword [rax]; add rsp, 8; ret` (a call
/// covered by Strong).
pub fn call_stub(slot: *const usize) -> Vec<u8> {
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

/// `mov rax, slot; jmp qword [rax]` (a tail call covered by Strong).
pub fn jmp_stub(slot: *const usize) -> Vec<u8> {
    let mut ops = Asm::new(0);
    dynasm!(ops
        ; .arch x64
        ; mov rax, QWORD slot as i64
        ; jmp QWORD [rax]
    );
    ops.finalize().unwrap()
}

/// A function with a `call rel32` (displacement zero for now): returns the
/// bytes and the offset of the site's opcode.
pub fn rel32_caller() -> (Vec<u8>, usize) {
    let mut ops = Asm::new(0);
    dynasm!(ops ; .arch x64 ; sub rsp, 8);
    let pad = rel32_site_padding(ops.offset().0);
    dynasm!(ops ; .arch x64 ; .bytes std::iter::repeat(0x90u8).take(pad));
    let site = ops.offset().0;
    dynasm!(ops
        ; .arch x64
        ; .bytes [0xE8u8, 0, 0, 0, 0]
        ; add rsp, 8
        ; ret
    );
    let code = ops.finalize().unwrap();
    assert_eq!((site + 1) % 4, 0);
    assert!(site + REL32_LEN <= code.len());
    (code, site)
}

/// A native loop: `extern "sysv64" fn(stop: *const u8, poll: *const AtomicU32)
/// -> i64`. Until `*stop` is nonzero it polls the calling thread's poll word
/// `poll` (calling the safepoint slow path when it is set) and calls through
/// `slot`; it returns the number of times a call returned a smaller number
/// than the call before (0 when patches are seen in order).
pub fn polling_loop(slot: *const usize, slow: usize) -> Vec<u8> {
    let mut ops = Asm::new(0);
    dynasm!(ops
        ; .arch x64
        ; push rbx
        ; push r12
        ; push r13
        ; push r14
        ; sub rsp, 8
        ; mov rbx, rdi
        ; mov r14, rsi
        ; xor r12, r12
        ; xor r13, r13
        ; top:
        ; cmp DWORD [r14], 0
        ; jne >slow
        ; back:
        ; mov rax, QWORD slot as i64
        ; call QWORD [rax]
        ; cmp rax, r12
        ; jge >ordered
        ; inc r13
        ; ordered:
        ; mov r12, rax
        ; cmp BYTE [rbx], 0
        ; je <top
        ; mov rax, r13
        ; add rsp, 8
        ; pop r14
        ; pop r13
        ; pop r12
        ; pop rbx
        ; ret
        ; slow:
        ; mov rax, QWORD slow as i64
        ; call rax
        ; jmp <back
    );
    ops.finalize().unwrap()
}

/// Every kind of call the JITs emit, published, all reaching one version:
/// a `call [slot]` stub, a `jmp [slot]` stub, and a `jmp [direct]` stub whose
/// slot points at a function that reaches the version by `call rel32`
/// (patched while staged, re-staged with every version).
pub struct Sites {
    pub slot: Arc<DispatchSlot>,
    pub direct: Arc<DispatchSlot>,
    /// Entry addresses of the three stubs (never retired).
    pub stubs: [usize; 3],
    /// The version all three reach, and the rel32 caller of it.
    pub current: Blob,
    pub current_caller: Blob,
}

impl Sites {
    /// Publishes version `first` and the stubs in one transaction.
    pub fn publish(rt: &Runtime, first: i64) -> Sites {
        let slot = rt.dispatch_slot(0);
        let direct = rt.dispatch_slot(0);
        let mut tx = rt.transaction();
        let c = tx.stage(&call_stub(slot.as_ptr()), 16).unwrap();
        let j = tx.stage(&jmp_stub(slot.as_ptr()), 16).unwrap();
        let d = tx.stage(&jmp_stub(direct.as_ptr()), 16).unwrap();
        tx.commit(Guarantee::Strong).unwrap();
        let mut s = Sites {
            slot,
            direct,
            stubs: [c.addr(), j.addr(), d.addr()],
            current: c,
            current_caller: c,
        };
        let mut tx = rt.transaction();
        let (v, caller) = s.stage_version(&mut tx, rt, first);
        tx.set_dispatch(&s.slot, v.addr()).unwrap();
        tx.set_dispatch(&s.direct, caller.addr()).unwrap();
        tx.commit(Guarantee::Strong).unwrap();
        s.current = v;
        s.current_caller = caller;
        s
    }

    fn stage_version<'a>(
        &self,
        tx: &mut jitvm_runtime::Transaction<'a>,
        rt: &Runtime,
        k: i64,
    ) -> (Blob, Blob) {
        let v = tx.stage(&version(k), 16).unwrap();
        let (code, at) = rel32_caller();
        let caller = tx.stage(&code, 16).unwrap();
        let site = rt.rel32_site(caller, at, Rel32Kind::Call).unwrap();
        tx.patch_rel32(site, v.addr()).unwrap();
        tx.set_owner(v, k as u64).unwrap();
        (v, caller)
    }

    /// Stages version `k`, points every site at it and retires the previous
    /// version, in one commit.
    pub fn replace(&mut self, rt: &Runtime, k: i64, g: Guarantee) -> CommitInfo {
        let mut tx = rt.transaction();
        let (v, caller) = self.stage_version(&mut tx, rt, k);
        tx.set_dispatch(&self.slot, v.addr()).unwrap();
        tx.set_dispatch(&self.direct, caller.addr()).unwrap();
        tx.retire(self.current).unwrap();
        tx.retire(self.current_caller).unwrap();
        let info = tx.commit(g).unwrap();
        self.current = v;
        self.current_caller = caller;
        info
    }

    /// Calls through every site from `h`; returns the three results.
    pub fn call_all(&self, h: &ThreadHandle) -> [i64; 3] {
        call_stubs(h, &self.stubs)
    }
}

/// Calls each stub of [`Sites::stubs`] inside one `enter`.
pub fn call_stubs(h: &ThreadHandle, stubs: &[usize; 3]) -> [i64; 3] {
    h.enter(|s| stubs.map(|a| call(s, a)))
}
