//! A robust, process-shared mutex on one futex word.
//!
//! # State
//!
//! The 32-bit state word uses the layout of the kernel's robust futexes:
//!
//! * bits 0..30 ([`TID_MASK`]): the owner's thread id, 0 when unlocked;
//! * bit 30 ([`HOME`]): the owner lives in the lock's *home* pid namespace
//!   (`home_ns`, the namespace of the first thread that locked it), so its
//!   tid can be judged there even before its record is complete;
//! * bit 31 ([`WAITERS`]): someone may be sleeping on the word, so unlock must
//!   wake.
//!
//! Beside the word, the owner records its identity (tid, pid namespace,
//! thread start time, pid) in side fields right after acquiring. They are what
//! lets a waiter tell a dead owner from a slow one.
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
//! The check fails closed ([`OwnerCheck`], [`crate::identity`]): an owner is
//! dead only on proof, which a tid can give only in the waiter's own pid
//! namespace. An owner recorded in another pid namespace (or an unknown one:
//! no `/proc`, a `/proc` of another namespace) is taken over only if the
//! check can prove its process's death otherwise: the recorded pid carries
//! [`KERNEL_LIVE`] when the owner's process held a kernel-kept liveness
//! record on the region's file, which the std crate's check reads
//! ([`OwnerCheck::is_alive_owner`]). Without that, waits with a deadline end
//! in [`LockError::Timeout`] and waits without one keep waiting.
//!
//! If the owner died between its compare-and-swap and completing its record
//! (or between clearing its record and its unlocking swap), the record does
//! not match the word. When the word carries [`HOME`], the owner's namespace
//! is `home_ns`, and a waiter in that namespace judges the tid at once: a
//! tid that does not exist there (or is a zombie) is dead; one that exists
//! is waited on. That is every owner in the common case of one namespace,
//! and it lets a non-blocking `try_lock_checked` recover such a lock too
//! (a consumer SIGKILLed in the middle of unlocking otherwise left its queue
//! looking empty to `try_recv`). A tid reused in the home namespace is alive,
//! so it is never taken for the dead owner.
//!
//! Without [`HOME`] (or for a waiter of another namespace), nothing says
//! which namespace the tid belongs to. A waiter that sees the *same*
//! unrecorded word for [`UNRECORDED_GRACE`] then falls back to "does this
//! tid exist at all (in my namespace)". This is the one practical bound in
//! the scheme: a live owner of another pid namespace, frozen for that long
//! between two adjacent instructions, whose tid does not exist in the
//! waiter's namespace, would be taken over.
//!
//! # Orderings
//!
//! Acquiring is a compare-and-swap with `Acquire` on success, releasing a
//! `Release` swap to 0: the usual lock pairing, so everything written under the
//! lock happens-before the next owner's critical section.
//!
//! The owner record is a seqlock whose sequence is `owner_id`
//! (`ns << 32 | tid`; 0 = no complete record):
//!
//! * unlocking stores `owner_id = 0` before its `Release` swap of the word
//!   (a takeover from a dead owner stores it right after its compare-and-swap);
//!   the next owner, right after acquiring, issues a `Release` fence, stores
//!   `owner_start` and `owner_pid` (`Relaxed`), then stores `owner_id` with
//!   `Release`;
//! * a judge loads the word with `Acquire`, then `owner_id` with `Acquire`,
//!   the start time and pid (`Relaxed`), an `Acquire` fence, and `owner_id`
//!   again; the record counts only if both `owner_id` loads agree and name
//!   the word's tid.
//!
//! So a start time is never paired with another owner's tid or namespace: if
//! the judge read a start time stored by a later owner, that owner's
//! `Release` fence synchronises with the judge's `Acquire` fence, and the
//! second `owner_id` load sees that owner's 0 (or its new id), not the old
//! one. On a weakly ordered CPU (ARM) `Relaxed` stores of tid and start could
//! otherwise be seen in either order, pairing a new tid with an old start
//! time and judging a live owner dead. The `Acquire` load of the word rules
//! out a record older than the word: reading the word a new owner set
//! synchronises with the previous owner's unlock, which cleared `owner_id`
//! first. After a "dead" verdict the judge reads the word and the record
//! again and gives up if either changed: an owner proven dead has done
//! nothing since, so a change means it unlocked before dying, and the same
//! word may now belong to a new owner with the same tid (two containers'
//! main threads are both tid 1). Taking over is then a compare-and-swap on
//! the exact word judged. (The loom model
//! `loom_mutex_owner_record_is_never_torn` found that race.)
//!
//! `recursion` is touched only by the owner. The `WAITERS` bit
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
use crate::owner::{Owner, OwnerCheck, KERNEL_LIVE};
use crate::primitive::spin_loop;
use crate::primitive::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
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
/// State bit: the owner's pid namespace is the lock's home namespace (module
/// docs, "Dead owners").
///
/// ```
/// use shmproc_core::raw_mutex::{HOME, TID_MASK, WAITERS};
/// assert_eq!(HOME & (TID_MASK | WAITERS), 0);
/// ```
pub const HOME: u32 = 0x4000_0000;
/// How often a sleeping waiter checks whether the owner is still alive.
///
/// ```
/// use shmproc_core::raw_mutex::LIVENESS_SLICE;
/// assert_eq!(LIVENESS_SLICE, core::time::Duration::from_millis(20));
/// ```
pub const LIVENESS_SLICE: Duration = Duration::from_millis(20);
/// How long a waiter watches the same owner without a complete record (it
/// died, or stalls, between its compare-and-swap and its record) before it
/// judges that owner by tid existence alone (module docs, "Dead owners").
///
/// ```
/// use shmproc_core::raw_mutex::UNRECORDED_GRACE;
/// assert_eq!(UNRECORDED_GRACE, core::time::Duration::from_millis(500));
/// ```
pub const UNRECORDED_GRACE: Duration = Duration::from_millis(500);
const SPIN_LIMIT: u32 = 100;

/// How a lock was obtained.
///
/// ```
/// use shmproc_core::{owner::Owner, Identity};
/// let owner = |tid: u32| Owner { thread: Identity { id: tid, start: 7, ns: 1 }, pid: tid };
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
/// let owner = |tid: u32| Owner { thread: Identity { id: tid, start: 7, ns: 1 }, pid: tid };
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
    owner_pid: AtomicU32,
    /// `ns << 32 | tid` of the owner whose record is complete; 0 otherwise
    /// (the seqlock sequence of the module docs).
    owner_id: AtomicU64,
    owner_start: AtomicU64,
    /// Extra acquisitions by the owner (recursive use only).
    recursion: AtomicU32,
    /// The pid namespace of the first thread that locked it (0: none yet);
    /// owners of this namespace set [`HOME`] in the word.
    home_ns: AtomicU32,
}

/// A consistent owner record (module docs, "Orderings").
#[derive(Copy, Clone, PartialEq, Eq)]
struct Record {
    tid: u32,
    ns: u32,
    start: u64,
    pid: u32,
}

/// What a waiter concluded about the owner in the word it observed.
enum Verdict {
    /// Taken over from a dead owner.
    TookOver(Acquired),
    /// Alive, not provably dead, or the word changed meanwhile.
    Wait,
    /// The owner's record is incomplete (module docs).
    Unrecorded,
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
            owner_pid: AtomicU32::new(0),
            owner_id: AtomicU64::new(0),
            owner_start: AtomicU64::new(0),
            recursion: AtomicU32::new(0),
            home_ns: AtomicU32::new(0),
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
            owner_pid: AtomicU32::new(0),
            owner_id: AtomicU64::new(0),
            owner_start: AtomicU64::new(0),
            recursion: AtomicU32::new(0),
            home_ns: AtomicU32::new(0),
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
        self.owner_id.store(0, Ordering::Relaxed);
        self.owner_start.store(0, Ordering::Relaxed);
        self.owner_pid.store(0, Ordering::Relaxed);
        self.recursion.store(0, Ordering::Relaxed);
        self.home_ns.store(0, Ordering::Relaxed);
        self.state.store(0, Ordering::Release);
    }

    /// Publishes the owner record (the writer side of the seqlock in the
    /// module docs).
    /// `owner_id` is 0 here: cleared by the previous owner's unlock (which
    /// our `Acquire` compare-and-swap follows), by `init`, or by a takeover.
    #[inline]
    fn record(&self, me: &Owner) {
        fence(Ordering::Release);
        self.owner_start.store(me.thread.start, Ordering::Relaxed);
        self.owner_pid.store(me.pid, Ordering::Relaxed);
        self.recursion.store(0, Ordering::Relaxed);
        self.owner_id.store(Self::id_word(me), Ordering::Release);
    }

    #[inline]
    fn id_word(me: &Owner) -> u64 {
        (u64::from(me.thread.ns) << 32) | u64::from(me.thread.id)
    }

    /// The record of the owner of word `s`, if complete and consistent (the
    /// reader side of the seqlock in the module docs). The caller loaded `s`
    /// with `Acquire`.
    fn recorded(&self, s: u32) -> Option<Record> {
        let id = self.owner_id.load(Ordering::Acquire);
        let tid = id as u32;
        if tid == 0 || tid & TID_MASK != s & TID_MASK {
            return None;
        }
        let start = self.owner_start.load(Ordering::Relaxed);
        let pid = self.owner_pid.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        (self.owner_id.load(Ordering::Relaxed) == id).then_some(Record { tid, ns: (id >> 32) as u32, start, pid })
    }

    #[inline]
    fn my_tid(me: &Owner) -> u32 {
        me.thread.id & TID_MASK
    }

    /// The word `me` stores as owner: its tid, with [`HOME`] if it lives in
    /// the lock's home namespace (which the first locker with a known
    /// namespace sets). `home_ns` is written once and only read as a hint
    /// for the judges, so `Relaxed` suffices: a judge that does not see it
    /// yet reads 0, an unknown namespace, and fails closed.
    #[inline]
    fn my_word(&self, me: &Owner) -> u32 {
        let ns = me.thread.ns;
        let mut home = self.home_ns.load(Ordering::Relaxed);
        if home == 0 && ns != 0 {
            home = match self.home_ns.compare_exchange(0, ns, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => ns,
                Err(h) => h,
            };
        }
        Self::my_tid(me) | if ns != 0 && home == ns { HOME } else { 0 }
    }

    /// Whether `me` is the recorded owner (tid in the word and matching start
    /// time, so a reused tid is not mistaken for the owner).
    ///
    /// ```
    /// use shmproc_core::{owner::Owner, Identity};
    /// let owner = |tid: u32| Owner { thread: Identity { id: tid, start: 7, ns: 1 }, pid: tid };
    /// let m = shmproc_core::raw_mutex::RawMutex::new();
    /// let _ = m.try_lock(&owner(1)).unwrap();
    /// assert!(m.is_owned_by(&owner(1)));
    /// // Same tid, another start time: a reused tid is not the owner.
    /// let reused = Owner { thread: Identity { id: 1, start: 8, ns: 1 }, pid: 1 };
    /// assert!(!m.is_owned_by(&reused));
    /// ```
    pub fn is_owned_by(&self, me: &Owner) -> bool {
        self.state.load(Ordering::Relaxed) & TID_MASK == Self::my_tid(me)
            && self.owner_id.load(Ordering::Relaxed) == Self::id_word(me)
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
        match self.state.compare_exchange(0, self.my_word(me), Ordering::Acquire, Ordering::Relaxed) {
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
    /// let owner = |tid: u32| Owner { thread: Identity { id: tid, start: 7, ns: 1 }, pid: tid };
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
                    .compare_exchange(s, self.my_word(me) | (s & WAITERS), Ordering::Acquire, Ordering::Relaxed)
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
            if let Verdict::TookOver(a) = self.take_over_if_dead(s, me, check) {
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
        if deadline.is_some_and(|d| d.has_passed()) {
            return self.lock_now(me, check);
        }
        self.lock_contended(me, deadline, check)
    }

    /// A lock whose deadline has passed already (a `try_` call): one
    /// liveness verdict on the holder, as
    /// [`try_lock_checked`](RawMutex::try_lock_checked), and no spinning and no `WAITERS` bit,
    /// which would cost the holder a wake-up call at its unlock for a
    /// waiter that is not going to sleep.
    #[cold]
    fn lock_now(&self, me: &Owner, check: &impl OwnerCheck) -> Result<Acquired, LockError> {
        match self.try_lock_checked(me, check) {
            Err(LockError::WouldBlock) => Err(LockError::Timeout),
            r => r,
        }
    }

    #[cold]
    fn lock_contended(
        &self,
        me: &Owner,
        deadline: Option<Deadline>,
        check: &impl OwnerCheck,
    ) -> Result<Acquired, LockError> {
        let mine = self.my_word(me);
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
        // The unrecorded word last seen, and when its grace ends.
        let mut unrecorded: Option<(u32, Deadline)> = None;
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
                if let Some(a) = self.judge(s | WAITERS, me, check, &mut unrecorded) {
                    return Ok(a);
                }
            }
            let slice = Deadline::after(LIVENESS_SLICE);
            match futex::wait(&self.state, s | WAITERS, Some(earliest(deadline, slice))) {
                WaitOutcome::TimedOut => {
                    if let Some(a) = self.judge(s | WAITERS, me, check, &mut unrecorded) {
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
    /// unlock would never end. A record of the caller's tid with another
    /// start time (a dead predecessor, taken over as usual), or in another
    /// known pid namespace (a live thread elsewhere with the same number:
    /// two containers' main threads are both tid 1), is not the caller.
    #[inline]
    fn names_caller(&self, s: u32, me: &Owner) -> bool {
        if s & TID_MASK != Self::my_tid(me) {
            return false;
        }
        match self.recorded(s) {
            Some(r) if r.tid == me.thread.id => {
                let other_ns = r.ns != 0 && me.thread.ns != 0 && r.ns != me.thread.ns;
                !other_ns && r.start == me.thread.start
            }
            _ => true,
        }
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
    /// let me = Owner { thread: Identity { id: 5, start: 7, ns: 1 }, pid: 5 };
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
            match self.state.compare_exchange_weak(
                s,
                self.my_word(me) | (s & WAITERS),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.record(me);
                    return Ok(Acquired::OwnerDied);
                }
                Err(cur) => s = cur,
            }
        }
    }

    /// One judgement of a waiting `lock`: takes over from a dead owner, and
    /// from an unrecorded one once the same word has stayed unrecorded for
    /// [`UNRECORDED_GRACE`] (module docs).
    fn judge(
        &self,
        observed: u32,
        me: &Owner,
        check: &impl OwnerCheck,
        unrecorded: &mut Option<(u32, Deadline)>,
    ) -> Option<Acquired> {
        match self.take_over_if_dead(observed, me, check) {
            Verdict::TookOver(a) => Some(a),
            Verdict::Wait => {
                *unrecorded = None;
                None
            }
            Verdict::Unrecorded => match *unrecorded {
                Some((word, grace)) if word == observed => {
                    if grace.has_passed() {
                        self.take_over(observed, me, check.is_alive(observed & TID_MASK, None))
                    } else {
                        None
                    }
                }
                _ => {
                    *unrecorded = Some((observed, Deadline::after(UNRECORDED_GRACE)));
                    None
                }
            },
        }
    }

    /// If the word still holds `observed` and its recorded owner is dead,
    /// takes the lock.
    fn take_over_if_dead(&self, observed: u32, me: &Owner, check: &impl OwnerCheck) -> Verdict {
        let tid = observed & TID_MASK;
        if tid == 0 || self.state.load(Ordering::Acquire) != observed {
            return Verdict::Wait;
        }
        let Some(r) = self.recorded(observed) else { return self.judge_unrecorded(observed, me, check) };
        if check.is_alive_owner(r.tid, Some(r.start), r.ns, r.pid) {
            return Verdict::Wait;
        }
        // The verdict took time. A dead owner changes nothing afterwards, so
        // the record must be unchanged; if it changed, the judged owner
        // unlocked before it died, and the word may now be a new owner's
        // with the same tid (another namespace's, or a reused one).
        if self.state.load(Ordering::Acquire) != observed || self.recorded(observed) != Some(r) {
            return Verdict::Wait;
        }
        match self.take_over(observed, me, false) {
            Some(a) => Verdict::TookOver(a),
            None => Verdict::Wait,
        }
    }

    /// An owner without a complete record: judged at once if the word says
    /// it lives in the home namespace (module docs, "Dead owners"), else
    /// left to the grace of [`judge`](RawMutex::judge).
    fn judge_unrecorded(&self, observed: u32, me: &Owner, check: &impl OwnerCheck) -> Verdict {
        if observed & HOME == 0 {
            return Verdict::Unrecorded;
        }
        // 0: the first locker's store is not visible here yet (it is a hint,
        // not synchronised with the word): no verdict without the grace.
        let home = self.home_ns.load(Ordering::Relaxed);
        if home == 0 {
            return Verdict::Unrecorded;
        }
        if check.is_alive_in(observed & TID_MASK, None, home) {
            return Verdict::Wait;
        }
        // A dead owner changes nothing: if the word or the record moved
        // during the verdict, a new owner (a live tid, so not this one in
        // the home namespace) may hold it.
        if self.state.load(Ordering::Acquire) != observed || self.recorded(observed).is_some() {
            return Verdict::Wait;
        }
        match self.take_over(observed, me, false) {
            Some(a) => Verdict::TookOver(a),
            None => Verdict::Wait,
        }
    }

    /// Takes over exactly the state judged, unless the owner is `alive`. If
    /// the word changed meanwhile, someone else took over (or it was a new
    /// owner).
    fn take_over(&self, observed: u32, me: &Owner, alive: bool) -> Option<Acquired> {
        if alive {
            return None;
        }
        let new = self.my_word(me) | (observed & WAITERS);
        match self.state.compare_exchange(observed, new, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => {
                // The dead owner's record is still there: invalidate it first.
                self.owner_id.store(0, Ordering::Relaxed);
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
    /// let owner = |tid: u32| Owner { thread: Identity { id: tid, start: 7, ns: 1 }, pid: tid };
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
            self.owner_id.store(0, Ordering::Relaxed);
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
        let s = self.state.load(Ordering::Acquire);
        let tid = s & TID_MASK;
        if tid == 0 {
            return None;
        }
        let (pid, alive) = match self.recorded(s) {
            Some(r) => (r.pid & !KERNEL_LIVE, check.is_alive_owner(r.tid, Some(r.start), r.ns, r.pid)),
            None => (0, check.is_alive(tid, None)),
        };
        Some(OwnerInfo { tid, pid, alive, waiters: s & WAITERS != 0 })
    }

    /// For a waiter that sleeps elsewhere (an async task's helper thread):
    /// the state word and the value to wait on while the lock is held, with
    /// [`WAITERS`] set so that the owner's unlock wakes the word; `None` if
    /// the lock is free now (try again). A wake-up such a waiter receives
    /// and does not use must be passed on (`futex::wake_one` on the word).
    ///
    /// ```
    /// use shmproc_core::raw_mutex::{RawMutex, WAITERS};
    /// let m = RawMutex::new();
    /// assert!(m.wait_word().is_none()); // free
    /// let me = shmproc_core::owner::Owner::current();
    /// let _ = m.try_lock(&me).unwrap();
    /// let (word, expected) = m.wait_word().expect("held");
    /// assert_eq!(word.load(core::sync::atomic::Ordering::Relaxed), expected);
    /// assert!(expected & WAITERS != 0 && m.has_waiters());
    /// ```
    pub fn wait_word(&self) -> Option<(&AtomicU32, u32)> {
        loop {
            let s = self.state.load(Ordering::Relaxed);
            if s & TID_MASK == 0 {
                return None;
            }
            if s & WAITERS != 0
                || self.state.compare_exchange(s, s | WAITERS, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                return Some((&self.state, s | WAITERS));
            }
        }
    }

    /// Wakes one waiter sleeping on the word: passes on a wake-up that a
    /// [`wait_word`](RawMutex::wait_word) waiter received and did not use.
    ///
    /// ```
    /// let m = shmproc_core::raw_mutex::RawMutex::new();
    /// m.wake_waiter(); // nobody sleeps: nothing happens
    /// ```
    pub fn wake_waiter(&self) {
        futex::wake_one(&self.state);
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
        Owner { thread: Identity { id: tid, start: 7, ns: 1 }, pid: tid }
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
    fn a_lock_past_its_deadline_is_one_try() {
        let m = RawMutex::new();
        let a = owner(10);
        let b = owner(11);
        let alive = |_: u32, _: Option<u64>| true;
        let _ = m.try_lock(&a).unwrap();
        // A `try_` call: it fails at once and does not mark the lock as
        // waited on (that would make the holder's unlock a wake-up call).
        assert_eq!(m.lock(&b, Some(Deadline::EXPIRED), &alive), Err(LockError::Timeout));
        assert!(!m.has_waiters());
        // Re-entry and a dead holder are still reported by the one try.
        assert_eq!(m.lock(&a, Some(Deadline::EXPIRED), &alive), Err(LockError::Deadlock));
        let a_dead = |tid: u32, _: Option<u64>| tid != 10;
        assert_eq!(m.lock(&b, Some(Deadline::EXPIRED), &a_dead), Ok(Acquired::OwnerDied));
        assert!(m.is_owned_by(&b));
        assert!(m.unlock(&b));
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
        m.record(&me);
        assert_eq!(m.lock(&me, None, &alive), Err(LockError::Deadlock));
        assert_eq!(m.reclaim(&me), Ok(Acquired::OwnerDied));
        assert!(m.has_waiters());
        assert!(m.unlock(&me));
        // Our tid with another start time recorded: a dead predecessor.
        m.state.store(10, Ordering::Relaxed);
        m.record(&Owner { thread: Identity { id: 10, start: 6, ns: 1 }, pid: 10 });
        let by_start = |_: u32, start: Option<u64>| start == Some(7);
        assert_eq!(m.lock(&me, None, &by_start), Ok(Acquired::OwnerDied));
        assert!(m.unlock(&me));
        // Our tid in another pid namespace: a live thread elsewhere, waited
        // for (not reported as ours, never reclaimed by a caller that trusts
        // the report).
        m.state.store(10, Ordering::Relaxed);
        m.record(&Owner { thread: Identity { id: 10, start: 7, ns: 2 }, pid: 10 });
        assert_eq!(m.try_lock_checked(&me, &alive), Err(LockError::WouldBlock));
    }

    /// An owner that died between clearing its record and its unlocking swap
    /// (or between its swap and its record) leaves an unrecorded word. With
    /// [`HOME`] a waiter of the home namespace judges it at once, even
    /// without waiting (`try_lock_checked`); without it, only a blocking
    /// `lock` recovers it, after [`UNRECORDED_GRACE`].
    #[test]
    fn unrecorded_home_owner_is_judged_at_once() {
        /// Tid 10 is dead; anything else is alive. Calls judged in a namespace
        /// other than 1 count as alive (as `ProcLiveness` fails closed).
        struct Check;
        impl OwnerCheck for Check {
            fn is_alive(&self, tid: u32, _: Option<u64>) -> bool {
                tid != 10
            }
            fn is_alive_in(&self, tid: u32, start: Option<u64>, ns: u32) -> bool {
                ns != 1 || self.is_alive(tid, start)
            }
        }
        let m = RawMutex::new();
        let (a, b, c) = (owner(10), owner(11), owner(12));
        let _ = m.try_lock(&a).unwrap();
        assert_eq!(m.state.load(Ordering::Relaxed), 10 | HOME, "the first locker's namespace is home");
        // A dies in the middle of unlocking: record cleared, word still set.
        m.owner_id.store(0, Ordering::Relaxed);
        assert_eq!(m.try_lock_checked(&b, &Check), Ok(Acquired::OwnerDied));
        assert!(m.unlock(&b));
        // A live unrecorded owner of the home namespace is waited for.
        m.state.store(12 | HOME, Ordering::Relaxed);
        assert_eq!(m.try_lock_checked(&b, &Check), Err(LockError::WouldBlock));
        m.state.store(0, Ordering::Relaxed);
        // An owner of another namespace: no HOME, so no verdict without the
        // grace (a tid means nothing across namespaces).
        let foreign = Owner { thread: Identity { id: 10, start: 7, ns: 2 }, pid: 10 };
        let _ = m.try_lock(&foreign).unwrap();
        assert_eq!(m.state.load(Ordering::Relaxed), 10);
        m.owner_id.store(0, Ordering::Relaxed);
        assert_eq!(m.try_lock_checked(&c, &Check), Err(LockError::WouldBlock));
        let d = Some(Deadline::after(Duration::from_millis(50)));
        assert_eq!(m.lock(&c, d, &Check), Err(LockError::Timeout));
        assert_eq!(m.lock(&c, None, &Check), Ok(Acquired::OwnerDied), "after the grace");
        assert!(m.unlock(&c));
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
