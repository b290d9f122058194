//! The default layout of a `shmproc::Queue`: a byte ring of
//! length-prefixed frames ([`spsc`](crate::spsc)) whose producing side and
//! consuming side are each serialised by a
//! biased lock ([`biased_lock`](crate::biased_lock)).
//!
//! ```text
//! [producer lock][consumer lock][sent | received cache | ring | pending][received][reading | ring | follow][limit, message size][byte ring ...]
//! ```
//!
//! # Why this shape
//!
//! In the slot ring (Vyukov's, [`mpmc`](crate::mpmc), `QueueBuilder::slot_ring`) both
//! sides write every slot and claim it with a compare-and-swap; between two
//! processes each of those costs a cache-line transfer and a store-buffer
//! drain, on both sides, for every message. Here a message costs the
//! producer a frame write published by a `Release` store of its header word
//! (the consumer polls that word, not `tail`: one line moves per message), and
//! the consumer one `Release` store of `head`; each side's lock, held by the
//! same thread message after message, is *biased* to it and costs no atomic
//! read-modify-write. Frames are packed (16 bytes for a `u64`), so consecutive
//! messages share cache lines instead of bouncing one line each. The
//! measured difference between the two layouts is in the README's table
//! (`cargo bench -p shmproc-benches` writes the current report).
//!
//! # The fast paths
//!
//! [`try_send_biased`](ByteQueue::try_send_biased) and
//! [`try_take_biased`](ByteQueue::try_take_biased) are the common case of a
//! send and a receive alone: a bounded queue, a side whose bias the calling
//! thread holds ([`BiasedLock::try_lock_biased`]), a message that fits. They
//! skip what the general path must look at every time (the owner record
//! with its kernel-liveness flag, which only the mutex records; a dead
//! previous holder, which a biased entry never finds; chained rings; lanes
//! and the `Result` layers of the callers) and decline, with nothing
//! changed, whenever any of it could matter, so the general path keeps
//! every decision it made before. Inside, they do what the general path
//! does in the same order (commit then count; mark, read, count, release),
//! so the dead-peer handling below covers them unchanged. `shmproc::Queue`
//! tries them first for every single send and receive: they take a
//! `Queue<u64>` send and receive from 721 to 509 instructions (callgrind,
//! one thread), most of the gap to `Pipe<u64>` (343).
//!
//! [`try_send_revoked`](ByteQueue::try_send_revoked) and
//! [`try_take_revoked`](ByteQueue::try_take_revoked) are the same on a side
//! whose bias is gone for good (several threads or processes took turns on
//! it: two producers, two consumers): they enter its mutex when they find
//! it free ([`BiasedLock::try_lock_revoked`]), recording the owner with its
//! kernel-liveness flag as the general path does, and decline when it is
//! held (a holder to wait for, or a dead one to take over, is the general
//! path's). `shmproc::Queue` tries them first in its general path: a send
//! and receive on two revoked sides went from 1021 to 864 instructions, and
//! two producers and two consumers moved ~1.45x as many messages. (Tried
//! in the single-message fast path itself, beside the biased call, they
//! gave 623 instructions, but cost the biased case ~18 and one-producer
//! one-consumer streams 5-15 %: the biased case stays alone there.)
//!
//! # What it gives up
//!
//! A claim ([`ByteQueue::try_claim`], behind `shmproc::RecvRef`) keeps the
//! consuming side locked while it lives, so other receivers wait until it
//! is released (the slot layout lets several claims live at once).
//!
//! # Dead peers
//!
//! A producer that dies mid-message never published it: the header word is
//! stored only after the frame is complete, and the next producer takes the
//! lock over (owner died) and writes over the unpublished bytes. One that dies
//! after the header store but before recording its position left a complete,
//! published frame: the next producer walks over it
//! ([`Producer::resync`](crate::spsc::Producer::resync)) and counts it
//! as sent. A consumer records the
//! position of the frame it was handed (`reading`) before reading it; when a
//! consumer takes the lock over from a dead one and that frame is still at the
//! head, it is dropped, as a dead consumer's slot is in the slot layout (a
//! message that killed its reader is not handed to the next one). The mark is
//! not cleared after each message: a ring's consumer position only grows, so
//! a mark left behind names a position the head has passed and never matches
//! again; moving to another ring (whose positions start at 0) clears it. Producers
//! blocked on a full queue check the consuming side's holder at every
//! liveness slice, so a reader that died holding a `RecvRef` cannot block
//! them forever.
//!
//! # Counting
//!
//! `sent` (producers) and `received` (consumers) count messages for the
//! message limit and `len`. Each is stored after the step it counts (a
//! publication, a consumption): a process killed between the two leaves the
//! count one short (a producer) or one over (a consumer whose frame the next
//! consumer drops again). Producers that find `received` ahead of `sent` adopt
//! it, so the counts re-align by the time the queue drains; until then `len`
//! may be off by one and the queue may hold one message over its limit (the
//! ring has room for it). Frames a killed producer published but did not
//! record are counted by the producer that takes its side over. A consumer bumps `received` *before* handing the
//! frame's bytes back, and producers waiting for room watch `received + head`,
//! a number that grows with every consumption; they read it before each
//! attempt, so no consumption can slip between a failed attempt and the wait.
//!
//! # Unbounded queues: a chain of rings
//!
//! An unbounded queue ([`UNBOUNDED`], `shmproc::Queue::unbounded`) starts
//! with its own ring like any other. When that ring is full, the producer
//! does not wait: it creates a ring twice as large in an out-of-line block of
//! the segment file (a [`RingStore`]; the std crate's `bulk.rs` and
//! `ring_chain.rs`), publishes a *link*
//! frame naming it in the full ring, and goes on in the new one; consumers
//! follow the link when they reach it, and free a chained ring (punch it out
//! of the file) once they have left it. When a producer finds the chained
//! ring it writes to empty (the consumers caught up), it links back to the
//! queue's own ring, which is empty then; so the last ring of a drained
//! backlog is freed when the consumers follow that link after the next send,
//! not before (consumers never take the producing side, whose bias they would
//! revoke for good). So a backlog grows memory by doubling rings
//! (1 M queued `u64`s take rings of 256 KiB ... 16 MiB, about 32 MiB in all),
//! and the memory is returned as the consumers drain it; a queue that keeps
//! up never leaves its own ring. Every reservation keeps room for a link
//! frame, so a link always fits. Link frames are not messages (not counted).
//!
//! The switch is made safe against deaths by recording it first: a producer
//! takes the new ring's file range, records the link it is about to publish
//! (`pending`, with the position it goes to), and only then gives the ring
//! memory and publishes the link; a producer that takes the side over from a
//! dead one finishes the switch if the link was published and frees the new
//! ring if not. A consumer records the ring it is moving to (`follow`)
//! before it hands the link back, frees the ring it left, then switches; one
//! that takes over from a dead consumer finishes the move. Only a producer
//! killed between taking a range (one atomic add) and recording it leaves a
//! ring's memory behind, and there is no memory in it yet.

use crate::primitive::sync::atomic::{AtomicU64, Ordering};
use core::ptr::NonNull;

use crate::biased_lock::{BiasedLock, Held, Holder};
use crate::cache_padded::CachePadded;
use crate::notify::Notifier;
use crate::owner::{Owner, OwnerCheck};
use crate::participants::Participants;
use crate::peer_bytes::PeerBytes;
use crate::raw_mutex::LockError;
use crate::spsc::{
    capacity_for_frames, frame_span, Consumer, Frame, Producer, Reservation, RingError, SpscRing, MIN_CAPACITY,
};
use crate::Deadline;

/// The kind of a frame that holds the message itself.
pub const KIND_INLINE: u8 = 0;
/// The kind of a frame whose payload is the [`RingDesc`]-sized descriptor of
/// an out-of-line block (the store frees it, [`RingStore::free_block`], when
/// a dead reader's message is dropped).
pub const KIND_BLOCK: u8 = 1;
/// The kind of a frame that links an unbounded queue's ring to the next one:
/// its payload is the next ring's descriptor (module docs). Not a message.
pub const KIND_LINK: u8 = 2;
/// Bytes of a descriptor (of a chained ring, or of an out-of-line block).
pub const DESCRIPTOR_LEN: usize = 16;

/// A descriptor, as stored in shared memory: the store gives it meaning.
pub type RingDesc = [u8; DESCRIPTOR_LEN];

/// The descriptor that names the queue's own ring.
pub const OWN_RING: RingDesc = [0; DESCRIPTOR_LEN];

/// Why a queue operation failed, as far as the layout knows (a
/// [`RingStore`]'s error type wraps it with its own failures).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// No room for the message, or the side lock was not had in time.
    Full,
    /// The calling thread already holds the side it asked for (a send from
    /// inside a serialiser, or a receive under a claim).
    Reentered,
    /// Impossible values in the shared state.
    Corrupt(&'static str),
}

impl core::fmt::Display for QueueError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            QueueError::Full => f.write_str("queue full"),
            QueueError::Reentered => f.write_str("queue side re-entered by its holder"),
            QueueError::Corrupt(r) => write!(f, "corrupt queue: {r}"),
        }
    }
}

/// What a frame writer did with the buffer it was given.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Written {
    /// The message is in the buffer: this many bytes.
    Done(usize),
    /// The message needs this many bytes, more than the buffer has; what was
    /// written is to be dropped.
    Needs(usize),
}

/// Where an unbounded queue's chained rings live, and how out-of-line blocks
/// are freed: the part of a queue that needs an operating system (mapping
/// file ranges). Descriptors come from shared memory: an implementation
/// validates them and reports garbage as an error, never a fault.
pub trait RingStore {
    /// Keeps a chained ring mapped while a [`RingRef`] to it lives.
    type Keep: Clone;
    /// The error type of every queue operation: the layout's own failures
    /// plus the store's (no memory, ...).
    type Error: From<QueueError>;

    /// The chained ring `desc` names, mapped.
    fn ring(&self, desc: &RingDesc) -> Result<(SpscRing, Self::Keep), Self::Error>;
    /// Takes room for a new chained ring of `capacity` bytes (a power of
    /// two), without memory yet: see [`build`](RingStore::build).
    fn plan(&self, capacity: usize) -> Result<RingDesc, Self::Error>;
    /// Gives a planned ring memory and initialises it, empty.
    fn build(&self, desc: &RingDesc, capacity: usize) -> Result<(SpscRing, Self::Keep), Self::Error>;
    /// Frees a chained ring (nobody reads or writes it any more): idempotent,
    /// garbage ignored.
    fn free_ring(&self, desc: &RingDesc);
    /// Frees the out-of-line block a dropped [`KIND_BLOCK`] frame names:
    /// idempotent, garbage ignored.
    fn free_block(&self, desc: PeerBytes<'_>);

    /// How the side locks judge a recorded holder
    /// ([`ProcLiveness`](crate::owner::ProcLiveness), or a
    /// check that also reads kernel-kept records of the region's file).
    type Check: OwnerCheck;
    /// The check the side locks use.
    fn check(&self) -> &Self::Check;
    /// `me` as the side locks record it (the std store flags
    /// [`KERNEL_LIVE`](crate::owner::KERNEL_LIVE) when its process holds its
    /// liveness record on the region's file); `me` itself by default. Every
    /// [`ByteQueue`] method that takes a caller's `me` resolves it through
    /// this once, on entry, and uses the result throughout (locks, claims,
    /// unlocks), so callers pass the plain thread identity.
    fn owner(&self, me: &Owner) -> Owner {
        *me
    }
}

/// A ring of a queue: its own, or a chained one, kept mapped while this
/// reference lives.
#[derive(Clone, Debug)]
pub struct RingRef<K> {
    /// The ring.
    pub ring: SpscRing,
    /// The descriptor that names it ([`OWN_RING`] for the queue's own).
    pub desc: RingDesc,
    _keep: Option<K>,
}

impl<K> RingRef<K> {
    /// The queue's own ring.
    pub fn own(ring: SpscRing) -> RingRef<K> {
        RingRef { ring, desc: OWN_RING, _keep: None }
    }

    /// A chained ring, mapped while `keep` lives.
    pub fn chained(ring: SpscRing, desc: RingDesc, keep: K) -> RingRef<K> {
        RingRef { ring, desc, _keep: Some(keep) }
    }

    /// Whether this is a chained ring (not the queue's own).
    pub fn is_chained(&self) -> bool {
        self.desc != OWN_RING
    }
}

/// A message frame found at the head, in the ring it was found in.
type Peeked<K> = (RingRef<K>, Frame);

/// A corrupt-state error of any store.
#[cold]
/// `ring`'s producer. Called only with the queue's producing side locked
/// (inside `with_producer`), which is [`SpscRing::producer`]'s "one at a
/// time" contract.
#[inline]
fn tx(ring: &SpscRing) -> Producer {
    // SAFETY: the producing side's lock is held by every caller (above).
    unsafe { ring.producer() }
}

/// `ring`'s consumer. Called only with the queue's consuming side locked
/// (`try_claim`, `try_take`, a claim's release, `after_dead_reader`), which
/// is [`SpscRing::consumer`]'s "one at a time" contract.
#[inline]
fn rx(ring: &SpscRing) -> Consumer {
    // SAFETY: the consuming side's lock is held by every caller (above).
    unsafe { ring.consumer() }
}

fn corrupt<E: From<QueueError>>(reason: &'static str) -> E {
    E::from(QueueError::Corrupt(reason))
}

/// A ring error as a queue error.
#[cold]
fn ring_corrupt<E: From<QueueError>>(e: RingError) -> E {
    corrupt(e.reason())
}

/// The message limit of an unbounded queue.
pub const UNBOUNDED: u64 = u64::MAX;
/// Room every reservation of an unbounded queue keeps beyond its frame: a
/// link frame, and what placing it may cost at a wrap.
const LINK_ROOM: usize = frame_span(DESCRIPTOR_LEN) + 16;
/// Longest chain a consumer follows in one look (rings double in size, so a
/// real chain is far shorter).
const MAX_HOPS: usize = 64;

/// What an in-ring send attempt did.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Placed {
    /// Published in the ring: this many bytes.
    Inline(usize),
    /// Nothing published: the message needs this many bytes, more than the
    /// ring takes now; it goes out of line.
    OutOfLine(usize),
    /// Nothing published: no room in the ring although the queue is below its
    /// message limit (larger messages use the room): a typed message goes out
    /// of line, whose descriptor has room (see `roomy`).
    NoRoom,
}

/// The shared state in front of the ring.
#[repr(C, align(128))]
pub struct ByteHead {
    producer: BiasedLock,
    consumer: BiasedLock,
    sent: CachePadded<Sent>,
    /// Messages consumed; written by consumers, read by producers when their
    /// cache says the limit is reached.
    received: CachePadded<AtomicU64>,
    /// Consumers only.
    reader: CachePadded<Reader>,
    meta: CachePadded<Meta>,
}

/// Producers only.
#[repr(C)]
struct Sent {
    sent: AtomicU64,
    received_cache: AtomicU64,
    /// The ring producers write to ([`OWN_RING`], or a chained ring's
    /// descriptor).
    ring: [AtomicU64; 2],
    /// A link being published: the new ring's descriptor, and 1 + the
    /// producer position in the current ring the link goes to (0: none).
    pending: [AtomicU64; 2],
    pending_at: AtomicU64,
}

/// Consumers only: the frame being read and their own copy of `received`
/// (the public one is polled by waiting producers, so consumers only store
/// to it).
#[repr(C)]
struct Reader {
    /// 1 + the consumer position of the frame handed to the current reader,
    /// 0 when none.
    reading: AtomicU64,
    received: AtomicU64,
    /// The ring consumers read ([`OWN_RING`], or a chained ring's descriptor).
    ring: [AtomicU64; 2],
    /// The ring a consumer is moving to, while `following` is 1.
    follow: [AtomicU64; 2],
    following: AtomicU64,
}

fn load_desc(words: &[AtomicU64; 2]) -> RingDesc {
    let mut d = [0u8; DESCRIPTOR_LEN];
    d[..8].copy_from_slice(&words[0].load(Ordering::Relaxed).to_le_bytes());
    d[8..].copy_from_slice(&words[1].load(Ordering::Relaxed).to_le_bytes());
    d
}

fn store_desc(words: &[AtomicU64; 2], d: &RingDesc) {
    let (a, b) = d.split_at(8);
    words[0].store(u64::from_le_bytes(a.try_into().unwrap_or_default()), Ordering::Relaxed);
    words[1].store(u64::from_le_bytes(b.try_into().unwrap_or_default()), Ordering::Relaxed);
}

#[repr(C)]
struct Meta {
    limit: AtomicU64,
    message_size: AtomicU64,
}

const HEAD_SPAN: usize = core::mem::size_of::<ByteHead>();
const _: () = assert!(HEAD_SPAN % crate::region::OBJECT_ALIGN == 0);

/// A frame handed to a receiver, with the consuming side still locked until
/// [`ByteQueue::release`] (dropped without it, the side stays locked to
/// this thread, as if it had died holding it).
#[must_use = "the consuming side stays locked until the claim is released"]
#[derive(Debug)]
pub struct FrameClaim<K> {
    frame: Frame,
    ring: RingRef<K>,
    held: Held,
    me: Owner,
}

/// The mapped queue, with `S` the store of its chained rings and
/// out-of-line blocks.
#[derive(Clone, Debug)]
pub struct ByteQueue<S> {
    head: NonNull<ByteHead>,
    /// The queue's own ring.
    ring: SpscRing,
    limit: u64,
    message_size: usize,
    store: S,
}

// SAFETY: shared memory accessed through atomics, under the two side locks;
// the store is sent with it.
unsafe impl<S: Send> Send for ByteQueue<S> {}
// SAFETY: as above; the store is shared with it.
unsafe impl<S: Sync> Sync for ByteQueue<S> {}

/// The smallest byte ring. When it was chosen, a 128 KiB ring was measurably
/// slower per message between two processes than 256 KiB and larger ones
/// (re-measure with the `Queue<u64>` benches of `cargo bench -p
/// shmproc-benches` before changing it): with a ring this large the lines
/// the consumer read are less often still in its private cache when the
/// producer comes round to write them again. It is address space more than memory: pages
/// are touched only as the ring turns.
const MIN_RING: usize = 256 << 10;

/// A reservation failure as a queue error.
fn reserve_failure<E: From<QueueError>>(e: RingError) -> E {
    match e {
        RingError::Full => QueueError::Full.into(),
        RingError::TooLarge => corrupt("message size beyond the ring"),
        RingError::Corrupt(r) | RingError::Layout(r) => corrupt(r),
    }
}

fn ring_bytes(capacity: usize, message_size: usize) -> Option<usize> {
    if capacity as u64 == UNBOUNDED {
        return Some(MIN_RING);
    }
    // Room for `capacity` messages of the message size (or descriptors of
    // out-of-line ones) plus one, so that a frame that has to wrap still fits
    // when the queue is below its limit.
    capacity_for_frames(capacity, message_size.max(DESCRIPTOR_LEN))?
        .max(MIN_RING.max(MIN_CAPACITY))
        .checked_next_power_of_two()
}

/// Bytes needed for a byte-ring queue of `capacity` messages (or
/// [`UNBOUNDED`]) of up to `message_size` bytes.
pub fn required_size(capacity: usize, message_size: usize) -> Option<usize> {
    HEAD_SPAN.checked_add(SpscRing::required_size(ring_bytes(capacity, message_size)?))
}

/// Initialises an empty queue of `capacity` messages (or [`UNBOUNDED`]) of
/// up to `message_size` bytes; [`ByteQueue::attach`] then maps it.
///
/// # Safety
///
/// `base..base+len` must be valid for reads and writes, aligned to
/// `OBJECT_ALIGN`, and not yet shared.
pub unsafe fn init(base: NonNull<u8>, len: usize, capacity: usize, message_size: usize) -> Result<(), &'static str> {
    let bytes = ring_bytes(capacity, message_size).ok_or("queue too large")?;
    if capacity == 0 || message_size == 0 || len < HEAD_SPAN + SpscRing::required_size(bytes) {
        return Err("queue layout");
    }
    // SAFETY: aligned and at least HEAD_SPAN bytes (checked); atomics only.
    let head = unsafe { &*base.as_ptr().cast::<ByteHead>() };
    head.producer.init();
    head.consumer.init();
    for a in [
        &head.sent.sent,
        &head.sent.received_cache,
        &head.sent.pending_at,
        &head.received,
        &head.reader.reading,
        &head.reader.received,
        &head.reader.following,
    ] {
        a.store(0, Ordering::Relaxed);
    }
    for d in [&head.sent.ring, &head.sent.pending, &head.reader.ring, &head.reader.follow] {
        store_desc(d, &OWN_RING);
    }
    head.meta.limit.store(capacity as u64, Ordering::Relaxed);
    head.meta.message_size.store(message_size as u64, Ordering::Relaxed);
    // SAFETY: HEAD_SPAN + required_size(bytes) <= len (checked), aligned
    // (HEAD_SPAN is a multiple of OBJECT_ALIGN); forwarded contract.
    unsafe {
        let ring_base = NonNull::new_unchecked(base.as_ptr().add(HEAD_SPAN));
        SpscRing::init(ring_base, len - HEAD_SPAN, bytes).map_err(|_| "queue ring layout")?;
    }
    Ok(())
}

impl<S: RingStore> ByteQueue<S> {
    /// Attaches to a queue someone else initialised, validating its layout.
    ///
    /// # Safety
    ///
    /// `base..base+len` must be valid for reads and writes, aligned to
    /// `OBJECT_ALIGN`, and stay mapped while the queue (or a copy) is used;
    /// the contents may be anything (they are validated here and at every
    /// use).
    pub unsafe fn attach(base: NonNull<u8>, len: usize, store: S) -> Result<ByteQueue<S>, &'static str> {
        if len < HEAD_SPAN {
            return Err("queue too small");
        }
        // SAFETY: aligned and at least HEAD_SPAN bytes (checked); atomics only.
        let head = unsafe { &*base.as_ptr().cast::<ByteHead>() };
        // SAFETY: the ring starts HEAD_SPAN bytes in, inside `len` (checked),
        // aligned; `attach` validates its contents.
        let ring = unsafe { SpscRing::attach(NonNull::new_unchecked(base.as_ptr().add(HEAD_SPAN)), len - HEAD_SPAN) }
            .map_err(|_| "corrupt queue ring")?;
        let limit = head.meta.limit.load(Ordering::Relaxed);
        let message_size = head.meta.message_size.load(Ordering::Relaxed);
        if limit == 0 || message_size == 0 || message_size > ring.max_frame() as u64 {
            return Err("corrupt queue limits");
        }
        Ok(ByteQueue { head: base.cast(), ring, limit, message_size: message_size as usize, store })
    }

    /// The frame size a send reserves first for a message of about `hint`
    /// bytes: at least 1, at most the message size.
    #[inline]
    fn first_size(&self, hint: usize) -> usize {
        hint.max(1).min(self.message_size)
    }

    #[inline]
    fn unbounded(&self) -> bool {
        self.limit == UNBOUNDED
    }

    /// The store of this queue's chained rings and out-of-line blocks.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The same queue with its store replaced by `f(store, unbounded)`
    /// (say, one that keeps chained rings only for an unbounded queue).
    pub fn map_store<T: RingStore>(self, f: impl FnOnce(S, bool) -> T) -> ByteQueue<T> {
        let unbounded = self.unbounded();
        let ByteQueue { head, ring, limit, message_size, store } = self;
        ByteQueue { head, ring, limit, message_size, store: f(store, unbounded) }
    }

    /// Whether the queue has no message limit (module docs).
    pub fn is_unbounded(&self) -> bool {
        self.unbounded()
    }

    /// The ring `desc` names.
    #[inline]
    fn ring_named(&self, desc: &RingDesc) -> Result<RingRef<S::Keep>, S::Error> {
        if *desc == OWN_RING {
            Ok(RingRef::own(self.ring))
        } else {
            let (ring, keep) = self.store.ring(desc)?;
            Ok(RingRef::chained(ring, *desc, keep))
        }
    }

    /// The ring producers write to (with the producing side locked).
    #[inline]
    fn producer_ring(&self) -> Result<RingRef<S::Keep>, S::Error> {
        self.ring_named(&load_desc(&self.head().sent.ring))
    }

    /// The ring consumers read (with the consuming side locked).
    #[inline]
    fn consumer_ring(&self) -> Result<RingRef<S::Keep>, S::Error> {
        self.ring_named(&load_desc(&self.head().reader.ring))
    }

    #[inline]
    fn head(&self) -> &ByteHead {
        // SAFETY: validated at attach; the mapping outlives self (contract).
        unsafe { self.head.as_ref() }
    }

    /// Capacity in messages (`usize::MAX`: unbounded).
    pub fn capacity(&self) -> usize {
        usize::try_from(self.limit).unwrap_or(usize::MAX)
    }

    /// Largest message in bytes.
    pub fn message_size(&self) -> usize {
        self.message_size
    }

    /// Messages waiting (a snapshot, clamped to the capacity).
    pub fn len(&self) -> usize {
        let h = self.head();
        let received = h.received.load(Ordering::Relaxed);
        let sent = h.sent.sent.load(Ordering::Relaxed);
        sent.saturating_sub(received).min(self.limit) as usize
    }

    /// Whether no message is counted as waiting (a snapshot, as
    /// [`len`](ByteQueue::len)).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a frame is published (true on a corrupt ring: let the receive
    /// report it).
    #[inline]
    pub fn has_message(&self) -> bool {
        let desc = load_desc(&self.head().reader.ring);
        if desc == OWN_RING {
            self.ring.has_frame()
        } else {
            self.ring_named(&desc).map_or(true, |r| r.ring.has_frame())
        }
    }

    /// The byte ring underneath (for
    /// the std crate's `receiver_pace`).
    pub fn spsc(&self) -> &SpscRing {
        &self.ring
    }

    /// A number that grows with every consumption: producers wait for it to
    /// change (see the module docs).
    #[inline]
    pub fn progress(&self) -> u64 {
        self.head().received.load(Ordering::Acquire).wrapping_add(self.ring.head())
    }

    /// Closes the queue (see [`SpscRing::close`]).
    pub fn close(&self) {
        self.ring.close();
    }

    #[inline]
    /// Whether the queue was closed.
    pub fn is_closed(&self) -> bool {
        self.ring.is_closed()
    }

    /// Who is attached (senders and receivers: the std side gives roles).
    pub fn participants(&self) -> &Participants {
        &self.ring.header().participants
    }

    /// Where receivers sleep for a message.
    pub fn not_empty(&self) -> &Notifier {
        &self.ring.header().not_empty
    }

    /// Where senders sleep for room.
    pub fn not_full(&self) -> &Notifier {
        &self.ring.header().not_full
    }

    /// Sends one message in the ring: `write` serialises it into the frame
    /// (first one of `hint` bytes; if the message needs more, one of its exact
    /// size). A message larger than the queue's message size goes in the ring
    /// only while that leaves room for the rest of the message limit (see
    /// `roomy`); otherwise nothing is published and the result says
    /// [`Placed::OutOfLine`], or [`Placed::NoRoom`] when the ring has no room
    /// although the queue is below its limit. An unbounded queue never runs
    /// out of room: it moves to a larger ring (module docs). Waits for the
    /// producing side's lock until `lock_deadline`, never for room (`Full`).
    #[inline]
    pub fn try_send_with(
        &self,
        me: &Owner,
        lock_deadline: Option<Deadline>,
        hint: usize,
        mut write: impl FnMut(&mut [u8]) -> Result<Written, S::Error>,
    ) -> Result<Placed, S::Error> {
        self.with_producer(me, lock_deadline, |queued| self.send_locked(queued, hint, &mut write))
    }

    /// The common case of [`try_send_with`](ByteQueue::try_send_with), for
    /// a fast path in front of it, with none of its bookkeeping (owner
    /// records, dead holders, chained rings, sizes beyond `hint`; module
    /// docs, "The fast paths"): a bounded queue whose producing side the
    /// calling thread holds biased (see [`BiasedLock::try_lock_biased`]),
    /// below its limit, with room for
    /// `hint` bytes in its own ring, and a
    /// message that fits them. `None` when any of that is not so, with
    /// nothing published: the general path then decides (a reservation
    /// dropped uncommitted publishes nothing; a wrap marker published by a
    /// failed reservation is what the general path's would publish too).
    #[inline]
    pub fn try_send_biased(
        &self,
        me: &Owner,
        hint: usize,
        write: impl FnOnce(&mut [u8]) -> Result<Written, S::Error>,
    ) -> Option<Result<Placed, S::Error>> {
        if self.unbounded() {
            return None;
        }
        let h = self.head();
        let held = h.producer.try_lock_biased(me).ok()??;
        let placed = self.send_entered(hint, write);
        h.producer.unlock(me, held);
        placed
    }

    /// [`try_send_biased`](ByteQueue::try_send_biased) on a producing side
    /// whose bias is gone for good (several threads or processes took turns
    /// on it): its mutex, if free ([`BiasedLock::try_lock_revoked`]; module
    /// docs, "The fast paths"). `None` when that is not so (the side held,
    /// never revoked, or any case `try_send_biased` declines), with nothing
    /// published.
    #[inline]
    pub fn try_send_revoked(
        &self,
        me: &Owner,
        hint: usize,
        write: impl FnOnce(&mut [u8]) -> Result<Written, S::Error>,
    ) -> Option<Result<Placed, S::Error>> {
        if self.unbounded() {
            return None;
        }
        let h = self.head();
        let held = h.producer.try_lock_revoked(|| self.store.owner(me))?;
        let placed = self.send_entered(hint, write);
        h.producer.unlock(me, held);
        placed
    }

    /// The body of [`try_send_biased`](ByteQueue::try_send_biased) and
    /// [`try_send_revoked`](ByteQueue::try_send_revoked), with the producing
    /// side entered.
    #[inline(always)]
    fn send_entered(
        &self,
        hint: usize,
        write: impl FnOnce(&mut [u8]) -> Result<Written, S::Error>,
    ) -> Option<Result<Placed, S::Error>> {
        if self.queued().is_err() {
            return None;
        }
        let size = self.first_size(hint);
        let mut p = tx(&self.ring);
        match p.reserve(size) {
            Ok(r) => match write(&mut p.buffer(&r)[..size]) {
                Ok(Written::Done(n)) => {
                    p.commit_kind(r, n, KIND_INLINE);
                    self.count_sent();
                    Some(Ok(Placed::Inline(n)))
                }
                Ok(Written::Needs(_)) => None,
                Err(e) => Some(Err(e)),
            },
            Err(_) => None,
        }
    }

    /// Sends up to `count` messages in the ring with one publication of the
    /// producing side's position, one count and one wake-up: `write(i,
    /// buf)` serialises message `i` into its frame (first `hint` bytes, then
    /// its exact size if larger, as [`try_send_with`](ByteQueue::try_send_with)).
    /// Stops at the message limit, when the ring has no room, and before a
    /// message larger than the message size (the caller sends that one
    /// alone, out of line or into a larger ring). Returns how many were
    /// sent, in order (`Full` when none could be: the limit or no room).
    ///
    /// With `exact`, every message is promised to serialise to exactly that
    /// many bytes (a fixed-size type): they go in runs of frames of that
    /// size ([`Batch::write_run`](crate::spsc::Batch::write_run)), the room
    /// looked at once per run; a message that breaks the promise
    /// (`write` says `Needs`, or `Done` with another size) is sent by the
    /// general path, as every message is without `exact`.
    ///
    /// The run is published once, when it is complete
    /// ([`Batch`](crate::spsc::Batch)): a producer killed while writing it
    /// publishes none of it (none of it was acknowledged: the call did not
    /// return); one killed after its publication but before its count
    /// leaves frames published but not recorded, which the next producer
    /// counts as sent (module docs, `resync`). Nothing is torn or doubled.
    pub fn try_send_batch(
        &self,
        me: &Owner,
        lock_deadline: Option<Deadline>,
        hint: usize,
        exact: Option<usize>,
        count: usize,
        mut write: impl FnMut(usize, &mut [u8]) -> Result<Written, S::Error>,
    ) -> Result<usize, S::Error> {
        self.with_producer(me, lock_deadline, |queued| {
            let allowed = (self.limit - queued).min(count as u64) as usize;
            let pr = if self.unbounded() { self.producer_ring_for_send()? } else { RingRef::own(self.ring) };
            let keep = if self.unbounded() { LINK_ROOM } else { 0 };
            let mut p = tx(&pr.ring);
            let mut batch = p.batch().map_err(ring_corrupt)?;
            let mut size = self.first_size(hint);
            let mut i = 0;
            while i < allowed {
                if let Some(exact) = exact.filter(|&e| e <= self.message_size) {
                    let done = batch.write_run(exact, KIND_INLINE, allowed - i, keep, |j, buf| {
                        write(i + j, buf).map(|w| w == Written::Done(exact))
                    })?;
                    i += done;
                    if i == allowed {
                        break;
                    }
                    // The end of the buffer, no room, or a message of
                    // another size: one frame the general way.
                }
                let r = match batch.reserve(size + keep) {
                    Ok(r) => r,
                    Err(RingError::Full | RingError::TooLarge) => break,
                    Err(e) => return Err(reserve_failure(e)),
                };
                // Not published unless committed (module docs).
                match write(i, &mut batch.buffer(&r)[..size])? {
                    Written::Done(n) => {
                        batch.commit(r, n, KIND_INLINE);
                        i += 1;
                    }
                    Written::Needs(n) if n > size && n <= self.message_size => size = n,
                    Written::Needs(_) => break,
                }
            }
            let sent = batch.finish();
            if sent == 0 {
                return Err(QueueError::Full.into());
            }
            self.published_in(&pr);
            let total = &self.head().sent.sent;
            total.store(total.load(Ordering::Relaxed).wrapping_add(sent as u64), Ordering::Relaxed);
            Ok(sent)
        })
    }

    /// Publishes the descriptor of an out-of-line block (a [`KIND_BLOCK`]
    /// frame);
    /// `Full` when the message limit is reached or the ring has no room.
    pub fn try_send_descriptor(
        &self,
        me: &Owner,
        lock_deadline: Option<Deadline>,
        desc: &RingDesc,
    ) -> Result<(), S::Error> {
        self.with_producer(me, lock_deadline, |_| {
            let mut pr = self.producer_ring()?;
            let (mut p, r) = loop {
                match self.reserve(&pr, DESCRIPTOR_LEN)? {
                    Some(found) => break found,
                    None if self.unbounded() => pr = self.link_new_ring(&pr, DESCRIPTOR_LEN)?,
                    None => return Err(QueueError::Full.into()),
                }
            };
            p.buffer(&r)[..DESCRIPTOR_LEN].copy_from_slice(desc);
            p.commit_kind(r, DESCRIPTOR_LEN, KIND_BLOCK);
            self.published_in(&pr);
            self.count_sent();
            Ok(())
        })
    }

    /// Runs `f` with the producing side locked and the message limit checked
    /// (`f` gets the number of messages queued).
    #[inline]
    fn with_producer<R>(
        &self,
        me: &Owner,
        lock_deadline: Option<Deadline>,
        f: impl FnOnce(u64) -> Result<R, S::Error>,
    ) -> Result<R, S::Error> {
        let h = self.head();
        let me = &self.store.owner(me);
        let held = match h.producer.lock(me, lock_deadline, self.store.check()) {
            Ok(held) => held,
            Err(LockError::Timeout | LockError::WouldBlock) => return Err(QueueError::Full.into()),
            Err(LockError::Deadlock) => return Err(QueueError::Reentered.into()),
        };
        let r = if held.owner_died() { self.resync_dead_producer() } else { Ok(()) };
        let r = r.and_then(|()| self.queued()).and_then(f);
        h.producer.unlock(me, held);
        r
    }

    /// With the producing side taken over from a dead holder: moves past (and
    /// counts) the frames it published but had not yet recorded, and
    /// finishes or undoes a move to a new ring it was making (module docs).
    #[cold]
    fn resync_dead_producer(&self) -> Result<(), S::Error> {
        let h = self.head();
        let pr = self.producer_ring()?;
        let mut published = tx(&pr.ring).resync().map_err(ring_corrupt)?;
        let pending_at = h.sent.pending_at.load(Ordering::Relaxed);
        if pending_at != 0 {
            let pending = load_desc(&h.sent.pending);
            if pending == pr.desc {
                // Published and moved to: only the record was left.
            } else if tx(&pr.ring).position().map_err(ring_corrupt)? >= pending_at {
                // The link was published (resync walked over it, and it is
                // not a message): finish the move.
                published = published.saturating_sub(1);
                store_desc(&h.sent.ring, &pending);
            } else if pending != OWN_RING {
                // Never published: nobody will ever read that ring.
                self.store.free_ring(&pending);
            }
            h.sent.pending_at.store(0, Ordering::Relaxed);
        }
        let sent = &h.sent.sent;
        sent.store(sent.load(Ordering::Relaxed).wrapping_add(published), Ordering::Relaxed);
        Ok(())
    }

    /// Messages queued, with the producing side locked; `Full` at the limit.
    #[inline]
    fn queued(&self) -> Result<u64, S::Error> {
        let h = self.head();
        let sent = h.sent.sent.load(Ordering::Relaxed);
        let cached = sent.wrapping_sub(h.sent.received_cache.load(Ordering::Relaxed));
        if cached < self.limit {
            return Ok(cached);
        }
        let received = h.received.load(Ordering::Acquire);
        h.sent.received_cache.store(received, Ordering::Relaxed);
        let sent = if received > sent {
            // A producer killed between publishing and counting, or a
            // consumer killed between counting and releasing, leaves the
            // counts one apart (module docs): adopt the consumers' count.
            h.sent.sent.store(received, Ordering::Relaxed);
            received
        } else {
            sent
        };
        match sent - received {
            n if n >= self.limit => Err(QueueError::Full.into()),
            n => Ok(n),
        }
    }

    #[inline]
    fn count_sent(&self) {
        let sent = &self.head().sent.sent;
        sent.store(sent.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// After a publication in `pr`: its commit woke the sleepers of `pr`'s own
    /// notifier; consumers sleep on the queue's own ring's.
    #[inline]
    fn published_in(&self, pr: &RingRef<S::Keep>) {
        if pr.is_chained() {
            self.ring.header().not_empty.notify();
        }
    }

    /// Reserves `len` bytes in `pr` (an unbounded queue's reservations keep
    /// room for a link beyond them); `None` when there is no room.
    #[inline]
    fn reserve(&self, pr: &RingRef<S::Keep>, len: usize) -> Result<Option<(Producer, Reservation)>, S::Error> {
        let mut p = tx(&pr.ring);
        // An unbounded queue's reservation publishes nothing when it fails
        // (no wrap marker), so the room kept for the link stays whole.
        let reserved = if self.unbounded() { p.reserve_quiet(len + LINK_ROOM) } else { p.reserve(len) };
        match reserved {
            Ok(r) => Ok(Some((p, r))),
            Err(RingError::Full) => Ok(None),
            // Larger than this ring can ever take: a larger ring (unbounded).
            Err(RingError::TooLarge) if self.unbounded() => Ok(None),
            Err(e) => Err(reserve_failure(e)),
        }
    }

    /// Moves the producers to a new ring at least twice as large as `pr`,
    /// with room for a `len`-byte frame, linked from `pr` (module docs). The
    /// move is recorded before the new ring gets its memory, so a producer
    /// killed at any point leaves nothing that the next one cannot finish or
    /// free.
    #[cold]
    fn link_new_ring(&self, pr: &RingRef<S::Keep>, len: usize) -> Result<RingRef<S::Keep>, S::Error> {
        let need = (frame_span(len) + LINK_ROOM).saturating_mul(4).next_power_of_two();
        let capacity = pr.ring.capacity().saturating_mul(2).max(need);
        let desc = self.store.plan(capacity)?;
        self.record_link(pr, &desc)?;
        let built = self.store.build(&desc, capacity).and_then(|(ring, keep)| {
            self.link(pr, &desc)?;
            Ok(RingRef::chained(ring, desc, keep))
        });
        if built.is_err() {
            self.head().sent.pending_at.store(0, Ordering::Relaxed);
            self.store.free_ring(&desc);
        }
        built
    }

    /// Records that producers are about to link `pr` to `to` (module docs).
    fn record_link(&self, pr: &RingRef<S::Keep>, to: &RingDesc) -> Result<(), S::Error> {
        let h = self.head();
        let at = tx(&pr.ring).position().map_err(ring_corrupt)?;
        store_desc(&h.sent.pending, to);
        h.sent.pending_at.store(at + 1, Ordering::Relaxed);
        Ok(())
    }

    /// Publishes a link to `to` in `pr` (whose reservations kept room for it)
    /// and moves the producers there; the move was recorded (`record_link`),
    /// and the record is cleared whether the link is published or not.
    fn link(&self, pr: &RingRef<S::Keep>, to: &RingDesc) -> Result<(), S::Error> {
        let h = self.head();
        let mut p = tx(&pr.ring);
        let r = p.reserve(DESCRIPTOR_LEN).map_err(|e| {
            h.sent.pending_at.store(0, Ordering::Relaxed);
            match e {
                RingError::Full => corrupt("no room kept for a link"),
                e => reserve_failure(e),
            }
        })?;
        p.buffer(&r)[..DESCRIPTOR_LEN].copy_from_slice(to);
        p.commit_kind(r, DESCRIPTOR_LEN, KIND_LINK);
        self.published_in(pr);
        store_desc(&h.sent.ring, to);
        h.sent.pending_at.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// The ring a producer writes to: back to the queue's own ring when the
    /// consumers caught up with the chained ring it is in (they read that
    /// ring, and it is empty; so is the own ring then: module docs). A ring
    /// the consumers have not reached yet may be empty too (its producer died
    /// right after linking it): going back then would write past the link
    /// in a full ring.
    #[inline]
    fn producer_ring_for_send(&self) -> Result<RingRef<S::Keep>, S::Error> {
        let pr = self.producer_ring()?;
        if pr.is_chained() && pr.ring.used() == Ok(0) && load_desc(&self.head().reader.ring) == pr.desc {
            self.record_link(&pr, &OWN_RING)?;
            self.link(&pr, &OWN_RING)?;
            return Ok(RingRef::own(self.ring));
        }
        Ok(pr)
    }

    /// Whether a frame of `len` bytes, larger than the message size, may go in
    /// the ring: it must leave room for a descriptor frame for every message
    /// the limit still allows, whatever the wrap costs (an unbounded queue
    /// only needs it to be small beside the ring: it moves to a larger one
    /// when full).
    fn roomy(&self, queued: u64, len: usize) -> bool {
        if len > self.ring.max_frame() / 4 {
            return false;
        }
        if self.unbounded() {
            return true;
        }
        let Ok(used) = self.ring.used() else { return false };
        let still = (self.limit - queued) as usize;
        let reserve = still.saturating_add(2).saturating_mul(frame_span(DESCRIPTOR_LEN));
        frame_span(len).saturating_mul(2).saturating_add(reserve) <= (self.ring.capacity() as u64 - used) as usize
    }

    #[inline]
    fn send_locked(
        &self,
        queued: u64,
        hint: usize,
        write: &mut impl FnMut(&mut [u8]) -> Result<Written, S::Error>,
    ) -> Result<Placed, S::Error> {
        let mut pr = if self.unbounded() { self.producer_ring_for_send()? } else { RingRef::own(self.ring) };
        let mut size = self.first_size(hint);
        loop {
            let Some((mut p, r)) = self.reserve(&pr, size)? else {
                if self.unbounded() {
                    pr = self.link_new_ring(&pr, size)?;
                    continue;
                }
                return Ok(Placed::NoRoom);
            };
            // Not published unless committed: an abandoned reservation is
            // simply dropped. The writer gets `size` bytes (the rest of the
            // reservation is the link's room).
            match write(&mut p.buffer(&r)[..size])? {
                Written::Done(n) => {
                    p.commit(r, n);
                    self.published_in(&pr);
                    self.count_sent();
                    return Ok(Placed::Inline(n));
                }
                Written::Needs(n) if n > size && (n <= self.message_size || self.roomy(queued, n)) => size = n,
                Written::Needs(n) => return Ok(Placed::OutOfLine(n)),
            }
        }
    }

    /// The next frame with the consuming side locked, or `None` if the queue
    /// is empty (or another receiver kept the side past `lock_deadline`).
    #[inline]
    pub fn try_claim(
        &self,
        me: &Owner,
        lock_deadline: Option<Deadline>,
    ) -> Result<Option<FrameClaim<S::Keep>>, S::Error> {
        let me = &self.store.owner(me);
        let Some(held) = self.lock_consumer(me, lock_deadline)? else { return Ok(None) };
        match self.peek_marked() {
            Ok(Some((ring, frame))) => Ok(Some(FrameClaim { frame, ring, held, me: *me })),
            other => {
                self.head().consumer.unlock(me, held);
                other.map(|_| None)
            }
        }
    }

    /// Takes the next message, reading it with `read` (its kind and bytes),
    /// in one go: the fast path of `recv` (no claim is moved around).
    /// `Ok(None)` when empty, or when another receiver kept the side past
    /// `lock_deadline`.
    #[inline]
    pub fn try_take<R>(
        &self,
        me: &Owner,
        lock_deadline: Option<Deadline>,
        read: impl FnOnce(u8, PeerBytes<'_>) -> R,
    ) -> Result<Option<R>, S::Error> {
        let me = &self.store.owner(me);
        let Some(held) = self.lock_consumer(me, lock_deadline)? else { return Ok(None) };
        let r = self.peek_marked().map(|found| {
            found.map(|(ring, frame)| {
                let r = read(frame.kind(), ring.ring.peer_payload(&frame));
                self.consume(&ring.ring, frame);
                r
            })
        });
        self.head().consumer.unlock(me, held);
        r
    }

    /// The common case of [`try_take`](ByteQueue::try_take), for a fast
    /// path in front of it, with none of its bookkeeping: a bounded queue
    /// whose consuming side the calling thread holds biased (see
    /// [`BiasedLock::try_lock_biased`]) and whose own ring holds a message
    /// frame, or nothing (`Ok(None)`). `Err(read)` when that is not so,
    /// with nothing changed: the general path then decides.
    #[inline]
    pub fn try_take_biased<R, F: FnOnce(u8, PeerBytes<'_>) -> R>(&self, me: &Owner, read: F) -> Result<Option<R>, F> {
        if self.unbounded() {
            return Err(read);
        }
        let h = self.head();
        let Ok(Some(held)) = h.consumer.try_lock_biased(me) else { return Err(read) };
        let taken = self.take_entered(read);
        h.consumer.unlock(me, held);
        taken
    }

    /// [`try_take_biased`](ByteQueue::try_take_biased) on a consuming side whose
    /// bias is gone for good: its mutex, if free (see
    /// [`try_send_revoked`](ByteQueue::try_send_revoked)).
    #[inline]
    pub fn try_take_revoked<R, F: FnOnce(u8, PeerBytes<'_>) -> R>(&self, me: &Owner, read: F) -> Result<Option<R>, F> {
        if self.unbounded() {
            return Err(read);
        }
        let h = self.head();
        let Some(held) = h.consumer.try_lock_revoked(|| self.store.owner(me)) else { return Err(read) };
        let taken = self.take_entered(read);
        h.consumer.unlock(me, held);
        taken
    }

    /// The body of [`try_take_biased`](ByteQueue::try_take_biased) and
    /// [`try_take_revoked`](ByteQueue::try_take_revoked), with the consuming
    /// side entered.
    #[inline(always)]
    fn take_entered<R, F: FnOnce(u8, PeerBytes<'_>) -> R>(&self, read: F) -> Result<Option<R>, F> {
        let mut c = rx(&self.ring);
        match c.peek() {
            Ok(None) => Ok(None),
            Ok(Some(frame)) if frame.kind() != KIND_LINK => {
                self.mark_reading(&c);
                let r = read(frame.kind(), self.ring.peer_payload(&frame));
                self.consume(&self.ring, frame);
                Ok(Some(r))
            }
            _ => Err(read),
        }
    }

    /// Takes up to `max` messages in a row, reading each with `read` (its
    /// kind and bytes; `read` returns whether to go on after this one), and hands their space back with one release of the
    /// consuming side: one store of the head, one count, one wake-up of
    /// sleeping senders. Stops early at an empty ring, a wrap of the ring or
    /// a link to another ring (the next call moves on). `Ok(0)` when empty,
    /// or when another receiver kept the side past `lock_deadline`.
    ///
    /// The first frame of the run is the one marked as being read: a
    /// consumer killed mid-run loses that message (as one killed in
    /// [`try_take`](ByteQueue::try_take) loses its one), and the next
    /// consumer is handed the others again: none was delivered, since the
    /// run is handed back only after `read` has run on each. After the
    /// hand-back the run is the caller's: killed before it uses what `read`
    /// kept, it loses the run (as a single take killed after its release
    /// loses its one).
    pub fn try_take_batch(
        &self,
        me: &Owner,
        lock_deadline: Option<Deadline>,
        max: usize,
        mut read: impl FnMut(u8, PeerBytes<'_>) -> bool,
    ) -> Result<usize, S::Error> {
        if max == 0 {
            return Ok(0);
        }
        let me = &self.store.owner(me);
        let Some(held) = self.lock_consumer(me, lock_deadline)? else { return Ok(0) };
        let taken = self.peek_marked().map(|found| {
            let Some((ring, first)) = found else { return 0 };
            let mut c = rx(&ring.ring);
            let mut frame = first;
            let mut n = 0;
            loop {
                let go_on = read(frame.kind(), ring.ring.peer_payload(&frame));
                n += 1;
                if n == max || !go_on {
                    break;
                }
                match c.peek_after(&frame) {
                    Ok(Some(next)) if next.kind() != KIND_LINK => frame = next,
                    // A corrupt frame further on is reported by the next call.
                    _ => break,
                }
            }
            let r = &self.head().reader;
            let received = r.received.load(Ordering::Relaxed).wrapping_add(n as u64);
            r.received.store(received, Ordering::Relaxed);
            self.head().received.store(received, Ordering::Release);
            c.release(frame);
            r.reading.store(0, Ordering::Relaxed);
            n
        });
        self.head().consumer.unlock(me, held);
        taken
    }

    /// Whether a receiver holds the consuming side now (a snapshot that
    /// leaves the side's lock untouched).
    #[inline]
    #[must_use]
    pub fn receiving_side_held(&self) -> bool {
        self.head().consumer.is_held()
    }

    /// Locks the consuming side (`None`: another receiver kept it past
    /// `lock_deadline`), finishing what a dead previous holder left.
    #[inline]
    fn lock_consumer(&self, me: &Owner, lock_deadline: Option<Deadline>) -> Result<Option<Held>, S::Error> {
        match self.head().consumer.lock(me, lock_deadline, self.store.check()) {
            Ok(held) => {
                if held.owner_died() {
                    self.after_dead_reader();
                }
                Ok(Some(held))
            }
            Err(LockError::Timeout | LockError::WouldBlock) => Ok(None),
            Err(LockError::Deadlock) => Err(QueueError::Reentered.into()),
        }
    }

    /// The next message frame (following links), with the consuming side
    /// locked, recorded as the one being read (see the module docs).
    #[inline]
    fn peek_marked(&self) -> Result<Option<Peeked<S::Keep>>, S::Error> {
        let mut cr = if self.unbounded() { self.consumer_ring()? } else { RingRef::own(self.ring) };
        for _ in 0..MAX_HOPS {
            let mut c = rx(&cr.ring);
            match c.peek().map_err(ring_corrupt)? {
                Some(frame) if frame.kind() == KIND_LINK => cr = self.follow_link(&cr, frame)?,
                Some(frame) => {
                    self.mark_reading(&c);
                    return Ok(Some((cr, frame)));
                }
                None => return Ok(None),
            }
        }
        Err(corrupt("ring chain too long"))
    }

    /// Records the frame at `c`'s position as the one being read, for a
    /// successor of a reader that dies reading it (module docs).
    #[inline]
    fn mark_reading(&self, c: &Consumer) {
        self.head().reader.reading.store(c.position().wrapping_add(1), Ordering::Relaxed);
    }

    /// Moves the consumers along the link `frame` of `cr` (module docs).
    #[cold]
    fn follow_link(&self, cr: &RingRef<S::Keep>, frame: Frame) -> Result<RingRef<S::Keep>, S::Error> {
        let payload = cr.ring.peer_payload(&frame);
        let to: RingDesc = match payload.read_array() {
            Some(to) if payload.len() == DESCRIPTOR_LEN => to,
            _ => return Err(corrupt("link frame length")),
        };
        if to == cr.desc {
            return Err(corrupt("a ring linked to itself"));
        }
        let next = self.ring_named(&to)?;
        let r = &self.head().reader;
        store_desc(&r.follow, &to);
        r.following.store(1, Ordering::Relaxed);
        rx(&cr.ring).release(frame);
        self.finish_follow(&cr.desc);
        Ok(next)
    }

    /// Completes a move recorded in `follow`, whose link was handed back: the
    /// ring the consumers left (`from`) is freed if chained (nobody reads or
    /// writes it any more), then they read the new one. A consumer killed
    /// in between leaves `following` set, and the next one finishes the move
    /// (freeing again is harmless).
    fn finish_follow(&self, from: &RingDesc) {
        if *from != OWN_RING {
            self.store.free_ring(from);
        }
        let r = &self.head().reader;
        store_desc(&r.ring, &load_desc(&r.follow));
        // Positions start again in the new ring: a mark left from the old
        // one must not name a frame there.
        r.reading.store(0, Ordering::Relaxed);
        r.following.store(0, Ordering::Relaxed);
    }

    /// Consumes a message frame [`peek_marked`](ByteQueue::peek_marked)
    /// returned: counts it before handing its space back (module docs) and
    /// clears the mark.
    #[inline]
    fn consume(&self, ring: &SpscRing, frame: Frame) {
        self.count_received();
        rx(ring).release(frame);
        // `reading` is left as it is: it names a position now behind the
        // ring's head, which only grows, so it can never match a frame
        // again (a move to another ring clears it: `finish_follow`). One
        // store per message less (module docs, "Dead peers").
    }

    /// Counts one consumed message (before its space is handed back: see the
    /// module docs).
    #[inline]
    fn count_received(&self) {
        let r = &self.head().reader;
        let n = r.received.load(Ordering::Relaxed).wrapping_add(1);
        r.received.store(n, Ordering::Relaxed);
        self.head().received.store(n, Ordering::Release);
    }

    /// The claimed frame's payload, in place: sound while the producers
    /// follow the protocol (they do not write a published frame before it
    /// is released); copy with [`peer_bytes`](ByteQueue::peer_bytes)
    /// otherwise.
    #[inline]
    pub fn bytes<'c>(&self, c: &'c FrameClaim<S::Keep>) -> &'c [u8] {
        c.ring.ring.payload(&c.frame)
    }

    /// The claimed frame's payload, to be copied out (see
    /// [`peer_bytes`](crate::peer_bytes)).
    #[inline]
    pub fn peer_bytes<'c>(&self, c: &'c FrameClaim<S::Keep>) -> PeerBytes<'c> {
        c.ring.ring.peer_payload(&c.frame)
    }

    /// The claimed frame's kind ([`KIND_INLINE`], [`KIND_BLOCK`]).
    #[inline]
    pub fn kind(&self, c: &FrameClaim<S::Keep>) -> u8 {
        c.frame.kind()
    }

    /// Consumes the claimed frame and unlocks the consuming side.
    #[inline]
    pub fn release(&self, c: FrameClaim<S::Keep>) {
        self.consume(&c.ring.ring, c.frame);
        self.head().consumer.unlock(&c.me, c.held);
    }

    /// With the consuming side taken over from a dead holder: finishes a move
    /// along a link it was making, and drops the frame it was reading if that
    /// frame is still at the head (freeing its out-of-line block).
    #[cold]
    fn after_dead_reader(&self) {
        let r = &self.head().reader;
        if r.following.load(Ordering::Relaxed) != 0 {
            let from = load_desc(&r.ring);
            if from == load_desc(&r.follow) {
                // It had moved already (and freed the ring it left).
                r.following.store(0, Ordering::Relaxed);
            }
        }
        if r.following.load(Ordering::Relaxed) != 0 {
            let from = load_desc(&r.ring);
            let still_linked = self.ring_named(&from).ok().and_then(|cr| {
                let frame = rx(&cr.ring).peek().ok()??;
                (frame.kind() == KIND_LINK && cr.ring.peer_payload(&frame).equals(&load_desc(&r.follow))).then_some(())
            });
            if still_linked.is_some() {
                // The link was not handed back yet: the next look follows it.
                r.following.store(0, Ordering::Relaxed);
            } else {
                self.finish_follow(&from);
            }
        }
        let reading = r.reading.load(Ordering::Relaxed);
        r.reading.store(0, Ordering::Relaxed);
        let Ok(cr) = self.consumer_ring() else { return };
        let mut c = rx(&cr.ring);
        if reading != 0 && reading == c.position().wrapping_add(1) {
            if let Ok(Some(frame)) = c.peek() {
                if frame.kind() == KIND_LINK {
                    return;
                }
                // A dropped message's out-of-line block is freed with it
                // (idempotent: the dead reader may have freed it already).
                if frame.kind() == KIND_BLOCK {
                    self.store.free_block(cr.ring.peer_payload(&frame));
                }
                self.consume(&cr.ring, frame);
            }
        }
    }

    /// Who holds each side, for inspection: (producers, consumers).
    pub fn sides(&self) -> (Holder, Holder) {
        let h = self.head();
        (h.producer.holder(self.store.check()), h.consumer.holder(self.store.check()))
    }

    /// For producers blocked on a full queue: if the consuming side is held by
    /// a dead thread, takes it over (dropping the frame it was reading) so the
    /// queue moves again. Returns whether it did.
    pub fn recover_dead_reader(&self, me: &Owner) -> bool {
        let dead = match self.head().consumer.holder(self.store.check()) {
            Holder::Biased { busy, alive, .. } => busy && !alive,
            Holder::Locked(o) => !o.alive,
            Holder::Free => false,
        };
        if !dead {
            return false;
        }
        let me = &self.store.owner(me);
        match self.head().consumer.lock(me, Some(Deadline::EXPIRED), self.store.check()) {
            Ok(held) => {
                if held.owner_died() {
                    self.after_dead_reader();
                }
                self.head().consumer.unlock(me, held);
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use core::cell::RefCell;
    use std::vec;
    use std::vec::Vec;

    /// 128-byte aligned memory for rings.
    #[derive(Clone)]
    #[repr(C, align(128))]
    struct Chunk([u8; 128]);

    fn memory(len: usize) -> Vec<Chunk> {
        vec![Chunk([0; 128]); len.div_ceil(128)]
    }

    fn base(mem: &mut [Chunk]) -> NonNull<u8> {
        NonNull::new(mem.as_mut_ptr().cast::<u8>()).unwrap()
    }

    /// Chained rings on the heap; freed memory is kept (a test may still
    /// hold a reference), only counted.
    #[derive(Default)]
    struct HeapStore {
        rings: RefCell<Vec<(RingDesc, Vec<Chunk>, bool)>>,
        blocks_freed: RefCell<Vec<Vec<u8>>>,
    }

    impl HeapStore {
        fn live(&self) -> usize {
            self.rings.borrow().iter().filter(|r| !r.2).count()
        }
    }

    impl RingStore for &HeapStore {
        type Keep = ();
        type Error = QueueError;
        type Check = crate::owner::ProcLiveness;

        fn check(&self) -> &crate::owner::ProcLiveness {
            &crate::owner::ProcLiveness
        }

        fn ring(&self, desc: &RingDesc) -> Result<(SpscRing, ()), QueueError> {
            let mut rings = self.rings.borrow_mut();
            let r = rings.iter_mut().find(|r| r.0 == *desc && !r.2).ok_or(QueueError::Corrupt("no such ring"))?;
            let len = r.1.len() * 128;
            // SAFETY: the heap buffer is aligned, `len` bytes, and kept
            // until the store drops.
            let ring = unsafe { SpscRing::attach(base(&mut r.1), len) }.map_err(|_| QueueError::Corrupt("ring"))?;
            Ok((ring, ()))
        }

        fn plan(&self, capacity: usize) -> Result<RingDesc, QueueError> {
            let mut rings = self.rings.borrow_mut();
            let mut desc = [0u8; DESCRIPTOR_LEN];
            desc[..8].copy_from_slice(&(rings.len() as u64 + 1).to_le_bytes());
            desc[8..].copy_from_slice(&(capacity as u64).to_le_bytes());
            rings.push((desc, Vec::new(), false));
            Ok(desc)
        }

        fn build(&self, desc: &RingDesc, capacity: usize) -> Result<(SpscRing, ()), QueueError> {
            let mut rings = self.rings.borrow_mut();
            let r = rings.iter_mut().find(|r| r.0 == *desc).ok_or(QueueError::Corrupt("unplanned ring"))?;
            let len = SpscRing::required_size(capacity);
            r.1 = memory(len);
            // SAFETY: as in `ring`; nobody else sees the new ring yet.
            let ring =
                unsafe { SpscRing::init(base(&mut r.1), len, capacity) }.map_err(|_| QueueError::Corrupt("ring"))?;
            Ok((ring, ()))
        }

        fn free_ring(&self, desc: &RingDesc) {
            if let Some(r) = self.rings.borrow_mut().iter_mut().find(|r| r.0 == *desc) {
                r.2 = true;
            }
        }

        fn free_block(&self, desc: PeerBytes<'_>) {
            let mut v = vec![0; desc.len()];
            desc.copy_to(&mut v);
            self.blocks_freed.borrow_mut().push(v);
        }
    }

    fn queue<'s>(mem: &mut Vec<Chunk>, store: &'s HeapStore, capacity: usize, size: usize) -> ByteQueue<&'s HeapStore> {
        let len = required_size(capacity, size).unwrap();
        *mem = memory(len);
        // SAFETY: aligned, `len` bytes, outlives the queue (the test keeps
        // `mem` until the end).
        unsafe {
            init(base(mem), len, capacity, size).unwrap();
            ByteQueue::attach(base(mem), len, store).unwrap()
        }
    }

    fn send(q: &ByteQueue<&HeapStore>, me: &Owner, v: u64) -> Result<Placed, QueueError> {
        q.try_send_with(me, None, 8, |buf| {
            if buf.len() < 8 {
                return Ok(Written::Needs(8));
            }
            buf[..8].copy_from_slice(&v.to_le_bytes());
            Ok(Written::Done(8))
        })
    }

    fn take(q: &ByteQueue<&HeapStore>, me: &Owner) -> Option<u64> {
        q.try_take(me, None, |kind, b| {
            assert_eq!((kind, b.len()), (KIND_INLINE, 8));
            u64::from_le_bytes(b.read_array().unwrap())
        })
        .unwrap()
    }

    #[test]
    fn bounded_queue_keeps_its_limit_and_order() {
        let (mut mem, store) = (Vec::new(), HeapStore::default());
        let q = queue(&mut mem, &store, 4, 64);
        let me = Owner::current();
        for v in 0..4 {
            assert_eq!(send(&q, &me, v), Ok(Placed::Inline(8)));
        }
        assert_eq!(send(&q, &me, 4), Err(QueueError::Full));
        assert_eq!(q.len(), 4);
        let claim = q.try_claim(&me, None).unwrap().unwrap();
        assert_eq!((q.kind(&claim), q.bytes(&claim)), (KIND_INLINE, &0u64.to_le_bytes()[..]));
        // The consuming side is held by the claim: a second receive is a
        // re-entry, not a deadlock.
        assert_eq!(q.try_take(&me, None, |_, _| ()).unwrap_err(), QueueError::Reentered);
        q.release(claim);
        assert_eq!((1..4).map(|_| take(&q, &me).unwrap()).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(take(&q, &me), None);
        assert!(q.is_empty());
        assert_eq!(store.live(), 0, "a bounded queue never chains");
    }

    /// The biased fast paths serve only a thread holding its side's bias,
    /// the revoked ones only a side whose bias is gone and whose mutex is
    /// free; both below the limit, with a message that fits the hint; anything else is
    /// left to the general path with nothing changed, and the counts stay
    /// exact across both paths.
    #[test]
    fn fast_paths_take_only_the_common_case() {
        let (mut mem, store) = (Vec::new(), HeapStore::default());
        let q = queue(&mut mem, &store, 4, 64);
        let me = Owner::current();
        let fast_send = |v: u64, hint: usize| {
            q.try_send_biased(&me, hint, |buf| {
                if buf.len() < 8 {
                    return Ok(Written::Needs(8));
                }
                buf[..8].copy_from_slice(&v.to_le_bytes());
                Ok(Written::Done(8))
            })
        };
        let fast_take = || q.try_take_biased(&me, |_, b| u64::from_le_bytes(b.read_array().unwrap())).ok();
        // No bias yet: both decline.
        assert_eq!(fast_send(0, 8), None);
        assert_eq!(fast_take(), None);
        for _ in 0..crate::biased_lock::BIAS_AFTER {
            assert_eq!(send(&q, &me, 0), Ok(Placed::Inline(8)));
            assert_eq!(take(&q, &me), Some(0));
        }
        assert_eq!(fast_take(), Some(None), "biased, and empty");
        assert_eq!(fast_send(1, 8), Some(Ok(Placed::Inline(8))));
        // A hint too small: declined, nothing published.
        assert_eq!(fast_send(9, 4), None);
        assert_eq!(q.len(), 1);
        assert_eq!(send(&q, &me, 2), Ok(Placed::Inline(8)));
        assert_eq!(fast_send(3, 8), Some(Ok(Placed::Inline(8))));
        assert_eq!(fast_send(4, 8), Some(Ok(Placed::Inline(8))));
        // At the limit: declined; the general path says full.
        assert_eq!(fast_send(5, 8), None);
        assert_eq!(send(&q, &me, 5), Err(QueueError::Full));
        assert_eq!(fast_take(), Some(Some(1)));
        assert_eq!(take(&q, &me), Some(2));
        assert_eq!(fast_take(), Some(Some(3)));
        assert_eq!(fast_take(), Some(Some(4)));
        assert_eq!(fast_take(), Some(None));
        assert!(q.is_empty());
        let revoked_send = |v: u64| {
            q.try_send_revoked(&me, 8, |buf| {
                buf[..8].copy_from_slice(&v.to_le_bytes());
                Ok(Written::Done(8))
            })
        };
        let revoked_take = || q.try_take_revoked(&me, |_, b| u64::from_le_bytes(b.read_array().unwrap())).ok();
        // The revoked paths decline while a bias can still be (or is) held.
        assert_eq!(revoked_send(6), None);
        assert_eq!(revoked_take(), None);
        // Another thread takes the producing side (revoking the bias): the
        // biased path declines from then on, for good, and the revoked one
        // enters the side's mutex when it is free...
        let other = Owner { thread: crate::Identity { id: me.thread.id.wrapping_add(1), ..me.thread }, ..me };
        assert_eq!(send(&q, &other, 6), Ok(Placed::Inline(8)));
        assert_eq!(fast_send(7, 8), None);
        assert_eq!(revoked_send(7), Some(Ok(Placed::Inline(8))));
        assert_eq!(fast_take(), Some(Some(6)), "the consuming side is still biased");
        // ...and declines, with nothing changed, while another holds it.
        let claim = q.try_claim(&other, None).unwrap().unwrap();
        assert_eq!(fast_take(), None);
        assert_eq!(revoked_take(), None);
        q.release(claim);
        assert_eq!(q.len(), 0, "the claim took 7");
        let held = q.head().producer.lock(&other, None, &crate::owner::ProcLiveness).unwrap();
        assert_eq!(revoked_send(8), None);
        q.head().producer.unlock(&other, held);
        assert_eq!(revoked_send(8), Some(Ok(Placed::Inline(8))));
        assert_eq!(revoked_take(), Some(Some(8)));
        assert_eq!(revoked_send(9), Some(Ok(Placed::Inline(8))));
        assert_eq!(take(&q, &other), Some(9));
        assert!(q.is_empty());
    }

    #[test]
    fn large_messages_say_where_they_go() {
        let (mut mem, store) = (Vec::new(), HeapStore::default());
        let q = queue(&mut mem, &store, 2, 64);
        let me = Owner::current();
        // Past the message size and too large to leave room for the limit:
        // out of line, nothing published.
        let huge = q.spsc().max_frame();
        let placed = q.try_send_with(&me, None, 8, |buf| {
            Ok(if buf.len() >= huge { Written::Done(huge) } else { Written::Needs(huge) })
        });
        assert_eq!(placed, Ok(Placed::OutOfLine(huge)));
        assert_eq!(q.len(), 0);
        // Its descriptor goes in a block frame, which a dead reader's
        // successor frees through the store.
        q.try_send_descriptor(&me, None, &[7; DESCRIPTOR_LEN]).unwrap();
        let c = q.try_claim(&me, None).unwrap().unwrap();
        assert_eq!((q.kind(&c), q.bytes(&c)), (KIND_BLOCK, &[7; DESCRIPTOR_LEN][..]));
        q.release(c);
    }

    #[test]
    fn unbounded_queue_chains_rings_and_frees_them() {
        let (mut mem, store) = (Vec::new(), HeapStore::default());
        let q = queue(&mut mem, &store, usize::MAX, 64);
        assert!(q.is_unbounded());
        let me = Owner::current();
        const N: u64 = 200_000;
        for v in 0..N {
            assert_eq!(send(&q, &me, v), Ok(Placed::Inline(8)));
        }
        let chained = store.rings.borrow().len();
        assert!(chained >= 2, "200k frames need rings beyond the own 256 KiB one ({chained})");
        for v in 0..N {
            assert_eq!(take(&q, &me), Some(v));
        }
        assert_eq!(take(&q, &me), None);
        // Every ring the consumers left is freed; the last one once the next
        // send linked back to the queue's own ring and a receive followed.
        assert_eq!(store.live(), 1);
        send(&q, &me, 1).unwrap();
        assert_eq!(store.live(), 1);
        assert_eq!(take(&q, &me), Some(1));
        assert_eq!(store.live(), 0);
    }

    #[test]
    fn a_dead_readers_frame_is_dropped_and_its_block_freed() {
        let (mut mem, store) = (Vec::new(), HeapStore::default());
        let q = queue(&mut mem, &store, 4, 64);
        let me = Owner::current();
        q.try_send_descriptor(&me, None, &[9; DESCRIPTOR_LEN]).unwrap();
        send(&q, &me, 5).unwrap();
        // A reader that died holding the first frame: a thread id that was
        // a process of ours and is reaped.
        let dead = dead_owner();
        let c = q.try_claim(&dead, None).unwrap().unwrap();
        assert_eq!(q.kind(&c), KIND_BLOCK);
        // It dies holding it: never released.
        let _never_released = c;
        // The next receiver takes the side over, drops that frame, frees its
        // block, and gets the next message.
        assert_eq!(take(&q, &me), Some(5));
        assert_eq!(*store.blocks_freed.borrow(), [vec![9u8; DESCRIPTOR_LEN]]);
        assert_eq!(take(&q, &me), None);
    }

    /// A pid of ours that has exited and been reaped, as a dead owner.
    fn dead_owner() -> Owner {
        // SAFETY: the child only calls `_exit`, async-signal-safe.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: exiting the forked child without running anything else.
            unsafe { libc::_exit(0) };
        }
        assert!(pid > 0);
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, core::ptr::null_mut(), 0) };
        Owner { thread: crate::Identity::local(pid as u32, 1), pid: pid as u32 }
    }

    #[test]
    fn a_reader_dead_between_messages_loses_none() {
        // The reading mark is not cleared after each message (`consume`):
        // the mark a finished read leaves must not make the next reader drop
        // a message nobody was handed.
        let (mut mem, store) = (Vec::new(), HeapStore::default());
        let q = queue(&mut mem, &store, 8, 64);
        let me = Owner::current();
        for v in 0..4 {
            send(&q, &me, v).unwrap();
        }
        let dead = dead_owner();
        assert_eq!(take(&q, &dead), Some(0));
        assert_eq!(take(&q, &dead), Some(1));
        // It dies holding the consuming side between two messages.
        // (Never unlocked.)
        let _held = q.head().consumer.lock(&dead, None, &crate::owner::ProcLiveness).unwrap();
        // The next receiver takes the side over and gets every message left.
        assert_eq!(take(&q, &me), Some(2));
        assert_eq!(take(&q, &me), Some(3));
        assert_eq!(take(&q, &me), None);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn garbage_in_the_header_is_an_error_not_a_fault() {
        let (mut mem, store) = (Vec::new(), HeapStore::default());
        let q = queue(&mut mem, &store, usize::MAX, 64);
        let me = Owner::current();
        send(&q, &me, 1).unwrap();
        // The consumers' ring names a ring the store does not have.
        store_desc(&q.head().reader.ring, &[0xAB; DESCRIPTOR_LEN]);
        assert!(matches!(q.try_take(&me, None, |_, _| ()), Err(QueueError::Corrupt(_))));
        // And a layout with garbage limits does not attach.
        let len = mem.len() * 128;
        q.head().meta.message_size.store(u64::MAX, Ordering::Relaxed);
        // SAFETY: the same memory, still alive.
        assert!(unsafe { ByteQueue::attach(base(&mut mem), len, &store) }.is_err());
    }
}
