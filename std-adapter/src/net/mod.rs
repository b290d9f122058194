//! Beyond one machine (feature `net`): the same [`Queue`], [`JoinableQueue`]
//! and [`Pool`] across hosts, on [zenoh](https://zenoh.io).
//!
//! A queue or pool lives on one process, its **host**, which serves it
//! under a key of a zenoh peer network; processes on other hosts (or the
//! same one) reach it through a [`Node`]:
//!
//! * [`Queue`] / [`JoinableQueue`]: the host keeps a real
//!   [`shmproc::Queue`](crate::Queue) (local processes keep using it through
//!   shared memory); remote handles `send`, `recv`, `recv_timeout`,
//!   `task_done` and `join` with the same message types (rkyv archives on
//!   the wire) and the same error types. Delivery is exactly once while the
//!   host lives; what happens when a receiver or the host dies is spelled
//!   out in [`queue`'s docs](queue).
//! * [`Pool`] / [`Worker`]: workers register with liveliness tokens and
//!   run functions that both sides registered by name ([`Registry`]); a
//!   worker that dies mid-task re-queues it or fails it, as the pool's
//!   [`Delivery`] says ([`pool`'s docs](pool)).
//!
//! ```no_run
//! use std::time::Duration;
//! use shmproc::net::{Node, Queue};
//!
//! // Host (10.0.0.5):
//! let node = Node::builder().listen("tcp/0.0.0.0:7447").open()?;
//! let q = Queue::serve(&node, "jobs", shmproc::Queue::<String>::bounded(1024)?)?;
//! let job = q.recv()?; // from any host
//!
//! // Any other host:
//! let node = Node::builder().connect("tcp/10.0.0.5:7447").open()?;
//! let q = Queue::<String>::connect(&node, "jobs", Duration::from_secs(10))?;
//! q.send(&"resize img-17.png".to_string())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The wire
//!
//! Requests and replies are zenoh queries to the host's queryable (with
//! blocking congestion control: nothing is dropped when a link is
//! congested) in a small binary format ([`wire`](self#the-wire)); every
//! byte received is validated (lengths, counts, kinds, UTF-8, and the
//! messages themselves with `bytecheck`) and garbage gives a typed error
//! ([`WireError`], or a `Corrupt` variant), never a panic. One round trip
//! per call: use [`Queue::send_batch`] / [`Queue::recv_batch`] to move many
//! small messages per round trip.
//!
//! # Risks
//!
//! * **Fork after a zenoh session exists.** zenoh runs a tokio runtime
//!   with worker threads from the first [`Node`] on; a `fork()` copies only
//!   the calling thread, and the child would inherit locks held by threads
//!   that do not exist there. Fork first and open the node in each child,
//!   or start children with [`StartMethod::Spawn`](crate::StartMethod) or
//!   [`StartMethod::ForkServer`](crate::StartMethod) (both safe from a
//!   threaded parent; [`Process::spawn`](crate::Process::spawn) refuses to
//!   fork a threaded process with
//!   [`ProcessError::ThreadedParent`](crate::ProcessError)).
//! * **The host is a single point of failure.** Its queue and its pool's
//!   tasks live in its memory (a queue in a named segment survives the
//!   process, not the machine); when it dies, remote handles get
//!   `Disconnected` and workers [`NetError::HostGone`]. For queues that
//!   must survive a machine, use a broker with persistence and replication
//!   (Kafka, RabbitMQ quorum queues, NATS JetStream, Redis Streams with
//!   AOF), or zenoh's storage plugins, instead of this module.
//! * **Security.** zenoh peers here talk plain TCP without authentication:
//!   anyone who can reach an endpoint can send and receive on the queues.
//!   Keep endpoints on a trusted network (or configure zenoh's TLS and
//!   access control through [`Node::session`]'s configuration).

mod link;
mod node;
pub mod pool;
pub mod queue;
mod serve;
mod wire;

use std::fmt;
use std::time::Duration;

pub use node::{Node, NodeBuilder};
pub use pool::{Delivery, Pool, Registry, RemoteTaskError, TaskHandle, Worker};
pub use queue::{JoinableQueue, Queue};
pub use wire::WireError;

use crate::TaskDoneError;

/// Why a `net` call failed (queue operations use the local queue's error
/// types instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetError {
    /// zenoh refused: a bad endpoint, a port in use, a closed session.
    Zenoh {
        /// zenoh's message.
        reason: String,
    },
    /// A name or prefix that is not key chunks (`[A-Za-z0-9_-]`,
    /// `/`-separated), or an endpoint with quotes.
    BadName {
        /// The name.
        name: String,
    },
    /// No host of that name was seen within the timeout.
    HostNotFound,
    /// The host went away (its liveliness token was deleted).
    HostGone,
    /// `task_done` was called more often than items were queued.
    TaskDone(TaskDoneError),
    /// The host answered with bytes that are not a valid reply, or with a
    /// reply that does not fit the request.
    Protocol {
        /// What is wrong.
        reason: String,
    },
}

impl NetError {
    pub(crate) fn zenoh(e: impl fmt::Display) -> NetError {
        NetError::Zenoh { reason: e.to_string() }
    }

    pub(crate) fn from_call(e: link::CallError) -> NetError {
        match e {
            link::CallError::HostGone => NetError::HostGone,
            link::CallError::Wire(w) => NetError::Protocol { reason: format!("reply from the host: {w}") },
            link::CallError::Zenoh(reason) => NetError::Zenoh { reason },
        }
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::Zenoh { reason } => write!(f, "zenoh: {reason}"),
            NetError::BadName { name } => write!(f, "{name:?} is not a valid key name"),
            NetError::HostNotFound => write!(f, "no host of that name was seen"),
            NetError::HostGone => write!(f, "the host went away"),
            NetError::TaskDone(e) => write!(f, "{e}"),
            NetError::Protocol { reason } => write!(f, "protocol error: {reason}"),
        }
    }
}

impl std::error::Error for NetError {}

/// Milliseconds for the wire (saturating).
pub(crate) fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}
