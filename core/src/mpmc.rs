//! A bounded multi-producer multi-consumer ring of fixed-size slots with
//! per-slot sequence numbers (Vyukov), payload inline, that survives peers
//! killed mid-operation.
//!
//! # Algorithm
//!
//! `enqueue` and `dequeue` are monotonically increasing positions on their own
//! cache lines; position `p` lives in slot `p % slots`. A slot's `seq` says
//! whose turn it is: `p` means "free for the producer of `p`", `p + 1`
//! "published, for the consumer of `p`", and the consumer frees it for the
//! next lap by setting `p + slots`. A producer claims `p` by a
//! compare-and-swap of `enqueue` from `p` to `p + 1` after seeing
//! `seq == p`; a consumer claims by moving `dequeue` after seeing
//! `seq == p + 1`.
//!
//! # Dead peers
//!
//! Plain Vyukov blocks forever if a producer dies between claiming and
//! publishing (or a consumer between claiming and freeing). Here each
//! claimant also *registers* in the slot's `claim` word: its tid and a tag
//! naming the position and role, after storing its thread start time in
//! `start`. A peer stuck behind an unpublished (or unreleased) slot checks the
//! registered claimant's liveness; if it is dead, the peer *poisons* the claim
//! with a compare-and-swap (tid 0) and completes the step for it: a dead
//! producer's slot is published as a skip marker (never a torn message), a
//! dead consumer's slot is freed. A claimant that has not registered yet after
//! [`UNREGISTERED_GRACE`] is poisoned the same way; because registration is a
//! compare-and-swap too, a slow-but-alive claimant then finds its claim
//! poisoned and simply retries with a new position (a producer loses nothing;
//! a consumer that was frozen between two instructions for that long loses
//! the message it claimed).
//!
//! # Orderings
//!
//! As in Vyukov's queue: publishing and freeing are `Release` writes of
//! `seq`, observed with `Acquire` loads before touching the payload, so the
//! payload written by the producer happens-before the consumer's read and the
//! consumer's read happens-before the next producer's write. The position
//! counters only arbitrate claims and use `Relaxed`. Claim registration uses
//! `AcqRel` compare-and-swap so a poisoner that reads the claim also sees the
//! `start` stored before it.
//!
//! # Untrusted memory
//!
//! Slot indices are reduced modulo the validated slot count; lengths are
//! checked against the slot size; a retry happens only when a position moved
//! (someone made progress), otherwise the state is reported as
//! [`MpmcError::Corrupt`]. No loop runs unbounded on garbage.

use core::ptr::NonNull;
use core::time::Duration;

use crate::cache_padded::CachePadded;
use crate::notify::Notifier;
use crate::owner::{Owner, OwnerCheck};
use crate::participants::Participants;
use crate::primitive::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::region::{align_up, OBJECT_ALIGN};

/// How long a claimed slot may stay unregistered before it is poisoned.
///
/// ```
/// use shmproc_core::mpmc::UNREGISTERED_GRACE;
/// // A claimed slot with no registered claimant is poisoned after this long.
/// assert_eq!(UNREGISTERED_GRACE, core::time::Duration::from_millis(500));
/// ```
pub const UNREGISTERED_GRACE: Duration = Duration::from_millis(500);
/// Slot length marking a skipped position (dead or failed producer).
///
/// ```
/// # use core::ptr::NonNull;
/// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
/// # use shmproc_core::owner::{Owner, ProcLiveness};
/// # let len = MpmcRing::required_size(8, 32).unwrap();
/// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
/// # // SAFETY: the layout has a non-zero size.
/// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
/// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
/// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
/// # let me = Owner::current();
/// // A producer whose writer gives up publishes a skip: consumers never see it.
/// assert_eq!(ring.try_push_with(&me, |_| None), Err(MpmcError::TooLarge));
/// assert_eq!(ring.try_pop(&me).unwrap_err(), MpmcError::Empty);
/// assert_eq!(shmproc_core::mpmc::SKIP, u32::MAX);
/// ```
pub const SKIP: u32 = u32::MAX;
const POISON_TID: u64 = 0;
/// Bytes before a slot's payload: the slot head, padded so the payload is
/// 16-byte aligned (32 on real atomics; larger under loom).
const SLOT_HEAD: usize = match align_up(core::mem::size_of::<SlotHead>(), 16) {
    Some(v) => v,
    None => panic!("slot head size"),
};

/// Errors of ring operations.
///
/// ```
/// # use core::ptr::NonNull;
/// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
/// # use shmproc_core::owner::{Owner, ProcLiveness};
/// # let len = MpmcRing::required_size(8, 32).unwrap();
/// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
/// # // SAFETY: the layout has a non-zero size.
/// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
/// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
/// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
/// # let me = Owner::current();
/// assert_eq!(ring.try_pop(&me).unwrap_err(), MpmcError::Empty);
/// assert_eq!(ring.try_push(&me, &[0; 33]), Err(MpmcError::TooLarge));
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MpmcError {
    /// No free slot (push) right now.
    Full,
    /// No published message (pop) right now.
    Empty,
    /// The message does not fit in a slot.
    TooLarge,
    /// The ring holds impossible values.
    Corrupt(&'static str),
    /// The memory is too small or misaligned.
    Layout(&'static str),
}

#[repr(C)]
struct Meta {
    slots: AtomicU64,
    slot_size: AtomicU64,
    closed: AtomicU32,
    _pad: AtomicU32,
    /// Messages allowed at once (== slots, except a capacity of 1, which
    /// uses two slots because Vyukov's sequence numbers need at least two).
    limit: AtomicU64,
}

/// The shared header.
///
/// ```
/// # use core::ptr::NonNull;
/// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
/// # use shmproc_core::owner::{Owner, ProcLiveness};
/// # let len = MpmcRing::required_size(8, 32).unwrap();
/// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
/// # // SAFETY: the layout has a non-zero size.
/// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
/// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
/// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
/// # let me = Owner::current();
/// assert_eq!(ring.header().not_full.waiters(), 0);
/// ```
#[repr(C, align(128))]
pub struct MpmcHeader {
    enqueue: CachePadded<AtomicU64>,
    dequeue: CachePadded<AtomicU64>,
    meta: CachePadded<Meta>,
    /// Signalled after a publish.
    pub not_empty: CachePadded<Notifier>,
    /// Signalled after a slot is freed.
    pub not_full: CachePadded<Notifier>,
    /// Processes holding handles, by role.
    pub participants: Participants,
}

#[repr(C)]
struct SlotHead {
    seq: AtomicU64,
    claim: AtomicU64,
    start: AtomicU64,
    len: AtomicU32,
    _pad: AtomicU32,
}

const HEADER_SPAN: usize = match align_up(core::mem::size_of::<MpmcHeader>(), OBJECT_ALIGN) {
    Some(v) => v,
    None => panic!("header size"),
};

/// Bytes between slots for a payload of `slot_size` bytes.
///
/// ```
/// use shmproc_core::mpmc::stride;
/// assert_eq!(stride(16), 64); // one cache line per slot for small payloads
/// assert_eq!(stride(100) % 64, 0);
/// ```
#[must_use]
pub const fn stride(slot_size: usize) -> usize {
    match align_up(SLOT_HEAD + slot_size, 64) {
        Some(v) => v,
        None => usize::MAX,
    }
}

#[cfg(loom)]
unsafe fn loom_construct(base: NonNull<u8>, slots: usize, slot_size: usize) {
    let u64_ = || AtomicU64::new(0);
    let u32_ = || AtomicU32::new(0);
    let hdr = MpmcHeader {
        enqueue: CachePadded(u64_()),
        dequeue: CachePadded(u64_()),
        meta: CachePadded(Meta { slots: u64_(), slot_size: u64_(), closed: u32_(), _pad: u32_(), limit: u64_() }),
        not_empty: CachePadded(Notifier::new()),
        not_full: CachePadded(Notifier::new()),
        participants: Participants::new_for_loom(),
    };
    // SAFETY: the caller guarantees the memory; we write whole values.
    unsafe {
        base.as_ptr().cast::<MpmcHeader>().write(hdr);
        for i in 0..slots {
            let slot = base.as_ptr().add(HEADER_SPAN + i * stride(slot_size)).cast::<SlotHead>();
            slot.write(SlotHead { seq: u64_(), claim: u64_(), start: u64_(), len: u32_(), _pad: u32_() });
        }
    }
}

/// The ring, over memory handed to it; `Copy`, like a pointer.
///
/// ```
/// # use core::ptr::NonNull;
/// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
/// # use shmproc_core::owner::{Owner, ProcLiveness};
/// # let len = MpmcRing::required_size(8, 32).unwrap();
/// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
/// # // SAFETY: the layout has a non-zero size.
/// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
/// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
/// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
/// # let me = Owner::current();
/// ring.try_push(&me, b"task")?;
/// let c = ring.try_pop(&me)?;
/// assert_eq!(ring.bytes(&c), b"task");
/// ring.release(c);
/// # Ok::<(), MpmcError>(())
/// ```
#[derive(Copy, Clone, Debug)]
pub struct MpmcRing {
    hdr: NonNull<MpmcHeader>,
    slots_base: NonNull<u8>,
    slots: u64,
    limit: u64,
    slot_size: usize,
    stride: usize,
    pow2: bool,
}

// SAFETY: shared memory accessed through atomics and under the ring protocol.
unsafe impl Send for MpmcRing {}
// SAFETY: as above.
unsafe impl Sync for MpmcRing {}

/// A slot claimed by a consumer; read its payload, then release it.
///
/// ```
/// # use core::ptr::NonNull;
/// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
/// # use shmproc_core::owner::{Owner, ProcLiveness};
/// # let len = MpmcRing::required_size(8, 32).unwrap();
/// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
/// # // SAFETY: the layout has a non-zero size.
/// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
/// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
/// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
/// # let me = Owner::current();
/// ring.try_push(&me, b"abc")?;
/// let c: Claimed = ring.try_pop(&me)?; // the slot is ours until released
/// assert_eq!(c.len(), 3);
/// ring.release(c);
/// # Ok::<(), MpmcError>(())
/// ```
#[derive(Debug)]
#[must_use = "a claimed slot blocks the ring until released"]
pub struct Claimed {
    pos: u64,
    len: usize,
}

impl Claimed {
    /// Payload length.
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let len = MpmcRing::required_size(8, 32).unwrap();
    /// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
    /// # // SAFETY: the layout has a non-zero size.
    /// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    /// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
    /// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
    /// # let me = Owner::current();
    /// ring.try_push(&me, b"12345")?;
    /// let c = ring.try_pop(&me)?;
    /// assert_eq!(c.len(), 5);
    /// ring.release(c);
    /// # Ok::<(), MpmcError>(())
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let len = MpmcRing::required_size(8, 32).unwrap();
    /// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
    /// # // SAFETY: the layout has a non-zero size.
    /// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    /// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
    /// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
    /// # let me = Owner::current();
    /// ring.try_push(&me, b"")?;
    /// let c = ring.try_pop(&me)?;
    /// assert!(c.is_empty());
    /// ring.release(c);
    /// # Ok::<(), MpmcError>(())
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn tag(pos: u64, reader: bool) -> u64 {
    u64::from(((pos << 1) | u64::from(reader)) as u32)
}

impl MpmcRing {
    /// Bytes needed for `slots` slots of `slot_size` payload bytes.
    ///
    /// ```
    /// use shmproc_core::mpmc::{stride, MpmcRing};
    /// assert!(MpmcRing::required_size(8, 32).unwrap() >= 8 * stride(32));
    /// ```
    #[must_use]
    pub fn required_size(slots: usize, slot_size: usize) -> Option<usize> {
        HEADER_SPAN.checked_add(slots.max(2).checked_mul(stride(slot_size))?)
    }

    /// Initialises an empty ring.
    ///
    /// # Safety
    ///
    /// `base..base+len` must be valid for reads and writes, aligned to
    /// [`OBJECT_ALIGN`], and stay so while the ring (or a copy) is used.
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let len = MpmcRing::required_size(8, 32).unwrap();
    /// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
    /// # // SAFETY: the layout has a non-zero size.
    /// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    /// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
    /// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
    /// # let me = Owner::current();
    /// assert_eq!((ring.slots(), ring.slot_size()), (8, 32));
    /// ```
    pub unsafe fn init(base: NonNull<u8>, len: usize, slots: usize, slot_size: usize) -> Result<MpmcRing, MpmcError> {
        if slots == 0 || slot_size == 0 || slot_size > (u32::MAX - 1) as usize {
            return Err(MpmcError::Layout("slots and slot size must be positive"));
        }
        if base.as_ptr() as usize % OBJECT_ALIGN != 0 {
            return Err(MpmcError::Layout("misaligned"));
        }
        match MpmcRing::required_size(slots, slot_size) {
            Some(n) if n <= len => {}
            _ => return Err(MpmcError::Layout("memory too small")),
        }
        // Under loom, atomics are model objects that must be constructed, not
        // just stored to: build the header and slot heads in place first.
        #[cfg(loom)]
        // SAFETY: the memory is large enough and aligned (checked above) and
        // not yet shared.
        unsafe {
            loom_construct(base, slots.max(2), slot_size)
        };
        // SAFETY: aligned and large enough (checked); the header is atomics.
        let hdr = unsafe { &*base.as_ptr().cast::<MpmcHeader>() };
        hdr.enqueue.store(0, Ordering::Relaxed);
        hdr.dequeue.store(0, Ordering::Relaxed);
        hdr.meta.slots.store(slots.max(2) as u64, Ordering::Relaxed);
        hdr.meta.limit.store(slots as u64, Ordering::Relaxed);
        hdr.meta.slot_size.store(slot_size as u64, Ordering::Relaxed);
        hdr.meta.closed.store(0, Ordering::Relaxed);
        hdr.not_empty.init();
        hdr.not_full.init();
        hdr.participants.init();
        // SAFETY: forwarded contract; layout validated above.
        let ring = unsafe { MpmcRing::attach(base, len)? };
        for p in 0..slots.max(2) as u64 {
            let s = ring.slot(p);
            s.claim.store(u64::MAX, Ordering::Relaxed);
            s.start.store(0, Ordering::Relaxed);
            s.len.store(0, Ordering::Relaxed);
            s.seq.store(p, Ordering::Release);
        }
        Ok(ring)
    }

    /// Attaches to an initialised ring, validating its layout against `len`.
    ///
    /// # Safety
    ///
    /// As for [`init`](MpmcRing::init); the contents may be anything.
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let len = MpmcRing::required_size(8, 32).unwrap();
    /// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
    /// # // SAFETY: the layout has a non-zero size.
    /// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    /// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
    /// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
    /// # let me = Owner::current();
    /// ring.try_push(&me, b"x")?;
    /// // SAFETY: the same memory, still mapped.
    /// let other = unsafe { MpmcRing::attach(mem, len) }?;
    /// let c = other.try_pop(&me)?;
    /// assert_eq!(other.bytes(&c), b"x");
    /// other.release(c);
    /// # Ok::<(), MpmcError>(())
    /// ```
    pub unsafe fn attach(base: NonNull<u8>, len: usize) -> Result<MpmcRing, MpmcError> {
        if base.as_ptr() as usize % OBJECT_ALIGN != 0 {
            return Err(MpmcError::Layout("misaligned"));
        }
        if len < HEADER_SPAN {
            return Err(MpmcError::Layout("memory too small"));
        }
        // SAFETY: aligned and at least HEADER_SPAN bytes (checked).
        let hdr = unsafe { &*base.as_ptr().cast::<MpmcHeader>() };
        let slots = hdr.meta.slots.load(Ordering::Relaxed);
        let limit = hdr.meta.limit.load(Ordering::Relaxed);
        let slot_size = hdr.meta.slot_size.load(Ordering::Relaxed);
        let ok = slots >= 2
            && limit > 0
            && limit <= slots
            && slot_size > 0
            && slot_size < u64::from(u32::MAX)
            && usize::try_from(slots)
                .ok()
                .zip(usize::try_from(slot_size).ok())
                .and_then(|(n, s)| MpmcRing::required_size(n, s))
                .is_some_and(|need| need <= len);
        if !ok {
            return Err(MpmcError::Corrupt("slot layout"));
        }
        Ok(MpmcRing {
            hdr: base.cast(),
            // SAFETY: HEADER_SPAN <= len (checked).
            slots_base: unsafe { NonNull::new_unchecked(base.as_ptr().add(HEADER_SPAN)) },
            slots,
            limit,
            slot_size: slot_size as usize,
            stride: stride(slot_size as usize),
            pow2: slots.is_power_of_two(),
        })
    }

    /// The shared header (notifiers, participants).
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let len = MpmcRing::required_size(8, 32).unwrap();
    /// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
    /// # // SAFETY: the layout has a non-zero size.
    /// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    /// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
    /// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
    /// # let me = Owner::current();
    /// ring.header().not_empty.notify();
    /// ```
    #[inline]
    pub fn header(&self) -> &MpmcHeader {
        // SAFETY: validated at attach; the memory outlives self (contract).
        unsafe { self.hdr.as_ref() }
    }

    /// The capacity in messages.
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let len = MpmcRing::required_size(8, 32).unwrap();
    /// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
    /// # // SAFETY: the layout has a non-zero size.
    /// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    /// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
    /// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
    /// # let me = Owner::current();
    /// assert_eq!(ring.slots(), 8);
    /// ```
    #[must_use]
    pub fn slots(&self) -> usize {
        self.limit as usize
    }

    /// Whether the capacity limit (not the slots) says `pos` must wait.
    #[inline]
    fn over_limit(&self, pos: u64) -> bool {
        self.limit < self.slots
            && pos.wrapping_sub(self.header().dequeue.load(Ordering::Acquire)) as i64 >= self.limit as i64
    }

    /// Payload bytes per slot (the largest message).
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let len = MpmcRing::required_size(8, 32).unwrap();
    /// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
    /// # // SAFETY: the layout has a non-zero size.
    /// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    /// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
    /// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
    /// # let me = Owner::current();
    /// assert_eq!(ring.slot_size(), 32);
    /// ```
    #[must_use]
    #[inline]
    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    #[inline]
    fn index(&self, pos: u64) -> usize {
        (if self.pow2 { pos & (self.slots - 1) } else { pos % self.slots }) as usize
    }

    #[inline]
    fn slot_ptr(&self, pos: u64) -> *mut u8 {
        // SAFETY: index < slots and HEADER_SPAN + slots * stride <= len
        // (validated at attach).
        unsafe { self.slots_base.as_ptr().add(self.index(pos) * self.stride) }
    }

    #[inline]
    fn slot(&self, pos: u64) -> &SlotHead {
        // SAFETY: slot_ptr is in bounds and 64-aligned; SlotHead is atomics.
        unsafe { &*self.slot_ptr(pos).cast::<SlotHead>() }
    }

    #[inline]
    fn payload(&self, pos: u64) -> *mut u8 {
        // SAFETY: the payload area SLOT_HEAD..SLOT_HEAD+slot_size lies inside
        // the slot's stride.
        unsafe { self.slot_ptr(pos).add(SLOT_HEAD) }
    }

    /// Messages published or being written and not yet consumed (a snapshot,
    /// clamped to the capacity).
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let len = MpmcRing::required_size(8, 32).unwrap();
    /// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
    /// # // SAFETY: the layout has a non-zero size.
    /// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    /// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
    /// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
    /// # let me = Owner::current();
    /// ring.try_push(&me, b"a")?;
    /// assert_eq!(ring.len(), 1);
    /// # Ok::<(), MpmcError>(())
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        let d = self.header().dequeue.load(Ordering::Relaxed);
        let e = self.header().enqueue.load(Ordering::Relaxed);
        e.saturating_sub(d).min(self.limit) as usize
    }

    /// Whether no message is waiting (a snapshot).
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let len = MpmcRing::required_size(8, 32).unwrap();
    /// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
    /// # // SAFETY: the layout has a non-zero size.
    /// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    /// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
    /// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
    /// # let me = Owner::current();
    /// assert!(ring.is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks the ring closed and wakes everyone.
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let len = MpmcRing::required_size(8, 32).unwrap();
    /// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
    /// # // SAFETY: the layout has a non-zero size.
    /// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    /// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
    /// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
    /// # let me = Owner::current();
    /// ring.close();
    /// assert!(ring.is_closed());
    /// ```
    pub fn close(&self) {
        self.header().meta.closed.store(1, Ordering::Release);
        self.header().not_empty.wake_all();
        self.header().not_full.wake_all();
    }

    /// Whether the ring was closed.
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let len = MpmcRing::required_size(8, 32).unwrap();
    /// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
    /// # // SAFETY: the layout has a non-zero size.
    /// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    /// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
    /// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
    /// # let me = Owner::current();
    /// assert!(!ring.is_closed());
    /// ```
    #[inline]
    pub fn is_closed(&self) -> bool {
        self.header().meta.closed.load(Ordering::Acquire) != 0
    }

    /// Registers `me` as the claimant of `pos` in `role`; false if the claim
    /// was poisoned first.
    #[inline]
    fn register(&self, pos: u64, reader: bool, me: &Owner) -> bool {
        let s = self.slot(pos);
        let t = tag(pos, reader);
        s.start.store(me.thread.start, Ordering::Relaxed);
        let mut c = s.claim.load(Ordering::Relaxed);
        for _ in 0..2 {
            if c & 0xffff_ffff == t {
                // Only a poisoner writes our tag before us.
                return false;
            }
            match s.claim.compare_exchange(c, (u64::from(me.thread.id) << 32) | t, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(cur) => c = cur,
            }
        }
        false
    }

    /// Claims a slot and lets `write` fill it; `write` returns the bytes used,
    /// or `None` if the message does not fit (the slot is then published as a
    /// skip and `TooLarge` returned).
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let len = MpmcRing::required_size(8, 32).unwrap();
    /// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
    /// # // SAFETY: the layout has a non-zero size.
    /// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    /// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
    /// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
    /// # let me = Owner::current();
    /// ring.try_push_with(&me, |buf| {
    ///     buf[..4].copy_from_slice(&42u32.to_le_bytes());
    ///     Some(4)
    /// })?;
    /// let c = ring.try_pop(&me)?;
    /// assert_eq!(ring.bytes(&c), 42u32.to_le_bytes());
    /// ring.release(c);
    /// # Ok::<(), MpmcError>(())
    /// ```
    #[inline]
    pub fn try_push_with(
        &self,
        me: &Owner,
        mut write: impl FnMut(&mut [u8]) -> Option<usize>,
    ) -> Result<(), MpmcError> {
        let hdr = self.header();
        loop {
            let pos = hdr.enqueue.load(Ordering::Relaxed);
            let s = self.slot(pos);
            let seq = s.seq.load(Ordering::Acquire);
            let dif = seq.wrapping_sub(pos) as i64;
            if dif == 0 {
                if self.over_limit(pos) {
                    return Err(MpmcError::Full);
                }
                if hdr
                    .enqueue
                    .compare_exchange_weak(pos, pos.wrapping_add(1), Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
                if !self.register(pos, false, me) {
                    // Poisoned while we were slow: someone published a skip for
                    // this position. Try another.
                    continue;
                }
                // SAFETY: we own the slot for `pos` (claimed and registered); its
                // payload area is slot_size bytes inside the ring.
                let buf = unsafe { core::slice::from_raw_parts_mut(self.payload(pos), self.slot_size) };
                let (len, result) = match write(buf) {
                    Some(n) if n <= self.slot_size => (n as u32, Ok(())),
                    _ => (SKIP, Err(MpmcError::TooLarge)),
                };
                s.len.store(len, Ordering::Relaxed);
                // A registered, live producer is never poisoned, so the slot is
                // still ours: publish with a plain Release store.
                s.seq.store(pos.wrapping_add(1), Ordering::Release);
                hdr.not_empty.notify();
                return result;
            } else if dif < 0 {
                return Err(MpmcError::Full);
            } else if hdr.enqueue.load(Ordering::Relaxed) == pos {
                return Err(MpmcError::Corrupt("slot sequence ahead of the producers"));
            }
        }
    }

    /// Copies `bytes` into a slot.
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let len = MpmcRing::required_size(8, 32).unwrap();
    /// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
    /// # // SAFETY: the layout has a non-zero size.
    /// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    /// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
    /// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
    /// # let me = Owner::current();
    /// for i in 0..8u8 {
    ///     ring.try_push(&me, &[i])?;
    /// }
    /// assert_eq!(ring.try_push(&me, &[8]), Err(MpmcError::Full));
    /// # Ok::<(), MpmcError>(())
    /// ```
    pub fn try_push(&self, me: &Owner, bytes: &[u8]) -> Result<(), MpmcError> {
        if bytes.len() > self.slot_size {
            return Err(MpmcError::TooLarge);
        }
        self.try_push_with(me, |buf| {
            buf[..bytes.len()].copy_from_slice(bytes);
            Some(bytes.len())
        })
    }

    /// Claims the next published message. Skip markers are consumed silently.
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let len = MpmcRing::required_size(8, 32).unwrap();
    /// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
    /// # // SAFETY: the layout has a non-zero size.
    /// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    /// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
    /// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
    /// # let me = Owner::current();
    /// ring.try_push(&me, b"first")?;
    /// ring.try_push(&me, b"second")?;
    /// let c = ring.try_pop(&me)?;
    /// assert_eq!(ring.bytes(&c), b"first");
    /// ring.release(c);
    /// # Ok::<(), MpmcError>(())
    /// ```
    #[inline]
    pub fn try_pop(&self, me: &Owner) -> Result<Claimed, MpmcError> {
        let hdr = self.header();
        loop {
            let pos = hdr.dequeue.load(Ordering::Relaxed);
            let s = self.slot(pos);
            let seq = s.seq.load(Ordering::Acquire);
            let dif = seq.wrapping_sub(pos.wrapping_add(1)) as i64;
            if dif == 0 {
                if hdr
                    .dequeue
                    .compare_exchange_weak(pos, pos.wrapping_add(1), Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
                if !self.register(pos, true, me) {
                    // A producer reclaimed it, judging us dead: that message is gone.
                    continue;
                }
                let len = s.len.load(Ordering::Relaxed);
                if len == SKIP {
                    self.release(Claimed { pos, len: 0 });
                    continue;
                }
                if len as usize > self.slot_size {
                    self.release(Claimed { pos, len: 0 });
                    return Err(MpmcError::Corrupt("message length"));
                }
                return Ok(Claimed { pos, len: len as usize });
            } else if dif < 0 {
                return Err(MpmcError::Empty);
            } else if hdr.dequeue.load(Ordering::Relaxed) == pos {
                return Err(MpmcError::Corrupt("slot sequence ahead of the consumers"));
            }
        }
    }

    /// The payload of a claimed slot.
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let len = MpmcRing::required_size(8, 32).unwrap();
    /// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
    /// # // SAFETY: the layout has a non-zero size.
    /// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    /// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
    /// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
    /// # let me = Owner::current();
    /// ring.try_push(&me, b"bytes")?;
    /// let c = ring.try_pop(&me)?;
    /// assert_eq!(ring.bytes(&c), b"bytes");
    /// ring.release(c);
    /// # Ok::<(), MpmcError>(())
    /// ```
    #[inline]
    pub fn bytes(&self, c: &Claimed) -> &[u8] {
        // SAFETY: the slot is claimed by us (not reused until release) and
        // len <= slot_size was checked.
        unsafe { core::slice::from_raw_parts(self.payload(c.pos), c.len) }
    }

    /// Frees a claimed slot for the next lap.
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let len = MpmcRing::required_size(8, 32).unwrap();
    /// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
    /// # // SAFETY: the layout has a non-zero size.
    /// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    /// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
    /// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
    /// # let me = Owner::current();
    /// for _ in 0..8 {
    ///     ring.try_push(&me, b"x")?;
    /// }
    /// let c = ring.try_pop(&me)?;
    /// ring.release(c); // frees the slot for the next lap
    /// ring.try_push(&me, b"y")?;
    /// # Ok::<(), MpmcError>(())
    /// ```
    #[inline]
    pub fn release(&self, c: Claimed) {
        let s = self.slot(c.pos);
        // A registered, live consumer is never reclaimed from, so the slot is
        // still ours: free it with a plain Release store.
        s.seq.store(c.pos.wrapping_add(self.slots), Ordering::Release);
        self.header().not_full.notify();
    }

    /// Whether the next push would find a free slot (a snapshot).
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let len = MpmcRing::required_size(8, 32).unwrap();
    /// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
    /// # // SAFETY: the layout has a non-zero size.
    /// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    /// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
    /// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
    /// # let me = Owner::current();
    /// assert!(ring.has_room());
    /// ```
    #[must_use]
    #[inline]
    pub fn has_room(&self) -> bool {
        let pos = self.header().enqueue.load(Ordering::Relaxed);
        self.slot(pos).seq.load(Ordering::Acquire).wrapping_sub(pos) as i64 >= 0 && !self.over_limit(pos)
    }

    /// Whether the next pop would find a message (a snapshot).
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let len = MpmcRing::required_size(8, 32).unwrap();
    /// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
    /// # // SAFETY: the layout has a non-zero size.
    /// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    /// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
    /// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
    /// # let me = Owner::current();
    /// assert!(!ring.has_message());
    /// ring.try_push(&me, b"m")?;
    /// assert!(ring.has_message());
    /// # Ok::<(), MpmcError>(())
    /// ```
    #[must_use]
    #[inline]
    pub fn has_message(&self) -> bool {
        let pos = self.header().dequeue.load(Ordering::Relaxed);
        self.slot(pos).seq.load(Ordering::Acquire).wrapping_sub(pos.wrapping_add(1)) as i64 >= 0
    }

    /// Visits every published message still in the ring: `f(claimant,
    /// bytes)` where `claimant` is `None` for a message waiting to be
    /// received and `Some(tid)` for one a consumer has claimed and not yet
    /// released (tid 0: claimed but not registered yet, or poisoned).
    ///
    /// A diagnostic scan for supervisors (which messages did a dead consumer
    /// hold?): slots can change while it runs, so `f` may see a message that
    /// is being released or overwritten; callers validate what they read.
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let len = MpmcRing::required_size(8, 32).unwrap();
    /// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
    /// # // SAFETY: the layout has a non-zero size.
    /// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    /// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
    /// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
    /// # let me = Owner::current();
    /// ring.try_push(&me, b"queued")?;
    /// let mut seen = Vec::new();
    /// ring.scan(|claimant, bytes| seen.push((claimant, bytes.to_vec())));
    /// assert_eq!(seen, [(None, b"queued".to_vec())]);
    /// # Ok::<(), MpmcError>(())
    /// ```
    pub fn scan(&self, mut f: impl FnMut(Option<u32>, &[u8])) {
        let hdr = self.header();
        let dequeue = hdr.dequeue.load(Ordering::Acquire);
        let enqueue = hdr.enqueue.load(Ordering::Acquire);
        for i in 0..self.slots {
            // The position this slot would hold a published message for.
            let s = self.slot(i);
            let seq = s.seq.load(Ordering::Acquire);
            let p = seq.wrapping_sub(1);
            if self.index(p) != i as usize {
                continue;
            }
            let in_ring =
                p.wrapping_sub(dequeue.wrapping_sub(self.slots)) as i64 >= 0 && enqueue.wrapping_sub(p) as i64 > 0;
            if !in_ring {
                continue;
            }
            let len = s.len.load(Ordering::Relaxed);
            if len == SKIP || len as usize > self.slot_size {
                continue;
            }
            let claimant = if p.wrapping_sub(dequeue) as i64 >= 0 {
                None
            } else {
                let c = s.claim.load(Ordering::Acquire);
                Some(if c & 0xffff_ffff == tag(p, true) { (c >> 32) as u32 } else { 0 })
            };
            // SAFETY: the payload area of slot i is slot_size bytes inside the
            // ring and len <= slot_size (checked).
            let bytes = unsafe { core::slice::from_raw_parts(self.payload(i), len as usize) };
            f(claimant, bytes);
        }
    }

    /// Poisons the claim `t` of slot `s` if its claimant is dead, or has not
    /// registered and `grace_passed`; true if the claim is (now) poisoned, so
    /// the caller may complete the step for the claimant.
    fn poison_abandoned(s: &SlotHead, t: u64, check: &impl OwnerCheck, grace_passed: bool) -> bool {
        let c = s.claim.load(Ordering::Acquire);
        let poison = (POISON_TID << 32) | t;
        let take = if c & 0xffff_ffff == t {
            let tid = (c >> 32) as u32;
            u64::from(tid) == POISON_TID || !check.is_alive(tid, Some(s.start.load(Ordering::Relaxed)))
        } else {
            grace_passed
        };
        take && (c == poison || s.claim.compare_exchange(c, poison, Ordering::AcqRel, Ordering::Relaxed).is_ok())
    }

    /// Called by a consumer blocked on an unpublished slot: if its producer is
    /// dead (or unregistered for longer than the grace, which the caller
    /// tracks and passes as `grace_passed`), publishes a skip for it. Returns
    /// the position examined and whether it made progress.
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let len = MpmcRing::required_size(8, 32).unwrap();
    /// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
    /// # // SAFETY: the layout has a non-zero size.
    /// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    /// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
    /// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
    /// # let me = Owner::current();
    /// // Nobody is stuck: nothing to recover.
    /// let (_pos, progressed) = ring.recover_writer(&ProcLiveness, false);
    /// assert!(!progressed);
    /// ```
    pub fn recover_writer(&self, check: &impl OwnerCheck, grace_passed: bool) -> (u64, bool) {
        let hdr = self.header();
        let pos = hdr.dequeue.load(Ordering::Relaxed);
        let s = self.slot(pos);
        if s.seq.load(Ordering::Acquire) != pos || hdr.enqueue.load(Ordering::Relaxed).wrapping_sub(pos) as i64 <= 0 {
            return (pos, false);
        }
        if !Self::poison_abandoned(s, tag(pos, false), check, grace_passed) {
            return (pos, false);
        }
        s.len.store(SKIP, Ordering::Relaxed);
        let done = s.seq.compare_exchange(pos, pos.wrapping_add(1), Ordering::Release, Ordering::Relaxed).is_ok();
        if done {
            hdr.not_empty.notify();
        }
        (pos, done)
    }

    /// Called by a producer blocked on a full ring: if the consumer holding the
    /// slot it needs is dead (or unregistered past the grace), frees the slot;
    /// the message that consumer claimed is lost with it.
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let len = MpmcRing::required_size(8, 32).unwrap();
    /// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
    /// # // SAFETY: the layout has a non-zero size.
    /// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    /// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
    /// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }.unwrap();
    /// # let me = Owner::current();
    /// let (_pos, progressed) = ring.recover_reader(&ProcLiveness, false);
    /// assert!(!progressed);
    /// ```
    pub fn recover_reader(&self, check: &impl OwnerCheck, grace_passed: bool) -> (u64, bool) {
        let hdr = self.header();
        let pos = hdr.enqueue.load(Ordering::Relaxed);
        let rpos = pos.wrapping_sub(self.slots);
        let s = self.slot(pos);
        if s.seq.load(Ordering::Acquire) != rpos.wrapping_add(1)
            || hdr.dequeue.load(Ordering::Relaxed).wrapping_sub(rpos) as i64 <= 0
        {
            return (pos, false);
        }
        if !Self::poison_abandoned(s, tag(rpos, true), check, grace_passed) {
            return (pos, false);
        }
        let done = s.seq.compare_exchange(rpos.wrapping_add(1), pos, Ordering::Release, Ordering::Relaxed).is_ok();
        if done {
            hdr.not_full.notify();
        }
        (pos, done)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use std::vec;
    use std::vec::Vec;

    #[repr(C, align(128))]
    struct Mem([u8; 16384]);

    fn owner(tid: u32) -> Owner {
        Owner { thread: Identity { id: tid, start: 3 }, pid: tid }
    }

    fn ring(mem: &mut Mem, slots: usize, size: usize) -> MpmcRing {
        // SAFETY: the buffer is aligned, large enough and outlives the ring.
        unsafe { MpmcRing::init(NonNull::new(mem.0.as_mut_ptr()).unwrap(), mem.0.len(), slots, size) }.unwrap()
    }

    fn pop_vec(r: &MpmcRing, me: &Owner) -> Result<Vec<u8>, MpmcError> {
        let c = r.try_pop(me)?;
        let v = r.bytes(&c).to_vec();
        r.release(c);
        Ok(v)
    }

    #[test]
    fn fifo_full_empty_and_non_power_of_two() {
        let mut mem = Mem([0; 16384]);
        let r = ring(&mut mem, 3, 16);
        let me = owner(5);
        assert_eq!(pop_vec(&r, &me), Err(MpmcError::Empty));
        for i in 0..3u8 {
            r.try_push(&me, &[i; 4]).unwrap();
        }
        assert_eq!(r.try_push(&me, &[9]), Err(MpmcError::Full));
        assert_eq!(r.len(), 3);
        assert_eq!(r.try_push(&me, &[0; 17]), Err(MpmcError::TooLarge));
        for round in 0..10u8 {
            assert_eq!(pop_vec(&r, &me).unwrap()[0], round % 3);
            r.try_push(&me, &[(round + 3) % 3; 4]).unwrap();
        }
    }

    #[test]
    fn dead_producer_slot_is_skipped() {
        let mut mem = Mem([0; 16384]);
        let r = ring(&mut mem, 4, 8);
        let live = owner(5);
        let dead = owner(6);
        // The dead producer claims and registers, then never publishes.
        let hdr = r.header();
        assert!(hdr.enqueue.compare_exchange(0, 1, Ordering::Relaxed, Ordering::Relaxed).is_ok());
        assert!(r.register(0, false, &dead));
        r.try_push(&live, b"after").unwrap();
        assert_eq!(pop_vec(&r, &live), Err(MpmcError::Empty));
        let alive = |tid: u32, _: Option<u64>| tid != 6;
        assert_eq!(r.recover_writer(&alive, false), (0, true));
        assert_eq!(pop_vec(&r, &live).unwrap(), b"after");
    }

    #[test]
    fn unregistered_producer_is_poisoned_after_grace_and_retries() {
        let mut mem = Mem([0; 16384]);
        let r = ring(&mut mem, 4, 8);
        let me = owner(5);
        let hdr = r.header();
        assert!(hdr.enqueue.compare_exchange(0, 1, Ordering::Relaxed, Ordering::Relaxed).is_ok());
        let alive = |_: u32, _: Option<u64>| true;
        assert_eq!(r.recover_writer(&alive, false), (0, false));
        assert_eq!(r.recover_writer(&alive, true), (0, true));
        // The slow producer now finds its claim poisoned.
        assert!(!r.register(0, false, &me));
        assert_eq!(pop_vec(&r, &me), Err(MpmcError::Empty));
    }

    #[test]
    fn dead_consumer_slot_is_freed() {
        let mut mem = Mem([0; 16384]);
        let r = ring(&mut mem, 2, 8);
        let me = owner(5);
        let dead = owner(7);
        r.try_push(&me, b"a").unwrap();
        r.try_push(&me, b"b").unwrap();
        let _lost = r.try_pop(&dead).unwrap(); // never released
        assert_eq!(pop_vec(&r, &me).unwrap(), b"b");
        // Position 2 needs slot 0, still held by the dead consumer.
        assert_eq!(r.try_push(&me, b"c"), Err(MpmcError::Full));
        let all_alive = |_: u32, _: Option<u64>| true;
        assert!(!r.recover_reader(&all_alive, false).1);
        let alive = |tid: u32, _: Option<u64>| tid != 7;
        assert!(r.recover_reader(&alive, false).1);
        r.try_push(&me, b"c").unwrap();
        r.try_push(&me, b"d").unwrap();
        assert_eq!(pop_vec(&r, &me).unwrap(), b"c");
        assert_eq!(pop_vec(&r, &me).unwrap(), b"d");
    }

    #[test]
    fn garbage_never_loops_or_overruns() {
        let mut mem = Mem([0; 16384]);
        let r = ring(&mut mem, 4, 8);
        let me = owner(5);
        let size = MpmcRing::required_size(4, 8).unwrap();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..2000 {
            // Scribble over the positions and slot heads.
            for _ in 0..8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let off = (x as usize % (size - 8)) & !7;
                mem.0[off..off + 8].copy_from_slice(&(x >> (round % 8)).to_le_bytes());
            }
            // SAFETY: same buffer, re-validated.
            let Ok(r2) = (unsafe { MpmcRing::attach(NonNull::new(mem.0.as_mut_ptr()).unwrap(), mem.0.len()) }) else {
                continue;
            };
            let _ = r2.try_push(&me, b"x");
            if let Ok(c) = r2.try_pop(&me) {
                assert!(r2.bytes(&c).len() <= 8);
                r2.release(c);
            }
            let alive = |_: u32, _: Option<u64>| false;
            let _ = r2.recover_writer(&alive, true);
            let _ = r2.recover_reader(&alive, true);
        }
        let _ = r;
        let _ = vec![0u8; 1];
    }
}
