//! The jitvm engine: loads a `.bc` file, picks the tiers it may run in, and runs it.
//!
//! The crates underneath: `jitvm-vm` (bytecode, verifier, interpreter), `jitvm-runtime`
//! (code memory and the machinery that changes code while threads run it) and `jitvm-jit`
//! (the native backends). This crate owns the policy that ties them together.

use jitvm_vm::{parse_module, Diagnostic, Diagnostics, Module, Program, RunConfig};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Which execution tiers a run may use (`jitvm run --tier`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// The interpreter only.
    Interp,
    /// Every function compiled by the baseline JIT before it runs.
    Baseline,
    /// Every function compiled by the optimizing JIT before it runs.
    Opt,
    /// Start in the interpreter and tier up what gets hot, with the tiers this build has.
    Auto,
}

impl Tier {
    pub const ALL: [Tier; 4] = [Tier::Interp, Tier::Baseline, Tier::Opt, Tier::Auto];

    pub fn name(self) -> &'static str {
        match self {
            Tier::Interp => "interp",
            Tier::Baseline => "baseline",
            Tier::Opt => "opt",
            Tier::Auto => "auto",
        }
    }

    /// Whether this build can run the tier. The JIT backends have not landed yet; asking for
    /// one is refused rather than silently run in another tier.
    pub fn is_available(self) -> bool {
        matches!(self, Tier::Interp | Tier::Auto)
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a file could not be run: each renders as the line(s) `jitvm` prints before exit 2.
#[derive(Debug)]
pub enum LoadError {
    Read(std::io::Error),
    Invalid(Diagnostics),
    Main(Diagnostic),
}

impl LoadError {
    pub fn render(&self, path: &str) -> String {
        match self {
            LoadError::Read(e) => {
                Diagnostic::file(format!("cannot read the file: {e}")).render(path) + "\n"
            }
            LoadError::Invalid(d) => d.render(path),
            LoadError::Main(d) => format!("{}\n", d.render(path)),
        }
    }
}

/// Reads, parses and verifies a module.
pub fn load(path: &Path) -> Result<Module, LoadError> {
    let bytes = std::fs::read(path).map_err(LoadError::Read)?;
    parse_module(&bytes).map_err(LoadError::Invalid)
}

/// The function `run` starts: `main`, taking no parameters (spec §4, §6).
pub fn entry_point(module: &Module) -> Result<u32, LoadError> {
    let main = module
        .function_index("main")
        .ok_or_else(|| LoadError::Main(Diagnostic::file("no function `main` to run")))?;
    let f = &module.functions[main as usize];
    if !f.params.is_empty() {
        return Err(LoadError::Main(Diagnostic::at(
            f.pos,
            format!(
                "`main` must take no parameters, but takes {}",
                f.params.len()
            ),
        )));
    }
    Ok(main)
}

/// Builds the program for `module`. With only the interpreter built, no tier has a compiler
/// to hand hot code to, so no hot hook is installed; the profile still counts (see
/// [`profile_report`]) and is what the tiering policy will read once the JITs land.
pub fn instantiate(module: Module, tier: Tier, config: RunConfig) -> Arc<Program> {
    debug_assert!(
        tier.is_available(),
        "callers refuse unavailable tiers first"
    );
    Program::new(Arc::new(module), config)
}

/// Per-function call and back-edge counts, as `jitvm run --stats` prints them.
pub fn profile_report(program: &Program) -> String {
    let mut out = String::from("function                          calls     back-edges\n");
    let profile = &program.profile;
    for (i, f) in program.module.functions.iter().enumerate() {
        let calls = profile.calls[i].load(std::sync::atomic::Ordering::Relaxed);
        let loops = profile.back_edges[i].load(std::sync::atomic::Ordering::Relaxed);
        if calls + loops > 0 {
            out.push_str(&format!("{:<28} {:>12} {:>14}\n", f.name, calls, loops));
        }
    }
    out
}
