//! `recv_async` / `send_async`: the queue's futures (see `async_wait.rs`
//! for how they wait).
//!
//! Cancellation safety: every attempt (claim, copy out, release; or reserve,
//! write, publish) runs to its end inside one `poll`, with the side lock
//! taken and released there, so a future dropped between polls holds no
//! lock, no frame and no slot, and a message is either received by the poll
//! that returns it or still in the queue.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use shmproc_core::mpmc::UNREGISTERED_GRACE;
use shmproc_core::participants::{Presence, Role};
use shmproc_core::Deadline;

use super::{Core, Count, Layout, Message, RecvError, SendError};
use crate::async_wait::NotifierWait;
use crate::blocking::{receiver_pace, LOOK_STREAMING};
use crate::channel_error::Failure;

/// A slot-ring position that has not moved, and since when (see
/// `blocking::wait`).
#[derive(Debug, Default)]
struct Stuck(Option<(u64, Deadline)>);

impl Stuck {
    /// Runs one recovery pass with `recover(grace_passed)`.
    fn recover(&mut self, recover: impl FnOnce(bool) -> (u64, bool)) {
        let grace = matches!(self.0, Some((_, since)) if since.has_passed());
        let (pos, progressed) = recover(grace);
        self.0 = match self.0 {
            _ if progressed => None,
            Some((p, since)) if p == pos => Some((p, since)),
            _ => Some((pos, Deadline::after(UNREGISTERED_GRACE))),
        };
    }
}

/// One receive attempt without waiting: on the byte ring its fast path
/// (read and release in one call, as `recv` does), else `try_recv`. `Full`
/// when there is nothing to take now.
#[inline]
fn attempt_recv<T: Message>(core: &Core) -> Result<T, Failure> {
    let Layout::Bytes(l) = &core.ring else {
        return core.try_recv();
    };
    let me = core.me();
    if let Some((v, block)) = core.take_now::<T>(l, &me, Some(Deadline::EXPIRED))? {
        core.after_release(block);
        return v;
    }
    // Disconnected or empty, as `try_recv` reports it.
    Err(core.nothing_taken())
}

/// The future of [`Queue::recv_async`](super::Queue::recv_async) (and of
/// the `Receiver`'s): resolves to the next message, or to the error
/// [`recv`](super::Queue::recv) would give. Dropping it before it resolves
/// loses nothing (see the [module docs](crate::async_wait)).
#[must_use = "futures do nothing unless polled"]
pub struct RecvFuture<'a, T> {
    core: &'a Core,
    wait: NotifierWait,
    stuck: Stuck,
    _t: PhantomData<fn() -> T>,
}

impl<'a, T: Message> RecvFuture<'a, T> {
    pub(super) fn new(core: &'a Core) -> Self {
        RecvFuture { core, wait: NotifierWait::new(), stuck: Stuck::default(), _t: PhantomData }
    }
}

impl<T: Message> Future for RecvFuture<'_, T> {
    type Output = Result<T, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let core = this.core;
        loop {
            if this.wait.recheck_due() {
                // A producer that died mid-message on the slot ring leaves
                // a claimed slot in the way (the byte ring needs nothing).
                if let Layout::Slots(r) = &core.ring {
                    this.stuck.recover(|grace| r.recover_writer(core.obj.segment().liveness(), grace));
                }
            }
            // One whole attempt, lock taken and released inside.
            match attempt_recv::<T>(core) {
                Ok(v) => {
                    this.wait.finish(core.not_empty());
                    return Poll::Ready(Ok(v));
                }
                Err(Failure::Full) => {}
                Err(e) => {
                    this.wait.finish(core.not_empty());
                    return Poll::Ready(Err(RecvError::from(e)));
                }
            }
            if core.has_message() {
                // Another receiver holds the side: look again soon.
                this.wait.back_off(cx.waker());
                return Poll::Pending;
            }
            let ready = || core.has_message() || core.is_closed();
            // Asked once per wait (it keeps per-thread history).
            let look = || match &core.ring {
                Layout::Bytes(l) => receiver_pace(l.first().spsc()),
                Layout::Slots(_) => LOOK_STREAMING,
            };
            // SAFETY: the notifier lives in `core`'s segment.
            if unsafe { this.wait.park(core.obj.segment(), core.not_empty(), look, ready, cx.waker()) } {
                continue;
            }
            return Poll::Pending;
        }
    }
}

impl<T> Drop for RecvFuture<'_, T> {
    fn drop(&mut self) {
        self.wait.finish(self.core.not_empty());
    }
}

/// The future of [`Queue::send_async`](super::Queue::send_async) (and of
/// the `Sender`'s): resolves once the message is in the queue, or to the
/// error [`send`](super::Queue::send) would give. Dropping it before it
/// resolves sends nothing and leaves no half-written frame.
#[must_use = "futures do nothing unless polled"]
pub struct SendFuture<'a, T> {
    core: &'a Core,
    value: &'a T,
    count: Count,
    wait: NotifierWait,
    stuck: Stuck,
}

impl<'a, T: Message> SendFuture<'a, T> {
    pub(super) fn new(core: &'a Core, value: &'a T) -> Self {
        SendFuture { core, value, count: Count::No, wait: NotifierWait::new(), stuck: Stuck::default() }
    }

    /// A `JoinableQueue`'s send: the task counts once the message is in
    /// (see `Core::counted`).
    pub(crate) fn counting_task(core: &'a Core, value: &'a T) -> Self {
        let mut f = SendFuture::new(core, value);
        f.count = Count::Task;
        f
    }
}

impl<T: Message> Future for SendFuture<'_, T> {
    type Output = Result<(), SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let core = this.core;
        let mut tries = 0u32;
        loop {
            tries += 1;
            if this.wait.recheck_due() {
                if core.presence(Role::Receiver) == Presence::Absent {
                    this.wait.finish(core.not_full());
                    return Poll::Ready(Err(SendError::from(Failure::Disconnected)));
                }
                // A receiver that died holding a message holds room.
                match &core.ring {
                    Layout::Slots(r) => this.stuck.recover(|grace| {
                        r.recover_reader_with(core.obj.segment().liveness(), grace, |kind, bytes| {
                            core.drop_message(kind, bytes)
                        })
                    }),
                    Layout::Bytes(l) => {
                        core.send_lane(l).1.recover_dead_reader(&core.me());
                    }
                }
            }
            if let Some(r) = settled(core.try_send_counted(this.value, this.count)) {
                this.wait.finish(core.not_full());
                return Poll::Ready(r);
            }
            // Read the receivers' progress only once the queue was found
            // full (it lives on lines they write), then try once more: room
            // made before the read is seen by that attempt, room made after
            // it ends the wait (as `Core::send_loop` does).
            let progress = core.progress();
            if let Some(r) = settled(core.try_send_counted(this.value, this.count)) {
                this.wait.finish(core.not_full());
                return Poll::Ready(r);
            }
            let ready = || {
                core.is_closed()
                    || match &core.ring {
                        Layout::Slots(r) => r.has_room(),
                        Layout::Bytes(l) => core.send_lane(l).1.progress() != progress,
                    }
            };
            if tries > 8 {
                // Room reported but not found, again and again: a slot
                // being freed right now. Look again soon.
                this.wait.back_off(cx.waker());
                return Poll::Pending;
            }
            // SAFETY: the notifier lives in `core`'s segment.
            if unsafe { this.wait.park(core.obj.segment(), core.not_full(), || LOOK_STREAMING, ready, cx.waker()) } {
                continue;
            }
            return Poll::Pending;
        }
    }
}

/// A send attempt's outcome for the future: `None` when the queue was full
/// (wait and try again), else the result to resolve with.
fn settled(r: Result<(), Failure>) -> Option<Result<(), SendError>> {
    match r {
        Err(Failure::Full) => None,
        r => Some(r.map_err(SendError::from)),
    }
}

impl<T> Drop for SendFuture<'_, T> {
    fn drop(&mut self) {
        self.wait.finish(self.core.not_full());
    }
}

impl<T> std::fmt::Debug for RecvFuture<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvFuture").field("wait", &self.wait).finish_non_exhaustive()
    }
}

impl<T> std::fmt::Debug for SendFuture<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendFuture").field("wait", &self.wait).finish_non_exhaustive()
    }
}

/// A [`Stream`](futures_core::Stream) of the messages of a queue (feature
/// `stream`), from [`Queue::stream`](super::Queue::stream) or
/// [`Receiver::stream`](super::Receiver::stream): yields `Ok(message)`, an
/// `Err` for a message that fails validation (the stream goes on), and
/// ends once the queue is drained and disconnected. Dropping it between
/// items loses nothing, as with [`RecvFuture`].
#[cfg(feature = "stream")]
#[must_use = "streams do nothing unless polled"]
pub struct RecvStream<'a, T> {
    core: &'a Core,
    next: Option<RecvFuture<'a, T>>,
    done: bool,
}

#[cfg(feature = "stream")]
impl<'a, T: Message> RecvStream<'a, T> {
    pub(super) fn new(core: &'a Core) -> Self {
        RecvStream { core, next: None, done: false }
    }
}

#[cfg(feature = "stream")]
impl<T: Message> futures_core::Stream for RecvStream<'_, T> {
    type Item = Result<T, RecvError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let core = this.core;
        let next = this.next.get_or_insert_with(|| RecvFuture::new(core));
        match Pin::new(next).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                this.next = None;
                match r {
                    Err(RecvError::Disconnected) => {
                        this.done = true;
                        Poll::Ready(None)
                    }
                    other => Poll::Ready(Some(other)),
                }
            }
        }
    }
}

#[cfg(feature = "stream")]
impl<T> std::fmt::Debug for RecvStream<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvStream").field("done", &self.done).finish_non_exhaustive()
    }
}
