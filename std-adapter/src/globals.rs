//! Per-process state that must survive `fork()` in a usable shape.
//!
//! After `fork()` only the calling thread exists in the child; a `std::sync::Mutex`
//! that another thread of the parent held stays locked forever. The crate's own
//! process-global state therefore sits behind [`ForkSafe`], a tiny spin lock the
//! child may forcibly reset, because in the fresh child no other thread can hold
//! or observe it.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

/// A spin-locked cell whose lock a freshly forked child can reset.
pub(crate) struct ForkSafe<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialised by `locked` (Acquire on lock, Release on
// unlock), like a mutex; T: Send suffices as for std's Mutex.
unsafe impl<T: Send> Sync for ForkSafe<T> {}

impl<T> ForkSafe<T> {
    pub(crate) const fn new(value: T) -> Self {
        ForkSafe { locked: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    /// Runs `f` with exclusive access. Critical sections are a few instructions
    /// long (no blocking calls inside), so spinning is appropriate.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        while self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            std::hint::spin_loop();
            std::thread::yield_now();
        }
        struct Unlock<'a>(&'a AtomicBool);
        impl Drop for Unlock<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _unlock = Unlock(&self.locked);
        // SAFETY: we hold the lock, so no other reference to the value exists.
        f(unsafe { &mut *self.value.get() })
    }

    /// In a freshly forked child: if the lock was held at the fork (by a thread
    /// that no longer exists, perhaps mid-update), unlocks it and returns false
    /// (the value may be inconsistent); otherwise returns true.
    ///
    /// # Safety
    ///
    /// Only in a freshly forked child, before it starts any thread.
    pub(crate) unsafe fn unlock_in_child(&self) -> bool {
        let was_locked = self.locked.load(Ordering::Relaxed);
        if was_locked {
            // The value may be half-updated: reset it to empty by leaking it.
            self.locked.store(false, Ordering::Release);
        }
        !was_locked
    }

    /// Forcibly unlocks and replaces the value, leaking the old one (its
    /// destructor could touch state of threads that no longer exist).
    ///
    /// # Safety
    ///
    /// Only in a freshly forked child, before it starts any thread: then no other
    /// thread exists that could hold the lock or a reference into the value.
    pub(crate) unsafe fn reset_in_child(&self, value: T) {
        // SAFETY: per the contract, we are the only thread; the old value is
        // leaked on purpose by overwriting without dropping.
        unsafe { std::ptr::write(self.value.get(), value) };
        self.locked.store(false, Ordering::Release);
    }
}
