//! The generator's promises that need no `jitvm` binary: every module verifies, the same
//! bytes give the same module, and the features it exists to exercise all show up.

use jitvm_bcgen::generate;
use jitvm_conformance::rng::Rng;

fn random_inputs(count: usize, seed: u64) -> impl Iterator<Item = Vec<u8>> {
    let mut rng = Rng::new(seed);
    (0..count).map(move |_| {
        let len = rng.index(4096);
        (0..len).map(|_| rng.next_u64() as u8).collect()
    })
}

fn verify(text: &str) {
    if let Err(errors) = jitvm_vm::parse_module(text.as_bytes()) {
        panic!("generated module does not verify: {errors:?}\n{text}");
    }
}

#[test]
fn every_generated_module_parses_and_verifies() {
    for input in random_inputs(3000, 0x6e6e_0001) {
        verify(&generate(&input).text);
    }
}

#[test]
fn inputs_with_few_or_no_bytes_still_give_valid_modules() {
    verify(&generate(&[]).text);
    for len in 1..64 {
        verify(&generate(&vec![0xff; len]).text);
        verify(&generate(&vec![0x80; len]).text);
    }
}

#[test]
fn the_same_bytes_give_the_same_module() {
    for input in random_inputs(50, 0x6e6e_0002) {
        assert_eq!(generate(&input).text, generate(&input).text);
    }
}

#[test]
fn generated_modules_exercise_every_feature_the_check_is_for() {
    let texts: Vec<String> = random_inputs(1000, 0x6e6e_0003)
        .map(|input| generate(&input).text)
        .collect();
    let share = |needle: &str| texts.iter().filter(|t| t.contains(needle)).count();
    for needle in [
        "call f",
        "spawn f",
        "join",
        "patch f",
        "mload",
        "mstore",
        "atomic_add",
        "cas",
        "msize",
        " div",
        " rem",
        " shl",
        " ushr",
        " shr",
        "jnz L",
        "jz L",
        "swap",
        "over",
        "dup",
        "neg",
        "not",
        "assert",
        "print",
        "putc",
        "push -9223372036854775808",
        "memory ",
        "local c",
        "local h",
    ] {
        let seen = share(needle);
        assert!(seen >= 10, "only {seen} of 1000 modules contain {needle:?}");
    }
}
