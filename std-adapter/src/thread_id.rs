//! The calling thread's identity (tid + start time + pid), cached per thread.
//!
//! Lock fast paths need the owner id without a syscall, so it is cached in a
//! thread-local. `fork()` copies the cache into the child, where it would name
//! the parent's thread: the fork-child handler (`process/atfork.rs`,
//! installed on first use) calls [`reset_after_fork`] to clear it.

use std::cell::Cell;

use shmproc_core::owner::Owner;

thread_local! {
    static CACHED: Cell<Option<Owner>> = const { Cell::new(None) };
}

/// The calling thread as a lock owner.
#[inline]
pub(crate) fn owner() -> Owner {
    CACHED.with(|c| match c.get() {
        Some(o) => o,
        None => {
            crate::process::atfork::install();
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
