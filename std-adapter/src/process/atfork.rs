//! The fork-child handler: what every freshly forked child of a process
//! using shmproc must do before anything else, in one place.
//!
//! Registered with `pthread_atfork` (by the routing constructor, [`crate::init`],
//! or on first use of a handle or lock), so it runs in children of `fork()`
//! whoever calls it; the fork server's children, made by a raw `clone`,
//! call [`child`] themselves.

use std::sync::Once;

static ATFORK: Once = Once::new();

/// What a freshly forked child must do first: forget the cached thread
/// identity and the list of locks this thread held (held.rs),
/// register for the expedited barrier, re-register the inherited
/// queue and pipe handles under the child's identity, give the child its
/// own kernel liveness records (`kernel_liveness`), drop the parent's
/// fork-server connection, forget the parent's descriptor broker, and
/// drop the parent's async waiter registrations.
pub(crate) extern "C" fn child() {
    crate::thread_id::reset_after_fork();
    crate::held::reset_after_fork();
    if !crate::roles::spawning() {
        // The parent's liveness locks must not live on in the child.
        crate::kernel_liveness::relock_in_child();
    }
    // The child registers for the expedited barrier itself before its first
    // light fence (one atomic store here).
    shmproc_core::asymmetric_fence::after_fork_in_child();
    super::forkserver::after_fork_in_child();
    crate::roles::reattach_in_child();
    crate::fd_passing::after_fork_in_child();
    crate::async_wait::reset_after_fork();
    crate::blocking::after_fork_in_child();
}

/// Installs the `pthread_atfork` child handler (idempotent).
pub(crate) fn install() {
    ATFORK.call_once(|| {
        // SAFETY: registering a valid extern "C" fn as the child handler; it
        // runs in the single thread of a fresh child and touches only this
        // crate's fork-safe state.
        unsafe { libc::pthread_atfork(None, None, Some(child)) };
    });
}
