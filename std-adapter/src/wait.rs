//! Waiting on many things at once (Python's `multiprocessing.connection.wait`).
//!
//! [`wait()`] takes processes, queues, pipe ends, events and pool results
//! together and returns the indices of those that are ready, in order:
//!
//! | object | ready when |
//! |---|---|
//! | [`Process`] | the child has exited |
//! | [`Queue`], [`Receiver`] | a message is waiting, or a receive would report `Disconnected` (closed, or every sender gone) |
//! | [`Connection`], [`PipeReceiver`] | a message is waiting, or the other end is gone (Python: EOF) |
//! | [`Event`] | the flag is set |
//! | [`AsyncResult`], [`MapResult`] | the task has finished (this collects the pool's results) |
//!
//! ```
//! use shmproc::wait::Waitable;
//! use std::time::Duration;
//!
//! let (tx, rx) = shmproc::Pipe::<u32>::oneway()?;
//! let done = shmproc::Event::new()?;
//! let mut child = shmproc::Process::spawn(move || tx.send(&7).unwrap())?;
//! let ready = shmproc::wait(&[&done as &dyn Waitable, &rx], Some(Duration::from_secs(10)));
//! assert_eq!(ready, [1]); // the pipe, not the event
//! assert_eq!(rx.recv()?, 7);
//! child.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How it waits, and how late it can be
//!
//! No thread is started, whatever the number of objects. Each round checks
//! every object (a few atomic loads each; for a process, one `waitpid` with
//! `WNOHANG`), then sleeps: in `ppoll(2)` on the pidfds of the processes
//! among them ([`Process::sentinel`]), so an exiting child ends the sleep at
//! once, or plainly when there are none. The sleep starts at 50 µs and
//! doubles each round up to [`MAX_SLICE`] (10 ms), so a queue, pipe or
//! event that becomes ready is seen at most one slice late: within
//! microseconds early in a wait, within 10 ms in a long one. (The shared
//! futex words these objects sleep on cannot be waited on together with
//! pidfds, which is why this polls.) Use an object's own blocking call when
//! waiting on just one.

use std::os::fd::AsRawFd;
use std::time::Duration;

use shmproc_core::Deadline;

use crate::pipe::{Connection, PipeReceiver};
use crate::pool::{AsyncResult, MapResult};
use crate::process::Process;
use crate::queue::{Queue, Receiver};
use crate::{Event, Message};

/// The longest sleep between two readiness checks (see the module docs).
pub const MAX_SLICE: Duration = Duration::from_millis(10);

/// The first sleep of a wait; it doubles each round up to [`MAX_SLICE`].
const FIRST_SLICE: Duration = Duration::from_micros(50);

pub(crate) mod sealed {
    /// Only the crate's own types can be waited on.
    pub trait Sealed {}
}

/// Something [`wait()`] can wait on (implemented by the crate's processes,
/// queues, pipe ends, events and pool results; sealed).
pub trait Waitable: sealed::Sealed {
    /// Whether it is ready now (see the table in the [module docs](self)).
    ///
    /// ```
    /// use shmproc::wait::Waitable;
    /// let e = shmproc::Event::new()?;
    /// assert!(!e.is_ready());
    /// e.set();
    /// assert!(e.is_ready());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn is_ready(&self) -> bool;

    /// A descriptor that becomes readable when it is ready, if it has one.
    #[doc(hidden)]
    fn __ready_fd(&self) -> Option<i32> {
        None
    }
}

/// Waits until at least one of `objects` is ready, or `timeout` passes
/// (`None`: as long as it takes); returns the indices of every ready object,
/// in increasing order, or nothing on timeout. Python's
/// `multiprocessing.connection.wait(object_list, timeout)`, with indices in
/// place of the objects. Nothing is consumed: a ready queue still holds its
/// message.
///
/// ```
/// use shmproc::wait::Waitable;
/// use std::time::Duration;
///
/// let mut a = shmproc::Process::spawn(|| std::thread::sleep(Duration::from_secs(30)))?;
/// let mut b = shmproc::Process::spawn(|| ())?;
/// let ready = shmproc::wait(&[&a as &dyn Waitable, &b], Some(Duration::from_secs(10)));
/// assert_eq!(ready, [1]);
/// a.kill()?;
/// let (_, _) = (a.join()?, b.join()?);
/// let q = shmproc::Queue::<u8>::bounded(1)?;
/// assert!(shmproc::wait(&[&q as &dyn Waitable], Some(Duration::from_millis(10))).is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> Vec<usize> {
    let deadline = timeout.map(Deadline::after);
    let mut fds: Vec<libc::pollfd> = objects
        .iter()
        .filter_map(|o| o.__ready_fd())
        .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
        .collect();
    let mut slice = FIRST_SLICE;
    loop {
        let ready: Vec<usize> = objects.iter().enumerate().filter(|(_, o)| o.is_ready()).map(|(i, _)| i).collect();
        if !ready.is_empty() {
            return ready;
        }
        let nap = match deadline {
            Some(d) if d.has_passed() => return ready,
            Some(d) => slice.min(d.remaining()),
            None => slice,
        };
        if fds.is_empty() {
            std::thread::sleep(nap);
        } else {
            let ts = libc::timespec { tv_sec: nap.as_secs() as libc::time_t, tv_nsec: nap.subsec_nanos().into() };
            // SAFETY: `fds` is a live array of `fds.len()` pollfds and `ts` a
            // valid timespec; no signal mask is passed. An error (EINTR) or a
            // timeout just ends this round: every object is checked again.
            unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &ts, std::ptr::null()) };
        }
        slice = (slice * 2).min(MAX_SLICE);
    }
}

/// [`wait()`] without blocking a thread: resolves to the indices of the
/// ready objects once at least one is ready. Like `wait`, it polls (after a
/// sleep that starts at 50 µs and doubles up to 10 ms, served by the helper
/// thread of [`async_wait`](crate::async_wait)); put a timeout around it
/// with the executor's timer. The future borrows `&dyn Waitable`s, which are
/// not `Sync`: it is not `Send` (await it inside a task, not across
/// `tokio::spawn`).
///
/// ```
/// use shmproc::wait::Waitable;
/// let (tx, rx) = shmproc::Pipe::<u32>::oneway()?;
/// let idle = shmproc::Event::new()?;
/// let mut child = shmproc::Process::spawn(move || tx.send(&1).unwrap())?;
/// let objects = [&idle as &dyn Waitable, &rx];
/// assert_eq!(shmproc::async_wait::block_on(shmproc::wait_async(&objects)), [1]);
/// child.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn wait_async<'a>(objects: &'a [&'a dyn Waitable]) -> WaitAny<'a> {
    WaitAny { objects, recheck: crate::async_wait::Recheck::new() }
}

/// The future of [`wait_async`].
#[must_use = "futures do nothing unless polled"]
pub struct WaitAny<'a> {
    objects: &'a [&'a dyn Waitable],
    recheck: crate::async_wait::Recheck,
}

impl std::fmt::Debug for WaitAny<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitAny").field("objects", &self.objects.len()).finish_non_exhaustive()
    }
}

impl std::future::Future for WaitAny<'_> {
    type Output = Vec<usize>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Vec<usize>> {
        let this = self.get_mut();
        let ready: Vec<usize> = this.objects.iter().enumerate().filter(|(_, o)| o.is_ready()).map(|(i, _)| i).collect();
        if ready.is_empty() {
            this.recheck.later(cx.waker());
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(ready)
    }
}

impl sealed::Sealed for Process {}
impl Waitable for Process {
    fn is_ready(&self) -> bool {
        !self.is_alive()
    }
    fn __ready_fd(&self) -> Option<i32> {
        self.sentinel().map(|fd| fd.as_raw_fd())
    }
}

impl sealed::Sealed for Event {}
impl Waitable for Event {
    fn is_ready(&self) -> bool {
        self.is_set()
    }
}

impl<T> sealed::Sealed for Queue<T> {}
impl<T> Waitable for Queue<T> {
    fn is_ready(&self) -> bool {
        self.core().recv_ready()
    }
}

impl<T> sealed::Sealed for Receiver<T> {}
impl<T> Waitable for Receiver<T> {
    fn is_ready(&self) -> bool {
        self.recv_ready()
    }
}

impl<T> sealed::Sealed for Connection<T> {}
impl<T> Waitable for Connection<T> {
    fn is_ready(&self) -> bool {
        self.recv_ready()
    }
}

impl<T> sealed::Sealed for PipeReceiver<T> {}
impl<T> Waitable for PipeReceiver<T> {
    fn is_ready(&self) -> bool {
        self.recv_ready()
    }
}

impl<R> sealed::Sealed for AsyncResult<R> {}
impl<R: Message> Waitable for AsyncResult<R> {
    fn is_ready(&self) -> bool {
        self.ready()
    }
}

impl<R> sealed::Sealed for MapResult<R> {}
impl<R: Message> Waitable for MapResult<R> {
    fn is_ready(&self) -> bool {
        self.ready()
    }
}
