//! The native ABI end to end: traps leave through every caller with their status and
//! restore callee-saved registers, depth is counted exactly as the interpreter does, the
//! native stack guard traps instead of faulting, stubs and native code pass 0..8 parameters
//! (stack parameters included) both ways, `rsp` is aligned at every call, headers are right.

#![cfg(target_arch = "x86_64")]

mod support;

use jitvm_jit::abi::{read_header, status_of, trap_of, Callbacks, NativeRet, ThreadContext};
use jitvm_jit::stubs::{compile_stub, MAX_STUB_SIZE};
use jitvm_vm::Trap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use support::code_space::CodeSpace;
use support::{Machine, Tier};

const DOWN: &str = "func down(n)\n load n\n jz bottom\n load n\n push 1\n sub\n call down\n \
                    push 1\n add\n ret\nbottom:\n push 0\n ret\nend\n\
                    func main()\n push 0\n ret\nend\n";

/// `down(n)` called at depth 1 recurses to depth n + 1.
fn down(m: &Arc<Machine>, n: i64) -> Result<i64, Trap> {
    let m2 = Arc::clone(m);
    std::thread::Builder::new()
        .stack_size(m.thread_stack_bytes())
        .spawn(move || m2.run_here(m2.func_id("down"), &[n]))
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn depth_overflow_traps_exactly_past_max_depth() {
    for max in [1u64, 2, 3, 100, 10_000, 1_000_000] {
        let m = Machine::load(DOWN, max);
        let n = max as i64 - 1;
        assert_eq!(down(&m, n), Ok(n), "depth {max} is allowed");
        assert_eq!(down(&m, n + 1), Err(Trap::StackOverflow), "depth {max} + 1");
    }
    let m = Machine::load(DOWN, 0);
    assert_eq!(
        down(&m, 0),
        Err(Trap::StackOverflow),
        "max_depth 0: no call at all"
    );
}

#[test]
fn depth_is_counted_the_same_through_interpreter_stubs() {
    for max in [1u64, 2, 50] {
        for interp_every in [1usize, 2] {
            let m = Machine::load_with(DOWN, max, |_, _| {
                if interp_every == 1 {
                    Tier::Interp
                } else {
                    Tier::Native
                }
            });
            let n = max as i64 - 1;
            assert_eq!(down(&m, n), Ok(n));
            assert_eq!(down(&m, n + 1), Err(Trap::StackOverflow));
        }
    }
}

/// Native code short of stack sends the call to the interpreter (`call_interp`) instead of
/// faulting; this harness's interpreter, which recurses on the native stack itself, then
/// reports `stack overflow` (the VM's interpreter, whose frames are on the heap, goes on).
#[test]
fn native_code_short_of_stack_runs_the_call_in_the_interpreter_instead_of_faulting() {
    let m = Machine::load(DOWN, 10_000_000);
    let m2 = Arc::clone(&m);
    let results = std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(move || {
            // Leave native code about 1 MiB of this 16 MiB stack.
            let limit = support::stack_low() + (15 << 20);
            let f = m2.func_id("down");
            let deep = m2.run_here_with(f, &[1_000_000], |ctx| ctx.stack_limit = limit);
            let sent = m2.interp_calls.load(Ordering::Relaxed);
            let shallow = m2.run_here_with(f, &[1_000], |ctx| ctx.stack_limit = limit);
            (deep, sent, shallow)
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(results, (Err(Trap::StackOverflow), 1, Ok(1_000)));
    assert_eq!(
        m.interp_calls.load(Ordering::Relaxed),
        1,
        "the shallow run stays native"
    );
}

#[test]
fn traps_in_nested_calls_reach_main_with_their_reason_and_keep_earlier_output() {
    let cases = [
        ("push 1\n load x\n div", Trap::DivisionByZero),
        ("push 1\n load x\n rem", Trap::DivisionByZero),
        ("load x\n assert\n push 0", Trap::AssertionFailed),
        ("load x\n push 1\n sub\n mload", Trap::MemoryOutOfBounds),
        ("push 4\n load x\n mstore\n push 0", Trap::MemoryOutOfBounds),
        (
            "load x\n push 1\n sub\n push 1\n atomic_add",
            Trap::MemoryOutOfBounds,
        ),
        ("push 99\n push 0\n push 1\n cas", Trap::MemoryOutOfBounds),
        ("push 77\n join", Trap::InvalidThreadHandle),
    ];
    for (body, trap) in cases {
        let src = format!(
            "memory 4\n\
             func c(x)\n push 3\n print\n {body}\n ret\nend\n\
             func b(x)\n push 2\n print\n push 10\n push 20\n load x\n call c\n add\n add\n ret\nend\n\
             func a(x)\n push 1\n print\n load x\n call b\n push 5\n print\n ret\nend\n\
             func main()\n push 0\n call a\n print\n push 0\n ret\nend\n"
        );
        for tiers in [
            [Tier::Native; 4],
            [Tier::Native, Tier::Interp, Tier::Native, Tier::Native],
        ] {
            let m = Machine::load_with(&src, 100, |i, _| tiers[i]);
            let out = m.run_main();
            assert_eq!(out.result, Err(trap), "{body} with {tiers:?}");
            assert_eq!(out.stdout(), "1\n2\n3\n", "{body}");
        }
    }
}

std::arch::global_asm!(
    // (entry, ctx, depth, p0) -> rax: 0 if rbx, rbp, r12..r15 survived the call.
    ".globl jitvm_test_preserves",
    "jitvm_test_preserves:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "sub rsp, 8",
    "mov rax, rdi",
    "mov rdi, rsi",
    "mov rsi, rdx",
    "mov rdx, rcx",
    "mov rbx, 0x1111",
    "mov rbp, 0x2222",
    "mov r12, 0x3333",
    "mov r13, 0x4444",
    "mov r14, 0x5555",
    "mov r15, 0x6666",
    "call rax",
    "xor eax, eax",
    "cmp rbx, 0x1111",
    "setne cl",
    "or al, cl",
    "cmp rbp, 0x2222",
    "setne cl",
    "or al, cl",
    "cmp r12, 0x3333",
    "setne cl",
    "or al, cl",
    "cmp r13, 0x4444",
    "setne cl",
    "or al, cl",
    "cmp r14, 0x5555",
    "setne cl",
    "or al, cl",
    "cmp r15, 0x6666",
    "setne cl",
    "or al, cl",
    "add rsp, 8",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    // Callbacks that report rsp's alignment at their entry: 0 when 16-aligned before the call.
    ".globl jitvm_test_align_status",
    "jitvm_test_align_status:",
    "lea rax, [rsp + 8]",
    "and eax, 15",
    "ret",
    ".globl jitvm_test_align_ret",
    "jitvm_test_align_ret:",
    "lea rdx, [rsp + 8]",
    "and edx, 15",
    "xor eax, eax",
    "ret",
);

extern "sysv64" {
    fn jitvm_test_preserves(entry: usize, ctx: *mut ThreadContext, depth: u64, p0: i64) -> u64;
    fn jitvm_test_align_status();
    fn jitvm_test_align_ret();
}

#[test]
fn callee_saved_registers_survive_normal_returns_and_trap_exits() {
    // Uses all five local registers and traps (or not) three calls deep.
    let src = "func f(a)\n local b\n local c\n local d\n local e\n \
               load a\n store b\n load a\n store c\n load a\n store d\n load a\n store e\n \
               load a\n call g\n load b\n add\n load c\n add\n load d\n add\n load e\n add\n ret\nend\n\
               func g(x)\n push 100\n load x\n div\n ret\nend\n\
               func main()\n push 0\n ret\nend\n";
    for tier in [Tier::Native, Tier::Interp] {
        let m = Machine::load_with(src, 100, |i, _| if i == 1 { tier } else { Tier::Native });
        let f = m.entry(m.func_id("f"));
        let m2 = Arc::clone(&m);
        let flags = std::thread::spawn(move || {
            [1, 0].map(|a| {
                // SAFETY: f takes one parameter; ctx is this thread's context.
                m2.with_context(|ctx| unsafe { jitvm_test_preserves(f, ctx, 1, a) })
            })
        })
        .join()
        .unwrap();
        assert_eq!(flags, [0, 0], "g {tier:?}");
    }
}

#[test]
fn rsp_is_16_byte_aligned_at_every_call_into_rust() {
    // Print at several stack heights and after calls with stack arguments; the `print`
    // callback returns a nonzero status when rsp was misaligned, which would trap.
    let mut src = String::from(
        "func h(a, b, c, d, e, f, g, i)\n load i\n print\n load a\n ret\nend\n\
         func k(a, b, c, d, e)\n load e\n print\n load a\n ret\nend\n\
         func main()\n push 1\n print\n",
    );
    for depth in 0..5 {
        for v in 0..depth {
            let _ = writeln!(src, " push {v}");
        }
        src.push_str(" push 9\n print\n");
        src.push_str(
            " push 1\n push 2\n push 3\n push 4\n push 5\n push 6\n push 7\n push 8\n call h\n pop\n",
        );
        src.push_str(" push 1\n push 2\n push 3\n push 4\n push 5\n call k\n pop\n");
        for _ in 0..depth {
            src.push_str(" pop\n");
        }
    }
    src.push_str(" push 0\n ret\nend\n");
    let module = jitvm_vm::parse_module(src.as_bytes()).unwrap();
    let mut callbacks = support::callbacks();
    callbacks.print = jitvm_test_align_status as *const () as usize;
    let m = Machine::from_module_with_callbacks(module, 100, callbacks);
    assert_eq!(m.run_main().result, Ok(0));
}

/// What the recording `call_interp` saw.
static SEEN: Mutex<Vec<(u64, usize, Vec<i64>)>> = Mutex::new(Vec::new());

extern "sysv64" fn recording_call_interp(
    _ctx: *mut ThreadContext,
    depth: u64,
    def_addr: usize,
    args: *const i64,
) -> NativeRet {
    let p = def_addr >> 8; // the tests encode the parameter count in def_addr
                           // SAFETY: the stub passes p parameters in an array.
    let args = unsafe { std::slice::from_raw_parts(args, p) }.to_vec();
    let value = args
        .iter()
        .fold(depth as i64, |acc, &a| acc.wrapping_mul(31).wrapping_add(a));
    SEEN.lock().unwrap().push((depth, def_addr, args));
    NativeRet {
        value,
        status: 0xABCD, // passed back unchanged, whatever it is
    }
}

#[test]
fn stubs_pass_0_to_8_parameters_and_return_rax_rdx_unchanged() {
    let space = CodeSpace::new();
    let callbacks = Callbacks {
        call_interp: recording_call_interp as *const () as usize,
        ..Callbacks::default()
    };
    let mut batch = space.batch();
    let mut entries = Vec::new();
    for p in 0..=8usize {
        let def_addr = p << 8;
        let (base, code) = batch
            .stage(MAX_STUB_SIZE, |addr| {
                compile_stub(p, def_addr, &callbacks, addr)
            })
            .unwrap();
        entries.push((p, def_addr, base + code.entry_offset));
    }
    batch.commit();
    for (p, def_addr, entry) in entries {
        // SAFETY: reading the header of a live stub.
        assert_eq!(unsafe { read_header(entry) }, (def_addr, false));
        let args: Vec<i64> = (0..p as i64).map(|k| (k + 1) * 1_000_003 - 7).collect();
        SEEN.lock().unwrap().clear();
        let mut ctx = dummy_context();
        // SAFETY: a stub for exactly p parameters; the callback ignores ctx.
        let r = unsafe { space.call(entry, &mut ctx, 42 + p as u64, &args) };
        let seen = SEEN.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![(42 + p as u64, def_addr, args.clone())],
            "{p} params"
        );
        let value = args.iter().fold(42 + p as i64, |acc, &a| {
            acc.wrapping_mul(31).wrapping_add(a)
        });
        assert_eq!(
            r,
            NativeRet {
                value,
                status: 0xABCD
            }
        );
    }
}

#[test]
fn stubs_call_interp_with_rsp_aligned() {
    let space = CodeSpace::new();
    let callbacks = Callbacks {
        call_interp: jitvm_test_align_ret as *const () as usize,
        ..Callbacks::default()
    };
    for p in 0..=8usize {
        let mut batch = space.batch();
        let (base, code) = batch
            .stage(MAX_STUB_SIZE, |addr| compile_stub(p, 8, &callbacks, addr))
            .unwrap();
        batch.commit();
        let mut ctx = dummy_context();
        let args = vec![1i64; p];
        // SAFETY: a stub for exactly p parameters.
        let r = unsafe { space.call(base + code.entry_offset, &mut ctx, 1, &args) };
        assert_eq!(r.status, 0, "{p} params: misaligned");
    }
}

fn dummy_context() -> ThreadContext {
    ThreadContext {
        memory_base: std::ptr::null(),
        memory_cells: 0,
        max_depth: 100,
        stack_limit: 0,
        vm: std::ptr::null_mut(),
        calls_left: std::ptr::null(),
        back_edges_left: std::ptr::null(),
        poll: std::sync::atomic::AtomicU32::new(0),
    }
}

/// Functions of 0..8 parameters computing a weighted sum, called from native main, from
/// each other and through stubs, in every mix.
fn params_module() -> String {
    let mut src = String::new();
    let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
    for p in 0..=8 {
        let _ = writeln!(src, "func p{p}({})\n push 0", names[..p].join(", "));
        for (k, n) in names[..p].iter().enumerate() {
            let _ = writeln!(src, " load {n}\n push {}\n mul\n add", k + 1);
        }
        src.push_str(" ret\nend\n");
    }
    // relay(p0..p7) passes its parameters on to p8 in reverse, plus 1.
    let _ = writeln!(src, "func relay({})", names.join(", "));
    for n in names.iter().rev() {
        let _ = writeln!(src, " load {n}");
    }
    src.push_str(" call p8\n push 1\n add\n ret\nend\n");
    src.push_str("func main()\n");
    for p in 0..=8 {
        for k in 0..p {
            let _ = writeln!(src, " push {}", 1000 * (k + 1) - 17);
        }
        let _ = writeln!(src, " call p{p}\n print");
    }
    for k in 0..8 {
        let _ = writeln!(src, " push {}", -(k + 3));
    }
    src.push_str(" call relay\n print\n push 0\n ret\nend\n");
    src
}

fn params_expected() -> String {
    let mut out = String::new();
    for p in 0..=8i64 {
        let sum: i64 = (0..p).map(|k| (1000 * (k + 1) - 17) * (k + 1)).sum();
        let _ = writeln!(out, "{sum}");
    }
    let rev: Vec<i64> = (0..8).rev().map(|k| -(k + 3)).collect();
    let relay: i64 = rev
        .iter()
        .enumerate()
        .map(|(k, &v)| v * (k as i64 + 1))
        .sum::<i64>()
        + 1;
    let _ = writeln!(out, "{relay}");
    out
}

#[test]
fn native_functions_of_0_to_8_parameters_call_each_other_in_every_tier_mix() {
    let src = params_module();
    let want = params_expected();
    for mix in 0..4usize {
        let m = Machine::load_with(&src, 100, |i, f| match mix {
            0 => Tier::Native,
            1 if f.name != "main" => Tier::Interp,
            2 if i % 2 == 1 => Tier::Interp,
            3 if i % 2 == 0 && f.name != "main" => Tier::Interp,
            _ => Tier::Native,
        });
        let out = m.run_main();
        assert_eq!(out.result, Ok(0), "mix {mix}");
        assert_eq!(out.stdout(), want, "mix {mix}");
    }
}

#[test]
fn the_bridge_calls_native_code_of_every_arity() {
    let m = Machine::load(&params_module(), 100);
    for p in 0..=8usize {
        let args: Vec<i64> = (0..p as i64).map(|k| k * k - 3).collect();
        let want: i64 = args
            .iter()
            .enumerate()
            .map(|(k, a)| a * (k as i64 + 1))
            .sum();
        assert_eq!(m.run_here(m.func_id(&format!("p{p}")), &args), Ok(want));
    }
}

#[test]
fn entry_headers_hold_the_definition_and_the_kind() {
    let m = Machine::load_with(&params_module(), 100, |i, _| {
        if i % 2 == 0 {
            Tier::Native
        } else {
            Tier::Interp
        }
    });
    for f in 0..m.module.functions.len() {
        let entry = m.entry(f as u32);
        assert_eq!(entry % 16, 0);
        // SAFETY: the entry of live code installed by the machine.
        let header = unsafe { read_header(entry) };
        assert_eq!(header, (m.def_addr(f as u32), f % 2 == 0));
    }
}

#[test]
fn loops_and_entries_poll_the_safepoint() {
    let src =
        "func main()\n local i\nl:\n load i\n push 1\n add\n dup\n store i\n push 1000\n lt\n \
               jnz l\n push 0\n ret\nend\n";
    let m = Machine::load(src, 10);
    assert_eq!(m.run_main().result, Ok(0));
    assert_eq!(
        m.safepoints.load(Ordering::SeqCst),
        0,
        "poll word clear: no slow path"
    );
    let m = Machine::load(src, 10);
    m.poll_word.store(1, Ordering::SeqCst);
    let main = m.func_id("main");
    assert_eq!(m.run_here(main, &[]), Ok(0));
    // The entry, then each of the 1000 runs of the backward branch (taken or not: the poll
    // comes before the compare-and-branch).
    assert_eq!(m.safepoints.load(Ordering::SeqCst), 1001);
}

#[test]
fn status_codes_name_the_traps_the_interpreter_reports() {
    assert_eq!(status_of(Trap::StackOverflow), 3);
    assert_eq!(trap_of(4), Some(Trap::AssertionFailed));
}
