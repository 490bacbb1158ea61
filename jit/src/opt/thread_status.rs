//! Jump threading of known statuses, after inlining.
//!
//! Every call's status is tested where the call returns (`brif status, fail, cont`). An
//! inlined copy returns by jumping to a merge block with its value and its status, and most
//! of its ways out pass a constant: 0 from a normal return, a trap's status from a trap. The
//! merge block tests a status that each predecessor already knew, and Cranelift does not
//! thread jumps through block parameters. This pass does: a `jump B(.., c, ..)` with a
//! constant `c`, into a block `B` that is nothing but `brif` on that parameter, jumps
//! straight to the side `c` selects, with `B`'s parameters replaced by the jump's arguments.
//!
//! Sound because the rewritten jump does exactly what running `B` would: `B` has no other
//! instruction, and every value `B`'s `brif` passes that is not a parameter of `B` is defined
//! in a block that dominates `B`, so it dominates the jump's block too (a predecessor). Only
//! where no other instruction uses `B`'s parameters: a side that used them directly (they
//! dominate it through `B`) would be reached without them. A block left without
//! predecessors is removed by Cranelift's unreachable-code pass.

use cranelift_codegen::ir::{
    Block, BlockArg, BlockCall, Function, InstructionData, Opcode, Value, ValueDef,
};
use std::collections::HashMap;

/// Threads every jump that passes a constant to a block that only tests it, again while
/// that finds more (a threaded jump may land on another such block), a bounded number of
/// rounds (blocks that only test and jump to each other would thread forever); returns how
/// many jumps it threaded.
pub fn thread_known_statuses(func: &mut Function) -> usize {
    const ROUNDS: usize = 4;
    (0..ROUNDS)
        .map(|_| thread_once(func))
        .take_while(|&n| n > 0)
        .sum()
}

fn thread_once(func: &mut Function) -> usize {
    let mut threaded = 0;
    let uses = count_uses(func);
    let blocks: Vec<Block> = func.layout.blocks().collect();
    for pred in blocks {
        let Some(jump) = func.layout.last_inst(pred) else {
            continue;
        };
        let InstructionData::Jump { destination, .. } = func.dfg.insts[jump] else {
            continue;
        };
        let target = destination.block(&func.dfg.value_lists);
        let Some((param, taken, not_taken)) = tests_a_parameter(func, &uses, target) else {
            continue;
        };
        let args: Vec<BlockArg> = destination.args(&func.dfg.value_lists).collect();
        let params = func.dfg.block_params(target).to_vec();
        let Some(BlockArg::Value(tested)) = args.get(param).copied() else {
            continue;
        };
        let Some(c) = constant(func, tested) else {
            continue;
        };
        let side = if c != 0 { taken } else { not_taken };
        let side_block = side.block(&func.dfg.value_lists);
        let substitute = |a: BlockArg| match a {
            BlockArg::Value(v) => match params.iter().position(|&p| p == v) {
                Some(k) => args[k],
                None => a,
            },
            other => other,
        };
        let side_args: Vec<BlockArg> = side
            .args(&func.dfg.value_lists)
            .map(|a| match a {
                BlockArg::Value(v) => substitute(BlockArg::Value(func.dfg.resolve_aliases(v))),
                other => other,
            })
            .collect();
        let call = BlockCall::new(side_block, side_args, &mut func.dfg.value_lists);
        func.dfg.insts[jump] = InstructionData::Jump {
            opcode: Opcode::Jump,
            destination: call,
        };
        threaded += 1;
    }
    threaded
}

/// When `block` is only `brif p, taken, not_taken` on its own parameter `p`, and nothing
/// else uses its parameters: `p`'s index and the two sides.
fn tests_a_parameter(
    func: &Function,
    uses: &HashMap<Value, usize>,
    block: Block,
) -> Option<(usize, BlockCall, BlockCall)> {
    let first = func.layout.first_inst(block)?;
    if func.layout.last_inst(block) != Some(first) {
        return None;
    }
    let InstructionData::Brif {
        arg,
        blocks: [taken, not_taken],
        ..
    } = func.dfg.insts[first]
    else {
        return None;
    };
    let arg = func.dfg.resolve_aliases(arg);
    let params = func.dfg.block_params(block);
    let index = params.iter().position(|&p| p == arg)?;
    let mut in_brif: HashMap<Value, usize> = HashMap::new();
    for v in func.dfg.inst_values(first) {
        *in_brif.entry(func.dfg.resolve_aliases(v)).or_default() += 1;
    }
    let only_in_brif = params
        .iter()
        .all(|p| uses.get(p).copied().unwrap_or(0) == in_brif.get(p).copied().unwrap_or(0));
    only_in_brif.then_some((index, taken, not_taken))
}

/// How many times each value is used (through its aliases too), by every instruction.
///
/// Counted once per round: threading a jump only moves uses of values that `B`'s `brif`
/// already used (so were already used outside any other candidate's `brif`), so counts from
/// the round's start never let a block through that has become unsafe.
fn count_uses(func: &Function) -> HashMap<Value, usize> {
    let mut uses = HashMap::new();
    for block in func.layout.blocks() {
        for inst in func.layout.block_insts(block) {
            for v in func.dfg.inst_values(inst) {
                *uses.entry(func.dfg.resolve_aliases(v)).or_default() += 1;
            }
        }
    }
    uses
}

/// The value of `v` when an `iconst` defines it.
fn constant(func: &Function, v: Value) -> Option<i64> {
    let ValueDef::Result(inst, _) = func.dfg.value_def(func.dfg.resolve_aliases(v)) else {
        return None;
    };
    match func.dfg.insts[inst] {
        InstructionData::UnaryImm {
            opcode: Opcode::Iconst,
            imm,
        } => Some(imm.bits()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::thread_known_statuses;
    use cranelift_codegen::ir::types::I64;
    use cranelift_codegen::ir::{
        AbiParam, Block, Function, InstBuilder, InstructionData, Signature, UserFuncName,
    };
    use cranelift_codegen::isa::CallConv;
    use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

    /// `f(c)`: a constant status 0 or 7 (picked by `c`) and a value meet in `merge`, which
    /// only tests the status; `uses_param_elsewhere` makes the not-taken side use the value
    /// parameter directly instead of through the `brif`.
    fn merge_of_known_statuses(uses_param_elsewhere: bool) -> (Function, [Block; 4]) {
        let mut sig = Signature::new(CallConv::SystemV);
        sig.params.push(AbiParam::new(I64));
        sig.returns.push(AbiParam::new(I64));
        let mut func = Function::with_name_signature(UserFuncName::default(), sig);
        let mut fctx = FunctionBuilderContext::new();
        let mut b = FunctionBuilder::new(&mut func, &mut fctx);
        let [entry, ok, trap, merge, fail, cont] = [(); 6].map(|_| b.create_block());
        b.append_block_params_for_function_params(entry);
        for p in [merge, merge, fail, cont] {
            b.append_block_param(p, I64);
        }
        b.switch_to_block(entry);
        let c = b.block_params(entry)[0];
        b.ins().brif(c, trap, &[], ok, &[]);
        b.switch_to_block(ok);
        let (v, zero) = (b.ins().iconst(I64, 42), b.ins().iconst(I64, 0));
        b.ins().jump(merge, &[v.into(), zero.into()]);
        b.switch_to_block(trap);
        let (v, seven) = (b.ins().iconst(I64, 0), b.ins().iconst(I64, 7));
        b.ins().jump(merge, &[v.into(), seven.into()]);
        b.switch_to_block(merge);
        let (value, status) = (b.block_params(merge)[0], b.block_params(merge)[1]);
        b.ins()
            .brif(status, fail, &[status.into()], cont, &[value.into()]);
        b.switch_to_block(fail);
        let st = b.block_params(fail)[0];
        b.ins().return_(&[st]);
        b.switch_to_block(cont);
        let passed = b.block_params(cont)[0];
        let result = if uses_param_elsewhere { value } else { passed };
        b.ins().return_(&[result]);
        b.seal_all_blocks();
        b.finalize(crate::opt::host_isa().unwrap().frontend_config());
        (func, [ok, trap, fail, cont])
    }

    /// Where the jump that ends `block` goes.
    fn jumps_to(func: &Function, block: Block) -> Block {
        let last = func.layout.last_inst(block).unwrap();
        match func.dfg.insts[last] {
            InstructionData::Jump { destination, .. } => destination.block(&func.dfg.value_lists),
            ref other => panic!("not a jump: {other:?}"),
        }
    }

    #[test]
    fn each_jump_with_a_constant_status_goes_to_the_side_its_status_selects() {
        let (mut func, [ok, trap, fail, cont]) = merge_of_known_statuses(false);
        assert_eq!(thread_known_statuses(&mut func), 2);
        assert_eq!(
            jumps_to(&func, ok),
            cont,
            "the 0 status continues:\n{}",
            func.display()
        );
        assert_eq!(
            jumps_to(&func, trap),
            fail,
            "the 7 status fails:\n{}",
            func.display()
        );
        cranelift_codegen::verify_function(
            &func,
            &cranelift_codegen::settings::Flags::new(cranelift_codegen::settings::builder()),
        )
        .unwrap();
    }

    #[test]
    fn a_merge_whose_parameters_are_used_beyond_its_test_is_left_alone() {
        let (mut func, _) = merge_of_known_statuses(true);
        assert_eq!(thread_known_statuses(&mut func), 0);
    }
}
