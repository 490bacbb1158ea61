//! `--stats`: what the run did, printed to stderr when it ends (a trap included): per
//! function its counted calls and back-edges, its tier and its compile times; then the
//! totals of the code runtime.

use crate::tiering::CompileLog;
use jitvm_jit::tier::Tier;
use jitvm_vm::{FuncId, Program};
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the report reads besides the program: each function's tier now, and the compiles.
pub struct StatsSources {
    pub tier: Box<dyn Fn(FuncId) -> Tier + Send + Sync>,
    pub compiles: Arc<Mutex<CompileLog>>,
}

fn us(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_string(),
        |d| format!("{:.1}", d.as_secs_f64() * 1e6),
    )
}

/// The report. `sources` is `None` for a program that only ever interprets.
pub fn report(program: &Program, sources: Option<&StatsSources>) -> String {
    let module = &program.module;
    let compiles = sources.map(|s| s.compiles.lock().unwrap_or_else(|e| e.into_inner()).clone());
    let mut out = format!(
        "{:<28} {:>12} {:>14}  {:<9} {:>12} {:>12} {:>6}\n",
        "function", "calls", "back-edges", "tier", "baseline us", "opt us", "osr"
    );
    for (i, f) in module.functions.iter().enumerate() {
        let calls = program.profile.calls[i].load(std::sync::atomic::Ordering::Relaxed);
        let loops = program.profile.back_edges[i].load(std::sync::atomic::Ordering::Relaxed);
        let tier = sources.map_or(Tier::Interp, |s| (s.tier)(i as FuncId));
        let (baseline, opt) = compiles
            .as_ref()
            .map_or((None, None), |c| (c.baseline[i], c.opt[i]));
        let osr = program.osr_transfers[i].load(std::sync::atomic::Ordering::Relaxed);
        if calls + loops == 0 && baseline.is_none() && opt.is_none() {
            continue;
        }
        let _ = writeln!(
            out,
            "{:<28} {:>12} {:>14}  {:<9} {:>12} {:>12} {:>6}",
            f.name,
            calls,
            loops,
            tier.name(),
            us(baseline),
            us(opt),
            osr
        );
    }
    if let Some(c) = &compiles {
        out.push_str("compile times (JIT tiers):\n");
        for (i, f) in module.functions.iter().enumerate() {
            for (tier, took) in [("baseline", c.baseline[i]), ("opt", c.opt[i])] {
                let Some(took) = took else { continue };
                let n = f.code.len().max(1);
                let us = took.as_secs_f64() * 1e6;
                let _ = write!(
                    out,
                    "  {:<24} {:>8}  {:>10.1} us  {:>8.2} us/instr  ({} instrs)",
                    f.name,
                    tier,
                    us,
                    us / n as f64,
                    f.code.len()
                );
                let inlined = c.inlined[i];
                if tier == "opt" && inlined.sites > 0 {
                    let _ = write!(
                        out,
                        "; inlined {} sites ({} instrs), {:.1} us of it",
                        inlined.sites,
                        inlined.instrs,
                        inlined.took.as_secs_f64() * 1e6
                    );
                }
                out.push('\n');
            }
        }
        let _ = writeln!(
            out,
            "tiering: {} tier-ups and {} on-stack-replacement entries in {} commits, {} failed compiles",
            c.tier_ups, c.osr_entries, c.batches, c.failures
        );
    }
    let rt = program.runtime();
    let code = rt.stats();
    let _ = writeln!(
        out,
        "runtime: {} commits, {} serializations ({}); code bytes: {} live, {} retired, \
         {} freed, high-water {}",
        rt.epoch_now(),
        rt.serializations(),
        rt.strategy(),
        code.bytes_live,
        code.bytes_retired + code.bytes_quarantined,
        code.bytes_freed,
        code.high_water
    );
    let _ = writeln!(
        out,
        "reclamation: {} native poll slow paths (a thread asked to report), {} retirements \
         pending at exit, {} threads asked now",
        rt.slow_polls(),
        rt.pending_retirements(),
        rt.threads_asked()
    );
    out.push_str(
        "(calls and back-edges are counted by the interpreter and baseline code; \
         optimized code does not count)\n",
    );
    out
}
