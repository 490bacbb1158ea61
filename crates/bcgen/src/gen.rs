//! Random valid `.bc` modules whose behaviour is the same on every run.
//!
//! Every choice reads the input bytes through [`arbitrary::Unstructured`], so libFuzzer and
//! proptest drive the same generator, and a failure reproduces from its bytes. When the bytes
//! run out every choice reads 0, which is always the simplest option, so any input (the empty
//! one included) gives a small module.
//!
//! What keeps a module valid: code is built from structured pieces (expressions push one
//! value, statements leave the stack as they found it), so every label is reached with one
//! height and nothing is unreachable. What keeps it quick: loops count a protected local
//! down from at most 8, functions call only functions declared after them, the one
//! self-call of a recursive function passes its first parameter minus one (callers mask it to
//! 0..15, or rarely make it negative or so large that it ends in `stack overflow`), and an estimate
//! of the instructions each call runs caps what a function may call inside its loops.
//!
//! What keeps it deterministic with threads: a `spawn` is joined before its spawner does
//! anything else, except in `main`'s concurrent sections, where up to four *worker*
//! functions run at once. Workers and the *pure* functions they call cannot print or trap,
//! and a worker touches only its own four cells (by its `slot` parameter) plus an
//! accumulator it only adds to. `patch F G` pairs functions of the same kind and shape,
//! G declared after F, so a patched call graph still only calls forward.

use arbitrary::Unstructured;

/// Worker `slot` owns cells `WORKER_BASE + 4 * slot ..` (four of them).
const WORKER_BASE: i64 = 32;
const WORKER_CELLS: i64 = 4;
const MAX_WORKERS: i64 = 4;
/// The cell every worker adds to, read only once all workers are joined.
const ACCUMULATOR: i64 = WORKER_BASE + WORKER_CELLS * MAX_WORKERS;
/// Memory a module with workers declares at least.
const WORKER_MEMORY: i64 = 64;
/// Callers pass a recursive function's depth argument `& RECURSION_MASK`.
const RECURSION_MASK: i64 = 15;
/// A depth argument `| OVERFLOW_DEPTH` either stops at once (negative) or recurses until
/// `stack overflow` ends the program, once: cheap enough for callees with short levels.
const OVERFLOW_DEPTH: i64 = 0x4000;
const OVERFLOW_LEVEL_COST: u64 = 300;
/// Estimated instructions one call of a function, or one run of `main`, may execute.
const FUNC_COST_LIMIT: u64 = 30_000;
const MAIN_COST_LIMIT: u64 = 300_000;
/// A spawned thread costs far more than an instruction.
const SPAWN_COST: u64 = 2_000;
/// Loops run at most this many times (their counter starts at `0..=8`).
const MAX_TRIPS: u64 = 8;
/// Instruction lines per function, so modules stay readable when a case fails.
const MAX_LINES: usize = 220;
const MAX_NEST: usize = 3;
const MAX_EXPR_DEPTH: usize = 4;

const CORNERS: &[i64] = &[
    0,
    1,
    -1,
    2,
    -2,
    3,
    7,
    31,
    32,
    63,
    64,
    65,
    127,
    255,
    256,
    -64,
    1 << 31,
    -(1 << 31),
    (1 << 32) - 1,
    1 << 32,
    0x5555_5555_5555_5555,
    i64::MAX - 1,
    i64::MAX,
    i64::MIN,
    i64::MIN + 1,
];

/// Divisors the JITs may turn into multiplications and shifts (0 only where traps may).
const DIVISORS: &[i64] = &[
    1,
    -1,
    2,
    -2,
    3,
    -3,
    5,
    7,
    -7,
    10,
    16,
    -16,
    641,
    1 << 32,
    1_000_000_007,
    i64::MAX,
    i64::MIN,
    i64::MIN + 1,
];

/// Shift amounts: the spec masks them with 63.
const SHIFTS: &[i64] = &[0, 1, 31, 32, 63, 64, 65, 127, 200, -1, -63, -64, i64::MIN];

const BINARY_OPS: &[&str] = &[
    "add", "sub", "mul", "div", "rem", "and", "or", "xor", "shl", "shr", "ushr", "eq", "ne", "lt",
    "le", "gt", "ge",
];
const CONST_OPS: &[&str] = &[
    "div", "rem", "mul", "add", "sub", "and", "shl", "shr", "ushr", "lt", "ge", "eq",
];
const TIERS: &[&str] = &["interp", "baseline", "opt"];

/// A generated module and what a differential run needs to know about it.
#[derive(Clone, Debug)]
pub struct Generated {
    /// The `.bc` text.
    pub text: String,
    /// Every function's name, `main` first.
    pub functions: Vec<String>,
    /// A tier for each function, for a mixed-tier run (`--func-tier NAME=TIER`).
    pub mixed_tiers: Vec<(String, &'static str)>,
    /// Arguments every run of this module takes (a low `--max-depth`, say).
    pub run_args: Vec<String>,
}

/// The module these bytes describe.
pub fn generate(bytes: &[u8]) -> Generated {
    Gen::new(bytes).module()
}

#[derive(Clone, Copy)]
enum Trap {
    DivisionByZero,
    OutOfBounds,
    BadHandle,
    FailedAssert,
    StackOverflow,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// May print, trap, spawn, patch and touch any cell.
    Normal,
    /// No memory, output, traps, threads or patches: safe to run beside anything.
    Pure,
    /// Like `Pure`, plus memory in its own slot's cells and adds to the accumulator.
    Worker,
}

struct Plan {
    name: String,
    params: usize,
    mode: Mode,
    /// Calls itself once with its first parameter minus one, until it is not positive.
    recursive: bool,
}

/// The function being generated.
struct Body {
    index: usize,
    mode: Mode,
    lines: Vec<String>,
    /// Parameters, then locals.
    names: Vec<String>,
    /// Loop counters, handles, a worker's slot and a recursive function's depth: never
    /// stored to by random statements, or loops and recursion would not end.
    protected: Vec<bool>,
    height: usize,
    /// How many times the code being emitted may run per call (product of loop trips).
    mult: u64,
    cost: u64,
    limit: u64,
    labels: usize,
    /// Innermost last: a loop's exit label and the height a `jnz` to it must have.
    loops: Vec<(String, usize)>,
    nest: usize,
}

/// The traps a module may hit on purpose, each chosen for a quarter of the modules: where
/// every module risked every trap, nearly all of them ended early.
#[derive(Default)]
struct Traps {
    division_by_zero: bool,
    out_of_bounds: bool,
    bad_handle: bool,
    failed_assert: bool,
    stack_overflow: bool,
}

struct Gen<'a> {
    u: Unstructured<'a>,
    traps: Traps,
    plans: Vec<Plan>,
    /// Estimated cost of one call, once generated; includes whatever a patch may swap in.
    call_cost: Vec<u64>,
    /// Cost of one level of a recursive function (the most of it and its patches).
    level_cost: Vec<u64>,
    memory: Option<i64>,
    patches: Vec<(usize, usize)>,
    concurrent_sections: usize,
    f: Body,
}

impl<'a> Gen<'a> {
    fn new(bytes: &'a [u8]) -> Gen<'a> {
        Gen {
            u: Unstructured::new(bytes),
            traps: Traps::default(),
            plans: Vec::new(),
            call_cost: Vec::new(),
            level_cost: Vec::new(),
            memory: None,
            patches: Vec::new(),
            concurrent_sections: 0,
            f: Body {
                index: 0,
                mode: Mode::Normal,
                lines: Vec::new(),
                names: Vec::new(),
                protected: Vec::new(),
                height: 0,
                mult: 1,
                cost: 0,
                limit: 0,
                labels: 0,
                loops: Vec::new(),
                nest: 0,
            },
        }
    }

    // ---- choices (all read 0 once the bytes run out) ----

    fn below(&mut self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        self.u.int_in_range(0..=n - 1).unwrap_or(0)
    }

    /// True `num` times in `den`; false when the bytes have run out.
    fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) >= den - num
    }

    fn weighted(&mut self, weights: &[usize]) -> usize {
        let total: usize = weights.iter().sum();
        let mut pick = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if pick < w {
                return i;
            }
            pick -= w;
        }
        unreachable!("weights must not all be zero")
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn value(&mut self) -> i64 {
        match self.below(4) {
            0 => self.below(10) as i64,
            1 => self.pick(CORNERS),
            2 => self.below(2001) as i64 - 1000,
            _ => self.u.arbitrary().unwrap_or(0),
        }
    }

    // ---- module ----

    fn module(mut self) -> Generated {
        let extra = self.below(7);
        // A low limit puts `stack overflow` where ordinary calls and recursion reach.
        let run_args = if self.chance(1, 6) {
            vec![format!("--max-depth={}", 2 + self.below(40))]
        } else {
            Vec::new()
        };
        self.traps = Traps {
            division_by_zero: self.chance(1, 3),
            out_of_bounds: self.chance(1, 3),
            bad_handle: self.chance(1, 3),
            failed_assert: self.chance(1, 3),
            stack_overflow: self.chance(1, 3),
        };
        let threads = self.chance(1, 3);
        self.plans.push(Plan {
            name: "main".into(),
            params: 0,
            mode: Mode::Normal,
            recursive: false,
        });
        for i in 1..=extra {
            let mode = match self.weighted(&[6, 3, if threads { 2 } else { 0 }]) {
                0 => Mode::Normal,
                1 => Mode::Pure,
                _ => Mode::Worker,
            };
            let params = match self.weighted(&[3, 4, 3, 2, 1]) {
                4 => 4 + self.below(5),
                n => n,
            };
            let params = if mode == Mode::Worker {
                params.clamp(1, 3)
            } else {
                params
            };
            let recursive = mode != Mode::Worker && params >= 1 && self.chance(1, 4);
            self.plans.push(Plan {
                name: format!("f{i}"),
                params,
                mode,
                recursive,
            });
        }
        let has_workers = self.plans.iter().any(|p| p.mode == Mode::Worker);
        self.memory = match self.weighted(&[1, 1, 2, 2, 3, 3, 2]) {
            0 => None,
            1 => Some(0),
            2 => Some(1),
            3 => Some(5),
            4 => Some(16),
            5 => Some(64),
            _ => Some(100),
        };
        if has_workers {
            self.memory = Some(self.memory.unwrap_or(0).max(WORKER_MEMORY));
        }
        for _ in 0..self.below(4) {
            if extra == 0 {
                break;
            }
            let f = 1 + self.below(extra);
            let same_shape: Vec<usize> = (f..=extra)
                .filter(|&g| {
                    let (a, b) = (&self.plans[f], &self.plans[g]);
                    a.mode == b.mode && a.params == b.params && a.recursive == b.recursive
                })
                .collect();
            if self.plans[f].mode != Mode::Worker {
                let g = self.pick(&same_shape);
                self.patches.push((f, g));
            }
        }

        let count = self.plans.len();
        self.call_cost = vec![0; count];
        self.level_cost = vec![0; count];
        let mut functions = vec![String::new(); count];
        for index in (0..count).rev() {
            functions[index] = self.function(index);
        }
        let mut text = String::new();
        if !run_args.is_empty() {
            text.push_str(&format!("; jitvm run {}\n", run_args.join(" ")));
        }
        let memory_line = self.memory.map(|cells| format!("memory {cells}\n"));
        let memory_last = self.chance(1, 4);
        if !memory_last {
            text.extend(memory_line.clone());
        }
        for f in &functions {
            text.push_str(f);
        }
        if memory_last {
            text.extend(memory_line);
        }
        let names: Vec<String> = self.plans.iter().map(|p| p.name.clone()).collect();
        // From a hash of the text, not from the input: its bytes have often run out here.
        let mut hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        let mixed_tiers = names
            .iter()
            .map(|name| {
                hash = hash.rotate_left(7).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                (name.clone(), TIERS[(hash >> 33) as usize % TIERS.len()])
            })
            .collect();
        Generated {
            text,
            functions: names,
            mixed_tiers,
            run_args,
        }
    }

    fn function(&mut self, index: usize) -> String {
        let plan = &self.plans[index];
        let (params, mode, recursive) = (plan.params, plan.mode, plan.recursive);
        let limit = match (index, recursive) {
            (0, _) => MAIN_COST_LIMIT,
            (_, true) => FUNC_COST_LIMIT / (RECURSION_MASK as u64 + 2),
            _ => FUNC_COST_LIMIT,
        };
        self.f = Body {
            index,
            mode,
            lines: Vec::new(),
            names: (0..params).map(|i| format!("p{i}")).collect(),
            protected: vec![false; params],
            height: 0,
            mult: 1,
            cost: 0,
            limit,
            labels: 0,
            loops: Vec::new(),
            nest: 0,
        };
        if mode == Mode::Worker || recursive {
            self.f.protected[0] = true;
        }
        let locals = match self.below(8) {
            7 => 4 + self.below(12),
            n => n / 2,
        };
        for _ in 0..locals {
            self.new_local("v", false);
        }

        if recursive {
            let recurse = self.new_label();
            self.load(0);
            if self.chance(1, 2) {
                self.push(0);
                self.emit("gt", 2, 1);
                self.emit(format!("jnz {recurse}"), 1, 0);
            } else {
                self.push(1);
                self.emit("lt", 2, 1);
                self.emit(format!("jz {recurse}"), 1, 0);
            }
            self.stmts(3);
            self.expr(MAX_EXPR_DEPTH);
            self.emit("ret", 1, 0);
            self.place(&recurse, 0);
            self.stmts(4);
            self.load(0);
            self.push(1);
            self.emit("sub", 2, 1);
            for _ in 1..params {
                self.expr(2);
            }
            self.emit(format!("call {}", self.plans[index].name), params, 1);
            if self.chance(1, 2) {
                self.expr(2);
                let op = self.pick(&["add", "sub", "xor", "mul"]);
                self.emit(op, 2, 1);
            }
        } else {
            self.stmts(12);
            if index == 0 {
                // What main computed shows even when it printed little.
                for local in 0..self.f.names.len() {
                    self.load(local);
                    self.emit("print", 1, 0);
                }
            }
            if index == 0 && self.chance(3, 4) {
                self.push(0);
            } else {
                self.expr(MAX_EXPR_DEPTH);
            }
        }
        self.emit("ret", 1, 0);
        assert_eq!(self.f.height, 0, "the generator keeps stack heights");

        let levels = RECURSION_MASK as u64 + 2;
        let mut cost = if recursive {
            self.f.cost * levels
        } else {
            self.f.cost
        };
        let mut level = self.f.cost;
        for &(f, g) in &self.patches {
            if f == index {
                cost = cost.max(self.call_cost[g]);
                level = level.max(self.level_cost[g]);
            }
        }
        self.call_cost[index] = cost;
        self.level_cost[index] = level;

        let mut out = String::new();
        let name = self.plans[index].name.clone();
        let separator = if self.chance(1, 4) { " , " } else { ", " };
        let params = self.f.names[..params].join(separator);
        if self.chance(1, 5) {
            out.push_str(&format!("func {name} ( {params} )\n"));
        } else {
            out.push_str(&format!("func {name}({params})\n"));
        }
        for local in &self.f.names[self.plans[index].params..] {
            out.push_str(&format!("  local {local}\n"));
        }
        for line in &self.f.lines {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("end\n");
        out
    }

    /// Whether the code being generated may hit this trap on purpose. Pure and worker code
    /// never traps, so threads that run at once cannot race to report different traps.
    fn may_trap(&self, trap: Trap) -> bool {
        self.f.mode == Mode::Normal
            && match trap {
                Trap::DivisionByZero => self.traps.division_by_zero,
                Trap::OutOfBounds => self.traps.out_of_bounds,
                Trap::BadHandle => self.traps.bad_handle,
                Trap::FailedAssert => self.traps.failed_assert,
                Trap::StackOverflow => self.traps.stack_overflow,
            }
    }

    // ---- emission ----

    fn emit(&mut self, instr: impl Into<String>, pops: usize, pushes: usize) {
        let instr = instr.into();
        assert!(self.f.height >= pops, "{instr} pops from an empty stack");
        self.f.height = self.f.height - pops + pushes;
        self.f.cost += self.f.mult;
        // Comments and blank lines now and then, without spending the input's bytes.
        let line = match self.f.lines.len() % 23 {
            7 => format!("  {instr} ; note"),
            15 => format!("\n\t{instr}"),
            _ => format!("  {instr}"),
        };
        self.f.lines.push(line);
    }

    fn new_label(&mut self) -> String {
        self.f.labels += 1;
        format!("L{}", self.f.labels)
    }

    /// Places a label that jumps reach with `height` (and so may the fall-through).
    fn place(&mut self, label: &str, height: usize) {
        self.f.lines.push(format!("{label}:"));
        self.f.height = height;
    }

    fn new_local(&mut self, prefix: &str, protected: bool) -> usize {
        let index = self.f.names.len();
        self.f.names.push(format!("{prefix}{index}"));
        self.f.protected.push(protected);
        index
    }

    /// A local operand: usually its name, sometimes its index in decimal or hex.
    fn operand(&self, local: usize) -> String {
        match self.f.lines.len() % 13 {
            3 => local.to_string(),
            9 => format!("0x{local:x}"),
            _ => self.f.names[local].clone(),
        }
    }

    fn load(&mut self, local: usize) {
        let operand = self.operand(local);
        self.emit(format!("load {operand}"), 0, 1);
    }

    fn store(&mut self, local: usize) {
        let operand = self.operand(local);
        self.emit(format!("store {operand}"), 1, 0);
    }

    fn push(&mut self, v: i64) {
        let literal = match self.below(8) {
            0 if v < 0 => format!("-0x{:x}", v.unsigned_abs()),
            0 => format!("0x{v:x}"),
            1 if v >= 0 => format!("0x{v:X}"),
            _ => v.to_string(),
        };
        self.emit(format!("push {literal}"), 0, 1);
    }

    fn full(&self) -> bool {
        self.f.lines.len() >= MAX_LINES
    }

    fn affordable(&self, cost: u64) -> bool {
        self.f
            .cost
            .saturating_add(self.f.mult.saturating_mul(cost.max(1)))
            <= self.f.limit
    }

    fn assignable(&self) -> Vec<usize> {
        (0..self.f.names.len())
            .filter(|&i| !self.f.protected[i])
            .collect()
    }

    /// Functions this one may call: declared later, of a kind its own kind may run.
    fn callees(&self) -> Vec<usize> {
        (self.f.index + 1..self.plans.len())
            .filter(|&j| self.f.mode == Mode::Normal || self.plans[j].mode == Mode::Pure)
            .filter(|&j| self.affordable(self.call_cost[j]))
            .collect()
    }

    // ---- expressions: each pushes exactly one value ----

    fn expr(&mut self, depth: usize) {
        let before = self.f.height;
        if depth == 0 || self.full() {
            self.leaf();
        } else {
            self.compound(depth - 1);
        }
        assert_eq!(self.f.height, before + 1, "an expression pushes one value");
    }

    fn leaf(&mut self) {
        if !self.f.names.is_empty() && self.chance(1, 2) {
            let local = self.below(self.f.names.len());
            self.load(local);
        } else {
            let v = self.value();
            self.push(v);
        }
    }

    fn compound(&mut self, depth: usize) {
        let normal = self.f.mode == Mode::Normal;
        let memory = self.f.mode != Mode::Pure;
        let loops = self.f.nest < MAX_NEST && self.affordable(MAX_TRIPS * 20);
        let callees = self.callees();
        let tee = !self.assignable().is_empty();
        match self.weighted(&[
            3,                                                  // leaf
            6,                                                  // binary operator
            4,                                                  // operator with a corner constant
            2,                                                  // unary operator
            2,                                                  // stack shuffles
            2,                                                  // conditional value
            if callees.is_empty() { 0 } else { 3 },             // call
            if memory { 2 } else { 0 },                         // memory
            if normal { 1 } else { 0 },                         // spawn and join at once
            if loops { 1 } else { 0 },                          // statements under a live value
            if loops { 1 } else { 0 }, // loop that accumulates on the stack
            if tee { 1 } else { 0 },   // store a copy
            if self.may_trap(Trap::BadHandle) { 1 } else { 0 }, // join what cannot be joined
            1,                         // many values at once
        ]) {
            0 => self.leaf(),
            1 => self.binary(depth),
            2 => {
                self.expr(depth);
                let op = self.pick(CONST_OPS);
                let constant = match op {
                    "div" | "rem" if self.may_trap(Trap::DivisionByZero) && self.chance(1, 12) => 0,
                    "div" | "rem" => self.pick(DIVISORS),
                    "shl" | "shr" | "ushr" => self.pick(SHIFTS),
                    _ => self.pick(CORNERS),
                };
                self.push(constant);
                self.emit(op, 2, 1);
            }
            3 => {
                self.expr(depth);
                let op = self.pick(&["neg", "not"]);
                self.emit(op, 1, 1);
            }
            4 => self.shuffle(depth),
            5 => {
                let (other, end) = (self.new_label(), self.new_label());
                let base = self.f.height;
                self.expr(depth);
                let jump = self.pick(&["jz", "jnz"]);
                self.emit(format!("{jump} {other}"), 1, 0);
                self.expr(depth);
                self.emit(format!("jmp {end}"), 0, 0);
                self.place(&other, base);
                self.expr(depth);
                self.place(&end, base + 1);
            }
            6 => {
                let callee = self.pick(&callees);
                self.call(callee, "call", depth);
            }
            7 => self.memory_op(depth),
            8 => self.spawn_join(depth, false),
            9 => {
                self.expr(depth);
                // A `jnz` out of this block would leave the value on the stack.
                let loops = std::mem::take(&mut self.f.loops);
                self.nested_block(2);
                self.f.loops = loops;
            }
            10 => self.accumulating_loop(depth),
            11 => {
                self.expr(depth);
                self.emit("dup", 1, 2);
                let targets = self.assignable();
                let target = self.pick(&targets);
                self.store(target);
            }
            13 => {
                // Deeper than the registers a JIT keeps the stack in.
                let width = 2 + self.below(40);
                for _ in 0..width {
                    self.leaf();
                }
                for _ in 1..width {
                    let op = self.pick(&["add", "xor", "sub", "mul", "or", "lt"]);
                    self.emit(op, 2, 1);
                }
            }
            _ => {
                // Rare: the first one ends the program.
                if self.may_trap(Trap::BadHandle) && self.chance(1, 6) {
                    self.spawn_join(depth, true);
                } else if self.may_trap(Trap::BadHandle) && self.chance(1, 6) {
                    let handle = self.pick(&[0, -1, i64::MIN]);
                    self.push(handle);
                    self.emit("join", 1, 1);
                } else {
                    self.leaf();
                }
            }
        }
    }

    fn binary(&mut self, depth: usize) {
        let op = self.pick(BINARY_OPS);
        self.expr(depth);
        self.expr(depth);
        // Random divisors are often 0 (comparisons give 0 half the time); keep most
        // divisions running, and every one in code that must not trap.
        if (op == "div" || op == "rem")
            && (!self.may_trap(Trap::DivisionByZero) || self.chance(3, 4))
        {
            self.push(1);
            self.emit("or", 2, 1);
        }
        self.emit(op, 2, 1);
    }

    fn shuffle(&mut self, depth: usize) {
        match self.below(4) {
            0 => {
                self.expr(depth);
                self.emit("dup", 1, 2);
                let op = self.pick(&["add", "mul", "sub", "xor", "eq", "shl"]);
                self.emit(op, 2, 1);
            }
            1 => {
                self.expr(depth);
                self.expr(depth);
                self.emit("swap", 2, 2);
                let op = self.pick(&["sub", "shl", "lt", "ushr", "and"]);
                self.emit(op, 2, 1);
            }
            2 => {
                self.expr(depth);
                self.expr(depth);
                self.emit("over", 2, 3);
                let op = self.pick(&["sub", "mul", "gt"]);
                self.emit(op, 2, 1);
                let op = self.pick(&["add", "xor", "le"]);
                self.emit(op, 2, 1);
            }
            _ => {
                self.expr(depth);
                self.expr(depth);
                self.emit("pop", 1, 0);
            }
        }
    }

    /// Arguments for `callee` and the call (or spawn) itself.
    fn call(&mut self, callee: usize, instr: &str, depth: usize) {
        let (params, recursive) = (self.plans[callee].params, self.plans[callee].recursive);
        for i in 0..params {
            if i == 0 && recursive {
                let overflow = self.may_trap(Trap::StackOverflow)
                    && self.level_cost[callee] <= OVERFLOW_LEVEL_COST
                    && self.chance(1, 4);
                self.expr(depth);
                if overflow {
                    self.push(OVERFLOW_DEPTH);
                    self.emit("or", 2, 1);
                } else {
                    self.push(RECURSION_MASK);
                    self.emit("and", 2, 1);
                }
            } else {
                self.expr(depth);
            }
        }
        let name = &self.plans[callee].name;
        self.emit(format!("{instr} {name}"), params, 1);
        let cost = self.call_cost[callee];
        self.f.cost = self.f.cost.saturating_add(self.f.mult.saturating_mul(cost));
    }

    fn spawn_join(&mut self, depth: usize, join_twice: bool) {
        let callees: Vec<usize> = (self.f.index + 1..self.plans.len())
            .filter(|&j| self.affordable(self.call_cost[j] + SPAWN_COST))
            .collect();
        if callees.is_empty() {
            return self.leaf();
        }
        let callee = self.pick(&callees);
        self.call(callee, "spawn", depth);
        self.f.cost += self.f.mult * SPAWN_COST;
        if join_twice {
            self.emit("dup", 1, 2);
            self.emit("join", 1, 1);
            self.emit("pop", 1, 0);
        }
        self.emit("join", 1, 1);
    }

    /// Pushes a memory index: a worker's own cell, else mostly one in bounds.
    fn index(&mut self, depth: usize) {
        if self.f.mode == Mode::Worker {
            self.load(0);
            self.push(WORKER_CELLS);
            self.emit("mul", 2, 1);
            self.push(WORKER_BASE);
            self.emit("add", 2, 1);
            self.expr(depth);
            self.push(WORKER_CELLS - 1);
            self.emit("and", 2, 1);
            self.emit("add", 2, 1);
            return;
        }
        let cells = self.memory.unwrap_or(0);
        if cells > 0 && !(self.may_trap(Trap::OutOfBounds) && self.chance(1, 20)) {
            if self.chance(1, 2) {
                let cell = self.below(cells as usize) as i64;
                self.push(cell);
            } else {
                // The largest power of two that fits, minus one, masks into bounds.
                let mask = (1i64 << (63 - cells.leading_zeros())) - 1;
                self.expr(depth);
                self.push(mask);
                self.emit("and", 2, 1);
            }
        } else {
            match self.below(3) {
                0 => self.push(cells),
                1 => self.push(-1),
                _ => self.expr(depth),
            }
        }
    }

    fn memory_op(&mut self, depth: usize) {
        // Without cells every access traps: mostly ask for the size instead.
        if self.memory.unwrap_or(0) == 0 && !self.may_trap(Trap::OutOfBounds) {
            return self.emit("msize", 0, 1);
        }
        match self.below(4) {
            0 => {
                self.index(depth);
                self.emit("mload", 1, 1);
            }
            1 => {
                self.index(depth);
                self.expr(depth);
                self.emit("atomic_add", 2, 1);
            }
            2 => {
                self.index(depth);
                self.expr(depth);
                self.expr(depth);
                self.emit("cas", 3, 1);
            }
            _ => self.emit("msize", 0, 1),
        }
    }

    /// Pushes a loop's trip count (0..=8) into a fresh protected counter.
    fn counter(&mut self, depth: usize) -> usize {
        if self.chance(1, 2) {
            self.expr(depth.min(2));
            self.push(7);
            self.emit("and", 2, 1);
        } else {
            let trips = self.below(MAX_TRIPS as usize + 1) as i64;
            self.push(trips);
        }
        let counter = self.new_local("c", true);
        self.store(counter);
        counter
    }

    fn count_down(&mut self, counter: usize) {
        self.load(counter);
        self.push(1);
        self.emit("sub", 2, 1);
        self.store(counter);
    }

    /// Loop head: leaves the loop when the counter has reached 0.
    fn exit_test(&mut self, counter: usize, done: &str) {
        self.load(counter);
        match self.below(3) {
            0 => self.emit(format!("jz {done}"), 1, 0),
            1 => {
                self.push(0);
                self.emit("gt", 2, 1);
                self.emit(format!("jz {done}"), 1, 0);
            }
            _ => {
                self.push(1);
                self.emit("lt", 2, 1);
                self.emit(format!("jnz {done}"), 1, 0);
            }
        }
    }

    fn enter_loop(&mut self) -> u64 {
        let saved = self.f.mult;
        self.f.mult = self.f.mult.saturating_mul(MAX_TRIPS + 1);
        self.f.nest += 1;
        saved
    }

    fn leave_loop(&mut self, saved: u64) {
        self.f.mult = saved;
        self.f.nest -= 1;
    }

    fn accumulating_loop(&mut self, depth: usize) {
        let base = self.f.height;
        self.expr(depth);
        let counter = self.counter(depth);
        let (top, done) = (self.new_label(), self.new_label());
        let saved = self.enter_loop();
        self.place(&top, base + 1);
        self.exit_test(counter, &done);
        if self.chance(1, 4) {
            self.expr(depth);
            self.emit(format!("jnz {done}"), 1, 0);
        }
        self.expr(depth);
        let op = self.pick(&["add", "xor", "mul", "sub", "or"]);
        self.emit(op, 2, 1);
        self.count_down(counter);
        self.emit(format!("jmp {top}"), 0, 0);
        self.leave_loop(saved);
        self.place(&done, base + 1);
    }

    // ---- statements: each leaves the stack as it found it ----

    fn block(&mut self, max: usize) {
        let before = self.f.height;
        for _ in 0..self.below(max + 1) {
            if self.full() {
                break;
            }
            self.stmt();
            assert_eq!(self.f.height, before, "a statement keeps the stack height");
        }
    }

    fn stmts(&mut self, max: usize) {
        self.block(max)
    }

    fn stmt(&mut self) {
        let normal = self.f.mode == Mode::Normal;
        let nested = self.f.nest < MAX_NEST;
        let loops = nested && self.affordable(MAX_TRIPS * 20);
        let can_break = self
            .f
            .loops
            .last()
            .is_some_and(|&(_, height)| height == self.f.height);
        let concurrent = self.f.index == 0
            && self.f.nest == 0
            && self.f.height == 0
            && self.concurrent_sections < 2
            && self.plans.iter().any(|p| p.mode == Mode::Worker);
        match self.weighted(&[
            1,                                                // nop
            if normal { 10 } else { 0 },                      // print
            if normal { 1 } else { 0 },                       // putc
            if self.assignable().is_empty() { 0 } else { 3 }, // store
            if self.f.mode == Mode::Worker
                || (normal && self.memory.unwrap_or(0) > 0)
                || self.may_trap(Trap::OutOfBounds)
            {
                2
            } else {
                0
            }, // mstore
            1,                                                // pop
            if normal { 1 } else { 0 },                       // assert
            if nested { 2 } else { 0 },                       // if
            if nested { 2 } else { 0 },                       // if-else
            if loops { 3 } else { 0 },                        // loop
            if can_break { 1 } else { 0 },                    // break
            if nested && self.f.height == 0 { 1 } else { 0 }, // early return
            if normal && !self.patches.is_empty() {
                1
            } else {
                0
            }, // patch
            if self.f.mode == Mode::Worker { 2 } else { 0 },  // add to the accumulator
            if concurrent { 3 } else { 0 },                   // concurrent section
        ]) {
            0 => self.emit("nop", 0, 0),
            1 => {
                self.expr(MAX_EXPR_DEPTH);
                self.emit("print", 1, 0);
            }
            2 => {
                self.expr(2);
                self.emit("putc", 1, 0);
            }
            3 => {
                self.expr(MAX_EXPR_DEPTH);
                let targets = self.assignable();
                let target = self.pick(&targets);
                self.store(target);
            }
            4 => {
                self.index(2);
                self.expr(MAX_EXPR_DEPTH - 1);
                self.emit("mstore", 2, 0);
            }
            5 => {
                self.expr(MAX_EXPR_DEPTH);
                self.emit("pop", 1, 0);
            }
            6 => {
                self.expr(3);
                // Most asserts hold, so programs run on past them.
                match self.below(4) {
                    0 if self.may_trap(Trap::FailedAssert) => {}
                    1 => {
                        self.push(1);
                        self.emit("or", 2, 1);
                    }
                    _ => {
                        self.emit("dup", 1, 2);
                        self.emit("eq", 2, 1);
                    }
                }
                self.emit("assert", 1, 0);
            }
            7 => {
                let skip = self.new_label();
                let base = self.f.height;
                self.expr(3);
                let jump = self.pick(&["jz", "jnz"]);
                self.emit(format!("{jump} {skip}"), 1, 0);
                self.nested_block(3);
                self.place(&skip, base);
            }
            8 => {
                let (other, end) = (self.new_label(), self.new_label());
                let base = self.f.height;
                self.expr(3);
                self.emit(format!("jz {other}"), 1, 0);
                self.nested_block(3);
                self.emit(format!("jmp {end}"), 0, 0);
                self.place(&other, base);
                self.nested_block(3);
                self.place(&end, base);
            }
            9 => self.counted_loop(),
            10 => {
                let done = self.f.loops.last().expect("in a loop").0.clone();
                self.expr(2);
                self.emit(format!("jnz {done}"), 1, 0);
            }
            11 => {
                let skip = self.new_label();
                self.expr(3);
                self.emit(format!("jz {skip}"), 1, 0);
                self.nested_block(2);
                self.expr(3);
                self.emit("ret", 1, 0);
                self.place(&skip, 0);
            }
            12 => {
                let (f, g) = self.pick(&self.patches.clone());
                let (f, g) = (self.plans[f].name.clone(), self.plans[g].name.clone());
                self.emit(format!("patch {f} {g}"), 0, 0);
            }
            13 => {
                self.push(ACCUMULATOR);
                self.expr(2);
                self.emit("atomic_add", 2, 1);
                self.emit("pop", 1, 0);
            }
            _ => self.concurrent_section(),
        }
    }

    fn nested_block(&mut self, max: usize) {
        self.f.nest += 1;
        self.block(max);
        self.f.nest -= 1;
    }

    fn counted_loop(&mut self) {
        let base = self.f.height;
        let counter = self.counter(2);
        let (top, done) = (self.new_label(), self.new_label());
        let saved = self.enter_loop();
        self.f.loops.push((done.clone(), base));
        self.place(&top, base);
        if self.chance(1, 3) {
            // Test at the bottom: the body runs at least once.
            self.block(4);
            self.load(counter);
            self.push(1);
            self.emit("sub", 2, 1);
            self.emit("dup", 1, 2);
            self.store(counter);
            self.push(0);
            self.emit("gt", 2, 1);
            self.emit(format!("jnz {top}"), 1, 0);
        } else {
            self.exit_test(counter, &done);
            self.block(4);
            self.count_down(counter);
            self.emit(format!("jmp {top}"), 0, 0);
        }
        self.f.loops.pop();
        self.leave_loop(saved);
        self.place(&done, base);
    }

    /// `main` spawns workers on distinct slots, joins them in some order, then reads
    /// their cells. Nothing between the spawns and the last join prints, traps or touches
    /// memory, so the output is the same whatever the threads' timing.
    fn concurrent_section(&mut self) {
        let workers: Vec<usize> = (1..self.plans.len())
            .filter(|&j| self.plans[j].mode == Mode::Worker)
            .collect();
        let count = 1 + self.below(MAX_WORKERS as usize);
        let mut handles = Vec::new();
        self.f.mode = Mode::Pure;
        for slot in 0..count {
            let worker = self.pick(&workers);
            if !self.affordable(self.call_cost[worker] + SPAWN_COST) {
                break;
            }
            self.push(slot as i64);
            for _ in 1..self.plans[worker].params {
                self.expr(2);
            }
            let name = self.plans[worker].name.clone();
            self.emit(format!("spawn {name}"), self.plans[worker].params, 1);
            self.f.cost += self.call_cost[worker] + SPAWN_COST;
            let handle = self.new_local("h", true);
            self.store(handle);
            handles.push(handle);
        }
        self.f.mode = Mode::Normal;
        if handles.is_empty() {
            return;
        }
        self.concurrent_sections += 1;
        let mut order = handles.clone();
        for i in (1..order.len()).rev() {
            let j = self.below(i + 1);
            order.swap(i, j);
        }
        for handle in order {
            self.load(handle);
            self.emit("join", 1, 1);
            self.emit("print", 1, 0);
        }
        for slot in 0..handles.len() as i64 {
            for cell in 0..WORKER_CELLS {
                self.push(WORKER_BASE + slot * WORKER_CELLS + cell);
                self.emit("mload", 1, 1);
                self.emit("print", 1, 0);
            }
        }
        self.push(ACCUMULATOR);
        self.emit("mload", 1, 1);
        self.emit("print", 1, 0);
    }
}
