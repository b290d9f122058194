//! Asymmetric fences: a free fence for the hot side of a Dekker handshake and
//! an expensive one for the rare side, across processes.
//!
//! The rings' blocking layer is a store-buffer (Dekker) handshake: the side
//! that makes progress stores its index and then loads the sleeper count; the
//! side going to sleep stores the sleeper count and then loads the index. Each
//! side needs a full fence between its store and its load. On x86 that fence
//! (`mfence`, or any locked instruction) waits until the store buffer drains,
//! and the index store usually waits for the cache line the *other* process is
//! polling, so a full fence on every message makes the SPSC ring several times
//! slower than it is without one (the README's table and
//! `cargo bench -p shmproc-benches` give the current figures).
//!
//! The fast side sends on every message; the slow side runs only before a
//! futex sleep, which costs a system call anyway. So, as liburcu and folly's
//! `asymmetricHeavyBarrier` do within one process, [`light`] is only a
//! compiler fence and [`heavy`] is `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`,
//! which runs a full memory barrier on every CPU currently running a thread of
//! a process that registered for it (and a context switch is a barrier for the
//! others). Either the light side's load sees the heavy side's store, or the
//! heavy side's load (after the barrier) sees the light side's store.
//!
//! # Who may use the light fence
//!
//! Only a process registered with `MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED`:
//! the expedited barrier interrupts registered processes only. [`light`]
//! registers the process on first use and falls back to a real `SeqCst`
//! fence for good when registration fails (old kernel, seccomp, non-Linux).
//! [`heavy`] issues the expedited barrier when the kernel offers it and a
//! `SeqCst` fence otherwise. After `fork` the child must call
//! [`after_fork_in_child`] (the `shmproc` crate does so from its `atfork`
//! handler) so that it registers itself rather than trusting the parent's
//! state; registering twice is harmless.
//!
//! If a sleeper's kernel refuses the expedited barrier while a peer uses the
//! light fence, a wake-up can be missed; every sleep in shmproc is cut into
//! liveness slices, so the miss costs at most one slice of latency, never a
//! hang. Under `cfg(loom)` both fences are `SeqCst` fences, which is what the
//! models check.

#[cfg(not(loom))]
use core::sync::atomic::{compiler_fence, AtomicU8, Ordering};

use crate::primitive::sync::atomic::fence;
#[cfg(loom)]
use crate::primitive::sync::atomic::Ordering;

#[cfg(not(loom))]
const UNKNOWN: u8 = 0;
#[cfg(not(loom))]
const ASYMMETRIC: u8 = 1;
#[cfg(not(loom))]
const FENCES: u8 = 2;

/// This process's light-fence mode: unknown until first use.
#[cfg(not(loom))]
static LIGHT: AtomicU8 = AtomicU8::new(UNKNOWN);
/// Whether [`heavy`] may use the expedited barrier: unknown until first use.
#[cfg(not(loom))]
static HEAVY: AtomicU8 = AtomicU8::new(UNKNOWN);

#[cfg(all(target_os = "linux", not(loom)))]
mod sys {
    pub(super) const CMD_QUERY: libc::c_int = 0;
    pub(super) const CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
    pub(super) const CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

    pub(super) fn membarrier(cmd: libc::c_int) -> libc::c_long {
        // SAFETY: membarrier takes (cmd, flags, cpu_id) by value and touches no
        // memory of ours.
        unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_uint, 0 as libc::c_int) }
    }

    /// Whether the kernel offers both the expedited barrier and registration.
    pub(super) fn supported() -> bool {
        let mask = membarrier(CMD_QUERY);
        let need = (CMD_GLOBAL_EXPEDITED | CMD_REGISTER_GLOBAL_EXPEDITED) as libc::c_long;
        mask >= 0 && mask & need == need
    }
}

/// The fence for the frequent side of a handshake whose other side calls
/// [`heavy`]: a compiler fence in a registered process, a `SeqCst` fence
/// otherwise.
///
/// ```
/// use core::sync::atomic::{AtomicU32, Ordering};
/// let (progress, waiters) = (AtomicU32::new(0), AtomicU32::new(0));
/// // The frequent side: publish, light fence, then look for sleepers.
/// progress.store(1, Ordering::Release);
/// shmproc_core::asymmetric_fence::light();
/// let must_wake = waiters.load(Ordering::Relaxed) != 0;
/// assert!(!must_wake);
/// ```
#[inline]
pub fn light() {
    #[cfg(not(loom))]
    {
        match LIGHT.load(Ordering::Relaxed) {
            ASYMMETRIC => compiler_fence(Ordering::SeqCst),
            FENCES => fence(Ordering::SeqCst),
            _ => {
                init_light();
                light();
            }
        }
    }
    #[cfg(loom)]
    fence(Ordering::SeqCst);
}

#[cfg(not(loom))]
#[cold]
fn init_light() {
    #[cfg(target_os = "linux")]
    let mode =
        if sys::supported() && sys::membarrier(sys::CMD_REGISTER_GLOBAL_EXPEDITED) == 0 { ASYMMETRIC } else { FENCES };
    #[cfg(not(target_os = "linux"))]
    let mode = FENCES;
    // Until this store every light() of this process was a real fence, so
    // registration is complete before any light fence relies on it.
    LIGHT.store(mode, Ordering::Relaxed);
}

/// The fence for the rare side: a full barrier on every CPU running a
/// registered process (see the module docs), or a `SeqCst` fence where the
/// kernel offers no such barrier. Returns whether the expedited barrier ran
/// (always `true` under loom, whose fences model it); with `false`, a peer's
/// light fence is ordered only if that peer could not register either.
///
/// ```
/// use core::sync::atomic::{AtomicU32, Ordering};
/// let (progress, waiters) = (AtomicU32::new(0), AtomicU32::new(0));
/// // The rare side: register, heavy fence, then re-check before sleeping.
/// waiters.fetch_add(1, Ordering::SeqCst);
/// let expedited = shmproc_core::asymmetric_fence::heavy();
/// let may_sleep = progress.load(Ordering::Acquire) == 0;
/// assert!(may_sleep);
/// println!("expedited barrier: {expedited}");
/// ```
pub fn heavy() -> bool {
    #[cfg(all(target_os = "linux", not(loom)))]
    {
        let mut state = HEAVY.load(Ordering::Relaxed);
        if state == UNKNOWN {
            state = if sys::supported() { ASYMMETRIC } else { FENCES };
            HEAVY.store(state, Ordering::Relaxed);
        }
        if state == ASYMMETRIC && sys::membarrier(sys::CMD_GLOBAL_EXPEDITED) == 0 {
            return true;
        }
    }
    fence(crate::primitive::sync::atomic::Ordering::SeqCst);
    cfg!(loom)
}

/// Whether this process's [`light`] fences are compiler fences (registered
/// for the expedited barrier). Registers on first call, like [`light`].
///
/// ```
/// if shmproc_core::asymmetric_fence::is_asymmetric() {
///     println!("light fences are compiler fences here");
/// }
/// ```
#[must_use]
pub fn is_asymmetric() -> bool {
    #[cfg(not(loom))]
    {
        if LIGHT.load(Ordering::Relaxed) == UNKNOWN {
            init_light();
        }
        LIGHT.load(Ordering::Relaxed) == ASYMMETRIC
    }
    #[cfg(loom)]
    false
}

/// Forgets the registration state in a freshly forked child, so that its
/// first [`light`] registers the child itself. Call before the child runs
/// anything else.
///
/// ```
/// // In a pthread_atfork child handler (the shmproc crate installs one):
/// shmproc_core::asymmetric_fence::after_fork_in_child();
/// // The next light fence registers this process again.
/// shmproc_core::asymmetric_fence::light();
/// ```
pub fn after_fork_in_child() {
    #[cfg(not(loom))]
    LIGHT.store(UNKNOWN, Ordering::Relaxed);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn light_and_heavy_run_and_registration_is_stable() {
        light();
        let expedited = heavy();
        let first = is_asymmetric();
        light();
        assert_eq!(is_asymmetric(), first);
        #[cfg(target_os = "linux")]
        {
            assert_eq!(first, sys::supported(), "registration should succeed where the kernel supports it");
            assert_eq!(expedited, sys::supported());
        }
    }
}
