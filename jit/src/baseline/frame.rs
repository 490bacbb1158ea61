//! The native frame of one baseline-compiled function, and where each local lives.
//!
//! ```text
//!   caller's stack args p4..p7        [rsp + total + 8 + 8*(k-4)]
//!   return address                    [rsp + total]
//!   saved rbx, then local registers   (pushed)
//!   padding to 16
//!   operand spill slots, one per height     [rsp + spill_base + 8*h]
//!   locals that live in memory              [rsp + home]
//!   depth + 1 (what callees get)            [rsp + depth_slot]
//!   outgoing area: call args p4.. / spawn's argument array   [rsp + 0]
//! ```
//!
//! `rsp` stays 16-byte aligned for the whole body, so every call site is aligned without
//! adjusting it. The hottest locals (by loads and stores, loops weighing more) get the
//! callee-saved registers [`LOCAL_REGS`]: they survive calls and callbacks for free.

use super::stack_model::{Reg, LOCAL_REGS, RBX};
use jitvm_vm::{Function, Instr, Module};

/// Where a local slot lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Home {
    Reg(Reg),
    /// `qword [rsp + offset]`.
    Mem(i32),
}

#[derive(Debug)]
pub struct Frame {
    /// Callee-saved registers pushed by the prologue, in push order (`rbx` first).
    pub saved: Vec<Reg>,
    /// Bytes the prologue subtracts from `rsp` after the pushes.
    pub size: i32,
    pub depth_slot: i32,
    pub homes: Vec<Home>,
    /// Whether each local slot is ever read or written (unused ones get no code).
    pub used: Vec<bool>,
    pub spill_base: i32,
    /// Whether the function calls other functions (and so needs `depth + 1`).
    pub has_calls: bool,
}

impl Frame {
    pub fn layout(func: &Function, module: &Module) -> Frame {
        let params = |f: u32| module.functions[f as usize].params.len() as i32;
        let mut out_area = 0;
        let mut has_calls = false;
        for instr in &func.code {
            match *instr {
                Instr::Call(f) => {
                    has_calls = true;
                    out_area = out_area.max(8 * (params(f) - 4).max(0));
                }
                Instr::Spawn(f) => out_area = out_area.max(8 * params(f)),
                _ => {}
            }
        }

        let weights = local_weights(func);
        let mut by_weight: Vec<usize> = (0..weights.len()).filter(|&s| weights[s] > 0).collect();
        by_weight.sort_by_key(|&s| (std::cmp::Reverse(weights[s]), s));
        let mut homes = vec![Home::Mem(0); weights.len()];
        let mut saved = vec![RBX];
        for (&slot, &reg) in by_weight.iter().zip(LOCAL_REGS.iter()) {
            homes[slot] = Home::Reg(reg);
            saved.push(reg);
        }

        let depth_slot = out_area;
        let mut next = depth_slot + 8;
        for home in homes.iter_mut() {
            if let Home::Mem(off) = home {
                *off = next;
                next += 8;
            }
        }
        let spill_base = next;
        let mut size = spill_base + 8 * func.max_stack as i32;
        // At entry rsp = 8 (mod 16): the return address. Keep rsp aligned after the frame.
        if (8 + 8 * saved.len() as i32 + size) % 16 != 0 {
            size += 8;
        }
        Frame {
            saved,
            size,
            depth_slot,
            used: weights.iter().map(|&w| w > 0).collect(),
            homes,
            spill_base,
            has_calls,
        }
    }

    /// The canonical slot of operand stack height `h`.
    pub fn spill(&self, h: usize) -> i32 {
        self.spill_base + 8 * h as i32
    }

    /// Bytes from `rsp` (after the prologue) up to the return address.
    pub fn total(&self) -> i32 {
        self.size + 8 * self.saved.len() as i32
    }

    /// Where incoming stack parameter `k` (k >= 4) is, from `rsp` after the prologue.
    pub fn incoming_param(&self, k: usize) -> i32 {
        self.total() + 8 + 8 * (k as i32 - 4)
    }
}

/// How much each local slot is used: loads and stores, those inside loops (ranges closed by a
/// backward jump) weighing 8x per nesting level.
fn local_weights(func: &Function) -> Vec<u64> {
    let n = func.code.len();
    let mut nesting = vec![0i32; n + 1];
    for (i, instr) in func.code.iter().enumerate() {
        if let Some(t) = instr.target() {
            if (t as usize) <= i {
                nesting[t as usize] += 1;
                nesting[i + 1] -= 1;
            }
        }
    }
    let mut weights = vec![0u64; func.num_slots() as usize];
    let mut depth = 0;
    for (i, instr) in func.code.iter().enumerate() {
        depth += nesting[i];
        if let Instr::Load(s) | Instr::Store(s) = *instr {
            weights[s as usize] += 1u64 << (3 * depth.clamp(0, 6) as u32);
        }
    }
    weights
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::stack_model::{R12, R13};

    fn module(src: &str) -> Module {
        jitvm_vm::parse_module(src.as_bytes()).expect("valid")
    }

    #[test]
    fn loop_locals_win_the_registers_and_rsp_stays_aligned() {
        let m = module(
            "func f(a, b, c, d, e, g)\n local x\n push 0\n store a\nl:\n load x\n push 1\n add\n \
             dup\n store x\n push 9\n lt\n jnz l\n load x\n ret\nend\n\
             func main()\n push 0\n push 0\n push 0\n push 0\n push 0\n push 0\n call f\n ret\nend\n",
        );
        let frame = Frame::layout(&m.functions[0], &m);
        assert_eq!(frame.homes[6], Home::Reg(R12), "x is used in the loop");
        assert_eq!(frame.homes[0], Home::Reg(R13));
        assert!(!frame.used[1]);
        assert_eq!((8 + frame.total()) % 16, 0);
        let main = Frame::layout(&m.functions[1], &m);
        assert!(main.has_calls);
        assert_eq!(main.depth_slot, 16, "two stack arguments below it");
        assert_eq!((8 + main.total()) % 16, 0);
    }
}
