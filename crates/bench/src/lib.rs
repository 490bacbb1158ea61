//! The benchmark suite of `bench/programs`: every program runs in each `jitvm` tier and in
//! its peers (gcc -O2, LuaJIT, Lua 5.4), interleaved round by round, every run's output is
//! checked, and the medians become a table (`bench/results.md`) and a chart
//! (`bench/results.svg`). `bench/README.md` says what each program measures.
//!
//! The binary (`src/main.rs`) only wires these modules together, so that the pure parts
//! (statistics, ratios, output checks, header parsing) are unit tested, and the integration
//! test can reuse program discovery and the jitvm build.

pub mod chart;
pub mod commands;
pub mod programs;
pub mod report;
pub mod run;
pub mod stats;
pub mod toolchain;
