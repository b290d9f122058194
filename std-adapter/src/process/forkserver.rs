//! The fork server: a single-threaded helper process that forks children on
//! behalf of a (possibly multi-threaded) client, as Python's `forkserver`
//! start method does.
//!
//! # How it works
//!
//! * **Start** (on the first [`StartMethod::ForkServer`](crate::StartMethod)
//!   request of a process): the client creates a `SOCK_SEQPACKET` socket pair
//!   and re-executes its own binary (`/proc/self/exe`) with one end inherited
//!   and named by `SHMPROC_FORKSERVER`. The constructor that routes spawned
//!   children (see `process/spawn.rs`) routes the server before `main` runs, so the
//!   server never runs the program's `main` and has exactly one thread. It is
//!   a child of the client.
//! * **Requests**: the client sends the child's payload (the same encoding
//!   as spawn mode: function offsets, rkyv argument, name, identity, parent;
//!   in the message itself up to [`INLINE_MAX`] bytes, else in a sealed
//!   memfd) with the descriptors of the segments the argument's handles use,
//!   in one message (`SCM_RIGHTS`). The server
//!   forks with `clone(CLONE_PARENT)`: the new process's parent is the
//!   *client*, not the server. So the child is a real child of the caller:
//!   `waitpid`, exit codes, `SIGCHLD`, pidfds, `getppid` in the child all work
//!   as for fork and spawn mode. The server replies with the pid.
//! * **The child** closes the server's socket, moves the received segment
//!   descriptors to the numbers they had in the client (the argument's
//!   handles name them), and runs the payload like a spawned child.
//! * **End**: the server exits when its socket reports end-of-file, that is
//!   when the last copy of the client's end is closed: when the client exits
//!   or is killed (a fork-mode child of the client closes its inherited copy
//!   in the fork handler, and the descriptor is close-on-exec). Before
//!   exiting it sends SIGKILL to the *daemon* children it started that still
//!   run (through pidfds: no pid-reuse race). So after a SIGKILL of the
//!   client no server is left behind, and daemon children (pool workers) die
//!   with it. Non-daemon children keep running, as in Python, and are
//!   re-parented like any orphan (to init or the nearest subreaper).
//!
//! # Where a fork-server child differs from a forked or spawned one
//!
//! * Its stdin/stdout/stderr, environment, working directory, resource
//!   limits and signal mask are those the client had when the server
//!   started (as in Python), not the caller's at the time of the request.
//! * If the server dies between forking a child and replying, that child
//!   runs unknown to the client (it is still the client's child, reaped only
//!   by a `waitpid(-1)`); the next request starts a new server.
//! * A daemon child gets no `PR_SET_PDEATHSIG`: the signal would follow the
//!   client *thread* that happens to be the server's parent. The server kills
//!   daemon children when the client goes away instead; if server and client
//!   are both killed with SIGKILL, daemon children keep running.
//! * At most [`MAX_SEG_FDS`] segment descriptors per child (one
//!   `SCM_RIGHTS` message).
//! * The server ignores SIGINT (a terminal's Ctrl-C reaches the whole
//!   process group); its children restore the default.
//!
//! # Who may talk to a server
//!
//! Only the process that started it: before serving, the server checks that
//! it does not run with elevated privileges (`AT_SECURE`), that the
//! descriptor is a socket created (`SO_PEERCRED`) by its parent, and that its
//! parent runs the same executable; otherwise it exits with status 1.
//! A fork-mode child of the client does not share its server (it starts its
//! own when it needs one).

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use super::spawn::{payload_fds, run_payload, sealed_memfd, Payload, Started};
use super::ProcessError;
use crate::globals::ForkSafe;

pub(crate) const ENV: &str = "SHMPROC_FORKSERVER";
const MAGIC: u32 = u32::from_le_bytes(*b"SHFS");
/// At most this many segment descriptors per child (`SCM_MAX_FD` is 253,
/// and the payload takes one).
pub(crate) const MAX_SEG_FDS: usize = 252;
const MAX_FDS: usize = MAX_SEG_FDS + 1;
/// Payloads up to this size travel in the request message itself.
const INLINE_MAX: usize = 32 * 1024;
/// Request header: magic, daemon flag, payload kind.
const HEADER: usize = 6;
const KIND_MEMFD: u8 = 0;
const KIND_INLINE: u8 = 1;

// ---------------------------------------------------------------------------
// Descriptor passing
// ---------------------------------------------------------------------------

fn cmsg_space(fds: usize) -> usize {
    // SAFETY: CMSG_SPACE only computes a size.
    unsafe { libc::CMSG_SPACE((fds * std::mem::size_of::<RawFd>()) as u32) as usize }
}

pub(crate) fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    let space = cmsg_space(fds.len());
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: an all-zero msghdr is valid (no name, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer is `space` bytes, 8-aligned, enough for
        // one header and `fds.len()` descriptors (CMSG_SPACE); CMSG_FIRSTHDR
        // points into it, CMSG_DATA after the header.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), std::mem::size_of_val(fds));
        }
    }
    loop {
        // SAFETY: `msg` and everything it points to are valid for the call.
        let r = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Receives one message; `Ok(None)` at end-of-file. Received descriptors are
/// close-on-exec.
pub(crate) fn recv_with_fds(sock: RawFd, buf: &mut [u8]) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let space = cmsg_space(MAX_FDS);
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: an all-zero msghdr is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let n = loop {
        // SAFETY: `msg` points to valid buffers of the stated sizes.
        let r = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `cbuf` with well-formed control messages of
    // total length `msg_controllen`; CMSG_FIRSTHDR/NXTHDR stay within it and
    // descriptors are read unaligned from each SCM_RIGHTS payload.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let len = ((*cmsg).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    if msg.msg_flags & (libc::MSG_CTRUNC | libc::MSG_TRUNC) != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated fork-server message"));
    }
    Ok(Some((n, fds)))
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

struct Conn {
    sock: OwnedFd,
    server: u32,
}

struct Client {
    conn: Option<Conn>,
    /// A thread is talking to the server (the connection is taken out).
    busy: bool,
}

static CLIENT: ForkSafe<Client> = ForkSafe::new(Client { conn: None, busy: false });
/// The client's socket, for the fork handler (-1: none).
static CLIENT_FD: AtomicI32 = AtomicI32::new(-1);

/// In a freshly forked child of a client: close the inherited copy of the
/// client's socket (or the server would not see the client go) and forget
/// the server, which is not this process's.
pub(crate) fn after_fork_in_child() {
    let fd = CLIENT_FD.swap(-1, Ordering::AcqRel);
    if fd >= 0 {
        // SAFETY: closing this process's copy of the client socket; the
        // `Conn` that owns the number is leaked below, never dropped here.
        unsafe { libc::close(fd) };
    }
    // SAFETY: called only in the single thread of a freshly forked child
    // (the fork handler); the old value (and its descriptor) is leaked.
    unsafe { CLIENT.reset_in_child(Client { conn: None, busy: false }) };
}

/// Runs `f` with the connection, one thread at a time.
fn with_conn<R>(f: impl FnOnce(&mut Option<Conn>) -> R) -> R {
    let mut conn = loop {
        let taken = CLIENT.with(|c| {
            if c.busy {
                None
            } else {
                c.busy = true;
                Some(c.conn.take())
            }
        });
        match taken {
            Some(conn) => break conn,
            None => std::thread::sleep(Duration::from_micros(50)),
        }
    };
    let r = f(&mut conn);
    CLIENT.with(|c| {
        c.conn = conn;
        c.busy = false;
    });
    r
}

fn start_server() -> io::Result<Conn> {
    let mut sv = [-1; 2];
    // SAFETY: `sv` has room for the two descriptors.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two fresh descriptors that we own.
    let (mine, theirs) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
    let their_fd = theirs.as_raw_fd();
    let mut cmd = Command::new("/proc/self/exe");
    if let Some(arg0) = std::env::args_os().next() {
        cmd.arg0(arg0);
    }
    cmd.env(ENV, their_fd.to_string()).env_remove(super::spawn::ENV);
    // SAFETY: the closure runs in the forked child before exec and only calls
    // fcntl (async-signal-safe).
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(their_fd, libc::F_SETFD, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = crate::roles::while_spawning(|| cmd.spawn())?;
    drop(theirs);
    CLIENT_FD.store(mine.as_raw_fd(), Ordering::Release);
    // The std handle is dropped without waiting: the server is reaped in
    // `discard`, or outlives us and is reaped by whoever inherits it.
    Ok(Conn { sock: mine, server: child.id() })
}

/// Shuts a connection down for good: the server is killed and reaped.
fn discard(conn: Option<Conn>) {
    let Some(conn) = conn else { return };
    CLIENT_FD.store(-1, Ordering::Release);
    drop(conn.sock);
    // The server is our unreaped child, so its pid cannot have been reused.
    let _ = super::sys::kill(conn.server, libc::SIGKILL);
    let _ = super::sys::waitpid(conn.server, true);
}

/// The payload as sent: in the message, or in a memfd.
enum Body<'a> {
    Inline(&'a [u8]),
    Memfd(RawFd),
}

fn request(conn: &Conn, body: &Body<'_>, seg: &[RawFd], daemon: bool) -> io::Result<i32> {
    let mut fds = Vec::with_capacity(seg.len() + 1);
    let mut msg = Vec::with_capacity(HEADER + if let Body::Inline(b) = body { b.len() } else { 0 });
    msg.extend_from_slice(&MAGIC.to_le_bytes());
    msg.push(u8::from(daemon));
    match *body {
        Body::Inline(bytes) => {
            msg.push(KIND_INLINE);
            msg.extend_from_slice(bytes);
        }
        Body::Memfd(fd) => {
            msg.push(KIND_MEMFD);
            fds.push(fd);
        }
    }
    fds.extend_from_slice(seg);
    send_with_fds(conn.sock.as_raw_fd(), &msg, &fds)?;
    let mut reply = [0u8; 4];
    loop {
        // SAFETY: `reply` is a valid 4-byte buffer.
        let r = unsafe { libc::recv(conn.sock.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
        if r == 4 {
            return Ok(i32::from_le_bytes(reply));
        }
        if r >= 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the fork server went away"));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Has the fork server start a child running `payload`; returns its pid.
/// Starts the server on first use, and once more if it died.
pub(crate) fn spawn(payload: &Payload, daemon: bool) -> Result<u32, ProcessError> {
    if payload.fds.len() > MAX_SEG_FDS {
        return Err(ProcessError::ForkServer(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("at most {MAX_SEG_FDS} segment descriptors per fork-server child"),
        )));
    }
    let memfd = if payload.bytes.len() > INLINE_MAX {
        Some(sealed_memfd(&payload.bytes).map_err(ProcessError::ForkServer)?)
    } else {
        None
    };
    let body = match &memfd {
        Some(fd) => Body::Memfd(fd.as_raw_fd()),
        None => Body::Inline(&payload.bytes),
    };
    with_conn(|conn| {
        let mut last = io::Error::other("the fork server could not be started");
        for _ in 0..2 {
            if conn.is_none() {
                *conn = Some(start_server().map_err(ProcessError::ForkServer)?);
            }
            let Some(c) = conn.as_ref() else { continue };
            match request(c, &body, &payload.fds, daemon) {
                Ok(pid) if pid > 0 => return Ok(pid as u32),
                Ok(errno) => {
                    let errno = if errno < 0 { errno.saturating_neg() } else { libc::EINVAL };
                    return Err(ProcessError::Fork(io::Error::from_raw_os_error(errno)));
                }
                Err(e) => {
                    discard(conn.take());
                    last = e;
                }
            }
        }
        Err(ProcessError::ForkServer(last))
    })
}

/// The pid of this process's fork server, if one is running.
pub(crate) fn server_pid() -> Option<u32> {
    with_conn(|c| c.as_ref().map(|c| c.server))
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

/// Called by the routing constructor: in a fork server, serves and exits.
pub(crate) fn route() {
    let Some(value) = std::env::var_os(ENV) else {
        return;
    };
    std::env::remove_var(ENV);
    super::spawn::ignore_sigpipe();
    let code = serve(&value.to_string_lossy());
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    std::process::exit(code);
}

fn attest(fd: RawFd) -> Result<(), String> {
    // SAFETY: getauxval only reads the auxiliary vector.
    if unsafe { libc::getauxval(libc::AT_SECURE) } != 0 {
        return Err(format!("refusing {ENV} in a process with elevated privileges (AT_SECURE)"));
    }
    // SAFETY: an all-zero ucred is a valid out-buffer of the stated length.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let r = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, (&mut cred as *mut libc::ucred).cast(), &mut len)
    };
    if r != 0 {
        return Err(format!("descriptor {fd} is not a socket: {}", io::Error::last_os_error()));
    }
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    if cred.pid != ppid {
        return Err(format!("the socket was created by pid {}, not by the parent (pid {ppid})", cred.pid));
    }
    super::spawn::same_exe_as(ppid)
}

fn serve(value: &str) -> i32 {
    let fd = match value.parse::<RawFd>() {
        Ok(fd) if fd >= 0 => fd,
        _ => {
            eprintln!("shmproc: bad {ENV} value {value:?}");
            return 1;
        }
    };
    if let Err(why) = attest(fd) {
        eprintln!("shmproc: not serving as a fork server: {why}");
        return 1;
    }
    // SAFETY: an open socket (attested above) passed to us to own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: F_SETFD on our own descriptor.
    unsafe { libc::fcntl(sock.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: ignoring SIGINT has no memory-safety conditions.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let mut daemons: Vec<OwnedFd> = Vec::new();
    let mut buf = vec![0u8; HEADER + INLINE_MAX];
    loop {
        let (n, mut fds) = match recv_with_fds(sock.as_raw_fd(), &mut buf) {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                if reply(&sock, -libc::EINVAL).is_err() {
                    break;
                }
                continue;
            }
            Err(_) => break,
        };
        let kind = buf.get(5).copied();
        let ok = n >= HEADER
            && buf[..4] == MAGIC.to_le_bytes()
            && fds.len() <= MAX_FDS
            && match kind {
                Some(KIND_INLINE) => fds.len() < MAX_FDS,
                Some(KIND_MEMFD) => n == HEADER && !fds.is_empty(),
                _ => false,
            };
        if !ok {
            if reply(&sock, -libc::EINVAL).is_err() {
                break;
            }
            continue;
        }
        let daemon = buf[4] != 0;
        daemons.retain(|p| !exited(p));
        // SAFETY: a raw clone without a new stack behaves like fork: the child
        // continues here on a copy of this (single-threaded) process. The
        // server never starts threads, so no lock is held in the copy; the
        // child does what glibc's fork handlers would (our own fork handler,
        // below) and never returns into the loop.
        let pid = unsafe {
            libc::syscall(libc::SYS_clone, libc::CLONE_PARENT | libc::SIGCHLD, 0usize, 0usize, 0usize, 0usize)
        } as libc::pid_t;
        if pid == 0 {
            let sock_fd = sock.as_raw_fd();
            std::mem::forget(sock);
            // SAFETY: closing the child's copies of the server's descriptors.
            unsafe { libc::close(sock_fd) };
            drop(std::mem::take(&mut daemons));
            let inline = if kind == Some(KIND_INLINE) { buf.get(HEADER..n).map(<[u8]>::to_vec) } else { None };
            in_child(std::mem::take(&mut fds), inline);
        }
        let answer = if pid < 0 {
            -io::Error::last_os_error().raw_os_error().unwrap_or(libc::EAGAIN)
        } else {
            if daemon {
                if let Some(p) = super::sys::open_pidfd(pid as u32) {
                    daemons.push(p);
                }
            }
            pid
        };
        drop(fds);
        if reply(&sock, answer).is_err() {
            break;
        }
    }
    // The client is gone: its daemon children go with it.
    for p in &daemons {
        // SAFETY: a valid pidfd; null siginfo means "as if by kill".
        unsafe { libc::syscall(libc::SYS_pidfd_send_signal, p.as_raw_fd(), libc::SIGKILL, std::ptr::null::<u8>(), 0) };
    }
    0
}

fn reply(sock: &OwnedFd, v: i32) -> io::Result<()> {
    send_with_fds(sock.as_raw_fd(), &v.to_le_bytes(), &[])
}

/// Whether the process behind a pidfd has exited.
fn exited(pidfd: &OwnedFd) -> bool {
    let mut pfd = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, no waiting.
    unsafe { libc::poll(&mut pfd, 1, 0) > 0 }
}

/// Reads (from offset 0: the descriptor's file offset is shared with the
/// client) the payload memfd, the first of `fds`, and removes it from them.
fn read_memfd(fds: &mut Vec<OwnedFd>) -> io::Result<Vec<u8>> {
    if fds.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "no payload descriptor"));
    }
    let payload = std::fs::File::from(fds.remove(0));
    let mut bytes = Vec::new();
    let mut off = 0u64;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match payload.read_at(&mut chunk, off) {
            Ok(0) => return Ok(bytes),
            Ok(n) => {
                bytes.extend_from_slice(chunk.get(..n).unwrap_or_default());
                off += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The child of a request: never returns.
fn in_child(mut fds: Vec<OwnedFd>, inline: Option<Vec<u8>>) -> ! {
    // SAFETY: restoring the default disposition.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
    super::atfork::child();
    let code = run_request(&mut fds, inline);
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    std::process::exit(code)
}

fn run_request(fds: &mut Vec<OwnedFd>, inline: Option<Vec<u8>>) -> i32 {
    let bytes = match inline {
        Some(b) => b,
        None => match read_memfd(fds) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("shmproc: reading the fork-server payload failed: {e}");
                return 1;
            }
        },
    };
    let Some(targets) = payload_fds(&bytes) else {
        eprintln!("shmproc: malformed fork-server payload");
        return 1;
    };
    if targets.len() != fds.len() || targets.iter().any(|&t| t < 3) {
        eprintln!("shmproc: the fork-server payload names other descriptors than it carries");
        return 1;
    }
    // Put each received descriptor at the number the client's handles name:
    // first out of the way (above every target), then into place.
    let top = targets.iter().copied().max().unwrap_or(2).saturating_add(1);
    let mut high = Vec::with_capacity(fds.len());
    for fd in fds.drain(..) {
        // SAFETY: duplicating a descriptor we own to a free number >= top.
        let h = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, top) };
        if h < 0 {
            eprintln!("shmproc: fork-server child: {}", io::Error::last_os_error());
            return 1;
        }
        // SAFETY: a fresh descriptor we own.
        high.push(unsafe { OwnedFd::from_raw_fd(h) });
    }
    for (h, &t) in high.iter().zip(&targets) {
        // SAFETY: dup3 onto a number the payload names (>= 3); whatever was
        // open there in this fresh child is the server's, no longer needed.
        if unsafe { libc::dup3(h.as_raw_fd(), t, libc::O_CLOEXEC) } < 0 {
            eprintln!("shmproc: fork-server child: {}", io::Error::last_os_error());
            return 1;
        }
    }
    drop(high);
    std::panic::catch_unwind(|| run_payload(&bytes, Started::ForkServer)).unwrap_or(1)
}
