//! A barrier for `n` parties (Python's `Barrier`) that breaks instead of
//! hanging.
//!
//! Arrival bookkeeping (`count`, the arrival records, `broken`) is protected by
//! an internal [`RawMutex`], so it inherits that lock's dead-owner recovery;
//! `generation` is the futex word parties sleep on. The last party to arrive
//! bumps `generation` (with `Release`, read with `Acquire` by the sleepers, so
//! everything done before the barrier is visible after it) and wakes everyone.
//!
//! # Breaking
//!
//! The barrier becomes *broken* (every current and future `wait` fails with
//! [`BarrierError::Broken`] until [`reset`](RawBarrier::reset)) when:
//!
//! * a waiting party's deadline passes (that party gets
//!   [`BarrierError::Timeout`], the others `Broken`), as in Python;
//! * [`abort`](RawBarrier::abort) is called;
//! * a party that has arrived in the current generation dies before the
//!   barrier trips: sleepers check the recorded arrivals' liveness every
//!   [`LIVENESS_SLICE`], and the last party checks them before it trips the
//!   barrier (so a death no sleeper noticed yet, as the only other party's
//!   in a two-party barrier, breaks it instead of tripping with a dead
//!   party; the last party then gets `Broken` too);
//! * a party died while updating the bookkeeping (owner-died on the internal
//!   lock), or the bookkeeping holds impossible values.
//!
//! A party that dies *before* arriving cannot be told from a slow one: use a
//! deadline (`wait` with a timeout) when that matters. The first
//! [`MAX_TRACKED`] arrivals of a generation are tracked for liveness.

use crate::futex::{self, WaitOutcome};
use crate::owner::{Owner, OwnerCheck};
use crate::primitive::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::raw_mutex::{Acquired, RawMutex, LIVENESS_SLICE};
use crate::region::{kind, RegionObject};
use crate::time::{earliest, Deadline};

/// Arrivals per generation whose liveness is tracked.
///
/// ```
/// use shmproc_core::barrier::MAX_TRACKED;
/// // Liveness is tracked for this many waiting parties; more parties still
/// // work, the extra ones are just not checked for death.
/// assert_eq!(MAX_TRACKED, 64);
/// ```
pub const MAX_TRACKED: usize = 64;

/// Why a barrier wait failed.
///
/// ```
/// use shmproc_core::barrier::{BarrierError, RawBarrier};
/// use shmproc_core::owner::{Owner, ProcLiveness};
/// // SAFETY: a RawBarrier is atomics only, valid when zeroed; init sets it up.
/// let b: Box<RawBarrier> = Box::new(unsafe { core::mem::zeroed() });
/// b.init(2);
/// let me = Owner::current();
/// let r = b.wait(&me, Some(shmproc_core::Deadline::after(core::time::Duration::from_millis(5))), &ProcLiveness);
/// assert_eq!(r, Err(BarrierError::Timeout));
/// assert_eq!(b.wait(&me, None, &ProcLiveness), Err(BarrierError::Broken));
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BarrierError {
    /// The barrier is broken (a party timed out, died, or `abort` was called).
    Broken,
    /// This party's deadline passed; the barrier is now broken for the others.
    Timeout,
}

/// A successful wait.
///
/// ```
/// use shmproc_core::barrier::{BarrierError, RawBarrier};
/// use shmproc_core::owner::{Owner, ProcLiveness};
/// // SAFETY: a RawBarrier is atomics only, valid when zeroed; init sets it up.
/// let b: Box<RawBarrier> = Box::new(unsafe { core::mem::zeroed() });
/// b.init(1);
/// let w = b.wait(&Owner::current(), None, &ProcLiveness).unwrap();
/// assert_eq!((w.index, w.leader), (0, true));
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BarrierWait {
    /// Arrival index in `0..parties` (Python's return value of `wait`).
    pub index: u32,
    /// Exactly one party per generation is the leader (the last to arrive).
    pub leader: bool,
}

/// A party's arrival at a [`RawBarrier`] ([`RawBarrier::arrive`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Arrived {
    /// The generation it arrived in.
    pub generation: u32,
    /// Its arrival index.
    pub index: u32,
    /// Whether it was the last party (the barrier tripped).
    pub leader: bool,
}

#[repr(C)]
struct Arrival {
    tid: AtomicU32,
    /// The party's pid namespace ([`Identity::ns`](crate::Identity::ns)).
    ns: AtomicU32,
    start: AtomicU64,
    /// The party's process, as its [`Owner::pid`] says (with
    /// [`KERNEL_LIVE`](crate::owner::KERNEL_LIVE) when set).
    pid: AtomicU32,
    _pad: AtomicU32,
}

/// The barrier, as laid out in shared memory.
///
/// ```
/// use shmproc_core::barrier::{BarrierError, RawBarrier};
/// use shmproc_core::owner::{Owner, ProcLiveness};
/// // SAFETY: a RawBarrier is atomics only, valid when zeroed; init sets it up.
/// let b: Box<RawBarrier> = Box::new(unsafe { core::mem::zeroed() });
/// b.init(2);
/// std::thread::scope(|s| {
///     s.spawn(|| b.wait(&Owner::current(), None, &ProcLiveness).unwrap());
///     b.wait(&Owner::current(), None, &ProcLiveness).unwrap();
/// });
/// ```
#[repr(C, align(128))]
pub struct RawBarrier {
    lock: RawMutex,
    generation: AtomicU32,
    parties: AtomicU32,
    count: AtomicU32,
    broken: AtomicU32,
    /// `g + 1` when generation `g` was ended by `reset` (its sleepers fail).
    reset_of: AtomicU32,
    arrivals: [Arrival; MAX_TRACKED],
}

// SAFETY: only atomics (the RawMutex is atomics too), valid for any bit
// pattern; alignment 128.
unsafe impl RegionObject for RawBarrier {
    const KIND: u32 = kind::BARRIER;
}

impl RawBarrier {
    /// (Re)initialises in place for `parties` parties (at least 1).
    ///
    /// ```
    /// use shmproc_core::barrier::{BarrierError, RawBarrier};
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// // SAFETY: a RawBarrier is atomics only, valid when zeroed; init sets it up.
    /// let b: Box<RawBarrier> = Box::new(unsafe { core::mem::zeroed() });
    /// b.init(3);
    /// assert_eq!(b.parties(), 3);
    /// ```
    pub fn init(&self, parties: u32) {
        self.lock.init();
        self.generation.store(0, Ordering::Relaxed);
        self.parties.store(parties.max(1), Ordering::Relaxed);
        self.count.store(0, Ordering::Relaxed);
        self.broken.store(0, Ordering::Relaxed);
        self.reset_of.store(0, Ordering::Relaxed);
        for a in &self.arrivals {
            a.tid.store(0, Ordering::Relaxed);
            a.ns.store(0, Ordering::Relaxed);
            a.start.store(0, Ordering::Relaxed);
            a.pid.store(0, Ordering::Relaxed);
        }
    }

    /// The number of parties.
    ///
    /// ```
    /// use shmproc_core::barrier::{BarrierError, RawBarrier};
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// // SAFETY: a RawBarrier is atomics only, valid when zeroed; init sets it up.
    /// let b: Box<RawBarrier> = Box::new(unsafe { core::mem::zeroed() });
    /// b.init(4);
    /// assert_eq!(b.parties(), 4);
    /// ```
    pub fn parties(&self) -> u32 {
        self.parties.load(Ordering::Relaxed)
    }

    /// Parties waiting in the current generation (a snapshot); 0 while the
    /// barrier is broken (Python's `n_waiting`: those left waiting on a
    /// broken barrier have been released with `Broken`).
    ///
    /// ```
    /// use shmproc_core::barrier::{BarrierError, RawBarrier};
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// // SAFETY: a RawBarrier is atomics only, valid when zeroed; init sets it up.
    /// let b: Box<RawBarrier> = Box::new(unsafe { core::mem::zeroed() });
    /// b.init(2);
    /// assert_eq!(b.n_waiting(), 0);
    /// ```
    pub fn n_waiting(&self) -> u32 {
        if self.is_broken() {
            return 0;
        }
        self.count.load(Ordering::Relaxed)
    }

    /// Whether the barrier is broken.
    ///
    /// ```
    /// use shmproc_core::barrier::{BarrierError, RawBarrier};
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// // SAFETY: a RawBarrier is atomics only, valid when zeroed; init sets it up.
    /// let b: Box<RawBarrier> = Box::new(unsafe { core::mem::zeroed() });
    /// b.init(2);
    /// assert!(!b.is_broken());
    /// ```
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire) != 0
    }

    fn locked<R>(&self, me: &Owner, check: &impl OwnerCheck, f: impl FnOnce(bool) -> R) -> R {
        // The internal lock is held only for a few loads and stores, so waiting
        // for it without a deadline is bounded (dead holders are taken over).
        let died = matches!(self.lock.lock(me, None, check), Ok(Acquired::OwnerDied));
        let r = f(died);
        self.lock.unlock(me);
        r
    }

    fn break_now(&self) {
        self.broken.store(1, Ordering::Release);
        futex::wake_all(&self.generation);
    }

    /// Waits for all parties, until `deadline`.
    ///
    /// ```
    /// use shmproc_core::barrier::{BarrierError, RawBarrier};
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// // SAFETY: a RawBarrier is atomics only, valid when zeroed; init sets it up.
    /// let b: Box<RawBarrier> = Box::new(unsafe { core::mem::zeroed() });
    /// b.init(1);
    /// assert!(b.wait(&Owner::current(), None, &ProcLiveness).unwrap().leader);
    /// ```
    pub fn wait(
        &self,
        me: &Owner,
        deadline: Option<Deadline>,
        check: &impl OwnerCheck,
    ) -> Result<BarrierWait, BarrierError> {
        let arrived = self.arrive(me, check)?;
        self.wait_arrived(me, deadline, check, &arrived)
    }

    /// The second half of [`wait`](RawBarrier::wait): waits until
    /// `arrived`'s generation trips (or the barrier breaks, or `deadline`
    /// passes: then the barrier breaks), checking each liveness slice that
    /// no party of the generation died.
    pub fn wait_arrived(
        &self,
        me: &Owner,
        deadline: Option<Deadline>,
        check: &impl OwnerCheck,
        arrived: &Arrived,
    ) -> Result<BarrierWait, BarrierError> {
        let arrived = *arrived;
        loop {
            if let Some(done) = self.outcome(&arrived) {
                return done;
            }
            let slice = Deadline::after(LIVENESS_SLICE);
            let outcome = futex::wait(&self.generation, arrived.generation, Some(earliest(deadline, slice)));
            if let Some(done) = self.outcome(&arrived) {
                return done;
            }
            if outcome != WaitOutcome::TimedOut {
                continue;
            }
            if deadline.is_some_and(|d| d.has_passed()) {
                return match self.leave(me, check, &arrived) {
                    Some(done) => done,
                    None => Err(BarrierError::Timeout),
                };
            }
            // A slice ended: has a party that arrived in this generation died?
            if self.break_if_a_party_died(me, check, &arrived) {
                return Err(BarrierError::Broken);
            }
        }
    }

    /// The first half of [`wait`](RawBarrier::wait), for waiters that sleep
    /// elsewhere (an async task): arrives in the current generation. The
    /// last party to arrive trips the barrier (its arrival is
    /// [`outcome`](RawBarrier::outcome) `Ok` at once); the others then wait
    /// for the [`generation_word`](RawBarrier::generation_word) to move from
    /// [`Arrived::generation`], checking now and then that no party died
    /// ([`break_if_a_party_died`](RawBarrier::break_if_a_party_died)), and
    /// call [`leave`](RawBarrier::leave) if they give up.
    ///
    /// ```
    /// use shmproc_core::barrier::RawBarrier;
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// // SAFETY: a RawBarrier is atomics only, valid when zeroed; init sets it up.
    /// let b: Box<RawBarrier> = Box::new(unsafe { core::mem::zeroed() });
    /// b.init(2);
    /// let me = Owner::current();
    /// let first = b.arrive(&me, &ProcLiveness).unwrap();
    /// assert!(b.outcome(&first).is_none()); // waits for the second party
    /// let second = b.arrive(&me, &ProcLiveness).unwrap();
    /// assert!(b.outcome(&second).unwrap().unwrap().leader);
    /// assert_eq!(b.outcome(&first).unwrap().unwrap().index, 0);
    /// ```
    pub fn arrive(&self, me: &Owner, check: &impl OwnerCheck) -> Result<Arrived, BarrierError> {
        self.arrive_with(me, check, false)
    }

    /// [`arrive`](RawBarrier::arrive) for a barrier with an action (Python's
    /// `action`): the last party to arrive does not trip the barrier but
    /// *holds* it (its arrival is the leader's), runs the action, then calls
    /// [`trip`](RawBarrier::trip), which releases the others, or breaks the
    /// barrier if the action failed. While it holds, its arrival record is
    /// the generation's last: if it dies, the others' liveness checks break
    /// the barrier; a party that times out meanwhile breaks it too.
    ///
    /// ```
    /// use shmproc_core::barrier::RawBarrier;
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// // SAFETY: a RawBarrier is atomics only, valid when zeroed; init sets it up.
    /// let b: Box<RawBarrier> = Box::new(unsafe { core::mem::zeroed() });
    /// b.init(2);
    /// let me = Owner::current();
    /// let first = b.arrive_holding(&me, &ProcLiveness).unwrap();
    /// let last = b.arrive_holding(&me, &ProcLiveness).unwrap();
    /// assert!(last.leader);
    /// assert!(b.outcome(&first).is_none()); // held while the action runs
    /// assert!(b.trip(&me, &ProcLiveness, &last, true).unwrap().leader);
    /// assert_eq!(b.outcome(&first).unwrap().unwrap().index, 0);
    /// ```
    pub fn arrive_holding(&self, me: &Owner, check: &impl OwnerCheck) -> Result<Arrived, BarrierError> {
        self.arrive_with(me, check, true)
    }

    /// Ends the hold of a leader that arrived with
    /// [`arrive_holding`](RawBarrier::arrive_holding): trips the barrier if
    /// its action succeeded (`action_ok`), else breaks it. `Broken` too if
    /// the barrier broke (a party timed out or died) or was reset meanwhile.
    pub fn trip(
        &self,
        me: &Owner,
        check: &impl OwnerCheck,
        a: &Arrived,
        action_ok: bool,
    ) -> Result<BarrierWait, BarrierError> {
        let r = self.locked(me, check, |_| {
            if self.generation.load(Ordering::Relaxed) != a.generation || self.broken.load(Ordering::Relaxed) != 0 {
                return Err(BarrierError::Broken);
            }
            if !action_ok {
                self.broken.store(1, Ordering::Release);
                return Err(BarrierError::Broken);
            }
            self.count.store(0, Ordering::Relaxed);
            self.generation.store(a.generation.wrapping_add(1), Ordering::Release);
            Ok(BarrierWait { index: a.index, leader: true })
        });
        futex::wake_all(&self.generation);
        r
    }

    fn arrive_with(&self, me: &Owner, check: &impl OwnerCheck, hold: bool) -> Result<Arrived, BarrierError> {
        let arrived = self.locked(me, check, |died| {
            if died {
                self.broken.store(1, Ordering::Release);
            }
            if self.broken.load(Ordering::Relaxed) != 0 {
                return Err(BarrierError::Broken);
            }
            let g = self.generation.load(Ordering::Relaxed);
            let parties = self.parties.load(Ordering::Relaxed);
            let c = self.count.load(Ordering::Relaxed);
            if parties == 0 || c >= parties {
                self.broken.store(1, Ordering::Release);
                return Err(BarrierError::Broken);
            }
            if let Some(a) = self.arrivals.get(c as usize) {
                a.tid.store(me.thread.id, Ordering::Relaxed);
                a.ns.store(me.thread.ns, Ordering::Relaxed);
                a.start.store(me.thread.start, Ordering::Relaxed);
                a.pid.store(me.pid, Ordering::Relaxed);
            }
            if c + 1 == parties && self.an_arrival_died(c, check) {
                // A party died waiting and nobody noticed yet (no waiter's
                // liveness slice ended since): the round must not trip with
                // it, or the next round would wait for it forever.
                self.broken.store(1, Ordering::Release);
                return Err(BarrierError::Broken);
            }
            if c + 1 == parties && hold {
                // Held until `trip`: the count stays full (a further
                // arrival breaks the barrier, as one past `parties` does).
                self.count.store(parties, Ordering::Relaxed);
                Ok(Arrived { generation: g, index: c, leader: true })
            } else if c + 1 == parties {
                self.count.store(0, Ordering::Relaxed);
                self.generation.store(g.wrapping_add(1), Ordering::Release);
                Ok(Arrived { generation: g, index: c, leader: true })
            } else {
                self.count.store(c + 1, Ordering::Relaxed);
                Ok(Arrived { generation: g, index: c, leader: false })
            }
        });
        // The leader wakes the sleepers (a holding one, in `trip`); a failed
        // arrival wakes them too (the barrier is broken).
        let waits_or_holds = match arrived {
            Ok(a) => !a.leader || hold,
            Err(_) => false,
        };
        if !waits_or_holds {
            futex::wake_all(&self.generation);
        }
        arrived
    }

    /// How an arrival ended, or `None` while it waits: `Ok` once its
    /// generation has moved on (tripped), `Broken` if the barrier broke or
    /// was reset meanwhile.
    #[must_use]
    pub fn outcome(&self, a: &Arrived) -> Option<Result<BarrierWait, BarrierError>> {
        if a.leader {
            return Some(Ok(BarrierWait { index: a.index, leader: true }));
        }
        if self.generation.load(Ordering::Acquire) != a.generation {
            if self.reset_of.load(Ordering::Relaxed) == a.generation.wrapping_add(1) {
                return Some(Err(BarrierError::Broken));
            }
            return Some(Ok(BarrierWait { index: a.index, leader: false }));
        }
        if self.is_broken() {
            return Some(Err(BarrierError::Broken));
        }
        None
    }

    /// The futex word an arrival waits on: it moves from
    /// [`Arrived::generation`] when the barrier trips or is reset, and is
    /// woken when it breaks.
    #[must_use]
    pub fn generation_word(&self) -> &AtomicU32 {
        &self.generation
    }

    /// Breaks the barrier if a party that arrived in `a`'s generation has
    /// died; whether it did.
    pub fn break_if_a_party_died(&self, me: &Owner, check: &impl OwnerCheck, a: &Arrived) -> bool {
        self.locked(me, check, |_| {
            if self.generation.load(Ordering::Relaxed) != a.generation {
                return false;
            }
            let dead = self.an_arrival_died(self.count.load(Ordering::Relaxed), check);
            if dead {
                self.break_now();
            }
            dead
        })
    }

    /// Whether one of the first `n` arrivals of the current generation
    /// (those tracked) has died. Call with the barrier's lock held: each
    /// record is then one party's, written whole under that lock.
    fn an_arrival_died(&self, n: u32, check: &impl OwnerCheck) -> bool {
        let n = (n as usize).min(MAX_TRACKED);
        self.arrivals[..n].iter().any(|r| {
            let tid = r.tid.load(Ordering::Relaxed);
            let start = r.start.load(Ordering::Relaxed);
            !check.is_alive_owner(tid, Some(start), r.ns.load(Ordering::Relaxed), r.pid.load(Ordering::Relaxed))
        })
    }

    /// Gives up an arrival that is still waiting (a timeout, a dropped
    /// future): an arrival cannot be taken back, so the barrier breaks, as
    /// Python's does when a `wait` times out. If the barrier tripped first,
    /// returns that outcome instead.
    pub fn leave(&self, me: &Owner, check: &impl OwnerCheck, a: &Arrived) -> Option<Result<BarrierWait, BarrierError>> {
        let tripped = self.locked(me, check, |_| {
            if self.generation.load(Ordering::Relaxed) != a.generation {
                return true;
            }
            self.break_now();
            false
        });
        if tripped {
            return self.outcome(a);
        }
        None
    }

    /// Breaks the barrier: current and future waits fail until `reset`.
    ///
    /// ```
    /// use shmproc_core::barrier::{BarrierError, RawBarrier};
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// // SAFETY: a RawBarrier is atomics only, valid when zeroed; init sets it up.
    /// let b: Box<RawBarrier> = Box::new(unsafe { core::mem::zeroed() });
    /// b.init(2);
    /// b.abort(&Owner::current(), &ProcLiveness);
    /// assert!(b.is_broken());
    /// ```
    pub fn abort(&self, me: &Owner, check: &impl OwnerCheck) {
        self.locked(me, check, |_| self.break_now());
    }

    /// Returns the barrier to its initial state; parties waiting now fail with
    /// `Broken`.
    ///
    /// ```
    /// use shmproc_core::barrier::{BarrierError, RawBarrier};
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// // SAFETY: a RawBarrier is atomics only, valid when zeroed; init sets it up.
    /// let b: Box<RawBarrier> = Box::new(unsafe { core::mem::zeroed() });
    /// b.init(2);
    /// let me = Owner::current();
    /// b.abort(&me, &ProcLiveness);
    /// b.reset(&me, &ProcLiveness);
    /// assert!(!b.is_broken());
    /// ```
    pub fn reset(&self, me: &Owner, check: &impl OwnerCheck) {
        self.locked(me, check, |_| {
            if self.count.load(Ordering::Relaxed) > 0 {
                let g = self.generation.load(Ordering::Relaxed);
                self.reset_of.store(g.wrapping_add(1), Ordering::Relaxed);
                self.generation.store(g.wrapping_add(1), Ordering::Release);
            }
            self.count.store(0, Ordering::Relaxed);
            self.broken.store(0, Ordering::Release);
        });
        futex::wake_all(&self.generation);
    }
}
