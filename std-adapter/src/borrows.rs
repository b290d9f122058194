//! Borrows into shared rings, counted per process, so that fork mode can
//! refuse to copy one into a child.
//!
//! A [`RecvRef`](crate::RecvRef) points into a frame or slot that its drop
//! hands back to the producers. A child forked while one lives would get a
//! copy of that pointer, and the parent's drop would release the frame
//! under it: the child then reads whatever the next message writes there.
//! So [`Builder::spawn`](crate::process::Builder::spawn) (and a
//! [`Pool`](crate::Pool), whose workers it forks) fails with
//! [`ProcessError::RingBorrowed`](crate::ProcessError::RingBorrowed) while any
//! such borrow is alive in the process, in any thread; spawn mode starts a
//! fresh program and copies nothing, so it is not affected.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Borrows alive in this process.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// One borrow into a ring, counted while it lives.
#[derive(Debug)]
pub(crate) struct RingBorrow(());

impl RingBorrow {
    /// Counts a new borrow.
    pub(crate) fn new() -> RingBorrow {
        // Relaxed: the count is only read by the thread that forks, which
        // also ordered its own borrows; another thread's borrow is reported
        // whether or not it is seen (forking a threaded parent is refused
        // unless the user allowed it, see `allow_threaded_fork`).
        LIVE.fetch_add(1, Ordering::Relaxed);
        RingBorrow(())
    }
}

impl Drop for RingBorrow {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Borrows alive in this process now.
pub(crate) fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}
