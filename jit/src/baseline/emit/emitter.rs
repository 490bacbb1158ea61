//! The emitter's state and its one pass: labels for jump targets and loop headers first,
//! then each instruction at its recorded offset, then the out-of-line code
//! ([`super::cold`]).

use super::cold::Cold;
use crate::abi::{CompiledCode, ENTRY_OFFSET, MAX_NATIVE_FRAME};
use crate::baseline::frame::Frame;
use crate::baseline::stack_model::*;
use crate::baseline::CompileEnv;
use crate::code_info::SourceRow;
use crate::emit_error::EmitError;
use dynasmrt::x64::X64Relocation;
use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi, VecAssembler};
use jitvm_vm::{Function, Instr, Module, Trap};

/// One compilation: the function, its environment, and what has been emitted so far.
pub(in crate::baseline) struct Emitter<'a> {
    pub(super) ops: VecAssembler<X64Relocation>,
    pub(super) func: &'a Function,
    pub(super) module: &'a Module,
    pub(super) env: &'a CompileEnv,
    pub(super) frame: Frame,
    pub(super) stack: StackModel,
    /// Per instruction: its label, if some jump targets it.
    pub(super) labels: Vec<Option<DynamicLabel>>,
    /// Per instruction: whether a backward jump targets it (a loop header, aligned to 16
    /// bytes so that a loop runs the same whichever entry, the function's own or on-stack
    /// replacement's, placed it).
    pub(super) loop_header: Vec<bool>,
    /// Epilogue for a trap: status already in `rdx`.
    pub(super) exit: DynamicLabel,
    /// A callback returned a nonzero status in `rax`.
    pub(super) exit_rax: DynamicLabel,
    /// Depth exhausted: trap before the frame exists.
    pub(super) too_deep: DynamicLabel,
    /// Native stack short before the frame exists: run this call in the interpreter.
    pub(super) stack_short: DynamicLabel,
    pub(super) traps: Vec<(Trap, DynamicLabel)>,
    pub(super) cold: Vec<Cold>,
    /// The source rows of the out-of-line code, in order (see `emit_cold`).
    pub(super) cold_rows: Vec<SourceRow>,
    pub(super) out: CompiledCode,
    /// Compile an on-stack-replacement entry at this loop header instead of the function's
    /// own entry (see `emit_osr_entry`).
    pub(super) osr: Option<u32>,
}

impl<'a> Emitter<'a> {
    pub fn new(
        func: &'a Function,
        module: &'a Module,
        env: &'a CompileEnv,
        base_addr: usize,
    ) -> Emitter<'a> {
        let mut ops = VecAssembler::new(base_addr);
        let mut labels = vec![None; func.code.len()];
        for instr in &func.code {
            if let Some(t) = instr.target() {
                let slot = &mut labels[t as usize];
                if slot.is_none() {
                    *slot = Some(ops.new_dynamic_label());
                }
            }
        }
        let mut loop_header = vec![false; func.code.len()];
        for (i, instr) in func.code.iter().enumerate() {
            match instr.target() {
                Some(t) if t as usize <= i => loop_header[t as usize] = true,
                _ => {}
            }
        }
        let exit = ops.new_dynamic_label();
        let exit_rax = ops.new_dynamic_label();
        let too_deep = ops.new_dynamic_label();
        let stack_short = ops.new_dynamic_label();
        Emitter {
            ops,
            func,
            module,
            env,
            frame: Frame::layout(func, module),
            stack: StackModel::new(),
            labels,
            loop_header,
            exit,
            exit_rax,
            too_deep,
            stack_short,
            traps: Vec::new(),
            cold: Vec::new(),
            cold_rows: Vec::new(),
            out: CompiledCode {
                entry_offset: ENTRY_OFFSET,
                ..CompiledCode::default()
            },
            osr: None,
        }
    }

    /// Makes this an on-stack-replacement entry at the loop header `header` (a label).
    pub fn at_loop_header(mut self, header: u32) -> Self {
        self.osr = Some(header);
        self
    }

    pub fn compile(mut self) -> Result<CompiledCode, EmitError> {
        let bytes = self.frame.total() as usize;
        if bytes > MAX_NATIVE_FRAME {
            return Err(EmitError::FrameTooLarge {
                bytes,
                bound: MAX_NATIVE_FRAME,
            });
        }
        let header = self.env.header as u64;
        asm!(self; .u64 0 ; .u64 header);
        debug_assert_eq!(self.offset(), ENTRY_OFFSET);
        self.frame_row(0, false);
        self.emit_entry_checks();
        let (mut i, mut falls_through) = match (self.osr, self.base_case_guard()) {
            (Some(header), _) => {
                self.emit_osr_entry(header);
                (0, false)
            }
            (None, Some(guard)) => self.emit_base_case_guard(guard),
            (None, None) => {
                self.emit_frame_setup();
                (0, true)
            }
        };

        let code = &self.func.code;
        while i < code.len() {
            if let Some(label) = self.labels[i] {
                if falls_through {
                    self.canonicalize_below(self.stack.height());
                }
                self.stack.reset_spilled(self.func.heights[i] as usize);
                if self.loop_header[i] {
                    asm!(self; .align 16);
                }
                asm!(self; =>label);
            } else if !falls_through {
                self.stack.reset_spilled(self.func.heights[i] as usize);
            }
            debug_assert_eq!(self.stack.height(), self.func.heights[i] as usize);
            self.out.instr_offsets.push(self.offset());
            let consumed = self.emit_instr(i);
            for _ in 1..consumed {
                self.out.instr_offsets.push(self.offset());
            }
            falls_through = code[i + consumed - 1].falls_through();
            i += consumed;
        }

        self.out.cold_offset = self.offset();
        self.emit_cold();
        self.out.source = self.source_rows();
        self.out.bytes = self
            .ops
            .finalize()
            .map_err(|e| EmitError::Assembler(e.to_string()))?;
        self.out.finish_rows();
        Ok(self.out)
    }

    /// The bytecode instruction at each offset: the entry checks are the function's own;
    /// each instruction's code starts at its recorded offset; the out-of-line code has the
    /// rows `emit_cold` recorded (a poll's slow path is its instruction's).
    fn source_rows(&self) -> Vec<SourceRow> {
        let own = |offset| SourceRow {
            offset,
            instr: None,
        };
        let instrs = self.out.instr_offsets.iter().enumerate();
        std::iter::once(own(ENTRY_OFFSET))
            .chain(instrs.map(|(i, &offset)| SourceRow {
                offset,
                instr: Some(i as u32),
            }))
            .chain(self.cold_rows.iter().copied())
            .collect()
    }

    /// The next instruction, if it may be fused into instruction `i` (no jump lands on it).
    pub(super) fn fusable_next(&self, i: usize) -> Option<Instr> {
        let next = i + 1;
        (next < self.func.code.len() && self.labels[next].is_none()).then(|| self.func.code[next])
    }

    pub(super) fn label(&self, t: u32) -> DynamicLabel {
        self.labels[t as usize].expect("every jump target has a label")
    }

    pub(super) fn offset(&self) -> usize {
        self.ops.offset().0
    }
}
