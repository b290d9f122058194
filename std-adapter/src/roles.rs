//! Which processes hold sender and receiver handles, kept up to date across
//! `fork()`.
//!
//! Every queue or pipe handle registers its role in the object's shared
//! [`Participants`] table under this process's identity, and removes it on
//! drop. A process killed with SIGKILL cannot remove its entries; readers
//! judge entries by liveness instead (see the core module).
//!
//! `fork()` duplicates every handle the parent holds into the child, and the
//! child never runs their destructors (it ends with `_exit`), so the child
//! must be registered as holding them: this module keeps a per-process list of
//! registrations, and the `pthread_atfork` child handler re-registers all of
//! them under the child's identity. (A child forked by `Command::spawn` with a
//! `pre_exec` hook also runs the handler and so counts as a holder until it
//! exits; shmproc's own spawn mode suppresses that.) If another thread was in
//! the middle of changing the list at the moment of the fork, the child skips
//! the re-registration: it then does not count as a holder.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use shmproc_core::participants::{Participants, Presence, Role};
use shmproc_core::Identity;

use crate::globals::ForkSafe;
use crate::kernel_liveness::FileLiveness;

struct Reg {
    table: usize,
    role: Role,
    count: u32,
    /// The object's segment's liveness record (its process flag and its
    /// check: `kernel_liveness`).
    live: FileLiveness,
}

static REGISTRY: ForkSafe<Vec<Reg>> = ForkSafe::new(Vec::new());
/// This process's identity: pid in the high half, 0 until computed; the start
/// time beside it.
static PROCESS_PID: AtomicU64 = AtomicU64::new(0);
static PROCESS_START: AtomicU64 = AtomicU64::new(0);
static PROCESS_NS: AtomicU32 = AtomicU32::new(0);

thread_local! {
    /// Set while this thread forks for spawn mode: that child execs at once.
    static SPAWNING: Cell<bool> = const { Cell::new(false) };
}

/// The calling process's identity (cached; reset in forked children).
pub(crate) fn process() -> Identity {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u64;
    if PROCESS_PID.load(Ordering::Acquire) == pid {
        return Identity {
            id: pid as u32,
            start: PROCESS_START.load(Ordering::Relaxed),
            ns: PROCESS_NS.load(Ordering::Relaxed),
        };
    }
    let me = Identity::current_process();
    PROCESS_START.store(me.start, Ordering::Relaxed);
    PROCESS_NS.store(me.ns, Ordering::Relaxed);
    PROCESS_PID.store(pid, Ordering::Release);
    me
}

fn alive(id: Identity) -> bool {
    id.is_alive()
}

/// This process as `table` records it: flagged when it holds its kernel
/// liveness record on the object's file (`live`).
fn me_in(live: &FileLiveness) -> Identity {
    let me = process();
    Identity { id: me.id | live.process_flag(), ..me }
}

/// Records that this process used its handles on `table` (see
/// `Participants::mark_used`).
pub(crate) fn mark_used(table: &Participants, live: &FileLiveness) {
    table.mark_used(me_in(live));
}

/// Whether a live process holds a handle of `role` on `table` (judged with
/// the kernel's records of the object's file, `live`, where `/proc` cannot
/// tell).
pub(crate) fn presence(table: &Participants, role: Role, live: &FileLiveness) -> Presence {
    table.presence(role, |id| live.process_alive(id))
}

/// How often a [`PresencePace`] lets a look-up through (a look-up scans the
/// participants table and reads `/proc` for each registered process: too
/// much for every call of a `try_recv` loop).
pub(crate) const PRESENCE_EVERY: std::time::Duration = std::time::Duration::from_millis(5);

/// Paces the "is every peer of this role gone?" look-ups of non-blocking
/// calls that found nothing (a `try_recv` loop): at most one per
/// [`PRESENCE_EVERY`] per pace; in between, the answer is "not known to be
/// gone". Blocking waits look up unpaced (they are about to sleep anyway).
#[derive(Debug)]
pub(crate) struct PresencePace {
    made: std::time::Instant,
    /// When the last look-up was let through, in microseconds since
    /// `made`, plus one (0: never).
    last: AtomicU64,
}

impl PresencePace {
    pub(crate) fn new() -> PresencePace {
        PresencePace { made: std::time::Instant::now(), last: AtomicU64::new(0) }
    }

    /// Whether every `role` handle in `table` is known to be gone: looked
    /// up if one is due (of several threads asking at once, one gets it),
    /// `false` otherwise.
    pub(crate) fn absent(&self, table: &Participants, role: Role, live: &FileLiveness) -> bool {
        let now = self.made.elapsed().as_micros() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < PRESENCE_EVERY.as_micros() as u64 {
            return false;
        }
        if self.last.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return false;
        }
        presence(table, role, live) == Presence::Absent
    }
}

/// Registers one handle of `role` for this process.
pub(crate) fn attach(table: &Participants, role: Role, live: &FileLiveness) {
    crate::process::atfork::install();
    let key = table as *const Participants as usize;
    REGISTRY.with(|r| match r.iter_mut().find(|e| e.table == key && e.role == role) {
        Some(e) => e.count += 1,
        None => r.push(Reg { table: key, role, count: 1, live: live.clone() }),
    });
    table.attach(me_in(live), role, 1, |id| live.process_alive(id));
}

/// Removes one handle of `role` for this process.
pub(crate) fn detach(table: &Participants, role: Role) {
    let key = table as *const Participants as usize;
    REGISTRY.with(|r| {
        if let Some(i) = r.iter().position(|e| e.table == key && e.role == role) {
            r[i].count -= 1;
            if r[i].count == 0 {
                r.swap_remove(i);
            }
        }
    });
    table.detach(process(), role, 1);
}

/// The registrations of this process, to hand to a child being forked.
pub(crate) fn snapshot() -> Vec<(usize, Role, u32)> {
    REGISTRY.with(|r| r.iter().map(|e| (e.table, e.role, e.count)).collect())
}

/// In the parent, right after a fork whose child could not register its
/// inherited handles itself ([`reattached`] was false there): records the
/// child as holding them, before the parent can drop its own copies.
///
/// Only then: a child that registered itself may already have dropped some
/// of those handles, and the parent's absolute counts would bring them back
/// (the child would count as a sender until it exits, and a receiver
/// waiting for `Disconnected` would wait for that). `fork_child` learns
/// which case it is from the child before it returns.
pub(crate) fn register_child(child: Identity, snap: &[(usize, Role, u32)]) {
    for &(table, role, count) in snap {
        // SAFETY: the table lives in a mapping kept alive by the handle that
        // registered it, which still exists in this process.
        let t = unsafe { &*(table as *const Participants) };
        t.set(child, role, count, alive);
    }
}

/// Records a spawn-mode child as holding one handle of each role its argument
/// carried, before the parent can drop its own; the child's deserialised
/// handles add their own registrations, so until the child drops them or exits
/// it counts twice (harmless: it only delays a disconnection to the child's
/// exit).
pub(crate) fn register_spawned(child: Identity, roles: &[(usize, Role)]) {
    for &(table, role) in roles {
        // SAFETY: as in `register_child`.
        let t = unsafe { &*(table as *const Participants) };
        t.attach(child, role, 1, alive);
    }
}

/// Whether this thread is forking a spawn-mode child (which execs at once,
/// so its fork handler skips re-registrations).
pub(crate) fn spawning() -> bool {
    SPAWNING.try_with(Cell::get).unwrap_or(false)
}

/// Runs `f` with re-registration in forked children suppressed (spawn mode).
pub(crate) fn while_spawning<R>(f: impl FnOnce() -> R) -> R {
    SPAWNING.with(|s| s.set(true));
    let r = f();
    SPAWNING.with(|s| s.set(false));
    r
}

/// Whether this process, a forked child, registered its inherited handles
/// itself (see [`reattached`]).
static REATTACHED: AtomicBool = AtomicBool::new(false);

/// In a freshly forked child: whether [`reattach_in_child`] registered the
/// inherited handles under the child's identity (false when the registry
/// was caught mid-update by the fork: then the parent must).
pub(crate) fn reattached() -> bool {
    REATTACHED.load(Ordering::Relaxed)
}

/// In a freshly forked child: register every inherited handle under the
/// child's identity.
pub(crate) fn reattach_in_child() {
    PROCESS_PID.store(0, Ordering::Release);
    REATTACHED.store(false, Ordering::Relaxed);
    if SPAWNING.try_with(Cell::get).unwrap_or(false) {
        return;
    }
    let me = process();
    // SAFETY: called only in the single thread of a freshly forked child.
    let usable = unsafe { REGISTRY.unlock_in_child() };
    if !usable {
        return;
    }
    REATTACHED.store(true, Ordering::Relaxed);
    REGISTRY.with(|r| {
        for e in r.iter() {
            // SAFETY: the table lives in a MAP_SHARED mapping that the handle
            // keeps alive; fork duplicated both the handle and the mapping.
            let table = unsafe { &*(e.table as *const Participants) };
            let flagged = Identity { id: me.id | e.live.process_flag_held(), ..me };
            table.set(flagged, e.role, e.count, |id| e.live.process_alive(id));
        }
    });
}
