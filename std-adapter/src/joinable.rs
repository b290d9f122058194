//! `JoinableQueue<T>`: a [`Queue`] that counts unfinished tasks (Python's
//! `JoinableQueue`).
//!
//! Every successful send adds one unfinished task; consumers call
//! [`task_done`](JoinableQueue::task_done) after processing each item, and
//! [`join`](JoinableQueue::join) returns once the count is back to zero, in
//! whatever process the work happened. The counter lives in shared memory.
//!
//! Robustness: a consumer that dies between receiving an item and calling
//! `task_done` leaves that task unfinished forever (as in Python): use
//! [`join_timeout`](JoinableQueue::join_timeout) when consumers may die.
//!
//! ```
//! let q = shmproc::JoinableQueue::<u32>::bounded(8)?;
//! let worker = q.clone();
//! let _w = shmproc::Process::builder().daemon(true).spawn(move || -> () {
//!     while let Ok(_item) = worker.recv() {
//!         worker.task_done().unwrap();
//!     }
//! })?;
//! for i in 0..5 {
//!     q.send(&i)?;
//! }
//! q.join(); // every item was processed
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use shmproc_core::futex::WaitOutcome;
use shmproc_core::Deadline;

use crate::error::Error;
use crate::message::Message;
use crate::queue::{
    Count, Queue, QueueBuilder, RecvError, RecvRef, RecvTimeoutError, SendError, SendFuture, SendTimeoutError,
    TryRecvError, TrySendError,
};
use crate::segment::Segment;

/// `task_done` was called more times than items were sent (Python's
/// `ValueError`).
///
/// ```
/// let q = shmproc::JoinableQueue::<u8>::bounded(2)?;
/// assert_eq!(q.task_done(), Err(shmproc::TaskDoneError));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TaskDoneError;

impl fmt::Display for TaskDoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task_done() called too many times")
    }
}

impl std::error::Error for TaskDoneError {}

/// A queue whose producers can wait until every item has been processed.
///
/// ```
/// let q = shmproc::JoinableQueue::<u32>::bounded(8)?;
/// let worker_q = q.clone();
/// let mut worker = shmproc::Process::spawn(move || {
///     while let Ok(job) = worker_q.recv() {
///         println!("job {job}");
///         worker_q.task_done().unwrap();
///     }
/// })?;
/// for job in 0..4 {
///     q.send(&job)?;
/// }
/// q.join(); // every job was processed
/// q.close();
/// worker.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct JoinableQueue<T> {
    q: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue { q: self.q.clone() }
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue").field("queue", &self.q).field("unfinished", &self.unfinished()).finish()
    }
}

impl<T> JoinableQueue<T> {
    /// Tasks sent and not yet marked done (a snapshot).
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::<u8>::bounded(4)?;
    /// q.send(&1)?;
    /// assert_eq!(q.unfinished(), 1);
    /// q.recv()?;
    /// q.task_done()?;
    /// assert_eq!(q.unfinished(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn unfinished(&self) -> u64 {
        self.q.core().extra().unfinished.load(Ordering::Acquire)
    }

    /// Marks one received item as processed.
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::<u8>::bounded(4)?;
    /// q.send(&1)?;
    /// let _item = q.recv()?;
    /// q.task_done()?;
    /// q.join(); // returns at once: nothing unfinished
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        self.q.core().extra().remove_task().then_some(()).ok_or(TaskDoneError)
    }

    fn join_until(&self, deadline: Option<Deadline>) -> bool {
        let extra = self.q.core().extra();
        loop {
            if self.unfinished() == 0 {
                return true;
            }
            let outcome = extra.all_done.sleep(deadline, || self.unfinished() == 0);
            if outcome == WaitOutcome::TimedOut && self.unfinished() != 0 {
                return false;
            }
        }
    }

    /// Blocks until every item sent so far has been marked done.
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::<u8>::bounded(4)?;
    /// let q2 = q.clone();
    /// let mut child = shmproc::Process::spawn(move || {
    ///     q2.recv().unwrap();
    ///     q2.task_done().unwrap();
    /// })?;
    /// q.send(&1)?;
    /// q.join();
    /// child.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join(&self) {
        self.join_until(None);
    }

    /// [`join`](JoinableQueue::join) without blocking a thread: resolves once
    /// every item sent so far has been marked done, in any process (see
    /// [`async_wait`](crate::async_wait)).
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::<u8>::bounded(4)?;
    /// let q2 = q.clone();
    /// let mut child = shmproc::Process::spawn(move || {
    ///     q2.recv().unwrap();
    ///     q2.task_done().unwrap();
    /// })?;
    /// q.send(&1)?;
    /// shmproc::async_wait::block_on(q.join_async());
    /// child.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join_async(&self) -> JoinAllDone<'_, T> {
        JoinAllDone { q: self, wait: crate::async_wait::NotifierWait::new() }
    }

    /// Like [`join`](JoinableQueue::join), giving up after `timeout`; returns
    /// whether all tasks were done.
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::<u8>::bounded(4)?;
    /// q.send(&1)?;
    /// // Nobody processes it: join gives up.
    /// assert!(!q.join_timeout(std::time::Duration::from_millis(20)));
    /// q.recv()?;
    /// q.task_done()?;
    /// assert!(q.join_timeout(std::time::Duration::from_millis(20)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.join_until(Some(Deadline::after(timeout)))
    }

    /// The underlying queue (sending through it bypasses the task count).
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::<u8>::bounded(4)?;
    /// assert_eq!(q.queue().capacity(), 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn queue(&self) -> &Queue<T> {
        &self.q
    }
}

impl<T: Message> JoinableQueue<T> {
    /// A joinable queue of at most `capacity` messages, in a segment of its own.
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::<String>::bounded(16)?;
    /// q.send(&"task".to_string())?;
    /// assert_eq!(q.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bounded(capacity: usize) -> Result<JoinableQueue<T>, Error> {
        Ok(JoinableQueue { q: Queue::bounded(capacity)? })
    }

    /// An unbounded joinable queue (Python's `JoinableQueue()`): see
    /// [`Queue::unbounded`].
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::<u32>::unbounded()?;
    /// for i in 0..10_000 {
    ///     q.try_send(&i)?; // never full
    /// }
    /// assert_eq!(q.unfinished(), 10_000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unbounded() -> Result<JoinableQueue<T>, Error> {
        Ok(JoinableQueue { q: Queue::unbounded()? })
    }

    /// A joinable queue of at most `capacity` messages, as object `name` of
    /// `seg` (other processes open it with [`open_in`](JoinableQueue::open_in)).
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 20)?;
    /// let q = shmproc::JoinableQueue::<u8>::bounded_in(&seg, "jobs", 4)?;
    /// q.send(&1)?;
    /// assert_eq!(q.unfinished(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bounded_in(seg: &Segment, name: &str, capacity: usize) -> Result<JoinableQueue<T>, Error> {
        Ok(JoinableQueue { q: Queue::bounded_in(seg, name, capacity)? })
    }

    /// An unbounded joinable queue as object `name` of `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 20)?;
    /// let q = shmproc::JoinableQueue::<u8>::unbounded_in(&seg, "jobs")?;
    /// q.send(&1)?;
    /// assert_eq!(q.queue().capacity(), usize::MAX);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unbounded_in(seg: &Segment, name: &str) -> Result<JoinableQueue<T>, Error> {
        Ok(JoinableQueue { q: Queue::unbounded_in(seg, name)? })
    }

    /// A joinable queue from a [`QueueBuilder`] (for options beyond the
    /// capacity).
    ///
    /// ```
    /// let b = shmproc::Queue::<u8>::builder().capacity(2).message_size(64);
    /// let q = shmproc::JoinableQueue::<u8>::from_builder(b)?;
    /// assert_eq!(q.queue().message_size(), 64);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_builder(b: QueueBuilder<T>) -> Result<JoinableQueue<T>, Error> {
        Ok(JoinableQueue { q: b.build()? })
    }

    /// A joinable queue from a [`QueueBuilder`], as object `name` of `seg`
    /// (other processes open it with [`open_in`](JoinableQueue::open_in)).
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 20)?;
    /// let b = shmproc::Queue::<u8>::builder().capacity(4).message_size(64);
    /// let q = shmproc::JoinableQueue::<u8>::from_builder_in(b, &seg, "jobs")?;
    /// q.send(&1)?;
    /// assert_eq!(q.unfinished(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_builder_in(b: QueueBuilder<T>, seg: &Segment, name: &str) -> Result<JoinableQueue<T>, Error> {
        Ok(JoinableQueue { q: b.build_in(seg, name)? })
    }

    /// Opens the joinable queue `name` in `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 20)?;
    /// let q = shmproc::JoinableQueue::<u8>::bounded_in(&seg, "tasks", 4)?;
    /// let again = shmproc::JoinableQueue::<u8>::open_in(&seg, "tasks")?;
    /// q.send(&1)?;
    /// assert_eq!(again.unfinished(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_in(seg: &Segment, name: &str) -> Result<JoinableQueue<T>, Error> {
        Ok(JoinableQueue { q: Queue::open_in(seg, name)? })
    }

    /// Sends one task, waiting for room. The task counts as unfinished
    /// once the message is in the queue (as Python's `put`): a send that
    /// waits for room or fails counts nothing. (Each attempt to put it in
    /// counts it while it runs, a few microseconds, so that a consumer that
    /// takes the message at once always finds it counted.)
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::<u8>::bounded(4)?;
    /// q.send(&1)?;
    /// assert_eq!(q.unfinished(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send(&self, value: &T) -> Result<(), SendError> {
        self.q.core().send_task(value, None).map_err(SendError::from)
    }

    /// Sends one task if there is room now.
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::<u8>::bounded(1)?;
    /// q.try_send(&1)?;
    /// assert!(q.try_send(&2).is_err());
    /// assert_eq!(q.unfinished(), 1); // only the item that went in counts
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_send(&self, value: &T) -> Result<(), TrySendError> {
        self.q.core().try_send_counted(value, Count::Task).map_err(TrySendError::from)
    }

    /// Sends one task, waiting at most `timeout` for room; counted as
    /// [`send`](Self::send)'s: not while it waits.
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::<u8>::bounded(1)?;
    /// q.send_timeout(&1, std::time::Duration::from_millis(5))?;
    /// assert!(q.send_timeout(&2, std::time::Duration::from_millis(5)).is_err());
    /// assert_eq!(q.unfinished(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_timeout(&self, value: &T, timeout: Duration) -> Result<(), SendTimeoutError> {
        self.q.core().send_task(value, Some(Deadline::after(timeout))).map_err(SendTimeoutError::from)
    }

    /// Receives a task.
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::<u8>::bounded(2)?;
    /// q.send(&4)?;
    /// assert_eq!(q.recv()?, 4);
    /// q.task_done()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv(&self) -> Result<T, RecvError> {
        self.q.recv()
    }

    /// Sends one task without blocking the executor (`.await` it),
    /// counted as [`send`](Self::send)'s: once the message is in, so a
    /// future still waiting for room, or dropped, counts nothing.
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::<u8>::bounded(4)?;
    /// shmproc::async_wait::block_on(q.send_async(&1))?;
    /// assert_eq!(q.unfinished(), 1);
    /// drop(q.send_async(&2)); // never polled: nothing sent, nothing counted
    /// assert_eq!(q.unfinished(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_async<'a>(&'a self, value: &'a T) -> SendFuture<'a, T> {
        SendFuture::counting_task(self.q.core(), value)
    }

    /// Receives a task without blocking the executor (`.await` it); see
    /// [`Queue::recv_async`]. Call [`task_done`](Self::task_done) when it is
    /// processed.
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::<u8>::bounded(4)?;
    /// q.send(&5)?;
    /// assert_eq!(shmproc::async_wait::block_on(q.recv_async())?, 5);
    /// q.task_done()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn recv_async(&self) -> Result<T, RecvError> {
        self.q.recv_async().await
    }

    /// Receives a task if one is waiting.
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::<u8>::bounded(2)?;
    /// assert!(q.try_recv().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.q.try_recv()
    }

    /// Receives a task, waiting at most `timeout`.
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::<u8>::bounded(2)?;
    /// assert!(q.recv_timeout(std::time::Duration::from_millis(5)).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.q.recv_timeout(timeout)
    }

    /// Receives a task in place.
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::<u32>::bounded(2)?;
    /// q.send(&10)?;
    /// assert_eq!(q.recv_ref()?.to_native(), 10);
    /// q.task_done()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_ref(&self) -> Result<RecvRef<'_, T>, RecvError> {
        self.q.recv_ref()
    }

    /// Messages waiting.
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::<u8>::bounded(2)?;
    /// q.send(&1)?;
    /// assert_eq!(q.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Whether no message is waiting.
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::<u8>::bounded(2)?;
    /// assert!(q.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Whether a send would find no room now (Python's `full()`).
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::<u8>::bounded(1)?;
    /// assert!(!q.is_full());
    /// q.send(&1)?;
    /// assert!(q.is_full());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.q.is_full()
    }

    /// Capacity in messages (`usize::MAX`: unbounded).
    ///
    /// ```
    /// assert_eq!(shmproc::JoinableQueue::<u8>::bounded(3)?.capacity(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.q.capacity()
    }

    /// Disconnects the queue for everyone.
    ///
    /// ```
    /// let q = shmproc::JoinableQueue::<u8>::bounded(2)?;
    /// q.close();
    /// assert!(q.send(&1).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&self) {
        self.q.close();
    }
}

crate::object::impl_handle_archive!(
    [T: Message,] JoinableQueue<T>, q => q.q.archived_object(),
    |seg, idx| Queue::<T>::from_parts_pub(seg, idx).map(|q| JoinableQueue { q })
);

/// The future of [`JoinableQueue::join_async`].
#[must_use = "futures do nothing unless polled"]
pub struct JoinAllDone<'a, T> {
    q: &'a JoinableQueue<T>,
    wait: crate::async_wait::NotifierWait,
}

impl<T> fmt::Debug for JoinAllDone<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinAllDone").field("wait", &self.wait).finish_non_exhaustive()
    }
}

impl<T: Message> std::future::Future for JoinAllDone<'_, T> {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let this = self.get_mut();
        let q = this.q;
        let all_done = &q.q.core().extra().all_done;
        loop {
            if q.unfinished() == 0 {
                this.wait.finish(all_done);
                return std::task::Poll::Ready(());
            }
            let seg = q.q.archived_object().segment();
            let look = || std::time::Duration::from_micros(5);
            // SAFETY: the notifier lives in the queue's segment.
            if !unsafe { this.wait.park(seg, all_done, look, || q.unfinished() == 0, cx.waker()) } {
                return std::task::Poll::Pending;
            }
        }
    }
}

impl<T> Drop for JoinAllDone<'_, T> {
    fn drop(&mut self) {
        self.wait.finish(&self.q.q.core().extra().all_done);
    }
}
