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
//! A dead consumer's message can be handed to the recoverer before its slot
//! is freed ([`MpmcRing::recover_reader_with`]), so that resources the message
//! referenced are released. The recoverer that moves the poisoned claim on to
//! *dropping* (a compare-and-swap, so exactly one does) reads the message,
//! then frees the slot; other recoverers leave a dropping slot alone until
//! the grace has passed, and then presume the dropper died: they mark the
//! claim *dropped* and free the slot without reading the message again.
//!
//! # Kinds and alignment
//!
//! Each slot also carries a caller's `kind` tag (`u8`) beside its length
//! ([`MpmcRing::try_push_with_kind`], [`MpmcRing::kind`]); plain pushes
//! store 0. Payloads start 16-byte aligned: slots are 64-byte strides from a
//! 128-aligned base and the slot head is padded to a multiple of 16.
//!
//! # Orderings
//!
//! As in Vyukov's queue: publishing and freeing are `Release` writes of
//! `seq`, observed with `Acquire` loads before touching the payload, so the
//! payload written by the producer happens-before the consumer's read and the
//! consumer's read happens-before the next producer's write. The position
//! counters only arbitrate claims and use `Relaxed`. Claim registration
//! stores the claimant's `start` and `ns` (`Relaxed`), then publishes its tid
//! with an `AcqRel` compare-and-swap of `claim`; a poisoner loads `claim` with
//! `Acquire` before `start` and `ns`, so it sees that claimant's values or
//! later ones. Later ones belong to another registration (another tag), which
//! changes `claim` after them, so the poisoner's compare-and-swap on the
//! claim it judged then fails: a wrong pairing never poisons.
//!
//! Liveness fails closed ([`crate::owner::OwnerCheck`]): a claimant recorded
//! in another (or an unknown) pid namespace is never judged dead, so its
//! slot is not recovered from its id; only [`UNREGISTERED_GRACE`] applies to
//! claims never registered.
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
use crate::peer_bytes::PeerBytes;
use crate::primitive::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::region::{align_up, OBJECT_ALIGN};

/// How long a claimed slot may stay unregistered before it is poisoned.
pub const UNREGISTERED_GRACE: Duration = Duration::from_millis(500);
/// Slot length marking a skipped position (dead or failed producer).
///
/// ```
/// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
/// # use shmproc_core::owner::{Owner, ProcLiveness};
/// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
/// // A producer whose writer gives up publishes a skip: consumers never see it.
/// assert_eq!(ring.try_push_with(&me, |_| None), Err(MpmcError::TooLarge));
/// assert_eq!(ring.try_pop(&me).unwrap_err(), MpmcError::Empty);
/// assert_eq!(shmproc_core::mpmc::SKIP, u32::MAX);
/// ```
pub const SKIP: u32 = u32::MAX;
const POISON_TID: u64 = 0;
/// Claim tid of a dead consumer's slot that a recoverer has won and whose
/// message it is handing to its `on_drop` (module docs). No thread has this
/// id (Linux tids are below 2^22).
const DROPPING_TID: u32 = u32::MAX;
/// Claim tid of a slot whose drop is finished or was given up (the dropper
/// presumed dead): anyone may complete the freeing.
const DROPPED_TID: u32 = u32::MAX - 1;
/// Bytes before a slot's payload: the slot head, padded so the payload is
/// 16-byte aligned (48 on real atomics; larger under loom).
const SLOT_HEAD: usize = match align_up(core::mem::size_of::<SlotHead>(), 16) {
    Some(v) => v,
    None => panic!("slot head size"),
};

/// Errors of ring operations.
///
/// ```
/// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
/// # use shmproc_core::owner::{Owner, ProcLiveness};
/// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
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
/// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
/// # use shmproc_core::owner::{Owner, ProcLiveness};
/// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
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
    /// The message's kind: a `u8` stored by the producer; anything above
    /// `u8::MAX` is corrupt.
    kind: AtomicU32,
    /// The registered claimant's pid namespace ([`Identity::ns`](crate::Identity::ns)).
    ns: AtomicU32,
    /// The registered claimant's process, as its [`Owner::pid`] says (with
    /// [`KERNEL_LIVE`](crate::owner::KERNEL_LIVE) when set).
    pid: AtomicU32,
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
            slot.write(SlotHead {
                seq: u64_(),
                claim: u64_(),
                start: u64_(),
                len: u32_(),
                kind: u32_(),
                ns: u32_(),
                pid: u32_(),
            });
        }
    }
}

/// The ring, over memory handed to it; `Copy`, like a pointer.
///
/// ```
/// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
/// # use shmproc_core::owner::{Owner, ProcLiveness};
/// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
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
/// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
/// # use shmproc_core::owner::{Owner, ProcLiveness};
/// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
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
    kind: u8,
    /// The claiming ring (its header's address): a claim handed to another
    /// ring reads nothing there and releases nothing (see
    /// [`MpmcRing::release`]).
    ring: usize,
}

impl Claimed {
    /// Payload length.
    ///
    /// ```
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
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
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
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
            s.ns.store(0, Ordering::Relaxed);
            s.pid.store(0, Ordering::Relaxed);
            s.len.store(0, Ordering::Relaxed);
            s.kind.store(0, Ordering::Relaxed);
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
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let len = MpmcRing::required_size(8, 32).unwrap();
    /// # let mem = shmproc_core::__doc::memory(len);
    /// # // SAFETY: `len` fresh writable bytes, page-aligned, never unmapped.
    /// # let ring = unsafe { MpmcRing::init(mem, len, 8, 32) }?;
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
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
    /// ring.header().not_empty.notify();
    /// ```
    #[inline]
    pub fn header(&self) -> &MpmcHeader {
        // SAFETY: validated at attach; the memory outlives self (contract).
        unsafe { self.hdr.as_ref() }
    }

    /// This ring's identity for its claims: its header's address.
    #[inline]
    fn id(&self) -> usize {
        self.hdr.as_ptr() as usize
    }

    /// Whether `c` was claimed from this ring. A claim of another ring
    /// (safe code can pass one) is a caller's bug: debug builds panic, and
    /// release builds read nothing and release nothing, rather than reading
    /// past this ring's (possibly smaller) slots or freeing a slot of this
    /// ring that someone else holds.
    #[inline]
    fn owns(&self, c: &Claimed) -> bool {
        let ours = c.ring == self.id();
        debug_assert!(ours, "a claim released to, or read from, another MpmcRing");
        ours
    }

    /// The capacity in messages.
    ///
    /// ```
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
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
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
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
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
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
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
    /// assert!(ring.is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks the ring closed and wakes everyone.
    ///
    /// ```
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
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
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
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
        s.ns.store(me.thread.ns, Ordering::Relaxed);
        s.pid.store(me.pid, Ordering::Relaxed);
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
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
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
    pub fn try_push_with(&self, me: &Owner, write: impl FnMut(&mut [u8]) -> Option<usize>) -> Result<(), MpmcError> {
        self.try_push_with_kind(me, 0, write)
    }

    /// As [`try_push_with`](MpmcRing::try_push_with), tagging the message with
    /// `kind`, which the consumer reads back with [`kind`](MpmcRing::kind)
    /// (and a recoverer's `on_drop`, a scan, with the payload). The ring
    /// gives kinds no meaning; plain pushes store 0. The payload buffer is
    /// 16-byte aligned.
    ///
    /// ```
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
    /// const HANDLE: u8 = 1; // say: the payload names memory to free
    /// ring.try_push_with_kind(&me, HANDLE, |buf| {
    ///     assert_eq!(buf.as_ptr() as usize % 16, 0);
    ///     buf[..8].copy_from_slice(&42u64.to_le_bytes());
    ///     Some(8)
    /// })?;
    /// let c = ring.try_pop(&me)?;
    /// assert_eq!((ring.kind(&c), ring.bytes(&c)), (HANDLE, &42u64.to_le_bytes()[..]));
    /// ring.release(c);
    /// # Ok::<(), MpmcError>(())
    /// ```
    #[inline]
    pub fn try_push_with_kind(
        &self,
        me: &Owner,
        kind: u8,
        mut write: impl FnMut(&mut [u8]) -> Option<usize>,
    ) -> Result<(), MpmcError> {
        self.try_push_with_kinds(me, |buf| write(buf).map(|n| (n, kind)))
    }

    /// Like [`try_push_with_kind`](MpmcRing::try_push_with_kind), with the
    /// kind chosen by `write` once it has the slot: it returns the bytes used
    /// and the slot's kind (say, the message itself, or the descriptor of a
    /// message it placed elsewhere because it did not fit).
    ///
    /// ```
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
    /// let big = [9u8; 100];
    /// ring.try_push_with_kinds(&me, |buf| {
    ///     if big.len() <= buf.len() {
    ///         buf[..big.len()].copy_from_slice(&big);
    ///         Some((big.len(), 0))
    ///     } else {
    ///         buf[..4].copy_from_slice(b"elsw");
    ///         Some((4, 1)) // a reference to where it went instead
    ///     }
    /// })?;
    /// let c = ring.try_pop(&me)?;
    /// assert_eq!((ring.kind(&c), ring.bytes(&c)), (1, &b"elsw"[..]));
    /// ring.release(c);
    /// # Ok::<(), MpmcError>(())
    /// ```
    pub fn try_push_with_kinds(
        &self,
        me: &Owner,
        mut write: impl FnMut(&mut [u8]) -> Option<(usize, u8)>,
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
                let (len, kind, result) = match write(buf) {
                    Some((n, kind)) if n <= self.slot_size => (n as u32, kind, Ok(())),
                    _ => (SKIP, 0, Err(MpmcError::TooLarge)),
                };
                s.len.store(len, Ordering::Relaxed);
                s.kind.store(u32::from(kind), Ordering::Relaxed);
                // A registered, live producer is never poisoned, so the slot is
                // still ours: publish with a plain Release store (which orders
                // the payload, length and kind before the consumer's reads).
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
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
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
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
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
                    self.release(Claimed { pos, len: 0, kind: 0, ring: self.id() });
                    continue;
                }
                if len as usize > self.slot_size {
                    self.release(Claimed { pos, len: 0, kind: 0, ring: self.id() });
                    return Err(MpmcError::Corrupt("message length"));
                }
                let Ok(kind) = u8::try_from(s.kind.load(Ordering::Relaxed)) else {
                    self.release(Claimed { pos, len: 0, kind: 0, ring: self.id() });
                    return Err(MpmcError::Corrupt("message kind"));
                };
                return Ok(Claimed { pos, len: len as usize, kind, ring: self.id() });
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
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
    /// ring.try_push(&me, b"bytes")?;
    /// let c = ring.try_pop(&me)?;
    /// assert_eq!(ring.bytes(&c), b"bytes");
    /// ring.release(c);
    /// # Ok::<(), MpmcError>(())
    /// ```
    #[inline]
    pub fn bytes(&self, c: &Claimed) -> &[u8] {
        if !self.owns(c) {
            return &[];
        }
        // SAFETY: the slot is claimed by us (not reused until release) and
        // len <= slot_size was checked.
        unsafe { core::slice::from_raw_parts(self.payload(c.pos), c.len) }
    }

    /// A claimed message's bytes, to be copied out: a peer that breaks the
    /// protocol may write the slot while it is read (see
    /// [`peer_bytes`](crate::peer_bytes)).
    #[inline]
    pub fn peer_bytes(&self, c: &Claimed) -> PeerBytes<'_> {
        if !self.owns(c) {
            return PeerBytes::from_slice(&[]);
        }
        // SAFETY: len <= slot_size was checked, so the payload lies inside
        // the slot's stride in the mapping, which outlives `&self`; read only
        // through atomic loads.
        unsafe { PeerBytes::new(NonNull::new_unchecked(self.payload(c.pos)), c.len) }
    }

    /// The kind of a claimed message, as its producer tagged it
    /// ([`try_push_with_kind`](MpmcRing::try_push_with_kind)); 0 for a plain
    /// push. It was read, and checked to be a `u8`, when the slot was
    /// claimed: a slot holding anything else is reported as
    /// [`MpmcError::Corrupt`] by [`try_pop`](MpmcRing::try_pop). A caller that
    /// gives kinds a meaning still validates the payload as it does for any
    /// message.
    ///
    /// ```
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
    /// ring.try_push_with_kind(&me, 9, |buf| {
    ///     buf[0] = 1;
    ///     Some(1)
    /// })?;
    /// ring.try_push(&me, b"plain")?;
    /// let (a, b) = (ring.try_pop(&me)?, ring.try_pop(&me)?);
    /// assert_eq!((ring.kind(&a), ring.kind(&b)), (9, 0));
    /// ring.release(a);
    /// ring.release(b);
    /// # Ok::<(), MpmcError>(())
    /// ```
    #[must_use]
    #[inline]
    pub fn kind(&self, c: &Claimed) -> u8 {
        c.kind
    }

    /// Frees a claimed slot for the next lap.
    ///
    /// ```
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
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
        if !self.owns(&c) {
            return;
        }
        let s = self.slot(c.pos);
        // A registered, live consumer is never reclaimed from, so the slot is
        // still ours: free it with a plain Release store.
        s.seq.store(c.pos.wrapping_add(self.slots), Ordering::Release);
        self.header().not_full.notify();
    }

    /// Whether the next push would find a free slot (a snapshot).
    ///
    /// ```
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
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
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
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
    /// released (tid 0: claimed but not registered yet, poisoned, or being
    /// dropped by a recoverer).
    ///
    /// A diagnostic scan for supervisors (which messages did a dead consumer
    /// hold?): slots can change while it runs, so `f` may see a message that
    /// is being released or overwritten: it gets [`PeerBytes`] to copy out,
    /// and validates what it copied.
    ///
    /// ```
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
    /// ring.try_push(&me, b"queued")?;
    /// let mut seen = Vec::new();
    /// ring.scan(|claimant, bytes| seen.push((claimant, bytes.equals(b"queued"))));
    /// assert_eq!(seen, [(None, true)]);
    /// # Ok::<(), MpmcError>(())
    /// ```
    pub fn scan(&self, mut f: impl FnMut(Option<u32>, PeerBytes<'_>)) {
        self.scan_with_kind(|claimant, _, bytes| f(claimant, bytes));
    }

    /// As [`scan`](MpmcRing::scan), with each message's kind:
    /// `f(claimant, kind, bytes)`. A slot whose stored kind is not a `u8`
    /// (only corrupt memory holds one) is passed over, as one whose length
    /// is impossible.
    ///
    /// ```
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
    /// ring.try_push_with_kind(&me, 3, |buf| {
    ///     buf[..2].copy_from_slice(b"hi");
    ///     Some(2)
    /// })?;
    /// ring.try_push(&me, b"plain")?;
    /// let held = ring.try_pop(&me)?; // claimed by us, not released
    /// let mut seen = Vec::new();
    /// ring.scan_with_kind(|claimant, kind, bytes| {
    ///     let mut copy = vec![0; bytes.len()];
    ///     bytes.copy_to(&mut copy);
    ///     seen.push((claimant.is_some(), kind, copy));
    /// });
    /// seen.sort();
    /// assert_eq!(seen, [(false, 0, b"plain".to_vec()), (true, 3, b"hi".to_vec())]);
    /// ring.release(held);
    /// # Ok::<(), MpmcError>(())
    /// ```
    pub fn scan_with_kind(&self, mut f: impl FnMut(Option<u32>, u8, PeerBytes<'_>)) {
        let hdr = self.header();
        let dequeue = hdr.dequeue.load(Ordering::Acquire);
        let enqueue = hdr.enqueue.load(Ordering::Acquire);
        for i in 0..self.slots {
            // The position this slot would hold a published message for.
            let s = self.slot(i);
            let seq = s.seq.load(Ordering::Acquire);
            let p = seq.wrapping_sub(1);
            // A fresh slot 0 (seq 0) would read as holding position
            // u64::MAX, "the one before 0", which no message ever had (and
            // which maps to slot 0 when the slot count divides 2^64 - 1: 3, 5,
            // 15, 17, ...).
            if self.index(p) != i as usize || p == u64::MAX {
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
            let Ok(kind) = u8::try_from(s.kind.load(Ordering::Relaxed)) else { continue };
            let claimant = if p.wrapping_sub(dequeue) as i64 >= 0 {
                None
            } else {
                let c = s.claim.load(Ordering::Acquire);
                let tid = (c >> 32) as u32;
                Some(if c & 0xffff_ffff == tag(p, true) && tid != DROPPING_TID && tid != DROPPED_TID { tid } else { 0 })
            };
            // SAFETY: the payload area of slot i is slot_size bytes inside the
            // ring and len <= slot_size (checked); it may be written while `f`
            // reads it, hence atomic reads only.
            let bytes = unsafe { PeerBytes::new(NonNull::new_unchecked(self.payload(i)), len as usize) };
            f(claimant, kind, bytes);
        }
    }

    /// Poisons the claim `t` of slot `s` if its claimant is dead, or has not
    /// registered and `grace_passed`; true if the claim is (now) poisoned, so
    /// the caller may complete the step for the claimant. A consumer's slot
    /// that a recoverer is dropping or has dropped is not abandoned: see
    /// [`recover_reader_with`](MpmcRing::recover_reader_with).
    fn poison_abandoned(s: &SlotHead, t: u64, check: &impl OwnerCheck, grace_passed: bool) -> bool {
        let c = s.claim.load(Ordering::Acquire);
        let poison = (POISON_TID << 32) | t;
        let take = if c & 0xffff_ffff == t {
            let tid = (c >> 32) as u32;
            let reader = t & 1 == 1;
            if reader && (tid == DROPPING_TID || tid == DROPPED_TID) {
                false
            } else {
                u64::from(tid) == POISON_TID
                    || !check.is_alive_owner(
                        tid,
                        Some(s.start.load(Ordering::Relaxed)),
                        s.ns.load(Ordering::Relaxed),
                        s.pid.load(Ordering::Relaxed),
                    )
            }
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
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
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
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
    /// let (_pos, progressed) = ring.recover_reader(&ProcLiveness, false);
    /// assert!(!progressed);
    /// ```
    pub fn recover_reader(&self, check: &impl OwnerCheck, grace_passed: bool) -> (u64, bool) {
        self.recover_reader_with(check, grace_passed, |_, _| {})
    }

    /// As [`recover_reader`](MpmcRing::recover_reader), handing the message
    /// the dead consumer held to `on_drop(kind, payload)` before its slot is
    /// freed, so that the caller can release what the message referenced.
    ///
    /// The recoverer that wins the slot (moves the poisoned claim on to
    /// "dropping": exactly one does) calls `on_drop`, then frees the slot; no
    /// producer can write the slot until then, and other recoverers leave it
    /// alone (returning no progress). So while recoverers neither die nor
    /// stall, `on_drop` runs exactly once per message recovered, in the call
    /// that returns `(pos, true)`. It is not called for a slot that held no
    /// message (a skip marker the consumer claimed), nor for one whose length
    /// or kind is impossible (corrupt memory). Keep it short: a recoverer that
    /// finds a slot still dropping after the grace (`grace_passed`) presumes
    /// the dropper died and frees the slot without calling its own `on_drop`
    /// (at most once: what a dropper killed midway had not released leaks),
    /// and a dropper stalled that long may then see the payload change under
    /// it.
    ///
    /// ```
    /// # use shmproc_core::mpmc::{Claimed, MpmcError, MpmcRing};
    /// # use shmproc_core::owner::{Owner, ProcLiveness};
    /// # let (ring, me) = shmproc_core::__doc::mpmc(8, 32);
    /// ring.try_push_with_kind(&me, 7, |buf| {
    ///     buf[..4].copy_from_slice(b"file");
    ///     Some(4)
    /// })?;
    /// for _ in 0..7 {
    ///     ring.try_push(&me, b"x")?;
    /// }
    /// // A consumer (tid 99 here) claims the first message and dies.
    /// let dead = Owner { thread: shmproc_core::Identity { id: 99, start: 1, ns: 1 }, pid: 99 };
    /// let _lost = ring.try_pop(&dead)?;
    /// // The next push needs the slot it holds.
    /// assert_eq!(ring.try_push(&me, b"y"), Err(MpmcError::Full));
    /// let alive = |tid: u32, _: Option<u64>| tid != 99;
    /// let mut dropped = Vec::new();
    /// let (_pos, progressed) = ring.recover_reader_with(&alive, false, |kind, bytes| {
    ///     dropped.push((kind, bytes.equals(b"file")));
    /// });
    /// assert!(progressed);
    /// assert_eq!(dropped, [(7, true)]);
    /// ring.try_push(&me, b"y")?; // the slot is free again
    /// // Nothing more to recover: no second drop.
    /// assert!(!ring.recover_reader_with(&alive, false, |_, _| panic!("dropped twice")).1);
    /// # Ok::<(), MpmcError>(())
    /// ```
    pub fn recover_reader_with(
        &self,
        check: &impl OwnerCheck,
        grace_passed: bool,
        mut on_drop: impl FnMut(u8, PeerBytes<'_>),
    ) -> (u64, bool) {
        let hdr = self.header();
        let pos = hdr.enqueue.load(Ordering::Relaxed);
        let rpos = pos.wrapping_sub(self.slots);
        let s = self.slot(pos);
        // Acquire: the producer's payload, length and kind are visible from
        // here on, for on_drop.
        if s.seq.load(Ordering::Acquire) != rpos.wrapping_add(1)
            || hdr.dequeue.load(Ordering::Relaxed).wrapping_sub(rpos) as i64 <= 0
        {
            return (pos, false);
        }
        let t = tag(rpos, true);
        let dropping = (u64::from(DROPPING_TID) << 32) | t;
        let dropped = (u64::from(DROPPED_TID) << 32) | t;
        let c = s.claim.load(Ordering::Acquire);
        if c == dropping {
            // Another recoverer won the slot and is in its on_drop, or died
            // there: after the grace, give up on it (a compare-and-swap, so
            // that one recoverer does) and free the slot without a drop.
            if !grace_passed || s.claim.compare_exchange(c, dropped, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                return (pos, false);
            }
        } else if c != dropped {
            // (A dropped claim only needs the freeing below, which its
            // recoverer died before.)
            if !Self::poison_abandoned(s, t, check, grace_passed) {
                return (pos, false);
            }
            // Win the slot: of the recoverers that saw it poisoned, one moves
            // the claim on, and only that one reads the message.
            let poison = (POISON_TID << 32) | t;
            if s.claim.compare_exchange(poison, dropping, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                return (pos, false);
            }
            // The slot may have been freed and reused since the first look
            // (another recoverer completed, and this one, stalled, found a
            // later lap's claim and, past the grace, poisoned that): then the
            // message there is not the dead consumer's, and the stale
            // dropping claim is as harmless as a stale poison. While the seq
            // still says "claimed at rpos", nobody but us frees the slot.
            if s.seq.load(Ordering::Acquire) != rpos.wrapping_add(1) {
                return (pos, false);
            }
            let len = s.len.load(Ordering::Relaxed);
            if let (true, Ok(kind)) =
                (len != SKIP && len as usize <= self.slot_size, u8::try_from(s.kind.load(Ordering::Relaxed)))
            {
                // SAFETY: the payload area of the slot is slot_size bytes
                // inside the ring and len <= slot_size (checked); the slot
                // is ours until the seq store below (producers wait for it,
                // other recoverers for the grace).
                let bytes = unsafe { PeerBytes::new(NonNull::new_unchecked(self.payload(rpos)), len as usize) };
                on_drop(kind, bytes);
            }
        }
        // Release: on_drop's reads happen before the next producer's writes.
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

    /// A copy of peer bytes.
    fn vec_of(b: PeerBytes<'_>) -> std::vec::Vec<u8> {
        let mut v = std::vec![0; b.len()];
        b.copy_to(&mut v);
        v
    }
    use crate::identity::Identity;
    use std::vec;
    use std::vec::Vec;

    #[repr(C, align(128))]
    struct Mem([u8; 16384]);

    fn owner(tid: u32) -> Owner {
        Owner { thread: Identity { id: tid, start: 3, ns: 1 }, pid: tid }
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
    /// Kinds travel with the messages, through pops, scans and claims; a
    /// stored kind that is not a u8 is corrupt, never passed on.
    #[test]
    fn kinds_round_trip_and_bad_kinds_are_corrupt() {
        let mut mem = Mem([0; 16384]);
        let r = ring(&mut mem, 4, 16);
        let me = owner(5);
        for round in 0..20u8 {
            let kind = round.wrapping_mul(37);
            r.try_push_with_kind(&me, kind, |buf| {
                buf[0] = round;
                Some(1)
            })
            .unwrap();
            r.try_push(&me, &[round, round]).unwrap();
            let mut seen = Vec::new();
            r.scan_with_kind(|claimant, k, b| seen.push((claimant, k, vec_of(b))));
            seen.sort();
            let mut expect = vec![(None, 0, vec![round, round]), (None, kind, vec![round])];
            expect.sort();
            assert_eq!(seen, expect);
            let a = r.try_pop(&me).unwrap();
            assert_eq!((r.kind(&a), r.bytes(&a)), (kind, &[round][..]));
            let mut seen = Vec::new();
            r.scan_with_kind(|claimant, k, _| seen.push((claimant, k)));
            seen.sort();
            let mut expect = vec![(None, 0), (Some(5), kind)];
            expect.sort();
            assert_eq!(seen, expect);
            r.release(a);
            let b = r.try_pop(&me).unwrap();
            assert_eq!(r.kind(&b), 0);
            r.release(b);
        }
        // A published slot whose kind is not a u8.
        r.try_push_with_kind(&me, 1, |_| Some(0)).unwrap();
        let pos = r.header().dequeue.load(Ordering::Relaxed);
        r.slot(pos).kind.store(256, Ordering::Relaxed);
        let mut n = 0;
        r.scan_with_kind(|_, _, _| n += 1);
        r.scan(|_, _| n += 1);
        assert_eq!(n, 0);
        assert_eq!(r.try_pop(&me).unwrap_err(), MpmcError::Corrupt("message kind"));
        // The slot was handed back: the ring goes on.
        r.try_push(&me, b"ok").unwrap();
        assert_eq!(pop_vec(&r, &me).unwrap(), b"ok");
    }

    /// `recover_reader_with` hands a dead consumer's message to `on_drop`
    /// once, before the slot is reused; not for skips; a stalled dropper is
    /// given up on only after the grace, without a second drop.
    #[test]
    fn recover_reader_with_drops_a_dead_consumers_message_once() {
        let mut mem = Mem([0; 16384]);
        let r = ring(&mut mem, 2, 8);
        let me = owner(5);
        let dead = owner(7);
        let alive = |tid: u32, _: Option<u64>| tid != 7;
        let mut drops: Vec<(u8, Vec<u8>)> = Vec::new();

        // A message claimed by a consumer that died.
        r.try_push_with_kind(&me, 4, |b| {
            b[..3].copy_from_slice(b"res");
            Some(3)
        })
        .unwrap();
        r.try_push(&me, b"b").unwrap();
        let _lost = r.try_pop(&dead).unwrap();
        assert_eq!(pop_vec(&r, &me).unwrap(), b"b");
        assert_eq!(r.try_push(&me, b"c"), Err(MpmcError::Full));
        let all_alive = |_: u32, _: Option<u64>| true;
        assert!(!r.recover_reader_with(&all_alive, false, |k, b| drops.push((k, vec_of(b)))).1);
        assert!(drops.is_empty());
        // on_drop runs while the slot is still held: no producer gets it.
        let (_, done) = r.recover_reader_with(&alive, false, |k, b| {
            assert_eq!(r.try_push(&me, b"early"), Err(MpmcError::Full));
            drops.push((k, vec_of(b)));
        });
        assert!(done);
        assert_eq!(drops, [(4, b"res".to_vec())]);
        assert!(!r.recover_reader_with(&alive, true, |k, b| drops.push((k, vec_of(b)))).1);
        assert_eq!(drops.len(), 1);
        r.try_push(&me, b"c").unwrap();
        r.try_push(&me, b"d").unwrap();
        assert_eq!(pop_vec(&r, &me).unwrap(), b"c");
        assert_eq!(pop_vec(&r, &me).unwrap(), b"d");

        // A consumer that died after claiming a skip marker (before it
        // looked): the slot is freed, nothing is dropped.
        let hdr = r.header();
        let pos = hdr.enqueue.load(Ordering::Relaxed);
        assert!(r.try_push_with(&me, |_| None).is_err()); // a skip at `pos`
        r.try_push(&me, b"e").unwrap();
        assert!(hdr.dequeue.compare_exchange(pos, pos + 1, Ordering::Relaxed, Ordering::Relaxed).is_ok());
        assert!(r.register(pos, true, &dead));
        assert_eq!(pop_vec(&r, &me).unwrap(), b"e");
        assert_eq!(r.try_push(&me, b"f"), Err(MpmcError::Full));
        assert!(r.recover_reader_with(&alive, false, |k, b| drops.push((k, vec_of(b)))).1);
        assert_eq!(drops.len(), 1);
        r.try_push(&me, b"f").unwrap();
        assert_eq!(pop_vec(&r, &me).unwrap(), b"f");

        // A recoverer that won a slot and stalled (or died) in on_drop: the
        // claim says "dropping". Others wait for the grace, then free the
        // slot without dropping again.
        r.try_push_with_kind(&me, 9, |_| Some(0)).unwrap();
        r.try_push(&me, b"g").unwrap();
        let lost = r.try_pop(&dead).unwrap();
        let rpos = lost.pos;
        assert_eq!(pop_vec(&r, &me).unwrap(), b"g");
        let dropping = (u64::from(DROPPING_TID) << 32) | tag(rpos, true);
        r.slot(rpos).claim.store(dropping, Ordering::Relaxed);
        assert!(!r.recover_reader_with(&alive, false, |k, b| drops.push((k, vec_of(b)))).1);
        assert_eq!(r.try_push(&me, b"h"), Err(MpmcError::Full));
        let mut claimants = Vec::new();
        r.scan(|c, _| claimants.push(c));
        assert_eq!(claimants, [Some(0)]);
        assert!(r.recover_reader_with(&alive, true, |k, b| drops.push((k, vec_of(b)))).1);
        assert_eq!(drops.len(), 1);
        r.try_push(&me, b"h").unwrap();
        assert_eq!(pop_vec(&r, &me).unwrap(), b"h");

        // One that gave up on a dropper and died before freeing the slot: the
        // next recoverer frees it at once, without a drop.
        r.try_push_with_kind(&me, 9, |_| Some(0)).unwrap();
        r.try_push(&me, b"i").unwrap();
        let lost = r.try_pop(&dead).unwrap();
        assert_eq!(pop_vec(&r, &me).unwrap(), b"i");
        let dropped = (u64::from(DROPPED_TID) << 32) | tag(lost.pos, true);
        r.slot(lost.pos).claim.store(dropped, Ordering::Relaxed);
        assert!(r.recover_reader_with(&all_alive, false, |k, b| drops.push((k, vec_of(b)))).1);
        assert_eq!(drops.len(), 1);
        r.try_push(&me, b"j").unwrap();
        assert_eq!(pop_vec(&r, &me).unwrap(), b"j");

        // recover_reader (no hook) still frees a dead consumer's slot.
        r.try_push(&me, b"k").unwrap();
        r.try_push(&me, b"l").unwrap();
        let _lost = r.try_pop(&dead).unwrap();
        assert_eq!(pop_vec(&r, &me).unwrap(), b"l");
        assert!(r.recover_reader(&alive, false).1);
        r.try_push(&me, b"m").unwrap();
        assert_eq!(pop_vec(&r, &me).unwrap(), b"m");
    }

    /// Two recoverers racing for the same dead consumer's slot: one drops the
    /// message, once, and the slot is freed once.
    #[test]
    fn racing_recoverers_drop_once() {
        let mut mem = std::boxed::Box::new(Mem([0; 16384]));
        let r = ring(&mut mem, 2, 8);
        let me = owner(5);
        let dead = owner(7);
        let alive = |tid: u32, _: Option<u64>| tid != 7;
        for round in 0..2000u32 {
            r.try_push_with_kind(&me, 1, |b| {
                b[..4].copy_from_slice(&round.to_le_bytes());
                Some(4)
            })
            .unwrap();
            r.try_push(&me, b"x").unwrap();
            let _lost = r.try_pop(&dead).unwrap();
            assert_eq!(pop_vec(&r, &me).unwrap(), b"x");
            let drops = std::sync::atomic::AtomicU32::new(0);
            let wins = std::sync::atomic::AtomicU32::new(0);
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        let (_, done) = r.recover_reader_with(&alive, false, |k, b| {
                            assert_eq!((k, vec_of(b)), (1, round.to_le_bytes().to_vec()));
                            drops.fetch_add(1, Ordering::Relaxed);
                        });
                        if done {
                            wins.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            });
            assert_eq!(drops.load(Ordering::Relaxed), 1, "round {round}");
            assert_eq!(wins.load(Ordering::Relaxed), 1, "round {round}");
            r.try_push(&me, b"y").unwrap();
            assert_eq!(pop_vec(&r, &me).unwrap(), b"y");
        }
    }

    /// With the kernel's verdict ([`ProcLiveness`](crate::owner::ProcLiveness)),
    /// a consumer recorded in another pid namespace keeps its slot, even when
    /// its tid names a process here with another start time; the same record
    /// in our namespace is proven dead and its slot is recovered.
    #[test]
    fn foreign_namespace_consumer_keeps_its_slot() {
        use crate::owner::ProcLiveness;
        let mut mem = Mem([0; 16384]);
        let r = ring(&mut mem, 2, 32);
        let me = Owner::current();
        let here = crate::identity::current_pid_ns();
        // Tid 1 exists in every namespace; start 1 is not init's start time.
        let foreign = Owner { thread: Identity { id: 1, start: 1, ns: here ^ 1 }, pid: 1 };
        r.try_push(&me, b"a").unwrap();
        let _held = r.try_pop(&foreign).unwrap();
        r.try_push(&me, b"x").unwrap();
        assert_eq!(r.try_push(&me, b"y"), Err(MpmcError::Full)); // the held slot is next
        let (_, done) = r.recover_reader_with(&ProcLiveness, false, |_, _| panic!("dropped a live reader's message"));
        assert!(!done);
        // The same record in our namespace: proven dead, recovered.
        let mut mem2 = Mem([0; 16384]);
        let r2 = ring(&mut mem2, 2, 32);
        let local = Owner { thread: Identity { id: 1, start: 1, ns: here }, pid: 1 };
        r2.try_push(&me, b"b").unwrap();
        let _lost = r2.try_pop(&local).unwrap();
        r2.try_push(&me, b"x").unwrap();
        let mut dropped = 0;
        let (_, done) = r2.recover_reader_with(&ProcLiveness, false, |_, _| dropped += 1);
        assert!(done);
        assert_eq!(dropped, 1);
    }

    /// Payloads start 16-byte aligned for every slot size: the slot head is
    /// padded to 16 and the stride is a multiple of 64 from a 128-aligned
    /// base.
    /// A claim is checked against its ring: handed to another ring (with
    /// smaller slots), it reads nothing and frees nothing there, instead of
    /// reading past the slot (debug builds report the bug by panicking).
    #[test]
    fn a_claim_of_another_ring_reads_and_frees_nothing() {
        let (mut big, mut small) = (Mem([0; 16384]), Mem([0; 16384]));
        let (a, b) = (ring(&mut big, 2, 512), ring(&mut small, 2, 16));
        let me = owner(5);
        a.try_push(&me, &[7; 500]).unwrap();
        b.try_push(&me, b"b").unwrap();
        let c = a.try_pop(&me).unwrap();
        let misuse =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (b.peer_bytes(&c).len(), b.bytes(&c).len())));
        if cfg!(debug_assertions) {
            assert!(misuse.is_err(), "debug builds report the foreign claim");
        } else {
            assert_eq!(misuse.ok(), Some((0, 0)));
            b.release(c);
            assert_eq!(b.len(), 1, "b's message is still there");
            assert_eq!(pop_vec(&b, &me).unwrap(), b"b");
            return;
        }
        assert_eq!(pop_vec(&b, &me).unwrap(), b"b");
        a.release(c);
        assert!(a.has_room());
    }

    #[test]
    fn payloads_are_16_aligned() {
        assert_eq!(SLOT_HEAD % 16, 0);
        let mut mem = Mem([0; 16384]);
        for size in [1usize, 7, 8, 15, 16, 17, 24, 31, 33, 48, 100, 129] {
            assert_eq!(stride(size) % 64, 0);
            let slots = 5;
            let r = ring(&mut mem, slots, size);
            let me = owner(5);
            for round in 0..3 * slots {
                r.try_push_with(&me, |buf| {
                    assert_eq!(buf.as_ptr() as usize % 16, 0, "slot size {size}");
                    Some(1)
                })
                .unwrap();
                r.scan(|_, b| assert_eq!(b.as_ptr() as usize % 16, 0));
                let c = r.try_pop(&me).unwrap();
                assert_eq!(r.bytes(&c).as_ptr() as usize % 16, 0, "slot size {size}, round {round}");
                r.release(c);
            }
        }
    }
    /// A fresh ring holds nothing to scan, whatever its slot count (slot 0's
    /// initial seq once read as a message at position u64::MAX, claimed by
    /// tid u32::MAX, when the count divides 2^64 - 1).
    #[test]
    fn scan_of_a_fresh_ring_is_empty() {
        let mut mem = Mem([0; 16384]);
        for slots in 1..=20 {
            let r = ring(&mut mem, slots, 8);
            let mut n = 0;
            r.scan_with_kind(|_, _, _| n += 1);
            assert_eq!(n, 0, "{slots} slots");
            r.try_push(&owner(5), b"a").unwrap();
            r.scan(|claimant, b| {
                assert_eq!((claimant, vec_of(b)), (None, b"a".to_vec()));
                n += 1;
            });
            assert_eq!(n, 1, "{slots} slots");
        }
    }
}
