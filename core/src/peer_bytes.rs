//! Bytes of shared memory that another process may write at any moment, and
//! the one way to read them: a copy made of atomic loads.
//!
//! A frame, slot or block handed to a receiver is not written again by a
//! peer that follows the protocol, but a hostile or broken peer may write it
//! while the receiver reads. Reading such memory through a `&[u8]` would be
//! a data race in Rust's model (undefined behaviour, whatever the bytes),
//! so every path that *copies* a message out reads it through
//! [`PeerBytes`]: relaxed atomic loads, a word at a time, or on x86-64 SSE2
//! loads in an `asm!` block, 64 bytes at a time (no data race in Rust's
//! model, whatever the peer does), into private memory, which is then
//! validated.
//! A torn copy is only wrong bytes, and validation reports them.
//!
//! Readers *in place* (`shmproc::RecvRef`) use
//! [`PeerBytes::as_slice`], whose contract is the protocol's: sound against
//! peers that follow it.
//!
//! # Orderings
//!
//! Relaxed loads: the frame's publication (an `Acquire` load of its header
//! word, or of the slot's sequence) already ordered the bytes before this
//! copy; the loads only need to be atomic.
//!
//! ```
//! use shmproc_core::peer_bytes::PeerBytes;
//! let shared = [7u8; 40];
//! // SAFETY: `shared` is valid for reads of 40 bytes while `p` lives.
//! let p = unsafe { PeerBytes::new(core::ptr::NonNull::from(&shared).cast(), shared.len()) };
//! let mut private = [0u8; 40];
//! p.copy_to(&mut private);
//! assert_eq!(private, shared);
//! assert_eq!(p.read_array::<4>(), Some([7; 4]));
//! ```

use core::marker::PhantomData;
use core::ptr::NonNull;
// Real atomics even under loom: this memory is not part of any model.
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// `len` bytes of shared memory a peer may write concurrently, valid for
/// reads for `'a` (see the module docs).
#[derive(Copy, Clone, Debug)]
pub struct PeerBytes<'a> {
    ptr: NonNull<u8>,
    len: usize,
    _life: PhantomData<&'a [AtomicU8]>,
}

// SAFETY: only ever read through atomic loads; as `&[AtomicU8]` is.
unsafe impl Send for PeerBytes<'_> {}
// SAFETY: as above.
unsafe impl Sync for PeerBytes<'_> {}

impl<'a> PeerBytes<'a> {
    /// Bytes at `ptr..ptr+len`.
    ///
    /// # Safety
    ///
    /// The range must be valid for reads (mapped) for `'a`; its contents
    /// may change at any time.
    #[inline]
    pub unsafe fn new(ptr: NonNull<u8>, len: usize) -> PeerBytes<'a> {
        PeerBytes { ptr, len, _life: PhantomData }
    }

    /// Private bytes seen as peer bytes (for code that takes either).
    #[inline]
    pub fn from_slice(bytes: &'a [u8]) -> PeerBytes<'a> {
        // SAFETY: a slice is valid for reads for its lifetime; nobody writes
        // it while it is borrowed, so atomic loads of it are fine too.
        unsafe { PeerBytes::new(NonNull::from(bytes).cast(), bytes.len()) }
    }

    /// Number of bytes.
    #[inline]
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// The address of the first byte (to check alignment, say).
    #[inline]
    #[must_use]
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Whether there are none.
    #[inline]
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the bytes into `dst`, which must be exactly [`len`](PeerBytes::len)
    /// bytes long (a shorter or longer `dst` gets the common prefix).
    #[inline]
    pub fn copy_to(&self, dst: &mut [u8]) {
        let n = self.len.min(dst.len());
        // SAFETY: the source is valid for reads of `len >= n` bytes
        // (contract of `new`); `dst` is private, `n` bytes long.
        unsafe { copy_atomic(self.ptr.as_ptr(), dst.as_mut_ptr(), n) }
    }

    /// Copies the bytes to `dst`.
    ///
    /// # Safety
    ///
    /// `dst..dst+len` must be valid for writes and not overlap these bytes.
    #[inline]
    pub unsafe fn copy_to_raw(&self, dst: *mut u8) {
        // SAFETY: the source is valid for reads (contract of `new`), the
        // destination for writes (contract of this function).
        unsafe { copy_atomic(self.ptr.as_ptr(), dst, self.len) }
    }

    /// The first `N` bytes, copied (`None` when there are fewer).
    #[inline]
    #[must_use]
    pub fn read_array<const N: usize>(&self) -> Option<[u8; N]> {
        if self.len < N {
            return None;
        }
        let mut a = [0u8; N];
        self.copy_to(&mut a);
        Some(a)
    }

    /// Whether the bytes equal `other` now (a copy compared, a chunk at a
    /// time).
    #[must_use]
    pub fn equals(&self, other: &[u8]) -> bool {
        if self.len != other.len() {
            return false;
        }
        let mut chunk = [0u8; 64];
        other.chunks(64).enumerate().all(|(i, want)| {
            let part = self.sub(i * 64, want.len());
            part.copy_to(&mut chunk[..want.len()]);
            chunk[..want.len()] == *want
        })
    }

    /// `len` bytes from `at` (clamped to these bytes).
    #[inline]
    #[must_use]
    pub fn sub(&self, at: usize, len: usize) -> PeerBytes<'a> {
        let at = at.min(self.len);
        let len = len.min(self.len - at);
        // SAFETY: inside the range `new` was given.
        unsafe { PeerBytes::new(NonNull::new_unchecked(self.ptr.as_ptr().add(at)), len) }
    }

    /// The bytes as a slice, to be read in place.
    ///
    /// # Safety
    ///
    /// Nobody may write them while the slice lives: true of a frame or slot
    /// claimed from a ring whose peers follow the protocol (they do not
    /// write a published message until it is released), not of one a
    /// hostile peer writes.
    #[inline]
    #[must_use]
    pub unsafe fn as_slice(&self) -> &'a [u8] {
        // SAFETY: valid for reads for 'a (contract of `new`), unwritten
        // while borrowed (contract of this function).
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

/// Copies `n` bytes from shared `src` to private `dst`. On x86-64, copies
/// of 64 bytes and more go 64 bytes at a time through SSE2 registers in an
/// `asm!` block (about `memcpy`'s speed; an `asm!` block's memory accesses
/// are the hardware's, outside Rust's data-race rules, as a foreign
/// function's would be), the rest by [`copy_words`]'s relaxed atomic loads.
///
/// # Safety
///
/// `src..src+n` valid for reads, `dst..dst+n` valid for writes and private.
#[inline]
unsafe fn copy_atomic(src: *const u8, dst: *mut u8, n: usize) {
    #[cfg(target_arch = "x86_64")]
    if n >= 64 {
        let blocks = n / 64;
        // SAFETY: the loop copies `blocks` 64-byte blocks from rsi to rdi
        // with unaligned SSE2 loads and stores (SSE2 is part of x86-64):
        // both ranges hold at least blocks * 64 bytes (contract); it uses
        // no stack, and the clobbered registers are declared.
        unsafe {
            core::arch::asm!(
                "2:",
                "movdqu {a}, [{s}]",
                "movdqu {b}, [{s} + 16]",
                "movdqu {c}, [{s} + 32]",
                "movdqu {d}, [{s} + 48]",
                "movdqu [{t}], {a}",
                "movdqu [{t} + 16], {b}",
                "movdqu [{t} + 32], {c}",
                "movdqu [{t} + 48], {d}",
                "add {s}, 64",
                "add {t}, 64",
                "dec {k}",
                "jnz 2b",
                s = inout(reg) src => _,
                t = inout(reg) dst => _,
                k = inout(reg) blocks => _,
                a = out(xmm_reg) _,
                b = out(xmm_reg) _,
                c = out(xmm_reg) _,
                d = out(xmm_reg) _,
                options(nostack)
            );
        }
        let done = blocks * 64;
        // SAFETY: the rest of both ranges.
        unsafe { copy_words(src.add(done), dst.add(done), n - done) };
        return;
    }
    // SAFETY: forwarded contract.
    unsafe { copy_words(src, dst, n) }
}

/// Copies `n` bytes from shared `src` to private `dst` with relaxed atomic
/// loads: bytes up to an 8-byte boundary of `src`, then words, then bytes
/// (just words for an aligned multiple of 8, such as a small archive in a
/// frame, whose payload is 16-aligned).
///
/// # Safety
///
/// `src..src+n` valid for reads, `dst..dst+n` valid for writes and private.
#[inline]
unsafe fn copy_words(src: *const u8, dst: *mut u8, n: usize) {
    if (src as usize | n) % 8 == 0 {
        // SAFETY: forwarded contract; src is 8-aligned.
        unsafe { copy_aligned_words(src, dst, n / 8) };
        return;
    }
    let head = src.align_offset(8).min(n);
    let words = (n - head) / 8;
    let tail = head + words * 8;
    // SAFETY: the three parts of the ranges (contract); src + head is
    // 8-aligned (or head == n and there are no words).
    unsafe {
        copy_bytes(src, dst, head);
        copy_aligned_words(src.add(head), dst.add(head), words);
        copy_bytes(src.add(tail), dst.add(tail), n - tail);
    }
}

/// Copies `words` 8-byte words from shared, 8-aligned `src` to private `dst`.
///
/// # Safety
///
/// `src` 8-aligned; `src..src+8*words` valid for reads, `dst..dst+8*words`
/// valid for writes and private.
#[inline(always)]
unsafe fn copy_aligned_words(src: *const u8, dst: *mut u8, words: usize) {
    let mut at = 0;
    while at < words * 8 {
        // SAFETY: the word lies inside the range and is aligned (contract);
        // dst needs no alignment for an unaligned write.
        unsafe {
            let v = (*src.add(at).cast::<AtomicU64>()).load(Ordering::Relaxed);
            dst.add(at).cast::<u64>().write_unaligned(v);
        }
        at += 8;
    }
}

/// Copies `n` bytes from shared `src` to private `dst`, one at a time.
///
/// # Safety
///
/// `src..src+n` valid for reads, `dst..dst+n` valid for writes and private.
#[inline(always)]
unsafe fn copy_bytes(src: *const u8, dst: *mut u8, n: usize) {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n; any address is aligned for AtomicU8.
        unsafe { *dst.add(i) = (*src.add(i).cast::<AtomicU8>()).load(Ordering::Relaxed) };
        i += 1;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn copies_every_length_and_offset() {
        let src: [u8; 300] = core::array::from_fn(|i| (i * 7 + 3) as u8);
        for at in 0..17 {
            for len in 0..(300 - at) {
                let p = PeerBytes::from_slice(&src[at..at + len]);
                let mut out = [0u8; 300];
                p.copy_to(&mut out[..len]);
                assert_eq!(out[..len], src[at..at + len]);
                assert!(p.equals(&src[at..at + len]));
            }
        }
    }

    #[test]
    fn sub_and_arrays_stay_inside() {
        let src = [1u8, 2, 3, 4, 5];
        let p = PeerBytes::from_slice(&src);
        assert_eq!(p.sub(3, 10).len(), 2);
        assert_eq!(p.sub(9, 1).len(), 0);
        assert_eq!(p.read_array::<5>(), Some(src));
        assert_eq!(p.read_array::<6>(), None);
        assert!(!p.equals(&src[..4]));
    }
}
