//! `Mutex<T>`, `Lock` and `RLock`: process-shared locks that survive dead
//! owners.
//!
//! The lock word lives in shared memory (see
//! [`shmproc_core::raw_mutex`] for the algorithm). When the thread or process
//! holding it dies, the next acquirer gets `Err(`[`OwnerDied`]`(guard))`
//! within about 20 ms of the death instead of hanging; the guard is fully
//! usable (the data may be half-updated: check it) and the lock works normally
//! afterwards, like `std::sync::PoisonError` but without lasting poison.
//!
//! Dead owners are detected by a liveness check on the owner's thread id and
//! thread start time (safe against pid/tid reuse), not by the kernel's robust
//! futex list, which glibc already uses per thread.
//!
//! Uncontended `lock` and `unlock` are one atomic compare-and-swap each, no
//! syscall; `unlock` makes a syscall only when a waiter may be sleeping.
//!
//! ```
//! let counter = shmproc::Mutex::new(0u64)?;
//! let c = counter.clone();
//! let mut child = shmproc::Process::spawn(move || {
//!     *c.lock().unwrap_or_else(|e| e.into_inner()) += 1;
//! })?;
//! child.join()?;
//! assert_eq!(*counter.lock().unwrap(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use shmproc_core::owner::Owner;
use shmproc_core::raw_mutex::{Acquired, OwnerInfo, RawMutex};
use shmproc_core::region::OBJECT_ALIGN;
use shmproc_core::Deadline;

use crate::error::Error;
use crate::held::{Refused, Site};
use crate::object::{impl_handle_archive, Object};
use crate::plain::Plain;
use crate::segment::Segment;
use crate::thread_id;

/// The previous owner died holding the lock. Carries the guard: the lock *is*
/// held by the caller now, and the data can be inspected and repaired.
///
/// ```
/// use shmproc::{Mutex, OwnerDied};
/// let m = Mutex::new(0u32)?;
/// let m2 = m.clone();
/// // A child takes the lock and dies holding it.
/// let mut child = shmproc::Process::spawn(move || std::mem::forget(m2.lock()))?;
/// child.join()?;
/// match m.lock() {
///     Err(OwnerDied(mut guard)) => *guard = 0, // repair, then go on
///     Ok(_) => unreachable!("the owner died holding it"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct OwnerDied<G>(pub G);

impl<G> OwnerDied<G> {
    /// The guard, for using the lock anyway.
    ///
    /// ```
    /// # let m = shmproc::Mutex::new(1u8)?;
    /// # let m2 = m.clone();
    /// # shmproc::Process::spawn(move || std::mem::forget(m2.lock()))?.join()?;
    /// let guard = m.lock().unwrap_or_else(shmproc::OwnerDied::into_inner);
    /// assert_eq!(*guard, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_inner(self) -> G {
        self.0
    }

    /// A reference to the guard.
    ///
    /// ```
    /// # let m = shmproc::Mutex::new(5u8)?;
    /// # let m2 = m.clone();
    /// # shmproc::Process::spawn(move || std::mem::forget(m2.lock()))?.join()?;
    /// if let Err(died) = m.lock() {
    ///     assert_eq!(**died.get_ref(), 5);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_ref(&self) -> &G {
        &self.0
    }

    /// A mutable reference to the guard.
    ///
    /// ```
    /// # let m = shmproc::Mutex::new(5u8)?;
    /// # let m2 = m.clone();
    /// # shmproc::Process::spawn(move || std::mem::forget(m2.lock()))?.join()?;
    /// if let Err(mut died) = m.lock() {
    ///     **died.get_mut() = 0; // repair in place
    /// }
    /// assert_eq!(*m.lock().unwrap(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_mut(&mut self) -> &mut G {
        &mut self.0
    }
}

impl<G> fmt::Debug for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OwnerDied { .. }")
    }
}

impl<G> fmt::Display for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the previous owner of the lock died while holding it")
    }
}

impl<G> std::error::Error for OwnerDied<G> {}

/// The result of `lock`: `Err(OwnerDied(guard))` after a dead owner.
///
/// ```
/// let m = shmproc::Mutex::new(0u32)?;
/// let r: shmproc::LockResult<shmproc::MutexGuard<'_, u32>> = m.lock();
/// // Nothing to repair here: treat a dead previous owner like any other.
/// let mut g = r.unwrap_or_else(shmproc::OwnerDied::into_inner);
/// *g += 1;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type LockResult<G> = Result<G, OwnerDied<G>>;

/// Why `try_lock` did not return a clean guard.
///
/// ```
/// use shmproc::{Mutex, TryLockError};
/// let m = Mutex::new(0u8)?;
/// let _held = m.lock().unwrap();
/// let m2 = m.clone();
/// let mut child = shmproc::Process::spawn(move || assert!(matches!(m2.try_lock(), Err(TryLockError::WouldBlock))))?;
/// assert_eq!(child.join()?, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub enum TryLockError<G> {
    /// Acquired, but the previous owner had died holding the lock.
    OwnerDied(OwnerDied<G>),
    /// Someone else holds it.
    WouldBlock,
}

/// Why `lock_timeout` did not return a clean guard.
///
/// ```
/// use shmproc::{LockTimeoutError, Mutex};
/// use std::time::Duration;
/// let m = Mutex::new(0u8)?;
/// let _held = m.lock().unwrap();
/// let m2 = m.clone();
/// let mut child = shmproc::Process::spawn(move || {
///     assert!(matches!(m2.lock_timeout(Duration::from_millis(20)), Err(LockTimeoutError::Timeout)));
/// })?;
/// assert_eq!(child.join()?, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub enum LockTimeoutError<G> {
    /// Acquired, but the previous owner had died holding the lock.
    OwnerDied(OwnerDied<G>),
    /// Not acquired before the timeout.
    Timeout,
}

macro_rules! lock_error_impls {
    ($name:ident, $other:ident, $msg:literal) => {
        impl<G> fmt::Debug for $name<G> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $name::OwnerDied(_) => f.write_str(concat!(stringify!($name), "::OwnerDied(..)")),
                    $name::$other => f.write_str(concat!(stringify!($name), "::", stringify!($other))),
                }
            }
        }
        impl<G> fmt::Display for $name<G> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $name::OwnerDied(e) => fmt::Display::fmt(e, f),
                    $name::$other => f.write_str($msg),
                }
            }
        }
        impl<G> std::error::Error for $name<G> {}
        impl<G> From<OwnerDied<G>> for $name<G> {
            fn from(e: OwnerDied<G>) -> Self {
                $name::OwnerDied(e)
            }
        }
    };
}
lock_error_impls!(TryLockError, WouldBlock, "the lock is held by someone else");
lock_error_impls!(LockTimeoutError, Timeout, "timed out waiting for the lock");

const DATA_OFFSET: usize = OBJECT_ALIGN;

fn check_layout<T>() -> Result<(), Error> {
    if std::mem::align_of::<T>() > OBJECT_ALIGN {
        return Err(Error::Layout("type aligned to more than 128 bytes"));
    }
    Ok(())
}

/// A mutual-exclusion lock protecting a `T` in shared memory, usable from
/// every process that has a handle. `Clone` gives another handle to the same
/// lock; handles move into fork-mode closures and spawn-mode arguments.
///
/// `T` must be [`Plain`] data: no pointers, valid for any bit pattern.
///
/// ```
/// let counter = shmproc::Mutex::new(0u64)?;
/// let kids: Vec<_> = (0..2)
///     .map(|_| {
///         let c = counter.clone();
///         shmproc::Process::spawn(move || {
///             for _ in 0..100 {
///                 *c.lock().unwrap() += 1;
///             }
///         })
///     })
///     .collect::<Result<_, _>>()?;
/// for mut k in kids {
///     k.join()?;
/// }
/// assert_eq!(*counter.lock().unwrap(), 200);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Mutex<T> {
    pub(crate) obj: Object,
    _t: PhantomData<T>,
}

impl<T> Clone for Mutex<T> {
    fn clone(&self) -> Self {
        Mutex { obj: self.obj.clone(), _t: PhantomData }
    }
}

impl<T> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutex").field("owner", &self.owner()).finish_non_exhaustive()
    }
}

impl<T: Plain> Mutex<T> {
    /// A new mutex holding `value`, in a segment of its own.
    ///
    /// ```
    /// let m = shmproc::Mutex::new([0u8; 16])?;
    /// m.lock().unwrap()[0] = 1;
    /// assert_eq!(m.lock().unwrap()[0], 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(value: T) -> Result<Mutex<T>, Error> {
        Mutex::create(None, "", value)
    }

    /// A new mutex named `name` inside `seg` (many objects, one segment).
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// let m = shmproc::Mutex::new_in(&seg, "total", 7u32)?;
    /// assert_eq!(*m.lock().unwrap(), 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new_in(seg: &Segment, name: &str, value: T) -> Result<Mutex<T>, Error> {
        Mutex::create(Some(seg), name, value)
    }

    fn create(seg: Option<&Segment>, name: &str, value: T) -> Result<Mutex<T>, Error> {
        check_layout::<T>()?;
        let size = DATA_OFFSET + std::mem::size_of::<T>();
        let obj = Object::create_sized(seg, name, size, |raw: &RawMutex, p| {
            raw.init();
            // SAFETY: `p` is OBJECT_ALIGN-aligned with `size` bytes: room for
            // a T (align <= 128, check_layout) at DATA_OFFSET.
            unsafe { p.as_ptr().add(DATA_OFFSET).cast::<T>().write(value) }
        })?;
        Ok(Mutex { obj, _t: PhantomData })
    }

    /// Opens the mutex named `name` in `seg` (created by another process).
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// let _m = shmproc::Mutex::new_in(&seg, "total", 7u32)?;
    /// let again = shmproc::Mutex::<u32>::open_in(&seg, "total")?;
    /// assert_eq!(*again.lock().unwrap(), 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_in(seg: &Segment, name: &str) -> Result<Mutex<T>, Error> {
        check_layout::<T>()?;
        let obj = Object::open_as::<RawMutex>(seg, name)?.at_least(DATA_OFFSET + std::mem::size_of::<T>())?;
        Ok(Mutex { obj, _t: PhantomData })
    }

    pub(crate) fn from_parts(seg: Segment, index: u32) -> Result<Mutex<T>, Error> {
        check_layout::<T>()?;
        let obj = Object::from_index_as::<RawMutex>(seg, index)?.at_least(DATA_OFFSET + std::mem::size_of::<T>())?;
        Ok(Mutex { obj, _t: PhantomData })
    }
}

impl<T> Mutex<T> {
    #[inline]
    pub(crate) fn raw(&self) -> &RawMutex {
        self.obj.head::<RawMutex>()
    }

    #[inline]
    fn guard(&self, owner: Owner, how: Acquired) -> LockResult<MutexGuard<'_, T>> {
        let g = MutexGuard { mutex: self, owner, _not_send: PhantomData };
        match how {
            Acquired::Locked => Ok(g),
            Acquired::OwnerDied => Err(OwnerDied(g)),
        }
    }

    #[inline]
    fn site(&self) -> Site<'_> {
        Site { raw: self.raw(), seg: self.obj.segment() }
    }

    /// Locks, blocking until the lock is free (or its owner is found dead).
    ///
    /// A lock word that names the calling thread although this thread does
    /// not hold the lock (a peer wrote our tid and start time into it) is
    /// taken over like a dead owner's: `Err(OwnerDied(guard))`. Which locks
    /// a thread holds is tracked in private memory, so that forgery is never
    /// mistaken for re-entrance.
    ///
    /// # Panics
    ///
    /// If the calling thread already holds this lock (that would deadlock):
    /// a bug in the caller, judged from this thread's private memory, never
    /// from anything a peer can write.
    ///
    /// ```
    /// let m = shmproc::Mutex::new(1i32)?;
    /// {
    ///     let mut g = m.lock().unwrap();
    ///     *g *= 10;
    /// } // unlocked here
    /// assert_eq!(*m.lock().unwrap(), 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        let me = thread_id::owner();
        match self.site().lock(&me, None) {
            Ok(how) => self.guard(me, how),
            Err(Refused::Reentered) => panic!("shmproc::Mutex locked twice by the same thread"),
            // Without a deadline the site waits until it gets the lock.
            Err(Refused::Timeout | Refused::WouldBlock) => self.lock(),
        }
    }

    /// Locks without blocking the executor (`.await` it): the future tries
    /// the lock each time it is polled, and in between a helper thread
    /// watches the lock word (`shmproc::async_wait`), with a liveness
    /// re-check every 20 ms so that an owner that died is taken over
    /// (`Err(OwnerDied(guard))`), as [`lock`](Mutex::lock) does.
    ///
    /// The lock belongs to the *thread* that polled it last: the guard is
    /// not `Send`, so a task that keeps it across another `.await` is not
    /// `Send` either (use a current-thread runtime, `spawn_local`, or drop
    /// the guard before awaiting). Two tasks on one thread exclude each
    /// other too: while one holds the lock, the other's future waits (it is
    /// never told "re-entered"). Dropping the future before it completes
    /// takes nothing and passes on a wake-up it absorbed.
    ///
    /// ```
    /// let m = shmproc::Mutex::new(1u32)?;
    /// let held = m.lock().unwrap();
    /// let other = m.clone();
    /// let mut child = shmproc::Process::spawn(move || {
    ///     let mut g = shmproc::async_wait::block_on(other.lock_async()).unwrap();
    ///     *g += 1;
    /// })?;
    /// std::thread::sleep(std::time::Duration::from_millis(20));
    /// drop(held); // the child's future is woken and takes the lock
    /// child.join()?;
    /// assert_eq!(*shmproc::async_wait::block_on(m.lock_async()).unwrap(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock_async(&self) -> LockFuture<'_, T> {
        LockFuture { mutex: self, waiting: crate::async_wait::Waiting::new(), done: false }
    }

    /// Locks if that is possible right now. A lock whose owner is dead is
    /// taken over (after one liveness check), as is a lock whose word was
    /// forged to name this thread (see [`lock`](Mutex::lock)). A lock this
    /// thread holds already gives `WouldBlock`.
    ///
    /// ```
    /// let m = shmproc::Mutex::new(0u8)?;
    /// let g = m.try_lock().ok().expect("free");
    /// assert!(m.try_lock().is_err()); // held (by us)
    /// drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_lock(&self) -> Result<MutexGuard<'_, T>, TryLockError<MutexGuard<'_, T>>> {
        let me = thread_id::owner();
        match self.site().try_lock(&me) {
            Ok(how) => self.guard(me, how).map_err(TryLockError::from),
            Err(_) => Err(TryLockError::WouldBlock),
        }
    }

    /// Locks, waiting at most `timeout`. A lock this thread holds already
    /// gives `Timeout` at once; a forged word is taken over as in
    /// [`lock`](Mutex::lock).
    ///
    /// ```
    /// use std::time::Duration;
    /// let m = shmproc::Mutex::new(5u32)?;
    /// let held = m.lock().unwrap();
    /// let other = m.clone();
    /// // Another process cannot get it while we hold it.
    /// let mut child = shmproc::Process::spawn(move || {
    ///     other.lock_timeout(Duration::from_millis(20)).is_err() as i32
    /// })?;
    /// assert_eq!(child.join()?, 1);
    /// drop(held);
    /// assert_eq!(*m.lock_timeout(Duration::from_millis(20)).unwrap(), 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<MutexGuard<'_, T>, LockTimeoutError<MutexGuard<'_, T>>> {
        let me = thread_id::owner();
        match self.site().lock(&me, Some(Deadline::after(timeout))) {
            Ok(how) => self.guard(me, how).map_err(LockTimeoutError::from),
            Err(_) => Err(LockTimeoutError::Timeout),
        }
    }

    /// Who holds the lock now (tid, pid, whether alive), if anyone.
    ///
    /// ```
    /// let m = shmproc::Mutex::new(0u8)?;
    /// assert!(m.owner().is_none());
    /// let _g = m.lock().unwrap();
    /// let o = m.owner().expect("held");
    /// assert!(o.alive);
    /// assert_eq!(o.pid, std::process::id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn owner(&self) -> Option<OwnerInfo> {
        self.raw().owner(self.obj.segment().liveness())
    }

    /// Whether the lock is held (a snapshot).
    ///
    /// ```
    /// let m = shmproc::Mutex::new(0u8)?;
    /// assert!(!m.is_locked());
    /// let _g = m.lock().unwrap();
    /// assert!(m.is_locked());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn is_locked(&self) -> bool {
        self.raw().is_locked()
    }

    /// The segment the mutex lives in.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// let m = shmproc::Mutex::new_in(&seg, "m", 0u8)?;
    /// assert!(m.segment().same_as(&seg));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn segment(&self) -> &Segment {
        self.obj.segment()
    }

    #[inline]
    fn data(&self) -> *mut T {
        self.obj.at(DATA_OFFSET).as_ptr().cast::<T>()
    }
}

impl_handle_archive!([T: Plain,] Mutex<T>, m => &m.obj, |seg, idx| Mutex::<T>::from_parts(seg, idx));

/// The future of [`Mutex::lock_async`].
#[must_use = "futures do nothing unless polled"]
pub struct LockFuture<'a, T> {
    mutex: &'a Mutex<T>,
    waiting: crate::async_wait::Waiting,
    done: bool,
}

impl<T> fmt::Debug for LockFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockFuture").field("done", &self.done).finish()
    }
}

impl<'a, T> std::future::Future for LockFuture<'a, T> {
    type Output = LockResult<MutexGuard<'a, T>>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = self.get_mut();
        let m = this.mutex;
        loop {
            let me = thread_id::owner();
            // `Reentered`: another task of this thread holds it; wait for it
            // like for anyone else.
            if let Ok(how) = m.site().try_lock(&me) {
                this.done = true;
                this.waiting.disarm();
                return std::task::Poll::Ready(m.guard(me, how));
            }
            let Some((word, expected)) = m.raw().wait_word() else { continue };
            let recheck = std::time::Instant::now() + shmproc_core::raw_mutex::LIVENESS_SLICE;
            // SAFETY: the word lives in the mutex's segment, which the
            // registration keeps mapped.
            unsafe { this.waiting.watch(Some(m.obj.segment()), word, expected, Some(recheck), true, cx.waker()) };
            return std::task::Poll::Pending;
        }
    }
}

impl<T> Drop for LockFuture<'_, T> {
    fn drop(&mut self) {
        // Woken by an unlock meant for one waiter and gone without the lock:
        // wake another (a sync waiter would otherwise sleep to the end of
        // its liveness slice).
        if self.waiting.disarm() && !self.done {
            self.mutex.raw().wake_waiter();
        }
    }
}

/// Access to the data of a locked [`Mutex`]; unlocks on drop. Not `Send`: a
/// lock is released by the thread that took it.
///
/// ```
/// let m = shmproc::Mutex::new(String::new().len() as u32)?;
/// let mut guard: shmproc::MutexGuard<'_, u32> = m.lock().unwrap();
/// *guard = 3;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "if unused the Mutex will immediately unlock"]
pub struct MutexGuard<'a, T> {
    mutex: &'a Mutex<T>,
    owner: Owner,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: sharing `&MutexGuard` only gives `&T`; like std's guard it is Sync
// when T is.
unsafe impl<T: Sync> Sync for MutexGuard<'_, T> {}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the lock is held, so by the protocol no one else accesses the
        // data; it is aligned and in bounds (validated at construction); any
        // bit pattern is a valid T (Plain).
        unsafe { &*self.mutex.data() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes the access unique locally.
        unsafe { &mut *self.mutex.data() }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.mutex.site().unlock(&self.owner);
    }
}

impl<T: fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<'a, T> MutexGuard<'a, T> {
    /// Unlocks without dropping (for condition waits); returns what is needed to
    /// relock.
    pub(crate) fn unlock_for_wait(self) -> &'a Mutex<T> {
        let m = self.mutex;
        m.site().unlock(&self.owner);
        std::mem::forget(self);
        m
    }
}

/// Python's `Lock`: a [`Mutex`] with no data. Derefs to `Mutex<()>` for
/// `lock`, `try_lock`, `lock_timeout` and `owner`.
///
/// ```
/// let lock = shmproc::Lock::new()?;
/// {
///     let _held = lock.acquire();
///     // critical section
/// }
/// # Ok::<(), shmproc::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Lock(Mutex<()>);

impl Lock {
    /// A new lock in a segment of its own.
    ///
    /// ```
    /// let lock = shmproc::Lock::new()?;
    /// let _g = lock.acquire();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> Result<Lock, Error> {
        Ok(Lock(Mutex::new(())?))
    }

    /// A new lock named `name` in `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// let lock = shmproc::Lock::new_in(&seg, "print")?;
    /// drop(lock.acquire());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new_in(seg: &Segment, name: &str) -> Result<Lock, Error> {
        Ok(Lock(Mutex::new_in(seg, name, ())?))
    }

    /// Opens the lock named `name` in `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// let _lock = shmproc::Lock::new_in(&seg, "print")?;
    /// let again = shmproc::Lock::open_in(&seg, "print")?;
    /// drop(again.acquire());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_in(seg: &Segment, name: &str) -> Result<Lock, Error> {
        Ok(Lock(Mutex::open_in(seg, name)?))
    }

    /// Python's `acquire()`: locks, treating a dead previous owner as a normal
    /// acquisition (there is no data to repair): the death is not reported.
    /// To see it, lock through `Mutex<()>` ([`lock`](Mutex::lock) gives
    /// `Err(OwnerDied(guard))`); `shmproc inspect` shows such a lock as held
    /// by a dead process until someone takes it.
    ///
    /// ```
    /// let lock = shmproc::Lock::new()?;
    /// let l2 = lock.clone();
    /// let mut child = shmproc::Process::spawn(move || {
    ///     let _g = l2.acquire();
    ///     println!("one printer at a time");
    /// })?;
    /// {
    ///     let _g = lock.acquire();
    ///     println!("one printer at a time");
    /// }
    /// child.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire(&self) -> MutexGuard<'_, ()> {
        self.0.lock().unwrap_or_else(OwnerDied::into_inner)
    }

    /// [`acquire`](Lock::acquire) without blocking the executor (see
    /// [`Mutex::lock_async`]: the guard belongs to the polling thread and is
    /// not `Send`).
    ///
    /// ```
    /// let lock = shmproc::Lock::new()?;
    /// let g = shmproc::async_wait::block_on(lock.acquire_async());
    /// assert!(lock.try_lock().is_err());
    /// drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn acquire_async(&self) -> MutexGuard<'_, ()> {
        self.0.lock_async().await.unwrap_or_else(OwnerDied::into_inner)
    }
}

impl std::ops::Deref for Lock {
    type Target = Mutex<()>;
    fn deref(&self) -> &Mutex<()> {
        &self.0
    }
}

impl_handle_archive!([] Lock, l => &l.0.obj, |seg, idx| Mutex::<()>::from_parts(seg, idx).map(Lock));

/// Python's `RLock`: a lock the owning thread may take again; it is released
/// when every acquisition has been released. Survives dead owners like
/// [`Mutex`].
///
/// ```
/// let r = shmproc::RLock::new()?;
/// let outer = r.lock().unwrap();
/// let inner = r.lock().unwrap(); // the same thread may re-enter
/// drop(inner);
/// drop(outer);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct RLock {
    obj: Object,
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock").field("owner", &self.raw().owner(self.obj.segment().liveness())).finish()
    }
}

impl RLock {
    /// A new recursive lock in a segment of its own.
    ///
    /// ```
    /// let r = shmproc::RLock::new()?;
    /// assert!(!r.is_locked());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> Result<RLock, Error> {
        RLock::create(None, "")
    }

    /// A new recursive lock named `name` in `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// let r = shmproc::RLock::new_in(&seg, "r")?;
    /// drop(r.lock());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new_in(seg: &Segment, name: &str) -> Result<RLock, Error> {
        RLock::create(Some(seg), name)
    }

    fn create(seg: Option<&Segment>, name: &str) -> Result<RLock, Error> {
        let obj = Object::create_as(seg, name, |raw: &RawMutex| raw.init())?;
        Ok(RLock { obj })
    }

    /// Opens the recursive lock named `name` in `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// let _r = shmproc::RLock::new_in(&seg, "r")?;
    /// let again = shmproc::RLock::open_in(&seg, "r")?;
    /// drop(again.lock());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_in(seg: &Segment, name: &str) -> Result<RLock, Error> {
        Ok(RLock { obj: Object::open_as::<RawMutex>(seg, name)? })
    }

    fn from_parts(seg: Segment, index: u32) -> Result<RLock, Error> {
        Ok(RLock { obj: Object::from_index_as::<RawMutex>(seg, index)? })
    }

    fn raw(&self) -> &RawMutex {
        self.obj.head::<RawMutex>()
    }

    fn site(&self) -> Site<'_> {
        Site { raw: self.raw(), seg: self.obj.segment() }
    }

    fn guard(&self, owner: Owner, (how, key): (Acquired, usize)) -> LockResult<RLockGuard<'_>> {
        let g = RLockGuard { lock: self, owner, key, _not_send: PhantomData };
        match how {
            Acquired::Locked => Ok(g),
            Acquired::OwnerDied => Err(OwnerDied(g)),
        }
    }

    /// Locks (again, if this thread already holds it). The levels are
    /// counted in this thread's private memory, so a peer that forges the
    /// word with this thread's identity cannot make it "re-enter" a lock it
    /// does not hold: such a lock is taken over (`Err(OwnerDied(guard))`).
    ///
    /// ```
    /// let r = shmproc::RLock::new()?;
    /// let _a = r.lock().unwrap();
    /// let _b = r.lock().unwrap();
    /// assert!(r.is_locked());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock(&self) -> LockResult<RLockGuard<'_>> {
        let me = thread_id::owner();
        match self.site().lock_recursive(&me, None, false) {
            Ok(how) => self.guard(me, how),
            // Without a deadline the site waits until it gets the lock, and
            // re-entrance is another level; try again should it ever refuse.
            Err(_) => self.lock(),
        }
    }

    /// Locks if possible right now.
    ///
    /// ```
    /// let r = shmproc::RLock::new()?;
    /// let _a = r.try_lock().ok().expect("free");
    /// let r2 = r.clone();
    /// let mut child = shmproc::Process::spawn(move || assert!(r2.try_lock().is_err()))?;
    /// assert_eq!(child.join()?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_lock(&self) -> Result<RLockGuard<'_>, TryLockError<RLockGuard<'_>>> {
        let me = thread_id::owner();
        match self.site().lock_recursive(&me, None, true) {
            Ok(how) => self.guard(me, how).map_err(TryLockError::from),
            Err(_) => Err(TryLockError::WouldBlock),
        }
    }

    /// Locks, waiting at most `timeout`.
    ///
    /// ```
    /// let r = shmproc::RLock::new()?;
    /// let g = r.lock_timeout(std::time::Duration::from_millis(10)).ok().expect("free");
    /// drop(g);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<RLockGuard<'_>, LockTimeoutError<RLockGuard<'_>>> {
        let me = thread_id::owner();
        match self.site().lock_recursive(&me, Some(Deadline::after(timeout)), false) {
            Ok(how) => self.guard(me, how).map_err(LockTimeoutError::from),
            Err(_) => Err(LockTimeoutError::Timeout),
        }
    }

    /// Whether the lock is held (a snapshot).
    ///
    /// ```
    /// let r = shmproc::RLock::new()?;
    /// let g = r.lock().unwrap();
    /// assert!(r.is_locked());
    /// drop(g);
    /// assert!(!r.is_locked());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn is_locked(&self) -> bool {
        self.raw().is_locked()
    }
}

impl_handle_archive!([] RLock, l => &l.obj, |seg, idx| RLock::from_parts(seg, idx));

/// A held level of an [`RLock`]; releases that level on drop.
///
/// ```
/// let r = shmproc::RLock::new()?;
/// let guard: shmproc::RLockGuard<'_> = r.lock().unwrap();
/// drop(guard);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "if unused the RLock will immediately unlock"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    owner: Owner,
    /// The private record this level belongs to.
    key: usize,
    _not_send: PhantomData<*const ()>,
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        self.lock.site().unlock_recursive(&self.owner, self.key);
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RLockGuard")
    }
}
