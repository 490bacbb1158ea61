//! The benchmark programs: each `NAME.bc` in `bench/programs` with its peers `NAME.c` and
//! `NAME.lua` beside it.
//!
//! A program documents itself in its first line,
//! `; benchmark: WHAT IT MEASURES; expected output: LINE LINE ...`, and that is where the
//! suite takes the expected output from: the file a reader opens says what it must print,
//! so the documentation cannot drift from what is checked. The programs print only
//! integers (`print`), one per line, so the lines are separated by spaces there.

use std::path::{Path, PathBuf};

/// One benchmark program and its peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// The file stem, e.g. `fib`.
    pub name: String,
    /// `NAME.bc`, run by jitvm.
    pub bc: PathBuf,
    /// `NAME.c`, compiled with gcc -O2.
    pub c: PathBuf,
    /// `NAME.lua`, run by LuaJIT and Lua 5.4.
    pub lua: PathBuf,
    /// What the header says the program measures.
    pub what: String,
    /// The stdout every command must print, one `\n`-terminated line per value.
    pub expected: String,
}

/// What the first line of a benchmark must start with.
const HEADER: &str = "; benchmark:";
/// What separates the description from the expected output in that line.
const EXPECTED: &str = "; expected output:";

/// Parses a program's first line into what it measures and its expected stdout.
pub fn parse_header(source: &str) -> Result<(String, String), String> {
    let first = source.lines().next().unwrap_or_default().trim_end();
    let rest = first
        .strip_prefix(HEADER)
        .ok_or_else(|| format!("the first line does not start with `{HEADER}`"))?;
    let (what, expected) = rest
        .rsplit_once(EXPECTED)
        .ok_or_else(|| format!("the first line does not end with `{EXPECTED} LINE ...`"))?;
    let lines: Vec<&str> = expected.split_whitespace().collect();
    if lines.is_empty() {
        return Err(format!("nothing follows `{EXPECTED}`"));
    }
    if let Some(bad) = lines.iter().find(|l| l.parse::<i64>().is_err()) {
        return Err(format!(
            "`{bad}` in the expected output is not an integer (benchmarks print only integers)"
        ));
    }
    let stdout = lines.iter().map(|l| format!("{l}\n")).collect();
    Ok((what.trim().to_string(), stdout))
}

/// Every `*.bc` in `dir`, sorted by name, with its header parsed and its peers located.
/// A missing peer is an error: a program that only jitvm can run cannot be compared.
pub fn discover(dir: &Path) -> Result<Vec<Program>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut programs = Vec::new();
    for entry in entries {
        let bc = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if bc.extension().and_then(|e| e.to_str()) != Some("bc") {
            continue;
        }
        let name = bc
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("{}: the name is not UTF-8", bc.display()))?
            .to_string();
        let source = std::fs::read_to_string(&bc).map_err(|e| format!("{}: {e}", bc.display()))?;
        let (what, expected) =
            parse_header(&source).map_err(|e| format!("{}: {e}", bc.display()))?;
        let (c, lua) = (bc.with_extension("c"), bc.with_extension("lua"));
        for peer in [&c, &lua] {
            if !peer.is_file() {
                return Err(format!(
                    "{}: its peer {} is missing",
                    bc.display(),
                    peer.display()
                ));
            }
        }
        programs.push(Program {
            name,
            bc,
            c,
            lua,
            what,
            expected,
        });
    }
    programs.sort_by(|a, b| a.name.cmp(&b.name));
    if programs.is_empty() {
        return Err(format!("{}: no .bc programs", dir.display()));
    }
    Ok(programs)
}

/// The programs named in `only` (all of them when it is empty), in the order of `programs`;
/// an unknown name is an error that lists the known ones.
pub fn select(programs: Vec<Program>, only: &[String]) -> Result<Vec<Program>, String> {
    if let Some(unknown) = only
        .iter()
        .find(|n| !programs.iter().any(|p| &p.name == *n))
    {
        let known: Vec<&str> = programs.iter().map(|p| p.name.as_str()).collect();
        return Err(format!(
            "no program named `{unknown}` (there are: {})",
            known.join(", ")
        ));
    }
    Ok(programs
        .into_iter()
        .filter(|p| only.is_empty() || only.contains(&p.name))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_gives_what_is_measured_and_one_line_per_expected_value() {
        let source =
            "; benchmark: two numbers; memory-bound; expected output: 42 -7\nfunc main()\n";
        let (what, expected) = parse_header(source).unwrap();
        assert_eq!(what, "two numbers; memory-bound");
        assert_eq!(expected, "42\n-7\n");
    }

    #[test]
    fn a_program_without_a_benchmark_header_is_refused() {
        let err = parse_header("; fib\n; benchmark: x; expected output: 1\n").unwrap_err();
        assert!(err.contains("does not start with"), "{err}");
    }

    #[test]
    fn a_header_without_an_expected_output_is_refused() {
        let err = parse_header("; benchmark: fib(35) = 9227465\n").unwrap_err();
        assert!(err.contains("expected output"), "{err}");
        assert!(parse_header("; benchmark: x; expected output:   \n").is_err());
    }

    #[test]
    fn an_expected_output_that_is_not_integers_is_refused() {
        let err = parse_header("; benchmark: x; expected output: 12 ok\n").unwrap_err();
        assert!(err.contains("`ok`"), "{err}");
    }

    fn program(name: &str) -> Program {
        Program {
            name: name.to_string(),
            bc: PathBuf::from(format!("{name}.bc")),
            c: PathBuf::from(format!("{name}.c")),
            lua: PathBuf::from(format!("{name}.lua")),
            what: String::new(),
            expected: "1\n".to_string(),
        }
    }

    #[test]
    fn selecting_no_names_keeps_every_program_and_names_keep_the_suite_order() {
        let all = vec![program("a"), program("b"), program("c")];
        assert_eq!(select(all.clone(), &[]).unwrap(), all);
        let picked = select(all, &["c".to_string(), "a".to_string()]).unwrap();
        let names: Vec<&str> = picked.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
    }

    #[test]
    fn selecting_an_unknown_program_lists_the_known_ones() {
        let err = select(vec![program("fib")], &["fbi".to_string()]).unwrap_err();
        assert!(err.contains("`fbi`") && err.contains("fib"), "{err}");
    }
}
