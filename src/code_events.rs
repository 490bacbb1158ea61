//! What a run does with the code runtime's events (a blob published, a blob reclaimed, a
//! thread pinning retired code): `--perf map` lines ([`crate::perf_map`]), `--perf jitdump`
//! records, `--gdb` registrations ([`crate::gdb_jit`]) and `--trace` lines.
//!
//! The runtime reports a blob by address, length and owner tag; what a profiler or debugger
//! also needs (the frame at each offset, the bytecode instruction at each offset, the bytes)
//! the JIT leaves in a [`Descriptions`] table as it stages the blob, and the hook takes it
//! from there at publication. Each blob becomes a [`FunctionInfo`]: named as the perf map
//! names it (`jitvm:fib [baseline]`), with the `.bc` line of each instruction's code (the
//! function's `func` line for its prologue, stubs and slow paths).

use crate::error::EngineError;
use crate::gdb_jit::GdbImages;
use crate::options::{jitdump_dir, Options, PerfOutput};
use crate::perf_map::{self, PerfMap};
use crate::trace;
use jitvm_debuginfo::jitdump::JitDump;
use jitvm_debuginfo::{FrameRow, FunctionInfo, LineRow};
use jitvm_jit::code_info::{Description, Descriptions};
use jitvm_jit::install::blob_owner;
use jitvm_runtime::CodeEvent;
use jitvm_vm::bytecode::Pos;
use jitvm_vm::Module;
use std::sync::{Arc, Mutex};

/// What a description needs of each function of the program.
struct FunctionFacts {
    name: String,
    /// Where its `func` line is.
    pos: Pos,
    /// Where each instruction is.
    positions: Vec<Pos>,
}

/// The consumers of a run's code events: see the module docs.
pub struct CodeEvents {
    functions: Vec<FunctionFacts>,
    file: Option<String>,
    descriptions: Option<Arc<Descriptions>>,
    perf_map: Option<Arc<PerfMap>>,
    jitdump: Option<Mutex<Option<JitDump>>>,
    gdb: Option<Mutex<GdbImages>>,
}

impl CodeEvents {
    /// The consumers `options` ask for, their files created; `None` if there are none.
    pub fn new(module: &Module, options: &Options) -> Result<Option<Arc<CodeEvents>>, EngineError> {
        let perf_map = match options.perf {
            Some(PerfOutput::Map) => {
                let path = perf_map::path();
                let names = module.functions.iter().map(|f| f.name.clone()).collect();
                let map = PerfMap::create(&path, names)
                    .map_err(|source| EngineError::PerfMap { path, source })?;
                Some(map)
            }
            _ => None,
        };
        let jitdump = match options.perf {
            Some(PerfOutput::Jitdump) => {
                let dump = JitDump::create(&jitdump_dir()).map_err(EngineError::Jitdump)?;
                Some(Mutex::new(Some(dump)))
            }
            _ => None,
        };
        let gdb = options.gdb.then(|| Mutex::new(GdbImages::default()));
        if perf_map.is_none() && jitdump.is_none() && gdb.is_none() && !trace::enabled() {
            return Ok(None);
        }
        let descriptions =
            (jitdump.is_some() || gdb.is_some()).then(|| Arc::new(Descriptions::new()));
        let functions = module
            .functions
            .iter()
            .map(|f| FunctionFacts {
                name: f.name.clone(),
                pos: f.pos,
                positions: f.positions.clone(),
            })
            .collect();
        Ok(Some(Arc::new(CodeEvents {
            functions,
            file: options.script.as_ref().map(|p| p.display().to_string()),
            descriptions,
            perf_map,
            jitdump,
            gdb,
        })))
    }

    /// The table the JIT describes the blobs it stages in, if a consumer needs descriptions.
    pub fn descriptions(&self) -> Option<Arc<Descriptions>> {
        self.descriptions.clone()
    }

    /// The runtime's code hook: one batch of events (one commit, or one reclamation).
    pub fn on_events(&self, events: &[CodeEvent]) {
        let mut published = Vec::new();
        let mut reclaimed = Vec::new();
        for &event in events {
            if let Some(map) = &self.perf_map {
                map.on_event(event);
            }
            trace::code_event(event);
            match event {
                CodeEvent::Published { addr, len, owner } => {
                    let description = self.descriptions.as_ref().and_then(|t| t.take(addr));
                    if let Some(mut d) = description {
                        let info = self.function_info(addr, len, owner, &d);
                        let code = d.bytes.split_off(d.entry.min(d.bytes.len()));
                        published.push((addr as u64, info, code));
                    }
                }
                CodeEvent::Reclaimed { addr, .. } => reclaimed.push(addr as u64),
                CodeEvent::PinnedBy { .. } => {}
            }
        }
        if let Some(dump) = &self.jitdump {
            let mut dump = dump.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(writer) = dump.as_mut() {
                for (_, info, bytes) in &published {
                    if let Err(e) = writer.code_load(info, bytes) {
                        log::warn!(
                            "--perf jitdump: {}: {e}; no more records",
                            writer.path().display()
                        );
                        *dump = None;
                        break;
                    }
                }
            }
        }
        if let Some(gdb) = &self.gdb {
            let mut gdb = gdb.lock().unwrap_or_else(|e| e.into_inner());
            gdb.remove(&reclaimed);
            gdb.add(
                published
                    .into_iter()
                    .map(|(blob, info, _)| (blob, info))
                    .collect(),
            );
        }
    }

    /// At exit: what is buffered reaches the files (a profiler reads them after the run).
    pub fn at_exit(&self) {
        if let Some(map) = &self.perf_map {
            map.flush();
        }
        if let Some(dump) = &self.jitdump {
            let dump = dump.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(Err(e)) = dump.map(JitDump::close) {
                log::warn!("--perf jitdump: {e}");
            }
        }
    }

    /// The blob at `addr` as a profiler or debugger sees it: its instructions, from its
    /// entry point on (a function's header word is no code).
    fn function_info(&self, addr: usize, len: usize, owner: u64, d: &Description) -> FunctionInfo {
        let (f, kind) = blob_owner(owner);
        let entry = d.entry.min(len);
        // Rows before the entry (none are made) would describe the header.
        let from_entry = |offset: usize| offset.checked_sub(entry).map(|o| o as u32);
        let facts = self.functions.get(f as usize);
        let name = facts.map_or("?", |f| f.name.as_str());
        let mut lines: Vec<LineRow> = Vec::new();
        if let (Some(facts), Some(_)) = (facts, &self.file) {
            let row = |offset: usize, pos: Pos| LineRow {
                offset: offset as u32,
                line: pos.line,
                column: pos.col,
            };
            if d.source.is_empty() {
                lines.push(row(0, facts.pos));
            }
            for r in d.source.iter().filter(|r| r.offset >= entry) {
                let pos = r
                    .instr
                    .and_then(|i| facts.positions.get(i as usize))
                    .copied()
                    .unwrap_or(facts.pos);
                let same = lines
                    .last()
                    .is_some_and(|l| (l.line, l.column) == (pos.line, pos.col));
                if !same {
                    lines.push(row(r.offset - entry, pos));
                }
            }
        }
        let frame = d
            .frame
            .iter()
            .filter_map(|r| {
                let offset = from_entry(r.offset as usize)?;
                Some(FrameRow {
                    offset,
                    ..r.clone()
                })
            })
            .collect();
        FunctionInfo {
            name: perf_map::symbol(name, kind),
            addr: (addr + entry) as u64,
            len: (len - entry) as u64,
            file: self.file.clone(),
            lines,
            frame,
        }
    }
}
