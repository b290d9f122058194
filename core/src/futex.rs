//! The one module that blocks and wakes.
//!
//! Every wait in the crate, whether in a lock, a semaphore, an event or a ring,
//! ends up in [`wait`], and every wake-up in [`wake_one`] / [`wake_all`]. Keeping
//! them here means an async bridge (a notifier fd, a shared waiter thread) can be
//! plugged in without touching any algorithm.
//!
//! * **Linux**: `futex(2)` *without* `FUTEX_PRIVATE_FLAG`: the kernel keys the
//!   wait queue on the physical page, so a waiter in one process is woken by a
//!   waker in another that maps the same memory at a different address. Waits use
//!   `FUTEX_WAIT_BITSET` with an absolute `CLOCK_MONOTONIC` deadline, so an `EINTR`
//!   retry never stretches a timeout.
//! * **macOS**: `__ulock_wait` / `__ulock_wake` with `UL_COMPARE_AND_WAIT_SHARED`.
//!   This path compiles only on macOS and is not exercised by CI (Linux only).
//! * **elsewhere**: a bounded spin, then yield, then short sleeps, re-reading the
//!   value; it honours deadlines, and wakes are no-ops.
//! * **loom**: a wait yields to the model scheduler and returns as a spurious
//!   wake-up, which every caller must already tolerate.
//!
//! Callers must treat every return as "maybe woken": re-check the condition,
//! then wait again against the same deadline.

use crate::primitive::sync::atomic::AtomicU32;
use crate::time::Deadline;

/// Why [`wait`] returned.
///
/// ```
/// use core::sync::atomic::AtomicU32;
/// use shmproc_core::futex::{wait, WaitOutcome};
/// let word = AtomicU32::new(1);
/// // The word is not 0: no sleep at all.
/// assert_eq!(wait(&word, 0, None), WaitOutcome::ValueChanged);
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Woken by a waker, or spuriously: re-check the condition.
    Woken,
    /// The word did not hold the expected value when the wait started.
    ValueChanged,
    /// The deadline passed.
    TimedOut,
}

/// Blocks while `*word == expected`, until woken or until `deadline` passes
/// (`None`: no deadline).
///
/// Works across processes when `word` lives in shared memory (`MAP_SHARED`).
/// Signals (`EINTR`) are retried internally against the same absolute deadline.
///
/// ```
/// use core::sync::atomic::{AtomicU32, Ordering};
/// use shmproc_core::futex::{wait, WaitOutcome};
/// use shmproc_core::Deadline;
/// let word = AtomicU32::new(0);
/// let r = wait(&word, 0, Some(Deadline::after(core::time::Duration::from_millis(5))));
/// assert_eq!(r, WaitOutcome::TimedOut);
/// word.store(1, Ordering::Release);
/// ```
pub fn wait(word: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> WaitOutcome {
    imp::wait(word, expected, deadline)
}

/// Wakes at most one waiter blocked on `word`, in any process. Returns how many
/// were woken where the platform tells (0 otherwise).
///
/// ```
/// use core::sync::atomic::{AtomicU32, Ordering};
/// use shmproc_core::futex;
/// let word = AtomicU32::new(0);
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         while word.load(Ordering::Acquire) == 0 {
///             futex::wait(&word, 0, None);
///         }
///     });
///     word.store(1, Ordering::Release);
///     futex::wake_one(&word);
/// });
/// ```
pub fn wake_one(word: &AtomicU32) -> usize {
    imp::wake(word, false)
}

/// Wakes every waiter blocked on `word`, in every process.
///
/// ```
/// use core::sync::atomic::{AtomicU32, Ordering};
/// use shmproc_core::futex;
/// let word = AtomicU32::new(0);
/// std::thread::scope(|s| {
///     for _ in 0..2 {
///         s.spawn(|| {
///             while word.load(Ordering::Acquire) == 0 {
///                 futex::wait(&word, 0, None);
///             }
///         });
///     }
///     word.store(1, Ordering::Release);
///     futex::wake_all(&word);
/// });
/// ```
pub fn wake_all(word: &AtomicU32) -> usize {
    imp::wake(word, true)
}

#[cfg(all(target_os = "linux", not(loom)))]
mod imp {
    use super::WaitOutcome;
    use crate::primitive::sync::atomic::{AtomicU32, Ordering};
    use crate::time::Deadline;

    /// Matches every waiter; `FUTEX_WAIT_BITSET` is used only for its absolute
    /// timeout.
    const BITSET_MATCH_ANY: u32 = 0xffff_ffff;

    pub(super) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> WaitOutcome {
        let ts = deadline.map(Deadline::to_timespec);
        let ts_ptr = ts.as_ref().map_or(core::ptr::null(), |t| t as *const libc::timespec);
        loop {
            if word.load(Ordering::Relaxed) != expected {
                return WaitOutcome::ValueChanged;
            }
            // SAFETY: `word` is a valid, aligned u32 for the duration of the call
            // (it is borrowed); the timespec pointer is null or points at `ts`,
            // which outlives the call. Without FUTEX_CLOCK_REALTIME the absolute
            // timeout of FUTEX_WAIT_BITSET is measured on CLOCK_MONOTONIC.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    word as *const AtomicU32,
                    libc::FUTEX_WAIT_BITSET,
                    expected,
                    ts_ptr,
                    core::ptr::null::<u32>(),
                    BITSET_MATCH_ANY,
                )
            };
            if r == 0 {
                return WaitOutcome::Woken;
            }
            match errno() {
                libc::EAGAIN => return WaitOutcome::ValueChanged,
                libc::ETIMEDOUT => return WaitOutcome::TimedOut,
                libc::EINTR => continue,
                // EFAULT/EINVAL cannot happen for a valid borrowed word; report a
                // spurious wake-up so the caller re-checks and, with a deadline,
                // still terminates.
                _ => return WaitOutcome::Woken,
            }
        }
    }

    pub(super) fn wake(word: &AtomicU32, all: bool) -> usize {
        let n: i32 = if all { i32::MAX } else { 1 };
        // SAFETY: `word` is a valid, aligned u32 (borrowed); FUTEX_WAKE reads no
        // other argument.
        let r = unsafe { libc::syscall(libc::SYS_futex, word as *const AtomicU32, libc::FUTEX_WAKE, n) };
        if r < 0 {
            0
        } else {
            r as usize
        }
    }

    fn errno() -> i32 {
        // SAFETY: `__errno_location` returns the calling thread's errno slot.
        unsafe { *libc::__errno_location() }
    }
}

#[cfg(all(target_os = "macos", not(loom)))]
mod imp {
    //! Untested in CI: built only on macOS.
    use super::WaitOutcome;
    use crate::primitive::sync::atomic::{AtomicU32, Ordering};
    use crate::time::Deadline;

    const UL_COMPARE_AND_WAIT_SHARED: u32 = 3;
    const ULF_WAKE_ALL: u32 = 0x0000_0100;
    const ULF_NO_ERRNO: u32 = 0x0100_0000;

    extern "C" {
        fn __ulock_wait(op: u32, addr: *mut core::ffi::c_void, value: u64, timeout_us: u32) -> i32;
        fn __ulock_wake(op: u32, addr: *mut core::ffi::c_void, wake_value: u64) -> i32;
    }

    pub(super) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> WaitOutcome {
        loop {
            if word.load(Ordering::Relaxed) != expected {
                return WaitOutcome::ValueChanged;
            }
            let timeout_us = match deadline {
                None => 0,
                Some(d) => {
                    let left = d.remaining();
                    if left.is_zero() {
                        return WaitOutcome::TimedOut;
                    }
                    // 0 means "forever" to ulock: round up to at least 1 µs.
                    u32::try_from(left.as_micros()).unwrap_or(u32::MAX).max(1)
                }
            };
            // SAFETY: `word` is a valid, aligned u32 for the duration of the call.
            let r = unsafe {
                __ulock_wait(
                    UL_COMPARE_AND_WAIT_SHARED | ULF_NO_ERRNO,
                    word as *const AtomicU32 as *mut _,
                    u64::from(expected),
                    timeout_us,
                )
            };
            if r >= 0 {
                return WaitOutcome::Woken;
            }
            match -r {
                libc::ETIMEDOUT => {
                    if deadline.is_some_and(|d| d.has_passed()) {
                        return WaitOutcome::TimedOut;
                    }
                }
                libc::EINTR => {}
                _ => return WaitOutcome::Woken,
            }
        }
    }

    pub(super) fn wake(word: &AtomicU32, all: bool) -> usize {
        let op = UL_COMPARE_AND_WAIT_SHARED | ULF_NO_ERRNO | if all { ULF_WAKE_ALL } else { 0 };
        // SAFETY: `word` is a valid, aligned u32 for the duration of the call.
        let r = unsafe { __ulock_wake(op, word as *const AtomicU32 as *mut _, 0) };
        usize::from(r >= 0)
    }
}

#[cfg(all(not(any(target_os = "linux", target_os = "macos")), not(loom)))]
mod imp {
    //! Portable fallback: no kernel wait queue, so poll the word with a bounded
    //! spin, then yields, then sleeps of growing length (capped at 1 ms), always
    //! honouring the deadline.
    use super::WaitOutcome;
    use crate::primitive::sync::atomic::{AtomicU32, Ordering};
    use crate::time::Deadline;

    pub(super) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> WaitOutcome {
        if word.load(Ordering::Relaxed) != expected {
            return WaitOutcome::ValueChanged;
        }
        let mut round: u32 = 0;
        loop {
            if word.load(Ordering::Relaxed) != expected {
                return WaitOutcome::Woken;
            }
            if deadline.is_some_and(|d| d.has_passed()) {
                return WaitOutcome::TimedOut;
            }
            if round < 64 {
                core::hint::spin_loop();
            } else if round < 128 {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            } else {
                let us = (1u32 << ((round - 128).min(10))).min(1000);
                let ts = libc::timespec { tv_sec: 0, tv_nsec: (us * 1000) as _ };
                // SAFETY: `ts` is a valid timespec; the remainder pointer may be null.
                unsafe { libc::nanosleep(&ts, core::ptr::null_mut()) };
            }
            round = round.saturating_add(1);
        }
    }

    pub(super) fn wake(_word: &AtomicU32, _all: bool) -> usize {
        0
    }
}

#[cfg(loom)]
mod imp {
    use super::WaitOutcome;
    use crate::primitive::sync::atomic::{AtomicU32, Ordering};
    use crate::time::Deadline;

    pub(super) fn wait(word: &AtomicU32, expected: u32, _deadline: Option<Deadline>) -> WaitOutcome {
        if word.load(Ordering::SeqCst) != expected {
            return WaitOutcome::ValueChanged;
        }
        loom::thread::yield_now();
        WaitOutcome::Woken
    }

    pub(super) fn wake(_word: &AtomicU32, _all: bool) -> usize {
        0
    }
}
