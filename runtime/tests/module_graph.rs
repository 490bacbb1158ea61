//! The shape of `runtime/src`: which module uses which, read from the source. No module may
//! use a module that uses it back (directly or around a longer loop), so each part (code
//! memory, serialization, threads, safepoints, handshakes, publication, reclamation) can be
//! read and replaced on top of the ones it uses. One module is the exception by design:
//! `runtime.rs`, the facade that owns every part (its `Runtime` is what a thread's handle
//! keeps alive), which every part may name and which uses them all; the rule holds for the
//! graph without it. A module's files are `src/NAME.rs` or `src/NAME/*.rs`; unit tests
//! (`#[cfg(test)]`, at the end of a file) are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The facade allowed to sit on cycles (see the module docs).
const FACADE: &str = "runtime";

/// Each top-level module's source, its files joined.
fn sources() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = if path.is_dir() {
            let mut text = String::new();
            for file in std::fs::read_dir(&path).unwrap() {
                let file = file.unwrap().path();
                let code = std::fs::read_to_string(&file).unwrap();
                text.push_str(code.split("#[cfg(test)]").next().unwrap());
            }
            text
        } else {
            let code = std::fs::read_to_string(&path).unwrap();
            code.split("#[cfg(test)]").next().unwrap().to_string()
        };
        files.entry(stem).or_default().push_str(&text);
    }
    files
}

/// The first path segment of each item in `crate::{a::b, c, d::{e, f}}` or `crate::a::b`.
fn first_segments(after_crate: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let Some(list) = after_crate.strip_prefix('{') else {
        return vec![ident(after_crate)];
    };
    let (mut depth, mut items, mut item) = (0, Vec::new(), String::new());
    for c in list.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => items.push(std::mem::take(&mut item)),
            _ => item.push(c),
        }
    }
    items.push(item);
    items
        .iter()
        .map(|i| ident(i))
        .filter(|i| !i.is_empty())
        .collect()
}

/// Module -> modules it names as `crate::MODULE` (or through a re-export of lib.rs).
fn module_graph() -> Graph {
    let files = sources();
    // `pub use code_map::{BlobInfo, CodeEvent};` in lib.rs: `crate::CodeEvent` is a use of
    // `code_map`.
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
        let uses = graph.entry(module.clone()).or_default();
        // Whole text, not lines: a `use crate::{..}` list may span lines.
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join(" ");
        for (at, _) in code.match_indices("crate::") {
            for name in first_segments(&code[at + "crate::".len()..]) {
                let used = if files.contains_key(&name) {
                    name
                } else {
                    owner.get(&name).cloned().unwrap_or_else(|| {
                        panic!("{module} uses `crate::{name}`, neither a module nor re-export")
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
