//! The shape of the engine's `src/`: which module uses which, read from the source. No
//! module may use a module that uses it back (directly or around a longer loop), and the
//! parts a run can do without (`--stats`, `--trace`, `--perf-map`, `jitvm stress`) sit on top
//! of the engine, never under it. A module's files are `src/NAME.rs` or everything under
//! `src/NAME/`; unit tests (`#[cfg(test)]`, at the end of a file) are left out.

use jitvm_module_graph::{find_cycle, Graph};
use std::path::Path;

fn module_graph() -> Graph {
    jitvm_module_graph::module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn no_engine_module_uses_a_module_that_uses_it_back() {
    let graph = module_graph();
    assert!(graph.len() > 4, "read the modules: {graph:?}");
    for module in graph.keys() {
        if let Some(cycle) = find_cycle(&graph, module) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
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
