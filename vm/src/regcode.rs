//! The interpreter's register instruction set, the way Lua's `lopcodes.h` lists its own: one
//! instruction a line, with its meaning. `R[x]` is frame slot `x` (parameters, then locals,
//! then one slot per operand stack height), `M[i]` a cell of shared memory, `#f` function `f`
//! of the module, `goto t` a jump to op `t` of the same function. `/` and `%` truncate toward
//! zero and trap on a zero divisor; shifts take their count mod 64; `>>>` shifts in zeros.
//!
//! Each line is the one place that instruction is described: the enum variant, its doc, the
//! text `jitvm dis --lowered` prints, and, for the ops that apply a [`BinOp`], the table
//! lowering uses to pick the op for an operator all come from it. Adding an instruction is a
//! line here, an arm in the interpreter and the lowering that emits it.

use crate::bytecode::{BinOp, FuncId};
use std::fmt;

/// A frame slot.
pub type Slot = u32;

/// An op index within the same function: where a jump goes.
pub type Target = u32;

/// `Some(field)` if the field is named `t`, the jump target of every op that jumps (a name
/// a macro can match, unlike a type), else `None`.
macro_rules! jump_target {
    (t $t:ident) => {
        Some($t)
    };
    ($other:ident $field:ident) => {
        None
    };
}

macro_rules! register_ops {
    ($(
        $name:ident { $($field:ident: $ty:ty),* }
        $(bin $bin:ident)? $(bin_imm $bin_imm:ident)?
        $(branch $branch:ident)? $(branch_imm $branch_imm:ident)?
        => $meaning:literal;
    )*) => {
        /// One interpreter instruction, operands inline (24 bytes, no decoding).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Op {
            $(
                #[doc = concat!("`", $meaning, "`")]
                $name { $($field: $ty),* },
            )*
        }

        /// The op's meaning, as its line in the table says (`R[3] := R[1] + 1`).
        impl fmt::Display for Op {
            fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
                match *self {
                    $(Op::$name { $($field),* } => write!(out, $meaning),)*
                }
            }
        }

        impl Op {
            /// `R[dst] := R[a] OP R[b]`.
            pub fn binary(op: BinOp, dst: Slot, a: Slot, b: Slot) -> Op {
                match op {
                    $($(BinOp::$bin => Op::$name { dst, a, b },)?)*
                }
            }

            /// `R[dst] := R[a] OP imm`.
            pub fn binary_imm(op: BinOp, dst: Slot, a: Slot, imm: i64) -> Op {
                match op {
                    $($(BinOp::$bin_imm => Op::$name { dst, a, imm },)?)*
                }
            }

            /// `if R[a] CMP R[b] goto t`, for a comparison `cmp`.
            pub fn branch(cmp: BinOp, a: Slot, b: Slot, t: Target) -> Option<Op> {
                match cmp {
                    $($(BinOp::$branch => Some(Op::$name { a, b, t }),)?)*
                    _ => None,
                }
            }

            /// `if R[a] CMP imm goto t`, for a comparison `cmp`.
            pub fn branch_imm(cmp: BinOp, a: Slot, imm: i64, t: Target) -> Option<Op> {
                match cmp {
                    $($(BinOp::$branch_imm => Some(Op::$name { a, imm, t }),)?)*
                    _ => None,
                }
            }

            /// The jump target, if this op can jump: its field `t`.
            #[allow(unused_variables)]
            pub fn target_mut(&mut self) -> Option<&mut Target> {
                match self {
                    $(Op::$name { $($field),* } => {
                        None $(.or(jump_target!($field $field)))*
                    })*
                }
            }
        }
    };
}

#[rustfmt::skip]
register_ops! {
    Mov       { dst: Slot, src: Slot }                             => "R[{dst}] := R[{src}]";
    MovI      { dst: Slot, imm: i64 }                              => "R[{dst}] := {imm}";
    Swap      { a: Slot, b: Slot }                                 => "R[{a}], R[{b}] := R[{b}], R[{a}]";
    Add       { dst: Slot, a: Slot, b: Slot }     bin Add          => "R[{dst}] := R[{a}] + R[{b}]";
    Sub       { dst: Slot, a: Slot, b: Slot }     bin Sub          => "R[{dst}] := R[{a}] - R[{b}]";
    Mul       { dst: Slot, a: Slot, b: Slot }     bin Mul          => "R[{dst}] := R[{a}] * R[{b}]";
    Div       { dst: Slot, a: Slot, b: Slot }     bin Div          => "R[{dst}] := R[{a}] / R[{b}]";
    Rem       { dst: Slot, a: Slot, b: Slot }     bin Rem          => "R[{dst}] := R[{a}] % R[{b}]";
    And       { dst: Slot, a: Slot, b: Slot }     bin And          => "R[{dst}] := R[{a}] & R[{b}]";
    Or        { dst: Slot, a: Slot, b: Slot }     bin Or           => "R[{dst}] := R[{a}] | R[{b}]";
    Xor       { dst: Slot, a: Slot, b: Slot }     bin Xor          => "R[{dst}] := R[{a}] ^ R[{b}]";
    Shl       { dst: Slot, a: Slot, b: Slot }     bin Shl          => "R[{dst}] := R[{a}] << R[{b}]";
    Shr       { dst: Slot, a: Slot, b: Slot }     bin Shr          => "R[{dst}] := R[{a}] >> R[{b}]";
    Ushr      { dst: Slot, a: Slot, b: Slot }     bin Ushr         => "R[{dst}] := R[{a}] >>> R[{b}]";
    Eq        { dst: Slot, a: Slot, b: Slot }     bin Eq           => "R[{dst}] := R[{a}] == R[{b}]";
    Ne        { dst: Slot, a: Slot, b: Slot }     bin Ne           => "R[{dst}] := R[{a}] != R[{b}]";
    Lt        { dst: Slot, a: Slot, b: Slot }     bin Lt           => "R[{dst}] := R[{a}] < R[{b}]";
    Le        { dst: Slot, a: Slot, b: Slot }     bin Le           => "R[{dst}] := R[{a}] <= R[{b}]";
    Gt        { dst: Slot, a: Slot, b: Slot }     bin Gt           => "R[{dst}] := R[{a}] > R[{b}]";
    Ge        { dst: Slot, a: Slot, b: Slot }     bin Ge           => "R[{dst}] := R[{a}] >= R[{b}]";
    AddI      { dst: Slot, a: Slot, imm: i64 }    bin_imm Add      => "R[{dst}] := R[{a}] + {imm}";
    SubI      { dst: Slot, a: Slot, imm: i64 }    bin_imm Sub      => "R[{dst}] := R[{a}] - {imm}";
    MulI      { dst: Slot, a: Slot, imm: i64 }    bin_imm Mul      => "R[{dst}] := R[{a}] * {imm}";
    DivI      { dst: Slot, a: Slot, imm: i64 }    bin_imm Div      => "R[{dst}] := R[{a}] / {imm}";
    RemI      { dst: Slot, a: Slot, imm: i64 }    bin_imm Rem      => "R[{dst}] := R[{a}] % {imm}";
    AndI      { dst: Slot, a: Slot, imm: i64 }    bin_imm And      => "R[{dst}] := R[{a}] & {imm}";
    OrI       { dst: Slot, a: Slot, imm: i64 }    bin_imm Or       => "R[{dst}] := R[{a}] | {imm}";
    XorI      { dst: Slot, a: Slot, imm: i64 }    bin_imm Xor      => "R[{dst}] := R[{a}] ^ {imm}";
    ShlI      { dst: Slot, a: Slot, imm: i64 }    bin_imm Shl      => "R[{dst}] := R[{a}] << {imm}";
    ShrI      { dst: Slot, a: Slot, imm: i64 }    bin_imm Shr      => "R[{dst}] := R[{a}] >> {imm}";
    UshrI     { dst: Slot, a: Slot, imm: i64 }    bin_imm Ushr     => "R[{dst}] := R[{a}] >>> {imm}";
    EqI       { dst: Slot, a: Slot, imm: i64 }    bin_imm Eq       => "R[{dst}] := R[{a}] == {imm}";
    NeI       { dst: Slot, a: Slot, imm: i64 }    bin_imm Ne       => "R[{dst}] := R[{a}] != {imm}";
    LtI       { dst: Slot, a: Slot, imm: i64 }    bin_imm Lt       => "R[{dst}] := R[{a}] < {imm}";
    LeI       { dst: Slot, a: Slot, imm: i64 }    bin_imm Le       => "R[{dst}] := R[{a}] <= {imm}";
    GtI       { dst: Slot, a: Slot, imm: i64 }    bin_imm Gt       => "R[{dst}] := R[{a}] > {imm}";
    GeI       { dst: Slot, a: Slot, imm: i64 }    bin_imm Ge       => "R[{dst}] := R[{a}] >= {imm}";
    Neg       { dst: Slot, a: Slot }                               => "R[{dst}] := -R[{a}]";
    Not       { dst: Slot, a: Slot }                               => "R[{dst}] := not R[{a}]";
    Jmp       { t: Target }                                        => "goto {t}";
    Jz        { a: Slot, t: Target }                               => "if R[{a}] == 0 goto {t}";
    Jnz       { a: Slot, t: Target }                               => "if R[{a}] != 0 goto {t}";
    BrEq      { a: Slot, b: Slot, t: Target }     branch Eq        => "if R[{a}] == R[{b}] goto {t}";
    BrNe      { a: Slot, b: Slot, t: Target }     branch Ne        => "if R[{a}] != R[{b}] goto {t}";
    BrLt      { a: Slot, b: Slot, t: Target }     branch Lt        => "if R[{a}] < R[{b}] goto {t}";
    BrLe      { a: Slot, b: Slot, t: Target }     branch Le        => "if R[{a}] <= R[{b}] goto {t}";
    BrGt      { a: Slot, b: Slot, t: Target }     branch Gt        => "if R[{a}] > R[{b}] goto {t}";
    BrGe      { a: Slot, b: Slot, t: Target }     branch Ge        => "if R[{a}] >= R[{b}] goto {t}";
    BrEqI     { a: Slot, imm: i64, t: Target }    branch_imm Eq    => "if R[{a}] == {imm} goto {t}";
    BrNeI     { a: Slot, imm: i64, t: Target }    branch_imm Ne    => "if R[{a}] != {imm} goto {t}";
    BrLtI     { a: Slot, imm: i64, t: Target }    branch_imm Lt    => "if R[{a}] < {imm} goto {t}";
    BrLeI     { a: Slot, imm: i64, t: Target }    branch_imm Le    => "if R[{a}] <= {imm} goto {t}";
    BrGtI     { a: Slot, imm: i64, t: Target }    branch_imm Gt    => "if R[{a}] > {imm} goto {t}";
    BrGeI     { a: Slot, imm: i64, t: Target }    branch_imm Ge    => "if R[{a}] >= {imm} goto {t}";
    Call      { f: FuncId, base: Slot }                            => "R[{base}] := call #{f}(R[{base}], ...)";
    Ret       { a: Slot }                                          => "return R[{a}]";
    RetI      { imm: i64 }                                         => "return {imm}";
    Mload     { dst: Slot, idx: Slot }                             => "R[{dst}] := M[R[{idx}]]";
    Mstore    { idx: Slot, val: Slot }                             => "M[R[{idx}]] := R[{val}]";
    MstoreI   { idx: Slot, imm: i64 }                              => "M[R[{idx}]] := {imm}";
    AtomicAdd { dst: Slot, idx: Slot, val: Slot }                  => "R[{dst}] := atomic_add M[R[{idx}]], R[{val}]";
    Cas       { dst: Slot, idx: Slot, expected: Slot, new: Slot }  => "R[{dst}] := cas M[R[{idx}]], R[{expected}], R[{new}]";
    Spawn     { f: FuncId, base: Slot }                            => "R[{base}] := spawn #{f}(R[{base}], ...)";
    Join      { dst: Slot, a: Slot }                               => "R[{dst}] := join R[{a}]";
    Patch     { f: FuncId, g: FuncId }                             => "patch #{f} #{g}";
    Print     { a: Slot }                                          => "print R[{a}]";
    Putc      { a: Slot }                                          => "putc R[{a}]";
    Assert    { a: Slot }                                          => "assert R[{a}]";
}

/// A function in interpreter form.
#[derive(Clone, Debug)]
pub struct LoweredFunction {
    pub ops: Vec<Op>,
    pub params: u32,
    /// Parameters plus locals.
    pub slots: u32,
    /// Slots plus the deepest operand stack: how many slots a frame needs.
    pub frame_size: u32,
    /// `(op index, bytecode instruction)` of each label, by op index: where a jump lands in
    /// each encoding. At a label every operand stack entry is in its canonical slot
    /// (`slots + height`), so the frame there is `R[0 .. slots + height]`: what on-stack
    /// replacement moves into native code at a loop header.
    pub labels: Vec<(u32, u32)>,
}

impl LoweredFunction {
    /// The bytecode instruction of the label at op `op`, if one is there.
    pub fn label_at(&self, op: u32) -> Option<u32> {
        self.labels
            .binary_search_by_key(&op, |&(o, _)| o)
            .ok()
            .map(|k| self.labels[k].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_op_stays_three_words() {
        assert!(std::mem::size_of::<Op>() <= 24);
    }

    #[test]
    fn ops_print_as_their_meaning() {
        assert_eq!(
            Op::AddI {
                dst: 3,
                a: 1,
                imm: 1
            }
            .to_string(),
            "R[3] := R[1] + 1"
        );
        assert_eq!(
            Op::BrLt { a: 1, b: 0, t: 0 }.to_string(),
            "if R[1] < R[0] goto 0"
        );
        assert_eq!(
            Op::Call { f: 0, base: 2 }.to_string(),
            "R[2] := call #0(R[2], ...)"
        );
    }

    #[test]
    fn every_operator_has_a_register_and_an_immediate_op() {
        for op in BinOp::ALL {
            let reg = Op::binary(op, 2, 0, 1).to_string();
            let imm = Op::binary_imm(op, 2, 0, 7).to_string();
            assert!(reg.starts_with("R[2] := R[0] "), "{reg}");
            assert_eq!(imm.replace("7", "R[1]"), reg, "{op:?}");
            let comparison = op.is_comparison();
            assert_eq!(Op::branch(op, 0, 1, 9).is_some(), comparison, "{op:?}");
            assert_eq!(Op::branch_imm(op, 0, 7, 9).is_some(), comparison, "{op:?}");
        }
    }
}
