//! `--tier auto`: the policy that moves hot definitions up (interpreter, then baseline, then
//! optimizing), and the compile queue that does it on a background thread while the
//! program's threads keep running.
//!
//! 1. **Counting.** The interpreter and baseline code count calls and loop back-edges per
//!    definition in per-thread arrays and report them to the program's profile in batches
//!    ([`jitvm_vm::profile`]); optimized code does not count.
//! 2. **Deciding.** Each report calls [`Policy::on_report`] on the thread that ran the code.
//!    A definition in the interpreter whose calls plus back-edges reach
//!    `--baseline-threshold` is queued for the baseline tier (for the optimizing tier
//!    straight away if `--opt-threshold` is 0); one in baseline code that counts
//!    `--opt-threshold` more is queued for the optimizing tier. A definition is queued once
//!    per tier: a flag set by compare-and-swap, so concurrent reports queue it once.
//! 3. **Compiling.** The compile thread takes every job waiting in the queue, compiles them,
//!    and publishes them in one transaction committed `Eventual` ([`Jit::tier_up`]): old
//!    code is only slower, so a thread may finish or even start it until the next
//!    serialization; the replaced code is retired and reclaimed once no thread runs it.
//!    Nothing stops the running threads.
//! 4. **Patching.** `patch F G` (committed `Strong`) and tier-ups take the program's dispatch
//!    lock, and a tier-up moves only the slots that still run its definition, so a tier-up
//!    that lands after a patch never undoes it ([`jitvm_vm::program`]).
//!
//! A threshold of 0 compiles before the first call: with `--baseline-threshold 0` every
//! function is installed in baseline code (or optimized code, if `--opt-threshold` is 0
//! too) before `main` starts.
//!
//! 5. **On-stack replacement.** A running activation keeps the code it started in, except an
//!    interpreted one that loops hot: when the interpreter reports a batch of back-edges
//!    to a loop header of a function whose events reached `--baseline-threshold`, the
//!    policy queues an entry at that header (once per header, in `--osr-tier`: optimized
//!    code unless told otherwise), and the interpreter moves the frame into it at its next
//!    batch (see `docs/tiering.md`).

use jitvm_jit::install::{InlineReport, Jit, Job, TierUpBatch};
use jitvm_jit::tier::Tier;
use jitvm_vm::{FuncId, Program};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// When a definition moves up, in counted events (calls plus loop back-edges).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// Events in the interpreter before the baseline JIT compiles it (0: before its first
    /// call).
    pub baseline: u64,
    /// Events in baseline code before the optimizing JIT compiles it (0: no stop in
    /// baseline code).
    pub opt: u64,
    /// The tier an interpreted loop moves into by on-stack replacement.
    pub osr: Tier,
}

impl Thresholds {
    pub const DEFAULT_BASELINE: u64 = 1_000;
    pub const DEFAULT_OPT: u64 = 10_000;
    /// A loop hot enough to move mid-call is where the program spends its time: it moves
    /// into optimized code (the interpreter runs it meanwhile), where calls it makes can be
    /// inlined, and it stays there until its call returns.
    pub const DEFAULT_OSR: Tier = Tier::Opt;

    /// The profile batch that lets these thresholds be seen as they are crossed: no larger
    /// than the smallest nonzero threshold.
    pub fn profile_batch(&self) -> u32 {
        let smallest = [self.baseline, self.opt]
            .into_iter()
            .filter(|&t| t > 0)
            .min()
            .unwrap_or(u64::MAX);
        smallest.min(jitvm_vm::profile::PROFILE_BATCH as u64) as u32
    }

    /// The tier every function starts in.
    pub fn first_tier(&self) -> Tier {
        match (self.baseline, self.opt) {
            (0, 0) => Tier::Opt,
            (0, _) => Tier::Baseline,
            _ => Tier::Interp,
        }
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            baseline: Self::DEFAULT_BASELINE,
            opt: Self::DEFAULT_OPT,
            osr: Self::DEFAULT_OSR,
        }
    }
}

// A definition's state: its tier, and whether a tier-up is queued (or it may not move).
const TIER_MASK: u8 = 0b11;
const QUEUED: u8 = 0b100;
const PINNED: u8 = 0b1000;

fn tier_bits(t: Tier) -> u8 {
    match t {
        Tier::Interp => 0,
        Tier::Baseline => 1,
        Tier::Opt => 2,
    }
}

fn tier_of_bits(b: u8) -> Tier {
    match b & TIER_MASK {
        0 => Tier::Interp,
        1 => Tier::Baseline,
        _ => Tier::Opt,
    }
}

/// Compile times and tier-ups, for `--stats`.
#[derive(Clone, Debug, Default)]
pub struct CompileLog {
    /// Per definition: total compile time in each native tier (`None`: never compiled).
    pub baseline: Vec<Option<Duration>>,
    pub opt: Vec<Option<Duration>>,
    /// Per definition: what inlining did in its optimized compiles, summed.
    pub inlined: Vec<InlineReport>,
    /// Definitions moved up while the program ran, on-stack-replacement entries compiled,
    /// in how many commits, and how many compiles failed.
    pub tier_ups: u64,
    pub osr_entries: u64,
    pub batches: u64,
    pub failures: u64,
}

impl CompileLog {
    pub fn new(definitions: usize) -> Arc<Mutex<CompileLog>> {
        Arc::new(Mutex::new(CompileLog {
            baseline: vec![None; definitions],
            opt: vec![None; definitions],
            inlined: vec![InlineReport::default(); definitions],
            ..CompileLog::default()
        }))
    }

    /// Adds a compile of `f` in `tier` that took `took` (inlining included, as `inlining`
    /// says).
    pub fn record(&mut self, f: FuncId, tier: Tier, took: Duration, inlining: InlineReport) {
        let sum = &mut self.inlined[f as usize];
        sum.sites += inlining.sites;
        sum.instrs += inlining.instrs;
        sum.took += inlining.took;
        let total = match tier {
            Tier::Baseline => &mut self.baseline[f as usize],
            Tier::Opt => &mut self.opt[f as usize],
            Tier::Interp => return,
        };
        *total = Some(total.unwrap_or_default() + took);
    }
}

/// The tiering policy of one program; see the module docs.
pub struct Policy {
    thresholds: Thresholds,
    state: Box<[AtomicU8]>,
    /// Per definition: its event count when it reached baseline code.
    baseline_since: Box<[AtomicU64]>,
    queue: Mutex<Option<Sender<Job>>>,
    /// Loop headers `(definition, op)` whose on-stack-replacement entry was asked for.
    osr_requested: Mutex<HashSet<(FuncId, u32)>>,
    log: Arc<Mutex<CompileLog>>,
    /// The compile thread, kept rather than detached (see `jitvm_vm::threads::Reaper`).
    compiler: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held by the compile thread from a batch's commit until its trace lines and compile
    /// log are written; `true` once the program ends ([`Policy::close`]), when no further
    /// batch starts. So `--stats` and `--trace` at exit never see a tier-up half recorded.
    closed: Mutex<bool>,
}

impl Drop for Policy {
    fn drop(&mut self) {
        if let Some(compiler) = self
            .compiler
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            jitvm_vm::threads::join_or_forget(compiler);
        }
    }
}

impl Policy {
    /// The policy for `first[f]` (each function's first tier); `pinned[f]` functions never
    /// move (`--func-tier`). Compiles are recorded in `log`.
    pub fn new(
        thresholds: Thresholds,
        first: &[Tier],
        pinned: &[bool],
        log: Arc<Mutex<CompileLog>>,
    ) -> Arc<Policy> {
        let n = first.len();
        Arc::new(Policy {
            thresholds,
            state: first
                .iter()
                .zip(pinned)
                .map(|(&t, &p)| AtomicU8::new(tier_bits(t) | if p { PINNED } else { 0 }))
                .collect(),
            baseline_since: (0..n).map(|_| AtomicU64::new(0)).collect(),
            queue: Mutex::new(None),
            osr_requested: Mutex::new(HashSet::new()),
            log,
            compiler: Mutex::new(None),
            closed: Mutex::new(false),
        })
    }

    /// For the program's exit: waits for the batch in flight to be recorded, and starts no
    /// other.
    pub fn close(&self) {
        *self.closed.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }

    /// The hot hook: called with each batch of counts reported for `def` (with the loop
    /// header the interpreter counted back-edges to, if it did).
    pub fn on_report(&self, program: &Program, def: FuncId, header: Option<u32>) {
        let state = &self.state[def as usize];
        let now = state.load(Ordering::Acquire);
        if now & PINNED != 0 {
            return;
        }
        let events = program.profile.events(def);
        if let Some(header_op) = header.filter(|_| events >= self.thresholds.baseline) {
            self.request_osr(program, def, header_op, tier_of_bits(now));
        }
        if now & QUEUED != 0 {
            return;
        }
        let target = match tier_of_bits(now) {
            Tier::Interp if events >= self.thresholds.baseline => {
                if self.thresholds.opt == 0 {
                    Tier::Opt
                } else {
                    Tier::Baseline
                }
            }
            Tier::Baseline
                if events - self.baseline_since[def as usize].load(Ordering::Relaxed)
                    >= self.thresholds.opt =>
            {
                Tier::Opt
            }
            _ => return,
        };
        if state
            .compare_exchange(now, now | QUEUED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.send(Job::TierUp(def, target));
        }
    }

    fn send(&self, job: Job) {
        let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(queue) = queue.as_ref() {
            let _ = queue.send(job);
        }
    }

    /// An interpreted activation of `def` loops hot at the header at op `header_op`: queue
    /// its on-stack-replacement entry (once per header), in `--osr-tier` (optimized code
    /// where def has it already or `--opt-threshold` is 0).
    fn request_osr(&self, program: &Program, def: FuncId, header_op: u32, now: Tier) {
        let Some(header) = program.definitions()[def as usize].code.label_at(header_op) else {
            return;
        };
        let tier = match now {
            Tier::Interp if self.thresholds.opt == 0 => Tier::Opt,
            Tier::Opt => Tier::Opt,
            _ => self.thresholds.osr,
        };
        let first_time = self
            .osr_requested
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((def, header_op));
        if first_time {
            self.send(Job::Osr {
                func: def,
                header_op,
                header,
                tier,
            });
        }
    }

    /// The tier `def` runs in now (as far as the policy knows).
    pub fn tier(&self, def: FuncId) -> Tier {
        tier_of_bits(self.state[def as usize].load(Ordering::Acquire))
    }

    /// Records what a batch did: tiers, compile times, and definitions that failed (they stay
    /// where they are, never queued again).
    fn finish(&self, program: &Program, batch: &TierUpBatch) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.batches += 1;
        for o in &batch.osr {
            log.record(o.func, o.tier, o.compile_time, o.inlining);
            log.osr_entries += 1;
        }
        for t in &batch.done {
            let f = t.func as usize;
            if t.to == Tier::Baseline {
                self.baseline_since[f].store(program.profile.events(t.func), Ordering::Relaxed);
            }
            log.record(t.func, t.to, t.compile_time, t.inlining);
            log.tier_ups += 1;
            self.state[f].store(tier_bits(t.to), Ordering::Release);
        }
        // A failed on-stack-replacement entry leaves only its loop where it is (never asked
        // again: `osr_requested` keeps it); the function may still tier up.
        log.failures += batch.failed_osr.len() as u64;
        for &(f, _, _) in &batch.failed {
            log.failures += 1;
            self.state[f as usize].fetch_or(PINNED, Ordering::AcqRel);
            self.state[f as usize].fetch_and(!QUEUED, Ordering::AcqRel);
        }
    }

    /// Gives up on the jobs of a batch whose commit failed: they stay where they are.
    fn abandon(&self, jobs: &[Job]) {
        for job in jobs {
            if let Job::TierUp(f, _) = *job {
                self.state[f as usize].fetch_or(PINNED, Ordering::AcqRel);
                self.state[f as usize].fetch_and(!QUEUED, Ordering::AcqRel);
            }
        }
        self.log.lock().unwrap_or_else(|e| e.into_inner()).failures += jobs.len() as u64;
    }
}

/// Starts the compile thread of `program`: it serves `policy`'s queue with `jit` until the
/// program is gone. Holds the program weakly, so the program's last owner still frees it.
pub fn start_compiler(
    program: &Arc<Program>,
    policy: &Arc<Policy>,
    jit: &Arc<Jit>,
) -> std::io::Result<()> {
    let (sender, receiver) = channel();
    *policy.queue.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender);
    let program = Arc::downgrade(program);
    let served = Arc::clone(policy);
    let jit = Arc::clone(jit);
    let compiler = std::thread::Builder::new()
        .name("jitvm-compiler".into())
        .spawn(move || compile_loop(program, served, jit, receiver))?;
    *policy.compiler.lock().unwrap_or_else(|e| e.into_inner()) = Some(compiler);
    Ok(())
}

/// The compile thread: every job waiting is one batch, one commit. When the queue has been
/// empty for a moment after a batch, it settles the batch's retirements (see [`settle`]).
fn compile_loop(program: Weak<Program>, policy: Arc<Policy>, jit: Arc<Jit>, jobs: Receiver<Job>) {
    let mut unsettled = false;
    loop {
        let first = if unsettled {
            match jobs.recv_timeout(Duration::from_millis(1)) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    settle(&program);
                    unsettled = false;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        unsettled = true;
        let mut batch = vec![first];
        batch.extend(jobs.try_iter());
        let Some(program) = program.upgrade() else {
            return;
        };
        let closed = policy.closed.lock().unwrap_or_else(|e| e.into_inner());
        if *closed {
            return;
        }
        match jit.tier_up(&program, &batch) {
            Ok(done) => {
                if let Some(e) = &done.commit_error {
                    log::warn!("tiering: a batch was published without its guarantee: {e}");
                }
                crate::trace::tier_ups(&program, &done);
                policy.finish(&program, &done);
            }
            Err(e) => {
                log::warn!("tiering: a batch of {} tier-ups failed: {e}", batch.len());
                policy.abandon(&batch);
            }
        }
    }
}

/// Finishes what the last `Eventual` commits left owed: their retirements wait for a later
/// serialization, and meanwhile the runtime's poll word keeps asking native code to report,
/// so every back-edge of a hot native loop would take its slow path. An empty commit (inside
/// `synchronize`) gives them that serialization; the threads report at their next poll and
/// the old code is freed.
fn settle(program: &Weak<Program>) {
    let Some(program) = program.upgrade() else {
        return;
    };
    if let Err(e) = program.runtime().synchronize(Duration::from_millis(50)) {
        log::debug!("tiering: retired code not reclaimed yet: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jitvm_jit::install::{CompileError, TierUpBatch};

    fn program() -> Arc<Program> {
        let module = jitvm_vm::parse_module(b"func main()\n  push 0\n  ret\nend\n").unwrap();
        crate::instantiate(module, &[Tier::Interp], jitvm_vm::RunConfig::default()).unwrap()
    }

    fn pinned(policy: &Policy, f: FuncId) -> bool {
        policy.state[f as usize].load(Ordering::Acquire) & PINNED != 0
    }

    #[test]
    fn a_failed_osr_entry_leaves_its_function_free_to_tier_up() {
        let program = program();
        let log = CompileLog::new(1);
        let policy = Policy::new(
            Thresholds::default(),
            &[Tier::Interp],
            &[false],
            Arc::clone(&log),
        );
        let mut failed = TierUpBatch::default();
        failed
            .failed_osr
            .push((0, 3, Tier::Opt, CompileError::NoOptimizingJit));
        policy.finish(&program, &failed);
        assert!(!pinned(&policy, 0), "only that loop stays where it is");
        assert_eq!(log.lock().unwrap().failures, 1);

        let mut failed = TierUpBatch::default();
        failed
            .failed
            .push((0, Tier::Baseline, CompileError::NoOptimizingJit));
        policy.finish(&program, &failed);
        assert!(
            pinned(&policy, 0),
            "a failed function compile keeps it in its tier"
        );
        assert_eq!(log.lock().unwrap().failures, 2);
    }
}
