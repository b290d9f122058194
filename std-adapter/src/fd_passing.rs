//! Passing open descriptors (sockets, files, pipes) between processes:
//! [`Fd<T>`], Python's `multiprocessing.reduction` (`send_handle` /
//! `recv_handle`, and the pickling of sockets that lets
//! `pool.apply_async(talk, (conn,))` hand an accepted connection to a
//! worker).
//!
//! A descriptor cannot travel as bytes: it is an index into the sending
//! process's descriptor table. So an [`Fd<T>`] is a **ticket**. [`Fd::new`]
//! moves the descriptor into a per-process *broker* and keeps a ticket
//! (the sender's pid and start time, and a random 64-bit token); the ticket
//! is what the message carries through a [`Queue`](crate::Queue), a
//! [`Pipe`](crate::Pipe) or a [`Pool`](crate::Pool) argument or result (an
//! `Fd<T>` is a [`Message`](crate::Message) like any other, also inside your
//! own message types). The receiver turns the ticket back into a working
//! descriptor with [`Fd::take`]:
//!
//! ```
//! use std::io::{Read, Write};
//! use std::os::unix::net::UnixStream;
//! use shmproc::Fd;
//!
//! let q = shmproc::Queue::<Fd<UnixStream>>::bounded(4)?;
//! let (mut mine, theirs) = UnixStream::pair()?;
//! q.send(&Fd::new(theirs)?)?; // the descriptor waits in this process's broker
//! let mut child = shmproc::Process::spawn(move || {
//!     let mut s = q.recv().unwrap().take().unwrap(); // a working socket here
//!     s.write_all(b"hi").unwrap();
//! })?;
//! let mut buf = [0u8; 2];
//! mine.read_exact(&mut buf)?;
//! assert_eq!(&buf, b"hi");
//! assert_eq!(child.join()?, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How a ticket is redeemed
//!
//! The broker is a thread, started in the sending process by its first
//! [`Fd::new`], listening on an **abstract unix socket** named after the
//! process's pid and start time (`shmproc-fd-<pid>-<start>`; abstract names
//! vanish with the process, so nothing is left in the file system). The
//! receiver connects, asks for its token, and gets the descriptor with
//! `SCM_RIGHTS`. The broker accepts only peers of its own user id
//! (`SO_PEERCRED`), and the receiver accepts only a broker whose pid is the
//! ticket's, so a process squatting a dead sender's name cannot hand out
//! descriptors. A ticket redeemed in the process that made it is served from
//! the table directly, with no socket.
//!
//! Why not `pidfd_getfd(2)`: it needs ptrace rights over the sender
//! (`PTRACE_MODE_ATTACH_REALCREDS`), which Yama's default
//! `ptrace_scope = 1` (Ubuntu, Debian, Fedora...) gives only to *ancestors*;
//! the common direction here is the opposite one (a parent hands a socket to
//! a pool worker it started), so it would fail on most machines, and it needs
//! Linux 5.6. The broker works for any two processes of one user in one
//! network namespace (abstract socket names are per network namespace: a
//! receiver in another one gets [`FdError::SenderGone`]), and in one pid
//! namespace (the receiver checks the broker's pid as its own namespace sees
//! it: across pid namespaces it gets [`FdError::Protocol`]).
//!
//! Cost, measured with the 10,000-descriptor test (release build, a shared
//! 2-core machine): 20,000 hops (there and back), each with a fresh socket
//! pair, a queue message and a redemption, in about 1.8 s, so under 100 µs
//! per descriptor passed. `pidfd_getfd` would save the connection and one
//! context switch per descriptor; the broker is kept because it works
//! wherever the descriptor is useful at all.
//!
//! The broker serves one request at a time; a connected peer that sends
//! nothing holds it up for at most a second (its receive timeout), so a
//! misbehaving same-user process can slow descriptor passing down, not stop
//! it for good.
//!
//! # Errors, never hangs
//!
//! * The sender exited (or was killed) before the ticket was redeemed: its
//!   socket is gone with it, and [`Fd::take`] fails at once with
//!   [`FdError::SenderGone`].
//! * The sender is alive but does not answer within the timeout (5 s for
//!   [`Fd::take`], or [`Fd::take_timeout`]'s): [`FdError::Timeout`]; every
//!   socket operation carries the timeout, so `take` never blocks past it.
//! * The ticket was already redeemed, discarded or expired:
//!   [`FdError::NotFound`].
//!
//! A `take` that times out after the broker already handed the descriptor
//! over (a receiver stalled exactly between its request and the reply) loses
//! that descriptor: the broker's copy is closed once it was sent, and the
//! receiver never picks it up. It is closed, not leaked.
//!
//! # When a brokered descriptor is closed (nothing leaks forever)
//!
//! The broker holds the one copy of the descriptor (moved in by
//! [`Fd::new`], or a duplicate made by [`Fd::dup`]) and closes it on the
//! first of:
//!
//! 1. the ticket is **redeemed** ([`Fd::take`] in any process: the
//!    descriptor moves to the receiver, so every other copy of the ticket
//!    then gets [`FdError::NotFound`]);
//! 2. a **received** `Fd` is dropped without `take`: its drop tells the
//!    broker to close the descriptor (best effort: nothing to do if the
//!    sender is gone);
//! 3. the **sending** `Fd` is dropped without ever having been serialised
//!    (it was never sent anywhere);
//! 4. the ticket's **time to live** passes unredeemed (60 s by default,
//!    [`Fd::with_ttl`] to choose); the broker sweeps expired entries within
//!    about a second of their expiry, without being asked;
//! 5. the sending process **exits**.
//!
//! So sending 10,000 descriptors that are received leaves both processes'
//! descriptor counts where they were (tested), and a descriptor sent and
//! never received is closed after its time to live at the latest. Dropping
//! the sending `Fd` *after* it was serialised does not close the descriptor
//! (the message carrying the ticket may still be in flight): that is rule 4's
//! case when nobody receives it. A message that is serialised and then not
//! sent (a full queue's `try_send`) counts as sent.
//!
//! `Fd<T>` is not `Clone`: a ticket names one descriptor that one receiver
//! gets. A message that is deserialised twice (two
//! [`RecvRef::to_owned`](crate::RecvRef::to_owned) calls) yields two tickets
//! for one descriptor: the first `take` wins, the second gets
//! [`FdError::NotFound`].
//!
//! # Fork
//!
//! A forked child does not inherit the broker: the fork handler closes, in
//! the child, the listening socket and the child's copies of the brokered
//! descriptors (so a parent that dies still gives [`FdError::SenderGone`],
//! and a connection a worker closes is really closed); the child starts its
//! own broker, under its own pid and start time, on its own first
//! [`Fd::new`]. The broker thread takes only the crate's fork-safe lock,
//! which the child resets, so it does not count as a thread that makes
//! `fork()` unsafe ([`ProcessError::ThreadedParent`](crate::ProcessError))
//! and does not switch the automatic start method to the fork server. (If the
//! fork happens while the broker thread holds that lock, a rare window of a
//! few instructions, the child's copies of the brokered descriptors are left
//! open in the child rather than closed.)

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rkyv::rancor::Fallible;
use rkyv::{Archive, Deserialize, Place, Serialize};

use crate::globals::ForkSafe;
use crate::process::forkserver::{recv_with_fds, send_with_fds};

/// How long [`Fd::take`] waits for the sender's broker.
const TAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a dropped received `Fd` waits for the broker to take a discard.
const DISCARD_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the broker waits for a connected peer's request.
const SERVE_TIMEOUT: Duration = Duration::from_secs(1);
/// A brokered descriptor's default time to live.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

const OP_TAKE: u64 = 1;
const OP_DISCARD: u64 = 2;
const REPLY_OK: u8 = 0;
const REPLY_NOT_FOUND: u8 = 1;

/// What identifies a brokered descriptor: the sending process (pid and start
/// time) and a random token. This is all an [`Fd`] message carries.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[rkyv(crate = rkyv, derive(Debug))]
pub struct Ticket {
    /// The sender's process id.
    pub pid: u32,
    /// The sender's start time in clock ticks since boot (0 if unknown).
    pub start: u64,
    /// The descriptor's token in the sender's broker.
    pub token: u64,
}

/// Why a descriptor could not be passed.
#[derive(Debug)]
#[non_exhaustive]
pub enum FdError {
    /// A system call failed (starting the broker, duplicating, a socket
    /// operation other than the cases below).
    Io(io::Error),
    /// The sending process is gone (exited or killed before the ticket was
    /// redeemed), or its broker cannot be reached from here (another network
    /// namespace).
    SenderGone {
        /// The sender's pid, as the ticket names it.
        pid: u32,
    },
    /// The sender's broker does not hold this ticket (any more): it was
    /// already taken, discarded, or it expired.
    NotFound,
    /// The sender's broker did not answer in time.
    Timeout,
    /// The peer answered something that is not the protocol (a process that
    /// is not the ticket's sender, or garbage).
    Protocol,
}

impl fmt::Display for FdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdError::Io(e) => write!(f, "descriptor passing failed: {e}"),
            FdError::SenderGone { pid } => write!(f, "the sender of the descriptor (pid {pid}) is gone"),
            FdError::NotFound => write!(f, "the descriptor was already taken, discarded or expired"),
            FdError::Timeout => write!(f, "the sender's descriptor broker did not answer in time"),
            FdError::Protocol => write!(f, "the descriptor broker answered garbage"),
        }
    }
}

impl std::error::Error for FdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FdError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<FdError> for io::Error {
    fn from(e: FdError) -> io::Error {
        let kind = match &e {
            FdError::Io(inner) => inner.kind(),
            FdError::SenderGone { .. } => io::ErrorKind::ConnectionRefused,
            FdError::NotFound => io::ErrorKind::NotFound,
            FdError::Timeout => io::ErrorKind::TimedOut,
            FdError::Protocol => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// A descriptor on its way to another process: a ticket for a descriptor
/// kept by the sender's broker (module docs). `T` is what it arrives as:
/// [`OwnedFd`], [`std::net::TcpStream`], [`std::os::unix::net::UnixStream`],
/// [`std::fs::File`], anything `Into<OwnedFd> + From<OwnedFd>`.
///
/// ```
/// use shmproc::Fd;
/// use std::fs::File;
/// let (tx, rx) = shmproc::Pipe::<Fd<File>>::oneway()?;
/// tx.send(&Fd::new(File::open("/dev/null")?)?)?;
/// let f: File = rx.recv()?.take()?; // here the same process; any process works
/// use std::os::unix::fs::FileTypeExt;
/// assert!(f.metadata()?.file_type().is_char_device());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a received Fd holds a descriptor in the sender's broker until it is taken or dropped"]
pub struct Fd<T> {
    ticket: Ticket,
    /// Made by `new`/`dup` in this process (not deserialised).
    origin: bool,
    /// Serialised at least once (so it may be in flight).
    sent: AtomicBool,
    /// Neither taken nor discarded yet.
    live: bool,
    _t: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Fd<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fd").field("ticket", &self.ticket).field("origin", &self.origin).finish()
    }
}

impl<T: Into<OwnedFd>> Fd<T> {
    /// Moves `value`'s descriptor into this process's broker (starting the
    /// broker on first use) and returns its ticket, with the default time
    /// to live ([`DEFAULT_TTL`], 60 s).
    ///
    /// ```
    /// let fd = shmproc::Fd::new(std::fs::File::open("/dev/null")?)?;
    /// assert_eq!(fd.ticket().pid, std::process::id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(value: T) -> Result<Fd<T>, FdError> {
        Fd::with_ttl(value, DEFAULT_TTL)
    }

    /// Like [`new`](Fd::new), with the time after which an unredeemed
    /// descriptor is closed by the broker (rule 4 in the module docs).
    ///
    /// ```
    /// use std::time::Duration;
    /// let fd = shmproc::Fd::with_ttl(std::fs::File::open("/dev/null")?, Duration::from_secs(600))?;
    /// let _file = fd.take()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_ttl(value: T, ttl: Duration) -> Result<Fd<T>, FdError> {
        let fd: OwnedFd = value.into();
        let ticket = broker_insert(fd, ttl)?;
        Ok(Fd { ticket, origin: true, sent: AtomicBool::new(false), live: true, _t: PhantomData })
    }
}

impl<T> Fd<T> {
    /// Brokers a duplicate of `value`'s descriptor (`F_DUPFD_CLOEXEC`): the
    /// caller keeps using its own, as Python's `reduction.DupFd` does.
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::os::unix::net::UnixStream;
    /// let (a, mut b) = UnixStream::pair()?;
    /// let ticket = shmproc::Fd::<UnixStream>::dup(&a)?;
    /// let mut again: UnixStream = ticket.take()?; // a second descriptor for `a`'s socket
    /// again.write_all(b"x")?;
    /// let mut buf = [0u8; 1];
    /// b.read_exact(&mut buf)?;
    /// drop(a); // `again` still works
    /// again.write_all(b"y")?;
    /// b.read_exact(&mut buf)?;
    /// assert_eq!(&buf, b"y");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn dup(value: &impl AsFd) -> Result<Fd<T>, FdError> {
        let fd = value.as_fd().try_clone_to_owned().map_err(FdError::Io)?;
        let ticket = broker_insert(fd, DEFAULT_TTL)?;
        Ok(Fd { ticket, origin: true, sent: AtomicBool::new(false), live: true, _t: PhantomData })
    }

    /// The ticket this `Fd` carries.
    #[must_use]
    pub fn ticket(&self) -> Ticket {
        self.ticket
    }
}

impl<T: From<OwnedFd>> Fd<T> {
    /// Redeems the ticket: the descriptor, as a `T`, now owned by this
    /// process (and closed in the sender's broker). Waits at most 5 s for the
    /// sender's broker; see [`take_timeout`](Fd::take_timeout).
    ///
    /// # Errors
    ///
    /// [`FdError::SenderGone`] if the sender died, [`FdError::NotFound`] if
    /// the ticket was taken, discarded or expired, [`FdError::Timeout`],
    /// [`FdError::Io`], [`FdError::Protocol`].
    pub fn take(self) -> Result<T, FdError> {
        self.take_timeout(TAKE_TIMEOUT)
    }

    /// [`take`](Fd::take), waiting at most `timeout` for the sender's broker
    /// (every socket operation carries it; a dead sender fails at once).
    ///
    /// ```
    /// use std::time::Duration;
    /// let fd = shmproc::Fd::new(std::fs::File::open("/dev/null")?)?;
    /// let _f = fd.take_timeout(Duration::from_millis(100))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn take_timeout(mut self, timeout: Duration) -> Result<T, FdError> {
        self.live = false;
        redeem(self.ticket, OP_TAKE, timeout)?.map(T::from).ok_or(FdError::Protocol)
    }
}

impl<T> Drop for Fd<T> {
    fn drop(&mut self) {
        if !self.live {
            return;
        }
        if self.origin {
            if !self.sent.load(Ordering::Relaxed) {
                // Never sent anywhere: close it now (rule 3).
                drop(local_take(self.ticket.token));
            }
        } else {
            // A received ticket that nobody took (rule 2): best effort.
            let _ = redeem(self.ticket, OP_DISCARD, DISCARD_TIMEOUT);
        }
    }
}

// --- rkyv: an `Fd<T>` archives as its ticket --------------------------------

impl<T> Archive for Fd<T> {
    type Archived = ArchivedTicket;
    type Resolver = <Ticket as Archive>::Resolver;

    fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
        self.ticket.resolve(resolver, out);
    }
}

impl<T, S: Fallible + ?Sized> Serialize<S> for Fd<T>
where
    Ticket: Serialize<S>,
{
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        // From now on the ticket may be in flight: dropping this `Fd` no
        // longer closes the descriptor (rule 3 no longer applies).
        self.sent.store(true, Ordering::Relaxed);
        self.ticket.serialize(serializer)
    }
}

impl<T, D: Fallible + ?Sized> Deserialize<Fd<T>, D> for ArchivedTicket {
    fn deserialize(&self, _: &mut D) -> Result<Fd<T>, D::Error> {
        let ticket = Ticket { pid: self.pid.to_native(), start: self.start.to_native(), token: self.token.to_native() };
        Ok(Fd { ticket, origin: false, sent: AtomicBool::new(false), live: true, _t: PhantomData })
    }
}

// --- the broker ---------------------------------------------------------------

struct Entry {
    fd: OwnedFd,
    expires: Option<Instant>,
}

#[derive(Default)]
struct State {
    /// This process's identity when the broker started (pid, start time).
    me: Option<(u32, u64)>,
    listener: Option<OwnedFd>,
    /// Written to wake the broker thread (a new entry may expire first).
    wake: Option<OwnedFd>,
    table: Option<HashMap<u64, Entry>>,
}

static STATE: ForkSafe<State> = ForkSafe::new(State { me: None, listener: None, wake: None, table: None });
/// Broker threads running in this process (0 or 1): threads that are
/// fork-safe (module docs), subtracted from the count fork mode checks.
static BROKER_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Threads of this process that are shmproc's fork-safe broker (0 or 1).
pub(crate) fn fork_safe_threads() -> usize {
    BROKER_THREADS.load(Ordering::Relaxed)
}

/// In a freshly forked child (the fork handler): forget the parent's
/// broker, closing the inherited listener, wake-up descriptor and the
/// copies of brokered descriptors.
pub(crate) fn after_fork_in_child() {
    BROKER_THREADS.store(0, Ordering::Relaxed);
    // SAFETY: called by the fork-child handler, in the single thread of a
    // fresh child, before it starts any thread.
    let consistent = unsafe { STATE.unlock_in_child() };
    if consistent {
        STATE.with(|s| {
            s.me = None;
            drop(s.listener.take());
            drop(s.wake.take());
            if let Some(table) = s.table.take() {
                // Closing is a plain close(2) per descriptor; the map's
                // memory is freed too (glibc's malloc is usable in a forked
                // child).
                drop(table);
            }
        });
    } else {
        // The lock was held mid-update: leak the half-updated state rather
        // than read it (module docs).
        // SAFETY: as above, the only thread of a fresh child.
        unsafe { STATE.reset_in_child(State::default()) };
    }
}

fn io_err() -> FdError {
    FdError::Io(io::Error::last_os_error())
}

fn random_token() -> Result<u64, FdError> {
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: writing at most the remaining bytes of `buf`.
        let r = unsafe { libc::getrandom(buf[got..].as_mut_ptr().cast(), buf.len() - got, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(FdError::Io(e));
        }
        got += r as usize;
    }
    Ok(u64::from_ne_bytes(buf))
}

/// The abstract socket address of a broker.
fn broker_addr(pid: u32, start: u64) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let name = format!("shmproc-fd-{pid}-{start}");
    // sun_path[0] stays 0: an abstract name.
    for (dst, b) in addr.sun_path[1..].iter_mut().zip(name.bytes()) {
        *dst = b as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    (addr, len as libc::socklen_t)
}

fn seqpacket() -> Result<OwnedFd, FdError> {
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io_err());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_timeouts(fd: RawFd, timeout: Duration) -> Result<(), FdError> {
    // A zero timeout means "forever" to the kernel: use a microsecond.
    let t = timeout.max(Duration::from_micros(1));
    let tv = libc::timeval {
        tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        // SAFETY: `tv` is a valid timeval of the size given.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io_err());
        }
    }
    Ok(())
}

fn peer_cred(fd: RawFd) -> Option<libc::ucred> {
    // SAFETY: an all-zero ucred is valid.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` has the size given in `len`.
    let r = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, (&mut cred as *mut libc::ucred).cast(), &mut len)
    };
    (r == 0).then_some(cred)
}

/// Puts `fd` into this process's broker (starting it if needed).
fn broker_insert(fd: OwnedFd, ttl: Duration) -> Result<Ticket, FdError> {
    crate::process::atfork::install();
    let token = random_token()?;
    let (me, wake) = STATE.with(|s| -> Result<((u32, u64), bool), FdError> {
        let me = match s.me {
            Some(me) => me,
            None => {
                let id = shmproc_core::Identity::current_process();
                let me = (id.id, id.start);
                start_broker(s, me)?;
                me
            }
        };
        let table = s.table.get_or_insert_with(HashMap::new);
        let was_empty = table.is_empty();
        let expires = Instant::now().checked_add(ttl);
        table.insert(token, Entry { fd, expires });
        Ok((me, was_empty))
    })?;
    if wake {
        wake_broker();
    }
    Ok(Ticket { pid: me.0, start: me.1, token })
}

fn wake_broker() {
    let fd = STATE.with(|s| s.wake.as_ref().map(|w| w.as_raw_fd()));
    if let Some(fd) = fd {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a valid u64 to an eventfd (a closed
        // or reused number only makes this write fail or be ignored).
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }
}

/// Binds the listener and starts the broker thread (with the state locked).
fn start_broker(s: &mut State, me: (u32, u64)) -> Result<(), FdError> {
    let listener = seqpacket()?;
    let (addr, len) = broker_addr(me.0, me.1);
    // SAFETY: `addr` is a valid sockaddr_un of length `len`.
    if unsafe { libc::bind(listener.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len) } != 0 {
        return Err(io_err());
    }
    // SAFETY: listen on a bound socket we own.
    if unsafe { libc::listen(listener.as_raw_fd(), 128) } != 0 {
        return Err(io_err());
    }
    // SAFETY: eventfd(2) with constant flags.
    let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if wake < 0 {
        return Err(io_err());
    }
    // SAFETY: a fresh descriptor we own.
    let wake = unsafe { OwnedFd::from_raw_fd(wake) };
    let (lfd, wfd) = (listener.as_raw_fd(), wake.as_raw_fd());
    std::thread::Builder::new().name("shmproc-fd-broker".into()).spawn(move || serve(lfd, wfd)).map_err(FdError::Io)?;
    BROKER_THREADS.store(1, Ordering::Relaxed);
    s.me = Some(me);
    s.listener = Some(listener);
    s.wake = Some(wake);
    Ok(())
}

/// Removes a token from this process's table.
fn local_take(token: u64) -> Option<OwnedFd> {
    STATE.with(|s| s.table.as_mut().and_then(|t| t.remove(&token)).map(|e| e.fd))
}

/// Closes expired entries; returns how long until the next expiry.
fn sweep() -> Option<Duration> {
    let now = Instant::now();
    let expired: Vec<OwnedFd> = STATE.with(|s| {
        let Some(table) = s.table.as_mut() else { return Vec::new() };
        let dead: Vec<u64> =
            table.iter().filter(|(_, e)| e.expires.is_some_and(|x| x <= now)).map(|(k, _)| *k).collect();
        dead.into_iter().filter_map(|k| table.remove(&k)).map(|e| e.fd).collect()
    });
    // Closed outside the lock.
    drop(expired);
    STATE
        .with(|s| s.table.as_ref().and_then(|t| t.values().filter_map(|e| e.expires).min()))
        .map(|next| next.saturating_duration_since(now))
}

/// The broker thread. It uses only system calls, the fork-safe state lock
/// and the allocator, so a fork while it runs is safe (module docs).
fn serve(listener: RawFd, wake: RawFd) {
    loop {
        let next = sweep();
        let timeout_ms = match next {
            // Wake a little after the earliest expiry, at least every second
            // while entries wait (so an entry added meanwhile is seen).
            Some(d) => (d.as_millis().min(1000) as libc::c_int).max(1),
            None => -1,
        };
        let mut fds = [
            libc::pollfd { fd: listener, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: wake, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: two valid pollfd entries.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
        if r < 0 {
            continue; // EINTR
        }
        if fds[1].revents & libc::POLLIN != 0 {
            let mut v = 0u64;
            // SAFETY: reading 8 bytes into a valid u64 (non-blocking eventfd).
            unsafe { libc::read(wake, (&mut v as *mut u64).cast(), 8) };
        }
        if fds[0].revents & libc::POLLIN == 0 {
            continue;
        }
        // SAFETY: accept4 on our listening socket, no address wanted.
        let conn = unsafe { libc::accept4(listener, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC) };
        if conn < 0 {
            // Out of descriptors (EMFILE) or the like: the connection stays
            // pending; do not spin on it.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        // SAFETY: a fresh descriptor we own.
        let conn = unsafe { OwnedFd::from_raw_fd(conn) };
        let _ = serve_one(conn.as_raw_fd());
    }
}

fn serve_one(conn: RawFd) -> Result<(), FdError> {
    set_timeouts(conn, SERVE_TIMEOUT)?;
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    if peer_cred(conn).map(|c| c.uid) != Some(uid) {
        return Ok(()); // another user: hang up
    }
    let mut req = [0u8; 16];
    let Some((n, extra)) = recv_with_fds(conn, &mut req).map_err(FdError::Io)? else { return Ok(()) };
    drop(extra); // a peer has no business sending descriptors here
    if n != 16 {
        return Err(FdError::Protocol);
    }
    let op = u64::from_le_bytes(req[..8].try_into().map_err(|_| FdError::Protocol)?);
    let token = u64::from_le_bytes(req[8..].try_into().map_err(|_| FdError::Protocol)?);
    let fd = local_take(token);
    match (op, fd) {
        (OP_TAKE, Some(fd)) => {
            send_with_fds(conn, &[REPLY_OK], &[fd.as_raw_fd()]).map_err(FdError::Io)?;
            // `fd` (this process's copy) is closed here: the receiver has its own.
            Ok(())
        }
        (OP_DISCARD, Some(fd)) => {
            drop(fd);
            send_with_fds(conn, &[REPLY_OK], &[]).map_err(FdError::Io)
        }
        (_, None) => send_with_fds(conn, &[REPLY_NOT_FOUND], &[]).map_err(FdError::Io),
        (_, Some(fd)) => {
            // Unknown operation: put the descriptor back untouched.
            STATE.with(|s| {
                s.table.get_or_insert_with(HashMap::new).insert(token, Entry { fd, expires: Some(Instant::now()) })
            });
            Err(FdError::Protocol)
        }
    }
}

/// Takes (or discards) a ticket's descriptor: from this process's table if
/// the ticket is ours, else from the sender's broker.
///
/// A refused or dropped connection means the sender is gone only if its
/// process really is (checked by pid and start time in `/proc`): a live
/// sender's broker that refused (a full backlog, a connection it dropped
/// while busy) is asked again until `timeout`, and a sender that cannot be
/// checked is taken at its word as before.
fn redeem(ticket: Ticket, op: u64, timeout: Duration) -> Result<Option<OwnedFd>, FdError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(200);
    loop {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        match redeem_once(ticket, op, left) {
            Err(FdError::SenderGone { pid })
                if Instant::now() < deadline
                    && shmproc_core::identity::liveness(ticket.pid, ticket.start)
                        == shmproc_core::identity::Liveness::Alive =>
            {
                let _ = pid;
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// One attempt of [`redeem`].
fn redeem_once(ticket: Ticket, op: u64, timeout: Duration) -> Result<Option<OwnedFd>, FdError> {
    let mine = STATE.with(|s| s.me) == Some((ticket.pid, ticket.start));
    if mine {
        let fd = local_take(ticket.token).ok_or(FdError::NotFound)?;
        return Ok(if op == OP_TAKE { Some(fd) } else { None });
    }
    let sock = seqpacket()?;
    set_timeouts(sock.as_raw_fd(), timeout)?;
    let (addr, len) = broker_addr(ticket.pid, ticket.start);
    // SAFETY: `addr` is a valid sockaddr_un of length `len`.
    let r = unsafe { libc::connect(sock.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len) };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ECONNREFUSED | libc::ENOENT) => FdError::SenderGone { pid: ticket.pid },
            Some(libc::EAGAIN | libc::ETIMEDOUT | libc::EINPROGRESS) => FdError::Timeout,
            _ => FdError::Io(e),
        });
    }
    // Only the ticket's own process may answer (not a squatter on a dead
    // sender's name).
    if peer_cred(sock.as_raw_fd()).map(|c| c.pid as u32) != Some(ticket.pid) {
        return Err(FdError::Protocol);
    }
    let mut req = [0u8; 16];
    req[..8].copy_from_slice(&op.to_le_bytes());
    req[8..].copy_from_slice(&ticket.token.to_le_bytes());
    send_with_fds(sock.as_raw_fd(), &req, &[]).map_err(|e| classify(e, ticket.pid))?;
    let mut reply = [0u8; 8];
    let got = recv_with_fds(sock.as_raw_fd(), &mut reply).map_err(|e| classify(e, ticket.pid))?;
    let Some((n, mut fds)) = got else { return Err(FdError::SenderGone { pid: ticket.pid }) };
    match (n, reply[0], op) {
        (1, REPLY_OK, OP_TAKE) if fds.len() == 1 => Ok(fds.pop()),
        (1, REPLY_OK, OP_DISCARD) if fds.is_empty() => Ok(None),
        (1, REPLY_NOT_FOUND, _) if fds.is_empty() => Err(FdError::NotFound),
        _ => Err(FdError::Protocol), // any descriptors received are closed here
    }
}

fn classify(e: io::Error, pid: u32) -> FdError {
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::ETIMEDOUT) => FdError::Timeout,
        Some(libc::ECONNRESET | libc::EPIPE | libc::ECONNREFUSED) => FdError::SenderGone { pid },
        _ => FdError::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_process_round_trip_and_not_found() {
        let fd = Fd::new(std::fs::File::open("/dev/null").unwrap()).unwrap();
        let bytes = crate::message::encode(&fd).unwrap();
        let back: Fd<std::fs::File> = crate::message::decode(&bytes).unwrap();
        let again: Fd<std::fs::File> = crate::message::decode(&bytes).unwrap();
        assert_eq!(back.ticket(), fd.ticket());
        back.take().unwrap();
        assert!(matches!(again.take(), Err(FdError::NotFound)));
    }

    #[test]
    fn dead_sender_is_an_error() {
        let t = Ticket { pid: u32::MAX - 7, start: 1, token: 2 };
        assert!(matches!(redeem(t, OP_TAKE, Duration::from_secs(1)), Err(FdError::SenderGone { .. })));
    }

    #[test]
    fn garbage_ticket_is_rejected() {
        let id = shmproc_core::Identity::current_process();
        let _ = Fd::new(std::fs::File::open("/dev/null").unwrap()).unwrap(); // start the broker
        let t = Ticket { pid: id.id, start: id.start, token: 12345 };
        assert!(matches!(redeem(t, OP_TAKE, Duration::from_secs(1)), Err(FdError::NotFound)));
    }
}
