//! The process pool: results, order, callbacks, panics, dying workers,
//! terminate, max_tasks_per_child, spawn mode.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shmproc::{Pool, TaskError};
use shmproc_tests::{ensure, eventually, is_gone, proc_state, trials, TestResult, HANG_LIMIT};

fn square(x: u64) -> u64 {
    x * x
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn my_pid(_: u8) -> u32 {
    std::process::id()
}

fn maybe_panic(x: u32) -> u32 {
    if x == 3 {
        panic!("task {x} failed on purpose");
    }
    x
}

fn abort_on(x: u32) -> u32 {
    if x == 1 {
        std::process::abort();
    }
    std::thread::sleep(Duration::from_millis(5));
    x * 10
}

fn sleep_then(x: u32) -> u32 {
    std::thread::sleep(Duration::from_millis(u64::from(x)));
    x
}

fn map_100k_is_correct_and_ordered() -> TestResult {
    let pool = Pool::new(2)?;
    let out = pool.map(square, 0..100_000u64)?;
    ensure!(out.len() == 100_000);
    ensure!(out.iter().enumerate().all(|(i, &v)| v == (i as u64) * (i as u64)), "wrong or out of order");
    ensure!(pool.starmap(add, vec![(1, 2), (3, 4), (5, 6)])? == vec![3, 7, 11]);
    let imap: Vec<u64> = pool.imap(square, 0..20u64).collect::<Result<_, _>>()?;
    ensure!(imap == (0..20u64).map(|x| x * x).collect::<Vec<_>>());
    let mut unordered: Vec<u32> = pool.imap_unordered(sleep_then, [30u32, 1, 20, 2]).collect::<Result<_, _>>()?;
    unordered.sort_unstable();
    ensure!(unordered == vec![1, 2, 20, 30]);
    ensure!(pool.apply(square, 12)? == 144);
    Ok(())
}

/// `imap` of an endless iterator returns and streams (items taken as
/// results are); of a finite one, every task is submitted at once, so
/// `close` and `join` before iterating still run them all (as in Python).
fn imap_takes_endless_input_lazily_and_finite_input_at_once() -> TestResult {
    let pool = shmproc::Pool::new(2)?;
    let first: Vec<u64> = pool.imap(square, 0u64..).take(300).collect::<Result<_, _>>()?;
    ensure!(first == (0..300u64).map(|x| x * x).collect::<Vec<_>>());
    let mut next = 0u64;
    let endless = std::iter::from_fn(move || {
        next += 1;
        Some(next)
    });
    let mut some: Vec<u64> = pool.imap_unordered(square, endless).take(100).collect::<Result<_, _>>()?;
    some.sort_unstable();
    some.dedup();
    ensure!(some.len() == 100 && some.iter().all(|&v| ((v as f64).sqrt().round() as u64).pow(2) == v), "{some:?}");
    // Closed while an endless imap is read: one `Closed`, then the end.
    let mut endless = pool.imap(square, 0u64..);
    ensure!(endless.next().transpose()? == Some(0));
    let finite = pool.imap(square, (0..500u64).collect::<Vec<_>>());
    pool.close();
    pool.join()?;
    let all: Vec<u64> = finite.collect::<Result<_, _>>()?;
    ensure!(all == (0..500u64).map(|x| x * x).collect::<Vec<_>>());
    let rest: Vec<_> = endless.by_ref().take(1000).collect();
    ensure!(rest.len() < 1000, "an endless imap of a closed pool never ended");
    ensure!(matches!(rest.last(), Some(Err(shmproc::TaskError::Closed))), "{:?}", rest.last());
    Ok(())
}

fn every_callback_fires_once() -> TestResult {
    let pool = Pool::new(2)?;
    let ok = Arc::new(AtomicUsize::new(0));
    let err = Arc::new(AtomicUsize::new(0));
    let mut pending = Vec::new();
    for x in 0..50u32 {
        let (ok, err) = (ok.clone(), err.clone());
        pending.push(pool.apply_async_with(
            maybe_panic,
            x,
            move |_v| {
                ok.fetch_add(1, Ordering::SeqCst);
            },
            move |_e| {
                err.fetch_add(1, Ordering::SeqCst);
            },
        )?);
    }
    pool.close();
    pool.join()?;
    ensure!(ok.load(Ordering::SeqCst) == 49, "ok callbacks: {}", ok.load(Ordering::SeqCst));
    ensure!(err.load(Ordering::SeqCst) == 1, "error callbacks: {}", err.load(Ordering::SeqCst));
    // Asking again does not run callbacks again.
    for p in &pending {
        p.wait();
    }
    ensure!(ok.load(Ordering::SeqCst) == 49 && err.load(Ordering::SeqCst) == 1);
    ensure!(pending.iter().filter(|p| p.successful() == Some(false)).count() == 1);
    Ok(())
}

fn callbacks_may_call_into_the_pool() -> TestResult {
    let pool = Arc::new(Pool::new(2)?);
    let chained = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (p2, c2) = (pool.clone(), chained.clone());
    let first = pool.apply_async_with(
        square,
        3,
        move |v| {
            // Submitting from a callback must not deadlock.
            let next = p2.apply_async(square, v).expect("submit from a callback");
            c2.lock().unwrap().push(next);
        },
        |_| {},
    )?;
    ensure!(first.get_timeout(HANG_LIMIT)? == 9);
    let next = chained.lock().unwrap().pop().ok_or("callback did not run")?;
    ensure!(next.get_timeout(HANG_LIMIT)? == 81);
    Ok(())
}

fn panicking_task_fails_and_worker_carries_on() -> TestResult {
    let pool = Pool::new(1)?;
    let before = pool.worker_pids();
    match pool.apply(maybe_panic, 3) {
        Err(TaskError::Panicked(msg)) => ensure!(msg.contains("task 3 failed on purpose"), "{msg}"),
        other => return Err(format!("{other:?}").into()),
    }
    ensure!(pool.apply(maybe_panic, 4)? == 4);
    ensure!(pool.worker_pids() == before, "the worker was replaced after a panic");
    Ok(())
}

fn aborting_task_fails_only_itself() -> TestResult {
    let pool = Pool::new(2)?;
    let results: Vec<_> = (0..8u32).map(|x| pool.apply_async(abort_on, x)).collect::<Result<_, _>>()?;
    let mut died = 0;
    for (x, r) in results.iter().enumerate() {
        match r.get_timeout(HANG_LIMIT) {
            Ok(v) => ensure!(v == x as u32 * 10),
            Err(TaskError::WorkerDied { signal, .. }) => {
                ensure!(x == 1, "task {x} failed with WorkerDied");
                ensure!(signal == Some(libc::SIGABRT), "{signal:?}");
                died += 1;
            }
            Err(e) => return Err(format!("task {x}: {e}").into()),
        }
    }
    ensure!(died == 1);
    // The pool replaced the worker and still works.
    ensure!(pool.map(square, 0..100u64)?.len() == 100);
    ensure!(pool.worker_pids().len() == 2);
    Ok(())
}

fn killed_worker_fails_its_task_with_the_signal() -> TestResult {
    let pool = Pool::new(2)?;
    let slow = pool.apply_async(sleep_then, 60_000)?;
    let quick: Vec<_> = (0..10u32).map(|x| pool.apply_async(sleep_then, x)).collect::<Result<_, _>>()?;
    // Find the worker running the slow task: the one that stays busy.
    std::thread::sleep(Duration::from_millis(200));
    for q in &quick {
        q.get_timeout(HANG_LIMIT)?;
    }
    let victims = pool.worker_pids();
    for pid in &victims {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        if slow.wait_timeout(Duration::from_millis(500)) {
            break;
        }
    }
    match slow.get_timeout(HANG_LIMIT) {
        Err(TaskError::WorkerDied { signal: Some(9), .. }) => {}
        other => return Err(format!("{other:?}").into()),
    }
    ensure!(pool.apply(square, 5)? == 25);
    Ok(())
}

fn terminate_leaves_no_child_behind() -> TestResult {
    let pool = Pool::new(2)?;
    let pids = pool.worker_pids();
    let inflight: Vec<_> = (0..6u32).map(|_| pool.apply_async(sleep_then, 30_000)).collect::<Result<_, _>>()?;
    ensure!(eventually(HANG_LIMIT, || pids.iter().all(|&p| proc_state(p) == Some('S'))));
    pool.terminate();
    for r in &inflight {
        ensure!(matches!(r.get_timeout(HANG_LIMIT), Err(TaskError::Closed)));
    }
    ensure!(
        pids.iter().all(|&p| is_gone(p)),
        "workers left behind: {:?}",
        pids.iter().map(|&p| proc_state(p)).collect::<Vec<_>>()
    );
    ensure!(matches!(pool.apply(square, 1), Err(TaskError::Closed)));
    Ok(())
}

fn max_tasks_per_child_gives_fresh_workers() -> TestResult {
    let pool = Pool::builder().processes(1).max_tasks_per_child(1).build()?;
    let mut pids = Vec::new();
    for _ in 0..4 {
        pids.push(pool.apply(my_pid, 0)?);
    }
    pids.sort_unstable();
    pids.dedup();
    ensure!(pids.len() == 4, "pids reused: {pids:?}");
    Ok(())
}

static INITIALISED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn init_worker() {
    INITIALISED.store(42, Ordering::SeqCst);
}

fn read_init(_: u8) -> u32 {
    INITIALISED.load(Ordering::SeqCst)
}

fn initializer_runs_in_every_worker() -> TestResult {
    for spawn in [false, true] {
        let pool = Pool::builder().processes(2).initializer(init_worker).spawn_mode(spawn).build()?;
        let seen = pool.map(read_init, vec![0u8; 16])?;
        ensure!(seen.iter().all(|&v| v == 42), "spawn mode {spawn}: {seen:?}");
    }
    ensure!(INITIALISED.load(Ordering::SeqCst) == 0, "the initializer ran in the parent");
    Ok(())
}

fn spawn_mode_pool_works() -> TestResult {
    let pool = Pool::builder().processes(2).spawn_mode(true).build()?;
    ensure!(pool.map(square, 0..1000u64)?.iter().sum::<u64>() == (0..1000u64).map(|x| x * x).sum::<u64>());
    ensure!(matches!(pool.apply(maybe_panic, 3), Err(TaskError::Panicked(_))));
    pool.close();
    pool.join()?;
    Ok(())
}

/// A word count per document: a `HashMap<String, u64>` result that is far
/// larger than the pool's default in-slot size.
fn word_count(doc: Vec<String>) -> std::collections::HashMap<String, u64> {
    let mut counts = std::collections::HashMap::new();
    for w in doc {
        *counts.entry(w).or_insert(0) += 1;
    }
    counts
}

fn zeros(n: usize) -> Vec<u8> {
    vec![0; n]
}

fn total(v: Vec<u8>) -> usize {
    v.len()
}

/// Arguments and results of any size with the default configuration (the
/// in-slot size is 8 KiB): large ones travel out of line both ways.
fn large_arguments_and_results_with_the_defaults() -> TestResult {
    let pool = Pool::new(2)?;
    let docs: Vec<Vec<String>> =
        (0..6).map(|d| (0..20_000).map(|i| format!("word{}", (i * 7 + d) % 5_000)).collect()).collect();
    let counts = pool.map(word_count, docs)?;
    ensure!(counts.len() == 6);
    ensure!(counts.iter().all(|c| c.len() == 5_000 && c.values().sum::<u64>() == 20_000));
    ensure!(pool.apply(zeros, 16 << 20)?.len() == 16 << 20);
    ensure!(pool.apply(total, vec![1u8; 16 << 20])? == 16 << 20);
    Ok(())
}

fn main() {
    shmproc_tests::run(trials![
        large_arguments_and_results_with_the_defaults,
        map_100k_is_correct_and_ordered,
        imap_takes_endless_input_lazily_and_finite_input_at_once,
        every_callback_fires_once,
        callbacks_may_call_into_the_pool,
        panicking_task_fails_and_worker_carries_on,
        aborting_task_fails_only_itself,
        killed_worker_fails_its_task_with_the_signal,
        terminate_leaves_no_child_behind,
        max_tasks_per_child_gives_fresh_workers,
        initializer_runs_in_every_worker,
        spawn_mode_pool_works,
    ]);
}
