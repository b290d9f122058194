//! `Condition`: a condition variable for a shared [`Mutex`], across processes.
//!
//! Shaped like `std::sync::Condvar`: `wait` takes the guard, releases the lock
//! while sleeping and re-acquires it before returning. Spurious wake-ups can
//! happen, so wait in a loop or with [`wait_while`](Condition::wait_while).
//! If the mutex's owner died while the waiter slept, the re-acquired guard
//! comes back as `Err(OwnerDied(guard))`.
//!
//! ```
//! use shmproc::{Condition, Mutex, Process};
//! let ready = Mutex::new(0u32)?;
//! let cond = Condition::new()?;
//! let (r, c) = (ready.clone(), cond.clone());
//! let mut child = Process::spawn(move || {
//!     *r.lock().unwrap() = 1;
//!     c.notify_all();
//! })?;
//! let guard = cond.wait_while(ready.lock().unwrap(), |v| *v == 0).unwrap();
//! assert_eq!(*guard, 1);
//! drop(guard);
//! child.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::time::Duration;

use shmproc_core::condvar::RawCondvar;
use shmproc_core::futex::WaitOutcome;
use shmproc_core::Deadline;

use crate::error::Error;
use crate::mutex::{LockResult, Mutex, MutexGuard, OwnerDied};
use crate::object::{impl_handle_archive, Object};
use crate::segment::Segment;

/// Whether a timed condition wait timed out.
///
/// ```
/// let m = shmproc::Mutex::new(0u8)?;
/// let c = shmproc::Condition::new()?;
/// let (_g, r) = c.wait_timeout(m.lock().unwrap(), std::time::Duration::from_millis(10)).unwrap();
/// assert!(r.timed_out());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// True if the wait ended because the timeout passed.
    ///
    /// ```
    /// let m = shmproc::Mutex::new(0u8)?;
    /// let c = shmproc::Condition::new()?;
    /// let (_g, r) = c.wait_timeout(m.lock().unwrap(), std::time::Duration::from_millis(5)).unwrap();
    /// assert!(r.timed_out());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

/// A process-shared condition variable (Python's `Condition`, std's
/// `Condvar`). Use it with one [`Mutex`] at a time.
///
/// ```
/// let state = shmproc::Mutex::new(0u32)?;
/// let ready = shmproc::Condition::new()?;
/// let (s, r) = (state.clone(), ready.clone());
/// let mut child = shmproc::Process::spawn(move || {
///     *s.lock().unwrap() = 1;
///     r.notify_all();
/// })?;
/// let g = ready.wait_while(state.lock().unwrap(), |v| *v == 0).unwrap();
/// assert_eq!(*g, 1);
/// drop(g);
/// child.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Condition {
    obj: Object,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition").field("waiters", &self.raw().waiters()).finish()
    }
}

fn relock<'a, T>(m: &'a Mutex<T>) -> LockResult<MutexGuard<'a, T>> {
    m.lock()
}

impl Condition {
    /// A new condition variable in a segment of its own.
    ///
    /// ```
    /// let c = shmproc::Condition::new()?;
    /// c.notify_all(); // nobody waits: nothing happens
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> Result<Condition, Error> {
        Condition::create(None, "")
    }

    /// A new condition variable named `name` in `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// let c = shmproc::Condition::new_in(&seg, "changed")?;
    /// c.notify_one();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new_in(seg: &Segment, name: &str) -> Result<Condition, Error> {
        Condition::create(Some(seg), name)
    }

    fn create(seg: Option<&Segment>, name: &str) -> Result<Condition, Error> {
        let obj = Object::create_as(seg, name, |raw: &RawCondvar| raw.init())?;
        Ok(Condition { obj })
    }

    /// Opens the condition variable named `name` in `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// shmproc::Condition::new_in(&seg, "changed")?;
    /// shmproc::Condition::open_in(&seg, "changed")?.notify_all();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_in(seg: &Segment, name: &str) -> Result<Condition, Error> {
        Ok(Condition { obj: Object::open_as::<RawCondvar>(seg, name)? })
    }

    fn from_parts(seg: Segment, index: u32) -> Result<Condition, Error> {
        Ok(Condition { obj: Object::from_index_as::<RawCondvar>(seg, index)? })
    }

    fn raw(&self) -> &RawCondvar {
        self.obj.head::<RawCondvar>()
    }

    fn wait_until<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Option<Deadline>,
    ) -> LockResult<(MutexGuard<'a, T>, bool)> {
        let token = self.raw().prepare_wait();
        let m = guard.unlock_for_wait();
        let outcome = self.raw().wait(token, deadline);
        let timed_out = outcome == WaitOutcome::TimedOut;
        match relock(m) {
            Ok(g) => Ok((g, timed_out)),
            Err(OwnerDied(g)) => Err(OwnerDied((g, timed_out))),
        }
    }

    /// Releases the lock, sleeps until notified, re-acquires the lock.
    ///
    /// ```
    /// let m = shmproc::Mutex::new(0u8)?;
    /// let c = shmproc::Condition::new()?;
    /// let (m2, c2) = (m.clone(), c.clone());
    /// let mut child = shmproc::Process::spawn(move || {
    ///     *m2.lock().unwrap() = 1;
    ///     c2.notify_one();
    /// })?;
    /// let mut g = m.lock().unwrap();
    /// while *g == 0 {
    ///     g = c.wait(g).unwrap();
    /// }
    /// drop(g);
    /// child.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
        match self.wait_until(guard, None) {
            Ok((g, _)) => Ok(g),
            Err(OwnerDied((g, _))) => Err(OwnerDied(g)),
        }
    }

    /// Like [`wait`](Condition::wait), giving up after `timeout`.
    ///
    /// ```
    /// let m = shmproc::Mutex::new(0u8)?;
    /// let c = shmproc::Condition::new()?;
    /// let (g, r) = c.wait_timeout(m.lock().unwrap(), std::time::Duration::from_millis(5)).unwrap();
    /// assert!(r.timed_out());
    /// drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)> {
        match self.wait_until(guard, Some(Deadline::after(timeout))) {
            Ok((g, t)) => Ok((g, WaitTimeoutResult(t))),
            Err(OwnerDied((g, t))) => Err(OwnerDied((g, WaitTimeoutResult(t)))),
        }
    }

    /// Waits while `condition` holds for the protected data.
    ///
    /// ```
    /// let m = shmproc::Mutex::new(1u8)?;
    /// let c = shmproc::Condition::new()?;
    /// // The condition is already false: returns at once.
    /// let g = c.wait_while(m.lock().unwrap(), |v| *v == 0).unwrap();
    /// assert_eq!(*g, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_while<'a, T, F>(&self, guard: MutexGuard<'a, T>, condition: F) -> LockResult<MutexGuard<'a, T>>
    where
        F: FnMut(&mut T) -> bool,
    {
        match self.wait_while_until(guard, None, condition) {
            Ok((g, _)) => Ok(g),
            Err(OwnerDied((g, _))) => Err(OwnerDied(g)),
        }
    }

    /// Waits while `condition` holds, at most `timeout` in total.
    ///
    /// ```
    /// let m = shmproc::Mutex::new(0u8)?;
    /// let c = shmproc::Condition::new()?;
    /// let (g, r) = c.wait_timeout_while(m.lock().unwrap(), std::time::Duration::from_millis(5), |v| *v == 0).unwrap();
    /// assert!(r.timed_out() && *g == 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_timeout_while<'a, T, F>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
        condition: F,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)>
    where
        F: FnMut(&mut T) -> bool,
    {
        match self.wait_while_until(guard, Some(Deadline::after(timeout)), condition) {
            Ok((g, t)) => Ok((g, WaitTimeoutResult(t))),
            Err(OwnerDied((g, t))) => Err(OwnerDied((g, WaitTimeoutResult(t)))),
        }
    }

    fn wait_while_until<'a, T, F>(
        &self,
        mut guard: MutexGuard<'a, T>,
        deadline: Option<Deadline>,
        mut condition: F,
    ) -> LockResult<(MutexGuard<'a, T>, bool)>
    where
        F: FnMut(&mut T) -> bool,
    {
        let mut died = false;
        loop {
            if !condition(&mut *guard) {
                return if died { Err(OwnerDied((guard, false))) } else { Ok((guard, false)) };
            }
            if deadline.is_some_and(|d| d.has_passed()) {
                return if died { Err(OwnerDied((guard, true))) } else { Ok((guard, true)) };
            }
            guard = match self.wait_until(guard, deadline) {
                Ok((g, _)) => g,
                Err(OwnerDied((g, _))) => {
                    died = true;
                    g
                }
            };
        }
    }

    /// Wakes one waiter.
    ///
    /// ```
    /// let c = shmproc::Condition::new()?;
    /// c.notify_one();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn notify_one(&self) {
        self.raw().notify_one();
    }

    /// Wakes up to `n` waiters, in every process (Python's `notify(n)`;
    /// `notify(1)` is [`notify_one`](Self::notify_one)). As with any
    /// condition variable, a waiter may also wake spuriously: wait for a
    /// condition ([`wait_while`](Self::wait_while)), not for a wake-up.
    ///
    /// ```
    /// let c = shmproc::Condition::new()?;
    /// c.notify(2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn notify(&self, n: usize) {
        self.raw().notify_n(n);
    }

    /// Wakes every waiter in every process.
    ///
    /// ```
    /// let c = shmproc::Condition::new()?;
    /// c.notify_all();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn notify_all(&self) {
        self.raw().notify_all();
    }
}

impl_handle_archive!([] Condition, c => &c.obj, |seg, idx| Condition::from_parts(seg, idx));
