//! Differential test of the lowering: random verified programs run in the interpreter (which
//! runs the register-lowered code) and in a plain stack-machine evaluator written straight
//! from the spec must return the same value, leave the same memory, and trap the same way.

use jitvm_conformance::rng::Rng;
use jitvm_vm::bytecode::{FuncId, Module};
use jitvm_vm::interp;
use jitvm_vm::reference::{self, Host};
use jitvm_vm::state::ThreadState;
use jitvm_vm::{parse_module, Program, RunConfig, Trap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

const CELLS: usize = 8;
const VALUES: [i64; 12] = [0, 1, 2, 3, 7, -1, -5, 63, 64, i64::MAX, i64::MIN, 1 << 33];
const BINOPS: [&str; 17] = [
    "add", "sub", "mul", "div", "rem", "and", "or", "xor", "shl", "shr", "ushr", "eq", "ne", "lt",
    "le", "gt", "ge",
];
const CMPS: [&str; 6] = ["eq", "ne", "lt", "le", "gt", "ge"];

/// Generates verified programs: blocks that start and end at the same stack height, joined
/// by if-then jumps, fused compare-branches and bounded counted loops.
struct Gen {
    rng: Rng,
    lines: Vec<String>,
    labels: u32,
    budget: u32,
}

impl Gen {
    fn emit(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    fn label(&mut self) -> String {
        self.labels += 1;
        format!("L{}", self.labels)
    }

    fn push_value(&mut self) {
        if self.rng.below(2) == 0 {
            let v = self.rng.pick(&VALUES);
            self.emit(format!("push {v}"));
        } else {
            let x = self.rng.below(4);
            self.emit(format!("load x{x}"));
        }
    }

    /// Emits code that starts and ends at height `h`; `loops` bounds loop nesting.
    fn block(&mut self, h: u32, loops: u32) {
        let mut cur = h;
        for _ in 0..self.rng.below(12) {
            if self.budget == 0 {
                break;
            }
            self.budget -= 1;
            cur = self.step(cur, loops);
        }
        while cur > h {
            if cur >= 2 && self.rng.below(2) == 0 {
                let op = self.rng.pick(&BINOPS);
                self.emit(op);
            } else {
                let x = self.rng.below(4);
                self.emit(format!("store x{x}"));
            }
            cur -= 1;
        }
        while cur < h {
            self.push_value();
            cur += 1;
        }
    }

    /// Emits one construct at height `h` and returns the height after it.
    fn step(&mut self, h: u32, loops: u32) -> u32 {
        match self.rng.below(17) {
            3 if h >= 1 => {
                let (op, after) =
                    self.rng
                        .pick(&[("pop", h - 1), ("dup", h + 1), ("neg", h), ("not", h)]);
                self.emit(op);
                after
            }
            4 if h >= 1 => {
                let x = self.rng.below(4);
                self.emit(format!("store x{x}"));
                h - 1
            }
            5 | 6 if h >= 2 => {
                let op = self.rng.pick(&BINOPS);
                self.emit(op);
                h - 1
            }
            7 if h >= 2 => {
                let (op, after) = self.rng.pick(&[("swap", h), ("over", h + 1)]);
                self.emit(op);
                after
            }
            8 => {
                let i = self.rng.below(CELLS as u64);
                self.emit(format!("push {i}"));
                self.emit("mload");
                h + 1
            }
            9 if h >= 1 => {
                // [v] -> [i v] -> mstore (pops both) or atomic_add (leaves the old value).
                let i = self.rng.below(CELLS as u64);
                self.emit(format!("push {i}"));
                self.emit("swap");
                let (op, after) = self.rng.pick(&[("mstore", h - 1), ("atomic_add", h)]);
                self.emit(op);
                after
            }
            10 => {
                let i = self.rng.below(CELLS as u64);
                let expected = self.rng.pick(&VALUES);
                self.emit(format!("push {i}"));
                self.emit(format!("push {expected}"));
                self.push_value();
                self.emit("cas");
                h + 1
            }
            11 if h >= 1 => {
                let call = self.rng.pick(&["call f1", "call id"]);
                self.emit(call);
                h
            }
            12 if h >= 2 => {
                self.emit("call f2");
                h - 1
            }
            13 if h >= 1 => {
                let l = self.label();
                let jump = self.rng.pick(&["jz", "jnz"]);
                self.emit(format!("{jump} {l}"));
                self.block(h - 1, loops);
                self.emit(format!("{l}:"));
                h - 1
            }
            14 if h >= 2 => {
                let l = self.label();
                let cmp = self.rng.pick(&CMPS);
                let jump = self.rng.pick(&["jz", "jnz"]);
                self.emit(cmp);
                self.emit(format!("{jump} {l}"));
                self.block(h - 2, loops);
                self.emit(format!("{l}:"));
                h - 2
            }
            15 if loops > 0 => {
                // Counter locals c1, c2 belong to the loops; nothing else writes them.
                let top = self.label();
                let trips = 1 + self.rng.below(4);
                self.emit(format!("push {trips}"));
                self.emit(format!("store c{loops}"));
                self.emit(format!("{top}:"));
                self.block(h, loops - 1);
                self.emit(format!("load c{loops}"));
                self.emit("push 1");
                self.emit("sub");
                self.emit("dup");
                self.emit(format!("store c{loops}"));
                self.emit(format!("jnz {top}"));
                h
            }
            16 if h >= 1 => {
                // A value flowing through a join point: [v] jz skip; push; pop; skip:
                let l = self.label();
                self.emit("dup");
                self.emit(format!("jz {l}"));
                self.emit("push 11");
                self.emit("add");
                self.emit(format!("{l}:"));
                h
            }
            _ => {
                self.push_value();
                h + 1
            }
        }
    }
}

fn program(seed: u64) -> String {
    let mut g = Gen {
        rng: Rng::new(seed),
        lines: Vec::new(),
        labels: 0,
        budget: 60,
    };
    g.block(0, 2);
    g.push_value();
    let body: String = g
        .lines
        .iter()
        .map(|l| {
            if l.ends_with(':') {
                format!("{l}\n")
            } else {
                format!("  {l}\n")
            }
        })
        .collect();
    format!(
        "memory {CELLS}\n\
         func id(a)\n  load a\n  ret\nend\n\
         func f1(a)\n  load a\n  push 3\n  mul\n  push 1\n  xor\n  ret\nend\n\
         func f2(a, b)\n  local t\n  load a\n  load b\n  sub\n  dup\n  store t\n  load t\n  add\n  ret\nend\n\
         func main()\n  local x0\n  local x1\n  local x2\n  local x3\n  local c1\n  local c2\n{body}  ret\nend\n"
    )
}

/// The reference evaluator's host here: a call recurses straight into the evaluator.
struct Direct<'a> {
    module: &'a Module,
    memory: Box<[AtomicI64]>,
}

impl Host for Direct<'_> {
    fn memory(&self) -> &[AtomicI64] {
        &self.memory
    }

    fn call(&mut self, f: FuncId, args: &[i64]) -> Result<i64, Trap> {
        let module = self.module;
        reference::run(self, module, f, args)
    }
}

#[test]
fn lowered_interpreter_matches_the_reference_evaluator() {
    let mut trapped = 0;
    let runs: u64 = 4000;
    for seed in 1..=runs {
        let src = program(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let module = parse_module(src.as_bytes()).unwrap_or_else(|e| {
            panic!("the generator made an invalid program (seed {seed}): {e}\n{src}")
        });
        let main = module.function_index("main").unwrap();
        let mut host = Direct {
            module: &module,
            memory: (0..module.memory_cells)
                .map(|_| AtomicI64::new(0))
                .collect(),
        };
        let expected = reference::run(&mut host, &module, main, &[]);
        let memory: Vec<i64> = host
            .memory
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();

        let no_threads = Box::new(
            |_: &Arc<Program>, _: FuncId, _: &[i64]| -> Result<i64, Trap> {
                unreachable!("the generated programs never spawn")
            },
        );
        let program = Program::new(
            Arc::new(module),
            RunConfig::default(),
            jitvm_runtime::Runtime::new(Default::default()).unwrap(),
            no_threads,
            None,
        );
        let mut state = ThreadState::new(&program);
        let got = interp::run_function(&program, &mut state, main, &[], 0);
        assert_eq!(got, expected, "seed {seed}: results differ\n{src}");
        if expected.is_ok() {
            let got_memory: Vec<i64> = program
                .memory()
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect();
            assert_eq!(got_memory, memory, "seed {seed}: memory differs\n{src}");
        } else {
            trapped += 1;
        }
    }
    // Most programs must run to the end, or the comparison says little.
    assert!(trapped < runs / 2, "{trapped} of {runs} programs trapped");
}
