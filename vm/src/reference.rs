//! The spec (§3) read literally, for tests: an operand stack and a
//! locals array per call, one match arm per instruction, no lowering, no registers. Tests run
//! a tier and this evaluator on the same module and compare; it is kept this plain so that a
//! difference is a bug in the tier, not in the oracle.
//!
//! What differs between test hosts (how a call is made, threads, output, stopping an ended
//! program) is a [`Host`]. Operator semantics are [`BinOp::eval`], shared with every tier.
//! A new instruction is one new arm in [`run`]; the match has no catch-all, so the compiler
//! asks for it.

use crate::bytecode::{BinOp, FuncId, Instr, Module};
use crate::trap::Trap;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering::SeqCst;

/// What the evaluator leaves to the test that runs it.
///
/// Hosts of programs without threads or output may leave those methods out: they panic,
/// which a generator that emits no such instruction never reaches.
pub trait Host {
    /// The module's shared memory (`memory_cells` cells).
    fn memory(&self) -> &[AtomicI64];

    /// `call f` with `args` (f's parameters, in order): recursing into [`run`], or through
    /// whatever the host calls functions by.
    fn call(&mut self, f: FuncId, args: &[i64]) -> Result<i64, Trap>;

    /// Called before each instruction a label names (the first excepted): the loop heads,
    /// where the host may stop a thread of a program that has ended.
    fn at_label(&mut self) {}

    fn spawn(&mut self, f: FuncId, args: Vec<i64>) -> Result<i64, Trap> {
        unimplemented!("this host runs no threads: spawn f{f}({args:?})")
    }

    fn join(&mut self, handle: i64) -> Result<i64, Trap> {
        unimplemented!("this host runs no threads: join {handle}")
    }

    fn patch(&mut self, f: FuncId, g: FuncId) {
        unimplemented!("this host cannot patch: patch f{f} f{g}")
    }

    fn print(&mut self, value: i64) {
        unimplemented!("this host has no output: print {value}")
    }

    fn putc(&mut self, value: i64) {
        unimplemented!("this host has no output: putc {value}")
    }
}

/// Runs `f(args)` of a verified `module` to its `ret` or first trap.
pub fn run<H: Host>(host: &mut H, module: &Module, f: FuncId, args: &[i64]) -> Result<i64, Trap> {
    let func = &module.functions[f as usize];
    let mut locals = vec![0i64; func.num_slots() as usize];
    locals[..args.len()].copy_from_slice(args);
    let mut stack: Vec<i64> = Vec::with_capacity(func.max_stack as usize);
    let cell = |host: &H, i: i64| -> Result<usize, Trap> {
        let cells = host.memory().len();
        usize::try_from(i)
            .ok()
            .filter(|&i| i < cells)
            .ok_or(Trap::MemoryOutOfBounds)
    };
    // The verifier proved every pop finds a value and every call finds its arguments.
    fn pop(stack: &mut Vec<i64>) -> i64 {
        stack.pop().expect("verified: the stack holds a value")
    }
    let params = |g: FuncId| module.functions[g as usize].num_params() as usize;
    let mut pc = 0usize;
    loop {
        if pc > 0 && func.labels.iter().any(|l| l.target as usize == pc) {
            host.at_label();
        }
        let instr = func.code[pc];
        pc += 1;
        match instr {
            Instr::Push(c) => stack.push(c),
            Instr::Bin(op) => {
                let b = pop(&mut stack);
                let a = pop(&mut stack);
                stack.push(binary(op, a, b)?);
            }
            Instr::Pop => {
                pop(&mut stack);
            }
            Instr::Dup => {
                let a = pop(&mut stack);
                stack.extend([a, a]);
            }
            Instr::Swap => {
                let b = pop(&mut stack);
                let a = pop(&mut stack);
                stack.extend([b, a]);
            }
            Instr::Over => {
                let b = pop(&mut stack);
                let a = pop(&mut stack);
                stack.extend([a, b, a]);
            }
            Instr::Load(x) => stack.push(locals[x as usize]),
            Instr::Store(x) => locals[x as usize] = pop(&mut stack),
            Instr::Neg => {
                let a = pop(&mut stack);
                stack.push(a.wrapping_neg());
            }
            Instr::Not => {
                let a = pop(&mut stack);
                stack.push((a == 0) as i64);
            }
            Instr::Jmp(t) => pc = t as usize,
            Instr::Jz(t) => {
                if pop(&mut stack) == 0 {
                    pc = t as usize;
                }
            }
            Instr::Jnz(t) => {
                if pop(&mut stack) != 0 {
                    pc = t as usize;
                }
            }
            Instr::Call(g) => {
                let args = stack.split_off(stack.len() - params(g));
                stack.push(host.call(g, &args)?);
            }
            Instr::Ret => return Ok(pop(&mut stack)),
            Instr::Mload => {
                let i = cell(host, pop(&mut stack))?;
                stack.push(host.memory()[i].load(SeqCst));
            }
            Instr::Mstore => {
                let v = pop(&mut stack);
                let i = cell(host, pop(&mut stack))?;
                host.memory()[i].store(v, SeqCst);
            }
            Instr::AtomicAdd => {
                let d = pop(&mut stack);
                let i = cell(host, pop(&mut stack))?;
                stack.push(host.memory()[i].fetch_add(d, SeqCst));
            }
            Instr::Cas => {
                let new = pop(&mut stack);
                let expected = pop(&mut stack);
                let i = cell(host, pop(&mut stack))?;
                let old = host.memory()[i].compare_exchange(expected, new, SeqCst, SeqCst);
                stack.push(old.unwrap_or_else(|v| v));
            }
            Instr::Msize => stack.push(module.memory_cells as i64),
            Instr::Spawn(g) => {
                let args = stack.split_off(stack.len() - params(g));
                stack.push(host.spawn(g, args)?);
            }
            Instr::Join => {
                let h = pop(&mut stack);
                stack.push(host.join(h)?);
            }
            Instr::Patch(a, b) => host.patch(a, b),
            Instr::Print => host.print(pop(&mut stack)),
            Instr::Putc => host.putc(pop(&mut stack)),
            Instr::Assert => {
                if pop(&mut stack) == 0 {
                    return Err(Trap::AssertionFailed);
                }
            }
            Instr::Nop => {}
        }
    }
}

/// `a OP b`, or the trap it raises.
fn binary(op: BinOp, a: i64, b: i64) -> Result<i64, Trap> {
    op.eval(a, b).ok_or(Trap::DivisionByZero)
}
