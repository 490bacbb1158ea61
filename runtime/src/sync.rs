//! The synchronization layer: core serialization of every VM thread.
//!
//! Cross-modifying code (Intel SDM vol. 3A §8.1.3) requires each processor
//! that will execute modified code to execute a *serializing instruction*
//! after the modification and before running it; otherwise it may run stale
//! prefetched or decoded bytes. The ARM ARM (B2.2.5) likewise requires a
//! context synchronization event (`isb`) on each PE after the cache
//! maintenance. A JIT cannot make other threads execute `cpuid` or `isb`, so
//! it asks the kernel to interrupt them; each [`Strategy`] is one way to do so.
//! [`Serializer::serialize_all`] is the single place this happens.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::icache::serialize_self;
use crate::threads::{Registry, ACK_PTR};
use crate::Error;

/// How every thread is made to execute a core-serializing instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)`: the kernel
    /// IPIs every CPU running a thread of this process and guarantees a core
    /// serializing instruction before each returns to user space; threads not
    /// running serialize before they next return to user space.
    Membarrier,
    /// x86-64 only: downgrade the protection of a private page so the kernel
    /// must shoot down its TLB entry on every CPU running this process, by
    /// IPI; the interrupt return (`iret`) serializes those CPUs. Relies on
    /// kernel implementation details (documented in the chapter).
    Mprotect,
    /// Signal every registered thread with a real-time signal and wait until
    /// each has run the handler; the return from the handler (`rt_sigreturn`,
    /// which leaves the kernel by `iret` on x86-64) serializes. Covers only
    /// registered threads.
    Signal,
    /// No serialization at all. Unsafe: for measuring overhead only.
    None,
}

impl Strategy {
    /// Every strategy, in the order automatic selection tries them (`None`
    /// last, and never selected automatically).
    pub const ALL: [Strategy; 4] = [
        Strategy::Membarrier,
        Strategy::Mprotect,
        Strategy::Signal,
        Strategy::None,
    ];

    /// The name used by `JITVM_SYNC`.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Membarrier => "membarrier",
            Strategy::Mprotect => "mprotect",
            Strategy::Signal => "signal",
            Strategy::None => "none",
        }
    }

    /// Whether this strategy works in this process (performs its one-time
    /// setup: membarrier registration, signal handler installation).
    pub fn is_available(self) -> bool {
        prepare(self).is_ok()
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Strategy, Error> {
        Strategy::ALL
            .into_iter()
            .find(|st| st.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| Error::UnknownStrategy(s.to_string()))
    }
}

/// Name of the environment variable that forces a strategy.
pub const SYNC_ENV: &str = "JITVM_SYNC";

/// Chooses a strategy: `forced` (the value of `JITVM_SYNC`, if set) must parse
/// and work; otherwise the first of membarrier, mprotect (x86-64 only) and
/// signal that works. A pure function of its argument and the system, so it
/// can be tested without touching the process environment.
pub fn select_strategy(forced: Option<&str>) -> Result<Strategy, Error> {
    if let Some(s) = forced {
        let st: Strategy = s.parse()?;
        prepare(st)?;
        return Ok(st);
    }
    let mut last = None;
    for st in [Strategy::Membarrier, Strategy::Mprotect, Strategy::Signal] {
        match prepare(st) {
            Ok(()) => return Ok(st),
            Err(e) => {
                log::debug!("sync strategy {st} unavailable: {e}");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap())
}

/// One-time, process-global setup of a strategy.
pub(crate) fn prepare(st: Strategy) -> Result<(), Error> {
    let unavailable = |reason: String| Error::StrategyUnavailable {
        strategy: st,
        reason,
    };
    match st {
        Strategy::Membarrier => membarrier_register().map_err(unavailable),
        Strategy::Mprotect if cfg!(target_arch = "x86_64") => Ok(()),
        Strategy::Mprotect => Err(unavailable(
            "needs x86-64: arm64 broadcasts TLB invalidation without IPIs".into(),
        )),
        Strategy::Signal => signal_install().map(|_| ()).map_err(unavailable),
        Strategy::None => Ok(()),
    }
}

// ---- membarrier -----------------------------------------------------------

// From <linux/membarrier.h>; libc does not export them.
const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_int = 1 << 5;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: libc::c_int = 1 << 6;

fn membarrier(cmd: libc::c_int) -> libc::c_long {
    // SAFETY: membarrier takes (cmd, flags, cpu_id) by value and touches no
    // user memory.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) }
}

fn membarrier_register() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let mask = membarrier(MEMBARRIER_CMD_QUERY);
            if mask < 0 {
                return Err(format!(
                    "membarrier query failed: {}",
                    std::io::Error::last_os_error()
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
                    std::io::Error::last_os_error()
                ));
            }
            Ok(())
        })
        .clone()
}

/// One bare `membarrier(PRIVATE_EXPEDITED_SYNC_CORE)` call, for comparison in
/// benchmarks. Panics if the strategy is unavailable.
pub fn bare_membarrier_sync_core() {
    membarrier_register().expect("membarrier SYNC_CORE unavailable");
    let r = membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE);
    assert_eq!(r, 0, "membarrier: {}", std::io::Error::last_os_error());
}

// ---- mprotect -------------------------------------------------------------

/// A private, locked page whose protection is flipped to force a TLB
/// shootdown.
struct MprotectPage {
    addr: usize,
    len: usize,
    lock: Mutex<()>,
}

impl MprotectPage {
    fn new() -> Result<MprotectPage, Error> {
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
            return Err(Error::Io(std::io::Error::last_os_error()));
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

    fn shootdown(&self) {
        let _g = self.lock.lock().unwrap();
        let p = self.addr as *mut libc::c_void;
        // SAFETY: `p` is our private page: changing its protection and writing
        // to it while it is writable affects nothing else. The write sets the
        // PTE's accessed+dirty bits, so the kernel cannot skip the flush as
        // "never cached"; the downgrade to PROT_NONE then must invalidate the
        // TLB on every CPU in this mm's cpumask, which on x86 is an IPI.
        unsafe {
            let r = libc::mprotect(p, self.len, libc::PROT_READ | libc::PROT_WRITE);
            assert_eq!(r, 0, "mprotect: {}", std::io::Error::last_os_error());
            std::ptr::write_volatile(p as *mut u8, 1);
            let r = libc::mprotect(p, self.len, libc::PROT_NONE);
            assert_eq!(r, 0, "mprotect: {}", std::io::Error::last_os_error());
        }
    }
}

impl Drop for MprotectPage {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

// ---- signal ---------------------------------------------------------------

extern "C" fn ack_handler(_sig: libc::c_int) {
    // Async-signal-safe: a const thread-local read and an atomic increment.
    let p = ACK_PTR.with(|p| p.get());
    if !p.is_null() {
        // SAFETY: ACK_PTR points into an Arc owned by this thread's ACK_OWNER
        // thread-local (alive for the thread's whole life) and by every
        // registry record of this thread.
        unsafe { (*p).fetch_add(1, Ordering::Release) };
    }
}

/// Installs the acknowledgement handler once per process, on a real-time
/// signal nobody else has a handler for. Returns the signal number.
fn signal_install() -> Result<libc::c_int, String> {
    static SIGNO: OnceLock<Result<libc::c_int, String>> = OnceLock::new();
    SIGNO
        .get_or_init(|| {
            // Search downwards from SIGRTMAX: libraries that use real-time
            // signals (glibc's own SIGRTMIN+0..2, profilers) start at the bottom.
            for sig in (libc::SIGRTMIN() + 3..=libc::SIGRTMAX()).rev() {
                // SAFETY: sigaction with a null `act` only reads the current
                // disposition into `old`.
                let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
                if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0 {
                    continue;
                }
                if old.sa_sigaction != libc::SIG_DFL {
                    continue; // someone uses it
                }
                // SAFETY: installs a handler that is async-signal-safe (see
                // ack_handler). SA_RESTART makes interrupted blocking syscalls
                // restart, so signalled threads blocked in the kernel are
                // unaffected apart from running the handler.
                let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
                act.sa_sigaction = ack_handler as *const () as usize;
                act.sa_flags = libc::SA_RESTART;
                unsafe { libc::sigemptyset(&mut act.sa_mask) };
                if unsafe { libc::sigaction(sig, &act, std::ptr::null_mut()) } == 0 {
                    return Ok(sig);
                }
            }
            Err("no free real-time signal".to_string())
        })
        .clone()
}

fn tgkill(tid: libc::pid_t, sig: libc::c_int) -> libc::c_long {
    // SAFETY: tgkill only sends a signal; using kernel tids (not pthread_t)
    // means a thread that has already exited yields ESRCH, never UB.
    unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, sig) }
}

// ---- the serializer -------------------------------------------------------

/// A strategy plus its per-runtime state.
pub(crate) struct Serializer {
    strategy: Strategy,
    page: Option<MprotectPage>,
    signo: libc::c_int,
    count: AtomicU64,
}

impl Serializer {
    pub(crate) fn new(strategy: Strategy) -> Result<Serializer, Error> {
        prepare(strategy)?;
        let page = match strategy {
            Strategy::Mprotect => Some(MprotectPage::new()?),
            _ => None,
        };
        let signo = match strategy {
            Strategy::Signal => signal_install().unwrap_or(0),
            _ => 0,
        };
        if strategy == Strategy::None {
            log::warn!("jitvm-runtime: sync strategy `none` performs NO core serialization; measurement only, cross-modified code may run stale");
        }
        Ok(Serializer {
            strategy,
            page,
            signo,
            count: AtomicU64::new(0),
        })
    }

    pub(crate) fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// How many serializations this runtime has performed.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Makes every registered thread (and, for membarrier and mprotect, every
    /// thread of the process) execute a core-serializing instruction before it
    /// next executes user code, and the caller too. Also a full memory barrier
    /// on every such thread, so stores made before the call are visible to
    /// them afterwards.
    pub(crate) fn serialize_all(&self, registry: &Registry) {
        match self.strategy {
            Strategy::Membarrier => {
                let r = membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE);
                assert_eq!(r, 0, "membarrier: {}", std::io::Error::last_os_error());
            }
            Strategy::Mprotect => self.page.as_ref().unwrap().shootdown(),
            Strategy::Signal => self.signal_all(registry),
            Strategy::None => {}
        }
        serialize_self();
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn signal_all(&self, registry: &Registry) {
        // The registry lock is held throughout so no thread deregisters (and
        // exits) between being signalled and acknowledging. A thread blocked on
        // this lock still runs the handler: the futex wait is interrupted.
        let threads = registry.threads.lock().unwrap();
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        let mut pending: Vec<(libc::pid_t, &AtomicU64, u64)> = Vec::new();
        for t in threads.iter().filter(|t| t.tid != me) {
            if pending.iter().any(|p| p.0 == t.tid) {
                continue; // registered twice: one signal serializes it
            }
            let before = t.ack.load(Ordering::Acquire);
            if tgkill(t.tid, self.signo) == 0 {
                pending.push((t.tid, &t.ack, before));
            }
        }
        for (tid, ack, before) in pending {
            let mut spins = 0u32;
            while ack.load(Ordering::Acquire) == before {
                spins += 1;
                if spins % 1024 == 0 && tgkill(tid, 0) != 0 {
                    break; // the thread exited (its handle was leaked)
                }
                std::thread::yield_now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names() {
        for st in Strategy::ALL {
            assert_eq!(st.name().parse::<Strategy>().unwrap(), st);
        }
        assert_eq!(
            " MemBarrier ".parse::<Strategy>().unwrap(),
            Strategy::Membarrier
        );
        assert!(matches!(
            "bogus".parse::<Strategy>(),
            Err(Error::UnknownStrategy(_))
        ));
    }

    #[test]
    fn selection() {
        // This machine has membarrier SYNC_CORE (checked, not assumed).
        let auto = select_strategy(None).unwrap();
        if Strategy::Membarrier.is_available() {
            assert_eq!(auto, Strategy::Membarrier);
        }
        assert_eq!(select_strategy(Some("signal")).unwrap(), Strategy::Signal);
        assert_eq!(select_strategy(Some("none")).unwrap(), Strategy::None);
        assert!(select_strategy(Some("nope")).is_err());
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            select_strategy(Some("mprotect")).unwrap(),
            Strategy::Mprotect
        );
    }
}
