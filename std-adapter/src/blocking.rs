//! The waiting loop shared by queues and pipes: spin briefly, then sleep on a
//! notifier in liveness slices, checking at each slice for a disconnection
//! and giving the ring a chance to recover from a dead peer.

use std::time::Duration;

use shmproc_core::futex::WaitOutcome;
use shmproc_core::mpmc::UNREGISTERED_GRACE;
use shmproc_core::notify::Notifier;
use shmproc_core::raw_mutex::LIVENESS_SLICE;
use shmproc_core::time::earliest;
use shmproc_core::Deadline;

/// How long a spinning waiter lets pass between looks at the ring.
///
/// A consumer that keeps looking at the producer's index pulls that cache
/// line, and the frame the producer writes next, away from the producer on
/// every message: both sides then pay a cache-line transfer per message.
/// Looking every couple of microseconds lets the producer write a batch
/// undisturbed, which the consumer then takes in a row. Measured between two
/// processes on a 2-core VM (`Queue<u64>`, medians of 7 runs): looking at
/// once 68–82 ns per message, after 0.5 µs 42 ns, after 1 µs 36 ns, after
/// 2 µs 31 ns. Since frames are published by their header word (the
/// consumer sees each one as soon as it is written, and so catches up with
/// the producer more often), 2 µs gave 27–29 ns, 5 µs 21.5–23 ns and 10 µs
/// 20–21 ns (2 M messages a run, five runs each). The price is up to this
/// much latency for a *blocking* receive whose message arrives while it
/// spins (the blocking ping-pong went from 1.3 to 2.7 µs one way, against
/// 10–14 µs for a pipe); a `try_recv` loop does not wait here.
const LOOK_EVERY: Duration = Duration::from_micros(5);
/// How long to spin (looking every [`LOOK_EVERY`]) before yielding.
const SPIN_FOR: Duration = Duration::from_micros(60);
/// Yields (looking after each) before sleeping on the futex.
const YIELDS: u32 = 100;

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
    // progress within microseconds, and a futex sleep plus wake-up costs more.
    // While spinning, look only every LOOK_EVERY (see there). A deadline that
    // ends during the spin ends it too.
    if deadline.is_some_and(|d| d.has_passed()) {
        // A `try_` call or an expired timeout: one look, no waiting.
        return if ready() {
            Waited::Ready
        } else if closed() || disconnected() {
            Waited::Disconnected
        } else {
            Waited::Timeout
        };
    }
    let spin_until = earliest(deadline, Deadline::after(SPIN_FOR));
    loop {
        let next = Deadline::after(LOOK_EVERY).min(spin_until);
        while !next.has_passed() {
            std::hint::spin_loop();
        }
        if ready() {
            return Waited::Ready;
        }
        if spin_until.has_passed() {
            break;
        }
    }
    for _ in 0..YIELDS {
        if deadline.is_some_and(|d| d.has_passed()) {
            break;
        }
        std::thread::yield_now();
        if ready() {
            return Waited::Ready;
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
