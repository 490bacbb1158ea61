//! Random valid programs, run natively and through the reference evaluator: same output,
//! same result or trap. The generator nests expressions (so values wait on the stack in
//! registers, slots and as constants or locals), puts branches and loops inside expressions
//! (labels and backward jumps with live values below), calls functions of 0..8 parameters
//! with values pending, shuffles with `dup/swap/over`, and uses memory and every operator.

#![cfg(target_arch = "x86_64")]

mod support;

use std::fmt::Write;
use std::sync::atomic::Ordering;
use support::{Machine, Outcome, Tier};

struct Gen {
    rng: u64,
    src: String,
    labels: usize,
    /// Functions callable from the one being generated: (name, params).
    callees: Vec<(String, usize)>,
    /// Ordinary locals and parameters of the current function.
    vars: Vec<String>,
    /// Loop counters declared so far in the current function.
    counters: usize,
    budget: i32,
}

const OPS: [&str; 17] = [
    "add", "sub", "mul", "div", "rem", "and", "or", "xor", "shl", "shr", "ushr", "eq", "ne", "lt",
    "le", "gt", "ge",
];

impl Gen {
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn emit(&mut self, line: &str) {
        self.src.push_str("  ");
        self.src.push_str(line);
        self.src.push('\n');
    }

    fn label(&mut self) -> String {
        self.labels += 1;
        format!("l{}", self.labels)
    }

    fn constant(&mut self) -> i64 {
        match self.below(8) {
            0 => [0, 1, -1, i64::MIN, i64::MAX, 1 << 31, -(1 << 33)][self.below(7) as usize],
            1 => self.next() as i64,
            2..=4 => self.below(20) as i64 - 5,
            _ => self.below(1000) as i64,
        }
    }

    fn var(&mut self) -> String {
        let i = self.below(self.vars.len() as u64) as usize;
        self.vars[i].clone()
    }

    /// Code that pushes exactly one value.
    fn expr(&mut self, depth: u32) {
        self.budget -= 1;
        if depth == 0 || self.budget <= 0 {
            return self.leaf();
        }
        match self.below(16) {
            0 | 1 => self.leaf(),
            2..=4 => {
                self.expr(depth - 1);
                self.expr(depth - 1);
                self.binop();
            }
            5 => {
                // A constant operand, often a divisor.
                self.expr(depth - 1);
                let c = self.constant();
                self.emit(&format!("push {c}"));
                self.binop();
            }
            6 => {
                self.expr(depth - 1);
                let op = ["neg", "not"][self.below(2) as usize];
                self.emit(op);
            }
            7 => {
                self.expr(depth - 1);
                self.emit("dup");
                self.binop();
            }
            8 => {
                self.expr(depth - 1);
                self.expr(depth - 1);
                if self.below(2) == 0 {
                    self.emit("swap");
                } else {
                    self.emit("over"); // [a b] -> [a b a]: one more value to combine
                    self.binop();
                }
                self.binop();
            }
            9 => {
                // if-else as an expression: a label reached with values below.
                let (els, end) = (self.label(), self.label());
                self.expr(depth - 1);
                let jump = ["jz", "jnz"][self.below(2) as usize];
                self.emit(&format!("{jump} {els}"));
                self.expr(depth - 1);
                self.emit(&format!("jmp {end}"));
                self.src.push_str(&format!("{els}:\n"));
                self.expr(depth - 1);
                self.src.push_str(&format!("{end}:\n"));
            }
            10 if !self.callees.is_empty() => {
                let i = self.below(self.callees.len() as u64) as usize;
                let (name, params) = self.callees[i].clone();
                for _ in 0..params {
                    self.expr(depth - 1);
                }
                self.emit(&format!("call {name}"));
            }
            11 => {
                // A statement (maybe a loop) while a value waits below it.
                self.expr(depth - 1);
                self.stmt(depth - 1);
                self.expr(depth - 1);
                self.binop();
            }
            12 => {
                self.index();
                self.emit("mload");
            }
            13 => {
                self.index();
                self.expr(depth - 1);
                self.emit("atomic_add");
            }
            14 => {
                self.index();
                self.expr(depth - 1);
                self.expr(depth - 1);
                self.emit("cas");
            }
            _ => {
                self.expr(depth - 1);
                self.emit("dup");
                let v = self.var();
                self.emit(&format!("store {v}"));
            }
        }
    }

    fn leaf(&mut self) {
        if self.below(2) == 0 {
            let c = self.constant();
            self.emit(&format!("push {c}"));
        } else {
            let v = self.var();
            self.emit(&format!("load {v}"));
        }
    }

    fn binop(&mut self) {
        // Division by a variable traps too often to let programs get far; keep it rarer.
        let mut op = OPS[self.below(17) as usize];
        if matches!(op, "div" | "rem") && self.below(3) != 0 {
            op = "add";
        }
        self.emit(op);
    }

    /// A memory index: in bounds (0..8) unless rarely.
    fn index(&mut self) {
        self.expr(1);
        if self.below(30) != 0 {
            self.emit("push 7");
            self.emit("and");
        }
    }

    /// Code that leaves the stack as it found it.
    fn stmt(&mut self, depth: u32) {
        self.budget -= 1;
        match self.below(9) {
            0 | 1 => {
                self.expr(depth);
                let v = self.var();
                self.emit(&format!("store {v}"));
            }
            2 | 3 => {
                self.expr(depth);
                self.emit("print");
            }
            4 => {
                self.expr(depth);
                self.emit("pop");
            }
            5 => {
                self.index();
                self.expr(depth);
                self.emit("mstore");
            }
            6 => {
                let end = self.label();
                self.expr(depth);
                self.emit(&format!("jz {end}"));
                self.stmt(depth.saturating_sub(1));
                self.src.push_str(&format!("{end}:\n"));
            }
            7 if depth > 0 && self.budget > 0 => {
                // A counted loop: 1..3 iterations, with a poll at its backward jump.
                let c = format!("c{}", self.counters);
                self.counters += 1;
                let top = self.label();
                let n = 1 + self.below(3);
                self.emit(&format!("push {n}"));
                self.emit(&format!("store {c}"));
                self.src.push_str(&format!("{top}:\n"));
                self.stmt(depth - 1);
                self.stmt(depth - 1);
                self.emit(&format!("load {c}"));
                self.emit("push 1");
                self.emit("sub");
                self.emit("dup");
                self.emit(&format!("store {c}"));
                self.emit(&format!("jnz {top}"));
            }
            _ => {
                self.expr(depth);
                self.emit("push 0");
                self.emit("ne");
                self.emit("push 1");
                self.emit("or");
                self.emit("assert");
            }
        }
    }

    fn function(&mut self, name: &str, params: usize, locals: usize) {
        let names: Vec<String> = (0..params).map(|k| format!("p{k}")).collect();
        self.vars = names.clone();
        self.vars.extend((0..locals).map(|k| format!("v{k}")));
        self.counters = 0;
        self.budget = 60;
        let header = format!("func {name}({})\n", names.join(", "));
        let body_start = self.src.len();
        for _ in 0..1 + self.below(4) {
            self.stmt(3);
        }
        self.expr(4);
        self.emit("ret");
        self.src.push_str("end\n");
        let mut decls = String::new();
        for k in 0..locals {
            let _ = writeln!(decls, "  local v{k}");
        }
        for k in 0..self.counters {
            let _ = writeln!(decls, "  local c{k}");
        }
        self.src.insert_str(body_start, &(header + &decls));
    }

    fn program(seed: u64) -> String {
        let mut g = Gen {
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            src: "memory 8\n".into(),
            labels: 0,
            callees: Vec::new(),
            vars: Vec::new(),
            counters: 0,
            budget: 0,
        };
        // Leaf functions first, so each may call only those generated before it.
        let helpers = g.below(5) as usize;
        for h in 0..helpers {
            let params = g.below(9) as usize;
            let locals = 1 + g.below(7) as usize;
            let name = format!("f{h}");
            g.function(&name, params, locals);
            g.callees.push((name, params));
        }
        let locals = 1 + g.below(7) as usize;
        g.function("main", 0, locals);
        g.src
    }
}

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
        let src = Gen::program(seed);
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
