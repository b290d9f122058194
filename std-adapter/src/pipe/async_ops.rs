//! `recv_async` and `send_async` on pipe ends (see `async_wait.rs` for how
//! they wait).
//!
//! Cancellation safety: a frame is peeked, copied out and released within
//! one `poll`, so a future dropped between polls takes nothing; a frame is
//! reserved, written and committed within one `poll` (a reservation that is
//! not committed publishes nothing), so a dropped send leaves nothing
//! half-written.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use shmproc_core::participants::{Presence, Role};
use shmproc_core::Deadline;

use super::{Message, RecvError, RxEnd, SendError, TxEnd};
use crate::async_wait::NotifierWait;
use crate::blocking::receiver_pace;
use crate::channel_error::Failure;

/// The future of `recv_async` on a [`Connection`](super::Connection) or a
/// [`PipeReceiver`](super::PipeReceiver): resolves to the next message, or
/// to the error `recv` would give (`Disconnected` once the pipe is drained
/// and the other end is gone). Dropping it unresolved takes nothing. Like
/// the pipe ends themselves (one receiver, not shared between threads) it
/// is not `Send`: await it in the task that owns the end (a current-thread
/// runtime, or `spawn_local`).
#[must_use = "futures do nothing unless polled"]
pub struct PipeRecvFuture<'a, T> {
    rx: &'a RxEnd,
    wait: NotifierWait,
    _t: PhantomData<fn() -> T>,
}

impl<'a, T: Message> PipeRecvFuture<'a, T> {
    pub(super) fn new(rx: &'a RxEnd) -> Self {
        PipeRecvFuture { rx, wait: NotifierWait::new(), _t: PhantomData }
    }
}

impl<T: Message> Future for PipeRecvFuture<'_, T> {
    type Output = Result<T, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let rx = this.rx;
        poll_receiving(rx, &mut this.wait, cx, |woken| {
            if rx.has_frame() || rx.ch.ring.is_closed() {
                // One whole receive (peek, copy out, release) or the
                // disconnection of a drained, closed pipe.
                match rx.recv::<T>(Some(Deadline::EXPIRED)) {
                    Ok(v) => Some(Ok(v)),
                    Err(Failure::Timeout | Failure::Full) => None,
                    Err(e) => Some(Err(RecvError::from(e))),
                }
            } else if woken && rx.ch.presence(Role::Sender) == Presence::Absent && !rx.has_frame() {
                // Woken (or a liveness slice passed) with nothing to read:
                // the other end is gone.
                Some(Err(RecvError::from(Failure::Disconnected)))
            } else {
                None
            }
        })
    }
}

/// The receiving futures' loop: `attempt` (told whether this poll follows a
/// wake-up or a liveness slice) until it gives a result, waiting on the
/// pipe's "not empty" word in between.
fn poll_receiving<R>(
    rx: &RxEnd,
    wait: &mut NotifierWait,
    cx: &mut Context<'_>,
    mut attempt: impl FnMut(bool) -> Option<R>,
) -> Poll<R> {
    let ring = &rx.ch.ring;
    let not_empty = &ring.header().not_empty;
    loop {
        let woken = wait.recheck_due() || wait.is_counted();
        if let Some(r) = attempt(woken) {
            wait.finish(not_empty);
            return Poll::Ready(r);
        }
        let ready = || rx.has_frame() || ring.is_closed();
        // SAFETY: the notifier lives in the pipe's segment.
        if unsafe { wait.park(rx.ch._obj.segment(), not_empty, || receiver_pace(ring), ready, cx.waker()) } {
            continue;
        }
        return Poll::Pending;
    }
}

impl<T> Drop for PipeRecvFuture<'_, T> {
    fn drop(&mut self) {
        self.wait.finish(&self.rx.ch.ring.header().not_empty);
    }
}

impl<T> std::fmt::Debug for PipeRecvFuture<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeRecvFuture").field("wait", &self.wait).finish_non_exhaustive()
    }
}

/// The future of `send_async` on a [`Connection`](super::Connection) or a
/// [`PipeSender`](super::PipeSender): resolves once the message is in the
/// pipe, or to the error `send` would give (`Disconnected` once the other
/// end is gone). Dropping it unresolved sends nothing. Not `Send`, like the
/// pipe ends (see [`PipeRecvFuture`]).
#[must_use = "futures do nothing unless polled"]
pub struct PipeSendFuture<'a, T> {
    tx: &'a TxEnd,
    value: &'a T,
    wait: NotifierWait,
}

impl<'a, T: Message> PipeSendFuture<'a, T> {
    pub(super) fn new(tx: &'a TxEnd, value: &'a T) -> Self {
        PipeSendFuture { tx, value, wait: NotifierWait::new() }
    }
}

impl<T: Message> Future for PipeSendFuture<'_, T> {
    type Output = Result<(), SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let tx = this.tx;
        let ring = &tx.ch.ring;
        let not_full = &ring.header().not_full;
        loop {
            let woken = this.wait.recheck_due() || this.wait.is_counted();
            // One whole attempt: reserve, write and commit, or nothing.
            match tx.send(this.value, Some(Deadline::EXPIRED)) {
                Ok(()) => {
                    this.wait.finish(not_full);
                    return Poll::Ready(Ok(()));
                }
                Err(Failure::Timeout | Failure::Full) => {}
                Err(e) => {
                    this.wait.finish(not_full);
                    return Poll::Ready(Err(SendError::from(e)));
                }
            }
            if ring.is_closed() || (woken && tx.ch.presence(Role::Receiver) == Presence::Absent) {
                this.wait.finish(not_full);
                return Poll::Ready(Err(SendError::from(Failure::Disconnected)));
            }
            // Room for the last message's size (the frame this one most
            // likely needs); any consumption re-checks through the word.
            let need = tx.size_hint.get().max(8);
            let head = ring.head();
            let ready = || ring.is_closed() || ring.fits(need) || ring.head() != head;
            // SAFETY: the notifier lives in the pipe's segment.
            if unsafe { this.wait.park(tx.ch._obj.segment(), not_full, || receiver_pace(ring), ready, cx.waker()) } {
                continue;
            }
            return Poll::Pending;
        }
    }
}

impl<T> Drop for PipeSendFuture<'_, T> {
    fn drop(&mut self) {
        self.wait.finish(&self.tx.ch.ring.header().not_full);
    }
}

impl<T> std::fmt::Debug for PipeSendFuture<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeSendFuture").field("wait", &self.wait).finish_non_exhaustive()
    }
}

/// The future of `readable_async` on a [`Connection`](super::Connection) or a
/// [`PipeReceiver`](super::PipeReceiver) (the async form of `poll`): resolves
/// once a receive would not wait: a message is there, or the pipe is closed
/// or has no sender left (then `recv` reports `Disconnected`). Takes nothing.
#[must_use = "futures do nothing unless polled"]
pub struct PipeReadable<'a> {
    rx: &'a RxEnd,
    wait: NotifierWait,
}

impl<'a> PipeReadable<'a> {
    pub(super) fn new(rx: &'a RxEnd) -> Self {
        PipeReadable { rx, wait: NotifierWait::new() }
    }
}

impl Future for PipeReadable<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let rx = this.rx;
        poll_receiving(rx, &mut this.wait, cx, |woken| {
            let gone = woken && rx.ch.presence(Role::Sender) == Presence::Absent;
            (rx.has_frame() || rx.ch.ring.is_closed() || gone).then_some(())
        })
    }
}

impl Drop for PipeReadable<'_> {
    fn drop(&mut self) {
        self.wait.finish(&self.rx.ch.ring.header().not_empty);
    }
}

impl std::fmt::Debug for PipeReadable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeReadable").field("wait", &self.wait).finish_non_exhaustive()
    }
}
