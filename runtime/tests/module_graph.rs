//! The shape of `runtime/src`: which module uses which, read from the source. No module may
//! use a module that uses it back (directly or around a longer loop), so each part (code
//! memory, serialization, threads, safepoints, handshakes, publication, reclamation) can be
//! read and replaced on top of the ones it uses. One module is the exception by design:
//! `runtime.rs`, the facade that owns every part (its `Runtime` is what a thread's handle
//! keeps alive), which every part may name and which uses them all; the rule holds for the
//! graph without it. A module's files are `src/NAME.rs` or `src/NAME/*.rs`; unit tests
//! (`#[cfg(test)]`, at the end of a file) are left out.

use jitvm_module_graph::{find_cycle, Graph};
use std::path::Path;

/// The facade allowed to sit on cycles (see the module docs).
const FACADE: &str = "runtime";

fn module_graph() -> Graph {
    jitvm_module_graph::module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn no_runtime_module_uses_a_module_that_uses_it_back_but_the_facade() {
    let mut graph = module_graph();
    assert!(graph.len() > 10, "read the modules: {graph:?}");
    graph.remove(FACADE);
    for uses in graph.values_mut() {
        uses.remove(FACADE);
    }
    for module in graph.keys() {
        if let Some(cycle) = find_cycle(&graph, module) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_parts_named_in_the_protocol_use_each_other_one_way() {
    let graph = module_graph();
    let uses = |a: &str, b: &str| graph[a].contains(b);
    // Threads are what native scopes, safepoints, handshakes and serialization read.
    for reader in ["native", "safepoint", "handshake", "sync", "reclaim"] {
        assert!(uses(reader, "threads"), "{reader}: {:?}", graph[reader]);
        assert!(!uses("threads", reader), "threads: {:?}", graph["threads"]);
    }
    assert!(uses("publish", "staging") && !uses("staging", "publish"));
    assert!(uses("sync", "error") && !uses("error", "sync"));
}
