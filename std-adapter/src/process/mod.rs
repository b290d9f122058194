//! Child processes, the way Python's `multiprocessing.Process` runs them.
//!
//! Three start methods ([`StartMethod`]), as in Python:
//!
//! * **fork** ([`Process::spawn`], [`Builder::spawn`], and `fn`s with
//!   [`StartMethod::Fork`]): the child is a copy of the parent. Fast, runs
//!   closures, and everything the closure captured (and every anonymous
//!   [`Segment`](crate::Segment) mapping) is there in the child.
//!   **Only safe in a single-threaded parent**: after `fork()` only the calling
//!   thread exists in the child, and any lock another thread held (stdout, a
//!   user's mutex, a runtime's internals) stays locked forever. A fork from a
//!   multi-threaded parent is therefore refused with
//!   [`ProcessError::ThreadedParent`] unless the builder explicitly allows it
//!   ([`Builder::allow_threaded_fork`]). Closures can only be forked.
//! * **spawn** ([`StartMethod::Spawn`]): re-executes the current binary
//!   (`/proc/self/exe`); the child runs a `fn(A) -> R` with the argument
//!   passed through rkyv, and exits before the program's `main` runs (routed
//!   by a constructor in `.init_array`, or by [`crate::init`] where that is
//!   unavailable). Safe from any parent, including one running a tokio or
//!   zenoh runtime. The function and argument travel in a sealed memfd named
//!   by the `SHMPROC_SPAWN` variable; the child runs them only after checking
//!   that its parent runs the same executable and holds that memfd, so
//!   whoever else sets the variable cannot choose what it runs (an error exit
//!   instead). This needs `/proc` and a parent the child may inspect (same
//!   user, dumpable), and the parent keeps the memfd until it reaps the
//!   child. Segment descriptors passed to the child are close-on-exec again
//!   once it starts.
//! * **forkserver** ([`StartMethod::ForkServer`]): a single-threaded server
//!   process, started on first use by re-executing the binary, forks the
//!   child on request, with `clone(CLONE_PARENT)` so that the child is a real
//!   child of the caller (pid, [`Process::join`], exit codes, signals,
//!   [`parent_process`] all as with fork). Safe from any parent, and after the
//!   server's start almost as cheap as fork. The server exits when the
//!   calling process does (or is killed), killing the daemon children it
//!   started. Where its children differ: their stdio, environment and
//!   working directory are the caller's at the time the server started; a daemon child gets no parent-death signal (the
//!   server kills it when the caller goes away instead, so if both are
//!   SIGKILLed it keeps running); at most 252 segment descriptors per child.
//!
//! [`Builder::spawn_fn`] / [`Process::spawn_fn`] run a `fn` with the
//! builder's [`Builder::start_method`], else the process-wide one
//! ([`set_start_method`]), else automatically: fork in a single-threaded
//! process, the fork server in a multi-threaded one (a `#[test]`, an async
//! runtime). [`Pool`](crate::Pool) workers follow the same rule.
//!
//! No `init()` ritual: on Linux the crate routes re-executed children (spawn
//! mode, the fork server) from a constructor that runs before `main`, so both
//! work in test binaries, examples and programs whose `main` belongs to a
//! framework. [`crate::init`] stays valid (and idempotent).
//!
//! Layout: this file holds the Python-style API; `fork.rs`, `spawn.rs` and
//! `forkserver.rs` one start method each; `sys.rs` the system calls
//! (`waitpid`, pidfds, `kill`, `prctl`); `atfork.rs` the one fork-child
//! handler.
//!
//! Exit codes follow Python: 0 for a normal return, 1 for a panic (the message
//! goes to stderr as usual), `n` for `std::process::exit(n)`, `-signal` when
//! killed by a signal.
//!
//! **Daemon** children get `PR_SET_PDEATHSIG(SIGKILL)`, so they die with their
//! parent (note: Linux delivers it when the *thread* that created the child
//! exits), are sent SIGTERM when the parent exits normally, and may not start
//! children of their own. At normal exit, of the main program or of a child
//! (whatever its start method, and after a panic too), a process sends its
//! remaining daemonic children SIGTERM and waits for all its children, as
//! Python does.
//!
//! **No zombies**: a child is reaped by `join`, `join_timeout`, `is_alive` or
//! `exitcode` once it has exited; dropping the handle of an exited child reaps
//! it, and a still-running child whose handle is dropped is reaped by the next
//! call into this module (any spawn, [`active_children`]) or at exit.
//!
//! ```
//! let mut p = shmproc::Process::builder().name("worker").spawn(|| {
//!     println!("hello from {}", shmproc::current_process().name());
//! })?;
//! assert_eq!(p.join()?, 0);
//! # Ok::<(), shmproc::ProcessError>(())
//! ```

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use shmproc_core::{Deadline, Identity};

use crate::globals::ForkSafe;
use crate::message::Message;

pub(crate) mod atfork;
mod fork;
pub(crate) mod forkserver;
mod run;
pub(crate) mod spawn;
pub(crate) mod sys;

pub use run::Run;

/// Errors from starting, waiting for or signalling a process.
///
/// ```
/// use shmproc::{Process, ProcessError};
/// let daemon = Process::builder().daemon(true).spawn(|| {
///     // A daemon may not start children, as in Python.
///     assert!(matches!(Process::spawn(|| ()), Err(ProcessError::DaemonChildren)));
/// })?;
/// let mut daemon = daemon;
/// assert_eq!(daemon.join()?, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub enum ProcessError {
    /// `fork()` failed.
    Fork(io::Error),
    /// Re-executing the binary failed.
    Spawn(io::Error),
    /// `waitpid` or `poll` failed.
    Wait(io::Error),
    /// Sending a signal failed.
    Signal(io::Error),
    /// A daemon process tried to start a child (not allowed, as in Python).
    DaemonChildren,
    /// Fork mode was refused because the parent runs several threads; use
    /// spawn mode, or [`Builder::allow_threaded_fork`] if you know it is safe.
    ThreadedParent {
        /// Threads seen in the parent.
        threads: usize,
    },
    /// Fork mode was refused because this process holds borrows into
    /// shared rings ([`RecvRef`](crate::RecvRef)s): the child would keep
    /// reading frames the parent hands back. Drop them first (spawn mode is
    /// not affected).
    RingBorrowed {
        /// Borrows alive in the process.
        borrows: usize,
    },
    /// Spawn mode and the fork server need shmproc's start-up routing: the
    /// constructor that runs before `main` on Linux, or [`crate::init`].
    InitNotCalled,
    /// Starting or reaching the fork server failed.
    ForkServer(io::Error),
    /// A closure can only run in a forked child: [`Builder::spawn`] was given
    /// another start method. Use [`Builder::spawn_fn`] with a `fn(A) -> R`.
    ClosureNeedsFork {
        /// The start method the builder asked for.
        method: StartMethod,
    },
    /// The argument could not be serialised.
    Serialize(String),
    /// The child was reaped by someone else (a `waitpid(-1)` outside this crate),
    /// so its exit code is unknown.
    Lost {
        /// The child's pid.
        pid: u32,
    },
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessError::Fork(e) => write!(f, "fork failed: {e}"),
            ProcessError::Spawn(e) => write!(f, "spawning the child failed: {e}"),
            ProcessError::Wait(e) => write!(f, "waiting for the child failed: {e}"),
            ProcessError::Signal(e) => write!(f, "signalling the child failed: {e}"),
            ProcessError::RingBorrowed { borrows } => write!(
                f,
                "refusing to fork while {borrows} borrow(s) into shared rings (RecvRef) are alive: the child would \
                 read frames the parent hands back"
            ),
            ProcessError::DaemonChildren => write!(f, "daemonic processes are not allowed to have children"),
            ProcessError::ThreadedParent { threads } => write!(
                f,
                "refusing to fork a parent with {threads} threads (locks held by other threads would stay locked \
                 in the child); run a fn with spawn_fn (the fork server or spawn mode), or see \
                 Builder::allow_threaded_fork"
            ),
            ProcessError::InitNotCalled => {
                write!(f, "spawn mode and the fork server need shmproc::init() at the start of main on this platform")
            }
            ProcessError::ForkServer(e) => write!(f, "the fork server failed: {e}"),
            ProcessError::ClosureNeedsFork { method } => write!(
                f,
                "a closure can only run in a forked child, not with the {} start method; use spawn_fn with a fn",
                method.name()
            ),
            ProcessError::Serialize(e) => write!(f, "serialising the argument failed: {e}"),
            ProcessError::Lost { pid } => write!(f, "child {pid} was reaped outside shmproc"),
        }
    }
}

impl std::error::Error for ProcessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProcessError::Fork(e)
            | ProcessError::Spawn(e)
            | ProcessError::Wait(e)
            | ProcessError::Signal(e)
            | ProcessError::ForkServer(e) => Some(e),
            _ => None,
        }
    }
}

/// How a child process is started (Python's start methods).
///
/// * [`Fork`](StartMethod::Fork): `fork()` of the caller. Fastest; runs
///   closures; only safe in a single-threaded parent (otherwise refused with
///   [`ProcessError::ThreadedParent`]).
/// * [`Spawn`](StartMethod::Spawn): re-executes the binary, which runs the
///   `fn` and exits before `main`. Safe from any parent; slowest.
/// * [`ForkServer`](StartMethod::ForkServer): a single-threaded server
///   process (started on first use by re-executing the binary) forks the
///   child; the child is still a child of the caller (pid, `join`, exit
///   codes, signals). Safe from any parent; about as fast as fork once the
///   server runs. See the module docs for where its children differ.
///
/// Closures ([`Builder::spawn`], [`Process::spawn`]) always fork; the start
/// method applies to `fn`s ([`Builder::spawn_fn`], [`Process::spawn_fn`])
/// and to [`Pool`](crate::Pool) workers. Unless set, per builder or
/// process-wide ([`set_start_method`]), it is `Fork` in a single-threaded
/// parent and `ForkServer` in a multi-threaded one ([`get_start_method`]).
///
/// ```
/// use shmproc::{Process, StartMethod};
/// fn twice(x: i32) -> i32 {
///     2 * x
/// }
/// for m in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
///     let mut p = Process::builder().start_method(m).spawn_fn(twice, 21)?;
///     assert_eq!(p.join()?, 42);
/// }
/// # Ok::<(), shmproc::ProcessError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StartMethod {
    /// `fork()` the caller.
    Fork,
    /// Re-execute the binary.
    Spawn,
    /// Have the fork server fork the child.
    ForkServer,
}

impl StartMethod {
    /// Python's name: `"fork"`, `"spawn"` or `"forkserver"`.
    ///
    /// ```
    /// assert_eq!(shmproc::StartMethod::ForkServer.name(), "forkserver");
    /// ```
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            StartMethod::Fork => "fork",
            StartMethod::Spawn => "spawn",
            StartMethod::ForkServer => "forkserver",
        }
    }

    fn code(m: Option<StartMethod>) -> u8 {
        match m {
            None => 0,
            Some(StartMethod::Fork) => 1,
            Some(StartMethod::Spawn) => 2,
            Some(StartMethod::ForkServer) => 3,
        }
    }

    fn from_code(c: u8) -> Option<StartMethod> {
        match c {
            1 => Some(StartMethod::Fork),
            2 => Some(StartMethod::Spawn),
            3 => Some(StartMethod::ForkServer),
            _ => None,
        }
    }

    /// The automatic choice: fork when it is safe, the fork server otherwise.
    fn automatic() -> StartMethod {
        if sys::thread_count() > 1 {
            StartMethod::ForkServer
        } else {
            StartMethod::Fork
        }
    }
}

static DEFAULT_METHOD: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Sets the process-wide start method for `fn`s and pool workers (Python's
/// `set_start_method`); `None` returns to the automatic choice (`Fork` in a
/// single-threaded process, `ForkServer` in a multi-threaded one). A
/// builder's [`Builder::start_method`] overrides it.
///
/// ```
/// use shmproc::StartMethod;
/// shmproc::set_start_method(Some(StartMethod::Spawn));
/// assert_eq!(shmproc::get_start_method(), StartMethod::Spawn);
/// shmproc::set_start_method(None);
/// assert_eq!(shmproc::get_start_method(), StartMethod::Fork); // single-threaded
/// ```
pub fn set_start_method(method: Option<StartMethod>) {
    DEFAULT_METHOD.store(StartMethod::code(method), Ordering::Relaxed);
}

/// The start method a `fn` or pool worker started now without an explicit
/// one would get (Python's `get_start_method`).
///
/// ```
/// let m = shmproc::get_start_method();
/// println!("children start with {}", m.name());
/// ```
#[must_use]
pub fn get_start_method() -> StartMethod {
    StartMethod::from_code(DEFAULT_METHOD.load(Ordering::Relaxed)).unwrap_or_else(StartMethod::automatic)
}

/// Every start method this platform supports, in Python's order for Linux
/// (`get_all_start_methods`: fork, spawn, forkserver).
///
/// ```
/// use shmproc::StartMethod;
/// assert_eq!(shmproc::get_all_start_methods(), [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer]);
/// ```
#[must_use]
pub fn get_all_start_methods() -> [StartMethod; 3] {
    [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer]
}

/// The pid of this process's fork server, if it runs one (for tests and
/// diagnostics; the server is a child of this process but not a
/// [`Process`]).
#[doc(hidden)]
#[must_use]
pub fn forkserver_pid() -> Option<u32> {
    forkserver::server_pid()
}

/// What a child's function may return; turned into the exit code.
///
/// ```
/// // `()` exits with 0, an `i32` is the exit code, `Result<(), E>` exits
/// // with 1 (and prints the error) on `Err`.
/// let mut p = shmproc::Process::spawn(|| -> Result<(), String> { Err("no".into()) })?;
/// assert_eq!(p.join()?, 1);
/// let mut q = shmproc::Process::spawn(|| 7)?;
/// assert_eq!(q.join()?, 7);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait ChildResult {
    /// The exit code for this value.
    fn exit_code(self) -> i32;
}

impl ChildResult for () {
    fn exit_code(self) -> i32 {
        0
    }
}

impl ChildResult for i32 {
    fn exit_code(self) -> i32 {
        self
    }
}

mod never {
    /// Names the never type `!` on stable Rust: the output of a `fn() -> !`.
    /// Public but unnameable outside the crate (a private module).
    pub trait HasOutput {
        /// The function's return type.
        type Output;
    }

    impl<R> HasOutput for fn() -> R {
        type Output = R;
    }
}

/// `!`, the type of an expression that never finishes.
type Never = <fn() -> ! as never::HasOutput>::Output;

/// A child that never returns (`loop { .. }`, `std::process::exit`).
///
/// With this impl `Process::spawn(move || loop { .. })` compiles without
/// relying on the never-type fallback to `()` (the
/// `dependency_on_unit_never_type_fallback` lint, an error in edition 2024):
///
/// ```
/// #![deny(warnings)]
/// let p = shmproc::Process::spawn(move || loop {
///     std::thread::sleep(std::time::Duration::from_secs(1));
/// })?;
/// p.kill()?;
/// let mut p = p;
/// assert_eq!(p.join()?, -libc::SIGKILL);
/// let mut q = shmproc::Process::spawn(|| std::process::exit(3))?;
/// assert_eq!(q.join()?, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl ChildResult for Never {
    fn exit_code(self) -> i32 {
        match self {}
    }
}

impl ChildResult for std::convert::Infallible {
    fn exit_code(self) -> i32 {
        match self {}
    }
}

impl<T: ChildResult, E: fmt::Debug> ChildResult for Result<T, E> {
    fn exit_code(self) -> i32 {
        match self {
            Ok(v) => v.exit_code(),
            Err(e) => {
                eprintln!("Error: {e:?}");
                1
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Per-process state
// ---------------------------------------------------------------------------

const RUNNING: i64 = i64::MIN;
const LOST: i64 = i64::MIN + 1;

/// State shared by a `Process` handle and the registry of children.
pub(crate) struct ChildShared {
    pid: u32,
    name: String,
    daemon: bool,
    status: AtomicI64,
    pidfd: Option<OwnedFd>,
    /// A spawn-mode child's payload, held open until the child is reaped (the
    /// child checks that its parent holds it: see `spawn.rs`).
    payload: std::sync::Mutex<Option<OwnedFd>>,
}

pub(crate) struct Globals {
    pub(crate) name: String,
    /// Python's `_identity`: "" in the main process, "1", "1:2", ... in children.
    identity: String,
    pub(crate) daemon: bool,
    pub(crate) parent: Option<(u32, String, u64)>,
    children: Vec<Arc<ChildShared>>,
    counter: u64,
}

impl Globals {
    const fn main() -> Globals {
        Globals {
            name: String::new(),
            identity: String::new(),
            daemon: false,
            parent: None,
            children: Vec::new(),
            counter: 0,
        }
    }
}

pub(crate) static GLOBALS: ForkSafe<Globals> = ForkSafe::new(Globals::main());

/// Sets up the state of a freshly created child (fork or spawn).
///
/// # Safety
///
/// Only in a new child process before it starts any thread (see
/// [`ForkSafe::reset_in_child`]).
pub(crate) unsafe fn become_child(name: String, identity: String, daemon: bool, parent: (u32, String, u64)) {
    // SAFETY: forwarded from the caller: we are the only thread of a new child.
    unsafe {
        GLOBALS.reset_in_child(Globals {
            name,
            identity,
            daemon,
            parent: Some(parent),
            children: Vec::new(),
            counter: 0,
        })
    };
    crate::thread_id::reset_after_fork();
}

impl ChildShared {
    fn exit_status(&self) -> Option<i64> {
        match self.status.load(Ordering::Acquire) {
            RUNNING => None,
            s => Some(s),
        }
    }

    /// Reaps the child if it has exited (`block`: wait until it does).
    fn reap(&self, block: bool) -> Result<Option<i64>, ProcessError> {
        if let Some(s) = self.exit_status() {
            return Ok(Some(s));
        }
        // Through the pidfd where there is one: a wait on the pid could, once
        // another thread of ours has reaped the child, reap a stranger that
        // reused the pid (pids wrap quickly on a busy machine).
        let waited = match &self.pidfd {
            Some(fd) => sys::waitid_pidfd(fd, block),
            None => sys::waitpid(self.pid, block),
        };
        match waited {
            Ok(Some(status)) => {
                let s = sys::decode_status(status);
                self.status.store(s, Ordering::Release);
                drop(self.payload.lock().unwrap_or_else(|e| e.into_inner()).take());
                Ok(Some(s))
            }
            Ok(None) => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                // Another thread of ours reaped it and is about to store the
                // status (give it a moment), or someone outside the crate did.
                let until = std::time::Instant::now() + Duration::from_millis(100);
                loop {
                    if let Some(s) = self.exit_status() {
                        return Ok(Some(s));
                    }
                    if std::time::Instant::now() >= until {
                        break;
                    }
                    std::thread::yield_now();
                }
                self.status.store(LOST, Ordering::Release);
                Ok(Some(LOST))
            }
            Err(e) => Err(ProcessError::Wait(e)),
        }
    }

    /// Waits until the child exits or `deadline` passes; reaps it if it exited.
    fn wait_until(&self, deadline: Deadline) -> Result<Option<i64>, ProcessError> {
        let mut sleep = Duration::from_micros(50);
        loop {
            if let Some(s) = self.reap(false)? {
                return Ok(Some(s));
            }
            let left = deadline.remaining();
            if left.is_zero() {
                return Ok(None);
            }
            match &self.pidfd {
                Some(fd) => {
                    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                    let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
                    // SAFETY: `pfd` is one valid pollfd.
                    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
                    if r < 0 {
                        let e = io::Error::last_os_error();
                        if e.raw_os_error() != Some(libc::EINTR) {
                            return Err(ProcessError::Wait(e));
                        }
                    }
                }
                None => {
                    std::thread::sleep(sleep.min(left));
                    sleep = (sleep * 2).min(Duration::from_millis(20));
                }
            }
        }
    }

    fn signal(&self, sig: libc::c_int) -> Result<(), ProcessError> {
        if self.exit_status().is_some() {
            return Ok(());
        }
        // A pidfd cannot be confused with a recycled pid.
        let r = match &self.pidfd {
            Some(fd) => sys::pidfd_signal(fd, sig),
            // The pid is our unreaped child, so it cannot have been reused.
            None => sys::kill(self.pid, sig),
        };
        match r {
            Err(e) if e.raw_os_error() != Some(libc::ESRCH) => return Err(ProcessError::Signal(e)),
            _ => {}
        }
        Ok(())
    }
}

/// Reaps finished children whose handles were dropped.
fn sweep_children() {
    GLOBALS.with(|g| {
        g.children.retain(|c| !matches!(c.reap(false), Ok(Some(_))));
    });
}

static ATEXIT: Once = Once::new();

pub(super) extern "C" fn at_exit() {
    // Python's behaviour at interpreter exit: terminate daemonic children, join
    // the others. Only in the process that started them.
    let children = GLOBALS.with(|g| std::mem::take(&mut g.children));
    for c in &children {
        if c.daemon {
            let _ = c.signal(libc::SIGTERM);
        }
    }
    for c in &children {
        let _ = c.reap(true);
    }
}

fn register_child(shared: &Arc<ChildShared>) {
    ATEXIT.call_once(|| {
        // SAFETY: at_exit is a valid extern "C" fn with no arguments.
        unsafe { libc::atexit(at_exit) };
    });
    GLOBALS.with(|g| g.children.push(shared.clone()));
}

// ---------------------------------------------------------------------------
// Process and Builder
// ---------------------------------------------------------------------------

/// A child process. Dropping the handle does not kill the child (use
/// [`terminate`](Process::terminate) or [`kill`](Process::kill)); it is reaped
/// when it exits.
///
/// ```
/// let mut p = shmproc::Process::spawn(|| println!("hello from the child"))?;
/// assert_eq!(p.join()?, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Process {
    shared: Arc<ChildShared>,
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.shared.pid)
            .field("name", &self.shared.name)
            .field("daemon", &self.shared.daemon)
            .field("exitcode", &self.shared.exit_status())
            .finish()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.shared.reap(false) {
            let me = Arc::as_ptr(&self.shared);
            GLOBALS.with(|g| g.children.retain(|c| Arc::as_ptr(c) != me));
        }
    }
}

/// Configures a child process before starting it.
///
/// ```
/// let mut p = shmproc::Process::builder().name("worker-1").spawn(|| {
///     assert_eq!(shmproc::current_process().name(), "worker-1");
/// })?;
/// assert_eq!(p.join()?, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct Builder {
    name: Option<String>,
    daemon: bool,
    allow_threaded_fork: bool,
    start_method: Option<StartMethod>,
}

impl Builder {
    /// A builder with Python's defaults: named `Process-N`, not a daemon.
    ///
    /// ```
    /// let b = shmproc::Builder::new().name("job");
    /// let mut p = b.spawn(|| ())?;
    /// assert_eq!(p.name(), "job");
    /// p.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> Builder {
        Builder::default()
    }

    /// The child's name (what [`current_process`] reports in it).
    ///
    /// ```
    /// let mut p = shmproc::Process::builder().name("named").spawn(|| ())?;
    /// assert_eq!(p.name(), "named");
    /// p.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Whether the child is a daemon: killed when the parent dies, terminated
    /// when the parent exits, not allowed to start children.
    ///
    /// ```
    /// let mut p = shmproc::Process::builder().daemon(true).spawn(|| ())?;
    /// assert!(p.daemon());
    /// p.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn daemon(mut self, daemon: bool) -> Builder {
        self.daemon = daemon;
        self
    }

    /// Allows fork mode in a multi-threaded parent. Only sound if no other thread
    /// can hold a lock the child will need (including stdout's and the
    /// allocator's).
    ///
    /// ```
    /// std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)));
    /// // With another thread running, fork mode is refused unless allowed (the
    /// // child must then touch nothing another thread might have locked).
    /// let refused = shmproc::Process::spawn(|| ());
    /// assert!(matches!(refused, Err(shmproc::ProcessError::ThreadedParent { .. })));
    /// let mut p = shmproc::Process::builder().allow_threaded_fork(true).spawn(|| ())?;
    /// p.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn allow_threaded_fork(mut self, allow: bool) -> Builder {
        self.allow_threaded_fork = allow;
        self
    }

    /// The start method for [`spawn_fn`](Builder::spawn_fn) (default: the
    /// process-wide one, [`get_start_method`]). [`spawn`](Builder::spawn)
    /// runs a closure and so always forks: it refuses any other method with
    /// [`ProcessError::ClosureNeedsFork`].
    ///
    /// ```
    /// use shmproc::{Process, StartMethod};
    /// fn pid(_: ()) -> i32 {
    ///     (std::process::id() % 100) as i32
    /// }
    /// let mut p = Process::builder().start_method(StartMethod::ForkServer).spawn_fn(pid, ())?;
    /// assert_eq!(p.join()?, (p.pid() % 100) as i32);
    /// let closure = Process::builder().start_method(StartMethod::Spawn).spawn(|| ());
    /// assert!(matches!(closure, Err(shmproc::ProcessError::ClosureNeedsFork { .. })));
    /// # Ok::<(), shmproc::ProcessError>(())
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Builder {
        self.start_method = Some(method);
        self
    }

    fn prepare(&self) -> Result<(String, String, bool), ProcessError> {
        sweep_children();
        let (daemon_parent, identity) = GLOBALS.with(|g| {
            g.counter += 1;
            let id =
                if g.identity.is_empty() { g.counter.to_string() } else { format!("{}:{}", g.identity, g.counter) };
            (g.daemon, id)
        });
        if daemon_parent {
            return Err(ProcessError::DaemonChildren);
        }
        let name = self.name.clone().unwrap_or_else(|| format!("Process-{identity}"));
        Ok((name, identity, self.daemon))
    }

    /// Forks a child that runs `f` (fork mode).
    ///
    /// ```
    /// let v = shmproc::Value::new(0u32)?;
    /// let v2 = v.clone();
    /// let mut p = shmproc::Process::builder().name("setter").spawn(move || v2.set(5))?;
    /// p.join()?;
    /// assert_eq!(v.get(), 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// `f` is `'static`, as for [`std::thread::spawn`]: the parent goes on
    /// (and drops what `f` borrowed) while the child runs, so a borrow would
    /// outlive what it points to in the parent's view of shared memory:
    ///
    /// ```compile_fail
    /// let q = shmproc::Queue::<u64>::bounded(4)?;
    /// q.send(&1)?;
    /// let m = q.recv_ref()?;
    /// // Borrows `m`: does not compile.
    /// let p = shmproc::Process::builder().spawn(|| {
    ///     let _borrowed = &m;
    /// });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// A borrow into a ring *moved* into `f` (or alive anywhere in the
    /// process) makes the fork fail with [`ProcessError::RingBorrowed`]:
    /// the parent would hand its frame back while the child reads it.
    ///
    /// ```
    /// let q = shmproc::Queue::<u64>::bounded(4)?;
    /// q.send(&1)?;
    /// let m = q.recv_ref()?;
    /// let refused = shmproc::Process::spawn(|| 0);
    /// assert!(matches!(refused, Err(shmproc::ProcessError::RingBorrowed { borrows: 1 })));
    /// drop(m);
    /// assert_eq!(shmproc::Process::spawn(|| 0)?.join()?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn<F, R>(self, f: F) -> Result<Process, ProcessError>
    where
        F: FnOnce() -> R + 'static,
        R: ChildResult,
    {
        if let Some(method) = self.start_method.filter(|m| *m != StartMethod::Fork) {
            return Err(ProcessError::ClosureNeedsFork { method });
        }
        let threads = sys::thread_count();
        if threads > 1 && !self.allow_threaded_fork {
            return Err(ProcessError::ThreadedParent { threads });
        }
        let borrows = crate::borrows::live();
        if borrows > 0 {
            return Err(ProcessError::RingBorrowed { borrows });
        }
        let (name, identity, daemon) = self.prepare()?;
        let parent = parent_triple();
        let pid = fork::fork_child(f, name.clone(), identity, daemon, parent)?;
        Ok(self.finish(pid, name, daemon, None))
    }

    /// Runs `f(arg)` in a child started with the builder's start method
    /// (else the process-wide one, [`get_start_method`]: fork in a
    /// single-threaded process, the fork server in a multi-threaded one).
    /// The argument is moved into a forked child, or travels as an rkyv
    /// archive (with the descriptors of any shmproc handles in it) to a
    /// spawned or fork-server child.
    ///
    /// ```
    /// fn add_one(x: u32) -> i32 {
    ///     x as i32 + 1
    /// }
    ///
    /// let mut p = shmproc::Process::builder().name("adder").spawn_fn(add_one, 41)?;
    /// assert_eq!(p.join()?, 42);
    /// // From a multi-threaded process too (the fork server by default).
    /// let t = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(300)));
    /// let mut q = shmproc::Process::spawn_fn(add_one, 1)?;
    /// assert_eq!(q.join()?, 2);
    /// t.join().unwrap();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn_fn<A, R>(self, f: fn(A) -> R, arg: A) -> Result<Process, ProcessError>
    where
        A: Message + 'static,
        R: ChildResult + 'static,
    {
        let method = self.start_method.unwrap_or_else(get_start_method);
        if method == StartMethod::Fork {
            return self.spawn(move || f(arg));
        }
        if !spawn::init_called() {
            return Err(ProcessError::InitNotCalled);
        }
        let (name, identity, daemon) = self.prepare()?;
        let payload = spawn::Payload::new(f, &arg, &name, &identity, daemon, &parent_triple())?;
        let roles = payload.roles.clone();
        let (pid, payload) = if method == StartMethod::Spawn {
            let (pid, fd) = spawn::spawn(payload, daemon)?;
            (pid, Some(fd))
        } else {
            (forkserver::spawn(&payload, daemon)?, None)
        };
        if let Some(start) = shmproc_core::identity::start_time(pid) {
            crate::roles::register_spawned(Identity::local(pid, start), &roles);
        }
        Ok(self.finish(pid, name, daemon, payload))
    }

    fn finish(&self, pid: u32, name: String, daemon: bool, payload: Option<OwnedFd>) -> Process {
        let shared = Arc::new(ChildShared {
            pid,
            name,
            daemon,
            status: AtomicI64::new(RUNNING),
            pidfd: sys::open_pidfd(pid),
            payload: std::sync::Mutex::new(payload),
        });
        register_child(&shared);
        Process { shared }
    }
}

fn parent_triple() -> (u32, String, u64) {
    let name = GLOBALS.with(|g| display_name(&g.name).to_owned());
    let me = Identity::current_process();
    (me.id, name, me.start)
}

fn display_name(name: &str) -> &str {
    if name.is_empty() {
        "MainProcess"
    } else {
        name
    }
}

impl Process {
    /// Forks a child that runs `f`, with default settings (fork mode).
    ///
    /// ```
    /// let mut p = shmproc::Process::spawn(|| 3)?;
    /// assert_eq!(p.join()?, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn<F, R>(f: F) -> Result<Process, ProcessError>
    where
        F: FnOnce() -> R + 'static,
        R: ChildResult,
    {
        Builder::new().spawn(f)
    }

    /// Runs `f(arg)` in a child with default settings and the default start
    /// method (see [`Builder::spawn_fn`]).
    ///
    /// ```
    /// fn child(name: String) {
    ///     println!("hello, {name}");
    /// }
    ///
    /// let mut p = shmproc::Process::spawn_fn(child, "spawned".to_string())?;
    /// assert_eq!(p.join()?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn_fn<A, R>(f: fn(A) -> R, arg: A) -> Result<Process, ProcessError>
    where
        A: Message + 'static,
        R: ChildResult + 'static,
    {
        Builder::new().spawn_fn(f, arg)
    }

    /// A builder for name and daemon flag.
    ///
    /// ```
    /// let mut p = shmproc::Process::builder().name("b").spawn(|| ())?;
    /// p.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// The child's pid.
    ///
    /// ```
    /// let pid = shmproc::Value::new(0u32)?;
    /// let seen = pid.clone();
    /// let mut p = shmproc::Process::spawn(move || seen.set(std::process::id()))?;
    /// p.join()?;
    /// assert_eq!(p.pid(), pid.get());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    /// The child's name.
    ///
    /// ```
    /// let mut p = shmproc::Process::builder().name("n").spawn(|| ())?;
    /// assert_eq!(p.name(), "n");
    /// p.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether the child is a daemon.
    ///
    /// ```
    /// let mut p = shmproc::Process::spawn(|| ())?;
    /// assert!(!p.daemon());
    /// p.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn daemon(&self) -> bool {
        self.shared.daemon
    }

    /// Whether the child is still running (reaps it if it has exited).
    ///
    /// ```
    /// let p = shmproc::Process::spawn(|| std::thread::sleep(std::time::Duration::from_secs(10)))?;
    /// assert!(p.is_alive());
    /// p.kill()?;
    /// let mut p = p;
    /// p.join()?;
    /// assert!(!p.is_alive());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn is_alive(&self) -> bool {
        matches!(self.shared.reap(false), Ok(None))
    }

    fn code(&self, s: i64) -> Result<i32, ProcessError> {
        if s == LOST {
            Err(ProcessError::Lost { pid: self.shared.pid })
        } else {
            Ok(s as i32)
        }
    }

    /// Waits for the child to exit and returns its exit code.
    ///
    /// ```
    /// let mut p = shmproc::Process::spawn(|| 4)?;
    /// assert_eq!(p.join()?, 4);
    /// // Joining again returns the same code.
    /// assert_eq!(p.join()?, 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join(&mut self) -> Result<i32, ProcessError> {
        match self.shared.reap(true)? {
            Some(s) => self.code(s),
            None => unreachable!("a blocking waitpid returns only when the child exited"),
        }
    }

    /// Waits at most `timeout`; `None` if the child is still running then.
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut p = shmproc::Process::spawn(|| std::thread::sleep(Duration::from_secs(30)))?;
    /// assert_eq!(p.join_timeout(Duration::from_millis(20))?, None);
    /// p.terminate()?;
    /// assert_eq!(p.join()?, -15); // -SIGTERM, as Python reports it
    /// # Ok::<(), shmproc::ProcessError>(())
    /// ```
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<Option<i32>, ProcessError> {
        match self.shared.wait_until(Deadline::after(timeout))? {
            Some(s) => self.code(s).map(Some),
            None => Ok(None),
        }
    }

    /// The exit code if the child has exited (Python's `exitcode`): 0 for a
    /// normal return, 1 for a panic, `n` for `exit(n)`, `-signal` if killed.
    ///
    /// ```
    /// let mut p = shmproc::Process::spawn(|| 2)?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn exitcode(&self) -> Option<i32> {
        match self.shared.reap(false) {
            Ok(Some(s)) if s != LOST => Some(s as i32),
            _ => None,
        }
    }

    /// Sends SIGTERM (Python's `terminate`). A no-op if it already exited.
    ///
    /// ```
    /// let mut p = shmproc::Process::spawn(|| std::thread::sleep(std::time::Duration::from_secs(10)))?;
    /// p.terminate()?;
    /// // Python's convention: minus the signal number.
    /// assert_eq!(p.join()?, -libc::SIGTERM);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn terminate(&self) -> Result<(), ProcessError> {
        self.shared.signal(libc::SIGTERM)
    }

    /// Sends SIGKILL. A no-op if it already exited.
    ///
    /// ```
    /// let mut p = shmproc::Process::spawn(|| std::thread::sleep(std::time::Duration::from_secs(10)))?;
    /// p.kill()?;
    /// assert_eq!(p.join()?, -libc::SIGKILL);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn kill(&self) -> Result<(), ProcessError> {
        self.shared.signal(libc::SIGKILL)
    }

    /// Sends an arbitrary signal. A no-op if it already exited.
    ///
    /// ```
    /// let mut p = shmproc::Process::spawn(|| std::thread::sleep(std::time::Duration::from_secs(10)))?;
    /// p.signal(libc::SIGINT)?;
    /// assert_eq!(p.join()?, -libc::SIGINT);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn signal(&self, sig: i32) -> Result<(), ProcessError> {
        self.shared.signal(sig)
    }

    /// A descriptor that becomes readable once the child has exited
    /// (Python's `sentinel`): the child's pidfd, for `poll(2)` or `epoll`
    /// beside your own descriptors; it stays readable after the child is
    /// reaped. `None` where the kernel has no pidfds (before Linux 5.3).
    /// To wait on processes together with queues, pipes and events, use
    /// [`crate::wait()`].
    ///
    /// ```
    /// let mut p = shmproc::Process::spawn(|| ())?;
    /// if let Some(fd) = p.sentinel() {
    ///     use std::os::fd::AsRawFd;
    ///     let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    ///     // SAFETY: one valid pollfd.
    ///     assert_eq!(unsafe { libc::poll(&mut pfd, 1, 10_000) }, 1);
    /// }
    /// p.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn sentinel(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.shared.pidfd.as_ref().map(|fd| fd.as_fd())
    }
}

// ---------------------------------------------------------------------------
// current_process & co.
// ---------------------------------------------------------------------------

/// The calling process as [`current_process`] sees it.
///
/// ```
/// let me = shmproc::current_process();
/// assert_eq!(me.pid(), std::process::id());
/// assert!(!me.daemon());
/// println!("running as {}", me.name());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentProcess {
    name: String,
    pid: u32,
    daemon: bool,
}

impl CurrentProcess {
    /// `"MainProcess"` in the main process, the child's name otherwise.
    ///
    /// ```
    /// let mut p = shmproc::Process::builder().name("inner").spawn(|| {
    ///     assert_eq!(shmproc::current_process().name(), "inner");
    /// })?;
    /// assert_eq!(p.join()?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pid.
    ///
    /// ```
    /// assert_eq!(shmproc::current_process().pid(), std::process::id());
    /// ```
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether this process is a daemon.
    ///
    /// ```
    /// let mut p = shmproc::Process::builder().daemon(true).spawn(|| {
    ///     assert!(shmproc::current_process().daemon());
    /// })?;
    /// assert_eq!(p.join()?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn daemon(&self) -> bool {
        self.daemon
    }
}

/// The calling process (Python's `multiprocessing.current_process()`).
///
/// ```
/// let me = shmproc::current_process();
/// println!("{} (pid {})", me.name(), me.pid());
/// ```
#[must_use]
pub fn current_process() -> CurrentProcess {
    let (name, daemon) = GLOBALS.with(|g| (display_name(&g.name).to_owned(), g.daemon));
    CurrentProcess { name, pid: std::process::id(), daemon }
}

/// The process that started this one (Python's `parent_process()`); `None` in
/// the main process.
///
/// ```
/// let parent = std::process::id();
/// let mut p = shmproc::Process::spawn(move || {
///     let pp = shmproc::parent_process().expect("started by shmproc");
///     assert_eq!(pp.pid(), parent);
///     assert!(pp.is_alive());
/// })?;
/// assert_eq!(p.join()?, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentProcess {
    pid: u32,
    name: String,
    start: u64,
}

impl ParentProcess {
    /// The parent's pid.
    ///
    /// ```
    /// let parent = std::process::id();
    /// let mut p = shmproc::Process::spawn(move || assert_eq!(shmproc::parent_process().unwrap().pid(), parent))?;
    /// assert_eq!(p.join()?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The parent's name.
    ///
    /// ```
    /// let mut p = shmproc::Process::spawn(|| println!("parent: {}", shmproc::parent_process().unwrap().name()))?;
    /// assert_eq!(p.join()?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the parent still runs (pid and start time match).
    ///
    /// ```
    /// let mut p = shmproc::Process::spawn(|| assert!(shmproc::parent_process().unwrap().is_alive()))?;
    /// assert_eq!(p.join()?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn is_alive(&self) -> bool {
        Identity::local(self.pid, self.start).is_alive()
    }
}

/// The parent of the calling process, if it was started by shmproc.
///
/// ```
/// // The main process has no shmproc parent.
/// assert!(shmproc::parent_process().is_none());
/// ```
#[must_use]
pub fn parent_process() -> Option<ParentProcess> {
    GLOBALS.with(|g| g.parent.clone()).map(|(pid, name, start)| ParentProcess { pid, name, start })
}

/// A live child, from [`active_children`].
///
/// ```
/// let p = shmproc::Process::builder().name("sleeper").spawn(|| std::thread::sleep(std::time::Duration::from_secs(10)))?;
/// let kids = shmproc::active_children();
/// assert!(kids.iter().any(|c| c.pid == p.pid() && c.name == "sleeper" && !c.daemon));
/// p.kill()?;
/// # let mut p = p;
/// # p.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildInfo {
    /// The child's pid.
    pub pid: u32,
    /// The child's name.
    pub name: String,
    /// Whether it is a daemon.
    pub daemon: bool,
}

/// The children of this process that are still running (reaping those that
/// have exited, as Python's `active_children()` does).
///
/// ```
/// let mut p = shmproc::Process::spawn(|| ())?;
/// p.join()?;
/// // Exited children are not listed.
/// assert!(shmproc::active_children().iter().all(|c| c.pid != p.pid()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub fn active_children() -> Vec<ChildInfo> {
    sweep_children();
    GLOBALS.with(|g| {
        g.children
            .iter()
            .filter(|c| c.exit_status().is_none())
            .map(|c| ChildInfo { pid: c.pid, name: c.name.clone(), daemon: c.daemon })
            .collect()
    })
}

/// Number of CPUs this process may run on (respects affinity masks and cgroup
/// quotas, unlike Python's `os.cpu_count()`), at least 1.
///
/// ```
/// let n = shmproc::cpu_count();
/// assert!(n >= 1);
/// println!("{n} CPUs");
/// ```
#[must_use]
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
