//! Liveness the kernel keeps: a per-process record lock on each segment's
//! file, so that a lock owner of *another pid namespace* can be proven dead.
//!
//! # Why
//!
//! A recorded owner is judged by its tid and start time in `/proc`
//! (`shmproc_core::identity`). That proves death only inside the judge's own
//! pid namespace: a tid of another namespace (two containers sharing
//! `/dev/shm`, a parent namespace looking at a child one) means nothing here,
//! and the check fails closed, so a dead foreign owner's lock was never
//! recovered.
//!
//! # How
//!
//! Every process that attaches a segment, and knows its pid namespace, opens
//! the segment's file a second time (a private open file description, via
//! `/proc/self/fd`) and takes an `F_OFD_SETLK` write lock on one byte far past
//! the end of the file, at an offset made of its (namespace, pid):
//! `2⁶⁰ + (ns << 22 | pid)`. The kernel drops that lock when the description
//! is closed, which happens when the process dies (SIGKILL included), and
//! `F_OFD_GETLK` shows it to every process of every namespace that has the
//! same file open. One description per file and process is shared by every
//! [`Segment`](crate::Segment) handle of that file in the process, and closed
//! with the last of them.
//!
//! The owner records itself with [`KERNEL_LIVE`] set in its pid
//! (`shmproc_core::owner::Owner::pid`) only once its process holds that
//! lock, so a judge (this module's [`SegmentLiveness`]) that finds such a
//! record, an owner of a namespace it cannot read, and *no* lock at the
//! owner's offset has proof that the owner's process is gone. Anything else
//! (no flag, no lock support, an error) fails closed, as before.
//!
//! # Fork
//!
//! A forked child inherits the parent's descriptions; if it kept them, the
//! parent's lock would outlive the parent. The `pthread_atfork` child handler
//! therefore gives each inherited file a description of the child's own,
//! locked at the child's offset, and closes the parent's. A child that made
//! a new pid namespace is keyed by the new namespace and its pid there.
//!
//! # Limits
//!
//! * Process-level: a dead *thread* of a live process keeps looking alive to
//!   a judge of another namespace (its process's lock is still there), so its
//!   locks are not recovered from there (waits with a deadline time out).
//! * A process that cannot read its own namespace (no `/proc`) takes no lock
//!   and records no flag: its foreign judges cannot prove its death.
//! * Covered: the robust locks (`Lock`, `RLock`, `Mutex`, `Condition`'s
//!   lock, `Value`/`Array` locks, `SharedMap`/`SharedList`), the byte-ring
//!   queue sides (a receiver or sender that died holding its side, a
//!   `RecvRef` included), slot-ring claims, participants tables (so
//!   `Disconnected` when the last sender died), barrier arrivals (the
//!   barrier breaks) and robust-semaphore holders (their permits come
//!   back). Each records its holder's pid with [`KERNEL_LIVE`] while the
//!   holder's process holds its record.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Weak};

use shmproc_core::identity::{liveness_in, Liveness};
use shmproc_core::owner::{Owner, OwnerCheck, ProcLiveness, KERNEL_LIVE};

use crate::globals::ForkSafe;

/// Offset of the first liveness byte: far past any segment's end.
const KEY_BASE: u64 = 1 << 60;
/// Pids fit in 22 bits (Linux's `PID_MAX_LIMIT` is 2²²).
const PID_BITS: u32 = 22;

/// The byte that process `pid` of pid namespace `ns` locks.
fn key(ns: u32, pid: u32) -> Option<i64> {
    if ns == 0 || pid == 0 || pid >= 1 << PID_BITS {
        return None;
    }
    i64::try_from(KEY_BASE | (u64::from(ns) << PID_BITS) | u64::from(pid)).ok()
}

/// A one-byte write-lock request (or query) at `at`.
fn request(at: i64) -> libc::flock {
    // SAFETY: `flock` is plain data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = at;
    fl.l_len = 1;
    fl
}

/// This process's liveness record on one file.
pub(crate) struct LiveFile {
    dev: u64,
    ino: u64,
    /// A descriptor of the file (a duplicate of the first segment's), to
    /// open a new description from when the lock is taken late.
    src: OwnedFd,
    /// Our private description of the file, holding the lock (-1: none).
    fd: AtomicI32,
    /// The pid whose byte `fd` holds locked (0: none): equal to the caller's
    /// pid only in the process that took it (a forked child sees its
    /// parent's until it has its own).
    pid: AtomicU32,
    /// The last pid for which taking the lock failed (so that a process
    /// without a known namespace tries once per file, not per lock).
    tried: AtomicU32,
}

impl Drop for LiveFile {
    fn drop(&mut self) {
        let fd = self.fd.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: `fd` was opened by `lock_file` and is owned by this
            // record alone; closing it drops our lock.
            unsafe { libc::close(fd) };
        }
    }
}

impl LiveFile {
    /// Whether the process of `pid` (namespace `ns`) holds its byte: `None`
    /// when that cannot be told.
    fn holder_alive(&self, ns: u32, pid: u32) -> Option<bool> {
        let fd = self.fd.load(Ordering::Relaxed);
        let at = key(ns, pid)?;
        // A lock is never reported to the description that holds it: our own
        // byte would read as free. Ours is not for this check to judge.
        // (Our namespace unknown: the same pid may be ours, so no verdict.)
        // And only a description of our own: an inherited one (a child whose
        // fork handler could not replace it) holds the parent's byte, which
        // would read as free through it.
        let (me, my_ns) = me();
        if !self.held_by(me) || (pid == me && (ns == my_ns || my_ns == 0)) {
            return None;
        }
        let mut fl = request(at);
        // SAFETY: `fd` is open while `self` lives; `fl` is a valid flock.
        if unsafe { libc::fcntl(fd, libc::F_OFD_GETLK, &mut fl) } != 0 {
            return None;
        }
        Some(fl.l_type != libc::F_UNLCK as libc::c_short)
    }

    /// Whether this process holds its lock on this file now.
    #[inline]
    fn held_by(&self, pid: u32) -> bool {
        self.pid.load(Ordering::Acquire) == pid && self.fd.load(Ordering::Relaxed) >= 0
    }
}

/// Every file this process keeps a record on.
static FILES: ForkSafe<Vec<Weak<LiveFile>>> = ForkSafe::new(Vec::new());

/// Opens a private description of the file behind `src` and locks this
/// process's byte in it: the description, or `None` (no known namespace, no
/// `/proc`, no lock support).
fn lock_file(src: RawFd, ns: u32, pid: u32) -> Option<RawFd> {
    let at = key(ns, pid)?;
    let path = std::ffi::CString::new(format!("/proc/self/fd/{src}")).ok()?;
    // SAFETY: a NUL-terminated path; the result is checked.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let fl = request(at);
    // SAFETY: `fd` was just opened; `fl` is a valid flock.
    if unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &fl) } != 0 {
        // SAFETY: closing the description we just opened.
        unsafe { libc::close(fd) };
        return None;
    }
    Some(fd)
}

/// This process's (pid, pid namespace), looked up now (not cached: pid 1 of
/// a new namespace learns its namespace only once it has mounted its own
/// `/proc`).
fn me() -> (u32, u32) {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    (pid, shmproc_core::identity::current_pid_ns())
}

/// The record for the segment file behind `fd`, taken now if this process
/// has none yet (`None` if the file cannot be identified).
fn register(fd: &OwnedFd) -> Option<Arc<LiveFile>> {
    crate::process::atfork::install();
    let (dev, ino) = file_id(fd.as_raw_fd())?;
    // `try_clone` duplicates with close-on-exec set.
    let src = fd.try_clone().ok()?;
    let (pid, ns) = me();
    FILES.with(|files| {
        files.retain(|w| w.strong_count() > 0);
        if let Some(f) = files.iter().filter_map(Weak::upgrade).find(|f| f.dev == dev && f.ino == ino) {
            return Some(f);
        }
        let locked = lock_file(fd.as_raw_fd(), ns, pid);
        let f = Arc::new(LiveFile {
            dev,
            ino,
            src,
            fd: AtomicI32::new(locked.unwrap_or(-1)),
            pid: AtomicU32::new(if locked.is_some() { pid } else { 0 }),
            tried: AtomicU32::new(if locked.is_some() { 0 } else { pid }),
        });
        files.push(Arc::downgrade(&f));
        Some(f)
    })
}

/// In a freshly forked child (the `pthread_atfork` handler): replaces each
/// inherited description by one of the child's own, locked at the child's
/// byte, and closes the parent's (whose lock must die with the parent).
pub(crate) fn relock_in_child() {
    // SAFETY: called only in the single thread of a freshly forked child.
    if !unsafe { FILES.unlock_in_child() } {
        // Mid-update at the fork: keep nothing (the records stay the
        // parent's, so this child's locks carry no flag: fail closed).
        // SAFETY: as above.
        unsafe { FILES.reset_in_child(Vec::new()) };
        return;
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    let ns = shmproc_core::identity::current_pid_ns();
    FILES.with(|files| {
        for f in files.iter().filter_map(Weak::upgrade) {
            let old = f.fd.load(Ordering::Relaxed);
            // Not yet known (pid 1 of a new namespace mounts its /proc after
            // the fork): left to the first lock (`owner_for`).
            let new = if ns != 0 { lock_file(f.src.as_raw_fd(), ns, pid) } else { None };
            f.fd.store(new.unwrap_or(-1), Ordering::Relaxed);
            f.pid.store(if new.is_some() { pid } else { 0 }, Ordering::Release);
            f.tried.store(0, Ordering::Relaxed);
            if old >= 0 {
                // SAFETY: the inherited copy of the parent's description,
                // owned by this record; closing it in the child leaves the
                // parent's lock to the parent alone.
                unsafe { libc::close(old) };
            }
        }
    });
}

impl LiveFile {
    /// Takes this process's lock on the file now (after a fork whose
    /// handler could not: module docs); whether it holds it.
    #[cold]
    fn lock_late(&self, pid: u32) -> bool {
        FILES.with(|_| {
            if self.held_by(pid) {
                return true;
            }
            let (now, ns) = me();
            if now != pid {
                return false;
            }
            match lock_file(self.src.as_raw_fd(), ns, pid) {
                Some(fd) => {
                    let old = self.fd.swap(fd, Ordering::Relaxed);
                    if old >= 0 {
                        // SAFETY: a description owned by this record (a
                        // parent's, inherited): closing it leaves its lock
                        // to the parent.
                        unsafe { libc::close(old) };
                    }
                    self.pid.store(pid, Ordering::Release);
                    true
                }
                None => {
                    self.tried.store(pid, Ordering::Relaxed);
                    false
                }
            }
        })
    }
}

/// A segment's view of its process's liveness record on the segment's file:
/// the owner check for its locks ([`ProcLiveness`], plus, for an owner that
/// `/proc` cannot judge, the owner's process's record: module docs) and the
/// identity its lock owners record.
#[derive(Clone, Default)]
pub(crate) struct FileLiveness(Option<Arc<LiveFile>>);

impl FileLiveness {
    /// [`KERNEL_LIVE`] if this process holds its record on the file (taken
    /// now if it has not tried yet), else 0: the flag its participant
    /// entries carry.
    pub(crate) fn process_flag(&self) -> u32 {
        let Some(f) = self.0.as_deref() else { return 0 };
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u32;
        if f.held_by(pid) || (f.tried.load(Ordering::Relaxed) != pid && f.lock_late(pid)) {
            KERNEL_LIVE
        } else {
            0
        }
    }

    /// [`process_flag`](Self::process_flag) without taking the record now:
    /// for the fork handler, which must not try before a child that made a
    /// new pid namespace has mounted its own `/proc` (a failed try is not
    /// repeated).
    pub(crate) fn process_flag_held(&self) -> u32 {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u32;
        match self.0.as_deref() {
            Some(f) if f.held_by(pid) => KERNEL_LIVE,
            _ => 0,
        }
    }

    /// Whether the process `id` (its pid possibly flagged) is alive:
    /// `/proc` where it can tell, else the process's record on the file.
    pub(crate) fn process_alive(&self, id: shmproc_core::Identity) -> bool {
        self.is_alive_owner(id.id & !KERNEL_LIVE, Some(id.start), id.ns, id.id)
    }
}

impl std::fmt::Debug for FileLiveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.0.as_deref().map(|l| (l.pid.load(Ordering::Relaxed), l.fd.load(Ordering::Relaxed) >= 0));
        f.debug_tuple("FileLiveness").field(&held).finish()
    }
}

impl FileLiveness {
    /// The record of the file behind `fd` (taken now if this process has
    /// none yet); empty if the file cannot be identified.
    pub(crate) fn of(fd: &OwnedFd) -> FileLiveness {
        FileLiveness(register(fd))
    }

    /// `me` as the segment's locks record it: with [`KERNEL_LIVE`] when this
    /// process holds its liveness lock on the file, taken now if this
    /// process has not tried yet.
    #[inline]
    pub(crate) fn owner(&self, me: &Owner) -> Owner {
        let Some(f) = self.0.as_deref() else { return *me };
        let pid = me.pid & !KERNEL_LIVE;
        if f.held_by(pid) || (f.tried.load(Ordering::Relaxed) != pid && f.lock_late(pid)) {
            Owner { thread: me.thread, pid: pid | KERNEL_LIVE }
        } else {
            *me
        }
    }
}

impl OwnerCheck for FileLiveness {
    fn is_alive(&self, tid: u32, start: Option<u64>) -> bool {
        ProcLiveness.is_alive(tid, start)
    }

    fn is_alive_in(&self, tid: u32, start: Option<u64>, ns: u32) -> bool {
        ProcLiveness.is_alive_in(tid, start, ns)
    }

    fn is_alive_owner(&self, tid: u32, start: Option<u64>, ns: u32, pid: u32) -> bool {
        match liveness_in(tid, start.unwrap_or(0), ns) {
            Liveness::Dead => false,
            Liveness::Alive => true,
            Liveness::Unknown => match self.0.as_deref() {
                // Only an owner that recorded the flag held its byte while
                // it owned the lock: no lock there now proves its death.
                Some(f) if pid & KERNEL_LIVE != 0 => f.holder_alive(ns, pid & !KERNEL_LIVE) != Some(false),
                _ => true,
            },
        }
    }
}

/// Device and inode of the file behind `fd`.
fn file_id(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: `stat` is plain data; fstat fills it and the result is checked.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    Some((st.st_dev, st.st_ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_per_namespace_and_pid_and_past_any_file() {
        assert_eq!(key(0, 5), None);
        assert_eq!(key(7, 0), None);
        assert_eq!(key(7, 1 << 22), None);
        let (a, b, c) = (key(7, 5).unwrap(), key(8, 5).unwrap(), key(7, 6).unwrap());
        assert!(a != b && a != c && b != c);
        assert!(a >= 1 << 60);
        assert!(key(u32::MAX, (1 << 22) - 1).is_some());
    }
}
