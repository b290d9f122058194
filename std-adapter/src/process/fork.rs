//! Fork mode: the child is a copy of the caller and runs a closure.

use std::io::{self, Write};

use shmproc_core::Identity;

use super::sys::set_parent_death_signal;
use super::{become_child, ChildResult, ProcessError};

/// Forks a child that runs `f` and exits with its exit code; returns its
/// pid. The caller has checked that forking is allowed (threads, borrows,
/// daemon parent).
pub(super) fn fork_child<F, R>(
    f: F,
    name: String,
    identity: String,
    daemon: bool,
    parent: (u32, String, u64),
) -> Result<u32, ProcessError>
where
    F: FnOnce() -> R + 'static,
    R: ChildResult,
{
    let handles = crate::roles::snapshot();
    let registered = Handshake::new().map_err(ProcessError::Fork)?;
    // Flush buffered output so the child does not print it a second time.
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: fork has no memory-safety preconditions of its own; the child
    // only touches state that is valid in a single-threaded copy (see the
    // module docs and `become_child`).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(ProcessError::Fork(io::Error::last_os_error()));
    }
    if pid == 0 {
        // Child. Its fork handler has registered the inherited handles (or
        // could not): say which before anything else runs.
        registered.tell(crate::roles::reattached());
        // SAFETY: we are the only thread of the new child.
        unsafe { become_child(name, identity, daemon, parent.clone()) };
        if daemon {
            set_parent_death_signal(parent.0);
        }
        let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(r) => r.exit_code(),
            Err(_) => 1,
        };
        // As Python's process bootstrap, and as the spawn and fork-server
        // children do through `exit`: terminate this child's own daemonic
        // children and join the others (`_exit` skips the atexit hook).
        super::at_exit();
        let _ = io::stdout().flush();
        let _ = io::stderr().flush();
        // SAFETY: _exit ends the child without running the parent's atexit
        // handlers or destructors of state that belongs to the parent.
        unsafe { libc::_exit(code) };
    }
    // Wait for the child's word: registered itself (then the parent must
    // not: the child may already be dropping what it inherited), or could
    // not (then the parent records it, as before it can drop its own
    // copies). A child killed before it could say has no handles to count.
    if registered.hear() == Some(false) {
        if let Some(start) = shmproc_core::identity::start_time(pid as u32) {
            crate::roles::register_child(Identity::local(pid as u32, start), &handles);
        }
    }
    Ok(pid as u32)
}

/// A pipe on which a forked child tells its parent, once, whether it
/// registered its inherited handles itself (see `roles::register_child`).
struct Handshake {
    read: libc::c_int,
    write: libc::c_int,
}

impl Handshake {
    fn new() -> io::Result<Handshake> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Handshake { read: fds[0], write: fds[1] })
    }

    /// In the child: writes the answer and closes both ends.
    fn tell(self, registered: bool) {
        let byte = [u8::from(registered)];
        // SAFETY: both descriptors are this child's copies of the pipe; the
        // buffer is one valid byte. A failed write reads as "killed" in the
        // parent, which then skips its registration: the child registered
        // or it did not, and nothing else would count it either way.
        unsafe {
            libc::write(self.write, byte.as_ptr().cast(), 1);
            libc::close(self.write);
            libc::close(self.read);
        }
        std::mem::forget(self);
    }

    /// In the parent: the child's answer, or `None` if it died first.
    fn hear(self) -> Option<bool> {
        // SAFETY: closing the parent's copy of the write end, which only
        // this struct owns, so that a dead child reads as end of file.
        unsafe { libc::close(self.write) };
        let mut byte = [0u8; 1];
        let n = loop {
            // SAFETY: reading at most one byte into a one-byte buffer from
            // the read end this struct owns.
            let n = unsafe { libc::read(self.read, byte.as_mut_ptr().cast(), 1) };
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break n;
        };
        // SAFETY: the read end is owned here and closed once.
        unsafe { libc::close(self.read) };
        std::mem::forget(self);
        (n == 1).then_some(byte[0] == 1)
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        // SAFETY: both ends are owned by this struct (a failed fork never
        // gave them to a child); `tell`/`hear` forget it after closing.
        unsafe {
            libc::close(self.read);
            libc::close(self.write);
        }
    }
}
