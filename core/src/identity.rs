//! Who is a process or thread, and is it still alive?
//!
//! A pid alone is not an identity: pids are reused. Each identity here pairs the
//! pid (or tid) with the *start time* the kernel records for it (`/proc/<id>/stat`,
//! field 22, in clock ticks since boot). A liveness check reads the start time
//! again: a missing entry, a zombie, or a different start time all mean the
//! original process is gone. Reusing a pid within the same clock tick (10 ms)
//! would need the whole pid space to wrap in that time, which we treat as
//! impossible.
//!
//! On platforms without `/proc` the start time is recorded as 0 ("unknown") and
//! liveness falls back to `kill(pid, 0)`, which cannot detect reuse.

/// A process or thread as recorded in shared memory: its id and its start time.
///
/// ```
/// use shmproc_core::Identity;
/// let me = Identity::current_process();
/// assert_eq!(me.id, std::process::id());
/// assert!(me.is_alive());
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Process id (tgid) or thread id (tid).
    pub id: u32,
    /// Start time in clock ticks since boot; 0 when unknown.
    pub start: u64,
}

/// The answer of a liveness check.
///
/// ```
/// use shmproc_core::identity::{liveness, Liveness};
/// let me = shmproc_core::Identity::current_thread();
/// assert_eq!(liveness(me.id, me.start), Liveness::Alive);
/// // The same id with another start time is a different (dead) thread.
/// assert_ne!(liveness(me.id, me.start + 1), Liveness::Alive);
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// The process or thread exists and has the recorded start time.
    Alive,
    /// It exited, is a zombie, or its id now belongs to someone else.
    Dead,
}

impl Identity {
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
        Identity { id: pid, start: start_time(pid).unwrap_or(0) }
    }

    /// The identity of the calling thread (its kernel tid). Costs a syscall and a
    /// `/proc` read: callers on a fast path cache it (per thread, reset after fork).
    ///
    /// ```
    /// let t = shmproc_core::Identity::current_thread();
    /// assert_eq!(t.id, shmproc_core::identity::current_tid());
    /// ```
    #[must_use]
    pub fn current_thread() -> Identity {
        let tid = current_tid();
        Identity { id: tid, start: start_time(tid).unwrap_or(0) }
    }

    /// Checks whether this process or thread is still the one that was recorded.
    ///
    /// ```
    /// use shmproc_core::{Identity, Liveness};
    /// assert_eq!(Identity::current_thread().liveness(), Liveness::Alive);
    /// ```
    #[must_use]
    pub fn liveness(&self) -> Liveness {
        liveness(self.id, self.start)
    }

    /// Shorthand for `self.liveness() == Liveness::Alive`.
    ///
    /// ```
    /// assert!(shmproc_core::Identity::current_process().is_alive());
    /// ```
    #[must_use]
    pub fn is_alive(&self) -> bool {
        self.liveness() == Liveness::Alive
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

/// Whether `id` (a pid or a tid) is alive and, if `start != 0`, started at `start`.
///
/// ```
/// use shmproc_core::identity::{liveness, Liveness};
/// let child = std::process::Command::new("true").spawn().unwrap();
/// let pid = child.id();
/// let mut child = child;
/// child.wait().unwrap(); // exited and reaped
/// assert_ne!(liveness(pid, 0), Liveness::Alive);
/// ```
#[must_use]
pub fn liveness(id: u32, start: u64) -> Liveness {
    if id == 0 || id > i32::MAX as u32 {
        return Liveness::Dead;
    }
    #[cfg(target_os = "linux")]
    {
        match read_stat(id) {
            Some(stat) if stat.zombie => Liveness::Dead,
            Some(stat) if start == 0 || stat.start == start => Liveness::Alive,
            _ => Liveness::Dead,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = start;
        // SAFETY: signal 0 performs only the existence and permission check.
        let r = unsafe { libc::kill(id as libc::pid_t, 0) };
        if r == 0 {
            Liveness::Alive
        } else {
            // EPERM: it exists but belongs to someone else.
            // SAFETY: reading errno of this thread.
            if unsafe { *libc::__error() } == libc::EPERM {
                Liveness::Alive
            } else {
                Liveness::Dead
            }
        }
    }
}

/// The start time of process or thread `id`, `None` if it does not exist.
///
/// ```
/// let me = shmproc_core::Identity::current_process();
/// assert_eq!(shmproc_core::identity::start_time(me.id), Some(me.start));
/// ```
#[must_use]
pub fn start_time(id: u32) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        read_stat(id).map(|s| s.start)
    }
    #[cfg(not(target_os = "linux"))]
    {
        match liveness(id, 0) {
            Liveness::Alive => Some(0),
            Liveness::Dead => None,
        }
    }
}

#[cfg(target_os = "linux")]
struct Stat {
    start: u64,
    zombie: bool,
}

/// Reads `/proc/<id>/stat` into a stack buffer and parses the state and start
/// time. Works for thread ids too (`/proc/<tid>` exists though it is not listed).
#[cfg(target_os = "linux")]
fn read_stat(id: u32) -> Option<Stat> {
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
    // SAFETY: `path` is NUL-terminated (written just above, 6 + 10 + 6 <= 32).
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 1024];
    let mut len = 0usize;
    while len < buf.len() {
        // SAFETY: the destination is the unfilled tail of `buf`, in bounds.
        let r = unsafe { libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len) };
        if r < 0 {
            // SAFETY: reading this thread's errno.
            if unsafe { *libc::__errno_location() } == libc::EINTR {
                continue;
            }
            break;
        }
        if r == 0 {
            break;
        }
        len += r as usize;
    }
    // SAFETY: `fd` was opened above and is closed exactly once.
    unsafe { libc::close(fd) };
    parse_stat(&buf[..len])
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
    let start_field = fields.nth(18)?;
    let mut start: u64 = 0;
    for &b in start_field {
        if !b.is_ascii_digit() {
            return None;
        }
        start = start.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
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
        let fake = Identity { id: me.id, start: me.start + 1 };
        assert_eq!(fake.liveness(), Liveness::Dead);
        assert_eq!(liveness(0, 0), Liveness::Dead);
        assert_eq!(liveness(u32::MAX, 0), Liveness::Dead);
        let t = Identity::current_thread();
        assert!(t.is_alive());
    }
}
