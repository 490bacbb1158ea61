//! The live patcher's SIGTRAP handler passes traps that are not its own to the handler that
//! was installed before it. A test binary of its own, so that handler is installed first.
#![cfg(target_arch = "x86_64")]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use common::{rel32_caller, runtime, version};
use jitvm_runtime::{Guarantee, Rel32Kind};

static FOREIGN_TRAPS: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_trap(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    FOREIGN_TRAPS.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn an_int3_that_is_not_a_live_site_reaches_the_handler_installed_before() {
    // SAFETY: a zeroed sigaction is valid; the handler only touches an atomic.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = count_trap as extern "C" fn(_, _, _) as usize;
        act.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut act.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGTRAP, &act, std::ptr::null_mut()),
            0
        );
    }
    // A live patch installs the runtime's handler over it.
    let rt = runtime(false);
    let mut tx = rt.transaction();
    let target = tx.stage(&version(1), 16).unwrap();
    let (code, at) = rel32_caller();
    let caller = tx.stage(&code, 16).unwrap();
    let site = rt.rel32_site(caller, at, Rel32Kind::Call).unwrap();
    tx.patch_rel32(site, target.addr()).unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    let mut tx = rt.transaction();
    tx.patch_live_rel32(site, target.addr()).unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    // SAFETY: reads the disposition into a valid struct.
    let ours = unsafe {
        let mut now: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGTRAP, std::ptr::null(), &mut now);
        now.sa_sigaction
    };
    assert_ne!(
        ours, count_trap as extern "C" fn(_, _, _) as usize,
        "installed"
    );
    // SAFETY: an `int3` in Rust code; the handler chain returns past it.
    unsafe { std::arch::asm!("int3") };
    assert_eq!(FOREIGN_TRAPS.load(Ordering::Relaxed), 1, "passed on once");
}
