//! `Semaphore` and `BoundedSemaphore`, shared between processes.
//!
//! Robust to: dead waiters (nothing to clean up) and corrupt counts (wrong
//! numbers, never undefined behaviour). Not robust to a *holder* dying: its
//! permit is lost, as in Python, since a semaphore does not record who holds
//! permits. Use a deadline (`acquire_timeout`) where that matters.
//!
//! ```
//! let sem = shmproc::Semaphore::new(2)?;
//! {
//!     let _permit = sem.access(); // released on drop
//! }
//! assert!(sem.try_acquire());
//! sem.release()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use shmproc_core::region::kind;
use shmproc_core::semaphore::{RawSemaphore, SemaphoreError, UNBOUNDED};
use shmproc_core::Deadline;

use crate::error::Error;
use crate::object::{impl_handle_archive, Object};
use crate::segment::Segment;

/// `release` would raise a [`BoundedSemaphore`] above its initial value (or a
/// semaphore above `u32::MAX`).
///
/// ```
/// let s = shmproc::BoundedSemaphore::new(1)?;
/// assert_eq!(s.release(), Err(shmproc::ReleaseError)); // above its initial value
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ReleaseError;

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("semaphore released too many times")
    }
}

impl std::error::Error for ReleaseError {}

/// A counting semaphore (Python's `Semaphore(value)`).
///
/// ```
/// let slots = shmproc::Semaphore::new(2)?;
/// let kids: Vec<_> = (0..4)
///     .map(|i| {
///         let s = slots.clone();
///         shmproc::Process::spawn(move || {
///             let _slot = s.access(); // at most two at once
///             println!("worker {i} inside");
///         })
///     })
///     .collect::<Result<_, _>>()?;
/// for mut k in kids {
///     k.join()?;
/// }
/// assert_eq!(slots.value(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Semaphore {
    obj: Object,
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore").field("value", &self.value()).field("waiters", &self.raw().waiters()).finish()
    }
}

impl Semaphore {
    /// A semaphore with `value` permits, in a segment of its own.
    ///
    /// ```
    /// let s = shmproc::Semaphore::new(3)?;
    /// assert_eq!(s.value(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(value: u32) -> Result<Semaphore, Error> {
        Semaphore::create(None, "", value, UNBOUNDED)
    }

    /// A semaphore named `name` in `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// let s = shmproc::Semaphore::new_in(&seg, "slots", 2)?;
    /// assert_eq!(s.value(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new_in(seg: &Segment, name: &str, value: u32) -> Result<Semaphore, Error> {
        Semaphore::create(Some(seg), name, value, UNBOUNDED)
    }

    fn create(seg: Option<&Segment>, name: &str, value: u32, max: u32) -> Result<Semaphore, Error> {
        let obj = Object::create(seg, name, kind::SEMAPHORE, std::mem::size_of::<RawSemaphore>(), |p| {
            // SAFETY: p is aligned and sized for a RawSemaphore (atomics only).
            unsafe { (*p.as_ptr().cast::<RawSemaphore>()).init(value, max) }
        })?;
        Ok(Semaphore { obj })
    }

    /// Opens the semaphore named `name` in `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// let _s = shmproc::Semaphore::new_in(&seg, "slots", 2)?;
    /// assert_eq!(shmproc::Semaphore::open_in(&seg, "slots")?.value(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_in(seg: &Segment, name: &str) -> Result<Semaphore, Error> {
        Ok(Semaphore { obj: Object::open(seg, name, kind::SEMAPHORE, std::mem::size_of::<RawSemaphore>())? })
    }

    fn from_parts(seg: Segment, index: u32) -> Result<Semaphore, Error> {
        Ok(Semaphore { obj: Object::from_index(seg, index, kind::SEMAPHORE, std::mem::size_of::<RawSemaphore>())? })
    }

    fn raw(&self) -> &RawSemaphore {
        self.obj.head::<RawSemaphore>()
    }

    /// Takes a permit, waiting as long as it takes.
    ///
    /// ```
    /// let s = shmproc::Semaphore::new(1)?;
    /// s.acquire();
    /// assert_eq!(s.value(), 0);
    /// s.release()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire(&self) {
        // Without a deadline the only possible result is success.
        let _ = self.raw().acquire(None);
    }

    /// Takes a permit if one is free now.
    ///
    /// ```
    /// let s = shmproc::Semaphore::new(1)?;
    /// assert!(s.try_acquire());
    /// assert!(!s.try_acquire());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn try_acquire(&self) -> bool {
        self.raw().try_acquire().is_ok()
    }

    /// Takes a permit, waiting at most `timeout`; false if none came.
    ///
    /// ```
    /// let s = shmproc::Semaphore::new(1)?;
    /// assert!(s.acquire_timeout(std::time::Duration::from_millis(10)));
    /// assert!(!s.acquire_timeout(std::time::Duration::from_millis(10)));
    /// # Ok::<(), shmproc::Error>(())
    /// ```
    #[must_use]
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.raw().acquire(Some(Deadline::after(timeout))).is_ok()
    }

    /// Returns a permit, waking a waiter if there is one.
    ///
    /// ```
    /// let s = shmproc::Semaphore::new(0)?;
    /// s.release()?;
    /// assert_eq!(s.value(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release(&self) -> Result<(), ReleaseError> {
        self.raw().release(1).map_err(|_| ReleaseError)
    }

    /// Returns `n` permits.
    ///
    /// ```
    /// let s = shmproc::Semaphore::new(0)?;
    /// s.release_n(3)?;
    /// assert_eq!(s.value(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release_n(&self, n: u32) -> Result<(), ReleaseError> {
        match self.raw().release(n) {
            Ok(()) => Ok(()),
            Err(SemaphoreError::Overflow) | Err(_) => Err(ReleaseError),
        }
    }

    /// Free permits now (a snapshot; Python's `get_value`).
    ///
    /// ```
    /// let s = shmproc::Semaphore::new(2)?;
    /// s.acquire();
    /// assert_eq!(s.value(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn value(&self) -> u32 {
        self.raw().value()
    }

    /// Acquires and returns a guard that releases on drop (Python's `with sem:`).
    ///
    /// ```
    /// let s = shmproc::Semaphore::new(1)?;
    /// {
    ///     let _g = s.access();
    ///     assert_eq!(s.value(), 0);
    /// }
    /// assert_eq!(s.value(), 1); // released on drop
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn access(&self) -> SemaphoreGuard<'_> {
        self.acquire();
        SemaphoreGuard { sem: self }
    }

    /// Like [`access`](Semaphore::access), waiting at most `timeout`.
    ///
    /// ```
    /// let s = shmproc::Semaphore::new(1)?;
    /// let g = s.access_timeout(std::time::Duration::from_millis(10)).expect("free");
    /// assert!(s.access_timeout(std::time::Duration::from_millis(10)).is_none());
    /// drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn access_timeout(&self, timeout: Duration) -> Option<SemaphoreGuard<'_>> {
        self.acquire_timeout(timeout).then_some(SemaphoreGuard { sem: self })
    }
}

impl_handle_archive!([] Semaphore, s => &s.obj, |seg, idx| Semaphore::from_parts(seg, idx));

/// A permit held for a scope; released on drop.
///
/// ```
/// let s = shmproc::Semaphore::new(1)?;
/// let guard: shmproc::SemaphoreGuard<'_> = s.access();
/// drop(guard);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "if unused the permit is released immediately"]
#[derive(Debug)]
pub struct SemaphoreGuard<'a> {
    sem: &'a Semaphore,
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        // The guard's permit was taken from this semaphore, so returning it
        // cannot exceed a bound unless someone released without acquiring.
        let _ = self.sem.release();
    }
}

/// A semaphore whose `release` fails instead of raising the count above the
/// initial value (Python's `BoundedSemaphore`). Derefs to [`Semaphore`].
///
/// ```
/// let s = shmproc::BoundedSemaphore::new(2)?;
/// s.acquire();
/// s.release()?;
/// assert!(s.release().is_err()); // would exceed 2
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct BoundedSemaphore(Semaphore);

impl BoundedSemaphore {
    /// A bounded semaphore with `value` permits (and at most `value`).
    ///
    /// ```
    /// let s = shmproc::BoundedSemaphore::new(1)?;
    /// assert!(s.try_acquire());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(value: u32) -> Result<BoundedSemaphore, Error> {
        Ok(BoundedSemaphore(Semaphore::create(None, "", value, value)?))
    }

    /// A bounded semaphore named `name` in `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// let s = shmproc::BoundedSemaphore::new_in(&seg, "b", 1)?;
    /// assert_eq!(s.value(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new_in(seg: &Segment, name: &str, value: u32) -> Result<BoundedSemaphore, Error> {
        Ok(BoundedSemaphore(Semaphore::create(Some(seg), name, value, value)?))
    }
}

impl Deref for BoundedSemaphore {
    type Target = Semaphore;
    fn deref(&self) -> &Semaphore {
        &self.0
    }
}

impl_handle_archive!([] BoundedSemaphore, s => &s.0.obj, |seg, idx| Semaphore::from_parts(seg, idx).map(BoundedSemaphore));
