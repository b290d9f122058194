//! Who holds a lock, and the check that tells a dead holder from a slow one.

use crate::identity::{liveness, Identity, Liveness};

/// The thread acting on a primitive: its kernel tid and start time, plus its
/// process id (for reporting). Callers cache it per thread (see the std crate)
/// so that fast paths make no syscall.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The thread (tid and start time).
    pub thread: Identity,
    /// The process (tgid) the thread belongs to.
    pub pid: u32,
}

impl Owner {
    /// The calling thread (two syscalls and a `/proc` read: cache it).
    #[must_use]
    pub fn current() -> Owner {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u32;
        Owner { thread: Identity::current_thread(), pid }
    }
}

/// Decides whether a recorded holder is still alive. The default,
/// [`ProcLiveness`], asks the kernel; models and tests substitute their own.
pub trait OwnerCheck {
    /// `start` is `None` when only the id is known (the holder had not finished
    /// recording itself): then only existence can be checked.
    fn is_alive(&self, tid: u32, start: Option<u64>) -> bool;
}

/// Liveness from `/proc/<tid>/stat`: exists, not a zombie, same start time.
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
