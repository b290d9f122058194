//! A counting semaphore whose permits come back when their holder's process
//! dies.
//!
//! A plain [`RawSemaphore`](crate::semaphore::RawSemaphore) does not know who
//! holds its permits, so a holder killed with SIGKILL takes its permit to the
//! grave (Python's semaphores behave the same). This one keeps a bounded
//! table of holders, [`HOLDERS`] records of (process id, process start time,
//! permits held), beside the count.
//!
//! # Invariant
//!
//! `total` is the number of permits in existence (free + held; an unbalanced
//! `release` by a process that holds none creates one, up to `max`). The free
//! count is *derived*: `total - Σ held`, recomputed from the table under the
//! lock by every operation, never trusted from memory. The `count` word is
//! only its published copy, the word waiters sleep on.
//!
//! # Crashes
//!
//! Every change to the table and the count is made under a robust
//! [`RawMutex`]. A process killed at any instruction leaves either the lock
//! free (the table and `total` consistent) or the lock held by a dead owner:
//! the next user is told [`Acquired::OwnerDied`] and repairs, which is the
//! same step as reclaiming dead holders: every record whose process is gone
//! (liveness of the pid with its start time, so a reused pid is not mistaken
//! for the holder) is cleared, and the free count is recomputed. A record
//! half-written by a killed acquirer (pid set, count 0) is cleared too.
//! Whether the kill came before or after the permit was counted, the derived
//! count is right: the dead process's permits are free again.
//!
//! Dead holders are looked for only when needed: when the lock reports a dead
//! owner, and when an acquirer finds no free permit, before its first sleep
//! and after every [`LIVENESS_SLICE`] of sleep. A death is noticed within
//! about one slice.
//!
//! # Orderings
//!
//! The table, `total` and `count` are read and written under the mutex,
//! whose `Acquire`/`Release` pairing orders them between holders, and
//! `Relaxed` suffices for them. What a permit holder did before `release`
//! happens-before the next acquirer's work through the same pairing. The
//! wake-up handshake is the plain semaphore's: a waiter increments `waiters`
//! and then reads `count` (both `SeqCst`); a releaser stores `count` (`SeqCst`,
//! under the lock) and after unlocking reads `waiters` (`SeqCst`), so one of
//! them sees the other; the futex re-checks `count == 0` in the kernel, and
//! every sleep is cut into liveness slices anyway.
//!
//! # Untrusted memory
//!
//! Every field may hold garbage. Counts are summed saturating, `total` is
//! clamped to `max`, records that name no live process are cleared, and the
//! published count is rewritten from the derived one. Garbage gives wrong
//! counts (permits that appear or vanish), never undefined behaviour, a panic
//! or a wait past the caller's deadline. A *live* peer that holds the internal
//! lock forever blocks the operations without a deadline, as a peer holding
//! any lock does.

use crate::futex::{self, WaitOutcome};
use crate::identity::Identity;
use crate::owner::{Owner, OwnerCheck, KERNEL_LIVE};
use crate::primitive::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::raw_mutex::{Acquired, LockError, RawMutex, LIVENESS_SLICE};
use crate::region::{kind, RegionObject};
use crate::time::{earliest, Deadline};

/// Holder records per semaphore: at most this many processes hold permits
/// at once.
///
/// ```
/// assert_eq!(shmproc_core::robust_semaphore::HOLDERS, 32);
/// ```
#[cfg(not(loom))]
pub const HOLDERS: usize = 32;
/// Holder records per semaphore (small under loom).
#[cfg(loom)]
pub const HOLDERS: usize = 2;

/// Why a robust semaphore operation failed.
///
/// ```
/// use shmproc_core::robust_semaphore::{RawRobustSemaphore, RobustError};
/// use shmproc_core::owner::Owner;
/// let s = RawRobustSemaphore::new(0, 1);
/// let me = Owner::current();
/// let alive = |_: u32, _: Option<u64>| true;
/// assert_eq!(s.try_acquire(&me, me.thread, &alive), Err(RobustError::WouldBlock));
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RobustError {
    /// No permit free now.
    WouldBlock,
    /// The deadline passed.
    Timeout,
    /// Every holder record is taken by another live process.
    TableFull,
    /// `release` would raise the permits above the bound (or `u32::MAX`).
    Overflow,
    /// `release_held`: the caller holds no permit.
    NotHeld,
}

#[repr(C)]
struct Slot {
    /// Holder process id; 0: free record.
    pid: AtomicU32,
    /// Permits it holds.
    held: AtomicU32,
    /// Its start time (clock ticks since boot; 0: unknown).
    start: AtomicU64,
    /// Its pid namespace ([`Identity::ns`]; 0: unknown): a holder recorded
    /// in another namespace is never judged dead by its number here.
    ns: AtomicU32,
    _pad: AtomicU32,
}

/// The robust semaphore, as laid out in shared memory.
///
/// ```
/// use shmproc_core::robust_semaphore::RawRobustSemaphore;
/// use shmproc_core::owner::{Owner, ProcLiveness};
/// use shmproc_core::Identity;
/// let s = RawRobustSemaphore::new(2, u32::MAX); // in real use: inside a region
/// let me = Owner::current();
/// let proc_ = Identity::current_process();
/// s.acquire(&me, proc_, None, &ProcLiveness).unwrap();
/// assert_eq!((s.value(), s.held_by(proc_)), (1, 1));
/// s.release(&me, proc_, None, &ProcLiveness).unwrap();
/// assert_eq!(s.value(), 2);
/// ```
#[repr(C, align(128))]
pub struct RawRobustSemaphore {
    /// Published free count (futex word).
    count: AtomicU32,
    waiters: AtomicU32,
    /// Bound on `total` ([`UNBOUNDED`](crate::semaphore::UNBOUNDED): none).
    max: AtomicU32,
    /// Permits in existence (free + held).
    total: AtomicU32,
    lock: RawMutex,
    slots: [Slot; HOLDERS],
}

// SAFETY: only atomics (RawMutex too), valid for any bit pattern; alignment
// 128 == OBJECT_ALIGN.
unsafe impl RegionObject for RawRobustSemaphore {
    const KIND: u32 = kind::ROBUST_SEMAPHORE;
}

/// What a locked step decided.
enum Step {
    Done(Result<(), RobustError>),
    /// No free permit: wait.
    Empty,
    /// No record for a new holder.
    Full,
}

impl RawRobustSemaphore {
    /// A semaphore with `value` permits; `max` bounds them ([`UNBOUNDED`](crate::semaphore::UNBOUNDED): no
    /// bound; a bounded semaphore has `max == value`).
    ///
    /// ```
    /// let s = shmproc_core::robust_semaphore::RawRobustSemaphore::new(3, 3);
    /// assert_eq!((s.value(), s.max()), (3, 3));
    /// ```
    #[must_use]
    pub fn new(value: u32, max: u32) -> RawRobustSemaphore {
        RawRobustSemaphore {
            count: AtomicU32::new(value),
            waiters: AtomicU32::new(0),
            max: AtomicU32::new(max),
            total: AtomicU32::new(value.min(max)),
            lock: RawMutex::new(),
            slots: core::array::from_fn(|_| Slot {
                pid: AtomicU32::new(0),
                held: AtomicU32::new(0),
                start: AtomicU64::new(0),
                ns: AtomicU32::new(0),
                _pad: AtomicU32::new(0),
            }),
        }
    }

    /// (Re)initialises in place (only while nobody else uses it).
    ///
    /// ```
    /// let s = shmproc_core::robust_semaphore::RawRobustSemaphore::new(0, 0);
    /// s.init(4, u32::MAX);
    /// assert_eq!(s.value(), 4);
    /// ```
    pub fn init(&self, value: u32, max: u32) {
        for s in &self.slots {
            s.pid.store(0, Ordering::Relaxed);
            s.held.store(0, Ordering::Relaxed);
            s.start.store(0, Ordering::Relaxed);
            s.ns.store(0, Ordering::Relaxed);
        }
        self.waiters.store(0, Ordering::Relaxed);
        self.max.store(max, Ordering::Relaxed);
        self.total.store(value.min(max), Ordering::Relaxed);
        self.lock.init();
        self.count.store(value.min(max), Ordering::Release);
    }

    /// Free permits (a snapshot of the published count).
    ///
    /// ```
    /// assert_eq!(shmproc_core::robust_semaphore::RawRobustSemaphore::new(2, 2).value(), 2);
    /// ```
    pub fn value(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// The bound ([`UNBOUNDED`](crate::semaphore::UNBOUNDED): none).
    ///
    /// ```
    /// use shmproc_core::robust_semaphore::RawRobustSemaphore;
    /// assert_eq!(RawRobustSemaphore::new(1, u32::MAX).max(), shmproc_core::semaphore::UNBOUNDED);
    /// ```
    pub fn max(&self) -> u32 {
        self.max.load(Ordering::Relaxed)
    }

    /// Permits the process `holder` holds (a snapshot).
    ///
    /// ```
    /// let s = shmproc_core::robust_semaphore::RawRobustSemaphore::new(1, 1);
    /// assert_eq!(s.held_by(shmproc_core::Identity::current_process()), 0);
    /// ```
    pub fn held_by(&self, holder: Identity) -> u32 {
        self.slots
            .iter()
            .filter(|s| Self::is(s, holder))
            .fold(0u32, |n, s| n.saturating_add(s.held.load(Ordering::Relaxed)))
    }

    /// Whether slot `s` records `holder` (the pids compared without
    /// [`KERNEL_LIVE`]: a holder flags its record once it holds its kernel
    /// liveness record, see `owner::KERNEL_LIVE`).
    fn is(s: &Slot, holder: Identity) -> bool {
        holder.id & !KERNEL_LIVE != 0
            && s.pid.load(Ordering::Relaxed) & !KERNEL_LIVE == holder.id & !KERNEL_LIVE
            && s.start.load(Ordering::Relaxed) == holder.start
            && s.ns.load(Ordering::Relaxed) == holder.ns
    }

    /// Runs `f` under the internal lock, repairing first after a dead owner
    /// (or a forged word: the lock is never held across calls, so a word
    /// naming the caller is not re-entrance). `None`: the deadline passed.
    fn locked<R>(
        &self,
        me: &Owner,
        deadline: Option<Deadline>,
        check: &impl OwnerCheck,
        f: impl FnOnce() -> R,
    ) -> Option<R> {
        loop {
            let how = match self.lock.lock(me, deadline, check) {
                Ok(a) => a,
                Err(LockError::Deadlock) => match self.lock.reclaim(me) {
                    Ok(a) => a,
                    Err(_) => continue,
                },
                Err(LockError::Timeout) => return None,
                Err(LockError::WouldBlock) => {
                    if deadline.is_some_and(|d| d.has_passed()) {
                        return None;
                    }
                    continue;
                }
            };
            if how == Acquired::OwnerDied {
                self.repair(check);
            }
            let r = f();
            let _ = self.lock.unlock(me);
            return Some(r);
        }
    }

    /// Under the lock: clears the records of dead (or garbage) holders,
    /// clamps `total`, republishes the free count. Returns it.
    fn repair(&self, check: &impl OwnerCheck) -> u32 {
        for s in &self.slots {
            let pid = s.pid.load(Ordering::Relaxed);
            if pid == 0 {
                continue;
            }
            let start = s.start.load(Ordering::Relaxed);
            let ns = s.ns.load(Ordering::Relaxed);
            if s.held.load(Ordering::Relaxed) == 0 || !check.is_alive_owner(pid & !KERNEL_LIVE, Some(start), ns, pid) {
                Self::clear(s);
            }
        }
        self.publish()
    }

    fn clear(s: &Slot) {
        s.held.store(0, Ordering::Relaxed);
        s.start.store(0, Ordering::Relaxed);
        s.ns.store(0, Ordering::Relaxed);
        s.pid.store(0, Ordering::Relaxed);
    }

    /// Under the lock: `total` clamped to `max`, and `total - Σ held`.
    fn free(&self) -> (u32, u32) {
        let max = self.max.load(Ordering::Relaxed);
        let mut total = self.total.load(Ordering::Relaxed);
        if total > max {
            total = max;
            self.total.store(total, Ordering::Relaxed);
        }
        let held = self
            .slots
            .iter()
            .filter(|s| s.pid.load(Ordering::Relaxed) != 0)
            .fold(0u32, |n, s| n.saturating_add(s.held.load(Ordering::Relaxed)));
        (total, total.saturating_sub(held))
    }

    /// Under the lock: recomputes the free count and publishes it.
    fn publish(&self) -> u32 {
        let (_, free) = self.free();
        self.count.store(free, Ordering::SeqCst);
        free
    }

    /// Under the lock: takes a permit for `holder` if one is free.
    fn take(&self, holder: Identity) -> Step {
        let (_, free) = self.free();
        if free == 0 {
            self.count.store(0, Ordering::SeqCst);
            return Step::Empty;
        }
        if holder.id == 0 {
            return Step::Full;
        }
        let slot = match self.slots.iter().find(|s| Self::is(s, holder)) {
            Some(s) => {
                // Under the lock: take the holder's flag (never drop it).
                s.pid.store(s.pid.load(Ordering::Relaxed) | (holder.id & KERNEL_LIVE), Ordering::Relaxed);
                s
            }
            None => match self.slots.iter().find(|s| s.pid.load(Ordering::Relaxed) == 0) {
                Some(s) => {
                    // Written in this order so that a kill in between leaves
                    // a record with no permit (cleared by the next repair).
                    s.held.store(0, Ordering::Relaxed);
                    s.start.store(holder.start, Ordering::Relaxed);
                    s.ns.store(holder.ns, Ordering::Relaxed);
                    s.pid.store(holder.id, Ordering::Relaxed);
                    s
                }
                None => return Step::Full,
            },
        };
        let held = slot.held.load(Ordering::Relaxed);
        if held == u32::MAX {
            return Step::Done(Err(RobustError::Overflow));
        }
        // The permit is taken by this store: the derived count drops by one
        // whether or not the published one below is written.
        slot.held.store(held + 1, Ordering::Relaxed);
        self.count.store(free - 1, Ordering::SeqCst);
        Step::Done(Ok(()))
    }

    /// Takes a permit for process `holder` if one is free now; with none
    /// free, first takes back the permits of dead holders (one liveness check
    /// per record, as `try_lock` checks a mutex owner once). `me` is the
    /// calling thread (for the internal lock, waited for at most one
    /// [`LIVENESS_SLICE`]: [`RobustError::WouldBlock`] if a live process
    /// keeps it longer).
    ///
    /// ```
    /// use shmproc_core::robust_semaphore::{RawRobustSemaphore, RobustError};
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// let s = RawRobustSemaphore::new(1, 1);
    /// let me = Owner::current();
    /// let p = shmproc_core::Identity::current_process();
    /// assert_eq!(s.try_acquire(&me, p, &ProcLiveness), Ok(()));
    /// assert_eq!(s.try_acquire(&me, p, &ProcLiveness), Err(RobustError::WouldBlock));
    /// ```
    pub fn try_acquire(&self, me: &Owner, holder: Identity, check: &impl OwnerCheck) -> Result<(), RobustError> {
        // The internal lock is held only for a table scan; one liveness
        // slice is plenty, and bounds the wait behind a stopped (or lying)
        // process that keeps it.
        let within = Some(Deadline::after(LIVENESS_SLICE));
        let step = self.locked(me, within, check, || match self.take_or_free_records(holder, check) {
            Step::Empty if self.repair(check) > 0 => self.take_or_free_records(holder, check),
            s => s,
        });
        match step {
            Some(Step::Done(r)) => r,
            Some(Step::Empty) | None => Err(RobustError::WouldBlock),
            Some(Step::Full) => Err(RobustError::TableFull),
        }
    }

    /// Under the lock: [`take`](Self::take); with every record taken, clears
    /// dead holders' records and tries once more.
    fn take_or_free_records(&self, holder: Identity, check: &impl OwnerCheck) -> Step {
        match self.take(holder) {
            Step::Full => {
                self.repair(check);
                self.take(holder)
            }
            s => s,
        }
    }

    /// Takes a permit for `holder`, waiting until `deadline` (`None`:
    /// forever). While none is free it reclaims the permits of dead holders
    /// (before its first sleep and after every [`LIVENESS_SLICE`]).
    ///
    /// ```
    /// use shmproc_core::robust_semaphore::{RawRobustSemaphore, RobustError};
    /// use shmproc_core::{owner::Owner, Deadline, Identity};
    /// let s = RawRobustSemaphore::new(1, 1);
    /// let me = Owner::current();
    /// let dead = Identity { id: 77, start: 1, ns: 1 };
    /// let alive_but_77 = |pid: u32, _: Option<u64>| pid != 77;
    /// s.try_acquire(&me, dead, &alive_but_77).unwrap(); // process 77 "dies" holding it
    /// let d = Some(Deadline::after(core::time::Duration::from_secs(5)));
    /// let p = Identity::current_process();
    /// assert_eq!(s.acquire(&me, p, d, &alive_but_77), Ok(())); // its permit came back
    /// assert_eq!(s.held_by(dead), 0);
    /// ```
    pub fn acquire(
        &self,
        me: &Owner,
        holder: Identity,
        deadline: Option<Deadline>,
        check: &impl OwnerCheck,
    ) -> Result<(), RobustError> {
        let mut scan = true;
        loop {
            let step = self.locked(me, deadline, check, || match self.take_or_free_records(holder, check) {
                Step::Empty if scan => {
                    // Reclaim dead holders' permits, then try again.
                    if self.repair(check) > 0 {
                        self.take_or_free_records(holder, check)
                    } else {
                        Step::Empty
                    }
                }
                s => s,
            });
            match step {
                Some(Step::Done(r)) => return r,
                Some(Step::Full) => return Err(RobustError::TableFull),
                Some(Step::Empty) => {}
                None => return Err(RobustError::Timeout),
            }
            if deadline.is_some_and(|d| d.has_passed()) {
                return Err(RobustError::Timeout);
            }
            self.waiters.fetch_add(1, Ordering::SeqCst);
            let outcome = if self.count.load(Ordering::SeqCst) == 0 {
                futex::wait(&self.count, 0, Some(earliest(deadline, Deadline::after(LIVENESS_SLICE))))
            } else {
                WaitOutcome::ValueChanged
            };
            self.waiters.fetch_sub(1, Ordering::Relaxed);
            // A slice that ended without a release: look for dead holders.
            scan = outcome == WaitOutcome::TimedOut;
        }
    }

    /// Returns a permit: one that `holder` holds if it holds any, else (as
    /// Python's `release` without `acquire`) a new permit, which fails with
    /// [`RobustError::Overflow`] at the bound. Waits for the internal lock
    /// (held only for a table scan by a live process) until `deadline`
    /// ([`RobustError::Timeout`]).
    ///
    /// ```
    /// use shmproc_core::robust_semaphore::{RawRobustSemaphore, RobustError};
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// let s = RawRobustSemaphore::new(1, 1);
    /// let me = Owner::current();
    /// let p = shmproc_core::Identity::current_process();
    /// assert_eq!(s.release(&me, p, None, &ProcLiveness), Err(RobustError::Overflow));
    /// s.try_acquire(&me, p, &ProcLiveness).unwrap();
    /// assert_eq!(s.release(&me, p, None, &ProcLiveness), Ok(()));
    /// ```
    pub fn release(
        &self,
        me: &Owner,
        holder: Identity,
        deadline: Option<Deadline>,
        check: &impl OwnerCheck,
    ) -> Result<(), RobustError> {
        self.give_back(me, holder, deadline, check, true)
    }

    /// Returns a permit `holder` holds; [`RobustError::NotHeld`] (and nothing
    /// changes) if it holds none. For guards.
    ///
    /// ```
    /// use shmproc_core::robust_semaphore::{RawRobustSemaphore, RobustError};
    /// use shmproc_core::owner::{Owner, ProcLiveness};
    /// let s = RawRobustSemaphore::new(1, u32::MAX);
    /// let me = Owner::current();
    /// let p = shmproc_core::Identity::current_process();
    /// assert_eq!(s.release_held(&me, p, None, &ProcLiveness), Err(RobustError::NotHeld));
    /// ```
    pub fn release_held(
        &self,
        me: &Owner,
        holder: Identity,
        deadline: Option<Deadline>,
        check: &impl OwnerCheck,
    ) -> Result<(), RobustError> {
        self.give_back(me, holder, deadline, check, false)
    }

    fn give_back(
        &self,
        me: &Owner,
        holder: Identity,
        deadline: Option<Deadline>,
        check: &impl OwnerCheck,
        unbalanced_ok: bool,
    ) -> Result<(), RobustError> {
        let r = self
            .locked(me, deadline, check, || {
                if let Some(s) = self.slots.iter().find(|s| Self::is(s, holder) && s.held.load(Ordering::Relaxed) > 0) {
                    let held = s.held.load(Ordering::Relaxed) - 1;
                    if held == 0 {
                        Self::clear(s);
                    } else {
                        s.held.store(held, Ordering::Relaxed);
                    }
                    self.publish();
                    return Ok(());
                }
                if !unbalanced_ok {
                    return Err(RobustError::NotHeld);
                }
                let (total, _) = self.free();
                match total.checked_add(1) {
                    Some(t) if t <= self.max.load(Ordering::Relaxed) => {
                        self.total.store(t, Ordering::Relaxed);
                        self.publish();
                        Ok(())
                    }
                    _ => Err(RobustError::Overflow),
                }
            })
            .unwrap_or(Err(RobustError::Timeout));
        if r.is_ok() && self.waiters.load(Ordering::SeqCst) != 0 {
            futex::wake_one(&self.count);
        }
        r
    }

    /// Reclaims the permits of dead holders now; returns the free count
    /// (`None`: the internal lock was not free before `deadline`).
    ///
    /// ```
    /// use shmproc_core::robust_semaphore::RawRobustSemaphore;
    /// use shmproc_core::{owner::Owner, Identity};
    /// let s = RawRobustSemaphore::new(1, 1);
    /// let me = Owner::current();
    /// let p = Identity { id: 5, start: 9, ns: 1 };
    /// s.try_acquire(&me, p, &|_: u32, _: Option<u64>| true).unwrap();
    /// assert_eq!(s.recover(&me, None, &|_: u32, _: Option<u64>| false), Some(1));
    /// ```
    pub fn recover(&self, me: &Owner, deadline: Option<Deadline>, check: &impl OwnerCheck) -> Option<u32> {
        self.locked(me, deadline, check, || self.repair(check))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::semaphore::UNBOUNDED;
    use core::time::Duration;

    fn me() -> Owner {
        Owner { thread: Identity::local(1, 1), pid: 1 }
    }
    fn p(id: u32) -> Identity {
        Identity::local(id, 100 + u64::from(id))
    }
    const ALIVE: fn(u32, Option<u64>) -> bool = |_, _| true;

    #[test]
    fn counts_bounds_and_holders() {
        let s = RawRobustSemaphore::new(2, 2);
        assert_eq!(s.try_acquire(&me(), p(10), &ALIVE), Ok(()));
        assert_eq!(s.acquire(&me(), p(10), None, &ALIVE), Ok(()));
        assert_eq!(s.held_by(p(10)), 2);
        assert_eq!(s.try_acquire(&me(), p(11), &ALIVE), Err(RobustError::WouldBlock));
        let d = Some(Deadline::after(Duration::from_millis(30)));
        assert_eq!(s.acquire(&me(), p(11), d, &ALIVE), Err(RobustError::Timeout));
        // p(11) holds none: an unbalanced release at the bound fails.
        assert_eq!(s.release(&me(), p(11), None, &ALIVE), Err(RobustError::Overflow));
        assert_eq!(s.release_held(&me(), p(11), None, &ALIVE), Err(RobustError::NotHeld));
        assert_eq!(s.release(&me(), p(10), None, &ALIVE), Ok(()));
        assert_eq!(s.release(&me(), p(10), None, &ALIVE), Ok(()));
        assert_eq!(s.value(), 2);
        assert_eq!(s.release(&me(), p(10), None, &ALIVE), Err(RobustError::Overflow));
        // Unbounded: unbalanced releases add permits.
        let u = RawRobustSemaphore::new(0, UNBOUNDED);
        assert_eq!(u.release(&me(), p(1), None, &ALIVE), Ok(()));
        assert_eq!(u.value(), 1);
    }

    #[test]
    fn dead_holders_permits_come_back() {
        let s = RawRobustSemaphore::new(2, 2);
        s.try_acquire(&me(), p(10), &ALIVE).unwrap();
        s.try_acquire(&me(), p(11), &ALIVE).unwrap();
        let ten_dead = |pid: u32, _: Option<u64>| pid != 10;
        let d = Some(Deadline::after(Duration::from_secs(5)));
        assert_eq!(s.acquire(&me(), p(12), d, &ten_dead), Ok(()));
        assert_eq!((s.held_by(p(10)), s.held_by(p(11)), s.held_by(p(12))), (0, 1, 1));
        // A reused pid (other start time) is not the holder.
        assert_eq!(s.held_by(Identity::local(11, 1)), 0);
    }

    #[test]
    fn table_full_is_an_error() {
        let s = RawRobustSemaphore::new(HOLDERS as u32 + 2, UNBOUNDED);
        for i in 0..HOLDERS as u32 {
            s.try_acquire(&me(), p(10 + i), &ALIVE).unwrap();
        }
        assert_eq!(s.try_acquire(&me(), p(1000), &ALIVE), Err(RobustError::TableFull));
        // A holder already in the table can take more.
        assert_eq!(s.try_acquire(&me(), p(10), &ALIVE), Ok(()));
        // A dead holder's record is freed for a newcomer.
        let eleven_dead = |pid: u32, _: Option<u64>| pid != 11;
        assert_eq!(s.try_acquire(&me(), p(1000), &eleven_dead), Ok(()));
        assert_eq!(s.held_by(p(11)), 0);
    }

    #[test]
    fn killed_inside_the_lock_is_repaired() {
        // Process 20 (thread 20) was killed in `take` after recording its
        // permit but before publishing the count, holding the internal lock.
        let s = RawRobustSemaphore::new(1, 1);
        let dead = Owner { thread: Identity::local(20, 5), pid: 20 };
        let _ = s.lock.try_lock(&dead).unwrap();
        let sl = &s.slots[3];
        sl.start.store(120, Ordering::Relaxed);
        sl.pid.store(20, Ordering::Relaxed);
        sl.held.store(1, Ordering::Relaxed);
        assert_eq!(s.value(), 1); // the published count is stale
        let twenty_dead = |id: u32, _: Option<u64>| id != 20;
        let d = Some(Deadline::after(Duration::from_secs(5)));
        assert_eq!(s.acquire(&me(), p(10), d, &twenty_dead), Ok(()));
        assert_eq!((s.held_by(p(10)), s.held_by(p(20)), s.value()), (1, 0, 0));
        // And killed right after claiming a record (pid written, no permit).
        let s = RawRobustSemaphore::new(1, 1);
        s.slots[0].pid.store(21, Ordering::Relaxed);
        let _ = s.lock.try_lock(&Owner { thread: Identity::local(21, 5), pid: 21 }).unwrap();
        assert_eq!(s.try_acquire(&me(), p(10), &|id: u32, _: Option<u64>| id != 21), Ok(()));
        assert_eq!(s.value(), 0);
    }

    #[test]
    fn garbage_is_repaired_not_trusted() {
        let s = RawRobustSemaphore::new(1, 1);
        // A peer writes nonsense everywhere.
        s.count.store(u32::MAX, Ordering::Relaxed);
        s.total.store(u32::MAX, Ordering::Relaxed);
        // (Bit 31 of a pid is the kernel-liveness flag: garbage pids without
        // it, so that this judge can tell them apart.)
        for (i, sl) in s.slots.iter().enumerate() {
            sl.pid.store(0x5ead_0000 + i as u32, Ordering::Relaxed);
            sl.held.store(u32::MAX, Ordering::Relaxed);
            sl.start.store(u64::MAX, Ordering::Relaxed);
        }
        // Every record is taken by a live "process": no room, no permits.
        assert_eq!(s.try_acquire(&me(), p(10), &ALIVE), Err(RobustError::WouldBlock));
        assert_eq!(s.value(), 0); // the published count was rewritten
                                  // Once they are judged dead, the bound comes back.
        let d = Some(Deadline::after(Duration::from_secs(5)));
        let real = |pid: u32, _: Option<u64>| pid < 0x5ead_0000;
        assert_eq!(s.acquire(&me(), p(10), d, &real), Ok(()));
        assert_eq!(s.try_acquire(&me(), p(10), &real), Err(RobustError::WouldBlock));
        assert_eq!(s.release(&me(), p(10), None, &real), Ok(()));
        assert_eq!(s.value(), 1);
        // A forged internal lock word naming us is taken over, not waited on.
        let _ = s.lock.try_lock(&me());
        assert_eq!(s.try_acquire(&me(), p(10), &real), Ok(()));
        assert!(!s.lock.is_locked());
    }
}
