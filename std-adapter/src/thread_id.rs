//! The calling thread's identity (tid + start time + pid), cached per thread.
//!
//! Lock fast paths need the owner id without a syscall, so it is cached in a
//! thread-local. `fork()` copies the cache into the child, where it would name
//! the parent's thread: a `pthread_atfork` child handler (installed on first
//! use) and [`reset_after_fork`] clear it.

use std::cell::Cell;
use std::sync::Once;

use shmproc_core::owner::Owner;

thread_local! {
    static CACHED: Cell<Option<Owner>> = const { Cell::new(None) };
}

static ATFORK: Once = Once::new();

/// What a freshly forked child must do first (the fork handler; the fork
/// server's children call it directly, as their raw `clone` runs no
/// handlers).
pub(crate) extern "C" fn atfork_child() {
    reset_after_fork();
    crate::forkserver::after_fork_in_child();
    // The child registers for the expedited barrier itself before its first
    // light fence (one atomic store here).
    shmproc_core::asymmetric_fence::after_fork_in_child();
    crate::roles::reattach_in_child();
}

/// Installs the `pthread_atfork` child handler (idempotent).
pub(crate) fn install_atfork() {
    ATFORK.call_once(|| {
        // SAFETY: registering a valid extern "C" fn as the child handler; it only
        // writes a const-initialised thread-local Cell (no allocation, no lock).
        unsafe { libc::pthread_atfork(None, None, Some(atfork_child)) };
    });
}

/// The calling thread as a lock owner.
#[inline]
pub(crate) fn owner() -> Owner {
    CACHED.with(|c| match c.get() {
        Some(o) => o,
        None => {
            install_atfork();
            let o = Owner::current();
            c.set(Some(o));
            o
        }
    })
}

/// Forgets the cached identity (in a freshly forked child).
pub(crate) fn reset_after_fork() {
    let _ = CACHED.try_with(|c| c.set(None));
}
