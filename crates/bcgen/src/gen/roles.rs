//! What the generator does with each instruction of the bytecode table: the one match a new
//! instruction must join (it has no catch-all, so the compiler asks). An instruction of a
//! shape the generator already makes (a unary operator, say) is generated from then on with
//! no other change; one of a new shape needs its own code in `expr` or `stmt`.

use jitvm_vm::bytecode::Instr;
use std::sync::LazyLock;

/// The part of the generator that emits an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `[a] -> [b]`, never traps: picked from [`UNARY`] inside expressions.
    Unary,
    /// A binary operator, with operands and constants chosen for its traps and shifts.
    Binary,
    /// Constants and locals: the leaves of expressions, and assignments.
    Value,
    /// `dup`, `swap`, `over`, `pop` with values pending.
    Shuffle,
    /// Branches, loops and the labels they need.
    Control,
    /// Calls of functions declared later, and returns.
    Call,
    /// Shared memory: in bounds, or out of bounds where the profile lets it trap.
    Memory,
    /// `spawn`, `join` and `patch`, kept deterministic (see the module docs of `gen`).
    Thread,
    /// Output, assertions and `nop` as statements.
    Statement,
}

pub fn role(instr: Instr) -> Role {
    match instr {
        Instr::Neg | Instr::Not => Role::Unary,
        Instr::Bin(_) => Role::Binary,
        Instr::Push(_) | Instr::Load(_) | Instr::Store(_) => Role::Value,
        Instr::Pop | Instr::Dup | Instr::Swap | Instr::Over => Role::Shuffle,
        Instr::Jmp(_) | Instr::Jz(_) | Instr::Jnz(_) => Role::Control,
        Instr::Call(_) | Instr::Ret => Role::Call,
        Instr::Mload | Instr::Mstore | Instr::AtomicAdd | Instr::Cas | Instr::Msize => Role::Memory,
        Instr::Spawn(_) | Instr::Join | Instr::Patch(..) => Role::Thread,
        Instr::Print | Instr::Putc | Instr::Assert | Instr::Nop => Role::Statement,
    }
}

/// Every unary operator of the table, in its order.
pub static UNARY: LazyLock<Vec<Instr>> =
    LazyLock::new(|| Instr::all().filter(|&i| role(i) == Role::Unary).collect());
