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

/// The instruction set, one instruction a line, the way Lua's `lopcodes.h` lists its own:
/// the variant and its operands, the mnemonic, how the operands are written, the stack
/// effect `[pops => pushes]` (a callee's parameter count is `params(f)`), and the meaning
/// (`[a b] -> [c]`: the top of the stack is on the right). The enum and its docs, the
/// parser's lookup, the disassembler's operands, [`Instr::stack_effect`] and the verifier's
/// messages all come from these lines. The binary operators are [`BinOp`]'s own table.
///
/// Adding an instruction is a line here, then one arm each where the compiler asks for it
/// (lowering, the reference evaluator, both native tiers, the generator): see
/// `docs/interpreter.md`, "Adding an instruction".
macro_rules! instructions {
    (
        callee_params = $params:ident;
        $(
            $name:ident $(($($field:ident: $ty:ty),+))?
            = $mnemonic:literal, $kind:ident, [$pops:expr => $pushes:expr], $meaning:literal;
        )*
    ) => {
        /// One instruction of the spec (§3), with its operands resolved.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Instr {
            /// `[a b] -> [a OP b]`: one of the binary operators (`add` ... `ge`, [`BinOp`]).
            Bin(BinOp),
            $(
                #[doc = concat!("`", $mnemonic, "` ", $meaning)]
                $name $(($($ty),+))?,
            )*
        }

        impl Instr {
            /// Every instruction but the binary operators, operands zero.
            const TEMPLATES: &'static [Instr] = &[$(Instr::$name $(($(0 as $ty),+))?),*];

            /// The instruction `mnemonic` names, operands zero until the parser resolves
            /// them.
            pub fn lookup(mnemonic: &str) -> Option<Instr> {
                match mnemonic {
                    $($mnemonic => Some(Instr::$name $(($(0 as $ty),+))?),)*
                    _ => BinOp::lookup(mnemonic).map(Instr::Bin),
                }
            }

            pub fn mnemonic(self) -> &'static str {
                match self {
                    Instr::Bin(op) => op.mnemonic(),
                    $(Instr::$name { .. } => $mnemonic,)*
                }
            }

            /// The operands, by the kind of thing each names.
            pub fn operands(self) -> Operands {
                match self {
                    Instr::Bin(_) => Operands::None,
                    $(Instr::$name $(($($field),+))? => Operands::$kind $(($($field),+))?,)*
                }
            }

            /// This instruction with `operands` in place of its own, if they are of its kind.
            pub fn with_operands(self, operands: Operands) -> Option<Instr> {
                match (self, operands) {
                    (Instr::Bin(op), Operands::None) => Some(Instr::Bin(op)),
                    $(
                        (Instr::$name { .. }, Operands::$kind $(($($field),+))?) => {
                            Some(Instr::$name $(($($field),+))?)
                        }
                    )*
                    _ => None,
                }
            }

            /// (values popped, values pushed). `params` gives a callee's parameter count.
            #[allow(unused_variables)]
            pub fn stack_effect(self, $params: impl Fn(FuncId) -> u32) -> (u32, u32) {
                match self {
                    Instr::Bin(_) => (2, 1),
                    $(Instr::$name $(($($field),+))? => ($pops, $pushes),)*
                }
            }
        }
    };
}

#[rustfmt::skip]
instructions! {
    callee_params = params;
//  instruction              mnemonic      operands  stack effect         meaning
    Push(c: i64)           = "push",       Imm,      [0 => 1],            "[] -> [c]: the constant `c`";
    Pop                    = "pop",        None,     [1 => 0],            "[a] -> []";
    Dup                    = "dup",        None,     [1 => 2],            "[a] -> [a a]";
    Swap                   = "swap",       None,     [2 => 2],            "[a b] -> [b a]";
    Over                   = "over",       None,     [2 => 3],            "[a b] -> [a b a]";
    Load(slot: u32)        = "load",       Local,    [0 => 1],            "[] -> [x]: the parameter or local `x`";
    Store(slot: u32)       = "store",      Local,    [1 => 0],            "[a] -> []: `x := a`";
    Neg                    = "neg",        None,     [1 => 1],            "[a] -> [-a], wrapping";
    Not                    = "not",        None,     [1 => 1],            "[a] -> [a == 0]";
    Jmp(t: u32)            = "jmp",        Label,    [0 => 0],            "[] -> []: go to label `t`";
    Jz(t: u32)             = "jz",         Label,    [1 => 0],            "[a] -> []: go to `t` if `a == 0`";
    Jnz(t: u32)            = "jnz",        Label,    [1 => 0],            "[a] -> []: go to `t` if `a != 0`";
    Call(f: FuncId)        = "call",       Func,     [params(f) => 1],    "[a1 .. an] -> [f(a1, .., an)]";
    Ret                    = "ret",        None,     [1 => 0],            "[a] -> []: return `a` to the caller";
    Mload                  = "mload",      None,     [1 => 1],            "[i] -> [M[i]]; traps out of bounds";
    Mstore                 = "mstore",     None,     [2 => 0],            "[i v] -> []: `M[i] := v`; traps out of bounds";
    AtomicAdd              = "atomic_add", None,     [2 => 1],            "[i v] -> [old]: `old := M[i]; M[i] += v`, at once";
    Cas                    = "cas",        None,     [3 => 1],            "[i e n] -> [old]: `old := M[i]; if old == e { M[i] := n }`, at once";
    Msize                  = "msize",      None,     [0 => 1],            "[] -> [cells of memory]";
    Spawn(f: FuncId)       = "spawn",      Func,     [params(f) => 1],    "[a1 .. an] -> [handle]: `f(a1, .., an)` on a new thread";
    Join                   = "join",       None,     [1 => 1],            "[handle] -> [result]: waits for the thread";
    Patch(f: FuncId, g: FuncId) = "patch", TwoFuncs, [0 => 0],            "[] -> []: calls of `f` run `g` from now on";
    Print                  = "print",      None,     [1 => 0],            "[a] -> []: writes `a` in decimal and a newline";
    Putc                   = "putc",       None,     [1 => 0],            "[a] -> []: writes the byte `a & 255`";
    Assert                 = "assert",     None,     [1 => 0],            "[a] -> []: traps if `a == 0`";
    Nop                    = "nop",        None,     [0 => 0],            "[] -> []";
}

/// An instruction's operands, by the kind of thing each names: how the parser reads them
/// and the disassembler writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operands {
    None,
    /// An integer literal (`push -0x10`).
    Imm(i64),
    /// A parameter or local, by name or index (`load n`, `store 2`): its slot.
    Local(u32),
    /// A label of the same function (`jz done`): the index of the instruction it names.
    Label(u32),
    /// A function of the module (`call fib`).
    Func(FuncId),
    /// Two functions of the same arity (`patch old new`).
    TwoFuncs(FuncId, FuncId),
}

impl Operands {
    /// How many operand words the text writes.
    pub fn count(self) -> usize {
        match self {
            Operands::None => 0,
            Operands::TwoFuncs(..) => 2,
            _ => 1,
        }
    }
}

macro_rules! binary_operators {
    ($($name:ident = $mnemonic:literal, $meaning:literal;)*) => {
        /// The binary operators: `[a b] -> [a OP b]`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum BinOp {
            $(#[doc = concat!("`", $mnemonic, "`: ", $meaning)] $name,)*
        }

        impl BinOp {
            pub const ALL: [BinOp; <[&str]>::len(&[$($mnemonic),*])] = [$(BinOp::$name),*];

            pub fn mnemonic(self) -> &'static str {
                match self {
                    $(BinOp::$name => $mnemonic,)*
                }
            }

            /// The operator `mnemonic` names.
            pub fn lookup(mnemonic: &str) -> Option<BinOp> {
                match mnemonic {
                    $($mnemonic => Some(BinOp::$name),)*
                    _ => None,
                }
            }
        }
    };
}

#[rustfmt::skip]
binary_operators! {
    Add  = "add",  "`a + b`, wrapping";
    Sub  = "sub",  "`a - b`, wrapping";
    Mul  = "mul",  "`a * b`, wrapping";
    Div  = "div",  "`a / b` rounded toward zero (`MIN / -1 == MIN`); traps if `b == 0`";
    Rem  = "rem",  "`a % b` with the sign of `a` (`MIN % -1 == 0`); traps if `b == 0`";
    And  = "and",  "`a & b`";
    Or   = "or",   "`a | b`";
    Xor  = "xor",  "`a ^ b`";
    Shl  = "shl",  "`a << (b & 63)`";
    Shr  = "shr",  "`a >> (b & 63)`, shifting in the sign";
    Ushr = "ushr", "`a >> (b & 63)`, shifting in zeros";
    Eq   = "eq",   "`a == b` (1 or 0)";
    Ne   = "ne",   "`a != b`";
    Lt   = "lt",   "`a < b`";
    Le   = "le",   "`a <= b`";
    Gt   = "gt",   "`a > b`";
    Ge   = "ge",   "`a >= b`";
}

impl BinOp {
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
}

impl Instr {
    /// Every instruction, operands zero: the binary operators, then the table's order.
    pub fn all() -> impl Iterator<Item = Instr> {
        BinOp::ALL
            .into_iter()
            .map(Instr::Bin)
            .chain(Self::TEMPLATES.iter().copied())
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
        let all: Vec<&str> = Instr::all().map(Instr::mnemonic).collect();
        let distinct: std::collections::BTreeSet<&str> = all.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            all.len(),
            "a mnemonic names two instructions: {all:?}"
        );
        assert!(all.len() >= 43, "the spec's 43 instructions: {all:?}");
        for m in all {
            assert_eq!(Instr::lookup(m).unwrap().mnemonic(), m);
        }
        assert_eq!(Instr::lookup("frob"), None);
    }

    #[test]
    fn each_instruction_takes_back_the_operands_it_gives() {
        for instr in Instr::all() {
            let operands = instr.operands();
            assert_eq!(instr.with_operands(operands), Some(instr), "{instr:?}");
            let other = match operands {
                Operands::None => Operands::Imm(1),
                _ => Operands::None,
            };
            assert_eq!(instr.with_operands(other), None, "{instr:?}");
        }
    }
}
