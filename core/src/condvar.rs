//! A condition variable on one futex word, used together with a
//! [`RawMutex`](crate::raw_mutex::RawMutex).
//!
//! `seq` counts notifications. A waiter reads it *while holding the mutex*
//! ([`prepare_wait`](RawCondvar::prepare_wait)), unlocks, and sleeps while
//! `seq` still holds that value; a notifier increments `seq` before waking, so
//! a notification sent after the waiter released the mutex changes the word
//! and `FUTEX_WAIT` returns at once: no lost wake-up. Spurious wake-ups are
//! possible, as with every condition variable: callers loop on their predicate
//! (`wait_while`).
//!
//! # Orderings
//!
//! `waiters` and `seq` follow the same `SeqCst` handshake as the semaphore
//! (increment one, then read the other), so a notifier skips the wake syscall
//! only when no waiter can be asleep. The data the predicate reads is
//! protected by the mutex, which supplies the acquire/release pairing.
//!
//! # Robustness
//!
//! Nothing is owned by the condition variable itself; a waiter or notifier that
//! dies changes nothing for the others (the mutex reports its own dead owners).

use crate::futex::{self, WaitOutcome};
use crate::primitive::sync::atomic::{AtomicU32, Ordering};
use crate::region::{kind, RegionObject};
use crate::time::Deadline;

/// The condition variable, as laid out in shared memory.
///
/// ```
/// use shmproc_core::condvar::RawCondvar;
/// use core::sync::atomic::{AtomicU32, Ordering};
/// let (cv, flag) = (RawCondvar::new(), AtomicU32::new(0));
/// std::thread::scope(|s| {
///     s.spawn(|| loop {
///         let token = cv.prepare_wait();
///         if flag.load(Ordering::Acquire) == 1 {
///             break;
///         }
///         cv.wait(token, None);
///     });
///     flag.store(1, Ordering::Release);
///     cv.notify_all();
/// });
/// ```
#[repr(C, align(128))]
pub struct RawCondvar {
    seq: AtomicU32,
    waiters: AtomicU32,
}

// SAFETY: only atomics, valid for any bit pattern; alignment 128.
unsafe impl RegionObject for RawCondvar {
    const KIND: u32 = kind::CONDVAR;
}

impl RawCondvar {
    /// A condition variable with no waiters.
    ///
    /// ```
    /// use shmproc_core::condvar::RawCondvar;
    /// assert_eq!(RawCondvar::new().waiters(), 0);
    /// ```
    #[must_use]
    pub fn new() -> RawCondvar {
        RawCondvar { seq: AtomicU32::new(0), waiters: AtomicU32::new(0) }
    }

    /// (Re)initialises in place.
    ///
    /// ```
    /// use shmproc_core::condvar::RawCondvar;
    /// let cv = RawCondvar::default();
    /// cv.init();
    /// assert_eq!(cv.waiters(), 0);
    /// ```
    pub fn init(&self) {
        self.waiters.store(0, Ordering::Relaxed);
        self.seq.store(0, Ordering::Relaxed);
    }

    /// Step 1 of a wait, with the mutex held: registers as a waiter and returns
    /// the token to sleep on.
    ///
    /// ```
    /// use shmproc_core::condvar::RawCondvar;
    /// let cv = RawCondvar::new();
    /// let token = cv.prepare_wait(); // before releasing the mutex
    /// cv.notify_one(); // a notify after the token ends the wait at once
    /// let _ = cv.wait(token, None);
    /// ```
    pub fn prepare_wait(&self) -> u32 {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        self.seq.load(Ordering::SeqCst)
    }

    /// Step 2, after unlocking the mutex: sleeps until notified (or spuriously
    /// woken) or `deadline` passes. Always pair with `prepare_wait`.
    ///
    /// ```
    /// use shmproc_core::condvar::RawCondvar;
    /// use shmproc_core::Deadline;
    /// let cv = RawCondvar::new();
    /// let token = cv.prepare_wait();
    /// let _ = cv.wait(token, Some(Deadline::after(core::time::Duration::from_millis(5))));
    /// ```
    pub fn wait(&self, token: u32, deadline: Option<Deadline>) -> WaitOutcome {
        let r = futex::wait(&self.seq, token, deadline);
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        r
    }

    /// Threads that may be waiting (a snapshot).
    ///
    /// ```
    /// use shmproc_core::condvar::RawCondvar;
    /// assert_eq!(RawCondvar::new().waiters(), 0);
    /// ```
    pub fn waiters(&self) -> u32 {
        self.waiters.load(Ordering::Relaxed)
    }

    /// Wakes one waiter.
    ///
    /// ```
    /// use shmproc_core::condvar::RawCondvar;
    /// RawCondvar::new().notify_one(); // nobody waits: nothing happens
    /// ```
    pub fn notify_one(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) != 0 {
            futex::wake_one(&self.seq);
        }
    }

    /// Wakes up to `n` of the waiters asleep now, in every process (Python's
    /// `notify(n)`); a waiter between [`prepare_wait`](RawCondvar::prepare_wait)
    /// and its sleep returns too, as a spurious wake-up would.
    ///
    /// ```
    /// use shmproc_core::condvar::RawCondvar;
    /// RawCondvar::new().notify_n(3); // nobody waits: nothing happens
    /// ```
    pub fn notify_n(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.seq.fetch_add(1, Ordering::SeqCst);
        let mut left = n;
        // One wake-up per call: stops once `n` were woken or none is asleep.
        while left > 0 && self.waiters.load(Ordering::SeqCst) != 0 && futex::wake_one(&self.seq) != 0 {
            left -= 1;
        }
    }

    /// Wakes every waiter, in every process.
    ///
    /// ```
    /// use shmproc_core::condvar::RawCondvar;
    /// RawCondvar::new().notify_all();
    /// ```
    pub fn notify_all(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) != 0 {
            futex::wake_all(&self.seq);
        }
    }
}

impl Default for RawCondvar {
    fn default() -> Self {
        RawCondvar::new()
    }
}
