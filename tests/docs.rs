//! The README's and the chapters' transcripts run as written, as `cargo test` runs doctests,
//! so a command the docs show cannot drift from what the binary does.
//!
//! A block fenced as `console` is a transcript: each `$ COMMAND` line runs under `bash` from
//! the repository root (with `target/release/jitvm` meaning the binary under test), and the
//! lines after it, up to the next `$`, are what it prints, stdout and stderr together. In an
//! expected line `[..]` stands for any text within the line (an address, a time), and a line
//! `...` for any number of lines. Blocks fenced otherwise (`sh`, `text`, none) are not run:
//! use them for commands that need tools CI lacks or that take long.

use std::path::{Path, PathBuf};
use std::process::Command;

const BINARY_IN_DOCS: &str = "target/release/jitvm";

/// One `$ COMMAND` of a transcript and what it must print.
#[derive(Debug)]
struct Step {
    file: String,
    line: usize,
    command: String,
    expected: Vec<String>,
}

/// The transcripts of one Markdown file, in order.
fn transcripts(file: &str, text: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_console = false;
    let mut in_other = false;
    // A block inside a list item is indented as the item is: its fence's indent.
    let mut indent = 0;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        let line = match line.get(..indent) {
            Some(margin) if margin.trim().is_empty() => &line[indent..],
            _ => line,
        };
        match fence {
            Some(info) if !in_console && !in_other => {
                in_console = info.split_whitespace().next() == Some("console");
                in_other = !in_console;
                indent = line.len() - line.trim_start().len();
            }
            Some(_) => (in_console, in_other) = (false, false),
            None if in_console => match line.strip_prefix("$ ") {
                Some(command) => steps.push(Step {
                    file: file.to_string(),
                    line: i + 1,
                    command: command.to_string(),
                    expected: Vec::new(),
                }),
                None => steps
                    .last_mut()
                    .unwrap_or_else(|| panic!("{file}:{}: output before any `$` line", i + 1))
                    .expected
                    .push(line.to_string()),
            },
            None => {}
        }
    }
    steps
}

/// Whether `actual` is `expected` with each `[..]` standing for any text.
fn line_matches(expected: &str, actual: &str) -> bool {
    let mut pieces = expected.split("[..]");
    let first = pieces.next().unwrap_or("");
    let Some(mut rest) = actual.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    for (k, piece) in pieces.iter().enumerate() {
        if k + 1 == pieces.len() {
            return rest.ends_with(piece);
        }
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// Whether `actual` is `expected`, with `...` lines standing for any number of lines.
fn lines_match(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((dots, rest)) if dots == "..." => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((line, rest)) => {
            !actual.is_empty() && line_matches(line, actual[0]) && lines_match(rest, &actual[1..])
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn documents() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let mut chapters: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    chapters.sort();
    files.extend(chapters);
    files
}

fn run(step: &Step, binary: &Path) -> String {
    let command = step
        .command
        .replace(BINARY_IN_DOCS, binary.to_str().expect("a UTF-8 path"));
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("{command} 2>&1"))
        .current_dir(root())
        .output()
        .expect("bash runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_transcript_in_the_readme_and_the_chapters_prints_what_it_shows() {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_jitvm"));
    let mut failures = Vec::new();
    let mut ran = 0;
    for path in documents() {
        let text = std::fs::read_to_string(&path).expect("a readable Markdown file");
        let name = path.strip_prefix(root()).unwrap().display().to_string();
        for step in transcripts(&name, &text) {
            let actual = run(&step, &binary);
            let lines: Vec<&str> = actual.lines().map(str::trim_end).collect();
            let expected: Vec<String> = step
                .expected
                .iter()
                .map(|l| l.trim_end().to_string())
                .collect();
            ran += 1;
            if !lines_match(&expected, &lines) {
                failures.push(format!(
                    "{}:{}: `{}` printed\n{actual}\nwhere the docs show\n{}\n",
                    step.file,
                    step.line,
                    step.command,
                    step.expected.join("\n")
                ));
            }
        }
    }
    assert!(
        ran >= 5,
        "only {ran} transcripts found: is the fence `console`?"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_transcript_line_matches_with_wildcards_and_nothing_else() {
    assert!(line_matches("at 0x[..]: ok", "at 0x7f00: ok"));
    assert!(line_matches("[..]", "anything"));
    assert!(line_matches("a[..]b[..]c", "a1b2c"));
    assert!(!line_matches("a[..]b[..]c", "a1c2b"));
    assert!(!line_matches("832040", "832041"));
    assert!(!line_matches("832040", "832040 "));
    let lines = |s: &[&str]| s.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    assert!(lines_match(
        &lines(&["a", "...", "d"]),
        &["a", "b", "c", "d"]
    ));
    assert!(lines_match(&lines(&["...", "d"]), &["d"]));
    assert!(!lines_match(&lines(&["a", "...", "d"]), &["a", "b"]));
    assert!(!lines_match(&lines(&["a"]), &["a", "b"]));
}

#[test]
fn transcripts_are_read_from_console_blocks_only() {
    let text = "```sh\n$ not run\n```\n```console\n$ echo hi\nhi\n$ true\n```\n```\n$ no\n```\n\
                - item\n\n  ```console\n  $ echo in a list\n    two spaces kept\n  ```\n";
    let steps = transcripts("x.md", text);
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert_eq!(steps[2].command, "echo in a list");
    assert_eq!(steps[2].expected, vec!["  two spaces kept".to_string()]);
    assert_eq!(steps[0].command, "echo hi");
    assert_eq!(steps[0].expected, vec!["hi".to_string()]);
    assert_eq!(steps[1].line, 7);
    assert!(steps[1].expected.is_empty());
}
