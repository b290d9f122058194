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
//!
//! Supported platforms: Linux (tested). macOS compiles a `__ulock` futex path
//! that is not tested in CI; other Unix systems get a polling fallback.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

#[cfg(test)]
extern crate std;

pub mod futex;
pub mod identity;
mod primitive;
pub mod region;
pub mod time;

pub use identity::{Identity, Liveness};
pub use region::{ObjectInfo, Region, RegionError, RegionObject};
pub use time::Deadline;
