//! # shmproc
//!
//! Process-parallel programming on shared memory: Python's `multiprocessing`,
//! rebuilt for Rust. Processes, locks, queues, pipes, pools and shared
//! containers share state through `MAP_SHARED` memory and the shared futex
//! instead of pipes and pickling; messages are rkyv archives written in place
//! and validated before use.
//!
//! ## Getting started
//!
//! No set-up is needed: on Linux, children re-executed by spawn mode or the
//! fork server are routed before `main` by a constructor, so
//! [`Process::spawn_fn`] and [`Pool`] work in test binaries and under
//! frameworks that own `main`. ([`init`] is optional and harmless.) A `fn`
//! runs with the default [`StartMethod`]: fork in a single-threaded process,
//! the fork server in a multi-threaded one.
//!
//! ```
//! fn square(x: u64) -> i32 {
//!     println!("{x}^2 = {}", x * x);
//!     0
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let mut a = shmproc::Process::spawn(|| println!("forked child"))?;
//!     let mut b = shmproc::Process::spawn_fn(square, 7u64)?;
//!     assert_eq!(a.join()?, 0);
//!     assert_eq!(b.join()?, 0);
//!     Ok(())
//! }
//! ```
//!
//! ## Making objects
//!
//! Every shared object is made the same three ways:
//!
//! | | synchronisation objects, values | queues |
//! |---|---|---|
//! | fresh, in a segment of its own | `X::new(..)` ([`Lock::new`], [`Event::new`], [`Semaphore::new`]`(n)`, [`Value::new`]`(v)`, ..) | [`Queue::bounded`]`(n)`, [`Queue::unbounded`]`()` |
//! | named, in a segment you share | `X::new_in(&seg, name, ..)` | [`Queue::bounded_in`]`(&seg, name, n)`, [`Queue::unbounded_in`]`(&seg, name)` |
//! | opened by another process | `X::open_in(&seg, name)` | [`Queue::open_in`]`(&seg, name)` |
//!
//! [`JoinableQueue`] has the same constructors as [`Queue`]; arrays are
//! [`Array::zeroed`] / [`Array::zeroed_in`]. For queue options beyond the
//! capacity (message size, the slot ring), [`Queue::builder`] gives a
//! [`QueueBuilder`] that already knows the message type:
//! `Queue::<T>::builder().message_size(256).build()` or `.build_in(&seg, name)`.
//!
//! ```
//! let seg = shmproc::Segment::anonymous(1 << 20)?;
//! let lock = shmproc::Lock::new_in(&seg, "lock")?;
//! let results = shmproc::Queue::<u64>::bounded_in(&seg, "results", 16)?;
//! // Elsewhere (another process that maps `seg`, or a spawn-mode child):
//! let opened = shmproc::Lock::open_in(&seg, "lock")?;
//! let again = shmproc::Queue::<u64>::open_in(&seg, "results")?;
//! drop(opened.acquire());
//! results.send(&1)?;
//! assert_eq!(again.recv()?, 1);
//! # drop(lock);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Across hosts
//!
//! With the feature `net`, `shmproc::net` serves the same `Queue`,
//! `JoinableQueue` and `Pool` to other machines over zenoh (a host keeps
//! the real queue; remote handles and workers reach it by request/reply);
//! see that module's docs for the delivery guarantees and the risks.
//!
//! ## Python → Rust
//!
//! | Python `multiprocessing` | shmproc |
//! |---|---|
//! | `Process(target=f, args=(a,)).start()` | [`Process::spawn`]`(move \|\| f(a))` (fork) / [`Process::spawn_fn`]`(f, a)` (default start method) |
//! | `set_start_method(m)` / `get_start_method()` / `get_all_start_methods()` / `get_context(m).Process` | [`set_start_method`] / [`get_start_method`] / [`get_all_start_methods`] / [`Builder::start_method`], [`PoolBuilder::start_method`] |
//! | `Process(name=.., daemon=True)` | [`Process::builder`]`().name(..).daemon(true).spawn(..)` |
//! | `p.pid`, `p.name`, `p.daemon` | [`Process::pid`], [`Process::name`], [`Process::daemon`] |
//! | `p.is_alive()` | [`Process::is_alive`] |
//! | `p.join()` / `p.join(timeout)` | [`Process::join`] / [`Process::join_timeout`] |
//! | `p.terminate()` / `p.kill()` | [`Process::terminate`] / [`Process::kill`] |
//! | `p.exitcode` | [`Process::exitcode`] |
//! | `current_process()` | [`current_process`] |
//! | `parent_process()` | [`parent_process`] |
//! | `active_children()` | [`active_children`] |
//! | `cpu_count()` | [`cpu_count`] |
//! | `Lock()` | [`Lock::new`] (`acquire`, or `lock`/`try_lock`/`lock_timeout` via `Mutex<()>`) |
//! | `RLock()` | [`RLock::new`] |
//! | `Semaphore(n)` / `BoundedSemaphore(n)` | [`Semaphore::new`] / [`BoundedSemaphore::new`] (permits lost with a dead holder, as in Python); robust: [`Semaphore::robust`] / [`RobustSemaphore::bounded`] |
//! | `sem.acquire()` / `acquire(timeout=t)` / `release()` / `with sem:` | [`Semaphore::acquire`] / [`Semaphore::acquire_timeout`] / [`Semaphore::release`] / [`Semaphore::access`] |
//! | `Event()`: `set`, `clear`, `is_set`, `wait(timeout)` | [`Event::new`]: [`Event::set`], [`Event::clear`], [`Event::is_set`], [`Event::wait`] / [`Event::wait_timeout`] |
//! | `Condition(lock)`: `wait`, `wait_for`, `notify(n)`, `notify_all` | [`Condition::new`] with a [`Mutex`]: [`Condition::wait`], [`Condition::wait_while`], [`Condition::notify`] (`notify_one` for 1), [`Condition::notify_all`] |
//! | `Barrier(n, action, timeout)`: `wait`, `abort`, `reset`, `broken`, `n_waiting` | [`Barrier::new`] (then [`Barrier::with_action`], [`Barrier::with_timeout`]): [`Barrier::wait`], [`Barrier::abort`], [`Barrier::reset`], [`Barrier::is_broken`], [`Barrier::n_waiting`] |
//! | `Value('i', 0)`: `.value`, `get_lock()` | [`Value::new`]: [`Value::get`] / [`Value::set`], [`Value::lock`] |
//! | `Array('d', n)` | [`Array::zeroed`] / [`Array::from_slice`], [`Array::lock`] |
//! | `Queue(maxsize)` / `Queue()` | [`Queue::bounded`] / [`Queue::unbounded`] (+ [`Queue::builder`]); messages of any size |
//! | `q.put(x)` / `put(x, block=False)` / `put(x, timeout=t)` / `put_nowait` | [`Queue::send`] / [`Queue::try_send`] / [`Queue::send_timeout`] |
//! | `q.get()` / `get(block=False)` / `get(timeout=t)` / `get_nowait` | [`Queue::recv`] / [`Queue::try_recv`] / [`Queue::recv_timeout`]; in place: [`Queue::recv_ref`] |
//! | a loop of `put`s / `get`s (no Python counterpart) | batches: [`Queue::send_batch`] / [`Queue::send_iter`], [`Queue::recv_batch`] / [`Queue::drain`] / [`Queue::try_iter`] (also on pipes); how a blocked call waits: [`WaitPolicy`] |
//! | `q.qsize()`, `q.empty()`, `q.full()`, `q.close()` | [`Queue::len`], [`Queue::is_empty`], [`Queue::is_full`], [`Queue::close`] |
//! | many processes `put` and `get` on one `Queue` (FIFO per producer) | the same calls on a queue with lanes, one ring per producer: [`QueueBuilder::lanes`]`(n)` |
//! | `queue.Full` / `queue.Empty` | [`TrySendError::Full`] / [`TryRecvError::Empty`] |
//! | `JoinableQueue(maxsize)`: `task_done`, `join` | [`JoinableQueue::bounded`]: [`JoinableQueue::task_done`], [`JoinableQueue::join`] |
//! | pickling | rkyv, re-exported as [`rkyv`]: derive `Archive, Serialize, Deserialize` (see [`Message`]) |
//! | `Pipe()` / `Pipe(duplex=False)` | [`Pipe::duplex`] / [`Pipe::oneway`] |
//! | `conn.send`, `recv`, `poll(t)`, `send_bytes`, `recv_bytes`, `recv_bytes(maxlength)`, `recv_bytes_into`, `close` | [`Connection::send`], [`Connection::recv`], [`Connection::poll`], [`Connection::send_bytes`], [`Connection::recv_bytes`], [`Connection::recv_bytes_max`], [`Connection::recv_bytes_into`], [`Connection::close`] |
//! | `EOFError` from `recv` | [`RecvError::Disconnected`] |
//! | `Pool(processes, initializer, maxtasksperchild)` | [`Pool::new`] / [`Pool::builder`]`().processes(n).initializer(f).max_tasks_per_child(k).build()`; `Pool(0)` is [`PoolError::NoWorkers`] |
//! | `Pool(initializer=f, initargs=(a, b))` | [`PoolBuilder::initializer_with`]`(f, (a, b))` |
//! | `pool.apply`, `apply_async(f, args, callback, error_callback)` | [`Pool::apply`], [`Pool::apply_async`] / [`Pool::apply_async_with`] |
//! | `AsyncResult.get(timeout)`, `ready`, `successful`, `wait` | [`AsyncResult::get`] / [`AsyncResult::get_timeout`], [`AsyncResult::ready`], [`AsyncResult::successful`], [`AsyncResult::wait`] |
//! | `pool.map`, `imap`, `imap_unordered`, `starmap` | [`Pool::map`], [`Pool::imap`], [`Pool::imap_unordered`], [`Pool::starmap`] |
//! | the same with `chunksize=n` | [`Pool::map_chunked`], [`Pool::imap_chunked`], [`Pool::imap_unordered_chunked`], [`Pool::starmap_chunked`] |
//! | `pool.map_async(f, it, chunksize, callback, error_callback)`, `starmap_async` | [`Pool::map_async`] / [`Pool::map_async_with`], [`Pool::starmap_async`] / [`Pool::starmap_async_with`], giving a [`MapResult`] |
//! | `pool.map(functools.partial(f, ctx), it)` | [`Pool::map_with`]`(&ctx, f, it)` with `f: fn(&C, A) -> R` (`fn` pointers cannot capture: the context travels as a message, once per chunk) |
//! | `multiprocessing.connection.wait(objects, timeout)` | [`wait()`]`(&[&dyn `[`Waitable`]`], timeout)`: indices of the ready ones |
//! | `p.sentinel` | [`Process::sentinel`] (the pidfd) |
//! | `pool.close()`, `join()`, `terminate()` | [`Pool::close`], [`Pool::join`], [`Pool::terminate`] |
//! | `Manager().dict()` / `Manager().list()` | [`SharedMap::with_capacity`] / [`SharedList::with_capacity`] (no server process) |
//! | `shared_memory.SharedMemory(name, create=True)` | [`Segment::create_named`] / [`Segment::open`] |
//! | `reduction.send_handle(conn, fd, pid)` / `recv_handle(conn)`; pickling a socket into a `Queue`, `Pipe` or `pool.apply_async(f, (conn,))` | [`Fd::new`]`(stream)` sent as (part of) any message, [`Fd::take`] on the other side (see [`fd_passing`]: an [`Fd`] is a ticket redeemed from the sender's broker by `SCM_RIGHTS`) |
//! | `reduction.DupFd(fd)` (the sender keeps its own) | [`Fd::dup`]`(&stream)` |
//! | `class P(Process): def run(self)` / `P(..).start()` | a type implementing [`process::Run`], started with [`Process::start`] (fork; fields move into the child) |
//!
//! ## async/await across processes
//!
//! Queues, events, children and pool results can be awaited from any
//! executor (only `std::task::Waker` is used; tokio is not a dependency),
//! without a thread per waiting future:
//!
//! | blocking | future |
//! |---|---|
//! | [`Queue::recv`], [`Receiver::recv`] | [`Queue::recv_async`], [`Receiver::recv_async`] ([`RecvFuture`]) |
//! | [`Queue::send`], [`Sender::send`] | [`Queue::send_async`], [`Sender::send_async`] ([`SendFuture`]) |
//! | [`Event::wait`] | [`Event::wait_async`] ([`EventWait`]) |
//! | [`Semaphore::acquire`] | [`Semaphore::acquire_async`] ([`AcquireFuture`]) |
//! | [`Mutex::lock`], [`Lock::acquire`] | [`Mutex::lock_async`] ([`LockFuture`]), [`Lock::acquire_async`] (the guard is not `Send`: the lock belongs to the polling thread) |
//! | [`Barrier::wait`] | [`Barrier::wait_async`] ([`BarrierFuture`]; dropped after arriving, it breaks the barrier, as a timed-out `wait` does) |
//! | [`JoinableQueue::join`] | [`JoinableQueue::join_async`] ([`JoinAllDone`]) |
//! | [`JoinableQueue::send`], [`JoinableQueue::recv`] | [`JoinableQueue::send_async`] (a dropped send is not counted), [`JoinableQueue::recv_async`] |
//! | [`PipeReceiver::recv`], [`Connection::recv`] | [`PipeReceiver::recv_async`], [`Connection::recv_async`] ([`PipeRecvFuture`], not `Send`) |
//! | [`PipeSender::send`], [`Connection::send`] | [`PipeSender::send_async`], [`Connection::send_async`] ([`PipeSendFuture`], not `Send`) |
//! | [`PipeReceiver::poll`], [`Connection::poll`] | [`PipeReceiver::readable_async`], [`Connection::readable_async`] ([`PipeReadable`]) |
//! | [`Queue::iter`] | `Queue::stream` / `Receiver::stream`: a `futures_core::Stream` (feature `stream`) |
//! | [`wait()`] over many objects | [`wait_async`] ([`WaitAny`], polled like `wait`) |
//! | [`Process::join`] | [`Process::join_async`] |
//! | [`AsyncResult::get`], [`MapResult::get`] | `.await` on them ([`IntoFuture`](std::future::IntoFuture)) |
//!
//! ```
//! let q = shmproc::Queue::<u64>::bounded(8)?;
//! let tx = q.sender();
//! let mut child = shmproc::Process::spawn(move || {
//!     shmproc::async_wait::block_on(tx.send_async(&42)).unwrap();
//! })?;
//! // Inside a tokio (or any other) task: `q.recv_async().await?`.
//! assert_eq!(shmproc::async_wait::block_on(q.recv_async())?, 42);
//! child.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! How: a future that must wait is counted as a sleeper of the shared futex
//! word a blocking waiter would sleep on, and hands `(word, value, waker)`
//! to a lazily started helper thread of its process, which sleeps in
//! `futex_waitv` on up to 127 words at once and wakes the wakers of the
//! words that changed. The waking process does exactly what it does for a
//! blocking waiter, and the non-waiting paths cost nothing more. 10,000
//! pending futures on 200 queues and events use 2 helper threads and no
//! descriptor. Where `futex_waitv` is missing or refused, or with
//! `SHMPROC_ASYNC_POLL=1` / [`async_wait::force_poll`], the helpers poll the
//! words instead (up to 10 ms late). Details, costs and the fallback:
//! [`async_wait`].
//!
//! Cancellation: a `recv_async` future dropped at any point loses no
//! message and holds no lock or frame; a dropped `send_async` sends nothing
//! and leaves nothing half-written. A receiver awaiting a queue whose last
//! sender was killed gets `Disconnected` (noticed by a liveness re-check,
//! within [`async_wait::LIVENESS_MAX`], 320 ms, in a long wait).
//!
//! **Not done yet** (issue #16): `BoundedSemaphore`/`RobustSemaphore`,
//! `RLock`, and `Condition` (its wait releases and retakes a lock that
//! belongs to a thread, while a task may move between threads); use the
//! blocking calls on a blocking-thread pool (`spawn_blocking`) for those.
//! `Process::join_async`, the pool results and [`wait_async`] have no
//! futex word to watch: they are re-checked with a back-off (50 µs up to
//! 10 ms). macOS and other platforms have no `futex_waitv`: there the
//! polling fallback is used (untested in CI).
//!
//! ## What each primitive is robust to
//!
//! | primitive | a peer process dies | a peer writes garbage |
//! |---|---|---|
//! | [`Mutex`], [`Lock`], [`RLock`], [`Value`], [`Array`] (**robust**: owner-died recovery) | holding the lock: the next acquirer gets `Err(OwnerDied(guard))` within ~20 ms (one liveness slice), the lock then works normally (`Lock::acquire`, Python's, takes the lock over without reporting it; `lock()` on a `Lock` reports it); waiting: nothing to clean up | any lock word is handled (a garbage owner is just a dead owner); a word forged with the caller's own tid and start time is taken over as `OwnerDied` (each thread knows from private memory which locks it holds), never a panic; the data may be garbage but is [`Plain`], so any bytes are a valid value |
//! | [`Semaphore`], [`BoundedSemaphore`] (**not robust**) | waiting: nothing to clean up; holding a permit: the permit is lost (as in Python); use `acquire_timeout` or [`RobustSemaphore`] | wrong counts, never UB or a hang past a deadline |
//! | [`RobustSemaphore`] (**robust**) | holding permits: they come back to the next acquirer that finds none free, within ~20 ms (holders recorded by pid and start time, at most 32 processes at once: `TableFull` beyond); waiting: nothing to clean up | counts are derived from the holder table, never trusted; garbage records are cleared as dead: wrong counts, never UB, a panic or a hang past a deadline |
//! | [`Event`] | nothing is owned: no effect | any non-zero flag reads as set |
//! | [`Condition`] | nothing is owned; the mutex reports its own dead owner on re-lock | spurious wake-ups |
//! | [`Barrier`] | a party that dies *while waiting* breaks the barrier for the others (`Broken`); one that dies before arriving looks slow: use `wait_timeout` | impossible counts break the barrier |
//! | [`Queue`], [`JoinableQueue`] | a producer killed mid-message: nothing torn is ever delivered, the next producer takes its side over (byte ring) or its slot is skipped (slot ring); a consumer killed holding a message: that message is dropped (its out-of-line block freed) and the queue goes on (killed inside `recv_batch` after taking its run: that run); every sender gone (dropped or dead): receivers get `Disconnected`, and blocked senders when every receiver is gone; a consumer that dies before `task_done` leaves the task unfinished (use `join_timeout`) | lengths and positions checked, descriptors of out-of-line blocks checked against the segment file, messages validated (`Corrupt`) |
//! | [`Pipe`] ends | frames are published whole, so a dead sender leaves nothing torn; the other end gets `Disconnected` | frames bounds-checked, messages validated |
//! | [`Pool`] | a worker that dies fails exactly the task it ran (`WorkerDied`) and is replaced; a panicking task fails with `Panicked` and the worker goes on | results validated; a task rewritten in the queue fails with `Forged`, nothing runs |
//! | [`SharedMap`], [`SharedList`] | a writer killed mid-update leaves the old or the new entry (duplicates resolved by version on the next access) | entries validated (`Corrupt`); a forged lock word is recovered from like a dead writer's |
//! | [`Fd`] (descriptor passing) | the sender dies before the receiver takes it: [`FdError::SenderGone`] at once; its broker does not answer: [`FdError::Timeout`] (every socket operation carries a timeout); a receiver that dies holding an untaken ticket: the descriptor is closed when its time to live passes | a forged or garbage ticket names nothing: [`FdError::NotFound`] or `SenderGone`; only same-user peers are served, and only the ticket's own pid is believed as broker |
//! | [`Segment`] / regions | anonymous: freed with the last mapping; named: listed as stale, removable, also when the creator died mid-creation | opening validates magic, version, sizes, offsets and the file's size: a typed error; anonymous segments cannot be shrunk |
//!
//! ## How a dead peer is recognised, and pid namespaces
//!
//! Locks, ring slots, barrier arrivals and queue participants record who holds
//! them: a thread or process id, its start time, and its pid namespace. A peer
//! is judged dead only on proof, because "dead" lets another process take its
//! lock or free its slot: its id no longer exists in the judge's own pid
//! namespace, or the id now has another start time (reused), or it is a
//! zombie. Anything uncertain counts as alive: a peer recorded in **another
//! pid namespace** (two containers sharing `/dev/shm` or an IPC namespace, or
//! a parent namespace looking at a child namespace's process), a process with
//! no `/proc` or a `/proc` mounted for another namespace, an unreadable or
//! unparsable `/proc` entry.
//!
//! What holds: a live peer in another namespace is never robbed of a lock or a
//! message slot (tested with a real child that is pid 1 of its own namespace,
//! and with a checker whose `/proc` is empty).
//!
//! **Kernel-kept liveness across namespaces.** Every process that attaches a
//! segment (and knows its own pid namespace) holds an `F_OFD_SETLK` record
//! lock on one byte of the segment's file, at an offset made of its
//! (namespace, pid); the kernel drops it when the process dies, and every
//! process of every namespace with the file open can see it. A lock owner
//! records that it holds such a lock, so the robust locks ([`Lock`],
//! [`RLock`], [`Mutex`], a [`Condition`]'s lock, [`Value`]/[`Array`] locks,
//! [`SharedMap`]/[`SharedList`]), the sides of a byte-ring [`Queue`], the
//! claimed slots of a slot-ring one, the senders and receivers that decide
//! `Disconnected`, [`Barrier`] arrivals and [`RobustSemaphore`] holders are
//! all recovered when their holder's process died in another namespace
//! too, or when the judge's `/proc` is unreadable. Tested with a real pid-1
//! owner SIGKILLed in its own namespace, a pid-1 receiver killed inside a
//! `RecvRef` (byte ring and slot ring), an owner whose forked child outlives
//! it (the fork handler gives each child a record of its own), and judges
//! without `/proc` for a lock, a queue's last sender, a barrier party and a
//! robust permit.
//!
//! What this does not cover: it is process-level, so a dead *thread* of a
//! live process of another namespace is not detected; a process that cannot
//! read its own namespace (no `/proc` at all) takes no record, so its death
//! cannot be proven to another namespace. Both fail closed: nothing is
//! taken from a live peer.
//!
//! One practical bound remains (see `shmproc_core::raw_mutex`): a lock owner
//! that has taken the lock word but not yet recorded itself is judged at once
//! in its own namespace, and by tid existence alone after it has stayed so for
//! 500 ms elsewhere.
//!
//! ## Trust model
//!
//! Shared memory is writable by every process that maps it. shmproc assumes
//! peers may be **buggy or crashed**, and defends against them: every index,
//! length and offset read from a region is validated before use, so garbage
//! gives an error, never undefined behaviour, an out-of-bounds access, a panic
//! in the reader or an endless loop. A **malicious** peer with write access can
//! still make the *protocol* lie (release a lock it does not hold, change
//! protected data while you hold the lock, reset counts): that corrupts the
//! values you see, not your process's memory safety, because every type placed
//! in shared memory is valid for any bit pattern ([`Plain`] data, atomics).
//! Named segments are created mode `0600` and segments of other users are
//! refused, so the peers are processes of the same user.
//!
//! Bytes a peer may write while they are read (a received frame, slot or
//! out-of-line block, a `SharedMap` or `SharedList` entry) are copied out
//! with atomic loads before they are
//! validated (`shmproc_core::peer_bytes`), so a scribbling peer makes a
//! receive fail or return wrong values, never a data race in Rust's sense.
//! [`RecvRef`] reads in place: it is sound against peers that follow the
//! protocol (which do not write a published message), as its docs say. A
//! `RecvRef` is never copied into a child: fork-mode spawning (and a fork-mode
//! [`Pool`]) fails with [`ProcessError::RingBorrowed`] while one is alive in
//! the process, and [`process::Builder::spawn`] takes `'static` closures as
//! `std::thread::spawn` does.
//!
//! What a peer writes never chooses the code a process runs:
//!
//! * [`Pool`] tasks name their function by code offsets, which travel through
//!   the shared task queue with a SipHash tag under a per-pool key kept only in
//!   the private memory of the parent and its workers; a task whose tag does
//!   not match is refused with [`TaskError::Forged`] and nothing runs (see
//!   the [`pool`] module docs).
//! * A spawn-mode child ([`Process::spawn_fn`]) runs its payload only after
//!   proving that its parent, running the same executable, holds that very
//!   payload in a sealed memfd; a payload named by anyone else through
//!   `SHMPROC_SPAWN` (or garbage there) is an error exit, never a jump. The
//!   segment descriptors the child inherits are made close-on-exec again, so
//!   programs it execs do not inherit them.
//!
//! And no holder can shrink a segment under the others: anonymous segments
//! are memfds sealed against shrinking (growth stays allowed, for the queues'
//! out-of-line blocks past the region, and harms nobody); named segments
//! cannot be sealed, so every attach checks the file against the region size
//! its header records ([`SegmentError::Truncated`]); a same-user process
//! that truncates a named segment *after* others attached can still make
//! their next access a `SIGBUS` (see the [`segment`] module docs).
//!
//! ## Platform support
//!
//! Linux is the supported and tested platform. The core's futex layer has a
//! macOS `__ulock` path that compiles there but is not tested in CI; process
//! management (memfd, pidfd, `PR_SET_PDEATHSIG`) is Linux-only today.
//!
//! The rings' wake-up handshake and the queues' biased locks use
//! `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` (Linux 4.16+) so that the
//! per-message side needs no fence. Each process registers on first use; where
//! the kernel (or a seccomp filter) refuses, that process falls back to real
//! fences, which is always correct for its own stores. A sleeper whose kernel
//! refuses the barrier while its peers use the free fence can miss a wake-up;
//! every sleep is cut into 20 ms liveness slices, so that costs at most a
//! slice of latency, never a hang (see `shmproc_core::asymmetric_fence`). For
//! the queues' biased locks the same mixed case is a matter of exclusion, not
//! latency: a revoker that cannot issue the barrier waits a millisecond before
//! it trusts the holder's `busy` flag, a practical bound rather than a proof
//! (see `shmproc_core::biased_lock`). Run all processes of an application
//! under the same seccomp policy, or use [`QueueBuilder::slot_ring`], which
//! needs no bias.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod array;
pub mod async_objects;
pub mod async_wait;
pub mod barrier;
mod blocking;
mod blocks;
mod borrows;
mod bulk;
mod channel_error;
pub mod condition;
mod error;
pub mod event;
pub mod fd_passing;
mod globals;
mod held;
pub mod inspect;
pub mod joinable;
mod kernel_liveness;
pub mod message;
pub mod mutex;
#[cfg(feature = "net")]
pub mod net;
mod object;
pub mod pipe;
mod plain;
pub mod pool;
pub mod process;
pub mod queue;
mod ring_chain;
mod roles;
pub mod segment;
pub mod semaphore;
pub mod shared_map;
mod thread_id;
pub mod value;
pub mod wait;

/// Spawn mode's function encoding, used by the pool.
pub(crate) use process::spawn;

pub use array::{Array, ArrayGuard};
pub use barrier::{Barrier, BarrierError, BarrierFuture, BarrierWaitResult};
pub use blocking::WaitPolicy;
/// Derive [`Plain`] data with `bytemuck::{Zeroable, AnyBitPattern}`.
pub use bytemuck;
pub use condition::{Condition, WaitTimeoutResult};
pub use error::Error;
pub use event::{Event, EventWait};
pub use fd_passing::{Fd, FdError};
pub use joinable::{JoinAllDone, JoinableQueue, TaskDoneError};
pub use message::Message;
pub use mutex::{
    Lock, LockFuture, LockResult, LockTimeoutError, Mutex, MutexGuard, OwnerDied, RLock, RLockGuard, TryLockError,
};
pub use pipe::{
    Connection, Pipe, PipeReadable, PipeReceiver, PipeRecvFuture, PipeSendFuture, PipeSender, RecvBytesIntoError,
};
pub use plain::Plain;
pub use pool::{AsyncResult, MapResult, Pool, PoolBuilder, PoolError, TaskError};
pub use process::{
    active_children, cpu_count, current_process, get_all_start_methods, get_start_method, parent_process,
    set_start_method, Builder, ChildInfo, ChildResult, CurrentProcess, ParentProcess, Process, ProcessError,
    StartMethod,
};
#[cfg(feature = "stream")]
pub use queue::RecvStream;
pub use queue::{
    Queue, QueueBuilder, Receiver, RecvError, RecvFuture, RecvRef, RecvTimeoutError, SendError, SendFuture,
    SendTimeoutError, Sender, TryRecvError, TrySendError,
};
/// rkyv, the serialisation every message uses: derive
/// `shmproc::rkyv::{Archive, Serialize, Deserialize}` for a message type (see
/// [`Message`]) without adding rkyv to `Cargo.toml`.
pub use rkyv;
pub use segment::{Segment, SegmentError, SegmentInfo, SegmentStatus};
pub use semaphore::{
    AcquireFuture, BoundedSemaphore, PermitError, ReleaseError, RobustPermit, RobustSemaphore, Semaphore,
    SemaphoreGuard,
};
pub use shared_map::{SharedError, SharedList, SharedMap};
/// The `no_std` core: regions, futex, identities.
pub use shmproc_core as core;
pub use shmproc_core::{Deadline, Identity};
pub use value::Value;
pub use wait::{wait, wait_async, WaitAny, Waitable};

/// Initialises shmproc: optional on Linux, where a constructor does the same
/// before `main` runs.
///
/// In a child re-executed by spawn mode (or a fork server) this runs the
/// requested function (or serves) and exits, never returning; otherwise it
/// returns at once after installing the fork handler. On Linux the
/// constructor in `.init_array` has already done all of this before `main`
/// (it reads only the `SHMPROC_SPAWN` and `SHMPROC_FORKSERVER` variables
/// and registers a `pthread_atfork` handler; in an ordinary process it
/// touches nothing else), so calling `init` is harmless and idempotent.
/// Where no constructor runs, spawn mode and the fork server refuse
/// ([`ProcessError::InitNotCalled`]) until `init` has been called.
///
/// ```
/// shmproc::init(); // the first statement of `main`
/// let mut child = shmproc::Process::spawn(|| ())?;
/// child.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn init() {
    spawn::init();
}
