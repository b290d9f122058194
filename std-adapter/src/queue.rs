//! `Queue<T>`: a bounded multi-producer multi-consumer queue of typed messages
//! between processes.
//!
//! Messages are serialised with rkyv **directly into shared memory** (no
//! intermediate buffer) and validated with bytecheck before they are handed
//! out: [`recv`](Queue::recv) copies the bytes out, validates and deserialises
//! (sound even against a malicious peer); [`recv_ref`](Queue::recv_ref)
//! validates in place and hands out `&Archived<T>` without copying, holding
//! the message until the guard drops.
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
//! # Batches
//!
//! [`send_batch`](Queue::send_batch), [`send_iter`](Queue::send_iter) and
//! [`try_send_batch`](Queue::try_send_batch) write a run of messages in place,
//! one after another, under one take of the producing side, and publish the
//! run's position, count and wake-up once; [`recv_batch`](Queue::recv_batch),
//! [`try_recv_batch`](Queue::try_recv_batch) and [`drain`](Queue::drain) read
//! a run and hand its space back once. Each message is still its own frame
//! (the run becomes visible to consumers at once, when it is complete), so
//! order, validation and exactly-once are those of single messages; a
//! message too large for the run is sent alone (out of line if need be).
//!
//! A message type of fixed size (one whose archive rkyv makes by copying
//! its bytes: the primitives, arrays and tuples of them, structs of those
//! without padding, as rkyv's `COPY_OPTIMIZATION` says) is written without
//! running rkyv's serialiser, and its batches go in runs of equal frames:
//! the ring's room is looked at once per run instead of once per message,
//! and the receiver recognises each frame of a run by its header word (the
//! one it validated for the first). The frames are those single sends
//! write, and each message is still validated by rkyv on the way in. For a
//! `u64` this cut the sender's instructions from about 75 to 25 a message
//! (callgrind), and a two-process `Queue<u64>` stream in batches of 64 went
//! from about 100 to 115-200 M/s on our 2-core VM; the receiver's ~95
//! instructions a message (mostly rkyv's validation and the private copy)
//! are now the bound.
//!
//! A consumer killed inside
//! `recv_batch` while it reads the run loses the first message of it (as a
//! single `recv` loses its one) and the others are handed to the next
//! receiver; once the run is read it is handed back, and from then on its
//! messages are that consumer's: killed after the hand-back but before the
//! call returns (waking senders, recycling out-of-line blocks), it loses the
//! whole run, up to `max` messages, as a `recv` killed just before it
//! returns loses its one. Keep `max` small where a consumer may be killed
//! and each message matters. A producer killed inside `send_batch` leaves
//! the messages it wrote whole and counted. The slot ring sends and
//! receives one by one behind the same calls.
//!
//! # Waiting
//!
//! A blocked `send` or `recv` spins only while recent waits on the queue
//! were short, then sleeps on a futex (see [`WaitPolicy`];
//! [`set_wait_policy`](Queue::set_wait_policy) picks a fixed spin or none):
//! a request/reply exchange keeps sub-microsecond hand-offs, while a
//! consumer of a slow trickle costs about what a pipe reader does.
//!
//! # Layouts
//!
//! By default a queue is a **byte ring** of packed frames whose producers take
//! turns under one lock and whose consumers take turns under another (see
//! `queue_bytes.rs` for the design). Each lock is *biased*: while one thread
//! keeps taking it, it costs no atomic read-modify-write, so a queue with one
//! producer and one consumer costs each side a few plain loads and stores per
//! message; a thread that holds its side's bias then sends and receives
//! through a fast path that skips the general path's bookkeeping (owner
//! records, dead holders, chained rings, lanes) and leaves every case it
//! does not cover to it (`shmproc_core::byte_queue`, "The fast paths"). A
//! [`RecvRef`] holds the receiving side while it lives.
//!
//! [`QueueBuilder::slot_ring`] selects Vyukov's **slot ring** instead: fixed
//! slots with a sequence number each, claimed by compare-and-swap, so several
//! receivers can each hold a `RecvRef` at once, and a stalled producer does
//! not hold up the others. It is slower between two processes.
//!
//! **When a second producer or consumer appears**, the layout stays what it
//! was made (it is chosen at creation, by the builder, and never switched:
//! a switch would have to move queued messages under every peer's feet).
//! What changes is each side's lock: the byte ring's producing side is
//! biased to the first thread that keeps taking it, at the cost of plain
//! loads and stores; the first time another thread or process takes it (a
//! second producer), the bias is revoked once and for good, and from then on
//! each send takes the side with one compare-and-swap. The consuming side
//! does the same on its own. So a queue with many producers and consumers
//! costs a lock take per message and side (a side found free is entered
//! by a shorter path that skips the wait and dead-holder bookkeeping: two
//! producers and two consumers moved a `Queue<u64>` ~1.45x faster once
//! they took it), and its senders (or receivers) take turns; several consumers that must hold messages in place at once
//! want the slot ring.
//!
//! **Many producers and consumers** want [`QueueBuilder::lanes`]: the queue
//! is then `n` byte rings side by side, one per producing process (given on
//! its first send, round robin), and receivers scan the lanes, trying each
//! lane's receiving side without waiting and staying on one lane for up to
//! 32 messages in a row. P producers and P consumers then mostly work on
//! rings of their own instead of taking turns on one, so that throughput
//! can grow with P where the single ring's falls (the design's aim: the
//! README's `mpmc_scaling` section has the figures measured so far, from a
//! 2-core machine, where lanes do not beat the default layout). What it
//! changes: order is FIFO *per producer* (Python's `Queue` promises no
//! more: messages of different producers have no order), and
//! capacity is per lane (a producer waits when its own lane is full). The
//! protocol is `shmproc_core::lanes`.
//!
//! The README's table gives the measured costs of both layouts beside a
//! pipe-based queue.
//!
//! # Message sizes
//!
//! A queue carries messages of any size, like Python's. Capacity counts
//! messages ([`bounded`](Queue::bounded)`(n)`: at most `n` queued, whatever
//! their sizes; [`unbounded`](Queue::unbounded): no limit while memory
//! lasts), and [`message_size`](QueueBuilder::message_size) is only the size
//! up to which a message is sure to travel *in* the ring:
//!
//! * **In the ring** (the fast path): a message up to `message_size`, or a
//!   larger one (up to a quarter of the ring) while the ring has room to
//!   spare, is serialised in place into a frame or slot. Whether it fits is
//!   learned from the serialiser's own count of bytes, never from an error
//!   message, so debug and release builds behave the same.
//! * **Out of line**: a larger message is serialised into a block of shared
//!   memory of its own (a page-aligned range of the queue's segment file,
//!   past the mapped region), and the ring carries a 16-byte descriptor of
//!   it. The receiver maps the block, copies the message out (`recv`) or
//!   reads it in place (`recv_ref`), and frees the block before it releases
//!   the descriptor; a block whose receiver died is freed by whoever drops
//!   its message (the next receiver, or a sender recovering the slot), so a
//!   killed receiver leaks nothing. A block of up to 8 MiB is kept for reuse
//!   by the next large message (at most four per queue) and stays mapped in
//!   the processes that used it, so a stream of large messages costs two
//!   copies and no system call each; a fresh block costs a few (`fallocate`,
//!   `mmap`). Limited only by memory (a full `/dev/shm` or memory limit gives
//!   `NoSpace`).
//!
//! [`recv_ref`](Queue::recv_ref) reads every message in place, in the ring
//! or in its block; payloads are aligned to 16 bytes in the ring and to a
//! page out of line, so archives of any alignment rkyv produces (`u128`
//! included) validate in place.
//!
//! # Dead peers
//!
//! A producer killed mid-message never exposes a torn message. In the byte
//! ring nothing was published, and the next producer takes the producing side
//! over once it sees the holder dead (within a liveness slice, ~20 ms); in the
//! slot ring the consumers that reach its slot skip it. A consumer killed
//! while holding a message (a `RecvRef`) loses that message: the byte ring's
//! next receiver, or a producer blocked on the full queue, takes the receiving
//! side over and drops it; the slot ring frees the slot.
//!
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rkyv::Archive;
use shmproc_core::byte_queue::{self, ByteQueue, FrameClaim, Placed, RingStore};
use shmproc_core::mpmc::{stride, Claimed, MpmcError, MpmcRing};
use shmproc_core::notify::Notifier;
use shmproc_core::owner::Owner;
use shmproc_core::participants::{Participants, Presence, Role};
use shmproc_core::region::{align_up, kind, OBJECT_ALIGN};
use shmproc_core::spsc::frame_span;
use shmproc_core::Deadline;

use crate::blocking::{self, receiver_pace, wait, wait_paced, Pacer, WaitPolicy, Waited};

mod async_ops;
mod lanes;
use crate::blocks::{Bin, Blocks};
use crate::borrows::RingBorrow;
use crate::bulk::{BlockRef, Descriptor, Window, DESCRIPTOR_LEN, KIND_BLOCK, KIND_INLINE};
use crate::ring_chain::QueueStore;
#[cfg(feature = "stream")]
pub use async_ops::RecvStream;
pub use async_ops::{RecvFuture, SendFuture};
use lanes::{Lanes, Place};
use shmproc_core::peer_bytes::PeerBytes;

/// The default layout: the byte ring of `shmproc_core::byte_queue` with
/// this crate's store of chained rings and blocks.
type ByteRing = ByteQueue<QueueStore>;
/// A frame claimed from a [`ByteRing`].
type ByteClaim = FrameClaim<<QueueStore as RingStore>::Keep>;
use crate::channel_error::Failure;
use crate::error::Error;
use crate::message::{encode_into, plain_size, Message, Written};
use crate::object::{impl_handle_archive, Object};
use crate::roles::{self, PresencePace};
use crate::segment::Segment;
use crate::thread_id;

/// Largest message in bytes unless set with [`QueueBuilder::message_size`].
///
/// ```
/// let q = shmproc::Queue::<Vec<u8>>::bounded(4)?;
/// assert_eq!(q.message_size(), shmproc::queue::DEFAULT_MESSAGE_SIZE);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const DEFAULT_MESSAGE_SIZE: usize = 1024 - 32;

// ---------------------------------------------------------------- errors ----

pub use crate::channel_error::{RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError};

// ------------------------------------------------------------ the shared core

/// Shared state in front of the ring: the layout tag and the JoinableQueue's
/// task counter.
#[repr(C, align(128))]
pub(crate) struct Extra {
    pub(crate) unfinished: AtomicU64,
    pub(crate) all_done: Notifier,
    layout: AtomicU32,
    /// How many lanes a byte-layout queue has (see `lanes.rs`).
    lanes: AtomicU32,
    /// The lane tickets handed to producing processes.
    tickets: AtomicU32,
    /// The bump counter of out-of-line blocks (see `bulk.rs`).
    bulk_next: AtomicU64,
    /// Blocks kept for reuse (see `blocks.rs`).
    bin: Bin,
}

// SAFETY: atomics only, valid for any bits; alignment 128.
unsafe impl shmproc_core::region::RegionObject for Extra {
    const KIND: u32 = kind::MPMC_RING;
}

impl Extra {
    /// Counts one more unfinished `JoinableQueue` task.
    pub(crate) fn add_task(&self) {
        self.unfinished.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts one task less; `false` (nothing changed) when none is
    /// unfinished. Wakes the joiners when the count reaches zero.
    pub(crate) fn remove_task(&self) -> bool {
        let mut cur = self.unfinished.load(Ordering::Acquire);
        loop {
            if cur == 0 {
                return false;
            }
            match self.unfinished.compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(v) => cur = v,
            }
        }
        if cur == 1 {
            self.all_done.notify();
        }
        true
    }
}

/// Whether a send counts a `JoinableQueue` task (see [`Core::send_task`]).
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub(crate) enum Count {
    /// A plain queue's send.
    No,
    /// A `JoinableQueue`'s: each attempt counts the task just before the
    /// message can be seen, and takes it back if the attempt sends nothing.
    Task,
}

const RING_OFFSET: usize = std::mem::size_of::<Extra>();
const _: () = assert!(RING_OFFSET % OBJECT_ALIGN == 0);
const LAYOUT_SLOTS: u32 = 1;
const LAYOUT_BYTES: u32 = 2;

/// What the two layouts share, under one set of names: `Core` reaches it
/// through [`on_layout!`], and keeps explicit matches only where the layouts
/// really work differently (sending, claiming, waiting, recovering).
trait SharedRing {
    fn participants(&self) -> &Participants;
    fn not_empty(&self) -> &Notifier;
    fn not_full(&self) -> &Notifier;
    /// Messages waiting (a snapshot).
    fn len(&self) -> usize;
    /// Capacity in messages (`usize::MAX`: unbounded).
    fn capacity(&self) -> usize;
    /// The in-ring message size.
    fn message_size(&self) -> usize;
    fn close(&self);
    fn is_closed(&self) -> bool;
    /// Whether something may be there to receive (true on a corrupt ring:
    /// let the receive report it).
    fn has_message(&self) -> bool;
}

impl SharedRing for MpmcRing {
    fn participants(&self) -> &Participants {
        &self.header().participants
    }
    fn not_empty(&self) -> &Notifier {
        &self.header().not_empty
    }
    fn not_full(&self) -> &Notifier {
        &self.header().not_full
    }
    fn len(&self) -> usize {
        MpmcRing::len(self)
    }
    fn capacity(&self) -> usize {
        self.slots()
    }
    fn message_size(&self) -> usize {
        self.slot_size()
    }
    fn close(&self) {
        MpmcRing::close(self);
    }
    #[inline]
    fn is_closed(&self) -> bool {
        MpmcRing::is_closed(self)
    }
    #[inline]
    fn has_message(&self) -> bool {
        MpmcRing::has_message(self)
    }
}

/// The queue-wide parts of lanes are lane 0's (see `lanes.rs`); `not_full`
/// is lane 0's too, and `Core` picks the sender's own lane where it matters.
impl SharedRing for Lanes {
    fn participants(&self) -> &Participants {
        self.first().participants()
    }
    fn not_empty(&self) -> &Notifier {
        self.first().not_empty()
    }
    fn not_full(&self) -> &Notifier {
        self.first().not_full()
    }
    fn len(&self) -> usize {
        Lanes::len(self)
    }
    fn capacity(&self) -> usize {
        Lanes::capacity(self)
    }
    fn message_size(&self) -> usize {
        self.first().message_size()
    }
    fn close(&self) {
        Lanes::close(self);
    }
    #[inline]
    fn is_closed(&self) -> bool {
        self.first().is_closed()
    }
    #[inline]
    fn has_message(&self) -> bool {
        Lanes::has_message(self)
    }
}

/// Runs `$e` with `$r` bound to the queue's ring, whichever layout it is
/// (statically dispatched: each arm calls the [`SharedRing`] method of its
/// own type).
macro_rules! on_layout {
    ($layout:expr, $r:ident => $e:expr) => {
        match $layout {
            Layout::Slots($r) => $e,
            Layout::Bytes($r) => $e,
        }
    };
}

/// The ring behind a queue (see [`QueueBuilder::slot_ring`]).
#[derive(Clone, Debug)]
pub(crate) enum Layout {
    /// Vyukov's slot ring: several `RecvRef`s at once.
    Slots(MpmcRing),
    /// The byte ring with biased side locks: the fast default; or several,
    /// one lane per producing process ([`QueueBuilder::lanes`]).
    Bytes(Lanes),
}

/// A message taken by a receiver, not yet released.
#[derive(Debug)]
pub(crate) enum Claim {
    Slot(Claimed),
    /// A frame of the lane it names.
    Frame(usize, ByteClaim),
}

/// The mapped queue: object + validated ring. Shared by every handle of a
/// process through an `Arc`.
pub(crate) struct Core {
    obj: Object,
    ring: Layout,
    /// This queue's out-of-line blocks (`None` only for an object index too
    /// large to have a window: then large messages are refused).
    blocks: Option<Blocks>,
    /// Bytes of the last message sent through this mapping: the frame size a
    /// byte-ring send reserves first.
    hint: AtomicUsize,
    /// Paces the senders' liveness checks of non-blocking receives that
    /// find nothing (see [`senders_gone`](Core::senders_gone)).
    presence_pace: PresencePace,
    /// How this process's receivers wait ([`Queue::set_wait_policy`]).
    recv_pacer: Pacer,
    /// How this process's senders wait for room.
    send_pacer: Pacer,
    /// This process's lane and receive cursor (a queue with lanes).
    place: Place,
    /// The fork generation (plus one) in which this process last noted a
    /// use of the queue ([`Core::note_use`]).
    used_in: AtomicU32,
}

/// What a first, in-ring send attempt did.
#[derive(Copy, Clone, Debug)]
enum Attempt {
    Sent,
    /// Nothing published; the message goes out of line (its size, when known).
    OutOfLine(Option<usize>),
}

/// A message read out of the ring (or its failure), with the out-of-line
/// block to recycle once its frame is released.
type Read<T> = (Result<T, Failure>, Option<Descriptor>);

/// An rkyv failure while sending.
#[cold]
fn serialize_failure(e: rkyv::rancor::Error) -> Failure {
    Failure::Serialize(e.to_string())
}

/// The archive size of `v`, without writing it anywhere.
pub(crate) fn measure<T: Message>(v: &T) -> Result<usize, Failure> {
    match encode_into(v, &mut []).map_err(serialize_failure)? {
        Written::Done(n) | Written::Needs(n) => Ok(n),
    }
}

impl Core {
    /// The calling thread, for this queue's rings: as the slot ring's slots
    /// record it (flagged when this process holds its kernel liveness
    /// record on the segment's file: `kernel_liveness`); the byte ring
    /// flags it itself, through its store, on entry to each call (the same
    /// file's record), so it gets the plain identity rather than paying
    /// for the lookup twice.
    #[inline]
    fn me(&self) -> Owner {
        self.note_use();
        match &self.ring {
            Layout::Bytes(_) => thread_id::owner(),
            Layout::Slots(_) => self.obj.segment().owner(&thread_id::owner()),
        }
    }

    /// Records, once per process, that this process used the queue (every
    /// send and receive asks for [`me`](Core::me)): a forked child's
    /// inherited handles are then no longer shown as unused (`inspect`).
    #[inline]
    fn note_use(&self) {
        let generation = blocking::fork_generation().wrapping_add(1);
        if self.used_in.load(Ordering::Relaxed) != generation {
            self.first_use(generation);
        }
    }

    #[cold]
    fn first_use(&self, generation: u32) {
        self.used_in.store(generation, Ordering::Relaxed);
        roles::mark_used(self.participants(), self.obj.segment().liveness());
    }

    fn create<T>(seg: Option<&Segment>, name: &str, b: &QueueBuilder<T>) -> Result<Core, Error> {
        // Every slot or frame can hold a block descriptor.
        let (slots, message_size) = (b.capacity, b.message_size.max(DESCRIPTOR_LEN));
        if slots == 0 {
            return Err(Error::Layout("a queue needs at least one slot"));
        }
        if slots == usize::MAX && b.slot_ring {
            return Err(Error::Layout("a slot-ring queue is bounded"));
        }
        if b.slot_ring && b.lanes > 1 {
            return Err(Error::Layout("a slot-ring queue has no lanes"));
        }
        if b.lanes == 0 || b.lanes > shmproc_core::lanes::MAX_LANES {
            return Err(Error::Layout("a queue has 1 to 64 lanes"));
        }
        let lanes = if b.slot_ring { 1 } else { b.lanes };
        let lane_size = if b.slot_ring {
            MpmcRing::required_size(slots, message_size)
        } else {
            byte_queue::required_size(slots, message_size).and_then(|n| align_up(n, OBJECT_ALIGN))
        };
        let lane_size = lane_size.ok_or(Error::Layout("queue too large"))?;
        let ring_size = lane_size.checked_mul(lanes).ok_or(Error::Layout("queue too large"))?;
        let size = RING_OFFSET.checked_add(ring_size).ok_or(Error::Layout("queue too large"))?;
        let mut failed = false;
        let obj = Object::create_sized::<Extra>(seg, name, size, |extra, p| {
            extra.unfinished.store(0, Ordering::Relaxed);
            extra.bulk_next.store(0, Ordering::Relaxed);
            extra.bin.init();
            extra.all_done.init();
            extra.lanes.store(lanes as u32, Ordering::Relaxed);
            extra.tickets.store(0, Ordering::Relaxed);
            // SAFETY: p is OBJECT_ALIGN-aligned with `size` bytes: Extra at 0,
            // the ring at RING_OFFSET (a multiple of 128) with ring_size bytes;
            // nobody else sees it before this returns.
            let base = unsafe { std::ptr::NonNull::new_unchecked(p.as_ptr().add(RING_OFFSET)) };
            if b.slot_ring {
                extra.layout.store(LAYOUT_SLOTS, Ordering::Relaxed);
                // SAFETY: as above: ring_size writable bytes at `base`.
                failed = unsafe { MpmcRing::init(base, ring_size, slots, message_size) }.is_err();
            } else {
                extra.layout.store(LAYOUT_BYTES, Ordering::Relaxed);
                for lane in 0..lanes {
                    // SAFETY: as above: lane `lane` has lane_size bytes at
                    // base + lane × lane_size, inside the ring's ring_size.
                    let at = unsafe { std::ptr::NonNull::new_unchecked(base.as_ptr().add(lane * lane_size)) };
                    // SAFETY: as above.
                    failed |= unsafe { byte_queue::init(at, lane_size, slots, message_size) }.is_err();
                }
            }
        })?;
        if failed {
            return Err(Error::Layout("queue ring initialisation failed"));
        }
        Core::from_object(obj)
    }

    fn from_object(obj: Object) -> Result<Core, Error> {
        let base = obj.at(RING_OFFSET);
        let len = obj.size() - RING_OFFSET;
        let ring = match obj.head::<Extra>().layout.load(Ordering::Relaxed) {
            LAYOUT_SLOTS => {
                // SAFETY: the object's bytes from RING_OFFSET to its end are
                // inside the mapping kept alive by `obj`; attach validates the
                // ring's contents.
                let r = unsafe { MpmcRing::attach(base, len) };
                Layout::Slots(r.map_err(|_| Error::Layout("corrupt queue ring"))?)
            }
            LAYOUT_BYTES => Layout::Bytes(Core::attach_lanes(&obj, base, len)?),
            _ => return Err(Error::Layout("unknown queue layout")),
        };
        let extra = obj.head::<Extra>();
        let blocks = Window::of(&obj)
            .map(|w| Blocks::new(w, std::ptr::NonNull::from(&extra.bulk_next), std::ptr::NonNull::from(&extra.bin)));
        Ok(Core {
            obj,
            ring,
            blocks,
            hint: AtomicUsize::new(0),
            presence_pace: PresencePace::new(),
            recv_pacer: Pacer::default(),
            send_pacer: Pacer::default(),
            place: Place::new(),
            used_in: AtomicU32::new(0),
        })
    }

    /// Attaches the byte layout's lanes: `len` bytes at `base`, split in as
    /// many equal, aligned lanes as the (validated) lane count says.
    fn attach_lanes(obj: &Object, base: std::ptr::NonNull<u8>, len: usize) -> Result<Lanes, Error> {
        let count = obj.head::<Extra>().lanes.load(Ordering::Relaxed);
        // Each lane's size is a multiple of OBJECT_ALIGN; the count is
        // untrusted, so it is bounded before it divides anything.
        let count = shmproc_core::lanes::validate(count, 1, len).map_err(Error::Layout)?;
        let lane_size = len / count / OBJECT_ALIGN * OBJECT_ALIGN;
        let next = std::ptr::NonNull::from(&obj.head::<Extra>().bulk_next);
        let mut rings = Vec::with_capacity(count);
        for lane in 0..count {
            // SAFETY: lane × lane_size + lane_size ≤ len: the lane's bytes
            // are inside the object's bytes from RING_OFFSET to its end,
            // in the mapping kept alive by `obj`.
            let at = unsafe { std::ptr::NonNull::new_unchecked(base.as_ptr().add(lane * lane_size)) };
            let store = QueueStore::new(Window::of(obj), next, obj.segment().liveness().clone());
            // SAFETY: as above; attach validates the ring's contents.
            let r = unsafe { ByteRing::attach(at, lane_size, store) }.map_err(Error::Layout)?;
            // An unbounded queue's store also keeps its chained rings.
            rings.push(r.map_store(|s, unbounded| s.with_chain(unbounded)));
        }
        let lanes = Lanes::new(rings).ok_or(Error::Layout("a queue without lanes"))?;
        if lanes.all().iter().any(|r| r.capacity() != lanes.first().capacity()) {
            return Err(Error::Layout("lanes of different capacities"));
        }
        Ok(lanes)
    }

    pub(crate) fn extra(&self) -> &Extra {
        self.obj.head::<Extra>()
    }

    /// The lane this process sends to and its index (the only ring of a
    /// byte-layout queue without lanes).
    #[inline]
    fn send_lane<'a>(&'a self, l: &'a Lanes) -> (usize, &'a ByteRing) {
        let lane = self.place.sender(l.count(), &self.extra().tickets);
        (lane, l.lane(lane))
    }

    fn participants(&self) -> &Participants {
        on_layout!(&self.ring, r => SharedRing::participants(r))
    }

    fn not_empty(&self) -> &Notifier {
        on_layout!(&self.ring, r => SharedRing::not_empty(r))
    }

    /// The notifier this process's senders wait on for room (with lanes:
    /// their own lane's).
    #[inline]
    fn not_full(&self) -> &Notifier {
        match &self.ring {
            Layout::Bytes(l) if l.count() > 1 => l.lane(self.place.sender_if_any(l.count())).not_full(),
            r => on_layout!(r, r => SharedRing::not_full(r)),
        }
    }

    /// Wakes every sender waiting for room.
    fn wake_senders(&self) {
        match &self.ring {
            Layout::Bytes(l) => l.wake_senders(),
            Layout::Slots(r) => r.header().not_full.wake_all(),
        }
    }

    fn presence(&self, role: Role) -> Presence {
        roles::presence(self.participants(), role, self.obj.segment().liveness())
    }

    /// For a non-blocking receive that found nothing: whether no live sender
    /// is left, looked up at most every
    /// [`PRESENCE_EVERY`](roles::PRESENCE_EVERY) per mapping (in between,
    /// the answer is "not known to be gone": see [`PresencePace`]).
    #[cold]
    fn senders_gone(&self) -> bool {
        self.presence_pace.absent(self.participants(), Role::Sender, self.obj.segment().liveness())
    }

    fn len(&self) -> usize {
        on_layout!(&self.ring, r => SharedRing::len(r))
    }

    /// Whether a send from this process would find no room (with lanes: in
    /// its own lane).
    fn is_full(&self) -> bool {
        match &self.ring {
            Layout::Bytes(l) if l.count() > 1 => {
                let r = self.send_lane(l).1;
                r.len() >= r.capacity()
            }
            _ => self.len() >= self.capacity(),
        }
    }

    fn capacity(&self) -> usize {
        on_layout!(&self.ring, r => SharedRing::capacity(r))
    }

    fn message_size(&self) -> usize {
        on_layout!(&self.ring, r => SharedRing::message_size(r))
    }

    fn close(&self) {
        on_layout!(&self.ring, r => SharedRing::close(r))
    }

    #[inline]
    fn is_closed(&self) -> bool {
        on_layout!(&self.ring, r => SharedRing::is_closed(r))
    }

    #[inline]
    fn has_message(&self) -> bool {
        on_layout!(&self.ring, r => SharedRing::has_message(r))
    }

    /// Whether a receive would not wait: a message is there, or the queue is
    /// closed or has no sender left (for [`crate::wait()`]).
    pub(crate) fn recv_ready(&self) -> bool {
        self.has_message() || self.is_closed() || self.presence(Role::Sender) == Presence::Absent
    }

    /// Writes one message with a raw `write` (the user's `send_with`), which
    /// gets [`message_size`](Core::message_size) bytes: it is never sent out
    /// of line. Waits for the producing side's lock (byte ring) until
    /// `lock_deadline`, never for room.
    fn try_send_raw(
        &self,
        lock_deadline: Option<Deadline>,
        mut write: impl FnMut(&mut [u8]) -> Option<usize>,
    ) -> Result<(), Failure> {
        if self.is_closed() {
            return Err(Failure::Disconnected);
        }
        let limit = self.message_size();
        let gave_up = Failure::TooLarge { size: 0, limit };
        let me = self.me();
        match &self.ring {
            Layout::Slots(r) => match r.try_push_with_kind(&me, KIND_INLINE, write) {
                Ok(()) => Ok(()),
                Err(MpmcError::TooLarge) => Err(gave_up),
                Err(e) => Err(slot_failure(e)),
            },
            Layout::Bytes(l) => {
                let (lane, r) = self.send_lane(l);
                let sent = r.try_send_with(&me, lock_deadline, limit, |buf| {
                    Ok(match write(buf) {
                        Some(n) if n <= buf.len() => Written::Done(n),
                        _ => Written::Needs(usize::MAX),
                    })
                })?;
                match sent {
                    Placed::Inline(_) => {
                        l.published(lane);
                        Ok(())
                    }
                    Placed::NoRoom => Err(Failure::Full),
                    Placed::OutOfLine(_) => Err(gave_up),
                }
            }
        }
    }

    /// The first attempt to send `v`: in the ring, if it fits there (see
    /// `ByteRing::try_send_with`); otherwise says it goes out of line.
    #[inline]
    fn try_send_inline<T: Message>(&self, v: &T, lock_deadline: Option<Deadline>) -> Result<Attempt, Failure> {
        if self.is_closed() {
            return Err(Failure::Disconnected);
        }
        let me = self.me();
        match &self.ring {
            Layout::Bytes(l) => {
                let (lane, r) = self.send_lane(l);
                let hint = self.ring_hint::<T>();
                let write = |buf: &mut [u8]| encode_into(v, buf).map_err(serialize_failure);
                // The side held biased by this thread (with lanes: `send_now`
                // tried a one-ring queue's already), or found free once its
                // bias is gone (several producers): the short paths first.
                let fast = if l.count() > 1 {
                    r.try_send_biased(&me, hint, write).or_else(|| r.try_send_revoked(&me, hint, write))
                } else {
                    r.try_send_revoked(&me, hint, write)
                };
                let placed = match fast {
                    Some(placed) => placed?,
                    None => r.try_send_with(&me, lock_deadline, hint, write)?,
                };
                match placed {
                    Placed::Inline(n) => {
                        l.published(lane);
                        self.note_size(hint, n);
                        Ok(Attempt::Sent)
                    }
                    Placed::OutOfLine(n) => Ok(Attempt::OutOfLine(Some(n))),
                    Placed::NoRoom => Ok(Attempt::OutOfLine(None)),
                }
            }
            Layout::Slots(r) => {
                let slot = r.slot_size();
                if self.hint.load(Ordering::Relaxed) > slot {
                    // The last message did not fit a slot: size this one
                    // before claiming a slot it may not fit either.
                    let n = measure(v)?;
                    self.hint.store(n, Ordering::Relaxed);
                    if n > slot {
                        return Ok(Attempt::OutOfLine(Some(n)));
                    }
                }
                // A message that does not fit its slot goes out of line from
                // inside the claimed slot, which then holds the descriptor:
                // no slot is wasted on a skip.
                let mut outcome: Result<Option<crate::bulk::BlockMut>, Failure> = Ok(None);
                let pushed = r.try_push_with_kinds(&me, |buf| match encode_into(v, buf) {
                    Ok(Written::Done(n)) => Some((n, KIND_INLINE)),
                    Ok(Written::Needs(n)) => {
                        self.hint.store(n, Ordering::Relaxed);
                        let written = match &self.blocks {
                            Some(b) => b.write(v, n),
                            None => Err(Failure::TooLarge { size: n, limit: slot }),
                        };
                        match written {
                            Ok(block) => {
                                buf.get_mut(..DESCRIPTOR_LEN)?.copy_from_slice(&block.descriptor().encode());
                                outcome = Ok(Some(block));
                                Some((DESCRIPTOR_LEN, KIND_BLOCK))
                            }
                            Err(e) => {
                                outcome = Err(e);
                                None
                            }
                        }
                    }
                    Err(e) => {
                        outcome = Err(serialize_failure(e));
                        None
                    }
                });
                match (pushed, outcome) {
                    (Ok(()), Ok(block)) => {
                        if let Some(b) = block {
                            b.published();
                        }
                        Ok(Attempt::Sent)
                    }
                    // The writer gave up (a skip was published in the slot).
                    (Err(_), Err(e)) => Err(e),
                    (r, block) => {
                        if let (Ok(Some(b)), Some(blocks)) = (block, &self.blocks) {
                            blocks.discard(b);
                        }
                        match r {
                            Err(e) => Err(slot_failure(e)),
                            Ok(()) => Err(Failure::corrupt("slot writer")),
                        }
                    }
                }
            }
        }
    }

    /// Publishes the descriptor of an out-of-line block.
    fn try_send_descriptor(&self, desc: &[u8; DESCRIPTOR_LEN], lock_deadline: Option<Deadline>) -> Result<(), Failure> {
        if self.is_closed() {
            return Err(Failure::Disconnected);
        }
        let me = self.me();
        match &self.ring {
            Layout::Bytes(l) => {
                let (lane, r) = self.send_lane(l);
                r.try_send_descriptor(&me, lock_deadline, desc)?;
                l.published(lane);
                Ok(())
            }
            Layout::Slots(r) => r
                .try_push_with_kind(&me, KIND_BLOCK, |buf| {
                    buf.get_mut(..DESCRIPTOR_LEN)?.copy_from_slice(desc);
                    Some(DESCRIPTOR_LEN)
                })
                .map_err(slot_failure),
        }
    }

    /// Sends `v` out of line (see `bulk.rs`): serialises it into a block of
    /// `size` bytes (measured if `None`), then publishes the block's
    /// descriptor, waiting for room until `deadline` if `wait`. The block is
    /// freed if the descriptor is never published.
    #[cold]
    fn send_block<T: Message>(
        &self,
        v: &T,
        size: Option<usize>,
        deadline: Option<Deadline>,
        wait: bool,
        count: Count,
    ) -> Result<(), Failure> {
        let n = match size {
            Some(n) => n,
            None => measure(v)?,
        };
        let blocks = self.blocks.as_ref().ok_or(Failure::TooLarge { size: n, limit: self.message_size() })?;
        let block = blocks.write(v, n)?;
        let desc = block.descriptor().encode();
        let attempt = || self.counted(count, || self.try_send_descriptor(&desc, deadline), |()| true);
        let sent = if wait { self.send_loop(deadline, attempt) } else { attempt() };
        match sent {
            Ok(()) => {
                block.published();
                Ok(())
            }
            Err(e) => {
                blocks.discard(block);
                Err(e)
            }
        }
    }

    /// The bytes a byte-ring send of a `T` reserves first: the last
    /// message's size, at least the archived root's.
    #[inline]
    fn ring_hint<T: Message>(&self) -> usize {
        self.hint.load(Ordering::Relaxed).max(std::mem::size_of::<T::Archived>())
    }

    /// After a send in place of `n` bytes that reserved `hint` first:
    /// remembers `n` for the next one.
    #[inline]
    fn note_size(&self, hint: usize, n: usize) {
        if n != hint {
            self.hint.store(n, Ordering::Relaxed);
        }
    }

    /// The fast path of every send: a queue of one byte ring whose
    /// producing side this thread holds biased, with room, and a message
    /// that fits the size the last one took (see
    /// `ByteQueue::try_send_biased`). `None` when that is not so, with
    /// nothing sent: the general path then decides (and reports a closed
    /// queue). A queue of several lanes tries the same in its general path
    /// (`try_send_inline`): here, the lanes' bookkeeping cost a one-ring
    /// queue ~10 % of its stream rate between two processes.
    #[inline]
    fn send_now<T: Message>(&self, v: &T) -> Option<Result<(), Failure>> {
        let Layout::Bytes(l) = &self.ring else { return None };
        let [r] = l.all() else { return None };
        if r.is_closed() {
            return None;
        }
        self.note_use();
        let hint = self.ring_hint::<T>();
        let me = thread_id::owner();
        match r.try_send_biased(&me, hint, |buf| encode_into(v, buf).map_err(serialize_failure))? {
            Ok(Placed::Inline(n)) => {
                self.note_size(hint, n);
                self.send_pacer.stand_down(r.not_full());
                Some(Ok(()))
            }
            Ok(Placed::OutOfLine(_) | Placed::NoRoom) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Sends `v` without waiting for room.
    #[inline]
    fn try_send<T: Message>(&self, v: &T) -> Result<(), Failure> {
        if let Some(sent) = self.send_now(v) {
            return sent;
        }
        match self.try_send_inline(v, Some(Deadline::EXPIRED))? {
            Attempt::Sent => Ok(()),
            Attempt::OutOfLine(n) => self.send_block(v, n, Some(Deadline::EXPIRED), false, Count::No),
        }
    }

    /// [`try_send`](Core::try_send), counting a task (`Count::Task`) only if
    /// the message goes in.
    pub(crate) fn try_send_counted<T: Message>(&self, v: &T, count: Count) -> Result<(), Failure> {
        self.counted(count, || self.try_send(v), |()| true)
    }

    /// Runs one send `attempt`; with `Count::Task`, the task is counted
    /// before it (so that a consumer that takes the message at once and
    /// calls `task_done` finds it counted) and taken back unless the
    /// attempt put the message in (`sent` of its result). A task is thus
    /// counted only while an attempt runs or once its message is in, never
    /// while a send waits for room (Python counts a `put` once accepted).
    #[inline]
    fn counted<R>(
        &self,
        count: Count,
        attempt: impl FnOnce() -> Result<R, Failure>,
        sent: impl FnOnce(&R) -> bool,
    ) -> Result<R, Failure> {
        if count == Count::No {
            return attempt();
        }
        let tasks = self.extra();
        tasks.add_task();
        let r = attempt();
        if !r.as_ref().is_ok_and(sent) {
            tasks.remove_task();
        }
        r
    }

    /// A value that changes whenever receivers make room (see
    /// [`wait_for_room`](Core::wait_for_room)); read it *before* an attempt
    /// that fails, then wait for it to change.
    #[inline]
    fn progress(&self) -> u64 {
        match &self.ring {
            Layout::Slots(_) => 0,
            Layout::Bytes(l) => self.send_lane(l).1.progress(),
        }
    }

    /// Frees the out-of-line block of a message dropped because its reader
    /// died (see `bulk.rs`).
    fn drop_message(&self, kind: u8, bytes: PeerBytes<'_>) {
        if let (KIND_BLOCK, Some(b)) = (kind, &self.blocks) {
            b.free_raw(bytes);
        }
    }

    /// Waits until receivers may have made room since `progress` was read.
    fn wait_for_room(&self, deadline: Option<Deadline>, progress: u64) -> Waited {
        let absent = || self.presence(Role::Receiver) == Presence::Absent;
        match &self.ring {
            Layout::Slots(r) => wait(
                &self.send_pacer,
                deadline,
                self.not_full(),
                || r.has_room(),
                || r.is_closed(),
                absent,
                |grace| {
                    r.recover_reader_with(self.obj.segment().liveness(), grace, |kind, bytes| {
                        self.drop_message(kind, bytes)
                    })
                },
            ),
            Layout::Bytes(l) => {
                let r = self.send_lane(l).1;
                wait(
                    &self.send_pacer,
                    deadline,
                    r.not_full(),
                    || r.progress() != progress,
                    || r.is_closed(),
                    absent,
                    |_| (0, r.recover_dead_reader(&self.me())),
                )
            }
        }
    }

    /// Runs `attempt` until it does not report `Full`, waiting for room
    /// until `deadline` (then `Timeout`).
    fn send_loop<R>(
        &self,
        deadline: Option<Deadline>,
        mut attempt: impl FnMut() -> Result<R, Failure>,
    ) -> Result<R, Failure> {
        let mut progress = None;
        let mut waited = false;
        loop {
            match attempt() {
                Err(Failure::Full) => {}
                Ok(r) if !waited => {
                    self.send_pacer.stand_down(self.not_full());
                    return Ok(r);
                }
                other => return other,
            }
            // Read the receivers' progress only once the queue was found full
            // (it lives on lines they write), then try once more before
            // waiting: room made before the read is seen by that attempt,
            // room made after it ends the wait.
            let Some(seen) = progress else {
                progress = Some(self.progress());
                continue;
            };
            progress = None;
            waited = true;
            match self.wait_for_room(deadline, seen) {
                Waited::Ready => {}
                Waited::Timeout => return Err(Failure::Timeout),
                Waited::Disconnected => return Err(Failure::Disconnected),
            }
        }
    }

    fn send_deadline<T: Message>(&self, v: &T, deadline: Option<Deadline>) -> Result<(), Failure> {
        self.send_counting(v, deadline, Count::No)
    }

    /// A `JoinableQueue`'s send: [`send_deadline`](Core::send_deadline)
    /// with each attempt counting the task (see [`counted`](Core::counted)).
    pub(crate) fn send_task<T: Message>(&self, v: &T, deadline: Option<Deadline>) -> Result<(), Failure> {
        self.send_counting(v, deadline, Count::Task)
    }

    /// The one body of both: the fast path, then attempts in place until
    /// `deadline`, then out of line, each attempt counted as `count` says.
    #[inline]
    fn send_counting<T: Message>(&self, v: &T, deadline: Option<Deadline>, count: Count) -> Result<(), Failure> {
        // `send_now` declines (`None`) with nothing sent: then the general path.
        match self.counted(count, || self.send_now(v).unwrap_or(Err(Failure::Full)), |()| true) {
            Err(Failure::Full) => {}
            done => return done,
        }
        let attempt = || self.counted(count, || self.try_send_inline(v, deadline), |a| matches!(a, Attempt::Sent));
        match self.send_loop(deadline, attempt)? {
            Attempt::Sent => Ok(()),
            Attempt::OutOfLine(n) => self.send_block(v, n, deadline, true, count),
        }
    }

    /// What a non-blocking receive that took nothing reports: empty, and
    /// closed or (looked up now and then) without senders, is
    /// `Disconnected`, as for a blocking receive; otherwise `Full` (empty).
    /// Emptiness is checked again after the look, for a message sent just
    /// before its sender died.
    fn nothing_taken(&self) -> Failure {
        if !self.has_message() && (self.is_closed() || self.senders_gone()) && !self.has_message() {
            Failure::Disconnected
        } else {
            Failure::Full
        }
    }

    #[inline]
    fn try_claim(&self, lock_deadline: Option<Deadline>) -> Result<Claim, Failure> {
        let me = self.me();
        let empty = || Err(self.nothing_taken());
        match &self.ring {
            Layout::Slots(r) => match r.try_pop(&me) {
                Ok(c) => Ok(Claim::Slot(c)),
                Err(MpmcError::Empty) => empty(),
                Err(e) => Err(slot_failure(e)),
            },
            Layout::Bytes(l) => {
                match l.take(&self.place, lock_deadline, |lane, r, d| {
                    Ok(r.try_claim(&me, d)?.map(|c| Claim::Frame(lane, c)))
                })? {
                    Some(c) => Ok(c),
                    None => empty(),
                }
            }
        }
    }

    fn claim_deadline(&self, deadline: Option<Deadline>) -> Result<Claim, Failure> {
        let mut waited = false;
        loop {
            match self.try_claim(deadline) {
                Err(Failure::Full) => {}
                Ok(c) if !waited => {
                    self.recv_pacer.stand_down(self.not_empty());
                    return Ok(c);
                }
                other => return other,
            }
            waited = true;
            Core::check_deadline(deadline)?;
            self.wait_for_message(deadline)?;
        }
    }

    /// After an attempt that found nothing: `Timeout` once the deadline has
    /// passed. (On the byte ring an attempt also gives up when another
    /// receiver holds the side past the deadline while messages wait, so
    /// waiting for a message alone would not end.)
    #[inline]
    fn check_deadline(deadline: Option<Deadline>) -> Result<(), Failure> {
        match deadline {
            Some(d) if d.has_passed() => Err(Failure::Timeout),
            _ => Ok(()),
        }
    }

    /// Reads a message of `kind` whose frame or slot holds `bytes`: copies
    /// it out, validates and deserialises it. An out-of-line block is punched
    /// now (before the frame is released), or returned to be recycled after
    /// the release (see `blocks.rs`). Always inlined: in a receive's loop
    /// the tuple and the block bookkeeping then cost an inline frame nothing
    /// (a batch receive took 9 instructions a message more without it).
    #[inline(always)]
    fn read_message<T: Message>(&self, kind: u8, bytes: PeerBytes<'_>) -> (Result<T, Failure>, Option<Descriptor>) {
        match (kind, &self.blocks) {
            (KIND_INLINE, _) => {
                (crate::message::decode_peer::<T>(bytes).map_err(|e| Failure::Corrupt(e.to_string())), None)
            }
            (_, Some(b)) => match b.decode::<T>(kind, bytes) {
                Ok(r) => r,
                Err(e) => (Err(e), None),
            },
            (_, None) => (Err(Failure::corrupt("a block in a queue without a window")), None),
        }
    }

    /// After the frame or slot of a message read with `read_message` was
    /// released: recycles its block.
    #[inline]
    fn after_release(&self, block: Option<Descriptor>) {
        if let (Some(d), Some(b)) = (block, &self.blocks) {
            b.recycle(d);
        }
    }

    #[cold]
    fn open_block(&self, bytes: PeerBytes<'_>) -> Result<BlockRef, Failure> {
        self.blocks.as_ref().ok_or_else(|| Failure::corrupt("a block in a queue without a window"))?.open(bytes)
    }

    /// The fast path of every receive: a queue of one byte ring whose
    /// consuming side this thread holds biased (see
    /// `ByteQueue::try_take_biased`), with a message waiting. `None` when
    /// that is not so, with nothing taken: the general path then decides
    /// (and waits).
    #[inline]
    fn recv_now<T: Message>(&self) -> Option<Result<T, Failure>> {
        let Layout::Bytes(l) = &self.ring else { return None };
        let [r] = l.all() else { return None };
        self.note_use();
        let me = thread_id::owner();
        let (v, block) = r.try_take_biased(&me, |kind, bytes| self.read_message::<T>(kind, bytes)).ok()??;
        self.after_release(block);
        self.recv_pacer.stand_down(self.not_empty());
        Some(v)
    }

    /// Receives a `T`, waiting until `deadline`.
    #[inline]
    fn recv_deadline<T: Message>(&self, deadline: Option<Deadline>) -> Result<T, Failure> {
        if let Some(v) = self.recv_now() {
            return v;
        }
        let Layout::Bytes(l) = &self.ring else {
            let c = self.claim_deadline(deadline)?;
            return self.take(c);
        };
        // The byte ring's fast path: read and release in one call.
        let me = self.me();
        let mut waited = false;
        loop {
            if let Some((v, block)) = self.take_now::<T>(l, &me, deadline)? {
                self.after_release(block);
                if !waited {
                    self.recv_pacer.stand_down(self.not_empty());
                }
                return v;
            }
            waited = true;
            if self.is_closed() && !self.has_message() {
                return Err(Failure::Disconnected);
            }
            Core::check_deadline(deadline)?;
            self.wait_for_message(deadline)?;
        }
    }

    /// One read-and-release from the byte layout's lane(s), waiting for a
    /// lane's receiving side until `lock_deadline`: the message (or its
    /// failure) and the block to recycle, or `None` when nothing was taken.
    #[inline]
    fn take_now<T: Message>(
        &self,
        l: &Lanes,
        me: &Owner,
        lock_deadline: Option<Deadline>,
    ) -> Result<Option<Read<T>>, Failure> {
        l.take(&self.place, lock_deadline, |_, r, d| {
            // A lane whose receiving side this thread holds biased takes the
            // fast path (see `recv_now`); one whose bias is gone, its mutex
            // when it is free (`ByteQueue::try_take_revoked`).
            match r.try_take_biased(me, |kind, bytes| self.read_message::<T>(kind, bytes)) {
                Ok(taken) => Ok(taken),
                Err(read) => match r.try_take_revoked(me, read) {
                    Ok(taken) => Ok(taken),
                    Err(read) => r.try_take(me, d, read),
                },
            }
        })
    }

    /// Sends `values` in order, in runs that each take the producing side
    /// once and publish once (byte ring; the slot ring sends one by one),
    /// waiting for room until `deadline`. Returns how many were sent before
    /// an error stopped it (with the error), so a caller can tell what is
    /// in the queue.
    fn send_batch_deadline<T: Message>(
        &self,
        values: &[T],
        deadline: Option<Deadline>,
    ) -> (usize, Result<(), Failure>) {
        let mut sent = 0;
        while sent < values.len() {
            let rest = &values[sent..];
            let run = match &self.ring {
                Layout::Bytes(l) if !self.is_closed() => {
                    let (lane, r) = self.send_lane(l);
                    let hint = self.ring_hint::<T>();
                    let exact = plain_size::<T>();
                    let sent = r.try_send_batch(&self.me(), deadline, hint, exact, rest.len(), |i, buf| {
                        encode_into(&rest[i], buf).map_err(serialize_failure)
                    });
                    // Frames committed before a failing serialiser are
                    // visible too: wake receivers unless nothing was sent.
                    if !matches!(sent, Err(Failure::Full)) {
                        l.published(lane);
                    }
                    sent
                }
                _ => Err(Failure::Full),
            };
            match run {
                Ok(n) => {
                    if sent == 0 {
                        self.send_pacer.stand_down(self.not_full());
                    }
                    sent += n;
                }
                // No room, the limit, or a first message that does not fit
                // the ring's message size: the single-message path waits for
                // room or sends it out of line.
                Err(Failure::Full) => match self.send_deadline(&rest[0], deadline) {
                    Ok(()) => sent += 1,
                    Err(e) => return (sent, Err(e)),
                },
                Err(e) => return (sent, Err(e)),
            }
        }
        (sent, Ok(()))
    }

    /// Takes up to `max` messages waiting now into `out` (at least one, or
    /// an error: `Full` when empty), handing the ring's space back once per
    /// run (byte ring). Messages read before a failing one stay in `out`.
    fn try_recv_batch<T: Message>(
        &self,
        out: &mut Vec<T>,
        max: usize,
        lock_deadline: Option<Deadline>,
    ) -> Result<usize, Failure> {
        let Layout::Bytes(l) = &self.ring else {
            let c = self.try_claim(lock_deadline)?;
            out.push(self.take(c)?);
            return Ok(1);
        };
        let (mut failed, mut recycle) = (None, Vec::new());
        let before = out.len();
        let me = self.me();
        let taken = l
            .take(&self.place, lock_deadline, |_, r, d| {
                let n = r.try_take_batch(&me, d, max, |kind, bytes| {
                    let (v, block) = self.read_message::<T>(kind, bytes);
                    if let Some(d) = block {
                        recycle.push(d);
                    }
                    match v {
                        Ok(v) => {
                            out.push(v);
                            true
                        }
                        Err(e) => {
                            failed = Some(e);
                            false
                        }
                    }
                })?;
                Ok((n > 0 || failed.is_some()).then_some(n))
            })?
            .unwrap_or(0);
        for d in recycle {
            self.after_release(Some(d));
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if taken == 0 {
            return Err(self.nothing_taken());
        }
        Ok(out.len() - before)
    }

    /// [`try_recv_batch`](Core::try_recv_batch), waiting for the first
    /// message until `deadline`.
    fn recv_batch_deadline<T: Message>(
        &self,
        out: &mut Vec<T>,
        max: usize,
        deadline: Option<Deadline>,
    ) -> Result<usize, Failure> {
        let mut waited = false;
        loop {
            match self.try_recv_batch(out, max, deadline) {
                Err(Failure::Full) => {}
                Ok(n) if !waited => {
                    self.recv_pacer.stand_down(self.not_empty());
                    return Ok(n);
                }
                other => return other,
            }
            waited = true;
            Core::check_deadline(deadline)?;
            self.wait_for_message(deadline)?;
        }
    }

    /// Receives a `T` if one is waiting now.
    fn try_recv<T: Message>(&self) -> Result<T, Failure> {
        if let Some(v) = self.recv_now() {
            return v;
        }
        let c = self.try_claim(Some(Deadline::EXPIRED))?;
        self.take(c)
    }

    /// Waits until a message may be there (`Ok`), the deadline passes, or the
    /// queue is drained and disconnected.
    fn wait_for_message(&self, deadline: Option<Deadline>) -> Result<(), Failure> {
        let drained = || !self.has_message() && self.presence(Role::Sender) == Presence::Absent;
        let waited = match &self.ring {
            Layout::Slots(r) => wait(
                &self.recv_pacer,
                deadline,
                self.not_empty(),
                || r.has_message(),
                || r.is_closed(),
                drained,
                |grace| r.recover_writer(self.obj.segment().liveness(), grace),
            ),
            // A dead producer publishes nothing and blocks nobody. Every
            // lane's producer notifies lane 0's `not_empty` (`lanes.rs`).
            Layout::Bytes(l) => wait_paced(
                &self.recv_pacer,
                receiver_pace(l.first().spsc()),
                deadline,
                self.not_empty(),
                || l.has_message(),
                || l.first().is_closed(),
                drained,
                |_| (0, false),
            ),
        };
        match waited {
            Waited::Ready => Ok(()),
            Waited::Timeout => Err(Failure::Timeout),
            // Messages still queued are delivered first.
            Waited::Disconnected if self.has_message() => Ok(()),
            Waited::Disconnected => Err(Failure::Disconnected),
        }
    }

    /// A claimed message's bytes, to be copied out.
    #[inline]
    fn peer_bytes<'a>(&'a self, c: &'a Claim) -> PeerBytes<'a> {
        match (&self.ring, c) {
            (Layout::Slots(r), Claim::Slot(c)) => r.peer_bytes(c),
            (Layout::Bytes(l), Claim::Frame(lane, c)) => l.lane(*lane).peer_bytes(c),
            _ => PeerBytes::from_slice(&[]),
        }
    }

    /// A claimed message's bytes in place (for `RecvRef`: sound against
    /// peers that follow the protocol).
    #[inline]
    fn bytes<'a>(&'a self, c: &'a Claim) -> &'a [u8] {
        match (&self.ring, c) {
            (Layout::Slots(r), Claim::Slot(c)) => r.bytes(c),
            (Layout::Bytes(l), Claim::Frame(lane, c)) => l.lane(*lane).bytes(c),
            _ => &[],
        }
    }

    #[inline]
    fn kind(&self, c: &Claim) -> u8 {
        match (&self.ring, c) {
            (Layout::Slots(r), Claim::Slot(c)) => r.kind(c),
            (Layout::Bytes(l), Claim::Frame(lane, c)) => l.lane(*lane).kind(c),
            _ => u8::MAX,
        }
    }

    #[inline]
    fn release(&self, c: Claim) {
        match (&self.ring, c) {
            (Layout::Slots(r), Claim::Slot(c)) => r.release(c),
            (Layout::Bytes(l), Claim::Frame(lane, c)) => l.lane(lane).release(c),
            // A claim always comes from its own queue's layout.
            _ => {}
        }
    }

    #[inline]
    fn take<T: Message>(&self, c: Claim) -> Result<T, Failure> {
        // Copied out before validating: a peer cannot change what we validate.
        let (r, block) = self.read_message::<T>(self.kind(&c), self.peer_bytes(&c));
        self.release(c);
        self.after_release(block);
        r
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        // Standing registrations (see `blocking::Pacer`) end with the last
        // handle of this process.
        self.recv_pacer.stand_down(self.not_empty());
        self.send_pacer.stand_down(self.not_full());
    }
}

/// A slot-ring error as a channel failure.
#[cold]
fn slot_failure(e: MpmcError) -> Failure {
    match e {
        MpmcError::Full => Failure::Full,
        MpmcError::Empty => Failure::Full,
        MpmcError::TooLarge => Failure::corrupt("slot too small"),
        MpmcError::Corrupt(r) | MpmcError::Layout(r) => Failure::corrupt(r),
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
            roles::attach(core.participants(), Role::Sender, core.obj.segment().liveness());
        }
        if recv {
            roles::attach(core.participants(), Role::Receiver, core.obj.segment().liveness());
        }
        Registered { core, send, recv }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if self.send {
            roles::detach(self.core.participants(), Role::Sender);
            // Receivers may be waiting to learn that the last sender left.
            self.core.not_empty().wake_all();
        }
        if self.recv {
            roles::detach(self.core.participants(), Role::Receiver);
            self.core.wake_senders();
        }
    }
}

/// Configures a [`Queue`] of `T` before creating it: made by
/// [`Queue::builder`], it knows the message type, so
/// [`build`](QueueBuilder::build) and [`build_in`](QueueBuilder::build_in)
/// need no type of their own. For a plain capacity,
/// [`Queue::bounded`] and [`Queue::bounded_in`] say the same in one call.
///
/// ```
/// let q = shmproc::Queue::<String>::builder().capacity(16).message_size(256).build()?;
/// assert_eq!((q.capacity(), q.message_size()), (16, 256));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub struct QueueBuilder<T> {
    capacity: usize,
    message_size: usize,
    byte_budget: Option<usize>,
    slot_ring: bool,
    lanes: usize,
    wait_policy: WaitPolicy,
    _t: PhantomData<fn() -> T>,
}

impl<T> Default for QueueBuilder<T> {
    fn default() -> Self {
        QueueBuilder {
            capacity: 1024,
            message_size: DEFAULT_MESSAGE_SIZE,
            byte_budget: None,
            slot_ring: false,
            lanes: 1,
            wait_policy: WaitPolicy::Adaptive,
            _t: PhantomData,
        }
    }
}

// By hand: deriving would require `T: Clone` / `T: Debug`.
impl<T> Clone for QueueBuilder<T> {
    fn clone(&self) -> Self {
        QueueBuilder { _t: PhantomData, ..*self }
    }
}

impl<T> fmt::Debug for QueueBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueBuilder")
            .field("capacity", &self.capacity)
            .field("message_size", &self.message_size)
            .field("byte_budget", &self.byte_budget)
            .field("slot_ring", &self.slot_ring)
            .field("lanes", &self.lanes)
            .field("wait_policy", &self.wait_policy)
            .finish()
    }
}

impl<T> QueueBuilder<T> {
    /// Capacity in messages (Python's `maxsize`).
    ///
    /// ```
    /// let q = shmproc::Queue::<u64>::builder().capacity(3).build()?;
    /// assert_eq!(q.capacity(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn capacity(mut self, messages: usize) -> Self {
        self.capacity = messages;
        self
    }

    /// Unbounded (Python's `Queue()` without `maxsize`): sends never wait for
    /// room while memory lasts. The queue starts with one ring and, when it
    /// fills, moves on to rings twice as large, which the receivers free as
    /// they drain them (see [`Queue::unbounded`]). Overrides
    /// [`capacity`](Self::capacity); not available with
    /// [`slot_ring`](Self::slot_ring).
    ///
    /// ```
    /// let q = shmproc::Queue::<u64>::builder().unbounded().build()?;
    /// for i in 0..100_000u64 {
    ///     q.try_send(&i)?; // never Full
    /// }
    /// assert_eq!((q.len(), q.capacity()), (100_000, usize::MAX));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unbounded(mut self) -> Self {
        self.capacity = usize::MAX;
        self.byte_budget = None;
        self
    }

    /// The size in bytes up to which a message travels *in* the ring (the
    /// fast path: serialised in place, no system call); the ring is sized so
    /// that `capacity` messages of this size fit at once. It is a hint, not
    /// a limit: a larger message goes in the ring while there is room to
    /// spare, and otherwise travels out of line, in a block of shared memory
    /// of its own whose descriptor the ring carries (a few system calls; see
    /// the [`queue`](crate::queue) module docs).
    ///
    /// ```
    /// let q = shmproc::Queue::<String>::builder().message_size(32).build()?;
    /// q.send(&"x".repeat(100_000))?; // larger than the hint: out of line
    /// q.send(&"short".to_string())?; // in the ring
    /// assert_eq!(q.recv()?.len(), 100_000);
    /// assert_eq!(q.recv()?, "short");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn message_size(mut self, bytes: usize) -> Self {
        self.message_size = bytes.max(1);
        self
    }

    /// Capacity from a byte budget: as many messages of the largest size as
    /// the budget holds (at least one). Overrides [`capacity`](Self::capacity).
    ///
    /// ```
    /// let q = shmproc::Queue::<u64>::builder().message_size(8).byte_capacity(1600).build()?;
    /// assert_eq!(q.capacity(), 100); // 16 bytes a frame
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn byte_capacity(mut self, bytes: usize) -> Self {
        self.byte_budget = Some(bytes);
        self
    }

    /// Uses the slot ring instead of the default byte ring.
    ///
    /// The slot ring (Vyukov's, one fixed-size slot per message) lets several
    /// receivers each hold a [`RecvRef`] at once, and a receiver that dies
    /// holding one loses only that message while the others go on. It costs
    /// a compare-and-swap per message on each side, which makes it several
    /// times slower between two processes. The default byte ring keeps the
    /// receiving side while a `RecvRef` lives: other receivers wait for it to
    /// drop. [`Pool`](crate::Pool)'s task queue is a slot ring, so that idle
    /// workers can take tasks while others run theirs.
    ///
    /// ```
    /// let q = shmproc::Queue::<u32>::builder().capacity(8).slot_ring().build()?;
    /// q.send(&1)?;
    /// q.send(&2)?;
    /// let first = q.recv_ref()?;
    /// let second = q.recv_ref()?; // a second guard while the first lives
    /// assert_eq!((first.to_native(), second.to_native()), (1, 2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn slot_ring(mut self) -> Self {
        self.slot_ring = true;
        self
    }

    /// Gives the queue `lanes` byte rings, one per producing process, so
    /// that many producers and consumers do not take turns on one ring
    /// (1, the default, is the plain byte ring; at most 64).
    ///
    /// Each producing process is given a lane on its first send (round
    /// robin; a forked child asks for its own) and keeps it, so **each
    /// producer's messages stay in order** (FIFO per sending process, as
    /// Python's `Queue` promises; there is no order across producers, and
    /// the threads of one process share its lane). Receivers scan the lanes,
    /// each taking up to 32 messages in a row from one lane before it moves
    /// on, and skip a lane another receiver is reading. With as many lanes as
    /// producers, P producers and P consumers each mostly own a ring, and
    /// the throughput grows with P instead of falling (the README's
    /// `mpmc_scaling` table).
    ///
    /// **Capacity is per lane**: [`capacity`](Self::capacity) messages in
    /// each, so a producer waits when *its* lane holds that many, and the
    /// queue holds at most `lanes × capacity` ([`Queue::capacity`] reports
    /// that; [`Queue::len`] counts all lanes; [`Queue::is_full`] says
    /// whether this process's lane is full). Dead peers are handled per lane
    /// as in the plain byte ring, and `Disconnected` comes once every lane is
    /// drained and no sender is left. Not with [`slot_ring`](Self::slot_ring).
    ///
    /// One consequence of per-producer order to keep in mind: a *sentinel*
    /// (a "stop" message) that one process sends after the producers are
    /// done travels in that process's lane, so a receiver may get it before
    /// messages still waiting in other lanes. End receivers with
    /// `Disconnected` (drop every sending handle) or by counting, as the
    /// tests and the `mpmc_scaling` bench do.
    ///
    /// ```
    /// let q = shmproc::Queue::<u64>::builder().capacity(4).lanes(8).build()?;
    /// assert_eq!((q.lanes(), q.capacity()), (8, 32));
    /// q.send(&1)?;
    /// q.send(&2)?; // this process's lane: in order
    /// assert_eq!((q.recv()?, q.recv()?), (1, 2));
    /// assert!(shmproc::Queue::<u64>::builder().lanes(65).build().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lanes(mut self, lanes: usize) -> Self {
        self.lanes = lanes;
        self
    }

    /// How blocked sends and receives wait in this process (and in
    /// children forked after it); see [`WaitPolicy`] and
    /// [`Queue::set_wait_policy`]. Other processes that open the queue keep
    /// their own (adaptive unless they set one).
    ///
    /// ```
    /// use shmproc::WaitPolicy;
    /// let q = shmproc::Queue::<u64>::builder().wait_policy(WaitPolicy::Sleep).build()?;
    /// assert_eq!(q.wait_policy(), WaitPolicy::Sleep);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_policy(mut self, policy: WaitPolicy) -> Self {
        self.wait_policy = policy;
        self
    }

    fn resolved(mut self) -> Self {
        if self.capacity == usize::MAX {
            return self;
        }
        if let Some(bytes) = self.byte_budget {
            let per_message = if self.slot_ring { stride(self.message_size) } else { frame_span(self.message_size) };
            self.capacity = (bytes / per_message).max(1);
        }
        self
    }
}

impl<T: Message> QueueBuilder<T> {
    /// Creates the queue in a segment of its own.
    ///
    /// ```
    /// let q = shmproc::Queue::<u32>::builder().capacity(8).build()?;
    /// q.send(&1)?;
    /// assert_eq!(q.recv()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(self) -> Result<Queue<T>, Error> {
        let policy = self.wait_policy;
        let q = Queue::from_core(Core::create(None, "", &self.resolved())?)?;
        q.set_wait_policy(policy);
        Ok(q)
    }

    /// Creates the queue as object `name` of `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 20)?;
    /// let q = shmproc::Queue::<u32>::builder().capacity(8).build_in(&seg, "jobs")?;
    /// let again = shmproc::Queue::<u32>::open_in(&seg, "jobs")?;
    /// q.send(&5)?;
    /// assert_eq!(again.recv()?, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build_in(self, seg: &Segment, name: &str) -> Result<Queue<T>, Error> {
        let policy = self.wait_policy;
        let q = Queue::from_core(Core::create(Some(seg), name, &self.resolved())?)?;
        q.set_wait_policy(policy);
        Ok(q)
    }
}

/// A bounded MPMC queue of `T` shared between processes (Python's `Queue`).
/// `Clone` gives another handle (sending and receiving).
///
/// ```
/// let q = shmproc::Queue::<String>::bounded(8)?;
/// let tx = q.clone();
/// let mut child = shmproc::Process::spawn(move || tx.send(&"from the child".to_string()).unwrap())?;
/// assert_eq!(q.recv()?, "from the child");
/// child.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Queue<T> {
    reg: Registered,
    _t: PhantomData<fn(T) -> T>,
}

/// A send-only handle (see [`Queue::into_split`]).
///
/// ```
/// let (tx, rx) = shmproc::Queue::<u8>::bounded(4)?.into_split();
/// let tx2: shmproc::Sender<u8> = tx.clone();
/// tx2.send(&1)?;
/// assert_eq!(rx.recv()?, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Sender<T> {
    reg: Registered,
    _t: PhantomData<fn(T) -> T>,
}

/// A receive-only handle (see [`Queue::into_split`]).
///
/// ```
/// let (tx, rx) = shmproc::Queue::<u8>::bounded(4)?.into_split();
/// let rx: shmproc::Receiver<u8> = rx;
/// tx.send(&9)?;
/// assert_eq!(rx.try_recv()?, 9);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
                    .field("len", &self.reg.core.len())
                    .field("capacity", &self.reg.core.capacity())
                    .finish()
            }
        }
        impl<T> $ty<T> {
            /// Sets how blocked sends and receives on this queue wait in this
            /// process (every handle of the queue in this process shares it;
            /// other processes keep their own): spin while waits are short,
            /// spin for a fixed time, or sleep at once. See [`WaitPolicy`].
            ///
            /// ```
            /// use shmproc::WaitPolicy;
            /// let q = shmproc::Queue::<u8>::bounded(4)?;
            /// q.set_wait_policy(WaitPolicy::Sleep);
            /// assert_eq!(q.wait_policy(), WaitPolicy::Sleep);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn set_wait_policy(&self, policy: WaitPolicy) {
                self.reg.core.recv_pacer.set(policy);
                self.reg.core.send_pacer.set(policy);
            }

            /// How blocked sends and receives on this queue wait in this
            /// process ([`WaitPolicy::Adaptive`] unless set).
            #[must_use]
            pub fn wait_policy(&self) -> WaitPolicy {
                self.reg.core.recv_pacer.get()
            }

            /// Messages waiting (a snapshot; Python's `qsize`).
            ///
            /// ```
            /// let q = shmproc::Queue::<u8>::bounded(4)?;
            /// q.send(&1)?;
            /// q.send(&2)?;
            /// assert_eq!(q.len(), 2);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            #[must_use]
            pub fn len(&self) -> usize {
                self.reg.core.len()
            }
            /// Whether no message is waiting (a snapshot).
            ///
            /// ```
            /// let q = shmproc::Queue::<u8>::bounded(4)?;
            /// assert!(q.is_empty());
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            #[must_use]
            pub fn is_empty(&self) -> bool {
                self.reg.core.len() == 0
            }
            /// Whether every slot is taken (a snapshot).
            ///
            /// ```
            /// let q = shmproc::Queue::<u8>::bounded(1)?;
            /// q.send(&1)?;
            /// assert!(q.is_full());
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            ///
            /// With [lanes](QueueBuilder::lanes): whether this process's
            /// own lane is full (whether a send from here would wait).
            #[must_use]
            pub fn is_full(&self) -> bool {
                self.reg.core.is_full()
            }
            /// How many lanes the queue has ([`QueueBuilder::lanes`]; 1
            /// for the plain byte ring and for the slot ring).
            ///
            /// ```
            /// assert_eq!(shmproc::Queue::<u8>::bounded(4)?.lanes(), 1);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            #[must_use]
            pub fn lanes(&self) -> usize {
                match &self.reg.core.ring {
                    Layout::Bytes(l) => l.count(),
                    Layout::Slots(_) => 1,
                }
            }
            /// Capacity in messages.
            ///
            /// ```
            /// assert_eq!(shmproc::Queue::<u8>::bounded(7)?.capacity(), 7);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            #[must_use]
            pub fn capacity(&self) -> usize {
                self.reg.core.capacity()
            }
            /// Largest serialised message in bytes.
            ///
            /// ```
            /// let q = shmproc::Queue::<u8>::builder().message_size(64).build()?;
            /// assert_eq!(q.message_size(), 64);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            #[must_use]
            pub fn message_size(&self) -> usize {
                self.reg.core.message_size()
            }
            /// Disconnects the queue for every process: sends fail, receives
            /// drain what is left and then report `Disconnected`.
            ///
            /// ```
            /// let q = shmproc::Queue::<u8>::bounded(4)?;
            /// q.send(&1)?;
            /// q.close();
            /// assert!(q.send(&2).is_err());
            /// assert_eq!(q.recv()?, 1); // still delivered
            /// assert!(q.recv().is_err());
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn close(&self) {
                self.reg.core.close();
            }
            /// Whether [`close`](Self::close) was called.
            ///
            /// ```
            /// let q = shmproc::Queue::<u8>::bounded(4)?;
            /// assert!(!q.is_closed());
            /// q.close();
            /// assert!(q.is_closed());
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            #[must_use]
            pub fn is_closed(&self) -> bool {
                self.reg.core.is_closed()
            }
        }
    };
}

handle_common!(Queue, true, true);

impl<T> Receiver<T> {
    pub(crate) fn recv_ready(&self) -> bool {
        self.reg.core.recv_ready()
    }
}

impl<T> Queue<T> {
    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.reg.core
    }

    pub(crate) fn archived_object(&self) -> &Object {
        self.reg.archived_object()
    }

    /// Visits the messages still in a slot-ring queue (see `MpmcRing::scan`):
    /// the pool's task queue. A byte-ring queue has no per-message claimants
    /// to report and is not scanned.
    pub(crate) fn core_scan(&self, mut f: impl FnMut(Option<u32>, PeerBytes<'_>)) {
        let core = &self.reg.core;
        if let Layout::Slots(r) = &core.ring {
            r.scan_with_kind(|claimant, kind, bytes| match kind {
                KIND_INLINE => f(claimant, bytes),
                // An out-of-line message is read from its block (which a
                // consumer may free meanwhile: then it reads as zeros and
                // fails to decode, as a message gone by then should).
                KIND_BLOCK => {
                    if let Ok(block) = core.open_block(bytes) {
                        f(claimant, block.peer());
                    }
                }
                _ => {}
            });
        }
    }
}
handle_common!(Sender, true, false);
handle_common!(Receiver, false, true);

macro_rules! send_methods {
    ($ty:ident) => {
        impl<T: Message> $ty<T> {
            /// Sends, waiting for room as long as it takes.
            ///
            /// ```
            /// let q = shmproc::Queue::<(u32, String)>::bounded(4)?;
            /// q.send(&(1, "one".to_string()))?;
            /// assert_eq!(q.recv()?, (1, "one".to_string()));
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn send(&self, value: &T) -> Result<(), SendError> {
                self.reg.core.send_deadline(value, None).map_err(SendError::from)
            }
            /// Sends without blocking a thread: the future resolves once the
            /// message is in the queue (at once if there is room), with the
            /// errors of [`send`](Self::send). Dropping it unresolved sends
            /// nothing and leaves nothing half-written. Works with any
            /// executor; see [`async_wait`](crate::async_wait) for how it
            /// waits.
            ///
            /// ```
            /// let q = shmproc::Queue::<u32>::bounded(1)?;
            /// shmproc::async_wait::block_on(q.send_async(&5))?;
            /// assert_eq!(q.recv()?, 5);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn send_async<'a>(&'a self, value: &'a T) -> SendFuture<'a, T> {
                SendFuture::new(&self.reg.core, value)
            }
            /// Sends every value of `values`, in order, waiting for room as
            /// [`send`](Self::send) does. Runs of messages that fit the ring
            /// are written in place one after another and published with one
            /// store and one wake-up (receivers see a run whole or not at
            /// all), so a batch costs much less per message than single
            /// sends; order and exactly-once are as for `send`. A sender
            /// killed while writing a run publishes none of that run (the
            /// runs before it are in the queue). On an error, the messages
            /// before the failing one were sent (use
            /// [`send_iter`](Self::send_iter) to learn how many).
            ///
            /// ```
            /// let q = shmproc::Queue::<u64>::bounded(256)?;
            /// q.send_batch(&[1, 2, 3])?;
            /// let mut got = Vec::new();
            /// q.recv_batch(&mut got, 64)?;
            /// assert_eq!(got, [1, 2, 3]);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn send_batch(&self, values: &[T]) -> Result<(), SendError> {
                self.reg.core.send_batch_deadline(values, None).1.map_err(SendError::from)
            }
            /// Sends the values of `values` in order, in batches of up to 64
            /// (see [`send_batch`](Self::send_batch)); returns how many were
            /// sent, or the error with the count sent before it.
            ///
            /// ```
            /// let q = shmproc::Queue::<u64>::bounded(1024)?;
            /// assert_eq!(q.send_iter(0..100u64).map_err(|(_, e)| e)?, 100);
            /// assert_eq!(q.len(), 100);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn send_iter(&self, values: impl IntoIterator<Item = T>) -> Result<usize, (usize, SendError)> {
                let mut chunk = Vec::with_capacity(64);
                let mut total = 0;
                let mut values = values.into_iter().peekable();
                while values.peek().is_some() {
                    chunk.clear();
                    chunk.extend(values.by_ref().take(64));
                    let (n, r) = self.reg.core.send_batch_deadline(&chunk, None);
                    total += n;
                    if let Err(e) = r {
                        return Err((total, SendError::from(e)));
                    }
                }
                Ok(total)
            }
            /// Sends as many of `values` as there is room for now (in order),
            /// without waiting; returns how many (`Full` if none).
            ///
            /// ```
            /// use shmproc::{Queue, TrySendError};
            /// let q = Queue::<u8>::bounded(2)?;
            /// assert_eq!(q.try_send_batch(&[1, 2, 3])?, 2);
            /// assert_eq!(q.try_send_batch(&[3]), Err(TrySendError::Full));
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn try_send_batch(&self, values: &[T]) -> Result<usize, TrySendError> {
                match self.reg.core.send_batch_deadline(values, Some(Deadline::EXPIRED)) {
                    (0, Err(e)) => Err(TrySendError::from(e)),
                    (n, _) => Ok(n),
                }
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
                self.reg.core.try_send(value).map_err(TrySendError::from)
            }
            /// Sends, waiting at most `timeout` for room.
            ///
            /// ```
            /// let q = shmproc::Queue::<u8>::bounded(1)?;
            /// q.send_timeout(&1, std::time::Duration::from_millis(10))?;
            /// assert!(q.send_timeout(&2, std::time::Duration::from_millis(10)).is_err());
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn send_timeout(&self, value: &T, timeout: Duration) -> Result<(), SendTimeoutError> {
                self.reg.core.send_deadline(value, Some(Deadline::after(timeout))).map_err(SendTimeoutError::from)
            }
            /// Writes a message in place, waiting for room as long as it takes:
            /// `write` gets [`message_size`](Self::message_size) bytes of
            /// shared memory and returns how many it used (the archived bytes
            /// of a `T`), or `None` to give up (`TooLarge` is returned and
            /// nothing is published). `write` may run more than once (a slot
            /// lost to a race); it must be repeatable. On the byte ring it runs
            /// with the producing side locked: other producers wait for it.
            ///
            /// ```
            /// use rkyv::{rancor, ser::writer::Buffer};
            /// let q = shmproc::Queue::<u64>::bounded(4)?;
            /// q.send_with(|buf| rkyv::api::high::to_bytes_in::<_, rancor::Error>(&42u64, Buffer::from(buf)).ok().map(|b| b.len()))?;
            /// assert_eq!(q.recv()?, 42);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn send_with(&self, mut write: impl FnMut(&mut [u8]) -> Option<usize>) -> Result<(), SendError> {
                let core = &self.reg.core;
                core.send_loop(None, || core.try_send_raw(None, &mut write)).map_err(SendError::from)
            }
            /// Writes a message in place: `write` gets the message buffer and
            /// returns how many bytes it used (the archived bytes of a `T`, e.g. from
            /// rkyv's `to_bytes_in` with a `Buffer`), or `None` to give up.
            /// Receivers validate the bytes like any other message. Does not
            /// wait for room.
            ///
            /// ```
            /// use rkyv::{rancor, ser::writer::Buffer};
            /// let q = shmproc::Queue::<u32>::bounded(1)?;
            /// let write = |buf: &mut [u8]| rkyv::api::high::to_bytes_in::<_, rancor::Error>(&7u32, Buffer::from(buf)).ok().map(|b| b.len());
            /// q.try_send_with(write)?;
            /// assert!(q.try_send_with(write).is_err()); // full
            /// assert_eq!(q.recv()?, 7);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn try_send_with(&self, write: impl FnMut(&mut [u8]) -> Option<usize>) -> Result<(), TrySendError> {
                self.reg.core.try_send_raw(Some(Deadline::EXPIRED), write).map_err(TrySendError::from)
            }
        }
    };
}

macro_rules! recv_methods {
    ($ty:ident) => {
        impl<T: Message> $ty<T> {
            /// Receives, waiting as long as it takes.
            ///
            /// ```
            /// let q = shmproc::Queue::<String>::bounded(4)?;
            /// q.send(&"hi".to_string())?;
            /// assert_eq!(q.recv()?, "hi");
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            #[inline]
            pub fn recv(&self) -> Result<T, RecvError> {
                self.reg.core.recv_deadline(None).map_err(RecvError::from)
            }
            /// Receives without blocking a thread: the future resolves to the
            /// next message, or to the errors of [`recv`](Self::recv)
            /// (`Disconnected` once the queue is empty and no live sender is
            /// left, noticed within [`LIVENESS_MAX`](crate::async_wait::LIVENESS_MAX)
            /// when the sender was killed). Dropping it unresolved loses no
            /// message and holds no lock. Works with any executor; see
            /// [`async_wait`](crate::async_wait) for how it waits.
            ///
            /// ```
            /// let q = shmproc::Queue::<u32>::bounded(4)?;
            /// let tx = q.clone();
            /// let mut child = shmproc::Process::spawn(move || tx.send(&7).unwrap())?;
            /// // Any executor; here the crate's minimal one.
            /// let v = shmproc::async_wait::block_on(q.recv_async())?;
            /// assert_eq!(v, 7);
            /// child.join()?;
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn recv_async(&self) -> RecvFuture<'_, T> {
                RecvFuture::new(&self.reg.core)
            }
            /// The received messages as a `futures_core::Stream` (feature
            /// `stream`): `Ok(message)` items, an `Err` item for a message
            /// that fails validation, and the end once the queue is drained
            /// and disconnected. See [`RecvStream`].
            #[cfg(feature = "stream")]
            pub fn stream(&self) -> RecvStream<'_, T> {
                RecvStream::new(&self.reg.core)
            }
            /// Receives if a message is waiting now.
            ///
            /// An empty queue gives [`TryRecvError::Empty`], or
            /// [`TryRecvError::Disconnected`] once it is closed or every
            /// sender is gone. Whether senders are gone is looked up at most
            /// every 5 ms per mapping (a look reads `/proc` for each
            /// registered process), so a `try_recv` loop sees the last
            /// sender's exit within 5 ms, not necessarily on the next call.
            ///
            /// ```
            /// let q = shmproc::Queue::<u8>::bounded(4)?;
            /// assert!(q.try_recv().is_err());
            /// q.send(&3)?;
            /// assert_eq!(q.try_recv()?, 3);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn try_recv(&self) -> Result<T, TryRecvError> {
                self.reg.core.try_recv().map_err(TryRecvError::from)
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
                self.reg.core.recv_deadline(Some(Deadline::after(timeout))).map_err(RecvTimeoutError::from)
            }
            /// Receives in place: the guard derefs to the validated
            /// `&Archived<T>` in shared memory and consumes the message on
            /// drop. On the byte ring (the default) other receivers wait while
            /// it lives, and a second `recv_ref` by the same thread reports
            /// `Corrupt` rather than deadlock; see [`QueueBuilder::slot_ring`].
            ///
            /// ```
            /// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
            /// struct Row {
            ///     id: u32,
            ///     name: String,
            /// }
            /// let q = shmproc::Queue::<Row>::bounded(4)?;
            /// q.send(&Row { id: 1, name: "ada".into() })?;
            /// let row = q.recv_ref()?; // validated in place, no copy
            /// assert_eq!((row.id.to_native(), row.name.as_str()), (1, "ada"));
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn recv_ref(&self) -> Result<RecvRef<'_, T>, RecvError> {
                let c = self.reg.core.claim_deadline(None).map_err(RecvError::from)?;
                RecvRef::new(&self.reg.core, c).map_err(RecvError::from)
            }
            /// [`recv_ref`](Self::recv_ref) with a timeout.
            ///
            /// ```
            /// let q = shmproc::Queue::<u16>::bounded(4)?;
            /// assert!(q.recv_ref_timeout(std::time::Duration::from_millis(5)).is_err());
            /// q.send(&8)?;
            /// assert_eq!(q.recv_ref_timeout(std::time::Duration::from_millis(5))?.to_native(), 8);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn recv_ref_timeout(&self, timeout: Duration) -> Result<RecvRef<'_, T>, RecvTimeoutError> {
                let c = self.reg.core.claim_deadline(Some(Deadline::after(timeout))).map_err(RecvTimeoutError::from)?;
                RecvRef::new(&self.reg.core, c).map_err(RecvTimeoutError::from)
            }
            /// An iterator that receives until the queue disconnects.
            ///
            /// ```
            /// let (tx, rx) = shmproc::Queue::<u32>::bounded(8)?.into_split();
            /// for i in 0..3 {
            ///     tx.send(&i)?;
            /// }
            /// drop(tx);
            /// assert_eq!(rx.iter().collect::<Vec<_>>(), [0, 1, 2]);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
                std::iter::from_fn(move || self.recv().ok())
            }
            /// Waits for a message, then appends it and up to `max - 1` more
            /// that are waiting now to `out` (in queue order), taking them
            /// with one release of the ring's space per run: much cheaper per
            /// message than single receives. Returns how many were appended
            /// (at least one; `0` only for `max == 0`). On an error, the
            /// messages taken before the failing one are in `out`. A
            /// receiver killed inside this call loses at most the run it
            /// takes (see the module docs, "Batches").
            ///
            /// ```
            /// let q = shmproc::Queue::<u64>::bounded(1024)?;
            /// q.send_iter(0..100u64).map_err(|(_, e)| e)?;
            /// let mut got = Vec::new();
            /// while got.len() < 100 {
            ///     q.recv_batch(&mut got, 64)?;
            /// }
            /// assert!(got.iter().copied().eq(0..100));
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn recv_batch(&self, out: &mut Vec<T>, max: usize) -> Result<usize, RecvError> {
                if max == 0 {
                    return Ok(0);
                }
                self.reg.core.recv_batch_deadline(out, max, None).map_err(RecvError::from)
            }
            /// [`recv_batch`](Self::recv_batch) without waiting: `Empty`
            /// when no message is waiting.
            ///
            /// ```
            /// use shmproc::TryRecvError;
            /// let q = shmproc::Queue::<u8>::bounded(8)?;
            /// let mut got = Vec::new();
            /// assert_eq!(q.try_recv_batch(&mut got, 8), Err(TryRecvError::Empty));
            /// q.send_batch(&[1, 2])?;
            /// assert_eq!(q.try_recv_batch(&mut got, 8)?, 2);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn try_recv_batch(&self, out: &mut Vec<T>, max: usize) -> Result<usize, TryRecvError> {
                if max == 0 {
                    return Ok(0);
                }
                self.reg.core.try_recv_batch(out, max, Some(Deadline::EXPIRED)).map_err(TryRecvError::from)
            }
            /// The messages waiting now, one at a time, without blocking
            /// (as `std::sync::mpsc::Receiver::try_iter`): ends when the
            /// queue is empty (or on an error). Takes one message per step,
            /// so dropping the iterator loses nothing.
            ///
            /// ```
            /// let q = shmproc::Queue::<u8>::bounded(8)?;
            /// q.send_batch(&[1, 2, 3])?;
            /// assert_eq!(q.try_iter().collect::<Vec<_>>(), [1, 2, 3]);
            /// assert_eq!(q.try_iter().count(), 0);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn try_iter(&self) -> impl Iterator<Item = T> + '_ {
                std::iter::from_fn(move || self.try_recv().ok())
            }
            /// Takes every message waiting now, in batches (see
            /// [`recv_batch`](Self::recv_batch)), without waiting; an empty
            /// `Vec` when there is none. Errors only for a corrupt message
            /// or queue, or a re-entered receive.
            ///
            /// ```
            /// let q = shmproc::Queue::<u64>::bounded(1024)?;
            /// q.send_iter(0..500u64).map_err(|(_, e)| e)?;
            /// assert_eq!(q.drain()?.len(), 500);
            /// assert!(q.drain()?.is_empty());
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn drain(&self) -> Result<Vec<T>, RecvError> {
                let mut out = Vec::new();
                loop {
                    match self.reg.core.try_recv_batch(&mut out, 1024, Some(Deadline::EXPIRED)) {
                        Ok(_) => {}
                        Err(Failure::Full | Failure::Disconnected | Failure::Timeout) => return Ok(out),
                        Err(e) => return Err(RecvError::from(e)),
                    }
                }
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
    ///
    /// ```
    /// let q = shmproc::Queue::<u64>::bounded(100)?;
    /// assert_eq!(q.capacity(), 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bounded(capacity: usize) -> Result<Queue<T>, Error> {
        Queue::builder().capacity(capacity).build()
    }

    /// A queue holding at most `capacity` messages, as object `name` of
    /// `seg` (other processes open it with [`open_in`](Queue::open_in)).
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 20)?;
    /// let q = shmproc::Queue::<u32>::bounded_in(&seg, "results", 16)?;
    /// q.send(&7)?;
    /// assert_eq!(shmproc::Queue::<u32>::open_in(&seg, "results")?.recv()?, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bounded_in(seg: &Segment, name: &str, capacity: usize) -> Result<Queue<T>, Error> {
        Queue::builder().capacity(capacity).build_in(seg, name)
    }

    /// An unbounded queue (Python's `Queue()`): `send` never waits for room
    /// while memory lasts, and [`capacity`](Self::capacity) is `usize::MAX`.
    ///
    /// Memory grows and shrinks with the backlog: the queue starts with a
    /// 256 KiB ring; when it is full the sender moves on to a new ring twice
    /// as large (in shared memory of the same segment) and leaves a link to
    /// it, so the backlog lives in a chain of rings of doubling size (a
    /// million queued `u64`s take about 32 MiB). Receivers follow the links
    /// and return each ring's memory to the system once they have left it;
    /// the last ring of a drained chain is left (and freed) at the next
    /// send, which takes the senders back to the first ring.
    /// Messages larger than a quarter of the first ring travel out of line,
    /// as in every queue, freed once received.
    ///
    /// ```
    /// let q = shmproc::Queue::<String>::unbounded()?;
    /// let tx = q.clone();
    /// let mut child = shmproc::Process::spawn(move || {
    ///     for i in 0..50_000 {
    ///         tx.send(&format!("message {i}")).unwrap(); // never blocks
    ///     }
    /// })?;
    /// child.join()?; // the child is done before anything is received
    /// assert_eq!(q.len(), 50_000);
    /// assert_eq!(q.recv()?, "message 0");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unbounded() -> Result<Queue<T>, Error> {
        Queue::builder().unbounded().build()
    }

    /// An unbounded queue (see [`unbounded`](Queue::unbounded)) as object
    /// `name` of `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 20)?;
    /// let q = shmproc::Queue::<u32>::unbounded_in(&seg, "log")?;
    /// q.send(&1)?;
    /// assert_eq!(q.capacity(), usize::MAX);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unbounded_in(seg: &Segment, name: &str) -> Result<Queue<T>, Error> {
        Queue::builder().unbounded().build_in(seg, name)
    }

    /// A queue whose slots take about `bytes` bytes in total.
    ///
    /// ```
    /// let q = shmproc::Queue::<u64>::with_byte_capacity(1 << 20)?;
    /// assert!(q.capacity() >= 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_byte_capacity(bytes: usize) -> Result<Queue<T>, Error> {
        Queue::builder().byte_capacity(bytes).build()
    }

    /// A builder for capacity and message size.
    ///
    /// ```
    /// let q = shmproc::Queue::<u8>::builder().capacity(2).build()?;
    /// assert_eq!(q.capacity(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder() -> QueueBuilder<T> {
        QueueBuilder::default()
    }

    /// Opens the queue `name` in `seg` (created by another process).
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 20)?;
    /// let q = shmproc::Queue::<u8>::bounded_in(&seg, "q", 8)?;
    /// q.send(&1)?;
    /// let opened = shmproc::Queue::<u8>::open_in(&seg, "q")?;
    /// assert_eq!(opened.recv()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_in(seg: &Segment, name: &str) -> Result<Queue<T>, Error> {
        let obj = Object::open_as::<Extra>(seg, name)?.at_least(RING_OFFSET + 128)?;
        Queue::from_core(Core::from_object(obj)?)
    }

    fn from_parts(seg: Segment, index: u32) -> Result<Queue<T>, Error> {
        let obj = Object::from_index_as::<Extra>(seg, index)?.at_least(RING_OFFSET + 128)?;
        Queue::from_core(Core::from_object(obj)?)
    }

    fn from_core(core: Core) -> Result<Queue<T>, Error> {
        Ok(Queue { reg: Registered::new(Arc::new(core), true, true), _t: PhantomData })
    }

    /// Splits into a send-only and a receive-only handle.
    ///
    /// ```
    /// let (tx, rx) = shmproc::Queue::<u8>::bounded(2)?.into_split();
    /// tx.send(&1)?;
    /// assert_eq!(rx.recv()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_split(self) -> (Sender<T>, Receiver<T>) {
        (self.sender(), self.receiver())
    }

    /// A new send-only handle.
    ///
    /// ```
    /// let q = shmproc::Queue::<u8>::bounded(2)?;
    /// let tx = q.sender();
    /// tx.send(&4)?;
    /// assert_eq!(q.recv()?, 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sender(&self) -> Sender<T> {
        Sender { reg: Registered::new(self.reg.core.clone(), true, false), _t: PhantomData }
    }

    /// A new receive-only handle.
    ///
    /// ```
    /// let q = shmproc::Queue::<u8>::bounded(2)?;
    /// let rx = q.receiver();
    /// q.send(&6)?;
    /// assert_eq!(rx.recv()?, 6);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
///
/// ```
/// let q = shmproc::Queue::<Vec<u32>>::bounded(2)?;
/// q.send(&vec![1, 2, 3])?;
/// let guard = q.recv_ref()?;
/// let sum: u32 = guard.iter().map(|x| x.to_native()).sum();
/// assert_eq!(sum, 6);
/// drop(guard); // consumed here
/// assert!(q.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RecvRef<'a, T: Archive> {
    core: &'a Core,
    claimed: Option<Claim>,
    /// The out-of-line block the message lives in, if it is not in the ring.
    block: Option<BlockRef>,
    archived: *const T::Archived,
    /// Counted while alive: fork mode refuses to copy it into a child.
    _borrow: RingBorrow,
}

impl<'a, T: Message> RecvRef<'a, T> {
    fn new(core: &'a Core, c: Claim) -> Result<RecvRef<'a, T>, Failure> {
        let block = match core.kind(&c) {
            KIND_INLINE => None,
            KIND_BLOCK => match core.open_block(core.peer_bytes(&c)) {
                Ok(b) => Some(b),
                Err(e) => {
                    // Unreadable: dropped, as a message that fails validation.
                    core.release(c);
                    return Err(e);
                }
            },
            _ => {
                core.release(c);
                return Err(Failure::corrupt("message kind"));
            }
        };
        let bytes = block.as_ref().map_or_else(|| core.bytes(&c), BlockRef::bytes);
        match rkyv::access::<T::Archived, rkyv::rancor::Error>(bytes) {
            Ok(a) => {
                let archived = a as *const T::Archived;
                Ok(RecvRef { core, claimed: Some(c), block, archived, _borrow: RingBorrow::new() })
            }
            Err(e) => {
                let recycle = block.map(|b| b.desc);
                core.release(c);
                core.after_release(recycle);
                Err(Failure::Corrupt(e.to_string()))
            }
        }
    }

    /// Deserialises an owned `T` from the archived message.
    ///
    /// ```
    /// let q = shmproc::Queue::<String>::bounded(2)?;
    /// q.send(&"copy me".to_string())?;
    /// let owned: String = q.recv_ref()?.to_owned()?;
    /// assert_eq!(owned, "copy me");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_owned(&self) -> Result<T, String> {
        rkyv::deserialize::<T, rkyv::rancor::Error>(&**self).map_err(|e| e.to_string())
    }
}

impl<T: Archive> Deref for RecvRef<'_, T> {
    type Target = T::Archived;
    fn deref(&self) -> &T::Archived {
        // SAFETY: validated by bytecheck in `new`; the slot or frame stays
        // claimed by us (producers do not reuse it) and the block mapped and
        // unfreed until drop.
        unsafe { &*self.archived }
    }
}

impl<T: Archive> Drop for RecvRef<'_, T> {
    fn drop(&mut self) {
        // A block that is punched goes before its descriptor; one that is
        // recycled after it (see `blocks.rs`).
        let recycle = match self.block.take() {
            Some(b) if Blocks::recyclable(&b.desc) => Some(b.desc),
            Some(b) => {
                b.free();
                None
            }
            None => None,
        };
        if let Some(c) = self.claimed.take() {
            self.core.release(c);
        }
        self.core.after_release(recycle);
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
    let obj = match Object::from_index_as::<Extra>(seg.clone(), index).and_then(|o| o.at_least(RING_OFFSET + 128)) {
        Ok(o) => o,
        Err(e) => return ObjectState::Corrupt(e.to_string()),
    };
    match Core::from_object(obj) {
        Ok(core) => ObjectState::Queue {
            depth: core.len(),
            capacity: core.capacity(),
            message_size: core.message_size(),
            lanes: match &core.ring {
                Layout::Bytes(l) => l.count(),
                Layout::Slots(_) => 1,
            },
            closed: core.is_closed(),
            holders: core
                .participants()
                .snapshot_marked()
                .map(|(id, senders, receivers, inherited_unused)| crate::inspect::Holder {
                    process: id,
                    senders,
                    receivers,
                    alive: id.is_alive(),
                    inherited_unused,
                })
                .collect(),
            unfinished: core.extra().unfinished.load(Ordering::Acquire),
            sides: match &core.ring {
                // One pair of sides per lane: shown for a single ring.
                Layout::Bytes(l) if l.count() == 1 => Some({
                    let (producers, consumers) = l.first().sides();
                    (producers.into(), consumers.into())
                }),
                Layout::Bytes(_) | Layout::Slots(_) => None,
            },
        },
        Err(e) => ObjectState::Corrupt(e.to_string()),
    }
}
