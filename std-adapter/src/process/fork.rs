//! Fork mode: the child is a copy of the caller and runs a closure.

use std::io::{self, Write};

use shmproc_core::Identity;

use super::sys::set_parent_death_signal;
use super::{become_child, ChildResult, ProcessError};

/// Forks a child that runs `f` and exits with its exit code; returns its
/// pid. The caller has checked that forking is allowed (threads, borrows,
/// daemon parent).
pub(super) fn fork_child<F, R>(
    f: F,
    name: String,
    identity: String,
    daemon: bool,
    parent: (u32, String, u64),
) -> Result<u32, ProcessError>
where
    F: FnOnce() -> R + 'static,
    R: ChildResult,
{
    let handles = crate::roles::snapshot();
    // Flush buffered output so the child does not print it a second time.
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: fork has no memory-safety preconditions of its own; the child
    // only touches state that is valid in a single-threaded copy (see the
    // module docs and `become_child`).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(ProcessError::Fork(io::Error::last_os_error()));
    }
    if pid == 0 {
        // Child.
        // SAFETY: we are the only thread of the new child.
        unsafe { become_child(name, identity, daemon, parent.clone()) };
        if daemon {
            set_parent_death_signal(parent.0);
        }
        let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(r) => r.exit_code(),
            Err(_) => 1,
        };
        let _ = io::stdout().flush();
        let _ = io::stderr().flush();
        // SAFETY: _exit ends the child without running the parent's atexit
        // handlers or destructors of state that belongs to the parent.
        unsafe { libc::_exit(code) };
    }
    if let Some(start) = shmproc_core::identity::start_time(pid as u32) {
        crate::roles::register_child(Identity::local(pid as u32, start), &handles);
    }
    Ok(pid as u32)
}
