//! Who is a process or thread, and is it still alive?
//!
//! A pid alone is not an identity: pids are reused, and the same number names
//! different processes in different pid namespaces. Each identity here pairs
//! the pid (or tid) with the *start time* the kernel records for it
//! (`/proc/<id>/stat`, field 22, in clock ticks since boot) and with the pid
//! namespace the id was read in ([`current_pid_ns`]: the inode of
//! `/proc/self/ns/pid`, 0 when unknown).
//!
//! # Failing closed
//!
//! A liveness check answers [`Liveness::Dead`] only on *positive evidence*
//! that the recorded process or thread is gone, because a dead answer lets a
//! peer take over its lock or free its slot:
//!
//! * the recorded namespace is known and is the checker's own, *and* the id no
//!   longer exists there (`kill(id, 0)` fails with `ESRCH`, which `hidepid`
//!   does not affect), or its `/proc` entry is a zombie, or carries another
//!   start time (the id was reused);
//! * or the id is 0 or above `i32::MAX`, which no thread has in any namespace.
//!
//! Everything else is [`Liveness::Unknown`], which callers treat as alive: an
//! owner recorded in another pid namespace (containers sharing `/dev/shm`,
//! or a parent namespace looking at a child's), an unknown namespace (no
//! `/proc`, or a `/proc` mounted for another namespace than the caller's),
//! an unreadable or unparsable `/proc` entry, a refused `kill`. The price is
//! that the death of such an owner is not detected from its id: waits with a
//! deadline then end in a timeout instead of a takeover.
//!
//! A process records a namespace only when its `/proc` shows its own pid
//! namespace (the `NStgid` line of `/proc/self/status` has one entry), since
//! the start time it records comes from that `/proc`; otherwise it records 0.
//! Reusing a pid within the same clock tick (10 ms) would need the whole pid
//! space to wrap in that time, which we treat as impossible.
//!
//! On platforms without `/proc` the start time is recorded as 0 ("unknown"),
//! the namespace as [`HOST_NS`], and liveness falls back to `kill(pid, 0)`,
//! which cannot detect reuse.

#[cfg(target_os = "linux")]
use core::sync::atomic::{AtomicU64, Ordering};

/// The namespace id recorded on platforms without pid namespaces.
///
/// ```
/// assert_eq!(shmproc_core::identity::HOST_NS, 1);
/// ```
pub const HOST_NS: u32 = 1;

/// A process or thread as recorded in shared memory: its id, its start time
/// and the pid namespace the id belongs to.
///
/// ```
/// use shmproc_core::Identity;
/// let me = Identity::current_process();
/// assert_eq!(me.id, std::process::id());
/// assert_eq!(me.ns, shmproc_core::identity::current_pid_ns());
/// assert!(me.is_alive());
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Process id (tgid) or thread id (tid).
    pub id: u32,
    /// Start time in clock ticks since boot; 0 when unknown.
    pub start: u64,
    /// The pid namespace `id` belongs to ([`current_pid_ns`] of the recorder);
    /// 0 when unknown, which makes the identity's death undetectable by id.
    pub ns: u32,
}

/// The answer of a liveness check.
///
/// ```
/// use shmproc_core::identity::{liveness, Liveness};
/// let me = shmproc_core::Identity::current_thread();
/// assert_eq!(liveness(me.id, me.start), Liveness::Alive);
/// // The same id with another start time is a different (dead) thread.
/// assert_eq!(liveness(me.id, me.start + 1), Liveness::Dead);
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// The process or thread exists and has the recorded start time.
    Alive,
    /// It exited, is a zombie, or its id now belongs to someone else: proven.
    Dead,
    /// Cannot tell (another or unknown pid namespace, `/proc` unreadable):
    /// callers must treat it as alive.
    Unknown,
}

impl Identity {
    /// An id read in the caller's own pid namespace (a child's pid returned
    /// by `fork`, say), with its start time.
    ///
    /// ```
    /// use shmproc_core::Identity;
    /// let me = Identity::current_process();
    /// assert_eq!(Identity::local(me.id, me.start), me);
    /// ```
    #[must_use]
    pub fn local(id: u32, start: u64) -> Identity {
        Identity { id, start, ns: current_pid_ns() }
    }

    /// The identity of the calling process.
    ///
    /// ```
    /// let p = shmproc_core::Identity::current_process();
    /// assert_eq!(p.id, std::process::id());
    /// ```
    #[must_use]
    pub fn current_process() -> Identity {
        // SAFETY: getpid has no preconditions and cannot fail.
        let pid = unsafe { libc::getpid() } as u32;
        Identity { id: pid, start: start_time(pid).unwrap_or(0), ns: current_pid_ns() }
    }

    /// The identity of the calling thread (its kernel tid). Costs a few
    /// syscalls and a `/proc` read: callers on a fast path cache it (per
    /// thread, reset after fork).
    ///
    /// ```
    /// let t = shmproc_core::Identity::current_thread();
    /// assert_eq!(t.id, shmproc_core::identity::current_tid());
    /// ```
    #[must_use]
    pub fn current_thread() -> Identity {
        let tid = current_tid();
        Identity { id: tid, start: start_time(tid).unwrap_or(0), ns: current_pid_ns() }
    }

    /// Checks whether this process or thread is still the one that was
    /// recorded (fails closed: see the module docs).
    ///
    /// ```
    /// use shmproc_core::{Identity, Liveness};
    /// assert_eq!(Identity::current_thread().liveness(), Liveness::Alive);
    /// // Recorded in another (or an unknown) pid namespace: cannot tell.
    /// let mut other = Identity::current_thread();
    /// other.ns = 0;
    /// assert_eq!(other.liveness(), Liveness::Unknown);
    /// ```
    #[must_use]
    pub fn liveness(&self) -> Liveness {
        liveness_in(self.id, self.start, self.ns)
    }

    /// Whether it is *not proven dead*: `Alive` or `Unknown`.
    ///
    /// ```
    /// assert!(shmproc_core::Identity::current_process().is_alive());
    /// ```
    #[must_use]
    pub fn is_alive(&self) -> bool {
        self.liveness() != Liveness::Dead
    }
}

/// The kernel id of the calling thread (`gettid`; the pid on non-Linux targets).
///
/// ```
/// let tid = shmproc_core::identity::current_tid();
/// assert!(tid > 0);
/// ```
#[must_use]
pub fn current_tid() -> u32 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions and cannot fail.
        unsafe { libc::syscall(libc::SYS_gettid) as u32 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        // SAFETY: getpid has no preconditions and cannot fail.
        unsafe { libc::getpid() as u32 }
    }
}

/// The caller's pid namespace as recorded beside ids: the inode number of
/// `/proc/self/ns/pid`, or 0 when it is unknown (no `/proc`, or a `/proc`
/// that shows another namespace than the caller's, so that the start times
/// read from it would not belong to the caller's ids). [`HOST_NS`] on
/// platforms without pid namespaces.
///
/// One `stat` and one `getpid` per call; whether `/proc` shows the caller's
/// namespace is cached per (namespace, pid).
///
/// ```
/// let ns = shmproc_core::identity::current_pid_ns();
/// assert_ne!(ns, 0); // this test runs with its own namespace's /proc
/// ```
#[must_use]
pub fn current_pid_ns() -> u32 {
    #[cfg(target_os = "linux")]
    {
        if test_hooks::proc_blocked() {
            return 0;
        }
        let Some(ino) = pid_ns_inode() else { return 0 };
        // SAFETY: getpid has no preconditions and cannot fail.
        let pid = unsafe { libc::getpid() } as u64 & 0x3fff_ffff;
        let key = (u64::from(ino) << 32) | (pid << 2) | 1;
        // Only a positive verdict is cached: a process that mounts its own
        // namespace's /proc later (pid 1 of a fresh namespace does) must see
        // it then.
        let ok = PROC_VIEW.load(Ordering::Relaxed) == key | 2 || {
            let ok = proc_shows_own_namespace();
            if ok {
                PROC_VIEW.store(key | 2, Ordering::Relaxed);
            }
            ok
        };
        if ok {
            ino
        } else {
            0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        HOST_NS
    }
}

/// `(ns inode << 32) | (pid << 2) | (proc shows own ns) << 1 | valid`: one
/// word, so that it is never read torn. A cache only; any value is safe.
#[cfg(target_os = "linux")]
static PROC_VIEW: AtomicU64 = AtomicU64::new(0);

/// Hooks for tests that simulate a sandbox (`#[doc(hidden)]`, not API).
#[doc(hidden)]
pub mod test_hooks {
    // Plain atomics even under loom: a process-wide switch, not a model object.
    use core::sync::atomic::{AtomicBool, Ordering};

    static BLOCK_PROC: AtomicBool = AtomicBool::new(false);

    /// Makes every `/proc` read of this process fail, as in a sandbox
    /// without `/proc` (`true`), or not (`false`).
    pub fn block_proc(on: bool) {
        BLOCK_PROC.store(on, Ordering::Relaxed);
    }

    pub(crate) fn proc_blocked() -> bool {
        BLOCK_PROC.load(Ordering::Relaxed)
    }
}

#[cfg(target_os = "linux")]
fn pid_ns_inode() -> Option<u32> {
    // SAFETY: an all-zero `stat` is a valid out-parameter.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: the path is NUL-terminated and `st` is a valid out-pointer.
    let r = unsafe { libc::stat(c"/proc/self/ns/pid".as_ptr(), &mut st) };
    if r != 0 {
        return None;
    }
    u32::try_from(st.st_ino).ok().filter(|&i| i != 0)
}

/// Whether the mounted `/proc` belongs to the caller's pid namespace: the
/// `NStgid` line of `/proc/self/status` lists the pid in every namespace from
/// the one `/proc` was mounted for down to the caller's, so one entry means
/// they are the same. Kernels before 4.1 have no such line: then
/// `/proc/self` must name the caller's own pid.
#[cfg(target_os = "linux")]
fn proc_shows_own_namespace() -> bool {
    let mut buf = [0u8; 4096];
    let Some(len) = read_file(b"/proc/self/status\0", &mut buf) else { return false };
    let text = &buf[..len];
    // SAFETY: getpid has no preconditions and cannot fail.
    let pid = unsafe { libc::getpid() } as u32;
    for line in text.split(|&b| b == b'\n') {
        if let Some(rest) = line.strip_prefix(b"NStgid:") {
            let mut fields = rest.split(|&b| b == b'\t' || b == b' ').filter(|f| !f.is_empty());
            return match (fields.next(), fields.next()) {
                (Some(only), None) => parse_u64(only) == Some(u64::from(pid)),
                _ => false,
            };
        }
    }
    let mut link = [0u8; 16];
    // SAFETY: the path is NUL-terminated; `link` is writable for its length.
    let n = unsafe { libc::readlink(c"/proc/self".as_ptr(), link.as_mut_ptr().cast(), link.len()) };
    n > 0 && parse_u64(link.get(..n as usize).unwrap_or(&[])) == Some(u64::from(pid))
}

/// Whether `id` (a pid or a tid) is alive and, if `start != 0`, started at
/// `start`, assuming the id was recorded in the caller's own pid namespace
/// (`liveness_in(id, start, current_pid_ns())`).
///
/// ```
/// use shmproc_core::identity::{liveness, Liveness};
/// let child = std::process::Command::new("true").spawn().unwrap();
/// let pid = child.id();
/// let mut child = child;
/// child.wait().unwrap(); // exited and reaped
/// assert_eq!(liveness(pid, 0), Liveness::Dead);
/// ```
#[must_use]
pub fn liveness(id: u32, start: u64) -> Liveness {
    liveness_in(id, start, current_pid_ns())
}

/// Whether `id`, recorded in pid namespace `ns` with start time `start` (0:
/// unknown), is alive. Fails closed: only positive evidence gives
/// [`Liveness::Dead`] (module docs).
///
/// ```
/// use shmproc_core::identity::{current_pid_ns, liveness_in, Liveness};
/// let me = shmproc_core::Identity::current_thread();
/// assert_eq!(liveness_in(me.id, me.start, current_pid_ns()), Liveness::Alive);
/// // Another namespace: the id means nothing here, so no verdict.
/// assert_eq!(liveness_in(me.id, me.start + 1, current_pid_ns() ^ 1), Liveness::Unknown);
/// assert_eq!(liveness_in(me.id, me.start + 1, 0), Liveness::Unknown);
/// ```
#[must_use]
pub fn liveness_in(id: u32, start: u64, ns: u32) -> Liveness {
    if id == 0 || id > i32::MAX as u32 {
        return Liveness::Dead;
    }
    let mine = current_pid_ns();
    if ns == 0 || mine == 0 || ns != mine {
        return Liveness::Unknown;
    }
    #[cfg(target_os = "linux")]
    {
        match read_stat(id) {
            Ok(stat) if stat.zombie => Liveness::Dead,
            Ok(stat) if start != 0 && stat.start != start => Liveness::Dead,
            Ok(_) => Liveness::Alive,
            // The entry is missing: confirm with the kernel's pid table, which
            // `hidepid` does not hide.
            Err(StatError::Missing) => match probe_kill(id) {
                Some(false) => Liveness::Dead,
                _ => Liveness::Unknown,
            },
            Err(StatError::Other) => Liveness::Unknown,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = start;
        match probe_kill(id) {
            Some(true) => Liveness::Alive,
            Some(false) => Liveness::Dead,
            None => Liveness::Unknown,
        }
    }
}

/// `kill(id, 0)`: `Some(true)` if the id exists (`EPERM` included),
/// `Some(false)` on `ESRCH`, `None` on anything else.
fn probe_kill(id: u32) -> Option<bool> {
    // SAFETY: signal 0 performs only the existence and permission check.
    let r = unsafe { libc::kill(id as libc::pid_t, 0) };
    if r == 0 {
        return Some(true);
    }
    match errno() {
        libc::EPERM => Some(true),
        libc::ESRCH => Some(false),
        _ => None,
    }
}

fn errno() -> i32 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: reading this thread's errno.
    unsafe {
        *libc::__errno_location()
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    // SAFETY: reading this thread's errno.
    unsafe {
        *libc::__error()
    }
}

/// The start time of process or thread `id` as this process's `/proc` shows
/// it, `None` if it cannot be read.
///
/// ```
/// let me = shmproc_core::Identity::current_process();
/// assert_eq!(shmproc_core::identity::start_time(me.id), Some(me.start));
/// ```
#[must_use]
pub fn start_time(id: u32) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        read_stat(id).ok().map(|s| s.start)
    }
    #[cfg(not(target_os = "linux"))]
    {
        match probe_kill(id) {
            Some(true) => Some(0),
            _ => None,
        }
    }
}

#[cfg(target_os = "linux")]
struct Stat {
    start: u64,
    zombie: bool,
}

#[cfg(target_os = "linux")]
enum StatError {
    /// `ENOENT` or `ESRCH`: no such entry in this `/proc`.
    Missing,
    /// Anything else: unreadable, unparsable, no `/proc`.
    Other,
}

/// Reads `/proc/<id>/stat` into a stack buffer and parses the state and start
/// time. Works for thread ids too (`/proc/<tid>` exists though it is not listed).
#[cfg(target_os = "linux")]
fn read_stat(id: u32) -> Result<Stat, StatError> {
    let mut path = [0u8; 32];
    let mut n = 0;
    for &b in b"/proc/" {
        path[n] = b;
        n += 1;
    }
    n += write_decimal(&mut path[n..], id);
    for &b in b"/stat\0" {
        path[n] = b;
        n += 1;
    }
    let mut buf = [0u8; 1024];
    match read_file(&path[..n], &mut buf) {
        Some(len) => parse_stat(&buf[..len]).ok_or(StatError::Other),
        None if matches!(errno(), libc::ENOENT | libc::ESRCH) && !test_hooks::proc_blocked() => Err(StatError::Missing),
        None => Err(StatError::Other),
    }
}

/// Reads the file at the NUL-terminated `path` into `buf`; the length read,
/// or `None` (errno set) if it could not be opened or read.
#[cfg(target_os = "linux")]
fn read_file(path: &[u8], buf: &mut [u8]) -> Option<usize> {
    if path.last() != Some(&0) || test_hooks::proc_blocked() {
        return None;
    }
    // SAFETY: `path` is NUL-terminated (checked just above).
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut len = 0usize;
    let mut failed = false;
    while len < buf.len() {
        // SAFETY: the destination is the unfilled tail of `buf`, in bounds.
        let r = unsafe { libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len) };
        if r < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            failed = true;
            break;
        }
        if r == 0 {
            break;
        }
        len += r as usize;
    }
    let saved = errno();
    // SAFETY: `fd` was opened above and is closed exactly once.
    unsafe { libc::close(fd) };
    if failed {
        // SAFETY: restoring this thread's errno for the caller.
        unsafe { *libc::__errno_location() = saved };
        return None;
    }
    Some(len)
}

/// A decimal number, `None` if `digits` is empty or not all digits.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// Parses the state (field 3) and start time (field 22) of a `/proc/<id>/stat`
/// line. The command name (field 2) may contain spaces and parentheses, so the
/// fields are counted from the *last* `)`.
#[cfg(target_os = "linux")]
fn parse_stat(line: &[u8]) -> Option<Stat> {
    let close = line.iter().rposition(|&b| b == b')')?;
    let rest = line.get(close + 1..)?;
    let mut fields = rest.split(|&b| b == b' ').filter(|f| !f.is_empty());
    let state = *fields.next()?.first()?;
    // Fields 4..=21 come next; the start time is field 22.
    let start = parse_u64(fields.nth(18)?)?;
    Some(Stat { start, zombie: state == b'Z' || state == b'X' || state == b'x' })
}

/// Writes `v` in decimal into `out`, returns the number of bytes written.
#[cfg(target_os = "linux")]
fn write_decimal(out: &mut [u8], mut v: u32) -> usize {
    let mut digits = [0u8; 10];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..n {
        out[i] = digits[n - 1 - i];
    }
    n
}

#[cfg(all(test, target_os = "linux", not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = b"1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10\n";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.start, 987654);
        assert!(!s.zombie);
        let z = b"99 (x) Z 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 42 0 0";
        let s = parse_stat(z).unwrap();
        assert!(s.zombie);
        assert_eq!(s.start, 42);
        assert!(parse_stat(b"garbage").is_none());
        assert!(parse_stat(b"1 (x) S 1 2").is_none());
    }

    #[test]
    fn self_is_alive_and_reuse_is_detected() {
        let me = Identity::current_process();
        assert_ne!(me.start, 0);
        assert!(me.is_alive());
        let fake = Identity { id: me.id, start: me.start + 1, ns: me.ns };
        assert_eq!(fake.liveness(), Liveness::Dead);
        // Another namespace, or none recorded: no verdict, however wrong the start.
        assert_eq!(Identity { ns: me.ns ^ 1, ..fake }.liveness(), Liveness::Unknown);
        assert_eq!(Identity { ns: 0, ..fake }.liveness(), Liveness::Unknown);
        assert_eq!(liveness(0, 0), Liveness::Dead);
        assert_eq!(liveness(u32::MAX, 0), Liveness::Dead);
        let t = Identity::current_thread();
        assert!(t.is_alive());
    }
}
