//! The GDB JIT interface, end to end: gdb runs examples/gdb_demo.rs, stops
//! in a Rust function called from two frames of registered JIT code, and its
//! backtrace must name both, place them in demo.bc and reach main.

use jitvm_debuginfo::{elf, gdb, FunctionInfo};
use std::path::PathBuf;
use std::process::Command;

/// Says why the test did nothing, on stderr itself: libtest would swallow a
/// `println!` from a passing test.
macro_rules! skip {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipped: {}", format!($($arg)*));
    }};
}

/// `cargo test` builds the package's examples into target/<profile>/examples,
/// beside the deps/ folder that holds this test.
fn demo() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(|deps| deps.parent()).unwrap();
    profile
        .join("examples")
        .join(format!("gdb_demo{}", std::env::consts::EXE_SUFFIX))
}

#[test]
fn gdb_backtraces_through_registered_jit_frames_to_main() {
    let demo = demo();
    assert!(
        demo.exists(),
        "{} is missing: `cargo test` builds it, a `--test` filter does not \
         (run `cargo build --example gdb_demo` with the same profile first)",
        demo.display()
    );
    let output = match Command::new("gdb")
        .args([
            "-batch",
            "-nx",
            "-ex",
            "break breakpoint_here",
            "-ex",
            "run",
            "-ex",
            "bt",
            "--args",
        ])
        .arg(&demo)
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            skip!("gdb cannot be run ({e})");
            return;
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if text.contains("ptrace: Operation not permitted") || text.contains("Couldn't get registers") {
        skip!("gdb may not trace here:\n{text}");
        return;
    }
    let frames: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
    println!("{}", frames.join("\n"));
    let position = |needle: &str| {
        frames
            .iter()
            .position(|f| f.contains(needle))
            .unwrap_or_else(|| panic!("no frame with {needle:?} in gdb's output:\n{text}"))
    };
    let here = position("breakpoint_here");
    let inner = position("in jitvm:inner () at demo.bc:11");
    let outer = position("in jitvm:outer () at demo.bc:3");
    let main = position("main ()");
    assert!(here < inner && inner < outer && outer < main, "{text}");
}

#[test]
fn dropping_every_registration_empties_the_descriptor() {
    // The only test here that registers in this process, so counts are exact.
    fn send_sync<T: Send + Sync>() {}
    send_sync::<gdb::Registration>();
    let f = |name: &str, addr| FunctionInfo {
        name: name.into(),
        addr,
        len: 16,
        ..FunctionInfo::default()
    };
    let a = gdb::register(elf::image(&[f("a", 0x1000)]).unwrap());
    let b = gdb::register(elf::image(&[f("b", 0x2000)]).unwrap());
    let c = gdb::register(elf::image(&[f("c", 0x3000)]).unwrap());
    assert_eq!(gdb::registered(), 3);
    // From the middle (on another thread: a Registration is Send), the
    // head, then the last.
    std::thread::spawn(move || drop(b)).join().unwrap();
    assert_eq!(gdb::registered(), 2);
    drop(c);
    drop(a);
    assert_eq!(gdb::registered(), 0);
    // SAFETY: a plain read of a pointer field; nothing else in this test
    // binary registers code.
    let first = unsafe { (*std::ptr::addr_of!(gdb::__jit_debug_descriptor)).first_entry };
    assert!(first.is_null());
}
