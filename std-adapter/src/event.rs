//! `Event`: a flag processes can wait for (Python's `Event`).
//!
//! Robust to anything a peer can do except lying: nothing is owned, so a dead
//! setter or waiter changes nothing for the others. A `set` that happens while
//! a process waits releases it even if the flag is cleared again at once.
//!
//! ```
//! let go = shmproc::Event::new()?;
//! let g = go.clone();
//! let mut child = shmproc::Process::spawn(move || assert!(g.wait()))?;
//! go.set();
//! child.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use shmproc_core::event::RawEvent;
use shmproc_core::Deadline;

use crate::async_wait::Waiting;
use crate::error::Error;
use crate::object::{impl_handle_archive, Object};
use crate::segment::Segment;

/// A process-shared event flag, initially clear.
///
/// ```
/// let go = shmproc::Event::new()?;
/// let g = go.clone();
/// let mut child = shmproc::Process::spawn(move || {
///     g.wait(); // the start signal
///     println!("started");
/// })?;
/// go.set();
/// child.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Event {
    obj: Object,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event").field("is_set", &self.is_set()).finish()
    }
}

impl Event {
    /// A clear event in a segment of its own.
    ///
    /// ```
    /// let e = shmproc::Event::new()?;
    /// assert!(!e.is_set());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> Result<Event, Error> {
        Event::create(None, "")
    }

    /// A clear event named `name` in `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// let e = shmproc::Event::new_in(&seg, "ready")?;
    /// e.set();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new_in(seg: &Segment, name: &str) -> Result<Event, Error> {
        Event::create(Some(seg), name)
    }

    fn create(seg: Option<&Segment>, name: &str) -> Result<Event, Error> {
        let obj = Object::create_as(seg, name, |raw: &RawEvent| raw.init())?;
        Ok(Event { obj })
    }

    /// Opens the event named `name` in `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// shmproc::Event::new_in(&seg, "ready")?.set();
    /// assert!(shmproc::Event::open_in(&seg, "ready")?.is_set());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_in(seg: &Segment, name: &str) -> Result<Event, Error> {
        Ok(Event { obj: Object::open_as::<RawEvent>(seg, name)? })
    }

    fn from_parts(seg: Segment, index: u32) -> Result<Event, Error> {
        Ok(Event { obj: Object::from_index_as::<RawEvent>(seg, index)? })
    }

    fn raw(&self) -> &RawEvent {
        self.obj.head::<RawEvent>()
    }

    /// Sets the flag and wakes every waiter in every process.
    ///
    /// ```
    /// let e = shmproc::Event::new()?;
    /// e.set();
    /// assert!(e.wait()); // returns at once
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set(&self) {
        self.raw().set();
    }

    /// Clears the flag.
    ///
    /// ```
    /// let e = shmproc::Event::new()?;
    /// e.set();
    /// e.clear();
    /// assert!(!e.is_set());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clear(&self) {
        self.raw().clear();
    }

    /// Whether the flag is set.
    ///
    /// ```
    /// let e = shmproc::Event::new()?;
    /// assert!(!e.is_set());
    /// e.set();
    /// assert!(e.is_set());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn is_set(&self) -> bool {
        self.raw().is_set()
    }

    /// Waits until the flag is set; returns true (Python's `wait()`).
    ///
    /// ```
    /// let e = shmproc::Event::new()?;
    /// let e2 = e.clone();
    /// let mut child = shmproc::Process::spawn(move || e2.set())?;
    /// assert!(e.wait());
    /// child.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait(&self) -> bool {
        self.raw().wait(None)
    }

    /// Waits at most `timeout`; returns whether the flag was set.
    ///
    /// ```
    /// let e = shmproc::Event::new()?;
    /// assert!(!e.wait_timeout(std::time::Duration::from_millis(10)));
    /// e.set();
    /// assert!(e.wait_timeout(std::time::Duration::from_millis(10)));
    /// # Ok::<(), shmproc::Error>(())
    /// ```
    #[must_use]
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.raw().wait(Some(Deadline::after(timeout)))
    }
}

impl Event {
    /// Waits without blocking a thread: the future resolves to `true` once
    /// the flag is set (or was set, perhaps cleared again, since the first
    /// poll). `set` in any process wakes it through the helper thread of
    /// [`async_wait`](crate::async_wait); the setting side is unchanged.
    ///
    /// ```
    /// let e = shmproc::Event::new()?;
    /// let e2 = e.clone();
    /// let mut child = shmproc::Process::spawn(move || e2.set())?;
    /// assert!(shmproc::async_wait::block_on(e.wait_async()));
    /// child.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_async(&self) -> EventWait<'_> {
        EventWait { event: self, start: None, counted: false, waiting: Waiting::new() }
    }
}

/// The future of [`Event::wait_async`]. Dropping it unresolved changes
/// nothing.
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct EventWait<'a> {
    event: &'a Event,
    start: Option<u32>,
    counted: bool,
    waiting: Waiting,
}

impl EventWait<'_> {
    fn finish(&mut self) {
        self.waiting.disarm();
        if self.counted {
            self.counted = false;
            self.event.raw().end_async_wait();
        }
    }
}

impl Future for EventWait<'_> {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let this = self.get_mut();
        let raw = this.event.raw();
        let start = *this.start.get_or_insert_with(|| raw.snapshot());
        if raw.happened_since(start, raw.snapshot()) {
            this.finish();
            return Poll::Ready(true);
        }
        // Counted as a waiter first, so that `set` wakes the word; then
        // looked at again (both SeqCst, as in `RawEvent::wait`).
        let now = if this.counted {
            raw.flag_word().load(std::sync::atomic::Ordering::SeqCst)
        } else {
            this.counted = true;
            raw.begin_async_wait()
        };
        if raw.happened_since(start, now) {
            this.finish();
            return Poll::Ready(true);
        }
        // SAFETY: the word lives in the event's segment, which the
        // registration keeps mapped.
        unsafe { this.waiting.watch(Some(this.event.obj.segment()), raw.flag_word(), now, None, false, cx.waker()) };
        Poll::Pending
    }
}

impl Drop for EventWait<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl_handle_archive!([] Event, e => &e.obj, |seg, idx| Event::from_parts(seg, idx));
