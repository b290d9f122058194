//! An event flag (Python's `Event`) on one futex word.
//!
//! The flag word holds the state in bit 0 (set / clear) and a count of `set`
//! calls in the other bits. A waiter remembers the count it started with, so a
//! `set` that happens while it waits is never missed even if someone `clear`s
//! the flag before the waiter runs again: like Python's `Event.wait`, it then
//! returns true. `waiters` counts threads that may sleep, so `set` makes a
//! syscall only when someone waits.
//!
//! # Orderings
//!
//! `set` stores with `SeqCst` and then reads `waiters`; a waiter increments
//! `waiters` with `SeqCst` and then reads `flag`. As in the semaphore, one of
//! them sees the other, and `FUTEX_WAIT` re-checks `flag == 0` in the kernel,
//! so a `set` is never missed. Observing the flag set is an `Acquire` load
//! pairing with the `set`, so what the setter wrote before `set` is visible
//! after `wait` returns true.
//!
//! # Robustness
//!
//! Nothing is owned: a dead setter or waiter changes nothing for the others.

use crate::futex::{self, WaitOutcome};
use crate::primitive::sync::atomic::{AtomicU32, Ordering};
use crate::region::{kind, RegionObject};
use crate::time::Deadline;

/// Bit 0 of the flag word: the event is set.
const SET: u32 = 1;

/// The event, as laid out in shared memory.
///
/// ```
/// use shmproc_core::event::RawEvent;
/// let e = RawEvent::new(); // in real use: inside a shared region
/// std::thread::scope(|s| {
///     s.spawn(|| assert!(e.wait(None)));
///     e.set();
/// });
/// ```
#[repr(C, align(128))]
pub struct RawEvent {
    flag: AtomicU32,
    waiters: AtomicU32,
}

// SAFETY: only atomics, valid for any bit pattern; alignment 128.
unsafe impl RegionObject for RawEvent {
    const KIND: u32 = kind::EVENT;
}

impl RawEvent {
    /// A clear event.
    ///
    /// ```
    /// use shmproc_core::event::RawEvent;
    /// assert!(!RawEvent::new().is_set());
    /// ```
    #[must_use]
    pub fn new() -> RawEvent {
        RawEvent { flag: AtomicU32::new(0), waiters: AtomicU32::new(0) }
    }

    /// (Re)initialises in place as clear.
    ///
    /// ```
    /// use shmproc_core::event::RawEvent;
    /// let e = RawEvent::new();
    /// e.set();
    /// e.init();
    /// assert!(!e.is_set());
    /// ```
    pub fn init(&self) {
        self.waiters.store(0, Ordering::Relaxed);
        self.flag.store(0, Ordering::Release);
    }

    /// Whether the flag is set.
    ///
    /// ```
    /// use shmproc_core::event::RawEvent;
    /// let e = RawEvent::new();
    /// e.set();
    /// assert!(e.is_set());
    /// ```
    #[inline]
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire) & SET != 0
    }

    /// Threads that may be waiting (a snapshot).
    ///
    /// ```
    /// use shmproc_core::event::RawEvent;
    /// assert_eq!(RawEvent::new().waiters(), 0);
    /// ```
    pub fn waiters(&self) -> u32 {
        self.waiters.load(Ordering::Relaxed)
    }

    /// Sets the flag and wakes every waiter in every process.
    ///
    /// ```
    /// use shmproc_core::event::RawEvent;
    /// let e = RawEvent::new();
    /// e.set();
    /// assert!(e.wait(None)); // at once
    /// ```
    pub fn set(&self) {
        let mut v = self.flag.load(Ordering::Relaxed);
        loop {
            if v & SET != 0 {
                // Already set: a sleeper would have seen that in FUTEX_WAIT.
                // The fence still orders our prior writes before the waiters'
                // Acquire observation of the (already set) flag.
                crate::primitive::sync::atomic::fence(Ordering::SeqCst);
                break;
            }
            let new = (v & !SET).wrapping_add(2) | SET;
            match self.flag.compare_exchange_weak(v, new, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(cur) => v = cur,
            }
        }
        if self.waiters.load(Ordering::SeqCst) != 0 {
            futex::wake_all(&self.flag);
        }
    }

    /// Clears the flag.
    ///
    /// ```
    /// use shmproc_core::event::RawEvent;
    /// let e = RawEvent::new();
    /// e.set();
    /// e.clear();
    /// assert!(!e.is_set());
    /// ```
    pub fn clear(&self) {
        self.flag.fetch_and(!SET, Ordering::Relaxed);
    }

    /// Waits until the flag is set or `deadline` passes; returns whether it is
    /// set.
    ///
    /// ```
    /// use shmproc_core::event::RawEvent;
    /// use shmproc_core::Deadline;
    /// let e = RawEvent::new();
    /// assert!(!e.wait(Some(Deadline::after(core::time::Duration::from_millis(5)))));
    /// ```
    pub fn wait(&self, deadline: Option<Deadline>) -> bool {
        self.wait_since(self.snapshot(), deadline)
    }

    /// The state to pass to [`wait_since`](RawEvent::wait_since).
    ///
    /// ```
    /// use shmproc_core::event::RawEvent;
    /// let e = RawEvent::new();
    /// let before = e.snapshot();
    /// e.set();
    /// e.clear();
    /// // A set in between is seen even though the flag is down again.
    /// assert!(e.wait_since(before, Some(shmproc_core::Deadline::EXPIRED)));
    /// ```
    pub fn snapshot(&self) -> u32 {
        self.flag.load(Ordering::Acquire)
    }

    /// Waits until the flag is set or has been set since `start` was taken
    /// with [`snapshot`](RawEvent::snapshot), or `deadline` passes.
    ///
    /// ```
    /// use shmproc_core::event::RawEvent;
    /// let e = RawEvent::new();
    /// let s = e.snapshot();
    /// assert!(!e.wait_since(s, Some(shmproc_core::Deadline::after(core::time::Duration::from_millis(5)))));
    /// ```
    pub fn wait_since(&self, start: u32, deadline: Option<Deadline>) -> bool {
        if start & SET != 0 {
            return true;
        }
        self.wait_slow(start, deadline)
    }

    #[cold]
    fn wait_slow(&self, start: u32, deadline: Option<Deadline>) -> bool {
        // Set, or set (and perhaps cleared again) since we started waiting.
        let happened = |v: u32| v & SET != 0 || (v & !SET) != (start & !SET);
        loop {
            self.waiters.fetch_add(1, Ordering::SeqCst);
            let v = self.flag.load(Ordering::SeqCst);
            let outcome = if happened(v) { WaitOutcome::ValueChanged } else { futex::wait(&self.flag, v, deadline) };
            self.waiters.fetch_sub(1, Ordering::Relaxed);
            if happened(self.flag.load(Ordering::Acquire)) {
                return true;
            }
            if outcome == WaitOutcome::TimedOut || deadline.is_some_and(|d| d.has_passed()) {
                return false;
            }
        }
    }
}

impl RawEvent {
    /// For a waiter that does not block a thread (an `async` future): counts
    /// it as a waiter, so that [`set`](RawEvent::set) wakes the flag word,
    /// and returns the word's value now. The caller then checks
    /// [`happened_since`](RawEvent::happened_since) and has the word watched
    /// for a change from the returned value; it calls
    /// [`end_async_wait`](RawEvent::end_async_wait) exactly once when done.
    ///
    /// ```
    /// use shmproc_core::event::RawEvent;
    /// let e = RawEvent::new();
    /// let start = e.snapshot();
    /// let now = e.begin_async_wait();
    /// assert!(!e.happened_since(start, now));
    /// e.set();
    /// assert!(e.happened_since(start, e.flag_word().load(core::sync::atomic::Ordering::Acquire)));
    /// e.end_async_wait();
    /// ```
    pub fn begin_async_wait(&self) -> u32 {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        self.flag.load(Ordering::SeqCst)
    }

    /// Ends a wait begun with [`begin_async_wait`](RawEvent::begin_async_wait).
    ///
    /// ```
    /// let e = shmproc_core::event::RawEvent::new();
    /// let _ = e.begin_async_wait();
    /// e.end_async_wait();
    /// assert_eq!(e.waiters(), 0);
    /// ```
    pub fn end_async_wait(&self) {
        self.waiters.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether the flag word `now` says the event is set, or was set since
    /// `start` (a [`snapshot`](RawEvent::snapshot)).
    ///
    /// ```
    /// let e = shmproc_core::event::RawEvent::new();
    /// let s = e.snapshot();
    /// assert!(!e.happened_since(s, s));
    /// ```
    #[must_use]
    pub fn happened_since(&self, start: u32, now: u32) -> bool {
        now & SET != 0 || (now & !SET) != (start & !SET)
    }

    /// The futex word waiters sleep on.
    ///
    /// ```
    /// let e = shmproc_core::event::RawEvent::new();
    /// assert_eq!(e.flag_word().load(core::sync::atomic::Ordering::Relaxed), 0);
    /// ```
    pub fn flag_word(&self) -> &AtomicU32 {
        &self.flag
    }
}

impl Default for RawEvent {
    fn default() -> Self {
        RawEvent::new()
    }
}
