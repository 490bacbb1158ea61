//! The interpreter: one loop over the register code of [`crate::regcode`], running on a
//! thread's [`ThreadState`].
//!
//! A callee's frame starts at the caller's first argument slot, so arguments are never
//! copied and the result is written where the caller expects it.

use crate::bytecode::FuncId;
use crate::entry::Entry;
use crate::program::{Definition, Program};
use crate::regcode::Op;
use crate::state::{Frame, ThreadState};
use crate::trap::Trap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Runs `f(args)` on this thread until it returns, and returns its result (or its trap).
///
/// `depth_base` is how many calls are already active on this thread below this run (0 for a
/// thread's first run): `f` runs at depth `depth_base + 1`, and a call that would go deeper
/// than `--max-depth` traps `stack overflow`, counting those levels too.
///
/// Reentrant: native code may call `run` while another run on the same thread is suspended
/// lower on the native stack. This run pushes its frames above those `st` holds and puts its
/// registers at `st.reg_top` and up, so it never touches the suspended run's frames or
/// registers; when it returns, trap or not, `st` holds exactly the frames it held before. A
/// run that calls out must set `st.reg_top` past its own frame first, and re-derive its
/// register pointer afterwards (a nested run may grow, and so move, the register file).
pub fn run<'p>(
    program: &'p Arc<Program>,
    st: &mut ThreadState,
    def: &'p Definition,
    args: &[i64],
    depth_base: u32,
) -> Result<i64, Trap> {
    let frame_base = st.frames.len();
    let result = execute(program, st, def, args, depth_base as usize, frame_base);
    // A trap leaves this run's frames behind; the suspended runs below find theirs on top.
    st.frames.truncate(frame_base);
    result
}

/// A call from the interpreter to the native `entry` of `callee`, with the arguments at
/// `argv` (in the caller's frame, which ends at register `top`); `frame_limit` is the run's
/// (see `execute`). Out of line, and given only what the loop keeps live anyway, so that the
/// interpreter loop keeps its registers for interpreted calls.
///
/// # Safety
/// `argv` points at `callee`'s parameters in `st`'s register file.
#[inline(never)]
unsafe fn call_out(
    program: &Arc<Program>,
    st: &mut ThreadState,
    entry: Entry,
    callee: &Definition,
    frame_limit: usize,
    argv: *const i64,
    top: usize,
) -> Result<i64, Trap> {
    // The callee's depth as the run's depth check counts it: the check refuses a call when
    // frames + 2 > frame_limit, that is when the callee's depth would pass max_depth.
    let call_native = st.native_call.expect("checked by the caller");
    let depth = program.config.max_depth as usize - frame_limit + st.frames.len() + 2;
    let n = callee.code.params as usize;
    let mut args = [0i64; 8];
    // SAFETY: by the caller's contract; copied out before a nested run may move the file.
    args[..n].copy_from_slice(unsafe { std::slice::from_raw_parts(argv, n) });
    // A run nested under the native call (native code calling back into the interpreter)
    // starts above the caller's frame.
    let saved_top = std::mem::replace(&mut st.reg_top, top);
    let result = call_native(program, st, entry, depth as u32, &args[..n]);
    st.reg_top = saved_top;
    // Counted once the entry is no longer needed: a profile batch reports a safepoint,
    // where no code address may be held.
    st.count_call(program, callee.func);
    result
}

/// On-stack replacement: if `def` has a native entry at the loop header at op `header`,
/// runs the rest of the frame at `base` (at call depth `depth`) there and returns its
/// result; `None` leaves the frame to the interpreter. The frame moves as it is at the
/// header: locals and the operand stack in their canonical slots, `R[0 .. slots + height]`.
/// The interpreter has checked the depth, counted the call and polled; native code polls at
/// every back-edge from here on.
#[cold]
#[inline(never)]
fn enter_osr(
    program: &Arc<Program>,
    st: &mut ThreadState,
    def: &Definition,
    header: u32,
    base: usize,
    depth: usize,
) -> Option<Result<i64, Trap>> {
    let entry = program.osr_entry(def.func, header)?;
    let call_native = st.native_call_here()?;
    let instr = def.code.label_at(header)?;
    let func = &program.module.functions[def.func as usize];
    let n = def.code.slots as usize + func.heights[instr as usize] as usize;
    let frame = st.regs[base..base + n].to_vec();
    program.osr_transfers[def.func as usize].fetch_add(1, Ordering::Relaxed);
    log::info!(
        target: "jitvm::trace",
        "osr {}: the interpreter's frame enters native code at instruction {instr} with {} \
         locals and {} stack values",
        func.name,
        def.code.slots,
        n - def.code.slots as usize
    );
    // A run nested under the native code starts above this frame.
    let saved_top = std::mem::replace(&mut st.reg_top, base + def.code.frame_size as usize);
    let result = call_native(program, st, entry, depth as u32, &[frame.as_ptr() as i64]);
    st.reg_top = saved_top;
    Some(result)
}

/// Runs, in the interpreter, the definition a call to `f` would run now; see [`run`].
pub fn run_function(
    program: &Arc<Program>,
    st: &mut ThreadState,
    f: FuncId,
    args: &[i64],
    depth_base: u32,
) -> Result<i64, Trap> {
    let def = program.definition(program.entry(f));
    run(program, st, def, args, depth_base)
}

/// The loop of [`run`]; its frames are those above `frame_base`.
fn execute<'p>(
    program: &'p Arc<Program>,
    st: &mut ThreadState,
    mut def: &'p Definition,
    args: &[i64],
    depth_base: usize,
    frame_base: usize,
) -> Result<i64, Trap> {
    let max_depth = program.config.max_depth as usize;
    if depth_base >= max_depth {
        return Err(Trap::StackOverflow);
    }
    // The running frame is at depth depth_base + (frames.len() - frame_base) + 1, so a call
    // is refused when frames.len() + 2 > frame_limit: one compare, as in a thread's first run.
    let frame_limit = max_depth - depth_base + frame_base;
    let memory = program.memory();
    let mem = memory.as_ptr();
    let cells = memory.len() as u64;

    st.count_call(program, def.func);
    let mut base: usize = st.reg_top;
    let needed = base + def.code.frame_size as usize;
    if st.regs.len() < needed {
        st.grow(needed)?;
    }
    st.regs[base..base + args.len()].copy_from_slice(args);
    st.regs[base + args.len()..base + def.code.slots as usize].fill(0);
    let mut ops: *const Op = def.code.ops.as_ptr();
    let mut pc: usize = 0;
    // SAFETY: `base` is within the register file, just grown to hold the frame.
    let mut r: *mut i64 = unsafe { st.regs.as_mut_ptr().add(base) };

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
    // A backward jump counts a back-edge; a count that completes a batch may move the
    // frame into native code at the loop header (on-stack replacement), whose result is
    // then this frame's `ret`.
    macro_rules! branch {
        ($cond:expr, $t:expr) => {
            if $cond {
                if ($t as usize) < pc
                    && st.count_back_edge(program, def.func, $t as u32)
                    && st.native_call.is_some()
                {
                    let depth = max_depth - frame_limit + st.frames.len() + 1;
                    if let Some(result) = enter_osr(program, st, def, $t as u32, base, depth) {
                        r = st.regs.as_mut_ptr().add(base);
                        return_value!(result?);
                        continue;
                    }
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
            let frames = st.frames.len();
            if frames == frame_base {
                return Ok(value);
            }
            // SAFETY: this run pushed every frame above `frame_base`, so there is one to pop
            // (`Vec::pop` would test for an empty vector again).
            let caller = st.frames.as_ptr().add(frames - 1).read();
            st.frames.set_len(frames - 1);
            // The callee's frame starts at the caller's result slot.
            *r = value;
            // SAFETY: frames only hold definitions of this program.
            def = &*caller.def;
            ops = def.code.ops.as_ptr();
            pc = caller.pc;
            base = caller.base;
            r = st.regs.as_mut_ptr().add(base);
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
                    let entry = program.entry(f);
                    let (callee, native) = program.resolve(entry);
                    if st.frames.len() + 2 > frame_limit {
                        return Err(Trap::StackOverflow);
                    }
                    if native && st.native_call_here().is_some() {
                        let top = base + def.code.frame_size as usize;
                        let argv = r.add(args as usize);
                        let result = call_out(program, st, entry, callee, frame_limit, argv, top);
                        r = st.regs.as_mut_ptr().add(base);
                        reg!(args) = result?;
                        continue;
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
                    let n = program.module.functions[f as usize].params.len();
                    let values = std::slice::from_raw_parts(r.add(args as usize), n);
                    reg!(args) = program.spawn(f, values)?;
                }
                Op::Join { dst, a } => reg!(dst) = program.join(reg!(a))?,
                Op::Patch { f, g } => program.patch(f, g),
                Op::Print { a } => program.print(reg!(a)),
                Op::Putc { a } => program.putc(reg!(a)),
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
    use crate::{parse_module, RunConfig};

    /// `down(n)` returns n after n + 1 levels of calls; `crash()` divides by zero.
    const DOWN: &str = "func down(n)\n load n\n jz zero\n load n\n push 1\n sub\n call down\n push 1\n add\n ret\nzero:\n push 0\n ret\nend\nfunc crash()\n push 1\n push 0\n div\n ret\nend\n";

    fn runtime() -> Arc<jitvm_runtime::Runtime> {
        jitvm_runtime::Runtime::new(jitvm_runtime::Config::default()).unwrap()
    }

    fn program(max_depth: u32) -> Arc<Program> {
        let module = Arc::new(parse_module(DOWN.as_bytes()).unwrap());
        let config = RunConfig {
            max_depth,
            ..RunConfig::default()
        };
        let no_threads = Box::new(|_: &Arc<Program>, _: FuncId, _: &[i64]| unreachable!());
        Program::new(module, config, runtime(), no_threads, None)
    }

    /// A thread state as a run suspended in native code leaves it: two frames of its own and
    /// registers below `top` in use, all set to -1.
    fn suspended(program: &Program, top: usize) -> ThreadState {
        let mut st = ThreadState::new(program);
        let def: *const Definition = &program.definitions()[0];
        for i in 0..2 {
            st.frames.push(Frame {
                def,
                pc: 7 + i,
                base: 10 * i,
            });
        }
        st.regs[..top].fill(-1);
        st.reg_top = top;
        st
    }

    fn assert_untouched(st: &ThreadState, top: usize) {
        let frames: Vec<_> = st.frames.iter().map(|f| (f.pc, f.base)).collect();
        assert_eq!(frames, [(7, 0), (8, 10)]);
        assert!(st.regs[..top].iter().all(|&v| v == -1));
        assert_eq!(st.reg_top, top);
    }

    #[test]
    fn a_nested_run_leaves_the_suspended_runs_frames_and_registers_alone() {
        let program = program(10_000);
        // Near the end of the first register file, so the nested run grows (moves) it too.
        let top = ThreadState::new(&program).regs.len() - 10;
        let mut st = suspended(&program, top);
        assert_eq!(run_function(&program, &mut st, 0, &[3000], 3), Ok(3000));
        assert_untouched(&st, top);
        // Again, on the same state: nothing was left behind.
        assert_eq!(run_function(&program, &mut st, 0, &[5], 3), Ok(5));
        assert_untouched(&st, top);
    }

    #[test]
    fn a_trap_in_a_nested_run_leaves_the_suspended_run_alone() {
        let program = program(10_000);
        let mut st = suspended(&program, 100);
        assert_eq!(
            run_function(&program, &mut st, 1, &[], 3),
            Err(Trap::DivisionByZero)
        );
        assert_untouched(&st, 100);
        let shallow = self::program(5);
        let mut st = suspended(&shallow, 100);
        assert_eq!(
            run_function(&shallow, &mut st, 0, &[10], 0),
            Err(Trap::StackOverflow)
        );
        assert_untouched(&st, 100);
    }

    #[test]
    fn a_run_counts_depth_from_its_base() {
        // down(n) runs at depths depth_base + 1 ..= depth_base + n + 1.
        let program = program(50);
        let mut st = ThreadState::new(&program);
        let mut down =
            |n: i64, depth_base: u32| run_function(&program, &mut st, 0, &[n], depth_base);
        assert_eq!(down(49, 0), Ok(49));
        assert_eq!(down(50, 0), Err(Trap::StackOverflow));
        assert_eq!(down(39, 10), Ok(39));
        assert_eq!(down(40, 10), Err(Trap::StackOverflow));
        assert_eq!(down(0, 49), Ok(0));
        assert_eq!(down(0, 50), Err(Trap::StackOverflow));
        assert_eq!(down(0, u32::MAX), Err(Trap::StackOverflow));
    }

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
