//! A spinning function of JIT code recorded in a jitdump file, for
//! tests/perf.rs: `perf record -k mono` runs this, `perf inject --jit` reads
//! the dump, and `perf report` should name the function and its line.
//!
//! Usage: perf_demo DIR (where jit-<pid>.dump goes).

use jitvm_debuginfo::jitdump::JitDump;
use jitvm_debuginfo::{FunctionInfo, LineRow};
use memmap2::MmapMut;
use std::path::Path;

fn main() {
    let dir = std::env::args().nth(1).expect("usage: perf_demo DIR");
    // mov ecx, 0x10000000; again: dec ecx; jnz again; ret
    let code = [0xb9, 0x00, 0x00, 0x00, 0x10, 0xff, 0xc9, 0x75, 0xfc, 0xc3];
    let mut page = MmapMut::map_anon(4096).expect("map a page");
    page[..code.len()].copy_from_slice(&code);
    // Writable, then executable: never both.
    let page = page.make_exec().expect("make the page executable");
    let spin = FunctionInfo {
        name: "jitvm:spin [baseline]".into(),
        addr: page.as_ptr() as u64,
        len: code.len() as u64,
        file: Some("spin.bc".into()),
        lines: vec![
            LineRow {
                offset: 0,
                line: 1,
                column: 1,
            },
            LineRow {
                offset: 5,
                line: 2,
                column: 1,
            },
        ],
        frame: vec![],
    };
    let mut dump = JitDump::create(Path::new(&dir)).expect("create the jitdump");
    dump.code_load(&spin, &code).expect("record the code");
    // SAFETY: the code follows the C ABI, takes no arguments and returns
    // nothing; the page stays mapped until after.
    let run: extern "C" fn() = unsafe { std::mem::transmute(page.as_ptr()) };
    for _ in 0..4 {
        run();
    }
    dump.close().expect("close the jitdump");
}
