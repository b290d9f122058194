//! Who holds a lock, and the check that tells a dead holder from a slow one.

use crate::identity::{liveness, liveness_in, Identity, Liveness};

/// The thread acting on a primitive: its kernel tid and start time, plus its
/// process id (for reporting). Callers cache it per thread (see the std crate)
/// so that fast paths make no syscall.
///
/// ```
/// use shmproc_core::owner::Owner;
/// let me = Owner::current();
/// assert_eq!(me.pid, std::process::id());
/// assert_eq!(me.thread, shmproc_core::Identity::current_thread());
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The thread (tid and start time).
    pub thread: Identity,
    /// The process (tgid) the thread belongs to, with [`KERNEL_LIVE`] set
    /// when that process holds its kernel liveness lock on the file of the
    /// region being used (set by the std crate per segment; records keep it).
    pub pid: u32,
}

/// Flag in [`Owner::pid`] (and in the pid a lock records): the owner's
/// process holds a kernel-kept liveness record for the region's file, so a
/// judge of another pid namespace can prove its death
/// ([`OwnerCheck::is_alive_owner`]). Pids are below 2²² on Linux, so the
/// bit is free.
///
/// ```
/// use shmproc_core::owner::KERNEL_LIVE;
/// assert_eq!(KERNEL_LIVE, 1 << 31);
/// ```
pub const KERNEL_LIVE: u32 = 1 << 31;

impl Owner {
    /// The calling thread (two syscalls and a `/proc` read: cache it).
    ///
    /// ```
    /// let me = shmproc_core::owner::Owner::current();
    /// assert!(me.thread.id > 0);
    /// ```
    #[must_use]
    pub fn current() -> Owner {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u32;
        Owner { thread: Identity::current_thread(), pid }
    }
}

/// Decides whether a recorded holder is still alive. The default,
/// [`ProcLiveness`], asks the kernel and fails closed; models and tests
/// substitute their own.
///
/// A primitive that judges a holder "not alive" takes over its lock or frees
/// its slot, so an implementation must answer `false` only when the holder is
/// *known* dead, and `true` whenever it cannot tell.
///
/// ```
/// use shmproc_core::owner::OwnerCheck;
/// // A test double: every holder but tid 7 is alive.
/// let check = |tid: u32, _start: Option<u64>| tid != 7;
/// assert!(check.is_alive(1, None));
/// assert!(!check.is_alive(7, Some(123)));
/// assert!(!check.is_alive_in(7, Some(123), 42)); // closures ignore the namespace
/// ```
pub trait OwnerCheck {
    /// Whether thread `tid` of the caller's own pid namespace is alive.
    /// `start` is `None` when only the id is known (the holder had not
    /// finished recording itself): then only existence can be checked.
    fn is_alive(&self, tid: u32, start: Option<u64>) -> bool;

    /// Whether thread `tid`, recorded in pid namespace `ns` (0: unknown; see
    /// [`Identity::ns`]), is alive. The default ignores `ns` and asks
    /// [`is_alive`](OwnerCheck::is_alive), which suits test doubles.
    fn is_alive_in(&self, tid: u32, start: Option<u64>, ns: u32) -> bool {
        let _ = ns;
        self.is_alive(tid, start)
    }

    /// Whether the holder recorded as thread `tid` (namespace `ns`) of
    /// process `pid` is alive. `pid` may carry [`KERNEL_LIVE`], which a check
    /// that can read kernel-kept liveness records (the std crate's, per
    /// segment) uses to prove the death of a process of another namespace.
    /// The default ignores `pid` and asks
    /// [`is_alive_in`](OwnerCheck::is_alive_in).
    ///
    /// ```
    /// use shmproc_core::owner::{OwnerCheck, ProcLiveness, KERNEL_LIVE};
    /// let me = shmproc_core::owner::Owner::current();
    /// let (t, ns) = (me.thread, me.thread.ns);
    /// assert!(ProcLiveness.is_alive_owner(t.id, Some(t.start), ns, me.pid | KERNEL_LIVE));
    /// ```
    fn is_alive_owner(&self, tid: u32, start: Option<u64>, ns: u32, pid: u32) -> bool {
        let _ = pid;
        self.is_alive_in(tid, start, ns)
    }
}

/// Liveness from the kernel ([`crate::identity::liveness_in`]): a holder is
/// judged dead only on proof (its id is gone from, or reused in, the caller's
/// own pid namespace, or it is a zombie); a holder in another or an unknown
/// namespace, or behind an unreadable `/proc`, counts as alive.
///
/// ```
/// use shmproc_core::owner::{OwnerCheck, ProcLiveness};
/// let me = shmproc_core::Identity::current_thread();
/// assert!(ProcLiveness.is_alive(me.id, Some(me.start)));
/// assert!(!ProcLiveness.is_alive(me.id, Some(me.start + 1)));
/// // Recorded in another pid namespace: never judged dead by its id.
/// assert!(ProcLiveness.is_alive_in(me.id, Some(me.start + 1), me.ns ^ 1));
/// ```
#[derive(Copy, Clone, Debug, Default)]
pub struct ProcLiveness;

impl OwnerCheck for ProcLiveness {
    fn is_alive(&self, tid: u32, start: Option<u64>) -> bool {
        liveness(tid, start.unwrap_or(0)) != Liveness::Dead
    }

    fn is_alive_in(&self, tid: u32, start: Option<u64>, ns: u32) -> bool {
        liveness_in(tid, start.unwrap_or(0), ns) != Liveness::Dead
    }
}

impl<F: Fn(u32, Option<u64>) -> bool> OwnerCheck for F {
    fn is_alive(&self, tid: u32, start: Option<u64>) -> bool {
        self(tid, start)
    }
}
