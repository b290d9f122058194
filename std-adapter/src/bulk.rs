//! Out-of-line blocks: how a message too large for its ring travels.
//!
//! A channel's ring carries small messages in place. A larger one is
//! serialised into a **block of the segment's own file**, past the mapped
//! region, and the ring carries a 16-byte descriptor of it (a frame or slot
//! of kind [`KIND_BLOCK`]): the block's file offset and length. Every process
//! that holds a handle holds the segment's fd (inherited over fork, passed to
//! spawned children, opened by name), so the receiver maps the block from the
//! same fd; nothing else has to be passed between processes, and the sender
//! may exit as soon as the descriptor is published.
//!
//! ```text
//! segment file: [ region (mapped by every handle) ] ... hole ... [ window of object i: blocks ... ]
//!                0                                   (i+1) * 4 TiB
//! ```
//!
//! * **Allocation.** Each object (queue, pipe direction) has a window of
//!   4 TiB of file offsets of its own, starting at `(index + 1) << 42`, and a
//!   bump counter in its shared header. A block takes the next page-aligned
//!   range (wrapping within the window), and `fallocate` gives it memory
//!   (a full `/dev/shm` or memory limit is [`NoSpace`](crate::SendError::NoSpace),
//!   not a `SIGBUS`). File offsets are only address space: the file is
//!   sparse, and a range is reused only after the window wrapped, 4 TiB of
//!   blocks later; the blocks alive at once hold real memory, so they cannot
//!   span a window.
//! * **Freeing.** The receiver punches the block out of the file
//!   (`FALLOC_FL_PUNCH_HOLE`) after it has copied it out (or, for
//!   [`RecvRef`](crate::RecvRef), when the guard drops) and **before** it
//!   releases the descriptor. Punching is idempotent, so the block is freed
//!   exactly once in effect whatever dies when: a receiver killed before the
//!   punch leaves the descriptor in the ring, and whoever drops a dead
//!   reader's message (the byte ring's next receiver, the slot ring's
//!   recovery) punches it; one killed after the punch leaves a descriptor
//!   whose second punch does nothing.
//! * **What is not recovered.** A sender killed after allocating a block and
//!   before publishing its descriptor leaves that block's memory in the file
//!   until the segment itself is freed (an anonymous segment: with the last
//!   process holding it). A channel dropped with blocks still queued frees
//!   them with its segment, not before.
//! * **Untrusted descriptors.** A descriptor is validated before use: inside
//!   the object's window, page-aligned, inside the file's current size (so
//!   that no access can fault); the bytes themselves are validated by rkyv
//!   as any message is. Garbage gives `Corrupt`, never a fault.
//! * **Alignment.** A block starts on a page, so an archive read in place
//!   from it is aligned for any archived type.

use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use shmproc_core::peer_bytes::PeerBytes;

use crate::channel_error::Failure;
use crate::object::Object;

/// Frame and slot kinds (inline, out-of-line block, link) and the
/// descriptor length: the byte-ring layout in core gives them their meaning.
pub(crate) use shmproc_core::byte_queue::{DESCRIPTOR_LEN, KIND_BLOCK, KIND_INLINE};
/// Each object's window of file offsets: 4 TiB.
const WINDOW_SHIFT: u32 = 42;
const WINDOW: u64 = 1 << WINDOW_SHIFT;
/// Objects past this index have no window (the offsets would pass 2^62).
const MAX_INDEX: u32 = (1 << 20) - 1;
/// The largest block: 512 GiB (far beyond any memory); its length fits in
/// 40 bits of a descriptor.
pub(crate) const MAX_BLOCK: usize = 1 << 39;
/// Bits of a descriptor's second word that hold the length; the rest hold
/// the block's slack (whole pages beyond the length's, for a recycled block
/// larger than its message).
const LEN_BITS: u32 = 40;
const MAX_SLACK: u64 = (1 << (64 - LEN_BITS)) - 1;

pub(crate) fn page() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 && (p as u64).is_power_of_two() {
            p as u64
        } else {
            4096
        }
    })
}

/// Where a block lies in the segment file: its offset, the message's length,
/// and the block's slack (whole pages beyond the length's).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Descriptor {
    off: u64,
    len: u64,
    slack: u64,
}

impl Descriptor {
    /// The descriptor's bytes, as a frame carries them.
    pub(crate) fn encode(&self) -> [u8; DESCRIPTOR_LEN] {
        let mut b = [0u8; DESCRIPTOR_LEN];
        b[..8].copy_from_slice(&self.off.to_le_bytes());
        b[8..].copy_from_slice(&(self.len | (self.slack << LEN_BITS)).to_le_bytes());
        b
    }

    /// A descriptor of the block at `off` of `span` bytes (whole pages, at
    /// least the length's) holding a `len`-byte message.
    pub(crate) fn new(off: u64, len: u64, span: u64) -> Descriptor {
        let slack = (span / page()).saturating_sub(len.div_ceil(page())).min(MAX_SLACK);
        Descriptor { off, len, slack }
    }

    /// The block's file offset.
    pub(crate) fn off(&self) -> u64 {
        self.off
    }

    /// A descriptor from its bytes (not validated: see `Window::validate`).
    pub(crate) fn decode(bytes: &[u8]) -> Option<Descriptor> {
        let b: &[u8; DESCRIPTOR_LEN] = bytes.try_into().ok()?;
        let (off, len) = b.split_at(8);
        let word = u64::from_le_bytes(len.try_into().ok()?);
        Some(Descriptor {
            off: u64::from_le_bytes(off.try_into().ok()?),
            len: word & ((1 << LEN_BITS) - 1),
            slack: word >> LEN_BITS,
        })
    }

    /// The message's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    /// The block's bytes: whole pages.
    pub(crate) fn span(&self) -> u64 {
        (self.len.div_ceil(page()) + self.slack) * page()
    }
}

/// One object's window of the segment file. `Copy`: the fd stays valid while
/// the object (which holds the segment) lives, and every user holds it.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Window {
    fd: RawFd,
    base: u64,
}

impl Window {
    /// The window of `obj`, if its index has one.
    pub(crate) fn of(obj: &Object) -> Option<Window> {
        let index = obj.index();
        (index <= MAX_INDEX)
            .then(|| Window { fd: obj.segment().as_raw_fd(), base: (u64::from(index) + 1) << WINDOW_SHIFT })
    }

    /// Allocates a block for a `len`-byte message, bumping `next` (the
    /// object's shared counter), and maps it for writing.
    pub(crate) fn alloc(&self, next: &AtomicU64, len: usize) -> Result<BlockMut, Failure> {
        let desc = self.reserve_range(next, len)?;
        match self.materialize(desc) {
            Ok(map) => Ok(BlockMut { map: Arc::new(map), desc, window: *self }),
            Err(e) => {
                self.free(desc);
                Err(e)
            }
        }
    }

    /// Takes the file range for a `len`-byte block (bumping `next`), without
    /// giving it memory yet: a caller can record the descriptor before the
    /// slow part, so that whoever takes over from it if it dies knows what
    /// to free.
    pub(crate) fn reserve_range(&self, next: &AtomicU64, len: usize) -> Result<Descriptor, Failure> {
        if len > MAX_BLOCK {
            return Err(Failure::TooLarge { size: len, limit: MAX_BLOCK });
        }
        let len64 = len.max(1) as u64;
        let span = len64.div_ceil(page()) * page();
        // Two tries always suffice (a range that would cross the window's end
        // moves the counter past it); a third guards a garbage counter.
        for _ in 0..3 {
            let start = next.fetch_add(span, Ordering::Relaxed) & (WINDOW - 1) & !(page() - 1);
            if start + span <= WINDOW {
                return Ok(Descriptor { off: self.base + start, len: len64, slack: 0 });
            }
        }
        Err(Failure::corrupt("block counter"))
    }

    /// Gives a reserved range memory (`fallocate`: a full `/dev/shm` or
    /// memory limit is `NoSpace`, not a later `SIGBUS`) and maps it for
    /// reading and writing.
    pub(crate) fn materialize(&self, desc: Descriptor) -> Result<Mapping, Failure> {
        let size = desc.len();
        // SAFETY: plain syscall on our fd; the range is ours (bump-allocated).
        let r = unsafe { libc::fallocate(self.fd, 0, desc.off as libc::off_t, desc.span() as libc::off_t) };
        if r != 0 {
            return Err(Failure::NoSpace { size });
        }
        Mapping::new(self.fd, desc.off, desc.span(), true).ok_or(Failure::NoSpace { size })
    }

    /// Makes sure a range of the window has memory and lies inside the file
    /// (`fallocate`, which may extend the file but never shrinks it): for a
    /// range read from shared memory (a recycled block from the bin) before
    /// it is written, so that a garbage range costs memory, never a
    /// `SIGBUS`. False when no memory could be had.
    pub(crate) fn ensure_memory(&self, off: u64, span: u64) -> bool {
        if !self.contains(off, span) {
            return false;
        }
        // SAFETY: plain syscall on our fd, inside this object's window.
        unsafe { libc::fallocate(self.fd, 0, off as libc::off_t, span as libc::off_t) == 0 }
    }

    /// Validates a descriptor read from a ring and maps its block for
    /// reading.
    pub(crate) fn open(&self, bytes: PeerBytes<'_>) -> Result<BlockRef, Failure> {
        let desc = self.validate(bytes)?;
        let map = Mapping::new(self.fd, desc.off, desc.span(), false)
            .ok_or_else(|| Failure::corrupt("block cannot be mapped"))?;
        Ok(BlockRef { map: Arc::new(map), desc, window: *self })
    }

    /// The first file offset of the window.
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// Maps `span` bytes at `off` (a validated block) for reading and
    /// writing.
    pub(crate) fn map(&self, off: u64, span: u64) -> Option<Mapping> {
        Mapping::new(self.fd, off, span, true)
    }

    /// Whether a block of `span` bytes at `off` lies in this window (for
    /// ranges read from shared memory).
    pub(crate) fn contains(&self, off: u64, span: u64) -> bool {
        let rel = off.wrapping_sub(self.base);
        rel < WINDOW && off % page() == 0 && span > 0 && span <= WINDOW - rel
    }

    /// Validates a descriptor read from shared memory (copied out first).
    pub(crate) fn validate(&self, bytes: PeerBytes<'_>) -> Result<Descriptor, Failure> {
        let desc = match bytes.read_array::<DESCRIPTOR_LEN>() {
            Some(d) if bytes.len() == DESCRIPTOR_LEN => Descriptor::decode(&d),
            _ => None,
        };
        let desc = desc.ok_or_else(|| Failure::corrupt("block descriptor length"))?;
        if desc.len == 0 || desc.len > MAX_BLOCK as u64 || !self.contains(desc.off, desc.span()) {
            return Err(Failure::corrupt("block descriptor"));
        }
        // The file must cover the block, or touching it would fault.
        // SAFETY: an all-zero stat is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat on our fd into a valid stat buffer.
        if unsafe { libc::fstat(self.fd, &mut st) } != 0 || (st.st_size as u64) < desc.off + desc.span() {
            return Err(Failure::corrupt("block beyond the segment file"));
        }
        Ok(desc)
    }

    /// Validates a descriptor and maps its block for reading and writing.
    pub(crate) fn map_shared(&self, bytes: PeerBytes<'_>) -> Result<(Descriptor, Mapping), Failure> {
        let desc = self.validate(bytes)?;
        let map = Mapping::new(self.fd, desc.off, desc.span(), true)
            .ok_or_else(|| Failure::corrupt("block cannot be mapped"))?;
        Ok((desc, map))
    }

    /// Frees the block a descriptor names (idempotent); garbage is ignored.
    pub(crate) fn free_raw(&self, bytes: PeerBytes<'_>) {
        if let Ok(desc) = self.validate(bytes) {
            self.free(desc);
        }
    }

    pub(crate) fn free(&self, desc: Descriptor) {
        // SAFETY: plain syscall on our fd; punching a hole never shrinks the
        // file (KEEP_SIZE), so no other process's mapping can fault.
        unsafe {
            libc::fallocate(
                self.fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                desc.off as libc::off_t,
                desc.span() as libc::off_t,
            );
        }
    }
}

/// A mapping of one block, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    span: usize,
}

impl Mapping {
    fn new(fd: RawFd, off: u64, span: u64, write: bool) -> Option<Mapping> {
        let prot = if write { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        let span = usize::try_from(span).ok()?;
        // SAFETY: a fresh mapping chosen by the kernel; the fd is open and the
        // range lies inside the file (allocated, or checked by `validate`).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                span,
                prot,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                libc::off_t::try_from(off).ok()?,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        Some(Mapping { ptr: NonNull::new(p.cast())?, span })
    }
}

impl Mapping {
    /// The first byte (page-aligned).
    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping of `span` bytes, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.span) };
    }
}

// SAFETY: a private mapping handle: the pointer is only dereferenced through
// the owning block's methods.
unsafe impl Send for Mapping {}
// SAFETY: as above; shared access is read-only.
unsafe impl Sync for Mapping {}

/// A freshly allocated block, mapped for writing by its sender.
#[derive(Debug)]
pub(crate) struct BlockMut {
    pub(crate) map: Arc<Mapping>,
    pub(crate) desc: Descriptor,
    pub(crate) window: Window,
}

impl BlockMut {
    /// The block's `len` bytes.
    pub(crate) fn buf(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is at least `len` bytes (span >= len), writable,
        // and ours alone until the descriptor is published.
        unsafe { std::slice::from_raw_parts_mut(self.map.ptr.as_ptr(), self.desc.len()) }
    }

    /// The descriptor to publish.
    pub(crate) fn descriptor(&self) -> Descriptor {
        self.desc
    }

    /// Unmaps the block, keeping its memory: its descriptor was published.
    pub(crate) fn published(self) {}

    /// Frees the block: it will never be published.
    pub(crate) fn discard(self) {
        self.window.free(self.desc);
    }
}

/// A block mapped for reading by its receiver.
#[derive(Debug)]
pub(crate) struct BlockRef {
    pub(crate) map: Arc<Mapping>,
    pub(crate) desc: Descriptor,
    pub(crate) window: Window,
}

impl BlockRef {
    /// The message's bytes, page-aligned, to be copied out (a peer breaking
    /// the protocol could write them while they are read: see
    /// `shmproc_core::peer_bytes`).
    pub(crate) fn peer(&self) -> PeerBytes<'_> {
        // SAFETY: the mapping is at least `len` bytes (validated) and stays
        // mapped while self lives; read through atomic loads only.
        unsafe { PeerBytes::new(self.map.ptr, self.desc.len()) }
    }

    /// The message's bytes in place, for a reader that keeps them
    /// (`RecvRef`): sound while the sender follows the protocol (it does not
    /// write a published block), as the crate's trust model says.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: as in `peer`; unwritten while borrowed by the protocol.
        unsafe { self.peer().as_slice() }
    }

    /// Unmaps and frees the block (before its descriptor is released: module
    /// docs).
    pub(crate) fn free(self) {
        let (window, desc) = (self.window, self.desc);
        drop(self.map);
        window.free(desc);
    }
}

/// Copies raw bytes into a fresh block.
pub(crate) fn copy_block(window: Option<Window>, next: &AtomicU64, bytes: &[u8]) -> Result<BlockMut, Failure> {
    let window = window.ok_or(Failure::TooLarge { size: bytes.len(), limit: 0 })?;
    let mut block = window.alloc(next, bytes.len())?;
    block.buf().copy_from_slice(bytes);
    Ok(block)
}

/// Runs `read` on the bytes of a message of `kind` whose frame or slot holds
/// `bytes`: in place, or from its out-of-line block. The block is freed after
/// `read` if `read` says the message is consumed (before the caller releases
/// the frame: module docs). The bytes are a peer's ([`PeerBytes`]): `read`
/// copies them out.
pub(crate) fn with_message<R>(
    window: Option<Window>,
    kind: u8,
    bytes: PeerBytes<'_>,
    read: impl FnOnce(PeerBytes<'_>) -> (R, bool),
) -> Result<(R, bool), Failure> {
    match kind {
        KIND_INLINE => Ok(read(bytes)),
        KIND_BLOCK => {
            let window = window.ok_or_else(|| Failure::corrupt("a block in a channel without a window"))?;
            let block = window.open(bytes)?;
            let (r, consumed) = read(block.peer());
            if consumed {
                block.free();
            }
            Ok((r, consumed))
        }
        _ => Err(Failure::corrupt("message kind")),
    }
}
