//! `Pool`: a pool of worker processes (Python's `multiprocessing.Pool`) that
//! survives dying workers.
//!
//! Tasks are plain functions `fn(A) -> R` with rkyv-serialisable `A` and `R`;
//! they travel to the workers and back on the crate's own shared-memory
//! queues. A task that panics fails with [`TaskError::Panicked`] and the
//! worker carries on. A worker that dies (abort, SIGKILL, out of memory) fails
//! exactly the task it was running with [`TaskError::WorkerDied`], is
//! replaced, and every other task completes (CPython's pool hangs here).
//!
//! ```
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//! let pool = shmproc::Pool::new(2)?;
//! assert_eq!(pool.apply(square, 7)?, 49);
//! assert_eq!(pool.map(square, 0..5u64)?, vec![0, 1, 4, 9, 16]);
//! let r = pool.apply_async(square, 3)?;
//! assert_eq!(r.get()?, 9);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How it works, and what differs from Python
//!
//! There is no background thread in the parent (threads would make later
//! `fork()`s unsafe). Workers start on tasks as soon as they are submitted;
//! *results* are collected whenever the parent calls into the pool (`get`,
//! `wait`, `ready`, `map`, `join`, ...), and `apply_async` callbacks run then,
//! on the calling thread. A worker holds its task's message in the queue
//! until it has sent the result, so when a worker dies the parent can tell
//! from the queue which task it held.
//!
//! Submitting never blocks. The shared task ring holds 1024 tasks; beyond
//! that, tasks wait in a backlog in the parent's own memory (CPython keeps
//! them in its task handler's queue) and move into the ring whenever the
//! parent next calls into the pool, so `terminate()` is reachable right after
//! submitting any number of tasks. As results, the backlog advances only
//! while the parent calls in: a parent that submits 10,000 tasks and then
//! does something else for a minute finds the first 1024 (and their results)
//! done and the rest started when it next calls `get`, `wait`, `join`, ....
//! After [`Pool::close`], workers that exit (`max_tasks_per_child`) or die
//! are still replaced while tasks are waiting, so [`Pool::join`] returns
//! once every task has run (CPython's bpo-10332).
//!
//! # Chunks, callbacks and context
//!
//! `map`, `starmap` and their `_async` forms cut the items into chunks as
//! CPython does (about `len / (4 × processes)` items each), or into chunks of
//! a given `chunksize` ([`Pool::map_chunked`], [`Pool::imap_chunked`],
//! [`Pool::imap_unordered_chunked`], [`Pool::starmap_chunked`], and the
//! `chunksize` argument of [`Pool::map_async_with`] and
//! [`Pool::starmap_async_with`]); a chunk whose encoding would take more
//! than half a message slot is halved. The `_with` forms take Python's
//! `callback` (once, with every result in order) and `error_callback` (once,
//! with the first failure).
//!
//! Task functions are `fn` pointers, which cannot capture. Python's
//! `functools.partial(f, ctx)` shape is [`Pool::map_with`]`(&ctx, f, items)`
//! with `f: fn(&C, A) -> R`: the context is encoded once per call and
//! travels with each chunk (it is part of the chunk's argument bytes, so it
//! is validated like them); for large read-only data, share it in a
//! segment and pass the handle. Per-worker state set up once is
//! [`PoolBuilder::initializer_with`]`(f, arg)` (Python's `initargs`).
//!
//! Workers start with the default start method (see
//! [`crate::StartMethod`]): forked in a single-threaded parent (a
//! closure-free loop, so a fork is cheap and safe there), started by the fork
//! server in a multi-threaded one (a `#[test]`, an async runtime), so
//! `Pool::new(n)` works in both; [`PoolBuilder::start_method`] chooses one
//! ([`PoolBuilder::spawn_mode`] is short for spawn mode).
//!
//! # Trust: tasks name code, so tasks are authenticated
//!
//! A task travels through the shared task queue as the id, the trampoline and
//! function it runs (offsets into this binary's code, the same in every
//! process running it), a tag and the argument. Any process that can write the
//! queue's shared memory could rewrite those words, so a worker turns them
//! into code addresses only when the tag checks out: the tag is SipHash-2-4
//! (a keyed pseudo-random function) over `(id, trampoline, function)` under a
//! 128-bit key drawn from the kernel when the pool is built. The key lives only
//! in private memory: the parent's, and each worker's copy (inherited at fork,
//! or inside the sealed payload for spawn-mode and fork-server workers, see
//! [`crate::Process::spawn_fn`]); it is never written to shared memory. A peer
//! that can write the queue but cannot read that private memory cannot make a
//! tag for a pair the parent never submitted (short of guessing 64 bits), so a
//! forged or garbled task fails with [`TaskError::Forged`] and nothing runs;
//! the pool carries on.
//!
//! Why a tag rather than a table of registered functions: it needs no state
//! shared between parent and workers beyond the key (a table would have to
//! reach every worker, including replacements, over a private channel before
//! the first task using a new function), it works the same for fork- and
//! spawn-mode workers, and it costs one SipHash of 24 bytes (tens of
//! nanoseconds) per task. What it does not cover: the *argument* bytes are not
//! tagged; they are validated (rkyv bytecheck) like any message, so a peer
//! rewriting them can change the data a parent-submitted function receives,
//! never the code that runs. Every task shape (one item, a chunk, a chunk of
//! pairs, a chunk with a context) goes through the same tagged message: the
//! tag covers the trampoline that decodes the shape and the function it
//! calls. An initializer and its argument never pass through shared memory
//! (they travel with the rest of a worker's setup, by fork or in the sealed
//! spawn payload), so they need no tag. Processes forked from the parent
//! after the pool was built carry a copy of its memory, key included: they
//! are as trusted as the parent.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex as StdMutex, MutexGuard as StdGuard};
use std::time::Duration;

use shmproc_core::Deadline;

use crate::error::Error;
use crate::message::{decode_copy, encode, encode_vec, Message};
use crate::process::{cpu_count, Process, ProcessError, StartMethod};
use crate::queue::{Queue, Receiver, RecvTimeoutError, Sender, TrySendError};
use crate::spawn::{fn_address, fn_offset};

/// Why a task did not produce a result.
///
/// ```
/// use shmproc::{Pool, TaskError};
/// fn boom(_: u8) -> u8 {
///     panic!("boom")
/// }
/// let pool = Pool::new(1)?;
/// assert!(matches!(pool.apply(boom, 0), Err(TaskError::Panicked(m)) if m.contains("boom")));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskError {
    /// The task panicked; the message is the panic payload.
    Panicked(String),
    /// The worker running the task died.
    WorkerDied {
        /// The worker's pid.
        pid: u32,
        /// The signal that killed it, if a signal did.
        signal: Option<i32>,
    },
    /// The pool was closed or terminated before the task could run.
    Closed,
    /// `get_timeout`'s timeout passed (the task may still complete).
    Timeout,
    /// The argument or result could not be (de)serialised, or did not fit.
    Message(String),
    /// The task's message in the shared task queue did not carry the pool's
    /// authentication tag for its function: another process that can write
    /// the queue's shared memory changed (or garbled) it. The worker refused
    /// to run it; nothing ran.
    Forged,
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Panicked(m) => write!(f, "task panicked: {m}"),
            TaskError::WorkerDied { pid, signal: Some(s) } => write!(f, "worker {pid} died from signal {s}"),
            TaskError::WorkerDied { pid, signal: None } => write!(f, "worker {pid} exited while running the task"),
            TaskError::Closed => f.write_str("the pool is closed"),
            TaskError::Timeout => f.write_str("timed out waiting for the task"),
            TaskError::Message(m) => write!(f, "task message: {m}"),
            TaskError::Forged => {
                f.write_str("the task message failed authentication (changed in shared memory); not run")
            }
        }
    }
}

impl std::error::Error for TaskError {}

/// Why a pool could not be created or managed.
///
/// ```
/// use shmproc::{Pool, PoolError};
/// let pool = Pool::new(1)?;
/// assert!(matches!(pool.join(), Err(PoolError::StillRunning))); // close first
/// pool.close();
/// pool.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub enum PoolError {
    /// Creating the shared queues failed.
    Shm(Error),
    /// Starting a worker failed.
    Process(ProcessError),
    /// `join` was called before `close` or `terminate` (as in Python).
    StillRunning,
    /// No randomness for the pool's task-authentication key.
    Random(std::io::Error),
    /// A pool of zero workers was asked for (Python raises `ValueError`:
    /// "Number of processes must be at least 1").
    NoWorkers,
    /// The initializer's argument could not be serialised.
    InitArg(String),
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::Shm(e) => write!(f, "pool queues: {e}"),
            PoolError::Process(e) => write!(f, "pool worker: {e}"),
            PoolError::StillRunning => f.write_str("close() or terminate() the pool before join()"),
            PoolError::Random(e) => write!(f, "no randomness for the pool's key: {e}"),
            PoolError::NoWorkers => f.write_str("a pool needs at least one worker process"),
            PoolError::InitArg(m) => write!(f, "initializer argument: {m}"),
        }
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PoolError::Shm(e) => Some(e),
            PoolError::Process(e) => Some(e),
            PoolError::Random(e) => Some(e),
            PoolError::StillRunning | PoolError::NoWorkers | PoolError::InitArg(_) => None,
        }
    }
}

impl From<Error> for PoolError {
    fn from(e: Error) -> Self {
        PoolError::Shm(e)
    }
}

impl From<ProcessError> for PoolError {
    fn from(e: ProcessError) -> Self {
        PoolError::Process(e)
    }
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
struct TaskMsg {
    id: u64,
    tramp: i64,
    func: i64,
    /// `task_tag(key, id, tramp, func)`: only a holder of the pool's private
    /// key can make a task a worker will run (see the module docs).
    tag: u64,
    arg: Vec<u8>,
}

/// `ResultMsg::status`: the task returned; the payload is its result.
const RESULT_OK: u8 = 0;
/// The task panicked; the payload is the message.
const RESULT_PANICKED: u8 = 1;
/// The argument or result could not be (de)serialised; the payload says why.
const RESULT_MESSAGE: u8 = 2;
/// The task message failed authentication and was not run.
const RESULT_FORGED: u8 = 3;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
struct ResultMsg {
    id: u64,
    status: u8,
    payload: Vec<u8>,
}

/// What a worker needs; also the argument of spawn-mode workers (which
/// travels in the private, sealed spawn payload, never in shared memory).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct WorkerArgs {
    tasks: Receiver<TaskMsg>,
    results: Sender<ResultMsg>,
    init: InitArgs,
    max_tasks: u64,
    key: [u64; 2],
}

/// A worker's initializer: the trampoline (0: none) and function as code
/// offsets, and the encoded argument. It travels only in private memory (the
/// forked worker's copy of `WorkerArgs`, or the sealed spawn payload), never
/// through shared memory, so it needs no tag.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, Default)]
struct InitArgs {
    tramp: i64,
    func: i64,
    arg: Vec<u8>,
}

type InitTramp = fn(usize, &[u8]) -> Result<(), String>;

fn init_unit(f: usize, _arg: &[u8]) -> Result<(), String> {
    // SAFETY: `f` is a `fn()` of this image, chosen by the parent for this
    // trampoline (private memory: see `InitArgs`).
    let f: fn() = unsafe { std::mem::transmute::<usize, fn()>(f) };
    f();
    Ok(())
}

fn init_one<A: Message>(f: usize, arg: &[u8]) -> Result<(), String> {
    let a = decode_copy::<A>(arg).map_err(|e| format!("initializer argument: {e}"))?;
    // SAFETY: `f` is a `fn(A)` of this image, chosen by the parent for this
    // trampoline instance (private memory: see `InitArgs`).
    let f: fn(A) = unsafe { std::mem::transmute::<usize, fn(A)>(f) };
    f(a);
    Ok(())
}

/// The pool's private task-authentication key: 128 random bits from the
/// kernel.
fn random_key() -> std::io::Result<[u64; 2]> {
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let r = unsafe { libc::getrandom(buf[got..].as_mut_ptr().cast(), buf.len() - got, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            // Kernels without getrandom(2): the same pool of randomness.
            use std::io::Read;
            std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
            break;
        }
        got += r as usize;
    }
    let (a, b) = buf.split_at(8);
    Ok([u64::from_le_bytes(a.try_into().unwrap_or_default()), u64::from_le_bytes(b.try_into().unwrap_or_default())])
}

/// SipHash-2-4 (Aumasson and Bernstein's keyed PRF, the MAC behind Rust's
/// `HashMap`) of whole little-endian words, keyed by `key`.
fn siphash24(key: [u64; 2], words: &[u64]) -> u64 {
    let mut v = [
        key[0] ^ 0x736f_6d65_7073_6575,
        key[1] ^ 0x646f_7261_6e64_6f6d,
        key[0] ^ 0x6c79_6765_6e65_7261,
        key[1] ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    fn absorb(v: &mut [u64; 4], m: u64) {
        v[3] ^= m;
        round(v);
        round(v);
        v[0] ^= m;
    }
    for &m in words {
        absorb(&mut v, m);
    }
    // The final block: no tail bytes, the length in bytes in the top byte.
    absorb(&mut v, ((words.len() as u64).wrapping_mul(8) & 0xff) << 56);
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// The authentication tag of a task: binds the task id to the trampoline
/// and function the parent chose for it.
fn task_tag(key: [u64; 2], id: u64, tramp: i64, func: i64) -> u64 {
    siphash24(key, &[id, tramp as u64, func as u64])
}

type PoolTramp = fn(usize, &[u8]) -> Result<Vec<u8>, String>;

thread_local! {
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

fn tramp_one<A: Message, R: Message>(f: usize, arg: &[u8]) -> Result<Vec<u8>, String> {
    let a = decode_copy::<A>(arg).map_err(|e| format!("argument: {e}"))?;
    // SAFETY: `f` is a `fn(A) -> R` of this image, encoded by the parent for
    // exactly this trampoline instance.
    let f: fn(A) -> R = unsafe { std::mem::transmute::<usize, fn(A) -> R>(f) };
    encode_vec(&f(a)).map_err(|e| format!("result: {e}"))
}

fn tramp_chunk<A: Message, R: Message>(f: usize, arg: &[u8]) -> Result<Vec<u8>, String> {
    let items = decode_copy::<Vec<A>>(arg).map_err(|e| format!("argument: {e}"))?;
    // SAFETY: as in `tramp_one`.
    let f: fn(A) -> R = unsafe { std::mem::transmute::<usize, fn(A) -> R>(f) };
    let out: Vec<R> = items.into_iter().map(f).collect();
    encode(&out).map(|v| v.to_vec()).map_err(|e| format!("result: {e}"))
}

fn tramp_star<A: Message, B: Message, R: Message>(f: usize, arg: &[u8]) -> Result<Vec<u8>, String> {
    let items = decode_copy::<Vec<(A, B)>>(arg).map_err(|e| format!("argument: {e}"))?;
    // SAFETY: `f` is a `fn(A, B) -> R` of this image, encoded for this instance.
    let f: fn(A, B) -> R = unsafe { std::mem::transmute::<usize, fn(A, B) -> R>(f) };
    let out: Vec<R> = items.into_iter().map(|(a, b)| f(a, b)).collect();
    encode(&out).map(|v| v.to_vec()).map_err(|e| format!("result: {e}"))
}

/// `f(&ctx, item)` over a chunk; the argument is the context's archive
/// behind its length (8 bytes, little-endian), then the chunk's archive. The
/// bytes come from shared memory: the length is checked, both archives
/// validated.
fn tramp_ctx<C: Message, A: Message, R: Message>(f: usize, arg: &[u8]) -> Result<Vec<u8>, String> {
    let bad = || "argument: a context length past the end".to_owned();
    let (len, rest) = arg.split_first_chunk::<8>().ok_or_else(bad)?;
    let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| bad())?;
    let (ctx, items) = rest.split_at_checked(len).ok_or_else(bad)?;
    let ctx = decode_copy::<C>(ctx).map_err(|e| format!("context: {e}"))?;
    let items = decode_copy::<Vec<A>>(items).map_err(|e| format!("argument: {e}"))?;
    // SAFETY: `f` is a `fn(&C, A) -> R` of this image, encoded for this
    // trampoline instance (the task's tag covers both).
    let f: fn(&C, A) -> R = unsafe { std::mem::transmute::<usize, fn(&C, A) -> R>(f) };
    let out: Vec<R> = items.into_iter().map(|a| f(&ctx, a)).collect();
    encode(&out).map(|v| v.to_vec()).map_err(|e| format!("result: {e}"))
}

/// Turns one chunk into a task's argument bytes.
type ChunkEncoder<'a, I> = dyn Fn(&Vec<I>) -> Result<Vec<u8>, TaskError> + 'a;

/// Encodes one chunk of plain items.
fn enc_chunk<I: Message>(chunk: &Vec<I>) -> Result<Vec<u8>, TaskError> {
    encode(chunk).map(|v| v.to_vec()).map_err(|e| TaskError::Message(e.to_string()))
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// The worker loop (fork mode calls it directly; spawn mode through
/// `spawn_fn`). Returns the exit code.
fn worker_main(args: WorkerArgs) -> i32 {
    // A task's panic is reported to the parent (message and location), not
    // printed by the worker.
    std::panic::set_hook(Box::new(|info| {
        let msg = match info.payload().downcast_ref::<&str>() {
            Some(s) => (*s).to_owned(),
            None => info.payload().downcast_ref::<String>().cloned().unwrap_or_else(|| "panic".to_owned()),
        };
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg}{at}")));
    }));
    if args.init.tramp != 0 {
        // SAFETY: the parent encoded an `InitTramp` of this image and the
        // function it was monomorphised for; `WorkerArgs` reached this
        // process through private memory only (see `InitArgs`).
        let tramp: InitTramp = unsafe { std::mem::transmute::<usize, InitTramp>(fn_address(args.init.tramp)) };
        if let Err(e) = tramp(fn_address(args.init.func), &args.init.arg) {
            eprintln!("shmproc pool worker: {e}");
            return 1;
        }
    }
    let mut done = 0u64;
    loop {
        if args.max_tasks != 0 && done >= args.max_tasks {
            return 0;
        }
        // Hold the task's message until its result is sent: if this process
        // dies in between, the parent finds the task claimed by our tid.
        let task = match args.tasks.recv_ref() {
            Ok(t) => t,
            Err(_) => return 0,
        };
        let id = task.id.to_native();
        let (tramp_off, func_off) = (task.tramp.to_native(), task.func.to_native());
        // Whoever can write the task queue can write these words: they become
        // code addresses only if the tag proves the parent chose them.
        let (status, payload) = if task.tag.to_native() != task_tag(args.key, id, tramp_off, func_off) {
            (RESULT_FORGED, Vec::new())
        } else {
            let (tramp, func) = (fn_address(tramp_off), fn_address(func_off));
            // The trampoline copies the argument out of the ring (with
            // atomic loads) before it validates it.
            let arg = task.arg.as_slice();
            // SAFETY: the tag is a MAC under the pool's private key (held only
            // by the parent and its workers, never in shared memory) over
            // exactly these offsets, so the parent made them: `tramp_off` is
            // a `PoolTramp` of this image and `func_off` the function that
            // trampoline instance was monomorphised for.
            let tramp: PoolTramp = unsafe { std::mem::transmute::<usize, PoolTramp>(tramp) };
            match std::panic::catch_unwind(move || tramp(func, arg)) {
                Ok(Ok(bytes)) => (RESULT_OK, bytes),
                Ok(Err(msg)) => (RESULT_MESSAGE, msg.into_bytes()),
                Err(p) => {
                    let msg = LAST_PANIC.with(|l| l.borrow_mut().take()).unwrap_or_else(|| panic_message(p));
                    (RESULT_PANICKED, msg.into_bytes())
                }
            }
        };
        let msg = ResultMsg { id, status, payload };
        if let Err(e) = args.results.send(&msg) {
            let fallback = ResultMsg {
                id,
                status: RESULT_MESSAGE,
                payload: format!("result could not be sent: {e}").into_bytes(),
            };
            if args.results.send(&fallback).is_err() {
                return 1;
            }
        }
        drop(task);
        done += 1;
    }
}

/// Configures a [`Pool`].
///
/// ```
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// let pool = shmproc::Pool::builder().processes(2).max_tasks_per_child(100).build()?;
/// assert_eq!(pool.apply(square, 4)?, 16);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct PoolBuilder {
    processes: usize,
    initializer: Option<InitArgs>,
    max_tasks_per_child: u64,
    start_method: Option<StartMethod>,
    allow_threaded_fork: bool,
    capacity: usize,
    message_size: usize,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            processes: cpu_count(),
            initializer: None,
            max_tasks_per_child: 0,
            start_method: None,
            allow_threaded_fork: false,
            capacity: 1024,
            message_size: 8 * 1024 - 32,
        }
    }
}

impl PoolBuilder {
    /// Number of workers (default: [`cpu_count`]). Zero is refused by
    /// [`build`](PoolBuilder::build) with [`PoolError::NoWorkers`], as Python
    /// refuses `Pool(0)`.
    ///
    /// ```
    /// let pool = shmproc::Pool::builder().processes(3).build()?;
    /// assert_eq!(pool.worker_pids().len(), 3);
    /// assert!(matches!(shmproc::Pool::builder().processes(0).build(), Err(shmproc::PoolError::NoWorkers)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = n;
        self
    }

    /// A function each worker runs once when it starts.
    ///
    /// ```
    /// fn setup() {
    ///     println!("worker {} ready", std::process::id());
    /// }
    /// let pool = shmproc::Pool::builder().processes(1).initializer(setup).build()?;
    /// assert_eq!(pool.worker_pids().len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn initializer(mut self, f: fn()) -> Self {
        self.initializer = Some(InitArgs {
            tramp: fn_offset(init_unit as InitTramp as usize),
            func: fn_offset(f as usize),
            arg: Vec::new(),
        });
        self
    }

    /// A function each worker runs once when it starts, with an argument
    /// (Python's `initializer=f, initargs=(arg,)`; several arguments: a
    /// tuple). The argument is encoded once, here, and reaches each worker,
    /// replacements included, through private memory (the fork copy or the
    /// sealed spawn payload), as the rest of a worker's setup does.
    ///
    /// ```
    /// static SCALE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    /// fn setup((scale, _name): (u64, String)) {
    ///     SCALE.store(scale, std::sync::atomic::Ordering::Relaxed);
    /// }
    /// fn scaled(x: u64) -> u64 {
    ///     x * SCALE.load(std::sync::atomic::Ordering::Relaxed)
    /// }
    /// let pool = shmproc::Pool::builder().processes(2).initializer_with(setup, (10, "db".to_string()))?.build()?;
    /// assert_eq!(pool.map(scaled, [1, 2, 3])?, [10, 20, 30]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn initializer_with<A: Message>(mut self, f: fn(A), arg: A) -> Result<Self, PoolError> {
        let arg = encode(&arg).map_err(|e| PoolError::InitArg(e.to_string()))?;
        self.initializer = Some(InitArgs {
            tramp: fn_offset(init_one::<A> as InitTramp as usize),
            func: fn_offset(f as usize),
            arg: arg.to_vec(),
        });
        Ok(self)
    }

    /// What workers get for their initializer.
    fn init_args(&self) -> InitArgs {
        self.initializer.clone().unwrap_or_default()
    }

    /// Replace each worker after it has run `k` tasks (0: never).
    ///
    /// ```
    /// fn pid(_: u8) -> u32 {
    ///     std::process::id()
    /// }
    /// let pool = shmproc::Pool::builder().processes(1).max_tasks_per_child(1).build()?;
    /// let (a, b) = (pool.apply(pid, 0)?, pool.apply(pid, 0)?);
    /// assert_ne!(a, b); // a fresh worker for each task
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_tasks_per_child(mut self, k: u64) -> Self {
        self.max_tasks_per_child = k;
        self
    }

    /// Start workers by re-executing the binary (`true`: the same as
    /// [`start_method`](PoolBuilder::start_method)`(StartMethod::Spawn)`) or
    /// by forking (`false`: `StartMethod::Fork`).
    ///
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     let pool = shmproc::Pool::builder().processes(1).spawn_mode(true).build()?;
    ///     assert_eq!(pool.apply(square, 5)?, 25);
    ///     Ok(())
    /// }
    /// ```
    pub fn spawn_mode(mut self, yes: bool) -> Self {
        self.start_method = Some(if yes { StartMethod::Spawn } else { StartMethod::Fork });
        self
    }

    /// How workers are started (default: the process-wide start method,
    /// [`crate::get_start_method`]: fork in a single-threaded parent, the
    /// fork server in a multi-threaded one, so a pool works inside a
    /// `#[test]` or an async runtime).
    ///
    /// ```
    /// use shmproc::StartMethod;
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// for m in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
    ///     let pool = shmproc::Pool::builder().processes(1).start_method(m).build()?;
    ///     assert_eq!(pool.apply(square, 5)?, 25);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.start_method = Some(method);
        self
    }

    /// Fork workers even from a multi-threaded parent (see
    /// [`crate::Builder::allow_threaded_fork`]; the workers run only the
    /// pool's loop and your task functions).
    ///
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(100)));
    /// let pool = shmproc::Pool::builder().processes(1).allow_threaded_fork(true).build()?;
    /// assert_eq!(pool.apply(square, 2)?, 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn allow_threaded_fork(mut self, yes: bool) -> Self {
        self.allow_threaded_fork = yes;
        self
    }

    /// Task arguments and results up to this many bytes (default 8 KiB) travel
    /// in the task and result queues' slots; larger ones, of any size, travel
    /// out of line (see [`Queue`]'s docs), at the cost of a few system calls
    /// each. `map` and `starmap` cut their chunks to about half of it.
    ///
    /// ```
    /// fn len(v: Vec<u8>) -> usize {
    ///     v.len()
    /// }
    /// fn zeros(n: usize) -> Vec<u8> {
    ///     vec![0; n]
    /// }
    /// let pool = shmproc::Pool::builder().processes(1).max_message_size(1 << 16).build()?;
    /// assert_eq!(pool.apply(len, vec![0u8; 30_000])?, 30_000);
    /// // Beyond it: out of line, both ways.
    /// assert_eq!(pool.apply(len, vec![0u8; 300_000])?, 300_000);
    /// assert_eq!(pool.apply(zeros, 1 << 20)?.len(), 1 << 20);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.message_size = bytes.max(64);
        self
    }

    /// Creates the pool and starts its workers.
    ///
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// let pool = shmproc::Pool::builder().build()?; // one worker per CPU
    /// assert_eq!(pool.map(square, [1, 2])?, [1, 4]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(self) -> Result<Pool, PoolError> {
        if self.processes == 0 {
            return Err(PoolError::NoWorkers);
        }
        // A slot ring: workers hold their task's slot while they run it.
        let tasks =
            Queue::<TaskMsg>::builder().capacity(self.capacity).message_size(self.message_size).slot_ring().build()?;
        let results = Queue::<ResultMsg>::builder().capacity(self.capacity).message_size(self.message_size).build()?;
        let key = random_key().map_err(PoolError::Random)?;
        let inner =
            Arc::new(PoolInner { tasks, results, config: self.clone(), key, state: StdMutex::new(State::default()) });
        {
            let mut st = inner.lock();
            for _ in 0..self.processes {
                let w = inner.start_worker()?;
                st.workers.push(w);
            }
        }
        Ok(Pool { inner })
    }
}

/// Hashes a task id for the parent's maps of tasks: one multiplication by
/// an odd constant (ids are the parent's own sequence numbers, never read
/// from shared memory, so no adversary picks them; consecutive ids land in
/// distinct buckets). SipHash, the std default, was a fifth of the parent's
/// instructions per `apply_async` + `get`.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(29) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type IdBuild = std::hash::BuildHasherDefault<IdHasher>;

#[derive(Default)]
struct State {
    workers: Vec<Process>,
    next_id: u64,
    outstanding: HashSet<u64, IdBuild>,
    done: HashMap<u64, Result<Vec<u8>, TaskError>, IdBuild>,
    callbacks: HashMap<u64, Callback, IdBuild>,
    /// Callbacks whose results are in, run once the state lock is released
    /// (a callback may call into the pool).
    due: Vec<(Callback, Result<Vec<u8>, TaskError>)>,
    /// Tasks submitted while the task ring was full, oldest first: they wait
    /// here, in the parent, and move into the ring whenever the parent next
    /// calls into the pool ([`PoolInner::feed`]), so submitting never blocks.
    backlog: VecDeque<TaskMsg>,
    closed: bool,
    terminated: bool,
}

type Callback = Box<dyn FnOnce(&Result<Vec<u8>, TaskError>) + Send>;

struct PoolInner {
    tasks: Queue<TaskMsg>,
    results: Queue<ResultMsg>,
    config: PoolBuilder,
    /// The task-authentication key (private memory only).
    key: [u64; 2],
    state: StdMutex<State>,
}

/// How often a waiting parent checks on its workers.
const CHECK: Duration = Duration::from_millis(20);

impl PoolInner {
    fn lock(&self) -> StdGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start_worker(&self) -> Result<Process, ProcessError> {
        let args = WorkerArgs {
            tasks: self.tasks.receiver(),
            results: self.results.sender(),
            init: self.config.init_args(),
            max_tasks: self.config.max_tasks_per_child,
            key: self.key,
        };
        let b = Process::builder().name("PoolWorker").daemon(true).allow_threaded_fork(self.config.allow_threaded_fork);
        let b = match self.config.start_method {
            Some(m) => b.start_method(m),
            None => b,
        };
        b.spawn_fn(worker_main, args)
    }

    fn complete(&self, st: &mut State, id: u64, r: Result<Vec<u8>, TaskError>) {
        if !st.outstanding.remove(&id) {
            return;
        }
        if let Some(cb) = st.callbacks.remove(&id) {
            st.due.push((cb, r.clone()));
        }
        st.done.insert(id, r);
    }

    fn take_result(&self, st: &mut State, msg: ResultMsg) {
        let text = || String::from_utf8_lossy(&msg.payload).into_owned();
        let r = match msg.status {
            RESULT_OK => Ok(msg.payload),
            RESULT_PANICKED => Err(TaskError::Panicked(text())),
            RESULT_FORGED => Err(TaskError::Forged),
            _ => Err(TaskError::Message(text())),
        };
        self.complete(st, msg.id, r);
    }

    /// Moves backlogged tasks into the task ring while it has room.
    fn feed(&self, st: &mut State) {
        while let Some(msg) = st.backlog.front() {
            match self.tasks.try_send(msg) {
                Ok(()) => {
                    st.backlog.pop_front();
                }
                Err(TrySendError::Full) => return,
                Err(e) => {
                    let id = msg.id;
                    st.backlog.pop_front();
                    self.complete(st, id, Err(TaskError::Message(e.to_string())));
                }
            }
        }
    }

    /// Collects available results; waits up to `wait` for one. Backlogged
    /// tasks move into the ring before and after (a worker frees its slot
    /// just after sending its result, so with a backlog the wait is short).
    fn pump(&self, st: &mut State, wait: Duration) {
        self.feed(st);
        let wait = if st.backlog.is_empty() { wait } else { wait.min(Duration::from_millis(1)) };
        match self.results.recv_timeout(wait) {
            Ok(msg) => {
                self.take_result(st, msg);
                while let Ok(msg) = self.results.try_recv() {
                    self.take_result(st, msg);
                }
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
            Err(RecvTimeoutError::Corrupt { .. } | RecvTimeoutError::Reentered) => {}
        }
        self.check_workers(st);
        self.feed(st);
    }

    /// Finds dead workers, fails the tasks they held, replaces them.
    fn check_workers(&self, st: &mut State) {
        let mut dead = Vec::new();
        st.workers.retain(|w| {
            if w.is_alive() {
                true
            } else {
                dead.push((w.pid(), w.exitcode()));
                false
            }
        });
        if dead.is_empty() {
            return;
        }
        // Which outstanding tasks are still in the task queue (waiting, or
        // held by a live worker)? Scan first, then drain results: a task
        // released after the scan has its result published before.
        // Backlogged tasks are not in the ring yet: nobody held them.
        let mut present: HashSet<u64> = st.backlog.iter().map(|t| t.id).collect();
        let mut held_by_dead: HashMap<u64, u32> = HashMap::new();
        self.tasks.core_scan(|claimant, bytes| {
            if let Ok(t) = crate::message::decode_peer::<TaskMsg>(bytes) {
                let id = t.id;
                match claimant {
                    Some(tid) if dead.iter().any(|&(pid, _)| pid == tid) => {
                        held_by_dead.insert(id, tid);
                    }
                    _ => {
                        present.insert(id);
                    }
                }
            }
        });
        while let Ok(msg) = self.results.try_recv() {
            self.take_result(st, msg);
        }
        let lost: Vec<u64> = st.outstanding.iter().copied().filter(|id| !present.contains(id)).collect();
        for id in lost {
            let pid = held_by_dead.get(&id).copied().unwrap_or(dead[0].0);
            let code = dead.iter().find(|&&(p, _)| p == pid).and_then(|&(_, c)| c);
            let signal = code.filter(|&c| c < 0).map(|c| -c);
            self.complete(st, id, Err(TaskError::WorkerDied { pid, signal }));
        }
        // The claimed slots of dead workers are freed by the ring's own
        // recovery when producers need them. A closed pool still replaces
        // workers (those that reached `max_tasks_per_child`, or died) while
        // tasks are waiting, so every queued task runs and `join` returns
        // (CPython's bpo-10332).
        if !st.terminated && (!st.closed || !st.outstanding.is_empty()) {
            for _ in 0..dead.len() {
                if let Ok(w) = self.start_worker() {
                    st.workers.push(w);
                }
            }
        }
    }

    fn submit(&self, tramp: PoolTramp, func: usize, arg: Vec<u8>, cb: Option<Callback>) -> Result<u64, TaskError> {
        let mut st = self.lock();
        let r = self.submit_locked(&mut st, tramp, func, arg, cb);
        self.run_due(st);
        r
    }

    fn submit_locked(
        &self,
        st: &mut State,
        tramp: PoolTramp,
        func: usize,
        arg: Vec<u8>,
        cb: Option<Callback>,
    ) -> Result<u64, TaskError> {
        if st.closed || st.terminated {
            return Err(TaskError::Closed);
        }
        st.next_id += 1;
        let id = st.next_id;
        if let Some(cb) = cb {
            st.callbacks.insert(id, cb);
        }
        let (tramp, func) = (fn_offset(tramp as usize), fn_offset(func));
        let tag = task_tag(self.key, id, tramp, func);
        let msg = TaskMsg { id, tramp, func, tag, arg };
        st.outstanding.insert(id);
        // Older backlogged tasks go first; a full ring parks the task in the
        // backlog instead of blocking the caller (Python's task handler).
        self.feed(st);
        if !st.backlog.is_empty() {
            st.backlog.push_back(msg);
            return Ok(id);
        }
        match self.tasks.try_send(&msg) {
            Ok(()) => Ok(id),
            Err(TrySendError::Full) => {
                st.backlog.push_back(msg);
                Ok(id)
            }
            Err(e) => {
                st.outstanding.remove(&id);
                st.callbacks.remove(&id);
                Err(TaskError::Message(e.to_string()))
            }
        }
    }

    /// Runs the callbacks that are due, outside the state lock.
    fn run_due(&self, mut st: StdGuard<'_, State>) {
        let due = std::mem::take(&mut st.due);
        drop(st);
        for (cb, r) in due {
            cb(&r);
        }
    }

    /// Waits for task `id`; returns what `f` makes of its result, which
    /// stays stored (`None`: not finished by `deadline`).
    fn wait_for<T>(
        &self,
        id: u64,
        deadline: Option<Deadline>,
        f: impl FnOnce(&Result<Vec<u8>, TaskError>) -> T,
    ) -> Option<T> {
        // Results are collected at least once, even with a deadline that
        // has passed (`ready`, `successful`).
        let mut pumped = false;
        loop {
            let mut st = self.lock();
            // Each arm that uses `f` returns: it runs once.
            let found = match st.done.get(&id) {
                Some(r) => Some(f(r)),
                None if !st.outstanding.contains(&id) => Some(f(&Err(TaskError::Closed))),
                None if pumped && deadline.is_some_and(|d| d.has_passed()) => None,
                None => {
                    pumped = true;
                    let wait = deadline.map_or(CHECK, |d| d.remaining().min(CHECK));
                    self.pump(&mut st, wait);
                    self.run_due(st);
                    continue;
                }
            };
            self.run_due(st);
            return found;
        }
    }

    /// Collects the results that are in, waiting up to `wait` for one.
    fn collect(&self, wait: Duration) {
        let mut st = self.lock();
        self.pump(&mut st, wait);
        self.run_due(st);
    }

    /// Whether task `id` has finished (`Some(succeeded)`), from what has
    /// been collected so far.
    fn peek(&self, id: u64) -> Option<bool> {
        let st = self.lock();
        match st.done.get(&id) {
            Some(r) => Some(r.is_ok()),
            None if !st.outstanding.contains(&id) => Some(false),
            None => None,
        }
    }

    fn forget(&self, id: u64) {
        let mut st = self.lock();
        st.done.remove(&id);
    }
}

/// The tasks an [`imap`](Pool::imap) of an iterator of unknown length
/// keeps in flight (at least four per worker).
pub const IMAP_WINDOW: usize = 64;

/// Submits `f(arg)` to the pool behind `inner`.
fn submit_one<A: Message, R: Message>(
    inner: &Arc<PoolInner>,
    f: fn(A) -> R,
    arg: A,
) -> Result<AsyncResult<R>, TaskError> {
    let bytes = encode_vec(&arg).map_err(|e| TaskError::Message(e.to_string()))?;
    let id = inner.submit(tramp_one::<A, R>, f as usize, bytes, None)?;
    Ok(AsyncResult { inner: inner.clone(), id, _r: std::marker::PhantomData })
}

/// The items of an `imap`, submitted as [`Pool::imap`] says: all at once
/// when their count is known, else up to a window ahead of the results.
struct Feed<I, A, R> {
    inner: Arc<PoolInner>,
    f: fn(A) -> R,
    items: I,
    window: usize,
}

impl<I: Iterator<Item = A>, A: Message, R: Message> Feed<I, A, R> {
    fn new(inner: &Arc<PoolInner>, f: fn(A) -> R, items: I, window: usize) -> Self {
        let window = if items.size_hint().1.is_some() { usize::MAX } else { window };
        Feed { inner: inner.clone(), f, items, window }
    }

    /// Submits items until `pending` holds a window of them (or none is
    /// left).
    /// A submission refused because the pool is closed ends the feed: that
    /// error is the last item (an endless input does not turn into endless
    /// errors).
    fn top_up(&mut self, pending: &mut VecDeque<Result<AsyncResult<R>, TaskError>>) {
        while pending.len() < self.window {
            let Some(a) = self.items.next() else { return };
            let submitted = submit_one(&self.inner, self.f, a);
            let closed = matches!(submitted, Err(TaskError::Closed));
            pending.push_back(submitted);
            if closed {
                self.window = 0;
                return;
            }
        }
    }
}

/// A pool of worker processes.
///
/// ```
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// let pool = shmproc::Pool::new(2)?;
/// assert_eq!(pool.map(square, 0..4u64)?, [0, 1, 4, 9]);
/// pool.close();
/// pool.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Pool {
    inner: Arc<PoolInner>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.lock();
        f.debug_struct("Pool")
            .field("workers", &st.workers.iter().map(Process::pid).collect::<Vec<_>>())
            .field("outstanding", &st.outstanding.len())
            .field("closed", &st.closed)
            .finish()
    }
}

/// The pending result of a task submitted with [`Pool::apply_async`].
///
/// ```
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// let pool = shmproc::Pool::new(1)?;
/// let r: shmproc::AsyncResult<u64> = pool.apply_async(square, 6)?;
/// assert_eq!(r.get()?, 36);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct AsyncResult<R> {
    inner: Arc<PoolInner>,
    id: u64,
    _r: std::marker::PhantomData<fn() -> R>,
}

impl<R: Message> AsyncResult<R> {
    fn decode(r: &Result<Vec<u8>, TaskError>) -> Result<R, TaskError> {
        match r {
            Ok(bytes) => decode_copy::<R>(bytes).map_err(|e| TaskError::Message(e.to_string())),
            Err(e) => Err(e.clone()),
        }
    }

    /// Waits for the result.
    ///
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// let pool = shmproc::Pool::new(1)?;
    /// let r = pool.apply_async(square, 3)?;
    /// assert_eq!(r.get()?, 9);
    /// assert_eq!(r.get()?, 9); // again: the same result
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self) -> Result<R, TaskError> {
        self.inner.wait_for(self.id, None, Self::decode).unwrap_or(Err(TaskError::Closed))
    }

    /// Waits at most `timeout`; `Err(TaskError::Timeout)` if not ready then.
    ///
    /// ```
    /// fn slow(ms: u64) -> u64 {
    ///     std::thread::sleep(std::time::Duration::from_millis(ms));
    ///     ms
    /// }
    /// let pool = shmproc::Pool::new(1)?;
    /// let r = pool.apply_async(slow, 300)?;
    /// assert!(matches!(r.get_timeout(std::time::Duration::from_millis(10)), Err(shmproc::TaskError::Timeout)));
    /// assert_eq!(r.get()?, 300);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<R, TaskError> {
        self.inner.wait_for(self.id, Some(Deadline::after(timeout)), Self::decode).unwrap_or(Err(TaskError::Timeout))
    }

    /// Waits until the task has finished (successfully or not).
    ///
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// let pool = shmproc::Pool::new(1)?;
    /// let r = pool.apply_async(square, 2)?;
    /// r.wait();
    /// assert!(r.ready());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait(&self) {
        let _ = self.inner.wait_for(self.id, None, |_| ());
    }

    /// Waits at most `timeout`; returns whether the task has finished.
    ///
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// let pool = shmproc::Pool::new(1)?;
    /// let r = pool.apply_async(square, 2)?;
    /// assert!(r.wait_timeout(std::time::Duration::from_secs(10)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.inner.wait_for(self.id, Some(Deadline::after(timeout)), |_| ()).is_some()
    }

    /// Whether the task has finished (collects results without waiting).
    ///
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// let pool = shmproc::Pool::new(1)?;
    /// let r = pool.apply_async(square, 2)?;
    /// r.wait();
    /// assert!(r.ready());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ready(&self) -> bool {
        self.inner.wait_for(self.id, Some(Deadline::now()), |_| ()).is_some()
    }

    /// `Some(true)` if it finished with a result, `Some(false)` if it failed,
    /// `None` if it has not finished (Python raises there).
    ///
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// let pool = shmproc::Pool::new(1)?;
    /// let r = pool.apply_async(square, 2)?;
    /// assert_eq!(r.successful(), None.or(r.successful())); // not known until ready
    /// r.wait();
    /// assert_eq!(r.successful(), Some(true));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn successful(&self) -> Option<bool> {
        self.inner.wait_for(self.id, Some(Deadline::now()), Result::is_ok)
    }
}

impl<R> Drop for AsyncResult<R> {
    fn drop(&mut self) {
        self.inner.forget(self.id);
    }
}

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult").field("id", &self.id).finish()
    }
}

/// A map callback over the encoded chunks' results: decodes them and runs
/// the user's callback, or says why they did not decode.
type PartsCallback = Box<dyn FnOnce(Vec<Vec<u8>>) -> Result<(), TaskError> + Send>;
type ErrorCallback = Box<dyn FnOnce(&TaskError) + Send>;
type MapCallbacks = (PartsCallback, ErrorCallback);

/// The callbacks of `map_async_with` and kin, the result type erased.
fn map_callbacks<R, C, E>(callback: C, error_callback: E) -> MapCallbacks
where
    R: Message,
    C: FnOnce(Vec<R>) + Send + 'static,
    E: FnOnce(&TaskError) + Send + 'static,
{
    let ok: PartsCallback = Box::new(move |parts: Vec<Vec<u8>>| {
        let mut out = Vec::new();
        for b in parts {
            out.extend(decode_copy::<Vec<R>>(&b).map_err(|e| TaskError::Message(e.to_string()))?);
        }
        callback(out);
        Ok(())
    });
    (ok, Box::new(error_callback))
}

/// Gathers the chunks of a `map_async_with`/`starmap_async_with` call for
/// its callbacks.
struct MapAgg {
    parts: Vec<Option<Vec<u8>>>,
    left: usize,
    failed: bool,
    callback: Option<PartsCallback>,
    error_callback: Option<ErrorCallback>,
}

impl MapAgg {
    fn lock(agg: &StdMutex<MapAgg>) -> StdGuard<'_, MapAgg> {
        agg.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Chunk `i` finished with `r`.
    fn part_done(agg: &StdMutex<MapAgg>, i: usize, r: &Result<Vec<u8>, TaskError>) {
        let mut a = Self::lock(agg);
        match r {
            Ok(bytes) => {
                if let Some(slot) = a.parts.get_mut(i) {
                    *slot = Some(bytes.clone());
                }
                a.left = a.left.saturating_sub(1);
                if a.left == 0 {
                    drop(a);
                    Self::finish(agg);
                }
            }
            Err(e) => Self::fail(a, e),
        }
    }

    /// The first failure runs the error callback; later ones nothing.
    fn fail(mut a: StdGuard<'_, MapAgg>, e: &TaskError) {
        if a.failed {
            return;
        }
        a.failed = true;
        a.callback = None;
        let cb = a.error_callback.take();
        drop(a);
        if let Some(cb) = cb {
            cb(e);
        }
    }

    /// Every chunk succeeded: the callback gets all results, in order.
    fn finish(agg: &StdMutex<MapAgg>) {
        let mut a = Self::lock(agg);
        if a.failed {
            return;
        }
        let Some(parts) = std::mem::take(&mut a.parts).into_iter().collect::<Option<Vec<_>>>() else {
            return Self::fail(a, &TaskError::Closed);
        };
        let cb = a.callback.take();
        let ecb = a.error_callback.take();
        a.failed = true; // settled: nothing more runs
        drop(a);
        if let Some(cb) = cb {
            if let Err(e) = cb(parts) {
                if let Some(ecb) = ecb {
                    ecb(&e);
                }
            }
        }
    }
}

/// The pending results of [`Pool::map_async`] and its kin (Python's
/// `MapResult`): the results of every chunk, in item order.
///
/// ```
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// let pool = shmproc::Pool::new(2)?;
/// let r: shmproc::pool::MapResult<u64> = pool.map_async(square, 0..4u64)?;
/// assert_eq!(r.get()?, [0, 1, 4, 9]);
/// assert_eq!(r.successful(), Some(true));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MapResult<R> {
    parts: Vec<AsyncResult<Vec<R>>>,
}

impl<R: Message> MapResult<R> {
    /// Waits for every chunk; the results in item order, or the failure of
    /// the first failed chunk (in item order).
    ///
    /// ```
    /// fn inc(x: u8) -> u8 {
    ///     x + 1
    /// }
    /// let pool = shmproc::Pool::new(1)?;
    /// assert_eq!(pool.map_async(inc, [1, 2])?.get()?, [2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self) -> Result<Vec<R>, TaskError> {
        let mut out = Vec::new();
        for p in &self.parts {
            out.extend(p.get()?);
        }
        Ok(out)
    }

    /// [`get`](MapResult::get), waiting at most `timeout` in all;
    /// `Err(TaskError::Timeout)` if some chunk is not done by then.
    ///
    /// ```
    /// fn slow(ms: u64) -> u64 {
    ///     std::thread::sleep(std::time::Duration::from_millis(ms));
    ///     ms
    /// }
    /// let pool = shmproc::Pool::new(1)?;
    /// let r = pool.map_async(slow, [300])?;
    /// assert!(matches!(r.get_timeout(std::time::Duration::from_millis(10)), Err(shmproc::TaskError::Timeout)));
    /// assert_eq!(r.get()?, [300]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<Vec<R>, TaskError> {
        let deadline = Deadline::after(timeout);
        let mut out = Vec::new();
        for p in &self.parts {
            match p.inner.wait_for(p.id, Some(deadline), AsyncResult::<Vec<R>>::decode) {
                Some(r) => out.extend(r?),
                None => return Err(TaskError::Timeout),
            }
        }
        Ok(out)
    }

    /// Waits until every chunk has finished (successfully or not).
    ///
    /// ```
    /// fn inc(x: u8) -> u8 {
    ///     x + 1
    /// }
    /// let pool = shmproc::Pool::new(1)?;
    /// let r = pool.map_async(inc, [1, 2])?;
    /// r.wait();
    /// assert!(r.ready());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait(&self) {
        for p in &self.parts {
            p.wait();
        }
    }

    /// Waits at most `timeout` in all; returns whether every chunk finished.
    ///
    /// ```
    /// fn inc(x: u8) -> u8 {
    ///     x + 1
    /// }
    /// let pool = shmproc::Pool::new(1)?;
    /// assert!(pool.map_async(inc, [1, 2])?.wait_timeout(std::time::Duration::from_secs(10)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Deadline::after(timeout);
        self.parts.iter().all(|p| p.inner.wait_for(p.id, Some(deadline), |_| ()).is_some())
    }

    /// Whether every chunk has finished, or one has failed (then the result
    /// is known to be a failure, as in Python). Collects results without
    /// waiting.
    ///
    /// ```
    /// fn inc(x: u8) -> u8 {
    ///     x + 1
    /// }
    /// let pool = shmproc::Pool::new(1)?;
    /// let r = pool.map_async(inc, [1, 2])?;
    /// r.wait();
    /// assert!(r.ready());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ready(&self) -> bool {
        self.successful().is_some()
    }

    /// `Some(true)` if every chunk succeeded, `Some(false)` once one failed,
    /// `None` while neither is known.
    ///
    /// ```
    /// fn inc(x: u8) -> u8 {
    ///     x + 1
    /// }
    /// let pool = shmproc::Pool::new(1)?;
    /// let r = pool.map_async(inc, [1, 2])?;
    /// r.wait();
    /// assert_eq!(r.successful(), Some(true));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn successful(&self) -> Option<bool> {
        let Some(first) = self.parts.first() else { return Some(true) };
        first.inner.collect(Duration::ZERO);
        let mut all = true;
        for p in &self.parts {
            match p.inner.peek(p.id) {
                Some(false) => return Some(false),
                Some(true) => {}
                None => all = false,
            }
        }
        all.then_some(true)
    }
}

impl<R> fmt::Debug for MapResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapResult").field("chunks", &self.parts.len()).finish()
    }
}

fn chunks<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        out.push(it.by_ref().take(size).collect());
    }
    out
}

impl Pool {
    /// A pool of `processes` forked workers.
    ///
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// let pool = shmproc::Pool::new(2)?;
    /// assert_eq!(pool.apply(square, 9)?, 81);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(processes: usize) -> Result<Pool, PoolError> {
        PoolBuilder::default().processes(processes).build()
    }

    /// A builder (processes, initializer, max_tasks_per_child, spawn mode).
    ///
    /// ```
    /// let pool = shmproc::Pool::builder().processes(1).build()?;
    /// assert_eq!(pool.worker_pids().len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The worker pids right now.
    ///
    /// ```
    /// let pool = shmproc::Pool::new(2)?;
    /// let pids = pool.worker_pids();
    /// assert_eq!(pids.len(), 2);
    /// assert!(!pids.contains(&std::process::id()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn worker_pids(&self) -> Vec<u32> {
        self.inner.lock().workers.iter().map(Process::pid).collect()
    }

    /// Runs `f(arg)` in a worker and waits for the result.
    ///
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// let pool = shmproc::Pool::new(1)?;
    /// assert_eq!(pool.apply(square, 12)?, 144);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply<A: Message, R: Message>(&self, f: fn(A) -> R, arg: A) -> Result<R, TaskError> {
        self.apply_async(f, arg)?.get()
    }

    /// Submits `f(arg)`; returns at once.
    ///
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// let pool = shmproc::Pool::new(2)?;
    /// let rs: Vec<_> = (0..4u64).map(|x| pool.apply_async(square, x)).collect::<Result<_, _>>()?;
    /// let got: Vec<u64> = rs.iter().map(|r| r.get()).collect::<Result<_, _>>()?;
    /// assert_eq!(got, [0, 1, 4, 9]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply_async<A: Message, R: Message>(&self, f: fn(A) -> R, arg: A) -> Result<AsyncResult<R>, TaskError> {
        submit_one(&self.inner, f, arg)
    }

    /// Like [`apply_async`](Pool::apply_async), with a callback for the result
    /// and one for a failure; one of them runs exactly once, in this process,
    /// when the result is collected (on the thread that collects it, outside
    /// the pool's lock, so a callback may submit more tasks).
    ///
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// use std::sync::{Arc, Mutex};
    /// let pool = shmproc::Pool::new(1)?;
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let s = seen.clone();
    /// let r = pool.apply_async_with(square, 7, move |v| s.lock().unwrap().push(v), |e| eprintln!("failed: {e}"))?;
    /// r.wait(); // callbacks run here, in this process
    /// assert_eq!(*seen.lock().unwrap(), [49]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply_async_with<A, R, C, E>(
        &self,
        f: fn(A) -> R,
        arg: A,
        callback: C,
        error_callback: E,
    ) -> Result<AsyncResult<R>, TaskError>
    where
        A: Message,
        R: Message,
        C: FnOnce(R) + Send + 'static,
        E: FnOnce(&TaskError) + Send + 'static,
    {
        let bytes = encode_vec(&arg).map_err(|e| TaskError::Message(e.to_string()))?;
        let cb: Callback = Box::new(move |r: &Result<Vec<u8>, TaskError>| match AsyncResult::<R>::decode(r) {
            Ok(v) => callback(v),
            Err(e) => error_callback(&e),
        });
        let id = self.inner.submit(tramp_one::<A, R>, f as usize, bytes, Some(cb))?;
        Ok(AsyncResult { inner: self.inner.clone(), id, _r: std::marker::PhantomData })
    }

    fn chunk_size(&self, len: usize) -> usize {
        // CPython: chunksize, extra = divmod(len, 4 * processes); +1 if extra.
        let workers = self.inner.config.processes.max(1) * 4;
        (len / workers + usize::from(len % workers != 0)).max(1)
    }

    /// Cuts `items` into chunks of `size` (CPython's default when `None`) and
    /// encodes each with `enc`, halving a chunk while its encoding would take
    /// more than half a message slot (leaving room for results of similar
    /// size): a chunk that fits a slot travels without a system call.
    /// Results of any size come back (out of line when they are larger).
    fn encode_chunks<I>(
        &self,
        items: Vec<I>,
        size: Option<usize>,
        enc: &ChunkEncoder<'_, I>,
    ) -> Result<Vec<Vec<u8>>, TaskError> {
        let size = size.unwrap_or_else(|| self.chunk_size(items.len())).max(1);
        let mut out = Vec::new();
        for chunk in chunks(items, size) {
            self.encode_chunk(chunk, enc, &mut out)?;
        }
        Ok(out)
    }

    fn encode_chunk<I>(
        &self,
        mut chunk: Vec<I>,
        enc: &ChunkEncoder<'_, I>,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), TaskError> {
        let bytes = enc(&chunk)?;
        if bytes.len() > self.inner.config.message_size / 2 && chunk.len() > 1 {
            let tail = chunk.split_off(chunk.len() / 2);
            self.encode_chunk(chunk, enc, out)?;
            return self.encode_chunk(tail, enc, out);
        }
        out.push(bytes);
        Ok(())
    }

    /// The `map` family's one submission path: `items` in chunks of `size`
    /// (`None`: the default size), `f` over each chunk.
    fn submit_map<A: Message, R: Message>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        size: Option<usize>,
        callbacks: Option<MapCallbacks>,
    ) -> Result<MapResult<R>, TaskError> {
        let parts = self.encode_chunks(items.into_iter().collect(), size, &enc_chunk::<A>)?;
        self.submit_parts(tramp_chunk::<A, R>, f as usize, parts, callbacks)
    }

    /// As [`submit_map`](Pool::submit_map), for the `starmap` family.
    fn submit_starmap<A: Message, B: Message, R: Message>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
        size: Option<usize>,
        callbacks: Option<MapCallbacks>,
    ) -> Result<MapResult<R>, TaskError> {
        let parts = self.encode_chunks(items.into_iter().collect(), size, &enc_chunk::<(A, B)>)?;
        self.submit_parts(tramp_star::<A, B, R>, f as usize, parts, callbacks)
    }

    /// Submits encoded chunks to `tramp` (which runs `func` over a chunk);
    /// with `callbacks`, the first runs once with every result in order when
    /// all chunks succeeded, the second once with the first failure.
    fn submit_parts<R: Message>(
        &self,
        tramp: PoolTramp,
        func: usize,
        parts: Vec<Vec<u8>>,
        callbacks: Option<MapCallbacks>,
    ) -> Result<MapResult<R>, TaskError> {
        let agg = callbacks.map(|(ok, err)| {
            Arc::new(StdMutex::new(MapAgg {
                parts: vec![None; parts.len()],
                left: parts.len(),
                failed: false,
                callback: Some(ok),
                error_callback: Some(err),
            }))
        });
        if let Some(agg) = &agg {
            if parts.is_empty() {
                MapAgg::finish(agg);
            }
        }
        let mut out = Vec::with_capacity(parts.len());
        for (i, bytes) in parts.into_iter().enumerate() {
            let cb = agg.as_ref().map(|agg| {
                let agg = agg.clone();
                Box::new(move |r: &Result<Vec<u8>, TaskError>| MapAgg::part_done(&agg, i, r)) as Callback
            });
            let id = self.inner.submit(tramp, func, bytes, cb)?;
            out.push(AsyncResult { inner: self.inner.clone(), id, _r: std::marker::PhantomData });
        }
        Ok(MapResult { parts: out })
    }

    /// Applies `f` to every item in parallel, in chunks, keeping the order.
    ///
    /// ```
    /// fn double(x: i64) -> i64 {
    ///     2 * x
    /// }
    /// let pool = shmproc::Pool::new(2)?;
    /// assert_eq!(pool.map(double, vec![1, 2, 3])?, vec![2, 4, 6]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map<A: Message, R: Message>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>, TaskError> {
        self.map_async(f, items)?.get()
    }

    /// [`map`](Pool::map) with Python's `chunksize`: items travel to the
    /// workers `chunksize` at a time (0 is taken as 1; a chunk too large for
    /// half a message slot is still split).
    ///
    /// ```
    /// fn double(x: i64) -> i64 {
    ///     2 * x
    /// }
    /// let pool = shmproc::Pool::new(2)?;
    /// assert_eq!(pool.map_chunked(double, 0..10, 3)?, (0..10).map(|x| 2 * x).collect::<Vec<_>>());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_chunked<A: Message, R: Message>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Vec<R>, TaskError> {
        self.submit_map(f, items, Some(chunksize), None)?.get()
    }

    /// Submits `f` over every item, in chunks; returns at once (Python's
    /// `map_async`). The [`MapResult`] gives the results in order.
    ///
    /// ```
    /// fn double(x: i64) -> i64 {
    ///     2 * x
    /// }
    /// let pool = shmproc::Pool::new(2)?;
    /// let r = pool.map_async(double, 0..100)?;
    /// assert_eq!(r.get()?.len(), 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_async<A: Message, R: Message>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<MapResult<R>, TaskError> {
        self.submit_map(f, items, None, None)
    }

    /// [`map_async`](Pool::map_async) with Python's `chunksize` (`None`: the
    /// default), `callback` and `error_callback`: `callback` runs once with
    /// every result in order when all chunks succeeded, `error_callback` once
    /// with the first failure (then `callback` never runs). They run in this
    /// process when the results are collected, as
    /// [`apply_async_with`](Pool::apply_async_with)'s do; with no items,
    /// `callback` runs at once with an empty `Vec`.
    ///
    /// ```
    /// fn double(x: i64) -> i64 {
    ///     2 * x
    /// }
    /// use std::sync::{Arc, Mutex};
    /// let pool = shmproc::Pool::new(2)?;
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let s = seen.clone();
    /// let r = pool.map_async_with(double, 0..5, Some(2), move |v| *s.lock().unwrap() = v, |e| eprintln!("{e}"))?;
    /// r.wait();
    /// assert_eq!(*seen.lock().unwrap(), [0, 2, 4, 6, 8]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_async_with<A, R, C, E>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
        callback: C,
        error_callback: E,
    ) -> Result<MapResult<R>, TaskError>
    where
        A: Message,
        R: Message,
        C: FnOnce(Vec<R>) + Send + 'static,
        E: FnOnce(&TaskError) + Send + 'static,
    {
        self.submit_map(f, items, chunksize, Some(map_callbacks(callback, error_callback)))
    }

    /// Like [`map`](Pool::map) for two-argument functions (Python's `starmap`);
    /// chunks too large for a message are split, as in `map`.
    ///
    /// ```
    /// fn add(a: u32, b: u32) -> u32 {
    ///     a + b
    /// }
    /// let pool = shmproc::Pool::new(2)?;
    /// assert_eq!(pool.starmap(add, [(1, 2), (3, 4)])?, [3, 7]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn starmap<A: Message, B: Message, R: Message>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<Vec<R>, TaskError> {
        self.starmap_async(f, items)?.get()
    }

    /// [`starmap`](Pool::starmap) with Python's `chunksize` (0 is taken as 1).
    ///
    /// ```
    /// fn add(a: u32, b: u32) -> u32 {
    ///     a + b
    /// }
    /// let pool = shmproc::Pool::new(2)?;
    /// assert_eq!(pool.starmap_chunked(add, [(1, 2), (3, 4), (5, 6)], 2)?, [3, 7, 11]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn starmap_chunked<A: Message, B: Message, R: Message>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
        chunksize: usize,
    ) -> Result<Vec<R>, TaskError> {
        self.submit_starmap(f, items, Some(chunksize), None)?.get()
    }

    /// Python's `starmap_async`: [`starmap`](Pool::starmap) that returns at
    /// once.
    ///
    /// ```
    /// fn add(a: u32, b: u32) -> u32 {
    ///     a + b
    /// }
    /// let pool = shmproc::Pool::new(2)?;
    /// assert_eq!(pool.starmap_async(add, [(1, 2), (3, 4)])?.get()?, [3, 7]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn starmap_async<A: Message, B: Message, R: Message>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<MapResult<R>, TaskError> {
        self.submit_starmap(f, items, None, None)
    }

    /// [`starmap_async`](Pool::starmap_async) with `chunksize`, `callback`
    /// and `error_callback`, as in [`map_async_with`](Pool::map_async_with).
    ///
    /// ```
    /// fn div(a: u32, b: u32) -> u32 {
    ///     a / b
    /// }
    /// use std::sync::{Arc, Mutex};
    /// let pool = shmproc::Pool::new(2)?;
    /// let failed = Arc::new(Mutex::new(None));
    /// let f = failed.clone();
    /// let r = pool.starmap_async_with(div, [(4, 2), (1, 0)], None, |_| {}, move |e| *f.lock().unwrap() = Some(e.clone()))?;
    /// r.wait();
    /// assert!(matches!(*failed.lock().unwrap(), Some(shmproc::TaskError::Panicked(_))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn starmap_async_with<A, B, R, C, E>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
        chunksize: Option<usize>,
        callback: C,
        error_callback: E,
    ) -> Result<MapResult<R>, TaskError>
    where
        A: Message,
        B: Message,
        R: Message,
        C: FnOnce(Vec<R>) + Send + 'static,
        E: FnOnce(&TaskError) + Send + 'static,
    {
        self.submit_starmap(f, items, chunksize, Some(map_callbacks(callback, error_callback)))
    }

    /// `map` with a context: `f(&ctx, item)` for every item, in order
    /// (Python's `pool.map(functools.partial(f, ctx), items)`; plain `fn`
    /// pointers cannot capture, so the captured value travels as a message).
    /// `ctx` is encoded once per call and travels with each chunk (about
    /// `4 × processes` chunks by default, fewer with a larger `chunksize`):
    /// fine for settings, keys and small tables; for large read-only data put
    /// it in shared memory ([`Array`](crate::Array),
    /// [`SharedMap`](crate::SharedMap), a [`Segment`](crate::Segment)) and
    /// pass its handle as the context.
    ///
    /// ```
    /// fn scale(factor: &u64, x: u64) -> u64 {
    ///     factor * x
    /// }
    /// let pool = shmproc::Pool::new(2)?;
    /// assert_eq!(pool.map_with(&3u64, scale, [1, 2, 3])?, [3, 6, 9]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_with<C: Message, A: Message, R: Message>(
        &self,
        ctx: &C,
        f: fn(&C, A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>, TaskError> {
        let ctx = encode(ctx).map_err(|e| TaskError::Message(e.to_string()))?;
        let enc = |chunk: &Vec<A>| -> Result<Vec<u8>, TaskError> {
            let items = encode(chunk).map_err(|e| TaskError::Message(e.to_string()))?;
            let mut arg = Vec::with_capacity(8 + ctx.len() + items.len());
            arg.extend_from_slice(&(ctx.len() as u64).to_le_bytes());
            arg.extend_from_slice(&ctx);
            arg.extend_from_slice(&items);
            Ok(arg)
        };
        let parts = self.encode_chunks(items.into_iter().collect(), None, &enc)?;
        self.submit_parts::<R>(tramp_ctx::<C, A, R>, f as usize, parts, None)?.get()
    }

    /// An iterator over `f(item)` results in order, each yielded as soon as
    /// it (and those before it) are done, one task per item (CPython's
    /// default `chunksize=1`).
    ///
    /// Items whose count is known (`items`' `size_hint` has an upper
    /// bound: a `Vec`, a range, a slice's iterator) are all submitted before
    /// `imap` returns, as Python's task handler takes them (so `close` and
    /// `join` before iterating still run every task). An iterator of
    /// unknown length (`std::iter::from_fn`, `(0..).map(..)`, a generator)
    /// may be endless: it is read as results are taken, keeping
    /// [`IMAP_WINDOW`] tasks (at least four per worker) in flight, so
    /// `pool.imap(f, 0..).take(5)` returns; tasks of such an iterator
    /// still unsubmitted when the pool is closed report
    /// [`TaskError::Closed`].
    ///
    /// ```
    /// fn inc(x: u8) -> u8 {
    ///     x + 1
    /// }
    /// let pool = shmproc::Pool::new(2)?;
    /// let out: Result<Vec<u8>, _> = pool.imap(inc, [1, 2, 3]).collect();
    /// assert_eq!(out?, vec![2, 3, 4]);
    /// // Endless input: taken as results are.
    /// let first: Result<Vec<u8>, _> = pool.imap(inc, (0..).map(|i: u32| i as u8)).take(4).collect();
    /// assert_eq!(first?, vec![1, 2, 3, 4]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn imap<A: Message, R: Message>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> impl Iterator<Item = Result<R, TaskError>> {
        let mut feed = Feed::new(&self.inner, f, items.into_iter(), self.imap_window());
        let mut pending = VecDeque::new();
        feed.top_up(&mut pending);
        std::iter::from_fn(move || {
            let next = pending.pop_front()?;
            feed.top_up(&mut pending);
            Some(next.and_then(|r: AsyncResult<R>| r.get()))
        })
    }

    /// Like [`imap`](Pool::imap), but in completion order (items taken as
    /// `imap` takes them).
    ///
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// let pool = shmproc::Pool::new(2)?;
    /// let mut got: Vec<u64> = pool.imap_unordered(square, 0..5u64).collect::<Result<_, _>>()?;
    /// got.sort();
    /// assert_eq!(got, [0, 1, 4, 9, 16]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn imap_unordered<A: Message, R: Message>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> impl Iterator<Item = Result<R, TaskError>> {
        let mut feed = Feed::new(&self.inner, f, items.into_iter(), self.imap_window());
        let mut pending = VecDeque::new();
        feed.top_up(&mut pending);
        let inner = self.inner.clone();
        std::iter::from_fn(move || {
            if pending.is_empty() {
                return None;
            }
            // A failed submission first, else the first result that is in.
            let i = match pending.iter().position(Result::is_err) {
                Some(i) => i,
                None => loop {
                    let done = pending.iter().position(|r| r.as_ref().is_ok_and(|r| r.inner.peek(r.id).is_some()));
                    if let Some(i) = done {
                        break i;
                    }
                    // Until any result comes in.
                    inner.collect(CHECK);
                },
            };
            let taken = pending.swap_remove_back(i)?.and_then(|r: AsyncResult<R>| r.get());
            feed.top_up(&mut pending);
            Some(taken)
        })
    }

    /// How many tasks an `imap` of unknown length keeps in flight.
    fn imap_window(&self) -> usize {
        IMAP_WINDOW.max(4 * self.inner.lock().workers.len())
    }

    /// [`imap`](Pool::imap) with Python's `chunksize`: items travel
    /// `chunksize` at a time (0 is taken as 1), results come back in item
    /// order as their chunks finish. A failed chunk yields its failure once,
    /// in place of its items.
    ///
    /// ```
    /// fn inc(x: u32) -> u32 {
    ///     x + 1
    /// }
    /// let pool = shmproc::Pool::new(2)?;
    /// let out: Vec<u32> = pool.imap_chunked(inc, 0..10, 4).collect::<Result<_, _>>()?;
    /// assert_eq!(out, (1..11).collect::<Vec<_>>());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn imap_chunked<A: Message, R: Message>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> impl Iterator<Item = Result<R, TaskError>> {
        let parts = self.submit_map(f, items, Some(chunksize), None);
        let pending: Vec<Result<AsyncResult<Vec<R>>, TaskError>> = match parts {
            Ok(m) => m.parts.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        };
        pending.into_iter().flat_map(|r| match r.and_then(|r| r.get()) {
            Ok(v) => v.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        })
    }

    /// [`imap_unordered`](Pool::imap_unordered) with Python's `chunksize`:
    /// chunks in completion order, the items of a chunk in order.
    ///
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// let pool = shmproc::Pool::new(2)?;
    /// let mut got: Vec<u64> = pool.imap_unordered_chunked(square, 0..10u64, 3).collect::<Result<_, _>>()?;
    /// got.sort();
    /// assert_eq!(got, (0..10u64).map(|x| x * x).collect::<Vec<_>>());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn imap_unordered_chunked<A: Message, R: Message>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> impl Iterator<Item = Result<R, TaskError>> {
        let parts = self.submit_map(f, items, Some(chunksize), None);
        let (mut pending, mut failed) = match parts {
            Ok(m) => (m.parts, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let mut ready: std::vec::IntoIter<R> = Vec::new().into_iter();
        std::iter::from_fn(move || loop {
            if let Some(v) = ready.next() {
                return Some(Ok(v));
            }
            if let Some(e) = failed.take() {
                return Some(Err(e));
            }
            if pending.is_empty() {
                return None;
            }
            match pending.iter().position(|r| r.inner.peek(r.id).is_some()) {
                Some(i) => match pending.swap_remove(i).get() {
                    Ok(v) => ready = v.into_iter(),
                    Err(e) => return Some(Err(e)),
                },
                None => pending[0].inner.collect(CHECK),
            }
        })
    }

    /// No more tasks may be submitted; workers exit once the queue is empty.
    ///
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// let pool = shmproc::Pool::new(1)?;
    /// pool.close();
    /// assert!(pool.apply(square, 1).is_err()); // no new tasks
    /// pool.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&self) {
        self.inner.lock().closed = true;
    }

    /// Waits for every submitted task (running callbacks), then for the
    /// workers to exit. Call [`close`](Pool::close) or
    /// [`terminate`](Pool::terminate) first.
    ///
    /// ```
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// let pool = shmproc::Pool::new(2)?;
    /// let r = pool.apply_async(square, 5)?;
    /// pool.close();
    /// pool.join()?; // waits for the workers to finish and exit
    /// assert_eq!(r.get()?, 25);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join(&self) -> Result<(), PoolError> {
        let mut st = self.inner.lock();
        if !st.closed && !st.terminated {
            return Err(PoolError::StillRunning);
        }
        while !st.outstanding.is_empty() && !st.terminated {
            self.inner.pump(&mut st, CHECK);
            self.inner.run_due(st);
            st = self.inner.lock();
        }
        self.inner.tasks.close();
        for w in &mut st.workers {
            let _ = w.join();
        }
        st.workers.clear();
        Ok(())
    }

    /// Kills the workers at once; unfinished tasks fail with `Closed`.
    ///
    /// ```
    /// fn forever(_: u8) {
    ///     loop {
    ///         std::thread::sleep(std::time::Duration::from_secs(1));
    ///     }
    /// }
    /// let pool = shmproc::Pool::new(1)?;
    /// let r = pool.apply_async(forever, 0)?;
    /// pool.terminate(); // stops the workers now
    /// assert!(r.get().is_err());
    /// pool.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn terminate(&self) {
        let mut st = self.inner.lock();
        st.terminated = true;
        st.closed = true;
        st.backlog.clear();
        self.inner.tasks.close();
        for w in &st.workers {
            let _ = w.kill();
        }
        for w in &mut st.workers {
            let _ = w.join();
        }
        st.workers.clear();
        let ids: Vec<u64> = st.outstanding.iter().copied().collect();
        for id in ids {
            self.inner.complete(&mut st, id, Err(TaskError::Closed));
        }
        self.inner.run_due(st);
    }
}

impl Pool {
    /// Test hook (not part of the API): the segment that holds the task
    /// queue, for tests that play a peer rewriting queued tasks.
    #[doc(hidden)]
    pub fn __task_queue_segment(&self) -> crate::Segment {
        self.inner.tasks.archived_object().segment().clone()
    }
}

/// Test hook (not part of the API): the offset by which a task names the
/// function at `addr` (see the module docs).
#[doc(hidden)]
pub fn __fn_offset(addr: usize) -> i64 {
    fn_offset(addr)
}

/// Fuzzing hook (not part of the API): queues a few tasks with valid tags in
/// a task queue like a pool's (a slot ring of `TaskMsg`, under a fresh random
/// key), writes `data` over the queue's shared bytes as (offset, byte) triples,
/// then receives in place as a worker does. Whatever the bytes, receiving
/// gives a task or an error, and a task whose tag checks out is one that was
/// queued, with the code offsets it was queued with (a forged or garbled task
/// never passes the check). Runs nothing.
#[doc(hidden)]
pub fn __fuzz_task_queue(data: &[u8]) {
    let Ok(key) = random_key() else { return };
    let Ok(q) = Queue::<TaskMsg>::builder().capacity(8).message_size(256).slot_ring().build() else {
        return;
    };
    let queued: Vec<(u64, i64, i64)> = (0..4).map(|i| (i, 16 * i as i64 + 1, -32 * i as i64 - 7)).collect();
    for &(id, tramp, func) in &queued {
        let task =
            TaskMsg { id, tramp, func, tag: task_tag(key, id, tramp, func), arg: vec![id as u8; 40 * id as usize] };
        let _ = q.try_send(&task);
    }
    let obj = q.archived_object();
    let (base, len) = (obj.at(0).as_ptr(), obj.size());
    for t in data.chunks_exact(3) {
        let off = usize::from(u16::from_le_bytes([t[0], t[1]])) % len;
        // SAFETY: inside the queue object's mapping, which `q` keeps alive;
        // a volatile store, as a peer's would be.
        unsafe { std::ptr::write_volatile(base.add(off), t[2]) };
    }
    for _ in 0..8 {
        let Ok(task) = q.recv_ref_timeout(std::time::Duration::ZERO) else { continue };
        let (id, tramp, func) = (task.id.to_native(), task.tramp.to_native(), task.func.to_native());
        if task.tag.to_native() == task_tag(key, id, tramp, func) {
            assert!(queued.contains(&(id, tramp, func)), "a task nobody queued passed the tag check");
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.terminate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siphash24_matches_the_reference() {
        // The reference implementation (std's SipHasher is SipHash-2-4).
        let key = [0x0706_0504_0302_0100u64, 0x0f0e_0d0c_0b0a_0908];
        let words = [0x0706_0504_0302_0100u64, 0x0f0e_0d0c_0b0a_0908, 0x1716_1514_1312_1110];
        for n in 0..=words.len() {
            #[allow(deprecated)]
            let mut h = std::hash::SipHasher::new_with_keys(key[0], key[1]);
            let bytes: Vec<u8> = words[..n].iter().flat_map(|w| w.to_le_bytes()).collect();
            std::hash::Hasher::write(&mut h, &bytes);
            assert_eq!(siphash24(key, &words[..n]), std::hash::Hasher::finish(&h), "{n} words");
        }
        // The published test vector for the 8-byte message 00..07.
        assert_eq!(siphash24(key, &words[..1]), 0x93f5_f579_9a93_2462);
    }

    fn add_ctx(c: &u64, x: u64) -> u64 {
        c + x
    }

    #[test]
    fn context_arguments_are_checked() {
        let f = add_ctx as fn(&u64, u64) -> u64 as usize;
        let ctx = encode(&5u64).expect("ctx").to_vec();
        let items = encode(&vec![1u64, 2]).expect("items").to_vec();
        let mut good = (ctx.len() as u64).to_le_bytes().to_vec();
        good.extend_from_slice(&ctx);
        good.extend_from_slice(&items);
        let out = tramp_ctx::<u64, u64, u64>(f, &good).expect("a good argument");
        assert_eq!(decode_copy::<Vec<u64>>(&out).expect("result"), [6, 7]);
        // Lengths a peer could write: past the end, huge, or no length at all.
        for len in [good.len() as u64, u64::MAX, (ctx.len() + 1) as u64] {
            let mut bad = good.clone();
            bad[..8].copy_from_slice(&len.to_le_bytes());
            assert!(tramp_ctx::<u64, u64, u64>(f, &bad).is_err(), "length {len}");
        }
        assert!(tramp_ctx::<u64, u64, u64>(f, &good[..5]).is_err());
    }

    #[test]
    fn task_tags_depend_on_every_field_and_the_key() {
        let key = random_key().expect("randomness");
        let t = task_tag(key, 1, 2, 3);
        assert_ne!(t, task_tag(key, 1, 2, 4));
        assert_ne!(t, task_tag(key, 1, 5, 3));
        assert_ne!(t, task_tag(key, 9, 2, 3));
        assert_ne!(t, task_tag([key[0] ^ 1, key[1]], 1, 2, 3));
        assert_ne!(key, random_key().expect("randomness"));
    }
}
