//! One channel's out-of-line blocks (see `bulk.rs`) as its processes use
//! them, made cheap for a stream of large messages:
//!
//! * a **recycle bin** in the channel's shared header: a receiver that is done
//!   with a block of up to [`RECYCLE_MAX`] bytes puts it there instead of
//!   punching it out of the file, and the next large message takes it, its
//!   memory still allocated (no `fallocate`, no page zeroing);
//! * a per-process **cache of mappings**: a recycled block is usually mapped
//!   in both processes already, so it costs no system call at all.
//!
//! The bin holds at most [`BIN_SLOTS`] blocks, so a channel keeps at most
//! `BIN_SLOTS * RECYCLE_MAX` bytes of memory for blocks between messages;
//! larger blocks are always punched when received. A bin entry is one atomic
//! word (the block's page offset in the window and its span in pages): a
//! block is taken with a swap and put back with a compare-and-swap, so a
//! process killed at any point leaves each block either in the bin or in its
//! hands (and then, as any block a dead process held, in the file until the
//! segment is freed).
//!
//! A receiver recycles a block only **after** it has released the frame or
//! slot that named it: until then a receiver that takes over from it after
//! its death would drop the message and punch the block, which must not
//! happen to a block another sender may already be writing. A block whose
//! message is punched instead is punched **before** the release (see
//! `bulk.rs`), so that one is freed exactly once whatever dies when.

use shmproc_core::peer_bytes::PeerBytes;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::bulk::{page, BlockMut, BlockRef, Descriptor, Mapping, Window, KIND_BLOCK, KIND_INLINE};
use crate::channel_error::Failure;

/// Blocks a channel keeps for reuse.
pub(crate) const BIN_SLOTS: usize = 4;
/// The largest block kept for reuse: 8 MiB.
pub(crate) const RECYCLE_MAX: u64 = 8 << 20;
/// Mappings a process keeps per channel: at most this many bytes...
const CACHE_BYTES: u64 = 64 << 20;
/// ... and this many mappings.
const CACHE_ENTRIES: usize = 16;
/// Bits of a bin entry that hold the span in pages.
const SPAN_BITS: u32 = 34;

/// The recycle bin, in the channel's shared header: `0` is an empty slot.
#[repr(C)]
pub(crate) struct Bin {
    slots: [AtomicU64; BIN_SLOTS],
}

impl Bin {
    /// Empties the bin (at creation, before it is shared).
    pub(crate) fn init(&self) {
        for s in &self.slots {
            s.store(0, Ordering::Relaxed);
        }
    }
}

/// One process's view of a channel's blocks.
#[derive(Debug)]
pub(crate) struct Blocks {
    window: Window,
    /// The channel's bump counter of blocks (in its shared header).
    next: NonNull<AtomicU64>,
    bin: NonNull<Bin>,
    cache: Mutex<Vec<(u64, u64, Arc<Mapping>)>>,
}

// SAFETY: `next` and `bin` point into the channel's shared mapping, kept
// alive by the channel object that owns this value, and are only used as
// atomics; the cache is behind a mutex.
unsafe impl Send for Blocks {}
// SAFETY: as above.
unsafe impl Sync for Blocks {}

impl std::fmt::Debug for Bin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bin")
    }
}

impl Blocks {
    /// The blocks of a channel whose window is `window`, with its counter and
    /// bin (both must stay mapped while this value lives).
    pub(crate) fn new(window: Window, next: NonNull<AtomicU64>, bin: NonNull<Bin>) -> Blocks {
        Blocks { window, next, bin, cache: Mutex::new(Vec::new()) }
    }

    fn bin(&self) -> &Bin {
        // SAFETY: valid while self lives (contract of `new`); atomics only.
        unsafe { self.bin.as_ref() }
    }

    /// A mapping of `span` bytes at `off`, from the cache or made (and
    /// cached). `off..off + span` must be a validated range of the window.
    fn mapping(&self, off: u64, span: u64) -> Option<Arc<Mapping>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = cache.iter().position(|&(o, s, _)| o == off && s >= span) {
            let hit = cache.remove(i);
            let map = hit.2.clone();
            cache.push(hit);
            return Some(map);
        }
        let map = Arc::new(self.window.map(off, span)?);
        Blocks::cache_insert(&mut cache, off, span, &map);
        Some(map)
    }

    /// Adds a mapping to the cache, evicting the oldest beyond its bounds
    /// (holders of an evicted mapping keep it alive).
    fn cache_insert(cache: &mut Vec<(u64, u64, Arc<Mapping>)>, off: u64, span: u64, map: &Arc<Mapping>) {
        cache.push((off, span, map.clone()));
        while cache.len() > CACHE_ENTRIES || cache.iter().map(|e| e.1).sum::<u64>() > CACHE_BYTES {
            cache.remove(0);
        }
    }

    /// A block for a `len`-byte message: a recycled one of a fitting size if
    /// the bin has one, a fresh one otherwise.
    pub(crate) fn alloc(&self, len: usize) -> Result<BlockMut, Failure> {
        let span = (len.max(1) as u64).div_ceil(page()) * page();
        if span <= RECYCLE_MAX {
            if let Some(b) = self.take_recycled(len as u64, span) {
                return Ok(b);
            }
        }
        // SAFETY: `next` is valid while self lives (contract of `new`).
        let next = unsafe { self.next.as_ref() };
        let desc = self.window.reserve_range(next, len)?;
        let map = match self.window.materialize(desc) {
            Ok(m) => Arc::new(m),
            Err(e) => {
                self.window.free(desc);
                return Err(e);
            }
        };
        if span <= RECYCLE_MAX {
            // Likely to come back through the bin: keep it mapped.
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            Blocks::cache_insert(&mut cache, desc.off(), desc.span(), &map);
        }
        Ok(BlockMut { map, desc, window: self.window })
    }

    /// A block from the bin at least `span` bytes and at most twice that.
    fn take_recycled(&self, len: u64, span: u64) -> Option<BlockMut> {
        for slot in &self.bin().slots {
            if slot.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let entry = slot.swap(0, Ordering::Acquire);
            let Some((off, bspan)) = self.unpack(entry) else { continue };
            if bspan < span || bspan > span.saturating_mul(2) {
                self.recycle_range(off, bspan);
                continue;
            }
            // The entry came from shared memory: a garbage one may name a
            // range past the file's end or a punched hole, which writing
            // would fault on (SIGBUS) or charge to no reservation.
            if !self.window.ensure_memory(off, bspan) {
                self.window.free(Descriptor::new(off, bspan, bspan));
                continue;
            }
            match self.mapping(off, bspan) {
                Some(map) => {
                    return Some(BlockMut { map, desc: Descriptor::new(off, len, bspan), window: self.window })
                }
                None => self.window.free(Descriptor::new(off, bspan, bspan)),
            }
        }
        None
    }

    /// A bin entry's block, if it is one of this window (entries are read
    /// from shared memory).
    fn unpack(&self, entry: u64) -> Option<(u64, u64)> {
        if entry == 0 {
            return None;
        }
        let pages = entry & ((1 << SPAN_BITS) - 1);
        let off = self.window.base().checked_add((entry >> SPAN_BITS).checked_mul(page())?)?;
        let span = pages.checked_mul(page())?;
        (span <= RECYCLE_MAX && self.window.contains(off, span)).then_some((off, span))
    }

    /// Puts a block in the bin, or punches it if the bin is full.
    fn recycle_range(&self, off: u64, span: u64) {
        let entry = (((off - self.window.base()) / page()) << SPAN_BITS) | (span / page());
        if span <= RECYCLE_MAX {
            for slot in &self.bin().slots {
                if slot.compare_exchange(0, entry, Ordering::Release, Ordering::Relaxed).is_ok() {
                    return;
                }
            }
        }
        self.window.free(Descriptor::new(off, span, span));
    }

    /// Validates a descriptor read from a ring and maps its block (cached).
    pub(crate) fn open(&self, bytes: PeerBytes<'_>) -> Result<BlockRef, Failure> {
        let desc = self.window.validate(bytes)?;
        let map = self.mapping(desc.off(), desc.span()).ok_or_else(|| Failure::corrupt("block cannot be mapped"))?;
        Ok(BlockRef { map, desc, window: self.window })
    }

    /// Whether a received block is kept for reuse (then it must be handed to
    /// [`recycle`](Blocks::recycle) after its frame is released) rather than
    /// punched before (module docs).
    pub(crate) fn recyclable(desc: &Descriptor) -> bool {
        desc.span() <= RECYCLE_MAX
    }

    /// A received block whose frame was released: into the bin, or punched.
    pub(crate) fn recycle(&self, desc: Descriptor) {
        self.recycle_range(desc.off(), desc.span());
    }

    /// A block that will never be published.
    pub(crate) fn discard(&self, block: BlockMut) {
        self.recycle(block.desc);
    }

    /// Frees the block a descriptor from a dropped message names (the
    /// message of a dead reader: punched, never recycled; idempotent).
    pub(crate) fn free_raw(&self, bytes: PeerBytes<'_>) {
        self.window.free_raw(bytes);
    }

    /// Runs `read` on a message of `kind` whose frame or slot holds `bytes`
    /// (in place, or from its block). When `read` says it consumed the
    /// message, a block not kept for reuse is punched now (before the caller
    /// releases the frame), and one kept for reuse is returned, for
    /// [`recycle`](Blocks::recycle) after the release.
    pub(crate) fn read<R>(
        &self,
        kind: u8,
        bytes: PeerBytes<'_>,
        read: impl FnOnce(PeerBytes<'_>) -> (R, bool),
    ) -> Result<(R, bool, Option<Descriptor>), Failure> {
        match kind {
            KIND_INLINE => {
                let (r, consumed) = read(bytes);
                Ok((r, consumed, None))
            }
            KIND_BLOCK => {
                let block = self.open(bytes)?;
                let (r, consumed) = read(block.peer());
                let desc = block.desc;
                drop(block);
                if !consumed {
                    return Ok((r, false, None));
                }
                if Blocks::recyclable(&desc) {
                    Ok((r, true, Some(desc)))
                } else {
                    self.window.free(desc);
                    Ok((r, true, None))
                }
            }
            _ => Err(Failure::corrupt("message kind")),
        }
    }

    /// Copies a message of `kind` out, validates and deserialises it; see
    /// [`read`](Blocks::read) for the block it may return (returned whether
    /// the message was valid or not: the caller recycles it after the
    /// release either way).
    #[allow(clippy::type_complexity)]
    pub(crate) fn decode<T: crate::Message>(
        &self,
        kind: u8,
        bytes: PeerBytes<'_>,
    ) -> Result<(Result<T, Failure>, Option<Descriptor>), Failure> {
        let (decoded, _, desc) = self.read(kind, bytes, |b| (crate::message::decode_peer::<T>(b), true))?;
        Ok((decoded.map_err(|e| Failure::Corrupt(e.to_string())), desc))
    }

    /// Serialises `v` into a block of its exact size `n` (measured before:
    /// see `message.rs`), ready for its descriptor to be published.
    pub(crate) fn write<T: crate::Message>(&self, v: &T, n: usize) -> Result<BlockMut, Failure> {
        use crate::message::{encode_into, Written};
        let mut block = self.alloc(n)?;
        match encode_into(v, block.buf()) {
            Ok(Written::Done(m)) if m == n => Ok(block),
            Ok(_) => {
                self.discard(block);
                Err(Failure::Serialize("the value serialised to a different size the second time".into()))
            }
            Err(e) => {
                self.discard(block);
                Err(Failure::Serialize(e.to_string()))
            }
        }
    }

    /// Copies raw bytes into a block.
    pub(crate) fn copy(&self, bytes: &[u8]) -> Result<BlockMut, Failure> {
        let mut block = self.alloc(bytes.len())?;
        block.buf().copy_from_slice(bytes);
        Ok(block)
    }
}
