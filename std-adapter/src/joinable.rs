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
    Queue, QueueBuilder, RecvError, RecvRef, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use crate::segment::Segment;

/// `task_done` was called more times than items were sent (Python's
/// `ValueError`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TaskDoneError;

impl fmt::Display for TaskDoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task_done() called too many times")
    }
}

impl std::error::Error for TaskDoneError {}

/// A queue whose producers can wait until every item has been processed.
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
    #[must_use]
    pub fn unfinished(&self) -> u64 {
        self.q.core().extra().unfinished.load(Ordering::Acquire)
    }

    fn add(&self) {
        self.q.core().extra().unfinished.fetch_add(1, Ordering::AcqRel);
    }

    fn sub(&self) -> Result<(), TaskDoneError> {
        let extra = self.q.core().extra();
        let mut cur = extra.unfinished.load(Ordering::Acquire);
        loop {
            if cur == 0 {
                return Err(TaskDoneError);
            }
            match extra.unfinished.compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(v) => cur = v,
            }
        }
        if cur == 1 {
            extra.all_done.notify();
        }
        Ok(())
    }

    /// Marks one received item as processed.
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        self.sub()
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
    pub fn join(&self) {
        self.join_until(None);
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
    #[must_use]
    pub fn queue(&self) -> &Queue<T> {
        &self.q
    }
}

impl<T: Message> JoinableQueue<T> {
    /// A joinable queue of at most `capacity` messages, in a segment of its own.
    pub fn bounded(capacity: usize) -> Result<JoinableQueue<T>, Error> {
        Ok(JoinableQueue { q: Queue::bounded(capacity)? })
    }

    /// A joinable queue from a [`QueueBuilder`].
    pub fn from_builder(b: QueueBuilder) -> Result<JoinableQueue<T>, Error> {
        Ok(JoinableQueue { q: b.build()? })
    }

    /// Opens the joinable queue `name` in `seg`.
    pub fn open_in(seg: &Segment, name: &str) -> Result<JoinableQueue<T>, Error> {
        Ok(JoinableQueue { q: Queue::open_in(seg, name)? })
    }

    /// Sends one task, waiting for room.
    pub fn send(&self, value: &T) -> Result<(), SendError> {
        self.add();
        self.q.send(value).inspect_err(|_| {
            let _ = self.sub();
        })
    }

    /// Sends one task if there is room now.
    pub fn try_send(&self, value: &T) -> Result<(), TrySendError> {
        self.add();
        self.q.try_send(value).inspect_err(|_| {
            let _ = self.sub();
        })
    }

    /// Sends one task, waiting at most `timeout` for room.
    pub fn send_timeout(&self, value: &T, timeout: Duration) -> Result<(), SendTimeoutError> {
        self.add();
        self.q.send_timeout(value, timeout).inspect_err(|_| {
            let _ = self.sub();
        })
    }

    /// Receives a task.
    pub fn recv(&self) -> Result<T, RecvError> {
        self.q.recv()
    }

    /// Receives a task if one is waiting.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.q.try_recv()
    }

    /// Receives a task, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.q.recv_timeout(timeout)
    }

    /// Receives a task in place.
    pub fn recv_ref(&self) -> Result<RecvRef<'_, T>, RecvError> {
        self.q.recv_ref()
    }

    /// Messages waiting.
    #[must_use]
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Whether no message is waiting.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Disconnects the queue for everyone.
    pub fn close(&self) {
        self.q.close();
    }
}

crate::object::impl_handle_archive!(
    [T: Message,] JoinableQueue<T>, q => q.q.archived_object(),
    |seg, idx| Queue::<T>::from_parts_pub(seg, idx).map(|q| JoinableQueue { q })
);
