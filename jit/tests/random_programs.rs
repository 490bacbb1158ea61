//! Random valid programs, run natively and through the reference evaluator: same output,
//! same result or trap. The programs are `jitvm-bcgen`'s [`Profile::NATIVE`]: nested
//! expressions (so values wait on the stack in registers, slots and as constants or locals),
//! branches and loops inside expressions (labels and backward jumps with live values below),
//! calls of functions of 0..8 parameters with values pending, `dup/swap/over`, memory and
//! every operator.

#![cfg(target_arch = "x86_64")]

mod support;

use jitvm_bcgen::{generate_seeded, Profile};
use std::sync::atomic::Ordering;
use support::{Machine, Outcome, Tier};

fn run(src: &str, setup: u32) -> Outcome {
    let m = Machine::load_with(src, 1000, |i, f| match setup {
        1 => Tier::Interp,
        3 if f.name != "main" && i % 2 == 1 => Tier::Interp,
        _ => Tier::Native,
    });
    if setup == 2 {
        m.poll_word.store(1, Ordering::SeqCst);
    }
    let main = m.func_id("main");
    let result = m.run_here(main, &[]);
    let stdout = m.output.lock().unwrap().clone();
    Outcome { stdout, result }
}

#[test]
fn random_programs_behave_the_same_native_and_interpreted() {
    let count: u64 = std::env::var("RANDOM_PROGRAMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let mut traps = 0;
    for seed in 1..=count {
        let src = generate_seeded(seed, 4096, &Profile::NATIVE).text;
        if let Err(e) = jitvm_vm::parse_module(src.as_bytes()) {
            panic!("seed {seed} generated an invalid program: {e:?}\n{src}");
        }
        let reference = run(&src, 1);
        traps += reference.result.is_err() as u32;
        for setup in [0, 2, 3] {
            let got = run(&src, setup);
            assert_eq!(
                got, reference,
                "seed {seed}, setup {setup} (0 native, 2 polling, 3 mixed):\n{src}"
            );
        }
    }
    // The generator should produce mostly programs that run to the end.
    assert!(
        traps < count as u32 / 2,
        "{traps} of {count} programs trapped"
    );
}

/// Stacks near the verifier's limit of 1,024: every value spilled at labels and calls,
/// register pressure everywhere, code within `max_code_size`, results as interpreted.
#[test]
fn deep_stacks_compile_within_their_bound_and_agree_with_the_evaluator() {
    let mut src = String::from(
        "memory 4\nfunc f8(a, b, c, d, e, f, g, h)\n load a\n load h\n sub\n load d\n add\n ret\nend\n\
         func main()\n local x\n local y\n",
    );
    let depth = 990;
    for k in 0..depth {
        let line = match k % 7 {
            0 => format!(" push {}\n", k * 1_000_003),
            1 => " load x\n".to_string(),
            2 => format!(" load y\n push {k}\n add\n"),
            3 => " dup\n".to_string(),
            4 => format!(" push {}\n mul\n push {k}\n", k + 1),
            5 => " over\n swap\n".to_string(),
            _ => format!(" push {k}\n store x\n push {}\n", k as i64 - 500),
        };
        src.push_str(&line);
        if k % 97 == 0 {
            // A label with everything below it, and a call taking eight of the values.
            src.push_str(&format!(" jmp l{k}\nl{k}:\n"));
            src.push_str(" push 1\n push 2\n push 3\n push 4\n push 5\n push 6\n push 7\n");
            src.push_str(" over\n call f8\n");
        }
    }
    // Every line above leaves one more value; so does each call block. `store y` takes one.
    let height = depth + (0..depth).filter(|k| k % 97 == 0).count() - 1;
    src.push_str(" store y\n");
    for k in 1..height {
        src.push_str(if k % 2 == 0 { " add\n" } else { " xor\n" });
    }
    src.push_str(" load y\n add\n print\n push 0\n ret\nend\n");
    let module = jitvm_vm::parse_module(src.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(
        module.functions[1].max_stack > 900,
        "{}",
        module.functions[1].max_stack
    );
    let native = run(&src, 0);
    assert_eq!(native, run(&src, 1));
    assert_eq!(native, run(&src, 2));
    assert_eq!(native.result, Ok(0));
}

/// The code-size bound holds for the costliest shapes: calls and spawns of eight wide
/// constants and memory-homed locals, a local read many times then stored, swaps of
/// spilled values, branches with live values, division by variables in memory.
#[test]
fn adversarial_functions_stay_within_the_code_size_bound() {
    let locals: String = (0..8).map(|k| format!(" local m{k}\n")).collect();
    let busy: String = (0..8).map(|k| format!(" load m{k}\n pop\n")).collect();
    let wide = "push 81985529216486895";
    let mut bodies = Vec::new();
    // Eight-argument calls and spawns of wide constants, then of memory locals.
    let mut b = String::new();
    for _ in 0..20 {
        b += &format!(" {wide}\n").repeat(8);
        b += " call f8\n pop\n";
        b += &(0..8).map(|k| format!(" load m{k}\n")).collect::<String>();
        b += " spawn f8\n pop\n";
    }
    bodies.push(b);
    // A local read many times, then overwritten: every copy materialised.
    bodies.push(format!(
        "{} push 1\n store m0\n{}",
        " load m0\n".repeat(60),
        " add\n".repeat(59) + " pop\n"
    ));
    // Swaps and dups of spilled values, labels between.
    let mut b = String::from(&format!(" {wide}\n").repeat(20));
    for k in 0..30 {
        b += &format!(" jmp s{k}\ns{k}:\n swap\n dup\n pop\n over\n pop\n");
    }
    b += &" pop\n".repeat(20);
    bodies.push(b);
    // Division by variables in memory homes, branches with live values.
    let mut b = String::new();
    for k in 0..30 {
        b += &format!(" load m1\n load m2\n div\n load m3\n load m4\n rem\n lt\n jnz d{k}\n push 0\n push 1\n rem\n pop\nd{k}:\n");
    }
    bodies.push(b);
    let mut src = String::from("func f8(a, b, c, d, e, f, g, h)\n load a\n ret\nend\n");
    for (i, body) in bodies.iter().enumerate() {
        src += &format!("func w{i}()\n{locals}{busy}{body} push 0\n ret\nend\n");
    }
    src += "func main()\n push 0\n ret\nend\n";
    let m = Machine::load(&src, 10);
    for (f, func) in m.module.functions.iter().enumerate() {
        let bound = jitvm_jit::baseline::max_code_size(func);
        let len = m.code[f].1.bytes.len();
        assert!(len <= bound, "{}: {len} > {bound}", func.name);
        eprintln!("{}: {len} of {bound} bytes", func.name);
    }
}
