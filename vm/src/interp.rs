//! The interpreter: one loop over the register encoding of [`crate::lower`].
//!
//! Frames live in one growable register file per thread. A callee's frame starts at the
//! caller's first argument slot, so arguments are never copied and the result is written
//! where the caller expects it. Calls and returns push and pop a small frame record instead
//! of recursing on the native stack, so `--max-depth 1000000` needs no native stack at all.

use crate::bytecode::FuncId;
use crate::lower::Op;
use crate::program::{Definition, Program, Trap, PROFILE_BATCH};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A suspended caller.
struct Frame {
    def: *const Definition,
    pc: usize,
    base: usize,
}

/// What one VM thread keeps between calls into the interpreter.
pub struct ThreadState {
    regs: Vec<i64>,
    frames: Vec<Frame>,
    /// Per definition: calls / back-edges left before the next report to the shared profile.
    calls_left: Vec<u32>,
    back_edges_left: Vec<u32>,
    /// Back-edge batches until this thread next offers its CPU (see `offer_cpu`).
    batches_until_yield: u32,
}

/// How many back-edge batches a thread runs between offers of its CPU, when the program has
/// more running threads than the machine has CPUs: about every 16,000 loop iterations.
const BATCHES_PER_YIELD: u32 = 16;

impl ThreadState {
    pub fn new(definitions: usize) -> Self {
        ThreadState {
            regs: vec![0; 4096],
            frames: Vec::with_capacity(256),
            calls_left: vec![PROFILE_BATCH; definitions],
            back_edges_left: vec![PROFILE_BATCH; definitions],
            batches_until_yield: BATCHES_PER_YIELD,
        }
    }

    /// Adds the counts not yet reported to the shared profile (at thread exit).
    pub fn flush_profile(&mut self, program: &Program) {
        for def in 0..self.calls_left.len() {
            let calls = PROFILE_BATCH - self.calls_left[def];
            let back_edges = PROFILE_BATCH - self.back_edges_left[def];
            if calls + back_edges > 0 {
                program.report_hot(def as FuncId, calls, back_edges);
            }
            self.calls_left[def] = PROFILE_BATCH;
            self.back_edges_left[def] = PROFILE_BATCH;
        }
    }

    #[inline(always)]
    fn count_call(&mut self, program: &Program, def: FuncId) {
        // SAFETY: `def` indexes a definition, and both arrays have one entry per definition.
        let left = unsafe { self.calls_left.get_unchecked_mut(def as usize) };
        *left -= 1;
        if *left == 0 {
            *left = PROFILE_BATCH;
            program.report_hot(def, PROFILE_BATCH, 0);
        }
    }

    #[inline(always)]
    fn count_back_edge(&mut self, program: &Program, def: FuncId) {
        // SAFETY: as in `count_call`.
        let left = unsafe { self.back_edges_left.get_unchecked_mut(def as usize) };
        *left -= 1;
        if *left == 0 {
            *left = PROFILE_BATCH;
            program.report_hot(def, 0, PROFILE_BATCH);
            self.offer_cpu(program);
        }
    }

    /// A loop that runs long without calling anything may be a spin-wait for another thread
    /// (`mload` until a flag changes). When threads outnumber CPUs, the thread it waits for may
    /// not be running at all, and spinning out a whole scheduler time slice (milliseconds)
    /// delays it. So long loops offer the CPU now and then, as a VM safepoint would; a
    /// compute-bound loop loses only a context switch per few hundred microseconds.
    #[cold]
    fn offer_cpu(&mut self, program: &Program) {
        self.batches_until_yield -= 1;
        if self.batches_until_yield == 0 {
            self.batches_until_yield = BATCHES_PER_YIELD;
            if program.oversubscribed() {
                std::thread::yield_now();
            }
        }
    }

    /// Makes the register file at least `len` slots long. Moves it: callers re-derive pointers.
    /// Running out of memory for frames is the program's stack overflowing, not a crash.
    #[cold]
    fn grow(&mut self, len: usize) -> Result<(), Trap> {
        let new_len = len.max(self.regs.len() * 2);
        self.regs
            .try_reserve_exact(new_len - self.regs.len())
            .map_err(|_| Trap::StackOverflow)?;
        self.regs.resize(new_len, 0);
        Ok(())
    }
}

/// Runs `f(args)` to completion on this thread.
pub fn run(
    program: &Arc<Program>,
    st: &mut ThreadState,
    f: FuncId,
    args: &[i64],
) -> Result<i64, Trap> {
    let max_depth = program.config.max_depth as usize;
    let memory = program.memory();
    let mem = memory.as_ptr();
    let cells = memory.len() as u64;

    let mut def: &Definition = program.dispatch(f);
    st.count_call(program, def.func);
    if st.regs.len() < def.code.frame_size as usize {
        st.grow(def.code.frame_size as usize)?;
    }
    st.frames.clear();
    st.regs[..args.len()].copy_from_slice(args);
    st.regs[args.len()..def.code.slots as usize].fill(0);
    let mut ops: *const Op = def.code.ops.as_ptr();
    let mut pc: usize = 0;
    let mut base: usize = 0;
    let mut r: *mut i64 = st.regs.as_mut_ptr();

    // SAFETY (the whole loop): the verifier and lowering guarantee that
    // - every slot an op names is below its function's `frame_size`, and the register file
    //   holds `base + frame_size` slots for the running frame (checked at every call);
    // - every jump target is an op index of the same function, and no path runs past the
    //   last op (each path ends in `ret`), so `pc` stays inside `ops`;
    // - `r` is re-derived from `st.regs` after every call, return and growth.
    macro_rules! reg {
        ($slot:expr) => {
            *r.add($slot as usize)
        };
    }
    macro_rules! binary {
        ($dst:expr, $a:expr, $b:expr, $f:expr) => {{
            let (a, b): (i64, i64) = (reg!($a), $b);
            reg!($dst) = $f(a, b);
        }};
    }
    macro_rules! branch {
        ($cond:expr, $t:expr) => {
            if $cond {
                if ($t as usize) < pc {
                    st.count_back_edge(program, def.func);
                }
                pc = $t as usize;
            }
        };
    }
    macro_rules! divide {
        ($dst:expr, $a:expr, $b:expr, $method:ident) => {{
            let (a, b): (i64, i64) = (reg!($a), $b);
            if b == 0 {
                return Err(Trap::DivisionByZero);
            }
            reg!($dst) = $method(a, b);
        }};
    }
    macro_rules! cell {
        ($idx:expr) => {{
            let i = reg!($idx);
            if i as u64 >= cells {
                return Err(Trap::MemoryOutOfBounds);
            }
            &*mem.add(i as usize)
        }};
    }

    macro_rules! return_value {
        ($value:expr) => {{
            let value = $value;
            match st.frames.pop() {
                None => return Ok(value),
                Some(caller) => {
                    // The callee's frame starts at the caller's result slot.
                    *r = value;
                    // SAFETY: frames only hold definitions of this program.
                    def = &*caller.def;
                    ops = def.code.ops.as_ptr();
                    pc = caller.pc;
                    base = caller.base;
                    r = st.regs.as_mut_ptr().add(base);
                }
            }
        }};
    }

    unsafe {
        loop {
            let op = *ops.add(pc);
            pc += 1;
            match op {
                Op::Mov { dst, src } => reg!(dst) = reg!(src),
                Op::MovI { dst, imm } => reg!(dst) = imm,
                Op::Swap { a, b } => std::ptr::swap(r.add(a as usize), r.add(b as usize)),
                Op::Add { dst, a, b } => binary!(dst, a, reg!(b), i64::wrapping_add),
                Op::Sub { dst, a, b } => binary!(dst, a, reg!(b), i64::wrapping_sub),
                Op::Mul { dst, a, b } => binary!(dst, a, reg!(b), i64::wrapping_mul),
                Op::Div { dst, a, b } => divide!(dst, a, reg!(b), div_nonzero),
                Op::Rem { dst, a, b } => divide!(dst, a, reg!(b), rem_nonzero),
                Op::And { dst, a, b } => binary!(dst, a, reg!(b), |a, b| a & b),
                Op::Or { dst, a, b } => binary!(dst, a, reg!(b), |a, b| a | b),
                Op::Xor { dst, a, b } => binary!(dst, a, reg!(b), |a, b| a ^ b),
                Op::Shl { dst, a, b } => binary!(dst, a, reg!(b), shl),
                Op::Shr { dst, a, b } => binary!(dst, a, reg!(b), shr),
                Op::Ushr { dst, a, b } => binary!(dst, a, reg!(b), ushr),
                Op::Eq { dst, a, b } => binary!(dst, a, reg!(b), |a, b| (a == b) as i64),
                Op::Ne { dst, a, b } => binary!(dst, a, reg!(b), |a, b| (a != b) as i64),
                Op::Lt { dst, a, b } => binary!(dst, a, reg!(b), |a, b| (a < b) as i64),
                Op::Le { dst, a, b } => binary!(dst, a, reg!(b), |a, b| (a <= b) as i64),
                Op::Gt { dst, a, b } => binary!(dst, a, reg!(b), |a, b| (a > b) as i64),
                Op::Ge { dst, a, b } => binary!(dst, a, reg!(b), |a, b| (a >= b) as i64),
                Op::AddI { dst, a, imm } => binary!(dst, a, imm, i64::wrapping_add),
                Op::SubI { dst, a, imm } => binary!(dst, a, imm, i64::wrapping_sub),
                Op::MulI { dst, a, imm } => binary!(dst, a, imm, i64::wrapping_mul),
                Op::DivI { dst, a, imm } => divide!(dst, a, imm, div_nonzero),
                Op::RemI { dst, a, imm } => divide!(dst, a, imm, rem_nonzero),
                Op::AndI { dst, a, imm } => binary!(dst, a, imm, |a, b| a & b),
                Op::OrI { dst, a, imm } => binary!(dst, a, imm, |a, b| a | b),
                Op::XorI { dst, a, imm } => binary!(dst, a, imm, |a, b| a ^ b),
                Op::ShlI { dst, a, imm } => binary!(dst, a, imm, shl),
                Op::ShrI { dst, a, imm } => binary!(dst, a, imm, shr),
                Op::UshrI { dst, a, imm } => binary!(dst, a, imm, ushr),
                Op::EqI { dst, a, imm } => binary!(dst, a, imm, |a, b| (a == b) as i64),
                Op::NeI { dst, a, imm } => binary!(dst, a, imm, |a, b| (a != b) as i64),
                Op::LtI { dst, a, imm } => binary!(dst, a, imm, |a, b| (a < b) as i64),
                Op::LeI { dst, a, imm } => binary!(dst, a, imm, |a, b| (a <= b) as i64),
                Op::GtI { dst, a, imm } => binary!(dst, a, imm, |a, b| (a > b) as i64),
                Op::GeI { dst, a, imm } => binary!(dst, a, imm, |a, b| (a >= b) as i64),
                Op::Neg { dst, a } => reg!(dst) = reg!(a).wrapping_neg(),
                Op::Not { dst, a } => reg!(dst) = (reg!(a) == 0) as i64,
                Op::Jmp { t } => branch!(true, t),
                Op::Jz { a, t } => branch!(reg!(a) == 0, t),
                Op::Jnz { a, t } => branch!(reg!(a) != 0, t),
                Op::BrEq { a, b, t } => branch!(reg!(a) == reg!(b), t),
                Op::BrNe { a, b, t } => branch!(reg!(a) != reg!(b), t),
                Op::BrLt { a, b, t } => branch!(reg!(a) < reg!(b), t),
                Op::BrLe { a, b, t } => branch!(reg!(a) <= reg!(b), t),
                Op::BrGt { a, b, t } => branch!(reg!(a) > reg!(b), t),
                Op::BrGe { a, b, t } => branch!(reg!(a) >= reg!(b), t),
                Op::BrEqI { a, imm, t } => branch!(reg!(a) == imm, t),
                Op::BrNeI { a, imm, t } => branch!(reg!(a) != imm, t),
                Op::BrLtI { a, imm, t } => branch!(reg!(a) < imm, t),
                Op::BrLeI { a, imm, t } => branch!(reg!(a) <= imm, t),
                Op::BrGtI { a, imm, t } => branch!(reg!(a) > imm, t),
                Op::BrGeI { a, imm, t } => branch!(reg!(a) >= imm, t),
                Op::Call { f, base: args } => {
                    let callee = program.dispatch(f);
                    // Depth now is frames + 1; the call makes it frames + 2.
                    if st.frames.len() + 2 > max_depth {
                        return Err(Trap::StackOverflow);
                    }
                    st.count_call(program, callee.func);
                    let new_base = base + args as usize;
                    let needed = new_base + callee.code.frame_size as usize;
                    if needed > st.regs.len() {
                        st.grow(needed)?;
                    }
                    st.frames.push(Frame { def, pc, base });
                    r = st.regs.as_mut_ptr().add(new_base);
                    for slot in callee.code.params..callee.code.slots {
                        reg!(slot) = 0;
                    }
                    def = callee;
                    ops = def.code.ops.as_ptr();
                    pc = 0;
                    base = new_base;
                }
                Op::Ret { a } => return_value!(reg!(a)),
                Op::RetI { imm } => return_value!(imm),
                Op::Mload { dst, idx } => reg!(dst) = cell!(idx).load(Ordering::Acquire),
                Op::Mstore { idx, val } => cell!(idx).store(reg!(val), Ordering::Release),
                Op::MstoreI { idx, imm } => cell!(idx).store(imm, Ordering::Release),
                Op::AtomicAdd { dst, idx, val } => {
                    reg!(dst) = cell!(idx).fetch_add(reg!(val), Ordering::SeqCst);
                }
                Op::Cas {
                    dst,
                    idx,
                    expected,
                    new,
                } => {
                    let cell = cell!(idx);
                    let old = cell.compare_exchange(
                        reg!(expected),
                        reg!(new),
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                    reg!(dst) = old.unwrap_or_else(|current| current);
                }
                Op::Spawn { f, base: args } => {
                    let n = program.dispatch(f).code.params as usize;
                    let values = std::slice::from_raw_parts(r.add(args as usize), n);
                    reg!(args) = program.spawn(f, values)?;
                }
                Op::Join { dst, a } => reg!(dst) = program.join(reg!(a))?,
                Op::Patch { f, g } => program.patch(f, g),
                Op::Print { a } => program.output().print(reg!(a)),
                Op::Putc { a } => program.output().write(&[reg!(a) as u8]),
                Op::Assert { a } => {
                    if reg!(a) == 0 {
                        return Err(Trap::AssertionFailed);
                    }
                }
            }
        }
    }
}

#[inline(always)]
fn shl(a: i64, b: i64) -> i64 {
    a.wrapping_shl((b & 63) as u32)
}

#[inline(always)]
fn shr(a: i64, b: i64) -> i64 {
    a.wrapping_shr((b & 63) as u32)
}

#[inline(always)]
fn ushr(a: i64, b: i64) -> i64 {
    ((a as u64) >> (b & 63)) as i64
}

/// Both operands in `0..2^31`: a 32-bit divide gives the same answer, and on many x86 cores
/// `div r32` takes a fraction of the cycles of `idiv r64` (a "bypass slow division" test).
#[inline(always)]
fn fits_u31(a: i64, b: i64) -> bool {
    (a as u64 | b as u64) >> 31 == 0
}

/// `a div b` for `b != 0`; wrapping gives MIN / -1 = MIN (spec §3).
#[inline(always)]
fn div_nonzero(a: i64, b: i64) -> i64 {
    if fits_u31(a, b) {
        ((a as u32) / (b as u32)) as i64
    } else {
        a.wrapping_div(b)
    }
}

/// `a rem b` for `b != 0`; wrapping gives MIN % -1 = 0 (spec §3).
#[inline(always)]
fn rem_nonzero(a: i64, b: i64) -> i64 {
    if fits_u31(a, b) {
        ((a as u32) % (b as u32)) as i64
    } else {
        a.wrapping_rem(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn division_fast_path_agrees_with_the_spec() {
        let values = [
            0,
            1,
            2,
            3,
            7,
            13,
            -1,
            -2,
            -7,
            (1 << 31) - 1,
            1 << 31,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
            1 << 40,
        ];
        for &a in &values {
            for &b in values.iter().filter(|&&b| b != 0) {
                assert_eq!(div_nonzero(a, b), a.wrapping_div(b), "{a} div {b}");
                assert_eq!(rem_nonzero(a, b), a.wrapping_rem(b), "{a} rem {b}");
            }
        }
        assert_eq!(div_nonzero(i64::MIN, -1), i64::MIN);
        assert_eq!(rem_nonzero(i64::MIN, -1), 0);
        assert_eq!(div_nonzero(-7, 2), -3);
        assert_eq!(rem_nonzero(-7, 2), -1);
    }
}
