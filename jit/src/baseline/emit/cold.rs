//! The safepoint poll (with the profile counter it may decrement) and the out-of-line code
//! emitted after the body, so hot paths fall through: poll slow paths, trap pads, and the
//! exits shared by the whole function.

use super::emitter::Emitter;
use crate::abi::{status_of, CTX_BACK_EDGES_LEFT, CTX_CALLS_LEFT, CTX_POLL};
use crate::baseline::stack_model::*;
use crate::code_info::SourceRow;
use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi};
use jitvm_vm::{FuncId, Trap};

/// Out-of-line code, emitted after the body so hot paths fall through.
pub(super) enum Cold {
    /// A safepoint poll's slow path (with a profile counter's, if it counts one): save the
    /// live registers into their canonical slots, call `safepoint(ctx)` (or
    /// `profile(ctx, f, counter)`), reload, resume. It is the code of the instruction that
    /// polls (`instr`; `None` for the entry's poll), so a debugger stopped inside the call
    /// names that instruction's line.
    Poll {
        instr: Option<u32>,
        slow: DynamicLabel,
        resume: DynamicLabel,
        live: Vec<(Reg, i32)>,
        counter: Option<(FuncId, Counter)>,
    },
}

/// Which profile counter a poll site decrements (the `counter` argument of `profile`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Counter {
    Calls = 0,
    BackEdges = 1,
}

impl Emitter<'_> {
    /// The safepoint poll, `cmp dword [ctx + CTX_POLL], 0; jne slow`, after the
    /// profile counter's decrement when this function counts (see "Profiling" in
    /// [`crate::abi`]); both share one slow path.
    pub(super) fn poll(&mut self, counter: Counter) {
        let slow = self.ops.new_dynamic_label();
        let resume = self.ops.new_dynamic_label();
        let counter = self.env.count_as.map(|f| (f, counter));
        if let Some((f, counter)) = counter {
            let at = self.offset();
            let name = match counter {
                Counter::Calls => "count the call",
                Counter::BackEdges => "count the back-edge",
            };
            self.out.notes.push((at, name.into()));
            let array = match counter {
                Counter::Calls => CTX_CALLS_LEFT,
                Counter::BackEdges => CTX_BACK_EDGES_LEFT,
            };
            let cell = 4 * f as i32;
            asm!(self
                ; mov rax, QWORD [rbx + array]
                ; sub DWORD [rax + cell], 1
                ; jz =>slow
            );
        }
        let at = self.offset();
        self.out.notes.push((at, "safepoint poll".into()));
        asm!(self
            ; cmp DWORD [rbx + CTX_POLL], 0
            ; jne =>slow
            ; =>resume
        );
        let live = (0..self.stack.height())
            .filter_map(|h| match self.stack.get(h) {
                Val::Reg(r) => Some((r, self.frame.spill(h))),
                _ => None,
            })
            .collect();
        // The instruction being emitted is the last with an offset; none yet at the entry.
        let instr = self
            .out
            .instr_offsets
            .len()
            .checked_sub(1)
            .map(|i| i as u32);
        self.cold.push(Cold::Poll {
            instr,
            slow,
            resume,
            live,
            counter,
        });
    }

    /// The landing pad for a trap: `mov edx, code; jmp exit`, emitted once.
    pub(super) fn trap_label(&mut self, trap: Trap) -> DynamicLabel {
        if let Some(&(_, l)) = self.traps.iter().find(|(t, _)| *t == trap) {
            return l;
        }
        let l = self.ops.new_dynamic_label();
        self.traps.push((trap, l));
        l
    }

    pub(super) fn emit_cold(&mut self) {
        // Slow paths and trap exits run with the whole frame.
        self.frame_row(self.frame.saved.len(), true);
        for cold in std::mem::take(&mut self.cold) {
            match cold {
                Cold::Poll {
                    instr,
                    slow,
                    resume,
                    live,
                    counter,
                } => {
                    let offset = self.offset();
                    self.cold_rows.push(SourceRow { offset, instr });
                    asm!(self; =>slow);
                    for &(r, o) in &live {
                        asm!(self; mov QWORD [rsp + o], Rq(r));
                    }
                    asm!(self; mov rdi, rbx);
                    match counter {
                        Some((f, counter)) => {
                            let (f, counter) = (f as i32, counter as i32);
                            asm!(self; mov esi, f ; mov edx, counter);
                            self.call_rust(self.env.callbacks.profile, "profile");
                        }
                        None => self.call_rust(self.env.callbacks.safepoint, "safepoint"),
                    }
                    for &(r, o) in &live {
                        asm!(self; mov Rq(r), QWORD [rsp + o]);
                    }
                    asm!(self; jmp =>resume);
                }
            }
        }
        // The rest (trap pads, the shared exits) is the function's own.
        let offset = self.offset();
        self.cold_rows.push(SourceRow {
            offset,
            instr: None,
        });
        for (trap, l) in std::mem::take(&mut self.traps) {
            let at = self.offset();
            self.out.notes.push((at, format!("trap: {trap}")));
            let code = status_of(trap) as i32;
            let exit = self.exit;
            asm!(self; =>l ; mov edx, code ; jmp =>exit);
        }
        let (exit, exit_rax) = (self.exit, self.exit_rax);
        let at = self.offset();
        self.out
            .notes
            .push((at, "status from a callback: leave with it".into()));
        asm!(self; =>exit_rax ; mov rdx, rax);
        let at = self.offset();
        self.out
            .notes
            .push((at, "leave with the status in rdx".into()));
        asm!(self; =>exit);
        self.emit_epilogue();
        self.emit_entry_exits();
    }

    /// Where the entry checks go, before any frame exists.
    fn emit_entry_exits(&mut self) {
        let (too_deep, short) = (self.too_deep, self.stack_short);
        self.frame_row(0, false);
        let at = self.offset();
        self.out
            .notes
            .push((at, "deeper than --max-depth: stack overflow".into()));
        let overflow = status_of(Trap::StackOverflow) as i32;
        asm!(self; =>too_deep ; mov edx, overflow ; xor eax, eax ; ret);
        let at = self.offset();
        asm!(self; =>short);
        if self.osr.is_some() {
            // The interpreter enters a loop natively only with room for any native frame
            // (`MAX_NATIVE_FRAME`), so this is a guard, not a path programs take.
            self.out
                .notes
                .push((at, "no native stack for the frame: stack overflow".into()));
            asm!(self; mov edx, overflow ; xor eax, eax ; ret);
        } else {
            self.out.notes.push((
                at,
                "native stack short: run this call in the interpreter".into(),
            ));
            let def_addr = self.env.header & !7;
            let params = self.func.params.len();
            crate::stubs::emit_interpreted_call(
                &mut self.ops,
                &mut self.out.frame,
                params,
                def_addr,
                self.env.callbacks.call_interp,
            );
        }
    }
}
