//! Pool parity with CPython's own pool tests (issue #15): `processes(0)`,
//! submitting never blocks, close + max_tasks_per_child drains the queue,
//! map_async / starmap_async with callbacks, chunksize, an initializer with
//! an argument, and a per-call context (`functools.partial`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shmproc::{Pool, PoolError, TaskError};
use shmproc_tests::{ensure, eventually, is_gone, trials, TestResult, HANG_LIMIT};

fn square(x: u64) -> u64 {
    x * x
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn div(a: u64, b: u64) -> u64 {
    a / b
}

fn my_pid(_: u32) -> u32 {
    std::process::id()
}

fn sleep_then(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Counts calls in this worker process: with `max_tasks_per_child(1)` every
/// chunk runs in a fresh worker, so the results show the chunk boundaries.
static CALLS: AtomicU64 = AtomicU64::new(0);

fn call_number(_: u32) -> u64 {
    CALLS.fetch_add(1, Ordering::SeqCst)
}

fn call_number2(_: u32, _: u32) -> u64 {
    CALLS.fetch_add(1, Ordering::SeqCst)
}

fn zero_processes_is_an_error() -> TestResult {
    ensure!(matches!(Pool::new(0), Err(PoolError::NoWorkers)));
    ensure!(matches!(Pool::builder().processes(0).build(), Err(PoolError::NoWorkers)));
    ensure!(Pool::new(1)?.worker_pids().len() == 1);
    Ok(())
}

/// 10,000 submissions of tasks that never finish in time: none blocks (the
/// backlog waits in the parent), so `terminate` is reached at once and the
/// workers are gone. The pool lives on a helper thread so that a blocking
/// submission fails the test instead of hanging it.
fn submitting_never_blocks_and_terminate_is_reachable() -> TestResult {
    let pool = Pool::new(2)?;
    let pids = pool.worker_pids();
    let (tx, rx) = std::sync::mpsc::channel();
    let submitter = std::thread::spawn(move || {
        let mut pending = Vec::new();
        for _ in 0..10_000 {
            match pool.apply_async(sleep_then, 60_000) {
                Ok(r) => pending.push(r),
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            }
        }
        let _ = tx.send(Ok(()));
        pool.terminate();
        let closed = pending.iter().filter(|r| matches!(r.get_timeout(HANG_LIMIT), Err(TaskError::Closed))).count();
        let _ = tx.send(if closed == pending.len() { Ok(()) } else { Err(format!("{closed} of 10000 Closed")) });
    });
    match rx.recv_timeout(HANG_LIMIT) {
        Ok(r) => r?,
        Err(_) => return Err("apply_async blocked on a full task ring".into()),
    }
    match rx.recv_timeout(HANG_LIMIT) {
        Ok(r) => r?,
        Err(_) => return Err("terminate did not return".into()),
    }
    submitter.join().map_err(|_| "the submitting thread panicked")?;
    ensure!(eventually(HANG_LIMIT, || pids.iter().all(|&p| is_gone(p))), "workers left behind");
    Ok(())
}

/// CPython's bpo-10332: after `close`, workers that reach
/// `max_tasks_per_child` are still replaced while tasks wait, so every task
/// runs and `join` returns.
fn close_with_max_tasks_per_child_runs_every_task() -> TestResult {
    let pool = Pool::builder().processes(2).max_tasks_per_child(1).build()?;
    let pending: Vec<_> = (0..20u32).map(|x| pool.apply_async(my_pid, x)).collect::<Result<_, _>>()?;
    pool.close();
    let mut pids = Vec::new();
    for (i, r) in pending.iter().enumerate() {
        match r.get_timeout(HANG_LIMIT) {
            Ok(pid) => pids.push(pid),
            Err(e) => return Err(format!("task {i}: {e}").into()),
        }
    }
    pool.join()?;
    pids.sort_unstable();
    pids.dedup();
    ensure!(pids.len() == 20, "a worker ran more than one task: {} pids", pids.len());
    ensure!(pool.worker_pids().is_empty());
    Ok(())
}

fn map_async_and_starmap_async_with_callbacks() -> TestResult {
    let pool = Pool::new(2)?;
    // Plain forms.
    let m = pool.map_async(square, 0..1000u64)?;
    let s = pool.starmap_async(add, (0..100u64).map(|x| (x, 1)))?;
    ensure!(m.get()? == (0..1000u64).map(|x| x * x).collect::<Vec<_>>());
    ensure!(m.successful() == Some(true) && m.ready());
    ensure!(s.get_timeout(HANG_LIMIT)? == (1..101u64).collect::<Vec<_>>());

    // Callbacks: the whole list once, in order; no error callback.
    let got = Arc::new(Mutex::new(Vec::new()));
    let (calls, errs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (g, c, e) = (got.clone(), calls.clone(), errs.clone());
    let m = pool.map_async_with(
        square,
        0..500u64,
        Some(7),
        move |v| {
            c.fetch_add(1, Ordering::SeqCst);
            *g.lock().unwrap() = v;
        },
        move |_| {
            e.fetch_add(1, Ordering::SeqCst);
        },
    )?;
    ensure!(m.wait_timeout(HANG_LIMIT));
    ensure!(calls.load(Ordering::SeqCst) == 1 && errs.load(Ordering::SeqCst) == 0);
    ensure!(*got.lock().unwrap() == (0..500u64).map(|x| x * x).collect::<Vec<_>>());

    // A failing chunk: the error callback once, with the failure; no callback.
    let first_err = Arc::new(Mutex::new(None));
    let (calls, errs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, e, fe) = (calls.clone(), errs.clone(), first_err.clone());
    let items: Vec<(u64, u64)> = (0..40u64).map(|x| (x, if x % 10 == 3 { 0 } else { 1 })).collect();
    let s = pool.starmap_async_with(
        div,
        items,
        Some(5),
        move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        },
        move |err| {
            e.fetch_add(1, Ordering::SeqCst);
            *fe.lock().unwrap() = Some(err.clone());
        },
    )?;
    ensure!(s.wait_timeout(HANG_LIMIT));
    ensure!(matches!(s.get(), Err(TaskError::Panicked(_))));
    ensure!(s.successful() == Some(false));
    ensure!(calls.load(Ordering::SeqCst) == 0, "callback ran despite a failure");
    ensure!(errs.load(Ordering::SeqCst) == 1, "error callbacks: {}", errs.load(Ordering::SeqCst));
    ensure!(matches!(*first_err.lock().unwrap(), Some(TaskError::Panicked(_))));

    // No items: the callback at once with nothing.
    let empty = Arc::new(AtomicUsize::new(0));
    let e2 = empty.clone();
    let r =
        pool.map_async_with(square, Vec::<u64>::new(), None, move |v| e2.store(v.len() + 1, Ordering::SeqCst), |_| {})?;
    ensure!(r.get()?.is_empty() && empty.load(Ordering::SeqCst) == 1);
    pool.close();
    pool.join()?;
    Ok(())
}

fn chunksize_sets_the_chunks() -> TestResult {
    // One worker per chunk: the call numbers restart at each chunk boundary.
    let pool = Pool::builder().processes(1).max_tasks_per_child(1).build()?;
    let expect: Vec<u64> = (0..10u64).map(|i| i % 4).collect();
    ensure!(pool.map_chunked(call_number, 0..10u32, 4)? == expect, "map_chunked");
    ensure!(pool.starmap_chunked(call_number2, (0..10u32).map(|x| (x, x)), 4)? == expect, "starmap_chunked");
    let imap: Vec<u64> = pool.imap_chunked(call_number, 0..10u32, 4).collect::<Result<_, _>>()?;
    ensure!(imap == expect, "imap_chunked: {imap:?}");
    let mut unordered: Vec<u64> = pool.imap_unordered_chunked(call_number, 0..10u32, 4).collect::<Result<_, _>>()?;
    unordered.sort_unstable();
    ensure!(unordered == vec![0, 0, 0, 1, 1, 1, 2, 2, 3, 3], "imap_unordered_chunked: {unordered:?}");
    let r = pool.map_async_with(call_number, 0..10u32, Some(3), |_| {}, |_| {})?;
    ensure!(r.get()? == (0..10u64).map(|i| i % 3).collect::<Vec<_>>(), "map_async_with chunksize");
    // Chunk size 1: every item in its own worker.
    ensure!(pool.map_chunked(call_number, 0..5u32, 1)? == vec![0; 5]);
    ensure!(pool.map_chunked(call_number, 0..3u32, 0)? == vec![0; 3], "chunksize 0 is taken as 1");
    ensure!(CALLS.load(Ordering::SeqCst) == 0, "ran in the parent");
    Ok(())
}

static SCALE: AtomicU64 = AtomicU64::new(1);
static TAG_LEN: AtomicU64 = AtomicU64::new(0);

fn set_scale((scale, tag): (u64, String)) {
    SCALE.store(scale, Ordering::SeqCst);
    TAG_LEN.store(tag.len() as u64, Ordering::SeqCst);
}

fn scaled(x: u64) -> (u64, u64) {
    (x * SCALE.load(Ordering::SeqCst), TAG_LEN.load(Ordering::SeqCst))
}

fn initializer_with_an_argument() -> TestResult {
    for spawn in [false, true] {
        for max_tasks in [0, 1] {
            let pool = Pool::builder()
                .processes(2)
                .spawn_mode(spawn)
                .max_tasks_per_child(max_tasks)
                .initializer_with(set_scale, (7, "abcde".to_string()))?
                .build()?;
            let out = pool.map(scaled, 0..20u64)?;
            ensure!(
                out == (0..20u64).map(|x| (7 * x, 5)).collect::<Vec<_>>(),
                "spawn {spawn}, max_tasks {max_tasks}: {out:?}"
            );
        }
    }
    ensure!(SCALE.load(Ordering::SeqCst) == 1, "the initializer ran in the parent");
    Ok(())
}

#[derive(shmproc::rkyv::Archive, shmproc::rkyv::Serialize, shmproc::rkyv::Deserialize, Debug)]
#[rkyv(crate = shmproc::rkyv)]
struct Ctx {
    offset: u64,
    table: Vec<u64>,
}

fn lookup(ctx: &Ctx, i: u64) -> u64 {
    ctx.offset + ctx.table[i as usize % ctx.table.len()]
}

fn map_with_passes_a_context() -> TestResult {
    let pool = Pool::new(2)?;
    let ctx = Ctx { offset: 1000, table: (0..50).map(|x| x * 3).collect() };
    let out = pool.map_with(&ctx, lookup, 0..10_000u64)?;
    ensure!(out == (0..10_000u64).map(|i| 1000 + (i % 50) * 3).collect::<Vec<_>>());
    // A context far larger than a message slot travels too.
    let big = Ctx { offset: 1, table: (0..100_000).collect() };
    ensure!(pool.map_with(&big, lookup, [5u64, 99_999])? == vec![6, 100_000]);
    ensure!(pool.map_with(&ctx, lookup, Vec::<u64>::new())?.is_empty());
    Ok(())
}

fn main() {
    shmproc_tests::run(trials![
        zero_processes_is_an_error,
        submitting_never_blocks_and_terminate_is_reachable,
        close_with_max_tasks_per_child_runs_every_task,
        map_async_and_starmap_async_with_callbacks,
        chunksize_sets_the_chunks,
        initializer_with_an_argument,
        map_with_passes_a_context,
    ]);
}
