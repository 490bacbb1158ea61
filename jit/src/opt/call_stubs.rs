//! Call stubs: how Cranelift's calls stay patchable, correct by construction.
//!
//! Cranelift places calls where it likes and, given a slot address, would load the slot into
//! a register and `call` it later; `mov rax, [slot]; call rax` is not covered by the
//! runtime's `Guarantee::Strong`, because a thread may hold the old target between the load
//! and the call. So optimized code never reads a slot: each call is a direct `call rel32` to
//! a small per-callee stub, installed once per program, that is exactly the covered sequence
//! with the call turned into a tail jump:
//!
//! ```text
//! mov rax, imm64(&slot_F)
//! jmp qword [rax]
//! ```
//!
//! The stub never changes; `patch` changes the slot, as for the baseline. `rax` is free at a
//! call in SysV (it is neither an argument nor callee-saved register).

/// Size of one stub's bytes.
pub const STUB_LEN: usize = 12;

/// The bytes of the call stub for the function whose dispatch slot is at `slot_addr`.
pub fn call_stub(slot_addr: usize) -> [u8; STUB_LEN] {
    let mut b = [0u8; STUB_LEN];
    b[0] = 0x48; // REX.W
    b[1] = 0xB8; // mov rax, imm64
    b[2..10].copy_from_slice(&(slot_addr as u64).to_le_bytes());
    b[10] = 0xFF; // jmp qword [rax]: FF /4, modrm 00 100 000
    b[11] = 0x20;
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_stub_loads_the_slot_address_and_jumps_through_it() {
        let b = call_stub(0x1122_3344_5566_7788);
        assert_eq!(
            b,
            [0x48, 0xB8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0xFF, 0x20]
        );
    }
}
