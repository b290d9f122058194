//! `shmproc::net` (feature `net`) across real processes on loopback: every
//! zenoh session is opened in a forked child, never in this (single-
//! threaded, forking) test process.

use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use shmproc::net::{Delivery, JoinableQueue, NetError, Node, Pool, Queue, Registry, RemoteTaskError, Worker};
use shmproc::{Event, Process, RecvError, RecvTimeoutError, Value};
use shmproc_tests::{ensure, eventually, trials, TestResult, HANG_LIMIT};
use zenoh::Wait;

/// A free loopback port (bound and released: the host binds it again at
/// once).
fn free_port() -> Result<u16, Box<dyn std::error::Error>> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn endpoint(port: u16) -> String {
    format!("tcp/127.0.0.1:{port}")
}

fn host_node(port: u16, prefix: &str) -> Node {
    Node::builder().listen(endpoint(port)).prefix(prefix).open().expect("host node")
}

fn remote_node(port: u16, prefix: &str) -> Node {
    Node::builder().connect(endpoint(port)).prefix(prefix).open().expect("remote node")
}

/// Serves `Queue<u64>` named `q` until `stop` is set.
fn queue_host(
    port: u16,
    prefix: &'static str,
    capacity: usize,
    stop: Event,
) -> Result<Process, Box<dyn std::error::Error>> {
    Ok(Process::spawn(move || {
        let node = host_node(port, prefix);
        let _q = Queue::serve(&node, "q", shmproc::Queue::<u64>::bounded(capacity).unwrap()).unwrap();
        stop.wait();
    })?)
}

fn million_messages_exactly_once_over_the_wire() -> TestResult {
    const N: u64 = 1_000_000;
    const BATCH: usize = 4096;
    let port = free_port()?;
    let stop = Event::new()?;
    let mut host = queue_host(port, "t1m", 16_384, stop.clone())?;
    let mut producer = Process::spawn(move || {
        let node = remote_node(port, "t1m");
        let q = Queue::<u64>::connect(&node, "q", HANG_LIMIT).unwrap();
        let mut next = 0u64;
        while next < N {
            let batch: Vec<u64> = (next..(next + BATCH as u64).min(N)).collect();
            q.send_batch(&batch).unwrap();
            next += batch.len() as u64;
        }
    })?;
    let received = Value::new(0u64)?;
    let r = received.clone();
    let mut consumer = Process::spawn(move || {
        let node = remote_node(port, "t1m");
        let q = Queue::<u64>::connect(&node, "q", HANG_LIMIT).unwrap();
        let mut expected = 0u64;
        let start = Instant::now();
        while expected < N {
            for v in q.recv_batch(BATCH, HANG_LIMIT).unwrap() {
                // One producer, one FIFO, one consumer: in order, each once.
                assert_eq!(v, expected, "out of order or duplicated");
                expected += 1;
            }
        }
        // Nothing more than the N sent.
        assert_eq!(q.recv_timeout(Duration::from_millis(300)), Err(RecvTimeoutError::Timeout));
        eprintln!("net: {N} u64 producer -> host -> consumer in {:?}", start.elapsed());
        r.set(expected);
    })?;
    ensure!(producer.join_timeout(HANG_LIMIT * 12)? == Some(0), "producer failed");
    ensure!(consumer.join_timeout(HANG_LIMIT * 12)? == Some(0), "consumer failed");
    ensure!(received.get() == N, "received {}", received.get());
    stop.set();
    ensure!(host.join_timeout(HANG_LIMIT)? == Some(0), "host failed");
    Ok(())
}

fn two_remote_producers_two_remote_consumers_exactly_once() -> TestResult {
    const PER: u64 = 20_000;
    let port = free_port()?;
    let stop = Event::new()?;
    // A small queue: producers are held back by a full queue most of the
    // time (back-pressure across the network).
    let mut host = queue_host(port, "t2x2", 64, stop.clone())?;
    let producers_done = Event::new()?;
    let results = shmproc::Queue::<Vec<u64>>::unbounded()?;
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let (done, results) = (producers_done.clone(), results.clone());
        consumers.push(Process::spawn(move || {
            let node = remote_node(port, "t2x2");
            let q = Queue::<u64>::connect(&node, "q", HANG_LIMIT).unwrap();
            let mut got = Vec::new();
            loop {
                match q.recv_batch(100, Duration::from_millis(300)) {
                    Ok(v) => got.extend(v),
                    // Empty after every send was accepted: drained.
                    Err(RecvTimeoutError::Timeout) if done.is_set() => break,
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            results.send(&got).unwrap();
        })?);
    }
    let mut producers = Vec::new();
    for p in 0..2u64 {
        producers.push(Process::spawn(move || {
            let node = remote_node(port, "t2x2");
            let q = Queue::<u64>::connect(&node, "q", HANG_LIMIT).unwrap();
            let mut i = 0u64;
            while i < PER {
                // Alternate single sends and batches.
                if i % 1000 < 100 {
                    q.send(&(p * PER + i + 1)).unwrap();
                    i += 1;
                } else {
                    let end = (i + 150).min(PER);
                    let batch: Vec<u64> = (i..end).map(|j| p * PER + j + 1).collect();
                    q.send_batch(&batch).unwrap();
                    i = end;
                }
            }
        })?);
    }
    for p in &mut producers {
        ensure!(p.join_timeout(HANG_LIMIT * 6)? == Some(0), "producer failed");
    }
    producers_done.set();
    let mut all = Vec::new();
    for _ in 0..2 {
        all.extend(results.recv_timeout(HANG_LIMIT * 3)?);
    }
    for c in &mut consumers {
        ensure!(c.join_timeout(HANG_LIMIT)? == Some(0), "consumer failed");
    }
    all.sort_unstable();
    let n = 2 * PER;
    ensure!(all.len() as u64 == n, "received {} of {n}", all.len());
    ensure!(all.iter().copied().eq(1..=n), "a message lost or duplicated");
    stop.set();
    ensure!(host.join_timeout(HANG_LIMIT)? == Some(0), "host failed");
    Ok(())
}

/// How `slow` behaves in this worker process: hang (to be killed) or
/// answer at once.
static HANG: OnceLock<(bool, Value<u32>)> = OnceLock::new();

fn slow(x: u64) -> u64 {
    if let Some((hang, started)) = HANG.get() {
        started.set(std::process::id());
        if *hang {
            std::thread::sleep(Duration::from_secs(600));
        }
    }
    x * 2
}

fn worker_process(
    port: u16,
    prefix: &'static str,
    hang: bool,
    started: Value<u32>,
) -> Result<Process, Box<dyn std::error::Error>> {
    Ok(Process::spawn(move || {
        let _ = HANG.set((hang, started));
        let node = remote_node(port, prefix);
        let mut reg = Registry::new();
        reg.register("slow", slow);
        let mut w = Worker::connect(&node, "pool", reg, HANG_LIMIT).unwrap();
        // Ok once the host closes the pool.
        w.run().unwrap();
    })?)
}

/// A worker SIGKILLed while it runs a task: with `AtLeastOnce` another
/// worker runs the task again and the result arrives (2 runs); with
/// `AtMostOnce` the task fails with `WorkerDied`.
fn remote_worker_sigkilled_mid_task() -> TestResult {
    for (delivery, prefix) in [(Delivery::AtLeastOnce, "tkill1"), (Delivery::AtMostOnce, "tkill2")] {
        let port = free_port()?;
        // 1: Ok(42) after 2 runs; 2: WorkerDied; 9: anything else.
        let outcome = Value::new(0u32)?;
        let started = Value::new(0u32)?;
        let o = outcome.clone();
        let mut host = Process::spawn(move || {
            let node = host_node(port, prefix);
            let pool = Pool::serve(&node, "pool", delivery).unwrap();
            let h = pool.submit::<u64, u64>("slow", &21).unwrap();
            let r = h.get_timeout(HANG_LIMIT * 3);
            let code = match (&r, h.runs()) {
                (Ok(42), 2) => 1,
                (Err(RemoteTaskError::WorkerDied), 1) => 2,
                _ => {
                    eprintln!("unexpected outcome {r:?} after {} runs", h.runs());
                    9
                }
            };
            o.set(code);
            pool.close();
            // Let the surviving worker see the close before the host goes.
            std::thread::sleep(Duration::from_millis(500));
        })?;
        let mut doomed = worker_process(port, prefix, true, started.clone())?;
        ensure!(eventually(HANG_LIMIT, || started.get() != 0), "the task never started");
        ensure!(started.get() == doomed.pid());
        let mut survivor = worker_process(port, prefix, false, Value::new(0u32)?)?;
        doomed.kill()?;
        ensure!(doomed.join_timeout(HANG_LIMIT)? == Some(-libc::SIGKILL));
        ensure!(host.join_timeout(HANG_LIMIT * 4)? == Some(0), "host failed");
        let want = if delivery == Delivery::AtLeastOnce { 1 } else { 2 };
        ensure!(outcome.get() == want, "{delivery:?}: outcome code {}", outcome.get());
        // The survivor's run() returned Ok when the pool closed, or it
        // saw the host go (an error exit); either way it must end.
        ensure!(survivor.join_timeout(HANG_LIMIT)?.is_some(), "survivor hangs");
    }
    Ok(())
}

/// The host SIGKILLed while a remote receiver waits: the receiver gets
/// `Disconnected` (bounded by the join timeout; the time is printed).
fn host_killed_remote_gets_disconnected() -> TestResult {
    let port = free_port()?;
    let never = Event::new()?;
    let mut host = queue_host(port, "thost", 4, never)?;
    let ready = Event::new()?;
    let code = Value::new(0u32)?;
    let (r, c) = (ready.clone(), code.clone());
    let mut remote = Process::spawn(move || {
        let node = remote_node(port, "thost");
        let q = Queue::<u64>::connect(&node, "q", HANG_LIMIT).unwrap();
        r.set();
        let res = q.recv();
        c.set(if res == Err(RecvError::Disconnected) { 1 } else { 9 });
    })?;
    ensure!(ready.wait_timeout(HANG_LIMIT), "remote never connected");
    std::thread::sleep(Duration::from_millis(200));
    let killed = Instant::now();
    host.kill()?;
    ensure!(remote.join_timeout(HANG_LIMIT * 2)? == Some(0), "remote failed or hangs");
    eprintln!("net: Disconnected {:?} after the host's SIGKILL", killed.elapsed());
    ensure!(code.get() == 1, "remote got something else than Disconnected");
    let _ = host.join_timeout(HANG_LIMIT)?;
    Ok(())
}

/// Garbage sent to a host's keys is answered (or ignored), never crashes
/// it, and a real client still works afterwards; garbage answered to a
/// client gives `Corrupt`, not a panic.
fn bad_bytes_on_the_key_space() -> TestResult {
    let port = free_port()?;
    let stop = Event::new()?;
    let mut host = queue_host(port, "tbad", 16, stop.clone())?;
    let mut attacker = Process::spawn(move || {
        let node = remote_node(port, "tbad");
        let s = node.session();
        // Wait until the host's queryable is reachable.
        let q = Queue::<u64>::connect(&node, "q", HANG_LIMIT).unwrap();
        let mut garbage: Vec<Vec<u8>> = vec![
            vec![],
            vec![0xD5],
            vec![0xD5, 1],
            vec![0xD5, 1, 0x01],
            vec![0xD5, 2, 0x01, 0, 0],
            vec![0xD5, 1, 0x70],
            b"hello".to_vec(),
        ];
        // A send whose one item is 3 bytes: not a valid u64 archive.
        let mut bad_item = vec![0xD5, 1, 0x01];
        bad_item.extend_from_slice(&8u64.to_le_bytes());
        bad_item.extend_from_slice(&1u64.to_le_bytes());
        bad_item.extend_from_slice(&0u32.to_le_bytes());
        bad_item.extend_from_slice(&1u32.to_le_bytes());
        bad_item.extend_from_slice(&3u32.to_le_bytes());
        bad_item.extend_from_slice(&[1, 2, 3]);
        garbage.push(bad_item);
        // A receive asking for 4 billion messages; a count with no items.
        let mut huge = vec![0xD5, 1, 0x02];
        huge.extend_from_slice(&12u64.to_le_bytes());
        huge.extend_from_slice(&1u64.to_le_bytes());
        huge.extend_from_slice(&0u32.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        garbage.push(huge);
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for len in 0..200usize {
            let mut b = vec![0xD5, 1];
            for _ in 0..len % 40 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.push(x as u8);
            }
            garbage.push(b);
        }
        let mut answered = 0;
        for g in &garbage {
            let replies = s.get("tbad/q/q/rq").payload(g.clone()).timeout(HANG_LIMIT).wait().unwrap();
            if replies.recv().is_ok() {
                answered += 1;
            }
            s.put("tbad/q/q/ack", g.clone()).wait().unwrap();
        }
        assert_eq!(answered, garbage.len(), "every bad request gets an answer");
        // Liveliness tokens with names that are not ids, then gone.
        let t = s.liveliness().declare_token("tbad/q/q/c/not-hex").wait().unwrap();
        drop(t);
        // The queue still works for a real client.
        q.send(&7).unwrap();
        assert_eq!(q.recv_timeout(HANG_LIMIT), Ok(7));

        // A fake host that answers garbage: the client gets Corrupt.
        let _token = s.liveliness().declare_token("tbad/q/fake/host").wait().unwrap();
        let _fake = s
            .declare_queryable("tbad/q/fake/rq")
            .callback(|query| {
                // A `Messages` reply with one 3-byte item: not a u64.
                let mut b = vec![0xD5, 1, 0x82];
                b.extend_from_slice(&1u32.to_le_bytes());
                b.extend_from_slice(&3u32.to_le_bytes());
                b.extend_from_slice(&[9, 9, 9]);
                let _ = query.reply(query.key_expr().clone(), b).wait();
            })
            .wait()
            .unwrap();
        let fake = Queue::<u64>::connect(&node, "fake", HANG_LIMIT).unwrap();
        assert!(matches!(fake.recv_timeout(HANG_LIMIT), Err(RecvTimeoutError::Corrupt { .. })));
        let _fake2 = s
            .declare_queryable("tbad/q/fake2/rq")
            .callback(|query| {
                let _ = query.reply(query.key_expr().clone(), vec![0xD5, 1, 0x82, 0xff, 0xff, 0xff]).wait();
            })
            .wait()
            .unwrap();
        let _token2 = s.liveliness().declare_token("tbad/q/fake2/host").wait().unwrap();
        let fake2 = Queue::<u64>::connect(&node, "fake2", HANG_LIMIT).unwrap();
        assert!(matches!(fake2.send(&1), Err(shmproc::SendError::Corrupt { .. })));
    })?;
    ensure!(attacker.join_timeout(HANG_LIMIT * 3)? == Some(0), "attacker's checks failed");
    ensure!(host.is_alive(), "the host died of bad bytes");
    stop.set();
    ensure!(host.join_timeout(HANG_LIMIT)? == Some(0), "host failed");
    Ok(())
}

/// A remote `JoinableQueue`: a remote producer's `join` returns only after
/// a remote worker marked every item done, and one `task_done` too many is
/// refused with the local queue's error.
fn remote_joinable_task_done_and_join() -> TestResult {
    const N: u64 = 200;
    let port = free_port()?;
    let stop = Event::new()?;
    let s = stop.clone();
    let mut host = Process::spawn(move || {
        let node = host_node(port, "tjoin");
        let _q = JoinableQueue::serve(&node, "q", shmproc::JoinableQueue::<u64>::bounded(16).unwrap()).unwrap();
        s.wait();
    })?;
    let (done, extra) = (Value::new(0u64)?, Value::new(0u32)?);
    let (d, x) = (done.clone(), extra.clone());
    let mut worker = Process::spawn(move || {
        let node = remote_node(port, "tjoin");
        let q = JoinableQueue::<u64>::connect(&node, "q", HANG_LIMIT).unwrap();
        let mut sum = 0;
        for _ in 0..N {
            sum += q.recv_timeout(HANG_LIMIT).unwrap();
            // Slow enough that the producer's join really waits.
            std::thread::sleep(Duration::from_millis(1));
            // Counted before the call: a `join` that returned before this
            // item's task_done would see fewer than N.
            d.set(d.get() + 1);
            q.task_done().unwrap();
        }
        assert_eq!(sum, N * (N - 1) / 2);
        x.set(match q.task_done() {
            Err(NetError::TaskDone(_)) => 1,
            _ => 9,
        });
    })?;
    let joined_after = Value::new(u64::MAX)?;
    let (j, d) = (joined_after.clone(), done.clone());
    let mut producer = Process::spawn(move || {
        let node = remote_node(port, "tjoin");
        let q = JoinableQueue::<u64>::connect(&node, "q", HANG_LIMIT).unwrap();
        for i in 0..N {
            q.send(&i).unwrap();
        }
        q.join().unwrap();
        j.set(d.get());
    })?;
    ensure!(producer.join_timeout(HANG_LIMIT * 6)? == Some(0), "producer failed");
    ensure!(joined_after.get() == N, "join returned after {} of {N} task_done calls", joined_after.get());
    ensure!(worker.join_timeout(HANG_LIMIT * 6)? == Some(0), "worker failed");
    ensure!(extra.get() == 1, "an extra task_done was not refused with TaskDone");
    stop.set();
    ensure!(host.join_timeout(HANG_LIMIT)? == Some(0), "host failed");
    Ok(())
}

fn main() {
    shmproc_tests::run(trials![
        million_messages_exactly_once_over_the_wire,
        two_remote_producers_two_remote_consumers_exactly_once,
        remote_worker_sigkilled_mid_task,
        host_killed_remote_gets_disconnected,
        bad_bytes_on_the_key_space,
        remote_joinable_task_done_and_join,
    ]);
}
