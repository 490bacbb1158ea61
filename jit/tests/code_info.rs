//! The frame and source rows each compiler records for debuggers and profilers
//! (`jitvm_jit::code_info`), checked against the machine code itself: decoded with iced, each
//! instruction that moves `rsp` must move the recorded frame by as much, a jump must land
//! where the frame is the one it leaves, a `ret` must see only the return address left, and
//! each call site must map to its `call` instruction.
#![cfg(target_arch = "x86_64")]

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpAccess,
    OpKind, Register,
};
use jitvm_debuginfo::regs;
use jitvm_jit::abi::ENTRY_OFFSET;
use jitvm_jit::code_info::{Cfa, Description, Descriptions, FrameRow, SourceRow};
use jitvm_jit::install::{Installed, Jit};
use jitvm_jit::native_thread::native_thread;
use jitvm_jit::tier::Tier;
use jitvm_runtime::{Config, Runtime};
use jitvm_vm::{parse_module, Program, RunConfig};
use std::sync::Arc;

/// Every conformance program's source.
fn programs() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bc") {
            // Cases of bad input (not UTF-8, not verifying) have no code to describe.
            let Ok(src) = std::fs::read_to_string(&path) else {
                continue;
            };
            if parse_module(src.as_bytes()).is_ok() {
                out.push((path.display().to_string(), src));
            }
        }
    }
    assert!(out.len() > 20, "the conformance cases are there");
    out
}

/// Installs every function of `src` in `tier` with a descriptions table.
fn install(src: &str, tier: Tier) -> (Arc<Program>, Vec<Installed>, Arc<Descriptions>) {
    let module = parse_module(src.as_bytes()).unwrap();
    let runtime = Runtime::new(Config::default()).unwrap();
    let n = module.functions.len();
    let program = Program::new(
        Arc::new(module),
        RunConfig::default(),
        runtime,
        Box::new(native_thread),
        None,
    );
    let table = Arc::new(Descriptions::new());
    let (_jit, installed) = Jit::install(
        &program,
        &vec![tier; n],
        false,
        false,
        Some(Arc::clone(&table)),
    )
    .unwrap();
    (program, installed, table)
}

fn row_at(rows: &[FrameRow], offset: usize) -> &FrameRow {
    rows.iter()
        .rev()
        .find(|r| r.offset as usize <= offset)
        .unwrap_or_else(|| panic!("no frame row at or before {offset}"))
}

fn rsp_cfa(row: &FrameRow) -> i32 {
    match row.cfa {
        Cfa::Rsp(c) => c,
        Cfa::Rbp(_) => panic!("the baseline never frames on rbp: {row:?}"),
    }
}

/// The instructions of `d.bytes[d.entry..end]`, a blob at `base`.
fn decode(d: &Description, end: usize, base: u64) -> Vec<(usize, Instruction)> {
    let code = &d.bytes[d.entry..end];
    let mut decoder = Decoder::with_ip(64, code, base + d.entry as u64, DecoderOptions::NONE);
    let mut out = Vec::new();
    while decoder.can_decode() {
        let at = d.entry + decoder.position();
        let instr = decoder.decode();
        assert!(!instr.is_invalid(), "undecodable byte at {at}");
        out.push((at, instr));
    }
    out
}

fn dwarf(r: Register) -> u16 {
    regs::from_hw(r.number() as u8).unwrap()
}

/// The checks of the module docs, for code framed on `rsp` (the baseline, the stubs).
fn check_rsp_frames(what: &str, d: &Description, base: u64) {
    let rows = &d.frame;
    let mut info = InstructionInfoFactory::new();
    assert!(!rows.is_empty(), "{what}: no frame rows");
    assert_eq!(rows[0].offset as usize, ENTRY_OFFSET, "{what}");
    assert_eq!(
        rows[0].cfa,
        Cfa::Rsp(8),
        "{what}: the entry has only the return address"
    );
    assert!(
        rows.windows(2).all(|w| w[0].offset < w[1].offset),
        "{what}: rows in order"
    );
    assert!(
        rows.iter().all(|r| (r.offset as usize) < d.bytes.len()),
        "{what}"
    );
    let instrs = decode(d, d.bytes.len(), base);
    for (k, &(at, ref i)) in instrs.iter().enumerate() {
        let row = row_at(rows, at);
        let cfa = rsp_cfa(row);
        let next = instrs.get(k + 1).map(|&(n, _)| row_at(rows, n));
        let writes_rsp = info
            .info(i)
            .used_registers()
            .iter()
            .any(|u| u.register() == Register::RSP && u.access() != OpAccess::Read);
        let op0_rsp = i.op0_kind() == OpKind::Register && i.op0_register() == Register::RSP;
        // A call leaves rsp as it found it; a return or jump goes elsewhere.
        let transfers = matches!(
            i.flow_control(),
            FlowControl::Call | FlowControl::IndirectCall | FlowControl::Return
        );
        let expect_next = match i.mnemonic() {
            Mnemonic::Push => {
                let saved = next.expect("code after a push");
                assert!(
                    saved.saved.contains(&(dwarf(i.op0_register()), -(cfa + 8))),
                    "{what}: push at {at} not recorded: {saved:?}"
                );
                Some(cfa + 8)
            }
            Mnemonic::Pop => Some(cfa - 8),
            Mnemonic::Sub if op0_rsp => Some(cfa + i.immediate(1) as i32),
            Mnemonic::Add if op0_rsp => Some(cfa - i.immediate(1) as i32),
            _ => {
                assert!(
                    transfers || !writes_rsp,
                    "{what}: an unexpected write of rsp at {at}: {i}"
                );
                Some(cfa)
            }
        };
        match i.flow_control() {
            FlowControl::Return => {
                assert_eq!(
                    cfa, 8,
                    "{what}: ret at {at} with more than the return address"
                )
            }
            FlowControl::Call | FlowControl::IndirectCall => {
                assert_eq!(cfa % 16, 0, "{what}: a call at {at} with rsp misaligned")
            }
            FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch => {
                let target = i.near_branch_target().wrapping_sub(base) as usize;
                if target < d.bytes.len() {
                    let there = row_at(rows, target);
                    assert_eq!(there.cfa, row.cfa, "{what}: jump at {at} to {target}");
                    assert_eq!(there.saved, row.saved, "{what}: jump at {at} to {target}");
                }
            }
            _ => {}
        }
        let falls_through = !matches!(
            i.flow_control(),
            FlowControl::Return | FlowControl::UnconditionalBranch | FlowControl::IndirectBranch
        );
        if let (true, Some(next), Some(cfa_next)) = (falls_through, next, expect_next) {
            assert_eq!(
                rsp_cfa(next),
                cfa_next,
                "{what}: after {i} at {at} the frame row says {next:?}"
            );
        }
    }
}

#[test]
fn baseline_frame_rows_follow_every_push_pop_and_stack_adjustment() {
    for (path, src) in programs() {
        let (program, installed, table) = install(&src, Tier::Baseline);
        for item in &installed {
            let d = table
                .take(item.addr)
                .unwrap_or_else(|| panic!("{path}: blob of function {} undescribed", item.func));
            let name = &program.module.functions[item.func as usize].name;
            check_rsp_frames(&format!("{path}: {name}"), &d, item.addr as u64);
        }
    }
}

#[test]
fn interpreter_stub_frame_rows_follow_the_stub() {
    let (_, installed, table) = install(&programs()[0].1, Tier::Interp);
    for item in &installed {
        let d = table.take(item.addr).expect("described");
        check_rsp_frames("stub", &d, item.addr as u64);
        assert!(d.source.is_empty(), "a stub is no bytecode");
    }
}

/// The source row in force at `offset`.
fn instr_at(rows: &[SourceRow], offset: usize) -> Option<u32> {
    rows.iter().rev().find(|r| r.offset <= offset)?.instr
}

#[test]
fn each_call_site_maps_to_its_call_instruction_in_both_tiers() {
    for tier in [Tier::Baseline, Tier::Opt] {
        for (path, src) in programs() {
            let (program, installed, table) = install(&src, tier);
            for item in &installed {
                let d = table.take(item.addr).expect("described");
                let native = item.native.as_ref().expect("compiled");
                let rows = &d.source;
                assert!(rows.windows(2).all(|w| w[0].offset < w[1].offset), "{path}");
                let func = &program.module.functions[item.func as usize];
                assert!(rows
                    .iter()
                    .all(|r| r.instr.map_or(true, |i| (i as usize) < func.code.len())));
                for &(i, site) in &native.call_sites {
                    assert_eq!(
                        instr_at(rows, site),
                        Some(i as u32),
                        "{path}: {} in {tier}: the call at {site}",
                        func.name
                    );
                }
            }
        }
    }
}

#[test]
fn optimized_code_is_framed_on_rbp_at_every_call() {
    for (path, src) in programs() {
        let (_, installed, table) = install(&src, Tier::Opt);
        for item in &installed {
            let d = table.take(item.addr).expect("described");
            assert_eq!(d.frame[0].cfa, Cfa::Rsp(8), "{path}");
            // Cranelift's constants follow the last instruction with a source location.
            let end = d.source.last().expect("source rows").offset;
            for (at, i) in decode(&d, end, item.addr as u64) {
                if matches!(
                    i.flow_control(),
                    FlowControl::Call | FlowControl::IndirectCall
                ) {
                    let row = row_at(&d.frame, at);
                    assert_eq!(row.cfa, Cfa::Rbp(16), "{path}: call at {at}");
                    assert!(row.saved.contains(&(regs::RBP, -16)), "{path}: {row:?}");
                }
            }
        }
    }
}

#[test]
fn the_slow_path_of_a_back_edge_poll_maps_to_the_jump_that_polls_in_both_tiers() {
    // A debugger that stops a thread inside the safepoint call names the loop's line.
    let src =
        "func spin(n)\n  local i\nloop:\n  load i\n  push 1\n  add\n  store i\n  jmp loop\nend\n\
               func main()\n  push 1\n  call spin\n  ret\nend\n";
    for tier in [Tier::Baseline, Tier::Opt] {
        let (program, installed, table) = install(src, tier);
        let item = installed.iter().find(|i| i.func == 0).expect("spin");
        let d = table.take(item.addr).expect("described");
        let func = &program.module.functions[0];
        let back_edge = (0..func.code.len())
            .find(|&i| func.code[i].target().is_some_and(|t| t as usize <= i))
            .expect("a backward jump") as u32;
        let calls: Vec<Option<u32>> = decode(&d, d.bytes.len(), item.addr as u64)
            .into_iter()
            .filter(|(_, i)| {
                matches!(
                    i.flow_control(),
                    FlowControl::Call | FlowControl::IndirectCall
                )
            })
            .map(|(at, _)| instr_at(&d.source, at))
            .collect();
        assert!(
            calls.contains(&Some(back_edge)),
            "{tier}: calls map to {calls:?}"
        );
    }
}
