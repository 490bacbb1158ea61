//! Every operator on corner values, against the spec's Rust semantics (`BinOp::eval`), with
//! its operands in every place the stack model can put them: locals in registers, pool
//! registers, locals in frame slots, spilled entries, constants on either side, and under
//! register pressure (so `rcx` is taken when a shift needs it).

#![cfg(target_arch = "x86_64")]

mod support;

use jitvm_vm::BinOp;
use jitvm_vm::Trap;
use std::fmt::Write;
use std::sync::Arc;
use support::Machine;

const CORNERS: [i64; 22] = [
    0,
    1,
    -1,
    2,
    -2,
    7,
    -7,
    13,
    63,
    64,
    65,
    -64,
    1 << 31,
    -(1 << 31),
    (1 << 31) - 1,
    1 << 32,
    i64::MAX,
    i64::MIN,
    i64::MAX - 1,
    i64::MIN + 1,
    0x5555_5555_5555_5555,
    -1234567890123,
];

/// Operand placements: (name, function body computing `a OP b` from params `a`, `b`).
fn forms(op: &str) -> Vec<(&'static str, String)> {
    vec![
        // Both operands are locals in callee-saved registers.
        ("locals", format!("load a\n load b\n {op}\n ret")),
        // Both in pool registers the instruction may overwrite.
        (
            "pool",
            format!("load a\n push 0\n add\n load b\n push 0\n add\n {op}\n ret"),
        ),
        // Both spilled: a label makes the stack canonical.
        (
            "spilled",
            format!("load a\n load b\n jmp l\nl:\n {op}\n ret"),
        ),
        // a spilled, b in a register; then the other way round.
        (
            "mixed",
            format!("load a\n jmp l\nl:\n load b\n push 0\n add\n {op}\n ret"),
        ),
        (
            "mixed2",
            format!("load a\n push 0\n add\n load b\n jmp l\nl:\n {op}\n ret"),
        ),
        // The result stored at once into a local register: computed in place when that is
        // safe (the local is the left operand, or neither), through a register otherwise.
        (
            "store",
            format!("load a\n load b\n {op}\n store t\n load t\n ret"),
        ),
        (
            "store_a",
            format!("load a\n load b\n {op}\n store a\n load a\n ret"),
        ),
        (
            "store_b",
            format!("load a\n load b\n {op}\n store b\n load b\n ret"),
        ),
        (
            "dup_store",
            format!("load a\n load b\n {op}\n dup\n store a\n ret"),
        ),
        (
            "store_k",
            format!(
                "load a\n push 3\n {op}\n load b\n {op}\n store t\n load t\n push 3\n {op}\n ret"
            ),
        ),
        // Under pressure: five then six other values hold pool registers, so a and b take
        // the last ones (rcx among them) or force spills. The others must survive: the
        // result is xored with their sum.
        ("pressure5", pressure(op, 5)),
        ("pressure6", pressure(op, 6)),
    ]
}

fn pressure(op: &str, n: usize) -> String {
    let mut s = String::new();
    for k in 1..=n {
        let _ = write!(s, "load a\n push {k}\n add\n ");
    }
    let _ = write!(
        s,
        "load a\n push 0\n add\n load b\n push 0\n add\n {op}\n store t\n "
    );
    for _ in 1..n {
        s.push_str("add\n ");
    }
    s.push_str("load t\n xor\n ret");
    s
}

fn pressure_expected(a: i64, r: i64, n: i64) -> i64 {
    (1..=n).fold(0i64, |acc, k| acc.wrapping_add(a.wrapping_add(k))) ^ r
}

/// A module with one function per form, plus a memory-locals variant: five busier locals
/// take the registers, so a and b live in frame slots.
fn module_for(op: &str) -> String {
    let mut src = String::new();
    for (name, body) in forms(op) {
        let _ = writeln!(src, "func {name}(a, b)\n local t\n {body}\nend");
    }
    let busy = "load p\n load q\n load r\n load s\n load u\n load p\n load q\n load r\n \
                load s\n load u\n pop\n pop\n pop\n pop\n pop\n pop\n pop\n pop\n pop\n pop";
    let _ = writeln!(
        src,
        "func memory(a, b)\n local p\n local q\n local r\n local s\n local u\n {busy}\n \
         load a\n load b\n {op}\n ret\nend"
    );
    src.push_str("func main()\n push 0\n ret\nend\n");
    src
}

fn call(m: &Arc<Machine>, name: &str, args: &[i64]) -> Result<i64, Trap> {
    m.run_here(m.func_id(name), args)
}

fn check_op(op: BinOp, values: &[i64]) {
    let m = Machine::load(&module_for(op.mnemonic()), 100);
    let names: Vec<&str> = forms("")
        .iter()
        .map(|(n, _)| *n)
        .chain(["memory"])
        .collect();
    for &a in values {
        for &b in values {
            let expected = op.eval(a, b).ok_or(Trap::DivisionByZero);
            for name in &names {
                let got = call(&m, name, &[a, b]);
                let want = match *name {
                    "pressure5" => expected.map(|r| pressure_expected(a, r, 5)),
                    "pressure6" => expected.map(|r| pressure_expected(a, r, 6)),
                    "store_k" => op
                        .eval(a, 3)
                        .and_then(|x| op.eval(x, b))
                        .and_then(|x| op.eval(x, 3))
                        .ok_or(Trap::DivisionByZero),
                    _ => expected,
                };
                assert_eq!(got, want, "{a} {} {b} ({name})", op.mnemonic());
            }
        }
    }
}

#[test]
fn every_binary_operator_matches_wrapping_semantics_wherever_its_operands_live() {
    for op in BinOp::ALL {
        check_op(op, &CORNERS);
    }
}

/// `push C` on one side of `op`: immediates, folding and division by constants.
fn check_constant_operands(op: BinOp, constants: &[i64], values: &[i64]) {
    let mut src = String::new();
    for (i, c) in constants.iter().enumerate() {
        let o = op.mnemonic();
        let _ = writeln!(src, "func r{i}(a)\n load a\n push {c}\n {o}\n ret\nend");
        let _ = writeln!(src, "func l{i}(b)\n push {c}\n load b\n {o}\n ret\nend");
        // In a pool register, and spilled, on the left.
        let _ = writeln!(
            src,
            "func p{i}(a)\n load a\n push 0\n add\n push {c}\n {o}\n ret\nend"
        );
        let _ = writeln!(
            src,
            "func s{i}(a)\n load a\n jmp l\nl:\n push {c}\n {o}\n ret\nend"
        );
    }
    src.push_str("func main()\n push 0\n ret\nend\n");
    let m = Machine::load(&src, 100);
    for (i, &c) in constants.iter().enumerate() {
        for &v in values {
            let o = op.mnemonic();
            let right = op.eval(v, c).ok_or(Trap::DivisionByZero);
            for f in ["r", "p", "s"] {
                assert_eq!(
                    call(&m, &format!("{f}{i}"), &[v]),
                    right,
                    "{v} {o} {c} ({f})"
                );
            }
            let left = op.eval(c, v).ok_or(Trap::DivisionByZero);
            assert_eq!(call(&m, &format!("l{i}"), &[v]), left, "{c} {o} {v}");
        }
    }
}

fn interesting_values() -> Vec<i64> {
    let mut v = CORNERS.to_vec();
    v.extend(-20..=20);
    v.extend([
        100,
        -100,
        1 << 62,
        -(1 << 62),
        (1 << 62) - 1,
        1_000_000_007 * 3,
    ]);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..60 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as i64);
        v.push((x as i64) >> (x % 61));
    }
    v
}

#[test]
fn every_binary_operator_with_a_constant_operand_matches_wrapping_semantics() {
    for op in BinOp::ALL {
        check_constant_operands(op, &CORNERS, &CORNERS);
    }
}

#[test]
fn division_and_remainder_by_constants_match_division_by_variables() {
    let mut divisors: Vec<i64> = (-9..=9).collect();
    for k in 1..63 {
        divisors.push(1 << k);
        divisors.push(-(1 << k));
    }
    divisors.extend([
        i64::MAX,
        i64::MIN,
        i64::MIN + 1,
        1_000_000_007,
        -1_000_000_007,
        (1 << 32) + 1,
        641,
        6_700_417,
        0x7FFF_FFFF,
        -0x8000_0000,
        100,
        1000,
        -3,
        10,
        60,
    ]);
    let values = interesting_values();
    for op in [BinOp::Div, BinOp::Rem] {
        check_constant_operands(op, &divisors, &values);
    }
}

#[test]
fn min_divided_by_minus_one_wraps_and_its_remainder_is_zero() {
    let m = Machine::load(
        "func d(a, b)\n load a\n load b\n div\n ret\nend\n\
         func r(a, b)\n load a\n load b\n rem\n ret\nend\n\
         func main()\n push 0\n ret\nend\n",
        10,
    );
    assert_eq!(call(&m, "d", &[i64::MIN, -1]), Ok(i64::MIN));
    assert_eq!(call(&m, "r", &[i64::MIN, -1]), Ok(0));
    assert_eq!(call(&m, "d", &[5, 0]), Err(Trap::DivisionByZero));
    assert_eq!(call(&m, "r", &[5, 0]), Err(Trap::DivisionByZero));
}

#[test]
fn unary_operators_match_wrapping_semantics() {
    let m = Machine::load(
        "func neg(a)\n load a\n neg\n ret\nend\n\
         func negp(a)\n load a\n push 1\n add\n neg\n ret\nend\n\
         func not(a)\n load a\n not\n ret\nend\n\
         func nots(a)\n load a\n jmp l\nl:\n not\n ret\nend\n\
         func notjz(a)\n load a\n not\n jz z\n push 10\n ret\nz:\n push 20\n ret\nend\n\
         func main()\n push 0\n ret\nend\n",
        10,
    );
    for &a in &interesting_values() {
        assert_eq!(call(&m, "neg", &[a]), Ok(a.wrapping_neg()));
        assert_eq!(call(&m, "negp", &[a]), Ok(a.wrapping_add(1).wrapping_neg()));
        assert_eq!(call(&m, "not", &[a]), Ok((a == 0) as i64));
        assert_eq!(call(&m, "nots", &[a]), Ok((a == 0) as i64));
        assert_eq!(call(&m, "notjz", &[a]), Ok(if a == 0 { 10 } else { 20 }));
    }
}

#[test]
fn fused_compare_and_branch_agrees_with_the_comparison_value() {
    let mut src = String::new();
    let cmps = ["eq", "ne", "lt", "le", "gt", "ge"];
    for c in cmps {
        // Fused with jnz and with jz, against a constant on either side, and unfused.
        let _ = writeln!(
            src,
            "func {c}_jnz(a, b)\n load a\n load b\n {c}\n jnz y\n push 0\n ret\ny:\n push 1\n ret\nend\n\
             func {c}_jz(a, b)\n load a\n load b\n {c}\n jz n\n push 1\n ret\nn:\n push 0\n ret\nend\n\
             func {c}_k(a, b)\n load a\n push 7\n {c}\n jnz y\n push 0\n ret\ny:\n push 1\n ret\nend\n\
             func {c}_kl(a, b)\n push 7\n load a\n {c}\n jz n\n push 1\n ret\nn:\n push 0\n ret\nend\n\
             func {c}_v(a, b)\n load a\n load b\n {c}\n ret\nend"
        );
    }
    src.push_str("func main()\n push 0\n ret\nend\n");
    let m = Machine::load(&src, 10);
    let values = [0, 1, -1, 6, 7, 8, i64::MIN, i64::MAX, -7];
    for c in cmps {
        let op = BinOp::ALL.into_iter().find(|o| o.mnemonic() == c).unwrap();
        for &a in &values {
            for &b in &values {
                let want = op.eval(a, b);
                for form in ["jnz", "jz", "v"] {
                    assert_eq!(call(&m, &format!("{c}_{form}"), &[a, b]).ok(), want);
                }
                assert_eq!(call(&m, &format!("{c}_k"), &[a, 0]).ok(), op.eval(a, 7));
                assert_eq!(call(&m, &format!("{c}_kl"), &[a, 0]).ok(), op.eval(7, a));
            }
        }
    }
}

/// Functions opening with a base case (`a; b; CMP; jz/jnz L; v; ret`) return it before
/// any frame exists; every shape of the guard agrees with the reference evaluator, and the
/// rest of the body (reached through the frame set-up) still sees every parameter.
#[test]
fn base_case_guards_agree_with_the_evaluator() {
    let operands = [
        "load a",
        "load d",
        "load e",
        "push 2",
        "push -3",
        "push 9223372036854775807",
    ];
    let mut src = String::new();
    let mut names = Vec::new();
    let mut n = 0;
    for x in operands {
        for y in operands {
            for cmp in ["eq", "ne", "lt", "le", "gt", "ge"] {
                for jump in ["jz", "jnz"] {
                    for v in ["load b", "push 7", "load e"] {
                        // Odd functions put another block between the guard and `more`.
                        let (block, branch) = if n % 2 == 0 {
                            ("", "")
                        } else {
                            ("other:\n  push 1\n  ret\n", "  load c\n  jz other\n")
                        };
                        let _ = writeln!(
                            src,
                            "func g{n}(a, b, c, d, e)\n  {x}\n  {y}\n  {cmp}\n  {jump} more\n  {v}\n  ret\n\
                             {block}more:\n{branch}  load a\n  load b\n  load c\n  load d\n  load e\n  push 1\n  \
                             sub\n  call h\n  load e\n  mul\n  ret\nend"
                        );
                        names.push(format!("g{n}"));
                        n += 1;
                    }
                }
            }
        }
    }
    src.push_str("func h(a, b, c, d, e)\n load a\n load b\n add\n load c\n sub\n load d\n xor\n load e\n add\n ret\nend\n");
    src.push_str("func main()\n push 0\n ret\nend\n");
    let native = Machine::load(&src, 100);
    let interp = Machine::load_with(&src, 100, |_, _| support::Tier::Interp);
    let values = [0i64, 1, 2, -3, 7, i64::MAX, i64::MIN];
    for name in &names {
        for &a in &values {
            for &e in &values {
                let args = [a, a ^ 5, e.wrapping_add(1), a.wrapping_sub(e), e];
                let want = call(&interp, name, &args);
                assert_eq!(call(&native, name, &args), want, "{name}{args:?}");
            }
        }
    }
    // Leaf calls through the guard still count depth: max_depth 1 allows only the first.
    let one = Machine::load(&src, 1);
    assert!(call(&one, "g0", &[2, 0, 0, 0, 0]).is_ok());
}
