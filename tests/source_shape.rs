//! The shape a newcomer can change: no source file outside the tests is over 800 lines, so
//! each file is one concept that can be read in one sitting (split a file along its section
//! rulers when it grows past that). Test files, which are mostly data and cases, are exempt.

use std::path::{Path, PathBuf};

const MOST_LINES: usize = 800;

/// The folders of code that ships: each crate's `src/`, the examples and the benchmarks.
const SOURCE_ROOTS: &[&str] = &[
    "src",
    "vm/src",
    "jit/src",
    "runtime/src",
    "runtime/benches",
    "crates",
    "examples",
    "fuzz/fuzz_targets",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() {
            // A crate's own tests are tests wherever the crate lives.
            if name != "tests" && name != "target" {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_source_file_outside_the_tests_is_over_800_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in SOURCE_ROOTS {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "found only {} files", files.len());
    let mut long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f)
                .expect("readable")
                .lines()
                .count();
            (lines > MOST_LINES).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    long.sort();
    assert!(long.is_empty(), "over {MOST_LINES} lines: {long:#?}");
}
