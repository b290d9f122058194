//! `async` waits across processes (issue #16): tokio tasks awaiting shmproc
//! queues, events, children and pool results fed by real child processes,
//! with the helper threads of `shmproc::async_wait`.
//!
//! The whole suite runs twice: once with `futex_waitv` (where the kernel
//! allows it) and once more, re-executed by
//! `poll_fallback_passes_the_same_suite` with `SHMPROC_ASYNC_POLL=1`, on the
//! polling fallback.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shmproc::async_wait::{self, Backend, WORDS_PER_HELPER};
use shmproc::{Event, Process, Queue, RecvError, Sender};
use shmproc_tests::{ensure, eventually, trials, TestResult, HANG_LIMIT};

/// Messages of the exactly-once test: 1 M in release builds, 200 k in debug
/// builds (where the serialisation alone takes seconds per million).
const MILLION: u64 = if cfg!(debug_assertions) { 200_000 } else { 1_000_000 };
/// Receives of the random-cancellation test.
const CANCEL_ROUNDS: u64 = 100_000;

fn runtime(workers: usize) -> Result<tokio::runtime::Runtime, std::io::Error> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_time().build()
}

/// What a test's async part returns (sendable between runtime threads).
type AsyncResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Runs `f` on a fresh multi-threaded runtime, failing after `limit`.
fn run_async<F: Future<Output = AsyncResult> + Send + 'static>(limit: Duration, f: F) -> TestResult {
    let rt = runtime(2)?;
    let r = rt.block_on(async move {
        match tokio::time::timeout(limit, tokio::spawn(f)).await {
            Ok(Ok(r)) => r.map_err(|e| e.to_string()),
            Ok(Err(join)) => Err(format!("task failed: {join}")),
            Err(_) => Err(format!("did not finish within {limit:?}")),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    r.map_err(Into::into)
}

/// The helper threads of this process (by their names in /proc).
fn helper_threads_in_proc() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return 0 };
    dir.filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .filter(|c| c.starts_with("shmproc-async"))
        .count()
}

fn open_fds() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    let mut fds: Vec<String> = dir
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name(), std::fs::read_link(e.path()).ok()?)))
        // Transient: this listing itself, and the liveness looks at
        // /proc/<pid>/stat that receivers make now and then.
        .filter(|(_, target)| !target.starts_with("/proc"))
        .map(|(name, target)| format!("{} -> {}", name.to_string_lossy(), target.display()))
        .collect();
    fds.sort();
    fds
}

/// A child's producer: sends `from..to` with `send_async`, on the crate's
/// own minimal executor (no runtime in the child).
fn async_producer((tx, from, to): (Sender<u64>, u64, u64)) -> i32 {
    for i in from..to {
        if async_wait::block_on(tx.send_async(&i)).is_err() {
            return 1;
        }
    }
    0
}

/// Sends `0..n` in bursts of 1000 with pauses, so that the receiver waits
/// (through the helper) many times.
fn bursty_producer((tx, n): (Sender<u64>, u64)) -> i32 {
    for i in 0..n {
        if async_wait::block_on(tx.send_async(&i)).is_err() {
            return 1;
        }
        if i % 5000 == 4999 {
            // Long enough for the receiver's timeouts (1 ms) to drop futures
            // registered with the helper thread.
            std::thread::sleep(Duration::from_millis(3));
        } else if i % 1000 == 999 {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
    0
}

fn expected_backend_is_in_use() -> TestResult {
    let want = if std::env::var_os("SHMPROC_ASYNC_POLL").is_some_and(|v| v == "1") {
        Backend::Poll
    } else {
        // The machine may refuse futex_waitv: then polling is correct too.
        async_wait::backend()
    };
    ensure!(async_wait::backend() == want, "backend {:?}, expected {want:?}", async_wait::backend());
    println!("async backend: {:?}", async_wait::backend());
    Ok(())
}

fn tokio_task_receives_from_forked_producer() -> TestResult {
    let (tx, rx) = Queue::<u64>::bounded(64)?.into_split();
    // Forked before any runtime thread exists (in the first test to run).
    let mut child = Process::builder().allow_threaded_fork(true).spawn(move || {
        for i in 0..2000u64 {
            tx.send(&i).unwrap();
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    })?;
    run_async(HANG_LIMIT * 3, async move {
        for i in 0..2000u64 {
            let v = rx.recv_async().await?;
            ensure!(v == i, "got {v}, expected {i}");
        }
        // The child exits: its sender goes, and the queue is drained.
        ensure!(rx.recv_async().await == Err(RecvError::Disconnected));
        Ok(())
    })?;
    ensure!(child.join()? == 0);
    Ok(())
}

fn million_messages_exactly_once_through_send_async_and_recv_async() -> TestResult {
    let (tx, rx) = Queue::<u64>::bounded(1024)?.into_split();
    let mut child = Process::spawn_fn(async_producer, (tx, 0, MILLION))?;
    run_async(HANG_LIMIT * 12, async move {
        let mut next = 0u64;
        loop {
            match rx.recv_async().await {
                Ok(v) => {
                    ensure!(v == next, "got {v}, expected {next}");
                    next += 1;
                }
                Err(RecvError::Disconnected) => break,
                Err(e) => return Err(e.into()),
            }
        }
        ensure!(next == MILLION, "received {next} of {MILLION}");
        println!("{MILLION} messages, each exactly once, in order");
        Ok(())
    })?;
    ensure!(child.join()? == 0);
    Ok(())
}

/// Receives through futures that are dropped at random points: each round
/// polls a fresh `recv_async` future 0 to 3 times (yielding to the runtime
/// in between, so the helper may wake it) and drops it unless it resolved;
/// every fourth round awaits with a short timeout instead. Nothing may be
/// lost or duplicated.
fn random_cancellation_loses_nothing() -> TestResult {
    let (tx, rx) = Queue::<u64>::bounded(256)?.into_split();
    let mut child = Process::spawn_fn(bursty_producer, (tx, CANCEL_ROUNDS))?;
    run_async(HANG_LIMIT * 12, async move {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let (mut next, mut dropped, mut dropped_pending, mut dropped_timeout) = (0u64, 0u64, 0u64, 0u64);
        while next < CANCEL_ROUNDS {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let got = if seed & 3 == 0 {
                let r = tokio::time::timeout(Duration::from_micros(seed % 200), rx.recv_async()).await.ok();
                if r.is_none() {
                    dropped_timeout += 1;
                }
                r
            } else {
                let mut fut = Box::pin(rx.recv_async());
                let mut got = None;
                let mut polled = false;
                for _ in 0..(seed >> 8) % 4 {
                    polled = true;
                    let p = std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await;
                    if let std::task::Poll::Ready(v) = p {
                        got = Some(v);
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                if got.is_none() && polled {
                    dropped_pending += 1;
                }
                got
            };
            match got {
                Some(Ok(v)) => {
                    ensure!(v == next, "got {v}, expected {next}");
                    next += 1;
                }
                Some(Err(e)) => return Err(format!("after {next}: {e}").into()),
                None => dropped += 1,
            }
        }
        ensure!(rx.recv_async().await == Err(RecvError::Disconnected));
        println!(
            "{CANCEL_ROUNDS} received; {dropped} futures dropped unresolved: {dropped_pending} after a Pending poll, \
             {dropped_timeout} by a timeout (registered with the helper)"
        );
        ensure!(dropped_pending + dropped_timeout > 0, "no pending future was cancelled: the test tested nothing");
        Ok(())
    })?;
    ensure!(child.join()? == 0);
    Ok(())
}

fn killed_producer_gives_disconnected() -> TestResult {
    let (tx, rx) = Queue::<u64>::bounded(8)?.into_split();
    let mut child = Process::spawn_fn(sends_one_then_sleeps, tx)?;
    let pid = child.pid();
    run_async(HANG_LIMIT * 2, async move {
        ensure!(rx.recv_async().await? == 1);
        let killer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        });
        // Pending when the producer is killed: nobody wakes the word, the
        // liveness re-check notices.
        ensure!(rx.recv_async().await == Err(RecvError::Disconnected));
        killer.await?;
        Ok(())
    })?;
    ensure!(child.join()? == -libc::SIGKILL);
    Ok(())
}

fn sends_one_then_sleeps(tx: Sender<u64>) {
    let _ = tx.send(&1);
    std::thread::sleep(Duration::from_secs(60));
}

/// 10,000 pending futures on 100 queues and 100 events (200 distinct
/// words): at most ceil(200 / 127) = 2 helper threads, no descriptor per
/// waiter; then every one resolves exactly once when a child feeds them.
fn ten_thousand_futures_few_threads_no_fds() -> TestResult {
    const OBJECTS: usize = 100;
    const PER: usize = 50;
    let queues: Vec<Queue<u64>> = (0..OBJECTS).map(|_| Queue::<u64>::bounded(PER)).collect::<Result<_, _>>()?;
    let events: Vec<Event> = (0..OBJECTS).map(|_| Event::new()).collect::<Result<_, _>>()?;
    let go = Event::new()?;
    let feeder = {
        let (queues, events, go) = (queues.clone(), events.clone(), go.clone());
        Process::builder().allow_threaded_fork(true).spawn(move || {
            go.wait();
            for (i, q) in queues.iter().enumerate() {
                for k in 0..PER {
                    q.send(&((i * PER + k) as u64)).unwrap();
                }
            }
            for e in &events {
                e.set();
            }
        })?
    };
    // Releases the feeder however this test ends (a failed check included).
    struct Release(Event);
    impl Drop for Release {
        fn drop(&mut self) {
            self.0.set();
        }
    }
    let release = Release(go.clone());
    let rt = runtime(2)?;
    let fds_before = open_fds();
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let set_seen = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..OBJECTS {
        for _ in 0..PER {
            let (q, got) = (queues[i].clone(), Arc::clone(&got));
            tasks.push(rt.spawn(async move {
                let v = q.recv_async().await;
                got.lock().unwrap().push(v);
            }));
            let (e, seen) = (events[i].clone(), Arc::clone(&set_seen));
            tasks.push(rt.spawn(async move {
                if e.wait_async().await {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
    }
    ensure!(
        eventually(HANG_LIMIT, || async_wait::watched_words() == 2 * OBJECTS),
        "watched words: {} (expected {})",
        async_wait::watched_words(),
        2 * OBJECTS
    );
    let threads = helper_threads_in_proc();
    let bound = (2 * OBJECTS).div_ceil(WORDS_PER_HELPER);
    println!("{} futures, {} words, {threads} helper threads", tasks.len(), 2 * OBJECTS);
    ensure!((1..=bound).contains(&threads), "{threads} helper threads for {} words", 2 * OBJECTS);
    ensure!(async_wait::helper_threads() == threads);
    let fds_pending = open_fds();
    let new: Vec<&String> = fds_pending.iter().filter(|f| !fds_before.contains(f)).collect();
    ensure!(new.is_empty(), "descriptors opened while the futures wait: {new:?}");
    drop(release);
    rt.block_on(async {
        for t in tasks {
            tokio::time::timeout(HANG_LIMIT, t).await.map_err(|_| "a future did not resolve")??;
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    let got = std::mem::take(&mut *got.lock().unwrap());
    let values: HashSet<u64> = got.into_iter().collect::<Result<_, _>>()?;
    ensure!(values.len() == OBJECTS * PER && values.iter().all(|&v| v < (OBJECTS * PER) as u64));
    ensure!(set_seen.load(Ordering::SeqCst) == OBJECTS * PER);
    rt.shutdown_timeout(Duration::from_secs(1));
    let mut feeder = feeder;
    ensure!(feeder.join()? == 0);
    Ok(())
}

/// A `send_async` dropped while it waits for room sends nothing and leaves
/// the queue usable; a `recv_async` dropped while pending takes nothing.
fn dropped_futures_leave_nothing_behind() -> TestResult {
    let q = Queue::<u64>::bounded(1)?;
    q.send(&1)?;
    let waker = std::task::Waker::from(Arc::new(NoWake));
    let mut cx = std::task::Context::from_waker(&waker);
    {
        let mut f = std::pin::pin!(q.send_async(&2));
        ensure!(f.as_mut().poll(&mut cx).is_pending());
    }
    ensure!(q.recv()? == 1);
    ensure!(q.try_recv().is_err(), "the dropped send sent something");
    {
        let mut f = std::pin::pin!(q.recv_async());
        ensure!(f.as_mut().poll(&mut cx).is_pending());
    }
    q.send(&3)?;
    ensure!(q.try_recv()? == 3);
    // Nothing is left registered with the helper threads.
    ensure!(async_wait::watched_words() == 0);
    Ok(())
}

/// A future leaked with `mem::forget` while registered (its `Drop` never
/// runs) and its queue then dropped: the helper thread still reads the
/// watched word at every scan, so the registration must keep the mapping
/// alive (without that, this test dies of SIGSEGV).
fn a_leaked_future_keeps_its_word_mapped() -> TestResult {
    let before = async_wait::watched_words();
    let waker = std::task::Waker::from(Arc::new(NoWake));
    let mut cx = std::task::Context::from_waker(&waker);
    let q = Queue::<u64>::bounded(1)?;
    let mut fut = Box::pin(q.recv_async());
    // Past the spin and the yields, to the registration.
    for _ in 0..1000 {
        if async_wait::watched_words() > before {
            break;
        }
        ensure!(fut.as_mut().poll(&mut cx).is_pending());
    }
    ensure!(async_wait::watched_words() == before + 1, "the future never registered");
    std::mem::forget(fut);
    drop(q);
    // Make the helper scan (and read the word) again and again.
    let e = Event::new()?;
    for _ in 0..20 {
        let mut w = Box::pin(e.wait_async());
        ensure!(w.as_mut().poll(&mut cx).is_pending());
        drop(w);
        std::thread::sleep(Duration::from_millis(1));
    }
    // The leaked registration's liveness re-check fires it; then it is gone.
    ensure!(eventually(HANG_LIMIT, || async_wait::watched_words() == before));
    Ok(())
}

struct NoWake;
impl std::task::Wake for NoWake {
    fn wake(self: Arc<Self>) {}
}

/// A release wakes one waiter. The future's helper thread sleeps on the
/// count word before a blocked child does, so the kernel hands the wake-up
/// to the helper (with `futex_waitv`); the future is then dropped without
/// being polled again. The wake-up must still reach the child.
fn semaphore_wake_absorbed_by_a_dropped_future_is_passed_on() -> TestResult {
    let sem = shmproc::Semaphore::new(0)?;
    let waker = std::task::Waker::from(Arc::new(NoWake));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = Box::pin(sem.acquire_async());
    ensure!(fut.as_mut().poll(&mut cx).is_pending());
    ensure!(eventually(HANG_LIMIT, || async_wait::watched_words() == 1));
    // The helper is asleep on the word first ...
    std::thread::sleep(Duration::from_millis(20));
    let s2 = sem.clone();
    let mut child = Process::builder().allow_threaded_fork(true).spawn(move || s2.acquire())?;
    // ... then the child, blocked in the kernel behind it.
    ensure!(eventually(HANG_LIMIT, || shmproc_tests::proc_state(child.pid()) == Some('S')));
    std::thread::sleep(Duration::from_millis(20));
    sem.release()?;
    // The helper takes the wake-up and wakes the future, which is dropped.
    std::thread::sleep(Duration::from_millis(30));
    drop(fut);
    ensure!(child.join_timeout(HANG_LIMIT)? == Some(0), "the blocked acquirer never got the free permit");
    ensure!(sem.value() == 0);
    // And an awaited acquire takes a permit released by another process.
    let s3 = sem.clone();
    let mut releaser = Process::builder().allow_threaded_fork(true).spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        s3.release().unwrap();
    })?;
    async_wait::block_on(sem.acquire_async());
    ensure!(releaser.join()? == 0);
    Ok(())
}

/// `Mutex::lock_async` across processes: children increment under the lock
/// while current-thread tasks of this process do the same through the
/// future (two tasks on one thread exclude each other); a future dropped
/// while waiting takes nothing and a blocked process still gets the lock; an
/// owner that dies holding it is taken over with `OwnerDied`.
fn mutex_lock_async_excludes_across_processes_and_tasks() -> TestResult {
    const ROUNDS: u64 = 300;
    let m = shmproc::Mutex::new(0u64)?;
    let mut children = Vec::new();
    for _ in 0..2 {
        let m2 = m.clone();
        children.push(Process::builder().allow_threaded_fork(true).spawn(move || {
            for _ in 0..ROUNDS {
                let mut g = m2.lock().unwrap();
                let v = *g;
                std::thread::yield_now();
                *g = v + 1;
            }
        })?);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let m = m.clone();
                tokio::task::spawn_local(async move {
                    for _ in 0..ROUNDS {
                        let mut g = m.lock_async().await.unwrap();
                        let v = *g;
                        // Another task of this thread runs here, and must wait.
                        tokio::task::yield_now().await;
                        *g = v + 1;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    for c in &mut children {
        ensure!(c.join_timeout(HANG_LIMIT)? == Some(0));
    }
    ensure!(*m.lock().unwrap() == 4 * ROUNDS, "lost updates: {}", *m.lock().unwrap());

    // A dropped waiting future: a blocked process still gets the lock.
    let held = m.lock().unwrap();
    let waker = std::task::Waker::from(Arc::new(NoWake));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = Box::pin(m.lock_async());
    ensure!(fut.as_mut().poll(&mut cx).is_pending());
    let m3 = m.clone();
    let mut blocked = Process::builder().allow_threaded_fork(true).spawn(move || {
        *m3.lock().unwrap() += 1;
    })?;
    ensure!(eventually(HANG_LIMIT, || shmproc_tests::proc_state(blocked.pid()) == Some('S')));
    drop(held);
    std::thread::sleep(Duration::from_millis(30));
    drop(fut);
    ensure!(blocked.join_timeout(HANG_LIMIT)? == Some(0), "the blocked process never got the lock");

    // An owner that dies holding the lock.
    let m4 = m.clone();
    let mut dying = Process::builder().allow_threaded_fork(true).spawn(move || {
        let g = m4.lock().unwrap();
        std::mem::forget(g);
        // SAFETY: signalling ourselves.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    })?;
    ensure!(dying.join_timeout(HANG_LIMIT)? == Some(-9));
    match async_wait::block_on(m.lock_async()) {
        Err(shmproc::OwnerDied(g)) => ensure!(*g == 4 * ROUNDS + 1),
        Ok(_) => return Err("a dead owner's lock taken without OwnerDied".into()),
    }
    Ok(())
}

/// `Barrier::wait_async`: two tokio tasks and a child process meet at a
/// three-party barrier, round after round; a future dropped after it arrived
/// breaks the barrier, so the child waiting there gets `Broken` instead of
/// waiting for a party that is gone.
fn barrier_wait_async_meets_processes_and_a_dropped_wait_breaks_it() -> TestResult {
    const ROUNDS: u32 = 20;
    let b = shmproc::Barrier::new(3)?;
    let b2 = b.clone();
    let mut child = Process::builder().allow_threaded_fork(true).spawn(move || {
        for _ in 0..ROUNDS {
            b2.wait().unwrap();
        }
    })?;
    let (b3, b4) = (b.clone(), b.clone());
    run_async(HANG_LIMIT, async move {
        let t = tokio::spawn(async move {
            let mut leaders = 0;
            for _ in 0..ROUNDS {
                leaders += u32::from(b3.wait_async().await.map_err(|e| e.to_string())?.is_leader());
            }
            Ok::<u32, String>(leaders)
        });
        for _ in 0..ROUNDS {
            b4.wait_async().await?;
        }
        t.await??;
        Ok(())
    })?;
    ensure!(child.join_timeout(HANG_LIMIT)? == Some(0));
    ensure!(!b.is_broken());
    // A dropped wait: the child arrives, we arrive and give up.
    let b5 = b.clone();
    let mut waiter = Process::builder().allow_threaded_fork(true).spawn(move || match b5.wait() {
        Err(shmproc::BarrierError::Broken) => 0,
        _ => 1,
    })?;
    let waker = std::task::Waker::from(Arc::new(NoWake));
    let mut cx = std::task::Context::from_waker(&waker);
    ensure!(eventually(HANG_LIMIT, || b.n_waiting() == 1));
    let mut fut = Box::pin(b.wait_async());
    ensure!(fut.as_mut().poll(&mut cx).is_pending());
    ensure!(b.n_waiting() == 2);
    drop(fut);
    ensure!(waiter.join_timeout(HANG_LIMIT)? == Some(0), "the waiting process was not told the barrier broke");
    ensure!(b.is_broken());
    Ok(())
}

/// `wait_async` with an action and a default timeout: the task that
/// arrives last runs the action before the child is released; a lone
/// party's future gives up after the handle's timeout and breaks the barrier.
fn barrier_wait_async_runs_the_action_and_keeps_the_timeout() -> TestResult {
    let rounds = shmproc::Value::new(0u32)?;
    let r = rounds.clone();
    let b = shmproc::Barrier::new(2)?.with_action(move || {
        r.update(|n| *n += 1);
    });
    let (b2, seen) = (b.clone(), rounds.clone());
    let mut child = Process::builder().allow_threaded_fork(true).spawn(move || {
        for round in 1..=5 {
            // Whichever party arrives last runs the action (both handles
            // carry it): either way, before this one is released.
            b2.wait().unwrap();
            if seen.get() != round {
                return 1;
            }
        }
        0
    })?;
    let b3 = b.clone();
    run_async(HANG_LIMIT, async move {
        for _ in 0..5 {
            b3.wait_async().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    })?;
    ensure!(child.join_timeout(HANG_LIMIT)? == Some(0), "a party was released before the action ran");
    ensure!(rounds.get() == 5);
    let lone = shmproc::Barrier::new(2)?.with_timeout(Duration::from_millis(30));
    ensure!(async_wait::block_on(lone.wait_async()) == Err(shmproc::BarrierError::Timeout));
    ensure!(lone.is_broken());
    Ok(())
}

fn event_join_and_pool_results_as_futures() -> TestResult {
    let e = Event::new()?;
    let e2 = e.clone();
    let mut child = Process::spawn_fn(sets_after_a_while, e2)?;
    let pool = shmproc::Pool::new(2)?;
    let r = pool.apply_async(square, 12)?;
    let m = pool.map_async(square, [1u64, 2, 3])?;
    let code = run_async(HANG_LIMIT * 2, async move {
        ensure!(e.wait_async().await);
        ensure!(r.await? == 144);
        ensure!(m.await? == [1, 4, 9]);
        let code = child.join_async().await?;
        ensure!(code == 0, "exit code {code}");
        Ok(())
    });
    pool.close();
    pool.join()?;
    code
}

/// `JoinableQueue::join_async` resolves once a child marked every item
/// done.
fn joinable_join_async_waits_for_task_done() -> TestResult {
    let q = shmproc::JoinableQueue::<u64>::bounded(16)?;
    let q2 = q.clone();
    let mut child = Process::builder().allow_threaded_fork(true).spawn(move || {
        for _ in 0..200 {
            q2.recv().unwrap();
            std::thread::sleep(Duration::from_micros(100));
            q2.task_done().unwrap();
        }
    })?;
    for i in 0..200u64 {
        q.send(&i)?;
    }
    let q3 = q.clone();
    run_async(HANG_LIMIT, async move {
        q3.join_async().await;
        ensure!(q3.join_timeout(Duration::ZERO), "join_async resolved before every task was done");
        Ok(())
    })?;
    ensure!(child.join()? == 0);
    Ok(())
}

/// `JoinableQueue::send_async` / `recv_async`: tasks sent by a task and by a
/// child, received by a task that marks them done, joined with
/// `join_async`; a send waiting for room counts nothing, and one dropped
/// while waiting sends nothing and leaves no unfinished task behind.
fn joinable_send_and_recv_async_keep_the_count() -> TestResult {
    let q = shmproc::JoinableQueue::<u64>::bounded(4)?;
    let q2 = q.clone();
    let mut child = Process::builder().allow_threaded_fork(true).spawn(move || {
        for i in 0..100u64 {
            q2.send(&(1000 + i)).unwrap();
        }
    })?;
    let (qa, qb) = (q.clone(), q.clone());
    run_async(HANG_LIMIT, async move {
        let consumer = tokio::spawn(async move {
            let mut sum = 0u64;
            for _ in 0..200 {
                sum += qb.recv_async().await.map_err(|e| e.to_string())?;
                qb.task_done().map_err(|e| e.to_string())?;
            }
            Ok::<u64, String>(sum)
        });
        for i in 0..100u64 {
            qa.send_async(&i).await?;
        }
        qa.join_async().await;
        let sum = consumer.await??;
        ensure!(sum == (0..100).sum::<u64>() + (1000..1100).sum::<u64>(), "sum {sum}");
        Ok(())
    })?;
    ensure!(child.join()? == 0);
    ensure!(q.unfinished() == 0);
    // Full, nobody receiving: a send polled once, then dropped.
    for i in 0..4u64 {
        q.try_send(&i)?;
    }
    let waker = std::task::Waker::from(Arc::new(NoWake));
    let mut cx = std::task::Context::from_waker(&waker);
    {
        let mut f = Box::pin(q.send_async(&9));
        ensure!(f.as_mut().poll(&mut cx).is_pending());
        // Python counts a `put` once it is accepted: not while it waits.
        ensure!(q.unfinished() == 4, "counted while waiting: {}", q.unfinished());
    }
    ensure!(q.unfinished() == 4, "a dropped send left {} unfinished", q.unfinished());
    ensure!(q.len() == 4);
    Ok(())
}

/// `Receiver::stream` yields every message once, in order, and ends at
/// `Disconnected`; `wait_async` resolves to the ready object's index.
fn stream_and_wait_async_over_many_objects() -> TestResult {
    use futures_core::Stream;
    let (tx, rx) = Queue::<u64>::bounded(8)?.into_split();
    let mut child = Process::spawn_fn(async_producer, (tx, 0, 500))?;
    run_async(HANG_LIMIT * 2, async move {
        let mut s = std::pin::pin!(rx.stream());
        let mut next = 0u64;
        while let Some(v) = std::future::poll_fn(|cx| s.as_mut().poll_next(cx)).await {
            ensure!(v? == next);
            next += 1;
        }
        ensure!(next == 500, "the stream ended after {next}");
        Ok(())
    })?;
    ensure!(child.join()? == 0);
    let (idle, later, empty) = (Event::new()?, Event::new()?, Queue::<u8>::bounded(1)?);
    let mut setter = Process::spawn_fn(sets_after_a_while, later.clone())?;
    let objects = [&idle as &dyn shmproc::Waitable, &later, &empty];
    ensure!(async_wait::block_on(shmproc::wait_async(&objects)) == [1]);
    ensure!(setter.join()? == 0);
    Ok(())
}

/// `recv_async` on a pipe end: every message once, in order, with futures
/// dropped while pending in between; then end of file when the child (the
/// only sender) exits.
fn pipe_recv_async_from_a_child() -> TestResult {
    let (tx, rx) = shmproc::Pipe::<u64>::oneway()?;
    let mut child = Process::builder().allow_threaded_fork(true).spawn(move || {
        for i in 0..3000u64 {
            tx.send(&i).unwrap();
            if i % 500 == 499 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    })?;
    let waker = std::task::Waker::from(Arc::new(NoWake));
    let mut cx = std::task::Context::from_waker(&waker);
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    let (mut next, mut dropped) = (0u64, 0u64);
    while next < 3000 {
        if next % 7 == 3 {
            // Polled once, then dropped unless it resolved.
            let mut f = Box::pin(rx.recv_async());
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                ensure!(v? == next);
                next += 1;
            } else {
                dropped += 1;
            }
            continue;
        }
        let v = rt.block_on(async { tokio::time::timeout(HANG_LIMIT, rx.recv_async()).await })??;
        ensure!(v == next, "got {v}, expected {next}");
        next += 1;
    }
    ensure!(child.join()? == 0);
    ensure!(async_wait::block_on(rx.recv_async()) == Err(RecvError::Disconnected));
    println!("3000 received, {dropped} futures dropped pending");
    Ok(())
}

/// `send_async` on a pipe end into a small ring that a slow child drains:
/// every message arrives once, in order, though the sender waits for room
/// and futures are dropped while waiting; once the child is gone, the
/// sender gets `Disconnected`.
fn pipe_send_async_waits_for_room_and_sees_the_receiver_go() -> TestResult {
    const N: u64 = 3000;
    let (tx, rx) = shmproc::Pipe::<u64>::oneway_with_capacity(256)?;
    let go = Event::new()?;
    let go2 = go.clone();
    let mut child = Process::builder().allow_threaded_fork(true).spawn(move || {
        go2.wait();
        for i in 0..N {
            if rx.recv().unwrap() != i {
                return 1;
            }
            if i % 300 == 299 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        0
    })?;
    let waker = std::task::Waker::from(Arc::new(NoWake));
    let mut cx = std::task::Context::from_waker(&waker);
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    let (mut next, mut dropped) = (0u64, 0u64);
    // The child does not read yet: fill the ring, then a send must wait, and
    // dropping it there sends nothing.
    while tx.send_timeout(&next, Duration::ZERO).is_ok() {
        next += 1;
    }
    {
        let value = next;
        let mut f = Box::pin(tx.send_async(&value));
        for _ in 0..100 {
            ensure!(f.as_mut().poll(&mut cx).is_pending(), "a send into a full pipe resolved");
        }
        dropped += 1;
    }
    go.set();
    while next < N {
        if next % 5 == 2 {
            // Polled once, then dropped unless it resolved: sends nothing.
            let value = next;
            let mut f = Box::pin(tx.send_async(&value));
            if let std::task::Poll::Ready(r) = f.as_mut().poll(&mut cx) {
                r?;
                next += 1;
            } else {
                dropped += 1;
            }
            continue;
        }
        rt.block_on(async { tokio::time::timeout(HANG_LIMIT, tx.send_async(&next)).await })??;
        next += 1;
    }
    ensure!(child.join_timeout(HANG_LIMIT)? == Some(0), "the child saw a message lost, repeated or out of order");
    // The receiving end is gone with the child: fill the ring, then the
    // send waits for room nobody will make, and ends with Disconnected.
    let gone = rt.block_on(async {
        loop {
            match tokio::time::timeout(HANG_LIMIT, tx.send_async(&0)).await {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => return Ok(e),
                Err(_) => return Err("send_async hung on a pipe without a receiver"),
            }
        }
    })?;
    ensure!(gone == shmproc::SendError::Disconnected, "{gone:?}");
    println!("{N} sent, {dropped} futures dropped pending");
    Ok(())
}

/// `readable_async` on a pipe end (the async `poll`): resolves when a child
/// sends, without taking the message; resolves again once the child is gone
/// (then `recv` says `Disconnected`).
fn pipe_readable_async_waits_without_taking() -> TestResult {
    let (tx, rx) = shmproc::Pipe::<u64>::oneway()?;
    let mut child = Process::builder().allow_threaded_fork(true).spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        tx.send(&5).unwrap();
    })?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    rt.block_on(async { tokio::time::timeout(HANG_LIMIT, rx.readable_async()).await })?;
    ensure!(rx.poll(Duration::ZERO), "resolved with nothing to read");
    ensure!(rx.recv()? == 5);
    ensure!(child.join()? == 0);
    rt.block_on(async { tokio::time::timeout(HANG_LIMIT, rx.readable_async()).await })?;
    ensure!(rx.recv() == Err(RecvError::Disconnected));
    Ok(())
}

fn sets_after_a_while(e: Event) {
    std::thread::sleep(Duration::from_millis(30));
    e.set();
}

fn square(x: u64) -> u64 {
    x * x
}

/// A child forked from a process whose helper threads are running has none
/// of them: its first async wait starts its own.
fn helper_rebuilt_after_fork() -> TestResult {
    // Make sure this process has a helper thread.
    let warm = Event::new()?;
    let w2 = warm.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        w2.set();
    });
    ensure!(async_wait::block_on(warm.wait_async()));
    t.join().map_err(|_| "setter panicked")?;
    ensure!(helper_threads_in_proc() >= 1);
    let go = Event::new()?;
    let (tx, rx) = Queue::<u64>::bounded(4)?.into_split();
    let g2 = go.clone();
    let mut child = Process::builder().allow_threaded_fork(true).spawn(move || {
        assert_eq!(helper_threads_in_proc(), 0, "helper threads inherited");
        assert!(async_wait::block_on(g2.wait_async()));
        assert!(helper_threads_in_proc() >= 1 || async_wait::backend() == Backend::Poll);
        tx.send(&7).unwrap();
    })?;
    std::thread::sleep(Duration::from_millis(50));
    go.set();
    ensure!(rx.recv_timeout(HANG_LIMIT)? == 7);
    ensure!(child.join()? == 0);
    Ok(())
}

/// Re-executes this binary with `SHMPROC_ASYNC_POLL=1`: every other test
/// again, on the polling fallback.
fn poll_fallback_passes_the_same_suite() -> TestResult {
    if std::env::var_os("SHMPROC_ASYNC_POLL").is_some() {
        return Ok(());
    }
    let out = std::process::Command::new(std::env::current_exe()?)
        .env("SHMPROC_ASYNC_POLL", "1")
        .args(["--skip", "poll_fallback_passes_the_same_suite"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    ensure!(out.status.success(), "fallback run failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    ensure!(text.contains("async backend: Poll"), "the fallback run did not poll");
    Ok(())
}

fn main() {
    shmproc_tests::run(trials![
        expected_backend_is_in_use,
        tokio_task_receives_from_forked_producer,
        helper_rebuilt_after_fork,
        dropped_futures_leave_nothing_behind,
        a_leaked_future_keeps_its_word_mapped,
        semaphore_wake_absorbed_by_a_dropped_future_is_passed_on,
        mutex_lock_async_excludes_across_processes_and_tasks,
        barrier_wait_async_meets_processes_and_a_dropped_wait_breaks_it,
        barrier_wait_async_runs_the_action_and_keeps_the_timeout,
        million_messages_exactly_once_through_send_async_and_recv_async,
        random_cancellation_loses_nothing,
        killed_producer_gives_disconnected,
        ten_thousand_futures_few_threads_no_fds,
        event_join_and_pool_results_as_futures,
        joinable_join_async_waits_for_task_done,
        joinable_send_and_recv_async_keep_the_count,
        stream_and_wait_async_over_many_objects,
        pipe_recv_async_from_a_child,
        pipe_send_async_waits_for_room_and_sees_the_receiver_go,
        pipe_readable_async_waits_without_taking,
        poll_fallback_passes_the_same_suite,
    ]);
}
