//! The byte layout's rings: one, or one lane per producing process
//! ([`QueueBuilder::lanes`](super::QueueBuilder::lanes); the protocol is
//! `shmproc_core::lanes`).
//!
//! Lane 0 is also the queue's: its participants table, closed flag and
//! `not_empty` notifier (the *arrival* notifier every receiver sleeps on)
//! stand for the whole queue. A queue of one lane is exactly the plain byte
//! ring, at the cost of one branch.

use std::sync::atomic::{AtomicU64, Ordering};

use shmproc_core::lanes::{self, Cursor, Scan};
use shmproc_core::Deadline;

use super::ByteRing;
use crate::blocking;
use crate::channel_error::Failure;

/// How long a receiver waits for a lane's receiving side that another
/// receiver holds while messages wait there, before it scans again: long
/// enough for the ring's lock to take the side over from a dead holder (it
/// looks at the holder's liveness every slice of ~20 ms), short enough that
/// a long-held `RecvRef` on one lane does not keep this receiver from the
/// others.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// How long a receiver keeps yielding to the receivers that hold every lane
/// with messages before it waits for one of their sides.
const BUSY_YIELD: std::time::Duration = std::time::Duration::from_millis(2);

/// The rings of a byte-layout queue (at least one).
#[derive(Clone, Debug)]
pub(crate) struct Lanes {
    rings: Box<[ByteRing]>,
}

impl Lanes {
    /// Lanes over `rings` (`None` when there are none).
    pub(crate) fn new(rings: Vec<ByteRing>) -> Option<Lanes> {
        (!rings.is_empty()).then(|| Lanes { rings: rings.into_boxed_slice() })
    }

    /// How many lanes.
    #[inline]
    pub(crate) fn count(&self) -> usize {
        self.rings.len()
    }

    /// Lane 0: the queue-wide participants, closed flag and arrival
    /// notifier.
    #[inline]
    pub(crate) fn first(&self) -> &ByteRing {
        &self.rings[0]
    }

    /// Lane `lane` (any index: reduced modulo the count).
    #[inline]
    pub(crate) fn lane(&self, lane: usize) -> &ByteRing {
        match self.rings.get(lane) {
            Some(r) => r,
            // (A division only here, off the per-message path.)
            None => &self.rings[lane % self.rings.len()],
        }
    }

    /// Every lane.
    pub(crate) fn all(&self) -> &[ByteRing] {
        &self.rings
    }

    /// Whether some lane may hold a message.
    #[inline]
    pub(crate) fn has_message(&self) -> bool {
        self.rings.iter().any(ByteRing::has_message)
    }

    /// Messages waiting in all lanes (a snapshot).
    pub(crate) fn len(&self) -> usize {
        self.rings.iter().fold(0usize, |n, r| n.saturating_add(r.len()))
    }

    /// What all lanes hold at most (`usize::MAX`: unbounded).
    pub(crate) fn capacity(&self) -> usize {
        self.first().capacity().saturating_mul(self.rings.len())
    }

    /// Closes every lane (each wakes its own waiters).
    pub(crate) fn close(&self) {
        for r in self.rings.iter() {
            r.close();
        }
    }

    /// Wakes every sender waiting for room, in any lane.
    pub(crate) fn wake_senders(&self) {
        for r in self.rings.iter() {
            r.not_full().wake_all();
        }
    }

    /// After a message was published in `lane`: wakes receivers sleeping on
    /// the arrival notifier (lane 0's ring did so itself).
    #[inline]
    pub(crate) fn published(&self, lane: usize) {
        if lane != 0 {
            self.first().not_empty().notify();
        }
    }

    /// Runs `take` on the lane(s) a receive takes from: the only ring, or
    /// the lanes in the order of this process's scan, trying each lane's
    /// receiving side without waiting. `Ok(None)`: nothing taken.
    ///
    /// When every lane with messages had its side held by another receiver,
    /// this thread yields (that receiver may be the one it displaced from
    /// the core) and reports nothing, so the caller looks again; only once
    /// that has gone on for [`BUSY_YIELD`] does it wait for such a side
    /// until `lock_deadline` (at most [`BUSY_WAIT`]), which also takes the
    /// side over from a dead holder.
    #[inline]
    pub(crate) fn take<R>(
        &self,
        place: &Place,
        lock_deadline: Option<Deadline>,
        mut take: impl FnMut(usize, &ByteRing, Option<Deadline>) -> Result<Option<R>, Failure>,
    ) -> Result<Option<R>, Failure> {
        let n = self.rings.len();
        if n == 1 {
            return take(0, &self.rings[0], lock_deadline);
        }
        let cursor = place.cursor();
        let found = lanes::scan(
            n,
            cursor,
            |l| self.rings[l].has_message(),
            // A side another receiver holds is skipped without touching
            // its lock (a failed try would pull the holder's line away and
            // judge the holder's liveness through /proc); a dead holder is
            // taken over by the wait below.
            |l| match &self.rings[l] {
                r if r.receiving_side_held() => Ok(None),
                r => take(l, r, Some(Deadline::EXPIRED)),
            },
        )?;
        let lane = match found {
            Scan::Took(r) => {
                place.not_busy();
                return Ok(Some(r));
            }
            Scan::Empty => {
                place.not_busy();
                return Ok(None);
            }
            Scan::Busy(_) if lock_deadline.is_some_and(|d| d.has_passed()) => return Ok(None),
            Scan::Busy(lane) => lane,
        };
        if place.busy_for() < BUSY_YIELD {
            std::thread::yield_now();
            return Ok(None);
        }
        place.not_busy();
        let d = shmproc_core::time::earliest(lock_deadline, Deadline::after(BUSY_WAIT));
        let r = take(lane, &self.rings[lane], Some(d))?;
        if r.is_some() {
            cursor.took(lane, n);
        }
        Ok(r)
    }
}

/// This process's place in a queue's lanes (kept in its mapping, `Core`):
/// the lane its sends go to and where its receives scan from. Both are
/// tagged with the fork generation, so a forked child asks for a lane of
/// its own on its first send and starts its scans elsewhere.
#[derive(Debug)]
pub(crate) struct Place {
    /// `fork generation << 32 | lane + 1` (0: none yet).
    sender: AtomicU64,
    /// The fork generation the cursor was placed in, plus one.
    cursor_generation: AtomicU64,
    cursor: Cursor,
    /// Since when (ns after `made`, plus one; 0: not) this process's
    /// receives have found every lane with messages held by others.
    busy_since: AtomicU64,
    made: std::time::Instant,
}

impl Place {
    pub(crate) fn new() -> Place {
        Place {
            sender: AtomicU64::new(0),
            cursor_generation: AtomicU64::new(0),
            cursor: Cursor::new(0),
            busy_since: AtomicU64::new(0),
            made: std::time::Instant::now(),
        }
    }

    /// The lane this process sends to, of `count`, asking `tickets` for one
    /// on its first send.
    #[inline]
    pub(crate) fn sender(&self, count: usize, tickets: &std::sync::atomic::AtomicU32) -> usize {
        if count <= 1 {
            return 0;
        }
        let generation = u64::from(blocking::fork_generation());
        let word = self.sender.load(Ordering::Relaxed);
        match Place::lane_of(word, generation, count) {
            Some(lane) => lane,
            None => self.assign(word, count, tickets, generation),
        }
    }

    /// The lane a `sender` word names for this fork generation, if any.
    #[inline]
    fn lane_of(word: u64, generation: u64, count: usize) -> Option<usize> {
        // (Compared, not reduced: a division per send is measurable.)
        let lane = (word as u32).wrapping_sub(1) as usize;
        (word >> 32 == generation && lane < count).then_some(lane)
    }

    /// Takes a ticket and records its lane in place of `stale`.
    #[cold]
    fn assign(&self, stale: u64, count: usize, tickets: &std::sync::atomic::AtomicU32, generation: u64) -> usize {
        let lane = lanes::assign(tickets, count);
        // Two threads of this process asking at once may both take a
        // ticket; the first stored wins, so the process keeps one lane.
        let fresh = generation << 32 | (lane as u64 + 1);
        match self.sender.compare_exchange(stale, fresh, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => lane,
            Err(now) => Place::lane_of(now, generation, count).unwrap_or(lane),
        }
    }

    /// The lane this process sends to if it has one (else lane 0).
    pub(crate) fn sender_if_any(&self, count: usize) -> usize {
        let generation = u64::from(blocking::fork_generation());
        match count {
            0 | 1 => 0,
            _ => Place::lane_of(self.sender.load(Ordering::Relaxed), generation, count).unwrap_or(0),
        }
    }

    /// How long receives have found only lanes held by others (starting the
    /// clock now if they had not).
    fn busy_for(&self) -> std::time::Duration {
        let now = self.made.elapsed().as_nanos() as u64 + 1;
        match self.busy_since.load(Ordering::Relaxed) {
            0 => {
                self.busy_since.store(now, Ordering::Relaxed);
                std::time::Duration::ZERO
            }
            since => std::time::Duration::from_nanos(now.saturating_sub(since)),
        }
    }

    /// A receive found a message or an empty queue: not held up by others.
    #[inline]
    fn not_busy(&self) {
        if self.busy_since.load(Ordering::Relaxed) != 0 {
            self.busy_since.store(0, Ordering::Relaxed);
        }
    }

    /// The receive scan's cursor, placed by process id in a new process
    /// (so that forked consumers start on different lanes).
    #[inline]
    pub(crate) fn cursor(&self) -> &Cursor {
        let generation = u64::from(blocking::fork_generation()) + 1;
        if self.cursor_generation.load(Ordering::Relaxed) != generation {
            self.cursor.reset(crate::roles::process().id as usize);
            self.cursor_generation.store(generation, Ordering::Relaxed);
        }
        &self.cursor
    }
}
