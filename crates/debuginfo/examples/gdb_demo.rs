//! Two frames of hand-written machine code that gdb should name, place and
//! unwind through: `main` calls `outer`, which calls `inner`, which calls the
//! Rust function `breakpoint_here`. tests/gdb.rs runs this under gdb with a
//! breakpoint there and reads `bt`.
//!
//! Also runnable by hand: `gdb -ex 'break breakpoint_here' -ex run -ex bt
//! target/debug/examples/gdb_demo`.

use jitvm_debuginfo::{elf, gdb, regs, Cfa, FrameRow, FunctionInfo, LineRow};
use memmap2::MmapMut;

/// Where gdb stops; its caller is JIT code.
#[no_mangle]
#[inline(never)]
pub extern "C" fn breakpoint_here() {
    std::hint::black_box(());
}

/// Offset of `inner` in the code page.
const INNER: usize = 64;

fn main() {
    let mut page = MmapMut::map_anon(4096).expect("map a page");
    let base = page.as_ptr() as u64;
    let outer_code = outer(base + INNER as u64);
    let inner_code = inner(breakpoint_here as *const () as u64);
    page[..outer_code.len()].copy_from_slice(&outer_code);
    page[INNER..INNER + inner_code.len()].copy_from_slice(&inner_code);
    // Writable, then executable: never both.
    let page = page.make_exec().expect("make the page executable");

    let functions = [
        FunctionInfo {
            name: "jitvm:outer".into(),
            addr: base,
            len: outer_code.len() as u64,
            file: Some("demo.bc".into()),
            lines: vec![row(0, 2), row(4, 3), row(16, 4)],
            frame: frame_pointer_rows(&[], 16),
        },
        FunctionInfo {
            name: "jitvm:inner".into(),
            addr: base + INNER as u64,
            len: inner_code.len() as u64,
            file: Some("demo.bc".into()),
            lines: vec![row(0, 10), row(9, 11), row(21, 12)],
            frame: frame_pointer_rows(&[(5, regs::RBX, -24)], 26),
        },
    ];
    let registration = gdb::register(elf::image(&functions).expect("an ELF image"));

    // SAFETY: `outer` is System V code that follows the C ABI, takes no
    // arguments and returns nothing; the page stays mapped until after.
    let outer: extern "C" fn() = unsafe { std::mem::transmute(page.as_ptr()) };
    outer();
    println!("outer returned");
    drop(registration);
}

fn row(offset: u32, line: u32) -> LineRow {
    LineRow {
        offset,
        line,
        column: 1,
    }
}

/// The rules of a function that opens with `push rbp; mov rbp, rsp` (4
/// bytes), saves `pushes` (offset after the push, register, CFA offset) and
/// closes with `pop rbp` at `pop_rbp` and `ret` right after.
fn frame_pointer_rows(pushes: &[(u32, u16, i32)], pop_rbp: u32) -> Vec<FrameRow> {
    let rbp = (regs::RBP, -16);
    let mut rows = vec![
        FrameRow {
            offset: 1,
            cfa: Cfa::Rsp(16),
            saved: vec![rbp],
        },
        FrameRow {
            offset: 4,
            cfa: Cfa::Rbp(16),
            saved: vec![rbp],
        },
    ];
    let mut saved = vec![rbp];
    for &(offset, reg, off) in pushes {
        saved.push((reg, off));
        rows.push(FrameRow {
            offset,
            cfa: Cfa::Rbp(16),
            saved: saved.clone(),
        });
    }
    if !pushes.is_empty() {
        // The pops before `pop rbp` restored the others.
        rows.push(FrameRow {
            offset: pop_rbp,
            cfa: Cfa::Rbp(16),
            saved: vec![rbp],
        });
    }
    rows.push(FrameRow {
        offset: pop_rbp + 1,
        cfa: Cfa::Rsp(8),
        saved: vec![],
    });
    rows
}

/// push rbp; mov rbp, rsp; mov rax, inner; call rax; pop rbp; ret
fn outer(inner: u64) -> Vec<u8> {
    let mut code = vec![0x55, 0x48, 0x89, 0xe5, 0x48, 0xb8];
    code.extend_from_slice(&inner.to_le_bytes());
    code.extend_from_slice(&[0xff, 0xd0, 0x5d, 0xc3]);
    code
}

/// push rbp; mov rbp, rsp; push rbx; sub rsp, 8; mov rax, callee; call rax;
/// add rsp, 8; pop rbx; pop rbp; ret. The stack stays 16-byte aligned at
/// the call.
fn inner(callee: u64) -> Vec<u8> {
    let mut code = vec![
        0x55, 0x48, 0x89, 0xe5, 0x53, 0x48, 0x83, 0xec, 0x08, 0x48, 0xb8,
    ];
    code.extend_from_slice(&callee.to_le_bytes());
    code.extend_from_slice(&[0xff, 0xd0, 0x48, 0x83, 0xc4, 0x08, 0x5b, 0x5d, 0xc3]);
    code
}
