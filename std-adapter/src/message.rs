//! The bound every message, argument and result type satisfies: rkyv
//! `Archive + Serialize`, with a validated (`bytecheck`) archived form that can
//! be deserialised back.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
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
pub trait Message:
    Sized
    + Archive<
        Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
                      + Deserialize<Self, HighDeserializer<rancor::Error>>,
    > + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
    + for<'a, 'b> Serialize<HighSerializer<Buffer<'b>, ArenaHandle<'a>, rancor::Error>>
{
}

impl<T> Message for T where
    T: Archive<
            Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
                          + Deserialize<T, HighDeserializer<rancor::Error>>,
        > + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
        + for<'a, 'b> Serialize<HighSerializer<Buffer<'b>, ArenaHandle<'a>, rancor::Error>>
{
}

/// Serialises `value` into a fresh aligned buffer.
pub(crate) fn encode<T: Message>(value: &T) -> Result<AlignedVec, rancor::Error> {
    rkyv::to_bytes::<rancor::Error>(value)
}

/// Validates `bytes` and deserialises a `T` from them. `bytes` must be aligned
/// for `T::Archived` (an `AlignedVec` is).
pub(crate) fn decode<T: Message>(bytes: &[u8]) -> Result<T, rancor::Error> {
    rkyv::from_bytes::<T, rancor::Error>(bytes)
}

/// Serialises `value` straight into `buf` (a slot in shared memory); returns
/// the bytes used, or `None` if it does not fit.
pub(crate) fn encode_into<T: Message>(value: &T, buf: &mut [u8]) -> Result<usize, EncodeError> {
    match rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, Buffer::from(buf)) {
        Ok(written) => Ok(written.len()),
        Err(e) => {
            let msg = e.to_string();
            if msg.contains("overflow") || msg.contains("capacity") {
                Err(EncodeError::TooLarge)
            } else {
                Err(EncodeError::Other(msg))
            }
        }
    }
}

/// Why [`encode_into`] failed.
#[derive(Debug)]
pub(crate) enum EncodeError {
    TooLarge,
    Other(String),
}
