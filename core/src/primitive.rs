//! Synchronisation primitives used by the core, swapped for loom's under `cfg(loom)`.
//!
//! Every atomic that a model checks goes through this module, as in crossbeam's
//! `primitive` shim, so that `RUSTFLAGS="--cfg loom" cargo test` explores the
//! interleavings of the real algorithms rather than of a copy.

#[cfg(not(loom))]
pub(crate) mod sync {
    pub(crate) mod atomic {
        pub(crate) use core::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};
    }
}

#[cfg(loom)]
pub(crate) mod sync {
    pub(crate) mod atomic {
        pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};
    }
}

/// A hint to the processor (or to loom's scheduler) that we are spinning.
#[inline]
pub(crate) fn spin_loop() {
    #[cfg(not(loom))]
    core::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}
