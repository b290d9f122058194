//! `async` waits between processes (issue #16), in the same run as their
//! baselines:
//!
//! * one-way latency by ping-pong between two processes, each side a tokio
//!   current-thread runtime: `recv_async`/`send_async` on two shmproc
//!   queues, against a ping-pong over two pipes with tokio's `AsyncFd`
//!   (epoll), and against the blocking shmproc queues (`recv`/`send`);
//! * `Queue<u64>` throughput from a child producer (`send_async`) to a tokio
//!   consumer (`recv_async`), against the blocking `send`/`recv`.
//!
//! Prints the ratios at the end (targets: async latency at most half the
//! tokio pipe's; async throughput at least half the blocking path's).

use std::hint::black_box;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use shmproc::{Event, Process, Queue};
use shmproc_benches::report;
use tokio::io::unix::AsyncFd;

fn fork(f: impl FnOnce() + 'static) -> Process {
    Process::builder().allow_threaded_fork(true).spawn(f).expect("fork")
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn queue() -> Queue<u64> {
    Queue::<u64>::builder().capacity(16).message_size(16).build().expect("queue")
}

/// Round trips through two queues awaited on tokio in both processes;
/// returns the time for `iters` one-way hops.
fn async_pingpong(iters: u64) -> Duration {
    let (req, resp) = (queue(), queue());
    let (rq, rs) = (req.clone(), resp.clone());
    let rounds = iters.div_ceil(2);
    let mut child = fork(move || {
        current_thread().block_on(async move {
            for _ in 0..rounds {
                let v = rq.recv_async().await.expect("recv");
                rs.send_async(&(v + 1)).await.expect("send");
            }
        });
    });
    let rt = current_thread();
    let t = rt.block_on(async move {
        let start = Instant::now();
        for i in 0..rounds {
            req.send_async(&i).await.expect("send");
            black_box(resp.recv_async().await.expect("recv"));
        }
        start.elapsed()
    });
    child.join().expect("join");
    t
}

/// The same with the blocking calls.
fn sync_pingpong(iters: u64) -> Duration {
    let (req, resp) = (queue(), queue());
    let (rq, rs) = (req.clone(), resp.clone());
    let rounds = iters.div_ceil(2);
    let mut child = fork(move || {
        for _ in 0..rounds {
            let v = rq.recv().expect("recv");
            rs.send(&(v + 1)).expect("send");
        }
    });
    let start = Instant::now();
    for i in 0..rounds {
        req.send(&i).expect("send");
        black_box(resp.recv().expect("recv"));
    }
    let t = start.elapsed();
    child.join().expect("join");
    t
}

/// A non-blocking pipe (read end, write end).
fn nonblocking_pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = shmproc_benches::pipe();
    for f in [&r, &w] {
        // SAFETY: F_SETFL on a descriptor we own.
        unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    }
    (OwnedFd::from(r), OwnedFd::from(w))
}

async fn fd_write(fd: &AsyncFd<OwnedFd>, b: &[u8; 8]) {
    loop {
        let mut guard = fd.writable().await.expect("writable");
        // SAFETY: writing 8 bytes from a live buffer to our descriptor.
        match guard.try_io(|f| {
            let n = unsafe { libc::write(f.as_raw_fd(), b.as_ptr().cast(), 8) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n)
            }
        }) {
            Ok(Ok(8)) => return,
            Ok(r) => panic!("pipe write: {r:?}"),
            Err(_would_block) => continue,
        }
    }
}

async fn fd_read(fd: &AsyncFd<OwnedFd>, b: &mut [u8; 8]) {
    loop {
        let mut guard = fd.readable().await.expect("readable");
        // SAFETY: reading at most 8 bytes into a live buffer.
        match guard.try_io(|f| {
            let n = unsafe { libc::read(f.as_raw_fd(), b.as_mut_ptr().cast(), 8) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n)
            }
        }) {
            Ok(Ok(8)) => return,
            Ok(r) => panic!("pipe read: {r:?}"),
            Err(_would_block) => continue,
        }
    }
}

/// Registers an owned pipe end with the current runtime's reactor.
fn register(fd: OwnedFd) -> AsyncFd<OwnedFd> {
    // SAFETY: the `OwnedFd` is moved into the `AsyncFd`, so the descriptor
    // stays open and the same until the `AsyncFd` drops it.
    unsafe { AsyncFd::register(fd) }.map_err(|_| "register").expect("asyncfd")
}

/// Round trips over two pipes with tokio's `AsyncFd` in both processes.
fn tokio_pipe_pingpong(iters: u64) -> Duration {
    let (r1, w1) = nonblocking_pipe();
    let (r2, w2) = nonblocking_pipe();
    let rounds = iters.div_ceil(2);
    let mut child = fork(move || {
        current_thread().block_on(async move {
            let (r, w) = (register(r1), register(w2));
            let mut b = [0u8; 8];
            for _ in 0..rounds {
                fd_read(&r, &mut b).await;
                fd_write(&w, &b).await;
            }
        });
    });
    let rt = current_thread();
    let t = rt.block_on(async move {
        let (r, w) = (register(r2), register(w1));
        let mut b = [0u8; 8];
        let start = Instant::now();
        for i in 0..rounds {
            fd_write(&w, &i.to_le_bytes()).await;
            fd_read(&r, &mut b).await;
        }
        start.elapsed()
    });
    child.join().expect("join");
    t
}

/// `iters` messages from a child producer to this process, async on both
/// sides (`async_`) or blocking.
fn spsc(iters: u64, async_: bool) -> Duration {
    let (tx, rx) = Queue::<u64>::builder().capacity(4096).build().expect("queue").into_split();
    let go = Event::new().expect("event");
    let g = go.clone();
    let mut child = fork(move || {
        g.wait();
        if async_ {
            current_thread().block_on(async move {
                for i in 0..iters {
                    tx.send_async(&i).await.expect("send");
                }
            });
        } else {
            for i in 0..iters {
                tx.send(&i).expect("send");
            }
        }
    });
    let t = if async_ {
        let rt = current_thread();
        rt.block_on(async move {
            go.set();
            let start = Instant::now();
            for _ in 0..iters {
                black_box(rx.recv_async().await.expect("recv"));
            }
            start.elapsed()
        })
    } else {
        go.set();
        let start = Instant::now();
        for _ in 0..iters {
            black_box(rx.recv().expect("recv"));
        }
        start.elapsed()
    };
    child.join().expect("join");
    t
}

fn latency(c: &mut Criterion) {
    let mut g = c.benchmark_group("async_one_way_latency");
    g.bench_function("shmproc_async", |b| b.iter_custom(async_pingpong));
    g.bench_function("tokio_pipe", |b| b.iter_custom(tokio_pipe_pingpong));
    g.bench_function("shmproc_blocking", |b| b.iter_custom(sync_pingpong));
    g.finish();
}

fn throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("async_spsc_u64");
    g.throughput(Throughput::Elements(1));
    g.bench_function("shmproc_async", |b| b.iter_custom(|n| spsc(n, true)));
    g.bench_function("shmproc_blocking", |b| b.iter_custom(|n| spsc(n, false)));
    g.finish();
}

criterion_group! { name = benches; config = shmproc_benches::criterion_config(20); targets = latency, throughput }

fn main() {
    shmproc::init();
    benches();
    Criterion::default().configure_from_args().final_summary();
    report(
        "async",
        &[
            ("async_one_way_latency", "shmproc_async", "tokio_pipe"),
            ("async_one_way_latency", "shmproc_async", "shmproc_blocking"),
            ("async_spsc_u64", "shmproc_async", "shmproc_blocking"),
        ],
    );
}
