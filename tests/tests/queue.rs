//! Queues, joinable queues and pipes across real processes, including peers
//! killed with SIGKILL.

use std::time::{Duration, Instant};

use shmproc::{
    JoinableQueue, Pipe, Process, Queue, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError,
    TrySendError, Value,
};
use shmproc_tests::{ensure, eventually, proc_state, trials, TestResult, HANG_LIMIT};

fn million_u64_in_order_between_two_processes() -> TestResult {
    let q = Queue::<u64>::builder().capacity(4096).message_size(16).build()?;
    let (tx, rx) = q.into_split();
    let mut producer = Process::spawn(move || {
        for i in 0..1_000_000u64 {
            tx.send(&i).unwrap();
        }
    })?;
    for expected in 0..1_000_000u64 {
        let v = rx.recv_timeout(HANG_LIMIT)?;
        ensure!(v == expected, "got {v}, expected {expected}");
    }
    ensure!(producer.join_timeout(HANG_LIMIT)? == Some(0));
    // The producer's handles died with it: the queue is now disconnected.
    ensure!(rx.recv_timeout(HANG_LIMIT) == Err(RecvTimeoutError::Disconnected));
    Ok(())
}

fn two_producers_two_consumers_exactly_once() -> TestResult {
    const PER: u64 = 30_000;
    let q = Queue::<u64>::bounded(256)?;
    let (tx, rx) = q.into_split();
    let count = Value::new(0u64)?;
    let sum = Value::new(0u64)?;
    let mut producers = Vec::new();
    for p in 0..2u64 {
        let tx = tx.clone();
        producers.push(Process::spawn(move || {
            for i in 0..PER {
                tx.send(&(p * PER + i + 1)).unwrap();
            }
        })?);
    }
    // Consumers must not inherit a sender, or they would never see the end.
    drop(tx);
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let (rx, count, sum) = (rx.clone(), count.clone(), sum.clone());
        consumers.push(Process::spawn(move || {
            let (mut n, mut s) = (0u64, 0u64);
            loop {
                match rx.recv() {
                    Ok(v) => {
                        n += 1;
                        s += v;
                    }
                    Err(RecvError::Disconnected) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            count.update(|c| *c += n);
            sum.update(|c| *c += s);
        })?);
    }
    drop(rx);
    for p in producers.iter_mut().chain(consumers.iter_mut()) {
        ensure!(p.join_timeout(HANG_LIMIT * 3)? == Some(0));
    }
    let n = 2 * PER;
    ensure!(count.get() == n, "count {}", count.get());
    ensure!(sum.get() == n * (n + 1) / 2, "sum {}", sum.get());
    Ok(())
}

fn large_messages_and_oversize_errors() -> TestResult {
    let q = Queue::<Vec<u8>>::builder().capacity(4).message_size(70_000).build()?;
    let tx = q.clone();
    let mut child = Process::spawn(move || {
        for len in [1024usize, 65536, 1024, 65536] {
            tx.send(&(0..len).map(|i| (i % 251) as u8).collect()).unwrap();
        }
    })?;
    for len in [1024usize, 65536, 1024, 65536] {
        let v = q.recv_timeout(HANG_LIMIT)?;
        ensure!(v.len() == len && v.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    }
    ensure!(child.join()? == 0);
    // Larger than the message size: a hint, not a cap (it travels out of
    // line, see tests/messages.rs).
    let big = vec![7u8; 80_000];
    q.try_send(&big)?;
    ensure!(q.recv()? == big);
    q.send(&vec![1, 2, 3])?;
    ensure!(q.recv()? == vec![1, 2, 3]);
    ensure!(q.try_recv() == Err(TryRecvError::Empty));
    // Writing in place: archive straight into the slot.
    let q2 = Queue::<u64>::builder().capacity(2).message_size(16).build()?;
    q2.send_with(|buf| {
        rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(&77u64, rkyv::ser::writer::Buffer::from(buf))
            .ok()
            .map(|b| b.len())
    })?;
    ensure!(q2.recv()? == 77);
    ensure!(matches!(q2.send_with(|_| None), Err(SendError::TooLarge { .. })));
    ensure!(q2.try_recv() == Err(TryRecvError::Empty), "a refused in-place write must not surface");
    let small = Queue::<String>::bounded(2)?;
    small.try_send(&"x".repeat(5000))?;
    small.send(&"ok".into())?;
    ensure!(small.recv()? == "x".repeat(5000));
    ensure!(small.recv()? == "ok");
    Ok(())
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq, Clone)]
struct Order {
    id: u64,
    customer: String,
    items: Vec<u32>,
}

fn recv_ref_reads_a_struct_in_place() -> TestResult {
    let q = Queue::<Order>::bounded(8)?;
    let tx = q.clone();
    let mut child = Process::spawn(move || {
        for id in 0..5u64 {
            tx.send(&Order { id, customer: format!("customer-{id}"), items: (0..id as u32).collect() }).unwrap();
        }
    })?;
    for id in 0..5u64 {
        let r = q.recv_ref()?;
        ensure!(r.id == id);
        ensure!(r.customer.as_str() == format!("customer-{id}"));
        ensure!(r.items.len() == id as usize);
        ensure!(r.items.iter().map(|x| x.to_native()).eq(0..id as u32));
        let owned = r.to_owned()?;
        ensure!(owned.customer == format!("customer-{id}"));
    }
    ensure!(child.join()? == 0);
    Ok(())
}

fn killed_producer_gives_disconnected() -> TestResult {
    let (tx, rx) = Queue::<u32>::bounded(16)?.into_split();
    let producer = Process::spawn(move || -> () {
        for i in 0..3 {
            tx.send(&i).unwrap();
        }
        std::thread::sleep(Duration::from_secs(60));
    })?;
    for i in 0..3 {
        ensure!(rx.recv_timeout(HANG_LIMIT)? == i);
    }
    ensure!(rx.recv_timeout(Duration::from_millis(50)) == Err(RecvTimeoutError::Timeout));
    let mut waiter = Process::spawn({
        let rx = rx.clone();
        move || match rx.recv() {
            Err(RecvError::Disconnected) => 0,
            _ => 1,
        }
    })?;
    ensure!(eventually(HANG_LIMIT, || proc_state(waiter.pid()) == Some('S')));
    producer.kill()?;
    ensure!(waiter.join_timeout(HANG_LIMIT)? == Some(0), "blocked receiver not told");
    ensure!(rx.recv() == Err(RecvError::Disconnected));
    let mut producer = producer;
    producer.join()?;
    Ok(())
}

/// A forked child that drops the sending handle it inherited at once, and
/// then waits for `Disconnected`, gets it: the parent, registering the child
/// right after the fork, must not count the handle the child has already
/// dropped (it used to, when the child was quicker, and the child then
/// waited for itself forever). Many rounds: the child is sometimes quicker
/// (a race the old code lost now and then, seen in the `mpmc_scaling` bench).
fn child_dropping_inherited_sender_at_once_sees_disconnected() -> TestResult {
    for round in 0..60 {
        let (tx, rx) = Queue::<u32>::bounded(4)?.into_split();
        let mut child = Process::spawn(move || {
            drop(tx);
            match rx.recv() {
                Err(RecvError::Disconnected) => 0,
                _ => 1,
            }
        })?;
        ensure!(
            child.join_timeout(HANG_LIMIT)? == Some(0),
            "round {round}: the child waited for its own dropped sender"
        );
    }
    Ok(())
}

/// `inspect` (and the CLI) lists a forked child that never used a queue as
/// having inherited its handles, unused, not as holding its sides; once the
/// child sends, it is listed as holding them.
fn forked_child_listed_as_inherited_until_it_uses_the_queue() -> TestResult {
    use shmproc::inspect::{inspect, ObjectState};
    let seg = shmproc::Segment::anonymous(1 << 20)?;
    let q = Queue::<u32>::bounded_in(&seg, "q", 4)?;
    let go = shmproc::Event::new_in(&seg, "go")?;
    let mut child = Process::spawn({
        let (q, go) = (q.clone(), go.clone());
        move || -> () {
            go.wait();
            q.send(&7).unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
    })?;
    let child_entry = |seg: &shmproc::Segment| -> Result<Option<shmproc::inspect::Holder>, Box<dyn std::error::Error>> {
        let report = inspect(seg)?;
        let Some(ObjectState::Queue { holders, .. }) =
            report.objects.iter().find(|o| o.name == "q").map(|o| o.state.clone())
        else {
            return Err("no queue in the report".into());
        };
        Ok(holders.into_iter().find(|h| h.process.id == child.pid()))
    };
    let before = child_entry(&seg)?.ok_or("the child is not listed")?;
    ensure!(before.inherited_unused && before.senders >= 1, "before any use: {before:?}");
    let text = format!("{}", inspect(&seg)?.objects.iter().find(|o| o.name == "q").ok_or("no q")?.state);
    ensure!(text.contains(&format!("pid {} inherited", child.pid())), "shown as: {text}");
    go.set();
    ensure!(q.recv_timeout(HANG_LIMIT)? == 7);
    let after = child_entry(&seg)?.ok_or("the child is no longer listed")?;
    ensure!(!after.inherited_unused, "after its send: {after:?}");
    child.kill()?;
    child.join()?;
    Ok(())
}

/// `try_recv` also says `Disconnected` once the queue is empty and its only
/// sender was killed (not just after `close`), in either layout.
fn try_recv_sees_a_killed_sender() -> TestResult {
    for slot_ring in [false, true] {
        let b = Queue::<u32>::builder().capacity(16);
        let (tx, rx) = if slot_ring { b.slot_ring() } else { b }.build()?.into_split();
        let mut producer = Process::spawn(move || -> () {
            tx.send(&7).unwrap();
            std::thread::sleep(Duration::from_secs(60));
        })?;
        ensure!(rx.recv_timeout(HANG_LIMIT)? == 7);
        ensure!(rx.try_recv() == Err(TryRecvError::Empty), "slot ring {slot_ring}: a live sender is not gone");
        producer.kill()?;
        producer.join()?;
        ensure!(
            eventually(HANG_LIMIT, || rx.try_recv() == Err(TryRecvError::Disconnected)),
            "slot ring {slot_ring}: try_recv never said Disconnected"
        );
    }
    Ok(())
}

fn producer_killed_mid_message_leaves_no_torn_message() -> TestResult {
    // The byte ring (default): producers take turns, so the stuck producer
    // holds the producing side until it is killed; then the next send takes
    // it over and the half-written message never surfaces.
    let (tx, rx) = Queue::<String>::bounded(8)?.into_split();
    let started = shmproc::Event::new()?;
    let stuck = spawn_stuck_producer(tx.clone(), started.clone())?;
    ensure!(started.wait_timeout(HANG_LIMIT));
    ensure!(tx.send_timeout(&"blocked".to_string(), Duration::from_millis(50)) == Err(SendTimeoutError::Timeout));
    stuck.kill()?;
    let start = Instant::now();
    tx.send_timeout(&"after".to_string(), HANG_LIMIT)?;
    eprintln!("byte ring: took the dead producer's side over after {:?}", start.elapsed());
    ensure!(rx.recv_timeout(HANG_LIMIT)? == "after", "a torn message surfaced");
    drop(tx);
    ensure!(rx.recv_timeout(HANG_LIMIT) == Err(RecvTimeoutError::Disconnected));
    let mut stuck = stuck;
    stuck.join()?;

    // The slot ring: other producers go on past the stuck one's slot, which
    // consumers skip once its producer is dead.
    let (tx, rx) = Queue::<String>::builder().capacity(8).slot_ring().build()?.into_split();
    let stuck = spawn_stuck_producer(tx.clone(), started.clone())?;
    ensure!(started.wait_timeout(HANG_LIMIT));
    tx.send(&"after".to_string())?;
    stuck.kill()?;
    let start = Instant::now();
    ensure!(rx.recv_timeout(HANG_LIMIT)? == "after", "a torn message surfaced");
    eprintln!("slot ring: skipped the dead producer's slot after {:?}", start.elapsed());
    drop(tx);
    ensure!(rx.recv_timeout(HANG_LIMIT) == Err(RecvTimeoutError::Disconnected));
    let mut stuck = stuck;
    stuck.join()?;
    Ok(())
}

/// A producer that writes half a message in place and hangs there.
fn spawn_stuck_producer(
    tx: shmproc::Sender<String>,
    started: shmproc::Event,
) -> Result<Process, shmproc::ProcessError> {
    started.clear();
    Process::spawn(move || -> () {
        let _ = tx.try_send_with(|buf| {
            buf[..4].copy_from_slice(b"TORN");
            started.set();
            std::thread::sleep(Duration::from_secs(60));
            Some(4)
        });
    })
}

fn sender_blocked_on_full_queue_sees_dead_receivers() -> TestResult {
    let (tx, rx) = Queue::<u8>::bounded(2)?.into_split();
    tx.send(&1)?;
    tx.send(&2)?;
    let receiver = Process::spawn(move || -> () {
        let _keep = rx;
        std::thread::sleep(Duration::from_secs(60));
    })?;
    ensure!(tx.send_timeout(&3, Duration::from_millis(50)) == Err(SendTimeoutError::Timeout));
    receiver.kill()?;
    ensure!(tx.send_timeout(&3, HANG_LIMIT) == Err(SendTimeoutError::Disconnected));
    let mut receiver = receiver;
    receiver.join()?;
    Ok(())
}

fn timeouts_return_on_time() -> TestResult {
    let q = Queue::<u8>::bounded(1)?;
    let t = Duration::from_millis(100);
    let start = Instant::now();
    ensure!(q.recv_timeout(t) == Err(RecvTimeoutError::Timeout));
    ensure!(start.elapsed() >= t && start.elapsed() < HANG_LIMIT);
    q.send(&1)?;
    ensure!(q.is_full() && q.len() == 1 && q.capacity() == 1);
    let start = Instant::now();
    let r = q.send_timeout(&2, t);
    ensure!(r == Err(SendTimeoutError::Timeout), "{r:?}");
    ensure!(start.elapsed() >= t && start.elapsed() < HANG_LIMIT);
    q.close();
    ensure!(q.try_send(&3) == Err(TrySendError::Disconnected));
    ensure!(q.recv()? == 1, "messages sent before close are still delivered");
    ensure!(q.recv() == Err(RecvError::Disconnected));
    Ok(())
}

fn joinable_queue_join_waits_for_every_task() -> TestResult {
    let q = JoinableQueue::<u32>::bounded(16)?;
    let done = Value::new(0u32)?;
    let mut workers = Vec::new();
    for _ in 0..2 {
        let (q, done) = (q.clone(), done.clone());
        workers.push(Process::builder().daemon(true).spawn(move || -> () {
            while let Ok(_item) = q.recv() {
                std::thread::sleep(Duration::from_millis(2));
                done.update(|d| *d += 1);
                q.task_done().unwrap();
            }
        })?);
    }
    for i in 0..40 {
        q.send(&i)?;
    }
    ensure!(q.join_timeout(HANG_LIMIT), "join timed out with {} unfinished", q.unfinished());
    ensure!(done.get() == 40, "join returned with only {} done", done.get());
    ensure!(q.unfinished() == 0);
    ensure!(q.task_done().is_err(), "task_done below zero must fail");
    for w in &workers {
        w.kill()?;
    }
    for w in &mut workers {
        w.join()?;
    }
    Ok(())
}

/// A task counts once its message is in the queue (Python's `put`), never
/// while its sender waits for room; and counting before the message can be
/// seen means a consumer's immediate `task_done` never fails.
fn joinable_queue_counts_a_task_once_it_is_in() -> TestResult {
    let q = JoinableQueue::<u32>::bounded(1)?;
    q.send(&1)?;
    let started = shmproc::Event::new()?;
    let mut blocked = {
        let (q, started) = (q.clone(), started.clone());
        Process::spawn(move || {
            started.set();
            // Full, and nobody receives: this send waits, then times out.
            match q.send_timeout(&2, Duration::from_millis(300)) {
                Err(SendTimeoutError::Timeout) => 0,
                _ => 1,
            }
        })?
    };
    ensure!(started.wait_timeout(HANG_LIMIT));
    // Its attempts count the task while they run (a few microseconds);
    // once it sleeps waiting for room, nothing is counted.
    ensure!(eventually(HANG_LIMIT, || proc_state(blocked.pid()) == Some('S') || !blocked.is_alive()));
    let mut looks = 0u32;
    while blocked.is_alive() && looks < 50 {
        let n = q.unfinished();
        ensure!(n == 1, "a send waiting for room counted its task: {n} unfinished");
        looks += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    ensure!(blocked.join_timeout(HANG_LIMIT)? == Some(0), "the blocked send did not time out");
    ensure!(q.unfinished() == 1);
    ensure!(q.recv_timeout(HANG_LIMIT)? == 1);
    q.task_done()?;
    ensure!(q.join_timeout(HANG_LIMIT), "join waited for a task that never went in");

    // A streaming producer and a consumer that marks each task done at once.
    let q = JoinableQueue::<u32>::bounded(8)?;
    let mut producer = {
        let q = q.clone();
        Process::spawn(move || {
            for i in 0..5000 {
                q.send(&i).unwrap();
            }
        })?
    };
    for i in 0..5000 {
        ensure!(q.recv_timeout(HANG_LIMIT)? == i);
        ensure!(q.task_done().is_ok(), "task_done of item {i} found it uncounted");
    }
    ensure!(producer.join_timeout(HANG_LIMIT)? == Some(0));
    ensure!(q.join_timeout(HANG_LIMIT) && q.unfinished() == 0);
    Ok(())
}

/// `poll` is true at end of file (the other end closed, dropped in a child
/// or killed), as Python's, and the receive then reports it.
fn pipe_poll_is_true_at_end_of_file() -> TestResult {
    let (a, b) = Pipe::<u64>::duplex()?;
    a.close();
    ensure!(b.poll(HANG_LIMIT), "poll of a closed pipe waited out its timeout");
    ensure!(b.recv_timeout(HANG_LIMIT) == Err(RecvTimeoutError::Disconnected));

    let (tx, rx) = Pipe::<u64>::oneway()?;
    let mut child = Process::spawn(move || {
        tx.send(&7).unwrap();
        std::thread::sleep(HANG_LIMIT * 10);
    })?;
    ensure!(rx.poll(HANG_LIMIT) && rx.recv()? == 7);
    ensure!(!rx.poll(Duration::ZERO), "nothing waits and the sender lives");
    child.kill()?;
    ensure!(child.join_timeout(HANG_LIMIT)?.is_some());
    ensure!(rx.poll(HANG_LIMIT), "poll did not see the killed sender");
    ensure!(rx.recv_timeout(HANG_LIMIT) == Err(RecvTimeoutError::Disconnected));
    Ok(())
}

fn pipe_duplex_ping_pong_and_poll() -> TestResult {
    let (a, b) = Pipe::<u64>::duplex()?;
    let mut child = Process::spawn(move || {
        while let Ok(v) = b.recv() {
            if v == u64::MAX {
                break;
            }
            b.send(&(v + 1)).unwrap();
        }
    })?;
    let mut v = 0;
    for _ in 0..10_000 {
        a.send(&v)?;
        v = a.recv_timeout(HANG_LIMIT)? + 1;
    }
    ensure!(v == 20_000);
    let t = Duration::from_millis(80);
    let start = Instant::now();
    ensure!(!a.poll(t), "poll saw a message that was never sent");
    ensure!(start.elapsed() >= t && start.elapsed() < HANG_LIMIT);
    a.send(&u64::MAX)?;
    ensure!(child.join_timeout(HANG_LIMIT)? == Some(0));
    // The child's end is gone: receiving reports Disconnected.
    ensure!(a.recv_timeout(HANG_LIMIT) == Err(RecvTimeoutError::Disconnected));
    Ok(())
}

fn pipe_oneway_bytes_and_oversize() -> TestResult {
    let (tx, rx) = Pipe::<String>::oneway_with_capacity(4096)?;
    let mut child = Process::spawn(move || {
        tx.send_bytes(b"raw bytes").unwrap();
        tx.send(&"typed".to_string()).unwrap();
        tx.send_bytes(&[9u8; 100]).unwrap();
        // Larger than the ring: out of line.
        let bigger_than_the_ring = vec![5u8; 5000];
        if tx.send_bytes(&bigger_than_the_ring).is_err() {
            return 2;
        }
        tx.send(&"still usable".to_string()).unwrap();
        0
    })?;
    ensure!(rx.poll(HANG_LIMIT));
    ensure!(rx.recv_bytes()? == b"raw bytes");
    ensure!(rx.recv()? == "typed");
    let mut small = [0u8; 10];
    match rx.recv_bytes_into(&mut small) {
        Err(shmproc::RecvBytesIntoError::TooShort { needed: 100 }) => {}
        other => return Err(format!("{other:?}").into()),
    }
    let mut big = [0u8; 200];
    ensure!(rx.recv_bytes_into(&mut big)? == 100 && big[..100].iter().all(|&b| b == 9));
    match rx.recv_bytes_into(&mut big) {
        Err(shmproc::RecvBytesIntoError::TooShort { needed: 5000 }) => {}
        other => return Err(format!("{other:?}").into()),
    }
    match rx.recv_bytes_max(4999) {
        Err(shmproc::RecvBytesIntoError::TooShort { needed: 5000 }) => {}
        other => return Err(format!("{other:?}").into()),
    }
    ensure!(rx.recv_bytes_max(5000)? == vec![5u8; 5000]);
    ensure!(rx.recv()? == "still usable");
    ensure!(child.join()? == 0);
    ensure!(rx.recv() == Err(RecvError::Disconnected));
    Ok(())
}

fn queue_handles_move_into_spawn_mode_children() -> TestResult {
    let q = Queue::<u32>::bounded(8)?;
    let mut child =
        Process::builder().start_method(shmproc::StartMethod::Spawn).spawn_fn(spawned_producer, q.sender())?;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(q.recv_timeout(HANG_LIMIT)?);
    }
    ensure!(got == [10, 11, 12, 13]);
    ensure!(child.join()? == 0);
    Ok(())
}

fn spawned_producer(tx: shmproc::Sender<u32>) -> i32 {
    for i in 10..14 {
        if tx.send(&i).is_err() {
            return 1;
        }
    }
    0
}

/// A producer that has sent long enough to hold the producing side's bias
/// (200 uncontended sends from one thread; the bias comes after 64) is killed
/// inside a send: the next producer takes the side over, and the half-written
/// message never surfaces.
fn biased_producer_killed_inside_a_send() -> TestResult {
    let (tx, rx) = Queue::<u64>::bounded(256)?.into_split();
    let started = shmproc::Event::new()?;
    let (tx2, s2) = (tx.clone(), started.clone());
    let child = Process::spawn(move || -> () {
        for i in 0..200u64 {
            tx2.send(&i).unwrap();
        }
        let _ = tx2.try_send_with(|buf| {
            buf[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            s2.set();
            std::thread::sleep(Duration::from_secs(60));
            Some(8)
        });
    })?;
    ensure!(started.wait_timeout(HANG_LIMIT));
    ensure!(tx.send_timeout(&1000, Duration::from_millis(50)) == Err(SendTimeoutError::Timeout));
    child.kill()?;
    let start = Instant::now();
    tx.send_timeout(&1000, HANG_LIMIT)?;
    eprintln!("took the dead biased producer's side over after {:?}", start.elapsed());
    let got: Vec<u64> = (0..201).map(|_| rx.recv_timeout(HANG_LIMIT)).collect::<Result<_, _>>()?;
    ensure!(got[..200].iter().copied().eq(0..200) && got[200] == 1000, "{got:?}");
    ensure!(rx.try_recv() == Err(TryRecvError::Empty));
    let mut child = child;
    child.join()?;
    Ok(())
}

/// The single-message fast path (a one-ring queue whose side this thread
/// holds biased, as it does after 64 sends or receives in a row) with its
/// peers SIGKILLed at random points of a stream. A killed producer's
/// messages arrive as a prefix of its sequence, as long as its completed
/// sends or one longer (killed after publishing, before `send` returned),
/// and a producer started after it takes the side over from the dead bias
/// holder. A killed consumer loses at most the message it was taking (or
/// had taken without recording it), and the next consumer goes on from
/// there in order.
fn fast_path_peers_killed_mid_stream() -> TestResult {
    for round in 0..4u64 {
        // 1. The producer is killed.
        let (tx, rx) = Queue::<u64>::bounded(64)?.into_split();
        let (done, got) = (Value::new(0u64)?, Value::new(0u64)?);
        let (vtx, vdone) = (tx.clone(), done.clone());
        let mut victim = Process::spawn(move || {
            for i in 0u64.. {
                vtx.send(&i).unwrap();
                vdone.set(i + 1);
            }
        })?;
        let (crx, cgot) = (rx.clone(), got.clone());
        let mut consumer = Process::spawn(move || -> Result<(), String> {
            for want in 0u64.. {
                match crx.recv().map_err(|e| e.to_string())? {
                    u64::MAX => break,
                    v if v == want => cgot.set(want + 1),
                    v => return Err(format!("received {v}, expected {want}")),
                }
            }
            Ok(())
        })?;
        drop(rx);
        kill_mid_stream(&mut victim, &done, round)?;
        let completed = done.get();
        tx.send_timeout(&u64::MAX, HANG_LIMIT)?;
        ensure!(consumer.join_timeout(HANG_LIMIT)?.is_some(), "round {round}: the consumer hangs");
        let m = got.get();
        ensure!(
            m == completed || m == completed + 1,
            "round {round}: {m} messages arrived; the killed producer's sends had completed {completed}"
        );

        // 2. The consumer is killed.
        const N: u64 = 1_000_000;
        let (tx, rx) = Queue::<u64>::bounded(64)?.into_split();
        let seen = Value::new(0u64)?;
        // The producer stays until the victim is dead: the victim may have
        // taken everything by then, and must be found waiting, not gone.
        let release = shmproc::Event::new()?;
        let prelease = release.clone();
        let mut producer = Process::spawn(move || {
            for i in 0..N {
                tx.send(&i).unwrap();
            }
            prelease.wait();
        })?;
        let (vrx, vseen) = (rx.clone(), seen.clone());
        let mut victim = Process::spawn(move || -> Result<(), String> {
            for want in 0u64.. {
                match vrx.recv().map_err(|e| e.to_string())? {
                    v if v == want => vseen.set(want + 1),
                    v => return Err(format!("received {v}, expected {want}")),
                }
            }
            Ok(())
        })?;
        kill_mid_stream(&mut victim, &seen, round)?;
        let recorded = seen.get();
        release.set();
        let mut rest = Vec::new();
        loop {
            match rx.recv_timeout(HANG_LIMIT) {
                Ok(v) => rest.push(v),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(e) => return Err(format!("round {round}: {e}").into()),
            }
        }
        ensure!(producer.join_timeout(HANG_LIMIT)? == Some(0));
        let first = rest.first().copied().unwrap_or(N);
        ensure!(
            first == recorded || first == recorded + 1,
            "round {round}: the dead consumer had recorded {recorded} messages, the next one received {first}"
        );
        ensure!(rest.iter().copied().eq(first..N), "round {round}: the rest is out of order, or lost some");
        println!("round {round}: producer killed after {m} messages, consumer after {recorded}");
    }
    Ok(())
}

/// The fast path on sides whose bias is revoked for good (two producers and
/// two consumers take turns on one ring, each entering its side's mutex when
/// it finds it free) with a peer SIGKILLed at random points of a stream.
/// With one of two producers killed, its messages arrive as a prefix of its
/// sequence, its completed sends or one more; the other producer's arrive
/// in order without a gap, and a send made after the kill goes through
/// (taking the side over if the victim died holding it). With one of two
/// consumers killed, no message is delivered twice and at most one (the
/// one it was taking) is lost; each consumer sees the stream in order.
fn fast_mutex_path_peers_killed_mid_stream() -> TestResult {
    const B: u64 = 1 << 40;
    const STOP: u64 = u64::MAX;
    for round in 0..4u64 {
        // 1. One of two producers is killed.
        let (tx, rx) = Queue::<u64>::bounded(64)?.into_split();
        let (done, other_done, stop) = (Value::new(0u64)?, Value::new(0u64)?, shmproc::Event::new()?);
        let (vtx, vdone) = (tx.clone(), done.clone());
        let mut victim = Process::spawn(move || {
            for i in 0u64.. {
                vtx.send(&i).unwrap();
                vdone.set(i + 1);
            }
        })?;
        let (otx, odone, ostop) = (tx.clone(), other_done.clone(), stop.clone());
        let mut other = Process::spawn(move || {
            for i in 0u64.. {
                if ostop.is_set() {
                    break;
                }
                otx.send(&(B | i)).unwrap();
                odone.set(i + 1);
            }
        })?;
        let receiving = std::thread::spawn(move || -> Result<(u64, u64, bool), String> {
            let (mut a, mut b, mut stopped) = (0u64, 0u64, false);
            loop {
                match rx.recv_timeout(HANG_LIMIT) {
                    Ok(STOP) => stopped = true,
                    Ok(v) if v & B != 0 && v & !B == b => b += 1,
                    Ok(v) if v & B == 0 && v == a => a += 1,
                    Ok(v) => return Err(format!("received {v:#x} after {a} of the victim's and {b} of the other's")),
                    Err(RecvTimeoutError::Disconnected) => return Ok((a, b, stopped)),
                    Err(e) => return Err(e.to_string()),
                }
            }
        });
        let started = Instant::now();
        while other_done.get() < 1000 {
            ensure!(started.elapsed() < HANG_LIMIT, "round {round}: the other producer does not progress");
            std::thread::sleep(Duration::from_micros(200));
        }
        kill_mid_stream(&mut victim, &done, round)?;
        let completed = done.get();
        tx.send_timeout(&STOP, HANG_LIMIT)?;
        stop.set();
        ensure!(other.join_timeout(HANG_LIMIT)? == Some(0), "round {round}: the other producer hangs or failed");
        drop(tx);
        let (m, b, stopped) = receiving.join().map_err(|_| "the receiving thread panicked")??;
        ensure!(stopped, "round {round}: the send made after the kill was lost");
        ensure!(b == other_done.get(), "round {round}: {b} of the other producer's {} arrived", other_done.get());
        ensure!(
            m == completed || m == completed + 1,
            "round {round}: {m} of the victim's messages arrived; its completed sends were {completed}"
        );

        // 2. One of two consumers is killed.
        const N: u64 = 1_000_000;
        let q = Queue::<u64>::bounded(64)?;
        let marks = shmproc::Array::<u8>::zeroed(N as usize)?;
        let seen = Value::new(0u64)?;
        let release = shmproc::Event::new()?;
        let (ptx, prelease) = (q.sender(), release.clone());
        let mut producer = Process::spawn(move || {
            for i in 0..N {
                ptx.send(&i).unwrap();
            }
            // Stays until the victim is dead: it must be found waiting or
            // receiving, not gone.
            prelease.wait();
        })?;
        let (vrx, vmarks, vseen) = (q.receiver(), marks.clone(), seen.clone());
        let mut victim = Process::spawn(move || -> Result<(), String> {
            let mut last = None;
            for n in 1u64.. {
                let v = vrx.recv().map_err(|e| e.to_string())?;
                if last.is_some_and(|l| v <= l) || v >= N {
                    return Err(format!("received {v} after {last:?}"));
                }
                last = Some(v);
                vmarks.set(v as usize, 1);
                vseen.set(n);
            }
            Ok(())
        })?;
        let rx = q.receiver();
        drop(q);
        let receiving = std::thread::spawn(move || -> Result<Vec<u64>, String> {
            let mut got: Vec<u64> = Vec::new();
            loop {
                match rx.recv_timeout(HANG_LIMIT) {
                    Ok(v) if v < N && got.last().is_none_or(|&l| v > l) => got.push(v),
                    Ok(v) => return Err(format!("received {v} after {:?}", got.last())),
                    Err(RecvTimeoutError::Disconnected) => return Ok(got),
                    Err(e) => return Err(e.to_string()),
                }
            }
        });
        kill_mid_stream(&mut victim, &seen, round)?;
        release.set();
        ensure!(producer.join_timeout(HANG_LIMIT)? == Some(0), "round {round}: the producer hangs or failed");
        let got = receiving.join().map_err(|_| "the receiving thread panicked")??;
        let marks = marks.to_vec();
        let twice = got.iter().filter(|&&v| marks[v as usize] != 0).count();
        ensure!(twice == 0, "round {round}: {twice} messages were delivered to both consumers");
        let victims = marks.iter().filter(|&&m| m != 0).count() as u64;
        let lost = N - got.len() as u64 - victims;
        ensure!(
            lost <= 1,
            "round {round}: {lost} messages lost (the victim had {victims}, the survivor {})",
            got.len()
        );
        println!("round {round}: producer killed after {m} messages, consumer after {victims}, {lost} lost");
    }
    Ok(())
}

/// Waits until `victim` has counted 1000 messages in `progress` (well past
/// the bias), lets it run a round-dependent while longer, and SIGKILLs it.
fn kill_mid_stream(victim: &mut Process, progress: &Value<u64>, round: u64) -> TestResult {
    let started = Instant::now();
    while progress.get() < 1000 {
        ensure!(started.elapsed() < HANG_LIMIT, "round {round}: the victim does not progress");
        std::thread::sleep(Duration::from_micros(200));
    }
    std::thread::sleep(Duration::from_micros(300 + round * 1700));
    victim.kill()?;
    ensure!(victim.join_timeout(HANG_LIMIT)? == Some(-libc::SIGKILL));
    Ok(())
}

/// A receiver that dies holding a `RecvRef` (after enough receives to hold the
/// consuming side's bias) blocks neither producers nor other receivers: the
/// message it held is dropped with it, the rest arrive in order.
fn receiver_killed_holding_a_recv_ref() -> TestResult {
    let (tx, rx) = Queue::<u64>::bounded(4)?.into_split();
    let started = shmproc::Event::new()?;
    let mut next = 0u64;
    // First a blocked producer recovers the queue, then a receiver does.
    for producer_recovers in [true, false] {
        let (rx2, s2) = (rx.clone(), started.clone());
        started.clear();
        let child = Process::spawn(move || -> () {
            for _ in 0..100 {
                rx2.recv().unwrap();
            }
            let held = rx2.recv_ref().unwrap();
            s2.set();
            std::thread::sleep(Duration::from_secs(60));
            drop(held);
        })?;
        for _ in 0..101 {
            tx.send(&next)?;
            next += 1;
        }
        ensure!(started.wait_timeout(HANG_LIMIT));
        let dropped = next - 1;
        for _ in 0..3 {
            tx.send(&next)?;
            next += 1;
        }
        // Full (the held message still counts), and the receiving side is
        // held by the sleeping child.
        ensure!(tx.send_timeout(&next, Duration::from_millis(50)) == Err(SendTimeoutError::Timeout));
        ensure!(rx.recv_timeout(Duration::from_millis(50)) == Err(RecvTimeoutError::Timeout));
        child.kill()?;
        let start = Instant::now();
        if producer_recovers {
            tx.send_timeout(&next, HANG_LIMIT)?;
            next += 1;
            eprintln!("a blocked producer freed the dead reader's side after {:?}", start.elapsed());
        } else {
            ensure!(rx.recv_timeout(HANG_LIMIT)? == dropped + 1);
            eprintln!("a receiver took the dead reader's side over after {:?}", start.elapsed());
        }
        let expect_from = if producer_recovers { dropped + 1 } else { dropped + 2 };
        for want in expect_from..next {
            ensure!(rx.recv_timeout(HANG_LIMIT)? == want, "message {want}");
        }
        ensure!(rx.try_recv() == Err(TryRecvError::Empty));
        let mut child = child;
        child.join()?;
    }
    Ok(())
}

/// Garbage written over a live queue's shared state (both layouts): every
/// operation returns, with a value or an error; nothing panics or hangs. Runs
/// in a child process so that a hang or an abort fails the test.
fn garbage_over_a_live_queue_gives_errors_not_hangs() -> TestResult {
    for slots in [false, true] {
        let mut child = Process::spawn(move || {
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(slots);
            let mut rand = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let short = Duration::from_millis(1);
            let (mut ok, mut errors) = (0u32, 0u32);
            // A fresh queue per trial, so that each garbage pattern is met by
            // a queue in a normal state.
            for _ in 0..200 {
                let seg = shmproc::Segment::anonymous(2 << 20).unwrap();
                let b = Queue::<u64>::builder().capacity(64).message_size(16);
                let q = if slots { b.slot_ring() } else { b }.build_in(&seg, "q").unwrap();
                let info = seg.region().find(b"q").unwrap();
                let base = seg.region().base().as_ptr();
                // The queue's head: locks, counters, ring header, first frames.
                let span = info.size.min(8192);
                for i in 0..8 {
                    q.try_send(&i).unwrap();
                }
                for _ in 0..1 + rand() % 64 {
                    let off = info.offset + (rand() as usize % span);
                    // SAFETY: inside the mapped object; the queue's shared state
                    // is atomics and plain bytes, valid for any value (that is
                    // what this test checks).
                    unsafe { base.add(off).write_volatile(rand() as u8) };
                }
                let results = [
                    q.try_send(&7).is_ok(),
                    q.send_timeout(&8, short).is_ok(),
                    q.try_recv().is_ok(),
                    q.recv_timeout(short).is_ok(),
                    q.recv_ref_timeout(short).map(|r| r.to_native()).is_ok(),
                    q.try_recv().is_ok(),
                ];
                let _ = (q.len(), q.is_empty(), q.is_full());
                for r in results {
                    if r {
                        ok += 1;
                    } else {
                        errors += 1;
                    }
                }
            }
            eprintln!("slot ring {slots}: {ok} operations succeeded, {errors} failed");
        })?;
        ensure!(child.join_timeout(HANG_LIMIT * 6)? == Some(0), "the queue hung or panicked on garbage");
    }
    Ok(())
}

fn main() {
    shmproc_tests::run(trials![
        million_u64_in_order_between_two_processes,
        two_producers_two_consumers_exactly_once,
        large_messages_and_oversize_errors,
        recv_ref_reads_a_struct_in_place,
        killed_producer_gives_disconnected,
        try_recv_sees_a_killed_sender,
        producer_killed_mid_message_leaves_no_torn_message,
        biased_producer_killed_inside_a_send,
        fast_path_peers_killed_mid_stream,
        fast_mutex_path_peers_killed_mid_stream,
        receiver_killed_holding_a_recv_ref,
        garbage_over_a_live_queue_gives_errors_not_hangs,
        sender_blocked_on_full_queue_sees_dead_receivers,
        timeouts_return_on_time,
        joinable_queue_join_waits_for_every_task,
        joinable_queue_counts_a_task_once_it_is_in,
        pipe_poll_is_true_at_end_of_file,
        pipe_duplex_ping_pong_and_poll,
        pipe_oneway_bytes_and_oversize,
        queue_handles_move_into_spawn_mode_children,
        child_dropping_inherited_sender_at_once_sees_disconnected,
        forked_child_listed_as_inherited_until_it_uses_the_queue,
    ]);
}
