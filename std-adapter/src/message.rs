//! The bound every message, argument and result type satisfies ([`Message`]),
//! and the writer that serialises messages straight into shared memory
//! ([`SlotWriter`]).
//!
//! # Sizing without error text
//!
//! A message is serialised in place into space reserved in a ring. Whether it
//! fits is decided by the crate's own state, never by rkyv's error message
//! (which release builds of rkyv do not carry): [`SlotWriter`] writes what
//! fits, and once a write would pass the end of its buffer it stops writing
//! but keeps counting. rkyv never reads back what it wrote, so the
//! serialisation runs to completion either way, and the writer's final
//! position is the exact size of the archive. A message that did not fit is
//! then placed where it does (a larger frame, or an out-of-line block: see
//! `bulk.rs`) and serialised once more; an error from rkyv is always a real
//! serialisation failure.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::{ArenaHandle, SubAllocator};
use rkyv::ser::{Positional, Writer};
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};
use shmproc_core::peer_bytes::PeerBytes;

/// A type that can cross a process boundary: serialised with rkyv, validated
/// with `bytecheck` on the way in.
///
/// Implemented automatically for every type that derives
/// `rkyv::{Archive, Serialize, Deserialize}` (with rkyv's default `bytecheck`
/// support), and for the primitives, `String`, `Vec<T>`, `Option<T>`, tuples...
/// rkyv is re-exported as [`shmproc::rkyv`](crate::rkyv), so a message type
/// needs no other dependency than `shmproc`: derive with
/// `#[derive(shmproc::rkyv::Archive, shmproc::rkyv::Serialize, shmproc::rkyv::Deserialize)]`
/// and tell the derive where rkyv is with `#[rkyv(crate = shmproc::rkyv)]`.
///
/// Keep message types away from rkyv's niching wrappers (`#[rkyv(niche)]`,
/// `Niche`, `NicheInto`): they have open soundness reports.
///
/// ```
/// use shmproc::rkyv;
///
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
/// #[rkyv(crate = shmproc::rkyv)]
/// struct Job {
///     id: u64,
///     args: Vec<String>,
/// }
/// fn takes_messages<T: shmproc::Message>(_: &T) {}
/// takes_messages(&Job { id: 1, args: vec![] });
/// let q = shmproc::Queue::<Job>::bounded(2)?;
/// q.send(&Job { id: 2, args: vec!["-v".into()] })?;
/// assert_eq!(q.recv()?.id, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Message:
    Sized
    + Archive<
        Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
                      + Deserialize<Self, HighDeserializer<rancor::Error>>,
    > + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
    + for<'a, 'b> Serialize<HighSerializer<SlotWriter<'b>, ArenaHandle<'a>, rancor::Error>>
    + for<'a, 'b> Serialize<HighSerializer<SlotWriter<'b>, SubAllocator<'a>, rancor::Error>>
{
}

impl<T> Message for T where
    T: Archive<
            Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
                          + Deserialize<T, HighDeserializer<rancor::Error>>,
        > + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
        + for<'a, 'b> Serialize<HighSerializer<SlotWriter<'b>, ArenaHandle<'a>, rancor::Error>>
        + for<'a, 'b> Serialize<HighSerializer<SlotWriter<'b>, SubAllocator<'a>, rancor::Error>>
{
}

/// An rkyv [`Writer`] over a fixed buffer (a frame or slot in shared memory)
/// that records an overflow instead of failing: bytes that fit are written,
/// and once a write would pass the end nothing more is written but the
/// position keeps counting, so [`pos`](Positional::pos) at the end is the
/// archive's full size. The archive is complete exactly when
/// [`fits`](SlotWriter::fits).
///
/// ```
/// use shmproc::message::SlotWriter;
/// use shmproc::rkyv::{self, rancor};
///
/// let mut small = [0u8; 8];
/// let w = rkyv::api::high::to_bytes_in::<_, rancor::Error>(&"a string longer than 8".to_string(), SlotWriter::new(&mut small))?;
/// assert!(!w.fits());
/// let needed = w.len(); // the exact size, learned without a second buffer
///
/// let mut big = vec![0u8; needed];
/// let w = rkyv::api::high::to_bytes_in::<_, rancor::Error>(&"a string longer than 8".to_string(), SlotWriter::new(&mut big))?;
/// assert!(w.fits());
/// assert_eq!(w.len(), needed);
/// # Ok::<(), rancor::Error>(())
/// ```
#[derive(Debug)]
pub struct SlotWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> SlotWriter<'a> {
    /// A writer that starts at the beginning of `buf`.
    ///
    /// ```
    /// let mut buf = [0u8; 16];
    /// let w = shmproc::message::SlotWriter::new(&mut buf);
    /// assert_eq!((w.len(), w.fits()), (0, true));
    /// ```
    #[inline]
    pub fn new(buf: &'a mut [u8]) -> SlotWriter<'a> {
        SlotWriter { buf, pos: 0 }
    }

    /// Bytes the archive needs so far (all of it once serialisation ended).
    ///
    /// ```
    /// use shmproc::rkyv::{self, rancor};
    /// let mut buf = [0u8; 64];
    /// let w = rkyv::api::high::to_bytes_in::<_, rancor::Error>(&7u64, shmproc::message::SlotWriter::new(&mut buf))?;
    /// assert_eq!(w.len(), 8);
    /// # Ok::<(), rancor::Error>(())
    /// ```
    #[inline]
    #[must_use]
    pub fn len(&self) -> usize {
        self.pos
    }

    /// Whether nothing was written yet.
    ///
    /// ```
    /// let mut buf = [0u8; 4];
    /// assert!(shmproc::message::SlotWriter::new(&mut buf).is_empty());
    /// ```
    #[inline]
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// Whether every byte written so far landed in the buffer.
    ///
    /// ```
    /// use shmproc::rkyv::{self, rancor};
    /// let mut buf = [0u8; 4];
    /// let w = rkyv::api::high::to_bytes_in::<_, rancor::Error>(&7u64, shmproc::message::SlotWriter::new(&mut buf))?;
    /// assert!(!w.fits());
    /// # Ok::<(), rancor::Error>(())
    /// ```
    #[inline]
    #[must_use]
    pub fn fits(&self) -> bool {
        self.pos <= self.buf.len()
    }
}

impl Positional for SlotWriter<'_> {
    #[inline]
    fn pos(&self) -> usize {
        self.pos
    }
}

impl<E> Writer<E> for SlotWriter<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        let end = self.pos.saturating_add(bytes.len());
        // Writes are sequential, so once one is skipped `pos` stays past the
        // end and `fits` stays false: a partial archive is never taken for a
        // whole one.
        if let Some(dst) = self.buf.get_mut(self.pos..end) {
            dst.copy_from_slice(bytes);
        }
        self.pos = end;
        Ok(())
    }
}

/// What [`encode_into`] did: the layout's own writer result (the byte ring
/// in core asks its frame writers the same question).
pub(crate) use shmproc_core::byte_queue::Written;

/// Serialises `value` into a fresh aligned buffer.
pub(crate) fn encode<T: Message>(value: &T) -> Result<AlignedVec, rancor::Error> {
    rkyv::to_bytes::<rancor::Error>(value)
}

/// Serialises `value` into a `Vec` of exactly its archive's size: one
/// allocation (the archive is written on the stack first, or sized by a
/// counting pass when larger), where [`encode`]'s aligned buffer takes an
/// aligned allocation and grows. For bytes that are copied on (into a task
/// message): a reader validates them from an aligned copy.
pub(crate) fn encode_vec<T: Message>(value: &T) -> Result<Vec<u8>, rancor::Error> {
    let mut stack = [0u8; 256];
    let n = match encode_into(value, &mut stack)? {
        Written::Done(n) => return Ok(stack[..n].to_vec()),
        Written::Needs(n) => n,
    };
    let mut v = vec![0u8; n];
    match encode_into(value, &mut v)? {
        Written::Done(m) if m == n => Ok(v),
        // A value that serialises differently the second time (a `Serialize`
        // impl with state): the aligned path takes whatever it writes now.
        _ => encode(value).map(|a| a.to_vec()),
    }
}

/// Validates `bytes` and deserialises a `T` from them. `bytes` must be aligned
/// for `T::Archived` (an `AlignedVec` is).
pub(crate) fn decode<T: Message>(bytes: &[u8]) -> Result<T, rancor::Error> {
    rkyv::from_bytes::<T, rancor::Error>(bytes)
}

/// Serialises `value` straight into `buf` (a frame or slot in shared
/// memory): `Done(n)` when the `n`-byte archive fits, `Needs(n)` when it
/// needs `n` bytes (module docs). An error is a real serialisation failure.
///
/// Scratch space comes first from a small buffer on the stack (enough for
/// plain values and short collections, and free of the thread-local arena's
/// bookkeeping); if that runs out, the serialisation is redone with rkyv's
/// arena.
///
/// A trivially copyable type (rkyv's [`COPY_OPTIMIZATION`](Archive::COPY_OPTIMIZATION):
/// the primitives on little-endian targets, arrays and tuples of them, structs
/// that opt in) skips rkyv altogether: its archive is its own bytes, which are
/// copied (see [`copy_archive`]).
#[inline(always)]
pub(crate) fn encode_into<T: Message>(value: &T, buf: &mut [u8]) -> Result<Written, rancor::Error> {
    if is_plain_copy::<T>() {
        return Ok(copy_archive(value, buf));
    }
    let mut scratch = [core::mem::MaybeUninit::<u8>::uninit(); 512];
    let fast = rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(
        value,
        SlotWriter::new(&mut *buf),
        SubAllocator::new(&mut scratch),
    );
    let w = match fast {
        Ok(w) => w,
        // The stack scratch ran out (or a real failure, which the arena
        // attempt reports again).
        Err(_) => rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, SlotWriter::new(buf))?,
    };
    Ok(if w.fits() { Written::Done(w.len()) } else { Written::Needs(w.len()) })
}

/// Whether `T`'s archive is its own bytes: rkyv attests that `T` is
/// trivially copyable (no uninitialised bytes, archived with the same
/// layout: the premise under which rkyv itself serialises a `[T]` by copying
/// its bytes), and the sizes agree. A constant for each `T`.
#[inline(always)]
const fn is_plain_copy<T: Archive>() -> bool {
    T::COPY_OPTIMIZATION.is_enabled() && core::mem::size_of::<T>() == core::mem::size_of::<T::Archived>()
}

/// The size of every archive of `T` when [`is_plain_copy`] holds (each is
/// `T`'s bytes), for writers that lay out fixed-size frames.
#[inline(always)]
pub(crate) const fn plain_size<T: Archive>() -> Option<usize> {
    if is_plain_copy::<T>() {
        Some(core::mem::size_of::<T>())
    } else {
        None
    }
}

/// The archive of a value of a type for which [`is_plain_copy`] holds: its
/// bytes, written at the start of `buf` (`Done`), or the size needed when
/// `buf` is shorter (`Needs`). rkyv writes exactly these bytes for a root
/// value at position 0 (no padding is needed there, and such a type writes
/// nothing else), so a receiver validates and reads it as any archive.
#[inline(always)]
fn copy_archive<T: Archive>(value: &T, buf: &mut [u8]) -> Written {
    let size = core::mem::size_of::<T>();
    let Some(dst) = buf.get_mut(..size) else { return Written::Needs(size) };
    // SAFETY: `value` is a valid `T`, readable for `size_of::<T>()` bytes,
    // and (COPY_OPTIMIZATION's contract, checked by `is_plain_copy`) `T` has
    // no uninitialised bytes, so every byte may be read as a `u8`.
    let src = unsafe { core::slice::from_raw_parts((value as *const T).cast::<u8>(), size) };
    dst.copy_from_slice(src);
    Written::Done(size)
}

/// Deserialises a `T` from private `bytes` (copied to aligned memory first:
/// see [`decode_peer`]).
pub(crate) fn decode_copy<T: Message>(bytes: &[u8]) -> Result<T, rancor::Error> {
    decode_peer(PeerBytes::from_slice(bytes))
}

/// Copies a message that a peer may write meanwhile (a frame, slot or block
/// of shared memory) into private aligned memory with atomic loads (see
/// `shmproc_core::peer_bytes`), then validates and deserialises the copy:
/// small messages from an aligned stack copy, larger ones from a per-thread
/// buffer, so receiving does not allocate for the bytes themselves.
#[inline]
pub(crate) fn decode_peer<T: Message>(bytes: PeerBytes<'_>) -> Result<T, rancor::Error> {
    #[repr(C, align(16))]
    struct Tiny([u64; 2]);
    let len = bytes.len();
    if len <= 16 {
        // The common small message (a number, a short tuple): a two-word
        // copy in a small frame of its own.
        let mut tiny = Tiny([0; 2]);
        // SAFETY: len <= 16 bytes fit; the first `len` bytes are read after
        // the copy (all of them initialised anyway).
        let copy = unsafe {
            bytes.copy_to_raw(tiny.0.as_mut_ptr().cast::<u8>());
            core::slice::from_raw_parts(tiny.0.as_ptr().cast::<u8>(), len)
        };
        return decode::<T>(copy);
    }
    decode_peer_larger(bytes)
}

/// [`decode_peer`] of a message over 16 bytes.
#[inline(never)]
fn decode_peer_larger<T: Message>(bytes: PeerBytes<'_>) -> Result<T, rancor::Error> {
    #[repr(C, align(16))]
    struct Small([core::mem::MaybeUninit<u8>; 256]);
    let len = bytes.len();
    if len <= 256 {
        let mut small = Small([core::mem::MaybeUninit::uninit(); 256]);
        // SAFETY: len <= 256 bytes fit; the copy initialises exactly the
        // first `len` bytes, which are all that is read afterwards.
        let copy = unsafe {
            bytes.copy_to_raw(small.0.as_mut_ptr().cast::<u8>());
            core::slice::from_raw_parts(small.0.as_ptr().cast::<u8>(), len)
        };
        return decode::<T>(copy);
    }
    thread_local! {
        static BIG: core::cell::RefCell<AlignedVec> = core::cell::RefCell::new(AlignedVec::new());
    }
    let fresh = || {
        let mut v = AlignedVec::<16>::with_capacity(len);
        copy_into(&mut v, bytes);
        decode::<T>(&v)
    };
    // Beyond this, a fresh buffer (freed after use): a thread's buffer keeps
    // its largest size, up to the largest out-of-line block a channel keeps
    // for reuse (a stream of such messages then copies into warm memory).
    const KEEP: usize = crate::blocks::RECYCLE_MAX as usize;
    if len > KEEP {
        return fresh();
    }
    BIG.with(|b| match b.try_borrow_mut() {
        Ok(mut v) => {
            copy_into(&mut v, bytes);
            decode::<T>(&v)
        }
        // Re-entered (a Deserialize impl receiving from a queue): use a fresh buffer.
        Err(_) => fresh(),
    })
}

/// Replaces `v`'s contents with a copy of `bytes`.
fn copy_into(v: &mut AlignedVec, bytes: PeerBytes<'_>) {
    v.clear();
    v.reserve(bytes.len());
    // SAFETY: the capacity is at least `bytes.len()`, private; the copy
    // initialises exactly those bytes before the length covers them.
    unsafe {
        bytes.copy_to_raw(v.as_mut_ptr());
        v.set_len(bytes.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
    struct Point {
        x: u32,
        y: i32,
    }

    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
    struct Padded {
        a: u8,
        b: u64,
    }

    /// `encode_into` writes exactly rkyv's archive of `v` (whether or not it
    /// takes the copying path), reports the size needed when the buffer is
    /// short, and the archive reads back.
    fn same_as_rkyv<T: Message + PartialEq + core::fmt::Debug>(v: T) {
        let want = encode(&v).unwrap();
        let mut exact = vec![0xAAu8; want.len()];
        assert_eq!(encode_into(&v, &mut exact).unwrap(), Written::Done(want.len()));
        assert_eq!(exact[..], want[..], "{v:?}");
        let mut roomy = vec![0x55u8; want.len() + 64];
        assert_eq!(encode_into(&v, &mut roomy).unwrap(), Written::Done(want.len()));
        assert_eq!(roomy[..want.len()], want[..]);
        if !want.is_empty() {
            let mut short = vec![0u8; want.len() - 1];
            assert_eq!(encode_into(&v, &mut short).unwrap(), Written::Needs(want.len()));
        }
        assert_eq!(decode_copy::<T>(&exact).unwrap(), v);
        assert_eq!(encode_vec(&v).unwrap(), want.to_vec());
    }

    #[test]
    fn copied_archives_are_rkyvs_archives() {
        // Which types copy: the primitives (multi-byte ones on little-endian
        // targets, where rkyv's archive is the native layout), arrays of
        // them, structs without padding.
        if cfg!(target_endian = "little") {
            assert!(is_plain_copy::<u64>() && is_plain_copy::<[u32; 4]>() && is_plain_copy::<Point>());
        }
        assert!(is_plain_copy::<u8>() && is_plain_copy::<[u8; 3]>());
        assert!(!is_plain_copy::<Padded>() && !is_plain_copy::<String>() && !is_plain_copy::<Vec<u64>>());
        same_as_rkyv(0x0102_0304_0506_0708u64);
        same_as_rkyv(u64::MAX);
        same_as_rkyv(-5i16);
        same_as_rkyv(7u8);
        same_as_rkyv([1u8, 2, 3]);
        same_as_rkyv(true);
        same_as_rkyv(1.5f64);
        same_as_rkyv(u128::MAX - 3);
        same_as_rkyv([1u32, 2, 3, 4]);
        same_as_rkyv(Point { x: 3, y: -4 });
        same_as_rkyv(());
        // And the types rkyv serialises itself.
        same_as_rkyv(Padded { a: 1, b: 2 });
        same_as_rkyv((1u8, 2u64));
        same_as_rkyv("text".to_string());
        same_as_rkyv(vec![1u64, 2, 3]);
        same_as_rkyv(Some(9u32));
        // Past `encode_vec`'s stack buffer: sized by a counting pass.
        same_as_rkyv("x".repeat(300));
        same_as_rkyv((0..100u64).collect::<Vec<_>>());
    }
}
