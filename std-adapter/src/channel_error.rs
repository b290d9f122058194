//! The errors of the channels, [`Queue`](crate::Queue) (and so
//! [`JoinableQueue`](crate::JoinableQueue)) and [`Pipe`](crate::Pipe): one
//! set of types for both, built from one internal [`Failure`] so that every
//! path reports the same variant for the same cause.
//!
//! * `Full` and `Timeout` are only ever what they say: a wait that ran out is
//!   `Timeout`, never `Disconnected`, and `send`/`recv` (which wait as long as
//!   it takes) have no such variant at all.
//! * `TooLarge { size, limit }` only where a limit really exists: a queue
//!   or pipe carries messages of any size (large ones out of line), so it
//!   is reported only for a message larger than one out-of-line block can
//!   hold, or for [`send_with`](crate::Queue::send_with), whose writer gets a
//!   fixed buffer.
//! * `Serialize` is a real rkyv failure, decided from the crate's own state
//!   (never from the text of rkyv's error).
//! * `Reentered`: a `Serialize` impl sending on the channel it is being sent
//!   on, or a thread receiving while it holds a [`RecvRef`](crate::RecvRef) of
//!   the same byte-ring queue.

use std::fmt;

/// Why a channel operation failed, before it is reported as one of the public
/// error types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No room (send) or no message (receive) right now.
    Full,
    /// Still full or empty when the deadline passed.
    Timeout,
    /// The other side is gone, or the channel was closed.
    Disconnected,
    /// Larger than the limit in bytes.
    TooLarge { size: usize, limit: usize },
    /// rkyv failed.
    Serialize(String),
    /// Shared memory for an out-of-line block could not be had.
    NoSpace { size: usize },
    /// Re-entered from a `Serialize` impl, or a second receive under a
    /// `RecvRef`.
    Reentered,
    /// Impossible values in the shared state, or a message that failed
    /// validation.
    Corrupt(String),
}

impl Failure {
    /// A corrupt-state failure.
    #[cold]
    pub(crate) fn corrupt(reason: impl Into<String>) -> Failure {
        Failure::Corrupt(reason.into())
    }
}

/// Why a blocking `send` failed.
///
/// ```
/// use shmproc::{Queue, SendError};
/// let (tx, rx) = Queue::<u8>::bounded(1)?.into_split();
/// tx.send(&1)?; // now full
/// drop(rx); // no receiver left: a send waiting for room gives up
/// assert_eq!(tx.send(&2), Err(SendError::Disconnected));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// No live receiver is left, or the channel was closed.
    Disconnected,
    /// The message is larger than a limit that really exists (module docs).
    TooLarge {
        /// The message's size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// rkyv could not serialise the value.
    Serialize {
        /// rkyv's message.
        reason: String,
    },
    /// Not enough shared memory for the message (an out-of-line block could
    /// not be allocated: `ENOSPC`/`ENOMEM`, a full `/dev/shm`).
    NoSpace {
        /// The message's size in bytes.
        size: usize,
    },
    /// Sent from a `Serialize` impl on the channel it is being sent on.
    Reentered,
    /// The shared state holds impossible values.
    Corrupt {
        /// What is wrong.
        reason: String,
    },
}

/// Why `try_send` failed.
///
/// ```
/// use shmproc::{Queue, TrySendError};
/// let q = Queue::<Vec<u8>>::bounded(1)?;
/// q.try_send(&vec![1])?;
/// assert_eq!(q.try_send(&vec![2]), Err(TrySendError::Full));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrySendError {
    /// No room right now.
    Full,
    /// No live receiver is left, or the channel was closed.
    Disconnected,
    /// The message is larger than a limit that really exists (module docs).
    TooLarge {
        /// The message's size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// rkyv could not serialise the value.
    Serialize {
        /// rkyv's message.
        reason: String,
    },
    /// Not enough shared memory for the message.
    NoSpace {
        /// The message's size in bytes.
        size: usize,
    },
    /// Sent from a `Serialize` impl on the channel it is being sent on.
    Reentered,
    /// The shared state holds impossible values.
    Corrupt {
        /// What is wrong.
        reason: String,
    },
}

/// Why `send_timeout` failed.
///
/// ```
/// use shmproc::{Queue, SendTimeoutError};
/// use std::time::Duration;
/// let q = Queue::<u8>::bounded(1)?;
/// q.send(&1)?;
/// assert_eq!(q.send_timeout(&2, Duration::from_millis(10)), Err(SendTimeoutError::Timeout));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendTimeoutError {
    /// Still full when the timeout passed.
    Timeout,
    /// No live receiver is left, or the channel was closed.
    Disconnected,
    /// The message is larger than a limit that really exists (module docs).
    TooLarge {
        /// The message's size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// rkyv could not serialise the value.
    Serialize {
        /// rkyv's message.
        reason: String,
    },
    /// Not enough shared memory for the message.
    NoSpace {
        /// The message's size in bytes.
        size: usize,
    },
    /// Sent from a `Serialize` impl on the channel it is being sent on.
    Reentered,
    /// The shared state holds impossible values.
    Corrupt {
        /// What is wrong.
        reason: String,
    },
}

/// Why a blocking `recv` failed.
///
/// ```
/// use shmproc::{Queue, RecvError};
/// let (tx, rx) = Queue::<u8>::bounded(4)?.into_split();
/// tx.send(&1)?;
/// drop(tx); // every sender gone: what is queued is still delivered
/// assert_eq!(rx.recv(), Ok(1));
/// assert_eq!(rx.recv(), Err(RecvError::Disconnected));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecvError {
    /// Empty, and no live sender is left (or the channel was closed).
    Disconnected,
    /// A receive by a thread that holds a [`RecvRef`](crate::RecvRef) of the
    /// same byte-ring queue (it would wait for itself).
    Reentered,
    /// A message failed validation, or the shared state holds impossible
    /// values.
    Corrupt {
        /// What is wrong.
        reason: String,
    },
}

/// Why `try_recv` failed.
///
/// ```
/// use shmproc::{Queue, TryRecvError};
/// let q = Queue::<u8>::bounded(4)?;
/// assert_eq!(q.try_recv(), Err(TryRecvError::Empty));
/// q.close();
/// assert_eq!(q.try_recv(), Err(TryRecvError::Disconnected));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TryRecvError {
    /// No message right now.
    Empty,
    /// Empty, and no live sender is left (or the channel was closed). A
    /// sender's death is looked up at most every few milliseconds by a
    /// queue's non-blocking receives (each look reads `/proc`), so a
    /// `try_recv` loop sees it within that time.
    Disconnected,
    /// A receive under a live [`RecvRef`](crate::RecvRef) of the same queue.
    Reentered,
    /// A message failed validation, or the shared state holds impossible
    /// values.
    Corrupt {
        /// What is wrong.
        reason: String,
    },
}

/// Why `recv_timeout` failed.
///
/// ```
/// use shmproc::{Queue, RecvTimeoutError};
/// use std::time::Duration;
/// let q = Queue::<u8>::bounded(4)?;
/// assert_eq!(q.recv_timeout(Duration::from_millis(10)), Err(RecvTimeoutError::Timeout));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecvTimeoutError {
    /// Still empty when the timeout passed.
    Timeout,
    /// Empty, and no live sender is left (or the channel was closed).
    Disconnected,
    /// A receive under a live [`RecvRef`](crate::RecvRef) of the same queue.
    Reentered,
    /// A message failed validation, or the shared state holds impossible
    /// values.
    Corrupt {
        /// What is wrong.
        reason: String,
    },
}

/// The variants every send error shares, from a [`Failure`]; `Full` and
/// `Timeout` are handled by the caller.
macro_rules! send_common {
    ($ty:ident, $f:expr, $other:expr) => {
        match $f {
            Failure::Disconnected => $ty::Disconnected,
            Failure::TooLarge { size, limit } => $ty::TooLarge { size, limit },
            Failure::Serialize(reason) => $ty::Serialize { reason },
            Failure::NoSpace { size } => $ty::NoSpace { size },
            Failure::Reentered => $ty::Reentered,
            Failure::Corrupt(reason) => $ty::Corrupt { reason },
            other => $other(other),
        }
    };
}

macro_rules! recv_common {
    ($ty:ident, $f:expr, $other:expr) => {
        match $f {
            Failure::Disconnected => $ty::Disconnected,
            Failure::Reentered => $ty::Reentered,
            Failure::Corrupt(reason) => $ty::Corrupt { reason },
            // Not a receive failure: reported as what it is.
            Failure::Serialize(reason) => $ty::Corrupt { reason },
            other => $other(other),
        }
    };
}

/// A failure that cannot happen on a path that waits as long as it takes:
/// reported as corrupt state (it would mean the wait layer broke), never as
/// a different, plausible-looking variant.
#[cold]
fn impossible(f: Failure) -> String {
    format!("{f:?} from a wait without a deadline")
}

impl From<Failure> for SendError {
    fn from(f: Failure) -> Self {
        send_common!(SendError, f, |o| SendError::Corrupt { reason: impossible(o) })
    }
}

impl From<Failure> for TrySendError {
    fn from(f: Failure) -> Self {
        send_common!(TrySendError, f, |o| match o {
            Failure::Full | Failure::Timeout => TrySendError::Full,
            o => TrySendError::Corrupt { reason: impossible(o) },
        })
    }
}

impl From<Failure> for SendTimeoutError {
    fn from(f: Failure) -> Self {
        send_common!(SendTimeoutError, f, |o| match o {
            Failure::Full | Failure::Timeout => SendTimeoutError::Timeout,
            o => SendTimeoutError::Corrupt { reason: impossible(o) },
        })
    }
}

impl From<Failure> for RecvError {
    fn from(f: Failure) -> Self {
        recv_common!(RecvError, f, |o| RecvError::Corrupt { reason: impossible(o) })
    }
}

impl From<Failure> for TryRecvError {
    fn from(f: Failure) -> Self {
        recv_common!(TryRecvError, f, |o| match o {
            Failure::Full | Failure::Timeout => TryRecvError::Empty,
            o => TryRecvError::Corrupt { reason: impossible(o) },
        })
    }
}

impl From<Failure> for RecvTimeoutError {
    fn from(f: Failure) -> Self {
        recv_common!(RecvTimeoutError, f, |o| match o {
            Failure::Full | Failure::Timeout => RecvTimeoutError::Timeout,
            o => RecvTimeoutError::Corrupt { reason: impossible(o) },
        })
    }
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

const REENTERED_SEND: &str = "send re-entered on the same channel from a Serialize impl";
const REENTERED_RECV: &str = "receive while this thread holds a RecvRef of the same queue";

fn too_large(size: &usize, limit: &usize) -> String {
    format!("a {size}-byte message is larger than the {limit}-byte limit")
}

display!(SendError {
    SendError::Disconnected => "the channel is disconnected",
    SendError::TooLarge { size, limit } => too_large(size, limit),
    SendError::Serialize { reason } => format!("serialising the message failed: {reason}"),
    SendError::NoSpace { size } => format!("no shared memory for a {size}-byte message"),
    SendError::Reentered => REENTERED_SEND,
    SendError::Corrupt { reason } => format!("corrupt channel: {reason}"),
});
display!(TrySendError {
    TrySendError::Full => "the channel is full",
    TrySendError::Disconnected => "the channel is disconnected",
    TrySendError::TooLarge { size, limit } => too_large(size, limit),
    TrySendError::Serialize { reason } => format!("serialising the message failed: {reason}"),
    TrySendError::NoSpace { size } => format!("no shared memory for a {size}-byte message"),
    TrySendError::Reentered => REENTERED_SEND,
    TrySendError::Corrupt { reason } => format!("corrupt channel: {reason}"),
});
display!(SendTimeoutError {
    SendTimeoutError::Timeout => "timed out waiting for room",
    SendTimeoutError::Disconnected => "the channel is disconnected",
    SendTimeoutError::TooLarge { size, limit } => too_large(size, limit),
    SendTimeoutError::Serialize { reason } => format!("serialising the message failed: {reason}"),
    SendTimeoutError::NoSpace { size } => format!("no shared memory for a {size}-byte message"),
    SendTimeoutError::Reentered => REENTERED_SEND,
    SendTimeoutError::Corrupt { reason } => format!("corrupt channel: {reason}"),
});
display!(RecvError {
    RecvError::Disconnected => "the channel is empty and disconnected",
    RecvError::Reentered => REENTERED_RECV,
    RecvError::Corrupt { reason } => format!("corrupt message or channel: {reason}"),
});
display!(TryRecvError {
    TryRecvError::Empty => "the channel is empty",
    TryRecvError::Disconnected => "the channel is empty and disconnected",
    TryRecvError::Reentered => REENTERED_RECV,
    TryRecvError::Corrupt { reason } => format!("corrupt message or channel: {reason}"),
});
display!(RecvTimeoutError {
    RecvTimeoutError::Timeout => "timed out waiting for a message",
    RecvTimeoutError::Disconnected => "the channel is empty and disconnected",
    RecvTimeoutError::Reentered => REENTERED_RECV,
    RecvTimeoutError::Corrupt { reason } => format!("corrupt message or channel: {reason}"),
});
