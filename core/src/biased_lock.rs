//! A robust process-shared lock that costs no atomic read-modify-write while
//! one thread keeps taking it: a [`RawMutex`] plus a *bias*.
//!
//! # Why
//!
//! A queue side (all producers, or all consumers) must be serialised, but in
//! the common single-producer single-consumer case the same thread takes the
//! same lock millions of times in a row. An uncontended compare-and-swap is
//! cheap on its own, yet on x86 every locked instruction also waits for the
//! store buffer to drain, and the previous message's index store is usually
//! waiting for a cache line the other process is polling, so one uncontended
//! CAS per side per message costs a shared-memory ring several times its
//! lock-free speed (the README's table and `cargo bench -p shmproc-benches`
//! give the current figures).
//!
//! # How
//!
//! After [`BIAS_AFTER`] consecutive acquisitions of the mutex by one thread,
//! with nobody waiting, that thread is made the lock's *bias holder*. The bias
//! holder enters and leaves critical sections by storing 1 and 0 to `busy`, a
//! line nobody else writes, with an [`asymmetric_fence::light`] fence (a
//! compiler fence) between the store of 1 and its re-check of the bias:
//!
//! ```text
//! holder:  busy = 1; light(); if bias == me { critical section; busy = 0 }
//! other:   mutex.lock(); bias = 0; heavy(); wait until busy == 0; critical section; mutex.unlock()
//! ```
//!
//! This is a Dekker handshake on (`busy`, `bias`): either the holder sees the
//! bias revoked and falls back to the mutex, or the revoker sees `busy == 1`
//! and waits until the holder leaves. Every mutex acquisition waits for
//! `busy == 0`, not only the revoking one, so a revoker that times out and
//! unlocks cannot let a later thread in beside a holder still inside. The bias
//! fields are written only under the mutex.
//!
//! The bias is granted only after a streak of uncontended acquisitions, and
//! only **once** in the lock's life: after the first revocation the lock stays
//! a plain mutex. Two reasons. A revocation costs a `membarrier` system call
//! (a few µs), so a lock that has seen contention should not flip back and
//! forth. And a second bias would be unsound with a single `busy` word: a
//! former holder that read "the bias is mine" just before it was revoked, and
//! was then descheduled, can store `busy = 1` much later, on top of the new
//! holder's critical section, and clear it again when its re-check fails,
//! letting a revoker in beside the new holder. With one bias in the lock's
//! life, the only thread that ever stores to `busy` is that one holder (and
//! waiters clearing it for a dead holder), and the handshake below covers it.
//! (The 2-process, 4-process stress test found the second-bias race.)
//!
//! # Without membarrier
//!
//! A process that cannot register for the expedited barrier uses real fences
//! on the holder side, and the handshake is then an ordinary fenced Dekker.
//! The one configuration the handshake does not cover is mixed: the holder's
//! process registered (its light fence is a compiler fence) but the revoker's
//! process cannot issue the barrier (a seccomp filter that differs between
//! the two, say). The revoker then waits a millisecond before judging `busy`,
//! so that a `busy = 1` still sitting in the holder's store buffer (drained
//! within nanoseconds in practice) is seen. That is a practical bound, not a
//! proof; run all processes of an application under the same policy.
//!
//! # Dead holders
//!
//! The mutex handles its own dead owners ([`RawMutex`]). A bias holder that
//! dies *outside* a critical section leaves `busy == 0`: it is revoked like a
//! live one and nothing is reported. One that dies *inside* leaves
//! `busy == 1`: waiters check the recorded holder's liveness (tid, pid
//! namespace and start time; fail closed, as for the mutex) before sleeping
//! and after every [`LIVENESS_SLICE`], clear `busy` and report
//! [`Held::owner_died`]. A holder recorded in another pid namespace is never
//! judged dead: waits for it end in a timeout.
//!
//! # Orderings
//!
//! Mutex hand-offs are the mutex's `Acquire`/`Release` pairing. A biased
//! critical section ends with a `Release` store of `busy = 0`, which the next
//! mutex holder reads with `Acquire` before entering. A grant is made under
//! the mutex by the thread that will hold the bias, so its own next critical
//! section follows in program order. The holder record (`tid`, `ns`, `start`, `pid`)
//! is written only under the mutex, before the grant's `Release` store of
//! `holder` and the mutex's `Release` unlock, and judged only by a waiter
//! that holds the mutex (its `Acquire`), so a judge never pairs one holder's
//! tid with another's start time; only [`BiasedLock::holder`], an unlocked
//! snapshot for inspection, may. The handshake's store-load ordering is
//! the asymmetric fence pair (see [`asymmetric_fence`]); under `cfg(loom)` both
//! are `SeqCst` fences, which the loom models check.
//!
//! # Untrusted memory
//!
//! Any `busy` value other than 0 counts as busy and any recorded holder that
//! is not a live thread is dead, so garbage makes a waiter clear `busy` and
//! report the owner dead, never wait forever.

use crate::asymmetric_fence;
use crate::cache_padded::CachePadded;
use crate::futex;
use crate::owner::{Owner, OwnerCheck};
use crate::primitive::spin_loop;
use crate::primitive::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::raw_mutex::{Acquired, LockError, OwnerInfo, RawMutex, LIVENESS_SLICE};
use crate::time::{earliest, Deadline};

/// Consecutive uncontended acquisitions by one thread before it gets the bias.
///
/// ```
/// use shmproc_core::biased_lock::{BiasedLock, Holder, BIAS_AFTER};
/// use shmproc_core::owner::{Owner, ProcLiveness};
/// let l = BiasedLock::new();
/// let me = Owner::current();
/// for _ in 0..BIAS_AFTER {
///     let h = l.lock(&me, None, &ProcLiveness).unwrap();
///     assert!(!h.is_biased());
///     l.unlock(&me, h);
/// }
/// let h = l.lock(&me, None, &ProcLiveness).unwrap();
/// assert!(h.is_biased()); // no atomic read-modify-write from here on
/// l.unlock(&me, h);
/// ```
#[cfg(not(loom))]
pub const BIAS_AFTER: u32 = 64;
/// Consecutive uncontended acquisitions by one thread before it gets the bias
/// (small, so that the models reach the biased states).
#[cfg(loom)]
pub const BIAS_AFTER: u32 = 1;

const BIASED: u64 = 1 << 63;
/// How long a revoker without the expedited barrier waits before judging
/// `busy` (see [`BiasedLock`]'s module docs, "Without membarrier").
const SETTLE: core::time::Duration = core::time::Duration::from_millis(1);
#[cfg(not(loom))]
const SPIN_LIMIT: u32 = 100;
#[cfg(loom)]
const SPIN_LIMIT: u32 = 1;

/// The lock, as laid out in shared memory.
///
/// ```
/// use shmproc_core::biased_lock::{BiasedLock, Holder, BIAS_AFTER};
/// use shmproc_core::owner::{Owner, ProcLiveness};
/// let l = BiasedLock::new(); // in real use: inside a shared region
/// let me = Owner::current();
/// let h = l.lock(&me, None, &ProcLiveness).unwrap();
/// // ... the critical section ...
/// l.unlock(&me, h);
/// assert_eq!(l.holder(&ProcLiveness), Holder::Free);
/// ```
#[repr(C, align(128))]
pub struct BiasedLock {
    /// Non-zero while the bias holder is inside a critical section.
    busy: CachePadded<AtomicU32>,
    bias: CachePadded<Bias>,
    mutex: RawMutex,
}

#[repr(C)]
struct Bias {
    /// `BIASED | tid` while a thread holds the bias, 0 otherwise.
    holder: AtomicU64,
    /// Start time of the latest bias holder (kept after a revocation, to judge
    /// whether a holder that left `busy` set is alive).
    start: AtomicU64,
    /// Thread id of the latest bias holder.
    tid: AtomicU32,
    /// Pid namespace of the latest bias holder ([`Identity::ns`](crate::Identity::ns)).
    ns: AtomicU32,
    /// Process of the latest bias holder, as its [`Owner::pid`] says (with
    /// [`KERNEL_LIVE`](crate::owner::KERNEL_LIVE) when set).
    pid: AtomicU32,
    /// The thread of the last mutex acquisitions and how many in a row.
    last: AtomicU32,
    streak: AtomicU32,
    /// How many times the bias was revoked (for inspection).
    revocations: AtomicU32,
}

/// How the lock was taken; hand it back to [`BiasedLock::unlock`].
///
/// ```
/// use shmproc_core::biased_lock::{BiasedLock, Holder, BIAS_AFTER};
/// use shmproc_core::owner::{Owner, ProcLiveness};
/// let l = BiasedLock::new();
/// let me = Owner::current();
/// let held = l.lock(&me, None, &ProcLiveness).unwrap();
/// assert!(!held.owner_died());
/// l.unlock(&me, held);
/// ```
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a held lock must be unlocked"]
pub struct Held {
    biased: bool,
    died: bool,
}

impl Held {
    /// Whether the previous holder died inside its critical section: the
    /// protected data may be half-updated.
    ///
    /// ```
    /// use shmproc_core::biased_lock::{BiasedLock, BIAS_AFTER};
    /// use shmproc_core::{owner::Owner, Identity};
    /// let owner = |tid: u32| Owner { thread: Identity { id: tid, start: 7, ns: 1 }, pid: tid };
    /// let l = BiasedLock::new();
    /// let alive = |_: u32, _: Option<u64>| true;
    /// for _ in 0..=BIAS_AFTER {
    ///     let h = l.lock(&owner(1), None, &alive).unwrap();
    ///     l.unlock(&owner(1), h);
    /// }
    /// let _inside = l.lock(&owner(1), None, &alive).unwrap(); // tid 1 dies in there
    /// let dead_1 = |tid: u32, _: Option<u64>| tid != 1;
    /// let h = l.lock(&owner(2), None, &dead_1).unwrap();
    /// assert!(h.owner_died());
    /// l.unlock(&owner(2), h);
    /// ```
    #[must_use]
    pub fn owner_died(&self) -> bool {
        self.died
    }

    /// Whether this acquisition took the bias fast path.
    ///
    /// ```
    /// use shmproc_core::biased_lock::{BiasedLock, Holder, BIAS_AFTER};
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// let l = BiasedLock::new();
    /// let me = Owner::current();
    /// let h = l.lock(&me, None, &ProcLiveness).unwrap();
    /// assert!(!h.is_biased()); // the first acquisitions go through the mutex
    /// l.unlock(&me, h);
    /// ```
    #[must_use]
    pub fn is_biased(&self) -> bool {
        self.biased
    }
}

/// Who holds a [`BiasedLock`], for inspection tools.
///
/// ```
/// use shmproc_core::biased_lock::{BiasedLock, Holder, BIAS_AFTER};
/// use shmproc_core::owner::{Owner, ProcLiveness};
/// let l = BiasedLock::new();
/// let me = Owner::current();
/// for _ in 0..BIAS_AFTER {
///     let h = l.lock(&me, None, &ProcLiveness).unwrap();
///     l.unlock(&me, h);
/// }
/// assert!(matches!(l.holder(&ProcLiveness), Holder::Biased { busy: false, alive: true, .. }));
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// Nobody.
    Free,
    /// The mutex is held.
    Locked(OwnerInfo),
    /// A thread holds the bias, or held it and is still inside the critical
    /// section it entered before the bias was revoked (`busy`).
    Biased {
        /// The bias holder's thread id.
        tid: u32,
        /// Whether it is inside a critical section.
        busy: bool,
        /// Whether it is alive.
        alive: bool,
    },
}

impl BiasedLock {
    /// An unlocked lock without bias (loom's atomics have no const constructor).
    ///
    /// ```
    /// let l = shmproc_core::biased_lock::BiasedLock::new();
    /// assert_eq!(l.revocations(), 0);
    /// ```
    #[must_use]
    pub fn new() -> BiasedLock {
        BiasedLock {
            busy: CachePadded(AtomicU32::new(0)),
            bias: CachePadded(Bias {
                holder: AtomicU64::new(0),
                start: AtomicU64::new(0),
                tid: AtomicU32::new(0),
                ns: AtomicU32::new(0),
                pid: AtomicU32::new(0),
                last: AtomicU32::new(0),
                streak: AtomicU32::new(0),
                revocations: AtomicU32::new(0),
            }),
            mutex: RawMutex::new(),
        }
    }

    /// (Re)initialises in place: unlocked, no bias.
    ///
    /// ```
    /// let l = shmproc_core::biased_lock::BiasedLock::default();
    /// l.init(); // as a region object is initialised in place
    /// assert_eq!(l.revocations(), 0);
    /// ```
    pub fn init(&self) {
        self.busy.store(0, Ordering::Relaxed);
        let b = &self.bias;
        b.holder.store(0, Ordering::Relaxed);
        b.start.store(0, Ordering::Relaxed);
        b.tid.store(0, Ordering::Relaxed);
        b.ns.store(0, Ordering::Relaxed);
        b.pid.store(0, Ordering::Relaxed);
        b.last.store(0, Ordering::Relaxed);
        b.streak.store(0, Ordering::Relaxed);
        b.revocations.store(0, Ordering::Relaxed);
        self.mutex.init();
    }

    #[inline]
    fn mine(me: &Owner) -> u64 {
        BIASED | u64::from(me.thread.id)
    }

    /// Locks, waiting until `deadline` (`None`: forever). A thread that
    /// already holds the lock gets [`LockError::Deadlock`].
    ///
    /// ```
    /// use shmproc_core::biased_lock::{BiasedLock, Holder, BIAS_AFTER};
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// use shmproc_core::Deadline;
    /// let l = BiasedLock::new();
    /// let me = Owner::current();
    /// let h = l.lock(&me, Some(Deadline::after(core::time::Duration::from_millis(10))), &ProcLiveness).unwrap();
    /// assert!(l.lock(&me, None, &ProcLiveness).is_err()); // not re-entrant
    /// l.unlock(&me, h);
    /// ```
    #[inline]
    pub fn lock(&self, me: &Owner, deadline: Option<Deadline>, check: &impl OwnerCheck) -> Result<Held, LockError> {
        match self.try_lock_biased(me)? {
            Some(held) => Ok(held),
            None => self.lock_slow(me, deadline, check),
        }
    }

    /// The bias fast path of [`lock`](BiasedLock::lock) alone: `Some` when
    /// the calling thread holds the bias and entered a critical section,
    /// `None` when it does not hold it (nothing changed: take the lock with
    /// [`lock`](BiasedLock::lock)), [`LockError::Deadlock`] when it is
    /// inside one already. For callers with a fast path of their own that
    /// needs no owner record: the bias check uses only the thread identity
    /// (`me.thread`), never `me.pid`.
    ///
    /// ```
    /// use shmproc_core::biased_lock::{BiasedLock, BIAS_AFTER};
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// let l = BiasedLock::new();
    /// let me = Owner::current();
    /// assert_eq!(l.try_lock_biased(&me), Ok(None)); // no bias yet
    /// for _ in 0..BIAS_AFTER {
    ///     let h = l.lock(&me, None, &ProcLiveness).unwrap();
    ///     l.unlock(&me, h);
    /// }
    /// let h = l.try_lock_biased(&me).unwrap().unwrap();
    /// assert!(l.try_lock_biased(&me).is_err()); // not re-entrant
    /// l.unlock(&me, h);
    /// ```
    #[inline]
    pub fn try_lock_biased(&self, me: &Owner) -> Result<Option<Held>, LockError> {
        let mine = Self::mine(me);
        if self.bias.holder.load(Ordering::Relaxed) == mine
            && self.bias.start.load(Ordering::Relaxed) == me.thread.start
            && self.bias.ns.load(Ordering::Relaxed) == me.thread.ns
        {
            if self.busy.load(Ordering::Relaxed) != 0 {
                // Only we set `busy`: this is a nested acquisition.
                return Err(LockError::Deadlock);
            }
            self.busy.store(1, Ordering::Relaxed);
            asymmetric_fence::light();
            if self.bias.holder.load(Ordering::Acquire) == mine {
                return Ok(Some(Held { biased: true, died: false }));
            }
            // Revoked meanwhile: step out, then queue on the mutex.
            self.leave_biased(mine);
        }
        Ok(None)
    }

    /// [`try_lock_biased`](BiasedLock::try_lock_biased), and on a lock
    /// whose bias was revoked (a plain mutex for the rest of its life) an
    /// uncontended acquisition of that mutex: `Some` when the calling thread
    /// entered a critical section either way, `None` when it would have to
    /// wait for a holder, judge or take over from a dead one, or keep its
    /// streak toward a bias (nothing changed: take the lock with
    /// [`lock`](BiasedLock::lock)). `owner` gives the record the mutex keeps
    /// of its holder (`me` with what the caller's liveness check needs; asked
    /// only when the mutex is tried). For callers with a fast path of their
    /// own (a queue side that several processes take turns on); an
    /// acquisition here is the one [`lock`](BiasedLock::lock) makes when it
    /// finds the mutex free, so [`unlock`](BiasedLock::unlock) hands it back.
    ///
    /// ```
    /// use shmproc_core::biased_lock::{BiasedLock, BIAS_AFTER};
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// use shmproc_core::Identity;
    /// let l = BiasedLock::new();
    /// let me = Owner::current();
    /// assert_eq!(l.try_lock_fast(&me, || me), Ok(None)); // neither biased nor revoked yet
    /// for _ in 0..BIAS_AFTER {
    ///     let h = l.lock(&me, None, &ProcLiveness).unwrap();
    ///     l.unlock(&me, h);
    /// }
    /// // Another thread's acquisition revokes the bias for good...
    /// let other = Owner { thread: Identity { id: me.thread.id + 1, ..me.thread }, ..me };
    /// let h = l.lock(&other, None, &ProcLiveness).unwrap();
    /// assert_eq!(l.try_lock_fast(&me, || me), Ok(None)); // held: wait in `lock`
    /// l.unlock(&other, h);
    /// // ...and from then on a free mutex is taken here.
    /// let h = l.try_lock_fast(&me, || me).unwrap().unwrap();
    /// assert_eq!(l.try_lock_fast(&other, || other), Ok(None));
    /// l.unlock(&me, h);
    /// ```
    #[inline]
    pub fn try_lock_fast(&self, me: &Owner, owner: impl FnOnce() -> Owner) -> Result<Option<Held>, LockError> {
        match self.try_lock_biased(me)? {
            Some(held) => Ok(Some(held)),
            None => Ok(self.try_lock_revoked(owner)),
        }
    }

    /// The second half of [`try_lock_fast`](BiasedLock::try_lock_fast), for
    /// callers that tried [`try_lock_biased`](BiasedLock::try_lock_biased)
    /// themselves and were told `None`: on a lock whose bias was revoked,
    /// an acquisition of its mutex found free; `None` otherwise, with
    /// nothing changed. The byte queue calls the halves from separate
    /// paths: its single-message fast path stays biased-only (see
    /// `byte_queue`, "The fast paths").
    ///
    /// ```
    /// use shmproc_core::biased_lock::BiasedLock;
    /// use shmproc_core::owner::Owner;
    /// let l = BiasedLock::new();
    /// let me = Owner::current();
    /// assert_eq!(l.try_lock_revoked(|| me), None); // never revoked: `lock` keeps the streak
    /// ```
    #[inline]
    pub fn try_lock_revoked(&self, owner: impl FnOnce() -> Owner) -> Option<Held> {
        if self.bias.revocations.load(Ordering::Relaxed) == 0 {
            // Never revoked: the streak toward a bias is `lock`'s to keep.
            return None;
        }
        let owner = owner();
        if self.mutex.try_lock(&owner).is_err() {
            return None;
        }
        // As every mutex acquisition (`wait_not_busy`): no biased critical
        // section may run beside this one. After the revocation `holder` is
        // 0 for good; anything else is a garbled region, left to `lock`.
        if self.bias.holder.load(Ordering::Relaxed) != 0 || self.busy.load(Ordering::Acquire) != 0 {
            let _ = self.mutex.unlock(&owner);
            return None;
        }
        Some(Held { biased: false, died: false })
    }

    #[cold]
    fn lock_slow(&self, me: &Owner, deadline: Option<Deadline>, check: &impl OwnerCheck) -> Result<Held, LockError> {
        let mut died = self.mutex.lock(me, deadline, check)? == Acquired::OwnerDied;
        let b = &self.bias;
        if b.holder.load(Ordering::Relaxed) != 0 {
            b.holder.store(0, Ordering::Relaxed);
            b.streak.store(0, Ordering::Relaxed);
            b.revocations.store(b.revocations.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
            // Pairs with the holder's light fence between `busy = 1` and its
            // re-check of `holder` (module docs).
            if !asymmetric_fence::heavy() {
                self.settle(deadline);
            }
        }
        match self.wait_not_busy(deadline, check) {
            Ok(d) => {
                died |= d;
                Ok(Held { biased: false, died })
            }
            Err(e) => {
                let _ = self.mutex.unlock(me);
                Err(e)
            }
        }
    }

    /// Without the expedited barrier (this process may not issue it, while the
    /// holder's light fence may be only a compiler fence): wait a moment so
    /// that a `busy = 1` still sitting in the holder's store buffer becomes
    /// visible before `busy` is judged. See the module docs.
    #[cold]
    fn settle(&self, deadline: Option<Deadline>) {
        let until = earliest(deadline, Deadline::after(SETTLE));
        while !until.has_passed() {
            let busy = self.busy.load(Ordering::Relaxed);
            if busy != 0 {
                return;
            }
            let _ = futex::wait(&self.busy, 0, Some(until));
        }
    }

    /// Waits (holding the mutex) until no biased critical section runs;
    /// `Ok(true)` if its holder died inside and `busy` was cleared for it.
    fn wait_not_busy(&self, deadline: Option<Deadline>, check: &impl OwnerCheck) -> Result<bool, LockError> {
        let mut spins = 0;
        loop {
            let busy = self.busy.load(Ordering::Acquire);
            if busy == 0 {
                return Ok(false);
            }
            if spins < SPIN_LIMIT {
                spins += 1;
                spin_loop();
                continue;
            }
            // Written under the mutex we hold: a consistent record.
            let tid = self.bias.tid.load(Ordering::Relaxed);
            let start = self.bias.start.load(Ordering::Relaxed);
            let ns = self.bias.ns.load(Ordering::Relaxed);
            let pid = self.bias.pid.load(Ordering::Relaxed);
            if !check.is_alive_owner(tid, Some(start), ns, pid) {
                self.busy.store(0, Ordering::Relaxed);
                return Ok(true);
            }
            if deadline.is_some_and(|d| d.has_passed()) {
                return Err(LockError::Timeout);
            }
            let slice = Deadline::after(LIVENESS_SLICE);
            let _ = futex::wait(&self.busy, busy, Some(earliest(deadline, slice)));
        }
    }

    /// Leaves a biased critical section, waking a revoker that may wait.
    #[inline]
    fn leave_biased(&self, mine: u64) {
        self.busy.store(0, Ordering::Release);
        asymmetric_fence::light();
        if self.bias.holder.load(Ordering::Relaxed) != mine {
            self.wake_revoker();
        }
    }

    #[cold]
    fn wake_revoker(&self) {
        futex::wake_all(&self.busy);
    }

    /// Unlocks what [`lock`](BiasedLock::lock) returned.
    ///
    /// ```
    /// use shmproc_core::biased_lock::{BiasedLock, Holder, BIAS_AFTER};
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// let l = BiasedLock::new();
    /// let me = Owner::current();
    /// let h = l.lock(&me, None, &ProcLiveness).unwrap();
    /// l.unlock(&me, h); // hand back what lock returned
    /// ```
    #[inline]
    pub fn unlock(&self, me: &Owner, held: Held) {
        if held.biased {
            self.leave_biased(Self::mine(me));
        } else {
            self.unlock_mutex(me);
        }
    }

    fn unlock_mutex(&self, me: &Owner) {
        let b = &self.bias;
        if b.revocations.load(Ordering::Relaxed) != 0 {
            // Never biased again (module docs): keep no streak. Storing one
            // would dirty the bias line at every unlock, and every contender
            // reads that line (`holder`, in `lock_slow`), so each hand-over
            // of a contended lock would move one more cache line.
            let _ = self.mutex.unlock(me);
            return;
        }
        if b.last.load(Ordering::Relaxed) == me.thread.id {
            let streak = b.streak.load(Ordering::Relaxed).saturating_add(1);
            if streak >= BIAS_AFTER && !self.mutex.has_waiters() {
                // Grant the bias to ourselves (module docs).
                b.streak.store(0, Ordering::Relaxed);
                b.tid.store(me.thread.id, Ordering::Relaxed);
                b.start.store(me.thread.start, Ordering::Relaxed);
                b.ns.store(me.thread.ns, Ordering::Relaxed);
                b.pid.store(me.pid, Ordering::Relaxed);
                b.holder.store(Self::mine(me), Ordering::Release);
            } else {
                b.streak.store(streak, Ordering::Relaxed);
            }
        } else {
            b.last.store(me.thread.id, Ordering::Relaxed);
            b.streak.store(1, Ordering::Relaxed);
        }
        let _ = self.mutex.unlock(me);
    }

    /// Who holds the lock (a snapshot).
    ///
    /// ```
    /// use shmproc_core::biased_lock::{BiasedLock, Holder, BIAS_AFTER};
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// let l = BiasedLock::new();
    /// let me = Owner::current();
    /// let h = l.lock(&me, None, &ProcLiveness).unwrap();
    /// assert!(matches!(l.holder(&ProcLiveness), Holder::Locked(o) if o.tid == me.thread.id));
    /// l.unlock(&me, h);
    /// ```
    pub fn holder(&self, check: &impl OwnerCheck) -> Holder {
        let busy = self.busy.load(Ordering::Relaxed) != 0;
        // A revoked holder still inside its critical section counts too.
        if busy || self.bias.holder.load(Ordering::Relaxed) & BIASED != 0 {
            // A snapshot without the mutex: the fields may belong to two
            // successive holders (inspection only).
            let tid = self.bias.tid.load(Ordering::Acquire);
            let start = self.bias.start.load(Ordering::Relaxed);
            let ns = self.bias.ns.load(Ordering::Relaxed);
            let pid = self.bias.pid.load(Ordering::Relaxed);
            return Holder::Biased { tid, busy, alive: check.is_alive_owner(tid, Some(start), ns, pid) };
        }
        match self.mutex.owner(check) {
            Some(o) => Holder::Locked(o),
            None => Holder::Free,
        }
    }

    /// Whether anyone holds the lock now: a snapshot that does not touch
    /// the lock's words, for a caller deciding whether trying is worth it
    /// (a laned queue's receivers skip lanes whose side another holds).
    ///
    /// ```
    /// use shmproc_core::biased_lock::BiasedLock;
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// let l = BiasedLock::new();
    /// let me = Owner::current();
    /// assert!(!l.is_held());
    /// let h = l.lock(&me, None, &ProcLiveness).unwrap();
    /// assert!(l.is_held());
    /// l.unlock(&me, h);
    /// assert!(!l.is_held());
    /// ```
    #[inline]
    #[must_use]
    pub fn is_held(&self) -> bool {
        self.busy.load(Ordering::Relaxed) != 0 || self.mutex.is_locked()
    }

    /// How many times a bias was revoked (a snapshot, for inspection).
    ///
    /// ```
    /// use shmproc_core::biased_lock::{BiasedLock, BIAS_AFTER};
    /// use shmproc_core::{owner::Owner, Identity};
    /// let owner = |tid: u32| Owner { thread: Identity { id: tid, start: 7, ns: 1 }, pid: tid };
    /// let alive = |_: u32, _: Option<u64>| true;
    /// let l = BiasedLock::new();
    /// for _ in 0..BIAS_AFTER {
    ///     let h = l.lock(&owner(1), None, &alive).unwrap();
    ///     l.unlock(&owner(1), h);
    /// }
    /// let h = l.lock(&owner(2), None, &alive).unwrap(); // revokes tid 1's bias
    /// l.unlock(&owner(2), h);
    /// assert_eq!(l.revocations(), 1);
    /// ```
    pub fn revocations(&self) -> u32 {
        self.bias.revocations.load(Ordering::Relaxed)
    }
}

impl Default for BiasedLock {
    fn default() -> Self {
        BiasedLock::new()
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
    fn streak_grants_bias_and_contention_revokes_it() {
        let l = BiasedLock::new();
        let (a, b) = (owner(1), owner(2));
        let alive = |_: u32, _: Option<u64>| true;
        for _ in 0..BIAS_AFTER {
            let h = l.lock(&a, None, &alive).unwrap();
            assert!(!h.is_biased());
            l.unlock(&a, h);
        }
        assert_eq!(l.holder(&alive), Holder::Biased { tid: 1, busy: false, alive: true });
        let h = l.lock(&a, None, &alive).unwrap();
        assert!(h.is_biased());
        assert_eq!(l.lock(&a, None, &alive), Err(LockError::Deadlock));
        // While the holder is inside, another thread times out...
        assert_eq!(
            l.lock(&b, Some(Deadline::after(core::time::Duration::from_millis(30))), &alive),
            Err(LockError::Timeout)
        );
        // ...and the holder, revoked meanwhile, finishes normally.
        l.unlock(&a, h);
        let hb = l.lock(&b, None, &alive).unwrap();
        assert!(!hb.is_biased() && !hb.owner_died());
        assert_eq!(l.revocations(), 1);
        l.unlock(&b, hb);
        // The former holder now goes through the mutex, and no streak brings a
        // second bias.
        for _ in 0..2 * BIAS_AFTER {
            let h = l.lock(&a, None, &alive).unwrap();
            assert!(!h.is_biased());
            l.unlock(&a, h);
        }
        assert!(matches!(l.holder(&alive), Holder::Free));
    }

    #[test]
    fn holder_dead_inside_is_reported_once() {
        let l = BiasedLock::new();
        let (a, b) = (owner(1), owner(2));
        let alive = |_: u32, _: Option<u64>| true;
        for _ in 0..BIAS_AFTER {
            let h = l.lock(&a, None, &alive).unwrap();
            l.unlock(&a, h);
        }
        let h = l.lock(&a, None, &alive).unwrap();
        assert!(h.is_biased());
        // `a` dies holding it.
        let a_dead = |t: u32, _: Option<u64>| t != 1;
        let hb = l.lock(&b, None, &a_dead).unwrap();
        assert!(hb.owner_died());
        l.unlock(&b, hb);
        let hb = l.lock(&b, None, &a_dead).unwrap();
        assert!(!hb.owner_died());
        l.unlock(&b, hb);
    }

    #[test]
    fn garbage_busy_with_dead_holder_is_cleared() {
        let l = BiasedLock::new();
        l.busy.store(0xdead_beef, Ordering::Relaxed);
        l.bias.tid.store(0x3fff_fff0, Ordering::Relaxed);
        let b = owner(2);
        let h = l.lock(&b, None, &|t: u32, _: Option<u64>| t == 2).unwrap();
        assert!(h.owner_died());
        l.unlock(&b, h);
    }
}
