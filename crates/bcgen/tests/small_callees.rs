//! [`Profile::INLINING`] makes what an inliner needs, read back from the modules' text:
//! small functions called from inside loops and from other functions, small functions
//! calling each other, patches between small functions (also at one trip of a loop that
//! calls the patched function), and patches of twins while workers run.

use jitvm_bcgen::{generate_seeded, Profile};
use std::collections::HashMap;

/// At most this many instructions: what the tests call a small function.
const SMALL: usize = 12;

/// One function of a module's text.
struct Func {
    name: String,
    params: usize,
    /// Instructions, without comments, labels and `local` lines.
    instrs: Vec<String>,
    /// Each label's position in `instrs`.
    labels: HashMap<String, usize>,
}

impl Func {
    fn is_small(&self) -> bool {
        self.instrs.len() <= SMALL
    }

    /// The instructions of each loop: from a label to a jump back to it.
    fn loop_bodies(&self) -> Vec<&[String]> {
        self.instrs
            .iter()
            .enumerate()
            .filter_map(|(at, instr)| {
                let (op, target) = instr.split_once(' ')?;
                let start = *self.labels.get(target)?;
                (matches!(op, "jmp" | "jz" | "jnz") && start <= at)
                    .then(|| &self.instrs[start..=at])
            })
            .collect()
    }

    /// The functions this one calls, each time it calls one.
    fn calls(&self) -> impl Iterator<Item = &str> {
        self.instrs.iter().filter_map(|i| i.strip_prefix("call "))
    }
}

fn functions(text: &str) -> Vec<Func> {
    let mut all: Vec<Func> = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.split(';').next().unwrap_or("").trim();
        if let Some(header) = line.strip_prefix("func ") {
            let (name, params) = header.split_once('(').expect("a func header has `(`");
            let params = params.trim_end_matches(')');
            inside = true;
            all.push(Func {
                name: name.trim().to_string(),
                params: params.split(',').filter(|p| !p.trim().is_empty()).count(),
                instrs: Vec::new(),
                labels: HashMap::new(),
            });
        } else if line == "end" {
            inside = false;
        } else if line.is_empty() || line.starts_with("local ") || !inside {
            continue;
        } else if let Some(f) = all.last_mut() {
            match line.strip_suffix(':') {
                Some(label) => {
                    f.labels.insert(label.to_string(), f.instrs.len());
                }
                None => f.instrs.push(line.to_string()),
            }
        }
    }
    all
}

fn modules(count: u64) -> Vec<String> {
    (1..=count)
        .map(|seed| generate_seeded(seed, 4096, &Profile::INLINING).text)
        .collect()
}

fn verify(text: &str) {
    if let Err(errors) = jitvm_vm::parse_module(text.as_bytes()) {
        panic!("generated module does not verify: {errors:?}\n{text}");
    }
}

/// Whether a small function is called from inside a loop of another function.
fn calls_a_small_function_in_a_loop(funcs: &[Func]) -> bool {
    let small: HashMap<&str, &Func> = funcs
        .iter()
        .filter(|f| f.is_small())
        .map(|f| (f.name.as_str(), f))
        .collect();
    funcs.iter().any(|f| {
        f.loop_bodies().iter().any(|body| {
            body.iter()
                .filter_map(|i| i.strip_prefix("call "))
                .any(|callee| small.contains_key(callee))
        })
    })
}

#[test]
fn every_inlining_module_verifies_and_the_same_seed_gives_the_same_module() {
    for (seed, text) in (1..).zip(modules(300)) {
        verify(&text);
        assert_eq!(text, generate_seeded(seed, 4096, &Profile::INLINING).text);
    }
    verify(&jitvm_bcgen::generate_with(&[], &Profile::INLINING).text);
    for len in 1..64 {
        verify(&jitvm_bcgen::generate_with(&vec![0xff; len], &Profile::INLINING).text);
    }
}

#[test]
fn most_inlining_modules_call_a_function_of_at_most_twelve_instructions_inside_a_loop() {
    let texts = modules(200);
    let hot = texts
        .iter()
        .filter(|t| calls_a_small_function_in_a_loop(&functions(t)))
        .count();
    assert!(
        hot >= 140,
        "only {hot} of 200 call a small function in a loop"
    );
    // The full profile makes fewer: the new profile is what puts them there.
    let fuzz = (1..=200)
        .map(|seed| generate_seeded(seed, 4096, &Profile::FUZZ).text)
        .filter(|t| calls_a_small_function_in_a_loop(&functions(t)))
        .count();
    assert!(hot > fuzz + 40, "{hot} of 200, where FUZZ has {fuzz}");
}

#[test]
fn small_functions_call_each_other_and_are_called_from_functions_besides_main() {
    let texts = modules(200);
    let (mut nested, mut from_others) = (0, 0);
    for text in &texts {
        let funcs = functions(text);
        let small: Vec<&str> = funcs
            .iter()
            .filter(|f| f.is_small())
            .map(|f| f.name.as_str())
            .collect();
        nested += funcs
            .iter()
            .any(|f| f.is_small() && f.calls().any(|c| small.contains(&c)))
            as usize;
        from_others += funcs
            .iter()
            .any(|f| f.name != "main" && f.calls().any(|c| small.contains(&c)))
            as usize;
    }
    assert!(
        nested >= 25,
        "only {nested} of 200 have small calling small"
    );
    assert!(
        from_others >= 100,
        "only {from_others} of 200 call small functions from functions besides main"
    );
}

/// The most instructions a small callee may have: two values of an operand and one
/// operation each (a call of three arguments at most) around a compare-and-branch.
const LARGEST_SMALL_CALLEE: usize = 18;

#[test]
fn small_callees_are_short_leaves_without_loops_that_call_only_small_callees_once_at_most() {
    let mut seen = 0;
    for seed in 1..=300 {
        let module = generate_seeded(seed, 4096, &Profile::INLINING);
        let funcs = functions(&module.text);
        let by_name: HashMap<&str, &Func> = funcs.iter().map(|f| (f.name.as_str(), f)).collect();
        for name in &module.small_callees {
            seen += 1;
            let (f, text) = (by_name[name.as_str()], &module.text);
            assert!(f.instrs.len() <= LARGEST_SMALL_CALLEE, "{name}:\n{text}");
            assert!(f.params <= 3, "{name}:\n{text}");
            assert!(f.loop_bodies().is_empty(), "a loop in {name}:\n{text}");
            let calls: Vec<&str> = f.calls().collect();
            assert!(calls.len() <= 1, "{name} calls twice:\n{text}");
            for callee in calls {
                assert!(
                    module.small_callees.iter().any(|s| s == callee),
                    "{name} calls {callee}, which is not small:\n{text}"
                );
            }
            let loads = f.instrs.iter().filter(|i| *i == "mload").count();
            assert!(loads <= 1, "{name} loads twice:\n{text}");
            for instr in &f.instrs {
                let op = instr.split(' ').next().unwrap();
                assert!(
                    !matches!(op, "spawn" | "join" | "patch" | "print" | "putc" | "mstore"),
                    "{name}: {instr}:\n{text}"
                );
            }
        }
    }
    assert!(seen >= 700, "only {seen} small callees in 300 modules");
}

#[test]
fn inlining_modules_patch_small_functions_to_others_of_their_shape_also_at_one_trip_of_a_loop_calling_them(
) {
    let texts = modules(200);
    let (mut patched, mut mid_loop) = (0, 0);
    for text in &texts {
        let funcs = functions(text);
        let by_name: HashMap<&str, &Func> = funcs.iter().map(|f| (f.name.as_str(), f)).collect();
        let mut small_patch = false;
        for f in &funcs {
            for instr in &f.instrs {
                let Some(pair) = instr.strip_prefix("patch ") else {
                    continue;
                };
                let (from, to) = pair.split_once(' ').unwrap();
                let (from, to) = (by_name[from], by_name[to]);
                assert_eq!(from.params, to.params, "{instr}:\n{text}");
                small_patch |= from.is_small() && to.is_small();
            }
        }
        patched += small_patch as usize;
        // A loop that calls F and patches F.
        mid_loop += funcs.iter().flat_map(|f| f.loop_bodies()).any(|body| {
            body.iter().any(|i| {
                i.strip_prefix("patch ")
                    .and_then(|pair| pair.split_once(' '))
                    .is_some_and(|(from, _)| {
                        by_name[from].is_small()
                            && body.iter().any(|c| *c == format!("call {from}"))
                    })
            })
        }) as usize;
    }
    assert!(patched >= 60, "only {patched} of 200 patch small to small");
    assert!(
        mid_loop >= 25,
        "only {mid_loop} of 200 patch a small function in a loop that calls it"
    );
}

#[test]
fn main_patches_twins_to_functions_of_the_same_body_while_its_workers_run() {
    let texts = modules(400);
    let (mut concurrent, mut called_while_patched) = (0, 0);
    for text in &texts {
        let funcs = functions(text);
        let by_name: HashMap<&str, &Func> = funcs.iter().map(|f| (f.name.as_str(), f)).collect();
        let main = &funcs[0];
        let workers: Vec<&str> = main
            .instrs
            .iter()
            .filter_map(|i| i.strip_prefix("spawn "))
            .collect();
        let (mut spawned, mut seen, mut called) = (false, false, false);
        for instr in &main.instrs {
            if instr.starts_with("spawn ") {
                spawned = true;
            } else if instr == "join" {
                spawned = false;
            } else if let Some(pair) = instr.strip_prefix("patch ").filter(|_| spawned) {
                let (from, to) = pair.split_once(' ').unwrap();
                // Only a patch that changes nothing observable may race with the workers.
                assert_eq!(
                    by_name[from].instrs, by_name[to].instrs,
                    "{instr} while workers run:\n{text}"
                );
                seen = true;
                called |= workers
                    .iter()
                    .any(|w| by_name[w].calls().any(|c| c == from || c == to));
            }
        }
        concurrent += seen as usize;
        called_while_patched += called as usize;
    }
    assert!(
        concurrent >= 40,
        "only {concurrent} of 400 patch twins while workers run"
    );
    assert!(
        called_while_patched >= 40,
        "only {called_while_patched} of 400 patch what their workers call while they run"
    );
}
