//! The system calls behind processes: `waitpid`, pidfds, `kill`, `prctl`,
//! and the thread count of `/proc/self/stat`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Python's exit code for a wait status: the code, or minus the signal.
pub(crate) fn decode_status(status: libc::c_int) -> i64 {
    if libc::WIFEXITED(status) {
        i64::from(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        -i64::from(libc::WTERMSIG(status))
    } else {
        i64::from(status)
    }
}

/// A pidfd for `pid` (`None` where the kernel has none).
pub(crate) fn open_pidfd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; it returns a new fd or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if r < 0 {
        None
    } else {
        // SAFETY: a fresh fd owned by us.
        Some(unsafe { OwnedFd::from_raw_fd(r as i32) })
    }
}

/// `waitpid(pid)` (EINTR retried): `Ok(Some(status))` once reaped,
/// `Ok(None)` while it runs (only when not blocking).
pub(crate) fn waitpid(pid: u32, block: bool) -> io::Result<Option<libc::c_int>> {
    let mut status: libc::c_int = 0;
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, flags) };
        if r == pid as libc::pid_t {
            return Ok(Some(status));
        }
        if r == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// `waitid(P_PIDFD)` (EINTR retried): reaps the very process `pidfd`
/// names, never another one that reused its pid. `Ok(Some(status))` once
/// reaped (in `waitpid`'s encoding, for [`decode_status`]), `Ok(None)` while
/// it runs (only when not blocking), `ECHILD` once it was reaped already.
pub(crate) fn waitid_pidfd(pidfd: &OwnedFd, block: bool) -> io::Result<Option<libc::c_int>> {
    let flags = libc::WEXITED | if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: an all-zero siginfo_t is a valid out-buffer.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pidfd and out-pointer.
        let r = unsafe { libc::waitid(libc::P_PIDFD, pidfd.as_raw_fd() as libc::id_t, &mut info, flags) };
        if r == 0 {
            // SAFETY: waitid filled `info` for a child (si_pid 0: none yet).
            let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
            if pid == 0 {
                return Ok(None);
            }
            return Ok(Some(match info.si_code {
                libc::CLD_EXITED => (status & 0xff) << 8,
                libc::CLD_DUMPED => (status & 0x7f) | 0x80,
                // Killed (stopped and continued children are not asked for).
                _ => status & 0x7f,
            }));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Sends `sig` through a pidfd (which cannot name a recycled pid).
pub(crate) fn pidfd_signal(pidfd: &OwnedFd, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid pidfd; null siginfo means "as if by kill".
    let r =
        unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), sig, std::ptr::null::<u8>(), 0) as i32 };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `kill(pid, sig)`; the caller makes sure `pid` still names its process
/// (an unreaped child).
pub(crate) fn kill(pid: u32, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Daemon children: SIGKILL when the parent (thread) dies; exits at once if
/// the parent is already gone.
pub(crate) fn set_parent_death_signal(parent_pid: u32) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
    // The parent may have died before the prctl: then we were re-parented.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } as u32 != parent_pid {
        // SAFETY: ending this process immediately, as the parent is gone.
        unsafe { libc::_exit(1) };
    }
}

/// Threads of the calling process, from `/proc/self/stat` (field 20), not
/// counting shmproc's own fork-safe descriptor broker (see `fd_passing`).
pub(crate) fn thread_count() -> usize {
    let all: usize = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace().nth(17)?.parse().ok()
        })
        .unwrap_or(1);
    all.saturating_sub(crate::fd_passing::fork_safe_threads()).max(1)
}
