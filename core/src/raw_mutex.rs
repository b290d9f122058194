//! A robust, process-shared mutex on one futex word.
//!
//! # State
//!
//! The 32-bit state word uses the layout of the kernel's robust futexes:
//!
//! * bits 0..30 ([`TID_MASK`]): the owner's thread id, 0 when unlocked;
//! * bit 31 ([`WAITERS`]): someone may be sleeping on the word, so unlock must
//!   wake.
//!
//! Beside the word, the owner records its identity (tid, thread start time,
//! pid) in side fields right after acquiring. They are what lets a waiter tell
//! a dead owner from a slow one.
//!
//! # Dead owners
//!
//! We do not use the kernel's robust list: glibc registers its own list per
//! thread for pthread robust mutexes, and replacing it would silently break
//! those. Instead, a waiter sleeps in slices of [`LIVENESS_SLICE`]; when a slice
//! ends with the same owner still recorded, it checks that owner's liveness
//! (tid exists, not a zombie, same start time, so a reused tid is recognised).
//! A dead owner's lock is taken over with a compare-and-swap on the exact state
//! the waiter observed, and the new owner is told [`Acquired::OwnerDied`]. A
//! death is therefore noticed within one slice (20 ms) plus the check.
//!
//! If the owner died between its compare-and-swap and recording its side
//! fields, the recorded tid does not match the word; the check then falls back
//! to "does this tid exist at all".
//!
//! Liveness is checked in the caller's pid namespace: processes sharing a lock
//! must see each other's tids (the same or a parent namespace).
//!
//! # Orderings
//!
//! Acquiring is a compare-and-swap with `Acquire` on success, releasing a
//! `Release` swap to 0: the usual lock pairing, so everything written under the
//! lock happens-before the next owner's critical section. The side fields are
//! advisory (read only to judge liveness) and use `Relaxed`. The `WAITERS` bit
//! is set with a compare-and-swap before sleeping and the kernel re-checks the
//! word atomically in `FUTEX_WAIT`, so a wake-up cannot be lost: an unlock
//! that races with a waiter either sees the bit (and wakes) or changes the word
//! before the waiter's futex call (which then returns at once).
//!
//! # Untrusted memory
//!
//! Any value of the word is handled: a garbage tid is just an owner that
//! (almost certainly) does not exist and is taken over; a garbage `WAITERS` bit
//! costs one spurious wake syscall.

use core::time::Duration;

use crate::futex::{self, WaitOutcome};
use crate::owner::{Owner, OwnerCheck};
use crate::primitive::spin_loop;
use crate::primitive::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::region::{kind, RegionObject};
use crate::time::{earliest, Deadline};

/// Bits of the state word holding the owner's tid.
///
/// ```
/// use shmproc_core::raw_mutex::{RawMutex, TID_MASK};
/// let me = shmproc_core::owner::Owner::current();
/// assert_eq!(me.thread.id & TID_MASK, me.thread.id); // tids fit in the word
/// ```
pub const TID_MASK: u32 = 0x3fff_ffff;
/// State bit: waiters may be sleeping.
///
/// ```
/// use shmproc_core::raw_mutex::{RawMutex, WAITERS};
/// assert_eq!(WAITERS, 1 << 31);
/// let m = RawMutex::new();
/// assert!(!m.has_waiters());
/// ```
pub const WAITERS: u32 = 0x8000_0000;
/// How often a sleeping waiter checks whether the owner is still alive.
///
/// ```
/// use shmproc_core::raw_mutex::LIVENESS_SLICE;
/// assert_eq!(LIVENESS_SLICE, core::time::Duration::from_millis(20));
/// ```
pub const LIVENESS_SLICE: Duration = Duration::from_millis(20);
const SPIN_LIMIT: u32 = 100;

/// How a lock was obtained.
///
/// ```
/// use shmproc_core::{owner::Owner, Identity};
/// let owner = |tid: u32| Owner { thread: Identity { id: tid, start: 7 }, pid: tid };
/// use shmproc_core::raw_mutex::{Acquired, RawMutex};
/// let m = RawMutex::new();
/// let _ = m.try_lock(&owner(1)).unwrap(); // tid 1 "dies" holding it
/// let dead_1 = |tid: u32, _: Option<u64>| tid != 1;
/// assert_eq!(m.try_lock_checked(&owner(2), &dead_1), Ok(Acquired::OwnerDied));
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Acquired {
    /// Normally.
    Locked,
    /// From an owner that died holding it: the protected data may be
    /// half-updated.
    OwnerDied,
}

/// Why a lock was not obtained.
///
/// ```
/// use shmproc_core::{owner::Owner, Identity};
/// let owner = |tid: u32| Owner { thread: Identity { id: tid, start: 7 }, pid: tid };
/// use shmproc_core::raw_mutex::{LockError, RawMutex};
/// let m = RawMutex::new();
/// let _ = m.try_lock(&owner(1)).unwrap();
/// assert_eq!(m.try_lock(&owner(2)), Err(LockError::WouldBlock));
/// let alive = |_: u32, _: Option<u64>| true;
/// assert_eq!(m.try_lock_checked(&owner(1), &alive), Err(LockError::Deadlock));
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LockError {
    /// `try_lock`: someone else holds it.
    WouldBlock,
    /// The deadline passed.
    Timeout,
    /// The word names the caller: either it already holds this
    /// (non-recursive) lock, or a peer *forged* the word with the caller's
    /// tid and start time (both readable from `/proc`). The word alone cannot
    /// tell the two apart; a caller that tracks, in private memory, which
    /// locks it holds decides, and takes a forged lock over with
    /// [`RawMutex::reclaim`].
    Deadlock,
}

/// A snapshot of who holds a mutex, for inspection tools.
///
/// ```
/// use shmproc_core::owner::{Owner, ProcLiveness};
/// use shmproc_core::raw_mutex::{Acquired, LockError, RawMutex};
/// let m = RawMutex::new();
/// let me = Owner::current();
/// let _ = m.lock(&me, None, &ProcLiveness).unwrap();
/// let info = m.owner(&ProcLiveness).unwrap();
/// assert_eq!((info.tid, info.pid, info.alive), (me.thread.id, me.pid, true));
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct OwnerInfo {
    /// The owner's thread id.
    pub tid: u32,
    /// The owner's process id (0 if not recorded yet).
    pub pid: u32,
    /// Whether the owner thread still runs.
    pub alive: bool,
    /// Whether waiters may be sleeping.
    pub waiters: bool,
}

/// The robust mutex, as laid out in shared memory.
///
/// ```
/// use shmproc_core::owner::{Owner, ProcLiveness};
/// use shmproc_core::raw_mutex::{Acquired, LockError, RawMutex};
/// let m = RawMutex::new(); // in real use: inside a shared region
/// let me = Owner::current();
/// assert_eq!(m.lock(&me, None, &ProcLiveness), Ok(Acquired::Locked));
/// assert!(m.unlock(&me));
/// ```
#[repr(C, align(128))]
pub struct RawMutex {
    state: AtomicU32,
    owner_tid: AtomicU32,
    owner_start: AtomicU64,
    owner_pid: AtomicU32,
    /// Extra acquisitions by the owner (recursive use only).
    recursion: AtomicU32,
}

// SAFETY: only atomics, valid for any bit pattern; alignment 128 ==
// OBJECT_ALIGN.
unsafe impl RegionObject for RawMutex {
    const KIND: u32 = kind::MUTEX;
}

impl RawMutex {
    /// An unlocked mutex (for statics, tests and models).
    ///
    /// ```
    /// static M: shmproc_core::raw_mutex::RawMutex = shmproc_core::raw_mutex::RawMutex::new();
    /// assert!(!M.is_locked());
    /// ```
    #[cfg(not(loom))]
    #[must_use]
    pub const fn new() -> RawMutex {
        RawMutex {
            state: AtomicU32::new(0),
            owner_tid: AtomicU32::new(0),
            owner_start: AtomicU64::new(0),
            owner_pid: AtomicU32::new(0),
            recursion: AtomicU32::new(0),
        }
    }

    /// An unlocked mutex (loom's atomics have no const constructor).
    ///
    /// ```
    /// let m = shmproc_core::raw_mutex::RawMutex::new();
    /// assert!(!m.is_locked());
    /// ```
    #[cfg(loom)]
    #[must_use]
    pub fn new() -> RawMutex {
        RawMutex {
            state: AtomicU32::new(0),
            owner_tid: AtomicU32::new(0),
            owner_start: AtomicU64::new(0),
            owner_pid: AtomicU32::new(0),
            recursion: AtomicU32::new(0),
        }
    }

    /// (Re)initialises the mutex in place as unlocked.
    ///
    /// ```
    /// let m = shmproc_core::raw_mutex::RawMutex::new();
    /// let me = shmproc_core::owner::Owner::current();
    /// let _ = m.try_lock(&me);
    /// m.init(); // back to unlocked (only while nobody else can use it)
    /// assert!(!m.is_locked());
    /// ```
    pub fn init(&self) {
        self.owner_tid.store(0, Ordering::Relaxed);
        self.owner_start.store(0, Ordering::Relaxed);
        self.owner_pid.store(0, Ordering::Relaxed);
        self.recursion.store(0, Ordering::Relaxed);
        self.state.store(0, Ordering::Release);
    }

    #[inline]
    fn record(&self, me: &Owner) {
        self.owner_start.store(me.thread.start, Ordering::Relaxed);
        self.owner_pid.store(me.pid, Ordering::Relaxed);
        self.owner_tid.store(me.thread.id, Ordering::Relaxed);
        self.recursion.store(0, Ordering::Relaxed);
    }

    #[inline]
    fn my_tid(me: &Owner) -> u32 {
        me.thread.id & TID_MASK
    }

    /// Whether `me` is the recorded owner (tid in the word and matching start
    /// time, so a reused tid is not mistaken for the owner).
    ///
    /// ```
    /// use shmproc_core::{owner::Owner, Identity};
    /// let owner = |tid: u32| Owner { thread: Identity { id: tid, start: 7 }, pid: tid };
    /// let m = shmproc_core::raw_mutex::RawMutex::new();
    /// let _ = m.try_lock(&owner(1)).unwrap();
    /// assert!(m.is_owned_by(&owner(1)));
    /// // Same tid, another start time: a reused tid is not the owner.
    /// let reused = Owner { thread: Identity { id: 1, start: 8 }, pid: 1 };
    /// assert!(!m.is_owned_by(&reused));
    /// ```
    pub fn is_owned_by(&self, me: &Owner) -> bool {
        self.state.load(Ordering::Relaxed) & TID_MASK == Self::my_tid(me)
            && self.owner_tid.load(Ordering::Relaxed) == me.thread.id
            && self.owner_start.load(Ordering::Relaxed) == me.thread.start
    }

    /// Tries once, without waiting. An abandoned lock (dead owner) is *not*
    /// taken over here: that needs a liveness check, done by the waiting paths
    /// and by [`try_lock_checked`](RawMutex::try_lock_checked).
    ///
    /// ```
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// use shmproc_core::raw_mutex::{Acquired, LockError, RawMutex};
    /// let m = RawMutex::new();
    /// let me = Owner::current();
    /// assert_eq!(m.try_lock(&me), Ok(Acquired::Locked));
    /// assert!(m.unlock(&me));
    /// ```
    #[inline]
    pub fn try_lock(&self, me: &Owner) -> Result<Acquired, LockError> {
        match self.state.compare_exchange(0, Self::my_tid(me), Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => {
                self.record(me);
                Ok(Acquired::Locked)
            }
            Err(_) => Err(LockError::WouldBlock),
        }
    }

    /// Like [`try_lock`](RawMutex::try_lock), but if the lock is held, checks
    /// the owner's liveness once and takes over from a dead owner.
    ///
    /// ```
    /// use shmproc_core::{owner::Owner, Identity};
    /// let owner = |tid: u32| Owner { thread: Identity { id: tid, start: 7 }, pid: tid };
    /// use shmproc_core::raw_mutex::{Acquired, LockError, RawMutex};
    /// let m = RawMutex::new();
    /// let _ = m.try_lock(&owner(1)).unwrap();
    /// let alive = |_: u32, _: Option<u64>| true;
    /// assert_eq!(m.try_lock_checked(&owner(2), &alive), Err(LockError::WouldBlock));
    /// let dead = |_: u32, _: Option<u64>| false;
    /// assert_eq!(m.try_lock_checked(&owner(2), &dead), Ok(Acquired::OwnerDied));
    /// ```
    pub fn try_lock_checked(&self, me: &Owner, check: &impl OwnerCheck) -> Result<Acquired, LockError> {
        loop {
            let s = self.state.load(Ordering::Relaxed);
            if s & TID_MASK == 0 {
                if self
                    .state
                    .compare_exchange(s, Self::my_tid(me) | (s & WAITERS), Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    self.record(me);
                    return Ok(Acquired::Locked);
                }
                continue;
            }
            if self.names_caller(s, me) {
                return Err(LockError::Deadlock);
            }
            if let Some(a) = self.take_over_if_dead(s, me, check) {
                return Ok(a);
            }
            if self.state.load(Ordering::Relaxed) == s {
                return Err(LockError::WouldBlock);
            }
        }
    }

    /// Locks, waiting until `deadline` (`None`: forever).
    ///
    /// ```
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// use shmproc_core::raw_mutex::{Acquired, LockError, RawMutex};
    /// use shmproc_core::Deadline;
    /// let m = RawMutex::new();
    /// let me = Owner::current();
    /// let _ = m.lock(&me, Some(Deadline::after(core::time::Duration::from_millis(10))), &ProcLiveness).unwrap();
    /// assert!(m.unlock(&me));
    /// ```
    #[inline]
    pub fn lock(&self, me: &Owner, deadline: Option<Deadline>, check: &impl OwnerCheck) -> Result<Acquired, LockError> {
        if let Ok(a) = self.try_lock(me) {
            return Ok(a);
        }
        self.lock_contended(me, deadline, check)
    }

    #[cold]
    fn lock_contended(
        &self,
        me: &Owner,
        deadline: Option<Deadline>,
        check: &impl OwnerCheck,
    ) -> Result<Acquired, LockError> {
        let mine = Self::my_tid(me);
        // Spin briefly: a critical section is often shorter than a syscall.
        for _ in 0..SPIN_LIMIT {
            let s = self.state.load(Ordering::Relaxed);
            if s == 0 {
                if let Ok(a) = self.try_lock(me) {
                    return Ok(a);
                }
            }
            if s & WAITERS != 0 {
                break;
            }
            spin_loop();
        }
        // An owner that is already dead is found before the first sleep rather
        // than after a whole liveness slice.
        let mut checked = false;
        loop {
            let s = self.state.load(Ordering::Relaxed);
            if s & TID_MASK == 0 {
                // Free (perhaps with WAITERS left set): take it, keeping the bit
                // conservatively, since we cannot know whether others sleep.
                if self.state.compare_exchange(s, mine | WAITERS, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    self.record(me);
                    return Ok(Acquired::Locked);
                }
                continue;
            }
            if self.names_caller(s, me) {
                return Err(LockError::Deadlock);
            }
            if s & WAITERS == 0
                && self.state.compare_exchange(s, s | WAITERS, Ordering::Relaxed, Ordering::Relaxed).is_err()
            {
                continue;
            }
            if !checked {
                checked = true;
                if let Some(a) = self.take_over_if_dead(s | WAITERS, me, check) {
                    return Ok(a);
                }
            }
            let slice = Deadline::after(LIVENESS_SLICE);
            match futex::wait(&self.state, s | WAITERS, Some(earliest(deadline, slice))) {
                WaitOutcome::TimedOut => {
                    if let Some(a) = self.take_over_if_dead(s | WAITERS, me, check) {
                        return Ok(a);
                    }
                    if deadline.is_some_and(|d| d.has_passed()) {
                        return Err(LockError::Timeout);
                    }
                }
                WaitOutcome::Woken | WaitOutcome::ValueChanged => {}
            }
        }
    }

    /// Whether state `s` names the caller's tid and nothing recorded says it
    /// is another thread: the caller holds the lock, or the word was forged
    /// (or left by a thread that had the caller's tid and died before
    /// recording itself). Reported as [`LockError::Deadlock`] rather than
    /// waited on: the caller is alive, so waiting for "the owner" to die or
    /// unlock would never end. A recorded identity with the caller's tid but
    /// another start time is a dead predecessor, taken over as usual.
    #[inline]
    fn names_caller(&self, s: u32, me: &Owner) -> bool {
        s & TID_MASK == Self::my_tid(me)
            && (self.owner_tid.load(Ordering::Relaxed) != me.thread.id
                || self.owner_start.load(Ordering::Relaxed) == me.thread.start)
    }

    /// Takes over a lock whose word names the caller although the caller
    /// knows, from its own private memory, that it does not hold it: the word
    /// was forged by a peer (or left by a dead thread with the caller's tid).
    /// That is a dead owner's word in effect, so the result is
    /// [`Acquired::OwnerDied`]: the protected data may be in any state.
    /// Fails with [`LockError::WouldBlock`] if the word no longer names the
    /// caller (someone else changed it: lock normally again).
    ///
    /// Only for callers that track what they hold: reclaiming a lock the
    /// caller does hold would give it two critical sections at once.
    ///
    /// ```
    /// use shmproc_core::{owner::Owner, Identity};
    /// use shmproc_core::raw_mutex::{Acquired, LockError, RawMutex};
    /// let me = Owner { thread: Identity { id: 5, start: 7 }, pid: 5 };
    /// let alive = |_: u32, _: Option<u64>| true;
    /// let m = RawMutex::new();
    /// let _ = m.try_lock(&me).unwrap(); // as if a peer wrote our identity...
    /// assert_eq!(m.try_lock_checked(&me, &alive), Err(LockError::Deadlock));
    /// // ...and we know we do not hold it: take it over.
    /// assert_eq!(m.reclaim(&me), Ok(Acquired::OwnerDied));
    /// assert!(m.unlock(&me));
    /// assert_eq!(m.reclaim(&me), Err(LockError::WouldBlock));
    /// ```
    pub fn reclaim(&self, me: &Owner) -> Result<Acquired, LockError> {
        let mine = Self::my_tid(me);
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & TID_MASK != mine {
                return Err(LockError::WouldBlock);
            }
            // Acquire, as every acquisition: pairs with the Release of
            // whoever last unlocked.
            match self.state.compare_exchange_weak(s, mine | (s & WAITERS), Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => {
                    self.record(me);
                    return Ok(Acquired::OwnerDied);
                }
                Err(cur) => s = cur,
            }
        }
    }

    /// If the word still holds `observed` and its owner is dead, takes the lock.
    fn take_over_if_dead(&self, observed: u32, me: &Owner, check: &impl OwnerCheck) -> Option<Acquired> {
        let tid = observed & TID_MASK;
        if tid == 0 {
            return None;
        }
        let recorded_tid = self.owner_tid.load(Ordering::Relaxed);
        let start = (recorded_tid & TID_MASK == tid).then(|| self.owner_start.load(Ordering::Relaxed));
        if check.is_alive(tid, start) {
            return None;
        }
        // The owner is dead: take over exactly the state we judged. If it
        // changed meanwhile, someone else took over (or it was a new owner).
        let new = Self::my_tid(me) | (observed & WAITERS);
        match self.state.compare_exchange(observed, new, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => {
                self.record(me);
                Some(Acquired::OwnerDied)
            }
            Err(_) => None,
        }
    }

    /// Unlocks. Returns false (and does nothing) if `me` does not hold it,
    /// for example a guard copied into a forked child.
    ///
    /// ```
    /// use shmproc_core::{owner::Owner, Identity};
    /// let owner = |tid: u32| Owner { thread: Identity { id: tid, start: 7 }, pid: tid };
    /// let m = shmproc_core::raw_mutex::RawMutex::new();
    /// let _ = m.try_lock(&owner(1)).unwrap();
    /// assert!(!m.unlock(&owner(2))); // not the owner: nothing happens
    /// assert!(m.unlock(&owner(1)));
    /// ```
    #[inline]
    pub fn unlock(&self, me: &Owner) -> bool {
        let mine = Self::my_tid(me);
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & TID_MASK != mine {
                return false;
            }
            self.owner_tid.store(0, Ordering::Relaxed);
            match self.state.compare_exchange_weak(s, 0, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(cur) => s = cur,
            }
        }
        if s & WAITERS != 0 {
            self.wake_one();
        }
        true
    }

    #[cold]
    fn wake_one(&self) {
        futex::wake_one(&self.state);
    }

    /// Recursive lock: if `me` already holds it, counts one more level.
    ///
    /// ```
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// use shmproc_core::raw_mutex::{Acquired, LockError, RawMutex};
    /// let m = RawMutex::new();
    /// let me = Owner::current();
    /// let _ = m.lock_recursive(&me, None, &ProcLiveness).unwrap();
    /// let _ = m.lock_recursive(&me, None, &ProcLiveness).unwrap(); // again
    /// assert!(m.unlock_recursive(&me));
    /// assert!(m.is_locked()); // one level left
    /// assert!(m.unlock_recursive(&me));
    /// assert!(!m.is_locked());
    /// ```
    pub fn lock_recursive(
        &self,
        me: &Owner,
        deadline: Option<Deadline>,
        check: &impl OwnerCheck,
    ) -> Result<Acquired, LockError> {
        if self.is_owned_by(me) {
            let n = self.recursion.load(Ordering::Relaxed);
            self.recursion.store(n.saturating_add(1), Ordering::Relaxed);
            return Ok(Acquired::Locked);
        }
        self.lock(me, deadline, check)
    }

    /// Recursive try-lock.
    ///
    /// ```
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// use shmproc_core::raw_mutex::{Acquired, LockError, RawMutex};
    /// let m = RawMutex::new();
    /// let me = Owner::current();
    /// let _ = m.try_lock_recursive(&me, &ProcLiveness).unwrap();
    /// let _ = m.try_lock_recursive(&me, &ProcLiveness).unwrap();
    /// assert!(m.unlock_recursive(&me) && m.unlock_recursive(&me));
    /// ```
    pub fn try_lock_recursive(&self, me: &Owner, check: &impl OwnerCheck) -> Result<Acquired, LockError> {
        match self.lock_recursive_probe(me) {
            Some(a) => Ok(a),
            None => self.try_lock_checked(me, check),
        }
    }

    fn lock_recursive_probe(&self, me: &Owner) -> Option<Acquired> {
        if self.is_owned_by(me) {
            let n = self.recursion.load(Ordering::Relaxed);
            self.recursion.store(n.saturating_add(1), Ordering::Relaxed);
            Some(Acquired::Locked)
        } else {
            None
        }
    }

    /// Recursive unlock: drops one level, releasing at the outermost one.
    /// Returns false if `me` does not hold it.
    ///
    /// ```
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// use shmproc_core::raw_mutex::{Acquired, LockError, RawMutex};
    /// let m = RawMutex::new();
    /// let me = Owner::current();
    /// let _ = m.lock_recursive(&me, None, &ProcLiveness).unwrap();
    /// assert!(m.unlock_recursive(&me));
    /// assert!(!m.is_locked());
    /// ```
    pub fn unlock_recursive(&self, me: &Owner) -> bool {
        if !self.is_owned_by(me) {
            return false;
        }
        let n = self.recursion.load(Ordering::Relaxed);
        if n > 0 {
            self.recursion.store(n - 1, Ordering::Relaxed);
            return true;
        }
        self.unlock(me)
    }

    /// Who holds the lock right now, if anyone.
    ///
    /// ```
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// use shmproc_core::raw_mutex::{Acquired, LockError, RawMutex};
    /// let m = RawMutex::new();
    /// assert_eq!(m.owner(&ProcLiveness), None);
    /// ```
    pub fn owner(&self, check: &impl OwnerCheck) -> Option<OwnerInfo> {
        let s = self.state.load(Ordering::Relaxed);
        let tid = s & TID_MASK;
        if tid == 0 {
            return None;
        }
        let recorded = self.owner_tid.load(Ordering::Relaxed) & TID_MASK == tid;
        let start = recorded.then(|| self.owner_start.load(Ordering::Relaxed));
        Some(OwnerInfo {
            tid,
            pid: if recorded { self.owner_pid.load(Ordering::Relaxed) } else { 0 },
            alive: check.is_alive(tid, start),
            waiters: s & WAITERS != 0,
        })
    }

    /// Whether waiters may be sleeping on the lock (a snapshot).
    ///
    /// ```
    /// let m = shmproc_core::raw_mutex::RawMutex::new();
    /// assert!(!m.has_waiters());
    /// ```
    pub fn has_waiters(&self) -> bool {
        self.state.load(Ordering::Relaxed) & WAITERS != 0
    }

    /// Whether the lock is held by anyone (a snapshot).
    ///
    /// ```
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// use shmproc_core::raw_mutex::{Acquired, LockError, RawMutex};
    /// let m = RawMutex::new();
    /// let me = Owner::current();
    /// let _ = m.try_lock(&me);
    /// assert!(m.is_locked());
    /// ```
    pub fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) & TID_MASK != 0
    }
}

impl Default for RawMutex {
    fn default() -> Self {
        RawMutex::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn owner(tid: u32) -> Owner {
        Owner { thread: Identity { id: tid, start: 7 }, pid: tid }
    }

    #[test]
    fn lock_unlock_and_ownership() {
        let m = RawMutex::new();
        let a = owner(10);
        let b = owner(11);
        let alive = |_: u32, _: Option<u64>| true;
        assert_eq!(m.try_lock(&a), Ok(Acquired::Locked));
        assert!(m.is_owned_by(&a));
        assert_eq!(m.try_lock(&b), Err(LockError::WouldBlock));
        assert_eq!(m.try_lock_checked(&b, &alive), Err(LockError::WouldBlock));
        assert_eq!(m.try_lock_checked(&a, &alive), Err(LockError::Deadlock));
        assert!(!m.unlock(&b));
        assert!(m.unlock(&a));
        assert!(!m.is_locked());
        assert_eq!(m.lock(&b, None, &alive), Ok(Acquired::Locked));
        assert!(m.unlock(&b));
    }

    #[test]
    fn dead_owner_is_taken_over() {
        let m = RawMutex::new();
        let a = owner(10);
        let b = owner(11);
        let _ = m.try_lock(&a).unwrap();
        let a_dead = |tid: u32, _: Option<u64>| tid != 10;
        assert_eq!(m.try_lock_checked(&b, &a_dead), Ok(Acquired::OwnerDied));
        assert!(m.is_owned_by(&b));
        assert!(m.unlock(&b));
        // Through the sleeping path too, with a deadline far away.
        let _ = m.try_lock(&a).unwrap();
        let d = Some(Deadline::after(Duration::from_secs(5)));
        assert_eq!(m.lock(&b, d, &a_dead), Ok(Acquired::OwnerDied));
    }

    #[test]
    fn timeout_and_garbage_state() {
        let m = RawMutex::new();
        let a = owner(10);
        let b = owner(11);
        let alive = |_: u32, _: Option<u64>| true;
        let _ = m.try_lock(&a).unwrap();
        let d = Some(Deadline::after(Duration::from_millis(30)));
        assert_eq!(m.lock(&b, d, &alive), Err(LockError::Timeout));
        // Garbage: WAITERS without an owner is simply free.
        m.state.store(WAITERS, Ordering::Relaxed);
        assert_eq!(m.lock(&b, None, &alive), Ok(Acquired::Locked));
        assert!(m.unlock(&b));
    }

    #[test]
    fn forged_word_is_reported_not_waited_on() {
        let m = RawMutex::new();
        let me = owner(10);
        let alive = |_: u32, _: Option<u64>| true;
        // Only the word names us (side fields never recorded): before, the
        // existence check of our own tid said "alive" and lock() waited forever.
        m.state.store(10, Ordering::Relaxed);
        assert_eq!(m.lock(&me, None, &alive), Err(LockError::Deadlock));
        assert_eq!(m.try_lock_checked(&me, &alive), Err(LockError::Deadlock));
        assert_eq!(m.reclaim(&me), Ok(Acquired::OwnerDied));
        assert!(m.is_owned_by(&me));
        assert!(m.unlock(&me));
        // The word and our full identity: the same report.
        m.state.store(10 | WAITERS, Ordering::Relaxed);
        m.owner_tid.store(10, Ordering::Relaxed);
        m.owner_start.store(7, Ordering::Relaxed);
        assert_eq!(m.lock(&me, None, &alive), Err(LockError::Deadlock));
        assert_eq!(m.reclaim(&me), Ok(Acquired::OwnerDied));
        assert!(m.has_waiters());
        assert!(m.unlock(&me));
        // Our tid with another start time recorded: a dead predecessor.
        m.state.store(10, Ordering::Relaxed);
        m.owner_tid.store(10, Ordering::Relaxed);
        m.owner_start.store(6, Ordering::Relaxed);
        let by_start = |_: u32, start: Option<u64>| start == Some(7);
        assert_eq!(m.lock(&me, None, &by_start), Ok(Acquired::OwnerDied));
        assert!(m.unlock(&me));
    }

    #[test]
    fn recursion() {
        let m = RawMutex::new();
        let a = owner(10);
        let b = owner(11);
        let alive = |_: u32, _: Option<u64>| true;
        let _ = m.lock_recursive(&a, None, &alive).unwrap();
        let _ = m.lock_recursive(&a, None, &alive).unwrap();
        assert_eq!(m.try_lock_recursive(&b, &alive), Err(LockError::WouldBlock));
        assert!(m.unlock_recursive(&a));
        assert!(m.is_locked());
        assert!(m.unlock_recursive(&a));
        assert!(!m.is_locked());
        assert!(!m.unlock_recursive(&a));
    }
}
