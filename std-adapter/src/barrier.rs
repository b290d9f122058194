//! `Barrier`: `n` parties wait for each other (Python's `Barrier`).
//!
//! Breaks instead of hanging: a party whose timeout passes, a party that dies
//! while waiting, or [`abort`](Barrier::abort) breaks the barrier, and every
//! waiting and later party gets [`BarrierError::Broken`] until
//! [`reset`](Barrier::reset). A party that dies *before* arriving looks like a
//! slow one: use [`wait_timeout`](Barrier::wait_timeout) (or a handle's
//! default, [`with_timeout`](Barrier::with_timeout)) when that matters.
//!
//! As Python's, a barrier can have an action that the last party to arrive
//! runs before any party is released ([`with_action`](Barrier::with_action));
//! it belongs to the handle, not to the shared barrier (a closure cannot
//! live in shared memory), so give it to the handle of each process that
//! may arrive last (clones and forked children's copies have it).
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

use shmproc_core::barrier::{Arrived, BarrierError as RawError, BarrierWait, RawBarrier};
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
    arrived: Option<Arrived>,
    done: bool,
    /// The handle's default timeout, from the first poll.
    deadline: Option<std::time::Instant>,
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
    r.map(BarrierWaitResult).map_err(from_raw)
}

fn from_raw(e: RawError) -> BarrierError {
    match e {
        RawError::Broken => BarrierError::Broken,
        RawError::Timeout => BarrierError::Timeout,
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
            None => {
                this.deadline = this.barrier.timeout.map(|t| std::time::Instant::now() + t);
                match this.barrier.arrive(&me) {
                    Ok(a) => {
                        this.arrived = Some(a);
                        if let Some(ran) = this.barrier.act_if_leader(&a) {
                            // The action ran here (the future is polled on
                            // one thread at a time) and released the others.
                            this.done = true;
                            return Poll::Ready(ran);
                        }
                        a
                    }
                    Err(e) => {
                        this.done = true;
                        return Poll::Ready(converted(Err(e)));
                    }
                }
            }
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
        if this.deadline.is_some_and(|d| now >= d) {
            // The handle's timeout: give the arrival up (the barrier breaks).
            this.done = true;
            this.waiting.disarm();
            let r = raw.leave(&me, this.barrier.check(), &a).unwrap_or(Err(RawError::Timeout));
            return Poll::Ready(converted(r));
        }
        let at = match (this.next_check, this.deadline) {
            (Some(n), Some(d)) => n.min(d),
            (n, d) => n.or(d).unwrap_or(now),
        };
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
    /// Run by this handle's process when it is the last to arrive (see
    /// [`with_action`](Barrier::with_action)).
    action: Option<Action>,
    /// What [`wait`](Barrier::wait) waits at most (see
    /// [`with_timeout`](Barrier::with_timeout)).
    timeout: Option<Duration>,
}

/// A barrier's action: shared by the clones of a handle.
type Action = std::sync::Arc<dyn Fn() + Send + Sync>;

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.is_broken())
            .field("action", &self.action.is_some())
            .field("timeout", &self.timeout)
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
        Ok(Barrier::with_object(obj))
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
        Ok(Barrier::with_object(Object::open_as::<RawBarrier>(seg, name)?))
    }

    fn from_parts(seg: Segment, index: u32) -> Result<Barrier, Error> {
        Ok(Barrier::with_object(Object::from_index_as::<RawBarrier>(seg, index)?))
    }

    fn with_object(obj: Object) -> Barrier {
        Barrier { obj, action: None, timeout: None }
    }

    /// This handle, running `action` when it is the last party to arrive,
    /// before any party is released (Python's `action`). The action runs
    /// in the process that arrives last, from *its* handle: clones carry
    /// the action (so do the handles a forked child inherits), but a handle
    /// opened by name or passed to a spawned child does not: give it one
    /// with `with_action` there too, or the round it trips runs none.
    ///
    /// If the action panics, the barrier breaks (the other parties get
    /// [`BarrierError::Broken`]) and the panic goes on in the party that
    /// ran it, as Python re-raises the action's exception. If the process
    /// running it dies, the others' liveness checks break the barrier.
    ///
    /// ```
    /// let done = shmproc::Value::new(0u32)?;
    /// let d = done.clone();
    /// let b = shmproc::Barrier::new(2)?.with_action(move || {
    ///     d.update(|n| *n += 1);
    /// });
    /// let b2 = b.clone();
    /// let mut child = shmproc::Process::spawn(move || {
    ///     b2.wait().unwrap();
    /// })?;
    /// b.wait()?;
    /// // Whoever arrived last ran the action before anyone was released.
    /// assert_eq!(done.get(), 1);
    /// child.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn with_action(mut self, action: impl Fn() + Send + Sync + 'static) -> Barrier {
        self.action = Some(std::sync::Arc::new(action));
        self
    }

    /// This handle, whose [`wait`](Barrier::wait) (and
    /// [`wait_async`](Barrier::wait_async)) waits at most `timeout`, then
    /// breaks the barrier and reports [`BarrierError::Timeout`] (Python's
    /// `timeout`). Carried by clones, as the action.
    ///
    /// ```
    /// use shmproc::{Barrier, BarrierError};
    /// let b = Barrier::new(2)?.with_timeout(std::time::Duration::from_millis(20));
    /// assert_eq!(b.wait(), Err(BarrierError::Timeout));
    /// assert!(b.is_broken());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Barrier {
        self.timeout = Some(timeout);
        self
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
        let me = self.me();
        let arrived = self.arrive(&me).map_err(from_raw)?;
        if let Some(ran) = self.act_if_leader(&arrived) {
            return ran;
        }
        converted(self.raw().wait_arrived(&me, deadline, self.check(), &arrived))
    }

    /// Arrives in the current generation: holding it, if this handle has an
    /// action to run when it is the last party (see `RawBarrier::arrive_holding`).
    fn arrive(&self, me: &shmproc_core::owner::Owner) -> Result<Arrived, RawError> {
        match self.action {
            Some(_) => self.raw().arrive_holding(me, self.check()),
            None => self.raw().arrive(me, self.check()),
        }
    }

    /// For the holding leader (the last party of a handle with an action):
    /// runs the action, then trips the barrier, or breaks it and goes on
    /// panicking if the action panicked. `None` for any other arrival.
    fn act_if_leader(&self, arrived: &Arrived) -> Option<Result<BarrierWaitResult, BarrierError>> {
        let action = self.action.as_ref().filter(|_| arrived.leader)?;
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| action()));
        let tripped = self.raw().trip(&self.me(), self.check(), arrived, ran.is_ok());
        if let Err(panic) = ran {
            std::panic::resume_unwind(panic);
        }
        Some(converted(tripped))
    }

    /// The deadline of a `wait` without an explicit timeout.
    fn default_deadline(&self) -> Option<Deadline> {
        self.timeout.map(Deadline::after)
    }

    /// Waits until all parties have arrived (or the barrier breaks, or the
    /// handle's [timeout](Barrier::with_timeout) passes).
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
        self.wait_until(self.default_deadline())
    }

    /// [`wait`](Barrier::wait) without blocking the executor (`.await` it).
    ///
    /// The future arrives when it is first polled (the handle's
    /// [timeout](Barrier::with_timeout) starts then; if it arrives last, the
    /// handle's [action](Barrier::with_action) runs inside that poll); a helper thread then
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
            deadline: None,
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
