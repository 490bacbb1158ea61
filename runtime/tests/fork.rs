//! A forked child shares the code memory with its parent: it must not be
//! able to change the parent's code.

mod common;

use common::{call, version};
use jitvm_runtime::{Config, Error, Guarantee, Runtime};

#[test]
fn a_forked_child_cannot_change_the_parents_code() {
    let rt = Runtime::new(Config {
        capacity: 1 << 20,
        poison: true,
        quarantine_bytes: 0,
        ..Config::default()
    })
    .unwrap();
    let slot = rt.dispatch_slot(0);
    let mut tx = rt.transaction();
    let live = tx.stage(&version(1), 16).unwrap();
    tx.set_dispatch(&slot, live.addr()).unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    // SAFETY: the blob is inside the RX view, mapped while `rt` lives.
    let bytes =
        || unsafe { std::slice::from_raw_parts(live.addr() as *const u8, live.len()) }.to_vec();
    let original = bytes();

    // SAFETY: the child only calls the runtime (which refuses before taking
    // any lock) and `_exit`s; it never returns into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // The child: every call that could write code memory is refused. On
        // a runtime without this policy the retirement would be reclaimed at
        // once (no threads) and poison the parent's live blob.
        let mut ok = true;
        let mut tx = rt.transaction();
        ok &= matches!(tx.stage(&version(2), 16), Err(Error::ForkedChild));
        ok &= matches!(tx.reserve(64, 16), Err(Error::ForkedChild));
        let _ = tx.retire(live);
        ok &= matches!(tx.commit(Guarantee::Strong), Err(Error::ForkedChild));
        ok &= rt.reclaim() == 0;
        ok &= matches!(rt.register_thread(), Err(Error::ForkedChild));
        ok &= matches!(
            rt.synchronize(std::time::Duration::from_millis(10)),
            Err(Error::ForkedChild)
        );
        // SAFETY: _exit ends the child without running the parent's atexit
        // handlers or unwinding into the test harness.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child; status is a valid out-parameter.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EINTR),
            "waitpid failed"
        );
    }
    assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "a child call was not refused");
    assert_eq!(bytes(), original, "the parent's code is unchanged");
    assert!(!rt.lookup(live.addr()).unwrap().retired);
    let me = rt.register_thread().unwrap();
    assert_eq!(me.enter(|s| call(s, slot.get())), 1);
    // The parent still commits normally.
    let mut tx = rt.transaction();
    let v2 = tx.stage(&version(2), 16).unwrap();
    tx.set_dispatch(&slot, v2.addr()).unwrap();
    tx.retire(live).unwrap();
    tx.commit(Guarantee::Strong).unwrap();
    assert_eq!(me.enter(|s| call(s, slot.get())), 2);
}
