//! Who holds a lock, and the check that tells a dead holder from a slow one.

use crate::identity::{liveness, Identity, Liveness};

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
    /// The process (tgid) the thread belongs to.
    pub pid: u32,
}

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
/// [`ProcLiveness`], asks the kernel; models and tests substitute their own.
///
/// ```
/// use shmproc_core::owner::OwnerCheck;
/// // A test double: every holder but tid 7 is alive.
/// let check = |tid: u32, _start: Option<u64>| tid != 7;
/// assert!(check.is_alive(1, None));
/// assert!(!check.is_alive(7, Some(123)));
/// ```
pub trait OwnerCheck {
    /// `start` is `None` when only the id is known (the holder had not finished
    /// recording itself): then only existence can be checked.
    fn is_alive(&self, tid: u32, start: Option<u64>) -> bool;
}

/// Liveness from `/proc/<tid>/stat`: exists, not a zombie, same start time.
///
/// ```
/// use shmproc_core::owner::{OwnerCheck, ProcLiveness};
/// let me = shmproc_core::Identity::current_thread();
/// assert!(ProcLiveness.is_alive(me.id, Some(me.start)));
/// assert!(!ProcLiveness.is_alive(me.id, Some(me.start + 1)));
/// ```
#[derive(Copy, Clone, Debug, Default)]
pub struct ProcLiveness;

impl OwnerCheck for ProcLiveness {
    fn is_alive(&self, tid: u32, start: Option<u64>) -> bool {
        liveness(tid, start.unwrap_or(0)) == Liveness::Alive
    }
}

impl<F: Fn(u32, Option<u64>) -> bool> OwnerCheck for F {
    fn is_alive(&self, tid: u32, start: Option<u64>) -> bool {
        self(tid, start)
    }
}
