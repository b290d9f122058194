//! # shmproc
//!
//! Process-parallel programming on shared memory: Python's `multiprocessing`,
//! rebuilt for Rust. Processes, segments and (in later modules) locks, queues
//! and pools share state through `MAP_SHARED` memory and the shared futex
//! instead of pipes and pickling.
//!
//! ## Getting started
//!
//! Call [`init`] first in `main` (needed for spawn mode, harmless otherwise):
//!
//! ```no_run
//! fn square(x: u64) -> i32 {
//!     println!("{x}^2 = {}", x * x);
//!     0
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     shmproc::init();
//!     let mut a = shmproc::Process::spawn(|| println!("forked child"))?;
//!     let mut b = shmproc::Process::spawn_fn(square, 7u64)?;
//!     assert_eq!(a.join()?, 0);
//!     assert_eq!(b.join()?, 0);
//!     Ok(())
//! }
//! ```
//!
//! ## Python → Rust
//!
//! | Python `multiprocessing` | shmproc |
//! |---|---|
//! | `Process(target=f, args=(a,)).start()` | [`Process::spawn`]`(move \|\| f(a))` (fork) / [`Process::spawn_fn`]`(f, a)` (spawn) |
//! | `Process(name=.., daemon=True)` | [`Process::builder`]`().name(..).daemon(true).spawn(..)` |
//! | `p.pid`, `p.name`, `p.daemon` | [`Process::pid`], [`Process::name`], [`Process::daemon`] |
//! | `p.is_alive()` | [`Process::is_alive`] |
//! | `p.join()` / `p.join(timeout)` | [`Process::join`] / [`Process::join_timeout`] |
//! | `p.terminate()` / `p.kill()` | [`Process::terminate`] / [`Process::kill`] |
//! | `p.exitcode` | [`Process::exitcode`] |
//! | `current_process()` | [`current_process`] |
//! | `parent_process()` | [`parent_process`] |
//! | `active_children()` | [`active_children`] |
//! | `cpu_count()` | [`cpu_count`] |
//! | `shared_memory.SharedMemory(name, create=True)` | [`Segment::create_named`] / [`Segment::open`] |
//! | `set_start_method("fork" / "spawn")` | choose per call: `spawn` (fork) or `spawn_fn` (re-exec) |
//!
//! ## Platform support
//!
//! Linux is the supported and tested platform. The core's futex layer has a
//! macOS `__ulock` path that compiles there but is not tested in CI; process
//! management (memfd, pidfd, `PR_SET_PDEATHSIG`) is Linux-only today.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod array;
pub mod barrier;
pub mod condition;
mod error;
pub mod event;
mod globals;
mod message;
pub mod mutex;
mod object;
mod plain;
pub mod process;
pub mod segment;
pub mod semaphore;
pub mod value;
mod spawn;
mod thread_id;

pub use array::{Array, ArrayGuard};
pub use barrier::{Barrier, BarrierError, BarrierWaitResult};
pub use condition::{Condition, WaitTimeoutResult};
pub use error::Error;
pub use event::Event;
pub use semaphore::{BoundedSemaphore, ReleaseError, Semaphore, SemaphoreGuard};
pub use value::Value;
pub use message::Message;
pub use mutex::{Lock, LockResult, LockTimeoutError, Mutex, MutexGuard, OwnerDied, RLock, RLockGuard, TryLockError};
pub use plain::Plain;
/// Derive [`Plain`] data with `bytemuck::{Zeroable, AnyBitPattern}`.
pub use bytemuck;
pub use process::{
    active_children, cpu_count, current_process, parent_process, Builder, ChildInfo, ChildResult,
    CurrentProcess, ParentProcess, Process, ProcessError,
};
pub use segment::{Segment, SegmentError, SegmentInfo, SegmentStatus};
/// The `no_std` core: regions, futex, identities.
pub use shmproc_core as core;
pub use shmproc_core::{Deadline, Identity};

/// Initialises shmproc. Call it first in `main`.
///
/// In a process started by [`Process::spawn_fn`] this runs the requested
/// function and exits, never returning; otherwise it returns at once after
/// installing the fork handlers. Spawn mode refuses to start children until it
/// has been called.
pub fn init() {
    spawn::init();
}
