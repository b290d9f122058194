//! Spawn mode: re-executing the current binary to run a `fn(A) -> R`.
//!
//! The parent writes a payload into a `memfd` and starts `/proc/self/exe` (the
//! very image it runs, even if the file was replaced since) with the fd number
//! in `SHMPROC_SPAWN`. In the child, a constructor in `.init_array`
//! ([`ROUTE_BEFORE_MAIN`], which runs before `main`; or [`crate::init`] at
//! the top of `main`, where no constructor runs) finds the variable, reads
//! the payload, runs the function and exits; the program's `main` never
//! runs there. The same constructor routes the fork server (see
//! `process/forkserver.rs`), whose children run payloads of this format too.
//!
//! Functions travel as offsets from an anchor function in this crate: the child
//! runs the same image, so `anchor + offset` is the same function even under
//! ASLR. A generic trampoline, monomorphised for `(A, R)` in the parent, is
//! sent the same way and does the typed work (validate and deserialise `A`,
//! call, map `R` to an exit code).
//!
//! # Who may choose the code a spawned child runs
//!
//! Only the parent that wrote the payload. Whoever sets a process's
//! environment and descriptors could otherwise put `SHMPROC_SPAWN` in it and
//! name a payload of their own, and the payload holds code offsets. So before
//! anything read from the payload becomes a code address, the child proves
//! where it came from, with facts only the kernel supplies:
//!
//! * the process is not running with elevated privileges (`AT_SECURE`, as
//!   for a set-uid binary): then `SHMPROC_SPAWN` is refused outright;
//! * the descriptor is a memfd sealed against every change
//!   (`F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`), so what is
//!   checked is what runs;
//! * the parent process (`getppid`) runs the very same executable (the
//!   `/proc/<ppid>/exe` and `/proc/self/exe` inodes match), holds the same
//!   memfd open under the same descriptor number (`/proc/<ppid>/fd/<n>`), and
//!   is the parent the payload names.
//!
//! This binary writes such payloads only in [`spawn`], for the functions its
//! own code passes to `spawn_fn`, and the routing removes the variable from
//! its own environment, so a variable set by anyone else never reaches a child of it.
//! A payload that fails any check, or does not parse, ends the child with an
//! error message and exit status 1: never a jump. The parent keeps its copy of
//! the payload open until it has reaped the child.
//!
//! Limits: the checks need `/proc` and a parent that this process may inspect
//! (same user, dumpable: the default); otherwise the child refuses to run. A
//! parent that hands its own binary a forged payload on purpose is trusted
//! like the rest of its code.

use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use rkyv::util::AlignedVec;

use super::sys::set_parent_death_signal;
use super::{become_child, ChildResult, ProcessError};
use crate::message::{decode, encode, Message};

pub(crate) const ENV: &str = "SHMPROC_SPAWN";
const MAGIC: u64 = u64::from_le_bytes(*b"SHMPSPWN");
const VERSION: u32 = 2;
/// At most this many inherited segment descriptors in one payload.
const MAX_FDS: usize = 4096;

static INIT_CALLED: AtomicBool = AtomicBool::new(false);

pub(crate) fn init_called() -> bool {
    INIT_CALLED.load(Ordering::Relaxed)
}

#[inline(never)]
fn anchor() {}

fn anchor_addr() -> usize {
    anchor as fn() as usize
}

/// A function address as an offset from the anchor: the same in every process
/// running this image (fork or re-exec), whatever the ASLR base.
pub(crate) fn fn_offset(addr: usize) -> i64 {
    (addr as i64).wrapping_sub(anchor_addr() as i64)
}

/// The address in this process of a function encoded by [`fn_offset`].
pub(crate) fn fn_address(offset: i64) -> usize {
    (anchor_addr() as i64).wrapping_add(offset) as usize
}

type Trampoline = fn(usize, &[u8]) -> i32;

fn trampoline<A: Message, R: ChildResult>(f: usize, arg: &[u8]) -> i32 {
    let mut aligned = AlignedVec::<16>::with_capacity(arg.len());
    aligned.extend_from_slice(arg);
    let arg = match decode::<A>(&aligned) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("shmproc: spawned child could not decode its argument: {e}");
            return 1;
        }
    };
    // SAFETY: `f` is the address of a `fn(A) -> R` taken in the parent, rebased
    // onto this process's copy of the same image (see the module docs); this
    // trampoline was monomorphised for exactly that A and R.
    let f: fn(A) -> R = unsafe { std::mem::transmute::<usize, fn(A) -> R>(f) };
    f(arg).exit_code()
}

/// The serialised start-up information of a spawned child.
pub(crate) struct Payload {
    pub(crate) bytes: Vec<u8>,
    /// Descriptors of the segments behind handles in the argument; the child
    /// inherits exactly these.
    pub(crate) fds: Vec<std::os::fd::RawFd>,
    /// Queue roles carried by handles in the argument.
    pub(crate) roles: Vec<(usize, shmproc_core::participants::Role)>,
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s);
}

impl Payload {
    pub(crate) fn new<A: Message, R: ChildResult + 'static>(
        f: fn(A) -> R,
        arg: &A,
        name: &str,
        identity: &str,
        daemon: bool,
        parent: &(u32, String, u64),
    ) -> Result<Payload, ProcessError> {
        let (arg, (fds, roles)) = crate::object::collecting_fds(|| encode(arg));
        let arg = arg.map_err(|e| ProcessError::Serialize(e.to_string()))?;
        let base = anchor_addr() as i64;
        let tramp: Trampoline = trampoline::<A, R>;
        let mut b = Vec::with_capacity(arg.len() + 128);
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&((tramp as usize as i64).wrapping_sub(base)).to_le_bytes());
        b.extend_from_slice(&((f as usize as i64).wrapping_sub(base)).to_le_bytes());
        b.push(u8::from(daemon));
        b.extend_from_slice(&parent.0.to_le_bytes());
        b.extend_from_slice(&parent.2.to_le_bytes());
        put_str(&mut b, name.as_bytes());
        put_str(&mut b, identity.as_bytes());
        put_str(&mut b, parent.1.as_bytes());
        b.extend_from_slice(&(fds.len() as u32).to_le_bytes());
        for fd in &fds {
            b.extend_from_slice(&fd.to_le_bytes());
        }
        b.extend_from_slice(&(arg.len() as u64).to_le_bytes());
        b.extend_from_slice(&arg);
        Ok(Payload { bytes: b, fds, roles })
    }
}

struct Parsed {
    tramp_off: i64,
    fn_off: i64,
    daemon: bool,
    parent_pid: u32,
    parent_start: u64,
    name: String,
    identity: String,
    parent_name: String,
    /// The segment descriptors the parent let us inherit.
    fds: Vec<i32>,
    arg: Vec<u8>,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

/// The segment descriptor numbers a payload names (`None`: malformed).
pub(crate) fn payload_fds(bytes: &[u8]) -> Option<Vec<i32>> {
    parse(bytes).map(|p| p.fds)
}

fn parse(bytes: &[u8]) -> Option<Parsed> {
    let mut r = Reader(bytes);
    if r.u64()? != MAGIC || r.u32()? != VERSION {
        return None;
    }
    let tramp_off = r.u64()? as i64;
    let fn_off = r.u64()? as i64;
    let daemon = r.u8()? != 0;
    let parent_pid = r.u32()?;
    let parent_start = r.u64()?;
    let name = r.string()?;
    let identity = r.string()?;
    let parent_name = r.string()?;
    let nfds = r.u32()? as usize;
    if nfds > MAX_FDS {
        return None;
    }
    let mut fds = Vec::with_capacity(nfds);
    for _ in 0..nfds {
        fds.push(r.u32()? as i32);
    }
    let n = usize::try_from(r.u64()?).ok()?;
    let arg = r.take(n)?.to_vec();
    Some(Parsed { tramp_off, fn_off, daemon, parent_pid, parent_start, name, identity, parent_name, fds, arg })
}

/// The seals a payload memfd must carry: its contents can no longer change.
const PAYLOAD_SEALS: libc::c_int = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// A close-on-exec memfd holding `bytes`, sealed against every change.
pub(crate) fn sealed_memfd(bytes: &[u8]) -> io::Result<OwnedFd> {
    // SAFETY: valid C string and flags.
    let raw = unsafe { libc::memfd_create(c"shmproc-spawn".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    file.rewind()?;
    // SAFETY: fcntl on our own memfd with valid seal flags.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, PAYLOAD_SEALS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(file))
}

/// Starts the child; returns its pid and the payload, which the caller keeps
/// open until the child is reaped (the child checks that its parent holds it).
pub(crate) fn spawn(payload: Payload, daemon: bool) -> Result<(u32, OwnedFd), ProcessError> {
    let file = std::fs::File::from(sealed_memfd(&payload.bytes).map_err(ProcessError::Spawn)?);
    let data_fd = file.as_raw_fd();
    let parent_pid = std::process::id();
    let inherit = payload.fds;
    let mut cmd = Command::new("/proc/self/exe");
    if let Some(arg0) = std::env::args_os().next() {
        cmd.arg0(arg0);
    }
    cmd.env(ENV, data_fd.to_string());
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (fcntl, prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            for &fd in inherit.iter().chain(std::iter::once(&data_fd)) {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if daemon {
                set_parent_death_signal(parent_pid);
            }
            Ok(())
        });
    }
    let child = crate::roles::while_spawning(|| cmd.spawn()).map_err(ProcessError::Spawn)?;
    // The std handle is dropped without waiting: the pid is managed (and reaped)
    // by our `Process`.
    Ok((child.id(), OwnedFd::from(file)))
}

/// Why a spawn payload was refused (see the module docs).
fn attest(fd: i32) -> Result<(), String> {
    // SAFETY: getauxval only reads the auxiliary vector.
    if unsafe { libc::getauxval(libc::AT_SECURE) } != 0 {
        return Err("refusing SHMPROC_SPAWN in a process with elevated privileges (AT_SECURE)".into());
    }
    let stat_fd = |fd: i32| -> io::Result<(u64, u64)> {
        // SAFETY: an all-zero `stat` is a valid out-buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat writes into `st`, a valid out-pointer.
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((st.st_dev, st.st_ino))
    };
    let stat_path = |p: &str| -> io::Result<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(p)?;
        Ok((m.dev(), m.ino()))
    };
    let mine = stat_fd(fd).map_err(|e| format!("the payload descriptor {fd}: {e}"))?;
    // SAFETY: F_GET_SEALS only queries the descriptor (EINVAL unless a memfd).
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    if seals < 0 || seals & PAYLOAD_SEALS != PAYLOAD_SEALS {
        return Err("the payload is not a sealed memfd".into());
    }
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    let theirs = stat_path(&format!("/proc/{ppid}/fd/{fd}"))
        .map_err(|e| format!("the parent (pid {ppid}) does not hold the payload: {e}"))?;
    if theirs != mine {
        return Err(format!("the parent (pid {ppid}) does not hold the payload"));
    }
    same_exe_as(ppid)
}

/// Whether process `ppid` (our parent) runs the same executable as we do
/// (the `/proc/<pid>/exe` inodes match).
pub(crate) fn same_exe_as(ppid: libc::pid_t) -> Result<(), String> {
    let stat_path = |p: &str| -> io::Result<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(p)?;
        Ok((m.dev(), m.ino()))
    };
    let (their_exe, my_exe) = (stat_path(&format!("/proc/{ppid}/exe")), stat_path("/proc/self/exe"));
    match (their_exe, my_exe) {
        (Ok(a), Ok(b)) if a == b => Ok(()),
        (Ok(_), Ok(_)) => Err(format!("the parent (pid {ppid}) runs another executable")),
        (Err(e), _) | (_, Err(e)) => Err(format!("cannot compare the parent's executable with ours: {e}")),
    }
}

/// Called by [`crate::init`] and by the constructor [`ROUTE_BEFORE_MAIN`]:
/// marks init as done and, in a spawned child (or a fork server), runs the
/// requested function (or serves) and exits.
pub(crate) fn init() {
    INIT_CALLED.store(true, Ordering::Relaxed);
    super::atfork::install();
    super::forkserver::route();
    let Some(value) = std::env::var_os(ENV) else {
        return;
    };
    std::env::remove_var(ENV);
    ignore_sigpipe();
    let code = run_child(&value.to_string_lossy());
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    std::process::exit(code);
}

/// The Rust runtime ignores SIGPIPE before `main` (writes to a closed pipe
/// fail with `EPIPE` instead of killing the process); a child routed before
/// `main` never gets there, so it does the same itself.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: installing SIG_IGN for SIGPIPE has no memory-safety conditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Routes re-executed children before `main` runs, so that spawn mode and
/// the fork server work in binaries whose `main` never calls
/// [`crate::init`] (test binaries, examples, programs whose `main` belongs
/// to a framework).
///
/// glibc (and musl) call the functions listed in `.init_array` after the C
/// library is initialised (`malloc`, `environ`, stdio, `pthread_atfork`
/// work) and before `main`, with only the main thread running. This one
/// only reads the environment (`SHMPROC_SPAWN`, `SHMPROC_FORKSERVER`): in
/// an ordinary process it registers shmproc's fork handler and returns; in a
/// child started by shmproc it removes the variable, runs the child (or the
/// fork server) and exits, so the program's `main` never runs there. What
/// such a child does *not* get from the Rust runtime, which sets it up just
/// before `main`: the stack-overflow handler (an overflow is a plain
/// SIGSEGV) and the name `main` for its thread; SIGPIPE is ignored as the
/// runtime would. A panic cannot unwind out of the constructor: the child
/// exits with status 1.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static ROUTE_BEFORE_MAIN: extern "C" fn(libc::c_int, *const *const libc::c_char, *const *const libc::c_char) =
    route_before_main;

#[cfg(target_os = "linux")]
extern "C" fn route_before_main(
    _argc: libc::c_int,
    _argv: *const *const libc::c_char,
    _envp: *const *const libc::c_char,
) {
    if std::panic::catch_unwind(init).is_err() {
        // SAFETY: ending the process without unwinding into C.
        unsafe { libc::_exit(1) };
    }
}

fn run_child(value: &str) -> i32 {
    let Ok(fd) = value.parse::<i32>() else {
        eprintln!("shmproc: bad {ENV} value {value:?}");
        return 1;
    };
    if fd < 0 {
        eprintln!("shmproc: bad {ENV} value {value:?}");
        return 1;
    }
    // Nothing read through the descriptor is trusted before it is attested;
    // a bad one (not open, not ours) fails here, before we own it.
    if let Err(why) = attest(fd) {
        eprintln!("shmproc: refusing the spawn payload: {why}");
        return 1;
    }
    // SAFETY: an open descriptor (attested above) that the parent passed us
    // to own; nothing else in this fresh process refers to it.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let _ = file.rewind();
    let mut bytes = Vec::new();
    if let Err(e) = file.read_to_end(&mut bytes) {
        eprintln!("shmproc: reading the spawn payload failed: {e}");
        return 1;
    }
    drop(file);
    run_payload(&bytes, Started::Spawned)
}

/// How a child running a payload was started.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Started {
    /// Re-executed by its parent (spawn mode).
    Spawned,
    /// Forked by the fork server on its client's behalf (see `process/forkserver.rs`).
    ForkServer,
}

/// Runs a payload's function in this (child) process; returns the exit code.
/// The payload's segment descriptors must be open at the numbers it names.
pub(crate) fn run_payload(bytes: &[u8], how: Started) -> i32 {
    let Some(p) = parse(bytes) else {
        eprintln!("shmproc: malformed spawn payload");
        return 1;
    };
    // The segment descriptors were inherited without close-on-exec (that is
    // how they got here); set it again at once, so that programs this child
    // execs do not inherit them. Handles map them (or duplicates) as usual.
    for &fd in &p.fds {
        if fd >= 0 {
            // SAFETY: F_SETFD on a descriptor number only changes its flags
            // (or fails with EBADF if it is not open).
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    // SAFETY: getppid has no preconditions.
    if p.parent_pid != unsafe { libc::getppid() } as u32 {
        eprintln!("shmproc: the spawn payload names another parent");
        return 1;
    }
    // SAFETY: we are the only thread: a spawned child is routed before
    // `main` (or by init() first in main), before any thread starts; a fork
    // server's child is a copy of the single-threaded server.
    unsafe {
        become_child(p.name, p.identity, p.daemon, (p.parent_pid, p.parent_name, p.parent_start));
    }
    // A fork server's child is not tied to a thread of its parent, so no
    // parent-death signal there: the server kills its daemon children when
    // the client goes away (see `process/forkserver.rs`).
    if p.daemon && how == Started::Spawned {
        set_parent_death_signal(p.parent_pid);
    }
    let base = anchor_addr() as i64;
    let tramp_addr = base.wrapping_add(p.tramp_off) as usize;
    let fn_addr = base.wrapping_add(p.fn_off) as usize;
    // SAFETY: the payload is attested (see `attest` and the module docs): our
    // parent, running this same executable, wrote it in `spawn` with the
    // offset of a `Trampoline` monomorphised for the function at `fn_off`,
    // relative to the anchor; this process runs the same image.
    let tramp: Trampoline = unsafe { std::mem::transmute::<usize, Trampoline>(tramp_addr) };
    std::panic::catch_unwind(move || tramp(fn_addr, &p.arg)).unwrap_or(1)
}
