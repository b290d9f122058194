//! The blocking layer of the rings: a notification word with a waiter count.
//!
//! A side that finds the ring empty (or full) sleeps on `seq` through the
//! shared futex; the other side, after making progress, calls
//! [`Notifier::notify`], which costs one (light) fence and one load when nobody waits
//! and makes the wake syscall only when the waiter count says someone might.
//!
//! # Orderings
//!
//! The handshake is the classic store-buffer (Dekker) pattern. The waker
//! publishes its progress (say, a ring index, `Release`), then executes a
//! fence, then reads `waiters`. The sleeper increments `waiters` with a
//! `SeqCst` read-modify-write, executes a fence, and then re-checks the ring.
//! By the fence rules, either the waker sees the incremented count (and
//! wakes), or the sleeper's re-check sees the progress (and does not sleep).
//! The waker's fence is [`asymmetric_fence::light`] (free in a registered
//! process) and the sleeper's is [`asymmetric_fence::heavy`] (a
//! `membarrier` system call), because the waker runs once per message and the
//! sleeper only before a futex sleep; see [`asymmetric_fence`] for why this is
//! sound across processes and what happens where the kernel lacks it. `seq` is read
//! *before* the re-check and bumped by the waker before `FUTEX_WAKE`, so a
//! wake between the re-check and the sleep makes `FUTEX_WAIT` return at once.
//!
//! # Armed sleepers: one wake-up per sleep, not per message
//!
//! The sleeper word holds a count of sleepers (low 31 bits) and an `ARMED`
//! bit. A sleeper sets `ARMED` each time it is about to block; a waker that
//! sees sleepers counted makes the wake system call only if it finds `ARMED`
//! set, and clears it. So a sleeper that stays counted while it works (a
//! *standing* registration, [`Notifier::register`], or an `async` waiter)
//! costs the wakers one call per sleep instead of one per message: without
//! the bit, two producers feeding a registered consumer made a `FUTEX_WAKE`
//! per message each (about 60 % of their time in the 2 × 2 queue bench).
//!
//! The bit has its own Dekker handshake, with real fences on both sides
//! (it runs only while a sleeper is counted, so it costs the fast path
//! nothing): the sleeper sets `ARMED` (`SeqCst` read-modify-write), runs a
//! `SeqCst` fence, then re-checks the ring; the waker, after its progress
//! store and the count load, runs a `SeqCst` fence and loads the word. By the
//! fence rules either the waker sees `ARMED` (and wakes) or the sleeper's
//! re-check sees the progress (and does not sleep). A waker that clears the
//! bit bumps `seq` *after* clearing it and before `FUTEX_WAKE`, so a sleeper
//! that armed again meanwhile either read `seq` before the bump (its
//! `FUTEX_WAIT` returns at once) or after it (and, with `Acquire`, sees the
//! progress stored before it). The count's own handshake (above) still
//! decides whether a waker looks at the bit at all.

use crate::asymmetric_fence;
use crate::futex::{self, WaitOutcome};
use crate::primitive::sync::atomic::{fence, AtomicU32, Ordering};
use crate::time::Deadline;

/// A futex word plus a count of sleepers.
///
/// ```
/// use core::sync::atomic::{AtomicU32, Ordering};
/// use shmproc_core::notify::Notifier;
/// let (n, items) = (Notifier::new(), AtomicU32::new(0));
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         while items.load(Ordering::Acquire) == 0 {
///             n.sleep(None, || items.load(Ordering::Acquire) != 0);
///         }
///     });
///     items.store(1, Ordering::Release);
///     n.notify(); // wakes the sleeper only if there is one
/// });
/// ```
#[repr(C)]
pub struct Notifier {
    seq: AtomicU32,
    /// Sleepers counted (low 31 bits) and [`ARMED`].
    waiters: AtomicU32,
}

/// Bit of the sleeper word: a counted sleeper may be about to block (see
/// the module docs); the next waker makes the wake-up call and clears it.
const ARMED: u32 = 1 << 31;
/// The sleeper count's bits.
const COUNT: u32 = ARMED - 1;

impl Notifier {
    /// A notifier with no sleepers.
    ///
    /// ```
    /// let n = shmproc_core::notify::Notifier::new();
    /// assert_eq!(n.waiters(), 0);
    /// ```
    #[must_use]
    pub fn new() -> Notifier {
        Notifier { seq: AtomicU32::new(0), waiters: AtomicU32::new(0) }
    }

    /// (Re)initialises in place.
    ///
    /// ```
    /// let n = shmproc_core::notify::Notifier::default();
    /// n.init(); // as a region object is initialised in place
    /// assert_eq!(n.waiters(), 0);
    /// ```
    pub fn init(&self) {
        self.seq.store(0, Ordering::Relaxed);
        self.waiters.store(0, Ordering::Relaxed);
    }

    /// Wakes every sleeper if there may be one. Call after publishing progress.
    ///
    /// ```
    /// let n = shmproc_core::notify::Notifier::new();
    /// n.notify(); // nobody sleeps: one fence and one load, no system call
    /// ```
    #[inline]
    pub fn notify(&self) {
        asymmetric_fence::light();
        if self.waiters.load(Ordering::Relaxed) != 0 {
            self.notify_counted();
        }
    }

    /// A sleeper is counted: wake if one armed (see the module docs).
    #[cold]
    fn notify_counted(&self) {
        // Pairs with the fence after `arm`'s read-modify-write.
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) & ARMED != 0
            && self.waiters.fetch_and(COUNT, Ordering::SeqCst) & ARMED != 0
        {
            self.wake_now();
        }
    }

    #[cold]
    fn wake_now(&self) {
        self.seq.fetch_add(1, Ordering::Release);
        futex::wake_all(&self.seq);
    }

    /// Marks a counted sleeper as about to block: the next [`notify`]
    /// wakes. Returns the word to wait against; the caller re-checks its
    /// condition after this call and before waiting.
    ///
    /// [`notify`]: Notifier::notify
    fn arm(&self) -> u32 {
        let s = self.seq.load(Ordering::Acquire);
        self.waiters.fetch_or(ARMED, Ordering::SeqCst);
        // Pairs with the fence in `notify_counted` (see the module docs).
        fence(Ordering::SeqCst);
        s
    }

    /// Wakes every sleeper unconditionally (closing, disconnecting).
    ///
    /// ```
    /// let n = shmproc_core::notify::Notifier::new();
    /// n.wake_all(); // on close or disconnect: wake whoever sleeps, unconditionally
    /// ```
    pub fn wake_all(&self) {
        self.waiters.fetch_and(COUNT, Ordering::Relaxed);
        self.wake_now();
    }

    /// Sleepers (a snapshot; a peer may have left garbage).
    ///
    /// ```
    /// let n = shmproc_core::notify::Notifier::new();
    /// assert_eq!(n.waiters(), 0);
    /// ```
    pub fn waiters(&self) -> u32 {
        self.waiters.load(Ordering::Relaxed) & COUNT
    }

    /// Sleeps once unless `ready()` holds after registering: returns
    /// `ValueChanged` if `ready()` was true, otherwise the futex outcome.
    /// Callers loop: re-check their condition, then call again.
    ///
    /// ```
    /// use shmproc_core::futex::WaitOutcome;
    /// use shmproc_core::notify::Notifier;
    /// use shmproc_core::Deadline;
    /// let n = Notifier::new();
    /// // Ready already: returns without sleeping.
    /// assert_eq!(n.sleep(None, || true), WaitOutcome::ValueChanged);
    /// let r = n.sleep(Some(Deadline::after(core::time::Duration::from_millis(5))), || false);
    /// assert_eq!(r, WaitOutcome::TimedOut);
    /// ```
    pub fn sleep(&self, deadline: Option<Deadline>, ready: impl FnOnce() -> bool) -> WaitOutcome {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let s = self.arm();
        // Pairs with `notify`'s light fence (see the module docs).
        // Without the expedited barrier a wake-up can be missed (module docs
        // of `asymmetric_fence`); the callers' sleeps are cut into slices.
        let _ = asymmetric_fence::heavy();
        let outcome = if ready() { WaitOutcome::ValueChanged } else { futex::wait(&self.seq, s, deadline) };
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        outcome
    }
}

impl Notifier {
    /// Counts a *standing* sleeper: one that will sleep here again and again
    /// (with [`sleep_registered`](Notifier::sleep_registered)) without
    /// counting itself and fencing before each sleep. Pays the heavy fence
    /// once, here; until [`unregister`](Notifier::unregister), every
    /// [`notify`](Notifier::notify) pays a real fence and a look at the
    /// `ARMED` bit (and a wake-up call once per sleep, see the module docs),
    /// so stand down as soon as waits get short.
    ///
    /// # Orderings
    ///
    /// The handshake of the module docs, split in time: the count is
    /// incremented (`SeqCst`) and the heavy fence run once. Any `notify`
    /// whose sleeper-count load comes after that fence's barrier on its CPU
    /// sees the count (and then wakes if the sleeper armed); one whose load
    /// came before it had its progress store drained by that barrier, so it
    /// is visible to every re-check made after `register` returns. So each
    /// later `sleep_registered` only needs what `sleep` does after its
    /// count: arm, read the word, re-check, wait against the word.
    ///
    /// ```
    /// use shmproc_core::futex::WaitOutcome;
    /// use shmproc_core::notify::Notifier;
    /// use shmproc_core::Deadline;
    /// let n = Notifier::new();
    /// n.register();
    /// assert_eq!(n.waiters(), 1);
    /// let r = n.sleep_registered(Some(Deadline::after(core::time::Duration::from_millis(1))), || false);
    /// assert_eq!(r, WaitOutcome::TimedOut);
    /// n.unregister();
    /// assert_eq!(n.waiters(), 0);
    /// ```
    pub fn register(&self) {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let _ = asymmetric_fence::heavy();
    }

    /// Ends a standing registration made with [`register`](Notifier::register).
    pub fn unregister(&self) {
        self.waiters.fetch_sub(1, Ordering::Relaxed);
    }

    /// [`sleep`](Notifier::sleep) for a caller covered by a standing
    /// registration ([`register`](Notifier::register)): no count, no fence.
    pub fn sleep_registered(&self, deadline: Option<Deadline>, ready: impl FnOnce() -> bool) -> WaitOutcome {
        let s = self.arm();
        if ready() {
            WaitOutcome::ValueChanged
        } else {
            futex::wait(&self.seq, s, deadline)
        }
    }
}

impl Notifier {
    /// For a waiter that does not block a thread (an `async` future): counts
    /// it as a sleeper and returns the word's value to wait against, after
    /// the same fence as [`sleep`](Notifier::sleep). The caller re-checks its
    /// condition *after* this call, then has the word watched for a change
    /// from the returned value, and calls [`end_async_wait`](Notifier::end_async_wait)
    /// exactly once when it stops waiting. While it is counted, the next
    /// [`notify`](Notifier::notify) after each arming bumps the word and
    /// wakes, so a later re-arm needs only
    /// [`rearm_async_wait`](Notifier::rearm_async_wait) and a re-check, not
    /// the heavy fence. The waking side is unchanged.
    ///
    /// ```
    /// use core::sync::atomic::Ordering;
    /// use shmproc_core::notify::Notifier;
    /// let n = Notifier::new();
    /// let s = n.begin_async_wait();
    /// assert_eq!(n.waiters(), 1);
    /// n.notify(); // a sleeper is counted: the word moves
    /// assert_ne!(n.word().load(Ordering::Acquire), s);
    /// n.end_async_wait();
    /// assert_eq!(n.waiters(), 0);
    /// ```
    pub fn begin_async_wait(&self) -> u32 {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let s = self.arm();
        // Pairs with `notify`'s light fence, as in `sleep`.
        let _ = asymmetric_fence::heavy();
        s
    }

    /// Re-arms a wait begun with [`begin_async_wait`](Notifier::begin_async_wait)
    /// (still counted) before waiting again: returns the word to watch; the
    /// caller re-checks its condition after this call.
    ///
    /// ```
    /// use core::sync::atomic::Ordering;
    /// use shmproc_core::notify::Notifier;
    /// let n = Notifier::new();
    /// let s = n.begin_async_wait();
    /// n.notify(); // armed: the word moves, and the arm is used up
    /// let t = n.rearm_async_wait();
    /// assert_ne!(s, t);
    /// n.notify(); // armed again: moves again
    /// assert_ne!(n.word().load(Ordering::Acquire), t);
    /// n.end_async_wait();
    /// ```
    pub fn rearm_async_wait(&self) -> u32 {
        self.arm()
    }

    /// Ends a wait begun with [`begin_async_wait`](Notifier::begin_async_wait).
    ///
    /// ```
    /// let n = shmproc_core::notify::Notifier::new();
    /// let _ = n.begin_async_wait();
    /// n.end_async_wait();
    /// assert_eq!(n.waiters(), 0);
    /// ```
    pub fn end_async_wait(&self) {
        self.waiters.fetch_sub(1, Ordering::Relaxed);
    }

    /// The futex word sleepers wait on (bumped by every notify that sees a
    /// sleeper).
    ///
    /// ```
    /// use core::sync::atomic::Ordering;
    /// let n = shmproc_core::notify::Notifier::new();
    /// assert_eq!(n.word().load(Ordering::Relaxed), 0);
    /// ```
    pub fn word(&self) -> &AtomicU32 {
        &self.seq
    }
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier::new()
    }
}
