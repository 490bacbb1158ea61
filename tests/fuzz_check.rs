//! Random and mutated text must never crash the front end: `jitvm check` exits 0 or 2 with
//! no panic, no signal and no hang, and whatever verifies must lower and disassemble.

use jitvm_conformance::rng::Rng;
use jitvm_vm::Instr;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

/// Words of the language besides the mnemonics (which come from the instruction table):
/// keywords, names, literals at and past the limits, punctuation.
const OTHER_WORDS: &[&str] = &[
    "func",
    "end",
    "memory",
    "local",
    "main",
    "main()",
    "f",
    "f(a)",
    "g(a,b)",
    "a",
    "b",
    "x",
    "L",
    "L:",
    "top:",
    "0",
    "1",
    "-1",
    "7",
    "0x10",
    "-0x8000000000000000",
    "9223372036854775808",
    "99999999999999999999",
    "(",
    ")",
    ",",
    ";",
    ":",
    "é",
    "\t",
];

/// Every mnemonic of the instruction table, then [`OTHER_WORDS`].
static WORDS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    Instr::all()
        .map(Instr::mnemonic)
        .chain(OTHER_WORDS.iter().copied())
        .collect()
});

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

fn seeds() -> Vec<Vec<u8>> {
    let mut files: Vec<_> = std::fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bc"))
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn random_tokens(rng: &mut Rng) -> Vec<u8> {
    let mut out = String::new();
    for _ in 0..rng.index(40) {
        for _ in 0..rng.index(4) {
            let word: &str = rng.pick(&WORDS);
            out.push_str(word);
            out.push(if rng.index(5) == 0 { '\t' } else { ' ' });
        }
        out.push('\n');
    }
    out.into_bytes()
}

fn random_bytes(rng: &mut Rng) -> Vec<u8> {
    (0..rng.index(300)).map(|_| rng.next_u64() as u8).collect()
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = seed.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    for _ in 0..1 + rng.index(4) {
        let n = lines.len();
        match rng.index(7) {
            0 if n > 0 => {
                lines.remove(rng.index(n));
            }
            1 if n > 0 => {
                let line = lines[rng.index(n)].clone();
                lines.insert(rng.index(n + 1), line);
            }
            2 if n > 1 => lines.swap(rng.index(n), rng.index(n)),
            3 => lines.insert(rng.index(n + 1), rng.pick(&WORDS).as_bytes().to_vec()),
            4 if n > 0 => {
                let i = rng.index(n);
                let line = &mut lines[i];
                if !line.is_empty() {
                    let j = rng.index(line.len());
                    line[j] = rng.next_u64() as u8;
                }
            }
            5 if n > 0 => {
                let i = rng.index(n);
                let cut = rng.index(lines[i].len() + 1);
                lines[i].truncate(cut);
            }
            _ => {
                let i = rng.index(n + 1);
                let words = format!("  {} {}", rng.pick(&WORDS), rng.pick(&WORDS));
                lines.insert(i, words.into_bytes());
            }
        }
    }
    lines.join(&b'\n')
}

fn inputs(count: usize, seed: u64) -> Vec<Vec<u8>> {
    let seeds = seeds();
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|i| match i % 4 {
            0 => random_tokens(&mut rng),
            1 => random_bytes(&mut rng),
            _ => {
                let seed = seeds[rng.index(seeds.len())].clone();
                mutate(&mut rng, &seed)
            }
        })
        .collect()
}

#[test]
fn front_end_never_panics_in_process() {
    let mut accepted = 0;
    for (i, input) in inputs(20_000, 0x5eed_1234_abcd_ef01).iter().enumerate() {
        let result = std::panic::catch_unwind(|| match jitvm_vm::parse_module(input) {
            Ok(module) => {
                let lowered = jitvm_vm::lower::lower_module(&module);
                jitvm_vm::disassemble(&module, Some(&lowered));
                true
            }
            Err(errors) => {
                assert!(
                    !errors.is_empty(),
                    "an error result carries at least one error"
                );
                false
            }
        });
        match result {
            Ok(ok) => accepted += ok as usize,
            Err(_) => panic!(
                "input #{i} panicked the front end:\n{}",
                String::from_utf8_lossy(input)
            ),
        }
    }
    // The mutations keep a share of programs valid, so lowering and dis are exercised too.
    assert!(accepted > 200, "only {accepted} inputs verified");
}

#[test]
fn check_exits_cleanly_on_random_and_mutated_files() {
    let dir = std::env::temp_dir().join(format!("jitvm-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_jitvm"));
    let mut statuses = [0usize; 3];
    for (i, input) in inputs(300, 0x0ddb_a11c_0ffe_e000).iter().enumerate() {
        let path = dir.join(format!("case{i}.bc"));
        std::fs::write(&path, input).unwrap();
        let args = ["check".to_string(), path.display().to_string()];
        let out = jitvm_conformance::run_command(&binary, &args, Duration::from_secs(20)).unwrap();
        let shown = String::from_utf8_lossy(input);
        assert!(!out.timed_out, "check hung on:\n{shown}");
        assert_eq!(
            out.signal, None,
            "check was killed by a signal on:\n{shown}"
        );
        assert!(
            !out.stderr.contains("panicked"),
            "check panicked on:\n{shown}\n{}",
            out.stderr
        );
        match out.status {
            Some(0) => assert!(out.stderr.is_empty(), "{}", out.stderr),
            Some(2) => {
                let first = out.stderr.lines().next().unwrap_or_default();
                let prefix = format!("{}:", path.display());
                assert!(
                    first.starts_with(&prefix) && first.contains(": error: "),
                    "bad diagnostic {first:?}"
                );
            }
            other => panic!("check exited with {other:?} on:\n{shown}\n{}", out.stderr),
        }
        statuses[out.status.unwrap() as usize] += 1;
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        statuses[0] > 0 && statuses[2] > 0,
        "both outcomes should occur: {statuses:?}"
    );
}
