//! Which robust locks the calling thread holds, kept in *private* memory.
//!
//! A lock word names its owner by tid (plus a recorded start time), and both
//! are readable from `/proc`: a peer can write the victim's own identity into
//! a lock it does not hold. From the word alone that forgery looks exactly
//! like the victim re-entering a lock it holds, which the old code answered
//! with a panic (`Mutex::lock`, `Array::lock`, the shared containers) or with
//! an endless wait. This module keeps a per-thread list of the locks the
//! thread really holds, so the two cases are told apart by memory no peer can
//! write:
//!
//! * the thread holds the lock: genuine re-entrance, reported as before (the
//!   documented panic of `Mutex::lock`, `WouldBlock`/`Timeout` from the
//!   fallible calls, another level for an `RLock`);
//! * it does not: the word is forged, which is a dead owner's word in effect.
//!   The lock is taken over ([`RawMutex::reclaim`]) and the caller is told
//!   `OwnerDied`, as after a crash, so the data is checked or repaired.
//!
//! The same lock may be mapped at two addresses in one process (a named
//! segment opened twice, a handle deserialised in its own process). A lookup
//! by address is the fast path; when a report names the caller and no entry
//! has the lock's address, the entries are compared by file identity
//! (`fstat` device and inode of each segment's descriptor) and offset, so
//! re-entrance through a second mapping is still re-entrance and never a
//! second guard for the same data. An entry's descriptor stays open while its
//! guard lives (the guard borrows the handle that keeps the segment mapped);
//! a guard leaked with `mem::forget` leaves its entry behind, which can only
//! make a later forged word on that very lock look like re-entrance.
//!
//! A forked child starts with an empty list (the `pthread_atfork` handler
//! clears it: the locks belong to the parent's thread).
//!
//! Cost: one thread-local push on lock and one removal on unlock, both on a
//! list as long as the number of locks the thread holds at once.

use std::cell::RefCell;
use std::os::fd::RawFd;

use shmproc_core::owner::Owner;
use shmproc_core::raw_mutex::{Acquired, LockError, RawMutex};
use shmproc_core::Deadline;

use crate::segment::Segment;

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// The lock's address in this process.
    addr: usize,
    /// The descriptor of its segment and its offset there (its identity
    /// across mappings).
    fd: RawFd,
    off: usize,
    /// Levels held (more than 1 only for an `RLock`).
    count: u32,
}

thread_local! {
    static HELD: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

/// Why a lock was not (freshly) taken.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// This thread holds the lock already (private memory says so).
    Reentered,
    /// Someone else holds it (`try_lock`).
    WouldBlock,
    /// The deadline passed.
    Timeout,
}

/// A lock in a segment, as this process sees it.
#[derive(Clone, Copy)]
pub(crate) struct Site<'a> {
    pub(crate) raw: &'a RawMutex,
    pub(crate) seg: &'a Segment,
}

impl Site<'_> {
    fn addr(&self) -> usize {
        self.raw as *const RawMutex as usize
    }

    fn entry(&self, count: u32) -> Entry {
        let base = self.seg.region().base().as_ptr() as usize;
        Entry { addr: self.addr(), fd: self.seg.as_raw_fd(), off: self.addr().wrapping_sub(base), count }
    }

    fn register(&self) {
        let e = self.entry(1);
        let _ = HELD.try_with(|h| h.borrow_mut().push(e));
    }

    /// The key (entry address) under which this thread holds the lock, if it
    /// does: by address, else by file identity and offset.
    fn held_key(&self) -> Option<usize> {
        let addr = self.addr();
        let by_addr = HELD.try_with(|h| h.borrow().iter().rev().any(|e| e.addr == addr)).unwrap_or(false);
        if by_addr {
            return Some(addr);
        }
        self.held_elsewhere()
    }

    /// Slow path: an entry for the same lock through another mapping.
    #[cold]
    fn held_elsewhere(&self) -> Option<usize> {
        let me = self.entry(0);
        let id = file_id(me.fd)?;
        let entries: Vec<Entry> = HELD.try_with(|h| h.borrow().clone()).unwrap_or_default();
        entries.iter().find(|e| e.off == me.off && file_id(e.fd) == Some(id)).map(|e| e.addr)
    }

    /// What to do with a report that the word names us: `Err(Reentered)` if
    /// we hold the lock, else take the forged lock over.
    #[cold]
    fn names_us(&self, me: &Owner) -> Result<Option<Acquired>, Refused> {
        if self.held_key().is_some() {
            return Err(Refused::Reentered);
        }
        match self.raw.reclaim(me) {
            Ok(a) => Ok(Some(a)),
            // The word changed meanwhile: an ordinary lock attempt again.
            Err(_) => Ok(None),
        }
    }

    /// Locks until `deadline` (`None`: forever) for this thread. Re-entrance
    /// is judged from private memory; a forged word is taken over
    /// (`OwnerDied`).
    pub(crate) fn lock(&self, me: &Owner, deadline: Option<Deadline>) -> Result<Acquired, Refused> {
        if self.is_held_here() {
            return Err(Refused::Reentered);
        }
        let me = &self.seg.owner(me);
        loop {
            let got = match self.raw.lock(me, deadline, self.seg.liveness()) {
                Ok(a) => a,
                Err(LockError::Deadlock) => match self.names_us(me)? {
                    Some(a) => a,
                    None => continue,
                },
                Err(LockError::Timeout) => return Err(Refused::Timeout),
                // `lock` does not report it; a later attempt decides.
                Err(LockError::WouldBlock) => {
                    if deadline.is_some_and(|d| d.has_passed()) {
                        return Err(Refused::Timeout);
                    }
                    continue;
                }
            };
            self.register();
            return Ok(got);
        }
    }

    /// Locks if possible now (taking over a dead owner's or a forged lock).
    pub(crate) fn try_lock(&self, me: &Owner) -> Result<Acquired, Refused> {
        if self.is_held_here() {
            return Err(Refused::Reentered);
        }
        let me = &self.seg.owner(me);
        let got = match self.raw.try_lock(me) {
            Ok(a) => a,
            Err(_) => match self.raw.try_lock_checked(me, self.seg.liveness()) {
                Ok(a) => a,
                Err(LockError::Deadlock) => match self.names_us(me)? {
                    Some(a) => a,
                    None => return Err(Refused::WouldBlock),
                },
                Err(_) => return Err(Refused::WouldBlock),
            },
        };
        self.register();
        Ok(got)
    }

    /// Unlocks what this thread locked through this site.
    pub(crate) fn unlock(&self, me: &Owner) {
        let addr = self.addr();
        let _ = HELD.try_with(|h| {
            let mut h = h.borrow_mut();
            if let Some(i) = h.iter().rposition(|e| e.addr == addr) {
                h.swap_remove(i);
            }
        });
        self.raw.unlock(me);
    }

    /// Whether this thread holds the lock at this very address (fast).
    fn is_held_here(&self) -> bool {
        let addr = self.addr();
        HELD.try_with(|h| h.borrow().iter().any(|e| e.addr == addr)).unwrap_or(false)
    }

    /// Recursive lock (`RLock`): another level if this thread holds it
    /// (counted in private memory, never in the shared word), else a lock as
    /// [`lock`](Site::lock). Returns how and the key to release with.
    pub(crate) fn lock_recursive(
        &self,
        me: &Owner,
        deadline: Option<Deadline>,
        try_only: bool,
    ) -> Result<(Acquired, usize), Refused> {
        if let Some(key) = self.again(self.addr()) {
            return Ok((Acquired::Locked, key));
        }
        let r = if try_only { self.try_lock(me) } else { self.lock(me, deadline) };
        match r {
            Ok(a) => Ok((a, self.addr())),
            // Held through another mapping: one more level on that entry.
            Err(Refused::Reentered) => match self.held_key().and_then(|k| self.again(k)) {
                Some(key) => Ok((Acquired::Locked, key)),
                None => Err(if try_only { Refused::WouldBlock } else { Refused::Timeout }),
            },
            Err(e) => Err(e),
        }
    }

    /// Adds a level to the entry `key`, if there is one.
    fn again(&self, key: usize) -> Option<usize> {
        HELD.try_with(|h| {
            let mut h = h.borrow_mut();
            let e = h.iter_mut().rev().find(|e| e.addr == key)?;
            e.count = e.count.saturating_add(1);
            Some(key)
        })
        .ok()
        .flatten()
    }

    /// Drops one level of the entry `key`; unlocks (through this site) when
    /// it was the last.
    pub(crate) fn unlock_recursive(&self, me: &Owner, key: usize) {
        let last = HELD
            .try_with(|h| {
                let mut h = h.borrow_mut();
                match h.iter().rposition(|e| e.addr == key) {
                    Some(i) if h[i].count > 1 => {
                        h[i].count -= 1;
                        false
                    }
                    Some(i) => {
                        h.swap_remove(i);
                        true
                    }
                    None => false,
                }
            })
            .unwrap_or(false);
        if last {
            self.raw.unlock(me);
        }
    }
}

/// Forgets every entry (in a freshly forked child: the locks are the
/// parent's). Does not allocate or free.
pub(crate) fn reset_after_fork() {
    let _ = HELD.try_with(|h| {
        if let Ok(mut h) = h.try_borrow_mut() {
            h.clear();
        }
    });
}

/// (device, inode) of the file behind `fd`.
fn file_id(fd: RawFd) -> Option<(u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `stat` into the buffer we pass; on failure
    // nothing is read from it.
    let r = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    if r != 0 {
        return None;
    }
    // SAFETY: fstat succeeded, so it initialised the buffer.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)]
    Some((st.st_dev as u64, st.st_ino as u64))
}
