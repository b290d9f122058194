//! Batches (`send_batch`/`send_iter`/`recv_batch`/`drain`) and wait
//! policies between real processes: exactly once and in order, mixed with
//! messages that go out of line, across an unbounded queue's ring links, and
//! with the producer or the consumer SIGKILLed mid-run.

use std::time::{Duration, Instant};

use shmproc::{Pipe, PipeReceiver, Process, Queue, RecvTimeoutError, Value, WaitPolicy};
use shmproc_tests::{ensure, trials, TestResult, HANG_LIMIT};

/// A message whose body is derived from its sequence number, so a torn or
/// mixed-up message is seen.
fn body(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8).collect()
}

fn intact(m: &(u64, Vec<u8>)) -> bool {
    m.1 == body(m.0, m.1.len())
}

/// A cheap deterministic sequence of batch sizes.
fn sizes(seed: u64) -> impl Iterator<Item = usize> {
    let mut x = seed | 1;
    std::iter::from_fn(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        Some((x % 100) as usize + 1)
    })
}

fn stream_u64_through(q: Queue<u64>, n: u64) -> TestResult {
    let tx = q.sender();
    let mut child = Process::spawn(move || {
        let mut next = 0u64;
        let mut sizes = sizes(7);
        while next < n {
            let k = (sizes.next().unwrap_or(1) as u64).min(n - next);
            if k.is_multiple_of(3) {
                tx.send_iter(next..next + k).map_err(|(_, e)| e).unwrap();
            } else {
                tx.send_batch(&(next..next + k).collect::<Vec<_>>()).unwrap();
            }
            next += k;
        }
    })?;
    let rx = q.receiver();
    drop(q);
    let mut got = Vec::with_capacity(128);
    let (mut expect, mut sizes) = (0u64, sizes(11));
    while expect < n {
        got.clear();
        let k = rx.recv_batch(&mut got, sizes.next().unwrap_or(1))?;
        ensure!(k == got.len() && k > 0, "recv_batch said {k}, appended {}", got.len());
        for v in &got {
            ensure!(*v == expect, "expected {expect}, got {v}");
            expect += 1;
        }
    }
    child.join()?;
    ensure!(matches!(rx.recv_timeout(HANG_LIMIT), Err(RecvTimeoutError::Disconnected)));
    Ok(())
}

fn batches_stream_a_million_exactly_once_in_order() -> TestResult {
    stream_u64_through(Queue::bounded(1024)?, 1_000_000)?;
    // Small ring: batches stop at the message limit and wait for room.
    stream_u64_through(Queue::bounded(7)?, 100_000)?;
    // Unbounded: batches end at a full ring, the next send links a larger one.
    stream_u64_through(Queue::unbounded()?, 300_000)?;
    // The slot ring sends and takes one by one behind the same calls.
    stream_u64_through(Queue::<u64>::builder().capacity(64).slot_ring().build()?, 100_000)?;
    Ok(())
}

fn batches_mix_messages_that_go_out_of_line() -> TestResult {
    let q = Queue::<(u64, Vec<u8>)>::bounded(64)?;
    let limit = q.message_size();
    let lens = [0usize, 10, limit - 40, limit + 1, 5, 3 * limit, 100_000, 7, 2_000_000, 1];
    let tx = q.sender();
    let mut child = Process::spawn(move || {
        for round in 0..20u64 {
            let batch: Vec<_> =
                lens.iter().enumerate().map(|(i, &l)| (round * 100 + i as u64, body(round + i as u64, l))).collect();
            tx.send_batch(&batch).unwrap();
        }
    })?;
    let rx = q.receiver();
    drop(q);
    let mut got = Vec::new();
    while got.len() < 20 * lens.len() {
        rx.recv_batch(&mut got, 16)?;
    }
    for (k, m) in got.iter().enumerate() {
        let (round, i) = ((k / lens.len()) as u64, k % lens.len());
        ensure!(m.0 == round * 100 + i as u64, "message {k} out of order: {}", m.0);
        ensure!(m.1 == body(round + i as u64, lens[i]), "message {k} torn");
    }
    child.join()?;
    // The same through a pipe.
    let (ptx, prx) = Pipe::<(u64, Vec<u8>)>::oneway()?;
    let mut child = Process::spawn(move || {
        let batch: Vec<_> = lens.iter().enumerate().map(|(i, &l)| (i as u64, body(i as u64, l))).collect();
        for _ in 0..20 {
            ptx.send_batch(&batch).unwrap();
        }
    })?;
    let mut got = Vec::new();
    while got.len() < 20 * lens.len() {
        prx.recv_batch(&mut got, 16)?;
    }
    for (k, m) in got.iter().enumerate() {
        let i = k % lens.len();
        ensure!(m.0 == i as u64 && m.1 == body(i as u64, lens[i]), "pipe message {k} wrong");
    }
    child.join()?;
    Ok(())
}

/// Receives `n` messages from `rx` in batches, checking that the `i`th is
/// `value(i)`.
fn receive_in_order<T: shmproc::Message + PartialEq + std::fmt::Debug>(
    rx: &PipeReceiver<T>,
    n: u64,
    value: impl Fn(u64) -> T,
) -> TestResult {
    let (mut got, mut expect) = (Vec::new(), 0u64);
    while expect < n {
        got.clear();
        rx.recv_batch(&mut got, 64)?;
        for m in &got {
            ensure!(*m == value(expect), "expected {:?}, got {m:?}", value(expect));
            expect += 1;
        }
    }
    Ok(())
}

fn pipe_batches_stream_exactly_once_in_order() -> TestResult {
    let (tx, rx) = Pipe::<u64>::oneway_with_capacity(4096)?;
    let n = 1_000_000u64;
    let mut child = Process::spawn(move || {
        let (mut next, mut sizes) = (0u64, sizes(3));
        while next < n {
            let k = (sizes.next().unwrap_or(1) as u64).min(n - next);
            tx.send_batch(&(next..next + k).collect::<Vec<_>>()).unwrap();
            next += k;
        }
    })?;
    receive_in_order(&rx, n, |i| i)?;
    child.join()?;
    ensure!(rx.recv_timeout(HANG_LIMIT) == Err(RecvTimeoutError::Disconnected));
    Ok(())
}

fn producer_killed_mid_batch_leaves_nothing_torn_lost_or_doubled() -> TestResult {
    for round in 0..12u64 {
        let q = Queue::<(u64, Vec<u8>)>::bounded(512)?;
        let tx = q.sender();
        let producer = Process::spawn(move || {
            let mut seq = 0u64;
            loop {
                let batch: Vec<_> = (seq..seq + 37).map(|s| (s, body(s, 48 + (s % 64) as usize))).collect();
                tx.send_batch(&batch).unwrap();
                seq += 37;
            }
        })?;
        // Receive for a while, then kill the producer wherever it is.
        let until = Instant::now() + Duration::from_millis(3 + round * 4);
        let mut expect = Some(0);
        let mut got = Vec::new();
        while Instant::now() < until {
            got.clear();
            if q.recv_batch(&mut got, 50).is_ok() {
                for m in &got {
                    ensure!(intact(m) && Some(m.0) == expect, "round {round}: bad message {} before the kill", m.0);
                    expect = Some(m.0 + 1);
                }
            }
        }
        producer.kill()?;
        let mut producer = producer;
        let _ = producer.join();
        // A new producer takes the dead one's side over: what it had
        // committed is counted, nothing half-written surfaces.
        let last = drain_consecutive_until_empty(&q, &mut expect)?;
        let next = expect.unwrap_or(0);
        q.send(&(next, body(next, 9)))?;
        let (m, _) = (q.recv_timeout(HANG_LIMIT)?, last);
        ensure!(m.0 == next && intact(&m), "round {round}: the sentinel came out wrong");
    }
    Ok(())
}

/// A fixed-size message (rkyv copies its bytes: the batch path writes it in
/// runs of equal frames) whose words all derive from its sequence number.
fn plain(seq: u64) -> [u64; 3] {
    [seq, seq.wrapping_mul(0x9E37_79B9_7F4A_7C15), !seq]
}

/// Fixed-size messages go in runs of equal frames (one room check per run,
/// the consumer recognising each frame by its header); a producer SIGKILLed
/// anywhere in one leaves nothing torn, lost or doubled; in a pipe, runs
/// and single sends alternate and meet the ring's wrap.
fn fixed_size_runs_survive_a_producer_killed_mid_run() -> TestResult {
    for round in 0..10u64 {
        let q = Queue::<[u64; 3]>::bounded(300)?;
        let tx = q.sender();
        let producer = Process::spawn(move || {
            let (mut seq, mut sizes) = (0u64, sizes(round + 5));
            loop {
                let k = sizes.next().unwrap_or(1) as u64;
                tx.send_batch(&(seq..seq + k).map(plain).collect::<Vec<_>>()).unwrap();
                seq += k;
            }
        })?;
        let until = Instant::now() + Duration::from_millis(3 + round * 4);
        let (mut expect, mut got) = (0u64, Vec::new());
        while Instant::now() < until {
            got.clear();
            if q.recv_batch(&mut got, 50).is_ok() {
                for m in &got {
                    ensure!(*m == plain(expect), "round {round}: expected {expect}, got {m:?}");
                    expect += 1;
                }
            }
        }
        producer.kill()?;
        let mut producer = producer;
        let _ = producer.join();
        for m in q.drain()? {
            ensure!(m == plain(expect), "round {round}: after the kill, expected {expect}, got {m:?}");
            expect += 1;
        }
        // A new producer takes the side over where the dead one stopped.
        q.send_batch(&[plain(expect), plain(expect + 1)])?;
        ensure!(q.recv_timeout(HANG_LIMIT)? == plain(expect) && q.recv_timeout(HANG_LIMIT)? == plain(expect + 1));
    }
    // A pipe: runs between single sends, through a small ring that wraps
    // (24-byte messages in 48-byte frames: a run often meets the end).
    let (tx, rx) = Pipe::<[u64; 3]>::oneway_with_capacity(1000)?;
    let n = 200_000u64;
    let mut child = Process::spawn(move || {
        let (mut next, mut sizes) = (0u64, sizes(9));
        while next < n {
            let k = (sizes.next().unwrap_or(1) as u64).min(n - next);
            if k.is_multiple_of(4) {
                tx.send(&plain(next)).unwrap();
                next += 1;
            } else {
                tx.send_batch(&(next..next + k).map(plain).collect::<Vec<_>>()).unwrap();
                next += k;
            }
        }
    })?;
    receive_in_order(&rx, n, plain)?;
    child.join()?;
    ensure!(rx.recv_timeout(HANG_LIMIT) == Err(RecvTimeoutError::Disconnected));
    Ok(())
}

/// Takes everything queued (without waiting for senders), checking order.
fn drain_consecutive_until_empty(
    q: &Queue<(u64, Vec<u8>)>,
    expect: &mut Option<u64>,
) -> Result<usize, Box<dyn std::error::Error>> {
    let all = q.drain()?;
    for m in &all {
        ensure!(intact(m), "torn message {}", m.0);
        ensure!(expect.is_none_or(|e| e == m.0), "expected {expect:?}, got {}", m.0);
        *expect = Some(m.0 + 1);
    }
    Ok(all.len())
}

fn consumer_killed_mid_batch_loses_at_most_its_run() -> TestResult {
    const MAX: usize = 40;
    for round in 0..12u64 {
        let q = Queue::<(u64, Vec<u8>)>::bounded(4096)?;
        let n = 20_000u64;
        // Fill first, so the consumer is always mid-stream when killed.
        for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
            let batch: Vec<_> = chunk.iter().map(|&s| (s, body(s, 32))).collect();
            let mut rest = &batch[..];
            while !rest.is_empty() {
                let k = q.try_send_batch(rest).unwrap_or(0);
                rest = &rest[k..];
                if k == 0 {
                    break;
                }
            }
            if !rest.is_empty() {
                break;
            }
        }
        let queued = q.len() as u64;
        let recorded = Value::new(u64::MAX)?;
        let (rx, rec) = (q.receiver(), recorded.clone());
        let consumer = Process::spawn(move || {
            let mut got = Vec::new();
            loop {
                got.clear();
                if rx.recv_batch(&mut got, MAX).is_err() {
                    return;
                }
                // Slow down between runs so that the kill lands anywhere.
                rec.set(got.last().map_or(u64::MAX, |m| m.0));
                std::thread::sleep(Duration::from_micros(20));
            }
        })?;
        std::thread::sleep(Duration::from_micros(200 + round * 300));
        consumer.kill()?;
        let mut consumer = consumer;
        let _ = consumer.join();
        let seen = recorded.get();
        let mut expect = None;
        let left = drain_consecutive_until_empty(&q, &mut expect)?;
        if let Some(first) = expect.map(|e| e - left as u64) {
            let after = seen.wrapping_add(1);
            // Nothing the dead consumer had returned is handed out again, and
            // at most its last run (taken, never returned) plus one is lost.
            ensure!(first >= after, "round {round}: message {first} handed out again (consumer had {seen})");
            ensure!(first <= after + MAX as u64 + 1, "round {round}: lost {first} - {after} messages");
        } else {
            ensure!(
                seen.wrapping_add(1) >= queued.saturating_sub(MAX as u64 + 1),
                "round {round}: lost messages at the end"
            );
        }
    }
    Ok(())
}

fn wait_policies_deliver_between_processes() -> TestResult {
    for policy in [WaitPolicy::Adaptive, WaitPolicy::Sleep, WaitPolicy::Spin(Duration::from_micros(30))] {
        let (ping, pong) = (Queue::<u64>::bounded(4)?, Queue::<u64>::bounded(4)?);
        let (p_rx, p_tx) = (ping.receiver(), pong.sender());
        let mut child = Process::spawn(move || {
            p_rx.set_wait_policy(policy);
            // A sentinel ends it: this child holds copies of the parent's
            // handles (fork), so it would never see the queue disconnect.
            while let Ok(v) = p_rx.recv() {
                if v == u64::MAX {
                    return;
                }
                p_tx.send(&(v + 1)).unwrap();
            }
        })?;
        pong.set_wait_policy(policy);
        ensure!(pong.wait_policy() == policy);
        let (tx, rx) = (ping.sender(), pong.receiver());
        drop((ping, pong));
        for i in 0..3000u64 {
            // Every tenth exchange after a pause: long waits, then short.
            if i.is_multiple_of(10) {
                std::thread::sleep(Duration::from_micros(300));
            }
            tx.send(&i)?;
            ensure!(rx.recv_timeout(HANG_LIMIT)? == i + 1, "{policy:?}: wrong reply");
        }
        tx.send(&u64::MAX)?;
        drop(tx);
        child.join()?;
        ensure!(rx.recv_timeout(HANG_LIMIT) == Err(RecvTimeoutError::Disconnected));
    }
    // Pipes too.
    let (a, b) = Pipe::<u64>::duplex()?;
    let mut child = Process::spawn(move || {
        b.set_wait_policy(WaitPolicy::Sleep);
        while let Ok(v) = b.recv() {
            if v == u64::MAX {
                return;
            }
            b.send(&(v * 2)).unwrap();
        }
    })?;
    a.set_wait_policy(WaitPolicy::Sleep);
    for i in 0..2000u64 {
        a.send(&i)?;
        ensure!(a.recv_timeout(HANG_LIMIT)? == i * 2);
    }
    a.send(&u64::MAX)?;
    child.join()?;
    Ok(())
}

fn main() {
    shmproc_tests::run(trials![
        batches_stream_a_million_exactly_once_in_order,
        batches_mix_messages_that_go_out_of_line,
        pipe_batches_stream_exactly_once_in_order,
        producer_killed_mid_batch_leaves_nothing_torn_lost_or_doubled,
        fixed_size_runs_survive_a_producer_killed_mid_run,
        consumer_killed_mid_batch_loses_at_most_its_run,
        wait_policies_deliver_between_processes,
    ]);
}
