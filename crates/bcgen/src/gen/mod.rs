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
//!
//! *Small callees* ([`Profile::small_callees`], for an inliner) are leaves of a few
//! instructions; a *twin* has the very body of a later small callee of its shape. `patch F T`
//! of a twin F to its T changes nothing observable, so `main` may do it while workers run
//! when no other patch ever changes what F or T runs.
//!
//! A [`Profile`] turns features off for hosts that cannot run them (the in-process tests'
//! evaluators), or on for a tier that needs them. The code is by concept: the module and its
//! choices here, a function and the emission of instructions in `function`, small callees
//! in `small`, expressions in `expr`, statements and loops in `stmt`; which of those emits
//! each instruction of the table, in `roles`. Mnemonics and stack effects come from the
//! bytecode table (`op`, `bin`).

mod expr;
mod function;
mod profile;
mod roles;
mod small;
mod stmt;

pub use profile::{Profile, Traps};
pub use roles::{role, Role};

use arbitrary::Unstructured;
use jitvm_vm::bytecode::{BinOp, Instr};

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

/// Operators with a constant operand, from the pools above.
const CONST_OPS: &[BinOp] = &[
    BinOp::Div,
    BinOp::Rem,
    BinOp::Mul,
    BinOp::Add,
    BinOp::Sub,
    BinOp::And,
    BinOp::Shl,
    BinOp::Shr,
    BinOp::Ushr,
    BinOp::Lt,
    BinOp::Ge,
    BinOp::Eq,
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
    /// The functions made as small callees ([`Profile::small_callees`]), twins included.
    pub small_callees: Vec<String>,
}

/// The module these bytes describe, with every feature ([`Profile::FUZZ`]).
pub fn generate(bytes: &[u8]) -> Generated {
    generate_with(bytes, &Profile::FUZZ)
}

/// The module these bytes describe, using only what `profile` allows.
pub fn generate_with(bytes: &[u8], profile: &Profile) -> Generated {
    Gen::new(bytes, *profile).module()
}

/// The module of a seed: [`generate_with`] on `len` bytes from the seed's
/// [`jitvm_conformance::rng::Rng`], for tests that count through seeds.
pub fn generate_seeded(seed: u64, len: usize, profile: &Profile) -> Generated {
    let mut rng = jitvm_conformance::rng::Rng::new(seed);
    let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    generate_with(&bytes, profile)
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
    /// No memory, output, traps, threads or patches: safe to run beside anything. (A small
    /// callee's one load reads a cell below the workers', which no code stores to while
    /// workers run: the only time pure code runs beside other code.)
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
    /// A small callee (see `small`): never recursive, never a worker, at most 3 parameters.
    small: bool,
    /// A small callee whose body is a copy of this later one's.
    twin: Option<usize>,
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
    /// A small callee's one memory load and one call, once emitted.
    small_loaded: bool,
    small_called: bool,
}

struct Gen<'a> {
    u: Unstructured<'a>,
    profile: Profile,
    /// The traps this module may hit on purpose, each chosen for a third of the modules:
    /// where every module risked every trap, nearly all of them ended early.
    traps: Traps,
    plans: Vec<Plan>,
    /// Estimated cost of one call, once generated; includes whatever a patch may swap in.
    call_cost: Vec<u64>,
    /// Cost of one level of a recursive function (the most of it and its patches).
    level_cost: Vec<u64>,
    memory: Option<i64>,
    patches: Vec<(usize, usize)>,
    concurrent_sections: usize,
    /// Each small callee's lines and cost, once generated, for its twins to copy.
    small_bodies: Vec<Option<(Vec<String>, u64)>>,
    f: Body,
}

impl<'a> Gen<'a> {
    fn new(bytes: &'a [u8], profile: Profile) -> Gen<'a> {
        Gen {
            u: Unstructured::new(bytes),
            profile,
            traps: Traps::default(),
            plans: Vec::new(),
            call_cost: Vec::new(),
            level_cost: Vec::new(),
            memory: None,
            patches: Vec::new(),
            concurrent_sections: 0,
            small_bodies: Vec::new(),
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
                small_loaded: false,
                small_called: false,
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
        let extra = if self.profile.small_callees {
            // Small callees need callers besides `main`; two more may follow (`small`).
            2 + self.below(self.profile.max_functions - 3)
        } else {
            self.below(self.profile.max_functions + 1)
        };
        // A low limit puts `stack overflow` where ordinary calls and recursion reach.
        let run_args = if self.chance(1, 6) && self.profile.depth_limits {
            vec![format!("--max-depth={}", 2 + self.below(40))]
        } else {
            Vec::new()
        };
        let allowed = self.profile.traps;
        self.traps = Traps {
            division_by_zero: self.chance(1, 3) && allowed.division_by_zero,
            out_of_bounds: self.chance(1, 3) && allowed.out_of_bounds,
            bad_handle: self.chance(1, 3) && allowed.bad_handle,
            failed_assert: self.chance(1, 3) && allowed.failed_assert,
            stack_overflow: self.chance(1, 3) && allowed.stack_overflow,
        };
        let mut threads = self.chance(1, 3) && self.profile.threads;
        if self.profile.small_callees && self.profile.threads && !threads {
            // Workers calling small callees while `main` patches twins.
            threads = self.chance(1, 2);
        }
        self.plans.push(Plan {
            name: "main".into(),
            params: 0,
            mode: Mode::Normal,
            recursive: false,
            small: false,
            twin: None,
        });
        for i in 1..=extra {
            let mode = match self.weighted(&[6, 3, if threads { 2 } else { 0 }]) {
                0 => Mode::Normal,
                1 => Mode::Pure,
                _ => Mode::Worker,
            };
            // The first function a worker, now and then: workers call only what follows.
            let mode = if i == 1 && threads && self.profile.small_callees && self.chance(2, 3) {
                Mode::Worker
            } else {
                mode
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
            let recursive =
                mode != Mode::Worker && params >= 1 && self.chance(1, 4) && self.profile.recursion;
            // Workers call small callees; they are not small themselves.
            let small = self.profile.small_callees && mode != Mode::Worker && self.chance(2, 3);
            let (mode, params, recursive) = if small {
                self.small_shape(mode, params)
            } else {
                (mode, params, recursive)
            };
            self.plans.push(Plan {
                name: format!("f{i}"),
                params,
                mode,
                recursive,
                small,
                twin: None,
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
            if extra == 0 || !self.profile.patches {
                break;
            }
            let f = 1 + self.below(extra);
            let same_shape: Vec<usize> = (f..=extra).filter(|&g| self.same_shape(f, g)).collect();
            if self.plans[f].mode != Mode::Worker {
                let g = self.pick(&same_shape);
                self.patches.push((f, g));
            }
        }
        if self.profile.small_callees {
            self.plan_twins_and_small_patches();
        }

        let count = self.plans.len();
        self.call_cost = vec![0; count];
        self.level_cost = vec![0; count];
        self.small_bodies = vec![None; count];
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
        let small_callees = self
            .plans
            .iter()
            .filter(|p| p.small)
            .map(|p| p.name.clone())
            .collect();
        Generated {
            text,
            functions: names,
            mixed_tiers,
            run_args,
            small_callees,
        }
    }

    /// Whether `patch F G` may pair these two: the same kind, parameters and shape.
    fn same_shape(&self, f: usize, g: usize) -> bool {
        let (a, b) = (&self.plans[f], &self.plans[g]);
        a.mode == b.mode && a.params == b.params && a.recursive == b.recursive && a.small == b.small
    }
}
