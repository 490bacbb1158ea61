//! The shape of the engine's `src/`: which module uses which, read from the source. No
//! module may use a module that uses it back (directly or around a longer loop), and the
//! parts a run can do without (`--stats`, `--trace`, `--perf`, `--gdb`, `jitvm stress`) sit on top
//! of the engine, never under it. A module's files are `src/NAME.rs` or everything under
//! `src/NAME/`; unit tests (`#[cfg(test)]`, at the end of a file) are left out.

use jitvm_module_graph::{acyclic_graph, Graph};

fn module_graph() -> Graph {
    acyclic_graph(env!("CARGO_MANIFEST_DIR"), 5)
}

#[test]
fn no_engine_module_uses_a_module_that_uses_it_back() {
    // `module_graph` fails on any cycle.
    module_graph();
}

#[test]
fn the_tiering_policy_uses_neither_the_stress_harness_nor_the_reports() {
    let graph = module_graph();
    for report in ["stress", "stats"] {
        assert!(
            !graph["tiering"].contains(report),
            "tiering uses {report}: {:?}",
            graph["tiering"]
        );
    }
}
