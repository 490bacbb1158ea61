//! Waiting that survives signals.
//!
//! A registered thread can be interrupted at any time by the signal
//! strategy's signal, and `nanosleep` is one of the calls that `SA_RESTART`
//! never restarts (signal(7)): it fails with `EINTR`. Every wait in the
//! runtime goes through [`sleep`], which resumes with the remaining time.

use std::time::Duration;

/// Sleeps for `d`, resuming after `EINTR` with the time that was left.
pub(crate) fn sleep(d: Duration) {
    let mut req = libc::timespec {
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    };
    loop {
        let mut rem = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: both timespecs are valid and owned by this frame.
        let r = unsafe { libc::nanosleep(&req, &mut rem) };
        if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
        req = rem;
    }
}
