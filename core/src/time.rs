//! Absolute deadlines on `CLOCK_MONOTONIC`.
//!
//! Every blocking call in the crate turns its timeout into a [`Deadline`] once, at
//! the start, and passes the deadline down. A wait that is interrupted (`EINTR`) or
//! woken spuriously retries against the *same* deadline, so retries never stretch a
//! timeout.

use core::time::Duration;

/// A point in time on the monotonic clock (`CLOCK_MONOTONIC`), which every process
/// on the machine shares.
///
/// ```
/// use core::time::Duration;
/// use shmproc_core::Deadline;
/// let d = Deadline::after(Duration::from_millis(50));
/// assert!(!d.has_passed());
/// assert!(d.remaining() <= Duration::from_millis(50));
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline {
    nanos: u64,
}

impl Deadline {
    /// A deadline that has always passed: what a `try_` operation waits
    /// for, without reading the clock.
    ///
    /// ```
    /// assert!(shmproc_core::Deadline::EXPIRED.has_passed());
    /// ```
    pub const EXPIRED: Deadline = Deadline { nanos: 0 };

    /// The current time.
    ///
    /// ```
    /// let a = shmproc_core::Deadline::now();
    /// let b = shmproc_core::Deadline::now();
    /// assert!(b >= a); // monotonic
    /// ```
    #[must_use]
    pub fn now() -> Deadline {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on
        // the platforms this crate supports, so the call cannot fail.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let nanos = (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64);
        Deadline { nanos }
    }

    /// The instant `timeout` from now. A timeout too large to represent saturates to
    /// the far future.
    ///
    /// ```
    /// let d = shmproc_core::Deadline::after(core::time::Duration::from_secs(3600));
    /// assert!(!d.has_passed());
    /// // Too far to represent: saturates rather than wrapping.
    /// let far = shmproc_core::Deadline::after(core::time::Duration::MAX);
    /// assert!(far > d);
    /// ```
    #[must_use]
    pub fn after(timeout: Duration) -> Deadline {
        let add = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        Deadline { nanos: Deadline::now().nanos.saturating_add(add) }
    }

    /// `Some(Deadline::after(t))` for `Some(t)`, `None` (wait forever) for `None`.
    ///
    /// ```
    /// use shmproc_core::Deadline;
    /// assert_eq!(Deadline::from_timeout(None), None); // wait forever
    /// assert!(Deadline::from_timeout(Some(core::time::Duration::ZERO)).unwrap().has_passed());
    /// ```
    #[must_use]
    pub fn from_timeout(timeout: Option<Duration>) -> Option<Deadline> {
        timeout.map(Deadline::after)
    }

    /// Time left until the deadline; zero once it has passed.
    ///
    /// ```
    /// let d = shmproc_core::Deadline::after(core::time::Duration::from_millis(10));
    /// assert!(d.remaining() <= core::time::Duration::from_millis(10));
    /// assert_eq!(shmproc_core::Deadline::EXPIRED.remaining(), core::time::Duration::ZERO);
    /// ```
    #[must_use]
    pub fn remaining(&self) -> Duration {
        Duration::from_nanos(self.nanos.saturating_sub(Deadline::now().nanos))
    }

    /// Whether the deadline has passed.
    ///
    /// ```
    /// let d = shmproc_core::Deadline::after(core::time::Duration::from_millis(1));
    /// std::thread::sleep(std::time::Duration::from_millis(2));
    /// assert!(d.has_passed());
    /// ```
    #[must_use]
    pub fn has_passed(&self) -> bool {
        Deadline::now().nanos >= self.nanos
    }

    /// The earlier of two deadlines.
    ///
    /// ```
    /// use shmproc_core::Deadline;
    /// let soon = Deadline::after(core::time::Duration::from_millis(1));
    /// let later = Deadline::after(core::time::Duration::from_secs(1));
    /// assert_eq!(soon.min(later), soon);
    /// ```
    #[must_use]
    pub fn min(self, other: Deadline) -> Deadline {
        if self.nanos <= other.nanos {
            self
        } else {
            other
        }
    }

    /// Nanoseconds since the (unspecified) epoch of the monotonic clock.
    ///
    /// ```
    /// let d = shmproc_core::Deadline::now();
    /// assert!(d.as_nanos() > 0);
    /// ```
    #[must_use]
    pub fn as_nanos(&self) -> u64 {
        self.nanos
    }

    /// The deadline as an absolute `timespec` on `CLOCK_MONOTONIC`.
    #[cfg_attr(any(loom, not(target_os = "linux")), allow(dead_code))]
    pub(crate) fn to_timespec(self) -> libc::timespec {
        libc::timespec {
            tv_sec: (self.nanos / 1_000_000_000) as libc::time_t,
            tv_nsec: (self.nanos % 1_000_000_000) as _,
        }
    }
}

/// The earlier of an optional deadline and a required one.
///
/// ```
/// use shmproc_core::time::earliest;
/// use shmproc_core::Deadline;
/// let slice = Deadline::after(core::time::Duration::from_millis(20));
/// assert_eq!(earliest(None, slice), slice); // no deadline: the slice
/// assert_eq!(earliest(Some(Deadline::EXPIRED), slice), Deadline::EXPIRED);
/// ```
#[must_use]
pub fn earliest(a: Option<Deadline>, b: Deadline) -> Deadline {
    match a {
        Some(a) => a.min(b),
        None => b,
    }
}
