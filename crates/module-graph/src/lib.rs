//! Which module of a crate uses which, read from its source: the one reader behind the
//! workspace's tests that no module uses a module that uses it back (a `tests/module_graph.rs`
//! in each crate).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module -> the modules it uses.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// Each top-level module's source, its files joined (a folder's files at any depth).
fn sources(src: &Path) -> BTreeMap<String, String> {
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let mut text = String::new();
        read_rust(&path, &mut text);
        files.entry(stem).or_default().push_str(&text);
    }
    files
}

/// Appends the code of `path` (a `.rs` file, or every one below a folder) without its unit
/// tests.
fn read_rust(path: &Path, text: &mut String) {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for entry in entries {
            read_rust(&entry, text);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        let code = std::fs::read_to_string(path).unwrap();
        text.push_str(code.split("#[cfg(test)]").next().unwrap());
        text.push('\n');
    }
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

/// Module -> modules it names as `crate::MODULE` (or through a re-export of lib.rs), for the
/// crate whose sources are in `src` (a module is `src/NAME.rs` or `src/NAME/*.rs`; unit tests,
/// `#[cfg(test)]` at the end of a file, and comment lines are left out).
pub fn module_graph(src: &Path) -> Graph {
    let files = sources(src);
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
pub fn find_cycle(graph: &Graph, start: &str) -> Option<Vec<String>> {
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

/// The graph of the crate whose manifest is in `manifest_dir` (its `src/`), after checking
/// that it read at least `at_least` modules (so a test cannot pass on an empty graph) and
/// that no module uses a module that uses it back; panics naming the first cycle.
pub fn acyclic_graph(manifest_dir: &str, at_least: usize) -> Graph {
    let graph = module_graph(&Path::new(manifest_dir).join("src"));
    assert!(graph.len() >= at_least, "read the modules: {graph:?}");
    for module in graph.keys() {
        if let Some(cycle) = find_cycle(&graph, module) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
    graph
}
