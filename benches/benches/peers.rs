//! shmproc ranked against its peers and the hardware, in one run and one
//! table: `Queue<u64>` and `Pipe<u64>` beside `ipmpsc` (an MPSC shared-memory
//! ring with bincode), `iceoryx2` (publish-subscribe over shared memory),
//! three pipe queues, a unix-socket queue and, as the physical limit, a raw
//! shared-memory ring of u64s that both sides busy-poll. Then a scale
//! section: one `Queue<u64>` carrying 10^3 … 10^8 messages, with ns/message
//! and both processes' resident memory after each size.
//!
//! Every measurement is cross-process: the producer (or the echoing peer) is
//! a forked child, the consumer is this process. Columns, per row:
//!
//! * **u64 msgs/s, 1 KiB msgs/s**: a child sends a stream of messages, this
//!   process receives them the row's blocking way (`recv`; `recv_ref` for
//!   shmproc's 1 KiB `Queue`, the zero-copy context for ipmpsc's 1 KiB,
//!   `receive` polled for iceoryx2, whose subscriber has no blocking
//!   receive), timed from the start signal to the last message.
//! * **one-way latency, spinning**: ping-pong between the two processes, both
//!   busy-polling (`try_recv` in a loop), round-trip time / 2.
//! * **one-way latency, blocking**: the same with blocking receives (for
//!   iceoryx2 its event service: the sender notifies after each sample and
//!   the receiver waits on its listener when `receive` finds nothing).
//! * **consumer CPU at 10,000 and 1,000 msgs/s**: the child sends u64s paced
//!   at that rate (absolute deadlines, 1 ns timer slack); this process
//!   receives them with blocking receives and reports (user + system CPU
//!   time from `getrusage(RUSAGE_SELF)`) / wall time over the window.
//!
//! Each cell is the median of several repetitions (5 for rates and
//! latencies, 3 for CPU); `SHMPROC_BENCH_QUICK=1` shortens everything and caps
//! the scale section at 10^6 messages, for a smoke run. The rendered tables
//! are also written to `target/shmproc-bench/peers.txt`, which the final
//! `z_report` prints again.

use std::fmt::Write as _;
use std::fs::File;
use std::hint::black_box;
use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmproc::{Event, Pipe, Process, Queue, TryRecvError};
#[path = "common/ipmpsc_ring.rs"]
mod ipmpsc_ring;
use ipmpsc_ring::{ipmpsc_ring, ipmpsc_sender};
use shmproc_benches::{fork, frame, median, pipe, pipe_queue_mpmc, quick, report_dir};

// ---------------------------------------------------------------------------
// The table.

/// One row of the ranking table; `None` is a cell the row does not measure
/// (printed as `-`). Adding a row is one `rows.push(Row { .. })` line in
/// [`main`].
struct Row {
    name: &'static str,
    /// Stream throughput of u64 messages, messages per second.
    u64_rate: Option<f64>,
    /// Stream throughput of 1 KiB messages, messages per second.
    kib_rate: Option<f64>,
    /// One-way latency with both sides busy-polling, ns.
    spin_ns: Option<f64>,
    /// One-way latency with blocking receives, ns.
    block_ns: Option<f64>,
    /// Consumer CPU, percent of one core, at 10,000 messages/s.
    cpu_10k: Option<f64>,
    /// Consumer CPU, percent of one core, at 1,000 messages/s.
    cpu_1k: Option<f64>,
}

impl Row {
    /// A row that measures nothing yet: `Row { u64_rate: .., ..Row::empty(name) }`.
    fn empty(name: &'static str) -> Row {
        Row { name, u64_rate: None, kib_rate: None, spin_ns: None, block_ns: None, cpu_10k: None, cpu_1k: None }
    }
}

const QUEUE: &str = "shmproc Queue<u64>";
const PIPE: &str = "shmproc Pipe<u64>";
const PIPE_Q1: &str = "pipe queue, 1 write + 1 read/msg";
const PIPE_Q2: &str = "pipe queue, 2 reads/msg (len, body)";
const PIPE_QB: &str = "pipe queue, 64 KiB BufReader";
const RAW: &str = "raw shm u64 ring, busy-poll";
const IPMPSC: &str = "ipmpsc 0.5";
const ICEORYX2: &str = "iceoryx2 0.7 (pub-sub + event)";
const SOCKET_Q: &str = "unix-socket queue, 1 write + 1 read/msg";
const QUEUE_B: &str = "shmproc Queue<u64>, batches of 64";
const PIPE_B: &str = "shmproc Pipe<u64>, batches of 64";
const QUEUE_MPMC: &str = "shmproc Queue<u64>, 2 prod x 2 cons";
const PIPE_Q_MPMC: &str = "pipe queue, 2 writers x 2 readers";

fn rate_cell(v: Option<f64>) -> String {
    match v {
        Some(r) if r >= 1e6 => format!("{:.1} M/s", r / 1e6),
        Some(r) => format!("{:.0} k/s", r / 1e3),
        None => "-".into(),
    }
}

fn ns_cell(v: Option<f64>) -> String {
    match v {
        Some(ns) if ns >= 10_000.0 => format!("{:.1} µs", ns / 1e3),
        Some(ns) => format!("{ns:.0} ns"),
        None => "-".into(),
    }
}

fn pct_cell(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |p| format!("{p:.1} %"))
}

/// The ranking table (rows by u64 throughput, fastest first) and the ratios.
fn render(rows: &[Row]) -> String {
    let mut order: Vec<&Row> = rows.iter().collect();
    order.sort_by(|a, b| b.u64_rate.unwrap_or(0.0).total_cmp(&a.u64_rate.unwrap_or(0.0)));
    let raw = rows.iter().find(|r| r.name == RAW).and_then(|r| r.u64_rate);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n== peers: cross-process ranking (medians; consumer = this process, producer = a forked child) =="
    );
    let _ = writeln!(
        s,
        "{:<40} {:>11} {:>8} {:>11} {:>11} {:>11} {:>10} {:>10}",
        "", "u64", "% raw", "1 KiB", "lat spin", "lat block", "CPU@10k/s", "CPU@1k/s"
    );
    for r in order {
        let of_raw = match (r.u64_rate, raw) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.1} %", 100.0 * a / b),
            _ => "-".into(),
        };
        let _ = writeln!(
            s,
            "{:<40} {:>11} {:>8} {:>11} {:>11} {:>11} {:>10} {:>10}",
            r.name,
            rate_cell(r.u64_rate),
            of_raw,
            rate_cell(r.kib_rate),
            ns_cell(r.spin_ns),
            ns_cell(r.block_ns),
            pct_cell(r.cpu_10k),
            pct_cell(r.cpu_1k)
        );
    }
    let get = |name: &str| rows.iter().find(|r| r.name == name);
    let _ = writeln!(s, "\nratios (throughput: ours / theirs; latency and CPU: theirs / ours; >1 favours the first):");
    let pairs = [(QUEUE, PIPE_Q1), (QUEUE, PIPE_Q2), (QUEUE, PIPE_QB), (PIPE, PIPE_Q1), (QUEUE, PIPE)];
    for (a, b) in pairs {
        let (Some(x), Some(y)) = (get(a), get(b)) else { continue };
        let div = |p: Option<f64>, q: Option<f64>| match (p, q) {
            (Some(p), Some(q)) if q > 0.0 => format!("{:.2}x", p / q),
            _ => "-".into(),
        };
        let _ = writeln!(
            s,
            "  {a} vs {b}: u64 {}, 1 KiB {}, blocking latency {}, CPU@10k/s {}, CPU@1k/s {}",
            div(x.u64_rate, y.u64_rate),
            div(x.kib_rate, y.kib_rate),
            div(y.block_ns, x.block_ns),
            div(y.cpu_10k, x.cpu_10k),
            div(y.cpu_1k, x.cpu_1k)
        );
    }
    s
}

// ---------------------------------------------------------------------------
// Measurement scaffolding.

/// A child's start line: the child sets `ready` when its endpoints exist and
/// waits for `go`.
#[derive(Clone)]
struct Gate {
    ready: Event,
    go: Event,
    done: Event,
}

impl Gate {
    fn at_line(&self) {
        self.ready.set();
        self.go.wait();
    }

    /// Waits until this process has received everything (for a sender whose
    /// samples go when it does: iceoryx2's).
    fn linger(&self) {
        self.done.wait();
    }
}

/// Forks `child` (which calls [`Gate::at_line`] once set up), starts it and
/// runs `parent`; checks that the child exited cleanly.
fn cross<R>(child: impl FnOnce(Gate) + 'static, parent: impl FnOnce() -> R) -> R {
    let gate = Gate {
        ready: Event::new().expect("event"),
        go: Event::new().expect("event"),
        done: Event::new().expect("event"),
    };
    let g = gate.clone();
    let mut p = fork(move || child(g));
    gate.ready.wait();
    gate.go.set();
    let r = parent();
    gate.done.set();
    assert_eq!(p.join().expect("join"), 0, "the bench's child process failed");
    r
}

/// Messages per second of `run(n)` (which moves `n` messages and returns the
/// time it took): grows `n` until one run takes long enough, then the median
/// of several runs.
fn rate(run: impl Fn(u64) -> Duration) -> Option<f64> {
    let (target, reps) = if quick() { (0.03, 3) } else { (0.2, 5) };
    let mut n = 1000u64;
    loop {
        let t = run(n).as_secs_f64();
        if t >= target / 4.0 || n >= 1 << 32 {
            n = ((n as f64) * target / t.max(1e-9)).max(1000.0) as u64;
            break;
        }
        n *= 10;
    }
    Some(median((0..reps).map(|_| n as f64 / run(n).as_secs_f64()).collect()))
}

/// One-way latency in ns of `run(hops)` (which makes `hops` one-way hops,
/// that is `hops / 2` round trips, and returns the time they took).
fn latency(run: impl Fn(u64) -> Duration) -> Option<f64> {
    rate(run).map(|hops_per_s| 1e9 / hops_per_s)
}

/// This process's user + system CPU time.
fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value for getrusage to fill.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid rusage to write into.
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(r, 0, "getrusage failed");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Consumer CPU in percent of a core at `per_s` messages/s: `paced(per_s, n)`
/// runs a child that sends `n` messages at that rate and receives them here,
/// returning the (CPU time, wall time) of the receiving loop.
fn cpu(per_s: u64, paced: impl Fn(u64, u64) -> (Duration, Duration)) -> Option<f64> {
    let (secs, reps) = if quick() { (0.25, 1) } else { (1.0, 3) };
    let n = (per_s as f64 * secs) as u64;
    Some(median(
        (0..reps)
            .map(|_| {
                let (c, w) = paced(per_s, n);
                100.0 * c.as_secs_f64() / w.as_secs_f64()
            })
            .collect(),
    ))
}

/// Times a receiving loop for [`cpu`].
fn measure_cpu(recv_all: impl FnOnce()) -> (Duration, Duration) {
    let (c0, t0) = (cpu_time(), Instant::now());
    recv_all();
    (cpu_time() - c0, t0.elapsed())
}

/// Calls `send(i)` for `i in 0..n`, the `i`th at `i / per_s` seconds from now.
fn pace(per_s: u64, n: u64, mut send: impl FnMut(u64)) {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument; 1 ns slack makes
    // the sleeps below end on time instead of up to 50 µs late.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let start = Instant::now();
    let period = Duration::from_secs(1).as_nanos() as u64 / per_s;
    for i in 0..n {
        let due = start + Duration::from_nanos(i * period);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        send(i);
    }
}

/// Busy-polls `f` until it yields a value.
fn spin<T>(mut f: impl FnMut() -> Option<T>) -> T {
    loop {
        if let Some(v) = f() {
            return v;
        }
        std::hint::spin_loop();
    }
}

const KIB: usize = 1024;
const CAP: usize = 4096;

// ---------------------------------------------------------------------------
// shmproc.

fn queue_u64() -> Queue<u64> {
    Queue::<u64>::builder().capacity(CAP).message_size(16).build().expect("queue")
}

fn q_stream_u64(n: u64) -> Duration {
    let (tx, rx) = queue_u64().into_split();
    cross(
        move |g| {
            g.at_line();
            for i in 0..n {
                tx.send(&i).expect("send");
            }
        },
        || {
            let t = Instant::now();
            let mut sum = 0u64;
            for _ in 0..n {
                sum = sum.wrapping_add(rx.recv().expect("recv"));
            }
            let t = t.elapsed();
            assert_eq!(sum, n * (n - 1) / 2, "messages lost or garbled");
            t
        },
    )
}

/// Streams `n` u64s in batches of 64 from a child (`send` takes a batch)
/// to this process (`recv` appends up to 64 and says how many), checking
/// the sum.
fn stream_batches(
    n: u64,
    mut send: impl FnMut(&[u64]) + 'static,
    mut recv: impl FnMut(&mut Vec<u64>) -> usize,
) -> Duration {
    cross(
        move |g| {
            let mut i = 0;
            let mut batch = Vec::with_capacity(64);
            g.at_line();
            while i < n {
                batch.clear();
                batch.extend(i..(i + 64).min(n));
                send(&batch);
                i += batch.len() as u64;
            }
        },
        || {
            let t = Instant::now();
            let (mut sum, mut got, mut seen) = (0u64, Vec::with_capacity(64), 0);
            while seen < n {
                got.clear();
                seen += recv(&mut got) as u64;
                sum = got.iter().fold(sum, |s, v| s.wrapping_add(*v));
            }
            let t = t.elapsed();
            assert_eq!(sum, n * (n - 1) / 2, "messages lost or garbled");
            t
        },
    )
}

/// `Queue<u64>` in batches of 64 (`send_batch`, `recv_batch`).
fn q_stream_batches(n: u64) -> Duration {
    let (tx, rx) = queue_u64().into_split();
    stream_batches(n, move |b| tx.send_batch(b).expect("send"), move |out| rx.recv_batch(out, 64).expect("recv"))
}

/// `Pipe<u64>` in batches of 64.
fn p_stream_batches(n: u64) -> Duration {
    let (tx, rx) = Pipe::<u64>::oneway().expect("pipe");
    stream_batches(n, move |b| tx.send_batch(b).expect("send"), move |out| rx.recv_batch(out, 64).expect("recv"))
}

/// Two producer processes and two consumer processes on one `Queue<u64>`
/// (single `send`/`recv`); the time until both consumers have all `n`.
fn q_mpmc(n: u64) -> Duration {
    let q = queue_u64();
    let go = Event::new().expect("event");
    let total = shmproc::Value::new(0u64).expect("value");
    let per = n / 2;
    let producers: Vec<Process> = (0..2u64)
        .map(|p| {
            let (tx, go) = (q.sender(), go.clone());
            fork(move || {
                go.wait();
                for i in 0..per {
                    tx.send(&(p * per + i)).expect("send");
                }
            })
        })
        .collect();
    let consumers: Vec<Process> = (0..2)
        .map(|_| {
            let (rx, go, total) = (q.receiver(), go.clone(), total.clone());
            fork(move || {
                go.wait();
                let mut sum = 0u64;
                while let Ok(v) = rx.recv() {
                    if v == u64::MAX {
                        break;
                    }
                    sum = sum.wrapping_add(v);
                }
                *total.lock().expect("total") += sum;
            })
        })
        .collect();
    let t = Instant::now();
    go.set();
    for mut p in producers {
        p.join().expect("join");
    }
    for _ in 0..2 {
        q.send(&u64::MAX).expect("stop");
    }
    for mut c in consumers {
        c.join().expect("join");
    }
    let t = t.elapsed();
    let (m, want) = (per * 2, (per * 2) * (per * 2 - 1) / 2);
    assert_eq!(total.get(), want, "messages lost or garbled ({m} sent)");
    t
}

fn q_stream_kib(n: u64) -> Duration {
    let q = Queue::<[u8; KIB]>::builder().capacity(CAP).message_size(KIB).build().expect("queue");
    let (tx, rx) = q.into_split();
    cross(
        move |g| {
            let msg = [7u8; KIB];
            g.at_line();
            for _ in 0..n {
                tx.send(&msg).expect("send");
            }
        },
        || {
            let t = Instant::now();
            for _ in 0..n {
                let m = rx.recv_ref().expect("recv_ref");
                black_box(m[KIB - 1]);
            }
            t.elapsed()
        },
    )
}

fn q_recv(q: &Queue<u64>, spinning: bool) -> u64 {
    if spinning {
        spin(|| match q.try_recv() {
            Ok(v) => Some(v),
            Err(TryRecvError::Empty) => None,
            Err(e) => panic!("{e}"),
        })
    } else {
        q.recv().expect("recv")
    }
}

fn q_pingpong(hops: u64, spinning: bool) -> Duration {
    let rounds = hops.div_ceil(2);
    let (req, resp) = (queue_u64(), queue_u64());
    let (rq, rs) = (req.clone(), resp.clone());
    cross(
        move |g| {
            g.at_line();
            for _ in 0..rounds {
                let v = q_recv(&rq, spinning);
                rs.send(&(v + 1)).expect("send");
            }
        },
        || {
            let t = Instant::now();
            for i in 0..rounds {
                req.send(&i).expect("send");
                assert_eq!(q_recv(&resp, spinning), i + 1);
            }
            t.elapsed()
        },
    )
}

fn q_paced(per_s: u64, n: u64) -> (Duration, Duration) {
    let (tx, rx) = queue_u64().into_split();
    cross(
        move |g| {
            g.at_line();
            pace(per_s, n, |i| tx.send(&i).expect("send"));
        },
        || {
            measure_cpu(|| {
                for _ in 0..n {
                    black_box(rx.recv().expect("recv"));
                }
            })
        },
    )
}

fn p_stream<T: shmproc::Message + Clone + 'static>(n: u64, msg: T) -> Duration {
    let (tx, rx) = Pipe::<T>::oneway().expect("pipe");
    cross(
        move |g| {
            g.at_line();
            for _ in 0..n {
                tx.send(&msg).expect("send");
            }
        },
        || {
            let t = Instant::now();
            for _ in 0..n {
                black_box(rx.recv().expect("recv"));
            }
            t.elapsed()
        },
    )
}

fn p_pingpong(hops: u64, spinning: bool) -> Duration {
    let rounds = hops.div_ceil(2);
    let (req_tx, req_rx) = Pipe::<u64>::oneway().expect("pipe");
    let (resp_tx, resp_rx) = Pipe::<u64>::oneway().expect("pipe");
    let recv = move |rx: &shmproc::PipeReceiver<u64>| -> u64 {
        if spinning {
            spin(|| match rx.try_recv() {
                Ok(v) => Some(v),
                Err(TryRecvError::Empty) => None,
                Err(e) => panic!("{e}"),
            })
        } else {
            rx.recv().expect("recv")
        }
    };
    cross(
        move |g| {
            g.at_line();
            for _ in 0..rounds {
                let v = recv(&req_rx);
                resp_tx.send(&(v + 1)).expect("send");
            }
        },
        || {
            let t = Instant::now();
            for i in 0..rounds {
                req_tx.send(&i).expect("send");
                assert_eq!(recv(&resp_rx), i + 1);
            }
            t.elapsed()
        },
    )
}

fn p_paced(per_s: u64, n: u64) -> (Duration, Duration) {
    let (tx, rx) = Pipe::<u64>::oneway().expect("pipe");
    cross(
        move |g| {
            g.at_line();
            pace(per_s, n, |i| tx.send(&i).expect("send"));
        },
        || {
            measure_cpu(|| {
                for _ in 0..n {
                    black_box(rx.recv().expect("recv"));
                }
            })
        },
    )
}

// ---------------------------------------------------------------------------
// ipmpsc: a bincode-framed ring in a shared file mapping, a pthread mutex and
// condition variable in the mapping for blocking. The child opens the ring
// by its path, as a separate program would.

/// A byte slice that bincode writes in one copy (serde writes a plain
/// `&[u8]` element by element); the wire format is the same length-prefixed
/// bytes that the receiver borrows as `&[u8]`.
struct RawBytes<'a>(&'a [u8]);

impl serde::Serialize for RawBytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

fn i_stream_u64(n: u64) -> Duration {
    let (file, rx) = ipmpsc_ring(CAP * 16);
    let path = file.0.clone();
    cross(
        move |g| {
            let tx = ipmpsc_sender(&path);
            g.at_line();
            for i in 0..n {
                tx.send(&i).expect("send");
            }
        },
        || {
            let t = Instant::now();
            let mut sum = 0u64;
            for _ in 0..n {
                sum = sum.wrapping_add(rx.recv::<u64>().expect("recv"));
            }
            let t = t.elapsed();
            assert_eq!(sum, n * (n - 1) / 2, "messages lost or garbled");
            t
        },
    )
}

fn i_stream_kib(n: u64) -> Duration {
    let (file, mut rx) = ipmpsc_ring(CAP * (KIB + 16));
    let path = file.0.clone();
    cross(
        move |g| {
            let tx = ipmpsc_sender(&path);
            let msg = [7u8; KIB];
            g.at_line();
            for _ in 0..n {
                tx.send(&RawBytes(&msg)).expect("send");
            }
        },
        || {
            let t = Instant::now();
            for _ in 0..n {
                let mut ctx = rx.zero_copy_context();
                let m: &[u8] = ctx.recv().expect("recv");
                assert_eq!(m.len(), KIB);
                black_box(m[KIB - 1]);
            }
            t.elapsed()
        },
    )
}

fn i_recv(rx: &ipmpsc::Receiver, spinning: bool) -> u64 {
    if spinning {
        spin(|| rx.try_recv::<u64>().expect("try_recv"))
    } else {
        rx.recv::<u64>().expect("recv")
    }
}

fn i_pingpong(hops: u64, spinning: bool) -> Duration {
    let rounds = hops.div_ceil(2);
    let (req_file, req_rx) = ipmpsc_ring(CAP * 16);
    let (resp_file, resp_rx) = ipmpsc_ring(CAP * 16);
    let req_tx = ipmpsc_sender(&req_file.0);
    let resp_path = resp_file.0.clone();
    cross(
        move |g| {
            let resp_tx = ipmpsc_sender(&resp_path);
            g.at_line();
            for _ in 0..rounds {
                let v = i_recv(&req_rx, spinning);
                resp_tx.send(&(v + 1)).expect("send");
            }
        },
        || {
            let t = Instant::now();
            for i in 0..rounds {
                req_tx.send(&i).expect("send");
                assert_eq!(i_recv(&resp_rx, spinning), i + 1);
            }
            t.elapsed()
        },
    )
}

fn i_paced(per_s: u64, n: u64) -> (Duration, Duration) {
    let (file, rx) = ipmpsc_ring(CAP * 16);
    let path = file.0.clone();
    cross(
        move |g| {
            let tx = ipmpsc_sender(&path);
            g.at_line();
            pace(per_s, n, |i| tx.send(&i).expect("send"));
        },
        || {
            measure_cpu(|| {
                for _ in 0..n {
                    black_box(rx.recv::<u64>().expect("recv"));
                }
            })
        },
    )
}

// ---------------------------------------------------------------------------
// iceoryx2: publish-subscribe (no overflow, a publisher that blocks on a full
// subscriber buffer of CAP samples), plus an event service where a row
// blocks. Each process makes its own node; this process creates the
// services and the subscriber before the child opens them.

mod ice {
    use iceoryx2::port::publisher::Publisher;
    use iceoryx2::port::subscriber::Subscriber;
    use iceoryx2::prelude::*;
    use iceoryx2::service::ipc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::CAP;

    pub type Pub<T> = Publisher<ipc::Service, T, ()>;
    pub type Sub<T> = Subscriber<ipc::Service, T, ()>;
    pub type Listener = iceoryx2::port::listener::Listener<ipc::Service>;
    pub type Notifier = iceoryx2::port::notifier::Notifier<ipc::Service>;
    pub type Node = iceoryx2::node::Node<ipc::Service>;

    /// A node of this process, without iceoryx2's signal handlers (the
    /// bench's processes are ended by shmproc).
    pub fn node() -> Node {
        set_log_level(LogLevel::Error);
        NodeBuilder::new().signal_handling_mode(SignalHandlingMode::Disabled).create::<ipc::Service>().expect("node")
    }

    /// A service name unique to this process and call.
    pub fn name(what: &str) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        format!("shmproc-bench/{}/{what}/{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
    }

    fn service<T: std::fmt::Debug + ZeroCopySend + 'static>(
        node: &Node,
        name: &str,
    ) -> iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, T, ()> {
        node.service_builder(&ServiceName::new(name).expect("service name"))
            .publish_subscribe::<T>()
            .enable_safe_overflow(false)
            .subscriber_max_buffer_size(CAP)
            .subscriber_max_borrowed_samples(2)
            .history_size(0)
            .max_publishers(1)
            .max_subscribers(1)
            .open_or_create()
            .expect("publish-subscribe service")
    }

    pub fn subscriber<T: std::fmt::Debug + ZeroCopySend + 'static>(node: &Node, name: &str) -> Sub<T> {
        service::<T>(node, name).subscriber_builder().buffer_size(CAP).create().expect("subscriber")
    }

    pub fn publisher<T: std::fmt::Debug + ZeroCopySend + 'static>(node: &Node, name: &str) -> Pub<T> {
        service::<T>(node, name)
            .publisher_builder()
            .unable_to_deliver_strategy(UnableToDeliverStrategy::Block)
            .create()
            .expect("publisher")
    }

    fn event(node: &Node, name: &str) -> iceoryx2::service::port_factory::event::PortFactory<ipc::Service> {
        node.service_builder(&ServiceName::new(&format!("{name}/ev")).expect("service name"))
            .event()
            .open_or_create()
            .expect("event service")
    }

    pub fn listener(node: &Node, name: &str) -> Listener {
        event(node, name).listener_builder().create().expect("listener")
    }

    pub fn notifier(node: &Node, name: &str) -> Notifier {
        event(node, name).notifier_builder().create().expect("notifier")
    }

    /// Busy-polls `sub` for the next sample's payload.
    pub fn recv_spin<T: std::fmt::Debug + ZeroCopySend + Copy>(sub: &Sub<T>) -> T {
        super::spin(|| sub.receive().expect("receive").map(|s| *s))
    }

    /// Takes the next sample, waiting on `listener` while there is none.
    pub fn recv_blocking<T: std::fmt::Debug + ZeroCopySend + Copy>(sub: &Sub<T>, listener: &Listener) -> T {
        loop {
            if let Some(s) = sub.receive().expect("receive") {
                return *s;
            }
            listener.blocking_wait_all(|_| {}).expect("listener wait");
        }
    }
}

fn x_stream_u64(n: u64) -> Duration {
    let node = ice::node();
    let name = ice::name("u64");
    let sub = ice::subscriber::<u64>(&node, &name);
    cross(
        move |g| {
            let node = ice::node();
            let publisher = ice::publisher::<u64>(&node, &name);
            g.at_line();
            for i in 0..n {
                publisher.send_copy(i).expect("send");
            }
            g.linger();
        },
        || {
            let t = Instant::now();
            let mut sum = 0u64;
            for _ in 0..n {
                sum = sum.wrapping_add(ice::recv_spin(&sub));
            }
            let t = t.elapsed();
            assert_eq!(sum, n * (n - 1) / 2, "messages lost or garbled");
            t
        },
    )
}

fn x_stream_kib(n: u64) -> Duration {
    let node = ice::node();
    let name = ice::name("kib");
    let sub = ice::subscriber::<[u8; KIB]>(&node, &name);
    cross(
        move |g| {
            let node = ice::node();
            let publisher = ice::publisher::<[u8; KIB]>(&node, &name);
            g.at_line();
            for _ in 0..n {
                publisher.loan_uninit().expect("loan").write_payload([7u8; KIB]).send().expect("send");
            }
            g.linger();
        },
        || {
            let t = Instant::now();
            for _ in 0..n {
                let s = spin(|| sub.receive().expect("receive"));
                black_box(s[KIB - 1]);
            }
            t.elapsed()
        },
    )
}

fn x_pingpong(hops: u64, spinning: bool) -> Duration {
    let rounds = hops.div_ceil(2);
    let node = ice::node();
    let (req, resp) = (ice::name("req"), ice::name("resp"));
    // Each side's subscriber and listener exist before the other side sends.
    let resp_sub = ice::subscriber::<u64>(&node, &resp);
    let resp_listener = ice::listener(&node, &resp);
    let (req2, resp2) = (req.clone(), resp.clone());
    cross(
        move |g| {
            let node = ice::node();
            let sub = ice::subscriber::<u64>(&node, &req2);
            let listener = ice::listener(&node, &req2);
            let publisher = ice::publisher::<u64>(&node, &resp2);
            let notifier = ice::notifier(&node, &resp2);
            g.at_line();
            for _ in 0..rounds {
                let v = if spinning { ice::recv_spin(&sub) } else { ice::recv_blocking(&sub, &listener) };
                publisher.send_copy(v + 1).expect("send");
                if !spinning {
                    notifier.notify().expect("notify");
                }
            }
        },
        || {
            let publisher = ice::publisher::<u64>(&node, &req);
            let notifier = ice::notifier(&node, &req);
            let t = Instant::now();
            for i in 0..rounds {
                publisher.send_copy(i).expect("send");
                let v = if spinning {
                    ice::recv_spin(&resp_sub)
                } else {
                    notifier.notify().expect("notify");
                    ice::recv_blocking(&resp_sub, &resp_listener)
                };
                assert_eq!(v, i + 1);
            }
            t.elapsed()
        },
    )
}

fn x_paced(per_s: u64, n: u64) -> (Duration, Duration) {
    let node = ice::node();
    let name = ice::name("paced");
    let sub = ice::subscriber::<u64>(&node, &name);
    let listener = ice::listener(&node, &name);
    cross(
        move |g| {
            let node = ice::node();
            let publisher = ice::publisher::<u64>(&node, &name);
            let notifier = ice::notifier(&node, &name);
            g.at_line();
            pace(per_s, n, |i| {
                publisher.send_copy(i).expect("send");
                notifier.notify().expect("notify");
            });
            g.linger();
        },
        || {
            measure_cpu(|| {
                for _ in 0..n {
                    black_box(ice::recv_blocking(&sub, &listener));
                }
            })
        },
    )
}

// ---------------------------------------------------------------------------
// Queues over a byte stream: each message is a 4-byte length and the payload
// written with one `write`, read back in one of three ways.

#[derive(Clone, Copy)]
enum Framing {
    /// One `read` of the whole frame (the bench's messages have a fixed
    /// size; a pipe delivers a frame of at most PIPE_BUF bytes whole).
    OneRead,
    /// Two unbuffered reads: the length, then the body.
    TwoReads,
    /// Through a 64 KiB `BufReader`: the length, then the body, from the
    /// buffer (a `read` only when it runs dry: under a stream that is one
    /// syscall for many messages). The pipe queue of the `queue` bench.
    Buffered,
}

enum Source {
    Raw(File),
    Buffered(BufReader<File>),
}

struct FrameRx {
    src: Source,
    framing: Framing,
    buf: Vec<u8>,
}

impl FrameRx {
    fn new(f: File, framing: Framing) -> FrameRx {
        let src = match framing {
            Framing::Buffered => Source::Buffered(BufReader::with_capacity(64 << 10, f)),
            Framing::OneRead | Framing::TwoReads => Source::Raw(f),
        };
        FrameRx { src, framing, buf: Vec::new() }
    }

    /// Receives a message of `len` bytes (checking the frame's length).
    fn recv(&mut self, len: usize) -> &[u8] {
        self.buf.resize(4 + len, 0);
        let (head, body) = self.buf.split_at_mut(4);
        match (&mut self.src, self.framing) {
            (Source::Raw(f), Framing::OneRead) => f.read_exact(&mut self.buf).expect("read"),
            (Source::Raw(f), _) => {
                f.read_exact(head).expect("read");
                f.read_exact(body).expect("read");
            }
            (Source::Buffered(r), _) => {
                r.read_exact(head).expect("read");
                r.read_exact(body).expect("read");
            }
        }
        let n = u32::from_le_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
        assert_eq!(n, len, "a frame of the wrong length");
        &self.buf[4..]
    }
}

/// A connected (reader, writer) pair: a pipe, or the two ends of a unix
/// socket pair.
fn stream_pair(socket: bool) -> (File, File) {
    if socket {
        let (a, b) = UnixStream::pair().expect("socketpair");
        (File::from(std::os::fd::OwnedFd::from(a)), File::from(std::os::fd::OwnedFd::from(b)))
    } else {
        pipe()
    }
}

fn s_stream(n: u64, len: usize, framing: Framing, socket: bool) -> Duration {
    let (r, mut w) = stream_pair(socket);
    cross(
        move |g| {
            let f = frame(&vec![7u8; len]);
            g.at_line();
            for _ in 0..n {
                w.write_all(&f).expect("write");
            }
        },
        || {
            let mut rx = FrameRx::new(r, framing);
            let t = Instant::now();
            for _ in 0..n {
                black_box(rx.recv(len)[len - 1]);
            }
            t.elapsed()
        },
    )
}

fn s_pingpong(hops: u64, framing: Framing, socket: bool) -> Duration {
    let rounds = hops.div_ceil(2);
    let (req_r, mut req_w) = stream_pair(socket);
    let (resp_r, mut resp_w) = stream_pair(socket);
    cross(
        move |g| {
            let mut rx = FrameRx::new(req_r, framing);
            g.at_line();
            for _ in 0..rounds {
                let v = u64::from_le_bytes(rx.recv(8).try_into().expect("8 bytes"));
                resp_w.write_all(&frame(&(v + 1).to_le_bytes())).expect("write");
            }
        },
        || {
            let mut rx = FrameRx::new(resp_r, framing);
            let t = Instant::now();
            for i in 0..rounds {
                req_w.write_all(&frame(&i.to_le_bytes())).expect("write");
                assert_eq!(u64::from_le_bytes(rx.recv(8).try_into().expect("8 bytes")), i + 1);
            }
            t.elapsed()
        },
    )
}

fn s_paced(per_s: u64, n: u64, framing: Framing, socket: bool) -> (Duration, Duration) {
    let (r, mut w) = stream_pair(socket);
    cross(
        move |g| {
            g.at_line();
            pace(per_s, n, |i| w.write_all(&frame(&i.to_le_bytes())).expect("write"));
        },
        || {
            let mut rx = FrameRx::new(r, framing);
            measure_cpu(|| {
                for _ in 0..n {
                    black_box(rx.recv(8)[0]);
                }
            })
        },
    )
}

// ---------------------------------------------------------------------------
// The physical limit: a single-producer single-consumer ring of u64s in an
// anonymous shared mapping, both sides busy-polling, each keeping a cached
// copy of the other's index (as rtrb does) so that it reads the other's
// cache line only when the ring looks full (producer) or empty (consumer).
//
// Orderings: the producer writes a slot, then stores `head` with Release; the
// consumer loads `head` with Acquire before reading slots below it, so it
// sees their contents. The consumer stores `tail` with Release after reading
// a slot; the producer loads `tail` with Acquire before overwriting slots
// below it, so the consumer's read happened before the overwrite.

#[repr(C, align(128))]
struct Line(AtomicU64);

#[repr(C)]
struct RawRing {
    /// Next slot the producer writes (messages written so far).
    head: Line,
    /// Next slot the consumer reads (messages read so far).
    tail: Line,
    slots: [u64; CAP],
}

/// The raw ring in a MAP_SHARED anonymous mapping (shared with children
/// forked after this), unmapped when the [`RawMap`] that made it drops.
#[derive(Clone, Copy)]
struct RawPtr(*mut RawRing);

/// Owns the mapping of a [`RawPtr`].
struct RawMap(RawPtr);

impl RawMap {
    fn new() -> RawMap {
        // SAFETY: an anonymous mapping with no address hint; the result is
        // checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                std::mem::size_of::<RawRing>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap failed");
        // Zero-filled pages: both indices 0, an empty ring.
        RawMap(RawPtr(p.cast()))
    }
}

impl RawPtr {
    fn ring(&self) -> &RawRing {
        // SAFETY: the mapping is live until drop, page-aligned (so aligned
        // for RawRing), zero-initialised (a valid RawRing), and accessed
        // only through atomics and the protocol above.
        unsafe { &*self.0 }
    }

    fn slot(&self, i: u64) -> *mut u64 {
        // SAFETY: the index is reduced modulo CAP, so the slot is inside the
        // mapping; addr_of_mut makes no reference to the shared array.
        unsafe { std::ptr::addr_of_mut!((*self.0).slots[(i as usize) % CAP]) }
    }

    fn push_all(&self, n: u64) {
        let ring = self.ring();
        let mut cached_tail = ring.tail.0.load(Ordering::Acquire);
        for head in 0..n {
            while head - cached_tail == CAP as u64 {
                std::hint::spin_loop();
                cached_tail = ring.tail.0.load(Ordering::Acquire);
            }
            // SAFETY: slot `head` is free: the consumer has read it (tail
            // > head - CAP, loaded with Acquire) and reads it again only
            // after our Release store of head + 1.
            unsafe { self.slot(head).write_volatile(head) };
            ring.head.0.store(head + 1, Ordering::Release);
        }
    }

    fn pop_all(&self, n: u64) -> u64 {
        let ring = self.ring();
        let mut sum = 0u64;
        let mut cached_head = ring.head.0.load(Ordering::Acquire);
        for tail in 0..n {
            while tail == cached_head {
                std::hint::spin_loop();
                cached_head = ring.head.0.load(Ordering::Acquire);
            }
            // SAFETY: slot `tail` is written: head > tail was loaded with
            // Acquire after the producer's write; the producer overwrites it
            // only after our Release store of tail + 1.
            sum = sum.wrapping_add(unsafe { self.slot(tail).read_volatile() });
            ring.tail.0.store(tail + 1, Ordering::Release);
        }
        sum
    }
}

impl Drop for RawMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, with its size; the RawPtr copies
        // are used only while this is alive (the child's in the child's own
        // copy of the mapping).
        unsafe { libc::munmap(self.0 .0.cast(), std::mem::size_of::<RawRing>()) };
    }
}

fn raw_stream(n: u64) -> Duration {
    let map = RawMap::new();
    let ring = map.0;
    cross(
        move |g| {
            g.at_line();
            ring.push_all(n);
        },
        || {
            let t = Instant::now();
            let sum = ring.pop_all(n);
            let t = t.elapsed();
            assert_eq!(sum, n * (n - 1) / 2, "messages lost or garbled");
            t
        },
    )
}

// ---------------------------------------------------------------------------
// Scale: one queue, 10^3 … 10^8 messages.

/// Resident set size of process `pid` (VmRSS), KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn scale() -> String {
    let top = if quick() { 6 } else { 8 };
    let sizes: Vec<u64> = (3..=top).map(|e| 10u64.pow(e)).collect();
    let (tx, rx) = queue_u64().into_split();
    // Tells the child the next size (0: stop); the child waits for it, so
    // each size's clock starts at its first message.
    let (next_tx, next_rx) = queue_u64().into_split();
    let mut child = fork(move || {
        while let Ok(n) = next_rx.recv() {
            if n == 0 {
                break;
            }
            for i in 0..n {
                tx.send(&i).expect("send");
            }
        }
    });
    let mut s = String::new();
    let _ = writeln!(s, "\n== scale: one Queue<u64> (capacity {CAP}), producer = forked child ==");
    let _ = writeln!(s, "{:>12} {:>10} {:>18} {:>18}", "messages", "ns/msg", "consumer VmRSS", "producer VmRSS");
    for &n in &sizes {
        next_tx.send(&n).expect("send");
        let first = rx.recv().expect("recv");
        let t = Instant::now();
        let mut sum = first;
        for _ in 1..n {
            sum = sum.wrapping_add(rx.recv().expect("recv"));
        }
        let ns = t.elapsed().as_nanos() as f64 / (n - 1) as f64;
        assert_eq!(sum, n * (n - 1) / 2, "messages lost or garbled");
        let kib = |v: Option<u64>| v.map_or_else(|| "-".into(), |k| format!("{k} KiB"));
        let _ = writeln!(
            s,
            "{n:>12} {ns:>10.1} {:>18} {:>18}",
            kib(rss_kib(std::process::id())),
            kib(rss_kib(child.pid()))
        );
    }
    next_tx.send(&0).expect("send");
    assert_eq!(child.join().expect("join"), 0, "the scale producer failed");
    s
}

// ---------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("peers: bench");
        return;
    }
    // Name filters (criterion style): none, or one matching "peers", runs
    // everything; one matching a row's name (say `ipmpsc`) or "scale" runs
    // just that; others skip this bench.
    let filters: Vec<&str> = args.iter().filter(|a| !a.starts_with('-')).map(String::as_str).collect();
    let all = filters.is_empty() || filters.iter().any(|f| "peers".contains(f));
    let wanted = |name: &str| all || filters.iter().any(|f| name.contains(f));
    shmproc::init();
    let t0 = Instant::now();
    let mut rows = Vec::new();
    let both = |f: fn(u64, bool) -> Duration| (latency(|h| f(h, true)), latency(|h| f(h, false)));

    if wanted(QUEUE) {
        let (spin_ns, block_ns) = both(q_pingpong);
        rows.push(Row {
            u64_rate: rate(q_stream_u64),
            kib_rate: rate(q_stream_kib),
            spin_ns,
            block_ns,
            cpu_10k: cpu(10_000, q_paced),
            cpu_1k: cpu(1_000, q_paced),
            ..Row::empty(QUEUE)
        });
    }
    if wanted(PIPE) {
        let (spin_ns, block_ns) = both(p_pingpong);
        rows.push(Row {
            u64_rate: rate(|n| p_stream(n, 42u64)),
            kib_rate: rate(|n| p_stream(n, [7u8; KIB])),
            spin_ns,
            block_ns,
            cpu_10k: cpu(10_000, p_paced),
            cpu_1k: cpu(1_000, p_paced),
            ..Row::empty(PIPE)
        });
    }
    if wanted(IPMPSC) {
        let (spin_ns, block_ns) = both(i_pingpong);
        rows.push(Row {
            u64_rate: rate(i_stream_u64),
            kib_rate: rate(i_stream_kib),
            spin_ns,
            block_ns,
            cpu_10k: cpu(10_000, i_paced),
            cpu_1k: cpu(1_000, i_paced),
            ..Row::empty(IPMPSC)
        });
    }
    if wanted(ICEORYX2) {
        let (spin_ns, block_ns) = both(x_pingpong);
        rows.push(Row {
            u64_rate: rate(x_stream_u64),
            kib_rate: rate(x_stream_kib),
            spin_ns,
            block_ns,
            cpu_10k: cpu(10_000, x_paced),
            cpu_1k: cpu(1_000, x_paced),
            ..Row::empty(ICEORYX2)
        });
    }
    for (name, framing, socket) in [
        (PIPE_Q1, Framing::OneRead, false),
        (PIPE_Q2, Framing::TwoReads, false),
        (PIPE_QB, Framing::Buffered, false),
        (SOCKET_Q, Framing::OneRead, true),
    ] {
        if wanted(name) {
            rows.push(Row {
                u64_rate: rate(|n| s_stream(n, 8, framing, socket)),
                kib_rate: rate(|n| s_stream(n, KIB, framing, socket)),
                block_ns: latency(|h| s_pingpong(h, framing, socket)),
                cpu_10k: cpu(10_000, |r, n| s_paced(r, n, framing, socket)),
                cpu_1k: cpu(1_000, |r, n| s_paced(r, n, framing, socket)),
                ..Row::empty(name)
            });
        }
    }
    if wanted(QUEUE_B) {
        rows.push(Row { u64_rate: rate(q_stream_batches), ..Row::empty(QUEUE_B) });
    }
    if wanted(PIPE_B) {
        rows.push(Row { u64_rate: rate(p_stream_batches), ..Row::empty(PIPE_B) });
    }
    if wanted(QUEUE_MPMC) {
        rows.push(Row { u64_rate: rate(q_mpmc), ..Row::empty(QUEUE_MPMC) });
    }
    if wanted(PIPE_Q_MPMC) {
        rows.push(Row { u64_rate: rate(|n| pipe_queue_mpmc(n, 8)), ..Row::empty(PIPE_Q_MPMC) });
    }
    if wanted(RAW) {
        rows.push(Row { u64_rate: rate(raw_stream), ..Row::empty(RAW) });
    }

    let mut out = render(&rows);
    if wanted("scale") {
        out.push_str(&scale());
    }
    let _ =
        writeln!(out, "\n(peers bench: {:.0} s{})", t0.elapsed().as_secs_f64(), if quick() { ", quick" } else { "" });
    print!("{out}");
    if all {
        let dir = report_dir();
        if std::fs::create_dir_all(&dir).is_ok() {
            let _ = std::fs::write(dir.join("peers.txt"), &out);
        }
    }
}
