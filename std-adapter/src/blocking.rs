//! The waiting loop shared by queues and pipes: spin briefly, then sleep on a
//! notifier in liveness slices, checking at each slice for a disconnection
//! and giving the ring a chance to recover from a dead peer.

use std::time::Duration;

use shmproc_core::futex::WaitOutcome;
use shmproc_core::mpmc::UNREGISTERED_GRACE;
use shmproc_core::notify::Notifier;
use shmproc_core::raw_mutex::LIVENESS_SLICE;
use shmproc_core::spsc::SpscRing;
use shmproc_core::time::earliest;
use shmproc_core::Deadline;

/// How long a spinning waiter lets pass between looks at the ring while
/// messages stream in (see [`receiver_pace`]), and for senders waiting for
/// room.
///
/// A consumer that keeps looking at the producer's index pulls that cache
/// line, and the frame the producer writes next, away from the producer on
/// every message: both sides then pay a cache-line transfer per message.
/// Looking every few microseconds lets the producer write a batch
/// undisturbed, which the consumer then takes in a row. Measured between two
/// processes on a 2-core VM (`Queue<u64>`, medians of 7 runs, when `tail`
/// published frames): looking at once 68–82 ns per message, after 0.5 µs
/// 42 ns, after 1 µs 36 ns, after 2 µs 31 ns. Since frames are published by
/// their header word (the consumer sees each one as soon as it is written,
/// and so catches up with the producer more often), 2 µs gave 27–29 ns, 5 µs
/// 21.5–23 ns and 10 µs 20–21 ns (2 M messages a run, five runs each).
pub(crate) const LOOK_STREAMING: Duration = Duration::from_micros(5);
/// How long a spinning receiver lets pass between looks when messages come
/// one at a time (request and reply): the latency a blocking receive adds.
const LOOK_EVERY: Duration = Duration::from_micros(1);
/// A receiver that took at least this many bytes of frames since its
/// previous wait on the same ring is in a stream (a `u64` frame is 16 bytes).
const STREAM_BYTES: u64 = 512;

thread_local! {
    /// The ring this thread last waited on as a receiver (its address) and
    /// the consumer position then.
    static LAST_WAIT: std::cell::Cell<(usize, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// How often a receiver about to wait on `ring` should look:
/// every [`LOOK_STREAMING`] if it took at least [`STREAM_BYTES`] since its
/// previous wait on that ring (the producer is streaming, and looking sooner
/// would slow it down), else every [`LOOK_EVERY`] (one message at a time:
/// latency matters). Called once per wait, never per message.
pub(crate) fn receiver_pace(ring: &SpscRing) -> Duration {
    pace_for(ring.header() as *const _ as usize, ring.head())
}

/// [`receiver_pace`] for the ring identified by `ring` (its address), whose
/// consumer position is `position`.
fn pace_for(ring: usize, position: u64) -> Duration {
    LAST_WAIT.with(|last| {
        let (prev_ring, prev_pos) = last.replace((ring, position));
        if prev_ring == ring && position.wrapping_sub(prev_pos) >= STREAM_BYTES {
            LOOK_STREAMING
        } else {
            LOOK_EVERY
        }
    })
}

/// How long to spin (looking every few microseconds) before yielding.
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
    recover: impl FnMut(bool) -> (u64, bool),
) -> Waited {
    wait_paced(LOOK_STREAMING, deadline, notifier, ready, closed, disconnected, recover)
}

/// [`wait`], looking every `look_every` while it spins (see
/// [`receiver_pace`]).
pub(crate) fn wait_paced(
    look_every: Duration,
    deadline: Option<Deadline>,
    notifier: &Notifier,
    ready: impl Fn() -> bool,
    closed: impl Fn() -> bool,
    disconnected: impl Fn() -> bool,
    mut recover: impl FnMut(bool) -> (u64, bool),
) -> Waited {
    // Spin, then yield, before sleeping: a peer on another core usually makes
    // progress within microseconds, and a futex sleep plus wake-up costs more.
    // While spinning, look only every `look_every` (see LOOK_STREAMING). A deadline that
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
        let next = Deadline::after(look_every).min(spin_until);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receivers_look_sooner_unless_messages_stream_in() {
        // The first wait on a ring: no history, so latency first.
        assert_eq!(pace_for(0x1000, 0), LOOK_EVERY);
        // One message between waits (request and reply).
        assert_eq!(pace_for(0x1000, 16), LOOK_EVERY);
        assert_eq!(pace_for(0x1000, 32), LOOK_EVERY);
        // A stream: many frames taken since the previous wait.
        assert_eq!(pace_for(0x1000, 32 + STREAM_BYTES), LOOK_STREAMING);
        assert_eq!(pace_for(0x1000, 32 + 10 * STREAM_BYTES), LOOK_STREAMING);
        // Another ring's position says nothing about this one.
        assert_eq!(pace_for(0x2000, 1 << 30), LOOK_EVERY);
        assert_eq!(pace_for(0x1000, 1 << 40), LOOK_EVERY);
        // Each thread keeps its own history.
        std::thread::spawn(|| assert_eq!(pace_for(0x1000, (1 << 40) + STREAM_BYTES), LOOK_EVERY)).join().unwrap();
        assert_eq!(pace_for(0x1000, (1 << 40) + STREAM_BYTES), LOOK_STREAMING);
    }
}
