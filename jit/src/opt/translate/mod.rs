//! Bytecode to Cranelift IR. Operand stack entries are SSA values (the verifier proved each
//! instruction's stack height unique, so a block's parameters are the stack at its start);
//! locals are frontend `Variable`s. Semantics mirror the baseline exactly: the depth and
//! stack checks at entry, safepoint polls at entry and on backward jumps, traps as cold
//! blocks returning `(0, status)`, the status of every call tested.

mod calls;
mod divide;
mod tail_loop;

use super::inline::{Inliner, CALL_STUB};
use super::ranges::Ranges;
use super::OptEnv;
use crate::abi::{self, status_of};
use cranelift_codegen::ir::{
    condcodes::IntCC, types::I64, types::I8, AbiParam, AtomicRmwOp, Block, BlockArg, FuncRef,
    Function, InstBuilder, InstructionData, MemFlagsData, Opcode, SigRef, Signature, SourceLoc,
    StackSlotData, StackSlotKind, UserFuncName, Value,
};
use cranelift_codegen::isa::{CallConv, TargetFrontendConfig};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use jitvm_vm::bytecode::{BinOp, Instr};
use jitvm_vm::{FuncId, Module, Trap};
use std::collections::HashMap;

/// The ABI's signature for a function of `params` parameters.
pub fn signature(params: usize) -> Signature {
    let mut sig = Signature::new(CallConv::SystemV);
    sig.params
        .extend(std::iter::repeat(AbiParam::new(I64)).take(params + 2));
    sig.returns.extend([AbiParam::new(I64), AbiParam::new(I64)]);
    sig
}

fn sig_of(params: usize, returns: usize) -> Signature {
    let mut sig = Signature::new(CallConv::SystemV);
    sig.params
        .extend(std::iter::repeat(AbiParam::new(I64)).take(params));
    sig.returns
        .extend(std::iter::repeat(AbiParam::new(I64)).take(returns));
    sig
}

/// A block's arguments: the values of the operand stack.
fn block_args(values: &[Value]) -> Vec<BlockArg> {
    values.iter().map(|&v| BlockArg::from(v)).collect()
}

/// Published code never changes while a thread may reach it.
fn readonly() -> MemFlagsData {
    MemFlagsData::trusted().with_readonly()
}

/// `ctx`'s fields and the memory base never change while native code runs, and `ctx` is
/// valid throughout: Cranelift may load them once for the copies inlined into a function.
fn ctx_field() -> MemFlagsData {
    readonly().with_can_move()
}

/// Translates function `f` of `module` into CLIF. Calls to other functions are calls to
/// the external function `u0:F` (colocated: a `call rel32`), which installation binds to
/// F's call stub.
///
/// With `osr`, an on-stack-replacement entry at that loop header instead: the function
/// takes `(ctx, depth, frame)`, reads its slots and then the operand stack at the header
/// from `frame` (the interpreter's frame), and jumps to the header's block; the blocks
/// only the function's own start reaches are dead, and Cranelift drops them.
///
/// `def_addr` is the definition the code is compiled from: a call that finds the native stack
/// short runs it in the interpreter (see "Depth and the native stack" in [`crate::abi`]).
///
/// Calls the `inliner` picks become guarded sites (see [`crate::opt::inline`]).
pub fn translate(
    module: &Module,
    f: FuncId,
    env: &OptEnv,
    config: TargetFrontendConfig,
    def_addr: usize,
    osr: Option<u32>,
    inliner: &Inliner,
) -> Function {
    let func = &module.functions[f as usize];
    let params = if osr.is_some() { 1 } else { func.params.len() };
    let mut clif = Function::with_name_signature(UserFuncName::user(0, f), signature(params));
    let mut fctx = FunctionBuilderContext::new();
    let b = FunctionBuilder::new(&mut clif, &mut fctx);
    let entry = match osr {
        Some(h) => Entry::Osr(h as usize),
        None => Entry::Call(def_addr),
    };
    Translator::new(module, f, env, b, vec![f], inliner).run(config, entry);
    clif
}

/// Function `g`'s body as a copy for a guarded site in the chain of copies `chain` (outermost
/// function first, ending with `g`): the function the inliner splices in. It has g's
/// signature and makes no stack check and no entry poll (the frame it lands in is its
/// caller's, whose entry made both); its depth check stays, the interpreter's rule.
pub fn translate_inlined(
    module: &Module,
    g: FuncId,
    env: &OptEnv,
    config: TargetFrontendConfig,
    chain: &[FuncId],
    inliner: &Inliner,
) -> Function {
    let params = module.functions[g as usize].params.len();
    let mut clif = Function::with_name_signature(UserFuncName::user(0, g), signature(params));
    let mut fctx = FunctionBuilderContext::new();
    let b = FunctionBuilder::new(&mut clif, &mut fctx);
    Translator::new(module, g, env, b, chain.to_vec(), inliner).run(config, Entry::Inlined);
    clif
}

/// How control enters the function being translated.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// An ordinary call of the definition at this address.
    Call(usize),
    /// On-stack replacement at this loop header.
    Osr(usize),
    /// A copy at a guarded site.
    Inlined,
}

struct Translator<'a> {
    module: &'a Module,
    f: FuncId,
    env: &'a OptEnv,
    b: FunctionBuilder<'a>,
    ctx: Value,
    depth1: Value,
    /// `ctx.max_depth`, loaded once at entry.
    max_depth: Value,
    /// The loop that calls of this function to itself in tail position become.
    tail_loop: Option<tail_loop::TailLoop>,
    mem_base: Value,
    /// The block starting at each instruction that begins one.
    blocks: HashMap<usize, Block>,
    traps: HashMap<u64, Block>,
    /// Returns `(0, status)` for the status in its parameter: a failed call.
    fail: Block,
    callees: HashMap<(u32, u32), FuncRef>,
    sigs: HashMap<(usize, usize), SigRef>,
    /// The cell indices already bounds-checked on the way into a block (each check's
    /// continuation has the check as its one predecessor), so a cell loaded and stored back
    /// is checked once.
    checked: (Option<Block>, Vec<Value>),
    /// The signature of [`preserving_call`], once imported.
    preserving_sig: Option<SigRef>,
    stack: Vec<Value>,
    /// The chain of functions this body is a copy in, ending with its own.
    chain: Vec<FuncId>,
    inliner: &'a Inliner<'a>,
    /// What the operands of each division can be.
    ranges: Ranges,
}

impl<'a> Translator<'a> {
    fn new(
        module: &'a Module,
        f: FuncId,
        env: &'a OptEnv,
        mut b: FunctionBuilder<'a>,
        chain: Vec<FuncId>,
        inliner: &'a Inliner<'a>,
    ) -> Self {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let fail = b.create_block();
        b.append_block_param(fail, I64);
        b.set_cold_block(fail);
        let ctx = b.block_params(entry)[0];
        let depth = b.block_params(entry)[1];
        Translator {
            module,
            f,
            env,
            b,
            ctx,
            depth1: depth,
            max_depth: depth,
            tail_loop: None,
            mem_base: ctx,
            blocks: HashMap::new(),
            traps: HashMap::new(),
            fail,
            callees: HashMap::new(),
            sigs: HashMap::new(),
            preserving_sig: None,
            checked: (None, Vec::new()),
            stack: Vec::new(),
            chain,
            inliner,
            ranges: Ranges::default(),
        }
    }

    fn func(&self) -> &'a jitvm_vm::Function {
        &self.module.functions[self.f as usize]
    }

    fn run(mut self, config: TargetFrontendConfig, entry_kind: Entry) {
        let osr = match entry_kind {
            Entry::Osr(h) => Some(h),
            _ => None,
        };
        let func = self.func();
        self.ranges = Ranges::analyze(func);
        let entry = self.b.current_block().expect("entry block");
        let params: Vec<Value> = self.b.block_params(entry).to_vec();
        let (ctx, depth) = (params[0], params[1]);

        // Depth and native stack, before anything else: `depth > max_depth` traps; a body
        // whose stack pointer (after Cranelift's prologue built the frame) is below the limit
        // runs in the interpreter instead.
        let max_depth = self.b.ins().load(I64, ctx_field(), ctx, abi::CTX_MAX_DEPTH);
        self.max_depth = max_depth;
        let too_deep = self
            .b
            .ins()
            .icmp(IntCC::UnsignedGreaterThan, depth, max_depth);
        self.trap_if(too_deep, Trap::StackOverflow);
        if entry_kind != Entry::Inlined {
            let limit = self
                .b
                .ins()
                .load(I64, ctx_field(), ctx, abi::CTX_STACK_LIMIT);
            let sp = self.b.ins().get_stack_pointer(I64);
            let low = self.b.ins().icmp(IntCC::UnsignedLessThan, sp, limit);
            match entry_kind {
                // The interpreter enters a loop natively only with room for any native frame
                // (`abi::NATIVE_ENTRY_ROOM`): a guard, not a path programs take.
                Entry::Osr(_) => self.trap_if(low, Trap::StackOverflow),
                Entry::Call(def_addr) => self.interpret_if(low, depth, def_addr, &params[2..]),
                Entry::Inlined => unreachable!(),
            }
            self.poll();
        }
        self.depth1 = self.b.ins().iadd_imm_s(depth, 1);
        // Only where memory is used: Cranelift keeps a load whose value is never used.
        let touches_memory = func.code.iter().any(|i| {
            matches!(
                i,
                Instr::Mload | Instr::Mstore | Instr::AtomicAdd | Instr::Cas
            )
        });
        if touches_memory {
            self.mem_base = self
                .b
                .ins()
                .load(I64, ctx_field(), ctx, abi::CTX_MEMORY_BASE);
        }

        // The interpreter's frame, for an on-stack-replacement entry: slots, then the stack.
        let frame_value = |t: &mut Self, k: usize| {
            t.b.ins()
                .load(I64, MemFlagsData::trusted(), params[2], 8 * k as i32)
        };
        for k in 0..func.num_slots() as usize {
            let var = self.b.declare_var(I64);
            debug_assert_eq!(var, Variable::from_u32(k as u32));
            let init = if osr.is_some() {
                frame_value(&mut self, k)
            } else if k < func.params.len() {
                params[k + 2]
            } else {
                self.b.ins().iconst(I64, 0)
            };
            self.b.def_var(var, init);
        }

        // In the function proper only: copies that loop cost more than they save.
        if osr.is_none() && entry_kind != Entry::Inlined {
            self.begin_tail_loop();
        }

        // Blocks start at jump targets and after conditional jumps.
        for (i, ins) in func.code.iter().enumerate() {
            match *ins {
                Instr::Jmp(t) => {
                    self.block_at(t as usize);
                }
                Instr::Jz(t) | Instr::Jnz(t) => {
                    self.block_at(t as usize);
                    self.block_at(i + 1);
                }
                _ => {}
            }
        }

        let mut live = true;
        if let Some(header) = osr {
            let slots = func.num_slots() as usize;
            let stack: Vec<Value> = (0..func.heights[header] as usize)
                .map(|h| frame_value(&mut self, slots + h))
                .collect();
            let blk = self.block_at(header);
            self.b.ins().jump(blk, &block_args(&stack));
            live = false;
        }
        for i in 0..func.code.len() {
            if let Some(&blk) = self.blocks.get(&i) {
                if live {
                    let args = self.stack.clone();
                    self.b.ins().jump(blk, &block_args(&args));
                }
                self.b.switch_to_block(blk);
                self.stack = self.b.block_params(blk).to_vec();
            } else if !live {
                continue; // the verifier rejects unreachable code; nothing to translate
            }
            self.b.set_srcloc(SourceLoc::new(i as u32));
            live = self.instr(i, func.code[i]);
        }
        let mut traps: Vec<(u64, Block)> = self.traps.iter().map(|(&s, &b)| (s, b)).collect();
        traps.sort();
        for (status, blk) in traps {
            self.b.switch_to_block(blk);
            let zero = self.iconst(0);
            let st = self.iconst(status as i64);
            self.b.ins().return_(&[zero, st]);
        }
        let fail = self.fail;
        self.b.switch_to_block(fail);
        let status = self.b.block_params(fail)[0];
        let zero = self.iconst(0);
        self.b.ins().return_(&[zero, status]);
        self.b.seal_all_blocks();
        self.b.finalize(config);
    }

    fn block_at(&mut self, i: usize) -> Block {
        if let Some(&b) = self.blocks.get(&i) {
            return b;
        }
        let blk = self.b.create_block();
        for _ in 0..self.func().heights[i] {
            self.b.append_block_param(blk, I64);
        }
        self.blocks.insert(i, blk);
        blk
    }

    fn pop(&mut self) -> Value {
        self.stack.pop().expect("verified stack height")
    }

    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    fn iconst(&mut self, c: i64) -> Value {
        self.b.ins().iconst(I64, c)
    }

    fn const_of(&self, v: Value) -> Option<i64> {
        let inst = self.b.func.dfg.value_def(v).inst()?;
        match self.b.func.dfg.insts[inst] {
            InstructionData::UnaryImm {
                opcode: Opcode::Iconst,
                imm,
            } => Some(imm.bits()),
            _ => None,
        }
    }

    /// The `i8` truth value behind `v` when `v` is a widened comparison, for branching.
    fn truth(&mut self, v: Value) -> Value {
        if let Some(inst) = self.b.func.dfg.value_def(v).inst() {
            if let InstructionData::Unary {
                opcode: Opcode::Uextend,
                arg,
            } = self.b.func.dfg.insts[inst]
            {
                if self.b.func.dfg.value_type(arg) == I8 {
                    return arg;
                }
            }
        }
        v
    }

    /// A condition true exactly when `cond` (a truth value) is 0: the complemented compare
    /// when `cond` is one, so the branch still tests the flags of a single `cmp`.
    fn negated_truth(&mut self, cond: Value) -> Value {
        use cranelift_codegen::ir::condcodes::CondCode;
        if let Some(inst) = self.b.func.dfg.value_def(cond).inst() {
            if let InstructionData::IntCompare { cond: cc, args, .. } = self.b.func.dfg.insts[inst]
            {
                return self.b.ins().icmp(cc.complement(), args[0], args[1]);
            }
        }
        self.b.ins().icmp_imm_s(IntCC::Equal, cond, 0)
    }

    /// The cold block that returns `(0, status)`; filled at the end (the builder cannot
    /// leave a block half built).
    fn trap_block(&mut self, status: u64) -> Block {
        if let Some(&b) = self.traps.get(&status) {
            return b;
        }
        let blk = self.b.create_block();
        self.b.set_cold_block(blk);
        self.traps.insert(status, blk);
        blk
    }

    /// Traps with `trap` when `cond` (any integer, nonzero is true) holds.
    fn trap_if(&mut self, cond: Value, trap: Trap) {
        let t = self.trap_block(status_of(trap));
        let cont = self.b.create_block();
        self.b.ins().brif(cond, t, &[], cont, &[]);
        self.b.switch_to_block(cont);
    }

    /// When `cond` holds, runs this call (at `depth`) in the interpreter (`call_interp` with
    /// the definition at `def_addr` and the arguments `args`, stored in a stack array) and returns what it
    /// returns; a cold block, as the baseline's copy of a stub's body.
    fn interpret_if(&mut self, cond: Value, depth: Value, def_addr: usize, args: &[Value]) {
        let slow = self.b.create_block();
        self.b.set_cold_block(slow);
        let cont = self.b.create_block();
        self.b.ins().brif(cond, slow, &[], cont, &[]);
        self.b.switch_to_block(slow);
        let array = self.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            8 * args.len().max(1) as u32,
            3,
        ));
        for (k, &arg) in args.iter().enumerate() {
            self.b.ins().stack_store(I64, arg, array, 8 * k as i32);
        }
        let array = self.b.ins().stack_addr(I64, array, 0);
        let ctx = self.ctx;
        let def = self.iconst(def_addr as i64);
        let ret = self.call_rust(self.env.callbacks.call_interp, &[ctx, depth, def, array], 2);
        self.b.ins().return_(&ret);
        self.b.switch_to_block(cont);
    }

    /// Leaves through `fail` unless `status` is 0.
    fn check_status(&mut self, status: Value) {
        let cont = self.b.create_block();
        let fail = self.fail;
        self.b.ins().brif(status, fail, &[status.into()], cont, &[]);
        self.b.switch_to_block(cont);
    }

    /// Jumps to the block of `t` with the current stack, polling first when backward.
    fn jump_to(&mut self, from: usize, t: usize) {
        if t <= from {
            self.poll();
        }
        let blk = self.blocks[&t];
        let args = self.stack.clone();
        self.b.ins().jump(blk, &block_args(&args));
    }

    /// `brif cond` to `t` (taken) or the next instruction's block.
    fn branch(&mut self, i: usize, cond: Value, t: usize, jump_if_nonzero: bool) {
        let next = self.blocks[&(i + 1)];
        // A backward edge polls on its way, in a block of its own.
        let back = (t <= i).then(|| self.b.create_block());
        let target = back.unwrap_or(self.blocks[&t]);
        let args = self.stack.clone();
        let args = block_args(&args);
        let target_args: &[BlockArg] = if back.is_some() { &[] } else { &args };
        if back.is_some() && jump_if_nonzero {
            // The backward edge as the branch's second successor: Cranelift lays that one out
            // right after the branch (the reverse postorder of `DominatorTree`), so the loop
            // falls through to its poll and takes one jump per iteration, not two.
            let stay = self.negated_truth(cond);
            self.b.ins().brif(stay, next, &args, target, target_args);
        } else if jump_if_nonzero {
            self.b.ins().brif(cond, target, target_args, next, &args);
        } else {
            self.b.ins().brif(cond, next, &args, target, target_args);
        }
        if let Some(back) = back {
            self.b.switch_to_block(back);
            self.jump_to(i, t);
        }
    }

    /// The address of memory cell `i` after its bounds check.
    fn cell(&mut self, i: Value) -> Value {
        let here = self.b.current_block();
        if self.checked.0 != here {
            self.checked = (here, Vec::new());
        }
        if !self.checked.1.contains(&i) {
            let cells = self.module.memory_cells as i64;
            let out = self
                .b
                .ins()
                .icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, i, cells);
            self.trap_if(out, Trap::MemoryOutOfBounds);
            self.checked.0 = self.b.current_block();
            self.checked.1.push(i);
        }
        let off = self.b.ins().ishl_imm_s(i, 3);
        self.b.ins().iadd(self.mem_base, off)
    }

    /// `a OP c`, for the instruction at `pc`.
    fn bin(&mut self, pc: usize, op: BinOp, a: Value, c: Value) -> Value {
        let cmp = |cc| Some(cc);
        let cc = match op {
            BinOp::Eq => cmp(IntCC::Equal),
            BinOp::Ne => cmp(IntCC::NotEqual),
            BinOp::Lt => cmp(IntCC::SignedLessThan),
            BinOp::Le => cmp(IntCC::SignedLessThanOrEqual),
            BinOp::Gt => cmp(IntCC::SignedGreaterThan),
            BinOp::Ge => cmp(IntCC::SignedGreaterThanOrEqual),
            _ => None,
        };
        if let Some(cc) = cc {
            let t = self.b.ins().icmp(cc, a, c);
            return self.b.ins().uextend(I64, t);
        }
        let ins = self.b.ins();
        match op {
            BinOp::Add => ins.iadd(a, c),
            BinOp::Sub => ins.isub(a, c),
            BinOp::Mul => ins.imul(a, c),
            BinOp::And => ins.band(a, c),
            BinOp::Or => ins.bor(a, c),
            BinOp::Xor => ins.bxor(a, c),
            // Cranelift's shifts take the amount modulo 64, as the bytecode does.
            BinOp::Shl => ins.ishl(a, c),
            BinOp::Shr => ins.sshr(a, c),
            BinOp::Ushr => ins.ushr(a, c),
            BinOp::Div => self.divide(a, c, false, self.ranges.division(pc)),
            BinOp::Rem => self.divide(a, c, true, self.ranges.division(pc)),
            _ => unreachable!("comparisons handled above"),
        }
    }

    /// Translates instruction `i`; false when control does not fall through.
    fn instr(&mut self, i: usize, ins: Instr) -> bool {
        match ins {
            Instr::Push(c) => {
                let v = self.iconst(c);
                self.push(v);
            }
            Instr::Pop => {
                self.pop();
            }
            Instr::Dup => {
                let v = *self.stack.last().expect("verified");
                self.push(v);
            }
            Instr::Swap => {
                let n = self.stack.len();
                self.stack.swap(n - 1, n - 2);
            }
            Instr::Over => {
                let v = self.stack[self.stack.len() - 2];
                self.push(v);
            }
            Instr::Load(x) => {
                let v = self.b.use_var(Variable::from_u32(x));
                self.push(v);
            }
            Instr::Store(x) => {
                let v = self.pop();
                self.b.def_var(Variable::from_u32(x), v);
            }
            Instr::Bin(op) => {
                let c = self.pop();
                let a = self.pop();
                let v = self.bin(i, op, a, c);
                self.push(v);
            }
            Instr::Neg => {
                let a = self.pop();
                let v = self.b.ins().ineg(a);
                self.push(v);
            }
            Instr::Not => {
                let a = self.pop();
                let t = self.b.ins().icmp_imm_s(IntCC::Equal, a, 0);
                let v = self.b.ins().uextend(I64, t);
                self.push(v);
            }
            Instr::Jmp(t) => {
                self.jump_to(i, t as usize);
                return false;
            }
            Instr::Jz(t) | Instr::Jnz(t) => {
                let v = self.pop();
                let cond = self.truth(v);
                self.branch(i, cond, t as usize, matches!(ins, Instr::Jnz(_)));
                return false;
            }
            Instr::Call(g) if self.is_loop_call(i) => {
                self.tail_call_itself(i, g);
                return false;
            }
            Instr::Call(g) => {
                let p = self.module.functions[g as usize].params.len();
                let mut args = vec![self.ctx, self.callee_depth()];
                args.extend(self.stack.drain(self.stack.len() - p..));
                let v = match self.inliner.site(&self.chain, g) {
                    Some(site) => self.guarded_call(g, site, &args),
                    None => {
                        let callee = self.callee(CALL_STUB, g, g);
                        let (v, st) = self.call_pair(callee, &args);
                        self.check_status(st);
                        v
                    }
                };
                self.push(v);
            }
            Instr::Ret => {
                let v = self.pop();
                self.ret(v);
                return false;
            }
            Instr::Mload => {
                let idx = self.pop();
                let addr = self.cell(idx);
                let v = self.b.ins().load(I64, MemFlagsData::trusted(), addr, 0);
                self.push(v);
            }
            Instr::Mstore => {
                let v = self.pop();
                let idx = self.pop();
                let addr = self.cell(idx);
                self.b.ins().store(MemFlagsData::trusted(), v, addr, 0);
            }
            Instr::AtomicAdd => {
                let d = self.pop();
                let idx = self.pop();
                let addr = self.cell(idx);
                let old = self.b.ins().atomic_rmw(
                    I64,
                    MemFlagsData::trusted(),
                    AtomicRmwOp::Add,
                    addr,
                    d,
                );
                self.push(old);
            }
            Instr::Cas => {
                let new = self.pop();
                let expected = self.pop();
                let idx = self.pop();
                let addr = self.cell(idx);
                let old = self
                    .b
                    .ins()
                    .atomic_cas(MemFlagsData::trusted(), addr, expected, new);
                self.push(old);
            }
            Instr::Msize => {
                let v = self.iconst(self.module.memory_cells as i64);
                self.push(v);
            }
            Instr::Spawn(g) => {
                let p = self.module.functions[g as usize].params.len();
                let slot = self.b.create_sized_stack_slot(StackSlotData::new(
                    StackSlotKind::ExplicitSlot,
                    8 * p.max(1) as u32,
                    3,
                ));
                let args: Vec<Value> = self.stack.drain(self.stack.len() - p..).collect();
                for (k, a) in args.into_iter().enumerate() {
                    self.b.ins().stack_store(I64, a, slot, 8 * k as i32);
                }
                let ptr = self.b.ins().stack_addr(I64, slot, 0);
                let fv = self.iconst(g as i64);
                let ctx = self.ctx;
                let r = self.call_rust(self.env.callbacks.spawn, &[ctx, fv, ptr], 2);
                self.check_status(r[1]);
                self.push(r[0]);
            }
            Instr::Join => {
                let h = self.pop();
                let ctx = self.ctx;
                let r = self.call_rust(self.env.callbacks.join, &[ctx, h], 2);
                self.check_status(r[1]);
                self.push(r[0]);
            }
            Instr::Patch(g, h) => {
                let (gv, hv) = (self.iconst(g as i64), self.iconst(h as i64));
                let ctx = self.ctx;
                let r = self.call_rust(self.env.callbacks.patch, &[ctx, gv, hv], 1);
                self.check_status(r[0]);
            }
            Instr::Print | Instr::Putc => {
                let v = self.pop();
                let addr = if ins == Instr::Print {
                    self.env.callbacks.print
                } else {
                    self.env.callbacks.putc
                };
                let ctx = self.ctx;
                let r = self.call_rust(addr, &[ctx, v], 1);
                self.check_status(r[0]);
            }
            Instr::Assert => {
                let v = self.pop();
                let cond = self.truth(v);
                let t = self.trap_block(status_of(Trap::AssertionFailed));
                let cont = self.b.create_block();
                self.b.ins().brif(cond, cont, &[], t, &[]);
                self.b.switch_to_block(cont);
            }
            Instr::Nop => {}
        }
        true
    }
}
