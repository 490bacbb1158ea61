//! `--trace`: one line per tier-up and per patch, logged at `info` level under the target
//! [`TARGET`], so `JITVM_LOG` (or `RUST_LOG`) filters them like any other log line.

use jitvm_jit::install::{blob_owner, BlobKind, TierUpBatch};
use jitvm_jit::tier::Tier;
use jitvm_runtime::CodeEvent;
use jitvm_vm::program::PatchEvent;
use jitvm_vm::Program;

/// The log target of trace lines: `--trace` is `JITVM_LOG=jitvm::trace=info`.
pub const TARGET: &str = "jitvm::trace";

/// Whether trace lines are logged.
pub fn enabled() -> bool {
    log::log_enabled!(target: TARGET, log::Level::Info)
}

/// A line when a thread's stack begins to hold retired code back (the runtime's code hook).
pub fn code_event(event: CodeEvent) {
    if let CodeEvent::PinnedBy { tid } = event {
        log::info!(
            target: TARGET,
            "reclamation: thread {tid} still runs retired code (or a frame of it has not \
             returned); it is not asked again until it may help"
        );
    }
}

/// A line per definition a tier-up batch moved (or failed to move).
pub fn tier_ups(program: &Program, batch: &TierUpBatch) {
    if !log::log_enabled!(target: TARGET, log::Level::Info) {
        return;
    }
    let name = |f| &program.module.functions[f as usize].name;
    let (commit_us, serializations) = match batch.commit {
        Some((info, took)) => (took.as_secs_f64() * 1e6, info.serializations),
        None => (0.0, 0),
    };
    for t in &batch.done {
        log::info!(
            target: TARGET,
            "tier-up {}: {} -> {}, compiled in {:.1} us, {} bytes, {} slot(s); \
             commit of {} in {:.1} us, {} serialization(s)",
            name(t.func),
            t.from.name(),
            t.to.name(),
            t.compile_time.as_secs_f64() * 1e6,
            t.code_bytes,
            t.slots,
            batch.done.len() + batch.osr.len(),
            commit_us,
            serializations
        );
    }
    for o in &batch.osr {
        log::info!(
            target: TARGET,
            "osr entry {} at instruction {}: {}, compiled in {:.1} us, {} bytes; \
             commit of {} in {:.1} us, {} serialization(s)",
            name(o.func),
            o.header,
            o.tier.name(),
            o.compile_time.as_secs_f64() * 1e6,
            o.code_bytes,
            batch.done.len() + batch.osr.len(),
            commit_us,
            serializations
        );
    }
    for (f, header_op, to, why) in &batch.failed_osr {
        log::info!(
            target: TARGET,
            "osr entry {} at op {header_op} to {} failed, that loop keeps its tier: {why}",
            name(*f),
            to.name()
        );
    }
    for (f, to, why) in &batch.failed {
        log::info!(
            target: TARGET,
            "tier-up {} to {} failed, it keeps its tier: {why}",
            name(*f),
            to.name()
        );
    }
}

/// The tier of the code at `entry`: what the runtime's code map says its blob is (an entry
/// outside code memory is a definition the interpreter runs without a stub).
fn tier_at(program: &Program, entry: usize) -> &'static str {
    match program
        .runtime()
        .lookup(entry)
        .map(|b| blob_owner(b.owner).1)
    {
        Some(BlobKind::Code(t)) => t.name(),
        Some(BlobKind::CallStub) => "call stub",
        None => Tier::Interp.name(),
    }
}

/// A line per `patch F G`.
pub fn patch(program: &Program, e: &PatchEvent) {
    if !log::log_enabled!(target: TARGET, log::Level::Info) {
        return;
    }
    let name = |f| &program.module.functions[f as usize].name;
    log::info!(
        target: TARGET,
        "patch {} {}: {} runs {} ({}), was {} ({}); commit in {:.1} us, {} serialization(s)",
        name(e.f),
        name(e.g),
        name(e.f),
        name(e.new_def),
        tier_at(program, e.new_entry),
        name(e.old_def),
        tier_at(program, e.old_entry),
        e.latency.as_secs_f64() * 1e6,
        e.commit.serializations
    );
}
