//! [`Pool`] across hosts: the host holds the tasks; [`Worker`]s on other
//! hosts (or the same one) take them, run a function both sides registered
//! by name, and send the result back.
//!
//! * **Functions travel by name**, never by code address: the host sends
//!   `("square", argument archive)`, and the worker looks `"square"` up in
//!   its own [`Registry`]. A name the worker does not know fails the task
//!   with [`RemoteTaskError::UnknownFunction`].
//! * **Workers register with liveliness tokens**; a worker's token going
//!   away (process killed, machine gone: at once on a closed connection,
//!   within the zenoh lease otherwise) is how the host notices a death.
//! * **A worker that dies mid-task**: what happens is the pool's
//!   [`Delivery`], chosen when it is served and visible in the API:
//!   [`Delivery::AtLeastOnce`] puts the task back at the front of the queue
//!   (another worker runs it again; a task that had side effects may have
//!   had them twice), [`Delivery::AtMostOnce`] fails it with
//!   [`RemoteTaskError::WorkerDied`].
//! * **A worker asks before taking** (a task is handed out only to a
//!   worker whose token the host has seen, so its death will be noticed),
//!   and a repeated request (same sequence number) gets the same task
//!   again instead of a second one.
//! * **The host goes away**: workers' [`Worker::run`] returns
//!   [`NetError::HostGone`]; the tasks and their results were only in the
//!   host's memory.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rkyv::util::AlignedVec;
use zenoh::liveliness::LivelinessToken;
use zenoh::pubsub::Subscriber;
use zenoh::sample::SampleKind;
use zenoh::Wait;

use super::link::{HostLink, SLICE};
use super::serve::Server;
use super::wire::{Outcome, Request, Response};
use super::{NetError, Node};
use crate::message::{decode, encode, Message};

/// What happens to a task whose worker dies while running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The task is put back and run again by another worker: every task
    /// runs to completion at least once; one whose worker died ran (part
    /// of the way) more than once.
    AtLeastOnce,
    /// The task fails with [`RemoteTaskError::WorkerDied`]: no task runs
    /// twice.
    AtMostOnce,
}

/// Why a remote task gave no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteTaskError {
    /// Its worker died while running it (pools with
    /// [`Delivery::AtMostOnce`]).
    WorkerDied,
    /// The worker has no function of that name.
    UnknownFunction {
        /// The name.
        name: String,
    },
    /// The function failed: its error text, or a panic's message.
    Failed {
        /// What went wrong.
        reason: String,
    },
    /// The argument could not be serialised.
    Serialize {
        /// rkyv's message.
        reason: String,
    },
    /// The result's bytes failed validation as the expected type.
    Corrupt {
        /// What is wrong.
        reason: String,
    },
    /// No result within the timeout (the task goes on).
    Timeout,
}

impl fmt::Display for RemoteTaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteTaskError::WorkerDied => write!(f, "the worker died while running the task"),
            RemoteTaskError::UnknownFunction { name } => write!(f, "the worker has no function named {name:?}"),
            RemoteTaskError::Failed { reason } => write!(f, "the task failed: {reason}"),
            RemoteTaskError::Serialize { reason } => write!(f, "serialising the argument failed: {reason}"),
            RemoteTaskError::Corrupt { reason } => write!(f, "corrupt result: {reason}"),
            RemoteTaskError::Timeout => write!(f, "timed out waiting for the result"),
        }
    }
}

impl std::error::Error for RemoteTaskError {}

type TaskFn = Arc<dyn Fn(&[u8]) -> Outcome + Send + Sync>;

/// The functions a worker can run, by name. Host and workers agree on the
/// names (and on the argument and result types under each name); no code
/// address ever crosses the network.
///
/// ```
/// let mut reg = shmproc::net::Registry::new();
/// fn square(x: u64) -> u64 { x * x }
/// reg.register("square", square);
/// assert!(reg.contains("square"));
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    fns: HashMap<String, TaskFn>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.fns.keys()).finish()
    }
}

fn decode_aligned<T: Message>(bytes: &[u8]) -> Result<T, String> {
    let mut a = AlignedVec::<16>::with_capacity(bytes.len());
    a.extend_from_slice(bytes);
    decode::<T>(&a).map_err(|e| e.to_string())
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic".to_owned()
    }
}

impl Registry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers `f` under `name`: its argument arrives as an archive of
    /// `A` (validated; a bad one fails the task), its result leaves as an
    /// archive of `R`, a panic fails the task with its message. A second
    /// registration under a name replaces the first.
    pub fn register<A: Message + 'static, R: Message + 'static>(&mut self, name: &str, f: fn(A) -> R) -> &mut Registry {
        let run = move |bytes: &[u8]| -> Outcome {
            let arg = match decode_aligned::<A>(bytes) {
                Ok(a) => a,
                Err(e) => return Outcome::Failed(format!("argument failed validation: {e}")),
            };
            match catch_unwind(AssertUnwindSafe(|| f(arg))) {
                Ok(r) => match encode(&r) {
                    Ok(b) => Outcome::Ok(b.to_vec()),
                    Err(e) => Outcome::Failed(format!("serialising the result: {e}")),
                },
                Err(p) => Outcome::Failed(format!("panicked: {}", panic_text(p.as_ref()))),
            }
        };
        self.fns.insert(name.to_owned(), Arc::new(run));
        self
    }

    /// Registers a function on raw bytes (the argument as sent, the result
    /// as returned; `Err` fails the task with its text).
    pub fn register_bytes(&mut self, name: &str, f: fn(&[u8]) -> Result<Vec<u8>, String>) -> &mut Registry {
        let run = move |bytes: &[u8]| -> Outcome {
            match catch_unwind(AssertUnwindSafe(|| f(bytes))) {
                Ok(Ok(b)) => Outcome::Ok(b),
                Ok(Err(e)) => Outcome::Failed(e),
                Err(p) => Outcome::Failed(format!("panicked: {}", panic_text(p.as_ref()))),
            }
        };
        self.fns.insert(name.to_owned(), Arc::new(run));
        self
    }

    /// Whether a function is registered under `name`.
    #[must_use]
    pub fn contains(&self, name: &str) -> bool {
        self.fns.contains_key(name)
    }

    fn run(&self, name: &str, arg: &[u8]) -> Outcome {
        match self.fns.get(name) {
            Some(f) => f(arg),
            None => Outcome::Unknown(name.to_owned()),
        }
    }
}

enum TaskState {
    Pending,
    Running { worker: u64 },
    Finished(Result<Vec<u8>, RemoteTaskError>),
}

struct Task {
    name: String,
    arg: Vec<u8>,
    state: TaskState,
    runs: u32,
    /// The handle was dropped: forget the task once finished.
    orphan: bool,
}

#[derive(Default)]
struct PoolState {
    next_id: u64,
    pending: VecDeque<u64>,
    tasks: HashMap<u64, Task>,
    alive: HashSet<u64>,
    /// Each worker's last take: its sequence number and answer.
    last_take: HashMap<u64, (u64, Response)>,
    closed: bool,
}

struct Shared {
    state: Mutex<PoolState>,
    changed: Condvar,
    delivery: Delivery,
}

fn lock(s: &Shared) -> MutexGuard<'_, PoolState> {
    s.state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn handle(&self, req: Request) -> Response {
        match req {
            Request::Take { worker, seq, wait_ms } => self.take(worker, seq, Duration::from_millis(wait_ms.into())),
            Request::Finish { worker: _, task, outcome } => {
                let mut st = lock(self);
                let finished = match outcome {
                    Outcome::Ok(b) => Ok(b),
                    Outcome::Failed(reason) => Err(RemoteTaskError::Failed { reason }),
                    Outcome::Unknown(name) => Err(RemoteTaskError::UnknownFunction { name }),
                };
                // The first outcome counts (a task re-run after a presumed
                // death may finish twice); one for an unknown task is
                // ignored.
                let mut forget = false;
                if let Some(t) = st.tasks.get_mut(&task) {
                    if !matches!(t.state, TaskState::Finished(_)) {
                        t.state = TaskState::Finished(finished);
                        forget = t.orphan;
                    }
                }
                if forget {
                    st.tasks.remove(&task);
                }
                st.pending.retain(|&id| id != task);
                drop(st);
                self.changed.notify_all();
                Response::Done
            }
            _ => Response::Rejected { reason: "not a pool request".into() },
        }
    }

    fn take(&self, worker: u64, seq: u64, wait: Duration) -> Response {
        let deadline = Instant::now() + wait;
        let mut st = lock(self);
        if let Some((s, r)) = st.last_take.get(&worker) {
            if *s == seq {
                return r.clone();
            }
        }
        if !st.alive.contains(&worker) {
            return Response::UnknownWorker;
        }
        loop {
            if st.closed {
                return Response::Closed;
            }
            if let Some(id) = st.pending.pop_front() {
                if let Some(t) = st.tasks.get_mut(&id) {
                    t.state = TaskState::Running { worker };
                    t.runs += 1;
                    let r = Response::Task { task: id, name: t.name.clone(), arg: t.arg.clone() };
                    st.last_take.insert(worker, (seq, r.clone()));
                    return r;
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Response::NotYet;
            }
            st = self.changed.wait_timeout(st, left).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
            // A worker that died while this waited is not handed a task.
            if !st.alive.contains(&worker) {
                return Response::UnknownWorker;
            }
        }
    }

    fn worker_seen(&self, worker: u64, alive: bool) {
        let mut st = lock(self);
        if alive {
            st.alive.insert(worker);
            return;
        }
        st.alive.remove(&worker);
        st.last_take.remove(&worker);
        let mut back = Vec::new();
        let mut dead = Vec::new();
        for (&id, t) in st.tasks.iter_mut() {
            if matches!(t.state, TaskState::Running { worker: w } if w == worker) {
                match self.delivery {
                    Delivery::AtLeastOnce => {
                        t.state = TaskState::Pending;
                        back.push(id);
                    }
                    Delivery::AtMostOnce => {
                        t.state = TaskState::Finished(Err(RemoteTaskError::WorkerDied));
                        if t.orphan {
                            dead.push(id);
                        }
                    }
                }
            }
        }
        for id in dead {
            st.tasks.remove(&id);
        }
        // Oldest first, ahead of the tasks not yet started.
        back.sort_unstable();
        for id in back.into_iter().rev() {
            st.pending.push_front(id);
        }
        drop(st);
        self.changed.notify_all();
    }
}

/// The keys of one pool.
struct Keys {
    query: String,
    host_token: String,
    workers: String,
}

impl Keys {
    fn new(node: &Node, name: &str) -> Result<Keys, NetError> {
        super::node::check_key_path(name)?;
        Ok(Keys {
            query: node.key("p", name, "rq"),
            host_token: node.key("p", name, "host"),
            workers: node.key("p", name, "w"),
        })
    }
}

/// A pool whose workers are on other hosts (see the [module docs](self)).
///
/// ```no_run
/// use shmproc::net::{Delivery, Node, Pool};
///
/// let node = Node::builder().listen("tcp/0.0.0.0:7447").open()?;
/// let pool = Pool::serve(&node, "math", Delivery::AtLeastOnce)?;
/// // Workers elsewhere run `Worker::connect(&node, "math", registry, ..)?.run()`.
/// let squares: Vec<u64> = pool.map("square", 1..=10u64)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Pool {
    shared: Arc<Shared>,
    _server: Server,
    _workers: Subscriber<()>,
    _token: LivelinessToken,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("net::Pool").field("delivery", &self.shared.delivery).finish()
    }
}

impl Pool {
    /// Serves a pool under `name` from this node, with the given
    /// [`Delivery`] for tasks whose worker dies.
    ///
    /// # Errors
    ///
    /// [`NetError::BadName`], [`NetError::Zenoh`].
    pub fn serve(node: &Node, name: &str, delivery: Delivery) -> Result<Pool, NetError> {
        let keys = Keys::new(node, name)?;
        let shared = Arc::new(Shared { state: Mutex::new(PoolState::default()), changed: Condvar::new(), delivery });
        let s = shared.clone();
        let workers = node
            .session
            .liveliness()
            .declare_subscriber(format!("{}/*", keys.workers))
            .history(true)
            .callback(move |sample| {
                let Some(id) =
                    sample.key_expr().as_str().rsplit('/').next().and_then(|s| u64::from_str_radix(s, 16).ok())
                else {
                    return;
                };
                s.worker_seen(id, sample.kind() == SampleKind::Put);
            })
            .wait()
            .map_err(NetError::zenoh)?;
        let s = shared.clone();
        let server = Server::start(&node.session, keys.query, Arc::new(move |req| s.handle(req)))?;
        let token = node.session.liveliness().declare_token(keys.host_token).wait().map_err(NetError::zenoh)?;
        Ok(Pool { shared, _server: server, _workers: workers, _token: token })
    }

    /// The pool's [`Delivery`].
    #[must_use]
    pub fn delivery(&self) -> Delivery {
        self.shared.delivery
    }

    /// Workers whose liveliness token the host sees now.
    #[must_use]
    pub fn workers(&self) -> usize {
        lock(&self.shared).alive.len()
    }

    /// Queues a task: the function registered as `name` on the workers,
    /// with `arg`. The handle gives the result.
    ///
    /// # Errors
    ///
    /// [`RemoteTaskError::Serialize`] when `arg` cannot be serialised.
    pub fn submit<A: Message, R: Message>(&self, name: &str, arg: &A) -> Result<TaskHandle<R>, RemoteTaskError> {
        let arg = encode(arg).map_err(|e| RemoteTaskError::Serialize { reason: e.to_string() })?.to_vec();
        let mut st = lock(&self.shared);
        st.next_id += 1;
        let id = st.next_id;
        st.tasks.insert(id, Task { name: name.to_owned(), arg, state: TaskState::Pending, runs: 0, orphan: false });
        st.pending.push_back(id);
        drop(st);
        self.shared.changed.notify_all();
        Ok(TaskHandle { shared: self.shared.clone(), id, _r: PhantomData })
    }

    /// Runs one task and waits for its result.
    ///
    /// # Errors
    ///
    /// As [`TaskHandle::get`].
    pub fn apply<A: Message, R: Message>(&self, name: &str, arg: &A) -> Result<R, RemoteTaskError> {
        self.submit::<A, R>(name, arg)?.get()
    }

    /// Runs `name` on every argument (spread over the workers) and returns
    /// the results in order.
    ///
    /// # Errors
    ///
    /// The first task's error, in argument order.
    pub fn map<A: Message, R: Message>(
        &self,
        name: &str,
        args: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>, RemoteTaskError> {
        let handles: Vec<TaskHandle<R>> =
            args.into_iter().map(|a| self.submit::<A, R>(name, &a)).collect::<Result<_, _>>()?;
        handles.into_iter().map(TaskHandle::get).collect()
    }

    /// Stops handing out tasks: workers' [`Worker::run`] returns `Ok` at
    /// their next request. Tasks already handed out still report.
    pub fn close(&self) {
        lock(&self.shared).closed = true;
        self.shared.changed.notify_all();
    }
}

/// A submitted task's result, to come.
#[must_use = "the result is only seen through the handle"]
pub struct TaskHandle<R> {
    shared: Arc<Shared>,
    id: u64,
    _r: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for TaskHandle<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle").field("id", &self.id).finish()
    }
}

impl<R: Message> TaskHandle<R> {
    /// The task's id (unique in its pool).
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// How many times a worker started the task so far (more than 1 only
    /// with [`Delivery::AtLeastOnce`] after a worker died).
    #[must_use]
    pub fn runs(&self) -> u32 {
        lock(&self.shared).tasks.get(&self.id).map_or(0, |t| t.runs)
    }

    /// Waits for the result.
    ///
    /// # Errors
    ///
    /// The task's [`RemoteTaskError`] (never `Timeout`).
    pub fn get(self) -> Result<R, RemoteTaskError> {
        loop {
            match self.get_timeout(Duration::from_secs(3600)) {
                Err(RemoteTaskError::Timeout) => continue,
                other => return other,
            }
        }
    }

    /// Waits at most `timeout` for the result.
    ///
    /// # Errors
    ///
    /// [`RemoteTaskError::Timeout`] when it did not come in time (the task
    /// goes on; ask again), else the task's error.
    pub fn get_timeout(&self, timeout: Duration) -> Result<R, RemoteTaskError> {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.shared);
        loop {
            match st.tasks.get(&self.id).map(|t| &t.state) {
                Some(TaskState::Finished(Ok(bytes))) => {
                    return decode_aligned::<R>(bytes).map_err(|reason| RemoteTaskError::Corrupt { reason })
                }
                Some(TaskState::Finished(Err(e))) => return Err(e.clone()),
                Some(_) => {}
                None => return Err(RemoteTaskError::Corrupt { reason: "the task was forgotten".into() }),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RemoteTaskError::Timeout);
            }
            st = self.shared.changed.wait_timeout(st, left).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

impl<R> Drop for TaskHandle<R> {
    fn drop(&mut self) {
        let mut st = lock(&self.shared);
        let finished = match st.tasks.get_mut(&self.id) {
            Some(t) if matches!(t.state, TaskState::Finished(_)) => true,
            Some(t) => {
                t.orphan = true;
                false
            }
            None => false,
        };
        if finished {
            st.tasks.remove(&self.id);
        }
    }
}

/// A worker of a remote [`Pool`]: takes tasks from the pool's host, runs
/// them from its [`Registry`], sends the results back.
///
/// ```no_run
/// use std::time::Duration;
/// use shmproc::net::{Node, Registry, Worker};
///
/// fn square(x: u64) -> u64 { x * x }
/// let node = Node::builder().connect("tcp/10.0.0.5:7447").open()?;
/// let mut reg = Registry::new();
/// reg.register("square", square);
/// Worker::connect(&node, "math", reg, Duration::from_secs(10))?.run()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Worker {
    link: HostLink,
    id: u64,
    registry: Registry,
    seq: u64,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("net::Worker").field("id", &self.id).field("registry", &self.registry).finish()
    }
}

impl Worker {
    /// Registers a worker with the pool served under `name` (its
    /// liveliness token), waiting up to `timeout` for the pool's host.
    ///
    /// # Errors
    ///
    /// [`NetError::HostNotFound`] when no host was seen in time.
    pub fn connect(node: &Node, name: &str, registry: Registry, timeout: Duration) -> Result<Worker, NetError> {
        let keys = Keys::new(node, name)?;
        let id = super::node::fresh_id();
        let token = format!("{}/{id:x}", keys.workers);
        let link = HostLink::open(node, keys.host_token, keys.query, Some(token), timeout)?;
        Ok(Worker { link, id, registry, seq: 0 })
    }

    /// Runs tasks until the pool is closed (`Ok`) or its host goes away
    /// ([`NetError::HostGone`]).
    ///
    /// # Errors
    ///
    /// [`NetError::HostGone`], or [`NetError::Protocol`] when the host
    /// answers with bad bytes.
    pub fn run(&mut self) -> Result<(), NetError> {
        while self.run_one()? {}
        Ok(())
    }

    /// Takes and runs one task, waiting as long as it takes for one:
    /// `false` when the pool was closed.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    pub fn run_one(&mut self) -> Result<bool, NetError> {
        let seq = self.seq + 1;
        let (task, name, arg) = loop {
            let req = Request::Take { worker: self.id, seq, wait_ms: super::millis(SLICE) };
            match self.link.call(&req, SLICE).map_err(NetError::from_call)? {
                Response::Task { task, name, arg } => break (task, name, arg),
                Response::Closed => return Ok(false),
                // Not seen yet by the host (its token is on the way), or
                // no task within the slice: ask again.
                Response::UnknownWorker => std::thread::sleep(Duration::from_millis(5)),
                Response::NotYet => {}
                other => return Err(NetError::Protocol { reason: format!("unexpected reply {other:?}") }),
            }
        };
        self.seq = seq;
        let outcome = self.registry.run(&name, &arg);
        match self
            .link
            .call(&Request::Finish { worker: self.id, task, outcome }, Duration::ZERO)
            .map_err(NetError::from_call)?
        {
            Response::Done => Ok(true),
            other => Err(NetError::Protocol { reason: format!("unexpected reply {other:?}") }),
        }
    }
}
