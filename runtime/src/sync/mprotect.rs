//! x86-64 only: serialize other cores through a TLB-shootdown IPI.
//!
//! Downgrading the protection of a page that has a present, accessed PTE
//! makes the kernel invalidate that TLB entry on every CPU in the process's
//! cpumask. On x86 without broadcast invalidation that is an IPI, and the
//! return from the interrupt (`iret`, serializing: Intel SDM vol. 3A §8.3)
//! serializes each interrupted core. This relies on kernel implementation
//! details, not on a documented promise, so it is never chosen automatically.
//!
//! CPUs with broadcast TLB invalidation (AMD `INVLPGB`, used by Linux since
//! 6.15 for exactly these flushes) invalidate remote TLBs *without* an IPI:
//! nobody is interrupted and nothing is serialized. The strategy is refused
//! there.

use std::io;
use std::sync::Mutex;

/// Why mprotect cannot serialize other cores here, if it cannot: the CPU
/// (CPUID Fn8000_0008 EBX bit 3, `INVLPGB`) or the kernel (`invlpgb` in the
/// `/proc/cpuinfo` flags) offers broadcast TLB invalidation.
pub(crate) fn refusal() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    refusal_for(cpuid_invlpgb(), &cpuinfo)
}

/// [`refusal`] for given inputs (testable without such a CPU).
pub(crate) fn refusal_for(cpuid_invlpgb: bool, cpuinfo: &str) -> Option<String> {
    if !cfg!(target_arch = "x86_64") {
        return Some(
            "needs x86-64: other architectures broadcast TLB invalidation without IPIs".into(),
        );
    }
    if cpuid_invlpgb {
        return Some(
            "the CPU has broadcast TLB invalidation (INVLPGB, CPUID Fn8000_0008 EBX[3]): TLB shootdowns send no IPI, so they serialize no core".into(),
        );
    }
    let flagged = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "invlpgb"));
    if flagged {
        return Some(
            "the kernel reports broadcast TLB invalidation (`invlpgb` in /proc/cpuinfo): TLB shootdowns send no IPI, so they serialize no core".into(),
        );
    }
    None
}

#[cfg(target_arch = "x86_64")]
fn cpuid_invlpgb() -> bool {
    use core::arch::x86_64::__cpuid;
    __cpuid(0x8000_0000).eax >= 0x8000_0008 && __cpuid(0x8000_0008).ebx & (1 << 3) != 0
}

#[cfg(not(target_arch = "x86_64"))]
fn cpuid_invlpgb() -> bool {
    false
}

/// A private, locked page whose protection is flipped to force a TLB
/// shootdown.
pub(crate) struct MprotectPage {
    addr: usize,
    len: usize,
    lock: Mutex<()>,
}

impl MprotectPage {
    pub(crate) fn new() -> Result<MprotectPage, io::Error> {
        let len = crate::code_memory::page_size();
        // SAFETY: anonymous private mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // Keep it resident so the PTE stays present. Failure (RLIMIT_MEMLOCK)
        // is harmless: the write before each downgrade faults it back in.
        // SAFETY: [p, p+len) is the mapping just created.
        unsafe { libc::mlock(p, len) };
        Ok(MprotectPage {
            addr: p as usize,
            len,
            lock: Mutex::new(()),
        })
    }

    pub(crate) fn shootdown(&self) -> Result<(), String> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let p = self.addr as *mut libc::c_void;
        // SAFETY: `p` is our private page: changing its protection and
        // writing to it while it is writable affects nothing else. The write
        // sets the PTE's accessed+dirty bits, so the kernel cannot skip the
        // flush as "never cached"; the downgrade to PROT_NONE then must
        // invalidate the TLB on every CPU in this mm's cpumask.
        unsafe {
            if libc::mprotect(p, self.len, libc::PROT_READ | libc::PROT_WRITE) != 0 {
                return Err(format!("mprotect: {}", io::Error::last_os_error()));
            }
            std::ptr::write_volatile(p as *mut u8, 1);
            if libc::mprotect(p, self.len, libc::PROT_NONE) != 0 {
                return Err(format!("mprotect: {}", io::Error::last_os_error()));
            }
        }
        Ok(())
    }
}

impl Drop for MprotectPage {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}
