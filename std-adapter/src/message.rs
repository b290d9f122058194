//! The bound every message, argument and result type satisfies: rkyv
//! `Archive + Serialize`, with a validated (`bytecheck`) archived form that can
//! be deserialised back.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::{ArenaHandle, SubAllocator};
use rkyv::ser::writer::Buffer;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

/// A type that can cross a process boundary: serialised with rkyv, validated
/// with `bytecheck` on the way in.
///
/// Implemented automatically for every type that derives
/// `rkyv::{Archive, Serialize, Deserialize}` (with rkyv's default `bytecheck`
/// support), and for the primitives, `String`, `Vec<T>`, `Option<T>`, tuples...
///
/// Keep message types away from rkyv's niching wrappers (`#[rkyv(niche)]`,
/// `Niche`, `NicheInto`): they have open soundness reports.
///
/// ```
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
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
    + for<'a, 'b> Serialize<HighSerializer<Buffer<'b>, ArenaHandle<'a>, rancor::Error>>
    + for<'a, 'b> Serialize<HighSerializer<Buffer<'b>, SubAllocator<'a>, rancor::Error>>
{
}

impl<T> Message for T where
    T: Archive<
            Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
                          + Deserialize<T, HighDeserializer<rancor::Error>>,
        > + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
        + for<'a, 'b> Serialize<HighSerializer<Buffer<'b>, ArenaHandle<'a>, rancor::Error>>
        + for<'a, 'b> Serialize<HighSerializer<Buffer<'b>, SubAllocator<'a>, rancor::Error>>
{
}

/// Serialises `value` into a fresh aligned buffer.
pub(crate) fn encode<T: Message>(value: &T) -> Result<AlignedVec, rancor::Error> {
    rkyv::to_bytes::<rancor::Error>(value)
}

/// Serialises `value` into `buf` (cleared first), reusing its allocation.
pub(crate) fn encode_reusing<T: Message>(value: &T, mut buf: AlignedVec) -> Result<AlignedVec, rancor::Error> {
    buf.clear();
    rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, buf)
}

/// Validates `bytes` and deserialises a `T` from them. `bytes` must be aligned
/// for `T::Archived` (an `AlignedVec` is).
pub(crate) fn decode<T: Message>(bytes: &[u8]) -> Result<T, rancor::Error> {
    rkyv::from_bytes::<T, rancor::Error>(bytes)
}

/// Serialises `value` straight into `buf` (a slot in shared memory); returns
/// the bytes used.
///
/// Scratch space comes first from a small buffer on the stack (enough for
/// plain values and short collections, and free of the thread-local arena's
/// bookkeeping); if that runs out, the serialisation is redone with rkyv's
/// arena.
#[inline(always)]
pub(crate) fn encode_into<T: Message>(value: &T, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let mut scratch = [core::mem::MaybeUninit::<u8>::uninit(); 512];
    let fast = rkyv::api::high::to_bytes_in_with_alloc::<_, _, rancor::Error>(
        value,
        Buffer::from(&mut *buf),
        SubAllocator::new(&mut scratch),
    );
    let result = match fast {
        Ok(written) => return Ok(written.len()),
        Err(_) => rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, Buffer::from(buf)),
    };
    match result {
        Ok(written) => Ok(written.len()),
        Err(e) => {
            // rkyv reports a full buffer as "overflowed buffer ...".
            let msg = e.to_string();
            if msg.contains("overflow") {
                Err(EncodeError::TooLarge)
            } else {
                Err(EncodeError::Other(msg))
            }
        }
    }
}

/// Deserialises a `T` from `bytes` (copied out of shared memory by the
/// caller): small messages are validated from an aligned stack copy, larger
/// ones from a per-thread buffer, so receiving does not allocate for the
/// bytes themselves.
pub(crate) fn decode_copy<T: Message>(bytes: &[u8]) -> Result<T, rancor::Error> {
    #[repr(C, align(16))]
    struct Small([core::mem::MaybeUninit<u8>; 256]);
    if bytes.len() <= 256 {
        let mut small = Small([core::mem::MaybeUninit::uninit(); 256]);
        // SAFETY: bytes.len() <= 256 bytes fit; the copy initialises exactly the
        // first bytes.len() bytes, which are all that is read afterwards.
        let copy = unsafe {
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), small.0.as_mut_ptr().cast::<u8>(), bytes.len());
            core::slice::from_raw_parts(small.0.as_ptr().cast::<u8>(), bytes.len())
        };
        return decode::<T>(copy);
    }
    thread_local! {
        static BIG: core::cell::RefCell<AlignedVec> = core::cell::RefCell::new(AlignedVec::new());
    }
    BIG.with(|b| match b.try_borrow_mut() {
        Ok(mut v) => {
            v.clear();
            v.extend_from_slice(bytes);
            decode::<T>(&v)
        }
        // Re-entered (a Deserialize impl receiving from a queue): use a fresh buffer.
        Err(_) => {
            let mut v = AlignedVec::<16>::with_capacity(bytes.len());
            v.extend_from_slice(bytes);
            decode::<T>(&v)
        }
    })
}

/// Why [`encode_into`] failed.
#[derive(Debug)]
pub(crate) enum EncodeError {
    TooLarge,
    Other(String),
}
