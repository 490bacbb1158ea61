//! Differential testing of the tiers: [`generate`] makes a random valid `.bc` module from
//! bytes, [`diff::check`] runs it in every tier and compares each with the interpreter.
//! `tests/differential.rs` drives both from proptest, `fuzz/` from libFuzzer; see
//! `docs/fuzzing.md`.

pub mod diff;
pub mod gen;

pub use gen::{generate, Generated};
