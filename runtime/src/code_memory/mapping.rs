//! The double mapping: one region of shared anonymous memory, mapped
//! read+write and read+execute.
//!
//! Shared anonymous memory rather than a `memfd`: both are the same shmem
//! pages underneath, but `perf` treats only anonymous mappings (`//anon`,
//! `/dev/zero`, which is how the kernel names this one) as JIT code whose
//! names are in `/tmp/perf-PID.map`; a `memfd` view is a file to it, and a
//! perf map would never be read.
//!
//! No page is ever writable and executable at once, and publishing code never
//! needs `mprotect`. The RW view is **not placed next to** the RX view: it
//! lives inside a reservation with a `PROT_NONE` guard page on each side, at a
//! randomised address hint. So a write that runs off the end of the RW view
//! faults instead of landing in executable memory, and the RW address cannot
//! be computed as "RX base ± capacity".

use std::io;

use crate::Error;

/// The two views of one region. Unmapped on drop.
pub(crate) struct DoubleMapping {
    pub(crate) rw: usize,
    pub(crate) rx: usize,
    pub(crate) len: usize,
    /// The PROT_NONE reservation holding the RW view (guard, view, guard).
    reservation: usize,
    reservation_len: usize,
}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// A random page-aligned address hint in the lower half of a 47-bit address
/// space, for the RW view's reservation (the kernel ignores it if taken).
fn random_hint(page: usize) -> usize {
    let mut r = 0u64;
    // SAFETY: getrandom writes at most 8 bytes into `r`; GRND_NONBLOCK makes
    // it fail rather than wait if the pool is not ready (then r stays 0).
    unsafe {
        libc::getrandom(
            &mut r as *mut u64 as *mut libc::c_void,
            8,
            libc::GRND_NONBLOCK,
        )
    };
    if cfg!(target_pointer_width = "64") {
        // [2^40, 2^45): far from the heap, the stack and libraries.
        ((1u64 << 40) + (r % (31u64 << 40))) as usize & !(page - 1)
    } else {
        0
    }
}

impl DoubleMapping {
    pub(crate) fn new(len: usize) -> Result<DoubleMapping, Error> {
        let page = page_size();
        // 1. The RX view, wherever the kernel likes: shared anonymous memory,
        //    read-only until step 4, never writable.
        // SAFETY: a new shared anonymous mapping; it replaces nothing.
        let rx = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if rx == libc::MAP_FAILED {
            return Err(Error::Io(io::Error::last_os_error()));
        }
        // 2. A PROT_NONE reservation of guard + view + guard at a random hint.
        let reservation_len = len + 2 * page;
        // SAFETY: a new anonymous, inaccessible mapping; it replaces nothing
        // (no MAP_FIXED: the hint is only a hint).
        let res = unsafe {
            libc::mmap(
                random_hint(page) as *mut libc::c_void,
                reservation_len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        let undo = |e: io::Error, unmap_reservation: bool| {
            // SAFETY: unmaps exactly the mappings created above.
            unsafe {
                libc::munmap(rx, len);
                if unmap_reservation {
                    libc::munmap(res, reservation_len);
                }
            }
            Error::Io(e)
        };
        if res == libc::MAP_FAILED {
            return Err(undo(io::Error::last_os_error(), false));
        }
        // 3. The same pages again, inside the reservation between the guards:
        //    mremap(2): "If the value of old_size is zero, and old_address
        //    refers to a shareable mapping, then mremap() will create a new
        //    mapping of the same pages."
        let view = (res as usize + page) as *mut libc::c_void;
        // SAFETY: MREMAP_FIXED replaces only pages of our own reservation
        // `res` (offset one page, `len` bytes, a page left on each side).
        let rw =
            unsafe { libc::mremap(rx, 0, len, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, view) };
        if rw == libc::MAP_FAILED {
            return Err(undo(io::Error::last_os_error(), true));
        }
        // 4. The second view becomes the writable one, the first the
        //    executable one: neither is ever both.
        // SAFETY: changes protection of our own two views only.
        let protected = unsafe {
            libc::mprotect(rw, len, libc::PROT_READ | libc::PROT_WRITE) == 0
                && libc::mprotect(rx, len, libc::PROT_READ | libc::PROT_EXEC) == 0
        };
        if !protected {
            return Err(undo(io::Error::last_os_error(), true));
        }
        Ok(DoubleMapping {
            rw: rw as usize,
            rx: rx as usize,
            len,
            reservation: res as usize,
            reservation_len,
        })
    }
}

impl Drop for DoubleMapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the RX view and the reservation (which holds
        // the RW view) created in `new`; nothing else lives there.
        unsafe {
            libc::munmap(self.rx as *mut libc::c_void, self.len);
            libc::munmap(self.reservation as *mut libc::c_void, self.reservation_len);
        }
    }
}
