//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)`.
//!
//! membarrier(2): after registering with
//! `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE`, the command
//! "ensure[s] that all running threads of the calling process execute a
//! core-serializing instruction" before it returns; threads that are not
//! running do so before they next return to user space. It is also a full
//! memory barrier on all of them.

use std::io;
use std::sync::OnceLock;

// From <linux/membarrier.h>; libc does not export them.
const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_int = 1 << 5;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_int = 1 << 6;

fn membarrier(cmd: libc::c_int) -> libc::c_long {
    // SAFETY: membarrier takes (cmd, flags, cpu_id) by value and touches no
    // user memory.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) }
}

/// Queries and registers once per process.
pub(crate) fn register() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let mask = membarrier(MEMBARRIER_CMD_QUERY);
            if mask < 0 {
                return Err(format!(
                    "membarrier query failed: {}",
                    io::Error::last_os_error()
                ));
            }
            let need = (MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE
                | MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE)
                as libc::c_long;
            if mask & need != need {
                return Err(format!("kernel lacks SYNC_CORE (query mask {mask:#x})"));
            }
            if membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE) != 0 {
                return Err(format!(
                    "membarrier registration failed: {}",
                    io::Error::last_os_error()
                ));
            }
            Ok(())
        })
        .clone()
}

/// Serializes every running thread of the process (retrying on `EINTR`).
pub(crate) fn sync_core() -> Result<(), String> {
    loop {
        if membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE) == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(format!("membarrier(SYNC_CORE): {e}"));
        }
    }
}
