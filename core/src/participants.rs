//! Which processes hold handles to a shared object, by role.
//!
//! A fixed table of per-process entries `(pid, start time, senders,
//! receivers)`. Handles add and remove themselves; a process killed with
//! SIGKILL cannot remove its entry, so readers judge entries by liveness
//! (pid and start time) and clear dead ones. This is what lets a receiver get
//! `Disconnected` when every sender is gone, dropped *or* dead.
//!
//! # Protocol
//!
//! The `pid` word is the entry's claim: 0 is free, [`RECLAIMING`] is being
//! cleared, anything else is owned by that process. A process claims a free
//! entry with a compare-and-swap `0 -> pid`, then writes its start time and
//! counts. A reader that finds an owner dead swaps the pid to `RECLAIMING`,
//! zeroes the entry and frees it. Counts are only ever changed by the owning
//! process (or zeroed by a reclaimer after the owner's death), so relaxed
//! read-modify-writes suffice; the claim uses `AcqRel` so the reclaimer's
//! zeroing happens-before the next owner's writes.
//!
//! Each entry also records the pid namespace of its pid (`ns`), and liveness
//! fails closed ([`crate::identity`]): a process recorded in another or an
//! unknown namespace always counts as present.
//!
//! # Orderings
//!
//! Here the flag (`pid`) is claimed *before* the data (`start`, `ns`) is
//! written, because the claim is what makes the entry ours. A reader loads
//! `pid` with `Acquire`; when it reads a claimer's compare-and-swap (a release
//! operation) it also sees the zeroing that preceded the previous `pid = 0`
//! `Release` store, so `start` and `ns` are each either 0 or the claimer's
//! own, never a previous occupant's. A 0 fails closed: `ns == 0` is an
//! unknown namespace (present), and `start == 0` checks existence only.
//!
//! # Kernel-kept liveness
//!
//! A process that holds its kernel liveness record on the object's file
//! (see the std crate's `kernel_liveness`) registers with
//! [`KERNEL_LIVE`] set in its pid, so that a judge
//! that cannot read `/proc` for it (another pid namespace) can still prove
//! its death. An entry is found by the pid without the flag; a process that
//! registered without it (a parent registering its forked child) is
//! upgraded when the process itself registers with it.
//!
//! If the table is full, [`Participants::attach`] sets the `overflow` flag:
//! from then on liveness answers "unknown" and callers must not declare a
//! disconnection from liveness alone.

use crate::identity::Identity;
use crate::owner::KERNEL_LIVE;
use crate::primitive::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Entries per table.
///
/// ```
/// use shmproc_core::participants::MAX_PARTICIPANTS;
/// // Beyond this many processes the table overflows and presence is Unknown.
/// assert_eq!(MAX_PARTICIPANTS, 64);
/// ```
#[cfg(not(loom))]
pub const MAX_PARTICIPANTS: usize = 64;
/// Entries per table (kept small under loom, where each atomic is a model
/// object).
#[cfg(loom)]
pub const MAX_PARTICIPANTS: usize = 2;
/// `pid` value of an entry being cleared.
///
/// ```
/// use shmproc_core::participants::RECLAIMING;
/// // The pid value that marks an entry being taken over from a dead process.
/// assert_eq!(RECLAIMING, u32::MAX);
/// ```
pub const RECLAIMING: u32 = u32::MAX;

/// A handle role.
///
/// ```
/// use shmproc_core::participants::{Participants, Presence, Role};
/// use shmproc_core::Identity;
/// // SAFETY: the table is atomics only, valid when zeroed.
/// let table: Box<Participants> = Box::new(unsafe { core::mem::zeroed() });
/// table.init();
/// let me = Identity::current_process();
/// let alive = |id: Identity| id.is_alive();
/// assert!(table.attach(me, Role::Sender, 1, alive));
/// assert_eq!(table.presence(Role::Sender, alive), Presence::Present);
/// assert_eq!(table.presence(Role::Receiver, alive), Presence::Absent);
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// May send.
    Sender,
    /// May receive.
    Receiver,
}

#[repr(C)]
struct Entry {
    pid: AtomicU32,
    senders: AtomicU32,
    start: AtomicU64,
    receivers: AtomicU32,
    /// The pid namespace `pid` belongs to ([`Identity::ns`]; 0: unknown).
    ns: AtomicU32,
    /// 1 while the counts are handles a forked child inherited and has not
    /// used since ([`Participants::set`] marks it, [`Participants::attach`]
    /// and [`Participants::mark_used`] clear it): shown, not judged.
    inherited: AtomicU32,
    _pad: AtomicU32,
}

impl Entry {
    fn count(&self, role: Role) -> &AtomicU32 {
        match role {
            Role::Sender => &self.senders,
            Role::Receiver => &self.receivers,
        }
    }

    /// Sets the count of `role` handles to `n`, marked as inherited
    /// ([`Participants::set`]).
    fn set_inherited(&self, role: Role, n: u32) {
        self.count(role).store(n, Ordering::Relaxed);
        self.inherited.store(1, Ordering::Relaxed);
    }

    /// Frees an entry the caller claimed (its `pid` swapped to
    /// [`RECLAIMING`]): clears the process's record, then the `pid` last
    /// (`Release`), so a new claimer finds a clean record. The counts are
    /// the caller's business.
    fn free(&self) {
        self.start.store(0, Ordering::Relaxed);
        self.ns.store(0, Ordering::Relaxed);
        self.inherited.store(0, Ordering::Relaxed);
        self.pid.store(0, Ordering::Release);
    }

    /// Zeroes both counts and frees the entry ([`free`](Entry::free)).
    fn clear(&self) {
        self.senders.store(0, Ordering::Relaxed);
        self.receivers.store(0, Ordering::Relaxed);
        self.free();
    }
}

/// Whether any live process holds a role.
///
/// ```
/// use shmproc_core::participants::{Participants, Presence, Role};
/// use shmproc_core::Identity;
/// // SAFETY: the table is atomics only, valid when zeroed.
/// let table: Box<Participants> = Box::new(unsafe { core::mem::zeroed() });
/// table.init();
/// let me = Identity::current_process();
/// let alive = |id: Identity| id.is_alive();
/// assert_eq!(table.presence(Role::Receiver, alive), Presence::Absent);
/// table.attach(me, Role::Receiver, 2, alive);
/// assert_eq!(table.presence(Role::Receiver, alive), Presence::Present);
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Presence {
    /// At least one live process holds a handle in that role.
    Present,
    /// None does.
    Absent,
    /// The table overflowed: it cannot tell.
    Unknown,
}

/// The table, as laid out in shared memory.
///
/// ```
/// use shmproc_core::participants::{Participants, Presence, Role};
/// use shmproc_core::Identity;
/// // SAFETY: the table is atomics only, valid when zeroed.
/// let table: Box<Participants> = Box::new(unsafe { core::mem::zeroed() });
/// table.init();
/// let me = Identity::current_process();
/// let alive = |id: Identity| id.is_alive();
/// table.attach(me, Role::Sender, 1, alive);
/// // A process that died holding handles no longer counts.
/// assert_eq!(table.presence(Role::Sender, |_| false), Presence::Absent);
/// ```
#[repr(C)]
pub struct Participants {
    overflow: AtomicU32,
    _pad: AtomicU32,
    entries: [Entry; MAX_PARTICIPANTS],
}

impl Participants {
    /// A constructed, empty table (loom models only: real tables live in
    /// shared memory and are initialised in place).
    #[cfg(loom)]
    pub(crate) fn new_for_loom() -> Participants {
        Participants {
            overflow: AtomicU32::new(0),
            _pad: AtomicU32::new(0),
            entries: core::array::from_fn(|_| Entry {
                pid: AtomicU32::new(0),
                senders: AtomicU32::new(0),
                start: AtomicU64::new(0),
                receivers: AtomicU32::new(0),
                ns: AtomicU32::new(0),
                inherited: AtomicU32::new(0),
                _pad: AtomicU32::new(0),
            }),
        }
    }

    /// (Re)initialises in place: empty.
    ///
    /// ```
    /// use shmproc_core::participants::{Participants, Presence, Role};
    /// use shmproc_core::Identity;
    /// // SAFETY: the table is atomics only, valid when zeroed.
    /// let table: Box<Participants> = Box::new(unsafe { core::mem::zeroed() });
    /// table.init();
    /// let me = Identity::current_process();
    /// let alive = |id: Identity| id.is_alive();
    /// table.attach(me, Role::Sender, 1, alive);
    /// table.init();
    /// assert_eq!(table.snapshot().count(), 0);
    /// ```
    pub fn init(&self) {
        self.overflow.store(0, Ordering::Relaxed);
        for e in &self.entries {
            e.clear();
        }
    }

    /// `me`'s entry (its pid compared without [`KERNEL_LIVE`]), upgraded to
    /// `me`'s flag if `me` has it.
    fn find(&self, me: Identity) -> Option<&Entry> {
        let e = self.entries.iter().find(|e| {
            let pid = e.pid.load(Ordering::Acquire);
            pid != RECLAIMING
                && pid & !KERNEL_LIVE == me.id & !KERNEL_LIVE
                && e.start.load(Ordering::Relaxed) == me.start
                && e.ns.load(Ordering::Relaxed) == me.ns
        })?;
        if me.id & KERNEL_LIVE != 0 {
            // Only the process itself (or a reclaimer after its death) moves
            // its claim word: a failed swap means it is being reclaimed.
            let _ = e.pid.compare_exchange(me.id & !KERNEL_LIVE, me.id, Ordering::AcqRel, Ordering::Relaxed);
        }
        Some(e)
    }

    /// Adds `n` handles of `role` for process `me`. Returns false if the table
    /// is full (the overflow flag is then set).
    ///
    /// ```
    /// use shmproc_core::participants::{Participants, Presence, Role};
    /// use shmproc_core::Identity;
    /// // SAFETY: the table is atomics only, valid when zeroed.
    /// let table: Box<Participants> = Box::new(unsafe { core::mem::zeroed() });
    /// table.init();
    /// let me = Identity::current_process();
    /// let alive = |id: Identity| id.is_alive();
    /// assert!(table.attach(me, Role::Sender, 2, alive));
    /// assert_eq!(table.snapshot().collect::<Vec<_>>(), [(me, 2, 0)]);
    /// ```
    pub fn attach(&self, me: Identity, role: Role, n: u32, alive: impl Fn(Identity) -> bool) -> bool {
        if n == 0 {
            return true;
        }
        if let Some(e) = self.find(me) {
            e.count(role).fetch_add(n, Ordering::Relaxed);
            e.inherited.store(0, Ordering::Relaxed);
            return true;
        }
        // Claim a free entry; if none, reclaim a dead one and retry once.
        for round in 0..2 {
            for e in &self.entries {
                if e.pid.compare_exchange(0, me.id, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                    e.start.store(me.start, Ordering::Relaxed);
                    e.ns.store(me.ns, Ordering::Relaxed);
                    e.inherited.store(0, Ordering::Relaxed);
                    e.count(role).fetch_add(n, Ordering::Relaxed);
                    return true;
                }
            }
            if round == 0 {
                self.reclaim_dead(&alive);
            }
        }
        self.overflow.store(1, Ordering::Relaxed);
        false
    }

    /// Sets process `me`'s count of `role` handles to exactly `n` (claiming
    /// an entry if needed), marked as *inherited* until `me` uses them
    /// ([`mark_used`](Self::mark_used)) or makes a handle of its own
    /// ([`attach`](Self::attach)); the mark changes nothing but what
    /// [`snapshot_marked`](Self::snapshot_marked) shows. Idempotent: used
    /// when a forked child records the handles it inherited (or its parent,
    /// for a child that could not).
    ///
    /// ```
    /// use shmproc_core::participants::{Participants, Presence, Role};
    /// use shmproc_core::Identity;
    /// // SAFETY: the table is atomics only, valid when zeroed.
    /// let table: Box<Participants> = Box::new(unsafe { core::mem::zeroed() });
    /// table.init();
    /// let me = Identity::current_process();
    /// let alive = |id: Identity| id.is_alive();
    /// table.set(me, Role::Receiver, 3, alive);
    /// assert_eq!(table.snapshot().collect::<Vec<_>>(), [(me, 0, 3)]);
    /// ```
    pub fn set(&self, me: Identity, role: Role, n: u32, alive: impl Fn(Identity) -> bool) -> bool {
        if let Some(e) = self.find(me) {
            e.set_inherited(role, n);
            return true;
        }
        for round in 0..2 {
            // Re-check: a concurrent `set` for the same process may have won.
            if let Some(e) = self.find(me) {
                e.set_inherited(role, n);
                return true;
            }
            for e in &self.entries {
                if e.pid.compare_exchange(0, me.id, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                    e.start.store(me.start, Ordering::Relaxed);
                    e.ns.store(me.ns, Ordering::Relaxed);
                    e.set_inherited(role, n);
                    return true;
                }
            }
            if round == 0 {
                self.reclaim_dead(&alive);
            }
        }
        self.overflow.store(1, Ordering::Relaxed);
        false
    }

    /// Removes `n` handles of `role` for process `me`; frees the entry when
    /// both counts reach zero.
    ///
    /// ```
    /// use shmproc_core::participants::{Participants, Presence, Role};
    /// use shmproc_core::Identity;
    /// // SAFETY: the table is atomics only, valid when zeroed.
    /// let table: Box<Participants> = Box::new(unsafe { core::mem::zeroed() });
    /// table.init();
    /// let me = Identity::current_process();
    /// let alive = |id: Identity| id.is_alive();
    /// table.attach(me, Role::Sender, 2, alive);
    /// table.detach(me, Role::Sender, 2);
    /// assert_eq!(table.presence(Role::Sender, alive), Presence::Absent);
    /// ```
    pub fn detach(&self, me: Identity, role: Role, n: u32) {
        let Some(e) = self.find(me) else { return };
        let c = e.count(role);
        let mut cur = c.load(Ordering::Relaxed);
        loop {
            let new = cur.saturating_sub(n);
            match c.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break,
                Err(v) => cur = v,
            }
        }
        let claim = e.pid.load(Ordering::Relaxed);
        if e.senders.load(Ordering::Relaxed) == 0
            && e.receivers.load(Ordering::Relaxed) == 0
            && claim & !KERNEL_LIVE == me.id & !KERNEL_LIVE
            && e.pid.compare_exchange(claim, RECLAIMING, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            e.free();
        }
    }

    /// Records that process `me` used its handles (a send or a receive):
    /// they are no longer shown as merely inherited.
    ///
    /// ```
    /// use shmproc_core::participants::{Participants, Role};
    /// use shmproc_core::Identity;
    /// // SAFETY: the table is atomics only, valid when zeroed.
    /// let table: Box<Participants> = Box::new(unsafe { core::mem::zeroed() });
    /// table.init();
    /// let me = Identity::current_process();
    /// table.set(me, Role::Sender, 1, |id: Identity| id.is_alive()); // as a forked child does
    /// assert_eq!(table.snapshot_marked().collect::<Vec<_>>(), [(me, 1, 0, true)]);
    /// table.mark_used(me);
    /// assert_eq!(table.snapshot_marked().collect::<Vec<_>>(), [(me, 1, 0, false)]);
    /// ```
    pub fn mark_used(&self, me: Identity) {
        if let Some(e) = self.find(me) {
            if e.inherited.load(Ordering::Relaxed) != 0 {
                e.inherited.store(0, Ordering::Relaxed);
            }
        }
    }

    fn reclaim_dead(&self, alive: &impl Fn(Identity) -> bool) {
        for e in &self.entries {
            let pid = e.pid.load(Ordering::Acquire);
            if pid == 0 || pid == RECLAIMING {
                continue;
            }
            let id = Identity { id: pid, start: e.start.load(Ordering::Relaxed), ns: e.ns.load(Ordering::Relaxed) };
            if !alive(id) && e.pid.compare_exchange(pid, RECLAIMING, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                e.clear();
            }
        }
    }

    /// Whether a live process holds a handle of `role`; dead entries found on
    /// the way are cleared.
    ///
    /// ```
    /// use shmproc_core::participants::{Participants, Presence, Role};
    /// use shmproc_core::Identity;
    /// // SAFETY: the table is atomics only, valid when zeroed.
    /// let table: Box<Participants> = Box::new(unsafe { core::mem::zeroed() });
    /// table.init();
    /// let me = Identity::current_process();
    /// let alive = |id: Identity| id.is_alive();
    /// table.attach(me, Role::Sender, 1, alive);
    /// assert_eq!(table.presence(Role::Sender, alive), Presence::Present);
    /// ```
    pub fn presence(&self, role: Role, alive: impl Fn(Identity) -> bool) -> Presence {
        if self.overflow.load(Ordering::Relaxed) != 0 {
            return Presence::Unknown;
        }
        let mut found = false;
        for e in &self.entries {
            let pid = e.pid.load(Ordering::Acquire);
            if pid == 0 {
                continue;
            }
            if pid == RECLAIMING {
                // Being cleared or being claimed: cannot tell yet.
                found = true;
                continue;
            }
            if e.count(role).load(Ordering::Relaxed) == 0 {
                continue;
            }
            let id = Identity { id: pid, start: e.start.load(Ordering::Relaxed), ns: e.ns.load(Ordering::Relaxed) };
            if alive(id) {
                found = true;
            } else if e.pid.compare_exchange(pid, RECLAIMING, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                e.senders.store(0, Ordering::Relaxed);
                e.receivers.store(0, Ordering::Relaxed);
                e.start.store(0, Ordering::Relaxed);
                e.ns.store(0, Ordering::Relaxed);
                e.pid.store(0, Ordering::Release);
            }
        }
        if found {
            Presence::Present
        } else {
            Presence::Absent
        }
    }

    /// `(process, senders, receivers)` of every claimed entry, for inspection
    /// (the pid without [`KERNEL_LIVE`]).
    ///
    /// ```
    /// use shmproc_core::participants::{Participants, Presence, Role};
    /// use shmproc_core::Identity;
    /// // SAFETY: the table is atomics only, valid when zeroed.
    /// let table: Box<Participants> = Box::new(unsafe { core::mem::zeroed() });
    /// table.init();
    /// let me = Identity::current_process();
    /// let alive = |id: Identity| id.is_alive();
    /// table.attach(me, Role::Sender, 1, alive);
    /// table.attach(me, Role::Receiver, 1, alive);
    /// for (id, senders, receivers) in table.snapshot() {
    ///     println!("pid {}: {senders} send, {receivers} recv", id.id);
    /// }
    /// ```
    pub fn snapshot(&self) -> impl Iterator<Item = (Identity, u32, u32)> + '_ {
        self.snapshot_marked().map(|(id, s, r, _)| (id, s, r))
    }

    /// [`snapshot`](Self::snapshot), each entry with whether its handles
    /// were inherited by a forked child that has not used them since
    /// ([`set`](Self::set), [`mark_used`](Self::mark_used)).
    ///
    /// ```
    /// use shmproc_core::participants::{Participants, Role};
    /// use shmproc_core::Identity;
    /// // SAFETY: the table is atomics only, valid when zeroed.
    /// let table: Box<Participants> = Box::new(unsafe { core::mem::zeroed() });
    /// table.init();
    /// let me = Identity::current_process();
    /// table.attach(me, Role::Receiver, 1, |id: Identity| id.is_alive());
    /// assert_eq!(table.snapshot_marked().collect::<Vec<_>>(), [(me, 0, 1, false)]);
    /// ```
    pub fn snapshot_marked(&self) -> impl Iterator<Item = (Identity, u32, u32, bool)> + '_ {
        self.entries.iter().filter_map(|e| {
            let pid = e.pid.load(Ordering::Acquire);
            (pid != 0 && pid != RECLAIMING).then(|| {
                (
                    Identity {
                        id: pid & !KERNEL_LIVE,
                        start: e.start.load(Ordering::Relaxed),
                        ns: e.ns.load(Ordering::Relaxed),
                    },
                    e.senders.load(Ordering::Relaxed),
                    e.receivers.load(Ordering::Relaxed),
                    e.inherited.load(Ordering::Relaxed) != 0,
                )
            })
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn attach_detach_presence_and_dead_cleanup() {
        // SAFETY: all-zero bytes are a valid (empty) table of atomics.
        let t: Participants = unsafe { core::mem::zeroed() };
        t.init();
        let a = Identity { id: 10, start: 1, ns: 1 };
        let b = Identity { id: 11, start: 1, ns: 1 };
        let all_alive = |_: Identity| true;
        assert_eq!(t.presence(Role::Sender, all_alive), Presence::Absent);
        assert!(t.attach(a, Role::Sender, 2, all_alive));
        assert!(t.attach(b, Role::Receiver, 1, all_alive));
        assert_eq!(t.presence(Role::Sender, all_alive), Presence::Present);
        t.detach(a, Role::Sender, 1);
        assert_eq!(t.presence(Role::Sender, all_alive), Presence::Present);
        t.detach(a, Role::Sender, 1);
        assert_eq!(t.presence(Role::Sender, all_alive), Presence::Absent);
        assert!(t.attach(a, Role::Sender, 1, all_alive));
        let a_dead = |i: Identity| i.id != 10;
        assert_eq!(t.presence(Role::Sender, a_dead), Presence::Absent);
        assert_eq!(t.snapshot().count(), 1);
        // Fill the table, then overflow.
        for i in 0..MAX_PARTICIPANTS as u32 - 1 {
            assert!(t.attach(Identity { id: 100 + i, start: 1, ns: 1 }, Role::Receiver, 1, all_alive));
        }
        assert!(!t.attach(Identity { id: 5000, start: 1, ns: 1 }, Role::Sender, 1, all_alive));
        assert_eq!(t.presence(Role::Sender, all_alive), Presence::Unknown);
    }

    /// A parent registers its child without the kernel flag; the child's
    /// own flagged registration upgrades the same entry (no second one), the
    /// judge sees the flag, and detaching without it still frees the entry.
    #[test]
    fn kernel_flag_upgrades_one_entry() {
        // SAFETY: all-zero bytes are a valid (empty) table of atomics.
        let t: Participants = unsafe { core::mem::zeroed() };
        t.init();
        let plain = Identity { id: 10, start: 1, ns: 1 };
        let flagged = Identity { id: 10 | KERNEL_LIVE, ..plain };
        let all_alive = |_: Identity| true;
        assert!(t.set(plain, Role::Sender, 1, all_alive));
        assert!(t.set(flagged, Role::Sender, 1, all_alive));
        assert_eq!(t.snapshot().collect::<std::vec::Vec<_>>(), [(plain, 1, 0)]);
        let seen_flag = core::cell::Cell::new(false);
        let judge = |id: Identity| {
            seen_flag.set(id.id & KERNEL_LIVE != 0);
            true
        };
        assert_eq!(t.presence(Role::Sender, judge), Presence::Present);
        assert!(seen_flag.get(), "the judge is given the flag");
        // A later unflagged registration by the parent does not downgrade.
        assert!(t.set(plain, Role::Sender, 1, all_alive));
        assert_eq!(t.presence(Role::Sender, judge), Presence::Present);
        assert!(seen_flag.get());
        t.detach(plain, Role::Sender, 1);
        assert_eq!(t.snapshot().count(), 0);
        assert_eq!(t.presence(Role::Sender, all_alive), Presence::Absent);
    }
}
