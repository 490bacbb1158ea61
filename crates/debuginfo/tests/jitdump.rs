//! A jitdump file read back byte by byte against the perf specification.

use jitvm_debuginfo::jitdump::{self, JitDump};
use jitvm_debuginfo::{Error, FunctionInfo, LineRow};
use std::path::PathBuf;

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "jitvm-debuginfo-{name}-{}-{}",
        std::process::id(),
        jitdump::timestamp()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn function(name: &str, addr: u64, file: Option<&str>) -> FunctionInfo {
    FunctionInfo {
        name: name.into(),
        addr,
        len: 4,
        file: file.map(Into::into),
        lines: vec![
            LineRow {
                offset: 0,
                line: 5,
                column: 1,
            },
            LineRow {
                offset: 2,
                line: 6,
                column: 3,
            },
        ],
        frame: vec![],
    }
}

#[test]
fn a_dump_holds_the_header_then_debug_info_and_code_load_records_in_time_order() {
    let dir = scratch_dir("records");
    let before = jitdump::timestamp();
    let mut dump = JitDump::create(&dir).unwrap();
    let path = dump.path().to_owned();
    assert_eq!(path, dir.join(format!("jit-{}.dump", std::process::id())));
    dump.code_load(
        &function("jitvm:f", 0x1000, Some("f.bc")),
        &[0x90, 0x90, 0x90, 0xc3],
    )
    .unwrap();
    // No file: no debug info record.
    dump.code_load(&function("jitvm:g", 0x2000, None), &[0xcc; 4])
        .unwrap();
    dump.close().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    // File header.
    assert_eq!(u32_at(&bytes, 0), 0x4A69_5444);
    assert_eq!(u32_at(&bytes, 4), 1);
    assert_eq!(u32_at(&bytes, 8), 40);
    assert_eq!(u32_at(&bytes, 12), 62);
    assert_eq!(u32_at(&bytes, 20), std::process::id());
    let header_time = u64_at(&bytes, 24);
    assert!(header_time >= before);
    assert_eq!(u64_at(&bytes, 32), 0);

    // Records: (id, body).
    let mut records = Vec::new();
    let mut at = 40;
    let mut last_time = header_time;
    while at < bytes.len() {
        let (id, size, time) = (
            u32_at(&bytes, at),
            u32_at(&bytes, at + 4) as usize,
            u64_at(&bytes, at + 8),
        );
        assert!(time >= last_time);
        last_time = time;
        records.push((id, bytes[at + 16..at + size].to_vec()));
        at += size;
    }
    assert_eq!(at, bytes.len());
    let ids: Vec<u32> = records.iter().map(|r| r.0).collect();
    assert_eq!(ids, [2, 0, 0]);

    // JIT_CODE_DEBUG_INFO: code_addr, nr_entry, then {addr, line, discrim, file\0}.
    let debug = &records[0].1;
    assert_eq!(u64_at(debug, 0), 0x1000);
    // One entry a row, and one more at the end of the code: perf inject
    // closes the line table at the last entry.
    assert_eq!(u64_at(debug, 8), 3);
    let entry = |at: usize| {
        (
            u64_at(debug, at),
            u32_at(debug, at + 8),
            u32_at(debug, at + 12),
        )
    };
    assert_eq!(entry(16), (0x1000, 5, 0));
    assert_eq!(&debug[32..37], b"f.bc\0");
    assert_eq!(entry(37), (0x1002, 6, 0));
    assert_eq!(&debug[53..58], b"f.bc\0");
    assert_eq!(entry(58), (0x1004, 6, 0));
    assert_eq!(&debug[74..], b"f.bc\0");

    // JIT_CODE_LOAD: pid, tid, vma, code_addr, code_size, code_index, name\0, code.
    for (record, (name, addr, code, index)) in records[1..].iter().zip([
        ("jitvm:f", 0x1000, [0x90, 0x90, 0x90, 0xc3], 0),
        ("jitvm:g", 0x2000, [0xcc; 4], 1),
    ]) {
        let body = &record.1;
        assert_eq!(u32_at(body, 0), std::process::id());
        assert_ne!(u32_at(body, 4), 0);
        assert_eq!(u64_at(body, 8), addr);
        assert_eq!(u64_at(body, 16), addr);
        assert_eq!(u64_at(body, 24), 4);
        assert_eq!(u64_at(body, 32), index);
        let name_end = 40 + name.len();
        assert_eq!(&body[40..name_end], name.as_bytes());
        assert_eq!(body[name_end], 0);
        assert_eq!(&body[name_end + 1..], code);
    }
}

#[test]
fn code_of_another_length_than_the_description_is_refused() {
    let dir = scratch_dir("length");
    let mut dump = JitDump::create(&dir).unwrap();
    let result = dump.code_load(&function("jitvm:f", 0x1000, None), &[0xc3]);
    assert!(matches!(
        result,
        Err(Error::CodeLength {
            len: 4,
            code: 1,
            ..
        })
    ));
    drop(dump);
    std::fs::remove_dir_all(&dir).unwrap();
}
