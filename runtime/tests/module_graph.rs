//! The shape of `runtime/src`: which module uses which, read from the source. No module may
//! use a module that uses it back (directly or around a longer loop), so each part (code
//! memory, serialization, the thread registry, handles, safepoints, handshakes, publication,
//! reclamation) can be read and replaced on top of the ones it uses. The facade,
//! `runtime.rs`, owns the parts below it; what needs a `Runtime` (a thread's handle keeps
//! one alive, a transaction borrows one, `synchronize` drives every part) sits above it and
//! adds its methods there (`impl Runtime` in `threads.rs`, `publish.rs`, `synchronize.rs`).
//! A module's files are `src/NAME.rs` or everything under `src/NAME/`; unit tests
//! (`#[cfg(test)]`, at the end of a file) are left out.

use jitvm_module_graph::{acyclic_graph, Graph};

fn module_graph() -> Graph {
    acyclic_graph(env!("CARGO_MANIFEST_DIR"), 11)
}

#[test]
fn no_runtime_module_uses_a_module_that_uses_it_back() {
    // `module_graph` fails on any cycle.
    module_graph();
}

#[test]
fn the_parts_named_in_the_protocol_use_each_other_one_way() {
    let graph = module_graph();
    let uses = |a: &str, b: &str| graph[a].contains(b);
    // The registry is what the runtime, handles, handshakes, serialization and the
    // reclaimer read; it reads none of them.
    for reader in ["runtime", "threads", "handshake", "sync", "reclaim"] {
        assert!(uses(reader, "registry"), "{reader}: {:?}", graph[reader]);
        assert!(
            !uses("registry", reader),
            "registry: {:?}",
            graph["registry"]
        );
    }
    // What keeps or borrows a runtime sits above the facade.
    for above in ["threads", "publish", "synchronize"] {
        assert!(uses(above, "runtime"), "{above}: {:?}", graph[above]);
        assert!(!uses("runtime", above), "runtime: {:?}", graph["runtime"]);
    }
    assert!(uses("native", "threads") && uses("safepoint", "threads"));
    assert!(uses("publish", "staging") && !uses("staging", "publish"));
    assert!(uses("sync", "error") && !uses("error", "sync"));
}
