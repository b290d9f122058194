//! Laned queues (`QueueBuilder::lanes`, issue 21) between real processes:
//! exactly once and FIFO per producing process with 8 × 8 processes (single
//! messages, batches, unbounded lanes), producers and consumers SIGKILLed
//! mid-batch (at a chosen message and at random times), `Disconnected`
//! across lanes, per-lane capacity, JoinableQueue counts, `recv_ref` and
//! `recv_async`, a forked child's own lane, and a corrupted lane count.
//!
//! Messages carry their producer and sequence number (and, for the kill
//! tests, a body derived from both), so loss, duplication, reordering and
//! torn messages are all visible. Consumers send what they received back
//! to the parent through a second queue, and the parent checks the union
//! exactly.
//!
//! The kills "at a chosen message" use [`Stall`]: a field whose
//! serialisation (in a producer) or deserialisation (in a consumer) stops
//! the process, inside `send_batch`/`recv_batch` and holding its lane's
//! side, when it meets the marked message, so the SIGKILL lands at a known
//! point and the documented outcome can be asserted exactly.

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rkyv::rancor::Fallible;
use rkyv::with::{ArchiveWith, DeserializeWith, SerializeWith};
use rkyv::{Archive, Archived, Place};
use shmproc::{
    Error, Event, JoinableQueue, Process, Queue, Receiver, RecvError, RecvTimeoutError, Segment, TryRecvError,
    TrySendError, Value,
};
use shmproc_tests::{ensure, trials, TestResult, HANG_LIMIT};

// ------------------------------------------------------------- helpers ----

/// Children killed (if still running) and reaped when the test ends, so a
/// failing test leaves no process behind.
struct Kids(Vec<Process>);

impl Kids {
    fn new() -> Kids {
        Kids(Vec::new())
    }

    fn add(&mut self, p: Process) -> usize {
        self.0.push(p);
        self.0.len() - 1
    }

    /// Waits for every child to exit with 0, failing at the first that
    /// exits otherwise, or if some are still running after `limit`.
    fn wait_all(&mut self, limit: Duration) -> TestResult {
        let started = Instant::now();
        let mut running: Vec<usize> = (0..self.0.len()).collect();
        while !running.is_empty() {
            let mut still = Vec::new();
            for i in running {
                let p = &mut self.0[i];
                match p.join_timeout(Duration::ZERO)? {
                    Some(0) => {}
                    Some(code) => return Err(format!("child {i} (pid {}) exited with {code}", p.pid()).into()),
                    None => still.push(i),
                }
            }
            running = still;
            if let Some(&i) = running.first() {
                if started.elapsed() > limit {
                    return Err(
                        format!("child {i} (pid {}) and {} more hung", self.0[i].pid(), running.len() - 1).into()
                    );
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    }
}

impl Drop for Kids {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = p.kill();
        }
        for p in &mut self.0 {
            let _ = p.join();
        }
    }
}

/// `producer << 32 | seq`: the value tests send (and consumers report).
fn id(producer: u64, seq: u64) -> u64 {
    (producer << 32) | seq
}

fn split(v: u64) -> (u64, u64) {
    (v >> 32, v & 0xffff_ffff)
}

/// The sequence numbers each producer's messages were received with, over
/// every consumer's list, sorted; an error on a duplicate or an unknown
/// producer.
fn tally(lists: &[Vec<u64>], producers: u64) -> Result<Vec<Vec<u64>>, String> {
    let mut per = vec![Vec::new(); producers as usize];
    for v in lists.iter().flatten() {
        let (p, s) = split(*v);
        let Some(seqs) = per.get_mut(p as usize) else { return Err(format!("a message of unknown producer {p}")) };
        seqs.push(s);
    }
    for (p, seqs) in per.iter_mut().enumerate() {
        seqs.sort_unstable();
        if let Some(w) = seqs.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("producer {p}: message {} received twice", w[0]));
        }
    }
    Ok(per)
}

/// Every producer's `0..sent(p)` received exactly once, with the exact
/// count and sum.
fn check_exactly_once(lists: &[Vec<u64>], producers: u64, sent: impl Fn(u64) -> u64) -> TestResult {
    let (mut count, mut sum) = (0u64, 0u64);
    for v in lists.iter().flatten() {
        count += 1;
        sum = sum.wrapping_add(*v);
    }
    let want_count: u64 = (0..producers).map(&sent).sum();
    let want_sum = (0..producers)
        .map(|p| {
            let n = sent(p);
            (p << 32).wrapping_mul(n).wrapping_add(n * n.saturating_sub(1) / 2)
        })
        .fold(0u64, u64::wrapping_add);
    ensure!(count == want_count, "received {count} messages, {want_count} were sent");
    ensure!(sum == want_sum, "sum of received values {sum:#x}, expected {want_sum:#x}");
    let per = tally(lists, producers)?;
    for (p, seqs) in per.iter().enumerate() {
        ensure!(seqs.iter().copied().eq(0..sent(p as u64)), "producer {p}: not every message exactly once");
    }
    Ok(())
}

/// Per producer, the sequence numbers in `got` (in receiving order) must
/// increase strictly: FIFO per producing process.
struct Order(Vec<Option<u64>>);

impl Order {
    fn new(producers: u64) -> Order {
        Order(vec![None; producers as usize])
    }

    fn check(&mut self, v: u64) -> Result<(), String> {
        let (p, s) = split(v);
        let Some(last) = self.0.get_mut(p as usize) else { return Err(format!("unknown producer {p}")) };
        if last.is_some_and(|l| l >= s) {
            return Err(format!("producer {p}: message {s} after {}", last.unwrap_or(0)));
        }
        *last = Some(s);
        Ok(())
    }
}

// ------------------------------------------ a message that can stall ----

/// Set in a producer process: serialising [`MARK`] sets the event and
/// stops the process there (inside the send).
static STALL_SEND: OnceLock<Event> = OnceLock::new();
/// Set in a consumer process: deserialising [`MARK`] sets the event and
/// stops the process there (inside the receive).
static STALL_RECV: OnceLock<Event> = OnceLock::new();

/// The value of [`Rec::mark`] that stalls.
const MARK: u64 = 1;

fn stall_if_armed(armed: &OnceLock<Event>) {
    if let Some(e) = armed.get() {
        e.set();
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }
}

/// An rkyv wrapper for a `u64` that is archived as itself, and stalls the
/// process that (de)serialises [`MARK`] where [`STALL_SEND`]/[`STALL_RECV`]
/// is armed.
struct Stall;

impl ArchiveWith<u64> for Stall {
    type Archived = Archived<u64>;
    type Resolver = ();

    fn resolve_with(field: &u64, resolver: (), out: Place<Self::Archived>) {
        field.resolve(resolver, out);
    }
}

impl<S: Fallible + ?Sized> SerializeWith<u64, S> for Stall {
    fn serialize_with(field: &u64, _: &mut S) -> Result<(), S::Error> {
        if *field == MARK {
            stall_if_armed(&STALL_SEND);
        }
        Ok(())
    }
}

impl<D: Fallible + ?Sized> DeserializeWith<Archived<u64>, u64, D> for Stall {
    fn deserialize_with(field: &Archived<u64>, _: &mut D) -> Result<u64, D::Error> {
        let v = field.to_native();
        if v == MARK {
            stall_if_armed(&STALL_RECV);
        }
        Ok(v)
    }
}

/// A self-checking message: its body is derived from its producer and
/// sequence number, and its length varies, so a torn or mixed-up message is
/// seen.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
struct Rec {
    producer: u64,
    seq: u64,
    #[rkyv(with = Stall)]
    mark: u64,
    body: Vec<u64>,
}

fn body(producer: u64, seq: u64) -> Vec<u64> {
    let len = 1 + (seq.wrapping_mul(7) + producer) % 23;
    (0..len).map(|i| id(producer, seq).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i).collect()
}

fn rec(producer: u64, seq: u64, marked: bool) -> Rec {
    Rec { producer, seq, mark: u64::from(marked), body: body(producer, seq) }
}

fn intact(r: &Rec) -> bool {
    r.body == body(r.producer, r.seq)
}

/// A consumer process's loop: `recv_batch` of up to `max` until
/// `Disconnected`, checking each message whole and in order per producer,
/// then sends `(tag, ids)` to `results`. With `each_batch`, it sends every
/// batch as it comes instead (so that a killed consumer's receipts are
/// known up to its last completed call).
fn consume_recs(
    rx: Receiver<Rec>,
    results: Queue<(u64, Vec<u64>)>,
    tag: u64,
    producers: u64,
    max: usize,
    each_batch: bool,
) -> Result<(), String> {
    let (mut order, mut all, mut got) = (Order::new(producers), Vec::new(), Vec::new());
    loop {
        got.clear();
        match rx.recv_batch(&mut got, max) {
            Ok(_) => {}
            Err(RecvError::Disconnected) => break,
            Err(e) => return Err(format!("consumer {tag}: {e}")),
        }
        let mut ids = Vec::with_capacity(got.len());
        for r in &got {
            if !intact(r) {
                return Err(format!("consumer {tag}: torn message {}/{}", r.producer, r.seq));
            }
            order.check(id(r.producer, r.seq))?;
            ids.push(id(r.producer, r.seq));
        }
        if each_batch {
            results.send(&(tag, ids)).map_err(|e| e.to_string())?;
            // A victim: slow down between calls, so that a kill at a random
            // time finds it mid-stream.
            std::thread::sleep(Duration::from_micros(20));
        } else {
            all.extend(ids);
        }
    }
    results.send(&(tag, all)).map_err(|e| e.to_string())
}

/// Everything in `results` now (the children that sent are gone), grouped
/// by tag.
fn collect(results: &Queue<(u64, Vec<u64>)>, tags: u64) -> Result<Vec<Vec<u64>>, Box<dyn std::error::Error>> {
    let mut by_tag = vec![Vec::new(); tags as usize];
    loop {
        match results.try_recv() {
            Ok((tag, ids)) => by_tag.get_mut(tag as usize).ok_or("bad tag")?.extend(ids),
            Err(TryRecvError::Empty) => return Ok(by_tag),
            Err(e) => return Err(e.into()),
        }
    }
}

// --------------------------------------------------- 1, 2: many × many ----

const PRODUCERS: u64 = 8;
const CONSUMERS: u64 = 8;
const PER: u64 = 20_000;

/// 8 producer processes × 8 consumer processes through `q`, one by one
/// (`batch == 1`) or in batches of `batch`: every message exactly once,
/// FIFO per producer in what each consumer received, and every consumer
/// ends on `Disconnected` once the producers exited.
fn eight_by_eight(q: Queue<u64>, batch: usize) -> TestResult {
    let results = Queue::<(u64, Vec<u64>)>::unbounded()?;
    let (tx, rx) = q.into_split();
    let mut kids = Kids::new();
    for p in 0..PRODUCERS {
        let tx = tx.clone();
        kids.add(Process::spawn(move || -> Result<(), String> {
            let values: Vec<u64> = (0..PER).map(|s| id(p, s)).collect();
            if batch == 1 {
                for v in &values {
                    tx.send(v).map_err(|e| e.to_string())?;
                }
            } else {
                for chunk in values.chunks(batch) {
                    tx.send_batch(chunk).map_err(|e| e.to_string())?;
                }
            }
            Ok(())
        })?);
    }
    // Consumers must not inherit a sender, or they would never see the end.
    drop(tx);
    for c in 0..CONSUMERS {
        let (rx, results) = (rx.clone(), results.clone());
        kids.add(Process::spawn(move || -> Result<(), String> {
            let (mut order, mut got) = (Order::new(PRODUCERS), Vec::new());
            loop {
                let before = got.len();
                let r =
                    if batch == 1 { rx.recv().map(|v| got.push(v)) } else { rx.recv_batch(&mut got, batch).map(drop) };
                match r {
                    Ok(()) => {}
                    Err(RecvError::Disconnected) => break,
                    Err(e) => return Err(e.to_string()),
                }
                for &v in &got[before..] {
                    order.check(v).map_err(|e| format!("consumer {c}: {e}"))?;
                }
            }
            results.send(&(c, got)).map_err(|e| e.to_string())
        })?);
    }
    drop(rx);
    kids.wait_all(HANG_LIMIT * 6)?;
    let lists = collect(&results, CONSUMERS)?;
    check_exactly_once(&lists, PRODUCERS, |_| PER)
}

fn eight_by_eight_exactly_once_fifo_per_producer() -> TestResult {
    let q = Queue::<u64>::builder().capacity(64).lanes(8).build()?;
    ensure!(q.lanes() == 8, "lanes() = {}", q.lanes());
    eight_by_eight(q, 1)
}

fn eight_by_eight_batches_and_unbounded_lanes() -> TestResult {
    eight_by_eight(Queue::<u64>::builder().capacity(64).lanes(8).build()?, 64)?;
    let q = Queue::<u64>::builder().unbounded().lanes(8).build()?;
    ensure!(q.lanes() == 8 && q.capacity() == usize::MAX, "unbounded: {} lanes, capacity {}", q.lanes(), q.capacity());
    eight_by_eight(q, 64)?;
    // Unbounded, one by one too.
    eight_by_eight(Queue::<u64>::builder().unbounded().lanes(8).build()?, 1)
}

// ------------------------------------------- 3: producer killed mid-batch ----

/// A producer stopped inside `send_batch` at a chosen message (its
/// serialisation stalls there, holding its lane's producing side) and
/// SIGKILLed: the messages of the batch's earlier runs were delivered, the
/// stalled one's run (published once, when complete) and the rest of the
/// batch never, nothing torn; the producer
/// sharing its lane takes the side over (with `lanes(2)`, four producers
/// share two lanes in pairs), the others never notice; consumers end on
/// `Disconnected`. Then the same with kills at random points of a
/// send_batch loop on tiny lanes.
fn producer_killed_mid_batch() -> TestResult {
    const LIVE: u64 = 3;
    const N: u64 = 3000;
    const BATCH: u64 = 50;
    for (lanes, mark) in [(2usize, 1234u64), (4, 777), (2, 50), (4, 0)] {
        let q = Queue::<Rec>::builder().capacity(4).lanes(lanes).build()?;
        let results = Queue::<(u64, Vec<u64>)>::unbounded()?;
        let stalled = Event::new()?;
        let (tx, rx) = q.into_split();
        let mut kids = Kids::new();
        for p in 0..LIVE {
            let tx = tx.clone();
            kids.add(Process::spawn(move || -> Result<(), String> {
                for start in (0..N).step_by(BATCH as usize) {
                    let batch: Vec<Rec> = (start..(start + BATCH).min(N)).map(|s| rec(p, s, false)).collect();
                    tx.send_batch(&batch).map_err(|e| e.to_string())?;
                }
                Ok(())
            })?);
        }
        let (vtx, vstalled) = (tx.clone(), stalled.clone());
        let victim = kids.add(Process::spawn(move || -> Result<(), String> {
            STALL_SEND.set(vstalled).map_err(|_| "armed twice")?;
            for start in (0u64..).step_by(BATCH as usize) {
                let batch: Vec<Rec> = (start..start + BATCH).map(|s| rec(LIVE, s, s == mark)).collect();
                vtx.send_batch(&batch).map_err(|e| e.to_string())?;
            }
            Ok(())
        })?);
        drop(tx);
        for c in 0..2 {
            let (rx, results) = (rx.clone(), results.clone());
            kids.add(Process::spawn(move || consume_recs(rx, results, c, LIVE + 1, 16, false))?);
        }
        drop(rx);
        ensure!(stalled.wait_timeout(HANG_LIMIT), "lanes {lanes}: the victim never reached message {mark}");
        // Let the others run into the stalled one's lane for a while.
        std::thread::sleep(Duration::from_millis(20));
        let per = kill_producer_and_tally(kids, victim, &results, LIVE, N, &format!("lanes {lanes}, mark {mark}"))?;
        // A prefix of its messages, ending before the stalled one: a run
        // of a batch is published once, when it is complete, so the
        // messages of the stalled one's run before it (at most 3: a lane
        // holds 4) were written but never published, like the stalled one.
        let v = &per[LIVE as usize];
        let k = v.len() as u64;
        ensure!(
            v.iter().copied().eq(0..k) && k <= mark && mark - k < 4,
            "lanes {lanes}: the killed producer's messages are not 0..k with {mark} - 3 <= k <= {mark}: {k} of them, last {:?}",
            v.last()
        );
    }
    producer_killed_at_random_points()
}

/// Kills producer `victim` (the last of `live + 1`), waits for the other
/// children, and returns the seqs each producer's messages were received
/// with (two consumers' lists), having checked that every live producer's
/// are exactly `0..n`.
fn kill_producer_and_tally(
    mut kids: Kids,
    victim: usize,
    results: &Queue<(u64, Vec<u64>)>,
    live: u64,
    n: u64,
    what: &str,
) -> Result<Vec<Vec<u64>>, Box<dyn std::error::Error>> {
    kids.0[victim].kill()?;
    ensure!(kids.0[victim].join_timeout(HANG_LIMIT)? == Some(-libc::SIGKILL));
    kids.0.remove(victim);
    kids.wait_all(HANG_LIMIT * 6).map_err(|e| format!("{what}: {e}"))?;
    let lists = collect(results, 2)?;
    let per = tally(&lists, live + 1)?;
    for (p, seqs) in per.iter().enumerate().take(live as usize) {
        ensure!(seqs.iter().copied().eq(0..n), "{what}: live producer {p} lost or doubled messages");
    }
    Ok(per)
}

/// Kills at random points of a `send_batch` loop of 100-message batches
/// into lanes of 3 messages (so the producer is mostly blocked mid-batch
/// or mid-write): the killed producer's messages arrive as a prefix of its
/// sequence, without gaps or duplicates, at least as long as what its
/// completed calls sent; the others' exactly once.
fn producer_killed_at_random_points() -> TestResult {
    const LIVE: u64 = 3;
    const N: u64 = 2000;
    for round in 0..4u64 {
        let q = Queue::<Rec>::builder().capacity(3).lanes(3).build()?;
        let results = Queue::<(u64, Vec<u64>)>::unbounded()?;
        let done = Value::new(0u64)?;
        let (tx, rx) = q.into_split();
        let mut kids = Kids::new();
        for p in 0..LIVE {
            let tx = tx.clone();
            kids.add(Process::spawn(move || -> Result<(), String> {
                for start in (0..N).step_by(37) {
                    let batch: Vec<Rec> = (start..(start + 37).min(N)).map(|s| rec(p, s, false)).collect();
                    tx.send_batch(&batch).map_err(|e| e.to_string())?;
                }
                Ok(())
            })?);
        }
        let (vtx, vdone) = (tx.clone(), done.clone());
        let victim = kids.add(Process::spawn(move || -> Result<(), String> {
            for start in (0u64..).step_by(100) {
                let batch: Vec<Rec> = (start..start + 100).map(|s| rec(LIVE, s, false)).collect();
                vtx.send_batch(&batch).map_err(|e| e.to_string())?;
                vdone.set(start + 100);
            }
            Ok(())
        })?);
        drop(tx);
        for c in 0..2 {
            let (rx, results) = (rx.clone(), results.clone());
            kids.add(Process::spawn(move || consume_recs(rx, results, c, LIVE + 1, 1 + 20 * c as usize, false))?);
        }
        drop(rx);
        let started = Instant::now();
        while done.get() < 200 * (round + 1) {
            ensure!(started.elapsed() < HANG_LIMIT, "round {round}: the victim does not progress");
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_micros(300 + round * 1700));
        let per = kill_producer_and_tally(kids, victim, &results, LIVE, N, &format!("round {round}"))?;
        // Only the victim sets it, and it is dead.
        let completed = done.get();
        let v = &per[LIVE as usize];
        let m = v.len() as u64;
        ensure!(v.iter().copied().eq(0..m), "round {round}: the killed producer's messages have a gap");
        ensure!(m >= completed, "round {round}: {m} of the killed producer's messages, its calls had sent {completed}");
        ensure!(m < completed + 100, "round {round}: {m} messages, more than its last batch could add to {completed}");
        println!("round {round}: killed after {m} messages ({completed} in completed calls)");
    }
    Ok(())
}

// ------------------------------------------- 4: consumer killed mid-batch ----

/// A consumer stopped inside `recv_batch` at a chosen message (its
/// deserialisation stalls there: the run is being read, the lane's
/// receiving side held) and SIGKILLed, while two other consumers wait for
/// that lane: exactly one message is lost, the first of the run the dead
/// one was reading (the message after the last it received from that
/// lane); the rest of the run, the stalled message included, goes to the
/// others; nothing is received twice; every consumer ends on
/// `Disconnected`.
fn consumer_killed_mid_batch() -> TestResult {
    const P: u64 = 4;
    const N: u64 = 400;
    let (mut first_of_run, mut mid_run) = (0u32, 0u32);
    for (mark, max) in [(0u64, 16usize), (5, 16), (40, 64), (77, 7), (150, 64), (203, 33), (390, 10)] {
        let q = Queue::<Rec>::builder().capacity(N as usize + 1).lanes(P as usize).build()?;
        let results = Queue::<(u64, Vec<u64>)>::unbounded()?;
        let (tx, rx) = q.into_split();
        let mut kids = Kids::new();
        // Fill first: one producer process per lane, then gone.
        for p in 0..P {
            let tx = tx.clone();
            kids.add(Process::spawn(move || -> Result<(), String> {
                let all: Vec<Rec> = (0..N).map(|s| rec(p, s, p == 0 && s == mark)).collect();
                tx.send_batch(&all).map_err(|e| e.to_string())
            })?);
        }
        drop(tx);
        kids.wait_all(HANG_LIMIT)?;
        ensure!(rx.len() == (P * N) as usize, "len() = {} with {} queued over {P} lanes", rx.len(), P * N);
        let stalled = Event::new()?;
        let (vrx, vres, vstalled) = (rx.clone(), results.clone(), stalled.clone());
        let victim = kids.add(Process::spawn(move || -> Result<(), String> {
            STALL_RECV.set(vstalled).map_err(|_| "armed twice")?;
            consume_recs(vrx, vres, 0, P, max, true)
        })?);
        ensure!(stalled.wait_timeout(HANG_LIMIT), "the victim never reached message {mark}");
        for c in 1..3 {
            let (rx, results) = (rx.clone(), results.clone());
            kids.add(Process::spawn(move || consume_recs(rx, results, c, P, max, false))?);
        }
        drop(rx);
        // The survivors drain the other lanes and wait for the held one.
        std::thread::sleep(Duration::from_millis(20));
        kids.0[victim].kill()?;
        ensure!(kids.0[victim].join_timeout(HANG_LIMIT)? == Some(-libc::SIGKILL));
        kids.0.remove(victim);
        kids.wait_all(HANG_LIMIT * 3).map_err(|e| format!("mark {mark}: {e}"))?;
        let lists = collect(&results, 3)?;
        // Every call the victim completed was reported before its next one.
        let before = lists[0].iter().filter(|&&v| split(v).0 == 0).map(|&v| split(v).1).max();
        let first = before.map_or(0, |b| b + 1);
        let per = tally(&lists, P).map_err(|e| format!("mark {mark}: {e}"))?;
        let mut lost = Vec::new();
        for (p, seqs) in per.iter().enumerate() {
            let have: HashSet<u64> = seqs.iter().copied().collect();
            lost.extend((0..N).filter(|s| !have.contains(s)).map(|s| (p as u64, s)));
        }
        ensure!(
            lost == [(0, first)],
            "mark {mark}, max {max}: lost {lost:?}; expected exactly the first of the dead consumer's run, (0, {first})"
        );
        ensure!(first <= mark, "mark {mark}: the lost message {first} is after the stalled one");
        if first == mark {
            first_of_run += 1;
        } else {
            mid_run += 1;
        }
    }
    println!("the stalled message was first of its run {first_of_run} times, inside it {mid_run} times");
    consumer_killed_at_random_points()
}

/// Kills at random points of a consumer's `recv_batch` loop: nothing is
/// received twice, FIFO per producer holds in each survivor, and what is
/// missing is at most what the dead consumer can have taken without
/// reporting it: its last returned batch (killed before it reported it)
/// or the first message of the run it was reading.
fn consumer_killed_at_random_points() -> TestResult {
    const P: u64 = 4;
    const N: u64 = 2000;
    const MAX: usize = 24;
    for round in 0..5u64 {
        let q = Queue::<Rec>::builder().capacity(64).lanes(P as usize).build()?;
        let results = Queue::<(u64, Vec<u64>)>::unbounded()?;
        let (tx, rx) = q.into_split();
        let mut kids = Kids::new();
        for p in 0..P {
            let tx = tx.clone();
            kids.add(Process::spawn(move || -> Result<(), String> {
                for start in (0..N).step_by(50) {
                    let batch: Vec<Rec> = (start..start + 50).map(|s| rec(p, s, false)).collect();
                    tx.send_batch(&batch).map_err(|e| e.to_string())?;
                }
                Ok(())
            })?);
        }
        drop(tx);
        let mut victim = None;
        for c in 0..3 {
            let (rx, results) = (rx.clone(), results.clone());
            let i = kids.add(Process::spawn(move || consume_recs(rx, results, c, P, MAX, c == 0))?);
            victim.get_or_insert(i);
        }
        drop(rx);
        let victim = victim.ok_or("no victim")?;
        std::thread::sleep(Duration::from_micros(500 + round * 2300));
        kids.0[victim].kill()?;
        let code = kids.0[victim].join_timeout(HANG_LIMIT)?;
        kids.0.remove(victim);
        kids.wait_all(HANG_LIMIT * 6).map_err(|e| format!("round {round}: {e}"))?;
        let lists = collect(&results, 3)?;
        let per = tally(&lists, P).map_err(|e| format!("round {round}: {e}"))?;
        let received: usize = per.iter().map(Vec::len).sum();
        let lost = (P * N) as usize - received;
        if code == Some(0) {
            ensure!(lost == 0, "round {round}: the victim finished, yet {lost} messages are missing");
        }
        ensure!(lost <= MAX, "round {round}: {lost} messages lost to one killed consumer (at most {MAX})");
        println!("round {round}: victim exit {code:?}, {lost} messages lost with it");
    }
    Ok(())
}

// ------------------------------------- 5: Disconnected, len, capacity ----

/// Senders in several processes, one lane each, exit (then, a second time,
/// are SIGKILLed) with messages left in their lanes: every message is
/// delivered, in order per producer, before `Disconnected`; `len()` sums
/// the lanes and `capacity()` is lanes × per-lane capacity.
fn disconnected_when_all_senders_gone() -> TestResult {
    for killed in [false, true] {
        let q = Queue::<u64>::builder().capacity(16).lanes(4).build()?;
        ensure!(q.lanes() == 4 && q.capacity() == 64, "lanes {}, capacity {}", q.lanes(), q.capacity());
        let (tx, rx) = q.into_split();
        let sent = Event::new()?;
        let mut kids = Kids::new();
        for p in 0..3u64 {
            let (tx, sent) = (tx.clone(), sent.clone());
            kids.add(Process::spawn(move || -> Result<(), String> {
                for s in 0..5 + p {
                    tx.send(&id(p, s)).map_err(|e| e.to_string())?;
                }
                if killed {
                    sent.set();
                    std::thread::sleep(Duration::from_secs(60));
                }
                Ok(())
            })?);
        }
        drop(tx);
        let total = 5 + 6 + 7;
        if killed {
            ensure!(shmproc_tests::eventually(HANG_LIMIT, || rx.len() == total), "len() = {}", rx.len());
            ensure!(rx.try_recv().is_ok_and(|v| split(v).1 == 0), "a live sender's first message");
            ensure!(rx.recv_timeout(Duration::from_millis(30)).is_ok());
            ensure!(rx.len() == total - 2, "len() = {} after two receives", rx.len());
            for k in &kids.0 {
                k.kill()?;
            }
            for k in &mut kids.0 {
                k.join()?;
            }
        } else {
            kids.wait_all(HANG_LIMIT)?;
            ensure!(rx.len() == total, "len() = {} with {total} queued in three lanes", rx.len());
            ensure!(!rx.is_empty());
        }
        let mut got = Vec::new();
        let mut order = Order::new(3);
        loop {
            match rx.recv_timeout(HANG_LIMIT) {
                Ok(v) => {
                    order.check(v)?;
                    got.push(v);
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(e) => return Err(format!("killed {killed}: {e} after {} messages", got.len()).into()),
            }
        }
        let skip = if killed { 2 } else { 0 };
        ensure!(got.len() + skip == total, "killed {killed}: {} messages before Disconnected", got.len() + skip);
        ensure!(rx.is_empty() && rx.try_recv() == Err(TryRecvError::Disconnected));
    }
    blocked_receiver_gets_every_lane_before_disconnected()
}

/// A receiver asleep in `recv` on an empty laned queue, then three
/// producers (one lane each) send one message and exit at once: it wakes for
/// each lane's message and gets all three before `Disconnected`.
fn blocked_receiver_gets_every_lane_before_disconnected() -> TestResult {
    for round in 0..20u64 {
        let (tx, rx) = Queue::<u64>::builder().capacity(4).lanes(4).build()?.into_split();
        let go = Event::new()?;
        let mut kids = Kids::new();
        for p in 0..3u64 {
            let (tx, go) = (tx.clone(), go.clone());
            kids.add(Process::spawn(move || -> Result<(), String> {
                if !go.wait_timeout(HANG_LIMIT) {
                    return Err("no go".into());
                }
                tx.send(&id(p, round)).map_err(|e| e.to_string())
            })?);
        }
        drop(tx);
        let consumer = kids.add(Process::spawn(move || -> Result<(), String> {
            let mut got = Vec::new();
            loop {
                match rx.recv() {
                    Ok(v) => got.push(v),
                    Err(RecvError::Disconnected) => break,
                    Err(e) => return Err(e.to_string()),
                }
            }
            got.sort_unstable();
            let want: Vec<u64> = (0..3).map(|p| id(p, round)).collect();
            if got == want {
                Ok(())
            } else {
                Err(format!("round {round}: got {got:?} before Disconnected"))
            }
        })?);
        let pid = kids.0[consumer].pid();
        ensure!(
            shmproc_tests::eventually(HANG_LIMIT, || shmproc_tests::proc_state(pid) == Some('S')),
            "the consumer never slept"
        );
        go.set();
        kids.wait_all(HANG_LIMIT)?;
    }
    Ok(())
}

/// `try_send` is `Full` when the sender's own lane holds `capacity`
/// messages, whatever the other lanes hold: a process (and its threads)
/// fill their lane; forked children get lanes of their own until the
/// round-robin comes back to the full one.
fn try_send_full_only_when_own_lane_is_full() -> TestResult {
    let q = Queue::<u64>::builder().capacity(2).lanes(3).build()?;
    ensure!(q.capacity() == 6, "capacity {}", q.capacity());
    q.try_send(&id(0, 0))?;
    q.try_send(&id(0, 1))?;
    ensure!(q.try_send(&id(0, 2)) == Err(TrySendError::Full), "a third message in a lane of two");
    ensure!(q.len() == 2);
    // A thread of this process shares its lane.
    let from_thread = std::thread::scope(|s| s.spawn(|| q.try_send(&id(0, 3))).join());
    ensure!(from_thread.is_ok_and(|r| r == Err(TrySendError::Full)), "a thread got another lane");
    // The thread is joined; let the kernel drop it before the next fork
    // (which refuses a process with several threads).
    ensure!(shmproc_tests::eventually(HANG_LIMIT, || threads() == 1), "the thread lingers");
    for child in 1..3u64 {
        let q2 = q.clone();
        let mut p = Process::spawn(move || {
            let a = q2.try_send(&id(child, 0)).is_ok() && q2.try_send(&id(child, 1)).is_ok();
            match (a, q2.try_send(&id(child, 2))) {
                (true, Err(TrySendError::Full)) => 0,
                (false, _) => 1,
                _ => 2,
            }
        })?;
        let code = p.join_timeout(HANG_LIMIT)?;
        ensure!(code == Some(0), "child {child}: {code:?} (1: its lane was not empty, 2: not full after two)");
    }
    ensure!(q.len() == 6, "len() = {} with three full lanes", q.len());
    // The fourth ticket comes round to the parent's (full) lane.
    let q2 = q.clone();
    let mut p = Process::spawn(move || i32::from(q2.try_send(&id(3, 0)) != Err(TrySendError::Full)))?;
    ensure!(p.join_timeout(HANG_LIMIT)? == Some(0), "the fourth producer's lane was not the first one's");
    // Room in one lane lets only its producer in: take until this
    // process's lane has room again.
    let mut got = Vec::new();
    while q.try_send(&id(0, 2)) == Err(TrySendError::Full) {
        got.push(q.try_recv()?);
        ensure!(got.len() <= 6, "took every message and still Full");
    }
    ensure!(got.iter().filter(|&&v| split(v).0 == 0).count() == 1, "own lane got room after {got:?}");
    Ok(())
}

/// This process's thread count.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count)
}

// ------------------------------------------------ 6: JoinableQueue ----

/// A JoinableQueue with lanes (through `JoinableQueue::from_builder`):
/// producers in four processes, three worker processes; `join` returns
/// exactly when every task is done, the count ends at zero, and one
/// `task_done` too many is refused.
fn joinable_queue_counts_exact_with_lanes() -> TestResult {
    const P: u64 = 4;
    const N: u64 = 500;
    let q = JoinableQueue::<u64>::from_builder(Queue::builder().capacity(8).lanes(4))?;
    ensure!(q.queue().lanes() == 4);
    let (done, sum) = (Value::new(0u64)?, Value::new(0u64)?);
    let mut kids = Kids::new();
    for _ in 0..3 {
        let (q, done, sum) = (q.clone(), done.clone(), sum.clone());
        kids.add(Process::builder().daemon(true).spawn(move || -> () {
            while let Ok(v) = q.recv() {
                std::thread::sleep(Duration::from_micros(50));
                sum.update(|s| *s += v);
                done.update(|d| *d += 1);
                q.task_done().unwrap();
            }
        })?);
    }
    let mut producers = Kids::new();
    for p in 0..P {
        let q = q.clone();
        producers.add(Process::spawn(move || -> Result<(), String> {
            for s in 0..N {
                q.send(&id(p, s)).map_err(|e| e.to_string())?;
            }
            Ok(())
        })?);
    }
    producers.wait_all(HANG_LIMIT * 3)?;
    ensure!(q.join_timeout(HANG_LIMIT * 3), "join timed out with {} unfinished", q.unfinished());
    ensure!(done.get() == P * N, "join returned with {} of {} done", done.get(), P * N);
    ensure!(q.unfinished() == 0);
    let want: u64 = (0..P).map(|p| (p << 32) * N + N * (N - 1) / 2).sum();
    ensure!(sum.get() == want, "sum {:#x}, expected {want:#x}", sum.get());
    ensure!(q.task_done().is_err(), "task_done below zero must fail");
    Ok(())
}

// ------------------------------------------- 7: recv_ref, recv_async ----

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq, Clone)]
struct Order2 {
    id: u64,
    customer: String,
}

/// `recv_ref` reads messages in place from every lane (three producer
/// processes), in order per producer, and reports `Disconnected` at the end.
fn recv_ref_across_lanes() -> TestResult {
    const N: u64 = 300;
    let (tx, rx) = Queue::<Order2>::builder().capacity(16).lanes(3).build()?.into_split();
    let mut kids = Kids::new();
    for p in 0..3u64 {
        let tx = tx.clone();
        kids.add(Process::spawn(move || -> Result<(), String> {
            for s in 0..N {
                let o = Order2 { id: id(p, s), customer: format!("customer-{p}-{s}") };
                tx.send(&o).map_err(|e| e.to_string())?;
            }
            Ok(())
        })?);
    }
    drop(tx);
    let (mut order, mut got) = (Order::new(3), Vec::new());
    loop {
        match rx.recv_ref() {
            Ok(r) => {
                let (p, s) = split(r.id.to_native());
                ensure!(r.customer.as_str() == format!("customer-{p}-{s}"), "message {p}/{s} wrong in place");
                order.check(r.id.to_native())?;
                got.push(r.id.to_native());
            }
            Err(RecvError::Disconnected) => break,
            Err(e) => return Err(e.into()),
        }
    }
    kids.wait_all(HANG_LIMIT)?;
    check_exactly_once(&[got], 3, |_| N)
}

/// `recv_async` (tokio, in a consumer process of its own, so the test
/// process stays single-threaded) takes from every lane, waking for
/// messages published in any of them, in bursts with pauses.
fn recv_async_across_lanes() -> TestResult {
    const N: u64 = 3000;
    let (tx, rx) = Queue::<u64>::builder().capacity(32).lanes(3).build()?.into_split();
    let results = Queue::<(u64, Vec<u64>)>::unbounded()?;
    let mut kids = Kids::new();
    for p in 0..3u64 {
        let tx = tx.clone();
        kids.add(Process::spawn(move || -> Result<(), String> {
            for s in 0..N {
                tx.send(&id(p, s)).map_err(|e| e.to_string())?;
                // Pauses in turn, so that the receiver often waits while
                // only one lane gets a message.
                if s % 200 == 100 + 30 * p {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            Ok(())
        })?);
    }
    drop(tx);
    let res = results.clone();
    kids.add(Process::spawn(move || -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().map_err(|e| e.to_string())?;
        let got = rt.block_on(async {
            let (mut order, mut got) = (Order::new(3), Vec::new());
            loop {
                match tokio::time::timeout(HANG_LIMIT, rx.recv_async()).await {
                    Ok(Ok(v)) => {
                        order.check(v)?;
                        got.push(v);
                    }
                    Ok(Err(RecvError::Disconnected)) => return Ok(got),
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) => return Err(format!("recv_async hung after {} messages", got.len())),
                }
            }
        })?;
        res.send(&(0, got)).map_err(|e| e.to_string())
    })?);
    kids.wait_all(HANG_LIMIT * 3)?;
    let lists = collect(&results, 1)?;
    check_exactly_once(&lists, 3, |_| N)
}

// --------------------------------- 8: a child's lane, a corrupt count ----

/// A forked child gets a lane of its own on its first send, even when its
/// parent had one already: with the parent's lane full, the child still
/// sends; and the two processes' messages, sent at once, all arrive, each
/// process's in order.
fn forked_child_gets_its_own_lane() -> TestResult {
    let q = Queue::<u64>::builder().capacity(4).lanes(2).build()?;
    for s in 0..4 {
        q.try_send(&id(0, s))?;
    }
    ensure!(q.try_send(&id(0, 4)) == Err(TrySendError::Full));
    let q2 = q.clone();
    let mut child = Process::spawn(move || match q2.try_send(&id(1, 0)) {
        Ok(()) => 0,
        Err(TrySendError::Full) => 1,
        Err(_) => 2,
    })?;
    ensure!(child.join_timeout(HANG_LIMIT)? == Some(0), "the forked child was put on its parent's full lane");
    // Drain, then both processes send at once to a consumer process.
    let mut order = Order::new(2);
    for _ in 0..5 {
        order.check(q.try_recv()?)?;
    }
    const N: u64 = 5000;
    let results = Queue::<(u64, Vec<u64>)>::unbounded()?;
    let (rx, res) = (q.receiver(), results.clone());
    let mut kids = Kids::new();
    kids.add(Process::spawn(move || -> Result<(), String> {
        let (mut order, mut got) = (Order::new(2), Vec::new());
        // This child holds copies of the parent's handles: it counts, not
        // waits for Disconnected.
        while got.len() < 2 * N as usize {
            let v = rx.recv_timeout(HANG_LIMIT).map_err(|e| format!("{e} after {}", got.len()))?;
            order.check(v)?;
            got.push(v);
        }
        res.send(&(0, got)).map_err(|e| e.to_string())
    })?);
    let q2 = q.clone();
    kids.add(Process::spawn(move || -> Result<(), String> {
        for s in 1..=N {
            q2.send(&id(1, s)).map_err(|e| e.to_string())?;
        }
        Ok(())
    })?);
    for s in 5..5 + N {
        q.send(&id(0, s))?;
    }
    kids.wait_all(HANG_LIMIT * 3)?;
    let got = collect(&results, 1)?;
    let per = tally(&got, 2)?;
    ensure!(per[0].iter().copied().eq(5..5 + N), "the parent's messages");
    ensure!(per[1].iter().copied().eq(1..=N), "the child's messages");
    ensure!(q.try_recv() == Err(TryRecvError::Empty));
    Ok(())
}

/// The offsets in a laned queue's object where its lane count is kept:
/// the 32-bit words that hold 3 in a queue built with 3 lanes and 5 in one
/// built alike with 5.
fn lane_count_offsets() -> Result<Vec<usize>, Box<dyn std::error::Error>> {
    let words = |lanes: usize| -> Result<(Segment, Vec<u32>), Box<dyn std::error::Error>> {
        let seg = Segment::anonymous(8 << 20)?;
        let _q = Queue::<u64>::builder().capacity(8).lanes(lanes).build_in(&seg, "q")?;
        let info = seg.region().find(b"q")?;
        let base = seg.region().base().as_ptr();
        let n = info.size.min(4096) / 4;
        // SAFETY: inside the mapped object, which nobody else writes now;
        // volatile reads of bytes any value of which is valid.
        let w = (0..n).map(|i| unsafe { base.add(info.offset + 4 * i).cast::<u32>().read_volatile() }).collect();
        Ok((seg, w))
    };
    let ((_s3, three), (_s5, five)) = (words(3)?, words(5)?);
    Ok((0..three.len().min(five.len())).filter(|&i| three[i] == 3 && five[i] == 5).map(|i| 4 * i).collect())
}

/// A garbage lane count written into a laned queue's header (through the
/// raw mapping, as a hostile peer could): opening the queue gives a typed
/// error, never a panic (checked in a child, so an abort fails the test).
/// Counts out of range (0, over 64, or more lanes than the object has bytes
/// for) must be refused; a count in range but wrong must be refused too, or
/// give a queue whose operations return values or errors (no panic, no
/// hang): the test reports which.
fn corrupt_lane_count_gives_typed_error() -> TestResult {
    let offsets = lane_count_offsets()?;
    ensure!(!offsets.is_empty(), "no word of the object holds the lane count");
    println!("lane count at object offset(s) {offsets:?}");
    let mut accepted = Vec::new();
    for &off in &offsets {
        for garbage in [0u32, 1, 2, 3, 5, 8, 64, 65, 1000, 0x8000_0000, u32::MAX] {
            let mut child = Process::spawn(move || -> i32 {
                let Ok(seg) = Segment::anonymous(8 << 20) else { return 10 };
                let Ok(q) = Queue::<u64>::builder().capacity(8).lanes(4).build_in(&seg, "q") else { return 11 };
                if q.try_send(&1).is_err() {
                    return 12;
                }
                let Ok(info) = seg.region().find(b"q") else { return 13 };
                let base = seg.region().base().as_ptr();
                // SAFETY: a 4-byte word inside the mapped object (found
                // above); the queue's header is atomics and plain bytes,
                // valid for any value, which is what this test checks.
                unsafe { base.add(info.offset + off).cast::<u32>().write_volatile(garbage) };
                match Queue::<u64>::open_in(&seg, "q") {
                    Err(Error::Layout(_)) | Err(Error::Region(_)) => 0,
                    Err(Error::Segment(_)) => 3,
                    Ok(q) => {
                        // Whatever it holds, every operation returns.
                        let _ = (q.try_send(&2), q.try_recv(), q.recv_timeout(Duration::from_millis(1)));
                        let _ = (q.len(), q.capacity(), q.lanes(), q.is_empty());
                        4
                    }
                }
            })?;
            let code = child.join_timeout(HANG_LIMIT)?;
            let in_range = (1..=64).contains(&garbage);
            match code {
                Some(0) => {}
                Some(4) if in_range => accepted.push(garbage),
                Some(3) => return Err(format!("lane count {garbage} at offset {off}: a segment error").into()),
                Some(4) => return Err(format!("lane count {garbage} at offset {off}: opened as a queue").into()),
                Some(1) => return Err(format!("lane count {garbage} at offset {off}: a panic").into()),
                None => {
                    child.kill()?;
                    child.join()?;
                    return Err(format!("lane count {garbage} at offset {off}: hung").into());
                }
                other => return Err(format!("lane count {garbage} at offset {off}: exit {other:?}").into()),
            }
        }
    }
    println!("wrong lane counts in range that opened (operations returned): {accepted:?}");
    Ok(())
}

fn main() {
    shmproc_tests::run(trials![
        eight_by_eight_exactly_once_fifo_per_producer,
        eight_by_eight_batches_and_unbounded_lanes,
        producer_killed_mid_batch,
        consumer_killed_mid_batch,
        disconnected_when_all_senders_gone,
        try_send_full_only_when_own_lane_is_full,
        joinable_queue_counts_exact_with_lanes,
        recv_ref_across_lanes,
        recv_async_across_lanes,
        forked_child_gets_its_own_lane,
        corrupt_lane_count_gives_typed_error,
    ]);
}
