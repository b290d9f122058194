//! How one `Queue<u64>` scales with the number of processes on it, and how
//! `Pool::map` scales with its workers.
//!
//! **Queue.** For P in 1, 2, 4, 8 (those up to the machine's available cores;
//! P = 2 always), P forked producer processes and P forked consumer processes
//! share ONE fresh `Queue<u64>` of each layout:
//!
//! * default: the byte ring, `builder().capacity(1024)`;
//! * slot ring: `builder().capacity(1024).slot_ring()`;
//! * lanes: `builder().capacity(1024).lanes(P)`, one byte ring per producing
//!   process (1024 messages *each*, so P × 1024 in all; lanes(1) is the
//!   default byte ring).
//!
//! M messages in all (`SHMPROC_SCALING_MESSAGES`, default 4,000,000; 200,000
//! under `SHMPROC_BENCH_QUICK=1` or `--test`), split evenly over the
//! producers; producer `i` sends `i << 40 | seq` for seq = 0, 1, … with plain
//! `send`, then P end markers (`i << 40 | 2^40 - 1`). Each consumer receives
//! with plain `recv` until it has taken P end markers, and checks
//! per-producer FIFO: for each producer, the seqs *it* received strictly
//! increase, and none comes after that producer's end marker. As every
//! producer's markers follow all its messages (FIFO per producer, in every
//! layout) and the P consumers stop after P² markers in all, every message is
//! taken before the last consumer stops. (Not `Disconnected`: a forked
//! consumer inherits this process's sending handles, and dropping them in the
//! child races with the parent recording what the child inherited — the
//! parent's `roles::register_child` sets the child's counts after the child
//! may already have dropped them — which left a consumer waiting forever in a
//! trial of this bench.) The parent then checks exactly-once (the consumers'
//! counts add up to M and their sums to the sum of all values sent) and
//! reports M / wall time, from the start barrier to the last consumer's
//! report. A cell is the
//! median of `SHMPROC_SCALING_REPS` runs (default 3; 1 in quick mode), each
//! on a fresh queue with fresh processes. A run that stalls (a child that
//! fails or a run past its time limit) panics with what happened, after
//! killing the run's children.
//!
//! The 2 × 2 row is compared with a pipe queue with 2 writer and 2 reader
//! processes (`shmproc_benches::pipe_queue_mpmc`, the `peers` bench's row),
//! measured in the same run with the same M.
//!
//! **2 producers × 1 consumer (MPSC).** The same run, M and checks with 2
//! producer processes and 1 consumer process, on a `Queue<u64>` of the
//! default layout, `lanes(2)` and the slot ring (capacity as above), and on
//! `ipmpsc` 0.5 (the MPSC shared-memory ring of the `peers` bench: a ring of
//! 1024 12-byte u64 frames in a file under /dev/shm that the two sender
//! processes open by path; the receiver process takes the parent's
//! `Receiver`). Each producer sends its half and one end marker; the
//! consumer stops after 2 end markers and checks per-producer order; the
//! parent checks exactly-once (count and sum). Per row: messages/s (median
//! of the reps, which run round-robin over the rows) and the ratio to
//! ipmpsc, against the target of shmproc ≥ 2× ipmpsc.
//!
//! **Pool.** `Pool::map` over items that each cost a ~40 µs busy loop
//! (calibrated in this process at start), with 1, 2, 4, … up to N workers
//! (N = available cores; N itself too): items/s and the speed-up over 1
//! worker.
//!
//! `SHMPROC_SCALING_MAX_P` overrides the core cap on P (rows with more
//! processes than cores are marked). The tables are printed and written to
//! `target/shmproc-bench/mpmc_scaling.txt`, which `z_report` prints again.
//! `benches/device_scaling.sh` runs the built binary alone (no cargo). A
//! name filter `mpsc` (`cargo bench -p shmproc-benches --bench mpmc_scaling
//! mpsc`) runs the MPSC table alone, `pool` the pool table alone; neither
//! writes the report file.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use shmproc::{Barrier, Pool, Process, Queue, Receiver, RecvTimeoutError, Sender};
#[path = "common/ipmpsc_ring.rs"]
mod ipmpsc_ring;
use ipmpsc_ring::{ipmpsc_ring, ipmpsc_sender};
use shmproc_benches::{fork, median, pipe_queue_mpmc, quick, report_dir};

/// Messages per queue (per lane for the laned layout).
const CAP: usize = 1024;
/// Producer ids live above this bit of a message, sequence numbers below.
const SEQ_BITS: u32 = 40;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
/// The seq of a producer's end markers (no message carries it: M < 2^40).
const END: u64 = SEQ_MASK;
/// How long the start barrier waits for every process of a run (a child
/// gives up and exits; the parent panics).
const START_LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Settings.

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(v.trim().replace('_', "").parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

struct Settings {
    quick: bool,
    messages: u64,
    reps: usize,
    cores: usize,
    max_p: usize,
}

impl Settings {
    fn from_env(test_mode: bool) -> Settings {
        let quick = quick() || test_mode;
        let messages = env_u64("SHMPROC_SCALING_MESSAGES").unwrap_or(if quick { 200_000 } else { 4_000_000 });
        assert!(messages >= 2, "SHMPROC_SCALING_MESSAGES must be at least 2");
        let reps = env_u64("SHMPROC_SCALING_REPS").map_or(if quick { 1 } else { 3 }, |r| r.max(1) as usize);
        let cores = shmproc::cpu_count();
        let max_p = env_u64("SHMPROC_SCALING_MAX_P").map_or(cores, |p| p as usize);
        Settings { quick, messages, reps, cores, max_p }
    }

    /// The process counts per side: 1, 2, 4, 8 up to the cap; 2 always.
    fn ps(&self) -> Vec<usize> {
        [1, 2, 4, 8].into_iter().filter(|&p| p <= self.max_p.max(2)).collect()
    }
}

// ---------------------------------------------------------------------------
// Children.

/// The children of one run; any still running when this drops (a run that
/// panicked) are killed and reaped, so that a failed run neither hangs nor
/// leaves processes behind.
struct Children(Vec<Process>);

impl Children {
    /// The first child that exited with a failure, and its exit code.
    fn failed(&self) -> Option<(usize, i32)> {
        self.0.iter().enumerate().find_map(|(i, c)| c.exitcode().filter(|&code| code != 0).map(|code| (i, code)))
    }

    /// Joins every child, each within `limit`; panics on a failure or a
    /// child still running then.
    fn join_all(&mut self, what: &str, limit: Duration) {
        for (i, c) in self.0.iter_mut().enumerate() {
            match c.join_timeout(limit) {
                Ok(Some(0)) => {}
                Ok(Some(code)) => panic!("{what}: child {i} exited with {code}"),
                Ok(None) => panic!("{what}: child {i} still running {limit:?} after the run"),
                Err(e) => panic!("{what}: joining child {i}: {e}"),
            }
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.join();
        }
    }
}

/// What a consumer received: (messages, wrapping sum, per-producer FIFO
/// violations).
type Tally = (u64, u64, u64);

/// Sends `n` messages `id << 40 | seq` with `send`, then `consumers` end
/// markers (one for each consumer).
fn produce(mut send: impl FnMut(u64), id: usize, n: u64, consumers: usize) {
    let base = (id as u64) << SEQ_BITS;
    for seq in 0..n {
        send(base | seq);
    }
    for _ in 0..consumers {
        send(base | END);
    }
}

/// Receives with `recv` until it has taken `producers` end markers, checking
/// that the seqs of each producer strictly increase and stop at its end
/// marker.
fn consume(mut recv: impl FnMut() -> u64, producers: usize) -> Tally {
    // The least seq each producer's next message may carry (END once its
    // end marker came).
    let mut next = vec![0u64; producers];
    let (mut count, mut sum, mut bad, mut ends) = (0u64, 0u64, 0u64, 0usize);
    while ends < producers {
        let v = recv();
        let (seq, slot) = (v & SEQ_MASK, next.get_mut((v >> SEQ_BITS) as usize));
        match slot {
            Some(n) if seq == END => {
                ends += 1;
                *n = END;
            }
            Some(n) if seq >= *n => {
                *n = seq + 1;
                count += 1;
                sum = sum.wrapping_add(v);
            }
            _ => bad += 1,
        }
    }
    (count, sum, bad)
}

/// Messages producer `i` of `p` sends out of `m`.
fn share(m: u64, p: usize, i: usize) -> u64 {
    m / p as u64 + u64::from((i as u64) < m % p as u64)
}

/// The wrapping sum of every message sent.
fn expected_sum(m: u64, p: usize) -> u64 {
    let total: u128 = (0..p)
        .map(|i| {
            let n = u128::from(share(m, p, i));
            n * (u128::from(i as u64) << SEQ_BITS) + n * n.saturating_sub(1) / 2
        })
        .sum();
    total as u64
}

// ---------------------------------------------------------------------------
// The queue runs.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Layout {
    Default,
    SlotRing,
    Lanes,
}

impl Layout {
    const ALL: [Layout; 3] = [Layout::Default, Layout::SlotRing, Layout::Lanes];

    fn queue(self, p: usize) -> Queue<u64> {
        let b = Queue::<u64>::builder().capacity(CAP);
        let q = match self {
            Layout::Default => b.build(),
            Layout::SlotRing => b.slot_ring().build(),
            Layout::Lanes => b.lanes(p).build(),
        };
        q.unwrap_or_else(|e| panic!("{self:?} queue for {p} producers: {e}"))
    }
}

/// One timed run of `producers.len()` producer and `consumers.len()`
/// consumer children moving `m` messages; returns messages per second after
/// checking exactly-once and per-producer FIFO.
///
/// Each child first calls its entry, in the child, to open its end of the
/// queue (the function it sends or receives one message with), then waits
/// at the start line. Producer `i` sends its [`share`] of `m` and one end
/// marker per consumer; each consumer receives until it has one end marker
/// per producer and reports its [`Tally`]. The clock runs from the start
/// line to the last consumer's report.
fn timed_run<O, S, C, R>(what: &str, m: u64, producers: Vec<O>, consumers: Vec<C>) -> f64
where
    O: FnOnce() -> S + 'static,
    S: FnMut(u64),
    C: FnOnce() -> R + 'static,
    R: FnMut() -> u64,
{
    let (np, nc) = (producers.len(), consumers.len());
    let results = Queue::<Tally>::bounded(nc.max(1)).expect("result queue");
    // Every child and this process: the clock starts when all are at the line.
    let start = Barrier::new((np + nc) as u32 + 1).expect("barrier");
    let mut kids = Children(Vec::with_capacity(np + nc));
    for (i, open) in producers.into_iter().enumerate() {
        let (start, n) = (start.clone(), share(m, np, i));
        kids.0.push(fork(move || {
            let send = open();
            if start.wait_timeout(START_LIMIT).is_ok() {
                produce(send, i, n, nc);
            }
        }));
    }
    for open in consumers {
        let (start, results) = (start.clone(), results.clone());
        kids.0.push(fork(move || {
            let recv = open();
            if start.wait_timeout(START_LIMIT).is_ok() {
                let tally = consume(recv, np);
                results.send(&tally).expect("consumer: report");
            }
        }));
    }
    // Generous: 60 s, plus 10 µs a message (100 times the slowest rate seen).
    let limit = Duration::from_secs(60) + Duration::from_micros(10 * m);
    if let Err(e) = start.wait_timeout(START_LIMIT) {
        panic!("{what}: the children did not all reach the start line: {e} (failed: {:?})", kids.failed());
    }
    let t0 = Instant::now();
    let mut tallies = Vec::with_capacity(nc);
    while tallies.len() < nc {
        match results.recv_timeout(Duration::from_millis(20)) {
            Ok(t) => tallies.push(t),
            Err(RecvTimeoutError::Timeout) => {
                if let Some((i, code)) = kids.failed() {
                    panic!("{what}: child {i} exited with {code} before every consumer reported");
                }
                assert!(t0.elapsed() < limit, "{what}: {} of {nc} consumers reported within {limit:?}", tallies.len());
            }
            Err(e) => panic!("{what}: result queue: {e}"),
        }
    }
    let wall = t0.elapsed();
    kids.join_all(what, Duration::from_secs(30));
    let count: u64 = tallies.iter().map(|t| t.0).sum();
    let sum = tallies.iter().fold(0u64, |s, t| s.wrapping_add(t.1));
    let bad: u64 = tallies.iter().map(|t| t.2).sum();
    assert_eq!(bad, 0, "{what}: {bad} messages out of per-producer order (or with a bad producer id)");
    assert_eq!(count, m, "{what}: consumers received {count} messages, not {m} (per consumer: {tallies:?})");
    assert_eq!(sum, expected_sum(m, np), "{what}: the values received are not the values sent");
    m as f64 / wall.as_secs_f64()
}

/// `np` producers and `nc` consumers over a fresh queue of `layout`
/// (`lanes(np)` for the laned layout) moving `m` messages: messages per
/// second.
fn queue_run(layout: Layout, np: usize, nc: usize, m: u64) -> f64 {
    let what = format!("{layout:?} {np}x{nc}, {m} messages");
    let (tx, rx) = layout.queue(np).into_split();
    let producers: Vec<_> = (0..np)
        .map(|_| {
            let tx: Sender<u64> = tx.clone();
            move || move |v: u64| tx.send(&v).expect("producer: send")
        })
        .collect();
    let consumers: Vec<_> = (0..nc)
        .map(|_| {
            let rx: Receiver<u64> = rx.clone();
            move || move || rx.recv().unwrap_or_else(|e| panic!("consumer: recv: {e}"))
        })
        .collect();
    drop((tx, rx));
    timed_run(&what, m, producers, consumers)
}

/// `np` ipmpsc sender processes and one receiver process on a fresh ring of
/// [`CAP`] u64 frames under /dev/shm moving `m` messages: messages per
/// second. Each sender opens the ring by its path in its child; the
/// receiver is the one this process created, moved into the consumer child.
fn ipmpsc_run(np: usize, m: u64) -> f64 {
    let what = format!("ipmpsc {np}x1, {m} messages");
    // 4-byte length + 8-byte bincode u64 per frame.
    let (file, rx) = ipmpsc_ring(CAP * 12);
    let producers: Vec<_> = (0..np)
        .map(|_| {
            let path = file.0.clone();
            move || {
                let tx = ipmpsc_sender(&path);
                move |v: u64| tx.send(&v).expect("ipmpsc sender: send")
            }
        })
        .collect();
    let consumer = move || move || rx.recv::<u64>().unwrap_or_else(|e| panic!("ipmpsc receiver: recv: {e}"));
    let rate = timed_run(&what, m, producers, vec![consumer]);
    // The ring's file goes once every child has been joined.
    drop(file);
    rate
}

fn rate_cell(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else {
        format!("{:.0} k/s", r / 1e3)
    }
}

fn queue_table(s: &Settings) -> String {
    let m = s.messages;
    let mut rows: Vec<(usize, [f64; 3])> = Vec::new();
    for p in s.ps() {
        let mut cells = [0.0; 3];
        for (cell, layout) in cells.iter_mut().zip(Layout::ALL) {
            let runs: Vec<f64> = (0..s.reps).map(|_| queue_run(layout, p, p, m)).collect();
            let each: Vec<String> = runs.iter().map(|r| rate_cell(*r)).collect();
            eprintln!("mpmc_scaling: {layout:?} {p} x {p}: {}", each.join(", "));
            *cell = median(runs);
        }
        rows.push((p, cells));
    }
    // The pipe queue baseline moves an even count (half per writer).
    let pipe_m = m & !1;
    let pipe = median((0..s.reps).map(|_| pipe_m as f64 / pipe_queue_mpmc(pipe_m, 8).as_secs_f64()).collect());
    let lanes_1 = rows.iter().find(|r| r.0 == 1).map(|r| r.1[2]);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n== mpmc_scaling: one Queue<u64>, P producer processes x P consumer processes, {m} messages, \
         median of {} run(s), {} cores ==",
        s.reps, s.cores
    );
    let _ = writeln!(
        out,
        "| P producers × P consumers | default layout | slot ring | lanes | lanes(P) / lanes(1×1) | vs pipe queue 2×2 |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let mut oversubscribed = false;
    for (p, [d, sr, l]) in &rows {
        let mark = if 2 * p > s.cores {
            oversubscribed = true;
            " *"
        } else {
            ""
        };
        let scale = lanes_1.map_or_else(|| "-".into(), |one| format!("{:.2}x", l / one));
        let vs_pipe = if *p == 2 { format!("lanes {:.2}x", l / pipe) } else { "-".into() };
        let _ = writeln!(
            out,
            "| {p} × {p}{mark} | {} | {} | {} | {scale} | {vs_pipe} |",
            rate_cell(*d),
            rate_cell(*sr),
            rate_cell(*l)
        );
    }
    let _ = writeln!(
        out,
        "\npipe queue, 2 writers × 2 readers (same run, {pipe_m} messages of 8 bytes): {}",
        rate_cell(pipe)
    );
    if let Some((_, [d, sr, l])) = rows.iter().find(|r| r.0 == 2) {
        let _ = writeln!(
            out,
            "2 × 2 against it: default layout {:.2}x, slot ring {:.2}x, lanes {:.2}x",
            d / pipe,
            sr / pipe,
            l / pipe
        );
    }
    let _ = writeln!(
        out,
        "capacity: 1024 messages per queue (default, slot ring), 1024 per lane for lanes(P) (P × 1024 in all)"
    );
    if oversubscribed {
        let _ = writeln!(out, "*: 2P processes on {} cores (oversubscribed)", s.cores);
    }
    out
}

/// Producers of the MPSC section.
const MPSC_PRODUCERS: usize = 2;
/// The target for the MPSC section: shmproc at least this many times
/// ipmpsc's rate.
const MPSC_TARGET: f64 = 2.0;

/// 2 producer processes × 1 consumer process: shmproc's three layouts
/// against ipmpsc, the same M and checks as the P × P table.
fn mpsc_table(s: &Settings) -> String {
    let (m, np) = (s.messages, MPSC_PRODUCERS);
    let lanes = format!("`Queue<u64>` lanes({np})");
    let names = ["`Queue<u64>` default layout", lanes.as_str(), "`Queue<u64>` slot ring", "ipmpsc 0.5"];
    let run = |row: usize| match row {
        0 => queue_run(Layout::Default, np, 1, m),
        1 => queue_run(Layout::Lanes, np, 1, m),
        2 => queue_run(Layout::SlotRing, np, 1, m),
        _ => ipmpsc_run(np, m),
    };
    // Repetitions round-robin over the rows, so that a burst of other load
    // on the machine does not land on one row's runs only.
    let mut runs = vec![Vec::with_capacity(s.reps); names.len()];
    for _ in 0..s.reps {
        for (row, r) in runs.iter_mut().enumerate() {
            r.push(run(row));
        }
    }
    let mut rates = Vec::with_capacity(names.len());
    for (name, r) in names.iter().zip(runs) {
        let each: Vec<String> = r.iter().map(|r| rate_cell(*r)).collect();
        eprintln!("mpmc_scaling: {name}, {np} x 1: {}", each.join(", "));
        rates.push(median(r));
    }
    let ipmpsc = rates[3];

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n== 2 producers × 1 consumer (MPSC): {np} producer processes, 1 consumer process, {m} messages, \
         median of {} run(s) each, taken in turn, {} cores ==",
        s.reps, s.cores
    );
    let _ = writeln!(out, "| queue | M msgs/s | vs ipmpsc 0.5 | ≥ {MPSC_TARGET:.0}× ipmpsc |");
    let _ = writeln!(out, "|---|---|---|---|");
    for (name, r) in names.iter().zip(&rates).take(3) {
        let ratio = r / ipmpsc;
        let met = if ratio >= MPSC_TARGET { "yes" } else { "no" };
        let _ = writeln!(out, "| {name} | {:.2} | {ratio:.2}x | {met} |", r / 1e6);
    }
    let _ = writeln!(out, "| {} | {:.2} | 1.00x | - |", names[3], ipmpsc / 1e6);
    let _ = writeln!(
        out,
        "\nevery row: exactly-once (count and sum) and per-producer order checked in the consumer; \
         capacity 1024 messages (default, slot ring), 1024 per lane for lanes({np}), \
         1024 12-byte frames for ipmpsc (a ring file under /dev/shm, senders open it by path)"
    );
    if np + 1 > s.cores {
        let _ = writeln!(out, "{} processes on {} cores (oversubscribed)", np + 1, s.cores);
    }
    out
}

// ---------------------------------------------------------------------------
// Pool scaling.

/// A busy loop of `iters` steps that the optimiser cannot shorten.
fn busy(iters: u64) -> u64 {
    let mut x = iters;
    for i in 0..iters {
        x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
    }
    x
}

/// Steps of [`busy`] that take about `target` here.
fn calibrate(target: Duration) -> u64 {
    let mut iters = 1000u64;
    loop {
        let t = Instant::now();
        black_box(busy(black_box(iters)));
        let t = t.elapsed();
        if t >= Duration::from_millis(20) {
            // The best of a few at this size, for a quiet estimate.
            let best = (0..5)
                .map(|_| {
                    let t = Instant::now();
                    black_box(busy(black_box(iters)));
                    t.elapsed()
                })
                .min()
                .unwrap_or(t);
            return ((iters as f64) * target.as_secs_f64() / best.as_secs_f64()).max(1.0) as u64;
        }
        iters *= 2;
    }
}

fn pool_table(s: &Settings) -> String {
    let iters = calibrate(Duration::from_micros(40));
    let item = {
        let t = Instant::now();
        for _ in 0..100 {
            black_box(busy(black_box(iters)));
        }
        t.elapsed() / 100
    };
    let per_worker = if s.quick { 1_000u64 } else { 12_500 };
    let mut workers: Vec<usize> =
        std::iter::successors(Some(1usize), |w| Some(w * 2)).take_while(|&w| w < s.cores).collect();
    workers.push(s.cores);
    let mut rows = Vec::new();
    for &w in &workers {
        let pool = Pool::builder().processes(w).allow_threaded_fork(true).build().expect("pool");
        // Every worker up and running before the clock starts.
        let warm = pool.map(busy, vec![iters; 4 * w]).expect("map");
        assert_eq!(warm.len(), 4 * w);
        let n = per_worker * w as u64;
        let want = busy(iters);
        let rate = median(
            (0..s.reps)
                .map(|_| {
                    let t = Instant::now();
                    let out = pool.map(busy, vec![iters; n as usize]).expect("map");
                    let t = t.elapsed();
                    assert!(out.len() == n as usize && out.iter().all(|&r| r == want), "Pool::map: wrong results");
                    n as f64 / t.as_secs_f64()
                })
                .collect(),
        );
        drop(pool);
        rows.push((w, rate));
    }
    let one = rows[0].1;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n== pool scaling: Pool::map over items of a {:.1} µs busy loop ({iters} steps), {per_worker} items per worker, \
         median of {} run(s) ==",
        item.as_secs_f64() * 1e6,
        s.reps
    );
    let _ = writeln!(out, "| workers | items/s | speedup vs 1 worker |");
    let _ = writeln!(out, "|---|---|---|");
    for (w, rate) in rows {
        let _ = writeln!(out, "| {w} | {rate:.0} | {:.2}x |", rate / one);
    }
    out
}

// ---------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("mpmc_scaling: bench");
        return;
    }
    // Name filters (criterion style): none, or one matching "mpmc_scaling",
    // runs everything; one matching "pool_scaling" runs the pool table only,
    // one matching "mpsc_scaling" the MPSC table only; others skip this
    // bench.
    let filters: Vec<&str> = args.iter().filter(|a| !a.starts_with('-')).map(String::as_str).collect();
    let all = filters.is_empty() || filters.iter().any(|f| "mpmc_scaling".contains(f));
    let pool = all || filters.iter().any(|f| "pool_scaling".contains(f));
    let mpsc = all || filters.iter().any(|f| "mpsc_scaling".contains(f));
    if !pool && !mpsc {
        return;
    }
    shmproc::init();
    let s = Settings::from_env(args.iter().any(|a| a == "--test"));
    let t0 = Instant::now();
    let mut out = String::new();
    if all {
        out.push_str(&queue_table(&s));
    }
    if mpsc {
        out.push_str(&mpsc_table(&s));
    }
    if pool {
        out.push_str(&pool_table(&s));
    }
    let _ = writeln!(
        out,
        "\n(mpmc_scaling bench: {:.0} s{})",
        t0.elapsed().as_secs_f64(),
        if s.quick { ", quick" } else { "" }
    );
    print!("{out}");
    if all {
        let dir = report_dir();
        if std::fs::create_dir_all(&dir).is_ok() {
            let _ = std::fs::write(dir.join("mpmc_scaling.txt"), &out);
        }
    }
}
