//! `Queue<T>`: a bounded multi-producer multi-consumer queue of typed messages
//! between processes, on the crate's lock-free slot ring.
//!
//! Messages are serialised with rkyv **directly into a slot** of shared memory
//! (no intermediate buffer) and validated with bytecheck before they are
//! handed out: [`recv`](Queue::recv) copies the bytes out, validates and
//! deserialises (sound even against a malicious peer); [`recv_ref`](Queue::recv_ref)
//! validates in place and hands out `&Archived<T>` without copying, holding
//! the slot until the guard drops.
//!
//! ```
//! let q = shmproc::Queue::<u64>::bounded(16)?;
//! let tx = q.clone();
//! let mut child = shmproc::Process::spawn(move || {
//!     for i in 0..10u64 {
//!         tx.send(&i).unwrap();
//!     }
//! })?;
//! let sum: u64 = (0..10).map(|_| q.recv().unwrap()).sum();
//! assert_eq!(sum, 45);
//! child.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Handles, roles and `Disconnected`
//!
//! A [`Queue`] handle can send and receive. [`Queue::into_split`],
//! [`Queue::sender`] and [`Queue::receiver`] give handles with one role, as in
//! crossbeam. A receiver gets `Disconnected` once the queue is empty and no
//! live process holds a sending handle (a `Queue` or a [`Sender`]): every such
//! handle was dropped, or its process died (SIGKILL included); likewise a
//! sender blocked on a full queue gets `Disconnected` when no receiving handle
//! is left. `fork()` duplicates every handle the parent holds into the child,
//! and those count as the child's (as with pipe ends in Unix and Python: drop
//! the handles a child should not hold before forking it).
//! [`close`](Queue::close) disconnects the queue for everyone at once.
//!
//! # Dead peers
//!
//! A producer killed between claiming a slot and publishing it never exposes a
//! torn message: consumers that reach the slot check the producer's liveness
//! and skip it. A consumer killed while holding a slot has its slot freed by
//! producers that need it (its message is lost with it).

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rkyv::Archive;
use shmproc_core::mpmc::{stride, Claimed, MpmcError, MpmcRing};
use shmproc_core::notify::Notifier;
use shmproc_core::owner::ProcLiveness;
use shmproc_core::participants::{Presence, Role};
use shmproc_core::region::{kind, OBJECT_ALIGN};
use shmproc_core::Deadline;

use crate::blocking::{wait, Waited};
use crate::error::Error;
use crate::message::{decode_copy, encode_into, EncodeError, Message};
use crate::object::{impl_handle_archive, Object};
use crate::roles;
use crate::segment::Segment;
use crate::thread_id;

/// Payload bytes per slot unless set with [`QueueBuilder::message_size`].
pub const DEFAULT_MESSAGE_SIZE: usize = 1024 - 32;

// ---------------------------------------------------------------- errors ----

/// Why a blocking `send` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// No live receiver is left, or the queue was closed.
    Disconnected,
    /// The message does not fit in a slot.
    TooLarge {
        /// The slot size in bytes.
        limit: usize,
    },
    /// rkyv could not serialise the value.
    Serialize {
        /// rkyv's message.
        reason: String,
    },
    /// The shared ring holds impossible values.
    Corrupt {
        /// What is wrong.
        reason: &'static str,
    },
}

/// Why `try_send` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrySendError {
    /// No free slot right now.
    Full,
    /// No live receiver is left, or the queue was closed.
    Disconnected,
    /// The message does not fit in a slot.
    TooLarge {
        /// The slot size in bytes.
        limit: usize,
    },
    /// rkyv could not serialise the value.
    Serialize {
        /// rkyv's message.
        reason: String,
    },
    /// The shared ring holds impossible values.
    Corrupt {
        /// What is wrong.
        reason: &'static str,
    },
}

/// Why `send_timeout` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendTimeoutError {
    /// Still full when the timeout passed.
    Timeout,
    /// No live receiver is left, or the queue was closed.
    Disconnected,
    /// The message does not fit in a slot.
    TooLarge {
        /// The slot size in bytes.
        limit: usize,
    },
    /// rkyv could not serialise the value.
    Serialize {
        /// rkyv's message.
        reason: String,
    },
    /// The shared ring holds impossible values.
    Corrupt {
        /// What is wrong.
        reason: &'static str,
    },
}

/// Why a blocking `recv` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecvError {
    /// Empty, and no live sender is left (or the queue was closed).
    Disconnected,
    /// A message failed validation, or the ring holds impossible values.
    Corrupt {
        /// What is wrong.
        reason: String,
    },
}

/// Why `try_recv` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TryRecvError {
    /// No message right now.
    Empty,
    /// Empty, and no live sender is left (or the queue was closed).
    Disconnected,
    /// A message failed validation, or the ring holds impossible values.
    Corrupt {
        /// What is wrong.
        reason: String,
    },
}

/// Why `recv_timeout` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecvTimeoutError {
    /// Still empty when the timeout passed.
    Timeout,
    /// Empty, and no live sender is left (or the queue was closed).
    Disconnected,
    /// A message failed validation, or the ring holds impossible values.
    Corrupt {
        /// What is wrong.
        reason: String,
    },
}

macro_rules! display {
    ($ty:ident { $($pat:pat => $msg:expr),* $(,)? }) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($pat => write!(f, "{}", $msg)),*
                }
            }
        }
        impl std::error::Error for $ty {}
    };
}

display!(SendError {
    SendError::Disconnected => "the queue is disconnected",
    SendError::TooLarge { limit } => format!("message larger than the {limit}-byte slots"),
    SendError::Serialize { reason } => format!("serialising the message failed: {reason}"),
    SendError::Corrupt { reason } => format!("corrupt queue: {reason}"),
});
display!(TrySendError {
    TrySendError::Full => "the queue is full",
    TrySendError::Disconnected => "the queue is disconnected",
    TrySendError::TooLarge { limit } => format!("message larger than the {limit}-byte slots"),
    TrySendError::Serialize { reason } => format!("serialising the message failed: {reason}"),
    TrySendError::Corrupt { reason } => format!("corrupt queue: {reason}"),
});
display!(SendTimeoutError {
    SendTimeoutError::Timeout => "timed out waiting for room",
    SendTimeoutError::Disconnected => "the queue is disconnected",
    SendTimeoutError::TooLarge { limit } => format!("message larger than the {limit}-byte slots"),
    SendTimeoutError::Serialize { reason } => format!("serialising the message failed: {reason}"),
    SendTimeoutError::Corrupt { reason } => format!("corrupt queue: {reason}"),
});
display!(RecvError {
    RecvError::Disconnected => "the queue is empty and disconnected",
    RecvError::Corrupt { reason } => format!("corrupt message or queue: {reason}"),
});
display!(TryRecvError {
    TryRecvError::Empty => "the queue is empty",
    TryRecvError::Disconnected => "the queue is empty and disconnected",
    TryRecvError::Corrupt { reason } => format!("corrupt message or queue: {reason}"),
});
display!(RecvTimeoutError {
    RecvTimeoutError::Timeout => "timed out waiting for a message",
    RecvTimeoutError::Disconnected => "the queue is empty and disconnected",
    RecvTimeoutError::Corrupt { reason } => format!("corrupt message or queue: {reason}"),
});

impl From<SendTimeoutError> for SendError {
    fn from(e: SendTimeoutError) -> Self {
        match e {
            SendTimeoutError::Timeout | SendTimeoutError::Disconnected => SendError::Disconnected,
            SendTimeoutError::TooLarge { limit } => SendError::TooLarge { limit },
            SendTimeoutError::Serialize { reason } => SendError::Serialize { reason },
            SendTimeoutError::Corrupt { reason } => SendError::Corrupt { reason },
        }
    }
}

impl From<RecvTimeoutError> for RecvError {
    fn from(e: RecvTimeoutError) -> Self {
        match e {
            RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected => RecvError::Disconnected,
            RecvTimeoutError::Corrupt { reason } => RecvError::Corrupt { reason },
        }
    }
}

// ------------------------------------------------------------ the shared core

/// Shared state after the ring: the JoinableQueue's task counter.
#[repr(C, align(128))]
pub(crate) struct Extra {
    pub(crate) unfinished: AtomicU64,
    pub(crate) all_done: Notifier,
}

// SAFETY: atomics only, valid for any bits; alignment 128.
unsafe impl shmproc_core::region::RegionObject for Extra {
    const KIND: u32 = kind::MPMC_RING;
}

const RING_OFFSET: usize = std::mem::size_of::<Extra>();
const _: () = assert!(RING_OFFSET % OBJECT_ALIGN == 0);

/// The mapped queue: object + validated ring. Shared by every handle of a
/// process through an `Arc`.
pub(crate) struct Core {
    obj: Object,
    ring: MpmcRing,
}

impl Core {
    fn create(seg: Option<&Segment>, name: &str, slots: usize, message_size: usize) -> Result<Core, Error> {
        if slots == 0 {
            return Err(Error::Layout("a queue needs at least one slot"));
        }
        let ring_size = MpmcRing::required_size(slots, message_size).ok_or(Error::Layout("queue too large"))?;
        let size = RING_OFFSET.checked_add(ring_size).ok_or(Error::Layout("queue too large"))?;
        let mut failed = None;
        let obj = Object::create(seg, name, kind::MPMC_RING, size, |p| {
            // SAFETY: p is OBJECT_ALIGN-aligned with `size` bytes: Extra at 0,
            // the ring at RING_OFFSET (a multiple of 128) with ring_size bytes.
            unsafe {
                let extra = &*p.as_ptr().cast::<Extra>();
                extra.unfinished.store(0, Ordering::Relaxed);
                extra.all_done.init();
                let base = std::ptr::NonNull::new_unchecked(p.as_ptr().add(RING_OFFSET));
                if let Err(e) = MpmcRing::init(base, ring_size, slots, message_size) {
                    failed = Some(e);
                }
            }
        })?;
        if failed.is_some() {
            return Err(Error::Layout("queue ring initialisation failed"));
        }
        Core::from_object(obj)
    }

    fn from_object(obj: Object) -> Result<Core, Error> {
        let base = obj.at(RING_OFFSET);
        // SAFETY: the object's bytes from RING_OFFSET to its end are inside the
        // mapping kept alive by `obj`; attach validates the ring's contents.
        let ring = unsafe { MpmcRing::attach(base, obj.size() - RING_OFFSET) }
            .map_err(|_| Error::Layout("corrupt queue ring"))?;
        Ok(Core { obj, ring })
    }

    pub(crate) fn extra(&self) -> &Extra {
        self.obj.head::<Extra>()
    }

    fn participants(&self) -> &shmproc_core::participants::Participants {
        &self.ring.header().participants
    }

    fn presence(&self, role: Role) -> Presence {
        roles::presence(self.participants(), role)
    }

    fn try_send_with(&self, write: impl FnMut(&mut [u8]) -> Option<usize>) -> Result<(), TrySendError> {
        if self.ring.is_closed() {
            return Err(TrySendError::Disconnected);
        }
        let me = thread_id::owner();
        match self.ring.try_push_with(&me, write) {
            Ok(()) => Ok(()),
            Err(MpmcError::Full) => Err(TrySendError::Full),
            Err(MpmcError::TooLarge) => Err(TrySendError::TooLarge { limit: self.ring.slot_size() }),
            Err(MpmcError::Corrupt(r) | MpmcError::Layout(r)) => Err(TrySendError::Corrupt { reason: r }),
            Err(MpmcError::Empty) => unreachable!("push never reports Empty"),
        }
    }

    fn try_send<T: Message>(&self, v: &T) -> Result<(), TrySendError> {
        let mut failure = None;
        let r = self.try_send_with(|buf| match encode_into(v, buf) {
            Ok(n) => Some(n),
            Err(e) => {
                failure = Some(e);
                None
            }
        });
        match (r, failure) {
            (Err(TrySendError::TooLarge { .. }), Some(EncodeError::Other(reason))) => {
                Err(TrySendError::Serialize { reason })
            }
            (r, _) => r,
        }
    }

    fn wait_for_room(&self, deadline: Option<Deadline>) -> Waited {
        wait(
            deadline,
            &self.ring.header().not_full,
            || self.ring.has_room(),
            || self.ring.is_closed(),
            || self.presence(Role::Receiver) == Presence::Absent,
            |grace| self.ring.recover_reader(&ProcLiveness, grace),
        )
    }

    fn send_deadline<T: Message>(&self, v: &T, deadline: Option<Deadline>) -> Result<(), SendTimeoutError> {
        loop {
            match self.try_send(v) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full) => {}
                Err(TrySendError::Disconnected) => return Err(SendTimeoutError::Disconnected),
                Err(TrySendError::TooLarge { limit }) => return Err(SendTimeoutError::TooLarge { limit }),
                Err(TrySendError::Serialize { reason }) => return Err(SendTimeoutError::Serialize { reason }),
                Err(TrySendError::Corrupt { reason }) => return Err(SendTimeoutError::Corrupt { reason }),
            }
            match self.wait_for_room(deadline) {
                Waited::Ready => {}
                Waited::Timeout => return Err(SendTimeoutError::Timeout),
                Waited::Disconnected => return Err(SendTimeoutError::Disconnected),
            }
        }
    }

    fn try_claim(&self) -> Result<Claimed, TryRecvError> {
        let me = thread_id::owner();
        match self.ring.try_pop(&me) {
            Ok(c) => Ok(c),
            Err(MpmcError::Empty) => {
                if self.ring.is_closed() && self.ring.is_empty() {
                    Err(TryRecvError::Disconnected)
                } else {
                    Err(TryRecvError::Empty)
                }
            }
            Err(MpmcError::Corrupt(r) | MpmcError::Layout(r)) => Err(TryRecvError::Corrupt { reason: r.to_owned() }),
            Err(MpmcError::Full | MpmcError::TooLarge) => unreachable!("pop never reports these"),
        }
    }

    fn claim_deadline(&self, deadline: Option<Deadline>) -> Result<Claimed, RecvTimeoutError> {
        loop {
            match self.try_claim() {
                Ok(c) => return Ok(c),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Corrupt { reason }) => return Err(RecvTimeoutError::Corrupt { reason }),
            }
            let drained = || self.ring.is_empty() && self.presence(Role::Sender) == Presence::Absent;
            match wait(
                deadline,
                &self.ring.header().not_empty,
                || self.ring.has_message(),
                || self.ring.is_closed(),
                drained,
                |grace| self.ring.recover_writer(&ProcLiveness, grace),
            ) {
                Waited::Ready => {}
                Waited::Timeout => return Err(RecvTimeoutError::Timeout),
                Waited::Disconnected => {
                    // Messages still queued are delivered first.
                    if self.ring.has_message() {
                        continue;
                    }
                    return Err(RecvTimeoutError::Disconnected);
                }
            }
        }
    }

    fn take<T: Message>(&self, c: Claimed) -> Result<T, String> {
        // Copy out before validating: a peer cannot change what we validate.
        let r = decode_copy::<T>(self.ring.bytes(&c));
        self.ring.release(c);
        r.map_err(|e| e.to_string())
    }
}

// --------------------------------------------------------------- handles ----

/// A role registration that undoes itself on drop.
struct Registered {
    core: Arc<Core>,
    send: bool,
    recv: bool,
}

impl Registered {
    fn new(core: Arc<Core>, send: bool, recv: bool) -> Registered {
        if send {
            roles::attach(core.participants(), Role::Sender);
        }
        if recv {
            roles::attach(core.participants(), Role::Receiver);
        }
        Registered { core, send, recv }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if self.send {
            roles::detach(self.core.participants(), Role::Sender);
            // Receivers may be waiting to learn that the last sender left.
            self.core.ring.header().not_empty.wake_all();
        }
        if self.recv {
            roles::detach(self.core.participants(), Role::Receiver);
            self.core.ring.header().not_full.wake_all();
        }
    }
}

/// Configures a [`Queue`] before creating it.
#[derive(Clone, Debug)]
#[must_use]
pub struct QueueBuilder {
    capacity: usize,
    message_size: usize,
}

impl Default for QueueBuilder {
    fn default() -> Self {
        QueueBuilder { capacity: 1024, message_size: DEFAULT_MESSAGE_SIZE }
    }
}

impl QueueBuilder {
    /// Capacity in messages (Python's `maxsize`).
    pub fn capacity(mut self, messages: usize) -> Self {
        self.capacity = messages;
        self
    }

    /// Largest serialised message in bytes (each slot reserves this much).
    pub fn message_size(mut self, bytes: usize) -> Self {
        self.message_size = bytes.max(1);
        self
    }

    /// Capacity from a byte budget for the slots (at least one slot).
    pub fn byte_capacity(mut self, bytes: usize) -> Self {
        self.capacity = (bytes / stride(self.message_size)).max(1);
        self
    }

    /// Creates the queue in a segment of its own.
    pub fn build<T: Message>(self) -> Result<Queue<T>, Error> {
        Queue::from_core(Core::create(None, "", self.capacity, self.message_size)?)
    }

    /// Creates the queue as object `name` of `seg`.
    pub fn build_in<T: Message>(self, seg: &Segment, name: &str) -> Result<Queue<T>, Error> {
        Queue::from_core(Core::create(Some(seg), name, self.capacity, self.message_size)?)
    }
}

/// A bounded MPMC queue of `T` shared between processes (Python's `Queue`).
/// `Clone` gives another handle (sending and receiving).
pub struct Queue<T> {
    reg: Registered,
    _t: PhantomData<fn(T) -> T>,
}

/// A send-only handle (see [`Queue::into_split`]).
pub struct Sender<T> {
    reg: Registered,
    _t: PhantomData<fn(T) -> T>,
}

/// A receive-only handle (see [`Queue::into_split`]).
pub struct Receiver<T> {
    reg: Registered,
    _t: PhantomData<fn(T) -> T>,
}

macro_rules! handle_common {
    ($ty:ident, $send:expr, $recv:expr) => {
        impl<T> Clone for $ty<T> {
            fn clone(&self) -> Self {
                $ty { reg: Registered::new(self.reg.core.clone(), $send, $recv), _t: PhantomData }
            }
        }
        impl<T> fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("len", &self.reg.core.ring.len())
                    .field("capacity", &self.reg.core.ring.slots())
                    .finish()
            }
        }
        impl<T> $ty<T> {
            /// Messages waiting (a snapshot; Python's `qsize`).
            #[must_use]
            pub fn len(&self) -> usize {
                self.reg.core.ring.len()
            }
            /// Whether no message is waiting (a snapshot).
            #[must_use]
            pub fn is_empty(&self) -> bool {
                self.reg.core.ring.is_empty()
            }
            /// Whether every slot is taken (a snapshot).
            #[must_use]
            pub fn is_full(&self) -> bool {
                self.len() >= self.capacity()
            }
            /// Capacity in messages.
            #[must_use]
            pub fn capacity(&self) -> usize {
                self.reg.core.ring.slots()
            }
            /// Largest serialised message in bytes.
            #[must_use]
            pub fn message_size(&self) -> usize {
                self.reg.core.ring.slot_size()
            }
            /// Disconnects the queue for every process: sends fail, receives
            /// drain what is left and then report `Disconnected`.
            pub fn close(&self) {
                self.reg.core.ring.close();
            }
            /// Whether [`close`](Self::close) was called.
            #[must_use]
            pub fn is_closed(&self) -> bool {
                self.reg.core.ring.is_closed()
            }
        }
    };
}

handle_common!(Queue, true, true);

impl<T> Queue<T> {
    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.reg.core
    }

    pub(crate) fn archived_object(&self) -> &Object {
        self.reg.archived_object()
    }

    /// Visits the messages still in the ring (see `MpmcRing::scan`).
    pub(crate) fn core_scan(&self, f: impl FnMut(Option<u32>, &[u8])) {
        self.reg.core.ring.scan(f);
    }
}
handle_common!(Sender, true, false);
handle_common!(Receiver, false, true);

macro_rules! send_methods {
    ($ty:ident) => {
        impl<T: Message> $ty<T> {
            /// Sends, waiting for room as long as it takes.
            pub fn send(&self, value: &T) -> Result<(), SendError> {
                self.reg.core.send_deadline(value, None).map_err(SendError::from)
            }
            /// Sends if there is room now.
            ///
            /// ```
            /// use shmproc::{Queue, TrySendError};
            /// let q = Queue::<u8>::bounded(1)?;
            /// q.try_send(&1)?;
            /// assert_eq!(q.try_send(&2), Err(TrySendError::Full));
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn try_send(&self, value: &T) -> Result<(), TrySendError> {
                self.reg.core.try_send(value)
            }
            /// Sends, waiting at most `timeout` for room.
            pub fn send_timeout(&self, value: &T, timeout: Duration) -> Result<(), SendTimeoutError> {
                self.reg.core.send_deadline(value, Some(Deadline::after(timeout)))
            }
            /// Writes a message in place, waiting for room as long as it takes:
            /// `write` gets the slot's bytes and returns how many it used (the
            /// archived bytes of a `T`), or `None` to give up (the slot is then
            /// skipped and `TooLarge` returned). `write` may run more than once
            /// if a slot is lost to a race; it must be repeatable.
            pub fn send_with(&self, mut write: impl FnMut(&mut [u8]) -> Option<usize>) -> Result<(), SendError> {
                let core = &self.reg.core;
                loop {
                    match core.try_send_with(&mut write) {
                        Ok(()) => return Ok(()),
                        Err(TrySendError::Full) => {}
                        Err(TrySendError::Disconnected) => return Err(SendError::Disconnected),
                        Err(TrySendError::TooLarge { limit }) => return Err(SendError::TooLarge { limit }),
                        Err(TrySendError::Serialize { reason }) => return Err(SendError::Serialize { reason }),
                        Err(TrySendError::Corrupt { reason }) => return Err(SendError::Corrupt { reason }),
                    }
                    match core.wait_for_room(None) {
                        Waited::Ready => {}
                        Waited::Timeout | Waited::Disconnected => return Err(SendError::Disconnected),
                    }
                }
            }
            /// Writes a message in place: `write` gets the slot's bytes and
            /// returns how many it used (the archived bytes of a `T`, e.g. from
            /// rkyv's `to_bytes_in` with a `Buffer`), or `None` to give up.
            /// Receivers validate the bytes like any other message. Does not
            /// wait for room.
            pub fn try_send_with(&self, write: impl FnMut(&mut [u8]) -> Option<usize>) -> Result<(), TrySendError> {
                self.reg.core.try_send_with(write)
            }
        }
    };
}

macro_rules! recv_methods {
    ($ty:ident) => {
        impl<T: Message> $ty<T> {
            /// Receives, waiting as long as it takes.
            pub fn recv(&self) -> Result<T, RecvError> {
                let c = self.reg.core.claim_deadline(None).map_err(RecvError::from)?;
                self.reg.core.take(c).map_err(|reason| RecvError::Corrupt { reason })
            }
            /// Receives if a message is waiting now.
            pub fn try_recv(&self) -> Result<T, TryRecvError> {
                let c = self.reg.core.try_claim()?;
                self.reg.core.take(c).map_err(|reason| TryRecvError::Corrupt { reason })
            }
            /// Receives, waiting at most `timeout`.
            ///
            /// ```
            /// use shmproc::{Queue, RecvTimeoutError};
            /// use std::time::Duration;
            /// let q = Queue::<u8>::bounded(4)?;
            /// assert_eq!(q.recv_timeout(Duration::from_millis(10)), Err(RecvTimeoutError::Timeout));
            /// q.send(&9)?;
            /// assert_eq!(q.recv_timeout(Duration::from_millis(10))?, 9);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
                let c = self.reg.core.claim_deadline(Some(Deadline::after(timeout)))?;
                self.reg.core.take(c).map_err(|reason| RecvTimeoutError::Corrupt { reason })
            }
            /// Receives in place: the guard derefs to the validated
            /// `&Archived<T>` inside the slot and frees the slot on drop.
            pub fn recv_ref(&self) -> Result<RecvRef<'_, T>, RecvError> {
                let c = self.reg.core.claim_deadline(None).map_err(RecvError::from)?;
                RecvRef::new(&self.reg.core, c).map_err(|reason| RecvError::Corrupt { reason })
            }
            /// [`recv_ref`](Self::recv_ref) with a timeout.
            pub fn recv_ref_timeout(&self, timeout: Duration) -> Result<RecvRef<'_, T>, RecvTimeoutError> {
                let c = self.reg.core.claim_deadline(Some(Deadline::after(timeout)))?;
                RecvRef::new(&self.reg.core, c).map_err(|reason| RecvTimeoutError::Corrupt { reason })
            }
            /// An iterator that receives until the queue disconnects.
            pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
                std::iter::from_fn(move || self.recv().ok())
            }
        }
    };
}

send_methods!(Queue);
send_methods!(Sender);
recv_methods!(Queue);
recv_methods!(Receiver);

impl<T: Message> Queue<T> {
    /// A queue holding at most `capacity` messages of up to
    /// [`DEFAULT_MESSAGE_SIZE`] bytes, in a segment of its own.
    pub fn bounded(capacity: usize) -> Result<Queue<T>, Error> {
        QueueBuilder::default().capacity(capacity).build()
    }

    /// A queue whose slots take about `bytes` bytes in total.
    pub fn with_byte_capacity(bytes: usize) -> Result<Queue<T>, Error> {
        QueueBuilder::default().byte_capacity(bytes).build()
    }

    /// A builder for capacity and message size.
    pub fn builder() -> QueueBuilder {
        QueueBuilder::default()
    }

    /// Opens the queue `name` in `seg` (created by another process).
    pub fn open_in(seg: &Segment, name: &str) -> Result<Queue<T>, Error> {
        let obj = Object::open(seg, name, kind::MPMC_RING, RING_OFFSET + 128)?;
        Queue::from_core(Core::from_object(obj)?)
    }

    fn from_parts(seg: Segment, index: u32) -> Result<Queue<T>, Error> {
        let obj = Object::from_index(seg, index, kind::MPMC_RING, RING_OFFSET + 128)?;
        Queue::from_core(Core::from_object(obj)?)
    }

    fn from_core(core: Core) -> Result<Queue<T>, Error> {
        Ok(Queue { reg: Registered::new(Arc::new(core), true, true), _t: PhantomData })
    }

    /// Splits into a send-only and a receive-only handle.
    pub fn into_split(self) -> (Sender<T>, Receiver<T>) {
        (self.sender(), self.receiver())
    }

    /// A new send-only handle.
    pub fn sender(&self) -> Sender<T> {
        Sender { reg: Registered::new(self.reg.core.clone(), true, false), _t: PhantomData }
    }

    /// A new receive-only handle.
    pub fn receiver(&self) -> Receiver<T> {
        Receiver { reg: Registered::new(self.reg.core.clone(), false, true), _t: PhantomData }
    }

    pub(crate) fn from_parts_pub(seg: Segment, index: u32) -> Result<Queue<T>, Error> {
        Queue::from_parts(seg, index)
    }
}

impl Registered {
    /// The object, noting this handle's roles for a spawn in progress.
    fn archived_object(&self) -> &Object {
        let table = self.core.participants();
        if self.send {
            crate::object::note_role(table, Role::Sender);
        }
        if self.recv {
            crate::object::note_role(table, Role::Receiver);
        }
        &self.core.obj
    }
}

impl_handle_archive!([T: Message,] Queue<T>, q => q.reg.archived_object(), |seg, idx| Queue::<T>::from_parts(seg, idx));
impl_handle_archive!([T: Message,] Sender<T>, q => q.reg.archived_object(), |seg, idx| Queue::<T>::from_parts(seg, idx).map(|q| q.sender()));
impl_handle_archive!([T: Message,] Receiver<T>, q => q.reg.archived_object(), |seg, idx| Queue::<T>::from_parts(seg, idx).map(|q| q.receiver()));

/// A message read in place from a queue slot; frees the slot on drop.
pub struct RecvRef<'a, T: Archive> {
    core: &'a Core,
    claimed: Option<Claimed>,
    archived: *const T::Archived,
}

impl<'a, T: Message> RecvRef<'a, T> {
    fn new(core: &'a Core, c: Claimed) -> Result<RecvRef<'a, T>, String> {
        let bytes = core.ring.bytes(&c);
        match rkyv::access::<T::Archived, rkyv::rancor::Error>(bytes) {
            Ok(a) => {
                let archived = a as *const T::Archived;
                Ok(RecvRef { core, claimed: Some(c), archived })
            }
            Err(e) => {
                core.ring.release(c);
                Err(e.to_string())
            }
        }
    }

    /// Deserialises an owned `T` from the archived message.
    pub fn to_owned(&self) -> Result<T, String> {
        rkyv::deserialize::<T, rkyv::rancor::Error>(&**self).map_err(|e| e.to_string())
    }
}

impl<T: Archive> Deref for RecvRef<'_, T> {
    type Target = T::Archived;
    fn deref(&self) -> &T::Archived {
        // SAFETY: validated by bytecheck in `new`; the slot stays claimed by us
        // (producers do not reuse it) until drop releases it.
        unsafe { &*self.archived }
    }
}

impl<T: Archive> Drop for RecvRef<'_, T> {
    fn drop(&mut self) {
        if let Some(c) = self.claimed.take() {
            self.core.ring.release(c);
        }
    }
}

impl<T: Archive> fmt::Debug for RecvRef<'_, T>
where
    T::Archived: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// The state of queue object `index` in `seg`, for [`crate::inspect`].
pub(crate) fn describe(seg: &Segment, index: u32) -> crate::inspect::ObjectState {
    use crate::inspect::ObjectState;
    let obj = match Object::from_index(seg.clone(), index, kind::MPMC_RING, RING_OFFSET + 128) {
        Ok(o) => o,
        Err(e) => return ObjectState::Corrupt(e.to_string()),
    };
    match Core::from_object(obj) {
        Ok(core) => ObjectState::Queue {
            depth: core.ring.len(),
            capacity: core.ring.slots(),
            message_size: core.ring.slot_size(),
            closed: core.ring.is_closed(),
            holders: core.participants().snapshot().map(|(id, s, r)| (id, s, r, id.is_alive())).collect(),
        },
        Err(e) => ObjectState::Corrupt(e.to_string()),
    }
}
