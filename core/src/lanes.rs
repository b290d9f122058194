//! Lanes: one queue made of several rings, one per producing process, so
//! that producers and consumers spread over several cache lines instead of
//! taking turns on one.
//!
//! A laned queue (`shmproc::QueueBuilder::lanes`) holds `n` byte rings
//! ([`byte_queue`](crate::byte_queue)) side by side. This module is the
//! protocol between them; the rings keep their own locks, frames, counts and
//! dead-peer recovery unchanged.
//!
//! # Claim and publish
//!
//! * **A producer** is given a lane the first time it sends
//!   ([`assign`]: a round-robin ticket, `fetch_add` on one shared word, once
//!   per process) and keeps it for as long as it lives, so its messages stay
//!   in order (FIFO per producer; there is no order across producers, as in
//!   Python's `Queue`). It publishes into its lane as into any byte ring,
//!   then [`notify`](crate::notify::Notifier::notify)s the queue-wide
//!   *arrival* notifier (lane 0's `not_empty`), on which every receiver
//!   sleeps. More producers than lanes share lanes (the lane's producing
//!   lock serialises them).
//! * **A consumer** [`scan`]s the lanes from its [`Cursor`]: it skips lanes
//!   that look empty, *tries* (never waits for) the receiving side of each
//!   lane that has a message, and takes from the first it gets. It stays on
//!   that lane for up to [`STAY`] messages in a row, then moves on, so every
//!   lane is visited even when one never runs dry. A lane whose receiving
//!   side another receiver holds is reported [`Scan::Busy`]: the caller
//!   waits for that side (which also takes it over from a dead holder, as
//!   the byte ring does) rather than spin on it.
//! * **Waiting**: a consumer that found every lane empty sleeps on the
//!   arrival notifier with "some lane has a message" as its re-check: the
//!   Dekker handshake of [`notify`](crate::notify) covers a message
//!   published in *any* lane, because every producer notifies the same word
//!   after publishing in its own lane. Producers waiting for room wait on
//!   their own lane's `not_full`, which that lane's consumers wake.
//!
//! # Orderings
//!
//! The lanes add no ordering of their own: a message is published and read
//! under its ring's `Release`/`Acquire` pairs, and the wake-up is the
//! notifier's fence pair. The ticket counter and the cursor are hints
//! (`Relaxed`): any value they take gives a correct, if slower, schedule.
//!
//! # Untrusted memory
//!
//! The lane count is read from shared memory: [`validate`] bounds it by
//! [`MAX_LANES`] and by the bytes the queue's object has, before any lane is
//! located. Tickets are reduced modulo the validated count.
//!
//! ```
//! use core::sync::atomic::AtomicU32;
//! use shmproc_core::lanes::{assign, scan, Cursor, Scan};
//! let tickets = AtomicU32::new(0);
//! assert_eq!((assign(&tickets, 3), assign(&tickets, 3), assign(&tickets, 3), assign(&tickets, 3)), (0, 1, 2, 0));
//! // Lane 1 holds a message; the consumer starts at lane 0 and finds it.
//! let queued = [0u32, 2, 0];
//! let cursor = Cursor::new(0);
//! let got = scan(3, &cursor, |l| queued[l] > 0, |l| Ok::<_, ()>(Some(l)));
//! assert_eq!(got, Ok(Scan::Took(1)));
//! assert_eq!(cursor.lane(3), 1); // it stays on the lane it took from
//! ```

use crate::primitive::sync::atomic::{AtomicU32, Ordering};

/// Most lanes a queue may have.
pub const MAX_LANES: usize = 64;

/// Messages a consumer takes from one lane in a row before its scan moves
/// on to the next lane.
pub const STAY: u32 = 32;

/// A lane for a new producer: a ticket from the queue's shared counter,
/// modulo `lanes` (which must be at least 1).
///
/// ```
/// let t = core::sync::atomic::AtomicU32::new(u32::MAX);
/// // Wrapping the counter stays in range.
/// assert!(shmproc_core::lanes::assign(&t, 5) < 5);
/// assert!(shmproc_core::lanes::assign(&t, 5) < 5);
/// ```
#[inline]
pub fn assign(tickets: &AtomicU32, lanes: usize) -> usize {
    tickets.fetch_add(1, Ordering::Relaxed) as usize % lanes.max(1)
}

/// Checks a lane count read from shared memory: between 1 and
/// [`MAX_LANES`], and `lanes × lane_size` within `available` bytes.
///
/// ```
/// use shmproc_core::lanes::validate;
/// assert_eq!(validate(4, 1024, 4096), Ok(4));
/// assert!(validate(0, 1024, 4096).is_err());
/// assert!(validate(5, 1024, 4096).is_err());
/// assert!(validate(1 << 20, 1, usize::MAX).is_err());
/// ```
pub fn validate(lanes: u32, lane_size: usize, available: usize) -> Result<usize, &'static str> {
    let n = lanes as usize;
    if n == 0 || n > MAX_LANES {
        return Err("lane count out of range");
    }
    match n.checked_mul(lane_size) {
        Some(total) if total <= available => Ok(n),
        _ => Err("lanes larger than their object"),
    }
}

/// A consumer's scan position (process-local): the lane it takes from now
/// and how many messages it took there in a row.
///
/// ```
/// use shmproc_core::lanes::{Cursor, STAY};
/// let c = Cursor::new(2);
/// assert_eq!(c.lane(4), 2);
/// for _ in 0..STAY {
///     c.took(2, 4);
/// }
/// assert_eq!(c.lane(4), 3); // moved on after STAY in a row
/// ```
#[derive(Debug)]
pub struct Cursor {
    /// `lane << 16 | taken in a row`.
    word: AtomicU32,
}

impl Cursor {
    /// A cursor starting at lane `start` (reduced modulo the lane count
    /// when read).
    #[must_use]
    pub fn new(start: usize) -> Cursor {
        Cursor { word: AtomicU32::new(Self::pack(start, 0)) }
    }

    fn pack(lane: usize, taken: u32) -> u32 {
        ((lane as u32 & 0xffff) << 16) | taken.min(0xffff)
    }

    /// Restarts the scan at lane `start`.
    ///
    /// ```
    /// let c = shmproc_core::lanes::Cursor::new(0);
    /// c.reset(7);
    /// assert_eq!(c.lane(4), 3);
    /// ```
    pub fn reset(&self, start: usize) {
        self.word.store(Self::pack(start, 0), Ordering::Relaxed);
    }

    /// The lane the next scan starts at, of `lanes`.
    #[inline]
    #[must_use]
    pub fn lane(&self, lanes: usize) -> usize {
        (self.word.load(Ordering::Relaxed) >> 16) as usize % lanes.max(1)
    }

    /// Records a message taken from `lane` (of `lanes`): stay there, or move
    /// on after [`STAY`] in a row.
    #[inline]
    pub fn took(&self, lane: usize, lanes: usize) {
        let w = self.word.load(Ordering::Relaxed);
        let (at, taken) = ((w >> 16) as usize % lanes.max(1), w & 0xffff);
        let next = if at != lane {
            Self::pack(lane, 1)
        } else if taken + 1 >= STAY {
            Self::pack((lane + 1) % lanes.max(1), 0)
        } else {
            Self::pack(lane, taken + 1)
        };
        self.word.store(next, Ordering::Relaxed);
    }
}

/// What a [`scan`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan<R> {
    /// Taken from a lane.
    Took(R),
    /// Nothing taken, but this lane has a message and its receiving side was
    /// held by another receiver: wait for that side.
    Busy(usize),
    /// Every lane looked empty.
    Empty,
}

/// One pass over `lanes` lanes from `cursor`: for each lane that
/// `has_message`, `try_take` (which must not wait for the lane's receiving
/// side; `Ok(None)`: empty or held by another receiver). The first lane that
/// gives something ends the pass and becomes the cursor's lane.
///
/// ```
/// use shmproc_core::lanes::{scan, Cursor, Scan};
/// let c = Cursor::new(1);
/// // Lane 1 has a message but another receiver holds it; lane 0 is empty.
/// let r = scan(2, &c, |l| l == 1, |_| Ok::<Option<u8>, ()>(None));
/// assert_eq!(r, Ok(Scan::Busy(1)));
/// assert_eq!(scan(2, &c, |_| false, |_| Ok::<Option<u8>, ()>(Some(9))), Ok(Scan::Empty));
/// ```
pub fn scan<R, E>(
    lanes: usize,
    cursor: &Cursor,
    mut has_message: impl FnMut(usize) -> bool,
    mut try_take: impl FnMut(usize) -> Result<Option<R>, E>,
) -> Result<Scan<R>, E> {
    let start = cursor.lane(lanes);
    let mut busy = None;
    for i in 0..lanes {
        let lane = (start + i) % lanes;
        if !has_message(lane) {
            continue;
        }
        if let Some(r) = try_take(lane)? {
            cursor.took(lane, lanes);
            return Ok(Scan::Took(r));
        }
        // Empty by now, or held by another receiver: only the latter is
        // worth waiting for.
        if busy.is_none() && has_message(lane) {
            busy = Some(lane);
        }
    }
    Ok(busy.map_or(Scan::Empty, Scan::Busy))
}
