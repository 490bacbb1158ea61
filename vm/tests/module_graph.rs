//! The shape of `vm/src`: which module uses which, read from the source. No module may use a
//! module that uses it back (directly or around a longer loop), so each can be read, tested
//! and replaced on top of the ones it uses. Test modules (`#[cfg(test)]`, at the end of each
//! file) are left out: a unit test may drive its module through the parser.

use jitvm_module_graph::{acyclic_graph, Graph};
use std::collections::BTreeSet;

fn module_graph() -> Graph {
    acyclic_graph(env!("CARGO_MANIFEST_DIR"), 6)
}

#[test]
fn no_vm_module_uses_a_module_that_uses_it_back() {
    // `module_graph` fails on any cycle.
    module_graph();
}

#[test]
fn the_interpreter_and_the_disassembler_read_register_code_not_the_lowering() {
    let graph = module_graph();
    for reader in ["interp", "dis"] {
        assert!(
            graph[reader].contains("regcode"),
            "{reader}: {:?}",
            graph[reader]
        );
        assert!(
            !graph[reader].contains("lower"),
            "{reader}: {:?}",
            graph[reader]
        );
    }
}

#[test]
fn threads_know_neither_programs_nor_interpreters() {
    let graph = module_graph();
    assert_eq!(graph["threads"], BTreeSet::from(["trap".to_string()]));
    assert!(
        !graph["program"].contains("interp"),
        "{:?}",
        graph["program"]
    );
    assert!(
        !graph["program"].contains("state"),
        "{:?}",
        graph["program"]
    );
}
