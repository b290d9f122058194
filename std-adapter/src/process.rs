//! Child processes, the way Python's `multiprocessing.Process` runs them.
//!
//! Two start methods:
//!
//! * **fork** ([`Process::spawn`], [`Builder::spawn`]): the child is a copy of the
//!   parent and runs a closure. Fast, and everything the closure captured (and
//!   every anonymous [`Segment`](crate::Segment) mapping) is there in the child.
//!   **Only safe in a single-threaded parent**: after `fork()` only the calling
//!   thread exists in the child, and any lock another thread held (stdout, a
//!   user's mutex, a runtime's internals) stays locked forever. A fork from a
//!   multi-threaded parent is therefore refused with
//!   [`ProcessError::ThreadedParent`] unless the builder explicitly allows it
//!   ([`Builder::allow_threaded_fork`]).
//! * **spawn** ([`Process::spawn_fn`], [`Builder::spawn_fn`]): re-executes the
//!   current binary (`/proc/self/exe`), which must call [`crate::init`] first in
//!   `main`; the child runs a `fn(A) -> R` with the argument passed through rkyv.
//!   Safe from any parent, including one running a tokio or zenoh runtime.
//!
//! Exit codes follow Python: 0 for a normal return, 1 for a panic (the message
//! goes to stderr as usual), `n` for `std::process::exit(n)`, `-signal` when
//! killed by a signal.
//!
//! **Daemon** children get `PR_SET_PDEATHSIG(SIGKILL)`, so they die with their
//! parent (note: Linux delivers it when the *thread* that created the child
//! exits), are sent SIGTERM when the parent exits normally, and may not start
//! children of their own. At normal exit the parent waits for its remaining
//! non-daemon children, as Python does.
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
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use shmproc_core::{Deadline, Identity};

use crate::globals::ForkSafe;
use crate::message::Message;

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
    /// Spawn mode needs `shmproc::init()` at the top of `main`.
    InitNotCalled,
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
            ProcessError::DaemonChildren => write!(f, "daemonic processes are not allowed to have children"),
            ProcessError::ThreadedParent { threads } => write!(
                f,
                "refusing to fork a parent with {threads} threads (locks held by other threads would stay locked \
                 in the child); use spawn mode (spawn_fn) or Builder::allow_threaded_fork"
            ),
            ProcessError::InitNotCalled => {
                write!(f, "spawn mode requires shmproc::init() at the start of main")
            }
            ProcessError::Serialize(e) => write!(f, "serialising the argument failed: {e}"),
            ProcessError::Lost { pid } => write!(f, "child {pid} was reaped outside shmproc"),
        }
    }
}

impl std::error::Error for ProcessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProcessError::Fork(e) | ProcessError::Spawn(e) | ProcessError::Wait(e) | ProcessError::Signal(e) => Some(e),
            _ => None,
        }
    }
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

fn decode_status(status: libc::c_int) -> i64 {
    if libc::WIFEXITED(status) {
        i64::from(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        -i64::from(libc::WTERMSIG(status))
    } else {
        i64::from(status)
    }
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
        let mut status: libc::c_int = 0;
        loop {
            let flags = if block { 0 } else { libc::WNOHANG };
            // SAFETY: `status` is a valid out-pointer; pid is our child.
            let r = unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, flags) };
            if r == self.pid as libc::pid_t {
                let s = decode_status(status);
                self.status.store(s, Ordering::Release);
                return Ok(Some(s));
            }
            if r == 0 {
                return Ok(None);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECHILD) => {
                    // Another thread of ours reaped it (it stored the status), or
                    // someone outside the crate did.
                    if let Some(s) = self.exit_status() {
                        return Ok(Some(s));
                    }
                    self.status.store(LOST, Ordering::Release);
                    return Ok(Some(LOST));
                }
                _ => return Err(ProcessError::Wait(e)),
            }
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
            // SAFETY: a valid pidfd; null siginfo means "as if by kill".
            Some(fd) => unsafe {
                libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), sig, std::ptr::null::<u8>(), 0) as i32
            },
            // SAFETY: the pid is our unreaped child, so it cannot have been reused.
            None => unsafe { libc::kill(self.pid as libc::pid_t, sig) },
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(ProcessError::Signal(e));
        }
        Ok(())
    }
}

fn open_pidfd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; it returns a new fd or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if r < 0 {
        None
    } else {
        // SAFETY: a fresh fd owned by us.
        Some(unsafe { OwnedFd::from_raw_fd(r as i32) })
    }
}

/// Reaps finished children whose handles were dropped.
fn sweep_children() {
    GLOBALS.with(|g| {
        g.children.retain(|c| !matches!(c.reap(false), Ok(Some(_))));
    });
}

static ATEXIT: Once = Once::new();

extern "C" fn at_exit() {
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

/// Threads of the calling process, from `/proc/self/stat` (field 20).
pub(crate) fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace().nth(17)?.parse().ok()
        })
        .unwrap_or(1)
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
    pub fn spawn<F, R>(self, f: F) -> Result<Process, ProcessError>
    where
        F: FnOnce() -> R,
        R: ChildResult,
    {
        let threads = thread_count();
        if threads > 1 && !self.allow_threaded_fork {
            return Err(ProcessError::ThreadedParent { threads });
        }
        let (name, identity, daemon) = self.prepare()?;
        let parent = parent_triple();
        let handles = crate::roles::snapshot();
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
            // Child.
            // SAFETY: we are the only thread of the new child.
            unsafe { become_child(name, identity, daemon, parent.clone()) };
            if daemon {
                set_parent_death_signal(parent.0);
            }
            let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                Ok(r) => r.exit_code(),
                Err(_) => 1,
            };
            let _ = io::stdout().flush();
            let _ = io::stderr().flush();
            // SAFETY: _exit ends the child without running the parent's atexit
            // handlers or destructors of state that belongs to the parent.
            unsafe { libc::_exit(code) };
        }
        if let Some(start) = shmproc_core::identity::start_time(pid as u32) {
            crate::roles::register_child(Identity::local(pid as u32, start), &handles);
        }
        Ok(self.finish(pid as u32, name, daemon))
    }

    /// Re-executes the current binary and runs `f(arg)` in it (spawn mode).
    /// `main` must call [`crate::init`] first.
    ///
    /// ```
    /// fn add_one(x: u32) -> i32 {
    ///     x as i32 + 1
    /// }
    ///
    /// fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     shmproc::init();
    ///     let mut p = shmproc::Process::builder().name("adder").spawn_fn(add_one, 41)?;
    ///     assert_eq!(p.join()?, 42);
    ///     Ok(())
    /// }
    /// ```
    pub fn spawn_fn<A, R>(self, f: fn(A) -> R, arg: A) -> Result<Process, ProcessError>
    where
        A: Message,
        R: ChildResult + 'static,
    {
        if !crate::spawn::init_called() {
            return Err(ProcessError::InitNotCalled);
        }
        let (name, identity, daemon) = self.prepare()?;
        let payload = crate::spawn::Payload::new(f, &arg, &name, &identity, daemon, &parent_triple())?;
        let roles = payload.roles.clone();
        let pid = crate::spawn::spawn(payload, daemon)?;
        if let Some(start) = shmproc_core::identity::start_time(pid) {
            crate::roles::register_spawned(Identity::local(pid, start), &roles);
        }
        Ok(self.finish(pid, name, daemon))
    }

    fn finish(&self, pid: u32, name: String, daemon: bool) -> Process {
        let shared =
            Arc::new(ChildShared { pid, name, daemon, status: AtomicI64::new(RUNNING), pidfd: open_pidfd(pid) });
        register_child(&shared);
        Process { shared }
    }
}

fn parent_triple() -> (u32, String, u64) {
    let name = GLOBALS.with(|g| display_name(&g.name).to_owned());
    let me = Identity::current_process();
    (me.id, name, me.start)
}

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
        F: FnOnce() -> R,
        R: ChildResult,
    {
        Builder::new().spawn(f)
    }

    /// Re-executes this binary to run `f(arg)` (spawn mode; needs
    /// [`crate::init`] at the top of `main`).
    ///
    /// ```
    /// fn child(name: String) {
    ///     println!("hello, {name}");
    /// }
    ///
    /// fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     shmproc::init();
    ///     let mut p = shmproc::Process::spawn_fn(child, "spawned".to_string())?;
    ///     assert_eq!(p.join()?, 0);
    ///     Ok(())
    /// }
    /// ```
    pub fn spawn_fn<A, R>(f: fn(A) -> R, arg: A) -> Result<Process, ProcessError>
    where
        A: Message,
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
