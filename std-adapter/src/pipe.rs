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
use std::time::Duration;

use rkyv::util::AlignedVec;

thread_local! {
    static SCRATCH: std::cell::RefCell<AlignedVec> = std::cell::RefCell::new(AlignedVec::new());
}
use shmproc_core::participants::{Presence, Role};
use shmproc_core::region::kind;
use shmproc_core::spsc::{Consumer, Producer, RingError, SpscRing};
use shmproc_core::Deadline;

use crate::blocking::{receiver_pace, wait, wait_paced, Waited};
use crate::error::Error;
use crate::message::{decode_copy, encode, encode_into, encode_reusing, EncodeError, Message};
use crate::object::Object;
use crate::queue::{RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError};
use crate::roles;
use crate::segment::Segment;

/// What a send from inside a `Serialize` impl on the same pipe end reports.
const REENTERED: &str = "pipe end re-entered from a Serialize impl";

/// Ring bytes per direction unless set with [`Pipe::duplex_with_capacity`].
///
/// ```
/// let (tx, _rx) = shmproc::Pipe::<Vec<u8>>::oneway()?;
/// assert_eq!(tx.max_message_size(), shmproc::pipe::DEFAULT_PIPE_CAPACITY - 16);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const DEFAULT_PIPE_CAPACITY: usize = 1 << 20;

/// `recv_bytes_into` was given a buffer shorter than the message (Python's
/// `BufferTooShort`). The message stays in the pipe.
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

/// One direction: a ring in its own object.
#[derive(Clone)]
struct Channel {
    /// Keeps the mapping (and so `ring`) alive.
    _obj: Object,
    ring: SpscRing,
}

impl Channel {
    fn create(seg: &Segment, capacity: usize) -> Result<Channel, Error> {
        let cap = capacity.max(64).next_power_of_two();
        let size = SpscRing::required_size(cap);
        let mut failed = false;
        let obj = Object::create(Some(seg), "", kind::SPSC_RING, size, |p| {
            // SAFETY: p is OBJECT_ALIGN-aligned with `size` bytes.
            failed = unsafe { SpscRing::init(p, size, cap) }.is_err();
        })?;
        if failed {
            return Err(Error::Layout("pipe ring initialisation failed"));
        }
        Channel::from_object(obj)
    }

    fn from_object(obj: Object) -> Result<Channel, Error> {
        // SAFETY: the object's bytes are inside the mapping kept alive by `obj`;
        // attach validates the ring's contents.
        let ring =
            unsafe { SpscRing::attach(obj.at(0), obj.size()) }.map_err(|_| Error::Layout("corrupt pipe ring"))?;
        Ok(Channel { _obj: obj, ring })
    }

    fn presence(&self, role: Role) -> Presence {
        roles::presence(&self.ring.header().participants, role)
    }
}

/// The sending side of one direction.
struct TxEnd {
    ch: Channel,
    producer: RefCell<Producer>,
    /// Bytes to reserve for serialising the next message in place: the last
    /// message's size (at least the archived root's).
    size_hint: Cell<usize>,
}

impl TxEnd {
    fn new(ch: Channel) -> TxEnd {
        roles::attach(&ch.ring.header().participants, Role::Sender);
        let producer = RefCell::new(ch.ring.producer());
        TxEnd { ch, producer, size_hint: Cell::new(0) }
    }

    fn send_bytes_deadline(&self, bytes: &[u8], deadline: Option<Deadline>) -> Result<(), SendTimeoutError> {
        let ring = &self.ch.ring;
        loop {
            if ring.is_closed() {
                return Err(SendTimeoutError::Disconnected);
            }
            let Ok(mut producer) = self.producer.try_borrow_mut() else {
                return Err(SendTimeoutError::Serialize { reason: REENTERED.to_owned() });
            };
            let pushed = producer.push(bytes);
            drop(producer);
            match pushed {
                Ok(()) => return Ok(()),
                Err(RingError::Full) => {}
                Err(RingError::TooLarge) => return Err(SendTimeoutError::TooLarge { limit: ring.max_frame() }),
                Err(RingError::Corrupt(r) | RingError::Layout(r)) => {
                    return Err(SendTimeoutError::Corrupt { reason: r })
                }
            }
            let has_room = || ring.fits(bytes.len());
            match wait(
                deadline,
                &ring.header().not_full,
                has_room,
                || ring.is_closed(),
                || self.ch.presence(Role::Receiver) == Presence::Absent,
                |_| (0, false),
            ) {
                Waited::Ready => {}
                Waited::Timeout => return Err(SendTimeoutError::Timeout),
                Waited::Disconnected => return Err(SendTimeoutError::Disconnected),
            }
        }
    }

    fn send<T: Message>(&self, v: &T, deadline: Option<Deadline>) -> Result<(), SendTimeoutError> {
        // Fast path: serialise straight into a frame reserved for the size of
        // the previous message. Anything else (no room, a bigger message, a
        // closed ring) takes the general path below.
        let hint = self.size_hint.get().max(std::mem::size_of::<T::Archived>()).max(8);
        if let Ok(mut p) = self.producer.try_borrow_mut() {
            if hint <= self.ch.ring.max_frame() && !self.ch.ring.is_closed() {
                if let Ok(r) = p.reserve(hint) {
                    match encode_into(v, p.buffer(&r)) {
                        Ok(n) => {
                            p.commit(r, n);
                            return Ok(());
                        }
                        // Never published: the reservation is simply dropped.
                        Err(EncodeError::TooLarge) => {}
                        Err(EncodeError::Other(reason)) => return Err(SendTimeoutError::Serialize { reason }),
                    }
                }
            }
        }
        // Serialise into a per-thread buffer (no allocation once warm), then
        // copy the frame in, waiting for room as needed.
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => {
                let taken = std::mem::take(&mut *buf);
                let bytes =
                    encode_reusing(v, taken).map_err(|e| SendTimeoutError::Serialize { reason: e.to_string() })?;
                self.size_hint.set(bytes.len());
                let r = self.send_bytes_deadline(&bytes, deadline);
                *buf = bytes;
                r
            }
            Err(_) => {
                let bytes = encode(v).map_err(|e| SendTimeoutError::Serialize { reason: e.to_string() })?;
                self.size_hint.set(bytes.len());
                self.send_bytes_deadline(&bytes, deadline)
            }
        })
    }
}

impl Drop for TxEnd {
    fn drop(&mut self) {
        roles::detach(&self.ch.ring.header().participants, Role::Sender);
        self.ch.ring.header().not_empty.wake_all();
    }
}

/// The receiving side of one direction.
struct RxEnd {
    ch: Channel,
    consumer: RefCell<Consumer>,
}

impl RxEnd {
    fn new(ch: Channel) -> RxEnd {
        roles::attach(&ch.ring.header().participants, Role::Receiver);
        let consumer = RefCell::new(ch.ring.consumer());
        RxEnd { ch, consumer }
    }

    fn has_frame(&self) -> bool {
        self.ch.ring.has_frame()
    }

    /// Waits for a frame and runs `f` on it; `f` returns whether to consume it.
    fn with_frame<R>(
        &self,
        deadline: Option<Deadline>,
        mut f: impl FnMut(&[u8]) -> (R, bool),
    ) -> Result<R, RecvTimeoutError> {
        let ring = &self.ch.ring;
        loop {
            {
                let mut c = self.consumer.borrow_mut();
                match c.peek() {
                    Ok(Some(frame)) => {
                        let (r, consume) = f(c.bytes(&frame));
                        if consume {
                            c.release(frame);
                        }
                        return Ok(r);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(RecvTimeoutError::Corrupt { reason: e.reason().to_owned() }),
                }
            }
            let gone = || !self.has_frame() && (ring.is_closed() || self.ch.presence(Role::Sender) == Presence::Absent);
            match wait_paced(
                receiver_pace(ring),
                deadline,
                &ring.header().not_empty,
                || self.has_frame(),
                || ring.is_closed(),
                gone,
                |_| (0, false),
            ) {
                Waited::Ready => {}
                Waited::Timeout => return Err(RecvTimeoutError::Timeout),
                Waited::Disconnected => {
                    if !self.has_frame() {
                        return Err(RecvTimeoutError::Disconnected);
                    }
                }
            }
        }
    }

    fn recv<T: Message>(&self, deadline: Option<Deadline>) -> Result<T, RecvTimeoutError> {
        // Copied out (decode_copy) before validation; the frame is released
        // after the copy.
        let r = self.with_frame(deadline, |b| (decode_copy::<T>(b), true))?;
        r.map_err(|e| RecvTimeoutError::Corrupt { reason: e.to_string() })
    }

    fn poll(&self, timeout: Duration) -> bool {
        let ring = &self.ch.ring;
        if self.has_frame() {
            return true;
        }
        let deadline = Some(Deadline::after(timeout));
        matches!(
            wait(
                deadline,
                &ring.header().not_empty,
                || self.has_frame(),
                || ring.is_closed(),
                || false,
                |_| (0, false)
            ),
            Waited::Ready
        )
    }
}

impl Drop for RxEnd {
    fn drop(&mut self) {
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
    /// to a power of two; a message may take up to that minus 8 bytes).
    ///
    /// ```
    /// let (a, _b) = shmproc::Pipe::<Vec<u8>>::duplex_with_capacity(4096)?;
    /// assert_eq!(a.max_message_size(), 4096 - 16);
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
            /// Sends a message, waiting at most `timeout` for room.
            ///
            /// ```
            /// let (tx, _rx) = shmproc::Pipe::<Vec<u8>>::oneway_with_capacity(256)?;
            /// let big = vec![0u8; 200];
            /// tx.send_timeout(&big, std::time::Duration::from_millis(10))?;
            /// // No room for a second one until the receiver reads.
            /// assert!(tx.send_timeout(&big, std::time::Duration::from_millis(10)).is_err());
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn send_timeout(&self, value: &T, timeout: Duration) -> Result<(), SendTimeoutError> {
                self.$tx.send(value, Some(Deadline::after(timeout)))
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
            /// The largest message this end can send, in bytes.
            ///
            /// ```
            /// let (tx, _rx) = shmproc::Pipe::<u8>::oneway_with_capacity(1024)?;
            /// assert_eq!(tx.max_message_size(), 1008);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            #[must_use]
            pub fn max_message_size(&self) -> usize {
                self.$tx.ch.ring.max_frame()
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
            /// Receives a message if one is waiting.
            ///
            /// ```
            /// let (tx, rx) = shmproc::Pipe::<u8>::oneway()?;
            /// assert_eq!(rx.try_recv(), Err(shmproc::TryRecvError::Empty));
            /// tx.send(&5)?;
            /// assert_eq!(rx.try_recv()?, 5);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn try_recv(&self) -> Result<T, TryRecvError> {
                match self.$rx.recv(Some(Deadline::EXPIRED)) {
                    Ok(v) => Ok(v),
                    Err(RecvTimeoutError::Timeout) => Err(TryRecvError::Empty),
                    Err(RecvTimeoutError::Disconnected) => Err(TryRecvError::Disconnected),
                    Err(RecvTimeoutError::Corrupt { reason }) => Err(TryRecvError::Corrupt { reason }),
                }
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
                self.$rx.recv(Some(Deadline::after(timeout)))
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
                self.$rx.with_frame(None, |b| (b.to_vec(), true)).map_err(RecvError::from)
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
                let r = self.$rx.with_frame(None, |b| {
                    if b.len() > buf.len() {
                        (Err(b.len()), false)
                    } else {
                        buf[..b.len()].copy_from_slice(b);
                        (Ok(b.len()), true)
                    }
                });
                match r {
                    Ok(Ok(n)) => Ok(n),
                    Ok(Err(needed)) => Err(RecvBytesIntoError::TooShort { needed }),
                    Err(e) => Err(RecvBytesIntoError::Recv(e.into())),
                }
            }
            /// Whether a message arrives within `timeout` (`Duration::ZERO`:
            /// whether one is waiting now).
            ///
            /// ```
            /// let (tx, rx) = shmproc::Pipe::<u8>::oneway()?;
            /// assert!(!rx.poll(std::time::Duration::ZERO));
            /// tx.send(&1)?;
            /// assert!(rx.poll(std::time::Duration::from_millis(10)));
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            #[must_use]
            pub fn poll(&self, timeout: Duration) -> bool {
                self.$rx.poll(timeout)
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
    match Object::from_index(seg.clone(), index, kind::SPSC_RING, SpscRing::required_size(0))
        .and_then(Channel::from_object)
    {
        Ok(ch) => match ch.ring.used() {
            Ok(used) => ObjectState::PipeRing { used, capacity: ch.ring.capacity() },
            Err(e) => ObjectState::Corrupt(format!("{e:?}")),
        },
        Err(e) => ObjectState::Corrupt(e.to_string()),
    }
}
