//! A validated shared-memory region: a header at offset 0, a directory of named
//! objects, and a heap of objects at aligned offsets.
//!
//! ```text
//! 0              128                dir_end (aligned to 128)            total_size
//! | RegionHeader | DirEntry x cap   | object | object | ...  free ...   |
//! ```
//!
//! The region stores **offsets, never pointers**: each process maps it at a
//! different address.
//!
//! # Trust model
//!
//! Everything read from the region is untrusted: a buggy, crashed or malicious
//! peer may have written anything. [`Region::open`] checks magic, layout version,
//! sizes and alignment, and copies the validated layout (directory position and
//! capacity, heap start, total size) into the local [`Region`] value, so later
//! accesses never re-read those fields from shared memory. Every directory entry
//! is validated again each time it is read (offset and size inside the heap,
//! aligned, of the expected kind). A corrupt region gives a [`RegionError`],
//! never undefined behaviour, an out-of-bounds access, a panic or an endless loop.
//!
//! Objects placed in a region implement [`RegionObject`]: they consist only of
//! atomics, so every bit pattern is a valid value and a concurrent write by a
//! peer is never a data race; their *meaning* is re-validated at use.
//!
//! # Initialisation protocol
//!
//! A new region is zero-filled (fresh `memfd` or `shm_open` + `ftruncate`).
//! The creator writes the header fields and then publishes them with a
//! `Release` store of [`INIT_READY`] to the init word, followed by a shared-futex
//! wake. An opener loads the init word with `Acquire` (synchronising with that
//! store, so it sees the header) and, while it is not ready yet, sleeps on it
//! with a deadline. A creator that dies mid-way leaves the word unready; openers
//! time out with [`RegionError::NotReady`] instead of hanging.
//!
//! Directory entries follow the same pattern: allocation claims a slot and heap
//! space with compare-and-swap loops (bounded by validation: a corrupt counter
//! gives an error, not a loop), initialises the object, then publishes the
//! entry with a `Release` store of [`ENTRY_READY`]; readers `Acquire`-load it.

use core::fmt;
use core::mem::{align_of, size_of};
use core::ptr::NonNull;

use crate::futex;
use crate::identity::Identity;
use crate::primitive::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use crate::time::Deadline;

/// `b"SHMPROC1"` as a little-endian u64: the first 8 bytes of every region.
///
/// ```
/// # use shmproc_core::{Identity, Region};
/// # let len = 1 << 16;
/// # let region = shmproc_core::__doc::region(len);
/// # let mem = region.base();
/// let info = region.info()?;
/// assert_eq!(info.creator, Identity::current_process());
/// // The first 8 bytes are the magic number.
/// // SAFETY: the region's first 8 bytes are initialised.
/// assert_eq!(unsafe { mem.cast::<u64>().read() }, shmproc_core::region::MAGIC);
/// # Ok::<(), shmproc_core::RegionError>(())
/// ```
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMPROC1");
/// Version of the layout described in this module and of every object kind
/// in it; a region of another version is refused
/// ([`RegionError::VersionMismatch`]), so processes built from different
/// releases never misread each other's objects.
///
/// Version 2: the region header records its creator's pid namespace; the
/// mutex owner record is a seqlock with the namespace, and the word's bit 30
/// is [`HOME`](crate::raw_mutex::HOME); MPMC slot heads record their
/// claimer (48 bytes); the robust semaphore's holder table; the biased lock
/// records its holder's namespace.
///
/// Version 3: laned queues (the queue header's lane count and tickets).
///
/// Version 4: a notifier's sleeper word carries the `ARMED` bit
/// ([`notify`](crate::notify)): a waker that sees sleepers counted wakes only
/// if one armed, so an older sleeper, which does not arm, would not be woken.
pub const LAYOUT_VERSION: u32 = 4;
/// Alignment of the header, the directory and every object (two cache lines:
/// adjacent-line prefetch makes 64 too small to avoid false sharing).
///
/// ```
/// # use shmproc_core::{Identity, Region};
/// # let region = shmproc_core::__doc::region(1 << 16);
/// use shmproc_core::region::OBJECT_ALIGN;
/// let obj = region.alloc_raw(shmproc_core::region::kind::BYTES, b"blob", 10, 8, |_| {})?;
/// assert_eq!(obj.offset % OBJECT_ALIGN, 0);
/// # Ok::<(), shmproc_core::RegionError>(())
/// ```
pub const OBJECT_ALIGN: usize = 128;
/// Longest object name, in bytes.
///
/// ```
/// # use shmproc_core::{Identity, Region};
/// # let region = shmproc_core::__doc::region(1 << 16);
/// use shmproc_core::region::NAME_LEN;
/// let long = [b'x'; NAME_LEN + 1];
/// assert!(region.alloc_raw(shmproc_core::region::kind::BYTES, &long, 8, 8, |_| {}).is_err());
/// # Ok::<(), shmproc_core::RegionError>(())
/// ```
pub const NAME_LEN: usize = 40;
/// Directory capacity used when the caller has no preference.
///
/// ```
/// use shmproc_core::region::{required_size, DEFAULT_DIR_CAPACITY};
/// assert!(required_size(DEFAULT_DIR_CAPACITY, 0).unwrap() >= 64 * DEFAULT_DIR_CAPACITY as usize);
/// ```
pub const DEFAULT_DIR_CAPACITY: u32 = 62;
/// Largest directory a region may declare (bounds the work of a scan).
///
/// ```
/// use shmproc_core::region::{required_size, MAX_DIR_CAPACITY};
/// assert!(required_size(MAX_DIR_CAPACITY, 0).is_some());
/// ```
pub const MAX_DIR_CAPACITY: u32 = 1 << 16;

/// Init word: nobody has started initialising.
///
/// ```
/// # use shmproc_core::{Identity, Region};
/// # let len = 1 << 16;
/// # let region = shmproc_core::__doc::region(len);
/// # let mem = region.base();
/// use shmproc_core::region::{INIT_BUSY, INIT_EMPTY, INIT_READY};
/// assert!(INIT_EMPTY < INIT_BUSY && INIT_BUSY < INIT_READY);
/// // A created region is published READY: opening it succeeds at once.
/// // SAFETY: the same memory, still mapped.
/// assert!(unsafe { Region::open(mem, len, None) }.is_ok());
/// ```
pub const INIT_EMPTY: u32 = 0;
/// Init word: the creator is writing the header.
pub const INIT_BUSY: u32 = 1;
/// Init word: the header is valid.
pub const INIT_READY: u32 = 2;

/// Directory entry: unused, or claimed by an allocation that did not finish.
pub const ENTRY_FREE: u32 = 0;
/// Directory entry: the object is initialised and may be used.
pub const ENTRY_READY: u32 = 1;

/// Object kinds known to this version. Unknown kinds are reported, not rejected,
/// so a newer peer's objects do not make a region unreadable.
pub mod kind {
    /// Untyped bytes (a `Value`, an `Array`, user data).
    ///
    /// ```
    /// # use shmproc_core::{Identity, Region};
    /// # let region = shmproc_core::__doc::region(1 << 16);
    /// use shmproc_core::region::kind;
    /// let obj = region.alloc_raw(kind::BYTES, b"raw", 32, 8, |p| {
    ///     // SAFETY: `p` points at 32 fresh bytes of the object.
    ///     unsafe { p.as_ptr().write_bytes(7, 32) }
    /// })?;
    /// assert_eq!(obj.kind, kind::BYTES);
    /// # Ok::<(), shmproc_core::RegionError>(())
    /// ```
    pub const BYTES: u32 = 1;
    /// A robust mutex.
    ///
    /// ```
    /// # use shmproc_core::{Identity, Region};
    /// # let region = shmproc_core::__doc::region(1 << 16);
    /// use shmproc_core::region::kind;
    /// use shmproc_core::raw_mutex::RawMutex;
    /// let obj = region.alloc::<RawMutex>(b"m", |m| m.init())?;
    /// assert_eq!(obj.kind, kind::MUTEX);
    /// # Ok::<(), shmproc_core::RegionError>(())
    /// ```
    pub const MUTEX: u32 = 2;
    /// A counting semaphore.
    ///
    /// ```
    /// # use shmproc_core::{Identity, Region};
    /// # let region = shmproc_core::__doc::region(1 << 16);
    /// use shmproc_core::region::kind;
    /// use shmproc_core::semaphore::RawSemaphore;
    /// assert_eq!(region.alloc::<RawSemaphore>(b"s", |s| s.init(1, 1))?.kind, kind::SEMAPHORE);
    /// # Ok::<(), shmproc_core::RegionError>(())
    /// ```
    pub const SEMAPHORE: u32 = 3;
    /// An event flag.
    ///
    /// ```
    /// # use shmproc_core::{Identity, Region};
    /// # let region = shmproc_core::__doc::region(1 << 16);
    /// use shmproc_core::region::kind;
    /// use shmproc_core::event::RawEvent;
    /// assert_eq!(region.alloc::<RawEvent>(b"e", |e| e.init())?.kind, kind::EVENT);
    /// # Ok::<(), shmproc_core::RegionError>(())
    /// ```
    pub const EVENT: u32 = 4;
    /// A condition variable.
    ///
    /// ```
    /// # use shmproc_core::{Identity, Region};
    /// # let region = shmproc_core::__doc::region(1 << 16);
    /// use shmproc_core::region::kind;
    /// use shmproc_core::condvar::RawCondvar;
    /// assert_eq!(region.alloc::<RawCondvar>(b"c", |c| c.init())?.kind, kind::CONDVAR);
    /// # Ok::<(), shmproc_core::RegionError>(())
    /// ```
    pub const CONDVAR: u32 = 5;
    /// A barrier.
    ///
    /// ```
    /// # use shmproc_core::{Identity, Region};
    /// # let region = shmproc_core::__doc::region(1 << 16);
    /// use shmproc_core::region::kind;
    /// use shmproc_core::barrier::RawBarrier;
    /// assert_eq!(region.alloc::<RawBarrier>(b"b", |b| b.init(2))?.kind, kind::BARRIER);
    /// # Ok::<(), shmproc_core::RegionError>(())
    /// ```
    pub const BARRIER: u32 = 6;
    /// A single-producer single-consumer byte ring.
    pub const SPSC_RING: u32 = 7;
    /// A multi-producer multi-consumer slot ring.
    pub const MPMC_RING: u32 = 8;
    /// A lock-protected array (`Array<T>`).
    pub const ARRAY: u32 = 9;
    /// A shared hash map (`SharedMap<K, V>`).
    pub const SHARED_MAP: u32 = 10;
    /// A shared list (`SharedList<T>`).
    pub const SHARED_LIST: u32 = 11;
    /// A semaphore whose permits come back when their holder dies
    /// (`RawRobustSemaphore`).
    pub const ROBUST_SEMAPHORE: u32 = 12;
}

/// The region header at offset 0. All fields are atomics: a peer may write them
/// at any time, and every value is validated before use.
///
/// ```
/// // 128 bytes at the start of every region, then the directory.
/// assert_eq!(core::mem::size_of::<shmproc_core::region::RegionHeader>(), 128);
/// ```
#[repr(C, align(128))]
pub struct RegionHeader {
    magic: AtomicU64,
    version: AtomicU32,
    header_size: AtomicU32,
    total_size: AtomicU64,
    init: AtomicU32,
    creator_pid: AtomicU32,
    creator_start: AtomicU64,
    dir_offset: AtomicU64,
    dir_capacity: AtomicU32,
    dir_len: AtomicU32,
    heap_start: AtomicU64,
    heap_next: AtomicU64,
    creator_uid: AtomicU32,
    flags: AtomicU32,
    /// The creator's pid namespace ([`Identity::ns`]; 0: unknown).
    creator_ns: AtomicU32,
}

/// Byte offset of the creator's pid (`u32`, then its start time `u64`) in
/// the region header: a creator records itself there with one write before
/// the region is initialised, so that a half-created segment names whoever
/// made it.
pub const CREATOR_RECORD_OFFSET: usize = core::mem::offset_of!(RegionHeader, creator_pid);
/// Byte offset of the creator's pid namespace (`u32`) in the region header.
pub const CREATOR_NS_OFFSET: usize = core::mem::offset_of!(RegionHeader, creator_ns);
// (Loom's atomics have other sizes: the layout is only real without it.)
#[cfg(not(loom))]
const _: () = assert!(core::mem::offset_of!(RegionHeader, creator_start) == CREATOR_RECORD_OFFSET + 4);

/// One directory slot: 64 bytes.
///
/// ```
/// assert_eq!(core::mem::size_of::<shmproc_core::region::DirEntry>(), 64);
/// ```
#[repr(C, align(8))]
pub struct DirEntry {
    state: AtomicU32,
    kind: AtomicU32,
    offset: AtomicU64,
    size: AtomicU64,
    name: [AtomicU8; NAME_LEN],
}

const HEADER_SIZE: usize = size_of::<RegionHeader>();
const ENTRY_SIZE: usize = size_of::<DirEntry>();
#[cfg(not(loom))]
const _: () = assert!(HEADER_SIZE == 128);
#[cfg(not(loom))]
const _: () = assert!(ENTRY_SIZE == 64);

/// Why a region could not be created, opened or used.
///
/// ```
/// use core::ptr::NonNull;
/// use shmproc_core::{Region, RegionError};
/// let layout = std::alloc::Layout::from_size_align(4096, 128).unwrap();
/// // SAFETY: non-zero size.
/// let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
/// // All zeroes is not a region: a typed error, no panic.
/// // SAFETY: 4096 readable bytes, 128-aligned, never freed.
/// let r = unsafe { Region::open(mem, 4096, Some(shmproc_core::Deadline::EXPIRED)) };
/// assert!(r.is_err());
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RegionError {
    /// The memory is smaller than the layout requires.
    TooSmall {
        /// Bytes available.
        len: usize,
        /// Bytes required.
        need: usize,
    },
    /// The base address is not aligned to [`OBJECT_ALIGN`].
    Misaligned,
    /// The first 8 bytes are not [`MAGIC`]: not a shmproc region.
    BadMagic(u64),
    /// The region was written by an incompatible layout version.
    VersionMismatch {
        /// Version found in the header.
        found: u32,
        /// Version this build understands.
        expected: u32,
    },
    /// The creator has not finished initialising within the deadline (or died).
    NotReady,
    /// The header or a directory entry holds an impossible value.
    Corrupt(&'static str),
    /// Every directory slot is taken.
    DirectoryFull,
    /// The heap has no room for the requested object.
    OutOfSpace {
        /// Bytes requested (after alignment).
        requested: usize,
        /// Bytes left in the heap.
        available: usize,
    },
    /// An object name is longer than [`NAME_LEN`] or contains a NUL byte.
    BadName,
    /// No ready object has that name or index.
    NoSuchObject,
    /// The object exists but is of another kind, or too small for the type.
    WrongKind {
        /// Kind the caller asked for.
        expected: u32,
        /// Kind recorded in the directory.
        found: u32,
    },
}

impl fmt::Display for RegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionError::TooSmall { len, need } => {
                write!(f, "region too small: {len} bytes, need at least {need}")
            }
            RegionError::Misaligned => write!(f, "region base is not {OBJECT_ALIGN}-byte aligned"),
            RegionError::BadMagic(m) => write!(f, "not a shmproc region (magic {m:#018x})"),
            RegionError::VersionMismatch { found, expected } => {
                write!(f, "region layout version {found}, this build understands {expected}")
            }
            RegionError::NotReady => {
                write!(f, "region creator did not finish initialising in time")
            }
            RegionError::Corrupt(what) => write!(f, "corrupt region: {what}"),
            RegionError::DirectoryFull => write!(f, "region directory is full"),
            RegionError::OutOfSpace { requested, available } => {
                write!(f, "region out of space: {requested} bytes requested, {available} available")
            }
            RegionError::BadName => write!(f, "object name longer than {NAME_LEN} bytes or contains NUL"),
            RegionError::NoSuchObject => write!(f, "no such object in region"),
            RegionError::WrongKind { expected, found } => {
                write!(f, "object is of kind {found}, expected kind {expected}")
            }
        }
    }
}

impl core::error::Error for RegionError {}

/// A type that may live inside a region.
///
/// # Safety
///
/// Implementors must be valid for *every* bit pattern and must be mutated only
/// through atomics (or other interior mutability that tolerates concurrent
/// writers in other processes), contain no pointers, and have an alignment of at
/// most [`OBJECT_ALIGN`]. Then handing out `&Self` over shared memory that a peer
/// may scribble on is sound: garbage is a valid (if meaningless) value, which the
/// type's own operations must validate.
///
/// ```
/// # use shmproc_core::{Identity, Region};
/// # let region = shmproc_core::__doc::region(1 << 16);
/// use core::sync::atomic::{AtomicU64, Ordering};
/// use shmproc_core::region::RegionObject;
/// #[repr(C, align(128))]
/// struct Counter(AtomicU64);
/// // SAFETY: one atomic, valid for any bits; aligned to 128.
/// unsafe impl RegionObject for Counter {
///     const KIND: u32 = 1000;
/// }
/// let obj = region.alloc::<Counter>(b"hits", |c| c.0.store(0, Ordering::Relaxed))?;
/// region.get::<Counter>(obj.index)?.0.fetch_add(1, Ordering::Relaxed);
/// # Ok::<(), shmproc_core::RegionError>(())
/// ```
pub unsafe trait RegionObject: Sized {
    /// The directory kind recorded for this type.
    const KIND: u32;
}

/// Validated description of one directory entry.
///
/// ```
/// # use shmproc_core::{Identity, Region};
/// # let region = shmproc_core::__doc::region(1 << 16);
/// let obj = region.alloc_raw(shmproc_core::region::kind::BYTES, b"data", 100, 8, |_| {})?;
/// assert_eq!(obj.name(), b"data");
/// assert!(obj.size >= 100);
/// # Ok::<(), shmproc_core::RegionError>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Directory slot.
    pub index: u32,
    /// Object kind (see [`kind`]).
    pub kind: u32,
    /// Offset from the region base; inside the heap and aligned.
    pub offset: usize,
    /// Size in bytes; `offset + size` is inside the region.
    pub size: usize,
    name: [u8; NAME_LEN],
    name_len: u8,
}

impl ObjectInfo {
    /// The object's name (bytes as stored; may be non-UTF-8 if a peer wrote it).
    ///
    /// ```
    /// # use shmproc_core::{Identity, Region};
    /// # let region = shmproc_core::__doc::region(1 << 16);
    /// region.alloc_raw(shmproc_core::region::kind::BYTES, b"x", 1, 1, |_| {})?;
    /// assert_eq!(region.find(b"x")?.name(), b"x");
    /// # Ok::<(), shmproc_core::RegionError>(())
    /// ```
    #[must_use]
    pub fn name(&self) -> &[u8] {
        &self.name[..usize::from(self.name_len)]
    }
}

/// The validated header fields of a region.
///
/// ```
/// # use shmproc_core::{Identity, Region};
/// # let len = 1 << 16;
/// # let region = shmproc_core::__doc::region(len);
/// # let mem = region.base();
/// let h = region.info()?;
/// assert_eq!((h.total_size, h.dir_capacity, h.dir_len), (len, 8, 0));
/// # Ok::<(), shmproc_core::RegionError>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct HeaderInfo {
    /// Total size in bytes.
    pub total_size: usize,
    /// The process that created the region.
    pub creator: Identity,
    /// The creator's user id.
    pub creator_uid: u32,
    /// Directory slots.
    pub dir_capacity: u32,
    /// Directory slots claimed so far (clamped to the capacity).
    pub dir_len: u32,
    /// First heap byte.
    pub heap_start: usize,
    /// Heap bytes in use (clamped to the region).
    pub heap_used: usize,
}

/// A handle to a validated region mapped in this process.
///
/// `Region` does not own the memory; whoever mapped it (the std crate's
/// `Segment`) keeps the mapping alive for as long as the `Region` is used.
///
/// ```
/// # use shmproc_core::{Identity, Region};
/// # let len = 1 << 16;
/// # let region = shmproc_core::__doc::region(len);
/// # let mem = region.base();
/// // Another process maps the same memory and opens it, validating it.
/// // SAFETY: the same memory, still mapped.
/// let again = unsafe { Region::open(mem, len, None) }?;
/// assert_eq!(again.info()?.creator, Identity::current_process());
/// # Ok::<(), shmproc_core::RegionError>(())
/// ```
#[derive(Copy, Clone, Debug)]
pub struct Region {
    base: NonNull<u8>,
    len: usize,
    dir_offset: usize,
    dir_capacity: usize,
    heap_start: usize,
}

// SAFETY: a Region is an address range of shared memory that is only accessed
// through atomics (RegionObject's contract); moving or sharing the handle between
// threads is no different from sharing it between processes.
unsafe impl Send for Region {}
// SAFETY: as above; all access through `&Region` is via atomics.
unsafe impl Sync for Region {}

/// Rounds `v` up to a multiple of `align` (a power of two); `None` on overflow.
///
/// ```
/// use shmproc_core::region::align_up;
/// assert_eq!(align_up(129, 128), Some(256));
/// assert_eq!(align_up(usize::MAX, 128), None);
/// ```
#[must_use]
pub const fn align_up(v: usize, align: usize) -> Option<usize> {
    match v.checked_add(align - 1) {
        Some(x) => Some(x & !(align - 1)),
        None => None,
    }
}

/// The smallest region that holds the header, a directory of `dir_capacity`
/// slots and `heap` bytes of objects (before alignment padding of each object).
///
/// ```
/// let n = shmproc_core::region::required_size(8, 4096).unwrap();
/// assert!(n >= 4096 + 8 * 64);
/// ```
#[must_use]
pub fn required_size(dir_capacity: u32, heap: usize) -> Option<usize> {
    let dir = (dir_capacity as usize).checked_mul(ENTRY_SIZE)?;
    let heap_start = align_up(HEADER_SIZE.checked_add(dir)?, OBJECT_ALIGN)?;
    heap_start.checked_add(heap)
}

impl Region {
    /// Initialises a fresh region in `len` bytes at `base` and publishes it.
    ///
    /// # Safety
    ///
    /// `base..base+len` must be valid, writable memory (typically a `MAP_SHARED`
    /// mapping) that stays mapped while the returned `Region` or anything obtained
    /// from it is used, and no one else may be initialising it concurrently.
    ///
    /// ```
    /// # use core::ptr::NonNull;
    /// # use shmproc_core::{Identity, Region};
    /// # let len = 1 << 16;
    /// # let layout = std::alloc::Layout::from_size_align(len, 128).unwrap();
    /// # // SAFETY: the layout has a non-zero size.
    /// # let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    /// # // SAFETY: `len` writable bytes, 128-aligned, never freed.
    /// # let region = unsafe { Region::create(mem, len, Identity::current_process(), 0, 8) }.unwrap();
    /// assert_eq!(region.len(), len);
    /// # Ok::<(), shmproc_core::RegionError>(())
    /// ```
    pub unsafe fn create(
        base: NonNull<u8>,
        len: usize,
        creator: Identity,
        creator_uid: u32,
        dir_capacity: u32,
    ) -> Result<Region, RegionError> {
        if base.as_ptr() as usize % OBJECT_ALIGN != 0 {
            return Err(RegionError::Misaligned);
        }
        if dir_capacity == 0 || dir_capacity > MAX_DIR_CAPACITY {
            return Err(RegionError::Corrupt("directory capacity out of range"));
        }
        let heap_start = required_size(dir_capacity, 0).ok_or(RegionError::Corrupt("overflow"))?;
        if len < heap_start {
            return Err(RegionError::TooSmall { len, need: heap_start });
        }
        let region = Region { base, len, dir_offset: HEADER_SIZE, dir_capacity: dir_capacity as usize, heap_start };
        let h = region.header();
        h.init.store(INIT_BUSY, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Relaxed);
        h.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        h.header_size.store(HEADER_SIZE as u32, Ordering::Relaxed);
        h.total_size.store(len as u64, Ordering::Relaxed);
        h.creator_pid.store(creator.id, Ordering::Relaxed);
        h.creator_start.store(creator.start, Ordering::Relaxed);
        h.creator_ns.store(creator.ns, Ordering::Relaxed);
        h.creator_uid.store(creator_uid, Ordering::Relaxed);
        h.flags.store(0, Ordering::Relaxed);
        h.dir_offset.store(HEADER_SIZE as u64, Ordering::Relaxed);
        h.dir_capacity.store(dir_capacity, Ordering::Relaxed);
        h.dir_len.store(0, Ordering::Relaxed);
        h.heap_start.store(heap_start as u64, Ordering::Relaxed);
        h.heap_next.store(heap_start as u64, Ordering::Relaxed);
        for i in 0..region.dir_capacity {
            region.entry(i).state.store(ENTRY_FREE, Ordering::Relaxed);
        }
        // Publish: pairs with the Acquire load in `open`.
        h.init.store(INIT_READY, Ordering::Release);
        futex::wake_all(&h.init);
        Ok(region)
    }

    /// Opens and validates a region someone else created, waiting until
    /// `deadline` for its creator to finish initialising.
    ///
    /// # Safety
    ///
    /// `base..base+len` must be valid, readable and writable memory that stays
    /// mapped while the returned `Region` or anything obtained from it is used.
    /// Its *contents* may be anything.
    ///
    /// ```
    /// # use shmproc_core::{Identity, Region};
    /// # let len = 1 << 16;
    /// # let region = shmproc_core::__doc::region(len);
    /// # let mem = region.base();
    /// // SAFETY: the same memory, still mapped.
    /// let opened = unsafe { Region::open(mem, len, Some(shmproc_core::Deadline::after(core::time::Duration::from_secs(1)))) }?;
    /// assert_eq!(opened.len(), len);
    /// # Ok::<(), shmproc_core::RegionError>(())
    /// ```
    pub unsafe fn open(base: NonNull<u8>, len: usize, deadline: Option<Deadline>) -> Result<Region, RegionError> {
        if base.as_ptr() as usize % OBJECT_ALIGN != 0 {
            return Err(RegionError::Misaligned);
        }
        if len < HEADER_SIZE {
            return Err(RegionError::TooSmall { len, need: HEADER_SIZE });
        }
        // SAFETY: base is aligned for RegionHeader (checked above) and at least
        // HEADER_SIZE bytes are valid (checked above; caller guarantees validity);
        // RegionHeader is all atomics, valid for any bits.
        let h = unsafe { &*base.as_ptr().cast::<RegionHeader>() };
        loop {
            let state = h.init.load(Ordering::Acquire);
            match state {
                INIT_READY => break,
                INIT_EMPTY | INIT_BUSY => {
                    if deadline.is_some_and(|d| d.has_passed()) {
                        return Err(RegionError::NotReady);
                    }
                    // The creator may have died: sleep in slices so the deadline,
                    // not a missing wake-up, bounds the wait.
                    let slice = Deadline::after(core::time::Duration::from_millis(10));
                    let until = crate::time::earliest(deadline, slice);
                    futex::wait(&h.init, state, Some(until));
                }
                _ => return Err(RegionError::Corrupt("init state")),
            }
        }
        let magic = h.magic.load(Ordering::Relaxed);
        if magic != MAGIC {
            return Err(RegionError::BadMagic(magic));
        }
        let version = h.version.load(Ordering::Relaxed);
        if version != LAYOUT_VERSION {
            return Err(RegionError::VersionMismatch { found: version, expected: LAYOUT_VERSION });
        }
        if h.header_size.load(Ordering::Relaxed) as usize != HEADER_SIZE {
            return Err(RegionError::Corrupt("header size"));
        }
        let total = h.total_size.load(Ordering::Relaxed);
        if total != len as u64 {
            if total > len as u64 {
                return Err(RegionError::TooSmall { len, need: usize::try_from(total).unwrap_or(usize::MAX) });
            }
            return Err(RegionError::Corrupt("total size does not match the mapping"));
        }
        let dir_offset = h.dir_offset.load(Ordering::Relaxed);
        let dir_capacity = h.dir_capacity.load(Ordering::Relaxed);
        if dir_offset != HEADER_SIZE as u64 {
            return Err(RegionError::Corrupt("directory offset"));
        }
        if dir_capacity == 0 || dir_capacity > MAX_DIR_CAPACITY {
            return Err(RegionError::Corrupt("directory capacity"));
        }
        let expected_heap = required_size(dir_capacity, 0).ok_or(RegionError::Corrupt("overflow"))?;
        if expected_heap > len {
            return Err(RegionError::Corrupt("directory extends past the end"));
        }
        let heap_start = h.heap_start.load(Ordering::Relaxed);
        if heap_start != expected_heap as u64 {
            return Err(RegionError::Corrupt("heap start"));
        }
        let region = Region {
            base,
            len,
            dir_offset: HEADER_SIZE,
            dir_capacity: dir_capacity as usize,
            heap_start: expected_heap,
        };
        region.heap_next()?;
        Ok(region)
    }

    /// Base address in this process.
    ///
    /// ```
    /// # use shmproc_core::{Identity, Region};
    /// # let len = 1 << 16;
    /// let mem = shmproc_core::__doc::memory(len); // any 128-aligned memory
    /// // SAFETY: `len` writable bytes, aligned, used for nothing else.
    /// let region = unsafe { Region::create(mem, len, Identity::current_process(), 0, 8) }?;
    /// assert_eq!(region.base(), mem);
    /// # Ok::<(), shmproc_core::RegionError>(())
    /// ```
    #[must_use]
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Length in bytes.
    ///
    /// ```
    /// # use shmproc_core::{Identity, Region};
    /// # let region = shmproc_core::__doc::region(1 << 16);
    /// assert_eq!(region.len(), 1 << 16);
    /// # Ok::<(), shmproc_core::RegionError>(())
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a valid region holds at least its header.
    ///
    /// ```
    /// # use shmproc_core::{Identity, Region};
    /// # let region = shmproc_core::__doc::region(1 << 16);
    /// assert!(!region.is_empty());
    /// # Ok::<(), shmproc_core::RegionError>(())
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        false
    }

    fn header(&self) -> &RegionHeader {
        // SAFETY: validated at create/open: base is aligned and len >= HEADER_SIZE;
        // RegionHeader is all atomics.
        unsafe { &*self.base.as_ptr().cast::<RegionHeader>() }
    }

    fn entry(&self, index: usize) -> &DirEntry {
        debug_assert!(index < self.dir_capacity);
        let off = self.dir_offset + index * ENTRY_SIZE;
        // SAFETY: index < dir_capacity and dir_offset + dir_capacity * ENTRY_SIZE
        // <= heap_start <= len (validated at create/open, kept locally); the
        // offset is a multiple of 8 from a 128-aligned base; DirEntry is atomics.
        unsafe { &*self.base.as_ptr().add(off).cast::<DirEntry>() }
    }

    /// Reads and validates the current heap bump pointer.
    fn heap_next(&self) -> Result<usize, RegionError> {
        let next = self.header().heap_next.load(Ordering::Relaxed);
        if next < self.heap_start as u64 || next > self.len as u64 {
            return Err(RegionError::Corrupt("heap pointer"));
        }
        Ok(next as usize)
    }

    /// The header fields, validated.
    ///
    /// ```
    /// # use shmproc_core::{Identity, Region};
    /// # let region = shmproc_core::__doc::region(1 << 16);
    /// let before = region.info()?.heap_used;
    /// region.alloc_raw(shmproc_core::region::kind::BYTES, b"b", 256, 8, |_| {})?;
    /// assert!(region.info()?.heap_used >= before + 256);
    /// # Ok::<(), shmproc_core::RegionError>(())
    /// ```
    pub fn info(&self) -> Result<HeaderInfo, RegionError> {
        let h = self.header();
        let heap_next = self.heap_next()?;
        Ok(HeaderInfo {
            total_size: self.len,
            creator: Identity {
                id: h.creator_pid.load(Ordering::Relaxed),
                start: h.creator_start.load(Ordering::Relaxed),
                ns: h.creator_ns.load(Ordering::Relaxed),
            },
            creator_uid: h.creator_uid.load(Ordering::Relaxed),
            dir_capacity: self.dir_capacity as u32,
            dir_len: h.dir_len.load(Ordering::Relaxed).min(self.dir_capacity as u32),
            heap_start: self.heap_start,
            heap_used: heap_next - self.heap_start,
        })
    }

    /// Allocates `size` bytes aligned to `align` (a power of two, at most
    /// [`OBJECT_ALIGN`]), lets `init` initialise them, and publishes the object
    /// under `name` in the directory.
    ///
    /// The bytes handed to `init` are not guaranteed to be zero (a peer may have
    /// written there); `init` must write everything it later relies on.
    ///
    /// ```
    /// # use shmproc_core::{Identity, Region};
    /// # let region = shmproc_core::__doc::region(1 << 16);
    /// let obj = region.alloc_raw(shmproc_core::region::kind::BYTES, b"buf", 64, 16, |p| {
    ///     // SAFETY: 64 fresh bytes of the object.
    ///     unsafe { p.as_ptr().write_bytes(0, 64) }
    /// })?;
    /// assert_eq!(obj.size, 64);
    /// # Ok::<(), shmproc_core::RegionError>(())
    /// ```
    pub fn alloc_raw(
        &self,
        kind: u32,
        name: &[u8],
        size: usize,
        align: usize,
        init: impl FnOnce(NonNull<u8>),
    ) -> Result<ObjectInfo, RegionError> {
        if name.len() > NAME_LEN || name.contains(&0) {
            return Err(RegionError::BadName);
        }
        if !align.is_power_of_two() || align > OBJECT_ALIGN {
            return Err(RegionError::Corrupt("alignment"));
        }
        let h = self.header();
        // Claim a directory slot. Each failed CAS means another process made
        // progress, and the counter only grows up to the capacity, so the loop
        // is bounded.
        let index = loop {
            let n = h.dir_len.load(Ordering::Relaxed);
            if n as usize >= self.dir_capacity {
                return Err(RegionError::DirectoryFull);
            }
            if h.dir_len.compare_exchange_weak(n, n + 1, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                break n as usize;
            }
        };
        // Claim heap space (objects are always OBJECT_ALIGN-aligned so that two
        // objects never share a cache line pair).
        let (start, end) = loop {
            let cur = self.heap_next()?;
            let start = align_up(cur, OBJECT_ALIGN).ok_or(RegionError::Corrupt("overflow"))?;
            let end = start.checked_add(size.max(1));
            match end {
                Some(end) if end <= self.len => {
                    if h.heap_next
                        .compare_exchange_weak(cur as u64, end as u64, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                    {
                        break (start, end);
                    }
                }
                _ => {
                    return Err(RegionError::OutOfSpace { requested: size, available: self.len.saturating_sub(start) })
                }
            }
        };
        // SAFETY: start..end lies inside the region (checked against len above)
        // and start is a multiple of OBJECT_ALIGN >= align from an aligned base.
        let ptr = unsafe { NonNull::new_unchecked(self.base.as_ptr().add(start)) };
        init(ptr);
        let e = self.entry(index);
        e.kind.store(kind, Ordering::Relaxed);
        e.offset.store(start as u64, Ordering::Relaxed);
        e.size.store((end - start) as u64, Ordering::Relaxed);
        let mut stored = [0u8; NAME_LEN];
        stored[..name.len()].copy_from_slice(name);
        for (slot, b) in e.name.iter().zip(stored) {
            slot.store(b, Ordering::Relaxed);
        }
        // Publish the object: pairs with the Acquire load in `object`.
        e.state.store(ENTRY_READY, Ordering::Release);
        self.object(index as u32)
    }

    /// Allocates a `T`, initialises it with `init`, and publishes it.
    ///
    /// ```
    /// # use shmproc_core::{Identity, Region};
    /// # let region = shmproc_core::__doc::region(1 << 16);
    /// use shmproc_core::event::RawEvent;
    /// let obj = region.alloc::<RawEvent>(b"ready", |e| e.init())?;
    /// region.get::<RawEvent>(obj.index)?.set();
    /// # Ok::<(), shmproc_core::RegionError>(())
    /// ```
    pub fn alloc<T: RegionObject>(&self, name: &[u8], init: impl FnOnce(&T)) -> Result<ObjectInfo, RegionError> {
        self.alloc_raw(T::KIND, name, size_of::<T>(), align_of::<T>(), |p| {
            // SAFETY: `p` is aligned for T and points at size_of::<T>() bytes of
            // the region; RegionObject guarantees any bit pattern is a valid T.
            init(unsafe { &*p.as_ptr().cast::<T>() })
        })
    }

    /// The directory entry at `index`, validated; `NoSuchObject` if the slot is
    /// not (yet) published.
    ///
    /// ```
    /// # use shmproc_core::{Identity, Region};
    /// # let region = shmproc_core::__doc::region(1 << 16);
    /// let a = region.alloc_raw(shmproc_core::region::kind::BYTES, b"a", 8, 8, |_| {})?;
    /// assert_eq!(region.object(a.index)?, a);
    /// assert!(region.object(7).is_err()); // an unused slot
    /// # Ok::<(), shmproc_core::RegionError>(())
    /// ```
    pub fn object(&self, index: u32) -> Result<ObjectInfo, RegionError> {
        let i = index as usize;
        if i >= self.dir_capacity {
            return Err(RegionError::NoSuchObject);
        }
        let e = self.entry(i);
        match e.state.load(Ordering::Acquire) {
            ENTRY_READY => {}
            ENTRY_FREE => return Err(RegionError::NoSuchObject),
            _ => return Err(RegionError::Corrupt("directory entry state")),
        }
        let kind = e.kind.load(Ordering::Relaxed);
        let offset = e.offset.load(Ordering::Relaxed);
        let size = e.size.load(Ordering::Relaxed);
        if offset < self.heap_start as u64 || offset % OBJECT_ALIGN as u64 != 0 {
            return Err(RegionError::Corrupt("object offset"));
        }
        match offset.checked_add(size) {
            Some(end) if end <= self.len as u64 && size > 0 => {}
            _ => return Err(RegionError::Corrupt("object size")),
        }
        let mut name = [0u8; NAME_LEN];
        for (dst, src) in name.iter_mut().zip(e.name.iter()) {
            *dst = src.load(Ordering::Relaxed);
        }
        let name_len = name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN) as u8;
        Ok(ObjectInfo { index, kind, offset: offset as usize, size: size as usize, name, name_len })
    }

    /// Every published object, in directory order. A corrupt entry is yielded as
    /// an error and the scan goes on; the scan is bounded by the capacity.
    ///
    /// ```
    /// # use shmproc_core::{Identity, Region};
    /// # let region = shmproc_core::__doc::region(1 << 16);
    /// for name in [&b"one"[..], b"two"] {
    ///     region.alloc_raw(shmproc_core::region::kind::BYTES, name, 8, 8, |_| {})?;
    /// }
    /// let names: Vec<Vec<u8>> = region.objects().map(|o| o.map(|o| o.name().to_vec())).collect::<Result<_, _>>()?;
    /// assert_eq!(names, [b"one".to_vec(), b"two".to_vec()]);
    /// # Ok::<(), shmproc_core::RegionError>(())
    /// ```
    pub fn objects(&self) -> impl Iterator<Item = Result<ObjectInfo, RegionError>> + '_ {
        let n = self.header().dir_len.load(Ordering::Relaxed).min(self.dir_capacity as u32);
        (0..n).filter_map(move |i| match self.object(i) {
            Err(RegionError::NoSuchObject) => None,
            other => Some(other),
        })
    }

    /// The first published object called `name`.
    ///
    /// ```
    /// # use shmproc_core::{Identity, Region};
    /// # let region = shmproc_core::__doc::region(1 << 16);
    /// region.alloc_raw(shmproc_core::region::kind::BYTES, b"cfg", 8, 8, |_| {})?;
    /// assert!(region.find(b"cfg").is_ok());
    /// assert!(region.find(b"nope").is_err());
    /// # Ok::<(), shmproc_core::RegionError>(())
    /// ```
    pub fn find(&self, name: &[u8]) -> Result<ObjectInfo, RegionError> {
        for info in self.objects() {
            let info = info?;
            if info.name() == name {
                return Ok(info);
            }
        }
        Err(RegionError::NoSuchObject)
    }

    /// A typed reference to the object described by `info`, after checking its
    /// kind and size (again: `info` may be stale, the directory is re-read).
    ///
    /// ```
    /// # use shmproc_core::{Identity, Region};
    /// # let region = shmproc_core::__doc::region(1 << 16);
    /// use shmproc_core::semaphore::RawSemaphore;
    /// let obj = region.alloc::<RawSemaphore>(b"sem", |s| s.init(2, 2))?;
    /// assert_eq!(region.get::<RawSemaphore>(obj.index)?.value(), 2);
    /// // The wrong type for that slot is an error, not a reinterpretation.
    /// assert!(region.get::<shmproc_core::event::RawEvent>(obj.index).is_err());
    /// # Ok::<(), shmproc_core::RegionError>(())
    /// ```
    pub fn get<T: RegionObject>(&self, index: u32) -> Result<&T, RegionError> {
        let info = self.object(index)?;
        if info.kind != T::KIND || info.size < size_of::<T>() {
            return Err(RegionError::WrongKind { expected: T::KIND, found: info.kind });
        }
        // SAFETY: offset..offset+size is inside the mapping and size >=
        // size_of::<T>() (validated by `object` and above); offset is a multiple
        // of OBJECT_ALIGN >= align_of::<T>() (RegionObject contract); any bit
        // pattern is a valid T.
        Ok(unsafe { &*self.base.as_ptr().add(info.offset).cast::<T>() })
    }

    /// The raw bytes of object `index` as a pointer and length, validated to lie
    /// inside the region, for variable-sized objects (rings, arrays).
    ///
    /// ```
    /// # use shmproc_core::{Identity, Region};
    /// # let region = shmproc_core::__doc::region(1 << 16);
    /// use shmproc_core::region::kind;
    /// let obj = region.alloc_raw(kind::BYTES, b"bytes", 48, 8, |_| {})?;
    /// let (_ptr, size) = region.raw(obj.index, kind::BYTES)?;
    /// assert_eq!(size, 48);
    /// assert!(region.raw(obj.index, kind::MUTEX).is_err());
    /// # Ok::<(), shmproc_core::RegionError>(())
    /// ```
    pub fn raw(&self, index: u32, kind: u32) -> Result<(NonNull<u8>, usize), RegionError> {
        let info = self.object(index)?;
        if info.kind != kind {
            return Err(RegionError::WrongKind { expected: kind, found: info.kind });
        }
        // SAFETY: offset < len (validated by `object`).
        let p = unsafe { NonNull::new_unchecked(self.base.as_ptr().add(info.offset)) };
        Ok((p, info.size))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[repr(C, align(128))]
    struct Buf([u8; 8192]);

    struct Counter(AtomicU64);
    // SAFETY: a single atomic, valid for any bits.
    unsafe impl RegionObject for Counter {
        const KIND: u32 = 99;
    }

    fn fresh(buf: &mut Buf) -> Region {
        let p = NonNull::new(buf.0.as_mut_ptr()).unwrap();
        // SAFETY: the buffer is valid, aligned and outlives the region in each test.
        unsafe { Region::create(p, buf.0.len(), Identity { id: 1, start: 2, ns: 3 }, 0, 8) }.unwrap()
    }

    fn reopen(buf: &mut Buf, len: usize) -> Result<Region, RegionError> {
        let p = NonNull::new(buf.0.as_mut_ptr()).unwrap();
        // SAFETY: the buffer is valid, aligned and outlives the region.
        unsafe { Region::open(p, len, Some(Deadline::now())) }
    }

    #[test]
    fn create_alloc_open_find() {
        let mut buf = Buf([0; 8192]);
        let r = fresh(&mut buf);
        let info = r.alloc::<Counter>(b"hits", |c| c.0.store(7, Ordering::Relaxed)).unwrap();
        assert_eq!(info.name(), b"hits");
        assert_eq!(info.offset % OBJECT_ALIGN, 0);
        let r2 = reopen(&mut buf, 8192).unwrap();
        let found = r2.find(b"hits").unwrap();
        let c: &Counter = r2.get(found.index).unwrap();
        assert_eq!(c.0.load(Ordering::Relaxed), 7);
        assert!(matches!(r2.get::<Counter>(5), Err(RegionError::NoSuchObject)));
        let info = r2.info().unwrap();
        assert_eq!(info.creator, Identity { id: 1, start: 2, ns: 3 });
        assert_eq!(info.dir_len, 1);
    }

    #[test]
    fn rejects_bad_headers() {
        let mut buf = Buf([0; 8192]);
        assert_eq!(reopen(&mut buf, 8192).unwrap_err(), RegionError::NotReady);
        assert!(matches!(reopen(&mut buf, 10), Err(RegionError::TooSmall { .. })));
        fresh(&mut buf);
        buf.0[0] ^= 1;
        assert!(matches!(reopen(&mut buf, 8192), Err(RegionError::BadMagic(_))));
        buf.0[0] ^= 1;
        buf.0[8] = 9;
        assert_eq!(
            reopen(&mut buf, 8192).unwrap_err(),
            RegionError::VersionMismatch { found: 9, expected: LAYOUT_VERSION }
        );
        buf.0[8] = LAYOUT_VERSION as u8;
        assert!(matches!(reopen(&mut buf, 4096), Err(RegionError::TooSmall { .. })));
        assert!(reopen(&mut buf, 8192).is_ok());
    }

    #[test]
    fn corrupt_entries_are_errors() {
        let mut buf = Buf([0; 8192]);
        let r = fresh(&mut buf);
        let info = r.alloc::<Counter>(b"x", |_| {}).unwrap();
        // Point the entry's offset past the end.
        let off = HEADER_SIZE + 8;
        buf.0[off..off + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let r = reopen(&mut buf, 8192).unwrap();
        assert!(matches!(r.get::<Counter>(info.index), Err(RegionError::Corrupt(_))));
        assert_eq!(r.objects().count(), 1);
    }

    #[test]
    fn full_directory_and_heap() {
        let mut buf = Buf([0; 8192]);
        let r = fresh(&mut buf);
        assert!(matches!(r.alloc_raw(kind::BYTES, b"big", 1 << 20, 8, |_| {}), Err(RegionError::OutOfSpace { .. })));
        for i in 0..7u8 {
            r.alloc::<Counter>(&[b'a' + i], |_| {}).unwrap();
        }
        assert_eq!(r.alloc::<Counter>(b"last", |_| {}).unwrap_err(), RegionError::DirectoryFull);
        assert_eq!(r.alloc::<Counter>(&[b'x'; 41], |_| {}).unwrap_err(), RegionError::BadName);
    }
}
