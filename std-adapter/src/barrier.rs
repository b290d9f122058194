//! `Barrier`: `n` parties wait for each other (Python's `Barrier`).
//!
//! Breaks instead of hanging: a party whose timeout passes, a party that dies
//! while waiting, or [`abort`](Barrier::abort) breaks the barrier, and every
//! waiting and later party gets [`BarrierError::Broken`] until
//! [`reset`](Barrier::reset). A party that dies *before* arriving looks like a
//! slow one: use [`wait_timeout`](Barrier::wait_timeout) when that matters.
//!
//! ```
//! let b = shmproc::Barrier::new(2)?;
//! let b2 = b.clone();
//! let mut child = shmproc::Process::spawn(move || { b2.wait().unwrap(); })?;
//! let r = b.wait()?;
//! println!("leader: {}", r.is_leader());
//! child.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::time::Duration;

use shmproc_core::barrier::{BarrierError as RawError, BarrierWait, RawBarrier};
use shmproc_core::Deadline;

use crate::error::Error;
use crate::object::{impl_handle_archive, Object};
use crate::segment::Segment;
use crate::thread_id;

/// Why a barrier wait failed.
///
/// ```
/// use shmproc::{Barrier, BarrierError};
/// let b = Barrier::new(2)?;
/// // Nobody else arrives: this party times out and breaks the barrier.
/// assert_eq!(b.wait_timeout(std::time::Duration::from_millis(10)).unwrap_err(), BarrierError::Timeout);
/// assert_eq!(b.wait().unwrap_err(), BarrierError::Broken);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BarrierError {
    /// The barrier is broken: a party timed out or died, or it was aborted.
    Broken,
    /// This party's timeout passed; the barrier is now broken for the others.
    Timeout,
}

impl fmt::Display for BarrierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BarrierError::Broken => f.write_str("the barrier is broken"),
            BarrierError::Timeout => f.write_str("timed out waiting at the barrier (it is now broken)"),
        }
    }
}

impl std::error::Error for BarrierError {}

/// The future of [`Barrier::wait_async`].
#[must_use = "futures do nothing unless polled"]
pub struct BarrierFuture<'a> {
    barrier: &'a Barrier,
    arrived: Option<shmproc_core::barrier::Arrived>,
    done: bool,
    /// When to look for dead parties next.
    next_check: Option<std::time::Instant>,
    waiting: crate::async_wait::Waiting,
}

impl fmt::Debug for BarrierFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BarrierFuture").field("arrived", &self.arrived).field("done", &self.done).finish()
    }
}

fn converted(r: Result<BarrierWait, RawError>) -> Result<BarrierWaitResult, BarrierError> {
    match r {
        Ok(w) => Ok(BarrierWaitResult(w)),
        Err(RawError::Broken) => Err(BarrierError::Broken),
        Err(RawError::Timeout) => Err(BarrierError::Timeout),
    }
}

impl std::future::Future for BarrierFuture<'_> {
    type Output = Result<BarrierWaitResult, BarrierError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let this = self.get_mut();
        let raw = this.barrier.raw();
        let me = this.barrier.me();
        let a = match this.arrived {
            Some(a) => a,
            None => match raw.arrive(&me, this.barrier.check()) {
                Ok(a) => {
                    this.arrived = Some(a);
                    a
                }
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(converted(Err(e)));
                }
            },
        };
        let now = std::time::Instant::now();
        let next = *this.next_check.get_or_insert(now + shmproc_core::raw_mutex::LIVENESS_SLICE);
        if raw.outcome(&a).is_none() && now >= next {
            this.next_check = Some(now + shmproc_core::raw_mutex::LIVENESS_SLICE);
            raw.break_if_a_party_died(&me, this.barrier.check(), &a);
        }
        if let Some(r) = raw.outcome(&a) {
            this.done = true;
            this.waiting.disarm();
            return Poll::Ready(converted(r));
        }
        let at = this.next_check.unwrap_or(now);
        // SAFETY: the word lives in the barrier's segment, which the
        // registration keeps mapped.
        unsafe {
            this.waiting.watch(
                Some(this.barrier.obj.segment()),
                raw.generation_word(),
                a.generation,
                Some(at),
                false,
                cx.waker(),
            )
        };
        // It may have moved before the helper watched it.
        if let Some(r) = raw.outcome(&a) {
            this.done = true;
            this.waiting.disarm();
            return Poll::Ready(converted(r));
        }
        Poll::Pending
    }
}

impl Drop for BarrierFuture<'_> {
    fn drop(&mut self) {
        self.waiting.disarm();
        if let (Some(a), false) = (self.arrived, self.done) {
            // Arrived and given up: the barrier breaks (unless it tripped).
            let _ = self.barrier.raw().leave(&self.barrier.me(), self.barrier.check(), &a);
        }
    }
}

/// A successful barrier wait.
///
/// ```
/// let b = shmproc::Barrier::new(1)?;
/// let r: shmproc::BarrierWaitResult = b.wait()?;
/// assert!(r.is_leader());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BarrierWaitResult(BarrierWait);

impl BarrierWaitResult {
    /// Exactly one party per round is the leader (std's `is_leader`).
    ///
    /// ```
    /// let b = shmproc::Barrier::new(2)?;
    /// let b2 = b.clone();
    /// let mut child = shmproc::Process::spawn(move || b2.wait().unwrap().is_leader() as i32)?;
    /// let me = b.wait()?.is_leader() as i32;
    /// assert_eq!(me + child.join()?, 1); // exactly one leader
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.0.leader
    }

    /// Arrival index in `0..parties` (Python's return value of `wait`).
    ///
    /// ```
    /// let b = shmproc::Barrier::new(1)?;
    /// assert_eq!(b.wait()?.index(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn index(&self) -> u32 {
        self.0.index
    }
}

/// A process-shared barrier.
///
/// ```
/// let b = shmproc::Barrier::new(3)?;
/// let kids: Vec<_> = (0..2)
///     .map(|_| {
///         let b = b.clone();
///         shmproc::Process::spawn(move || {
///             b.wait().unwrap();
///         })
///     })
///     .collect::<Result<_, _>>()?;
/// b.wait()?; // all three meet here
/// for mut k in kids {
///     k.join()?;
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    obj: Object,
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.is_broken())
            .finish()
    }
}

impl Barrier {
    /// A barrier for `parties` parties, in a segment of its own.
    /// `Error::Layout` for zero parties (Python: `ValueError`).
    ///
    /// ```
    /// let b = shmproc::Barrier::new(4)?;
    /// assert_eq!(b.parties(), 4);
    /// assert!(shmproc::Barrier::new(0).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(parties: u32) -> Result<Barrier, Error> {
        Barrier::create(None, "", parties)
    }

    /// A barrier named `name` in `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// let b = shmproc::Barrier::new_in(&seg, "meet", 2)?;
    /// assert_eq!(b.parties(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new_in(seg: &Segment, name: &str, parties: u32) -> Result<Barrier, Error> {
        Barrier::create(Some(seg), name, parties)
    }

    fn create(seg: Option<&Segment>, name: &str, parties: u32) -> Result<Barrier, Error> {
        if parties == 0 {
            return Err(Error::Layout("a barrier needs at least one party"));
        }
        let obj = Object::create_as(seg, name, |raw: &RawBarrier| raw.init(parties))?;
        Ok(Barrier { obj })
    }

    /// Opens the barrier named `name` in `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// shmproc::Barrier::new_in(&seg, "meet", 2)?;
    /// assert_eq!(shmproc::Barrier::open_in(&seg, "meet")?.parties(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_in(seg: &Segment, name: &str) -> Result<Barrier, Error> {
        Ok(Barrier { obj: Object::open_as::<RawBarrier>(seg, name)? })
    }

    fn from_parts(seg: Segment, index: u32) -> Result<Barrier, Error> {
        Ok(Barrier { obj: Object::from_index_as::<RawBarrier>(seg, index)? })
    }

    fn raw(&self) -> &RawBarrier {
        self.obj.head::<RawBarrier>()
    }

    /// The calling thread as arrivals and the internal lock record it
    /// (`kernel_liveness`).
    fn me(&self) -> shmproc_core::owner::Owner {
        self.obj.segment().owner(&thread_id::owner())
    }

    /// How parties and the lock holder are judged: `/proc`, else the
    /// kernel's records of the segment's file.
    fn check(&self) -> &crate::kernel_liveness::FileLiveness {
        self.obj.segment().liveness()
    }

    fn wait_until(&self, deadline: Option<Deadline>) -> Result<BarrierWaitResult, BarrierError> {
        match self.raw().wait(&self.me(), deadline, self.check()) {
            Ok(w) => Ok(BarrierWaitResult(w)),
            Err(RawError::Broken) => Err(BarrierError::Broken),
            Err(RawError::Timeout) => Err(BarrierError::Timeout),
        }
    }

    /// Waits until all parties have arrived (or the barrier breaks).
    ///
    /// ```
    /// let b = shmproc::Barrier::new(2)?;
    /// let b2 = b.clone();
    /// let mut child = shmproc::Process::spawn(move || {
    ///     b2.wait().unwrap();
    /// })?;
    /// b.wait()?;
    /// child.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait(&self) -> Result<BarrierWaitResult, BarrierError> {
        self.wait_until(None)
    }

    /// [`wait`](Barrier::wait) without blocking the executor (`.await` it).
    ///
    /// The future arrives when it is first polled; a helper thread then
    /// watches the barrier's generation word (`shmproc::async_wait`), with a
    /// check every 20 ms that no party died. An arrival cannot be taken
    /// back: dropping the future after it arrived and before the barrier
    /// tripped **breaks** the barrier for everyone, as a timed-out `wait`
    /// does (Python's rule), so that the other parties are never left
    /// waiting for a party that is gone. A future dropped before its first
    /// poll has not arrived and changes nothing.
    ///
    /// ```
    /// let b = shmproc::Barrier::new(2)?;
    /// let b2 = b.clone();
    /// let mut child = shmproc::Process::spawn(move || {
    ///     b2.wait().unwrap();
    /// })?;
    /// shmproc::async_wait::block_on(b.wait_async())?;
    /// child.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_async(&self) -> BarrierFuture<'_> {
        BarrierFuture {
            barrier: self,
            arrived: None,
            done: false,
            next_check: None,
            waiting: crate::async_wait::Waiting::new(),
        }
    }

    /// Waits at most `timeout`; on timeout the barrier breaks for everyone.
    ///
    /// ```
    /// use shmproc::{Barrier, BarrierError};
    /// let b = Barrier::new(2)?;
    /// // Nobody else arrives: this party times out and the barrier breaks.
    /// assert_eq!(b.wait_timeout(std::time::Duration::from_millis(20)), Err(BarrierError::Timeout));
    /// assert!(b.is_broken());
    /// b.reset();
    /// assert!(!b.is_broken());
    /// # Ok::<(), shmproc::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<BarrierWaitResult, BarrierError> {
        self.wait_until(Some(Deadline::after(timeout)))
    }

    /// Breaks the barrier.
    ///
    /// ```
    /// let b = shmproc::Barrier::new(2)?;
    /// b.abort();
    /// assert!(b.is_broken());
    /// assert!(b.wait().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn abort(&self) {
        self.raw().abort(&self.me(), self.check());
    }

    /// Back to the initial state; parties waiting now get `Broken`.
    ///
    /// ```
    /// let b = shmproc::Barrier::new(1)?;
    /// b.abort();
    /// b.reset();
    /// assert!(!b.is_broken());
    /// b.wait()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reset(&self) {
        self.raw().reset(&self.me(), self.check());
    }

    /// The number of parties.
    ///
    /// ```
    /// assert_eq!(shmproc::Barrier::new(5)?.parties(), 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn parties(&self) -> u32 {
        self.raw().parties()
    }

    /// Parties waiting now (a snapshot); 0 while the barrier is broken,
    /// as Python's `n_waiting`.
    ///
    /// ```
    /// let b = shmproc::Barrier::new(2)?;
    /// assert_eq!(b.n_waiting(), 0);
    /// // A lone party gives up: the barrier breaks and nobody waits on it.
    /// assert!(b.wait_timeout(std::time::Duration::from_millis(10)).is_err());
    /// assert!(b.is_broken());
    /// assert_eq!(b.n_waiting(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn n_waiting(&self) -> u32 {
        self.raw().n_waiting()
    }

    /// Whether the barrier is broken.
    ///
    /// ```
    /// let b = shmproc::Barrier::new(2)?;
    /// assert!(!b.is_broken());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn is_broken(&self) -> bool {
        self.raw().is_broken()
    }
}

impl_handle_archive!([] Barrier, b => &b.obj, |seg, idx| Barrier::from_parts(seg, idx));
