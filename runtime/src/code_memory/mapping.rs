//! The double mapping: one `memfd`, mapped read+write and read+execute.
//!
//! No page is ever writable and executable at once, and publishing code never
//! needs `mprotect`. The RW view is **not placed next to** the RX view: it
//! lives inside a reservation with a `PROT_NONE` guard page on each side, at a
//! randomised address hint. So a write that runs off the end of the RW view
//! faults instead of landing in executable memory, and the RW address cannot
//! be computed as "RX base ± capacity".

use std::io;

use crate::Error;

/// The two views of one region. Unmapped (and the memfd closed) on drop.
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
        // SAFETY: memfd_create takes a NUL-terminated name and flags; it
        // returns a fresh descriptor or -1.
        let fd = unsafe { libc::memfd_create(c"jitvm-code".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::Io(io::Error::last_os_error()));
        }
        let close = |e: Error| {
            // SAFETY: `fd` is ours and closed exactly once, here or below.
            unsafe { libc::close(fd) };
            e
        };
        // SAFETY: ftruncate on our own fresh descriptor.
        if unsafe { libc::ftruncate(fd, len as libc::off_t) } != 0 {
            return Err(close(Error::Io(io::Error::last_os_error())));
        }
        // 1. The RX view, wherever the kernel likes. Never writable.
        // SAFETY: a new shared mapping of our memfd; it replaces nothing.
        let rx = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if rx == libc::MAP_FAILED {
            return Err(close(Error::Io(io::Error::last_os_error())));
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
        if res == libc::MAP_FAILED {
            let e = Error::Io(io::Error::last_os_error());
            // SAFETY: unmaps exactly the RX view mapped above.
            unsafe { libc::munmap(rx, len) };
            return Err(close(e));
        }
        // 3. The RW view inside it, between the guards. Never executable.
        // SAFETY: MAP_FIXED replaces only pages of our own reservation `res`
        // (offset one page, `len` bytes, which leaves a page on each side).
        let rw = unsafe {
            libc::mmap(
                (res as usize + page) as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd,
                0,
            )
        };
        let rw_err = (rw == libc::MAP_FAILED).then(io::Error::last_os_error);
        // The mappings keep the memfd alive; the descriptor is not needed.
        // SAFETY: `fd` is ours; closed once.
        unsafe { libc::close(fd) };
        if let Some(e) = rw_err {
            // SAFETY: unmaps exactly the two mappings created above.
            unsafe {
                libc::munmap(rx, len);
                libc::munmap(res, reservation_len);
            }
            return Err(Error::Io(e));
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
