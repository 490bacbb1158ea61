//! The generator's promises that need no `jitvm` binary: every module verifies, the same
//! bytes give the same module, and the features it exists to exercise all show up, in
//! each profile those its test needs and none its host cannot run.

use jitvm_bcgen::{generate, generate_seeded, Profile};
use jitvm_conformance::rng::Rng;
use jitvm_vm::bytecode::BinOp;

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

/// Whether some comparison is followed straight by its branch: the pair the lowering fuses.
fn has_fused_compare_branch(text: &str) -> bool {
    let instrs: Vec<&str> = text
        .lines()
        .map(|l| l.split(';').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect();
    instrs.windows(2).any(|w| {
        let comparison = BinOp::ALL
            .iter()
            .any(|op| op.is_comparison() && w[0] == op.mnemonic());
        comparison && (w[1].starts_with("jz ") || w[1].starts_with("jnz "))
    })
}

#[test]
fn each_test_profile_makes_the_shapes_its_test_is_for_and_nothing_its_host_cannot_run() {
    let operators: Vec<String> = BinOp::ALL
        .iter()
        .map(|op| format!("  {}\n", op.mnemonic()))
        .collect();
    let lowering = [
        "jz L",
        "jnz L",
        "local c",
        "call f",
        "mload",
        "mstore",
        "atomic_add",
    ];
    let native = [
        "call f", "p7", "print", "assert", "dup", "swap", "over", "cas", "jmp L",
    ];
    let cases: [(Profile, &[&str], &[&str]); 2] = [
        (
            Profile::LOWERING,
            &lowering,
            &["spawn", "join", "patch", "print", "putc", "; jitvm run"],
        ),
        (
            Profile::NATIVE,
            &native,
            &["spawn", "join", "patch", "; jitvm run"],
        ),
    ];
    for (profile, wanted, banned) in cases {
        let texts: Vec<String> = (1..=300)
            .map(|seed| generate_seeded(seed, 4096, &profile).text)
            .collect();
        for text in &texts {
            verify(text);
            for needle in banned {
                assert!(!text.contains(needle), "{needle:?} in {profile:?}:\n{text}");
            }
        }
        let share = |needle: &str| texts.iter().filter(|t| t.contains(needle)).count();
        for needle in wanted
            .iter()
            .copied()
            .chain(operators.iter().map(|s| s.as_str()))
        {
            let seen = share(needle);
            assert!(
                seen >= 10,
                "{profile:?}: only {seen} of 300 contain {needle:?}"
            );
        }
        if profile.compare_branches {
            let fused = texts.iter().filter(|t| has_fused_compare_branch(t)).count();
            assert!(fused >= 100, "only {fused} of 300 fuse a compare-branch");
        }
    }
}

/// FNV-1a of every module a profile makes from seeds 1..=300 (and, for the full profile,
/// from the random inputs of the other tests).
fn fingerprint(profile: &Profile) -> u64 {
    let mut texts: Vec<String> = (1..=300)
        .map(|seed| generate_seeded(seed, 4096, profile).text)
        .collect();
    if *profile == Profile::FUZZ {
        texts.extend(random_inputs(300, 0x6e6e_0004).map(|input| generate(&input).text));
    }
    texts.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, text| {
        text.bytes()
            .chain([0])
            .fold(h, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
    })
}

/// New switches only turn features on or off: the profiles that existed before them make
/// the same modules from the same bytes (failures found by fuzzing still reproduce). A
/// deliberate change to what they generate updates these numbers.
#[test]
fn the_existing_profiles_still_make_the_same_modules_from_the_same_bytes() {
    for (profile, expected) in [
        (Profile::FUZZ, 10246409408674124766u64),
        (Profile::LOWERING, 15069789415162697995),
        (Profile::NATIVE, 4617057552283429595),
    ] {
        assert_eq!(
            fingerprint(&profile),
            expected,
            "{profile:?} makes other modules than before"
        );
    }
}
