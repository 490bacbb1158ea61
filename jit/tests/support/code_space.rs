//! The only place the tests touch `jitvm-runtime`: staging code, pointing dispatch slots,
//! committing. When the runtime's API changes, this file is what to adapt.

use jitvm_jit::abi::{call_native, CompiledCode, NativeRet, ThreadContext};
use jitvm_runtime::{
    with_current_thread, Blob, CodePtr, Config, DispatchSlot, Guarantee, Runtime, Transaction,
};
use std::sync::{Arc, Mutex};

/// One runtime (code region) per test machine, freed with it.
pub struct CodeSpace {
    rt: Arc<Runtime>,
    blobs: Mutex<Vec<Blob>>,
}

pub type Slot = Arc<DispatchSlot>;

pub fn slot_addr(slot: &Slot) -> usize {
    slot.as_ptr() as usize
}

pub fn slot_target(slot: &Slot) -> usize {
    slot.get()
}

/// A batch of installs, published by [`Batch::commit`] (one `Strong` commit).
pub struct Batch<'a> {
    space: &'a CodeSpace,
    tx: Transaction<'a>,
}

impl CodeSpace {
    /// A dispatch slot of this space's runtime, initially 0.
    pub fn new_slot(&self) -> Slot {
        self.rt.dispatch_slot(0)
    }

    pub fn new() -> CodeSpace {
        let config = Config {
            capacity: 16 << 20,
            ..Config::default()
        };
        CodeSpace {
            rt: Runtime::new(config).expect("a runtime"),
            blobs: Mutex::new(Vec::new()),
        }
    }

    pub fn batch(&self) -> Batch<'_> {
        Batch {
            space: self,
            tx: self.rt.transaction(),
        }
    }

    /// Calls native code at `entry` the way the VM does: on a thread registered with this
    /// space's runtime (registered for the call if it is not already), inside `enter`.
    ///
    /// # Safety
    /// As `jitvm_jit::abi::call_native`: live code for `args.len()` parameters, `ctx` this
    /// thread's context.
    pub unsafe fn call(
        &self,
        entry: usize,
        ctx: *mut ThreadContext,
        depth: u64,
        args: &[i64],
    ) -> NativeRet {
        // SAFETY (both calls): by this function's contract; `enter` lends the scope.
        let call = |h: &jitvm_runtime::ThreadHandle| {
            h.enter(|scope| unsafe { call_native(scope, CodePtr::new(entry), ctx, depth, args) })
        };
        with_current_thread(|current| match current {
            Some(h) => call(h),
            None => call(&self.rt.register_thread().expect("registration")),
        })
    }

    /// `patch`: points `slot` at `target` now, with the guarantee `patch F G` needs.
    pub fn repoint(&self, slot: &Slot, target: usize) {
        let mut tx = self.rt.transaction();
        tx.set_dispatch(slot, target).expect("a valid target");
        tx.commit(Guarantee::Strong).expect("commit");
    }
}

impl<'a> Batch<'a> {
    /// Reserves `max_len` bytes, compiles into them with `compile(address)` (code is
    /// assembled knowing where it will run) and returns the code and the address of its
    /// first byte. The unused tail is `int3`.
    pub fn stage<E>(
        &mut self,
        max_len: usize,
        compile: impl FnOnce(usize) -> Result<CompiledCode, E>,
    ) -> Result<(usize, CompiledCode), E> {
        let mut result = None;
        let blob = self
            .tx
            .stage_with(max_len, 16, |buf, addr| {
                let r = compile(addr);
                if let Ok(code) = &r {
                    assert!(code.bytes.len() <= buf.len(), "code over its bound");
                    buf[..code.bytes.len()].copy_from_slice(&code.bytes);
                    buf[code.bytes.len()..].fill(0xCC);
                } else {
                    buf.fill(0xCC);
                }
                result = Some(r);
            })
            .expect("code memory");
        self.space.blobs.lock().unwrap().push(blob);
        let code = result.expect("stage_with runs the closure")?;
        Ok((blob.addr(), code))
    }

    /// Points `slot` at `target` when the batch commits.
    pub fn point(&mut self, slot: &'a Slot, target: usize) {
        self.tx.set_dispatch(slot, target).expect("a valid target");
    }

    pub fn commit(self) {
        self.tx.commit(Guarantee::Strong).expect("commit");
    }
}
