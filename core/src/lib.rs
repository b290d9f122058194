//! # shmproc-core
//!
//! The `#![no_std]` core of [shmproc](https://docs.rs/shmproc): everything that
//! lives *inside* a shared-memory region. It maps nothing itself and needs no
//! allocator; the `shmproc` crate maps regions and builds the Python-like API on
//! top.
//!
//! | module | what |
//! |---|---|
//! | [`futex`] | the one place that blocks and wakes: the *shared* futex on Linux |
//! | [`time`] | absolute `CLOCK_MONOTONIC` deadlines |
//! | [`identity`] | process/thread identities (id + start time) and liveness checks |
//! | [`region`] | the region header, object directory and validation |
//! | [`raw_mutex`] | robust process-shared mutex (owner-died detection), recursive mode |
//! | [`biased_lock`] | robust lock whose steady single-thread use costs no atomic read-modify-write |
//! | [`semaphore`] | counting / bounded semaphore (a dead holder's permit is lost, as in Python) |
//! | [`robust_semaphore`] | semaphore whose permits come back when their holder's process dies |
//! | [`event`] | event flag |
//! | [`condvar`] | condition variable for the mutex |
//! | [`barrier`] | barrier that breaks on timeout or a dead party |
//! | [`owner`] | lock owner identities and liveness checks |
//! | [`spsc`] | single-producer single-consumer byte ring of frames (pipes) |
//! | [`lanes`] | a queue of several byte rings, one per producer: the claim, scan and wake protocol |
//! | [`mpmc`] | multi-producer multi-consumer slot ring that survives dead peers (queues) |
//! | [`notify`] | the rings' blocking layer: futex word + waiter count |
//! | [`asymmetric_fence`] | free fence for the hot side, `membarrier` for the sleeper |
//! | [`participants`] | which processes hold handles, for `Disconnected` |
//! | [`cache_padded`] | 128-byte padding |
//!
//! Supported platforms: Linux (tested). macOS compiles a `__ulock` futex path
//! that is not tested in CI; other Unix systems get a polling fallback.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

#[cfg(test)]
extern crate std;

#[doc(hidden)]
#[path = "doc_fixture.rs"]
pub mod __doc;
pub mod asymmetric_fence;
pub mod barrier;
pub mod biased_lock;
pub mod byte_queue;
pub mod cache_padded;
pub mod condvar;
pub mod event;
pub mod futex;
pub mod identity;
pub mod lanes;
pub mod mpmc;
pub mod notify;
pub mod owner;
pub mod participants;
pub mod peer_bytes;
mod primitive;
pub mod raw_mutex;
pub mod region;
pub mod robust_semaphore;
pub mod semaphore;
pub mod spsc;
pub mod time;

#[cfg(all(test, loom))]
mod loom_models;

pub use identity::{Identity, Liveness};
pub use region::{ObjectInfo, Region, RegionError, RegionObject};
pub use time::Deadline;
