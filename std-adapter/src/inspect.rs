//! Read-only inspection of the objects in a segment, for tools such as the
//! `shmproc` CLI: queue depth and capacity, lock owner and whether it is
//! alive, semaphore value, waiters, a joinable queue's unfinished tasks.
//!
//! What the numbers can and cannot tell:
//!
//! * A semaphore's, event's or condition's waiter count is a counter in shared
//!   memory, not a list of processes: a waiter killed while waiting is never
//!   taken off it, and nothing records who it was. So a non-zero count is
//!   shown as an upper bound ("up to N waiting"); zero is exact.
//! * A lock whose holder died is shown as such. The next `Mutex::lock` (and
//!   `lock`/`try_lock`/`lock_timeout` on a `Lock`) reports `OwnerDied`;
//!   `Lock::acquire`, Python's, takes the lock over without reporting it
//!   (a `Lock` has no data to repair).
//! * A queue's holders are the processes that hold handles, by role. A child
//!   made by `fork()` holds copies of every handle its parent held at the
//!   fork, whether it ever uses them or not, and is listed with them: they
//!   count for `Disconnected` until it drops them or exits (see the
//!   [`queue`](crate::queue) module docs).
//! * A queue's unfinished-task count is that of a `JoinableQueue` (a plain
//!   `Queue` never counts tasks); it is shown when it is not zero.
//!
//! Everything is read from shared memory and validated like any other access:
//! a corrupt object is reported as such, never trusted.
//!
//! ```
//! let seg = shmproc::Segment::anonymous(1 << 16)?;
//! let _sem = shmproc::Semaphore::new_in(&seg, "slots", 3)?;
//! let report = shmproc::inspect::inspect(&seg)?;
//! assert_eq!(report.objects[0].name, "slots");
//! assert!(report.objects[0].state.to_string().contains("value 3"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use shmproc_core::barrier::RawBarrier;
use shmproc_core::condvar::RawCondvar;
use shmproc_core::event::RawEvent;
use shmproc_core::raw_mutex::RawMutex;
use shmproc_core::region::{kind, HeaderInfo, RegionError};
use shmproc_core::semaphore::{RawSemaphore, UNBOUNDED};
use shmproc_core::Identity;

use crate::segment::Segment;

/// What an object looks like right now.
///
/// ```
/// use shmproc::inspect::{inspect, ObjectState};
/// let seg = shmproc::Segment::anonymous(1 << 16)?;
/// let s = shmproc::Semaphore::new_in(&seg, "slots", 3)?;
/// s.acquire();
/// let report = inspect(&seg)?;
/// assert!(matches!(report.objects[0].state, ObjectState::Semaphore { value: 2, .. }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectState {
    /// A lock (also `Mutex<T>`, `Value<T>`, `RLock`).
    Mutex {
        /// `(tid, pid, alive)` of the holder, if held.
        owner: Option<(u32, u32, bool)>,
        /// Whether waiters may be sleeping.
        waiters: bool,
        /// Bytes of protected data.
        data_bytes: usize,
    },
    /// A semaphore.
    Semaphore {
        /// Free permits.
        value: u32,
        /// Bound (`None`: unbounded).
        max: Option<u32>,
        /// Threads counted as waiting: an upper bound, since a waiter killed
        /// while waiting stays counted (0 is exact).
        waiters: u32,
    },
    /// An event.
    Event {
        /// Whether it is set.
        set: bool,
        /// Threads counted as waiting (an upper bound, as for a semaphore).
        waiters: u32,
    },
    /// A condition variable.
    Condition {
        /// Threads counted as waiting (an upper bound, as for a semaphore).
        waiters: u32,
    },
    /// A barrier.
    Barrier {
        /// Parties.
        parties: u32,
        /// Parties waiting now.
        waiting: u32,
        /// Whether it is broken.
        broken: bool,
    },
    /// A queue.
    Queue {
        /// Messages waiting.
        depth: usize,
        /// Capacity in messages.
        capacity: usize,
        /// Largest message in bytes.
        message_size: usize,
        /// How many lanes (rings, one per producing process) it has: 1 for
        /// the plain byte ring and the slot ring.
        lanes: usize,
        /// Whether it was closed.
        closed: bool,
        /// `(process, senders, receivers, alive)` holding handles (a forked
        /// child holds the handles it inherited, used or not).
        holders: Vec<(Identity, u32, u32, bool)>,
        /// A `JoinableQueue`'s unfinished tasks (0 for a plain `Queue`).
        unfinished: u64,
        /// Who holds the producing and the consuming side (byte-ring
        /// queues of one lane; `None` for the slot ring, which has no side
        /// locks, and for lanes, which have a pair each).
        sides: Option<(SideState, SideState)>,
    },
    /// One direction of a pipe.
    PipeRing {
        /// Bytes waiting.
        used: u64,
        /// Ring capacity in bytes.
        capacity: usize,
    },
    /// Another kind (arrays, shared containers, raw bytes, newer kinds).
    Other {
        /// The object's size in bytes.
        size: usize,
    },
    /// The object's contents fail validation.
    Corrupt(String),
}

impl fmt::Display for ObjectState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectState::Mutex { owner: None, waiters, data_bytes } => {
                write!(f, "unlocked, {data_bytes} data bytes{}", if *waiters { ", waiters" } else { "" })
            }
            ObjectState::Mutex { owner: Some((tid, pid, alive)), waiters, data_bytes } => write!(
                f,
                "locked by pid {pid} tid {tid} ({}), {data_bytes} data bytes{}",
                if *alive {
                    "alive"
                } else {
                    "dead: the next lock() gets OwnerDied, Lock::acquire takes it over silently"
                },
                if *waiters { ", waiters" } else { "" }
            ),
            ObjectState::Semaphore { value, max, waiters } => match max {
                Some(m) => write!(f, "value {value} (bounded at {m}), {}", Waiting(*waiters)),
                None => write!(f, "value {value}, {}", Waiting(*waiters)),
            },
            ObjectState::Event { set, waiters } => {
                write!(f, "{}, {}", if *set { "set" } else { "clear" }, Waiting(*waiters))
            }
            ObjectState::Condition { waiters } => Waiting(*waiters).fmt(f),
            ObjectState::Barrier { parties, waiting, broken } => {
                write!(f, "{waiting}/{parties} waiting{}", if *broken { ", BROKEN" } else { "" })
            }
            ObjectState::Queue { depth, capacity, message_size, lanes, closed, holders, sides, unfinished } => {
                write!(
                    f,
                    "{depth}/{capacity} messages of up to {message_size} bytes{}{}",
                    if *lanes > 1 { format!(" in {lanes} lanes") } else { String::new() },
                    if *closed { ", closed" } else { "" }
                )?;
                if *unfinished != 0 {
                    write!(f, ", {unfinished} unfinished tasks")?;
                }
                if let Some((producers, consumers)) = sides {
                    write!(f, "; producers: {producers}; consumers: {consumers}")?;
                }
                for (id, s, r, alive) in holders {
                    write!(f, "; pid {} holds {s} send/{r} recv ({})", id.id, if *alive { "alive" } else { "dead" })?;
                }
                Ok(())
            }
            ObjectState::PipeRing { used, capacity } => write!(f, "{used}/{capacity} bytes waiting"),
            ObjectState::Other { size } => write!(f, "{size} bytes"),
            ObjectState::Corrupt(why) => write!(f, "CORRUPT: {why}"),
        }
    }
}

/// A waiter counter as the CLI shows it: a non-zero count is only an upper
/// bound (waiters killed while waiting stay counted).
struct Waiting(u32);

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("0 waiting"),
            n => write!(f, "up to {n} waiting (a counter: waiters killed while waiting stay on it)"),
        }
    }
}

/// Who holds one side (producers or consumers) of a byte-ring queue.
///
/// ```
/// use shmproc::inspect::{inspect, ObjectState, SideState};
/// let seg = shmproc::Segment::anonymous(1 << 20)?;
/// let q = shmproc::Queue::<u8>::bounded_in(&seg, "q", 4)?;
/// for _ in 0..100 {
///     q.send(&1)?;
///     q.recv()?;
/// }
/// // One thread alone on both sides: each side's lock is biased to it.
/// let ObjectState::Queue { sides: Some((producers, consumers)), .. } = &inspect(&seg)?.objects[0].state else {
///     panic!("a byte-ring queue");
/// };
/// assert!(matches!(producers, SideState::Biased { busy: false, alive: true, .. }));
/// assert!(matches!(consumers, SideState::Biased { busy: false, alive: true, .. }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideState {
    /// Nobody.
    Free,
    /// A thread holds the side's lock.
    Locked {
        /// The holder's thread id.
        tid: u32,
        /// Whether it is alive (a dead holder is taken over by the next user).
        alive: bool,
    },
    /// A thread holds the side's bias (it sent or received alone long enough).
    Biased {
        /// The bias holder's thread id.
        tid: u32,
        /// Whether it is inside a send or receive (or holds a `RecvRef`) now.
        busy: bool,
        /// Whether it is alive.
        alive: bool,
    },
}

impl From<shmproc_core::biased_lock::Holder> for SideState {
    fn from(h: shmproc_core::biased_lock::Holder) -> SideState {
        use shmproc_core::biased_lock::Holder;
        match h {
            Holder::Free => SideState::Free,
            Holder::Locked(o) => SideState::Locked { tid: o.tid, alive: o.alive },
            Holder::Biased { tid, busy, alive } => SideState::Biased { tid, busy, alive },
        }
    }
}

impl fmt::Display for SideState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let life = |alive: &bool| if *alive { "alive" } else { "dead" };
        match self {
            SideState::Free => f.write_str("free"),
            SideState::Locked { tid, alive } => write!(f, "locked by tid {tid} ({})", life(alive)),
            SideState::Biased { tid, busy, alive } => {
                write!(f, "biased to tid {tid} ({}, {})", if *busy { "busy" } else { "idle" }, life(alive))
            }
        }
    }
}

/// One object of a segment.
///
/// ```
/// let seg = shmproc::Segment::anonymous(1 << 16)?;
/// shmproc::Event::new_in(&seg, "go")?;
/// let obj = &shmproc::inspect::inspect(&seg)?.objects[0];
/// assert_eq!((obj.name.as_str(), obj.kind), ("go", "event"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ObjectReport {
    /// Directory index.
    pub index: u32,
    /// Name (lossy UTF-8).
    pub name: String,
    /// Kind name (`mutex`, `queue`, ...).
    pub kind: &'static str,
    /// State.
    pub state: ObjectState,
}

/// A segment's header and objects.
///
/// ```
/// let seg = shmproc::Segment::anonymous(1 << 16)?;
/// let report = shmproc::inspect::inspect(&seg)?;
/// assert!(report.creator_alive);
/// assert!(report.objects.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct SegmentReport {
    /// Validated header fields.
    pub header: HeaderInfo,
    /// Whether the creating process still runs.
    pub creator_alive: bool,
    /// Objects in directory order.
    pub objects: Vec<ObjectReport>,
}

fn kind_name(k: u32) -> &'static str {
    match k {
        kind::BYTES => "bytes",
        kind::MUTEX => "mutex",
        kind::SEMAPHORE => "semaphore",
        kind::EVENT => "event",
        kind::CONDVAR => "condition",
        kind::BARRIER => "barrier",
        kind::SPSC_RING => "pipe",
        kind::MPMC_RING => "queue",
        kind::ARRAY => "array",
        kind::SHARED_MAP => "shared map",
        kind::SHARED_LIST => "shared list",
        kind::ROBUST_SEMAPHORE => "robust semaphore",
        _ => "unknown",
    }
}

/// Describes every object in `seg`.
///
/// ```
/// let seg = shmproc::Segment::anonymous(1 << 20)?;
/// let q = shmproc::Queue::<u8>::bounded_in(&seg, "q", 4)?;
/// q.send(&1)?;
/// for obj in shmproc::inspect::inspect(&seg)?.objects {
///     println!("{} ({}): {}", obj.name, obj.kind, obj.state);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn inspect(seg: &Segment) -> Result<SegmentReport, RegionError> {
    let region = seg.region();
    let header = region.info()?;
    let mut objects = Vec::new();
    for info in region.objects() {
        let info = match info {
            Ok(i) => i,
            Err(e) => {
                objects.push(ObjectReport {
                    index: u32::MAX,
                    name: String::new(),
                    kind: "unknown",
                    state: ObjectState::Corrupt(e.to_string()),
                });
                continue;
            }
        };
        let state = match info.kind {
            kind::MUTEX => match region.get::<RawMutex>(info.index) {
                Ok(m) => {
                    // One snapshot (and one liveness check) for both fields.
                    let owner = m.owner(seg.liveness());
                    ObjectState::Mutex {
                        owner: owner.map(|o| (o.tid, o.pid, o.alive)),
                        waiters: owner.is_some_and(|o| o.waiters),
                        data_bytes: info.size.saturating_sub(std::mem::size_of::<RawMutex>()),
                    }
                }
                Err(e) => ObjectState::Corrupt(e.to_string()),
            },
            kind::SEMAPHORE => match region.get::<RawSemaphore>(info.index) {
                Ok(s) => ObjectState::Semaphore {
                    value: s.value(),
                    max: (s.max() != UNBOUNDED).then(|| s.max()),
                    waiters: s.waiters(),
                },
                Err(e) => ObjectState::Corrupt(e.to_string()),
            },
            kind::EVENT => match region.get::<RawEvent>(info.index) {
                Ok(e) => ObjectState::Event { set: e.is_set(), waiters: e.waiters() },
                Err(e) => ObjectState::Corrupt(e.to_string()),
            },
            kind::CONDVAR => match region.get::<RawCondvar>(info.index) {
                Ok(c) => ObjectState::Condition { waiters: c.waiters() },
                Err(e) => ObjectState::Corrupt(e.to_string()),
            },
            kind::BARRIER => match region.get::<RawBarrier>(info.index) {
                Ok(b) => ObjectState::Barrier { parties: b.parties(), waiting: b.n_waiting(), broken: b.is_broken() },
                Err(e) => ObjectState::Corrupt(e.to_string()),
            },
            kind::MPMC_RING => crate::queue::describe(seg, info.index),
            kind::SPSC_RING => crate::pipe::describe(seg, info.index),
            _ => ObjectState::Other { size: info.size },
        };
        objects.push(ObjectReport {
            index: info.index,
            name: String::from_utf8_lossy(info.name()).into_owned(),
            kind: kind_name(info.kind),
            state,
        });
    }
    Ok(SegmentReport { creator_alive: header.creator.is_alive(), header, objects })
}
