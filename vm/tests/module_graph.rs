//! The shape of `vm/src`: which module uses which, read from the source. No module may use a
//! module that uses it back (directly or around a longer loop), so each can be read, tested
//! and replaced on top of the ones it uses. Test modules (`#[cfg(test)]`, at the end of each
//! file) are left out: a unit test may drive its module through the parser.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Module -> modules it names as `crate::MODULE` (or through a re-export of lib.rs).
fn module_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        files.insert(stem, std::fs::read_to_string(&path).unwrap());
    }
    // `pub use parse::parse_module;` in lib.rs: `crate::parse_module` is a use of `parse`.
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for line in files["lib"].lines() {
        if let Some(rest) = line.trim().strip_prefix("pub use ") {
            let (module, names) = rest.split_once("::").unwrap();
            for name in names.trim_matches(|c| "{};".contains(c)).split(',') {
                owner.insert(name.trim().to_string(), module.to_string());
            }
        }
    }
    let mut graph = Graph::new();
    for (module, text) in files.iter().filter(|(m, _)| *m != "lib") {
        let code = text.split("#[cfg(test)]").next().unwrap();
        let uses = graph.entry(module.clone()).or_default();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (at, _) in line.match_indices("crate::") {
                let name: String = line[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let used = if files.contains_key(&name) {
                    name
                } else {
                    owner.get(&name).cloned().unwrap_or_else(|| {
                        panic!("{module}.rs uses `crate::{name}`, neither a module nor re-export")
                    })
                };
                if used != *module {
                    uses.insert(used);
                }
            }
        }
    }
    graph
}

/// A loop of uses starting and ending at `start`, if there is one.
fn find_cycle(graph: &Graph, start: &str) -> Option<Vec<String>> {
    fn walk(graph: &Graph, at: &str, path: &mut Vec<String>, seen: &mut BTreeSet<String>) -> bool {
        for next in &graph[at] {
            if *next == path[0] {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    walk(graph, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn no_vm_module_uses_a_module_that_uses_it_back() {
    let graph = module_graph();
    assert!(graph.len() > 5, "read the modules: {graph:?}");
    for module in graph.keys() {
        if let Some(cycle) = find_cycle(&graph, module) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
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
