//! A single-producer single-consumer byte ring of length-prefixed frames.
//!
//! ```text
//! header: head | tail | consumer {head} | producer {tail, head cache} | capacity ... | not_empty | not_full | participants
//! data:   [FRAME_FLAG|kind<<40|len][payload, padded] [FRAME_FLAG|kind<<40|len][payload] ... [WRAP] ... [0] (free)
//! ```
//!
//! `head` (bytes consumed) and `tail` (bytes produced) are monotonically
//! increasing `u64` positions, each on its own 128-byte line, written only by
//! the consumer and the producer respectively. Each side keeps its own
//! position in a second, private line and reads it from there: the public
//! line is polled by the other process, and on the 2-core machines we
//! measured, re-reading one's own index from a line the peer keeps pulling
//! away cost a cache miss per message (about 90% of the producer's time in
//! `reserve`). The producer also caches `head` there (rtrb-style) and re-reads
//! it only when the cache says the ring is full. The private lines live in
//! the region, not in the handle, so a side can be handed from one thread or
//! process to another (a queue's producers take turns under a lock); a stale
//! cache only underestimates the consumer's progress, and a garbage one is
//! re-read.
//!
//! A frame is an 8-byte header, [`FRAME_FLAG`]` | (kind as u64) << 40 | len`
//! (`len` in the low 32 bits, a caller's `kind` tag in bits 40..48, 0 for a
//! plain frame), then the payload, padded so that the frame occupies
//! [`frame_span`]`(len)` bytes, a multiple of 16. A frame never wraps: if it
//! does not fit before the end of the buffer, the producer writes a [`WRAP`]
//! marker and starts the frame at offset 0.
//!
//! # Payload alignment
//!
//! Every payload starts at a [`PAYLOAD_ALIGN`] (16) byte aligned address, so
//! that data with 16-byte alignment (an rkyv archive holding a `u128`, say)
//! can be read in place. Item positions (frames, markers, the next header
//! word) are multiples of 16, and the data area starts 8 bytes past a
//! 16-aligned address (the ring memory is [`OBJECT_ALIGN`]-aligned), so each
//! 8-byte header sits right before a 16-aligned payload. A frame spans
//! `round_up(8 + len, 16)` bytes: a `u64` message still takes 16.
//!
//! # Publication: the header is the flag
//!
//! The producer writes a frame in place ([`Producer::reserve`] →
//! [`Producer::commit`]) and publishes it with one `Release` store of its
//! header word; the consumer `Acquire`-loads the word at its head: zero means
//! empty, anything else is a frame (or a marker) whose payload the `Acquire`
//! makes visible. So a consumer polling an empty ring reads one line, the one
//! the next frame will be written to, and a message costs one cache-line
//! transfer, not two (`tail`, then the frame). The consumer never reads
//! `tail`; the producer still stores it after the header for
//! [`used`](SpscRing::used) and the blocking layer. The consumer hands the
//! space back with a `Release` store of `head`, which the producer
//! `Acquire`-loads before reusing it.
//!
//! A [`Batch`] of frames is published once: its first frame's header is
//! held back and stored after the others, so the consumer, which walks
//! frames in order from its head, sees all of the batch or none of it.
//!
//! "Non-zero at the head means published" needs the word at the head to be
//! zero until then, and in a byte ring that word may hold anything from an
//! earlier lap: an old header, or, since frame sizes vary, old payload bytes,
//! or the bytes of a reservation that was never committed. So the producer
//! keeps one invariant: **before it publishes an item that ends at position
//! `e`, the word at `e` is zero.** It stores that zero itself (the "next
//! header" word, in the same or the next line as the frame), which is why
//! every reservation needs [`NEXT_HEADER_ROOM`] bytes of room beyond its frame
//! (the 8-byte word, on the 16-byte grid of positions) and
//! [`max_frame`](SpscRing::max_frame) is `capacity - 24`. The next item's
//! publication is the only later store to that word. For a wrapped frame the
//! frame at offset 0 is published first and the marker last, so a consumer
//! that sees the marker finds the frame. The loom model mirrors the payload
//! bytes that lie where a later header may be read (the 16-aligned words of a
//! frame's payload) into the header words, so that it checks exactly this.
//!
//! A producer that dies before its header store leaves nothing visible: no
//! torn frame, and the next producer writes over the unpublished bytes. One
//! that dies after it but before storing its own position leaves a published
//! frame behind its recorded position; [`Producer::resync`] walks over such
//! frames (the zero after the last one stops it) before a new producer
//! continues.
//!
//! # Untrusted memory
//!
//! Positions, lengths and markers read from the ring are checked against the
//! capacity before any access: a frame must lie inside the published range and
//! inside the buffer, a marker must be followed by a frame, a header must have
//! no bits set outside its flag, kind and length, positions must be 16-aligned
//! and at most `capacity` apart. Violations give
//! [`RingError::Corrupt`]; nothing reads or writes outside the buffer, and
//! every loop is bounded.

use core::ptr::NonNull;

use crate::cache_padded::CachePadded;
use crate::notify::Notifier;
use crate::participants::Participants;
use crate::peer_bytes::PeerBytes;
use crate::primitive::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::region::{align_up, OBJECT_ALIGN};

/// Frame header value marking "skip to the start of the buffer".
///
/// ```
/// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
/// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
/// // A frame that does not fit before the end starts at offset 0 after a
/// // WRAP marker; the consumer skips the marker.
/// for i in 0..200u32 {
///     tx.push(&[i as u8; 100]).unwrap_or(());
///     rx.pop(|b| assert_eq!(b.len(), 100)).unwrap();
/// }
/// assert_eq!(shmproc_core::spsc::WRAP, u64::MAX);
/// ```
pub const WRAP: u64 = u64::MAX;
/// The bit that makes a frame header non-zero: a header is
/// `FRAME_FLAG | (kind as u64) << 40 | len`, so that an empty frame is not
/// mistaken for "nothing published" (a zero word).
///
/// ```
/// # use shmproc_core::spsc::{RingError, SpscRing, FRAME_FLAG};
/// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
/// tx.push(b"")?; // an empty message is still a published frame
/// assert_eq!(rx.pop(|b| b.len())?, Some(0));
/// assert_eq!(FRAME_FLAG, 1 << 32);
/// # Ok::<(), RingError>(())
/// ```
pub const FRAME_FLAG: u64 = 1 << 32;
/// Positions beyond this are corrupt (2^62 bytes: centuries of traffic), so
/// that position arithmetic never overflows.
const MAX_POSITION: u64 = 1 << 62;
/// The bits of a frame header that hold the payload length.
const LEN_MASK: u64 = 0xffff_ffff;
/// The grid of positions, as a position difference.
const GRID: u64 = PAYLOAD_ALIGN as u64;
/// Where a frame header holds the frame's kind (bits 40..48).
const KIND_SHIFT: u32 = 40;
/// Every bit a valid frame header may have set: flag, kind, length.
const HEADER_BITS: u64 = FRAME_FLAG | (0xff << KIND_SHIFT) | LEN_MASK;
/// Alignment of every frame's payload in memory; frames, wrap markers and the
/// next header word all start at positions that are multiples of it (module
/// docs).
///
/// ```
/// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
/// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
/// use shmproc_core::spsc::PAYLOAD_ALIGN;
/// for n in [1usize, 8, 13, 100] {
///     tx.push(&vec![7; n])?;
///     let f = rx.peek()?.unwrap();
///     // Readable in place as data aligned to 16 (a u128, an rkyv archive).
///     assert_eq!(rx.bytes(&f).as_ptr() as usize % PAYLOAD_ALIGN, 0);
///     rx.release(f);
/// }
/// # Ok::<(), RingError>(())
/// ```
pub const PAYLOAD_ALIGN: usize = 16;
/// Bytes a ring always keeps free beyond its last frame: room for the next
/// header word, which the producer zeroes before it publishes a frame (module
/// docs), on the 16-byte grid of positions. A frame of `len` payload bytes
/// goes in only if [`frame_span`]`(len)` bytes, plus these, plus whatever a
/// wrap marker skips before the end of the buffer, are free; see
/// [`capacity_for_frames`] to size a ring.
///
/// ```
/// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
/// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
/// use shmproc_core::spsc::{frame_span, FRAME_HEADER, NEXT_HEADER_ROOM};
/// // The largest frame fills the ring but for the room.
/// assert_eq!(ring.max_frame(), 1024 - FRAME_HEADER - NEXT_HEADER_ROOM);
/// assert_eq!(frame_span(ring.max_frame()) + NEXT_HEADER_ROOM, 1024);
/// // 16-byte frames: 63 fit in 1024 bytes, not 64.
/// let mut n = 0;
/// while tx.push(&[0; 8]).is_ok() {
///     n += 1;
/// }
/// assert_eq!(n, (1024 - NEXT_HEADER_ROOM) / frame_span(8));
/// # Ok::<(), RingError>(())
/// ```
pub const NEXT_HEADER_ROOM: usize = 16;
/// [`NEXT_HEADER_ROOM`] as a position difference.
const NEXT_HEADER: u64 = NEXT_HEADER_ROOM as u64;
/// The header words sit 8 bytes before 16-aligned addresses (module docs), so
/// an 8-byte alignment must do for them, loom's model atomics included.
const _: () = assert!(core::mem::align_of::<AtomicU64>() <= FRAME_HEADER);

/// Bytes a frame with a `len`-byte payload occupies in the ring: the 8-byte
/// header and the payload, padded so that the frame ends on the 16-byte grid
/// and the next frame's payload is [`PAYLOAD_ALIGN`]ed too. For lengths no
/// ring can carry (beyond [`MAX_FRAME`]) it saturates.
///
/// ```
/// use shmproc_core::spsc::frame_span;
/// assert_eq!(frame_span(0), 16);
/// assert_eq!(frame_span(8), 16); // a u64 message
/// assert_eq!(frame_span(9), 32);
/// assert_eq!(frame_span(24), 32);
/// assert_eq!(frame_span(25), 48);
/// ```
#[must_use]
pub const fn frame_span(len: usize) -> usize {
    match len.checked_add(FRAME_HEADER + PAYLOAD_ALIGN - 1) {
        Some(v) => v & !(PAYLOAD_ALIGN - 1),
        None => usize::MAX & !(PAYLOAD_ALIGN - 1),
    }
}

/// The smallest data capacity in which `frames` frames of up to `len`
/// payload bytes each always fit at once, wherever the ring's positions
/// stand: their spans ([`frame_span`]), the bytes a wrap marker may skip at
/// the end of the buffer (a frame wraps only when less than its span is left
/// there, so at most `frame_span(len) - 16`), and [`NEXT_HEADER_ROOM`]. For
/// `frames > 0` that is `(frames + 1) * frame_span(len)`.
///
/// It is the size before rounding: [`SpscRing::init`] takes a power of two,
/// at least [`MIN_CAPACITY`]. A queue that admits at most `frames` messages
/// of up to `len` bytes and sizes its ring so never finds it full below its
/// limit. The bound holds as long as the producer reserves or tries no
/// frame larger than `len`: the bytes a wrap marker skips depend on the size
/// reserved (a frame committed shorter keeps them), and a try that finds the
/// ring full may publish a marker on its own ([`Producer::reserve`]), which
/// skips up to that frame's span less 16 until the consumer passes it.
/// `None` if `len` is beyond [`MAX_FRAME`] or the size overflows.
///
/// ```
/// # use core::ptr::NonNull;
/// use shmproc_core::spsc::{capacity_for_frames, frame_span, SpscRing, MIN_CAPACITY};
/// let bytes = capacity_for_frames(5, 20).unwrap();
/// assert_eq!(bytes, 6 * frame_span(20));
/// let cap = bytes.max(MIN_CAPACITY).next_power_of_two();
/// # let len = SpscRing::required_size(cap);
/// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
/// # // SAFETY: the layout has a non-zero size.
/// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
/// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
/// # let ring = unsafe { SpscRing::init(mem, len, cap) }.unwrap();
/// # // SAFETY: the example is the ring's only producer and consumer.
/// # let (mut tx, mut rx) = unsafe { (ring.producer(), ring.consumer()) };
/// // Whatever the positions, 5 messages of up to 20 bytes fit.
/// for round in 0..100 {
///     for k in 0..5 {
///         tx.push(&vec![0; (round + k) % 21]).unwrap();
///     }
///     while rx.pop(|_| ()).unwrap().is_some() {}
/// }
/// assert_eq!(capacity_for_frames(1, usize::MAX), None);
/// ```
#[must_use]
pub const fn capacity_for_frames(frames: usize, len: usize) -> Option<usize> {
    if len > MAX_FRAME {
        return None;
    }
    if frames == 0 {
        return Some(NEXT_HEADER_ROOM);
    }
    let span = frame_span(len);
    let Some(all) = frames.checked_mul(span) else { return None };
    // Positions and spans are multiples of PAYLOAD_ALIGN, so a wrap marker
    // skips at most span - PAYLOAD_ALIGN bytes.
    all.checked_add(span - PAYLOAD_ALIGN + NEXT_HEADER_ROOM)
}

/// Frame header size.
///
/// ```
/// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
/// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
/// tx.push(b"hi")?;
/// // 8 header bytes, the payload padded so that the frame spans 16.
/// assert_eq!(ring.used()?, (shmproc_core::spsc::FRAME_HEADER + 8) as u64);
/// assert_eq!(ring.used()?, shmproc_core::spsc::frame_span(2) as u64);
/// # Ok::<(), RingError>(())
/// ```
pub const FRAME_HEADER: usize = 8;
/// Smallest capacity.
///
/// ```
/// use shmproc_core::spsc::{SpscRing, MIN_CAPACITY};
/// assert_eq!(SpscRing::capacity_for(SpscRing::required_size(MIN_CAPACITY) - 1), 0); // too small
/// ```
pub const MIN_CAPACITY: usize = 64;
/// Largest payload a frame can carry (the length is stored in 32 bits).
///
/// ```
/// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
/// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
/// assert!(ring.max_frame() <= shmproc_core::spsc::MAX_FRAME);
/// ```
pub const MAX_FRAME: usize = u32::MAX as usize - 8;

/// Errors of ring operations.
///
/// ```
/// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
/// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
/// assert_eq!(tx.reserve(4096).unwrap_err(), RingError::TooLarge);
/// while tx.push(&[0; 64]).is_ok() {}
/// assert_eq!(tx.push(&[0; 64]).unwrap_err(), RingError::Full);
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RingError {
    /// No room (producer) right now.
    Full,
    /// The frame can never fit.
    TooLarge,
    /// The ring holds impossible values.
    Corrupt(&'static str),
    /// The memory is too small or misaligned for the ring.
    Layout(&'static str),
}

impl RingError {
    /// A short description, for error values that carry a reason string.
    ///
    /// ```
    /// use shmproc_core::spsc::RingError;
    /// assert_eq!(RingError::Corrupt("positions").reason(), "positions");
    /// assert_eq!(RingError::Full.reason(), "ring full");
    /// ```
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            RingError::Full => "ring full",
            RingError::TooLarge => "frame too large",
            RingError::Corrupt(r) | RingError::Layout(r) => r,
        }
    }
}

/// The shared header of a ring.
///
/// ```
/// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
/// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
/// // The header carries the blocking layer and the participants table.
/// assert_eq!(ring.header().not_empty.waiters(), 0);
/// ```
#[repr(C, align(128))]
pub struct SpscHeader {
    head: CachePadded<AtomicU64>,
    tail: CachePadded<AtomicU64>,
    /// The consumer's own copy of `head`, on a line the producer never reads.
    consumer: CachePadded<AtomicU64>,
    /// The producer's own copy of `tail` and its cache of `head`, on a line
    /// the consumer never reads.
    producer: CachePadded<Side>,
    meta: CachePadded<Meta>,
    /// Signalled by the producer after publishing.
    pub not_empty: CachePadded<Notifier>,
    /// Signalled by the consumer after releasing.
    pub not_full: CachePadded<Notifier>,
    /// Processes holding handles, by role.
    pub participants: Participants,
}

/// One side's private line: its own position and its cache of the other's.
#[repr(C)]
struct Side {
    pos: AtomicU64,
    cache: AtomicU64,
}

#[repr(C)]
struct Meta {
    capacity: AtomicU64,
    closed: AtomicU32,
}

/// Under loom, frame-header words cannot live at byte offsets of the data area
/// (loom's atomics are model objects that must be constructed), so they live
/// in a side array after it, one per 16 data bytes (header words only sit at
/// 16-aligned offsets); this is its size per data byte.
#[cfg(loom)]
const LOOM_WORDS_PER_BYTE: usize = core::mem::size_of::<AtomicU64>().div_ceil(PAYLOAD_ALIGN);
#[cfg(not(loom))]
const LOOM_WORDS_PER_BYTE: usize = 0;

const HEADER_SPAN: usize = match align_up(core::mem::size_of::<SpscHeader>(), OBJECT_ALIGN) {
    Some(v) => v,
    None => panic!("header size"),
};

/// Where the data area starts: 8 bytes past the (128-aligned) end of the
/// header, so that a frame at a 16-aligned position has its 8-byte header
/// right before a 16-aligned payload (module docs).
const DATA_OFFSET: usize = HEADER_SPAN + PAYLOAD_ALIGN - FRAME_HEADER;
const _: () = assert!(OBJECT_ALIGN % PAYLOAD_ALIGN == 0 && HEADER_SPAN % PAYLOAD_ALIGN == 0);

/// A ring in memory handed to it; `Copy`, like a pointer.
///
/// ```
/// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
/// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
/// tx.push(b"frame")?;
/// assert_eq!(rx.pop(|b| b.to_vec())?, Some(b"frame".to_vec()));
/// # Ok::<(), RingError>(())
/// ```
#[derive(Copy, Clone, Debug)]
pub struct SpscRing {
    hdr: NonNull<SpscHeader>,
    data: NonNull<u8>,
    cap: u64,
}

// SAFETY: the ring is shared memory accessed through atomics and under the
// single-producer / single-consumer protocol, like between processes.
unsafe impl Send for SpscRing {}
// SAFETY: as above.
unsafe impl Sync for SpscRing {}

/// The header word of a frame of `len` payload bytes and kind `kind` (what
/// [`SpscRing::item_at`] validates).
#[inline]
fn frame_header(len: usize, kind: u8) -> u64 {
    FRAME_FLAG | (u64::from(kind) << KIND_SHIFT) | len as u64
}

/// [`frame_span`] as a position difference (`len` is at most [`MAX_FRAME`]
/// wherever this is called, so nothing saturates).
#[inline]
fn frame_size(len: usize) -> u64 {
    frame_span(len) as u64
}

impl SpscRing {
    /// Bytes of memory needed for a ring of `capacity` data bytes.
    ///
    /// ```
    /// use shmproc_core::spsc::SpscRing;
    /// assert!(SpscRing::required_size(4096) > 4096); // header included
    /// ```
    #[must_use]
    pub const fn required_size(capacity: usize) -> usize {
        DATA_OFFSET + capacity + LOOM_WORDS_PER_BYTE * capacity
    }

    /// The data capacity that fits in `len` bytes (a power of two).
    ///
    /// ```
    /// use shmproc_core::spsc::SpscRing;
    /// assert_eq!(SpscRing::capacity_for(SpscRing::required_size(4096)), 4096);
    /// assert_eq!(SpscRing::capacity_for(SpscRing::required_size(4096) + 100), 4096); // a power of two
    /// ```
    #[must_use]
    pub fn capacity_for(len: usize) -> usize {
        let avail = len.saturating_sub(DATA_OFFSET);
        if avail < MIN_CAPACITY {
            0
        } else {
            1usize << (usize::BITS - 1 - avail.leading_zeros())
        }
    }

    /// Initialises an empty ring of `capacity` bytes (a power of two, at least
    /// [`MIN_CAPACITY`]) at `base`.
    ///
    /// # Safety
    ///
    /// `base..base+len` must be valid for reads and writes, aligned to
    /// [`OBJECT_ALIGN`], and stay so while the ring (or a copy) is used.
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let len = SpscRing::required_size(1024);
    /// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
    /// # // SAFETY: the layout has a non-zero size.
    /// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    /// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
    /// # let ring = unsafe { SpscRing::init(mem, len, 1024) }.unwrap();
    /// # // SAFETY: the example is the ring's only producer and consumer.
    /// # let (mut tx, mut rx) = unsafe { (ring.producer(), ring.consumer()) };
    /// assert_eq!(ring.capacity(), 1024);
    /// // A capacity that is not a power of two is refused.
    /// // SAFETY: the same memory.
    /// assert!(unsafe { SpscRing::init(mem, len, 1000) }.is_err());
    /// ```
    pub unsafe fn init(base: NonNull<u8>, len: usize, capacity: usize) -> Result<SpscRing, RingError> {
        if !capacity.is_power_of_two() || capacity < MIN_CAPACITY {
            return Err(RingError::Layout("capacity must be a power of two >= 64"));
        }
        if base.as_ptr() as usize % OBJECT_ALIGN != 0 {
            return Err(RingError::Layout("misaligned"));
        }
        if len < SpscRing::required_size(capacity) {
            return Err(RingError::Layout("memory too small"));
        }
        #[cfg(loom)]
        // SAFETY: aligned and large enough (checked); not yet shared. Loom's
        // atomics must be constructed before use.
        unsafe {
            use crate::participants::Participants;
            base.as_ptr().cast::<SpscHeader>().write(SpscHeader {
                head: CachePadded(AtomicU64::new(0)),
                tail: CachePadded(AtomicU64::new(0)),
                consumer: CachePadded(AtomicU64::new(0)),
                producer: CachePadded(Side { pos: AtomicU64::new(0), cache: AtomicU64::new(0) }),
                meta: CachePadded(Meta { capacity: AtomicU64::new(0), closed: AtomicU32::new(0) }),
                not_empty: CachePadded(Notifier::new()),
                not_full: CachePadded(Notifier::new()),
                participants: Participants::new_for_loom(),
            });
            let words = base.as_ptr().add(DATA_OFFSET + capacity).cast::<AtomicU64>();
            for i in 0..capacity / PAYLOAD_ALIGN {
                words.add(i).write(AtomicU64::new(0));
            }
        }
        // SAFETY: aligned and large enough (checked); the header is atomics.
        let hdr = unsafe { &*base.as_ptr().cast::<SpscHeader>() };
        hdr.head.store(0, Ordering::Relaxed);
        hdr.tail.store(0, Ordering::Relaxed);
        hdr.consumer.store(0, Ordering::Relaxed);
        hdr.producer.pos.store(0, Ordering::Relaxed);
        hdr.producer.cache.store(0, Ordering::Relaxed);
        hdr.meta.capacity.store(capacity as u64, Ordering::Relaxed);
        hdr.meta.closed.store(0, Ordering::Relaxed);
        hdr.not_empty.init();
        hdr.not_full.init();
        hdr.participants.init();
        // SAFETY: forwarded contract; capacity validated above.
        let ring = unsafe { SpscRing::attach(base, len) }?;
        // The word at the head must be zero until a frame is published there
        // (module docs); the memory handed in may hold anything.
        ring.word(0).store(0, Ordering::Relaxed);
        Ok(ring)
    }

    /// Attaches to a ring someone else initialised, validating its capacity
    /// against `len`.
    ///
    /// # Safety
    ///
    /// As for [`init`](SpscRing::init); the contents may be anything.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let len = SpscRing::required_size(1024);
    /// # let mem = shmproc_core::__doc::memory(len);
    /// # // SAFETY: `len` fresh writable bytes, page-aligned, never unmapped.
    /// # let ring = unsafe { SpscRing::init(mem, len, 1024) }?;
    /// # // SAFETY: the example is the ring's only producer.
    /// # let mut tx = unsafe { ring.producer() };
    /// tx.push(b"x")?;
    /// // Another process attaches to the same memory (validated).
    /// // SAFETY: the same memory, still mapped.
    /// let other = unsafe { SpscRing::attach(mem, len) }?;
    /// // SAFETY: `other` is the only consumer in use now.
    /// assert_eq!(unsafe { other.consumer() }.pop(|b| b.to_vec())?, Some(b"x".to_vec()));
    /// # Ok::<(), RingError>(())
    /// ```
    pub unsafe fn attach(base: NonNull<u8>, len: usize) -> Result<SpscRing, RingError> {
        if base.as_ptr() as usize % OBJECT_ALIGN != 0 {
            return Err(RingError::Layout("misaligned"));
        }
        if len < DATA_OFFSET {
            return Err(RingError::Layout("memory too small"));
        }
        // SAFETY: aligned and at least HEADER_SPAN bytes (checked).
        let hdr = unsafe { &*base.as_ptr().cast::<SpscHeader>() };
        let cap = hdr.meta.capacity.load(Ordering::Relaxed);
        if !cap.is_power_of_two()
            || cap < MIN_CAPACITY as u64
            || cap > ((len - DATA_OFFSET) / (1 + LOOM_WORDS_PER_BYTE)) as u64
        {
            return Err(RingError::Corrupt("capacity"));
        }
        Ok(SpscRing {
            hdr: base.cast(),
            // SAFETY: DATA_OFFSET + cap <= len (checked), so in bounds.
            data: unsafe { NonNull::new_unchecked(base.as_ptr().add(DATA_OFFSET)) },
            cap,
        })
    }

    /// The shared header (notifiers, participants).
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// ring.header().not_empty.notify();
    /// ```
    #[inline]
    pub fn header(&self) -> &SpscHeader {
        // SAFETY: validated at attach; the memory outlives self (contract).
        unsafe { self.hdr.as_ref() }
    }

    /// Data capacity in bytes.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// assert_eq!(ring.capacity(), 1024);
    /// ```
    #[must_use]
    #[inline]
    pub fn capacity(&self) -> usize {
        self.cap as usize
    }

    /// The largest payload a single frame can carry in this ring: the
    /// capacity less the frame header and the [`NEXT_HEADER_ROOM`] kept for
    /// the next header word the producer zeroes before publishing (module
    /// docs).
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// assert_eq!(ring.max_frame(), 1024 - 24);
    /// ```
    #[must_use]
    #[inline]
    pub fn max_frame(&self) -> usize {
        (self.cap as usize - FRAME_HEADER - NEXT_HEADER as usize).min(MAX_FRAME)
    }

    /// Marks the ring closed (no more frames will be sent).
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// ring.close();
    /// assert!(ring.is_closed());
    /// ```
    pub fn close(&self) {
        self.header().meta.closed.store(1, Ordering::Release);
        self.header().not_empty.wake_all();
        self.header().not_full.wake_all();
    }

    /// Whether [`close`](SpscRing::close) was called.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// assert!(!ring.is_closed());
    /// ```
    #[inline]
    pub fn is_closed(&self) -> bool {
        self.header().meta.closed.load(Ordering::Acquire) != 0
    }

    /// The payload of `frame` (found by a [`Consumer`] of this ring), read in
    /// place. The bytes stay unchanged until the frame is released.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// tx.push(b"abc")?;
    /// let frame = rx.peek()?.unwrap();
    /// assert_eq!(ring.payload(&frame), b"abc");
    /// rx.release(frame);
    /// # Ok::<(), RingError>(())
    /// ```
    #[inline]
    pub fn payload<'a>(&'a self, frame: &'a Frame) -> &'a [u8] {
        if frame.off + FRAME_HEADER + frame.len > self.cap as usize {
            // A frame of another, larger ring: nothing of this one.
            return &[];
        }
        // SAFETY: in bounds (checked above; peek() also checked it against the
        // ring it came from); a published frame is not written by the producer
        // until `release`.
        unsafe { core::slice::from_raw_parts(self.bytes(frame.off + FRAME_HEADER, frame.len), frame.len) }
    }

    /// A published frame's payload, to be copied out: a peer that breaks
    /// the protocol may write it while it is read (see
    /// [`peer_bytes`](crate::peer_bytes)). Empty for a frame of another,
    /// larger ring, as [`payload`](SpscRing::payload).
    #[inline]
    pub fn peer_payload<'a>(&'a self, frame: &'a Frame) -> PeerBytes<'a> {
        if frame.off + FRAME_HEADER + frame.len > self.cap as usize {
            return PeerBytes::from_slice(&[]);
        }
        // SAFETY: in bounds (checked above), inside the ring's mapping,
        // which outlives `&self`; read only through atomic loads.
        unsafe { PeerBytes::new(NonNull::new_unchecked(self.bytes(frame.off + FRAME_HEADER, frame.len)), frame.len) }
    }

    /// The consumed position (a snapshot): it moves whenever the consumer
    /// hands space back, so a blocked producer can wait for it to change.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// let before = ring.head();
    /// tx.push(b"a")?;
    /// rx.pop(|_| ())?;
    /// assert!(ring.head() > before);
    /// # Ok::<(), RingError>(())
    /// ```
    #[inline]
    pub fn head(&self) -> u64 {
        self.header().head.load(Ordering::Acquire)
    }

    /// Bytes published and not yet consumed (a snapshot, validated).
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// assert_eq!(ring.used()?, 0);
    /// tx.push(&[1; 8])?;
    /// assert_eq!(ring.used()?, 16);
    /// # Ok::<(), RingError>(())
    /// ```
    #[inline]
    pub fn used(&self) -> Result<u64, RingError> {
        let head = self.header().head.load(Ordering::Acquire);
        let tail = self.header().tail.load(Ordering::Acquire);
        if head > tail && head - tail <= self.cap && head % GRID == 0 && tail % GRID == 0 {
            // The consumer may take a frame between the producer's header
            // store and its `tail` store: for that moment `head` is ahead.
            return Ok(0);
        }
        self.check_span(head, tail)
    }

    /// Whether something is published at the consumer's position (a frame or
    /// a wrap marker), or the ring is corrupt (so that the consumer's next
    /// attempt reports it). It reads the word the consumer polls, not `tail`:
    /// a blocked consumer that waits on this pulls one cache line from the
    /// producer, not two.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// assert!(!ring.has_frame());
    /// tx.push(b"x")?;
    /// assert!(ring.has_frame());
    /// rx.pop(|_| ())?;
    /// assert!(!ring.has_frame());
    /// # Ok::<(), RingError>(())
    /// ```
    #[must_use]
    #[inline]
    pub fn has_frame(&self) -> bool {
        !matches!(self.item_at(self.header().consumer.load(Ordering::Relaxed)), Ok(Item::Empty))
    }

    /// What the word at position `pos` holds, validated: nothing yet, a wrap
    /// marker, or a frame that lies inside the buffer (module docs). The
    /// `Acquire` load makes a published frame's payload visible.
    #[inline]
    fn item_at(&self, pos: u64) -> Result<Item, RingError> {
        if pos % GRID != 0 || pos > MAX_POSITION {
            return Err(RingError::Corrupt("position"));
        }
        let off = (pos & (self.cap - 1)) as usize;
        match self.word(off).load(Ordering::Acquire) {
            0 => Ok(Item::Empty),
            WRAP if off != 0 => Ok(Item::Wrap { next: pos + (self.cap - off as u64) }),
            WRAP => Err(RingError::Corrupt("wrap marker")),
            word => {
                if word & FRAME_FLAG == 0 || word & !HEADER_BITS != 0 || word & LEN_MASK > MAX_FRAME as u64 {
                    return Err(RingError::Corrupt("frame header"));
                }
                let len = (word & LEN_MASK) as usize;
                let frame = frame_size(len);
                if off as u64 + frame > self.cap {
                    return Err(RingError::Corrupt("frame length"));
                }
                Ok(Item::Frame(Frame { next_head: pos + frame, off, len, header: word }))
            }
        }
    }

    /// Whether a frame of `len` payload bytes would fit now, wrap marker and
    /// next header word included (a snapshot; `true` on a corrupt ring, so
    /// that the producer's next attempt reports it). A blocked producer waits
    /// for this.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// assert!(ring.fits(ring.max_frame()));
    /// tx.push(&[0; 500])?;
    /// assert!(!ring.fits(600));
    /// rx.pop(|_| ())?;
    /// // Empty, but 600 bytes fit only from the buffer start: the producer
    /// // publishes a wrap marker and waits for the consumer to skip it.
    /// assert!(!ring.fits(600));
    /// assert_eq!(tx.push(&[0; 600]), Err(RingError::Full));
    /// assert_eq!(rx.pop(|_| ())?, None);
    /// assert!(ring.fits(600));
    /// # Ok::<(), RingError>(())
    /// ```
    #[must_use]
    pub fn fits(&self, len: usize) -> bool {
        let head = self.header().head.load(Ordering::Acquire);
        let tail = self.header().producer.pos.load(Ordering::Relaxed);
        let Ok(used) = self.check_span(head, tail) else { return true };
        if len > self.max_frame() {
            return true; // reported as TooLarge
        }
        self.cap - used >= self.placement(tail, len).span + NEXT_HEADER
    }

    /// Where a `len`-byte frame goes when the producer is at `tail` (the one
    /// place the wrap geometry is worked out; no room is checked).
    #[inline]
    fn placement(&self, tail: u64, len: usize) -> Placement {
        let need = frame_size(len);
        let off = (tail & (self.cap - 1)) as usize;
        let till_end = self.cap - off as u64;
        if need <= till_end {
            Placement { frame_pos: tail, off, wrap: None, span: need }
        } else {
            Placement { frame_pos: tail + till_end, off: 0, wrap: Some((off, till_end)), span: till_end + need }
        }
    }

    #[inline]
    fn check_span(&self, head: u64, tail: u64) -> Result<u64, RingError> {
        match tail.checked_sub(head) {
            Some(n) if n <= self.cap && head % GRID == 0 && tail % GRID == 0 => Ok(n),
            _ => Err(RingError::Corrupt("positions")),
        }
    }

    /// The producer side. Use one at a time.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// drop((tx, rx));
    /// // SAFETY: the only producer now (the example's first one is gone).
    /// let mut p: Producer = unsafe { ring.producer() };
    /// p.push(b"one")?;
    /// # Ok::<(), RingError>(())
    /// ```
    ///
    /// # Safety
    ///
    /// At most one `Producer` of this ring may be in use at a time, in all
    /// processes together: the caller serialises producers (a queue holds its
    /// producing side's lock while it uses one). Two at once would hand out
    /// the same bytes as two `&mut [u8]`.
    #[must_use]
    pub unsafe fn producer(&self) -> Producer {
        Producer { ring: *self }
    }

    /// The consumer side. Use one at a time.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// tx.push(b"one")?;
    /// drop(rx);
    /// // SAFETY: the only consumer now.
    /// let mut c: Consumer = unsafe { ring.consumer() };
    /// assert!(c.pop(|b| b == b"one")?.unwrap());
    /// # Ok::<(), RingError>(())
    /// ```
    ///
    /// # Safety
    ///
    /// At most one `Consumer` of this ring may be in use at a time, in all
    /// processes together (a queue holds its consuming side's lock): a second
    /// one could release a frame the first is still reading, and the
    /// producer would then write bytes that are borrowed as `&[u8]`.
    #[must_use]
    pub unsafe fn consumer(&self) -> Consumer {
        Consumer { ring: *self }
    }

    /// The header word at offset `off` of the data area (a multiple of 16).
    #[inline]
    fn word(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off % PAYLOAD_ALIGN == 0 && off + 8 <= self.cap as usize);
        #[cfg(not(loom))]
        // SAFETY: off + 8 <= cap (callers check); the data area starts 8 bytes
        // past a 16-aligned address and off is a multiple of 16, so the word
        // is 8-aligned; an AtomicU64 is valid for any bits.
        unsafe {
            &*self.data.as_ptr().add(off).cast::<AtomicU64>()
        }
        #[cfg(loom)]
        // SAFETY: the side array after the data area (8-aligned, see the
        // assertion by NEXT_HEADER) holds cap / 16 constructed words (see
        // `init`); off / 16 < cap / 16.
        unsafe {
            &*self.data.as_ptr().add(self.cap as usize).cast::<AtomicU64>().add(off / PAYLOAD_ALIGN)
        }
    }

    /// Under loom, copies the payload bytes of a frame at `off` that lie where
    /// a later header may be read (the 8 bytes at each 16-aligned offset
    /// inside the frame past its header) into the header-word side array, so
    /// that the model sees old payload there, as real memory does (the words
    /// *are* the bytes there). Padding is mirrored as zeros. Nothing
    /// otherwise.
    #[inline]
    fn mirror_payload(&self, off: usize, len: usize) {
        #[cfg(loom)]
        for at in (off + PAYLOAD_ALIGN..off + frame_span(len)).step_by(PAYLOAD_ALIGN) {
            // The payload index of the byte at `at`.
            let from = at - off - FRAME_HEADER;
            let mut chunk = [0u8; 8];
            let n = len.saturating_sub(from).min(8);
            // SAFETY: at + n <= off + FRAME_HEADER + len, inside the
            // reserved frame (reserve() checked it against the capacity).
            unsafe { core::ptr::copy_nonoverlapping(self.bytes(at, n), chunk.as_mut_ptr(), n) };
            self.word(at).store(u64::from_le_bytes(chunk), Ordering::Relaxed);
        }
        #[cfg(not(loom))]
        let _ = (off, len);
    }

    #[inline]
    fn bytes(&self, off: usize, len: usize) -> *mut u8 {
        debug_assert!(off + len <= self.cap as usize);
        // SAFETY: callers guarantee off + len <= cap.
        unsafe { self.data.as_ptr().add(off) }
    }
}

/// Space reserved by [`Producer::reserve`], not yet published.
///
/// ```
/// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
/// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
/// let r = tx.reserve(16)?;
/// assert_eq!(r.len(), 16);
/// tx.buffer(&r)[..2].copy_from_slice(b"ok");
/// tx.commit(r, 2);
/// # Ok::<(), RingError>(())
/// ```
#[derive(Debug)]
#[must_use = "a reservation is published only by commit"]
pub struct Reservation {
    frame_pos: u64,
    off: usize,
    len: usize,
    /// Offset of the wrap marker to publish after the frame, if the frame
    /// starts a new lap.
    wrap: Option<usize>,
}

/// A frame written but not yet visible: the header word to store at `off`,
/// and the wrap marker to store after it ([`Producer::release_frame`]).
#[derive(Debug)]
struct Held {
    off: usize,
    header: u64,
    wrap: Option<usize>,
}

impl Reservation {
    /// Bytes reserved for the payload.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// let r = tx.reserve(5)?;
    /// assert_eq!(r.len(), 5);
    /// tx.commit(r, 0);
    /// # Ok::<(), RingError>(())
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether zero bytes were reserved.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// let r = tx.reserve(0)?;
    /// assert!(r.is_empty());
    /// tx.commit(r, 0);
    /// # Ok::<(), RingError>(())
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The producing side of a ring.
///
/// ```
/// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
/// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
/// tx.push(b"in order")?;
/// tx.push_batch([&b"a"[..], b"b"])?;
/// assert_eq!(rx.pop(|b| b.len())?, Some(8));
/// # Ok::<(), RingError>(())
/// ```
#[derive(Debug)]
pub struct Producer {
    ring: SpscRing,
}

impl Producer {
    /// The ring.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// assert_eq!(tx.ring().capacity(), 1024);
    /// ```
    #[must_use]
    pub fn ring(&self) -> &SpscRing {
        &self.ring
    }

    /// The producer's position: bytes produced so far (validated). A frame
    /// reserved now starts here, or past a wrap marker placed here.
    ///
    /// ```
    /// # use shmproc_core::spsc::{RingError, SpscRing};
    /// # let ring = shmproc_core::__doc::spsc(1024).0;
    /// // SAFETY: the example's only producer.
    /// let mut tx = unsafe { ring.producer() };
    /// assert_eq!(tx.position()?, 0);
    /// tx.push(&[1; 8])?;
    /// assert_eq!(tx.position()?, 16);
    /// # Ok::<(), RingError>(())
    /// ```
    #[inline]
    pub fn position(&self) -> Result<u64, RingError> {
        self.tail()
    }

    #[inline]
    fn tail(&self) -> Result<u64, RingError> {
        let tail = self.ring.header().producer.pos.load(Ordering::Relaxed);
        if tail % GRID != 0 || tail > MAX_POSITION {
            return Err(RingError::Corrupt("tail"));
        }
        Ok(tail)
    }

    /// Free bytes ahead of `tail`, re-reading `head` if the cache says fewer
    /// than `need`.
    #[inline]
    fn room(&mut self, tail: u64, need: u64) -> Result<u64, RingError> {
        let cap = self.ring.cap;
        let hdr = self.ring.header();
        let used = self.ring.check_span(hdr.producer.cache.load(Ordering::Relaxed), tail);
        match used {
            Ok(u) if cap - u >= need => return Ok(cap - u),
            _ => {}
        }
        let head = hdr.head.load(Ordering::Acquire);
        hdr.producer.cache.store(head, Ordering::Relaxed);
        Ok(cap - self.ring.check_span(head, tail)?)
    }

    /// Reserves room for a `len`-byte payload, written in place through
    /// [`buffer`](Producer::buffer) and published by [`commit`](Producer::commit).
    ///
    /// A frame that does not fit before the end of the buffer starts at offset
    /// 0 after a wrap marker. If the marker fits but the frame does not fit
    /// beside it yet, the marker is published on its own (the consumer skips
    /// it) and `Full` is returned: once the consumer has caught up, any frame
    /// up to [`max_frame`](SpscRing::max_frame) fits.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// // Serialise in place: reserve the largest size, commit what was written.
    /// let r = tx.reserve(64)?;
    /// let n = { let buf = tx.buffer(&r); buf[..3].copy_from_slice(b"xyz"); 3 };
    /// tx.commit(r, n);
    /// assert_eq!(rx.pop(|b| b.to_vec())?, Some(b"xyz".to_vec()));
    /// # Ok::<(), RingError>(())
    /// ```
    #[inline]
    pub fn reserve(&mut self, len: usize) -> Result<Reservation, RingError> {
        self.reserve_with(len, true)
    }

    /// Like [`reserve`](Producer::reserve), but when the frame does not fit
    /// nothing is published: no wrap marker either, so the room left is
    /// exactly what it was (a caller that keeps room for a last frame of its
    /// own, such as a queue's link to its next ring, relies on that).
    ///
    /// ```
    /// # use shmproc_core::spsc::{RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// tx.push(&[0; 500])?;
    /// rx.pop(|_| ())?;
    /// // 600 bytes fit only from the buffer start: `reserve` would publish a
    /// // wrap marker; `reserve_quiet` leaves the ring as it is.
    /// let used = ring.used()?;
    /// assert_eq!(tx.reserve_quiet(600).unwrap_err(), RingError::Full);
    /// assert_eq!(ring.used()?, used);
    /// # Ok::<(), RingError>(())
    /// ```
    pub fn reserve_quiet(&mut self, len: usize) -> Result<Reservation, RingError> {
        self.reserve_with(len, false)
    }

    #[inline]
    fn reserve_with(&mut self, len: usize, marker: bool) -> Result<Reservation, RingError> {
        if len > self.ring.max_frame() {
            return Err(RingError::TooLarge);
        }
        let tail = self.tail()?;
        let p = self.ring.placement(tail, len);
        if self.has_room(tail, p.span)? {
            return Ok(Reservation { frame_pos: p.frame_pos, off: p.off, len, wrap: p.wrap.map(|(off, _)| off) });
        }
        match (p.wrap, marker) {
            (Some((off, till_end)), true) => self.no_room_at_wrap(tail, off, till_end),
            _ => Err(RingError::Full),
        }
    }

    /// A frame that needs a wrap does not fit: if the marker alone fits,
    /// publish it so the consumer moves past it. `Full` either way. (Out of
    /// line, off the reservation's common path.)
    #[cold]
    fn no_room_at_wrap(&mut self, tail: u64, off: usize, till_end: u64) -> Result<Reservation, RingError> {
        if self.has_room(tail, till_end)? {
            // The word after the marker (offset 0) must be zero before the
            // marker is published (module docs).
            self.ring.word(0).store(0, Ordering::Relaxed);
            self.ring.word(off).store(WRAP, Ordering::Release);
            self.publish(tail + till_end);
        }
        Err(RingError::Full)
    }

    /// Whether `span` bytes from `tail`, and the next header word after them,
    /// are free.
    #[inline]
    fn has_room(&mut self, tail: u64, span: u64) -> Result<bool, RingError> {
        let want = span + NEXT_HEADER;
        Ok(self.room(tail, want)? >= want)
    }

    /// Publishes the frame at `off` (position `frame_pos`, `len` payload
    /// bytes already written) and the wrap marker before it, if any; returns
    /// the position after it. Does not move `tail`.
    ///
    /// Orderings: the next header word is zeroed first (`Relaxed`: the
    /// header's `Release` below orders it, with the payload, before anything
    /// a consumer reads after `Acquire`-loading the header); then the header;
    /// then the marker, also `Release`, so that a consumer that sees the
    /// marker sees the frame at offset 0 too.
    #[inline]
    fn publish_frame(&mut self, frame_pos: u64, off: usize, len: usize, kind: u8, wrap: Option<usize>) -> u64 {
        let (end, held) = self.prepare_frame(frame_pos, off, len, kind, wrap);
        self.release_frame(held);
        end
    }

    /// The first half of [`publish_frame`](Producer::publish_frame): zeroes
    /// the next header word and returns the position after the frame, with
    /// the header (and marker) still to be stored by
    /// [`release_frame`](Producer::release_frame). Until then the frame is
    /// invisible, and so is every frame written after it.
    #[inline]
    fn prepare_frame(&mut self, frame_pos: u64, off: usize, len: usize, kind: u8, wrap: Option<usize>) -> (u64, Held) {
        let end = frame_pos + frame_size(len);
        self.ring.mirror_payload(off, len);
        self.ring.word((end & (self.ring.cap - 1)) as usize).store(0, Ordering::Relaxed);
        (end, Held { off, header: frame_header(len, kind), wrap })
    }

    /// Publishes a frame prepared by [`prepare_frame`](Producer::prepare_frame):
    /// its header, then its wrap marker (both `Release`).
    #[inline]
    fn release_frame(&mut self, held: Held) {
        self.ring.word(held.off).store(held.header, Ordering::Release);
        if let Some(w) = held.wrap {
            self.ring.word(w).store(WRAP, Ordering::Release);
        }
    }

    /// The reserved payload bytes, to be written.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// let r = tx.reserve(4)?;
    /// tx.buffer(&r).copy_from_slice(&7u32.to_le_bytes());
    /// tx.commit(r, 4);
    /// # Ok::<(), RingError>(())
    /// ```
    #[inline]
    pub fn buffer(&mut self, r: &Reservation) -> &mut [u8] {
        // SAFETY: reserve() checked off + frame_span(len) <= cap; these bytes
        // are beyond the published tail, so the consumer does not read them.
        unsafe { core::slice::from_raw_parts_mut(self.ring.bytes(r.off + FRAME_HEADER, r.len), r.len) }
    }

    /// Publishes a reservation with `written` payload bytes (at most what was
    /// reserved).
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// let r = tx.reserve(100)?;
    /// tx.buffer(&r)[0] = 1;
    /// tx.commit(r, 1); // only one byte is published
    /// assert_eq!(rx.pop(|b| b.len())?, Some(1));
    /// # Ok::<(), RingError>(())
    /// ```
    #[inline]
    pub fn commit(&mut self, r: Reservation, written: usize) {
        self.commit_kind(r, written, 0);
    }

    /// Publishes a reservation with `written` payload bytes (at most what was
    /// reserved), tagged with `kind`, which the consumer reads back with
    /// [`Frame::kind`]. The ring gives kinds no meaning;
    /// [`commit`](Producer::commit) publishes kind 0, a plain frame.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// const HANDLE: u8 = 1; // say: the payload names memory to free
    /// let r = tx.reserve(8)?;
    /// tx.buffer(&r).copy_from_slice(&42u64.to_le_bytes());
    /// tx.commit_kind(r, 8, HANDLE);
    /// let f = rx.peek()?.unwrap();
    /// assert_eq!((f.kind(), rx.bytes(&f)), (HANDLE, &42u64.to_le_bytes()[..]));
    /// rx.release(f);
    /// # Ok::<(), RingError>(())
    /// ```
    #[inline]
    pub fn commit_kind(&mut self, r: Reservation, written: usize, kind: u8) {
        let written = written.min(r.len);
        let end = self.publish_frame(r.frame_pos, r.off, written, kind, r.wrap);
        self.publish(end);
    }

    /// Moves the producer's position (and `tail`) to `tail` after the items
    /// before it were published through their headers, and wakes a sleeping
    /// consumer. A producer that dies before these stores leaves published
    /// frames past its recorded position: see [`resync`](Producer::resync).
    #[inline]
    fn publish(&mut self, tail: u64) {
        let hdr = self.ring.header();
        hdr.producer.pos.store(tail, Ordering::Relaxed);
        hdr.tail.store(tail, Ordering::Release);
        hdr.not_empty.notify();
    }

    /// Copies `bytes` in as one frame.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// tx.push(b"copy")?;
    /// assert_eq!(rx.pop(|b| b.to_vec())?, Some(b"copy".to_vec()));
    /// # Ok::<(), RingError>(())
    /// ```
    #[inline]
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), RingError> {
        self.push_kind(bytes, 0)
    }

    /// Copies `bytes` in as one frame tagged with `kind` (see
    /// [`commit_kind`](Producer::commit_kind)).
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// tx.push_kind(b"control", 7)?;
    /// tx.push(b"data")?;
    /// let f = rx.peek()?.unwrap();
    /// assert_eq!((f.kind(), rx.bytes(&f)), (7, &b"control"[..]));
    /// rx.release(f);
    /// assert_eq!(rx.peek()?.unwrap().kind(), 0); // a plain frame
    /// # Ok::<(), RingError>(())
    /// ```
    #[inline]
    pub fn push_kind(&mut self, bytes: &[u8], kind: u8) -> Result<(), RingError> {
        let r = self.reserve(bytes.len())?;
        self.buffer(&r).copy_from_slice(bytes);
        self.commit_kind(r, bytes.len(), kind);
        Ok(())
    }

    /// Starts a run of frames whose position is published once, when the
    /// [`Batch`] finishes (or is dropped).
    #[inline]
    pub fn batch(&mut self) -> Result<Batch<'_>, RingError> {
        let tail = self.tail()?;
        Ok(Batch { producer: self, tail, frames: 0, first: None, room_end: tail })
    }

    /// Pushes frames (of kind 0) from `items` until one does not fit, as one
    /// [`Batch`]: published together, `tail` moved once at the end. Returns
    /// how many were pushed.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// let n = tx.push_batch([&b"1"[..], b"22", b"333"])?;
    /// assert_eq!(n, 3);
    /// let mut got = Vec::new();
    /// rx.pop_batch(10, |b| got.push(b.len()))?;
    /// assert_eq!(got, [1, 2, 3]);
    /// # Ok::<(), RingError>(())
    /// ```
    pub fn push_batch<'a>(&mut self, items: impl IntoIterator<Item = &'a [u8]>) -> Result<usize, RingError> {
        let mut first = None;
        let mut batch = self.batch()?;
        for bytes in items {
            match batch.reserve(bytes.len()) {
                Ok(r) => {
                    batch.buffer(&r).copy_from_slice(bytes);
                    batch.commit(r, bytes.len(), 0);
                }
                Err(RingError::TooLarge) if batch.frames() == 0 => return Err(RingError::TooLarge),
                Err(RingError::Full | RingError::TooLarge) => {
                    if batch.frames() == 0 {
                        first = Some(bytes);
                    }
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let n = batch.finish();
        if n > 0 {
            return Ok(n);
        }
        // Nothing fitted beside the others: the single-frame path may still
        // make progress (a standalone wrap marker).
        match first {
            Some(bytes) => self.push(bytes).map(|()| 1),
            None => Ok(0),
        }
    }
    /// Brings the producer's position up to date after a producer died
    /// holding this side: walks over the frames (of any kind) and markers it
    /// published through their headers but did not yet count in its position, stopping
    /// at the zero word that follows the last one (module docs). Returns how
    /// many frames it walked over (markers are not counted), so that a layer
    /// above that counts messages can add them. Call it before producing
    /// again, with the side held; on a healthy ring it reads one word.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// tx.push(b"a")?;
    /// assert_eq!(tx.resync()?, 0); // nothing published past the position
    /// # Ok::<(), RingError>(())
    /// ```
    pub fn resync(&mut self) -> Result<u64, RingError> {
        let start = self.tail()?;
        let head = self.ring.header().head.load(Ordering::Acquire);
        let cap = self.ring.cap;
        let mut pos = start;
        let mut frames = 0;
        loop {
            // Every published item ends at least NEXT_HEADER short of
            // head + cap: beyond that lies unconsumed data, not our items.
            if pos > head && pos - head > cap - NEXT_HEADER {
                return Err(RingError::Corrupt("positions"));
            }
            if pos - start > cap {
                return Err(RingError::Corrupt("frames"));
            }
            match self.ring.item_at(pos)? {
                Item::Empty => break,
                Item::Wrap { next } => pos = next,
                Item::Frame(f) => {
                    pos = f.next_head;
                    frames += 1;
                }
            }
        }
        if pos != start {
            self.publish(pos);
        }
        Ok(frames)
    }
}

/// Where a frame goes (see [`SpscRing::placement`]).
struct Placement {
    /// The frame's position.
    frame_pos: u64,
    /// Its offset in the buffer.
    off: usize,
    /// If it starts a new lap: the wrap marker's offset and the bytes from
    /// the marker to the end of the buffer.
    wrap: Option<(usize, u64)>,
    /// Bytes from the producer's position to the frame's end, marker included.
    span: u64,
}

/// What a header word holds (see [`SpscRing::item_at`]).
enum Item {
    /// Zero: nothing published here yet.
    Empty,
    /// A wrap marker; the next item is at `next`, the start of the buffer.
    Wrap { next: u64 },
    /// A published frame.
    Frame(Frame),
}

/// A run of frames written by one [`Producer`] ([`Producer::batch`]) and
/// published once: every frame but the first is published by its header as
/// it is committed, while the first frame's header (and its wrap marker, if
/// it starts a lap) is held back and stored last, when the batch finishes or
/// is dropped, followed by the producer's position, `tail` and the wake-up
/// of sleeping consumers. A consumer walks frames in order from its head, so
/// it sees none of the batch until that last header store and then all of
/// it (the header's `Release` orders every earlier frame's bytes and header
/// before it).
///
/// Why hold the first header back: a consumer that keeps up polls the header
/// word at its head, and with several frames to a cache line every frame
/// published on its own pulls the line back to the consumer between two
/// frames, so the producer's next store there waits for the line's return,
/// a cross-core round trip per frame (it was 60% of a batch sender's time
/// on the 2-core machines we measured). Published once, the batch's lines
/// are written while nobody reads them, and the consumer then reads them in
/// one sweep.
///
/// A producer that dies mid-batch before the held header is stored leaves
/// nothing visible (the word at its recorded position is still zero, and the
/// next producer writes over the unpublished bytes); one that dies after it
/// leaves the batch published beyond its recorded position:
/// [`Producer::resync`] walks over those frames, as over any frame published
/// but not recorded.
///
/// Unlike [`Producer::reserve`], a batch never publishes a lone wrap marker
/// when a frame does not fit: the batch just ends there (`Full`), and the
/// next single reservation moves on.
///
/// ```
/// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
/// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
/// let mut b = tx.batch()?;
/// for i in 0..3u8 {
///     let r = b.reserve(1)?;
///     b.buffer(&r)[0] = i;
///     b.commit(r, 1, 0);
/// }
/// assert_eq!(rx.pop(|b| b[0])?, None); // nothing visible before it finishes
/// assert_eq!(b.finish(), 3);
/// assert_eq!(rx.pop(|b| b[0])?, Some(0));
/// # Ok::<(), RingError>(())
/// ```
#[must_use = "a batch publishes its frames when it finishes or drops"]
pub struct Batch<'p> {
    producer: &'p mut Producer,
    tail: u64,
    frames: usize,
    /// The first frame's header and marker, stored when the batch ends.
    first: Option<Held>,
    /// The position up to which the ring had room when last looked at
    /// (room only grows while the batch runs: the consumer frees space).
    room_end: u64,
}

impl Batch<'_> {
    /// Reserves a frame of `len` bytes after the batch's last frame; `Full`
    /// when it does not fit now.
    #[inline(always)]
    pub fn reserve(&mut self, len: usize) -> Result<Reservation, RingError> {
        let ring = &self.producer.ring;
        if len > ring.max_frame() {
            return Err(RingError::TooLarge);
        }
        let p = ring.placement(self.tail, len);
        let want = p.span + NEXT_HEADER;
        if self.room_end.saturating_sub(self.tail) < want {
            // The room known at the batch's last look is used up: look again
            // (the head cache first, then `head`), once per ring's worth
            // rather than once per frame.
            let room = self.producer.room(self.tail, want)?;
            self.room_end = self.tail + room;
            if room < want {
                return Err(RingError::Full);
            }
        }
        Ok(Reservation { frame_pos: p.frame_pos, off: p.off, len, wrap: p.wrap.map(|(off, _)| off) })
    }

    /// The reserved bytes, to write the payload into.
    #[inline]
    pub fn buffer(&mut self, r: &Reservation) -> &mut [u8] {
        self.producer.buffer(r)
    }

    /// Commits the frame (its first `written` bytes, with `kind`): it is
    /// published with the batch. The batch's position moves past it.
    #[inline(always)]
    pub fn commit(&mut self, r: Reservation, written: usize, kind: u8) {
        let written = written.min(r.len);
        if self.first.is_none() {
            let (end, held) = self.producer.prepare_frame(r.frame_pos, r.off, written, kind, r.wrap);
            self.first = Some(held);
            self.tail = end;
        } else {
            self.tail = self.producer.publish_frame(r.frame_pos, r.off, written, kind, r.wrap);
        }
        self.frames += 1;
    }

    /// Frames committed so far.
    #[must_use]
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Writes a run of frames of exactly `len` payload bytes and kind `kind` each, back to
    /// back after the batch's last frame: as many as fit before the end of
    /// the buffer and in the room now (leaving `extra` bytes of room beyond
    /// them), up to `max`. `write(j, buf)` fills frame `j`'s payload (all
    /// `len` bytes of `buf`) and says whether it did: `Ok(false)` stops the
    /// run before that frame (its message is not `len` bytes: a single
    /// [`reserve`](Batch::reserve) takes it), an error stops it and is
    /// returned. Frames written before either are committed. Returns the
    /// frames committed: 0 when not even one fits here (at the end of the
    /// buffer, or out of room, or on a ring whose positions look corrupt),
    /// where the next single reservation places the frame behind a wrap
    /// marker, or reports what is wrong.
    ///
    /// This is [`reserve`](Batch::reserve) and [`commit`](Batch::commit) for
    /// messages of one size, which a fixed-size type sends: the room is
    /// looked at once per run, not once per frame, and each frame costs its
    /// payload and one header store. The frames are the ones `reserve` and
    /// `commit` would write, so the consumer reads them as any others; like
    /// every frame after the batch's first, they become visible when the
    /// batch ends.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// let mut b = tx.batch()?;
    /// let n = b.write_run(8, 0, 100, 0, |j, buf| {
    ///     buf.copy_from_slice(&(j as u64).to_le_bytes());
    ///     Ok::<bool, ()>(true)
    /// });
    /// // 16-byte frames up to the end of the 1024-byte buffer, the next
    /// // header word's room kept.
    /// assert_eq!(n, Ok(63));
    /// assert_eq!(b.finish(), 63);
    /// assert_eq!(rx.pop(|b| b.to_vec())?, Some(0u64.to_le_bytes().to_vec()));
    /// assert_eq!(rx.pop(|b| b.to_vec())?, Some(1u64.to_le_bytes().to_vec()));
    /// # Ok::<(), RingError>(())
    /// ```
    #[inline]
    pub fn write_run<E>(
        &mut self,
        len: usize,
        kind: u8,
        max: usize,
        extra: usize,
        mut write: impl FnMut(usize, &mut [u8]) -> Result<bool, E>,
    ) -> Result<usize, E> {
        let ring = self.producer.ring;
        if len > ring.max_frame() || max == 0 {
            return Ok(0);
        }
        let size = frame_size(len);
        let off = (self.tail & (ring.cap - 1)) as usize;
        // Frames before the end of the buffer (a run never wraps), and the
        // room they need: theirs, `extra`, and the next header word.
        let fit = max.min(((ring.cap - off as u64) / size) as usize);
        let need = |k: usize| (k as u64 * size).saturating_add(extra as u64).saturating_add(NEXT_HEADER);
        if self.room_end.saturating_sub(self.tail) < need(fit) {
            match self.producer.room(self.tail, need(fit)) {
                Ok(room) => self.room_end = self.tail + room,
                Err(_) => return Ok(0),
            }
        }
        let room = self.room_end.saturating_sub(self.tail);
        let k = if room >= need(fit) { fit } else { (room.saturating_sub(need(0)) / size).min(fit as u64) as usize };
        // `off + k * size <= cap`: every frame below lies inside the buffer.
        let mut done = 0;
        let mut failed = None;
        while done < k {
            let at = off + done * size as usize;
            // SAFETY: at + FRAME_HEADER + len <= off + k * size <= cap (see
            // `fit`); these bytes are past the published tail and the room
            // check says the consumer is done with them.
            let buf = unsafe { core::slice::from_raw_parts_mut(ring.bytes(at + FRAME_HEADER, len), len) };
            match write(done, buf) {
                Ok(true) => done += 1,
                Ok(false) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        self.commit_run(off, len, kind, done);
        match failed {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// Commits `n` frames of `len` bytes written back to back from offset
    /// `off` (the batch's position), of kind `kind`: the next header word is zeroed, each
    /// header stored as [`commit`](Batch::commit) does, the first one held
    /// if it is the batch's first.
    #[inline]
    fn commit_run(&mut self, off: usize, len: usize, kind: u8, n: usize) {
        if n == 0 {
            return;
        }
        let ring = self.producer.ring;
        let size = frame_size(len);
        let end = self.tail + n as u64 * size;
        let header = frame_header(len, kind);
        // Nothing here is visible before the batch's first header, which is
        // stored last (`Drop`): the order of these stores does not matter,
        // and only the word after the run needs zeroing (each one before it
        // is a header of the run).
        ring.word((end & (ring.cap - 1)) as usize).store(0, Ordering::Relaxed);
        for j in 0..n {
            let at = off + j * size as usize;
            ring.mirror_payload(at, len);
            if j == 0 && self.first.is_none() {
                self.first = Some(Held { off: at, header, wrap: None });
            } else {
                ring.word(at).store(header, Ordering::Release);
            }
        }
        self.tail = end;
        self.frames += n;
    }

    /// Publishes the frames and the position (once) and returns the frames
    /// committed.
    pub fn finish(self) -> usize {
        self.frames
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if let Some(first) = self.first.take() {
            self.producer.release_frame(first);
            self.producer.publish(self.tail);
        }
    }
}

/// A frame found by [`Consumer::peek`].
///
/// ```
/// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
/// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
/// tx.push(b"peeked")?;
/// let f: Frame = rx.peek()?.unwrap();
/// assert_eq!(f.len(), 6);
/// rx.release(f);
/// # Ok::<(), RingError>(())
/// ```
///
/// A frame is not `Copy`, and its payload borrows it, so its bytes cannot be
/// used after it is handed back (when the producer may write them again):
///
/// ```compile_fail
/// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
/// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
/// tx.push(b"x")?;
/// let f = rx.peek()?.unwrap();
/// let bytes = ring.payload(&f);
/// rx.release(f); // error: `f` is borrowed by `bytes`
/// assert_eq!(bytes, b"x");
/// # Ok::<(), RingError>(())
/// ```
#[derive(Debug)]
#[must_use = "a frame is consumed only by release"]
pub struct Frame {
    next_head: u64,
    off: usize,
    len: usize,
    /// The header word the frame was found by (validated), which holds its
    /// kind.
    header: u64,
}

impl Frame {
    /// Payload length.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// tx.push(&[0; 9])?;
    /// assert_eq!(rx.peek()?.unwrap().len(), 9);
    /// # Ok::<(), RingError>(())
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// tx.push(&[])?;
    /// assert!(rx.peek()?.unwrap().is_empty());
    /// # Ok::<(), RingError>(())
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The kind the producer tagged the frame with
    /// ([`Producer::commit_kind`], [`Producer::push_kind`]); 0 for a plain
    /// frame. Any `u8` may come back from a corrupt ring: a caller that
    /// gives kinds a meaning validates them as it does the payload.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// tx.push_kind(b"x", 200)?;
    /// tx.push(b"y")?;
    /// let kinds: Vec<u8> = (0..2)
    ///     .map(|_| {
    ///         let f = rx.peek().unwrap().unwrap();
    ///         let kind = f.kind();
    ///         rx.release(f);
    ///         kind
    ///     })
    ///     .collect();
    /// assert_eq!(kinds, [200, 0]);
    /// # Ok::<(), RingError>(())
    /// ```
    #[must_use]
    pub fn kind(&self) -> u8 {
        (self.header >> KIND_SHIFT) as u8
    }
}

/// The consuming side of a ring.
///
/// ```
/// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
/// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
/// tx.push(b"m")?;
/// assert_eq!(rx.pop(|b| b[0])?, Some(b'm'));
/// assert_eq!(rx.pop(|b| b[0])?, None);
/// # Ok::<(), RingError>(())
/// ```
#[derive(Debug)]
pub struct Consumer {
    ring: SpscRing,
}

impl Consumer {
    /// The ring.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// assert_eq!(rx.ring().capacity(), 1024);
    /// ```
    #[must_use]
    pub fn ring(&self) -> &SpscRing {
        &self.ring
    }

    /// The position of the next frame to read (the consumer's own copy).
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// assert_eq!(rx.position(), 0);
    /// tx.push(b"a")?;
    /// rx.pop(|_| ())?;
    /// assert_eq!(rx.position(), 16);
    /// # Ok::<(), RingError>(())
    /// ```
    #[inline]
    pub fn position(&self) -> u64 {
        self.ring.header().consumer.load(Ordering::Relaxed)
    }

    /// The next frame, if one is published; `Ok(None)` when empty.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// assert!(rx.peek()?.is_none());
    /// tx.push(b"x")?;
    /// let f = rx.peek()?.unwrap(); // read in place, then release
    /// assert_eq!(rx.bytes(&f), b"x");
    /// rx.release(f);
    /// # Ok::<(), RingError>(())
    /// ```
    #[inline]
    pub fn peek(&mut self) -> Result<Option<Frame>, RingError> {
        let head = self.ring.header().consumer.load(Ordering::Relaxed);
        self.peek_at(head)
    }

    /// The frame starting at position `head` (the shared head, or the end of
    /// frames read but not yet released by a batch).
    ///
    /// Orderings: the header word is `Acquire`-loaded; a non-zero value was
    /// stored with `Release` after the payload (and after the zeroing of the
    /// next header word), so both are visible from here on. The consumer
    /// never reads `tail`.
    #[inline]
    fn peek_at(&mut self, head: u64) -> Result<Option<Frame>, RingError> {
        match self.ring.item_at(head)? {
            Item::Empty => Ok(None),
            Item::Frame(f) => Ok(Some(f)),
            Item::Wrap { next } => {
                // Hand the marker's space back and look at the buffer start.
                // That position has offset 0, where a marker is corrupt, so
                // this recurses at most once.
                self.publish(next);
                self.peek_at(next)
            }
        }
    }

    /// The frame published right after `frame` (which this consumer peeked
    /// and has not released), for taking several frames with one release;
    /// `None` when nothing follows yet or a wrap marker does (the next
    /// [`peek`](Consumer::peek) after releasing moves past it).
    ///
    /// A frame of the same length and kind right behind `frame` (a run of
    /// messages of one type: [`Batch::write_run`]) is recognised by its
    /// header word alone: that word is `frame`'s, validated already, so only
    /// the frame's place in the buffer is checked.
    #[inline]
    pub fn peek_after(&mut self, frame: &Frame) -> Result<Option<Frame>, RingError> {
        let size = frame_size(frame.len);
        let pos = frame.next_head;
        let off = (pos & (self.ring.cap - 1)) as usize;
        if off as u64 + size <= self.ring.cap
            && pos <= MAX_POSITION
            && self.ring.word(off).load(Ordering::Acquire) == frame.header
        {
            return Ok(Some(Frame { next_head: pos + size, off, len: frame.len, header: frame.header }));
        }
        match self.ring.item_at(frame.next_head)? {
            Item::Frame(f) => Ok(Some(f)),
            Item::Empty | Item::Wrap { .. } => Ok(None),
        }
    }

    /// The payload of `frame`, read in place.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// tx.push(b"in place")?;
    /// let f = rx.peek()?.unwrap();
    /// assert_eq!(rx.bytes(&f), b"in place");
    /// rx.release(f);
    /// # Ok::<(), RingError>(())
    /// ```
    #[inline]
    pub fn bytes<'a>(&'a self, frame: &'a Frame) -> &'a [u8] {
        self.ring.payload(frame)
    }

    /// Hands the frame's space back to the producer.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// tx.push(&[0; 100])?;
    /// let f = rx.peek()?.unwrap();
    /// rx.release(f); // the space goes back to the producer
    /// assert_eq!(ring.used()?, 0);
    /// # Ok::<(), RingError>(())
    /// ```
    #[inline]
    pub fn release(&mut self, frame: Frame) {
        self.publish(frame.next_head);
    }

    /// Hands back everything up to `head` and wakes a sleeping producer; the
    /// private copy goes first, as in [`Producer`]'s publish.
    #[inline]
    fn publish(&mut self, head: u64) {
        let hdr = self.ring.header();
        hdr.consumer.store(head, Ordering::Relaxed);
        hdr.head.store(head, Ordering::Release);
        hdr.not_full.notify();
    }

    /// Reads the next frame with `f` and releases it.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// tx.push(&5u64.to_le_bytes())?;
    /// let v = rx.pop(|b| u64::from_le_bytes(b.try_into().unwrap()))?;
    /// assert_eq!(v, Some(5));
    /// # Ok::<(), RingError>(())
    /// ```
    #[inline]
    pub fn pop<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>, RingError> {
        match self.peek()? {
            None => Ok(None),
            Some(frame) => {
                let r = f(self.bytes(&frame));
                self.release(frame);
                Ok(Some(r))
            }
        }
    }

    /// Reads up to `max` frames with `f`, releasing them with one head update.
    ///
    /// ```
    /// # use shmproc_core::spsc::{Consumer, Frame, Producer, RingError, SpscRing};
    /// # let (ring, mut tx, mut rx) = shmproc_core::__doc::spsc(1024);
    /// for i in 0..5u8 {
    ///     tx.push(&[i])?;
    /// }
    /// let mut seen = Vec::new();
    /// assert_eq!(rx.pop_batch(3, |b| seen.push(b[0]))?, 3); // one head update
    /// assert_eq!(seen, [0, 1, 2]);
    /// # Ok::<(), RingError>(())
    /// ```
    pub fn pop_batch(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> Result<usize, RingError> {
        let mut pos = self.ring.header().consumer.load(Ordering::Relaxed);
        let mut last: Option<Frame> = None;
        let mut n = 0;
        let result = loop {
            if n == max {
                break Ok(n);
            }
            match self.peek_at(pos) {
                Ok(Some(fr)) => {
                    f(self.bytes(&fr));
                    pos = fr.next_head;
                    last = Some(fr);
                    n += 1;
                }
                Ok(None) => break Ok(n),
                Err(e) if n == 0 => break Err(e),
                Err(_) => break Ok(n),
            }
        };
        if let Some(fr) = last {
            // A standalone wrap marker skipped on the way may already have
            // moved the head past these frames.
            if fr.next_head > self.ring.header().consumer.load(Ordering::Relaxed) {
                self.release(fr);
            }
        }
        result
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[repr(C, align(128))]
    struct Mem([u8; 8192]);

    fn ring(mem: &mut Mem, cap: usize) -> SpscRing {
        // SAFETY: the buffer is aligned, large enough and outlives the ring.
        unsafe { SpscRing::init(NonNull::new(mem.0.as_mut_ptr()).unwrap(), mem.0.len(), cap) }.unwrap()
    }

    #[test]
    fn frames_wrap_in_order() {
        let mut mem = Mem([0; 8192]);
        let r = ring(&mut mem, 256);
        // SAFETY: the test is the ring's only producer and consumer.
        let (mut p, mut c) = unsafe { (r.producer(), r.consumer()) };
        let mut expect = 0u32;
        let mut next = 0u32;
        for _ in 0..500 {
            while p.push(&next.to_le_bytes().repeat((next % 9) as usize + 1)).is_ok() {
                next += 1;
            }
            while let Some(v) = c.pop(|b| b.to_vec()).unwrap() {
                assert_eq!(v, expect.to_le_bytes().repeat((expect % 9) as usize + 1));
                expect += 1;
            }
        }
        assert_eq!(expect, next);
        assert!(next > 1000);
        assert_eq!(p.reserve(300).unwrap_err(), RingError::TooLarge);
    }

    /// `write_run`: frames of one size up to the end of the buffer and the
    /// room there is (the `extra` room kept), a stop before a frame whose
    /// message is another size and on an error (frames before either are
    /// committed), single reservations between runs wrapping as usual; the
    /// consumer's `peek_after` takes the runs' frames by their header and
    /// any other frame the general way, all in order and intact.
    #[test]
    fn runs_of_one_size_between_single_frames() {
        let mut mem = Mem([0; 8192]);
        let r = ring(&mut mem, 256);
        // SAFETY: the test is the ring's only producer and consumer.
        let (mut p, mut c) = unsafe { (r.producer(), r.consumer()) };
        let word = |v: u64| v.to_le_bytes();
        let take_all = |c: &mut Consumer| {
            let mut got = Vec::new();
            if let Some(first) = c.peek().unwrap() {
                let mut f = first;
                loop {
                    got.push(c.bytes(&f).to_vec());
                    match c.peek_after(&f).unwrap() {
                        Some(next) => f = next,
                        None => break,
                    }
                }
                c.release(f);
            }
            got
        };
        // 256 bytes: 15 frames of 16 fit with the next header word's room.
        let mut b = p.batch().unwrap();
        let n = b.write_run(8, 0, 100, 0, |j, buf| {
            buf.copy_from_slice(&word(j as u64));
            Ok::<bool, ()>(true)
        });
        assert_eq!(n, Ok(15));
        // Full now: no run, and no single frame either.
        assert_eq!(b.write_run(8, 0, 100, 0, |_, _| Ok::<bool, ()>(true)), Ok(0));
        assert_eq!(b.reserve(8).unwrap_err(), RingError::Full);
        assert_eq!(b.finish(), 15);
        let got = take_all(&mut c);
        assert_eq!(got, (0..15u64).map(|v| word(v).to_vec()).collect::<Vec<_>>());
        // At offset 240: a 32-byte frame does not fit before the end, so a
        // run of them writes nothing there, and a single one wraps.
        let mut b = p.batch().unwrap();
        assert_eq!(b.write_run(24, 0, 10, 0, |_, _| Ok::<bool, ()>(true)), Ok(0));
        let res = b.reserve(24).unwrap();
        b.buffer(&res).copy_from_slice(&[7; 24]);
        b.commit(res, 24, 0);
        // A run after it, stopped before its third frame (another size),
        // then one that fails at its second (the first is kept).
        let stop = b.write_run(8, 0, 10, 0, |j, buf| {
            buf.copy_from_slice(&word(200 + j as u64));
            Ok::<bool, ()>(j < 2)
        });
        assert_eq!(stop, Ok(2));
        let failed = b.write_run(8, 0, 10, 0, |j, buf| {
            buf.copy_from_slice(&word(300 + j as u64));
            if j == 1 {
                Err("serialiser")
            } else {
                Ok(true)
            }
        });
        assert_eq!(failed, Err("serialiser"));
        // `extra` keeps room beyond the run: 256 - 16 (the marker) - 32 -
        // 3 * 16 = 160 bytes are free; keeping 100 and the next header
        // word's 16 leaves room for 2 frames.
        let kept = b.write_run(8, 0, 100, 100, |_, buf| {
            buf.copy_from_slice(&word(400));
            Ok::<bool, ()>(true)
        });
        assert_eq!(kept, Ok(2));
        assert_eq!(b.finish(), 6);
        // The consumer skips the marker and takes the rest in one run.
        let mut expect = std::vec![std::vec![7u8; 24], word(200).to_vec(), word(201).to_vec(), word(300).to_vec()];
        expect.extend((0..2).map(|_| word(400).to_vec()));
        assert_eq!(take_all(&mut c), expect);
        assert!(c.peek().unwrap().is_none());
    }

    /// A header word in the middle of a run that is not the run's (a peer
    /// that scribbled on the ring) is not taken for the run's: it goes
    /// through the full validation and is reported.
    #[test]
    fn a_garbage_header_inside_a_run_is_validated() {
        let mut mem = Mem([0; 8192]);
        let r = ring(&mut mem, 256);
        // SAFETY: the test is the ring's only producer and consumer.
        let (mut p, mut c) = unsafe { (r.producer(), r.consumer()) };
        let mut b = p.batch().unwrap();
        assert_eq!(b.write_run(8, 0, 4, 0, |_, _| Ok::<bool, ()>(true)), Ok(4));
        assert_eq!(b.finish(), 4);
        // The third frame's header claims a length past the buffer.
        r.word(32).store(FRAME_FLAG | 1000, Ordering::Relaxed);
        let first = c.peek().unwrap().unwrap();
        let second = c.peek_after(&first).unwrap().unwrap();
        assert_eq!(c.peek_after(&second).unwrap_err(), RingError::Corrupt("frame length"));
    }

    #[test]
    fn batches_and_in_place_writes() {
        let mut mem = Mem([0; 8192]);
        let r = ring(&mut mem, 128);
        // SAFETY: the test is the ring's only producer and consumer.
        let (mut p, mut c) = unsafe { (r.producer(), r.consumer()) };
        let items: [&[u8]; 5] = [b"a", b"bb", b"ccc", b"dddd", b"eeeee"];
        assert_eq!(p.push_batch(items).unwrap(), 5);
        let mut got = Vec::new();
        assert_eq!(c.pop_batch(3, |b| got.push(b.to_vec())).unwrap(), 3);
        assert_eq!(c.pop_batch(10, |b| got.push(b.to_vec())).unwrap(), 2);
        assert_eq!(got.concat(), b"abbcccddddeeeee");
        let res = p.reserve(5).unwrap();
        p.buffer(&res)[..3].copy_from_slice(b"xyz");
        p.commit(res, 3);
        assert_eq!(c.pop(|b| b.to_vec()).unwrap().unwrap(), b"xyz");
        assert_eq!(c.pop(|b| b.len()).unwrap(), None);
    }

    /// A batch shows nothing until it finishes, and when it runs out of the
    /// room it saw first it looks again: room freed meanwhile is used, and
    /// it never writes past what is free.
    #[test]
    fn a_batch_is_published_once_and_looks_again_for_room() {
        let mut mem = Mem([0; 8192]);
        let r = ring(&mut mem, 256);
        // SAFETY: the test is the ring's only producer and consumer.
        let (mut p, mut c) = unsafe { (r.producer(), r.consumer()) };
        // Four 16-byte frames taken up before the batch starts.
        for i in 0..4u8 {
            p.push(&[i; 8]).unwrap();
        }
        let mut b = p.batch().unwrap();
        let mut written = 0u8;
        let mut add = |b: &mut Batch<'_>| match b.reserve(8) {
            Ok(res) => {
                b.buffer(&res).copy_from_slice(&[100 + written; 8]);
                b.commit(res, 8, 0);
                written += 1;
                true
            }
            Err(RingError::Full) => false,
            Err(e) => panic!("{e:?}"),
        };
        while add(&mut b) {}
        // 256 bytes: 4 frames before, 11 in the batch, 16 for the next header.
        assert_eq!(b.frames(), 11);
        // The consumer sees the frames from before, none of the batch.
        for i in 0..4u8 {
            assert_eq!(c.pop(|f| f[0]).unwrap(), Some(i));
        }
        assert_eq!(c.pop(|f| f[0]).unwrap(), None);
        // The room they leave is found by the batch's next look.
        while add(&mut b) {}
        assert_eq!(b.finish(), 15);
        for i in 0..15u8 {
            assert_eq!(c.pop(|f| f[0]).unwrap(), Some(100 + i), "frame {i}");
        }
        assert_eq!(c.pop(|f| f.len()).unwrap(), None);
    }

    #[test]
    fn corrupt_positions_and_lengths_are_errors() {
        let mut mem = Mem([0; 8192]);
        let r = ring(&mut mem, 128);
        // SAFETY: the test is the ring's only producer and consumer.
        let (mut p, mut c) = unsafe { (r.producer(), r.consumer()) };
        p.push(b"hello").unwrap();
        // Overwrite the frame length with something past the published range.
        let data = SpscRing::required_size(0);
        mem.0[data..data + 8].copy_from_slice(&1000u64.to_le_bytes());
        assert!(matches!(c.peek(), Err(RingError::Corrupt(_))));
        // A header without the flag.
        mem.0[data..data + 8].copy_from_slice(&5u64.to_le_bytes());
        assert!(matches!(c.peek(), Err(RingError::Corrupt(_))));
        // A consumer position that is not a position.
        r.header().consumer.store(3, Ordering::Relaxed);
        assert!(matches!(c.peek(), Err(RingError::Corrupt(_))));
        r.header().consumer.store(u64::MAX - 7, Ordering::Relaxed);
        assert!(matches!(c.peek(), Err(RingError::Corrupt(_))));
        // A tail far beyond the head.
        r.header().tail.store(1 << 40, Ordering::Relaxed);
        assert!(matches!(r.used(), Err(RingError::Corrupt(_))));
        r.header().producer.pos.store(1 << 40, Ordering::Relaxed);
        assert!(matches!(p.reserve(8), Err(RingError::Corrupt(_))));
        assert!(matches!(p.resync(), Err(RingError::Corrupt(_))));
        r.header().producer.pos.store(u64::MAX - 7, Ordering::Relaxed);
        assert!(matches!(p.reserve(8), Err(RingError::Corrupt(_))));
        assert!(matches!(p.resync(), Err(RingError::Corrupt(_))));
    }

    /// Payload words that look like headers, left behind by earlier laps and
    /// by reservations never committed, are never taken for frames: the
    /// consumer's head lands on them once frame sizes vary, and it must find
    /// the zero the producer stored there (module docs). Without that zero
    /// this test pops phantom 8-byte frames.
    #[test]
    fn stale_payload_is_never_a_frame() {
        let mut mem = Mem([0; 8192]);
        let r = ring(&mut mem, 256);
        // SAFETY: the test is the ring's only producer and consumer.
        let (mut p, mut c) = unsafe { (r.producer(), r.consumer()) };
        // Look-alikes of plain and of kind-tagged frames.
        let fake: Vec<u8> = [FRAME_FLAG | 8, FRAME_FLAG | (9 << KIND_SHIFT) | 8, FRAME_FLAG | 16]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect::<Vec<u8>>()
            .repeat(10);
        let mut sent = 0u32;
        let mut got = 0u32;
        for round in 0..2000u32 {
            let words = 1 + (round * 7 % 23) as usize;
            // A payload of fake headers, then a real message.
            match p.reserve(words * 8) {
                Ok(res) => {
                    let n = words * 8;
                    p.buffer(&res).copy_from_slice(&fake[..n]);
                    if round % 3 == 0 {
                        // Abandoned: never published, the bytes stay.
                        drop(res);
                    } else {
                        p.buffer(&res)[..4].copy_from_slice(&round.to_le_bytes());
                        p.commit_kind(res, n, (round % 3) as u8 + 100);
                        sent += 1;
                    }
                }
                Err(RingError::Full) => {}
                Err(e) => panic!("{e:?}"),
            }
            for _ in 0..(round % 4) {
                match c.peek().unwrap() {
                    Some(f) => {
                        let v = c.bytes(&f).to_vec();
                        assert!(v.len() >= 8 && v.len() % 8 == 0, "phantom frame {v:?}");
                        assert_eq!(&v[4..], &fake[4..v.len()]);
                        let round = u32::from_le_bytes(v[..4].try_into().unwrap());
                        assert_eq!(f.kind(), (round % 3) as u8 + 100, "phantom frame {v:?}");
                        c.release(f);
                        got += 1;
                    }
                    None => break,
                }
            }
        }
        while c.pop(|b| assert!(b.len() >= 8)).unwrap().is_some() {
            got += 1;
        }
        assert_eq!(got, sent);
        assert!(sent > 1000);
    }

    /// A consumer taking batches (in runs that need not match them) while
    /// the next ones are written: every frame once, in order.
    #[test]
    fn batches_are_taken_while_they_are_written() {
        let mut mem = std::boxed::Box::new(Mem([0; 8192]));
        let r = ring(&mut mem, 256);
        let done = std::sync::atomic::AtomicBool::new(false);
        // Set when the producer ends, panicking or not, so a failure there
        // ends the consumer's loop instead of hanging it.
        struct SetOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for SetOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                let _done = SetOnDrop(&done);
                // SAFETY: this thread is the ring's only producer.
                let mut p = unsafe { r.producer() };
                let mut next = 0u32;
                while next < 200_000 {
                    let batch: Vec<[u8; 4]> = (next..(next + 7).min(200_000)).map(u32::to_le_bytes).collect();
                    match p.push_batch(batch.iter().map(|b| &b[..])) {
                        Ok(n) => next += n as u32,
                        Err(RingError::Full) => std::thread::yield_now(),
                        Err(e) => panic!("{e:?}"),
                    }
                }
            });
            // SAFETY: this thread is the ring's only consumer.
            let mut c = unsafe { r.consumer() };
            let mut expect = 0u32;
            while expect < 200_000 {
                let ended = done.load(Ordering::Acquire);
                let n = c
                    .pop_batch(5, |b| {
                        assert_eq!(b, expect.to_le_bytes());
                        expect += 1;
                    })
                    .unwrap();
                if n == 0 && ended {
                    break;
                }
            }
            assert_eq!(expect, 200_000);
            assert_eq!(c.pop(|b| b.len()).unwrap(), None);
        });
    }

    /// A producer that died after publishing frames through their headers but
    /// before recording its position: `resync` walks over them (a wrap
    /// included), and the next frame goes after them.
    #[test]
    fn resync_walks_over_frames_a_dead_producer_published() {
        let mut mem = Mem([0; 8192]);
        let r = ring(&mut mem, 128);
        // SAFETY: the test is the ring's only producer and consumer.
        let (mut p, mut c) = unsafe { (r.producer(), r.consumer()) };
        p.push(&[1; 72]).unwrap(); // 80 bytes: the next frame is at offset 80
        c.pop(|_| ()).unwrap();
        let before = r.header().producer.pos.load(Ordering::Relaxed);
        // Two frames (of kinds other than 0), the second wrapping to the
        // buffer start.
        p.push_kind(&[2; 24], 1).unwrap();
        p.push_kind(&[3; 24], 255).unwrap();
        assert!(r.header().producer.pos.load(Ordering::Relaxed) > 128);
        // Forget them, as a producer killed before its position store would.
        r.header().producer.pos.store(before, Ordering::Relaxed);
        r.header().tail.store(before, Ordering::Relaxed);
        assert_eq!(p.resync().unwrap(), 2);
        assert_eq!(p.resync().unwrap(), 0);
        p.push(&[4; 8]).unwrap();
        for (byte, len, kind) in [(2u8, 24usize, 1u8), (3, 24, 255), (4, 8, 0)] {
            let f = c.peek().unwrap().unwrap();
            assert_eq!((c.bytes(&f), f.kind()), (&std::vec![byte; len][..], kind));
            c.release(f);
        }
        assert_eq!(c.pop(|b| b.len()).unwrap(), None);
        // A consumer that already took the dead producer's frame is no obstacle.
        let before = r.header().producer.pos.load(Ordering::Relaxed);
        p.push(&[5; 16]).unwrap();
        assert_eq!(c.pop(|b| b.to_vec()).unwrap(), Some(std::vec![5; 16]));
        r.header().producer.pos.store(before, Ordering::Relaxed);
        assert_eq!(p.resync().unwrap(), 1);
        p.push(&[6; 8]).unwrap();
        assert_eq!(c.pop(|b| b.to_vec()).unwrap(), Some(std::vec![6; 8]));
    }
    /// Every payload starts 16-aligned (so a 16-aligned archive reads in
    /// place), whatever the sizes before it, across many wraps, through every
    /// way in: push, push_batch, reserve/commit; and a u64 message still
    /// costs 16 bytes.
    #[test]
    fn payloads_are_16_aligned_across_wraps() {
        let mut mem = Mem([0; 8192]);
        for cap in [64usize, 256, 1024] {
            let r = ring(&mut mem, cap);
            // SAFETY: the test is the ring's only producer and consumer.
            let (mut p, mut c) = unsafe { (r.producer(), r.consumer()) };
            let mut x: u32 = 0x1234_5678;
            let mut next = || {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as usize
            };
            let (mut seen, mut wraps, mut last) = (0, 0, 0u64);
            for round in 0..3000 {
                let len = next() % (r.max_frame() + 1).min(100);
                let pushed = match round % 3 {
                    0 => p.push_kind(&std::vec![round as u8; len], round as u8).is_ok(),
                    1 => p.push_batch([&std::vec![round as u8; len][..], &[1u8; 3][..]]).is_ok(),
                    _ => match p.reserve(len) {
                        Ok(res) => {
                            let buf = p.buffer(&res);
                            assert_eq!(buf.as_ptr() as usize % PAYLOAD_ALIGN, 0);
                            buf.fill(round as u8);
                            p.commit(res, len);
                            true
                        }
                        Err(_) => false,
                    },
                };
                let _ = pushed;
                for _ in 0..next() % 3 {
                    let Some(f) = c.peek().unwrap() else { break };
                    assert_eq!(c.bytes(&f).as_ptr() as usize % PAYLOAD_ALIGN, 0, "len {}", f.len());
                    assert_eq!(r.payload(&f).as_ptr() as usize % 16, 0);
                    // The frame's position is on the grid too.
                    assert_eq!(c.position() % 16, 0);
                    c.release(f);
                    seen += 1;
                    let pos = c.position();
                    if pos / cap as u64 != last / cap as u64 {
                        wraps += 1;
                    }
                    last = pos;
                }
            }
            assert!(seen > 1000 && wraps > 20, "{seen} frames, {wraps} wraps");
            while c.pop(|b| assert_eq!(b.as_ptr() as usize % 16, 0)).unwrap().is_some() {}
            // No regression for small messages: a u64 frame is 16 bytes.
            let before = r.header().producer.pos.load(Ordering::Relaxed);
            p.push(&7u64.to_le_bytes()).unwrap();
            assert_eq!(r.header().producer.pos.load(Ordering::Relaxed) - before, 16);
            c.pop(|_| ()).unwrap();
        }
    }

    /// Kinds travel in the header and come back with the frame; headers with
    /// bits outside flag, kind and length set are corrupt, not frames.
    #[test]
    fn frame_kinds_and_header_validation() {
        let mut mem = Mem([0; 8192]);
        let r = ring(&mut mem, 256);
        // SAFETY: the test is the ring's only producer and consumer.
        let (mut p, mut c) = unsafe { (r.producer(), r.consumer()) };
        for kind in [0u8, 1, 7, 128, 255] {
            p.push_kind(&[kind; 5], kind).unwrap();
            let res = p.reserve(20).unwrap();
            p.buffer(&res)[0] = kind;
            p.commit_kind(res, 1, kind.wrapping_add(1));
            let f = c.peek().unwrap().unwrap();
            assert_eq!((f.kind(), c.bytes(&f)), (kind, &[kind; 5][..]));
            c.release(f);
            let f = c.peek().unwrap().unwrap();
            assert_eq!((f.kind(), c.bytes(&f)), (kind.wrapping_add(1), &[kind][..]));
            c.release(f);
        }
        p.push_batch([&b"a"[..], b"b"]).unwrap();
        assert_eq!(c.peek().unwrap().map(|f| f.kind()), Some(0));
        while c.pop(|_| ()).unwrap().is_some() {}

        // Hand-written headers at the consumer's position.
        let at = DATA_OFFSET + (c.position() % 256) as usize;
        let mut check = |word: u64| {
            mem.0[at..at + 8].copy_from_slice(&word.to_le_bytes());
            // SAFETY: the same buffer, re-validated.
            let r2 = unsafe { SpscRing::attach(NonNull::new(mem.0.as_mut_ptr()).unwrap(), mem.0.len()) }.unwrap();
            // SAFETY: the only consumer.
            let f = unsafe { r2.consumer() }.peek();
            (f.map(|f| f.map(|f| (f.kind(), f.len()))), r2.has_frame())
        };
        assert_eq!(check(FRAME_FLAG | (255 << KIND_SHIFT) | 4), (Ok(Some((255, 4))), true));
        assert_eq!(check(FRAME_FLAG | (3 << KIND_SHIFT)), (Ok(Some((3, 0))), true));
        let corrupt = (Err(RingError::Corrupt("frame header")), true);
        assert_eq!(check(4), corrupt); // no flag
        assert_eq!(check((3 << KIND_SHIFT) | 4), corrupt); // a kind but no flag
        for bit in (33..40).chain(48..64) {
            assert_eq!(check(FRAME_FLAG | (1 << bit) | 4), corrupt, "bit {bit}");
        }
        assert_eq!(check(FRAME_FLAG | (MAX_FRAME as u64 + 1)), corrupt);
        assert_eq!(check(FRAME_FLAG | 1000), (Err(RingError::Corrupt("frame length")), true));
        assert_eq!(check(0), (Ok(None), false));
        // A wrap marker is no frame header: the consumer skips to the start
        // (and finds there what an earlier lap left, this marker being
        // hand-written).
        assert!(matches!(check(WRAP), (Ok(Some(_)), true)));
    }

    /// A ring sized by `capacity_for_frames(n, len)` always takes a frame of
    /// up to `len` bytes while it holds fewer than `n`, wherever its positions
    /// stand (with sizes for which that bound is a power of two, so not
    /// rounded up).
    #[test]
    fn capacity_for_frames_is_enough() {
        assert_eq!(capacity_for_frames(0, 100), Some(NEXT_HEADER_ROOM));
        assert_eq!(capacity_for_frames(1, MAX_FRAME + 1), None);
        assert_eq!(capacity_for_frames(usize::MAX, 8), None);
        let mut mem = Mem([0; 8192]);
        for (n, len) in [(3usize, 8usize), (3, 24), (7, 8), (1, 56), (15, 24), (3, 40), (1, 120)] {
            let cap = capacity_for_frames(n, len).unwrap();
            assert_eq!(cap, (n + 1) * frame_span(len));
            let cap = cap.max(MIN_CAPACITY).next_power_of_two();
            let r = ring(&mut mem, cap);
            // SAFETY: the test is the ring's only producer and consumer.
            let (mut p, mut c) = unsafe { (r.producer(), r.consumer()) };
            let mut x: u32 = 0x9e37_79b9 ^ (n * 1000 + len) as u32;
            let mut next = || {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as usize
            };
            let mut held = 0;
            let mut fulls = 0;
            for _ in 0..20_000 {
                if next() % 2 == 0 {
                    let l = next() % (len + 1);
                    match p.push(&std::vec![1; l]) {
                        Ok(()) => held += 1,
                        Err(RingError::Full) => {
                            assert!(held >= n, "{n} x {len} in {cap}: full at {held}");
                            fulls += 1;
                        }
                        Err(e) => panic!("{e:?}"),
                    }
                } else if c.pop(|_| ()).unwrap().is_some() {
                    held -= 1;
                }
            }
            assert!(fulls > 100, "{n} x {len}: the ring was seldom full ({fulls})");
        }
    }
}
