//! The shape of `jit/src`: which module uses which, read from the source. No module may use
//! a module that uses it back (directly or around a longer loop), and the two backends stand
//! side by side on the ABI: neither uses the other, so either can be read, or replaced,
//! alone. A module's files are `src/NAME.rs` or everything under `src/NAME/`; unit tests
//! (`#[cfg(test)]`, at the end of a file) are left out.

use jitvm_module_graph::{acyclic_graph, Graph};

fn module_graph() -> Graph {
    acyclic_graph(env!("CARGO_MANIFEST_DIR"), 6)
}

#[test]
fn no_jit_module_uses_a_module_that_uses_it_back() {
    // `module_graph` fails on any cycle.
    module_graph();
}

#[test]
fn the_baseline_and_the_optimizing_backend_do_not_use_each_other() {
    let graph = module_graph();
    assert!(
        !graph["baseline"].contains("opt"),
        "{:?}",
        graph["baseline"]
    );
    assert!(!graph["opt"].contains("baseline"), "{:?}", graph["opt"]);
    for backend in ["baseline", "opt"] {
        assert!(
            graph[backend].contains("abi"),
            "{backend}: {:?}",
            graph[backend]
        );
        assert!(
            !graph[backend].contains("install"),
            "{backend}: {:?}",
            graph[backend]
        );
    }
}
