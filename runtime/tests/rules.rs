//! The rules as the hardware and the kernel give them: strategies refused
//! where they cannot work, `none` honest about doing nothing, poison with
//! the architecture's trap, and the writable view kept apart.

mod common;

use common::{runtime, version};
use jitvm_runtime::{mprotect_refusal_for, select_strategy, Config, Guarantee, Runtime, Strategy};

#[test]
fn mprotect_is_refused_where_tlb_invalidation_is_broadcast() {
    let reason = mprotect_refusal_for(true, "").expect("refused on an INVLPGB CPU");
    assert!(reason.contains("INVLPGB"), "{reason}");
    let cpuinfo = "processor\t: 0\nflags\t\t: fpu vme de pse invlpgb avx\n";
    let reason = mprotect_refusal_for(false, cpuinfo).expect("refused when the kernel says so");
    assert!(reason.contains("invlpgb"), "{reason}");
    if cfg!(target_arch = "x86_64") {
        assert_eq!(
            mprotect_refusal_for(false, "flags\t\t: fpu vme invlpg\n"),
            None
        );
    }
}

#[test]
fn mprotect_is_never_chosen_automatically() {
    assert_ne!(select_strategy(None).unwrap(), Strategy::Mprotect);
}

#[test]
fn the_none_strategy_reports_zero_serializations() {
    let rt = Runtime::new(Config {
        strategy: Some(Strategy::None),
        capacity: 1 << 20,
        ..Config::default()
    })
    .unwrap();
    for g in [Guarantee::Strong, Guarantee::Eventual] {
        let mut tx = rt.transaction();
        tx.stage(&version(1), 16).unwrap();
        assert_eq!(tx.commit(g).unwrap().serializations, 0);
    }
    assert_eq!(rt.serializations(), 0);
}

fn views(maps: &str) -> Vec<(usize, usize, String)> {
    maps.lines()
        .filter(|l| l.contains("/dev/zero"))
        .map(|l| {
            let mut f = l.split_whitespace();
            let (a, b) = f.next().unwrap().split_once('-').unwrap();
            let perms = f.next().unwrap().to_string();
            (
                usize::from_str_radix(a, 16).unwrap(),
                usize::from_str_radix(b, 16).unwrap(),
                perms,
            )
        })
        .collect()
}

#[test]
fn the_writable_view_is_not_next_to_the_executable_view() {
    let rt = runtime(false);
    let rx = rt.code_range();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let all = views(&maps);
    let exec = all
        .iter()
        .find(|v| v.0 == rx.start)
        .expect("the RX view is mapped");
    assert_eq!(exec.2, "r-xs");
    // Among all writable views (other tests' runtimes may be alive too),
    // none touches our RX view.
    for (start, end, perms) in &all {
        if perms.contains('w') {
            assert!(
                *end != rx.start && *start != rx.end,
                "a writable view is adjacent to the executable one: {start:#x}-{end:#x} vs {:#x}-{:#x}",
                rx.start,
                rx.end
            );
        }
    }
    // And ours exists, with an inaccessible guard page on each side.
    let lines: Vec<&str> = maps.lines().collect();
    let rw_lines: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("/dev/zero") && l.contains(" rw-s "))
        .map(|(i, _)| i)
        .collect();
    assert!(!rw_lines.is_empty());
    for i in rw_lines {
        let before = lines[i - 1];
        let after = lines[i + 1];
        assert!(before.contains(" ---p "), "guard before: {before}");
        assert!(after.contains(" ---p "), "guard after: {after}");
    }
}

#[test]
fn poisoned_code_is_the_architectures_trap_instruction() {
    #[cfg(target_arch = "x86_64")]
    assert_eq!(jitvm_runtime::TRAP_INSTRUCTION, &[0xCC]);
    #[cfg(target_arch = "aarch64")]
    assert_eq!(jitvm_runtime::TRAP_INSTRUCTION, &[0x00, 0x00, 0x20, 0xD4]);
    #[cfg(target_arch = "riscv64")]
    assert_eq!(jitvm_runtime::TRAP_INSTRUCTION, &[0x73, 0x00, 0x10, 0x00]);
}

#[test]
fn the_executable_view_is_anonymous_memory_so_perf_reads_the_perf_map() {
    // perf's `is_anon_memory` (tools/perf/util/map.c) takes `//anon`, `/dev/zero...` and
    // `/anon_hugepage...` as anonymous, and names samples there from /tmp/perf-PID.map;
    // samples in a file mapping (a `memfd:` view) would stay unnamed addresses.
    let rt = runtime(false);
    let rx = rt.code_range();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| l.starts_with(&format!("{:x}-", rx.start)))
        .expect("the RX view is in /proc/self/maps");
    let name = line.split_whitespace().nth(5).unwrap_or("");
    assert!(name.starts_with("/dev/zero"), "named {name:?}: {line}");
}
