//! The waiting loop shared by queues and pipes: spin as the end's
//! [`WaitPolicy`] plans (by default only while recent waits were short),
//! then sleep on a notifier in liveness slices, checking at each slice for a
//! disconnection and giving the ring a chance to recover from a dead peer.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
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
/// A consumer that keeps looking at the producer's next header word pulls
/// that cache line, and the frame the producer writes next, away from the
/// producer on every message: both sides then pay a cache-line transfer per
/// message. Looking every few microseconds lets the producer write a run of
/// frames undisturbed, which the consumer then takes in a row; longer gaps
/// gave higher stream throughput in our measurements, up to about this one
/// (the bench report, `cargo bench -p shmproc-benches`, shows the current
/// figures).
pub(crate) const LOOK_STREAMING: Duration = Duration::from_micros(5);
/// How long a spinning receiver lets pass between looks when messages come
/// one at a time (request and reply): the latency a blocking receive adds.
const LOOK_EVERY: Duration = Duration::from_nanos(250);
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

/// How a blocked send or receive waits before it sleeps, per queue or pipe
/// end in a process ([`Queue::set_wait_policy`](crate::Queue::set_wait_policy),
/// [`PipeReceiver::set_wait_policy`](crate::PipeReceiver::set_wait_policy)).
///
/// A peer on another core usually answers within microseconds, and a futex
/// sleep plus its wake-up costs several (two context switches and a memory
/// barrier), so a waiter may spin first. Spinning pays only when the wait
/// would have been short: a receiver that spins while messages trickle in
/// keeps a core busy for nothing.
///
/// ```
/// use shmproc::{Queue, WaitPolicy};
/// use std::time::Duration;
/// let q = Queue::<u64>::bounded(8)?;
/// assert_eq!(q.wait_policy(), WaitPolicy::Adaptive);
/// // A latency-critical consumer with a core to spare:
/// q.set_wait_policy(WaitPolicy::Spin(Duration::from_micros(100)));
/// // A background consumer that should never burn CPU while idle:
/// q.set_wait_policy(WaitPolicy::Sleep);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum WaitPolicy {
    /// The default: spin only as long as recent waits on this queue or end
    /// suggest the wait will be short (as adaptive mutexes do). Each wait's
    /// length, from its start until the message or room came, feeds a
    /// running average; while that average is under 20 µs the waiter spins
    /// for up to twice the average (at most 20 µs), then yields the CPU a
    /// few times, then sleeps; once waits grow longer (messages arrive less
    /// often than every ~20 µs), it sleeps at once, except that every 16th
    /// such wait still spins up to 20 µs, to notice when waits have become
    /// short again (a sleeping wait measures its own wake-up too, and a
    /// request/reply pair whose two sides slept could otherwise stay asleep
    /// for good). A steady trickle then
    /// costs a sleep and a wake-up per message, as a pipe does, while a
    /// request/reply exchange or a stream keeps the sub-microsecond path.
    #[default]
    Adaptive,
    /// Spin for up to this long (looking at the ring every few hundred
    /// nanoseconds to microseconds), then sleep: the lowest latency for a
    /// waiter that may keep a core busy.
    Spin(Duration),
    /// Never spin: sleep on the futex at once (still checking the ring once
    /// before sleeping). Least CPU; each message that finds the receiver
    /// asleep costs a wake-up.
    Sleep,
}

/// Longest spin of [`WaitPolicy::Adaptive`], and the average wait above which
/// it does not spin at all: about twice what a sleep and wake-up cost the
/// waiter on the machines we measured, so spinning never costs much more
/// than sleeping would have.
const ADAPTIVE_SPIN_MAX: Duration = Duration::from_micros(20);
/// Yields (looking after each) after an adaptive spin that found nothing,
/// before sleeping: on a machine with more runnable processes than cores
/// they let the peer run on this core.
const ADAPTIVE_YIELDS: u32 = 8;
/// The running average starts here (no history yet): short enough to spin.
const FIRST_GUESS: Duration = Duration::from_micros(5);
/// Waits longer than this count as this long in the average, so that one
/// long pause is forgotten after a few short waits.
const AVERAGE_CAP: Duration = Duration::from_micros(400);
/// While the average says "sleep", every this-many-th adaptive wait spins
/// anyway, for [`ADAPTIVE_SPIN_MAX`]: a probe. A wait that sleeps measures
/// the wake-ups too, so a request/reply pair whose two sides had both gone
/// to sleep (after one long pause) measured each wait as two wake-ups,
/// above the spin threshold on a VM (2 x 8-10 µs), and stayed asleep: a
/// `Pipe` ping-pong hop took 8-25 µs in such runs and 0.3 µs in the others.
/// A probe that gets its message while spinning brings the average down. In
/// a trickle a probe costs one short spin per this many messages.
const PROBE_EVERY: u64 = 16;

/// One queue's or pipe end's waiting state in this process: its
/// [`WaitPolicy`] and, for the adaptive policy, the running average of its
/// recent waits. Process-local (never in shared memory); threads share it
/// and race on the average, which is only a hint.
///
/// # Standing registration
///
/// A waiter that sleeps on every message (long waits) would pay, per sleep,
/// the heavy fence of the notifier's handshake (`membarrier`, a system call
/// that interrupts the peer's CPU): as much again as the sleep itself. So
/// the first such sleep registers this process as a *standing* sleeper
/// ([`Notifier::register`]) and later ones sleep without counting or
/// fencing ([`Notifier::sleep_registered`], which only *arms* the notifier:
/// the next peer to make progress makes the wake-up call, one per sleep).
/// While registered, the peer pays a real fence per message instead of a
/// compiler fence, so the registration is dropped
/// ([`stand_down`](Pacer::stand_down)) as soon as an operation succeeds
/// without waiting or a wait plans to spin, and when the queue or pipe end
/// is dropped in this process. A process killed while registered leaves the
/// count one high: its peers then pay that fence per message (and a wake-up
/// call if it died armed, once), never a missed wake-up.
#[derive(Debug)]
pub(crate) struct Pacer {
    /// The policy: [`POLICY_ADAPTIVE`], [`POLICY_SLEEP`], or a spin time in
    /// nanoseconds shifted left by 2 with [`POLICY_SPIN`].
    policy: AtomicU64,
    /// Running average of wait lengths, in nanoseconds.
    average: AtomicU64,
    /// Adaptive waits planned while the average said "sleep" (for the
    /// probes, [`PROBE_EVERY`]).
    sleepy: AtomicU64,
    /// `fork generation << 32 | STANDING | threads in a covered sleep`; a
    /// word from another fork generation (inherited from the parent, whose
    /// registration it is) counts as nothing. Changed under `changing`.
    standing: AtomicU64,
    changing: std::sync::Mutex<()>,
}

/// This process's fork generation: bumped in every forked child, so that a
/// child does not take its parent's standing registrations for its own.
static FORK_GENERATION: AtomicU32 = AtomicU32::new(0);

/// Called by the fork-child handler (`process/atfork.rs`).
pub(crate) fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// This process's fork generation (0 in a process that was not forked).
#[inline]
pub(crate) fn fork_generation() -> u32 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

const STANDING: u64 = 1 << 31;
const COVERED: u64 = STANDING - 1;

const POLICY_ADAPTIVE: u64 = 0;
const POLICY_SLEEP: u64 = 1;
const POLICY_SPIN: u64 = 2;

impl Default for Pacer {
    fn default() -> Pacer {
        Pacer {
            policy: AtomicU64::new(POLICY_ADAPTIVE),
            average: AtomicU64::new(FIRST_GUESS.as_nanos() as u64),
            sleepy: AtomicU64::new(0),
            standing: AtomicU64::new(0),
            changing: std::sync::Mutex::new(()),
        }
    }
}

impl Pacer {
    /// Sets the policy.
    pub(crate) fn set(&self, policy: WaitPolicy) {
        let word = match policy {
            WaitPolicy::Adaptive => POLICY_ADAPTIVE,
            WaitPolicy::Sleep => POLICY_SLEEP,
            WaitPolicy::Spin(d) => (d.as_nanos().min(u128::from(u64::MAX >> 2)) as u64) << 2 | POLICY_SPIN,
        };
        self.policy.store(word, Ordering::Relaxed);
    }

    /// The policy.
    pub(crate) fn get(&self) -> WaitPolicy {
        match self.policy.load(Ordering::Relaxed) {
            POLICY_ADAPTIVE => WaitPolicy::Adaptive,
            POLICY_SLEEP => WaitPolicy::Sleep,
            w => WaitPolicy::Spin(Duration::from_nanos(w >> 2)),
        }
    }

    /// How long the next wait spins, and how many times it then yields.
    fn plan(&self) -> (Duration, u32) {
        match self.get() {
            WaitPolicy::Sleep => (Duration::ZERO, 0),
            WaitPolicy::Spin(d) => (d, 0),
            WaitPolicy::Adaptive => {
                let average = Duration::from_nanos(self.average.load(Ordering::Relaxed));
                if average > ADAPTIVE_SPIN_MAX {
                    let n = self.sleepy.fetch_add(1, Ordering::Relaxed);
                    if n % PROBE_EVERY == PROBE_EVERY - 1 {
                        (ADAPTIVE_SPIN_MAX, 0)
                    } else {
                        (Duration::ZERO, 0)
                    }
                } else {
                    ((average * 2 + LOOK_EVERY).min(ADAPTIVE_SPIN_MAX), ADAPTIVE_YIELDS)
                }
            }
        }
    }

    /// The standing word's state for this fork generation.
    fn standing_now(&self) -> u64 {
        let word = self.standing.load(Ordering::Relaxed);
        if word >> 32 == u64::from(FORK_GENERATION.load(Ordering::Relaxed)) {
            word & (STANDING | COVERED)
        } else {
            0
        }
    }

    fn store_standing(&self, state: u64) {
        let generation = u64::from(FORK_GENERATION.load(Ordering::Relaxed));
        self.standing.store(generation << 32 | state, Ordering::Relaxed);
    }

    /// Starts a sleep covered by this process's standing registration on
    /// `notifier`, making the registration if there is none.
    fn enter_covered(&self, notifier: &Notifier) {
        let _g = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = self.standing_now();
        if state & STANDING == 0 {
            notifier.register();
            state = STANDING;
        }
        self.store_standing(state + 1);
    }

    /// Ends a sleep started with [`enter_covered`](Pacer::enter_covered).
    fn leave_covered(&self) {
        let _g = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let state = self.standing_now();
        self.store_standing(state.saturating_sub(1).max(state & STANDING));
    }

    /// Drops this process's standing registration on `notifier`, if it holds
    /// one and no thread sleeps under it. One relaxed load when it holds
    /// none: called on the fast paths.
    #[inline]
    pub(crate) fn stand_down(&self, notifier: &Notifier) {
        if self.standing.load(Ordering::Relaxed) & STANDING != 0 {
            self.stand_down_slow(notifier);
        }
    }

    #[cold]
    fn stand_down_slow(&self, notifier: &Notifier) {
        let _g = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let state = self.standing_now();
        if state == STANDING {
            notifier.unregister();
            self.store_standing(0);
        } else if state == 0 {
            // Another generation's word: not ours to undo.
            self.standing.store(0, Ordering::Relaxed);
        }
    }

    /// Feeds the length of a wait that ended with its condition met into the
    /// running average (weight 1/4).
    fn record(&self, waited: Duration) {
        let sample = waited.min(AVERAGE_CAP).as_nanos() as u64;
        let old = self.average.load(Ordering::Relaxed);
        let new = if sample >= old { old + (sample - old) / 4 } else { old - (old - sample) / 4 };
        self.average.store(new, Ordering::Relaxed);
    }
}

/// How a wait ended.
pub(crate) enum Waited {
    /// `ready()` holds.
    Ready,
    /// The deadline passed.
    Timeout,
    /// Closed, or nobody is left on the other side.
    Disconnected,
}

/// Waits until `ready()`, spinning first as `pacer`'s policy says. `disconnected()` (a liveness scan) runs only after a
/// wake-up that brought nothing or a slice timeout, never on the fast path.
/// `recover(grace_passed)` runs at slice timeouts and returns the position it
/// examined and whether it made progress; a position stuck for longer than
/// [`UNREGISTERED_GRACE`] is reported with `grace_passed = true`.
pub(crate) fn wait(
    pacer: &Pacer,
    deadline: Option<Deadline>,
    notifier: &Notifier,
    ready: impl Fn() -> bool,
    closed: impl Fn() -> bool,
    disconnected: impl Fn() -> bool,
    recover: impl FnMut(bool) -> (u64, bool),
) -> Waited {
    wait_paced(pacer, LOOK_STREAMING, deadline, notifier, ready, closed, disconnected, recover)
}

/// [`wait`], looking every `look_every` while it spins (see
/// [`receiver_pace`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn wait_paced(
    pacer: &Pacer,
    look_every: Duration,
    deadline: Option<Deadline>,
    notifier: &Notifier,
    ready: impl Fn() -> bool,
    closed: impl Fn() -> bool,
    disconnected: impl Fn() -> bool,
    mut recover: impl FnMut(bool) -> (u64, bool),
) -> Waited {
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
    let started = std::time::Instant::now();
    let done = |pacer: &Pacer| {
        pacer.record(started.elapsed());
        Waited::Ready
    };
    // Spin, then yield, before sleeping, as the policy plans (see
    // `WaitPolicy`). While spinning, look only every `look_every` (see
    // LOOK_STREAMING). A deadline that ends during the spin ends it too.
    let (spin, yields) = pacer.plan();
    if spin > Duration::ZERO {
        // Short waits expected: peers should not make a wake-up call per
        // message for us.
        pacer.stand_down(notifier);
        let spin_until = earliest(deadline, Deadline::after(spin));
        loop {
            let next = Deadline::after(look_every).min(spin_until);
            while !next.has_passed() {
                std::hint::spin_loop();
            }
            if ready() {
                return done(pacer);
            }
            if spin_until.has_passed() {
                break;
            }
        }
    }
    for _ in 0..yields {
        if deadline.is_some_and(|d| d.has_passed()) {
            break;
        }
        std::thread::yield_now();
        if ready() {
            return done(pacer);
        }
    }
    if closed() {
        return Waited::Disconnected;
    }
    // Long waits (no spin planned) sleep under the standing registration.
    let covered = spin == Duration::ZERO && yields == 0;
    if covered {
        pacer.enter_covered(notifier);
    }
    let waited = sleep_in_slices(covered, deadline, notifier, &ready, &closed, &disconnected, &mut recover);
    if covered {
        pacer.leave_covered();
    }
    match waited {
        Waited::Ready => done(pacer),
        other => other,
    }
}

/// The sleeping phase of [`wait_paced`]: futex sleeps in liveness slices.
fn sleep_in_slices(
    covered: bool,
    deadline: Option<Deadline>,
    notifier: &Notifier,
    ready: &impl Fn() -> bool,
    closed: &impl Fn() -> bool,
    disconnected: &impl Fn() -> bool,
    recover: &mut impl FnMut(bool) -> (u64, bool),
) -> Waited {
    let mut stuck: Option<(u64, Deadline)> = None;
    loop {
        let slice = Some(earliest(deadline, Deadline::after(LIVENESS_SLICE)));
        let outcome = if covered {
            notifier.sleep_registered(slice, || ready() || closed())
        } else {
            notifier.sleep(slice, || ready() || closed())
        };
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
    fn adaptive_spins_only_while_waits_are_short() {
        let p = Pacer::default();
        // No history: a first guess short enough to spin.
        let (spin, yields) = p.plan();
        assert!(spin > Duration::ZERO && yields > 0);
        // A trickle: waits of 100 µs. Soon no spin at all.
        for _ in 0..20 {
            p.record(Duration::from_micros(100));
        }
        assert_eq!(p.plan(), (Duration::ZERO, 0));
        // Request/reply: waits of 2 µs. Spinning again, bounded.
        for _ in 0..20 {
            p.record(Duration::from_micros(2));
        }
        let (spin, _) = p.plan();
        assert!(spin > Duration::ZERO && spin <= ADAPTIVE_SPIN_MAX);
        // One very long pause counts as AVERAGE_CAP, forgotten after a few
        // short waits.
        p.record(Duration::from_secs(5));
        assert_eq!(p.plan(), (Duration::ZERO, 0));
        for _ in 0..20 {
            p.record(Duration::from_micros(1));
        }
        assert!(p.plan().0 > Duration::ZERO);
    }

    #[test]
    fn long_waits_still_probe_with_a_spin_now_and_then() {
        let p = Pacer::default();
        for _ in 0..20 {
            p.record(Duration::from_micros(100));
        }
        let plans: Vec<_> = (0..PROBE_EVERY * 3).map(|_| p.plan()).collect();
        let probes = plans.iter().filter(|&&plan| plan == (ADAPTIVE_SPIN_MAX, 0)).count();
        assert_eq!(probes, 3, "one probe per {PROBE_EVERY} waits");
        assert!(plans.iter().all(|&plan| plan == (ADAPTIVE_SPIN_MAX, 0) || plan == (Duration::ZERO, 0)));
        // A probe that got its message quickly pulls the average down, and
        // a few such waits bring the spin back.
        for _ in 0..8 {
            p.record(Duration::from_micros(1));
        }
        assert!(p.plan().0 > Duration::ZERO && p.plan().1 > 0);
    }

    #[test]
    fn fixed_policies_ignore_history() {
        let p = Pacer::default();
        for policy in [WaitPolicy::Sleep, WaitPolicy::Spin(Duration::from_micros(70)), WaitPolicy::Adaptive] {
            p.set(policy);
            assert_eq!(p.get(), policy);
        }
        p.set(WaitPolicy::Spin(Duration::from_micros(70)));
        p.record(Duration::from_secs(1));
        assert_eq!(p.plan(), (Duration::from_micros(70), 0));
        p.set(WaitPolicy::Sleep);
        p.record(Duration::from_nanos(10));
        assert_eq!(p.plan(), (Duration::ZERO, 0));
    }

    #[test]
    fn standing_registration_is_made_once_and_dropped_when_unused() {
        let (p, n) = (Pacer::default(), Notifier::new());
        p.stand_down(&n); // none held: nothing to do
        assert_eq!(n.waiters(), 0);
        p.enter_covered(&n);
        p.enter_covered(&n); // a second thread: same registration
        assert_eq!(n.waiters(), 1);
        p.leave_covered();
        p.stand_down(&n); // one thread still sleeps under it
        assert_eq!(n.waiters(), 1);
        p.leave_covered();
        assert_eq!(n.waiters(), 1); // kept between waits
        p.stand_down(&n);
        assert_eq!(n.waiters(), 0);
        // A registration inherited from another fork generation (the
        // parent's) is never undone here, and a new one is made.
        p.enter_covered(&n);
        p.leave_covered();
        after_fork_in_child();
        p.stand_down(&n);
        assert_eq!(n.waiters(), 1);
        p.enter_covered(&n);
        assert_eq!(n.waiters(), 2);
        p.leave_covered();
        p.stand_down(&n);
        assert_eq!(n.waiters(), 1);
    }

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
