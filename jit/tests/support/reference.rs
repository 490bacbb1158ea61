//! A tiny evaluator of verified bytecode, straight from the spec: the "interpreter" behind
//! the test machine's stubs. Every call it makes goes through the callee's dispatch slot
//! with the arity bridge, so interpreted and native code call each other as in the VM.

use super::Machine;
use jitvm_jit::abi::{NativeRet, ThreadContext};
use jitvm_vm::Trap;
use jitvm_vm::{FuncId, Instr};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

/// Runs `f(args)` at call depth `depth`.
///
/// # Safety
/// `ctx` must be the calling VM thread's context.
pub unsafe fn eval(
    m: &Arc<Machine>,
    ctx: *mut ThreadContext,
    depth: u64,
    f: FuncId,
    args: &[i64],
) -> NativeRet {
    match run(m, ctx, depth, f, args) {
        Ok(v) => NativeRet::ok(v),
        Err(t) => NativeRet::trap(t),
    }
}

fn run(
    m: &Arc<Machine>,
    ctx: *mut ThreadContext,
    depth: u64,
    f: FuncId,
    args: &[i64],
) -> Result<i64, Trap> {
    if depth > m.max_depth {
        return Err(Trap::StackOverflow);
    }
    // Unlike the VM's interpreter, this one recurses on the native stack: below the limit
    // (where native code sends a call it has no stack for) it gives up rather than fault.
    let marker = 0u8;
    // SAFETY: ctx is this thread's context, alive while native code runs.
    if (std::hint::black_box(&marker) as *const u8 as usize) < unsafe { (*ctx).stack_limit } {
        return Err(Trap::StackOverflow);
    }
    let func = &m.module.functions[f as usize];
    let mut locals = vec![0i64; func.num_slots() as usize];
    locals[..args.len()].copy_from_slice(args);
    let mut stack: Vec<i64> = Vec::new();
    let cell = |i: i64| -> Result<&std::sync::atomic::AtomicI64, Trap> {
        m.memory
            .get(i as u64 as usize)
            .filter(|_| i >= 0)
            .ok_or(Trap::MemoryOutOfBounds)
    };
    let mut pc = 0;
    loop {
        let at = pc;
        if at > 0 && func.labels.iter().any(|l| l.target as usize == at) {
            m.stop_if_ended(); // a loop head: threads of an ended program stop here
        }
        let instr = func.code[pc];
        pc += 1;
        match instr {
            Instr::Push(c) => stack.push(c),
            Instr::Pop => {
                stack.pop();
            }
            Instr::Dup => stack.push(*stack.last().unwrap()),
            Instr::Swap => {
                let n = stack.len();
                stack.swap(n - 1, n - 2);
            }
            Instr::Over => stack.push(stack[stack.len() - 2]),
            Instr::Load(x) => stack.push(locals[x as usize]),
            Instr::Store(x) => locals[x as usize] = stack.pop().unwrap(),
            Instr::Bin(op) => {
                let b = stack.pop().unwrap();
                let a = stack.pop().unwrap();
                stack.push(op.eval(a, b).ok_or(Trap::DivisionByZero)?);
            }
            Instr::Neg => {
                let a = stack.pop().unwrap();
                stack.push(a.wrapping_neg());
            }
            Instr::Not => {
                let a = stack.pop().unwrap();
                stack.push((a == 0) as i64);
            }
            Instr::Jmp(t) => pc = t as usize,
            Instr::Jz(t) => {
                if stack.pop().unwrap() == 0 {
                    pc = t as usize;
                }
            }
            Instr::Jnz(t) => {
                if stack.pop().unwrap() != 0 {
                    pc = t as usize;
                }
            }
            Instr::Call(g) => {
                let p = m.module.functions[g as usize].params.len();
                let args = stack.split_off(stack.len() - p);
                // SAFETY: the slot points at live code for g's arity; ctx is this thread's.
                let r = unsafe { m.space.call(m.entry(g), ctx, depth + 1, &args) };
                stack.push(r.into_result()?);
            }
            Instr::Ret => return Ok(stack.pop().unwrap()),
            Instr::Mload => {
                let i = stack.pop().unwrap();
                stack.push(cell(i)?.load(SeqCst));
            }
            Instr::Mstore => {
                let v = stack.pop().unwrap();
                let i = stack.pop().unwrap();
                cell(i)?.store(v, SeqCst);
            }
            Instr::AtomicAdd => {
                let d = stack.pop().unwrap();
                let i = stack.pop().unwrap();
                stack.push(cell(i)?.fetch_add(d, SeqCst));
            }
            Instr::Cas => {
                let new = stack.pop().unwrap();
                let expected = stack.pop().unwrap();
                let i = stack.pop().unwrap();
                let old = match cell(i)?.compare_exchange(expected, new, SeqCst, SeqCst) {
                    Ok(v) | Err(v) => v,
                };
                stack.push(old);
            }
            Instr::Msize => stack.push(m.module.memory_cells as i64),
            Instr::Spawn(g) => {
                let p = m.module.functions[g as usize].params.len();
                let args = stack.split_off(stack.len() - p);
                stack.push(m.spawn(g, args)?);
            }
            Instr::Join => {
                let h = stack.pop().unwrap();
                stack.push(m.join(h)?);
            }
            Instr::Patch(a, b) => m.patch(a, b),
            Instr::Print => m.print(stack.pop().unwrap()),
            Instr::Putc => m.putc(stack.pop().unwrap()),
            Instr::Assert => {
                if stack.pop().unwrap() == 0 {
                    return Err(Trap::AssertionFailed);
                }
            }
            Instr::Nop => {}
        }
    }
}
