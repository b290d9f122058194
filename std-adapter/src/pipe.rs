//! `Pipe`: point-to-point connections between two processes (Python's
//! `Pipe()`), on the crate's single-producer single-consumer byte ring.
//!
//! * [`Pipe::duplex`] gives two [`Connection`]s; each can send to and receive
//!   from the other.
//! * [`Pipe::oneway`] gives a [`PipeSender`] and a [`PipeReceiver`]
//!   (Python's `Pipe(duplex=False)`).
//!
//! Typed messages travel with rkyv (`send` / `recv`, validated on receipt);
//! raw bytes with `send_bytes` / `recv_bytes` / `recv_bytes_into`.
//!
//! As with Python's `Connection`, each end is meant for **one process at a
//! time**: two processes sending (or receiving) on the same end at once break
//! the single-producer protocol. That cannot corrupt memory (every frame is
//! bounds-checked, every message validated) but garbles messages, which are
//! then reported as `Corrupt`.
//!
//! A receiver gets `Disconnected` once the pipe is empty and no live process
//! holds the other end's sending side (dropped, closed, or dead), and a sender
//! blocked on a full pipe gets it when the receiving side is gone. A sender
//! that dies mid-message leaves nothing visible: frames are published whole.
//!
//! ```
//! let (a, b) = shmproc::Pipe::<String>::duplex()?;
//! let mut child = shmproc::Process::spawn(move || {
//!     let msg = b.recv().unwrap();
//!     b.send(&format!("{msg} pong")).unwrap();
//! })?;
//! a.send(&"ping".to_string())?;
//! assert_eq!(a.recv()?, "ping pong");
//! child.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::{Cell, RefCell};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shmproc_core::participants::{Presence, Role};
use shmproc_core::peer_bytes::PeerBytes;
use shmproc_core::region::{kind, RegionObject};
use shmproc_core::spsc::{Consumer, Producer, RingError, SpscRing};
use shmproc_core::Deadline;

use crate::blocking::{receiver_pace, wait, wait_paced, Pacer, WaitPolicy, Waited};

mod async_ops;
use crate::blocks::{Bin, Blocks};
use crate::bulk::{BlockMut, Descriptor, Window, DESCRIPTOR_LEN, KIND_BLOCK, KIND_INLINE};
use crate::channel_error::Failure;
use crate::error::Error;
use crate::message::{encode_into, plain_size, Message, Written};
use crate::object::Object;
use crate::queue::{measure, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError};
use crate::roles::{self, PresencePace};
use crate::segment::Segment;
pub use async_ops::{PipeReadable, PipeRecvFuture, PipeSendFuture};

/// Ring bytes per direction unless set with [`Pipe::duplex_with_capacity`].
///
/// ```
/// let (tx, _rx) = shmproc::Pipe::<Vec<u8>>::oneway()?;
/// // Messages up to half the ring travel in it; larger ones out of line.
/// assert!(tx.inline_limit() <= shmproc::pipe::DEFAULT_PIPE_CAPACITY / 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const DEFAULT_PIPE_CAPACITY: usize = 1 << 20;

/// `recv_bytes_into` was given a buffer shorter than the message (Python's
/// `BufferTooShort`), or `recv_bytes_max` a limit below its length. The
/// message stays in the pipe.
///
/// ```
/// use shmproc::{Pipe, RecvBytesIntoError};
/// let (tx, rx) = Pipe::<u8>::oneway()?;
/// tx.send_bytes(b"hello")?;
/// let mut small = [0u8; 2];
/// assert!(matches!(rx.recv_bytes_into(&mut small), Err(RecvBytesIntoError::TooShort { needed: 5 })));
/// let mut big = [0u8; 16];
/// assert_eq!(rx.recv_bytes_into(&mut big)?, 5); // it stayed in the pipe
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecvBytesIntoError {
    /// The buffer is too short; the message is this long.
    TooShort {
        /// The message length.
        needed: usize,
    },
    /// The receive failed.
    Recv(RecvError),
}

impl fmt::Display for RecvBytesIntoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvBytesIntoError::TooShort { needed } => write!(f, "buffer too short for a {needed}-byte message"),
            RecvBytesIntoError::Recv(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for RecvBytesIntoError {}

/// The shared state in front of a pipe direction's ring.
#[repr(C, align(128))]
struct PipeHead {
    /// The bump counter of out-of-line blocks (see `bulk.rs`).
    bulk_next: AtomicU64,
    /// Blocks kept for reuse (see `blocks.rs`).
    bin: Bin,
}

// SAFETY: atomics only, valid for any bits; alignment 128.
unsafe impl RegionObject for PipeHead {
    const KIND: u32 = kind::SPSC_RING;
}

const RING_OFFSET: usize = std::mem::size_of::<PipeHead>();

/// One direction: a ring in its own object.
#[derive(Clone)]
struct Channel {
    /// Keeps the mapping (and so `ring`) alive.
    _obj: Object,
    ring: SpscRing,
    blocks: Option<std::sync::Arc<Blocks>>,
}

impl Channel {
    fn create(seg: &Segment, capacity: usize) -> Result<Channel, Error> {
        let cap = capacity.max(64).next_power_of_two();
        let size = RING_OFFSET + SpscRing::required_size(cap);
        let mut failed = false;
        let obj = Object::create_sized::<PipeHead>(Some(seg), "", size, |head, p| {
            head.bulk_next.store(0, Ordering::Relaxed);
            head.bin.init();
            // SAFETY: p is OBJECT_ALIGN-aligned with `size` bytes: the head at
            // 0, the ring at RING_OFFSET (a multiple of 128) with the rest;
            // not yet shared.
            unsafe {
                let ring = std::ptr::NonNull::new_unchecked(p.as_ptr().add(RING_OFFSET));
                failed = SpscRing::init(ring, size - RING_OFFSET, cap).is_err();
            }
        })?;
        if failed {
            return Err(Error::Layout("pipe ring initialisation failed"));
        }
        Channel::from_object(obj)
    }

    fn from_object(obj: Object) -> Result<Channel, Error> {
        if obj.size() < RING_OFFSET {
            return Err(Error::Layout("pipe object too small"));
        }
        // SAFETY: the object's bytes from RING_OFFSET to its end are inside
        // the mapping kept alive by `obj`; attach validates the ring's
        // contents.
        let ring = unsafe { SpscRing::attach(obj.at(RING_OFFSET), obj.size() - RING_OFFSET) }
            .map_err(|_| Error::Layout("corrupt pipe ring"))?;
        let head = obj.head::<PipeHead>();
        let blocks = Window::of(&obj).map(|w| {
            std::sync::Arc::new(Blocks::new(
                w,
                std::ptr::NonNull::from(&head.bulk_next),
                std::ptr::NonNull::from(&head.bin),
            ))
        });
        Ok(Channel { _obj: obj, ring, blocks })
    }

    /// The blocks of large messages (`None` only for an object index too
    /// large to have a window).
    fn blocks(&self, size: usize) -> Result<&Blocks, Failure> {
        self.blocks.as_deref().ok_or(Failure::TooLarge { size, limit: self.ring.max_frame() / 2 })
    }

    fn presence(&self, role: Role) -> Presence {
        roles::presence(&self.ring.header().participants, role, self._obj.segment().liveness())
    }
}

/// The sending side of one direction.
struct TxEnd {
    ch: Channel,
    producer: RefCell<Producer>,
    /// Bytes to reserve for serialising the next message in place: the last
    /// message's size (at least the archived root's).
    size_hint: Cell<usize>,
    /// How this end waits for room.
    pacer: Pacer,
}

impl TxEnd {
    fn new(ch: Channel) -> TxEnd {
        roles::attach(&ch.ring.header().participants, Role::Sender, ch._obj.segment().liveness());
        // SAFETY: this is the ring's only producer in this process: ends are
        // made in pairs on a new segment, are not `Clone`, and are not `Sync`
        // (the `RefCell`). Another process holding a copy of this end must
        // not send at the same time (module docs: Python's rule); if it does,
        // the frames it garbles are bounds-checked and validated on receipt.
        let producer = RefCell::new(unsafe { ch.ring.producer() });
        TxEnd { ch, producer, size_hint: Cell::new(0), pacer: Pacer::default() }
    }

    /// Messages up to this size go in the ring itself (waiting for room as
    /// a pipe does); larger ones out of line (see `bulk.rs`).
    fn inline_max(&self) -> usize {
        self.ch.ring.max_frame() / 2
    }

    /// Publishes one frame of `len` bytes and `kind` that `write` fills,
    /// waiting for room until `deadline`.
    fn push_with(
        &self,
        len: usize,
        kind: u8,
        deadline: Option<Deadline>,
        mut write: impl FnMut(&mut [u8]) -> Result<usize, Failure>,
    ) -> Result<(), Failure> {
        let ring = &self.ch.ring;
        let mut waited = false;
        loop {
            if ring.is_closed() {
                return Err(Failure::Disconnected);
            }
            {
                let Ok(mut p) = self.producer.try_borrow_mut() else { return Err(Failure::Reentered) };
                match p.reserve(len) {
                    // Not published unless committed.
                    Ok(r) => {
                        let n = write(p.buffer(&r))?;
                        p.commit_kind(r, n, kind);
                        if !waited {
                            self.pacer.stand_down(&ring.header().not_full);
                        }
                        return Ok(());
                    }
                    Err(RingError::Full) => {}
                    Err(RingError::TooLarge) => return Err(Failure::TooLarge { size: len, limit: ring.max_frame() }),
                    Err(RingError::Corrupt(r) | RingError::Layout(r)) => return Err(Failure::corrupt(r)),
                }
            }
            waited = true;
            match wait(
                &self.pacer,
                deadline,
                &ring.header().not_full,
                || ring.fits(len),
                || ring.is_closed(),
                || self.ch.presence(Role::Receiver) == Presence::Absent,
                |_| (0, false),
            ) {
                Waited::Ready => {}
                Waited::Timeout => return Err(Failure::Timeout),
                Waited::Disconnected => return Err(Failure::Disconnected),
            }
        }
    }

    /// Publishes a block's descriptor; frees the block if that fails.
    fn push_block(&self, blocks: &Blocks, block: BlockMut, deadline: Option<Deadline>) -> Result<(), Failure> {
        let desc = block.descriptor().encode();
        let r = self.push_with(DESCRIPTOR_LEN, KIND_BLOCK, deadline, |buf| {
            buf[..DESCRIPTOR_LEN].copy_from_slice(&desc);
            Ok(DESCRIPTOR_LEN)
        });
        match r {
            Ok(()) => block.published(),
            Err(_) => blocks.discard(block),
        }
        r
    }

    fn send_bytes_deadline(&self, bytes: &[u8], deadline: Option<Deadline>) -> Result<(), Failure> {
        if bytes.len() <= self.inline_max() {
            self.push_with(bytes.len(), KIND_INLINE, deadline, |buf| {
                buf[..bytes.len()].copy_from_slice(bytes);
                Ok(bytes.len())
            })
        } else {
            let blocks = self.ch.blocks(bytes.len())?;
            self.push_block(blocks, blocks.copy(bytes)?, deadline)
        }
    }

    fn send<T: Message>(&self, v: &T, deadline: Option<Deadline>) -> Result<(), Failure> {
        // Fast path: serialise straight into a frame reserved for the size of
        // the previous message. Anything else (no room, a bigger message, a
        // closed ring) takes the general path below.
        let hint = self.size_hint.get().max(std::mem::size_of::<T::Archived>()).max(8);
        let mut needs = None;
        {
            let Ok(mut p) = self.producer.try_borrow_mut() else { return Err(Failure::Reentered) };
            if hint <= self.inline_max() && !self.ch.ring.is_closed() {
                if let Ok(r) = p.reserve(hint) {
                    match encode_into(v, p.buffer(&r)).map_err(|e| Failure::Serialize(e.to_string()))? {
                        Written::Done(n) => {
                            p.commit(r, n);
                            self.pacer.stand_down(&self.ch.ring.header().not_full);
                            return Ok(());
                        }
                        // Never published: the reservation is simply dropped.
                        Written::Needs(n) => needs = Some(n),
                    }
                }
            }
        }
        let n = match needs {
            Some(n) => n,
            None => measure(v)?,
        };
        self.size_hint.set(n);
        if n <= self.inline_max() {
            // In place, in a frame of the exact size, waiting for room.
            self.push_with(n, KIND_INLINE, deadline, |buf| match encode_into(v, buf) {
                Ok(Written::Done(m)) if m == n => Ok(m),
                Ok(_) => Err(Failure::Serialize("the value serialised to a different size the second time".into())),
                Err(e) => Err(Failure::Serialize(e.to_string())),
            })
        } else {
            let blocks = self.ch.blocks(n)?;
            self.push_block(blocks, blocks.write(v, n)?, deadline)
        }
    }
}

impl TxEnd {
    /// Sends `values` in order, in runs written in place one after another
    /// and published once; a message too large for the run's frame is sent
    /// alone. Returns how many were sent before an error stopped it.
    fn send_batch<T: Message>(&self, values: &[T], deadline: Option<Deadline>) -> (usize, Result<(), Failure>) {
        let mut sent = 0;
        while sent < values.len() {
            let rest = &values[sent..];
            let run = {
                let Ok(mut p) = self.producer.try_borrow_mut() else { return (sent, Err(Failure::Reentered)) };
                if self.ch.ring.is_closed() {
                    return (sent, Err(Failure::Disconnected));
                }
                let mut size = self.size_hint.get().max(std::mem::size_of::<T::Archived>()).max(8);
                let mut batch = match p.batch() {
                    Ok(b) => b,
                    Err(e) => return (sent, Err(Failure::corrupt(e.reason()))),
                };
                let mut failed = None;
                let exact = plain_size::<T>().filter(|&e| e <= self.inline_max());
                while batch.frames() < rest.len() && size <= self.inline_max() {
                    if let Some(exact) = exact {
                        // A fixed-size type: frames of its size in runs (see
                        // `Batch::write_run`), the rest one at a time below.
                        let base = batch.frames();
                        let run = batch.write_run(exact, KIND_INLINE, rest.len() - base, 0, |j, buf| {
                            encode_into(&rest[base + j], buf).map(|w| w == Written::Done(exact))
                        });
                        if let Err(e) = run {
                            failed = Some(Failure::Serialize(e.to_string()));
                            break;
                        }
                        if batch.frames() == rest.len() {
                            break;
                        }
                    }
                    let Ok(r) = batch.reserve(size) else { break };
                    // Not published unless committed.
                    match encode_into(&rest[batch.frames()], batch.buffer(&r)) {
                        Ok(Written::Done(n)) => batch.commit(r, n, KIND_INLINE),
                        Ok(Written::Needs(n)) if n > size => size = n,
                        Ok(Written::Needs(_)) => break,
                        Err(e) => {
                            failed = Some(Failure::Serialize(e.to_string()));
                            break;
                        }
                    }
                }
                (batch.finish(), failed)
            };
            match run {
                (0, None) => match self.send(&rest[0], deadline) {
                    Ok(()) => sent += 1,
                    Err(e) => return (sent, Err(e)),
                },
                (n, failed) => {
                    if sent == 0 {
                        self.pacer.stand_down(&self.ch.ring.header().not_full);
                    }
                    sent += n;
                    if let Some(e) = failed {
                        return (sent, Err(e));
                    }
                }
            }
        }
        (sent, Ok(()))
    }
}

impl Drop for TxEnd {
    fn drop(&mut self) {
        self.pacer.stand_down(&self.ch.ring.header().not_full);
        roles::detach(&self.ch.ring.header().participants, Role::Sender);
        self.ch.ring.header().not_empty.wake_all();
    }
}

/// The receiving side of one direction.
struct RxEnd {
    ch: Channel,
    consumer: RefCell<Consumer>,
    /// How this end waits for messages.
    pacer: Pacer,
    /// Paces the look-ups of live senders by `try_recv`s that find nothing
    /// (a `try_recv` loop would read `/proc` on every call).
    presence_pace: PresencePace,
}

impl RxEnd {
    fn new(ch: Channel) -> RxEnd {
        roles::attach(&ch.ring.header().participants, Role::Receiver, ch._obj.segment().liveness());
        // SAFETY: the ring's only consumer in this process, as for the
        // producer in `TxEnd::new`; received bytes are copied out through
        // `PeerBytes` before validation, so a second process receiving on a
        // copy of this end garbles messages, never this process's memory.
        let consumer = RefCell::new(unsafe { ch.ring.consumer() });
        RxEnd { ch, consumer, pacer: Pacer::default(), presence_pace: PresencePace::new() }
    }

    fn has_frame(&self) -> bool {
        self.ch.ring.has_frame()
    }

    /// Waits for a frame and runs `f` on its kind and payload (to be copied
    /// out: the sender could write it meanwhile if it broke the protocol);
    /// `f` returns whether to consume it.
    fn with_frame<R>(
        &self,
        deadline: Option<Deadline>,
        mut f: impl FnMut(u8, PeerBytes<'_>) -> (R, bool),
    ) -> Result<R, Failure> {
        let ring = &self.ch.ring;
        let mut waited = false;
        loop {
            {
                let mut c = self.consumer.borrow_mut();
                match c.peek() {
                    Ok(Some(frame)) => {
                        let (r, consume) = f(frame.kind(), ring.peer_payload(&frame));
                        if consume {
                            c.release(frame);
                        }
                        if !waited {
                            self.pacer.stand_down(&ring.header().not_empty);
                        }
                        return Ok(r);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(Failure::corrupt(e.reason())),
                }
            }
            waited = true;
            self.wait_for_frame(deadline)?;
        }
    }

    /// Waits until a frame may be there (`Ok`), the deadline passes, or
    /// the pipe is drained and closed or without senders.
    fn wait_for_frame(&self, deadline: Option<Deadline>) -> Result<(), Failure> {
        let ring = &self.ch.ring;
        // A `try_recv` (an expired deadline) may come in a tight loop: its
        // look-up of live senders is paced; a blocking wait's is not.
        let paced = deadline.is_some_and(|d| d.has_passed());
        let senders_gone = || {
            if paced {
                self.presence_pace.absent(&ring.header().participants, Role::Sender, self.ch._obj.segment().liveness())
            } else {
                self.ch.presence(Role::Sender) == Presence::Absent
            }
        };
        let gone = || !self.has_frame() && (ring.is_closed() || senders_gone());
        match wait_paced(
            &self.pacer,
            receiver_pace(ring),
            deadline,
            &ring.header().not_empty,
            || self.has_frame(),
            || ring.is_closed(),
            gone,
            |_| (0, false),
        ) {
            Waited::Ready => Ok(()),
            Waited::Timeout => Err(Failure::Timeout),
            Waited::Disconnected if self.has_frame() => Ok(()),
            Waited::Disconnected => Err(Failure::Disconnected),
        }
    }

    /// Waits for a message, then appends it and up to `max - 1` more
    /// waiting now to `out`, handing their space back with one release. A
    /// run stops before a message sent out of line, which is received alone.
    fn recv_batch<T: Message>(
        &self,
        out: &mut Vec<T>,
        max: usize,
        deadline: Option<Deadline>,
    ) -> Result<usize, Failure> {
        let ring = &self.ch.ring;
        let mut waited = false;
        loop {
            {
                let mut c = self.consumer.borrow_mut();
                match c.peek() {
                    Ok(Some(first)) if first.kind() == KIND_INLINE => {
                        let (mut frame, mut n, mut failed) = (first, 0, None);
                        loop {
                            // Copied out before validation, as in `recv`.
                            match crate::message::decode_peer::<T>(ring.peer_payload(&frame)) {
                                Ok(v) => out.push(v),
                                Err(e) => failed = Some(Failure::Corrupt(e.to_string())),
                            }
                            n += 1;
                            if n == max || failed.is_some() {
                                break;
                            }
                            match c.peek_after(&frame) {
                                Ok(Some(next)) if next.kind() == KIND_INLINE => frame = next,
                                _ => break,
                            }
                        }
                        c.release(frame);
                        if !waited {
                            self.pacer.stand_down(&ring.header().not_empty);
                        }
                        return failed.map_or(Ok(n), Err);
                    }
                    Ok(Some(_)) => {
                        drop(c);
                        out.push(self.recv::<T>(deadline)?);
                        return Ok(1);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(Failure::corrupt(e.reason())),
                }
            }
            waited = true;
            self.wait_for_frame(deadline)?;
        }
    }

    fn recv<T: Message>(&self, deadline: Option<Deadline>) -> Result<T, Failure> {
        // Copied out before validation; the frame is released after the copy
        // (an out-of-line block is punched before, or recycled after: see
        // `blocks.rs`).
        self.with_message(deadline, |b| (crate::message::decode_peer::<T>(b), true))?
            .map_err(|e| Failure::Corrupt(e.to_string()))
    }

    /// Runs `read` on the next message's bytes (in place or in its block);
    /// `read` says whether the message is consumed.
    fn with_message<R>(
        &self,
        deadline: Option<Deadline>,
        mut read: impl FnMut(PeerBytes<'_>) -> (R, bool),
    ) -> Result<R, Failure> {
        let mut recycle: Option<Descriptor> = None;
        let r = self.with_frame(deadline, |kind, b| {
            let read_one = match (kind, &self.ch.blocks) {
                (KIND_INLINE, _) => Ok((read(b), None)),
                (_, Some(blocks)) => blocks.read(kind, b, &mut read).map(|(r, consumed, d)| ((r, consumed), d)),
                (_, None) => Err(Failure::corrupt("a block in a pipe without a window")),
            };
            match read_one {
                Ok(((r, consumed), d)) => {
                    recycle = d;
                    (Ok(r), consumed)
                }
                // An unreadable message is dropped, as one that fails validation.
                Err(e) => (Err(e), true),
            }
        });
        if let (Some(d), Some(blocks)) = (recycle, &self.ch.blocks) {
            blocks.recycle(d);
        }
        r?
    }

    /// Whether a receive would not wait: a frame is there, or the pipe is
    /// closed or has no sender left (for [`crate::wait()`]).
    fn ready(&self) -> bool {
        self.has_frame() || self.ch.ring.is_closed() || self.ch.presence(Role::Sender) == Presence::Absent
    }

    /// Whether a receive would not wait, within `timeout`: a message
    /// arrives, or the pipe is closed or every sender is gone (the receive
    /// then reports `Disconnected`; Python's `poll` is true at end of file
    /// too). A zero timeout looks once, with the sender look-up paced as a
    /// `try_recv`'s.
    fn poll(&self, timeout: Duration) -> bool {
        self.has_frame() || !matches!(self.wait_for_frame(Some(Deadline::after(timeout))), Err(Failure::Timeout))
    }
}

impl Drop for RxEnd {
    fn drop(&mut self) {
        self.pacer.stand_down(&self.ch.ring.header().not_empty);
        roles::detach(&self.ch.ring.header().participants, Role::Receiver);
        self.ch.ring.header().not_full.wake_all();
    }
}

/// Constructors for pipes of `T`.
///
/// ```
/// let (a, b) = shmproc::Pipe::<String>::duplex()?;
/// a.send(&"ping".to_string())?;
/// assert_eq!(b.recv()?, "ping");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Pipe<T>(PhantomData<T>);

impl<T: Message> Pipe<T> {
    /// Two connected [`Connection`]s (Python's `Pipe()`), 1 MiB per direction.
    ///
    /// ```
    /// let (a, b) = shmproc::Pipe::<u32>::duplex()?;
    /// let mut child = shmproc::Process::spawn(move || {
    ///     let x = b.recv().unwrap();
    ///     b.send(&(x * 2)).unwrap();
    /// })?;
    /// a.send(&21)?;
    /// assert_eq!(a.recv()?, 42);
    /// child.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn duplex() -> Result<(Connection<T>, Connection<T>), Error> {
        Pipe::duplex_with_capacity(DEFAULT_PIPE_CAPACITY)
    }

    /// [`duplex`](Pipe::duplex) with `bytes` of ring per direction (rounded up
    /// to a power of two). Messages up to about half of it travel in the
    /// ring; larger ones, of any size, out of line (see [`Connection::inline_limit`]).
    ///
    /// ```
    /// let (a, b) = shmproc::Pipe::<Vec<u8>>::duplex_with_capacity(4096)?;
    /// assert!(a.inline_limit() < 2048);
    /// a.send(&vec![1u8; 100_000])?; // out of line
    /// assert_eq!(b.recv()?.len(), 100_000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn duplex_with_capacity(bytes: usize) -> Result<(Connection<T>, Connection<T>), Error> {
        let size = 2 * (SpscRing::required_size(bytes.max(64).next_power_of_two()) + 256);
        let seg = Segment::anonymous_with_directory(size, 2)?;
        let ab = Channel::create(&seg, bytes)?;
        let ba = Channel::create(&seg, bytes)?;
        Ok((Connection::new(ab.clone(), ba.clone()), Connection::new(ba, ab)))
    }

    /// A one-way pipe (Python's `Pipe(duplex=False)`): `(sender, receiver)`.
    ///
    /// ```
    /// let (tx, rx) = shmproc::Pipe::<u32>::oneway()?;
    /// let mut child = shmproc::Process::spawn(move || {
    ///     for i in 0..3 {
    ///         tx.send(&i).unwrap();
    ///     }
    /// })?;
    /// let got: Vec<u32> = (0..3).map(|_| rx.recv().unwrap()).collect();
    /// assert_eq!(got, [0, 1, 2]);
    /// child.join()?;
    /// // The child's end is gone: Python's EOFError.
    /// assert_eq!(rx.recv(), Err(shmproc::RecvError::Disconnected));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn oneway() -> Result<(PipeSender<T>, PipeReceiver<T>), Error> {
        Pipe::oneway_with_capacity(DEFAULT_PIPE_CAPACITY)
    }

    /// [`oneway`](Pipe::oneway) with `bytes` of ring.
    ///
    /// ```
    /// let (tx, rx) = shmproc::Pipe::<u64>::oneway_with_capacity(64 << 10)?;
    /// tx.send(&1)?;
    /// assert_eq!(rx.recv()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn oneway_with_capacity(bytes: usize) -> Result<(PipeSender<T>, PipeReceiver<T>), Error> {
        let size = SpscRing::required_size(bytes.max(64).next_power_of_two()) + 256;
        let seg = Segment::anonymous_with_directory(size, 1)?;
        let ch = Channel::create(&seg, bytes)?;
        Ok((
            PipeSender { tx: TxEnd::new(ch.clone()), _t: PhantomData },
            PipeReceiver { rx: RxEnd::new(ch), _t: PhantomData },
        ))
    }
}

macro_rules! send_side {
    ($ty:ident, $tx:ident) => {
        impl<T: Message> $ty<T> {
            /// Sends a message, waiting for room.
            ///
            /// ```
            /// let (tx, rx) = shmproc::Pipe::<(u8, bool)>::oneway()?;
            /// tx.send(&(1, true))?;
            /// assert_eq!(rx.recv()?, (1, true));
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn send(&self, value: &T) -> Result<(), SendError> {
                self.$tx.send(value, None).map_err(SendError::from)
            }
            /// Sends every value of `values` in order, waiting for room as
            /// [`send`](Self::send) does; runs of messages are written in place
            /// and published with one store and one wake-up (the receiver sees
            /// a run whole or not at all; a sender killed while writing a run
            /// publishes none of it). On an error, the messages before the
            /// failing one were sent. A fixed-size type's messages go in
            /// runs of equal frames (see the [`queue`](crate::queue) module
            /// docs, "Batches").
            ///
            /// ```
            /// let (tx, rx) = shmproc::Pipe::<u64>::oneway()?;
            /// tx.send_batch(&[1, 2, 3])?;
            /// let mut got = Vec::new();
            /// rx.recv_batch(&mut got, 64)?;
            /// assert_eq!(got, [1, 2, 3]);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn send_batch(&self, values: &[T]) -> Result<(), SendError> {
                self.$tx.send_batch(values, None).1.map_err(SendError::from)
            }
            /// Sends a message, waiting at most `timeout` for room.
            ///
            /// ```
            /// let (tx, _rx) = shmproc::Pipe::<Vec<u8>>::oneway_with_capacity(256)?;
            /// let msg = vec![0u8; 100];
            /// tx.send_timeout(&msg, std::time::Duration::from_millis(10))?;
            /// // No room for a second one until the receiver reads.
            /// assert!(tx.send_timeout(&msg, std::time::Duration::from_millis(10)).is_err());
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn send_timeout(&self, value: &T, timeout: Duration) -> Result<(), SendTimeoutError> {
                self.$tx.send(value, Some(Deadline::after(timeout))).map_err(SendTimeoutError::from)
            }
            /// Sends without blocking the executor (`.await` it), waiting
            /// for room as [`send`](Self::send) does; dropping the future
            /// unresolved sends nothing. See [`PipeSendFuture`].
            ///
            /// ```
            /// let (tx, rx) = shmproc::Pipe::<u32>::oneway()?;
            /// shmproc::async_wait::block_on(tx.send_async(&7))?;
            /// assert_eq!(rx.recv()?, 7);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn send_async<'a>(&'a self, value: &'a T) -> PipeSendFuture<'a, T> {
                PipeSendFuture::new(&self.$tx, value)
            }
            /// Sends raw bytes as one message.
            ///
            /// ```
            /// let (tx, rx) = shmproc::Pipe::<()>::oneway()?;
            /// tx.send_bytes(b"raw")?;
            /// assert_eq!(rx.recv_bytes()?, b"raw");
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn send_bytes(&self, bytes: &[u8]) -> Result<(), SendError> {
                self.$tx.send_bytes_deadline(bytes, None).map_err(SendError::from)
            }
            /// The largest message, in bytes, that travels in the ring itself
            /// (serialised in place, waiting for room as a pipe does). A
            /// larger message, of any size, travels out of line: in a block of
            /// shared memory of its own whose descriptor the ring carries (see
            /// the [`queue`](crate::queue) module docs), so a sender never
            /// waits for the receiver to make room for it.
            ///
            /// ```
            /// let (tx, rx) = shmproc::Pipe::<Vec<u8>>::oneway_with_capacity(1024)?;
            /// assert!(tx.inline_limit() < 1024);
            /// tx.send(&vec![7u8; 16 << 20])?; // 16 MiB through a 1 KiB ring
            /// assert_eq!(rx.recv()?.len(), 16 << 20);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            #[must_use]
            pub fn inline_limit(&self) -> usize {
                self.$tx.inline_max()
            }
        }
    };
}

macro_rules! recv_side {
    ($ty:ident, $rx:ident) => {
        impl<T: Message> $ty<T> {
            /// Receives a message, waiting as long as it takes.
            ///
            /// ```
            /// let (tx, rx) = shmproc::Pipe::<String>::oneway()?;
            /// tx.send(&"x".to_string())?;
            /// assert_eq!(rx.recv()?, "x");
            /// drop(tx);
            /// assert!(rx.recv().is_err()); // EOF: every sender is gone
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn recv(&self) -> Result<T, RecvError> {
                self.$rx.recv(None).map_err(RecvError::from)
            }
            /// Receives without blocking a thread: resolves to the next
            /// message, or to the errors of [`recv`](Self::recv). Dropping
            /// the future unresolved takes nothing. See [`PipeRecvFuture`]
            /// (not `Send`) and [`async_wait`](crate::async_wait).
            ///
            /// ```
            /// let (tx, rx) = shmproc::Pipe::<u32>::oneway()?;
            /// let mut child = shmproc::Process::spawn(move || tx.send(&9).unwrap())?;
            /// assert_eq!(shmproc::async_wait::block_on(rx.recv_async())?, 9);
            /// // The sender is gone with the child: end of file.
            /// child.join()?;
            /// assert!(shmproc::async_wait::block_on(rx.recv_async()).is_err());
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn recv_async(&self) -> PipeRecvFuture<'_, T> {
                PipeRecvFuture::new(&self.$rx)
            }
            /// Waits for a message, then appends it and up to `max - 1` more
            /// waiting now to `out`, handing their space back with one
            /// release. Returns how many were appended (`0` only for
            /// `max == 0`); on an error, those taken before it are in `out`.
            ///
            /// ```
            /// let (tx, rx) = shmproc::Pipe::<u8>::oneway()?;
            /// tx.send_batch(&[1, 2, 3])?;
            /// let mut got = Vec::new();
            /// assert_eq!(rx.recv_batch(&mut got, 2)?, 2);
            /// assert_eq!(rx.recv_batch(&mut got, 2)?, 1);
            /// assert_eq!(got, [1, 2, 3]);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn recv_batch(&self, out: &mut Vec<T>, max: usize) -> Result<usize, RecvError> {
                if max == 0 {
                    return Ok(0);
                }
                self.$rx.recv_batch(out, max, None).map_err(RecvError::from)
            }
            /// [`recv_batch`](Self::recv_batch) without waiting: `Empty`
            /// when no message is waiting.
            ///
            /// ```
            /// let (tx, rx) = shmproc::Pipe::<u8>::oneway()?;
            /// let mut got = Vec::new();
            /// assert_eq!(rx.try_recv_batch(&mut got, 8), Err(shmproc::TryRecvError::Empty));
            /// tx.send(&1)?;
            /// assert_eq!(rx.try_recv_batch(&mut got, 8)?, 1);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn try_recv_batch(&self, out: &mut Vec<T>, max: usize) -> Result<usize, TryRecvError> {
                if max == 0 {
                    return Ok(0);
                }
                self.$rx.recv_batch(out, max, Some(Deadline::EXPIRED)).map_err(TryRecvError::from)
            }
            /// The messages waiting now, one at a time, without blocking;
            /// ends when the pipe is empty (or on an error).
            ///
            /// ```
            /// let (tx, rx) = shmproc::Pipe::<u8>::oneway()?;
            /// tx.send_batch(&[4, 5])?;
            /// assert_eq!(rx.try_iter().collect::<Vec<_>>(), [4, 5]);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn try_iter(&self) -> impl Iterator<Item = T> + '_ {
                std::iter::from_fn(move || self.try_recv().ok())
            }
            /// Receives a message if one is waiting.
            ///
            /// An empty pipe gives [`TryRecvError::Empty`], or
            /// [`TryRecvError::Disconnected`] once it is closed or its
            /// sender is gone. Whether the sender is gone is looked up at
            /// most every 5 ms per end (a look reads `/proc`), so a
            /// `try_recv` loop sees the sender's exit within 5 ms, not
            /// necessarily on the next call (a busy-polling loop used to
            /// pay that look on every empty call: ~25 µs).
            ///
            /// ```
            /// let (tx, rx) = shmproc::Pipe::<u8>::oneway()?;
            /// assert_eq!(rx.try_recv(), Err(shmproc::TryRecvError::Empty));
            /// tx.send(&5)?;
            /// assert_eq!(rx.try_recv()?, 5);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn try_recv(&self) -> Result<T, TryRecvError> {
                self.$rx.recv(Some(Deadline::EXPIRED)).map_err(TryRecvError::from)
            }
            /// Receives a message, waiting at most `timeout`.
            ///
            /// ```
            /// let (_tx, rx) = shmproc::Pipe::<u8>::oneway()?;
            /// let r = rx.recv_timeout(std::time::Duration::from_millis(10));
            /// assert_eq!(r, Err(shmproc::RecvTimeoutError::Timeout));
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
                self.$rx.recv(Some(Deadline::after(timeout))).map_err(RecvTimeoutError::from)
            }
            /// Receives one message as raw bytes.
            ///
            /// ```
            /// let (tx, rx) = shmproc::Pipe::<u8>::oneway()?;
            /// tx.send_bytes(&[1, 2, 3])?;
            /// assert_eq!(rx.recv_bytes()?, vec![1, 2, 3]);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn recv_bytes(&self) -> Result<Vec<u8>, RecvError> {
                self.$rx
                    .with_message(None, |b| {
                        let mut v = vec![0; b.len()];
                        b.copy_to(&mut v);
                        (v, true)
                    })
                    .map_err(RecvError::from)
            }
            /// Receives one message of at most `maxlength` bytes (Python's
            /// `recv_bytes(maxlength)`). A longer message is an error that
            /// names its length, [`RecvBytesIntoError::TooShort`], and, unlike
            /// Python (which raises `OSError` and leaves the connection
            /// unreadable), stays in the pipe: receive it with a larger limit
            /// or with [`recv_bytes`](Self::recv_bytes).
            ///
            /// ```
            /// use shmproc::RecvBytesIntoError;
            /// let (tx, rx) = shmproc::Pipe::<u8>::oneway()?;
            /// tx.send_bytes(b"hello")?;
            /// assert!(matches!(rx.recv_bytes_max(4), Err(RecvBytesIntoError::TooShort { needed: 5 })));
            /// assert_eq!(rx.recv_bytes_max(5)?, b"hello"); // it stayed in the pipe
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn recv_bytes_max(&self, maxlength: usize) -> Result<Vec<u8>, RecvBytesIntoError> {
                let r = self.$rx.with_message(None, |b| {
                    if b.len() > maxlength {
                        (Err(b.len()), false)
                    } else {
                        let mut v = vec![0; b.len()];
                        b.copy_to(&mut v);
                        (Ok(v), true)
                    }
                });
                match r {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(needed)) => Err(RecvBytesIntoError::TooShort { needed }),
                    Err(e) => Err(RecvBytesIntoError::Recv(e.into())),
                }
            }
            /// Receives one message into `buf`; returns its length. A message
            /// longer than `buf` stays in the pipe.
            ///
            /// ```
            /// let (tx, rx) = shmproc::Pipe::<u8>::oneway()?;
            /// tx.send_bytes(b"abc")?;
            /// let mut buf = [0u8; 8];
            /// let n = rx.recv_bytes_into(&mut buf)?;
            /// assert_eq!(&buf[..n], b"abc");
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize, RecvBytesIntoError> {
                let r = self.$rx.with_message(None, |b| {
                    if b.len() > buf.len() {
                        (Err(b.len()), false)
                    } else {
                        b.copy_to(&mut buf[..b.len()]);
                        (Ok(b.len()), true)
                    }
                });
                match r {
                    Ok(Ok(n)) => Ok(n),
                    Ok(Err(needed)) => Err(RecvBytesIntoError::TooShort { needed }),
                    Err(e) => Err(RecvBytesIntoError::Recv(e.into())),
                }
            }
            /// Whether a receive would not wait, within `timeout`
            /// (`Duration::ZERO`: now): a message is waiting, or the other
            /// end is gone (closed, or every sender dropped or dead; the
            /// receive then reports `Disconnected`), as Python's `poll`,
            /// which is true at end of file. With a zero timeout a dead
            /// sender is seen within 5 ms, as by `try_recv`.
            ///
            /// ```
            /// let (tx, rx) = shmproc::Pipe::<u8>::oneway()?;
            /// assert!(!rx.poll(std::time::Duration::ZERO));
            /// tx.send(&1)?;
            /// assert!(rx.poll(std::time::Duration::from_millis(10)));
            /// assert_eq!(rx.recv()?, 1);
            /// drop(tx);
            /// // End of file: ready at once, and the receive says so.
            /// assert!(rx.poll(std::time::Duration::from_secs(60)));
            /// assert!(rx.recv().is_err());
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            #[must_use]
            pub fn poll(&self, timeout: Duration) -> bool {
                self.$rx.poll(timeout)
            }
            /// [`poll`](Self::poll) without a timeout, as a future: resolves
            /// once a receive would not wait (a message is there, or the
            /// other end is gone). Takes nothing; see [`PipeReadable`].
            ///
            /// ```
            /// let (tx, rx) = shmproc::Pipe::<u8>::oneway()?;
            /// tx.send(&1)?;
            /// shmproc::async_wait::block_on(rx.readable_async());
            /// assert_eq!(rx.recv()?, 1); // still there
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn readable_async(&self) -> PipeReadable<'_> {
                PipeReadable::new(&self.$rx)
            }
        }
    };
}

/// One end of a duplex pipe: sends to and receives from the other end.
/// `Send`, not `Sync`: one thread (of one process) at a time.
///
/// ```
/// let (a, b): (shmproc::Connection<u8>, shmproc::Connection<u8>) = shmproc::Pipe::duplex()?;
/// b.send(&2)?;
/// assert_eq!(a.recv()?, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Connection<T> {
    tx: TxEnd,
    rx: RxEnd,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Connection<T> {
    /// Sets how this end's blocked sends and receives wait (see
    /// [`WaitPolicy`]; this process only).
    ///
    /// ```
    /// let (a, _b) = shmproc::Pipe::<u8>::duplex()?;
    /// a.set_wait_policy(shmproc::WaitPolicy::Sleep);
    /// assert_eq!(a.wait_policy(), shmproc::WaitPolicy::Sleep);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_wait_policy(&self, policy: WaitPolicy) {
        self.tx.pacer.set(policy);
        self.rx.pacer.set(policy);
    }

    /// How this end's blocked sends and receives wait
    /// ([`WaitPolicy::Adaptive`] unless set).
    #[must_use]
    pub fn wait_policy(&self) -> WaitPolicy {
        self.rx.pacer.get()
    }

    pub(crate) fn recv_ready(&self) -> bool {
        self.rx.ready()
    }

    fn new(tx: Channel, rx: Channel) -> Connection<T> {
        Connection { tx: TxEnd::new(tx), rx: RxEnd::new(rx), _t: PhantomData }
    }

    /// Closes this end (Python's `close()`): the other end's receives drain
    /// and then report `Disconnected`.
    ///
    /// ```
    /// let (a, b) = shmproc::Pipe::<u8>::duplex()?;
    /// a.close();
    /// assert!(b.recv().is_err()); // the other end sees EOF
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(self) {}
}

send_side!(Connection, tx);
recv_side!(Connection, rx);

impl<T> fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Connection")
    }
}

/// The sending end of a one-way pipe.
///
/// ```
/// let (tx, rx): (shmproc::PipeSender<u8>, shmproc::PipeReceiver<u8>) = shmproc::Pipe::oneway()?;
/// tx.send(&1)?;
/// assert_eq!(rx.recv()?, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PipeSender<T> {
    tx: TxEnd,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> PipeSender<T> {
    /// Sets how this end waits for room (see [`WaitPolicy`]; this process
    /// only).
    ///
    /// ```
    /// let (tx, _rx) = shmproc::Pipe::<u8>::oneway()?;
    /// tx.set_wait_policy(shmproc::WaitPolicy::Sleep);
    /// assert_eq!(tx.wait_policy(), shmproc::WaitPolicy::Sleep);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_wait_policy(&self, policy: WaitPolicy) {
        self.tx.pacer.set(policy);
    }

    /// How this end waits for room ([`WaitPolicy::Adaptive`] unless set).
    #[must_use]
    pub fn wait_policy(&self) -> WaitPolicy {
        self.tx.pacer.get()
    }

    /// Closes this end.
    ///
    /// ```
    /// let (tx, rx) = shmproc::Pipe::<u8>::oneway()?;
    /// tx.send(&1)?;
    /// tx.close();
    /// assert_eq!(rx.recv()?, 1);
    /// assert!(rx.recv().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(self) {}
}

send_side!(PipeSender, tx);

impl<T> fmt::Debug for PipeSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PipeSender")
    }
}

/// The receiving end of a one-way pipe.
///
/// ```
/// let (tx, rx) = shmproc::Pipe::<u8>::oneway()?;
/// let mut child = shmproc::Process::spawn(move || tx.send(&3).unwrap())?;
/// assert_eq!(rx.recv()?, 3);
/// child.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PipeReceiver<T> {
    rx: RxEnd,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> PipeReceiver<T> {
    /// Sets how this end waits for messages (see [`WaitPolicy`]; this
    /// process only).
    ///
    /// ```
    /// use std::time::Duration;
    /// let (_tx, rx) = shmproc::Pipe::<u8>::oneway()?;
    /// rx.set_wait_policy(shmproc::WaitPolicy::Spin(Duration::from_micros(50)));
    /// assert_eq!(rx.wait_policy(), shmproc::WaitPolicy::Spin(Duration::from_micros(50)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_wait_policy(&self, policy: WaitPolicy) {
        self.rx.pacer.set(policy);
    }

    /// How this end waits for messages ([`WaitPolicy::Adaptive`] unless
    /// set).
    #[must_use]
    pub fn wait_policy(&self) -> WaitPolicy {
        self.rx.pacer.get()
    }

    pub(crate) fn recv_ready(&self) -> bool {
        self.rx.ready()
    }

    /// Closes this end.
    ///
    /// ```
    /// let (tx, rx) = shmproc::Pipe::<u8>::oneway_with_capacity(64)?;
    /// rx.close();
    /// // A sender waiting for room learns that nobody will read.
    /// let mut r = Ok(());
    /// for i in 0..100 {
    ///     r = tx.send_timeout(&i, std::time::Duration::from_secs(5));
    ///     if r.is_err() {
    ///         break;
    ///     }
    /// }
    /// assert_eq!(r, Err(shmproc::SendTimeoutError::Disconnected));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(self) {}
}

recv_side!(PipeReceiver, rx);

impl<T> fmt::Debug for PipeReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PipeReceiver")
    }
}

/// The state of pipe ring object `index` in `seg`, for [`crate::inspect`].
pub(crate) fn describe(seg: &Segment, index: u32) -> crate::inspect::ObjectState {
    use crate::inspect::ObjectState;
    match Object::from_index_as::<PipeHead>(seg.clone(), index)
        .and_then(|o| o.at_least(RING_OFFSET + SpscRing::required_size(0)))
        .and_then(Channel::from_object)
    {
        Ok(ch) => match ch.ring.used() {
            Ok(used) => ObjectState::PipeRing { used, capacity: ch.ring.capacity() },
            Err(e) => ObjectState::Corrupt(format!("{e:?}")),
        },
        Err(e) => ObjectState::Corrupt(e.to_string()),
    }
}
