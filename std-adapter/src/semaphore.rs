//! `Semaphore` and `BoundedSemaphore`, shared between processes.
//!
//! [`Semaphore`] and [`BoundedSemaphore`] are robust to dead waiters (nothing
//! to clean up) and corrupt counts (wrong numbers, never undefined
//! behaviour), but **not** to a *holder* dying: its permit is lost, as in
//! Python, since they do not record who holds permits, and a plain `acquire`
//! may then block forever. Use a deadline (`acquire_timeout`), or
//! [`RobustSemaphore`] ([`Semaphore::robust`]), whose permits come back when
//! their holder's process dies.
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
use std::sync::atomic::Ordering;
use std::time::Duration;

use shmproc_core::robust_semaphore::{RawRobustSemaphore, RobustError};
use shmproc_core::semaphore::{RawSemaphore, SemaphoreError, UNBOUNDED};
use shmproc_core::{Deadline, Identity};

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
/// Its permits are **not robust**, as in Python: a process that dies holding
/// one takes it with it, and a later `acquire` without a deadline can block
/// forever. Use [`RobustSemaphore`] ([`Semaphore::robust`]) where holders may
/// be killed.
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
        let obj = Object::create_as(seg, name, |raw: &RawSemaphore| raw.init(value, max))?;
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
        Ok(Semaphore { obj: Object::open_as::<RawSemaphore>(seg, name)? })
    }

    fn from_parts(seg: Segment, index: u32) -> Result<Semaphore, Error> {
        Ok(Semaphore { obj: Object::from_index_as::<RawSemaphore>(seg, index)? })
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

    /// Takes a permit without blocking a thread: the future resolves once it
    /// holds one. A release wakes one waiter; if that is this future's
    /// helper thread and the future is dropped before it took the permit,
    /// the wake-up is passed on to the next waiter (see
    /// [`async_wait`](crate::async_wait)), so no blocked acquirer is left
    /// asleep beside a free permit.
    ///
    /// ```
    /// let s = shmproc::Semaphore::new(0)?;
    /// let s2 = s.clone();
    /// let mut child = shmproc::Process::spawn(move || s2.release().unwrap())?;
    /// shmproc::async_wait::block_on(s.acquire_async());
    /// assert_eq!(s.value(), 0);
    /// child.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire_async(&self) -> AcquireFuture<'_> {
        AcquireFuture { sem: self, counted: false, done: false, waiting: crate::async_wait::Waiting::new() }
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
/// Not robust to a holder's death, like [`Semaphore`]; see
/// [`RobustSemaphore::bounded`].
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
    /// [`Semaphore::acquire_async`] for a bounded semaphore.
    ///
    /// ```
    /// let s = shmproc::BoundedSemaphore::new(1)?;
    /// shmproc::async_wait::block_on(s.acquire_async());
    /// assert!(!s.try_acquire());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire_async(&self) -> AcquireFuture<'_> {
        self.0.acquire_async()
    }

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

/// Why a [`RobustSemaphore`] did not give a permit.
///
/// ```
/// let s = shmproc::RobustSemaphore::new(0)?;
/// assert_eq!(s.try_acquire(), Err(shmproc::PermitError::WouldBlock));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PermitError {
    /// No permit is free now (`try_acquire`).
    WouldBlock,
    /// None came before the timeout.
    Timeout,
    /// The holder table is full: [`HOLDERS`](shmproc_core::robust_semaphore::HOLDERS)
    /// other live processes hold permits already.
    TableFull,
}

impl fmt::Display for PermitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PermitError::WouldBlock => "no permit is free",
            PermitError::Timeout => "timed out waiting for a permit",
            PermitError::TableFull => "the semaphore's holder table is full",
        })
    }
}

impl std::error::Error for PermitError {}

fn permit_error(e: RobustError) -> PermitError {
    match e {
        RobustError::WouldBlock => PermitError::WouldBlock,
        RobustError::Timeout => PermitError::Timeout,
        // Overflow (a process holding u32::MAX permits) and NotHeld do not
        // come from acquiring; report them as "no room".
        RobustError::TableFull | RobustError::Overflow | RobustError::NotHeld => PermitError::TableFull,
    }
}

thread_local! {
    static PROCESS: std::cell::Cell<Option<Identity>> = const { std::cell::Cell::new(None) };
}

/// The calling process as a permit holder (pid and start time), cached; a
/// forked child (another pid) looks itself up again.
fn this_process() -> Identity {
    let pid = crate::thread_id::owner().pid;
    PROCESS.with(|c| match c.get() {
        Some(p) if p.id == pid => p,
        _ => {
            let p = Identity::current_process();
            c.set(Some(p));
            p
        }
    })
}

/// A counting semaphore whose permits come back when the process holding
/// them dies: beyond Python, whose semaphores lose a dead holder's permit (as
/// [`Semaphore`] does).
///
/// It records up to [`HOLDERS`](shmproc_core::robust_semaphore::HOLDERS)
/// holder processes (pid and start time) in shared memory, under a robust
/// lock. An acquirer that finds no free permit checks, before its first sleep
/// and then every 20 ms, whether a recorded holder has died, and takes its
/// permits back: a SIGKILLed holder's permits are free again within about
/// 20 ms, wherever in `acquire` or `release` it was killed. Permits belong to
/// the *process*: any of its threads may release them, and they come back
/// when the process dies, not when a thread exits.
///
/// Costs more than [`Semaphore`]: every operation takes a short internal
/// lock and scans the table (32 records). See
/// [`shmproc_core::robust_semaphore`] for the algorithm.
///
/// ```
/// use std::time::Duration;
/// let sem = shmproc::RobustSemaphore::new(1)?;
/// let s2 = sem.clone();
/// // A child takes the only permit and is killed holding it.
/// let mut child = shmproc::Process::spawn(move || {
///     s2.acquire().unwrap();
///     std::thread::sleep(Duration::from_secs(60));
/// })?;
/// while sem.value() > 0 {
///     std::thread::sleep(Duration::from_millis(1));
/// }
/// child.kill()?;
/// child.join()?;
/// // Its permit comes back instead of being lost.
/// let permit = sem.access_timeout(Duration::from_secs(10))?;
/// drop(permit);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct RobustSemaphore {
    obj: Object,
}

impl fmt::Debug for RobustSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RobustSemaphore").field("value", &self.value()).field("max", &self.raw().max()).finish()
    }
}

impl Semaphore {
    /// A [`RobustSemaphore`] with `value` permits: permits come back when
    /// their holder's process dies.
    ///
    /// ```
    /// let s = shmproc::Semaphore::robust(2)?;
    /// let _p = s.access()?;
    /// assert_eq!(s.value(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn robust(value: u32) -> Result<RobustSemaphore, Error> {
        RobustSemaphore::new(value)
    }
}

impl RobustSemaphore {
    /// A robust semaphore with `value` permits, in a segment of its own;
    /// `release` without `acquire` adds permits (Python's `Semaphore`).
    ///
    /// ```
    /// let s = shmproc::RobustSemaphore::new(3)?;
    /// assert_eq!(s.value(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(value: u32) -> Result<RobustSemaphore, Error> {
        RobustSemaphore::create(None, "", value, UNBOUNDED)
    }

    /// A robust semaphore that never has more than `value` permits
    /// (Python's `BoundedSemaphore`): a `release` that would exceed it fails.
    ///
    /// ```
    /// let s = shmproc::RobustSemaphore::bounded(1)?;
    /// assert_eq!(s.release(), Err(shmproc::ReleaseError));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bounded(value: u32) -> Result<RobustSemaphore, Error> {
        RobustSemaphore::create(None, "", value, value)
    }

    /// A robust semaphore named `name` in `seg`; `bounded` as in
    /// [`bounded`](RobustSemaphore::bounded).
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// let s = shmproc::RobustSemaphore::new_in(&seg, "slots", 2, true)?;
    /// assert_eq!(shmproc::RobustSemaphore::open_in(&seg, "slots")?.value(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new_in(seg: &Segment, name: &str, value: u32, bounded: bool) -> Result<RobustSemaphore, Error> {
        RobustSemaphore::create(Some(seg), name, value, if bounded { value } else { UNBOUNDED })
    }

    fn create(seg: Option<&Segment>, name: &str, value: u32, max: u32) -> Result<RobustSemaphore, Error> {
        let obj = Object::create_as(seg, name, |raw: &RawRobustSemaphore| raw.init(value, max))?;
        Ok(RobustSemaphore { obj })
    }

    /// Opens the robust semaphore named `name` in `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// let _s = shmproc::RobustSemaphore::new_in(&seg, "s", 1, false)?;
    /// assert!(shmproc::RobustSemaphore::open_in(&seg, "s")?.try_acquire().is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_in(seg: &Segment, name: &str) -> Result<RobustSemaphore, Error> {
        Ok(RobustSemaphore { obj: Object::open_as::<RawRobustSemaphore>(seg, name)? })
    }

    fn from_parts(seg: Segment, index: u32) -> Result<RobustSemaphore, Error> {
        Ok(RobustSemaphore { obj: Object::from_index_as::<RawRobustSemaphore>(seg, index)? })
    }

    fn raw(&self) -> &RawRobustSemaphore {
        self.obj.head::<RawRobustSemaphore>()
    }

    /// The calling thread as the internal lock records it (`kernel_liveness`).
    fn me(&self) -> shmproc_core::owner::Owner {
        self.obj.segment().owner(&crate::thread_id::owner())
    }

    /// This process as a holder: flagged when it holds its kernel liveness
    /// record on the segment's file, so a judge of another pid namespace can
    /// prove its death and give its permits back.
    fn holder(&self) -> Identity {
        let p = this_process();
        Identity { id: p.id | self.obj.segment().liveness().process_flag(), ..p }
    }

    /// How holders are judged: `/proc`, else the kernel's records.
    fn check(&self) -> &crate::kernel_liveness::FileLiveness {
        self.obj.segment().liveness()
    }

    /// Takes a permit for this process, waiting as long as it takes (taking
    /// back dead holders' permits meanwhile). Fails only with
    /// [`PermitError::TableFull`].
    ///
    /// ```
    /// let s = shmproc::RobustSemaphore::new(1)?;
    /// s.acquire()?;
    /// assert_eq!(s.held(), 1);
    /// s.release()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire(&self) -> Result<(), PermitError> {
        let me = self.me();
        self.raw().acquire(&me, self.holder(), None, self.check()).map_err(permit_error)
    }

    /// Takes a permit if one is free now.
    ///
    /// ```
    /// let s = shmproc::RobustSemaphore::new(1)?;
    /// assert!(s.try_acquire().is_ok());
    /// assert_eq!(s.try_acquire(), Err(shmproc::PermitError::WouldBlock));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_acquire(&self) -> Result<(), PermitError> {
        let me = self.me();
        self.raw().try_acquire(&me, self.holder(), self.check()).map_err(permit_error)
    }

    /// Takes a permit, waiting at most `timeout`.
    ///
    /// ```
    /// let s = shmproc::RobustSemaphore::new(0)?;
    /// let r = s.acquire_timeout(std::time::Duration::from_millis(10));
    /// assert_eq!(r, Err(shmproc::PermitError::Timeout));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<(), PermitError> {
        let me = self.me();
        let d = Some(Deadline::after(timeout));
        self.raw().acquire(&me, self.holder(), d, self.check()).map_err(permit_error)
    }

    /// Returns a permit: one this process holds, or else (Python's `release`
    /// without `acquire`) a new one, which fails with [`ReleaseError`] at a
    /// bounded semaphore's bound.
    ///
    /// ```
    /// let s = shmproc::RobustSemaphore::new(0)?;
    /// s.release()?; // unbalanced: one more permit
    /// assert_eq!(s.value(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release(&self) -> Result<(), ReleaseError> {
        let me = self.me();
        self.raw().release(&me, self.holder(), None, self.check()).map_err(|_| ReleaseError)
    }

    /// Free permits now (a snapshot; Python's `get_value`).
    ///
    /// ```
    /// assert_eq!(shmproc::RobustSemaphore::new(2)?.value(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn value(&self) -> u32 {
        self.raw().value()
    }

    /// Permits this process holds (a snapshot).
    ///
    /// ```
    /// let s = shmproc::RobustSemaphore::new(2)?;
    /// let _p = s.access()?;
    /// assert_eq!(s.held(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn held(&self) -> u32 {
        self.raw().held_by(self.holder())
    }

    /// Takes back, now, the permits of holders that died; returns the free
    /// count. Acquirers do this by themselves when they find no permit.
    ///
    /// ```
    /// let s = shmproc::RobustSemaphore::new(1)?;
    /// assert_eq!(s.recover(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recover(&self) -> u32 {
        let me = self.me();
        self.raw().recover(&me, None, self.check()).unwrap_or(0)
    }

    /// Acquires and returns a guard that returns the permit on drop
    /// (Python's `with sem:`).
    ///
    /// ```
    /// let s = shmproc::RobustSemaphore::new(1)?;
    /// {
    ///     let _p = s.access()?;
    ///     assert_eq!(s.value(), 0);
    /// }
    /// assert_eq!(s.value(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn access(&self) -> Result<RobustPermit<'_>, PermitError> {
        self.acquire()?;
        Ok(RobustPermit { sem: self, pid: this_process().id })
    }

    /// Like [`access`](RobustSemaphore::access), waiting at most `timeout`.
    ///
    /// ```
    /// let s = shmproc::RobustSemaphore::new(1)?;
    /// let p = s.access_timeout(std::time::Duration::from_millis(10))?;
    /// assert!(s.access_timeout(std::time::Duration::from_millis(10)).is_err());
    /// drop(p);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn access_timeout(&self, timeout: Duration) -> Result<RobustPermit<'_>, PermitError> {
        self.acquire_timeout(timeout)?;
        Ok(RobustPermit { sem: self, pid: this_process().id })
    }
}

impl_handle_archive!([] RobustSemaphore, s => &s.obj, |seg, idx| RobustSemaphore::from_parts(seg, idx));

/// A permit of a [`RobustSemaphore`] held for a scope; returned on drop (if
/// the process still holds one: a guard copied into a forked child returns
/// nothing there, and a permit already taken back is not returned twice).
///
/// ```
/// let s = shmproc::RobustSemaphore::new(1)?;
/// let permit: shmproc::RobustPermit<'_> = s.access()?;
/// drop(permit);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "if unused the permit is released immediately"]
#[derive(Debug)]
pub struct RobustPermit<'a> {
    sem: &'a RobustSemaphore,
    pid: u32,
}

impl Drop for RobustPermit<'_> {
    fn drop(&mut self) {
        if crate::thread_id::owner().pid == self.pid {
            let me = self.sem.me();
            let _ = self.sem.raw().release_held(&me, self.sem.holder(), None, self.sem.check());
        }
    }
}

/// The future of [`Semaphore::acquire_async`]: resolves once it holds a
/// permit. Dropping it unresolved takes nothing, and passes on a wake-up it
/// absorbed.
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct AcquireFuture<'a> {
    sem: &'a Semaphore,
    counted: bool,
    done: bool,
    waiting: crate::async_wait::Waiting,
}

impl AcquireFuture<'_> {
    fn finish(&mut self) {
        let fired = self.waiting.disarm();
        let raw = self.sem.raw();
        if self.counted {
            self.counted = false;
            raw.end_async_wait();
        }
        // Woken (perhaps by a release meant for one waiter) and gone without
        // a permit: pass the wake-up on if a permit is there to take.
        if fired && !self.done && raw.count_word().load(Ordering::SeqCst) != 0 {
            shmproc_core::futex::wake_one(raw.count_word());
        }
    }
}

impl std::future::Future for AcquireFuture<'_> {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let this = self.get_mut();
        let raw = this.sem.raw();
        loop {
            if raw.try_acquire().is_ok() {
                this.done = true;
                this.finish();
                return std::task::Poll::Ready(());
            }
            let c = if this.counted {
                raw.count_word().load(Ordering::SeqCst)
            } else {
                this.counted = true;
                raw.begin_async_wait()
            };
            if c != 0 {
                continue;
            }
            // SAFETY: the word lives in the semaphore's segment, which the
            // registration keeps mapped.
            unsafe { this.waiting.watch(Some(this.sem.obj.segment()), raw.count_word(), 0, None, true, cx.waker()) };
            return std::task::Poll::Pending;
        }
    }
}

impl Drop for AcquireFuture<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.finish();
        }
    }
}
