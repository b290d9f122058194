//! The default layout of a [`Queue`](crate::Queue): a byte ring of
//! length-prefixed frames (`shmproc_core::spsc`) whose producing side and
//! consuming side are each serialised by a
//! [`BiasedLock`](shmproc_core::biased_lock::BiasedLock).
//!
//! ```text
//! [producer lock][consumer lock][sent | received cache][received][reading][limit, message size][byte ring ...]
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

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use shmproc_core::biased_lock::{BiasedLock, Held, Holder};
use shmproc_core::cache_padded::CachePadded;
use shmproc_core::notify::Notifier;
use shmproc_core::owner::{Owner, ProcLiveness};
use shmproc_core::participants::Participants;
use shmproc_core::raw_mutex::LockError;
use shmproc_core::spsc::{Consumer, Frame, RingError, SpscRing, FRAME_HEADER, MIN_CAPACITY};
use shmproc_core::Deadline;

use crate::queue::{TryRecvError, TrySendError};

/// What a send from inside a `Serialize` impl on the same queue reports.
const REENTERED_SEND: &str = "send re-entered on the same queue from a Serialize impl";
/// What a receive by a thread that holds a `RecvRef` of the same queue reports.
const REENTERED_RECV: &str = "receive while this thread holds a RecvRef of the same queue";

/// A consuming-side ring error as a receive error.
#[cold]
fn corrupt(e: RingError) -> TryRecvError {
    TryRecvError::Corrupt { reason: e.reason().to_owned() }
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
    held: Held,
    me: Owner,
}

/// The mapped queue; `Copy`, like a pointer.
#[derive(Copy, Clone, Debug)]
pub(crate) struct ByteRing {
    head: NonNull<ByteHead>,
    ring: SpscRing,
    limit: u64,
    message_size: usize,
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

fn ring_bytes(capacity: usize, message_size: usize) -> Option<usize> {
    let frame = FRAME_HEADER.checked_add(message_size.checked_add(7)? & !7)?;
    // Room for `capacity` largest messages plus one, so that a frame that has
    // to wrap still fits when the queue is below its limit.
    // (The 8 is the next header word a producer zeroes: see the core's spsc.)
    capacity
        .checked_add(1)?
        .checked_mul(frame)?
        .checked_add(8)?
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
        for a in
            [&head.sent.sent, &head.sent.received_cache, &head.received, &head.reader.reading, &head.reader.received]
        {
            a.store(0, Ordering::Relaxed);
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
        Ok(ByteRing { head: base.cast(), ring, limit, message_size: message_size as usize })
    }

    #[inline]
    fn head(&self) -> &ByteHead {
        // SAFETY: validated at attach; the mapping outlives self (contract).
        unsafe { self.head.as_ref() }
    }

    /// Capacity in messages.
    pub(crate) fn capacity(&self) -> usize {
        self.limit as usize
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
        self.ring.has_frame()
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

    /// Sends one message that `write` serialises into the frame, trying a
    /// frame of `hint` bytes first and the full message size if that is too
    /// small. Waits for the producing side's lock until `lock_deadline`, never
    /// for room.
    #[inline]
    pub(crate) fn try_send_with(
        &self,
        me: &Owner,
        lock_deadline: Option<Deadline>,
        hint: usize,
        mut write: impl FnMut(&mut [u8]) -> Option<usize>,
    ) -> Result<usize, TrySendError> {
        let h = self.head();
        let held = match h.producer.lock(me, lock_deadline, &ProcLiveness) {
            Ok(held) => held,
            Err(LockError::Timeout | LockError::WouldBlock) => return Err(TrySendError::Full),
            Err(LockError::Deadlock) => return Err(TrySendError::Serialize { reason: REENTERED_SEND.to_owned() }),
        };
        let r = if held.owner_died() {
            self.resync_dead_producer().and_then(|()| self.send_locked(hint, &mut write))
        } else {
            self.send_locked(hint, &mut write)
        };
        h.producer.unlock(me, held);
        r
    }

    /// With the producing side taken over from a dead holder: moves past (and
    /// counts) the frames it published but had not yet recorded.
    #[cold]
    fn resync_dead_producer(&self) -> Result<(), TrySendError> {
        let published = self.ring.producer().resync().map_err(|e| TrySendError::Corrupt { reason: e.reason() })?;
        let sent = &self.head().sent.sent;
        sent.store(sent.load(Ordering::Relaxed).wrapping_add(published), Ordering::Relaxed);
        Ok(())
    }

    #[inline]
    fn send_locked(
        &self,
        hint: usize,
        write: &mut impl FnMut(&mut [u8]) -> Option<usize>,
    ) -> Result<usize, TrySendError> {
        let h = self.head();
        let mut sent = h.sent.sent.load(Ordering::Relaxed);
        if sent.wrapping_sub(h.sent.received_cache.load(Ordering::Relaxed)) >= self.limit {
            let received = h.received.load(Ordering::Acquire);
            h.sent.received_cache.store(received, Ordering::Relaxed);
            if received > sent {
                // A producer killed between publishing and counting, or a
                // consumer killed between counting and releasing, leaves the
                // counts one apart (module docs): adopt the consumers' count.
                sent = received;
                h.sent.sent.store(sent, Ordering::Relaxed);
            }
            if sent - received >= self.limit {
                return Err(TrySendError::Full);
            }
        }
        let mut p = self.ring.producer();
        let mut size = hint.clamp(1, self.message_size);
        loop {
            let r = match p.reserve(size) {
                Ok(r) => r,
                Err(RingError::Full) => return Err(TrySendError::Full),
                Err(RingError::TooLarge) => return Err(TrySendError::TooLarge { limit: self.message_size }),
                Err(RingError::Corrupt(reason) | RingError::Layout(reason)) => {
                    return Err(TrySendError::Corrupt { reason })
                }
            };
            match write(p.buffer(&r)) {
                Some(n) if n <= size => {
                    p.commit(r, n);
                    h.sent.sent.store(sent.wrapping_add(1), Ordering::Relaxed);
                    return Ok(n);
                }
                // Not published: the reservation is simply dropped.
                _ if size < self.message_size => size = self.message_size,
                _ => return Err(TrySendError::TooLarge { limit: self.message_size }),
            }
        }
    }

    /// The next frame with the consuming side locked, or `None` if the queue
    /// is empty (or another receiver kept the side past `lock_deadline`).
    #[inline]
    pub(crate) fn try_claim(
        &self,
        me: &Owner,
        lock_deadline: Option<Deadline>,
    ) -> Result<Option<FrameClaim>, TryRecvError> {
        let Some(held) = self.lock_consumer(me, lock_deadline)? else { return Ok(None) };
        match self.peek_marked(&mut self.ring.consumer()) {
            Ok(Some(frame)) => Ok(Some(FrameClaim { frame, held, me: *me })),
            other => {
                self.head().consumer.unlock(me, held);
                other.map(|_| None).map_err(corrupt)
            }
        }
    }

    /// Takes the next message, reading it with `read`, in one go: the fast
    /// path of `recv` (no claim is moved around). `Ok(None)` when empty, or
    /// when another receiver kept the side past `lock_deadline`.
    #[inline]
    pub(crate) fn try_take<R>(
        &self,
        me: &Owner,
        lock_deadline: Option<Deadline>,
        read: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, TryRecvError> {
        let Some(held) = self.lock_consumer(me, lock_deadline)? else { return Ok(None) };
        let mut c = self.ring.consumer();
        let r = self.peek_marked(&mut c).map(|found| {
            found.map(|frame| {
                let r = read(self.ring.payload(&frame));
                self.consume(&mut c, frame);
                r
            })
        });
        self.head().consumer.unlock(me, held);
        r.map_err(corrupt)
    }

    /// Locks the consuming side (`None`: another receiver kept it past
    /// `lock_deadline`), dropping the frame a dead previous holder was reading.
    #[inline]
    fn lock_consumer(&self, me: &Owner, lock_deadline: Option<Deadline>) -> Result<Option<Held>, TryRecvError> {
        match self.head().consumer.lock(me, lock_deadline, &ProcLiveness) {
            Ok(held) => {
                if held.owner_died() {
                    self.drop_dead_readers_frame();
                }
                Ok(Some(held))
            }
            Err(LockError::Timeout | LockError::WouldBlock) => Ok(None),
            Err(LockError::Deadlock) => Err(TryRecvError::Corrupt { reason: REENTERED_RECV.to_owned() }),
        }
    }

    /// The next frame, with the consuming side locked, recorded as the one
    /// being read (see the module docs).
    #[inline]
    fn peek_marked(&self, c: &mut Consumer) -> Result<Option<Frame>, RingError> {
        let found = c.peek()?;
        if found.is_some() {
            self.head().reader.reading.store(c.position().wrapping_add(1), Ordering::Relaxed);
        }
        Ok(found)
    }

    /// Consumes the frame [`peek_marked`](ByteRing::peek_marked) returned: counts it
    /// before handing its space back (module docs) and clears the mark.
    #[inline]
    fn consume(&self, c: &mut Consumer, frame: Frame) {
        self.count_received();
        c.release(frame);
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
    pub(crate) fn bytes(&self, c: &FrameClaim) -> &[u8] {
        self.ring.payload(&c.frame)
    }

    /// Consumes the claimed frame and unlocks the consuming side.
    #[inline]
    pub(crate) fn release(&self, c: FrameClaim) {
        self.consume(&mut self.ring.consumer(), c.frame);
        self.head().consumer.unlock(&c.me, c.held);
    }

    /// With the consuming side taken over from a dead holder: drops the frame
    /// it was reading, if that frame is still at the head.
    fn drop_dead_readers_frame(&self) {
        let h = self.head();
        let mut c = self.ring.consumer();
        let reading = h.reader.reading.load(Ordering::Relaxed);
        if reading != 0 && reading == c.position().wrapping_add(1) {
            if let Ok(Some(frame)) = c.peek() {
                // Clears the mark too.
                self.consume(&mut c, frame);
                return;
            }
        }
        h.reader.reading.store(0, Ordering::Relaxed);
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
                    self.drop_dead_readers_frame();
                }
                self.head().consumer.unlock(me, held);
                true
            }
            Err(_) => false,
        }
    }
}
