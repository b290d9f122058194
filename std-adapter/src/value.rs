//! `Value<T>`: one shared value with its own lock (Python's `Value`).
//!
//! A thin layer over [`Mutex<T>`](crate::Mutex): `get` and `set` take the lock
//! for you; [`lock`](Value::lock) (Python's `get_lock()`) gives a guard for
//! read-modify-write. Like the mutex it survives a holder's death: `get`/`set`
//! carry on (the value may be whatever the dead holder left), `lock` reports
//! `OwnerDied`.
//!
//! ```
//! let v = shmproc::Value::new(0i64)?;
//! let v2 = v.clone();
//! let mut child = shmproc::Process::spawn(move || v2.set(42))?;
//! child.join()?;
//! assert_eq!(v.get(), 42);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use crate::error::Error;
use crate::mutex::{LockResult, Mutex, MutexGuard, OwnerDied};
use crate::plain::Plain;
use crate::segment::Segment;

/// A shared `T` behind a lock.
///
/// ```
/// let v = shmproc::Value::new(0i64)?;
/// let v2 = v.clone();
/// let mut child = shmproc::Process::spawn(move || v2.set(-5))?;
/// child.join()?;
/// assert_eq!(v.get(), -5); // seen by the parent, unlike an ordinary variable
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Value<T> {
    mutex: Mutex<T>,
}

impl<T> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value { mutex: self.mutex.clone() }
    }
}

impl<T: Plain + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value").field("value", &self.get()).finish()
    }
}

impl<T: Plain> Value<T> {
    /// A shared value, in a segment of its own.
    ///
    /// ```
    /// let v = shmproc::Value::new(1.5f64)?;
    /// assert_eq!(v.get(), 1.5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(value: T) -> Result<Value<T>, Error> {
        Ok(Value { mutex: Mutex::new(value)? })
    }

    /// A shared value named `name` in `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// let v = shmproc::Value::new_in(&seg, "count", 0u32)?;
    /// assert_eq!(v.get(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new_in(seg: &Segment, name: &str, value: T) -> Result<Value<T>, Error> {
        Ok(Value { mutex: Mutex::new_in(seg, name, value)? })
    }

    /// Opens the value named `name` in `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// shmproc::Value::new_in(&seg, "count", 9u32)?;
    /// assert_eq!(shmproc::Value::<u32>::open_in(&seg, "count")?.get(), 9);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_in(seg: &Segment, name: &str) -> Result<Value<T>, Error> {
        Ok(Value { mutex: Mutex::open_in(seg, name)? })
    }

    /// A copy of the value (Python's `v.value`).
    ///
    /// ```
    /// let v = shmproc::Value::new(3u8)?;
    /// assert_eq!(v.get(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn get(&self) -> T {
        *self.mutex.lock().unwrap_or_else(OwnerDied::into_inner)
    }

    /// Replaces the value.
    ///
    /// ```
    /// let v = shmproc::Value::new(3u8)?;
    /// v.set(4);
    /// assert_eq!(v.get(), 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set(&self, value: T) {
        *self.mutex.lock().unwrap_or_else(OwnerDied::into_inner) = value;
    }

    /// Applies `f` under the lock and returns the new value (for `v.value += 1`).
    ///
    /// ```
    /// let hits = shmproc::Value::new(0u64)?;
    /// let h = hits.clone();
    /// let mut child = shmproc::Process::spawn(move || {
    ///     for _ in 0..100 {
    ///         h.update(|n| *n += 1);
    ///     }
    /// })?;
    /// for _ in 0..100 {
    ///     hits.update(|n| *n += 1);
    /// }
    /// child.join()?;
    /// assert_eq!(hits.get(), 200);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn update(&self, f: impl FnOnce(&mut T)) -> T {
        let mut g = self.mutex.lock().unwrap_or_else(OwnerDied::into_inner);
        f(&mut g);
        *g
    }

    /// Locks the value (Python's `with v.get_lock():`).
    ///
    /// ```
    /// let v = shmproc::Value::new(10u32)?;
    /// {
    ///     let mut g = v.lock().unwrap(); // read-modify-write as one step
    ///     *g += 1;
    /// }
    /// assert_eq!(v.get(), 11);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        self.mutex.lock()
    }

    /// The lock itself.
    ///
    /// ```
    /// let v = shmproc::Value::new(0u32)?;
    /// assert!(!v.get_lock().is_locked());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn get_lock(&self) -> &Mutex<T> {
        &self.mutex
    }
}

crate::object::impl_handle_archive!(
    [T: Plain,] Value<T>, v => &v.mutex.obj,
    |seg, idx| Mutex::<T>::from_parts(seg, idx).map(|mutex| Value { mutex })
);
