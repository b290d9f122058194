//! Locks: uncontended lock+unlock beside parking_lot and std, and a
//! two-process hand-off (semaphore ping-pong on the shared futex) beside a
//! pipe-token ping-pong. Prints the ratios at the end.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, Criterion};
use shmproc::{Mutex, Process, Semaphore};
use shmproc_benches::{pipe, pipe_roundtrip, report};

fn uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("uncontended_lock_unlock");
    let shm = Mutex::new(0u64).expect("mutex");
    g.bench_function("shmproc_mutex", |b| {
        b.iter(|| {
            let mut guard = shm.lock().unwrap_or_else(|e| e.into_inner());
            *guard += 1;
            black_box(&*guard);
        })
    });
    let pl = parking_lot::Mutex::new(0u64);
    g.bench_function("parking_lot_mutex", |b| {
        b.iter(|| {
            let mut guard = pl.lock();
            *guard += 1;
            black_box(&*guard);
        })
    });
    let st = std::sync::Mutex::new(0u64);
    g.bench_function("std_mutex", |b| {
        b.iter(|| {
            let mut guard = st.lock().unwrap();
            *guard += 1;
            black_box(&*guard);
        })
    });
    g.finish();
}

fn handoff(c: &mut Criterion) {
    let mut g = c.benchmark_group("two_process_handoff");
    // shmproc: semaphore ping-pong between two processes.
    let ping = Semaphore::new(0).expect("sem");
    let pong = Semaphore::new(0).expect("sem");
    let (p2, q2) = (ping.clone(), pong.clone());
    let child = Process::builder()
        .allow_threaded_fork(true)
        .spawn(move || -> () {
            loop {
                p2.acquire();
                let _ = q2.release();
            }
        })
        .expect("child");
    g.bench_function("shmproc_semaphore", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let _ = ping.release();
                pong.acquire();
            }
            start.elapsed()
        })
    });
    let _ = child.kill();
    // Baseline: a one-byte token over two pipes.
    let (mut a_rx, mut a_tx) = pipe();
    let (mut b_rx, mut b_tx) = pipe();
    let child = Process::builder()
        .allow_threaded_fork(true)
        .spawn(move || -> () {
            loop {
                pipe_roundtrip_child(&mut a_rx, &mut b_tx);
            }
        })
        .expect("child");
    g.bench_function("pipe_token", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                pipe_roundtrip(&mut a_tx, &mut b_rx);
            }
            start.elapsed()
        })
    });
    let _ = child.kill();
    g.finish();
}

fn pipe_roundtrip_child(rx: &mut std::fs::File, tx: &mut std::fs::File) {
    use std::io::{Read, Write};
    let mut b = [0u8; 1];
    if rx.read_exact(&mut b).is_err() || tx.write_all(&b).is_err() {
        std::process::exit(0);
    }
}

criterion_group! { name = benches; config = shmproc_benches::criterion_config(30); targets = uncontended, handoff }

fn main() {
    shmproc::init();
    benches();
    Criterion::default().configure_from_args().final_summary();
    report(
        "locks",
        &[
            ("uncontended_lock_unlock", "shmproc_mutex", "parking_lot_mutex"),
            ("uncontended_lock_unlock", "shmproc_mutex", "std_mutex"),
            ("two_process_handoff", "shmproc_semaphore", "pipe_token"),
        ],
    );
}
