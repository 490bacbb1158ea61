//! The verified, resolved form of a `.bc` module: what the parser produces and every tier
//! consumes. Names are gone: jump targets are instruction indices, calls are function
//! indices, locals are slot numbers (parameters first).

use std::fmt;

/// Index of a function in [`Module::functions`].
pub type FuncId = u32;

/// A position in the source text, 1-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One instruction of the spec (§3), with its operands resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instr {
    Push(i64),
    /// One of the binary operators (`add` ... `ge`): `[a b] -> [a OP b]`.
    Bin(BinOp),
    Pop,
    Dup,
    Swap,
    Over,
    Load(u32),
    Store(u32),
    Neg,
    Not,
    Jmp(u32),
    Jz(u32),
    Jnz(u32),
    Call(FuncId),
    Ret,
    Mload,
    Mstore,
    AtomicAdd,
    Cas,
    Msize,
    Spawn(FuncId),
    Join,
    Patch(FuncId, FuncId),
    Print,
    Putc,
    Assert,
    Nop,
}

/// How an instruction's operands are written in the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperandKind {
    None,
    Imm,
    Local,
    Label,
    Func,
    TwoFuncs,
}

/// Binary operators, shared by the interpreter's encoding and (later) the JIT backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    And,
    Or,
    Xor,
    Shl,
    Shr,
    Ushr,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl BinOp {
    pub const ALL: [BinOp; 17] = [
        BinOp::Add,
        BinOp::Sub,
        BinOp::Mul,
        BinOp::Div,
        BinOp::Rem,
        BinOp::And,
        BinOp::Or,
        BinOp::Xor,
        BinOp::Shl,
        BinOp::Shr,
        BinOp::Ushr,
        BinOp::Eq,
        BinOp::Ne,
        BinOp::Lt,
        BinOp::Le,
        BinOp::Gt,
        BinOp::Ge,
    ];

    /// Whether `a OP b == b OP a`.
    pub fn is_commutative(self) -> bool {
        matches!(
            self,
            BinOp::Add | BinOp::Mul | BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Eq | BinOp::Ne
        )
    }

    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge
        )
    }

    /// For a comparison, the operator with its operands exchanged: `a OP b == b OP' a`.
    pub fn swapped(self) -> BinOp {
        match self {
            BinOp::Lt => BinOp::Gt,
            BinOp::Le => BinOp::Ge,
            BinOp::Gt => BinOp::Lt,
            BinOp::Ge => BinOp::Le,
            other => other,
        }
    }

    /// For a comparison, its negation: `!(a OP b) == a OP' b`.
    pub fn negated(self) -> BinOp {
        match self {
            BinOp::Eq => BinOp::Ne,
            BinOp::Ne => BinOp::Eq,
            BinOp::Lt => BinOp::Ge,
            BinOp::Le => BinOp::Gt,
            BinOp::Gt => BinOp::Le,
            BinOp::Ge => BinOp::Lt,
            other => other,
        }
    }

    /// The spec's semantics (§3). `None` means the operation traps with `division by zero`.
    #[inline(always)]
    pub fn eval(self, a: i64, b: i64) -> Option<i64> {
        Some(match self {
            BinOp::Add => a.wrapping_add(b),
            BinOp::Sub => a.wrapping_sub(b),
            BinOp::Mul => a.wrapping_mul(b),
            // wrapping_div/rem give MIN / -1 = MIN and MIN % -1 = 0, as the spec asks.
            BinOp::Div => return (b != 0).then(|| a.wrapping_div(b)),
            BinOp::Rem => return (b != 0).then(|| a.wrapping_rem(b)),
            BinOp::And => a & b,
            BinOp::Or => a | b,
            BinOp::Xor => a ^ b,
            BinOp::Shl => a.wrapping_shl((b & 63) as u32),
            BinOp::Shr => a.wrapping_shr((b & 63) as u32),
            BinOp::Ushr => ((a as u64) >> (b & 63)) as i64,
            BinOp::Eq => (a == b) as i64,
            BinOp::Ne => (a != b) as i64,
            BinOp::Lt => (a < b) as i64,
            BinOp::Le => (a <= b) as i64,
            BinOp::Gt => (a > b) as i64,
            BinOp::Ge => (a >= b) as i64,
        })
    }

    pub fn mnemonic(self) -> &'static str {
        match self {
            BinOp::Add => "add",
            BinOp::Sub => "sub",
            BinOp::Mul => "mul",
            BinOp::Div => "div",
            BinOp::Rem => "rem",
            BinOp::And => "and",
            BinOp::Or => "or",
            BinOp::Xor => "xor",
            BinOp::Shl => "shl",
            BinOp::Shr => "shr",
            BinOp::Ushr => "ushr",
            BinOp::Eq => "eq",
            BinOp::Ne => "ne",
            BinOp::Lt => "lt",
            BinOp::Le => "le",
            BinOp::Gt => "gt",
            BinOp::Ge => "ge",
        }
    }
}

impl Instr {
    /// Every instruction but the binary operators (those come from [`BinOp::ALL`]): its
    /// mnemonic, how its operands are written, and the instruction (operands zero until the
    /// parser resolves them). The parser, the disassembler and error messages all read it.
    const TABLE: &'static [(&'static str, OperandKind, Instr)] = &[
        ("push", OperandKind::Imm, Instr::Push(0)),
        ("pop", OperandKind::None, Instr::Pop),
        ("dup", OperandKind::None, Instr::Dup),
        ("swap", OperandKind::None, Instr::Swap),
        ("over", OperandKind::None, Instr::Over),
        ("load", OperandKind::Local, Instr::Load(0)),
        ("store", OperandKind::Local, Instr::Store(0)),
        ("neg", OperandKind::None, Instr::Neg),
        ("not", OperandKind::None, Instr::Not),
        ("jmp", OperandKind::Label, Instr::Jmp(0)),
        ("jz", OperandKind::Label, Instr::Jz(0)),
        ("jnz", OperandKind::Label, Instr::Jnz(0)),
        ("call", OperandKind::Func, Instr::Call(0)),
        ("ret", OperandKind::None, Instr::Ret),
        ("mload", OperandKind::None, Instr::Mload),
        ("mstore", OperandKind::None, Instr::Mstore),
        ("atomic_add", OperandKind::None, Instr::AtomicAdd),
        ("cas", OperandKind::None, Instr::Cas),
        ("msize", OperandKind::None, Instr::Msize),
        ("spawn", OperandKind::Func, Instr::Spawn(0)),
        ("join", OperandKind::None, Instr::Join),
        ("patch", OperandKind::TwoFuncs, Instr::Patch(0, 0)),
        ("print", OperandKind::None, Instr::Print),
        ("putc", OperandKind::None, Instr::Putc),
        ("assert", OperandKind::None, Instr::Assert),
        ("nop", OperandKind::None, Instr::Nop),
    ];

    /// The instruction `mnemonic` names and how its operands are written; its operands are
    /// zero until the parser resolves them.
    pub fn lookup(mnemonic: &str) -> Option<(OperandKind, Instr)> {
        let binary = || {
            BinOp::ALL
                .into_iter()
                .find(|op| op.mnemonic() == mnemonic)
                .map(|op| (OperandKind::None, Instr::Bin(op)))
        };
        Self::TABLE
            .iter()
            .find(|(m, ..)| *m == mnemonic)
            .map(|&(_, kind, instr)| (kind, instr))
            .or_else(binary)
    }

    pub fn mnemonic(self) -> &'static str {
        match self {
            Instr::Bin(op) => op.mnemonic(),
            _ => {
                let opcode = std::mem::discriminant(&self);
                Self::TABLE
                    .iter()
                    .find(|(_, _, instr)| std::mem::discriminant(instr) == opcode)
                    .expect("every instruction but `Bin` is in the table")
                    .0
            }
        }
    }

    /// (values popped, values pushed). `params` gives a callee's parameter count.
    pub fn stack_effect(self, params: impl Fn(FuncId) -> u32) -> (u32, u32) {
        match self {
            Instr::Push(_) | Instr::Load(_) | Instr::Msize => (0, 1),
            Instr::Pop | Instr::Store(_) | Instr::Jz(_) | Instr::Jnz(_) => (1, 0),
            Instr::Print | Instr::Putc | Instr::Assert | Instr::Ret => (1, 0),
            Instr::Dup => (1, 2),
            Instr::Swap => (2, 2),
            Instr::Over => (2, 3),
            Instr::Neg | Instr::Not | Instr::Mload | Instr::Join => (1, 1),
            Instr::Mstore => (2, 0),
            Instr::AtomicAdd => (2, 1),
            Instr::Cas => (3, 1),
            Instr::Call(f) | Instr::Spawn(f) => (params(f), 1),
            Instr::Jmp(_) | Instr::Patch(..) | Instr::Nop => (0, 0),
            Instr::Bin(_) => (2, 1),
        }
    }

    /// Whether control can continue to the next instruction.
    pub fn falls_through(self) -> bool {
        !matches!(self, Instr::Jmp(_) | Instr::Ret)
    }

    /// The jump target, for `jmp`, `jz` and `jnz`.
    pub fn target(self) -> Option<u32> {
        match self {
            Instr::Jmp(t) | Instr::Jz(t) | Instr::Jnz(t) => Some(t),
            _ => None,
        }
    }
}

/// A label: its name, the index of the instruction it names (the code length when it stands
/// just before `end`), and where it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    pub name: String,
    pub target: u32,
    pub pos: Pos,
}

/// A verified function.
#[derive(Clone, Debug)]
pub struct Function {
    pub name: String,
    /// Parameter names; slots `0..params.len()`.
    pub params: Vec<String>,
    /// Local names; slots follow the parameters.
    pub locals: Vec<String>,
    pub code: Vec<Instr>,
    /// Source position of each instruction, then one more: that of the function's `end`.
    pub positions: Vec<Pos>,
    /// Operand stack height before each instruction (the verifier proved it is unique).
    pub heights: Vec<u32>,
    /// Labels in source order.
    pub labels: Vec<Label>,
    /// The deepest the operand stack gets.
    pub max_stack: u32,
    pub pos: Pos,
}

impl Function {
    pub fn num_params(&self) -> u32 {
        self.params.len() as u32
    }

    /// Parameters plus locals.
    pub fn num_slots(&self) -> u32 {
        (self.params.len() + self.locals.len()) as u32
    }

    pub fn slot_name(&self, slot: u32) -> &str {
        let slot = slot as usize;
        if slot < self.params.len() {
            &self.params[slot]
        } else {
            &self.locals[slot - self.params.len()]
        }
    }
}

/// A parsed and verified module: safe to run in any tier.
#[derive(Clone, Debug, Default)]
pub struct Module {
    /// Cells of shared memory (0 when the module declares none).
    pub memory_cells: u64,
    pub functions: Vec<Function>,
}

impl Module {
    pub fn function_index(&self, name: &str) -> Option<FuncId> {
        self.functions
            .iter()
            .position(|f| f.name == name)
            .map(|i| i as FuncId)
    }
}

/// The largest memory a module may declare (§2).
pub const MAX_MEMORY_CELLS: u64 = 1 << 28;
/// The most parameters a function may take (§2).
pub const MAX_PARAMS: usize = 8;
/// The deepest the operand stack may get (§6).
pub const MAX_STACK: u32 = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mnemonic_names_one_instruction_and_back() {
        let binary = BinOp::ALL.iter().map(|op| op.mnemonic());
        let all: Vec<&str> = Instr::TABLE
            .iter()
            .map(|(m, ..)| *m)
            .chain(binary)
            .collect();
        assert_eq!(all.len(), 43, "{all:?}");
        for m in all {
            let (_, instr) = Instr::lookup(m).unwrap();
            assert_eq!(instr.mnemonic(), m);
        }
        assert_eq!(Instr::lookup("frob"), None);
    }
}
