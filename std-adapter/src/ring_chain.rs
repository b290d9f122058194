//! The store of a byte-ring queue (`shmproc_core::byte_queue`): its chained
//! rings (an unbounded queue's rings beyond its own) and its out-of-line
//! blocks. Each chained ring is an [`SpscRing`] in an out-of-line block of
//! the segment file (see `bulk.rs`), named by a 16-byte descriptor, mapped on
//! demand and cached per process.

use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use shmproc_core::byte_queue::{QueueError, RingDesc, RingStore};
use shmproc_core::owner::Owner;
use shmproc_core::peer_bytes::PeerBytes;
use shmproc_core::spsc::SpscRing;

use crate::bulk::{Descriptor, Mapping, Window};
use crate::channel_error::Failure;
use crate::kernel_liveness::FileLiveness;

/// How many chained rings a process keeps mapped (beyond those in use).
const CACHED: usize = 8;

/// What a byte-ring queue of this process stores out of its own ring.
#[derive(Clone, Debug)]
pub(crate) struct QueueStore {
    /// Where the queue's out-of-line blocks live (`None`: an object index
    /// too large to have a window; large messages are refused then).
    window: Option<Window>,
    /// The object's block counter (in its shared header).
    next: Option<NonNull<AtomicU64>>,
    /// Its chained rings (an unbounded queue with a window).
    chain: Option<Arc<Chain>>,
    /// The segment's liveness record (`kernel_liveness`): how the side
    /// locks judge a holder and record this process.
    live: FileLiveness,
}

// SAFETY: `next` points into the queue's shared mapping, kept alive by the
// queue object that owns this store, and is only used as an atomic; the
// rest is `Send + Sync`.
unsafe impl Send for QueueStore {}
// SAFETY: as above.
unsafe impl Sync for QueueStore {}

impl QueueStore {
    /// The store of a queue whose blocks live in `window`, counted by `next`
    /// (the object's block counter, which must stay mapped while the store
    /// is used), without chained rings: see [`with_chain`](QueueStore::with_chain).
    pub(crate) fn new(window: Option<Window>, next: NonNull<AtomicU64>, live: FileLiveness) -> QueueStore {
        QueueStore { window, next: Some(next), chain: None, live }
    }

    /// The same store, keeping chained rings if `unbounded`.
    pub(crate) fn with_chain(self, unbounded: bool) -> QueueStore {
        let chain = match (unbounded, self.window, self.next) {
            (true, Some(w), Some(next)) => Some(Arc::new(Chain::new(w, next))),
            _ => None,
        };
        QueueStore { chain, ..self }
    }

    #[cold]
    fn chain(&self) -> Result<&Chain, Failure> {
        self.chain.as_deref().ok_or_else(|| Failure::corrupt("a chained ring in a queue without a chain"))
    }
}

impl RingStore for QueueStore {
    type Keep = Arc<Mapping>;
    type Error = Failure;
    type Check = FileLiveness;

    fn check(&self) -> &FileLiveness {
        &self.live
    }

    #[inline]
    fn owner(&self, me: &Owner) -> Owner {
        self.live.owner(me)
    }

    fn ring(&self, desc: &RingDesc) -> Result<(SpscRing, Arc<Mapping>), Failure> {
        self.chain()?.ring(desc)
    }

    fn plan(&self, capacity: usize) -> Result<RingDesc, Failure> {
        self.chain()?.plan(capacity)
    }

    fn build(&self, desc: &RingDesc, capacity: usize) -> Result<(SpscRing, Arc<Mapping>), Failure> {
        self.chain()?.build(desc, capacity)
    }

    fn free_ring(&self, desc: &RingDesc) {
        if let Some(chain) = &self.chain {
            chain.free(desc);
        }
    }

    fn free_block(&self, desc: PeerBytes<'_>) {
        if let Some(w) = self.window {
            w.free_raw(desc);
        }
    }
}

impl From<QueueError> for Failure {
    fn from(e: QueueError) -> Failure {
        match e {
            QueueError::Full => Failure::Full,
            QueueError::Reentered => Failure::Reentered,
            QueueError::Corrupt(r) => Failure::corrupt(r),
        }
    }
}

/// One process's view of a queue's chained rings.
#[derive(Debug)]
struct Chain {
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
    fn new(window: Window, next: NonNull<AtomicU64>) -> Chain {
        Chain { window, next, cache: Mutex::new(Vec::new()) }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Vec<(Descriptor, SpscRing, Arc<Mapping>)>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, desc: Descriptor, ring: SpscRing, map: Mapping) -> (SpscRing, Arc<Mapping>) {
        let map = Arc::new(map);
        let mut cache = self.cache();
        if cache.len() >= CACHED {
            // References still in use keep their mapping alive.
            cache.remove(0);
        }
        cache.push((desc, ring, map.clone()));
        (ring, map)
    }

    /// The chained ring `desc` names (read from shared memory: validated).
    fn ring(&self, desc: &RingDesc) -> Result<(SpscRing, Arc<Mapping>), Failure> {
        if let Some((_, ring, map)) = self.cache().iter().find(|(d, ..)| d.encode() == *desc) {
            return Ok((*ring, map.clone()));
        }
        let (d, map) = self.window.map_shared(PeerBytes::from_slice(desc))?;
        // SAFETY: the mapping is d.len() bytes or more, page-aligned (so
        // OBJECT_ALIGN-aligned), and stays mapped while any RingRef to it
        // lives; attach validates the ring's header against that length.
        let ring = unsafe { SpscRing::attach(map.ptr(), d.len()) }.map_err(|e| Failure::corrupt(e.reason()))?;
        Ok(self.insert(d, ring, map))
    }

    /// Takes the file range for a new chained ring of `capacity` bytes (a
    /// power of two), without memory yet: see [`build`](Chain::build).
    fn plan(&self, capacity: usize) -> Result<RingDesc, Failure> {
        // SAFETY: `next` is valid while the chain lives (contract of `new`).
        let next = unsafe { self.next.as_ref() };
        Ok(self.window.reserve_range(next, SpscRing::required_size(capacity))?.encode())
    }

    /// Gives a planned ring memory and initialises it, empty.
    fn build(&self, desc: &RingDesc, capacity: usize) -> Result<(SpscRing, Arc<Mapping>), Failure> {
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
    fn free(&self, desc: &RingDesc) {
        self.cache().retain(|(d, ..)| d.encode() != *desc);
        self.window.free_raw(PeerBytes::from_slice(desc));
    }
}
