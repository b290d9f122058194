//! The default layout of a [`Queue`](crate::Queue): a byte ring of
//! length-prefixed frames (`shmproc_core::spsc`) whose producing side and
//! consuming side are each serialised by a
//! [`BiasedLock`](shmproc_core::biased_lock::BiasedLock).
//!
//! ```text
//! [producer lock][consumer lock][sent | received cache | ring | pending][received][reading | ring | follow][limit, message size][byte ring ...]
//! ```
//!
//! # Why this shape
//!
//! In the slot ring (Vyukov's, [`QueueBuilder::slot_ring`](crate::QueueBuilder::slot_ring)) both
//! sides write every slot and claim it with a compare-and-swap; between two
//! processes each of those costs a cache-line transfer and a store-buffer
//! drain, about 65–100 ns a message on a 2-core VM. Here a message costs the
//! producer a frame write published by a `Release` store of its header word
//! (the consumer polls that word, not `tail`: one line moves per message), and
//! the consumer one `Release` store of `head`; each side's lock, held by the
//! same thread message after message, is *biased* to it and costs no atomic
//! read-modify-write. Frames are packed (16 bytes for a `u64`), so consecutive
//! messages share cache lines instead of bouncing one line each.
//!
//! # What it gives up
//!
//! A [`RecvRef`](crate::RecvRef) keeps the consuming side locked while it
//! lives, so other receivers wait until it drops (the slot layout lets several
//! guards live at once: see [`QueueBuilder::slot_ring`](crate::QueueBuilder::slot_ring)).
//!
//! # Dead peers
//!
//! A producer that dies mid-message never published it: the header word is
//! stored only after the frame is complete, and the next producer takes the
//! lock over (owner died) and writes over the unpublished bytes. One that dies
//! after the header store but before recording its position left a complete,
//! published frame: the next producer walks over it
//! ([`Producer::resync`](shmproc_core::spsc::Producer::resync)) and counts it
//! as sent. A consumer records the
//! position of the frame it was handed (`reading`) before reading it; when a
//! consumer takes the lock over from a dead one and that frame is still at the
//! head, it is dropped, as a dead consumer's slot is in the slot layout (a
//! message that killed its reader is not handed to the next one). Producers
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
//! An unbounded queue ([`Queue::unbounded`](crate::Queue::unbounded)) starts
//! with its own ring like any other. When that ring is full, the producer
//! does not wait: it creates a ring twice as large in an out-of-line block of
//! the segment file (see `bulk.rs` and `ring_chain.rs`), publishes a *link*
//! frame naming it in the full ring, and goes on in the new one; consumers
//! follow the link when they reach it, and free a chained ring (punch it out
//! of the file) once they have left it. When a producer finds the chained
//! ring it writes to empty (the consumers caught up), it links back to the
//! queue's own ring, which is empty then; so the last ring of a drained
//! backlog is freed at the next send, not before (consumers never take the
//! producing side, whose bias they would revoke for good). So a backlog grows memory by doubling rings
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

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use shmproc_core::biased_lock::{BiasedLock, Held, Holder};
use shmproc_core::cache_padded::CachePadded;
use shmproc_core::notify::Notifier;
use shmproc_core::owner::{Owner, ProcLiveness};
use shmproc_core::participants::Participants;
use shmproc_core::raw_mutex::LockError;
use shmproc_core::spsc::{
    capacity_for_frames, frame_span, Frame, Producer, Reservation, RingError, SpscRing, MIN_CAPACITY,
};
use shmproc_core::Deadline;

use crate::bulk::{Window, DESCRIPTOR_LEN, KIND_BLOCK, KIND_LINK};
use crate::channel_error::Failure;
use crate::message::Encoded;
use crate::ring_chain::{Chain, RingRef, OWN_RING};

/// The message limit of an unbounded queue.
pub(crate) const UNBOUNDED: u64 = u64::MAX;
/// Room every reservation of an unbounded queue keeps beyond its frame: a
/// link frame, and what placing it may cost at a wrap.
const LINK_ROOM: usize = frame_span(DESCRIPTOR_LEN) + 16;
/// Longest chain a consumer follows in one look (rings double in size, so a
/// real chain is far shorter).
const MAX_HOPS: usize = 64;

/// A ring error as a channel failure.
#[cold]
fn corrupt(e: RingError) -> Failure {
    Failure::corrupt(e.reason())
}

/// What an in-ring send attempt did.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Placed {
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
pub(crate) struct ByteHead {
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

fn load_desc(words: &[AtomicU64; 2]) -> [u8; DESCRIPTOR_LEN] {
    let mut d = [0u8; DESCRIPTOR_LEN];
    d[..8].copy_from_slice(&words[0].load(Ordering::Relaxed).to_le_bytes());
    d[8..].copy_from_slice(&words[1].load(Ordering::Relaxed).to_le_bytes());
    d
}

fn store_desc(words: &[AtomicU64; 2], d: &[u8; DESCRIPTOR_LEN]) {
    let (a, b) = d.split_at(8);
    words[0].store(u64::from_le_bytes(a.try_into().unwrap_or_default()), Ordering::Relaxed);
    words[1].store(u64::from_le_bytes(b.try_into().unwrap_or_default()), Ordering::Relaxed);
}

#[repr(C)]
struct Meta {
    limit: AtomicU64,
    message_size: AtomicU64,
}

const HEAD_SPAN: usize = std::mem::size_of::<ByteHead>();
const _: () = assert!(HEAD_SPAN % shmproc_core::region::OBJECT_ALIGN == 0);

/// A frame handed to a receiver, with the consuming side still locked.
#[derive(Debug)]
pub(crate) struct FrameClaim {
    frame: Frame,
    ring: RingRef,
    held: Held,
    me: Owner,
}

/// The mapped queue.
#[derive(Clone, Debug)]
pub(crate) struct ByteRing {
    head: NonNull<ByteHead>,
    /// The queue's own ring.
    ring: SpscRing,
    limit: u64,
    message_size: usize,
    /// Where out-of-line blocks of this queue live (see `bulk.rs`).
    window: Option<Window>,
    /// The chained rings of an unbounded queue (module docs).
    chain: Option<std::sync::Arc<Chain>>,
}

// SAFETY: shared memory accessed through atomics, under the two side locks.
unsafe impl Send for ByteRing {}
// SAFETY: as above.
unsafe impl Sync for ByteRing {}

/// The smallest byte ring. Measured between two processes on a 2-core VM
/// (`Queue<u64>`, medians of 7 runs of 2 M messages): a 128 KiB ring 33–35 ns
/// per message, 256 KiB and more 28–29 ns. With a ring this large the lines
/// the consumer read are less often still in its private cache when the
/// producer comes round to write them again. It is address space more than
/// memory: pages are touched only as the ring turns.
const MIN_RING: usize = 256 << 10;

/// A reservation failure as a channel failure.
fn reserve_failure(e: RingError) -> Failure {
    match e {
        RingError::Full => Failure::Full,
        RingError::TooLarge => Failure::corrupt("message size beyond the ring"),
        RingError::Corrupt(r) | RingError::Layout(r) => Failure::corrupt(r),
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

impl ByteRing {
    /// Bytes needed for `capacity` messages of up to `message_size` bytes.
    pub(crate) fn required_size(capacity: usize, message_size: usize) -> Option<usize> {
        HEAD_SPAN.checked_add(SpscRing::required_size(ring_bytes(capacity, message_size)?))
    }

    /// Initialises an empty queue.
    ///
    /// # Safety
    ///
    /// `base..base+len` must be valid for reads and writes, aligned to
    /// `OBJECT_ALIGN`, not yet shared, and stay mapped while the ring (or a
    /// copy) is used.
    pub(crate) unsafe fn init(
        base: NonNull<u8>,
        len: usize,
        capacity: usize,
        message_size: usize,
    ) -> Result<ByteRing, &'static str> {
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
            ByteRing::attach(base, len)
        }
    }

    /// Attaches to a queue someone else initialised, validating its layout.
    ///
    /// # Safety
    ///
    /// As for [`init`](ByteRing::init); the contents may be anything.
    pub(crate) unsafe fn attach(base: NonNull<u8>, len: usize) -> Result<ByteRing, &'static str> {
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
        Ok(ByteRing { head: base.cast(), ring, limit, message_size: message_size as usize, window: None, chain: None })
    }

    /// Sets where this queue's out-of-line blocks live (frames of dropped
    /// messages free theirs) and, for an unbounded queue, its chained rings,
    /// counted by `next` (the object's block counter, which must stay mapped
    /// while the ring is used).
    pub(crate) fn with_window(mut self, window: Option<Window>, next: NonNull<AtomicU64>) -> ByteRing {
        self.window = window;
        if self.limit == UNBOUNDED {
            self.chain = window.map(|w| std::sync::Arc::new(Chain::new(w, next)));
        }
        self
    }

    #[inline]
    fn unbounded(&self) -> bool {
        self.limit == UNBOUNDED
    }

    #[cold]
    fn chain(&self) -> Result<&Chain, Failure> {
        self.chain.as_deref().ok_or_else(|| Failure::corrupt("a chained ring in a queue without a chain"))
    }

    /// The ring `desc` names.
    #[inline]
    fn ring_named(&self, desc: &[u8; DESCRIPTOR_LEN]) -> Result<RingRef, Failure> {
        if *desc == OWN_RING {
            Ok(RingRef::own(self.ring))
        } else {
            self.chain()?.ring(desc)
        }
    }

    /// The ring producers write to (with the producing side locked).
    #[inline]
    fn producer_ring(&self) -> Result<RingRef, Failure> {
        self.ring_named(&load_desc(&self.head().sent.ring))
    }

    /// The ring consumers read (with the consuming side locked).
    #[inline]
    fn consumer_ring(&self) -> Result<RingRef, Failure> {
        self.ring_named(&load_desc(&self.head().reader.ring))
    }

    #[inline]
    fn head(&self) -> &ByteHead {
        // SAFETY: validated at attach; the mapping outlives self (contract).
        unsafe { self.head.as_ref() }
    }

    /// Capacity in messages (`usize::MAX`: unbounded).
    pub(crate) fn capacity(&self) -> usize {
        usize::try_from(self.limit).unwrap_or(usize::MAX)
    }

    /// Largest message in bytes.
    pub(crate) fn message_size(&self) -> usize {
        self.message_size
    }

    /// Messages waiting (a snapshot, clamped to the capacity).
    pub(crate) fn len(&self) -> usize {
        let h = self.head();
        let received = h.received.load(Ordering::Relaxed);
        let sent = h.sent.sent.load(Ordering::Relaxed);
        sent.saturating_sub(received).min(self.limit) as usize
    }

    /// Whether a frame is published (true on a corrupt ring: let the receive
    /// report it).
    #[inline]
    pub(crate) fn has_message(&self) -> bool {
        let desc = load_desc(&self.head().reader.ring);
        if desc == OWN_RING {
            self.ring.has_frame()
        } else {
            self.ring_named(&desc).map_or(true, |r| r.ring.has_frame())
        }
    }

    /// The byte ring underneath (for
    /// [`receiver_pace`](crate::blocking::receiver_pace)).
    pub(crate) fn spsc(&self) -> &SpscRing {
        &self.ring
    }

    /// A number that grows with every consumption: producers wait for it to
    /// change (see the module docs).
    #[inline]
    pub(crate) fn progress(&self) -> u64 {
        self.head().received.load(Ordering::Acquire).wrapping_add(self.ring.head())
    }

    pub(crate) fn close(&self) {
        self.ring.close();
    }

    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.ring.is_closed()
    }

    pub(crate) fn participants(&self) -> &Participants {
        &self.ring.header().participants
    }

    pub(crate) fn not_empty(&self) -> &Notifier {
        &self.ring.header().not_empty
    }

    pub(crate) fn not_full(&self) -> &Notifier {
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
    pub(crate) fn try_send_with(
        &self,
        me: &Owner,
        lock_deadline: Option<Deadline>,
        hint: usize,
        mut write: impl FnMut(&mut [u8]) -> Result<Encoded, Failure>,
    ) -> Result<Placed, Failure> {
        self.with_producer(me, lock_deadline, |queued| self.send_locked(queued, hint, &mut write))
    }

    /// Publishes the descriptor of an out-of-line block (see `bulk.rs`);
    /// `Full` when the message limit is reached or the ring has no room.
    pub(crate) fn try_send_descriptor(
        &self,
        me: &Owner,
        lock_deadline: Option<Deadline>,
        desc: &[u8; DESCRIPTOR_LEN],
    ) -> Result<(), Failure> {
        self.with_producer(me, lock_deadline, |_| {
            let mut pr = self.producer_ring()?;
            let (mut p, r) = loop {
                match self.reserve(&pr, DESCRIPTOR_LEN)? {
                    Some(found) => break found,
                    None if self.unbounded() => pr = self.link_new_ring(&pr, DESCRIPTOR_LEN)?,
                    None => return Err(Failure::Full),
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
        f: impl FnOnce(u64) -> Result<R, Failure>,
    ) -> Result<R, Failure> {
        let h = self.head();
        let held = match h.producer.lock(me, lock_deadline, &ProcLiveness) {
            Ok(held) => held,
            Err(LockError::Timeout | LockError::WouldBlock) => return Err(Failure::Full),
            Err(LockError::Deadlock) => return Err(Failure::Reentered),
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
    fn resync_dead_producer(&self) -> Result<(), Failure> {
        let h = self.head();
        let pr = self.producer_ring()?;
        let mut published = pr.ring.producer().resync().map_err(corrupt)?;
        let pending_at = h.sent.pending_at.load(Ordering::Relaxed);
        if pending_at != 0 {
            let pending = load_desc(&h.sent.pending);
            if pending == pr.desc {
                // Published and moved to: only the record was left.
            } else if pr.ring.producer().position().map_err(corrupt)? >= pending_at {
                // The link was published (resync walked over it, and it is
                // not a message): finish the move.
                published = published.saturating_sub(1);
                store_desc(&h.sent.ring, &pending);
            } else if pending != OWN_RING {
                // Never published: nobody will ever read that ring.
                self.chain()?.free(&pending);
            }
            h.sent.pending_at.store(0, Ordering::Relaxed);
        }
        let sent = &h.sent.sent;
        sent.store(sent.load(Ordering::Relaxed).wrapping_add(published), Ordering::Relaxed);
        Ok(())
    }

    /// Messages queued, with the producing side locked; `Full` at the limit.
    #[inline]
    fn queued(&self) -> Result<u64, Failure> {
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
            n if n >= self.limit => Err(Failure::Full),
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
    fn published_in(&self, pr: &RingRef) {
        if pr.is_chained() {
            self.ring.header().not_empty.notify();
        }
    }

    /// Reserves `len` bytes in `pr` (an unbounded queue's reservations keep
    /// room for a link beyond them); `None` when there is no room.
    #[inline]
    fn reserve(&self, pr: &RingRef, len: usize) -> Result<Option<(Producer, Reservation)>, Failure> {
        let mut p = pr.ring.producer();
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
    fn link_new_ring(&self, pr: &RingRef, len: usize) -> Result<RingRef, Failure> {
        let need = (frame_span(len) + LINK_ROOM).saturating_mul(4).next_power_of_two();
        let capacity = pr.ring.capacity().saturating_mul(2).max(need);
        let chain = self.chain()?;
        let desc = chain.plan(capacity)?;
        self.record_link(pr, &desc)?;
        let built = chain.build(&desc, capacity).and_then(|next| self.link(pr, &desc).map(|()| next));
        if built.is_err() {
            self.head().sent.pending_at.store(0, Ordering::Relaxed);
            chain.free(&desc);
        }
        built
    }

    /// Records that producers are about to link `pr` to `to` (module docs).
    fn record_link(&self, pr: &RingRef, to: &[u8; DESCRIPTOR_LEN]) -> Result<(), Failure> {
        let h = self.head();
        let at = pr.ring.producer().position().map_err(corrupt)?;
        store_desc(&h.sent.pending, to);
        h.sent.pending_at.store(at + 1, Ordering::Relaxed);
        Ok(())
    }

    /// Publishes a link to `to` in `pr` (whose reservations kept room for it)
    /// and moves the producers there; the move was recorded (`record_link`),
    /// and the record is cleared whether the link is published or not.
    fn link(&self, pr: &RingRef, to: &[u8; DESCRIPTOR_LEN]) -> Result<(), Failure> {
        let h = self.head();
        let mut p = pr.ring.producer();
        let r = p.reserve(DESCRIPTOR_LEN).map_err(|e| {
            h.sent.pending_at.store(0, Ordering::Relaxed);
            match e {
                RingError::Full => Failure::corrupt("no room kept for a link"),
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
    fn producer_ring_for_send(&self) -> Result<RingRef, Failure> {
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
        write: &mut impl FnMut(&mut [u8]) -> Result<Encoded, Failure>,
    ) -> Result<Placed, Failure> {
        let mut pr = if self.unbounded() { self.producer_ring_for_send()? } else { RingRef::own(self.ring) };
        let mut size = hint.clamp(1, self.message_size);
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
                Encoded::Done(n) => {
                    p.commit(r, n);
                    self.published_in(&pr);
                    self.count_sent();
                    return Ok(Placed::Inline(n));
                }
                Encoded::Needs(n) if n > size && (n <= self.message_size || self.roomy(queued, n)) => size = n,
                Encoded::Needs(n) => return Ok(Placed::OutOfLine(n)),
            }
        }
    }

    /// The next frame with the consuming side locked, or `None` if the queue
    /// is empty (or another receiver kept the side past `lock_deadline`).
    #[inline]
    pub(crate) fn try_claim(&self, me: &Owner, lock_deadline: Option<Deadline>) -> Result<Option<FrameClaim>, Failure> {
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
    pub(crate) fn try_take<R>(
        &self,
        me: &Owner,
        lock_deadline: Option<Deadline>,
        read: impl FnOnce(u8, &[u8]) -> R,
    ) -> Result<Option<R>, Failure> {
        let Some(held) = self.lock_consumer(me, lock_deadline)? else { return Ok(None) };
        let r = self.peek_marked().map(|found| {
            found.map(|(ring, frame)| {
                let r = read(frame.kind(), ring.ring.payload(&frame));
                self.consume(&ring, frame);
                r
            })
        });
        self.head().consumer.unlock(me, held);
        r
    }

    /// Locks the consuming side (`None`: another receiver kept it past
    /// `lock_deadline`), finishing what a dead previous holder left.
    #[inline]
    fn lock_consumer(&self, me: &Owner, lock_deadline: Option<Deadline>) -> Result<Option<Held>, Failure> {
        match self.head().consumer.lock(me, lock_deadline, &ProcLiveness) {
            Ok(held) => {
                if held.owner_died() {
                    self.after_dead_reader();
                }
                Ok(Some(held))
            }
            Err(LockError::Timeout | LockError::WouldBlock) => Ok(None),
            Err(LockError::Deadlock) => Err(Failure::Reentered),
        }
    }

    /// The next message frame (following links), with the consuming side
    /// locked, recorded as the one being read (see the module docs).
    #[inline]
    fn peek_marked(&self) -> Result<Option<(RingRef, Frame)>, Failure> {
        let mut cr = if self.unbounded() { self.consumer_ring()? } else { RingRef::own(self.ring) };
        for _ in 0..MAX_HOPS {
            let mut c = cr.ring.consumer();
            match c.peek().map_err(corrupt)? {
                Some(frame) if frame.kind() == KIND_LINK => cr = self.follow_link(&cr, frame)?,
                Some(frame) => {
                    self.head().reader.reading.store(c.position().wrapping_add(1), Ordering::Relaxed);
                    return Ok(Some((cr, frame)));
                }
                None => return Ok(None),
            }
        }
        Err(Failure::corrupt("ring chain too long"))
    }

    /// Moves the consumers along the link `frame` of `cr` (module docs).
    #[cold]
    fn follow_link(&self, cr: &RingRef, frame: Frame) -> Result<RingRef, Failure> {
        let to: [u8; DESCRIPTOR_LEN] =
            cr.ring.payload(&frame).try_into().map_err(|_| Failure::corrupt("link frame length"))?;
        if to == cr.desc {
            return Err(Failure::corrupt("a ring linked to itself"));
        }
        let next = self.ring_named(&to)?;
        let r = &self.head().reader;
        store_desc(&r.follow, &to);
        r.following.store(1, Ordering::Relaxed);
        cr.ring.consumer().release(frame);
        self.finish_follow(&cr.desc);
        Ok(next)
    }

    /// Completes a move recorded in `follow`, whose link was handed back: the
    /// ring the consumers left (`from`) is freed if chained (nobody reads or
    /// writes it any more), then they read the new one. A consumer killed
    /// in between leaves `following` set, and the next one finishes the move
    /// (freeing again is harmless).
    fn finish_follow(&self, from: &[u8; DESCRIPTOR_LEN]) {
        if *from != OWN_RING {
            if let Some(chain) = &self.chain {
                chain.free(from);
            }
        }
        let r = &self.head().reader;
        store_desc(&r.ring, &load_desc(&r.follow));
        r.following.store(0, Ordering::Relaxed);
    }

    /// Consumes a message frame [`peek_marked`](ByteRing::peek_marked)
    /// returned: counts it before handing its space back (module docs) and
    /// clears the mark.
    #[inline]
    fn consume(&self, ring: &RingRef, frame: Frame) {
        self.count_received();
        ring.ring.consumer().release(frame);
        self.head().reader.reading.store(0, Ordering::Relaxed);
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

    /// The claimed frame's payload, in place.
    #[inline]
    pub(crate) fn bytes<'c>(&self, c: &'c FrameClaim) -> &'c [u8] {
        c.ring.ring.payload(&c.frame)
    }

    /// The claimed frame's kind (`bulk::KIND_*`).
    #[inline]
    pub(crate) fn kind(&self, c: &FrameClaim) -> u8 {
        c.frame.kind()
    }

    /// Consumes the claimed frame and unlocks the consuming side.
    #[inline]
    pub(crate) fn release(&self, c: FrameClaim) {
        self.consume(&c.ring, c.frame);
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
                let frame = cr.ring.consumer().peek().ok()??;
                (frame.kind() == KIND_LINK && cr.ring.payload(&frame) == load_desc(&r.follow)).then_some(())
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
        let mut c = cr.ring.consumer();
        if reading != 0 && reading == c.position().wrapping_add(1) {
            if let Ok(Some(frame)) = c.peek() {
                if frame.kind() == KIND_LINK {
                    return;
                }
                // A dropped message's out-of-line block is freed with it
                // (idempotent: the dead reader may have freed it already).
                if let (KIND_BLOCK, Some(w)) = (frame.kind(), self.window) {
                    w.free_raw(cr.ring.payload(&frame));
                }
                self.consume(&cr, frame);
            }
        }
    }

    /// Who holds each side, for inspection: (producers, consumers).
    pub(crate) fn sides(&self) -> (crate::inspect::SideState, crate::inspect::SideState) {
        let side = |h: Holder| match h {
            Holder::Free => crate::inspect::SideState::Free,
            Holder::Locked(o) => crate::inspect::SideState::Locked { tid: o.tid, alive: o.alive },
            Holder::Biased { tid, busy, alive } => crate::inspect::SideState::Biased { tid, busy, alive },
        };
        let h = self.head();
        (side(h.producer.holder(&ProcLiveness)), side(h.consumer.holder(&ProcLiveness)))
    }

    /// For producers blocked on a full queue: if the consuming side is held by
    /// a dead thread, takes it over (dropping the frame it was reading) so the
    /// queue moves again. Returns whether it did.
    pub(crate) fn recover_dead_reader(&self, me: &Owner) -> bool {
        let dead = match self.head().consumer.holder(&ProcLiveness) {
            Holder::Biased { busy, alive, .. } => busy && !alive,
            Holder::Locked(o) => !o.alive,
            Holder::Free => false,
        };
        if !dead {
            return false;
        }
        match self.head().consumer.lock(me, Some(Deadline::EXPIRED), &ProcLiveness) {
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
