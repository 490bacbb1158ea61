//! The native tiers from the outside: every case and example gives the interpreter's
//! stdout, status and trap reason in every tier and in mixes of tiers, `patch` holds its
//! guarantee while native callers run, and no mapping is ever writable and executable.

use jitvm_conformance::{discover, run_command, Outcome};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_jitvm"))
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[String]) -> Outcome {
    run_command(&binary(), args, Duration::from_secs(120)).unwrap()
}

/// What must agree between tiers: stdout, exit status, and the trap line on stderr.
fn observable(out: &Outcome) -> (Vec<u8>, Option<i32>, Option<String>) {
    assert!(!out.timed_out && out.signal.is_none(), "{out:?}");
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    let trap = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error: trap:"))
        .map(String::from);
    (out.stdout.clone(), out.status, trap)
}

fn run_file(file: &Path, extra: &[String]) -> Outcome {
    let mut args = vec!["run".to_string()];
    args.extend(extra.iter().cloned());
    args.push(file.display().to_string());
    run(&args)
}

/// Names of the functions in a `.bc` file, in order.
fn function_names(file: &Path) -> Vec<String> {
    let module = jitvm_vm::parse_module(&std::fs::read(file).unwrap()).unwrap();
    module.functions.iter().map(|f| f.name.clone()).collect()
}

/// Programs that run (cases that are not static errors) and the examples.
fn programs() -> Vec<(PathBuf, Vec<String>)> {
    let mut all: Vec<(PathBuf, Vec<String>)> = discover(&root().join("tests/conformance"))
        .unwrap()
        .into_iter()
        .filter(|c| c.status != 2)
        .map(|c| (c.file, c.args))
        .collect();
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bc") {
            all.push((path, Vec::new()));
        }
    }
    all.sort();
    all
}

fn assert_same_as_interp(mixes: impl Fn(&Path) -> Vec<Vec<String>>) {
    let mut failures = Vec::new();
    for (file, args) in programs() {
        let mut base = args.clone();
        base.push("--tier=interp".into());
        let expected = observable(&run_file(&file, &base));
        for mix in mixes(&file) {
            let mut flags = args.clone();
            flags.extend(mix.iter().cloned());
            let got = observable(&run_file(&file, &flags));
            if got != expected {
                failures.push(format!(
                    "{} with {flags:?}: got {:?}, interpreter gave {:?}",
                    file.display(),
                    (String::from_utf8_lossy(&got.0), got.1, &got.2),
                    (
                        String::from_utf8_lossy(&expected.0),
                        expected.1,
                        &expected.2
                    )
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_program_behaves_in_the_baseline_tier_as_in_the_interpreter() {
    assert_same_as_interp(|_| vec![vec!["--tier=baseline".into()]]);
}

#[test]
fn every_program_behaves_the_same_with_its_functions_in_mixed_tiers() {
    // Two complementary mixes: even-numbered functions native and odd ones interpreted,
    // then the other way round, so every call crosses tiers in one of them.
    assert_same_as_interp(|file| {
        let names = function_names(file);
        (0..2)
            .map(|parity| {
                let mut flags = vec!["--tier=baseline".to_string()];
                for (i, name) in names.iter().enumerate() {
                    if i % 2 == parity {
                        flags.push(format!("--func-tier={name}=interp"));
                    }
                }
                flags
            })
            .collect()
    });
}

#[test]
fn every_program_behaves_in_the_optimizing_tier_as_in_the_interpreter() {
    assert_same_as_interp(|_| vec![vec!["--tier=opt".into()]]);
}

#[test]
fn every_program_behaves_the_same_with_optimized_functions_mixed_with_the_other_tiers() {
    // Even functions optimized and odd ones baseline, then odd ones interpreted under opt,
    // then even ones optimized under the interpreter: every pair of tiers calls each other.
    assert_same_as_interp(|file| {
        let names = function_names(file);
        let mix = |tier: &str, parity: usize, other: &str| {
            let mut flags = vec![format!("--tier={tier}")];
            for (i, name) in names.iter().enumerate() {
                if i % 2 == parity {
                    flags.push(format!("--func-tier={name}={other}"));
                }
            }
            flags
        };
        vec![
            mix("opt", 1, "baseline"),
            mix("baseline", 0, "opt"),
            mix("opt", 1, "interp"),
            mix("interp", 0, "opt"),
        ]
    });
}

fn temp_program(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jitvm-native-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Three workers call `target` in native code in a loop while the patcher cycles it through
/// `one`, `two` and `three` 2,000 times. Flip k makes `target` run definition k mod 3
/// and is published in cell 0; the patcher flips again only once every worker has called
/// since. A worker that read k before its call must get flip k's definition or flip k+1's
/// (spec §5), never an older one and never anything else (`assert` traps otherwise).
const PATCH_STRESS: &str = "
memory 8
func one(x)
  push 1
  ret
end
func two(x)
  push 2
  ret
end
func three(x)
  push 3
  ret
end
func target(x)
  push 1
  ret
end
func worker(w)
  local seen
  local r
loop:
  push 0
  mload
  store seen
  load w
  call target
  store r
  load r
  load seen
  push 3
  rem
  push 1
  add
  eq
  load r
  load seen
  push 1
  add
  push 3
  rem
  push 1
  add
  eq
  or
  assert
  load w
  push 2
  add
  load seen
  mstore
  push 5
  mload
  jz loop
  push 0
  ret
end
func wait(k)
w2:
  push 2
  mload
  load k
  lt
  jnz w2
w3:
  push 3
  mload
  load k
  lt
  jnz w3
w4:
  push 4
  mload
  load k
  lt
  jnz w4
  push 0
  ret
end
func main()
  local k
  local h0
  local h1
  local h2
  push 0
  spawn worker
  store h0
  push 1
  spawn worker
  store h1
  push 2
  spawn worker
  store h2
next:
  load k
  push 1
  add
  store k
  load k
  push 3
  rem
  dup
  jz to_one
  push 1
  eq
  jnz to_two
  patch target three
  jmp published
to_one:
  pop
  patch target one
  jmp published
to_two:
  patch target two
published:
  push 0
  load k
  mstore
  load k
  call wait
  pop
  load k
  push 2000
  lt
  jnz next
  push 5
  push 1
  mstore
  load h0
  join
  load h1
  join
  load h2
  join
  add
  add
  print
  load k
  print
  push 0
  ret
end
";

#[test]
fn native_callers_only_ever_run_one_of_the_two_definitions_while_another_thread_patches_thousands_of_times(
) {
    let file = temp_program("patch_stress.bc", PATCH_STRESS);
    for mix in [
        vec!["--tier=baseline".to_string()],
        vec![
            "--tier=baseline".to_string(),
            "--func-tier=two=interp".to_string(),
        ],
        vec!["--tier=opt".to_string()],
        vec![
            "--tier=opt".to_string(),
            "--func-tier=two=interp".to_string(),
        ],
        vec![
            "--tier=opt".to_string(),
            "--func-tier=two=baseline".to_string(),
        ],
    ] {
        let mut args = vec!["run".to_string()];
        args.extend(mix.iter().cloned());
        args.push(file.display().to_string());
        let out = run_command_env(&args, &[("JITVM_POISON", "1")]);
        assert_eq!(
            (String::from_utf8_lossy(&out.stdout).as_ref(), out.status),
            ("0\n2000\n", Some(0)),
            "{mix:?}: {out:?}"
        );
    }
}

/// Runs the binary with `args` and extra environment variables (poison mode, say).
fn run_command_env(args: &[String], env: &[(&str, &str)]) -> Outcome {
    let out = std::process::Command::new(binary())
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    Outcome {
        status: out.status.code(),
        signal: out.status.signal(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        timed_out: false,
    }
}

/// `a` and `b` call each other n levels deep, so with one native and one interpreted every
/// call crosses tiers.
const MUTUAL: &str = "
func a(n)
  load n
  jz bottom
  load n
  push 1
  sub
  call b
  push 1
  add
  ret
bottom:
  push 0
  ret
end
func b(n)
  load n
  jz bottom
  load n
  push 1
  sub
  call a
  push 1
  add
  ret
bottom:
  push 0
  ret
end
func main()
  push 999998
  call a
  print
  push 999999
  call a
  print
  push 0
  ret
end
";

#[test]
fn stack_overflow_comes_at_the_same_depth_in_every_mix_of_tiers_at_a_million_levels() {
    let file = temp_program("mutual.bc", MUTUAL);
    for mix in [
        &["--tier=interp"][..],
        &["--tier=baseline"][..],
        &["--tier=baseline", "--func-tier=b=interp"][..],
        &["--tier=interp", "--func-tier=a=baseline"][..],
        &["--tier=opt"][..],
        &["--tier=opt", "--func-tier=b=interp"][..],
        &["--tier=opt", "--func-tier=b=baseline"][..],
    ] {
        let mut flags = vec!["--max-depth=1000000".to_string()];
        flags.extend(mix.iter().map(|s| s.to_string()));
        // main is depth 1, so a(999998) nests a million deep and a(999999) one more.
        let got = observable(&run_file(&file, &flags));
        assert_eq!(
            got,
            (
                b"999998\n".to_vec(),
                Some(1),
                Some("error: trap: stack overflow".to_string())
            ),
            "{mix:?}"
        );
    }
}

#[test]
fn no_mapping_is_ever_writable_and_executable_while_native_code_runs() {
    // Prints for a while (about half a second) from native code.
    let file = temp_program(
        "printer.bc",
        "func main()\n  local i\nloop:\n  load i\n  print\n  load i\n  push 1\n  add\n  dup\n  store i\n  push 3000000\n  lt\n  jnz loop\n  push 0\n  ret\nend\n",
    );
    let mut child = std::process::Command::new(binary())
        .args(["run", "--tier=baseline"])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut sink = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut sink).unwrap();
        sink.len()
    });
    let maps = format!("/proc/{}/maps", child.id());
    let mut looks = 0;
    let mut executable_seen = false;
    while child.try_wait().unwrap().is_none() {
        if let Ok(text) = std::fs::read_to_string(&maps) {
            looks += 1;
            for line in text.lines() {
                let perms = line.split_whitespace().nth(1).unwrap_or("");
                assert!(
                    !(perms.contains('w') && perms.contains('x')),
                    "writable and executable: {line}"
                );
                executable_seen |= perms.contains('x') && line.contains("/dev/zero");
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(child.wait().unwrap().success());
    assert!(reader.join().unwrap() > 0);
    assert!(looks > 0, "the program ended before its maps could be read");
    assert!(executable_seen, "the runtime's code view was never seen");
}

#[test]
fn division_by_constants_agrees_with_the_interpreter_in_every_tier_for_every_sign() {
    // `f(x)` prints x div c and x rem c for constants the JITs turn into multiplications.
    let consts = [3i64, 5, 6, 7, 10, 11, 13, -7, -13, 1_000_003, i64::MAX];
    let values = [
        0i64,
        1,
        2,
        6,
        7,
        13,
        14,
        -1,
        -7,
        -13,
        -14,
        1_000_003,
        -1_000_003,
        i64::MAX,
        i64::MIN,
        i64::MIN + 1,
        1 << 62,
        123_456_789_012_345,
    ];
    let mut src = String::from("func f(x)\n");
    for c in consts {
        for op in ["div", "rem"] {
            src.push_str(&format!("  load x\n  push {c}\n  {op}\n  print\n"));
        }
    }
    src.push_str("  push 0\n  ret\nend\nfunc main()\n");
    for v in values {
        src.push_str(&format!("  push {v}\n  call f\n  pop\n"));
    }
    src.push_str("  push 0\n  ret\nend\n");
    let file = temp_program("divide_by_constants.bc", &src);
    let expected = observable(&run_file(&file, &["--tier=interp".to_string()]));
    assert_eq!(
        expected.0.iter().filter(|&&b| b == b'\n').count(),
        values.len() * consts.len() * 2
    );
    for tier in ["--tier=baseline", "--tier=opt"] {
        assert_eq!(
            observable(&run_file(&file, &[tier.to_string()])),
            expected,
            "{tier}"
        );
    }
}
