//! Queues and pipes between processes beside a pipe-based queue and a
//! unix-socket queue, in the same run: SPSC throughput for u64, 64 B and
//! 1 KiB messages, SPSC throughput for 64 KiB and 4 MiB `Vec<u8>` messages
//! (against the pipe queue), MPMC 2 producers / 2 consumers, and one-way
//! latency by ping-pong (blocking and spinning). Prints the ratios at the end.

use std::hint::black_box;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use shmproc::{Event, Process, Queue, TryRecvError};
use shmproc_benches::stream_queue::{StreamReceiver, StreamSender};
use shmproc_benches::{pipe, report};

fn fork(f: impl FnOnce() + 'static) -> Process {
    Process::builder().allow_threaded_fork(true).spawn(f).expect("fork")
}

/// Times `iters` messages from a child producer to this process.
fn shm_spsc<T: shmproc::Message + Clone + 'static>(iters: u64, msg: T, message_size: usize) -> Duration {
    shm_spsc_in(iters, msg, Queue::<T>::builder().capacity(4096).message_size(message_size))
}

/// [`shm_spsc`] through a queue built by `b` (the slot ring, say).
fn shm_spsc_in<T: shmproc::Message + Clone + 'static>(iters: u64, msg: T, b: shmproc::QueueBuilder<T>) -> Duration {
    let q = b.build().expect("queue");
    let (tx, rx) = q.into_split();
    let go = Event::new().expect("event");
    let g = go.clone();
    let mut child = fork(move || {
        g.wait();
        for _ in 0..iters {
            tx.send(&msg).expect("send");
        }
    });
    go.set();
    let start = Instant::now();
    for _ in 0..iters {
        black_box(rx.recv().expect("recv"));
    }
    let t = start.elapsed();
    child.join().expect("join");
    t
}

/// The same through a one-way `Pipe` (the SPSC byte ring).
fn shm_pipe<T: shmproc::Message + Clone + 'static>(iters: u64, msg: T) -> Duration {
    let (tx, rx) = shmproc::Pipe::<T>::oneway().expect("pipe");
    let go = Event::new().expect("event");
    let g = go.clone();
    let mut child = fork(move || {
        g.wait();
        for _ in 0..iters {
            tx.send(&msg).expect("send");
        }
    });
    go.set();
    let start = Instant::now();
    for _ in 0..iters {
        black_box(rx.recv().expect("recv"));
    }
    let t = start.elapsed();
    child.join().expect("join");
    t
}

/// Times `iters` u64s in batches of `batch` from a child (`send` takes a
/// batch) to this process (`recv` appends up to the given count).
fn batches_between(
    iters: u64,
    batch: usize,
    mut send: impl FnMut(&[u64]) + 'static,
    mut recv: impl FnMut(&mut Vec<u64>, usize) -> usize,
) -> Duration {
    let go = Event::new().expect("event");
    let g = go.clone();
    let mut child = fork(move || {
        let msgs = vec![42u64; batch];
        g.wait();
        let mut left = iters as usize;
        while left > 0 {
            let n = left.min(batch);
            send(&msgs[..n]);
            left -= n;
        }
    });
    go.set();
    let mut got = Vec::with_capacity(batch);
    let start = Instant::now();
    let mut left = iters as usize;
    while left > 0 {
        got.clear();
        left -= recv(&mut got, batch.min(left));
        black_box(&got);
    }
    let t = start.elapsed();
    child.join().expect("join");
    t
}

/// [`shm_spsc`] in batches of `batch`: `send_batch` and `recv_batch`.
fn shm_spsc_batch(iters: u64, batch: usize) -> Duration {
    let q = Queue::<u64>::builder().capacity(4096).message_size(16).build().expect("queue");
    let (tx, rx) = q.into_split();
    batches_between(
        iters,
        batch,
        move |b| tx.send_batch(b).expect("send"),
        move |out, max| rx.recv_batch(out, max).expect("recv"),
    )
}

/// The same through a one-way `Pipe`.
fn shm_pipe_batch(iters: u64, batch: usize) -> Duration {
    let (tx, rx) = shmproc::Pipe::<u64>::oneway().expect("pipe");
    batches_between(
        iters,
        batch,
        move |b| tx.send_batch(b).expect("send"),
        move |out, max| rx.recv_batch(out, max).expect("recv"),
    )
}

fn stream_spsc(iters: u64, payload: &[u8], socket: bool) -> Duration {
    let payload = payload.to_vec();
    let go = Event::new().expect("event");
    let g = go.clone();
    let (mut child, mut rx): (Process, StreamReceiver<Box<dyn std::io::Read>>) = if socket {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let child = fork(move || {
            let mut tx = StreamSender::new(a);
            g.wait();
            for _ in 0..iters {
                tx.send(&payload);
            }
        });
        (child, StreamReceiver::new(Box::new(b)))
    } else {
        let (r, w) = pipe();
        let child = fork(move || {
            let mut tx = StreamSender::new(w);
            g.wait();
            for _ in 0..iters {
                tx.send(&payload);
            }
        });
        (child, StreamReceiver::new(Box::new(r)))
    };
    go.set();
    let mut buf = Vec::new();
    let start = Instant::now();
    for _ in 0..iters {
        assert!(rx.recv(&mut buf));
        black_box(&buf);
    }
    let t = start.elapsed();
    child.join().expect("join");
    t
}

fn spsc(c: &mut Criterion) {
    let mut g = c.benchmark_group("spsc_u64");
    g.bench_function("shmproc_queue", |b| b.iter_custom(|n| shm_spsc(n, 42u64, 16)));
    g.bench_function("shmproc_slot_queue", |b| {
        b.iter_custom(|n| shm_spsc_in(n, 42u64, Queue::<u64>::builder().capacity(4096).message_size(16).slot_ring()))
    });
    g.bench_function("shmproc_pipe", |b| b.iter_custom(|n| shm_pipe(n, 42u64)));
    g.bench_function("shmproc_queue_batch64", |b| b.iter_custom(|n| shm_spsc_batch(n, 64)));
    g.bench_function("shmproc_pipe_batch64", |b| b.iter_custom(|n| shm_pipe_batch(n, 64)));
    g.bench_function("pipe_queue", |b| b.iter_custom(|n| stream_spsc(n, &42u64.to_le_bytes(), false)));
    g.bench_function("unix_socket_queue", |b| b.iter_custom(|n| stream_spsc(n, &42u64.to_le_bytes(), true)));
    g.finish();
    let mut g = c.benchmark_group("spsc_64B");
    g.bench_function("shmproc_queue", |b| b.iter_custom(|n| shm_spsc(n, [7u8; 64], 64)));
    g.bench_function("pipe_queue", |b| b.iter_custom(|n| stream_spsc(n, &[7u8; 64], false)));
    g.bench_function("unix_socket_queue", |b| b.iter_custom(|n| stream_spsc(n, &[7u8; 64], true)));
    g.finish();
    let mut g = c.benchmark_group("spsc_1KiB");
    g.bench_function("shmproc_queue", |b| b.iter_custom(|n| shm_spsc(n, [7u8; 1024], 1024)));
    g.bench_function("shmproc_pipe", |b| b.iter_custom(|n| shm_pipe(n, [7u8; 1024])));
    g.bench_function("pipe_queue", |b| b.iter_custom(|n| stream_spsc(n, &[7u8; 1024], false)));
    g.bench_function("unix_socket_queue", |b| b.iter_custom(|n| stream_spsc(n, &[7u8; 1024], true)));
    g.finish();
}

/// Messages each large-message sample sends before its clock starts: one lap
/// of the queue's capacity, so that the timed messages find the ring's pages
/// (and each side's buffers) already touched, as in a long-running stream.
const WARM: u64 = 8;

/// Times `iters` `Vec<u8>` messages of `len` bytes from a child producer to
/// this process through a default `Queue::<Vec<u8>>::bounded(8)`, checking
/// the length of each message that arrives.
fn shm_spsc_bytes(iters: u64, len: usize) -> Duration {
    let q = Queue::<Vec<u8>>::bounded(8).expect("queue");
    let (tx, rx) = q.into_split();
    let msg = vec![7u8; len];
    let go = Event::new().expect("event");
    let g = go.clone();
    let mut child = fork(move || {
        for _ in 0..WARM {
            tx.send(&msg).expect("send");
        }
        g.wait();
        for _ in 0..iters {
            tx.send(&msg).expect("send");
        }
    });
    for _ in 0..WARM {
        assert_eq!(rx.recv().expect("recv").len(), len, "a warm-up message arrived with the wrong length");
    }
    let start = Instant::now();
    go.set();
    for _ in 0..iters {
        let v = rx.recv().expect("recv");
        assert_eq!(v.len(), len, "a message arrived with the wrong length");
        black_box(v);
    }
    let t = start.elapsed();
    child.join().expect("join");
    t
}

/// The same messages through the pipe queue (length-prefixed frames over a
/// pipe), timed the same way.
fn pipe_spsc_bytes(iters: u64, len: usize) -> Duration {
    let payload = vec![7u8; len];
    let (r, w) = pipe();
    let go = Event::new().expect("event");
    let g = go.clone();
    let mut child = fork(move || {
        let mut tx = StreamSender::new(w);
        for _ in 0..WARM {
            tx.send(&payload);
        }
        g.wait();
        for _ in 0..iters {
            tx.send(&payload);
        }
    });
    let mut rx = StreamReceiver::new(r);
    let mut buf = Vec::new();
    for _ in 0..WARM {
        assert!(rx.recv(&mut buf));
        assert_eq!(buf.len(), len, "a warm-up message arrived with the wrong length");
    }
    let start = Instant::now();
    go.set();
    for _ in 0..iters {
        assert!(rx.recv(&mut buf));
        assert_eq!(buf.len(), len, "a message arrived with the wrong length");
        black_box(&buf);
    }
    let t = start.elapsed();
    child.join().expect("join");
    t
}

/// SPSC throughput for 64 KiB and 4 MiB `Vec<u8>` messages, one message an
/// iteration, in bytes; few samples, so that each group takes ~10 s.
fn spsc_large(c: &mut Criterion) {
    for (group, len) in [("spsc_64KiB", 64usize << 10), ("spsc_4MiB", 4 << 20)] {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Bytes(len as u64))
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        g.bench_function("shmproc_queue", |b| b.iter_custom(|n| shm_spsc_bytes(n, len)));
        g.bench_function("pipe_queue", |b| b.iter_custom(|n| pipe_spsc_bytes(n, len)));
        g.finish();
    }
}

fn shm_mpmc(iters: u64) -> Duration {
    let per = iters.div_ceil(2);
    let q = Queue::<u64>::builder().capacity(4096).message_size(16).build().expect("queue");
    let (tx, rx) = q.into_split();
    let go = Event::new().expect("event");
    let mut kids = Vec::new();
    for _ in 0..2 {
        let (tx, g) = (tx.clone(), go.clone());
        kids.push(fork(move || {
            g.wait();
            for i in 0..per {
                tx.send(&i).expect("send");
            }
        }));
    }
    drop(tx);
    // A second consumer process; this process is the first.
    let (rx2, g) = (rx.clone(), go.clone());
    kids.push(fork(move || {
        g.wait();
        while rx2.recv().is_ok() {}
    }));
    go.set();
    let start = Instant::now();
    while rx.recv().is_ok() {}
    let t = start.elapsed();
    for k in &mut kids {
        k.join().expect("join");
    }
    t
}

fn stream_mpmc(iters: u64) -> Duration {
    // Two producer pipes, two consumer processes each reading one: the pipe
    // analogue needs a pipe per pair (a shared pipe would interleave frames).
    let per = iters.div_ceil(2);
    let go = Event::new().expect("event");
    let mut kids = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (r, w) = pipe();
        let g = go.clone();
        kids.push(fork(move || {
            let mut tx = StreamSender::new(w);
            g.wait();
            for i in 0..per {
                tx.send(&i.to_le_bytes());
            }
        }));
        readers.push(r);
    }
    let second = readers.pop().expect("reader");
    let g = go.clone();
    kids.push(fork(move || {
        g.wait();
        let mut rx = StreamReceiver::new(second);
        let mut buf = Vec::new();
        while rx.recv(&mut buf) {}
    }));
    let first = readers.pop().expect("reader");
    go.set();
    let start = Instant::now();
    let mut rx = StreamReceiver::new(first);
    let mut buf = Vec::new();
    while rx.recv(&mut buf) {}
    let t = start.elapsed();
    for k in &mut kids {
        k.join().expect("join");
    }
    t
}

fn mpmc(c: &mut Criterion) {
    let mut g = c.benchmark_group("mpmc_2p2c_u64");
    g.bench_function("shmproc_queue", |b| b.iter_custom(shm_mpmc));
    g.bench_function("pipe_queue", |b| b.iter_custom(stream_mpmc));
    g.finish();
}

/// Round trips through two queues; returns the time for `iters` one-way hops.
fn shm_pingpong(iters: u64, spin: bool, slots: bool) -> Duration {
    let build = || {
        let b = Queue::<u64>::builder().capacity(16).message_size(16);
        if slots { b.slot_ring() } else { b }.build().expect("queue")
    };
    let (req, resp) = (build(), build());
    let (rq, rs) = (req.clone(), resp.clone());
    let rounds = iters.div_ceil(2);
    let recv = move |q: &Queue<u64>| -> u64 {
        if spin {
            loop {
                match q.try_recv() {
                    Ok(v) => return v,
                    Err(TryRecvError::Empty) => std::hint::spin_loop(),
                    Err(e) => panic!("{e}"),
                }
            }
        } else {
            q.recv().expect("recv")
        }
    };
    let mut child = fork(move || {
        for _ in 0..rounds {
            let v = recv(&rq);
            rs.send(&(v + 1)).expect("send");
        }
    });
    let start = Instant::now();
    for i in 0..rounds {
        req.send(&i).expect("send");
        black_box(recv(&resp));
    }
    let t = start.elapsed();
    child.join().expect("join");
    t
}

fn stream_pingpong(iters: u64, socket: bool) -> Duration {
    use std::io::{Read, Write};
    let rounds = iters.div_ceil(2);
    type Io = (Box<dyn Read + Send>, Box<dyn Write + Send>);
    let (mine, theirs): (Io, Io) = if socket {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let (a2, b2) = (a.try_clone().expect("clone"), b.try_clone().expect("clone"));
        ((Box::new(a), Box::new(a2)), (Box::new(b), Box::new(b2)))
    } else {
        let (r1, w1) = pipe();
        let (r2, w2) = pipe();
        ((Box::new(r2), Box::new(w1)), (Box::new(r1), Box::new(w2)))
    };
    let (mut their_r, mut their_w) = theirs;
    let mut child = fork(move || {
        let mut b = [0u8; 8];
        for _ in 0..rounds {
            their_r.read_exact(&mut b).expect("read");
            their_w.write_all(&b).expect("write");
        }
    });
    let (mut r, mut w) = mine;
    let mut b = [0u8; 8];
    let start = Instant::now();
    for i in 0..rounds {
        w.write_all(&i.to_le_bytes()).expect("write");
        r.read_exact(&mut b).expect("read");
    }
    let t = start.elapsed();
    child.join().expect("join");
    t
}

fn latency(c: &mut Criterion) {
    let mut g = c.benchmark_group("one_way_latency");
    g.bench_function("shmproc_queue_blocking", |b| b.iter_custom(|n| shm_pingpong(n, false, false)));
    g.bench_function("shmproc_queue_spinning", |b| b.iter_custom(|n| shm_pingpong(n, true, false)));
    g.bench_function("shmproc_slot_queue_spinning", |b| b.iter_custom(|n| shm_pingpong(n, true, true)));
    g.bench_function("pipe", |b| b.iter_custom(|n| stream_pingpong(n, false)));
    g.bench_function("unix_socket", |b| b.iter_custom(|n| stream_pingpong(n, true)));
    g.finish();
}

criterion_group! { name = benches; config = shmproc_benches::criterion_config(20); targets = spsc, spsc_large, mpmc, latency }

fn main() {
    shmproc::init();
    benches();
    Criterion::default().configure_from_args().final_summary();
    report(
        "queues",
        &[
            ("spsc_u64", "shmproc_queue", "pipe_queue"),
            ("spsc_u64", "shmproc_slot_queue", "pipe_queue"),
            ("spsc_u64", "shmproc_pipe", "pipe_queue"),
            ("spsc_u64", "shmproc_queue", "unix_socket_queue"),
            ("spsc_64B", "shmproc_queue", "pipe_queue"),
            ("spsc_64B", "shmproc_queue", "unix_socket_queue"),
            ("spsc_1KiB", "shmproc_queue", "pipe_queue"),
            ("spsc_1KiB", "shmproc_pipe", "pipe_queue"),
            ("spsc_1KiB", "shmproc_queue", "unix_socket_queue"),
            ("spsc_64KiB", "shmproc_queue", "pipe_queue"),
            ("spsc_4MiB", "shmproc_queue", "pipe_queue"),
            ("mpmc_2p2c_u64", "shmproc_queue", "pipe_queue"),
            ("one_way_latency", "shmproc_queue_blocking", "pipe"),
            ("one_way_latency", "shmproc_queue_blocking", "unix_socket"),
            ("one_way_latency", "shmproc_queue_spinning", "pipe"),
            ("one_way_latency", "shmproc_slot_queue_spinning", "pipe"),
        ],
    );
}
