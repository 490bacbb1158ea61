//! DWARF register numbers for x86-64 (System V psABI, "DWARF Register Number
//! Mapping"), which differ from the hardware encoding in instructions.

pub const RAX: u16 = 0;
pub const RDX: u16 = 1;
pub const RCX: u16 = 2;
pub const RBX: u16 = 3;
pub const RSI: u16 = 4;
pub const RDI: u16 = 5;
pub const RBP: u16 = 6;
pub const RSP: u16 = 7;
pub const R8: u16 = 8;
pub const R9: u16 = 9;
pub const R10: u16 = 10;
pub const R11: u16 = 11;
pub const R12: u16 = 12;
pub const R13: u16 = 13;
pub const R14: u16 = 14;
pub const R15: u16 = 15;
/// The return address column (the caller's rip).
pub const RA: u16 = 16;

/// The DWARF number of the general-purpose register with hardware encoding
/// `hw` (rax=0, rcx=1, rdx=2, rbx=3, rsp=4, rbp=5, rsi=6, rdi=7, r8..r15).
pub fn from_hw(hw: u8) -> Option<u16> {
    const TABLE: [u16; 8] = [RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI];
    match hw {
        0..=7 => Some(TABLE[usize::from(hw)]),
        8..=15 => Some(u16::from(hw)),
        _ => None,
    }
}
