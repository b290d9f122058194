//! `SharedMap<K, V>` and `SharedList<T>`: a dict and a list in shared memory,
//! the role of Python's `Manager().dict()` / `Manager().list()` without a
//! server process.
//!
//! Both are bounded (a clear [`SharedError::Full`] when out of room), hold
//! rkyv-serialised entries in fixed-size slots, and are protected by one
//! robust lock, so they are safe under concurrent use by many processes.
//!
//! A map's values may be of any size: a value larger than its slot is kept
//! out of line, in a block of shared memory of its own (a range of the
//! segment's file, as a queue's large messages are) that the slot names, and
//! the block is freed when the entry is replaced or removed. Keys, and a
//! list's elements, must fit their slots ([`SharedError::TooLarge`]).
//!
//! # Consistency after a holder's death
//!
//! Every change becomes visible through a single atomic store made after the
//! new bytes are written: a map entry is written to a free slot and then
//! published, the replaced entry retired afterwards; a list element is written
//! to the inactive half of a double-buffered slot and then switched to. A
//! process killed mid-change therefore leaves either the old or the new state,
//! plus at most a duplicate map entry, which the next user (told by the robust
//! lock that the holder died) resolves by keeping the newer version. Bytes
//! that fail validation are reported as [`SharedError::Corrupt`].
//!
//! Entries are compared and copied out through
//! `shmproc_core::peer_bytes::PeerBytes` (atomic loads), never through a
//! `&[u8]` over the slot: a peer that writes without the lock makes a
//! reader see garbage (reported as `Corrupt`), not a data race.
//!
//! ```
//! let scores = shmproc::SharedMap::<String, u32>::with_capacity(16)?;
//! let s = scores.clone();
//! let mut child = shmproc::Process::spawn(move || {
//!     s.insert(&"alice".to_string(), &3).unwrap();
//! })?;
//! child.join()?;
//! assert_eq!(scores.get(&"alice".to_string())?, Some(3));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use shmproc_core::owner::Owner;
use shmproc_core::peer_bytes::PeerBytes;
use shmproc_core::raw_mutex::{Acquired, RawMutex};
use shmproc_core::region::{align_up, kind, RegionObject};

use crate::bulk::{copy_block, with_message, BlockMut, Window, KIND_BLOCK, KIND_INLINE};
use crate::channel_error::Failure;
use crate::error::Error;
use crate::held::{Refused, Site};
use crate::message::{decode_peer, encode, Message};
use crate::object::Object;
use crate::segment::Segment;
use crate::thread_id;

/// Why a shared map or list operation failed.
///
/// ```
/// use shmproc::{SharedError, SharedList};
/// let l = SharedList::<u8>::with_capacity(1)?;
/// l.push(&1)?;
/// assert_eq!(l.push(&2), Err(SharedError::Full));
/// assert_eq!(l.get(5), Err(SharedError::OutOfBounds));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedError {
    /// No free slot (map) or the list is at capacity.
    Full,
    /// A serialised key (or list element) is larger than its slot.
    TooLarge,
    /// No shared memory for an out-of-line value.
    NoSpace,
    /// A key or value could not be serialised.
    Serialize(String),
    /// Stored bytes failed validation.
    Corrupt(String),
    /// The index is past the end (list).
    OutOfBounds,
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SharedError::Full => f.write_str("shared container is full"),
            SharedError::TooLarge => f.write_str("serialised entry larger than its slot"),
            SharedError::NoSpace => f.write_str("no shared memory for an out-of-line value"),
            SharedError::Serialize(e) => write!(f, "serialising failed: {e}"),
            SharedError::Corrupt(e) => write!(f, "corrupt shared container: {e}"),
            SharedError::OutOfBounds => f.write_str("index out of bounds"),
        }
    }
}

impl std::error::Error for SharedError {}

const EMPTY: u32 = 0;
const LIVE: u32 = 1;
const TOMBSTONE: u32 = 2;
const SLOT_HEAD: usize = 32;

#[repr(C, align(128))]
struct Head {
    lock: RawMutex,
    slots: AtomicU64,
    key_size: AtomicU64,
    val_size: AtomicU64,
    len: AtomicU64,
    version: AtomicU64,
    /// The bump counter of out-of-line values (see `bulk.rs`).
    bulk_next: AtomicU64,
}

// SAFETY: atomics only (RawMutex too), valid for any bits; align 128.
unsafe impl RegionObject for Head {
    const KIND: u32 = kind::BYTES;
}

const HEAD_SPAN: usize = std::mem::size_of::<Head>();

/// The head of a [`SharedMap`]'s object (its directory kind).
#[repr(transparent)]
struct MapHead(Head);

// SAFETY: a Head (atomics only, valid for any bits, align 128), transparent.
unsafe impl RegionObject for MapHead {
    const KIND: u32 = kind::SHARED_MAP;
}

/// The head of a [`SharedList`]'s object (its directory kind).
#[repr(transparent)]
struct ListHead(Head);

// SAFETY: as for MapHead.
unsafe impl RegionObject for ListHead {
    const KIND: u32 = kind::SHARED_LIST;
}

impl AsRef<Head> for MapHead {
    fn as_ref(&self) -> &Head {
        &self.0
    }
}

impl AsRef<Head> for ListHead {
    fn as_ref(&self) -> &Head {
        &self.0
    }
}

#[repr(C)]
struct SlotHead {
    state: AtomicU32,
    key_len: AtomicU32,
    val_len: AtomicU32,
    /// `bulk::KIND_INLINE`, or `KIND_BLOCK`: the value bytes are a block's
    /// descriptor.
    val_kind: AtomicU32,
    version: AtomicU64,
    _pad2: AtomicU64,
}

fn pad16(n: usize) -> usize {
    align_up(n, 16).unwrap_or(usize::MAX)
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The raw table: validated geometry plus the object keeping it mapped.
#[derive(Clone)]
struct Table {
    obj: Object,
    slots: usize,
    key_size: usize,
    val_size: usize,
    stride: usize,
    window: Option<Window>,
}

/// A map value's bytes ready to be written: in place, or the descriptor of an
/// out-of-line block that is freed unless the write is published.
struct Value {
    bytes: Vec<u8>,
    block: Option<BlockMut>,
}

impl Value {
    fn kind(&self) -> u8 {
        if self.block.is_some() {
            KIND_BLOCK
        } else {
            KIND_INLINE
        }
    }

    /// The entry was published: the block belongs to it now.
    fn published(mut self) {
        if let Some(b) = self.block.take() {
            b.published();
        }
    }
}

impl Drop for Value {
    fn drop(&mut self) {
        // Not published (an error, a full map): the block goes.
        if let Some(b) = self.block.take() {
            b.discard();
        }
    }
}

struct Locked<'a> {
    t: &'a Table,
    me: Owner,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.t.site().unlock(&self.me);
    }
}

impl Table {
    /// A new table whose object has the directory kind of `H`.
    fn create<H: RegionObject + AsRef<Head>>(
        seg: Option<&Segment>,
        name: &str,
        slots: usize,
        key_size: usize,
        val_size: usize,
    ) -> Result<Table, Error> {
        let stride = pad16(SLOT_HEAD + pad16(key_size) + val_size);
        let size = slots
            .checked_mul(stride)
            .and_then(|b| b.checked_add(HEAD_SPAN))
            .ok_or(Error::Layout("shared container too large"))?;
        let obj = Object::create_sized(seg, name, size, |h: &H, p| {
            let h = h.as_ref();
            h.lock.init();
            h.slots.store(slots as u64, Ordering::Relaxed);
            h.key_size.store(key_size as u64, Ordering::Relaxed);
            h.val_size.store(val_size as u64, Ordering::Relaxed);
            h.len.store(0, Ordering::Relaxed);
            h.version.store(0, Ordering::Relaxed);
            h.bulk_next.store(0, Ordering::Relaxed);
            for i in 0..slots {
                // SAFETY: `p` has `size` bytes: the head, then `slots` slots
                // of `stride` (a multiple of 16) bytes; SlotHead is atomics
                // only, valid for any bits.
                let s = unsafe { &*p.as_ptr().add(HEAD_SPAN + i * stride).cast::<SlotHead>() };
                s.state.store(EMPTY, Ordering::Relaxed);
                s.key_len.store(0, Ordering::Relaxed);
                s.val_len.store(0, Ordering::Relaxed);
                s.val_kind.store(0, Ordering::Relaxed);
                s.version.store(0, Ordering::Relaxed);
            }
        })?;
        Table::validate(obj)
    }

    fn validate(obj: Object) -> Result<Table, Error> {
        let h = obj.head::<Head>();
        let slots = usize::try_from(h.slots.load(Ordering::Relaxed)).map_err(|_| Error::Layout("slots"))?;
        let key_size = usize::try_from(h.key_size.load(Ordering::Relaxed)).map_err(|_| Error::Layout("key size"))?;
        let val_size = usize::try_from(h.val_size.load(Ordering::Relaxed)).map_err(|_| Error::Layout("value size"))?;
        let stride = SLOT_HEAD
            .checked_add(pad16(key_size))
            .and_then(|n| n.checked_add(val_size))
            .map(pad16)
            .ok_or(Error::Layout("slot size"))?;
        let need = slots.checked_mul(stride).and_then(|b| b.checked_add(HEAD_SPAN)).ok_or(Error::Layout("size"))?;
        if slots == 0 || need > obj.size() {
            return Err(Error::Layout("shared container geometry does not fit its object"));
        }
        let window = Window::of(&obj);
        Ok(Table { obj, slots, key_size, val_size, stride, window })
    }

    fn head(&self) -> &Head {
        self.obj.head::<Head>()
    }

    fn slot(&self, i: usize) -> &SlotHead {
        let off = HEAD_SPAN + (i % self.slots) * self.stride;
        // SAFETY: i % slots < slots and HEAD_SPAN + slots * stride <= size
        // (validated); slots are 16-aligned; SlotHead is atomics.
        unsafe { &*self.obj.at(off).as_ptr().cast::<SlotHead>() }
    }

    fn key_ptr(&self, i: usize) -> *mut u8 {
        self.obj.at(HEAD_SPAN + (i % self.slots) * self.stride + SLOT_HEAD).as_ptr()
    }

    fn val_ptr(&self, i: usize) -> *mut u8 {
        self.obj.at(HEAD_SPAN + (i % self.slots) * self.stride + SLOT_HEAD + pad16(self.key_size)).as_ptr()
    }

    /// Bytes of slot `i`'s key and value, lengths validated against the slot,
    /// to be compared or copied out through atomic loads
    /// ([`PeerBytes`]): a peer that breaks the protocol (writing without the
    /// lock, or a list writer racing a reader) may write them meanwhile, and
    /// a `&[u8]` over bytes being written would be a data race.
    fn entry(&self, i: usize) -> Result<(PeerBytes<'_>, PeerBytes<'_>), SharedError> {
        let s = self.slot(i);
        let kl = s.key_len.load(Ordering::Relaxed) as usize;
        let vl = s.val_len.load(Ordering::Relaxed) as usize;
        if kl > self.key_size || vl > self.val_size {
            return Err(SharedError::Corrupt("entry length".into()));
        }
        let at = |p: *mut u8| NonNull::new(p).ok_or_else(|| SharedError::Corrupt("null slot".into()));
        let (k, v) = (at(self.key_ptr(i))?, at(self.val_ptr(i))?);
        // SAFETY: kl <= key_size and vl <= val_size bytes lie inside slot i of
        // the mapping, which lives as long as `self`; they are only read
        // through `PeerBytes`' atomic loads.
        unsafe { Ok((PeerBytes::new(k, kl), PeerBytes::new(v, vl))) }
    }

    /// Slot `i`'s value, read with `read` (in place, or from its block).
    fn with_value<R>(&self, i: usize, read: impl FnOnce(PeerBytes<'_>) -> R) -> Result<R, SharedError> {
        let kind = self.slot(i).val_kind.load(Ordering::Relaxed) as u8;
        let (r, _) = with_message(self.window, kind, self.entry(i)?.1, |b| (read(b), false))
            .map_err(|e| SharedError::Corrupt(format!("{e:?}")))?;
        Ok(r)
    }

    /// Frees slot `i`'s out-of-line value, if it has one: its entry was just
    /// retired (idempotent; garbage is ignored).
    fn free_value(&self, i: usize) {
        if self.slot(i).val_kind.load(Ordering::Relaxed) == u32::from(KIND_BLOCK) {
            if let (Some(w), Ok((_, v))) = (self.window, self.entry(i)) {
                w.free_raw(v);
            }
        }
    }

    /// Retires the entry in slot `i` (a tombstone), then frees its value's
    /// block: a process killed between the two leaks that block, never
    /// leaves a live entry without its value.
    fn retire(&self, i: usize) {
        self.slot(i).state.store(TOMBSTONE, Ordering::Release);
        self.free_value(i);
    }

    fn write(&self, i: usize, key: &[u8], val: &[u8], kind: u8) {
        debug_assert!(key.len() <= self.key_size && val.len() <= self.val_size);
        // SAFETY: lengths fit the slot (checked by callers); the slot is not
        // LIVE (or is being rewritten under the lock by us only).
        unsafe {
            std::ptr::copy_nonoverlapping(key.as_ptr(), self.key_ptr(i), key.len());
            std::ptr::copy_nonoverlapping(val.as_ptr(), self.val_ptr(i), val.len());
        }
        let s = self.slot(i);
        s.key_len.store(key.len() as u32, Ordering::Relaxed);
        s.val_len.store(val.len() as u32, Ordering::Relaxed);
        s.val_kind.store(u32::from(kind), Ordering::Relaxed);
    }

    fn site(&self) -> Site<'_> {
        Site { raw: &self.head().lock, seg: self.obj.segment() }
    }

    /// Takes the container's lock. A dead holder's lock, and a lock word
    /// forged by a peer to name this thread (which this thread's private
    /// memory says it does not hold), are taken over and `recover` repairs
    /// the table.
    ///
    /// # Panics
    ///
    /// If this thread already holds the lock: a callback (`update`'s closure)
    /// that re-enters the same container, a bug in the caller judged from
    /// private memory, never from peer data.
    fn lock(&self, recover: impl FnOnce(&Table)) -> Locked<'_> {
        let me = thread_id::owner();
        match self.site().lock(&me, None) {
            Ok(Acquired::Locked) => {}
            Ok(Acquired::OwnerDied) => recover(self),
            Err(Refused::Reentered) => panic!("shared container locked twice by one thread"),
            // Without a deadline the site waits until it gets the lock.
            Err(Refused::Timeout | Refused::WouldBlock) => return self.lock(recover),
        }
        Locked { t: self, me }
    }
}

// ------------------------------------------------------------------ map ----

/// A bounded hash map in shared memory (Python's `Manager().dict()`). Keys
/// are compared by their rkyv-archived bytes.
///
/// ```
/// let m = shmproc::SharedMap::<String, u32>::with_capacity(64)?;
/// let m2 = m.clone();
/// let mut child = shmproc::Process::spawn(move || {
///     m2.insert(&"answer".to_string(), &42).unwrap();
/// })?;
/// child.join()?;
/// assert_eq!(m.get(&"answer".to_string())?, Some(42));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SharedMap<K, V> {
    t: Table,
    _kv: PhantomData<fn(K) -> V>,
}

impl<K, V> Clone for SharedMap<K, V> {
    fn clone(&self) -> Self {
        SharedMap { t: self.t.clone(), _kv: PhantomData }
    }
}

impl<K, V> fmt::Debug for SharedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMap").field("slots", &self.t.slots).finish_non_exhaustive()
    }
}

/// Default serialised key and value sizes.
///
/// ```
/// let m = shmproc::SharedMap::<String, String>::with_capacity(4)?;
/// let long = "x".repeat(shmproc::shared_map::DEFAULT_ENTRY_SIZE * 2);
/// m.insert(&"value".to_string(), &long)?; // a value: any size (out of line)
/// assert!(m.insert(&long, &"key".to_string()).is_err()); // a key must fit its slot
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const DEFAULT_ENTRY_SIZE: usize = 256;

fn map_recover(t: &Table) {
    // Resolve duplicates a dead writer may have left (keep the newest version)
    // and recount.
    let mut live: Vec<(usize, Vec<u8>, u64)> = Vec::new();
    for i in 0..t.slots {
        let s = t.slot(i);
        if s.state.load(Ordering::Relaxed) != LIVE {
            continue;
        }
        match t.entry(i) {
            Ok((k, _)) => {
                let mut key = vec![0; k.len()];
                k.copy_to(&mut key);
                live.push((i, key, s.version.load(Ordering::Relaxed)));
            }
            Err(_) => t.retire(i),
        }
    }
    live.sort_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)));
    let mut count = 0u64;
    for w in 0..live.len() {
        if w > 0 && live[w].1 == live[w - 1].1 {
            t.retire(live[w].0);
        } else {
            count += 1;
        }
    }
    t.head().len.store(count, Ordering::Relaxed);
}

impl<K: Message, V: Message> SharedMap<K, V> {
    /// A map for up to `capacity` entries with keys and values of up to
    /// [`DEFAULT_ENTRY_SIZE`] serialised bytes each, in a segment of its own.
    ///
    /// ```
    /// let m = shmproc::SharedMap::<u32, u32>::with_capacity(16)?;
    /// assert_eq!(m.capacity(), 16);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_capacity(capacity: usize) -> Result<SharedMap<K, V>, Error> {
        SharedMap::with_sizes(capacity, DEFAULT_ENTRY_SIZE, DEFAULT_ENTRY_SIZE)
    }

    /// A map with explicit serialised key size limit and in-slot value size
    /// (larger values are kept out of line).
    ///
    /// ```
    /// let m = shmproc::SharedMap::<u64, Vec<u8>>::with_sizes(8, 16, 4096)?;
    /// m.insert(&1, &vec![0; 3000])?; // in its slot
    /// m.insert(&2, &vec![0; 1 << 20])?; // out of line
    /// assert_eq!(m.get(&1)?.map(|v| v.len()), Some(3000));
    /// assert_eq!(m.get(&2)?.map(|v| v.len()), Some(1 << 20));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_sizes(capacity: usize, key_size: usize, value_size: usize) -> Result<SharedMap<K, V>, Error> {
        let slots = capacity.max(1).checked_mul(2).ok_or(Error::Layout("capacity"))?;
        // A slot can always hold an out-of-line value's descriptor.
        let value_size = value_size.max(crate::bulk::DESCRIPTOR_LEN);
        Ok(SharedMap { t: Table::create::<MapHead>(None, "", slots, key_size, value_size)?, _kv: PhantomData })
    }

    /// A map named `name` in `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 20)?;
    /// let m = shmproc::SharedMap::<u32, u32>::new_in(&seg, "counts", 32)?;
    /// m.insert(&1, &1)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new_in(seg: &Segment, name: &str, capacity: usize) -> Result<SharedMap<K, V>, Error> {
        let slots = capacity.max(1) * 2;
        Ok(SharedMap {
            t: Table::create::<MapHead>(Some(seg), name, slots, DEFAULT_ENTRY_SIZE, DEFAULT_ENTRY_SIZE)?,
            _kv: PhantomData,
        })
    }

    /// Opens the map named `name` in `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 20)?;
    /// shmproc::SharedMap::<u32, u32>::new_in(&seg, "counts", 32)?.insert(&1, &10)?;
    /// let m = shmproc::SharedMap::<u32, u32>::open_in(&seg, "counts")?;
    /// assert_eq!(m.get(&1)?, Some(10));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_in(seg: &Segment, name: &str) -> Result<SharedMap<K, V>, Error> {
        Ok(SharedMap { t: Table::validate(Object::open_as::<MapHead>(seg, name)?)?, _kv: PhantomData })
    }

    fn encode_key(&self, k: &K) -> Result<Vec<u8>, SharedError> {
        let b = encode(k).map_err(|e| SharedError::Serialize(e.to_string()))?;
        if b.len() > self.t.key_size {
            return Err(SharedError::TooLarge);
        }
        Ok(b.to_vec())
    }

    /// The slot holding `key`, if any, and the first free slot on its probe
    /// path. Probing visits each slot at most once.
    fn find(&self, key: &[u8]) -> Result<(Option<usize>, Option<usize>), SharedError> {
        let n = self.t.slots;
        let start = (fnv(key) % n as u64) as usize;
        let mut free = None;
        for step in 0..n {
            let i = (start + step) % n;
            match self.t.slot(i).state.load(Ordering::Acquire) {
                EMPTY => return Ok((None, free.or(Some(i)))),
                LIVE => {
                    if self.t.entry(i)?.0.equals(key) {
                        return Ok((Some(i), free));
                    }
                }
                _ => {
                    if free.is_none() {
                        free = Some(i);
                    }
                }
            }
        }
        Ok((None, free))
    }

    fn value_at(&self, i: usize) -> Result<V, SharedError> {
        self.t.with_value(i, decode_peer::<V>)?.map_err(|e| SharedError::Corrupt(e.to_string()))
    }

    /// Inserts or replaces; returns the previous value.
    ///
    /// ```
    /// let m = shmproc::SharedMap::<u8, u8>::with_capacity(4)?;
    /// assert_eq!(m.insert(&1, &10)?, None);
    /// assert_eq!(m.insert(&1, &11)?, Some(10)); // the old value
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn insert(&self, key: &K, value: &V) -> Result<Option<V>, SharedError> {
        let vb = self.encode_value(value)?;
        self.modify(key, |_| Ok(Some(vb)))
    }

    /// The value for `key`.
    ///
    /// ```
    /// let m = shmproc::SharedMap::<u8, String>::with_capacity(4)?;
    /// m.insert(&1, &"one".to_string())?;
    /// assert_eq!(m.get(&1)?.as_deref(), Some("one"));
    /// assert_eq!(m.get(&2)?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self, key: &K) -> Result<Option<V>, SharedError> {
        let k = self.encode_key(key)?;
        let _g = self.t.lock(map_recover);
        match self.find(&k)?.0 {
            Some(i) => self.value_at(i).map(Some),
            None => Ok(None),
        }
    }

    /// Whether `key` is present.
    ///
    /// ```
    /// let m = shmproc::SharedMap::<u8, u8>::with_capacity(4)?;
    /// m.insert(&3, &0)?;
    /// assert!(m.contains_key(&3)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn contains_key(&self, key: &K) -> Result<bool, SharedError> {
        let k = self.encode_key(key)?;
        let _g = self.t.lock(map_recover);
        Ok(self.find(&k)?.0.is_some())
    }

    /// Removes `key`; returns its value.
    ///
    /// ```
    /// let m = shmproc::SharedMap::<u8, u8>::with_capacity(4)?;
    /// m.insert(&3, &9)?;
    /// assert_eq!(m.remove(&3)?, Some(9));
    /// assert!(m.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove(&self, key: &K) -> Result<Option<V>, SharedError> {
        self.modify(key, |_| Ok(None))
    }

    fn encode_value(&self, v: &V) -> Result<Value, SharedError> {
        let b = encode(v).map_err(|e| SharedError::Serialize(e.to_string()))?;
        if b.len() <= self.t.val_size {
            return Ok(Value { bytes: b.to_vec(), block: None });
        }
        // Out of line: the slot holds the block's descriptor.
        let block = copy_block(self.t.window, &self.t.head().bulk_next, &b).map_err(|e| match e {
            Failure::NoSpace { .. } => SharedError::NoSpace,
            e => SharedError::Corrupt(format!("{e:?}")),
        })?;
        Ok(Value { bytes: block.descriptor().encode().to_vec(), block: Some(block) })
    }

    /// Atomically replaces the value of `key` by `f(old)` (`None` removes it,
    /// or leaves it absent); returns the old value. Across processes this is
    /// the way to do `d[k] += 1`.
    ///
    /// # Panics
    ///
    /// If `f` uses this same map (it runs under the map's lock, which is not
    /// re-entrant).
    ///
    /// ```
    /// let m = shmproc::SharedMap::<String, u64>::with_capacity(8)?;
    /// let word = "hi".to_string();
    /// for _ in 0..3 {
    ///     // Read-modify-write under the map's lock: no update is lost.
    ///     m.update(&word, |n| Some(n.copied().unwrap_or(0) + 1))?;
    /// }
    /// assert_eq!(m.get(&word)?, Some(3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn update(&self, key: &K, f: impl FnOnce(Option<&V>) -> Option<V>) -> Result<Option<V>, SharedError> {
        self.modify(key, |old| f(old).map(|v| self.encode_value(&v)).transpose())
    }

    /// The one mutation path: under the lock, `f` maps the old value to the
    /// new value's bytes (`None`: absent).
    fn modify(
        &self,
        key: &K,
        f: impl FnOnce(Option<&V>) -> Result<Option<Value>, SharedError>,
    ) -> Result<Option<V>, SharedError> {
        let k = self.encode_key(key)?;
        let _g = self.t.lock(map_recover);
        let (found, free) = self.find(&k)?;
        let old = match found {
            Some(i) => Some(self.value_at(i)?),
            None => None,
        };
        let new = f(old.as_ref())?;
        let head = self.t.head();
        match new {
            Some(vb) => {
                let target = match (free, found) {
                    (Some(i), _) => i,
                    (None, Some(i)) => {
                        // No free slot before the old entry on the probe path:
                        // take the first one after it. Everything between stays
                        // LIVE and the old slot becomes a tombstone, so lookups
                        // still reach the new entry.
                        let n = self.t.slots;
                        (1..n)
                            .map(|d| (i + d) % n)
                            .find(|&j| self.t.slot(j).state.load(Ordering::Relaxed) != LIVE)
                            .ok_or(SharedError::Full)?
                    }
                    (None, None) => return Err(SharedError::Full),
                };
                if found.is_none() && head.len.load(Ordering::Relaxed) as usize >= self.t.slots / 2 {
                    return Err(SharedError::Full);
                }
                let version = head.version.load(Ordering::Relaxed).wrapping_add(1);
                head.version.store(version, Ordering::Relaxed);
                self.t.write(target, &k, &vb.bytes, vb.kind());
                let s = self.t.slot(target);
                s.version.store(version, Ordering::Relaxed);
                // Publish the new entry, then retire the old one.
                s.state.store(LIVE, Ordering::Release);
                vb.published();
                match found {
                    Some(i) => self.t.retire(i),
                    None => {
                        head.len.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            None => {
                if let Some(i) = found {
                    self.t.retire(i);
                    head.len.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        Ok(old)
    }

    /// Number of entries.
    ///
    /// ```
    /// let m = shmproc::SharedMap::<u8, u8>::with_capacity(4)?;
    /// m.insert(&1, &1)?;
    /// assert_eq!(m.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        let _g = self.t.lock(map_recover);
        self.t.head().len.load(Ordering::Relaxed) as usize
    }

    /// Whether the map is empty.
    ///
    /// ```
    /// assert!(shmproc::SharedMap::<u8, u8>::with_capacity(4)?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries the map can hold.
    ///
    /// ```
    /// assert_eq!(shmproc::SharedMap::<u8, u8>::with_capacity(10)?.capacity(), 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.t.slots / 2
    }

    /// Removes every entry.
    ///
    /// ```
    /// let m = shmproc::SharedMap::<u8, u8>::with_capacity(4)?;
    /// m.insert(&1, &1)?;
    /// m.clear();
    /// assert!(m.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clear(&self) {
        let _g = self.t.lock(map_recover);
        for i in 0..self.t.slots {
            let s = self.t.slot(i);
            if s.state.load(Ordering::Relaxed) == LIVE {
                s.state.store(EMPTY, Ordering::Release);
                self.t.free_value(i);
            } else {
                s.state.store(EMPTY, Ordering::Release);
            }
        }
        self.t.head().len.store(0, Ordering::Relaxed);
    }

    /// A consistent copy of every entry (taken under the lock).
    ///
    /// ```
    /// let m = shmproc::SharedMap::<u8, u8>::with_capacity(4)?;
    /// m.insert(&2, &20)?;
    /// assert_eq!(m.snapshot()?, [(2, 20)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn snapshot(&self) -> Result<Vec<(K, V)>, SharedError> {
        let _g = self.t.lock(map_recover);
        let mut out = Vec::new();
        for i in 0..self.t.slots {
            if self.t.slot(i).state.load(Ordering::Acquire) != LIVE {
                continue;
            }
            let k = decode_peer::<K>(self.t.entry(i)?.0).map_err(|e| SharedError::Corrupt(e.to_string()))?;
            let v = self.value_at(i)?;
            out.push((k, v));
        }
        Ok(out)
    }

    /// Iterates over a [`snapshot`](SharedMap::snapshot).
    ///
    /// ```
    /// let m = shmproc::SharedMap::<u8, u8>::with_capacity(4)?;
    /// m.insert(&1, &2)?;
    /// for (k, v) in m.iter()? {
    ///     assert_eq!((k, v), (1, 2));
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn iter(&self) -> Result<std::vec::IntoIter<(K, V)>, SharedError> {
        Ok(self.snapshot()?.into_iter())
    }
}

crate::object::impl_handle_archive!(
    [K: Message, V: Message,] SharedMap<K, V>, m => &m.t.obj,
    |seg, idx| Object::from_index_as::<MapHead>(seg, idx).and_then(Table::validate).map(|t| SharedMap { t, _kv: PhantomData })
);

// ----------------------------------------------------------------- list ----

/// A bounded list in shared memory (Python's `Manager().list()`): `push`,
/// `pop`, `get`, `set`, `len`, `to_vec`.
///
/// Each element slot is double-buffered (two halves and a selector), so a
/// `set` interrupted by a holder's death leaves the old element intact.
///
/// ```
/// let l = shmproc::SharedList::<String>::with_capacity(8)?;
/// let l2 = l.clone();
/// let mut child = shmproc::Process::spawn(move || l2.push(&"from the child".to_string()).unwrap())?;
/// child.join()?;
/// assert_eq!(l.to_vec()?, ["from the child"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SharedList<T> {
    t: Table,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Clone for SharedList<T> {
    fn clone(&self) -> Self {
        SharedList { t: self.t.clone(), _t: PhantomData }
    }
}

impl<T> fmt::Debug for SharedList<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedList").field("capacity", &self.t.slots).finish_non_exhaustive()
    }
}

impl<T: Message> SharedList<T> {
    /// A list of up to `capacity` elements of up to [`DEFAULT_ENTRY_SIZE`]
    /// serialised bytes, in a segment of its own.
    ///
    /// ```
    /// let l = shmproc::SharedList::<u32>::with_capacity(3)?;
    /// assert!(l.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_capacity(capacity: usize) -> Result<SharedList<T>, Error> {
        SharedList::with_element_size(capacity, DEFAULT_ENTRY_SIZE)
    }

    /// A list with an explicit serialised element size limit.
    ///
    /// ```
    /// let l = shmproc::SharedList::<Vec<u8>>::with_element_size(2, 2048)?;
    /// l.push(&vec![1; 1500])?;
    /// assert_eq!(l.get(0)?.len(), 1500);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_element_size(capacity: usize, element_size: usize) -> Result<SharedList<T>, Error> {
        // The "key" half and the "value" half of a slot are the two buffers.
        let size = pad16(element_size);
        Ok(SharedList { t: Table::create::<ListHead>(None, "", capacity.max(1), size, size)?, _t: PhantomData })
    }

    fn half(&self, i: usize, which: u32) -> Result<PeerBytes<'_>, SharedError> {
        let (a, b) = self.t.entry(i)?;
        Ok(if which == 0 { a } else { b })
    }

    fn read(&self, i: usize) -> Result<T, SharedError> {
        let which = self.t.slot(i).state.load(Ordering::Acquire) & 1;
        decode_peer::<T>(self.half(i, which)?).map_err(|e| SharedError::Corrupt(e.to_string()))
    }

    /// Writes `bytes` to the inactive half of slot `i` and switches to it.
    fn write_elem(&self, i: usize, bytes: &[u8]) {
        let s = self.t.slot(i);
        let active = s.state.load(Ordering::Relaxed) & 1;
        let target = active ^ 1;
        let ptr = if target == 0 { self.t.key_ptr(i) } else { self.t.val_ptr(i) };
        // SAFETY: bytes.len() <= element size (checked by callers) fits the
        // inactive half, which no reader uses.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len()) };
        if target == 0 {
            s.key_len.store(bytes.len() as u32, Ordering::Relaxed);
        } else {
            s.val_len.store(bytes.len() as u32, Ordering::Relaxed);
        }
        s.state.store(target, Ordering::Release);
    }

    fn encode_elem(&self, v: &T) -> Result<Vec<u8>, SharedError> {
        let b = encode(v).map_err(|e| SharedError::Serialize(e.to_string()))?;
        if b.len() > self.t.key_size {
            return Err(SharedError::TooLarge);
        }
        Ok(b.to_vec())
    }

    fn len_locked(&self) -> usize {
        (self.t.head().len.load(Ordering::Relaxed) as usize).min(self.t.slots)
    }

    /// Appends (Python's `append`).
    ///
    /// ```
    /// let l = shmproc::SharedList::<u8>::with_capacity(2)?;
    /// l.push(&1)?;
    /// l.push(&2)?;
    /// assert_eq!(l.to_vec()?, [1, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn push(&self, v: &T) -> Result<(), SharedError> {
        let b = self.encode_elem(v)?;
        let _g = self.t.lock(|_| {});
        let n = self.len_locked();
        if n >= self.t.slots {
            return Err(SharedError::Full);
        }
        self.write_elem(n, &b);
        self.t.head().len.store(n as u64 + 1, Ordering::Release);
        Ok(())
    }

    /// Removes and returns the last element.
    ///
    /// ```
    /// let l = shmproc::SharedList::<u8>::with_capacity(2)?;
    /// l.push(&1)?;
    /// assert_eq!(l.pop()?, Some(1));
    /// assert_eq!(l.pop()?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pop(&self) -> Result<Option<T>, SharedError> {
        let _g = self.t.lock(|_| {});
        let n = self.len_locked();
        if n == 0 {
            return Ok(None);
        }
        let v = self.read(n - 1)?;
        self.t.head().len.store(n as u64 - 1, Ordering::Release);
        Ok(Some(v))
    }

    /// Element `i`.
    ///
    /// ```
    /// let l = shmproc::SharedList::<char>::with_capacity(2)?;
    /// l.push(&'a')?;
    /// assert_eq!(l.get(0)?, 'a');
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self, i: usize) -> Result<T, SharedError> {
        let _g = self.t.lock(|_| {});
        if i >= self.len_locked() {
            return Err(SharedError::OutOfBounds);
        }
        self.read(i)
    }

    /// Replaces element `i`.
    ///
    /// ```
    /// let l = shmproc::SharedList::<u8>::with_capacity(2)?;
    /// l.push(&1)?;
    /// l.set(0, &5)?;
    /// assert_eq!(l.get(0)?, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set(&self, i: usize, v: &T) -> Result<(), SharedError> {
        let b = self.encode_elem(v)?;
        let _g = self.t.lock(|_| {});
        if i >= self.len_locked() {
            return Err(SharedError::OutOfBounds);
        }
        self.write_elem(i, &b);
        Ok(())
    }

    /// Number of elements.
    ///
    /// ```
    /// let l = shmproc::SharedList::<u8>::with_capacity(2)?;
    /// l.push(&1)?;
    /// assert_eq!(l.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        let _g = self.t.lock(|_| {});
        self.len_locked()
    }

    /// Whether the list is empty.
    ///
    /// ```
    /// assert!(shmproc::SharedList::<u8>::with_capacity(2)?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every element.
    ///
    /// ```
    /// let l = shmproc::SharedList::<u8>::with_capacity(2)?;
    /// l.push(&1)?;
    /// l.clear();
    /// assert_eq!(l.len(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clear(&self) {
        let _g = self.t.lock(|_| {});
        self.t.head().len.store(0, Ordering::Release);
    }

    /// A consistent copy of the elements (Python's `list(l)`).
    ///
    /// ```
    /// let l = shmproc::SharedList::<i16>::with_capacity(3)?;
    /// for x in [3, 1, 2] {
    ///     l.push(&x)?;
    /// }
    /// assert_eq!(l.to_vec()?, [3, 1, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<T>, SharedError> {
        let _g = self.t.lock(|_| {});
        (0..self.len_locked()).map(|i| self.read(i)).collect()
    }
}

crate::object::impl_handle_archive!(
    [T: Message,] SharedList<T>, l => &l.t.obj,
    |seg, idx| Object::from_index_as::<ListHead>(seg, idx).and_then(Table::validate).map(|t| SharedList { t, _t: PhantomData })
);
