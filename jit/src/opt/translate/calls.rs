//! Calls out of optimized code: to other functions through their call stubs, guarded sites
//! whose callee the inliner copies in, Rust callbacks, and the safepoint poll, whose slow
//! path calls Rust through the thunk that clobbers nothing.

use super::{readonly, sig_of, signature, Translator};
use crate::abi;
use crate::opt::inline::{CALL_STUB, INLINE_SITE};
use crate::opt::preserving_call;
use cranelift_codegen::ir::{
    condcodes::IntCC, types::I32, types::I64, ExtFuncData, ExternalName, FuncRef, InstBuilder,
    MemFlagsData, SigRef, UserExternalName, Value,
};
use jitvm_vm::FuncId;

impl Translator<'_> {
    /// `if ctx.poll != 0 { safepoint(ctx) }`, the slow path cold. An atomic load (a plain
    /// `mov` on x86-64), so Cranelift never merges one poll's load with an earlier one.
    pub(super) fn poll(&mut self) {
        let word = self.b.ins().iadd_imm_s(self.ctx, abi::CTX_POLL as i64);
        let flag = self.b.ins().atomic_load(
            cranelift_codegen::ir::types::I32,
            MemFlagsData::trusted(),
            word,
        );
        let slow = self.b.create_block();
        self.b.set_cold_block(slow);
        let cont = self.b.create_block();
        self.b.ins().brif(flag, slow, &[], cont, &[]);
        self.b.switch_to_block(slow);
        // Through the thunk that clobbers nothing, so no value of the loop leaves its register
        // for the poll's sake.
        let sig = match self.preserving_sig {
            Some(sig) => sig,
            None => *self
                .preserving_sig
                .insert(self.b.import_signature(preserving_call::signature())),
        };
        let thunk = self.iconst(preserving_call::address() as i64);
        let callback = self.iconst(self.env.callbacks.safepoint as i64);
        let args = [self.ctx, callback];
        self.b.ins().call_indirect(sig, thunk, &args);
        self.b.ins().jump(cont, &[]);
        self.b.switch_to_block(cont);
    }

    pub(super) fn sig(&mut self, params: usize, returns: usize) -> SigRef {
        if let Some(&s) = self.sigs.get(&(params, returns)) {
            return s;
        }
        let s = self.b.import_signature(sig_of(params, returns));
        self.sigs.insert((params, returns), s);
        s
    }

    /// Calls a Rust callback at `addr` (not patchable: it never changes).
    pub(super) fn call_rust(&mut self, addr: usize, args: &[Value], returns: usize) -> Vec<Value> {
        let sig = self.sig(args.len(), returns);
        let callee = self.iconst(addr as i64);
        let call = self.b.ins().call_indirect(sig, callee, args);
        self.b.inst_results(call).to_vec()
    }

    /// The function `namespace:index` (see [`crate::opt::inline`]), with the signature of
    /// function `g`.
    pub(super) fn callee(&mut self, namespace: u32, index: u32, g: FuncId) -> FuncRef {
        if let Some(&r) = self.callees.get(&(namespace, index)) {
            return r;
        }
        let params = self.module.functions[g as usize].params.len();
        let signature = self.b.import_signature(signature(params));
        let name = self
            .b
            .func
            .declare_imported_user_function(UserExternalName::new(namespace, index));
        let r = self.b.import_function(ExtFuncData {
            name: ExternalName::user(name),
            signature,
            colocated: true,
            patchable: false,
        });
        self.callees.insert((namespace, index), r);
        r
    }

    /// A call of `callee` with `args`; its `(value, status)`.
    pub(super) fn call_pair(&mut self, callee: FuncRef, args: &[Value]) -> (Value, Value) {
        let call = self.b.ins().call(callee, args);
        let r = self.b.inst_results(call);
        (r[0], r[1])
    }

    /// The guarded site `site` calling `g` (see [`crate::opt::inline`]): the copy if g's
    /// dispatch slot runs g's definition, else the ordinary call through g's call stub.
    ///
    /// Each way tests its own status before the two meet, so that only the value is merged.
    pub(super) fn guarded_call(&mut self, g: FuncId, site: u32, args: &[Value]) -> Value {
        let same = self.runs_definition(g);
        let inlined = self.b.create_block();
        let out_of_line = self.b.create_block();
        self.b.set_cold_block(out_of_line);
        let join = self.b.create_block();
        self.b.append_block_param(join, I64);
        self.b.ins().brif(same, inlined, &[], out_of_line, &[]);
        for (blk, namespace, index) in [(inlined, INLINE_SITE, site), (out_of_line, CALL_STUB, g)] {
            self.b.switch_to_block(blk);
            let callee = self.callee(namespace, index, g);
            let (v, st) = self.call_pair(callee, args);
            // The status test goes straight on to the join, passing the value: once the
            // inliner turned the copy's returns into jumps here, each one that passes a
            // constant status can skip the test (`opt::thread_status`).
            let fail = self.fail;
            self.b.ins().brif(st, fail, &[st.into()], join, &[v.into()]);
        }
        self.b.switch_to_block(join);
        self.b.block_params(join)[0]
    }

    /// The guard: whether g's dispatch slot runs g's own definition now, in either native
    /// tier (the header word names the definition an entry runs, with its kind bit).
    pub(super) fn runs_definition(&mut self, g: FuncId) -> Value {
        let (slot, def) = self.inliner.guard_of(g);
        let slot = self.iconst(slot as i64);
        // An atomic load (a plain `mov` on x86-64) so that Cranelift never reuses an earlier
        // load of the slot: every call reads what the slot holds when it starts.
        let entry = self.b.ins().atomic_load(I64, MemFlagsData::trusted(), slot);
        // Published code is never written while a thread may reach it through a slot. The
        // low half of the header word is enough: headers are addresses in the program's one
        // array of definitions, far smaller than 4 GiB, so no two definitions share it. A
        // native entry's kind bit is set; an interpreter stub's is not, and its call goes
        // out of line (slower, as that callee's every call is, and as correct).
        let header = self.b.ins().load(I32, readonly(), entry, -8);
        self.b
            .ins()
            .icmp_imm_s(IntCC::Equal, header, (def | 1) as u32 as i32 as i64)
    }
}
