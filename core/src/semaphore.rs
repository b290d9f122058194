//! A counting semaphore on one futex word.
//!
//! `count` holds the free permits; `waiters` counts threads that may be
//! sleeping, so that `release` makes a syscall only when someone waits.
//!
//! # Orderings
//!
//! Taking a permit is a compare-and-swap with `Acquire`, returning one a
//! `Release` add, so whatever a holder did before `release` happens-before the
//! next acquirer's work. The wake-up handshake is Dekker-style and needs
//! `SeqCst` on both sides: a waiter increments `waiters` and *then* reads
//! `count`; a releaser increments `count` and *then* reads `waiters`. With
//! sequentially consistent operations at least one of them sees the other's
//! write, so either the waiter does not sleep or the releaser wakes it (and
//! `FUTEX_WAIT` re-checks `count == 0` atomically in the kernel).
//!
//! # Robustness
//!
//! A holder that dies keeps its permit: a semaphore does not know who holds
//! permits (as in Python). [`robust_semaphore`](crate::robust_semaphore)
//! records its holders and gives a dead holder's permits back. Waits always have a deadline path, and garbage
//! values give wrong counts, never undefined behaviour or a hang beyond the
//! caller's deadline.

use crate::futex::{self, WaitOutcome};
use crate::primitive::spin_loop;
use crate::primitive::sync::atomic::{AtomicU32, Ordering};
use crate::region::{kind, RegionObject};
use crate::time::Deadline;

/// `max` value of an unbounded semaphore.
///
/// ```
/// use shmproc_core::semaphore::{RawSemaphore, SemaphoreError, UNBOUNDED};
/// let s = RawSemaphore::new(0, UNBOUNDED);
/// s.release(5).unwrap(); // no bound
/// assert_eq!(s.value(), 5);
/// ```
pub const UNBOUNDED: u32 = u32::MAX;
const SPIN_LIMIT: u32 = 64;

/// Why a semaphore operation failed.
///
/// ```
/// use shmproc_core::semaphore::{RawSemaphore, SemaphoreError, UNBOUNDED};
/// let s = RawSemaphore::new(1, 1);
/// assert_eq!(s.release(1), Err(SemaphoreError::Overflow));
/// s.try_acquire().unwrap();
/// assert_eq!(s.try_acquire(), Err(SemaphoreError::WouldBlock));
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SemaphoreError {
    /// `try_acquire`: no permit free.
    WouldBlock,
    /// The deadline passed.
    Timeout,
    /// `release` would raise the count above a bounded semaphore's initial
    /// value (or overflow).
    Overflow,
}

/// The semaphore, as laid out in shared memory.
///
/// ```
/// use shmproc_core::semaphore::{RawSemaphore, SemaphoreError, UNBOUNDED};
/// let s = RawSemaphore::new(2, UNBOUNDED); // in real use: inside a shared region
/// s.acquire(None).unwrap();
/// assert_eq!(s.value(), 1);
/// s.release(1).unwrap();
/// ```
#[repr(C, align(128))]
pub struct RawSemaphore {
    count: AtomicU32,
    waiters: AtomicU32,
    max: AtomicU32,
}

// SAFETY: only atomics, valid for any bit pattern; alignment 128.
unsafe impl RegionObject for RawSemaphore {
    const KIND: u32 = kind::SEMAPHORE;
}

impl RawSemaphore {
    /// A semaphore with `value` permits; `max` bounds `release` ([`UNBOUNDED`]
    /// for none).
    ///
    /// ```
    /// use shmproc_core::semaphore::{RawSemaphore, SemaphoreError, UNBOUNDED};
    /// let s = RawSemaphore::new(3, 3);
    /// assert_eq!((s.value(), s.max()), (3, 3));
    /// ```
    #[must_use]
    pub fn new(value: u32, max: u32) -> RawSemaphore {
        RawSemaphore { count: AtomicU32::new(value), waiters: AtomicU32::new(0), max: AtomicU32::new(max) }
    }

    /// (Re)initialises in place.
    ///
    /// ```
    /// use shmproc_core::semaphore::{RawSemaphore, SemaphoreError, UNBOUNDED};
    /// let s = RawSemaphore::new(0, UNBOUNDED);
    /// s.init(4, 4);
    /// assert_eq!(s.value(), 4);
    /// ```
    pub fn init(&self, value: u32, max: u32) {
        self.waiters.store(0, Ordering::Relaxed);
        self.max.store(max, Ordering::Relaxed);
        self.count.store(value, Ordering::Release);
    }

    /// Free permits (a snapshot).
    ///
    /// ```
    /// use shmproc_core::semaphore::{RawSemaphore, SemaphoreError, UNBOUNDED};
    /// let s = RawSemaphore::new(2, UNBOUNDED);
    /// assert_eq!(s.value(), 2);
    /// ```
    pub fn value(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// Threads that may be waiting (a snapshot).
    ///
    /// ```
    /// use shmproc_core::semaphore::{RawSemaphore, SemaphoreError, UNBOUNDED};
    /// let s = RawSemaphore::new(2, UNBOUNDED);
    /// assert_eq!(s.waiters(), 0);
    /// ```
    pub fn waiters(&self) -> u32 {
        self.waiters.load(Ordering::Relaxed)
    }

    /// The bound, or [`UNBOUNDED`].
    ///
    /// ```
    /// use shmproc_core::semaphore::{RawSemaphore, SemaphoreError, UNBOUNDED};
    /// assert_eq!(RawSemaphore::new(1, UNBOUNDED).max(), UNBOUNDED);
    /// ```
    pub fn max(&self) -> u32 {
        self.max.load(Ordering::Relaxed)
    }

    /// Takes a permit if one is free.
    ///
    /// ```
    /// use shmproc_core::semaphore::{RawSemaphore, SemaphoreError, UNBOUNDED};
    /// let s = RawSemaphore::new(1, UNBOUNDED);
    /// assert_eq!(s.try_acquire(), Ok(()));
    /// assert_eq!(s.try_acquire(), Err(SemaphoreError::WouldBlock));
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> Result<(), SemaphoreError> {
        let mut c = self.count.load(Ordering::Relaxed);
        loop {
            if c == 0 {
                return Err(SemaphoreError::WouldBlock);
            }
            match self.count.compare_exchange_weak(c, c - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(cur) => c = cur,
            }
        }
    }

    /// Takes a permit, waiting until `deadline` (`None`: forever).
    ///
    /// ```
    /// use shmproc_core::semaphore::{RawSemaphore, SemaphoreError, UNBOUNDED};
    /// use shmproc_core::Deadline;
    /// let s = RawSemaphore::new(0, UNBOUNDED);
    /// let r = s.acquire(Some(Deadline::after(core::time::Duration::from_millis(5))));
    /// assert_eq!(r, Err(SemaphoreError::Timeout));
    /// ```
    #[inline]
    pub fn acquire(&self, deadline: Option<Deadline>) -> Result<(), SemaphoreError> {
        if self.try_acquire().is_ok() {
            return Ok(());
        }
        self.acquire_slow(deadline)
    }

    #[cold]
    fn acquire_slow(&self, deadline: Option<Deadline>) -> Result<(), SemaphoreError> {
        for _ in 0..SPIN_LIMIT {
            if self.try_acquire().is_ok() {
                return Ok(());
            }
            spin_loop();
        }
        loop {
            self.waiters.fetch_add(1, Ordering::SeqCst);
            let c = self.count.load(Ordering::SeqCst);
            let outcome = if c == 0 { futex::wait(&self.count, 0, deadline) } else { WaitOutcome::ValueChanged };
            self.waiters.fetch_sub(1, Ordering::Relaxed);
            if self.try_acquire().is_ok() {
                return Ok(());
            }
            if outcome == WaitOutcome::TimedOut || deadline.is_some_and(|d| d.has_passed()) {
                return Err(SemaphoreError::Timeout);
            }
        }
    }

    /// Returns `n` permits, waking waiters if there are any.
    ///
    /// ```
    /// use shmproc_core::semaphore::{RawSemaphore, SemaphoreError, UNBOUNDED};
    /// let s = RawSemaphore::new(0, 2);
    /// s.release(2).unwrap();
    /// assert_eq!(s.release(1), Err(SemaphoreError::Overflow));
    /// ```
    pub fn release(&self, n: u32) -> Result<(), SemaphoreError> {
        let max = self.max.load(Ordering::Relaxed);
        let mut c = self.count.load(Ordering::Relaxed);
        loop {
            let new = match c.checked_add(n) {
                Some(v) if v <= max => v,
                _ => return Err(SemaphoreError::Overflow),
            };
            match self.count.compare_exchange_weak(c, new, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(cur) => c = cur,
            }
        }
        if self.waiters.load(Ordering::SeqCst) != 0 {
            self.wake(n);
        }
        Ok(())
    }

    /// For a waiter that does not block a thread (an `async` future): counts
    /// it as a waiter, so that [`release`](RawSemaphore::release) wakes the
    /// count word, and returns the count now. When it is 0 the caller has the
    /// word watched for a change from 0; it calls
    /// [`end_async_wait`](RawSemaphore::end_async_wait) exactly once when
    /// done. A release wakes *one* waiter: an async waiter that was woken but
    /// gives up without taking a permit must pass the wake-up on
    /// ([`futex::wake_one`] on [`count_word`](RawSemaphore::count_word)).
    ///
    /// ```
    /// use shmproc_core::semaphore::{RawSemaphore, UNBOUNDED};
    /// let s = RawSemaphore::new(0, UNBOUNDED);
    /// assert_eq!(s.begin_async_wait(), 0);
    /// s.end_async_wait();
    /// ```
    pub fn begin_async_wait(&self) -> u32 {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        self.count.load(Ordering::SeqCst)
    }

    /// Ends a wait begun with [`begin_async_wait`](RawSemaphore::begin_async_wait).
    ///
    /// ```
    /// use shmproc_core::semaphore::{RawSemaphore, UNBOUNDED};
    /// let s = RawSemaphore::new(0, UNBOUNDED);
    /// let _ = s.begin_async_wait();
    /// s.end_async_wait();
    /// ```
    pub fn end_async_wait(&self) {
        self.waiters.fetch_sub(1, Ordering::Relaxed);
    }

    /// The futex word waiters sleep on (the count of free permits).
    ///
    /// ```
    /// use shmproc_core::semaphore::{RawSemaphore, UNBOUNDED};
    /// let s = RawSemaphore::new(3, UNBOUNDED);
    /// assert_eq!(s.count_word().load(core::sync::atomic::Ordering::Relaxed), 3);
    /// ```
    pub fn count_word(&self) -> &AtomicU32 {
        &self.count
    }

    #[cold]
    fn wake(&self, n: u32) {
        if n == 1 {
            futex::wake_one(&self.count);
        } else {
            futex::wake_all(&self.count);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use core::time::Duration;

    #[test]
    fn counts_and_bounds() {
        let s = RawSemaphore::new(2, 2);
        assert!(s.try_acquire().is_ok());
        assert!(s.acquire(None).is_ok());
        assert_eq!(s.try_acquire(), Err(SemaphoreError::WouldBlock));
        let d = Some(Deadline::after(Duration::from_millis(20)));
        assert_eq!(s.acquire(d), Err(SemaphoreError::Timeout));
        s.release(2).unwrap();
        assert_eq!(s.release(1), Err(SemaphoreError::Overflow));
        assert_eq!(s.value(), 2);
        let u = RawSemaphore::new(u32::MAX - 1, UNBOUNDED);
        u.release(1).unwrap();
        assert_eq!(u.release(1), Err(SemaphoreError::Overflow));
    }
}
