//! The jitvm engine: reads a `.bc` program, picks the tiers it may run in, decides what each
//! of its threads runs, and runs it.
//!
//! The crates underneath: `jitvm-vm` (bytecode, verifier, interpreter), `jitvm-runtime`
//! (code memory and the machinery that changes code while threads run it) and `jitvm-jit`
//! (the native backends, and [`Tier`], what a function runs). This crate owns the policy
//! that ties them together:
//!
//! - [`input`]: reading a program (a file or stdin, at most [`MAX_INPUT_BYTES`]), parsing
//!   and verifying it, its entry point; [`LoadError`].
//! - [`options`]: every knob (flag and environment variable) in one table, with its default
//!   and meaning; what `jitvm run` lets a user choose ([`Options`], [`TierChoice`]).
//! - [`cli`]: the command line's shape (clap); `src/main.rs` carries it out.
//! - [`engine`]: building and starting a program with its tiers ([`start`],
//!   [`instantiate`]); what goes wrong is an [`EngineError`] ([`error`]).
//! - [`interpreted`]: a program whose threads only interpret ([`interpreter_thread`]).
//! - `native` (private): the native side of building a program, and the listings of
//!   `dis --native` and `dis --ir` ([`native_disassembly`], [`ir_listing`]). The one place
//!   that depends on the architecture: x86-64 only, elsewhere a stand-in refuses.
//! - [`tiering`]: `--tier auto`, the policy that moves hot functions up and its compile
//!   thread.
//! - [`stats`], [`trace`]: `--stats` and `--trace`.
//! - [`code_events`]: what a run does as code is published and reclaimed: `--perf map`
//!   ([`perf_map`]), `--perf jitdump`, `--gdb` ([`gdb_jit`]) and `--trace`'s lines.
//! - [`stress`]: `jitvm stress`, hot patching under load, checked as it runs.

pub mod cli;
pub mod code_events;
pub mod engine;
pub mod error;
pub mod gdb_jit;
pub mod input;
pub mod interpreted;
pub mod options;
pub mod perf_map;
pub mod stats;
pub mod stress;
pub mod tiering;
pub mod trace;

#[cfg(target_arch = "x86_64")]
mod native;

/// No native code off x86-64: each way in refuses.
#[cfg(not(target_arch = "x86_64"))]
mod native {
    use crate::error::EngineError;
    use crate::tiering::Thresholds;
    use jitvm_jit::tier::Tier;
    use jitvm_runtime::Runtime;
    use jitvm_vm::{Module, Program, RunConfig};
    use std::sync::Arc;

    pub(crate) fn program(
        _module: Module,
        _tiers: &[Tier],
        _tiering: Option<Thresholds>,
        _config: RunConfig,
        _runtime: Arc<Runtime>,
        _descriptions: Option<Arc<jitvm_jit::code_info::Descriptions>>,
    ) -> Result<Arc<Program>, EngineError> {
        Err(EngineError::NoNativeTiers)
    }

    pub mod listing {
        use crate::error::EngineError;
        use jitvm_jit::tier::Tier;
        use jitvm_vm::Module;

        pub fn ir_listing(_module: Module) -> Result<String, EngineError> {
            Err(EngineError::NoNativeTiers)
        }

        pub fn native_disassembly(_module: Module, _tier: Tier) -> Result<String, EngineError> {
            Err(EngineError::NoNativeTiers)
        }
    }
}

pub use engine::{function_tiers, instantiate, start};
pub use error::EngineError;
pub use input::{entry_point, load, Input, LoadError, MAX_INPUT_BYTES};
pub use interpreted::interpreter_thread;
pub use jitvm_jit::tier::Tier;
pub use native::listing::{ir_listing, native_disassembly};
pub use options::{
    parse_strategy, runtime_config, FuncTier, FuncTierError, Options, TierChoice, POISON_ENV,
};
pub use tiering::Thresholds;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn all_tier_choices_are_the_tier_options_values() {
        assert_eq!(TierChoice::ALL[..], *TierChoice::value_variants());
        let names: Vec<String> = TierChoice::ALL.iter().map(TierChoice::to_string).collect();
        assert_eq!(names, ["interp", "baseline", "opt", "auto"]);
    }

    #[test]
    fn each_tier_is_the_choice_of_its_name() {
        for tier in Tier::ALL {
            assert_eq!(TierChoice::from(tier).tier(), Some(tier));
            assert_eq!(TierChoice::from(tier).to_string(), tier.to_string());
        }
    }
}
