//! The futures of objects that have no futex word to watch: a child's exit
//! ([`Process::join_async`]) and a pool's results ([`AsyncResult`] and
//! [`MapResult`] are [`IntoFuture`]). They are re-checked by the helper
//! thread of [`async_wait`](crate::async_wait) after a sleep that starts at
//! 50 µs and doubles up to 10 ms ([`POLL_MAX`](crate::async_wait::POLL_MAX)),
//! so they resolve up to that late; no thread and no descriptor is used per
//! future.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::async_wait::Recheck;
use crate::pool::{AsyncResult, MapResult, TaskError};
use crate::process::{Process, ProcessError};
use crate::Message;

impl Process {
    /// Waits for the child to exit without blocking a thread; resolves to
    /// what [`join`](Process::join) returns. Polled: the exit is seen up to
    /// 10 ms late (see [`async_wait`](crate::async_wait)).
    ///
    /// ```
    /// let mut p = shmproc::Process::spawn(|| 3)?;
    /// assert_eq!(shmproc::async_wait::block_on(p.join_async())?, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join_async(&mut self) -> JoinFuture<'_> {
        JoinFuture { process: self, recheck: Recheck::new() }
    }
}

/// The future of [`Process::join_async`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct JoinFuture<'a> {
    process: &'a mut Process,
    recheck: Recheck,
}

impl Future for JoinFuture<'_> {
    type Output = Result<i32, ProcessError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // `is_alive` reaps without blocking; once it says no, `join`
        // returns the stored code (or the error) at once.
        if this.process.is_alive() {
            this.recheck.later(cx.waker());
            return Poll::Pending;
        }
        Poll::Ready(this.process.join())
    }
}

/// The future an [`AsyncResult`] turns into (`.await` on it): resolves to
/// what [`get`](AsyncResult::get) returns.
#[must_use = "futures do nothing unless polled"]
pub struct ResultFuture<R> {
    result: AsyncResult<R>,
    recheck: Recheck,
}

impl<R> std::fmt::Debug for ResultFuture<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultFuture").field("recheck", &self.recheck).finish_non_exhaustive()
    }
}

impl<R: Message> Future for ResultFuture<R> {
    type Output = Result<R, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // `ready` collects what the workers sent without waiting.
        if this.result.ready() {
            return Poll::Ready(this.result.get());
        }
        this.recheck.later(cx.waker());
        Poll::Pending
    }
}

impl<R: Message> IntoFuture for AsyncResult<R> {
    type Output = Result<R, TaskError>;
    type IntoFuture = ResultFuture<R>;

    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// let pool = shmproc::Pool::new(1)?;
    /// let r = pool.apply_async(square, 7)?;
    /// assert_eq!(shmproc::async_wait::block_on(async { r.await })?, 49);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn into_future(self) -> ResultFuture<R> {
        ResultFuture { result: self, recheck: Recheck::new() }
    }
}

/// The future a [`MapResult`] turns into (`.await` on it): resolves to what
/// [`get`](MapResult::get) returns.
#[must_use = "futures do nothing unless polled"]
pub struct MapFuture<R> {
    result: MapResult<R>,
    recheck: Recheck,
}

impl<R> std::fmt::Debug for MapFuture<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapFuture").field("recheck", &self.recheck).finish_non_exhaustive()
    }
}

impl<R: Message> Future for MapFuture<R> {
    type Output = Result<Vec<R>, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.result.ready() {
            return Poll::Ready(this.result.get());
        }
        this.recheck.later(cx.waker());
        Poll::Pending
    }
}

impl<R: Message> IntoFuture for MapResult<R> {
    type Output = Result<Vec<R>, TaskError>;
    type IntoFuture = MapFuture<R>;

    /// ```
    /// fn inc(x: u8) -> u8 {
    ///     x + 1
    /// }
    /// let pool = shmproc::Pool::new(1)?;
    /// let r = pool.map_async(inc, [1, 2])?;
    /// assert_eq!(shmproc::async_wait::block_on(async { r.await })?, [2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn into_future(self) -> MapFuture<R> {
        MapFuture { result: self, recheck: Recheck::new() }
    }
}
