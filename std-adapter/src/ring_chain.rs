//! The rings of an unbounded queue beyond its own (see `queue_bytes.rs`):
//! each is an [`SpscRing`] in an out-of-line block of the segment file (see
//! `bulk.rs`), named by a 16-byte descriptor, mapped on demand and cached per
//! process.

use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use shmproc_core::spsc::SpscRing;

use crate::bulk::{Descriptor, Mapping, Window, DESCRIPTOR_LEN};
use crate::channel_error::Failure;

/// The descriptor that names the queue's own ring.
pub(crate) const OWN_RING: [u8; DESCRIPTOR_LEN] = [0; DESCRIPTOR_LEN];

/// How many chained rings a process keeps mapped (beyond those in use).
const CACHED: usize = 8;

/// A ring of a queue: its own, or a chained one kept mapped while this
/// reference lives.
#[derive(Clone, Debug)]
pub(crate) struct RingRef {
    pub(crate) ring: SpscRing,
    /// The descriptor that names it ([`OWN_RING`] for the queue's own).
    pub(crate) desc: [u8; DESCRIPTOR_LEN],
    _map: Option<Arc<Mapping>>,
}

impl RingRef {
    /// The queue's own ring.
    pub(crate) fn own(ring: SpscRing) -> RingRef {
        RingRef { ring, desc: OWN_RING, _map: None }
    }

    /// Whether this is a chained ring (not the queue's own).
    pub(crate) fn is_chained(&self) -> bool {
        self.desc != OWN_RING
    }
}

/// One process's view of a queue's chained rings.
#[derive(Debug)]
pub(crate) struct Chain {
    window: Window,
    /// The object's bump counter of blocks (in its shared header).
    next: NonNull<AtomicU64>,
    cache: Mutex<Vec<(Descriptor, SpscRing, Arc<Mapping>)>>,
}

// SAFETY: `next` points into the queue's shared mapping, kept alive by the
// queue object that owns this chain; it is only used as an atomic.
unsafe impl Send for Chain {}
// SAFETY: as above; the cache is behind a mutex.
unsafe impl Sync for Chain {}

impl Chain {
    /// A chain whose blocks live in `window`, counted by `next` (which must
    /// outlive the chain).
    pub(crate) fn new(window: Window, next: NonNull<AtomicU64>) -> Chain {
        Chain { window, next, cache: Mutex::new(Vec::new()) }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Vec<(Descriptor, SpscRing, Arc<Mapping>)>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, desc: Descriptor, ring: SpscRing, map: Mapping) -> RingRef {
        let map = Arc::new(map);
        let mut cache = self.cache();
        if cache.len() >= CACHED {
            // References still in use keep their mapping alive.
            cache.remove(0);
        }
        cache.push((desc, ring, map.clone()));
        RingRef { ring, desc: desc.encode(), _map: Some(map) }
    }

    /// The chained ring `desc` names (read from shared memory: validated).
    pub(crate) fn ring(&self, desc: &[u8; DESCRIPTOR_LEN]) -> Result<RingRef, Failure> {
        if let Some((_, ring, map)) = self.cache().iter().find(|(d, ..)| d.encode() == *desc) {
            return Ok(RingRef { ring: *ring, desc: *desc, _map: Some(map.clone()) });
        }
        let (d, map) = self.window.map_shared(desc)?;
        // SAFETY: the mapping is d.len() bytes or more, page-aligned (so
        // OBJECT_ALIGN-aligned), and stays mapped while any RingRef to it
        // lives; attach validates the ring's header against that length.
        let ring = unsafe { SpscRing::attach(map.ptr(), d.len()) }.map_err(|e| Failure::corrupt(e.reason()))?;
        Ok(self.insert(d, ring, map))
    }

    /// Takes the file range for a new chained ring of `capacity` bytes (a
    /// power of two), without memory yet: see [`build`](Chain::build).
    pub(crate) fn plan(&self, capacity: usize) -> Result<[u8; DESCRIPTOR_LEN], Failure> {
        // SAFETY: `next` is valid while the chain lives (contract of `new`).
        let next = unsafe { self.next.as_ref() };
        Ok(self.window.reserve_range(next, SpscRing::required_size(capacity))?.encode())
    }

    /// Gives a planned ring memory and initialises it, empty.
    pub(crate) fn build(&self, desc: &[u8; DESCRIPTOR_LEN], capacity: usize) -> Result<RingRef, Failure> {
        let d = Descriptor::decode(desc).ok_or_else(|| Failure::corrupt("ring descriptor"))?;
        let len = SpscRing::required_size(capacity);
        if d.len() != len {
            return Err(Failure::corrupt("ring descriptor"));
        }
        let map = self.window.materialize(d)?;
        // SAFETY: a fresh block of at least `len` bytes, page-aligned, that no
        // other process reads until its descriptor is published.
        let ring = unsafe { SpscRing::init(map.ptr(), len, capacity) }.map_err(|e| Failure::corrupt(e.reason()))?;
        Ok(self.insert(d, ring, map))
    }

    /// Frees the chained ring `desc` names (every frame in it was taken):
    /// idempotent, garbage ignored.
    pub(crate) fn free(&self, desc: &[u8; DESCRIPTOR_LEN]) {
        self.cache().retain(|(d, ..)| d.encode() != *desc);
        self.window.free_raw(desc);
    }
}
