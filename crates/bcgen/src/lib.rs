//! Differential testing of the tiers: [`generate`] makes a random valid `.bc` module from
//! bytes, [`diff::check`] runs it in every tier and compares each with the interpreter.
//! `tests/differential.rs` drives both from proptest, `fuzz/` from libFuzzer; see
//! `docs/fuzzing.md`. The same generator, with a [`Profile`] that leaves out what a host
//! cannot run, makes the programs of the VM's and the JIT's in-process differential tests;
//! [`Profile::INLINING`] adds small callees and patches between them for an inliner
//! (`tests/differential_inlining.rs`).

pub mod diff;
pub mod gen;

pub use gen::{generate, generate_seeded, generate_with, Generated, Profile, Traps};
