//! Process types with a `run` method: Python's `class P(Process): def run(self)`.

use super::{Builder, Process, ProcessError};
use crate::message::Message;

/// A process type, as a Python `Process` subclass: its fields are the
/// process's state, [`run`](Run::run) its body. [`Process::start`] forks a
/// child that owns the value (its fields are *moved* into the child, as
/// Python's fork start method copies `self`) and calls `run` there; the
/// parent keeps a [`Process`] handle to join.
///
/// ```
/// use shmproc::process::Run;
///
/// struct Greeter {
///     name: String,
///     times: u32,
/// }
///
/// impl Run for Greeter {
///     fn run(self) {
///         for _ in 0..self.times {
///             println!("hello from {} in {}", self.name, std::process::id());
///         }
///     }
/// }
///
/// let mut p = shmproc::Process::start(Greeter { name: "greeter".into(), times: 2 })?;
/// assert_eq!(p.join()?, 0);
/// # Ok::<(), shmproc::ProcessError>(())
/// ```
///
/// A panic in `run` gives exit code 1, `std::process::exit(n)` gives `n`, as
/// for [`Process::spawn`]. Name or daemon flag come from the builder:
/// `Process::builder().name("p").start(value)`. For the spawn or fork-server
/// start methods, a type that is also a [`Message`] starts with
/// [`Builder::start_fn`] (its fields then travel serialised).
pub trait Run: 'static {
    /// The process's body, run in the child.
    fn run(self);
}

/// The `fn` a spawn-mode child runs for a [`Run`] type.
fn run_value<P: Run>(p: P) {
    p.run();
}

impl Builder {
    /// Forks a child that calls `value.run()` (fork mode; see [`Run`]).
    ///
    /// ```
    /// struct Exit(i32);
    /// impl shmproc::process::Run for Exit {
    ///     fn run(self) {
    ///         std::process::exit(self.0)
    ///     }
    /// }
    /// let mut p = shmproc::Process::builder().name("exiter").start(Exit(4))?;
    /// assert_eq!(p.join()?, 4);
    /// # Ok::<(), shmproc::ProcessError>(())
    /// ```
    pub fn start<P: Run>(self, value: P) -> Result<Process, ProcessError> {
        self.spawn(move || value.run())
    }

    /// Starts a child that calls `value.run()` with the builder's start method
    /// (as [`Builder::spawn_fn`]): `value` travels as a message, so this works
    /// in spawn mode and with the fork server too.
    ///
    /// ```
    /// use shmproc::rkyv;
    /// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    /// #[rkyv(crate = shmproc::rkyv)]
    /// struct Job(u32);
    /// impl shmproc::process::Run for Job {
    ///     fn run(self) {
    ///         assert_eq!(self.0, 7);
    ///     }
    /// }
    /// let mut p = shmproc::Process::builder().start_method(shmproc::StartMethod::Spawn).start_fn(Job(7))?;
    /// assert_eq!(p.join()?, 0);
    /// # Ok::<(), shmproc::ProcessError>(())
    /// ```
    pub fn start_fn<P: Run + Message>(self, value: P) -> Result<Process, ProcessError> {
        self.spawn_fn(run_value::<P>, value)
    }
}

impl Process {
    /// Forks a child that calls `value.run()`, with default settings: Python's
    /// `MyProcess(..).start()` (see [`Run`]).
    ///
    /// ```
    /// struct Quiet;
    /// impl shmproc::process::Run for Quiet {
    ///     fn run(self) {}
    /// }
    /// let mut p = shmproc::Process::start(Quiet)?;
    /// assert_eq!(p.join()?, 0);
    /// # Ok::<(), shmproc::ProcessError>(())
    /// ```
    pub fn start<P: Run>(value: P) -> Result<Process, ProcessError> {
        Builder::new().start(value)
    }
}
