//! Set-ups shared by this crate's documentation examples. Not API: hidden
//! from the docs, exempt from semver, and free to change with the examples.
//!
//! Every function maps fresh zeroed private memory that is never unmapped
//! (an example runs once and exits), and panics if the system refuses it:
//! there is nothing an example could do instead.

use core::ptr::NonNull;

use crate::identity::Identity;
use crate::mpmc::MpmcRing;
use crate::owner::Owner;
use crate::region::Region;
use crate::spsc::{Consumer, Producer, SpscRing};

/// `len` zeroed bytes, page-aligned (so aligned for every object), never
/// unmapped.
#[must_use]
pub fn memory(len: usize) -> NonNull<u8> {
    // SAFETY: a new anonymous private mapping; no memory of ours is touched.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len.max(1),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANON,
            -1,
            0,
        )
    };
    assert!(p != libc::MAP_FAILED, "doc fixture: mmap failed");
    NonNull::new(p.cast()).expect("doc fixture: mmap returned null")
}

/// A byte ring of `capacity` bytes with its producer and consumer: the
/// example is their only user.
#[must_use]
pub fn spsc(capacity: usize) -> (SpscRing, Producer, Consumer) {
    let len = SpscRing::required_size(capacity);
    // SAFETY: `len` fresh writable bytes, page-aligned, never unmapped.
    let ring = unsafe { SpscRing::init(memory(len), len, capacity) }.expect("doc fixture: ring");
    // SAFETY: the ring is new and nobody else can reach it: these are its
    // only producer and consumer (an example that makes another does so
    // under its own SAFETY comment).
    let (tx, rx) = unsafe { (ring.producer(), ring.consumer()) };
    (ring, tx, rx)
}

/// A slot ring of `slots` slots of `slot_size` bytes, and the calling thread
/// as its owner.
#[must_use]
pub fn mpmc(slots: usize, slot_size: usize) -> (MpmcRing, Owner) {
    let len = MpmcRing::required_size(slots, slot_size).expect("doc fixture: ring size");
    // SAFETY: `len` fresh writable bytes, page-aligned, never unmapped.
    let ring = unsafe { MpmcRing::init(memory(len), len, slots, slot_size) }.expect("doc fixture: ring");
    (ring, Owner::current())
}

/// A region of `len` bytes with room for 8 objects, created by this process.
#[must_use]
pub fn region(len: usize) -> Region {
    // SAFETY: `len` fresh writable bytes, page-aligned, never unmapped.
    unsafe { Region::create(memory(len), len, Identity::current_process(), 0, 8) }.expect("doc fixture: region")
}
