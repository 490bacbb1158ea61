//! What a function's values can be: an interval for every division's operands, so that the
//! optimizing tier drops the branches its checks can never take.
//!
//! A division by a constant takes the unsigned plan (one `mul`, a shift) when its dividend
//! is non-negative and the signed plan otherwise, so the code tests the sign first
//! ([`crate::magic`]). A loop counter that starts at 0 and counts up to a limit never is
//! negative, and when the translator knows it, the test and the signed plan go. A divisor
//! that can be neither 0 nor -1 needs neither the zero trap nor the `MIN / -1` detour.
//!
//! The analysis is an abstract interpretation of the bytecode over intervals (Cousot and
//! Cousot, POPL 1977), run to a fixed point over the function's blocks, with widening at
//! the targets of backward jumps (every cycle has one) to a few thresholds, so that `i + 1`
//! of a counter widens to `[0, MAX - 1]` and not to everything. The values wrap, so each
//! transfer gives up (the whole `i64` range) wherever it could overflow.
//!
//! A compare remembers its operands; a `jz`/`jnz` on its result narrows them on each edge
//! (`i < n` taken means `i <= MAX - 1`). To narrow the local a compared value came from,
//! values carry an identity: every slot (local or stack entry) holding the same identity
//! holds the same value. An identity names either the instruction that made the value (the
//! last time it ran on the way here: running it again takes that identity from the slots
//! that held the older value) or, where paths join, a slot at that join (the last time it
//! was passed). Same identity, same interval: every narrowing applies to them all.
//!
//! The result is a fact about every execution of the function from its entry, and that is
//! every execution there is: on-stack replacement enters at a loop header with the state of
//! an interpreter frame that ran the same bytecode from the same entry (the interpreter
//! never starts a frame anywhere else), and the self-tail loop re-enters the top with new
//! parameters and zeroed locals, the entry's own state.

use jitvm_vm::bytecode::{BinOp, Instr};
use jitvm_vm::Function;
use std::collections::{BTreeSet, HashMap};

/// The values an `i64` may have: `lo..=hi`, never empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub lo: i64,
    pub hi: i64,
}

impl Range {
    pub const ANY: Range = Range::new(i64::MIN, i64::MAX);
    const BOOL: Range = Range::new(0, 1);
    const NON_NEGATIVE: Range = Range::new(0, i64::MAX);

    pub const fn new(lo: i64, hi: i64) -> Range {
        Range { lo, hi }
    }

    const fn exactly(c: i64) -> Range {
        Range::new(c, c)
    }

    pub fn contains(self, v: i64) -> bool {
        self.lo <= v && v <= self.hi
    }

    pub fn is_non_negative(self) -> bool {
        self.lo >= 0
    }

    fn join(self, o: Range) -> Range {
        Range::new(self.lo.min(o.lo), self.hi.max(o.hi))
    }

    /// `None` when no value is in both: the path is infeasible.
    fn meet(self, o: Range) -> Option<Range> {
        let r = Range::new(self.lo.max(o.lo), self.hi.min(o.hi));
        (r.lo <= r.hi).then_some(r)
    }

    /// The join, with a bound that moved pushed out to the next threshold: each bound takes
    /// at most `THRESHOLDS.len()` values once widening starts, so the fixed point is reached.
    fn widen(self, newer: Range) -> Range {
        const THRESHOLDS: [i64; 7] = [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX];
        let lo = if newer.lo < self.lo {
            *THRESHOLDS.iter().rev().find(|&&t| t <= newer.lo).unwrap()
        } else {
            self.lo
        };
        let hi = if newer.hi > self.hi {
            *THRESHOLDS.iter().find(|&&t| t >= newer.hi).unwrap()
        } else {
            self.hi
        };
        Range::new(lo, hi)
    }

    fn from_bounds(lo: Option<i64>, hi: Option<i64>) -> Range {
        match (lo, hi) {
            (Some(lo), Some(hi)) => Range::new(lo, hi),
            _ => Range::ANY,
        }
    }

    /// `a OP b` for every `a` in `self` and `b` in `o`, wrapping as the bytecode does.
    fn binary(self, op: BinOp, o: Range) -> Range {
        let (a, b) = (self, o);
        match op {
            BinOp::Add => Range::from_bounds(a.lo.checked_add(b.lo), a.hi.checked_add(b.hi)),
            BinOp::Sub => Range::from_bounds(a.lo.checked_sub(b.hi), a.hi.checked_sub(b.lo)),
            BinOp::Mul => {
                let products = [(a.lo, b.lo), (a.lo, b.hi), (a.hi, b.lo), (a.hi, b.hi)]
                    .map(|(x, y)| x.checked_mul(y));
                if products.iter().any(Option::is_none) {
                    return Range::ANY;
                }
                let p = products.map(Option::unwrap);
                Range::new(*p.iter().min().unwrap(), *p.iter().max().unwrap())
            }
            // Truncating division of a non-negative dividend by a positive divisor only
            // shrinks it; anything else may change its sign (or wrap, `MIN / -1`).
            BinOp::Div if a.is_non_negative() && b.lo > 0 => Range::new(a.lo / b.hi, a.hi / b.lo),
            // `|a % b| < |b|` with the sign of `a` (and `|a % b| <= |a|`).
            BinOp::Rem if !b.contains(i64::MIN) && b != Range::exactly(0) => {
                let m = b.lo.unsigned_abs().max(b.hi.unsigned_abs()) as i64 - 1;
                let lo = if a.is_non_negative() { 0 } else { a.lo.max(-m) };
                let hi = if a.hi <= 0 { 0 } else { a.hi.min(m) };
                Range::new(lo, hi)
            }
            BinOp::And if a.is_non_negative() || b.is_non_negative() => {
                let hi = match (a.is_non_negative(), b.is_non_negative()) {
                    (true, true) => a.hi.min(b.hi),
                    (true, false) => a.hi,
                    _ => b.hi,
                };
                Range::new(0, hi)
            }
            BinOp::Or | BinOp::Xor if a.is_non_negative() && b.is_non_negative() => {
                // Below the next power of two of the larger operand.
                let bits = 64 - a.hi.max(b.hi).leading_zeros();
                Range::new(0, ((1u64 << bits) - 1) as i64)
            }
            BinOp::Shr if b.lo == b.hi => {
                let k = b.lo & 63;
                Range::new(a.lo >> k, a.hi >> k)
            }
            BinOp::Ushr if b.lo == b.hi && (a.is_non_negative() || b.lo & 63 != 0) => {
                let k = b.lo & 63;
                if a.is_non_negative() {
                    Range::new(a.lo >> k, a.hi >> k)
                } else {
                    Range::new(0, (u64::MAX >> k) as i64)
                }
            }
            _ if op.is_comparison() => Range::BOOL,
            _ => Range::ANY,
        }
    }
}

/// Who a value is: slots with the same identity hold the same value (see the module's notes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Id {
    /// The value instruction `pc` made the last time it ran.
    Made(u32),
    /// What slot `slot` held the last time control passed the block at `pc`.
    Joined(u32, u32),
}

/// One side of a compare: its interval then, and who it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Operand {
    range: Range,
    id: Option<Id>,
}

/// What a value that is a compare's result says when it is not 0: `a OP b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cond {
    op: BinOp,
    a: Operand,
    b: Operand,
}

impl Cond {
    /// What the value says when it is 0.
    fn negated(self) -> Cond {
        Cond {
            op: self.op.negated(),
            ..self
        }
    }

    /// The operands' intervals where the condition holds; `None` where it cannot.
    fn narrow(self) -> Option<(Range, Range)> {
        let (a, b) = (self.a.range, self.b.range);
        let below = |x: i64| x.checked_sub(1);
        let above = |x: i64| x.checked_add(1);
        Some(match self.op {
            BinOp::Lt => (
                a.meet(Range::new(i64::MIN, below(b.hi)?))?,
                b.meet(Range::new(above(a.lo)?, i64::MAX))?,
            ),
            BinOp::Le => (
                a.meet(Range::new(i64::MIN, b.hi))?,
                b.meet(Range::new(a.lo, i64::MAX))?,
            ),
            BinOp::Gt | BinOp::Ge => {
                let (b, a) = Cond {
                    op: self.op.swapped(),
                    a: self.b,
                    b: self.a,
                }
                .narrow()?;
                (a, b)
            }
            BinOp::Eq => {
                let both = a.meet(b)?;
                (both, both)
            }
            BinOp::Ne => (Self::not_equal(a, b)?, Self::not_equal(b, a)?),
            op => unreachable!("{op:?} is not a compare"),
        })
    }

    /// `a` without the one value `b` may be, where that value is an end of `a`.
    fn not_equal(a: Range, b: Range) -> Option<Range> {
        if b.lo != b.hi {
            return Some(a);
        }
        let c = b.lo;
        match (a.lo == c, a.hi == c) {
            (true, true) => None,
            (true, false) => Some(Range::new(c + 1, a.hi)),
            (false, true) => Some(Range::new(a.lo, c - 1)),
            (false, false) => Some(a),
        }
    }
}

/// One local or stack entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Val {
    range: Range,
    id: Option<Id>,
    cond: Option<Cond>,
}

impl Val {
    const fn of(range: Range) -> Val {
        Val {
            range,
            id: None,
            cond: None,
        }
    }

    fn operand(self) -> Operand {
        Operand {
            range: self.range,
            id: self.id,
        }
    }

    /// What its being non-zero says.
    fn truth(self) -> Cond {
        self.cond.unwrap_or(Cond {
            op: BinOp::Ne,
            a: self.operand(),
            b: Operand {
                range: Range::exactly(0),
                id: None,
            },
        })
    }
}

/// The locals (parameters first), then the operand stack.
#[derive(Clone, Debug, PartialEq)]
struct State {
    slots: Vec<Val>,
}

impl State {
    /// Forgets the identities `stale` picks, in slots and in what compares remember.
    fn forget_where(&mut self, stale: impl Fn(Id) -> bool) {
        let forget = |o: &mut Option<Id>| {
            if o.is_some_and(&stale) {
                *o = None;
            }
        };
        for v in &mut self.slots {
            forget(&mut v.id);
            if let Some(c) = &mut v.cond {
                forget(&mut c.a.id);
                forget(&mut c.b.id);
            }
        }
    }

    fn forget(&mut self, id: Id) {
        self.forget_where(|o| o == id);
    }

    /// Forgets the identities that name a pass through `pc` (they are about to name this one).
    fn forget_joined_at(&mut self, pc: u32) {
        self.forget_where(|o| matches!(o, Id::Joined(p, _) if p == pc));
    }

    fn pop(&mut self) -> Val {
        self.slots
            .pop()
            .expect("the verifier proved the stack height")
    }

    /// Pushes a value instruction `pc` made.
    fn push_made(&mut self, pc: usize, range: Range, cond: Option<Cond>) {
        let id = Id::Made(pc as u32);
        self.forget(id);
        self.slots.push(Val {
            range,
            id: Some(id),
            cond,
        });
    }

    /// Narrows every slot that holds `o`'s value to `r`; false where that leaves nothing.
    fn narrow(&mut self, o: Operand, r: Range) -> bool {
        let Some(id) = o.id else { return true };
        for v in &mut self.slots {
            if v.id == Some(id) {
                match v.range.meet(r) {
                    Some(m) => v.range = m,
                    None => return false,
                }
            }
        }
        true
    }

    /// This state where `cond` holds; `None` where it cannot.
    fn assume(mut self, cond: Cond) -> Option<State> {
        let (a, b) = cond.narrow()?;
        (self.narrow(cond.a, a) && self.narrow(cond.b, b)).then_some(self)
    }
}

/// The intervals of the operands of each division, by instruction index.
#[derive(Debug, Default)]
pub struct Ranges {
    operands: HashMap<usize, (Range, Range)>,
}

/// Gives up on functions whose states would take more memory than this many slots.
const MAX_STATE_SLOTS: usize = 1 << 21;
/// Gives up after visiting this many blocks per block (widening bounds it well before).
const MAX_VISITS_PER_BLOCK: usize = 64;

impl Ranges {
    /// The intervals of `func`'s division operands over every execution of it. Unknown
    /// (`Range::ANY`) where the function is too large to analyze.
    pub fn analyze(func: &Function) -> Ranges {
        Analysis::new(func).run().unwrap_or_default()
    }

    /// The intervals of the dividend and divisor of the `div` or `rem` at `pc`.
    pub fn division(&self, pc: usize) -> (Range, Range) {
        self.operands
            .get(&pc)
            .copied()
            .unwrap_or((Range::ANY, Range::ANY))
    }
}

struct Analysis<'f> {
    func: &'f Function,
    /// Where a block starts: jump targets and the instructions after conditional jumps.
    leaders: BTreeSet<usize>,
    /// Targets of backward jumps: where widening goes.
    loop_heads: BTreeSet<usize>,
    states: HashMap<usize, State>,
    visits: HashMap<usize, usize>,
    work: BTreeSet<usize>,
    facts: Ranges,
}

impl<'f> Analysis<'f> {
    fn new(func: &'f Function) -> Self {
        let mut leaders = BTreeSet::from([0]);
        let mut loop_heads = BTreeSet::new();
        for (i, ins) in func.code.iter().enumerate() {
            if let Instr::Jmp(t) | Instr::Jz(t) | Instr::Jnz(t) = *ins {
                leaders.insert(t as usize);
                leaders.insert(i + 1);
                if t as usize <= i {
                    loop_heads.insert(t as usize);
                }
            }
        }
        Analysis {
            func,
            leaders,
            loop_heads,
            states: HashMap::new(),
            visits: HashMap::new(),
            work: BTreeSet::new(),
            facts: Ranges::default(),
        }
    }

    fn run(mut self) -> Option<Ranges> {
        let func = self.func;
        let slots = func.num_slots() as usize;
        if (slots + func.max_stack as usize).saturating_mul(self.leaders.len()) > MAX_STATE_SLOTS {
            return None;
        }
        let mut entry = vec![Val::of(Range::exactly(0)); slots];
        entry[..func.params.len()].fill(Val::of(Range::ANY));
        self.flow_to(0, State { slots: entry });
        let budget = MAX_VISITS_PER_BLOCK * self.leaders.len();
        let mut visited = 0;
        while let Some(pc) = self.work.pop_first() {
            visited += 1;
            if visited > budget {
                return None;
            }
            let state = self.states[&pc].clone();
            self.block(pc, state);
        }
        Some(self.facts)
    }

    /// Merges `state` into the one at block `pc`, queueing the block if that changed it.
    fn flow_to(&mut self, pc: usize, mut state: State) {
        state.forget_joined_at(pc as u32);
        let visits = self.visits.entry(pc).or_insert(0);
        *visits += 1;
        let widen = self.loop_heads.contains(&pc) && *visits > 2;
        let merged = match self.states.get(&pc) {
            None => state,
            Some(old) => {
                let mut m = old.clone();
                for (k, (o, n)) in m.slots.iter_mut().zip(&state.slots).enumerate() {
                    let range = if widen {
                        o.range.widen(n.range)
                    } else {
                        o.range.join(n.range)
                    };
                    let same =
                        o.id == n.id && !matches!(o.id, Some(Id::Joined(p, _)) if p == pc as u32);
                    let id = if same && o.id.is_some() {
                        o.id
                    } else {
                        Some(Id::Joined(pc as u32, k as u32))
                    };
                    let cond = if o.cond == n.cond { o.cond } else { None };
                    *o = Val { range, id, cond };
                }
                if m == *old {
                    return;
                }
                m
            }
        };
        self.states.insert(pc, merged);
        self.work.insert(pc);
    }

    /// Runs the block at `pc` from `state`, passing what leaves it to its successors.
    fn block(&mut self, mut pc: usize, mut s: State) {
        let code = &self.func.code;
        loop {
            let ins = code[pc];
            match ins {
                Instr::Jmp(t) => return self.flow_to(t as usize, s),
                Instr::Jz(t) | Instr::Jnz(t) => {
                    let cond = s.pop().truth();
                    let (taken, fallthrough) = match ins {
                        Instr::Jnz(_) => (cond, cond.negated()),
                        _ => (cond.negated(), cond),
                    };
                    if let Some(st) = s.clone().assume(taken) {
                        self.flow_to(t as usize, st);
                    }
                    if let Some(st) = s.assume(fallthrough) {
                        self.flow_to(pc + 1, st);
                    }
                    return;
                }
                Instr::Ret => return,
                _ => {
                    if !self.step(pc, ins, &mut s) {
                        return; // a path that always traps (`assert 0`)
                    }
                }
            }
            pc += 1;
            if self.leaders.contains(&pc) {
                return self.flow_to(pc, s);
            }
        }
    }

    /// One straight-line instruction; false where no execution continues past it.
    fn step(&mut self, pc: usize, ins: Instr, s: &mut State) -> bool {
        match ins {
            Instr::Push(c) => s.push_made(pc, Range::exactly(c), None),
            Instr::Pop | Instr::Print | Instr::Putc => {
                s.pop();
            }
            Instr::Dup => s.slots.push(*s.slots.last().unwrap()),
            Instr::Over => s.slots.push(s.slots[s.slots.len() - 2]),
            Instr::Swap => {
                let n = s.slots.len();
                s.slots.swap(n - 1, n - 2);
            }
            Instr::Load(x) => {
                let x = x as usize;
                if s.slots[x].id.is_none() {
                    // Name the local's value, so that narrowing the copy narrows it.
                    let id = Id::Made(pc as u32);
                    s.forget(id);
                    s.slots[x].id = Some(id);
                }
                s.slots.push(s.slots[x]);
            }
            Instr::Store(x) => {
                let v = s.pop();
                s.slots[x as usize] = v;
            }
            Instr::Bin(op) => {
                let b = s.pop();
                let a = s.pop();
                if matches!(op, BinOp::Div | BinOp::Rem) {
                    let seen = (a.range, b.range);
                    let fact = self.facts.operands.entry(pc).or_insert(seen);
                    *fact = (fact.0.join(seen.0), fact.1.join(seen.1));
                }
                let cond = op.is_comparison().then_some(Cond {
                    op,
                    a: a.operand(),
                    b: b.operand(),
                });
                s.push_made(pc, a.range.binary(op, b.range), cond);
            }
            Instr::Neg => {
                let a = s.pop();
                let r = match a.range.lo.checked_neg() {
                    Some(hi) => Range::new(-a.range.hi, hi),
                    None => Range::ANY,
                };
                s.push_made(pc, r, None);
            }
            Instr::Not => {
                let a = s.pop();
                s.push_made(pc, Range::BOOL, Some(a.truth().negated()));
            }
            Instr::Assert => {
                let cond = s.pop().truth();
                match s.clone().assume(cond) {
                    Some(st) => *s = st,
                    None => return false,
                }
            }
            // Past a memory access, its index was in bounds, so not negative.
            Instr::Mload => {
                let i = s.pop();
                if !s.narrow(i.operand(), Range::NON_NEGATIVE) {
                    return false;
                }
                s.push_made(pc, Range::ANY, None);
            }
            Instr::Mstore => {
                s.pop();
                let i = s.pop();
                if !s.narrow(i.operand(), Range::NON_NEGATIVE) {
                    return false;
                }
            }
            Instr::AtomicAdd | Instr::Cas => {
                let at = s.slots.len() - if ins == Instr::Cas { 3 } else { 2 };
                let i = s.slots[at];
                s.slots.truncate(at);
                if !s.narrow(i.operand(), Range::NON_NEGATIVE) {
                    return false;
                }
                s.push_made(pc, Range::ANY, None);
            }
            Instr::Msize => s.push_made(pc, Range::NON_NEGATIVE, None),
            Instr::Call(_) | Instr::Spawn(_) | Instr::Join => {
                // The verifier's height after it says how many arguments it took.
                let Some(&after) = self.func.heights.get(pc + 1) else {
                    return false;
                };
                s.slots
                    .truncate(self.func.num_slots() as usize + after as usize - 1);
                s.push_made(pc, Range::ANY, None);
            }
            Instr::Patch(..) | Instr::Nop => {}
            Instr::Jmp(_) | Instr::Jz(_) | Instr::Jnz(_) | Instr::Ret => {
                unreachable!("block ends are handled by the caller")
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operand intervals of the first division in function `name` of `src`.
    fn first_division(src: &str, name: &str) -> (Range, Range) {
        let module = jitvm_vm::parse_module(src.as_bytes()).unwrap();
        let func = module.functions.iter().find(|f| f.name == name).unwrap();
        let pc = func
            .code
            .iter()
            .position(|i| matches!(i, Instr::Bin(BinOp::Div | BinOp::Rem)))
            .unwrap();
        Ranges::analyze(func).division(pc)
    }

    const COUNT_UP: &str = "func f(n)\n local i\nloop:\n load i\n push 7\n rem\n pop\n \
        load i\n push 1\n add\n dup\n store i\n load n\n lt\n jnz loop\n push 0\n ret\nend\n";

    #[test]
    fn a_counter_from_zero_up_to_a_limit_is_never_negative() {
        let (a, d) = first_division(COUNT_UP, "f");
        assert_eq!(a, Range::new(0, i64::MAX - 1));
        assert_eq!(d, Range::exactly(7));
    }

    #[test]
    fn a_counter_that_counts_down_past_zero_may_be_negative() {
        let src = COUNT_UP.replace(" push 1\n add", " push 1\n sub");
        let (a, _) = first_division(&src, "f");
        assert!(a.contains(-1), "{a:?}");
    }

    #[test]
    fn a_parameter_may_be_anything_until_a_branch_narrows_it() {
        let src = "func f(n, d)\n load n\n push 0\n lt\n jnz neg\n load n\n load d\n div\n \
            ret\nneg:\n push 0\n ret\nend\n";
        let (a, d) = first_division(src, "f");
        assert_eq!(a, Range::new(0, i64::MAX));
        assert_eq!(d, Range::ANY);
    }

    #[test]
    fn a_sum_that_may_overflow_gives_up_its_bounds() {
        let src = "func f(n)\n load n\n push 0\n lt\n jnz neg\n load n\n push 1\n add\n \
            push 3\n rem\n ret\nneg:\n push 0\n ret\nend\n";
        let (a, _) = first_division(src, "f");
        assert_eq!(a, Range::ANY, "n + 1 wraps for n = MAX");
    }
}
