//! The waiting loop shared by queues and pipes: spin briefly, then sleep on a
//! notifier in liveness slices, checking at each slice for a disconnection
//! and giving the ring a chance to recover from a dead peer.

use shmproc_core::futex::WaitOutcome;
use shmproc_core::mpmc::UNREGISTERED_GRACE;
use shmproc_core::notify::Notifier;
use shmproc_core::raw_mutex::LIVENESS_SLICE;
use shmproc_core::time::earliest;
use shmproc_core::Deadline;

const SPIN: u32 = 200;

/// How a wait ended.
pub(crate) enum Waited {
    /// `ready()` holds.
    Ready,
    /// The deadline passed.
    Timeout,
    /// Closed, or nobody is left on the other side.
    Disconnected,
}

/// Waits until `ready()`. `disconnected()` (a liveness scan) runs only after a
/// wake-up that brought nothing or a slice timeout, never on the fast path.
/// `recover(grace_passed)` runs at slice timeouts and returns the position it
/// examined and whether it made progress; a position stuck for longer than
/// [`UNREGISTERED_GRACE`] is reported with `grace_passed = true`.
pub(crate) fn wait(
    deadline: Option<Deadline>,
    notifier: &Notifier,
    ready: impl Fn() -> bool,
    closed: impl Fn() -> bool,
    disconnected: impl Fn() -> bool,
    mut recover: impl FnMut(bool) -> (u64, bool),
) -> Waited {
    // Spin, then yield, before sleeping: a peer on another core usually makes
    // progress within a few microseconds, and a futex sleep plus wake-up costs
    // more than that.
    for i in 0..SPIN {
        if ready() {
            return Waited::Ready;
        }
        if i < SPIN / 2 {
            for _ in 0..8 {
                std::hint::spin_loop();
            }
        } else {
            std::thread::yield_now();
        }
    }
    if closed() {
        return Waited::Disconnected;
    }
    let mut stuck: Option<(u64, Deadline)> = None;
    loop {
        let slice = Deadline::after(LIVENESS_SLICE);
        let outcome = notifier.sleep(Some(earliest(deadline, slice)), || ready() || closed());
        if ready() {
            return Waited::Ready;
        }
        if closed() || (outcome != WaitOutcome::ValueChanged && disconnected()) {
            return Waited::Disconnected;
        }
        if outcome == WaitOutcome::TimedOut {
            if deadline.is_some_and(|d| d.has_passed()) {
                return Waited::Timeout;
            }
            let grace = matches!(stuck, Some((_, since)) if since.has_passed());
            let (pos, progressed) = recover(grace);
            stuck = match stuck {
                _ if progressed => None,
                Some((p, since)) if p == pos => Some((p, since)),
                _ => Some((pos, Deadline::after(UNREGISTERED_GRACE))),
            };
        }
    }
}
