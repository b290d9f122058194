//! Messages of any size, in debug and release builds alike: typed sizing (no
//! error text), out-of-line blocks for messages larger than the ring, 16-byte
//! aligned archives read in place, and every send/receive error variant.

use std::cell::RefCell;
use std::time::Duration;

use shmproc::rkyv::{self, rancor, Archive, Archived, Deserialize, Place, Serialize};
use shmproc::{
    Event, Pipe, Process, Queue, RecvError, RecvTimeoutError, Segment, SendError, SendTimeoutError, TryRecvError,
    TrySendError,
};
use shmproc_tests::{ensure, eventually, trials, TestResult, HANG_LIMIT};

/// `len` bytes that depend on `seed` and on every position (made and checked
/// a word at a time, so that 256 MiB is quick even in a debug build).
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    for (i, chunk) in v.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&word(seed, i).to_le_bytes()[..chunk.len()]);
    }
    v
}

#[inline]
fn word(seed: u64, i: usize) -> u64 {
    (i as u64 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xD6E8_FEB8_6659_FD93)
}

/// Whether `v` is exactly `pattern(seed, len)`, without allocating it.
fn is_pattern(v: &[u8], seed: u64, len: usize) -> bool {
    v.len() == len && v.chunks(8).enumerate().all(|(i, c)| *c == word(seed, i).to_le_bytes()[..c.len()])
}

/// Bytes of memory a segment's file holds (blocks included).
fn allocated(seg: &Segment) -> u64 {
    // SAFETY: an all-zero stat is a valid value to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on the segment's open fd into a valid buffer.
    assert_eq!(unsafe { libc::fstat(seg.as_raw_fd(), &mut st) }, 0);
    st.st_blocks as u64 * 512
}

fn dev_shm_entries() -> usize {
    std::fs::read_dir("/dev/shm").map(|d| d.count()).unwrap_or(0)
}

/// The release-build bug: any `String` over 8 bytes or non-empty `Vec` failed
/// on a fresh pipe, because "does not fit" was read from rkyv's error text.
fn pipe_strings_and_vecs_in_every_build() -> TestResult {
    let (tx, rx) = Pipe::<String>::oneway()?;
    tx.send(&"MainProcess-long".to_string())?;
    ensure!(rx.recv()? == "MainProcess-long");
    let (vtx, vrx) = Pipe::<Vec<u32>>::oneway()?;
    let mut child = Process::spawn(move || {
        for n in 0..200u32 {
            vtx.send(&(0..n).collect()).unwrap();
        }
        tx.send(&"x".repeat(3000)).unwrap();
    })?;
    for n in 0..200u32 {
        ensure!(vrx.recv_timeout(HANG_LIMIT)? == (0..n).collect::<Vec<_>>());
    }
    ensure!(rx.recv_timeout(HANG_LIMIT)? == "x".repeat(3000));
    ensure!(child.join_timeout(HANG_LIMIT)? == Some(0));
    // A queue with the default sizes, strings of every length up to 20 KiB.
    let q = Queue::<String>::bounded(4)?;
    for len in (0..20_000).step_by(997) {
        q.send(&"q".repeat(len))?;
        ensure!(q.recv()?.len() == len);
    }
    Ok(())
}

/// 16 MiB and 256 MiB messages between two processes, through `Pipe` (typed
/// and raw bytes) and `Queue` (both layouts), checked byte for byte.
fn huge_messages_through_pipe_and_queue() -> TestResult {
    for (seed, size) in [(16u64, 16usize << 20), (256, 256 << 20)] {
        let (tx, rx) = Pipe::<Vec<u8>>::oneway()?;
        let q = Queue::<Vec<u8>>::bounded(2)?;
        let slots = Queue::<Vec<u8>>::builder().capacity(2).slot_ring().build()?;
        let (qtx, stx) = (q.clone(), slots.clone());
        let mut child = Process::spawn(move || {
            let v = pattern(seed, size);
            tx.send(&v).unwrap();
            if size <= 16 << 20 {
                tx.send_bytes(&v).unwrap();
            }
            qtx.send(&v).unwrap();
            stx.send(&v).unwrap();
        })?;
        let got = rx.recv_timeout(HANG_LIMIT)?;
        ensure!(is_pattern(&got, seed, size), "pipe: {} bytes, wrong contents", got.len());
        drop(got);
        if size <= 16 << 20 {
            ensure!(is_pattern(&rx.recv_bytes()?, seed, size), "pipe bytes: wrong contents");
        }
        ensure!(is_pattern(&q.recv_timeout(HANG_LIMIT)?, seed, size), "queue: wrong contents");
        ensure!(is_pattern(&slots.recv_timeout(HANG_LIMIT)?, seed, size), "slot queue: wrong contents");
        ensure!(child.join_timeout(HANG_LIMIT)? == Some(0));
    }
    Ok(())
}

/// 8 B, 64 KiB and 4 MiB messages mixed in one queue, 2 producers x 2
/// consumers, every message delivered exactly once and intact.
fn mixed_sizes_two_producers_two_consumers_exactly_once() -> TestResult {
    const PER: u32 = 24;
    const SIZES: [usize; 4] = [8, 64 << 10, 8, 4 << 20];
    for (slot_ring, unbounded) in [(false, false), (true, false), (false, true)] {
        let b = Queue::<(u8, u32, Vec<u8>)>::builder().capacity(8);
        let b = if slot_ring { b.slot_ring() } else { b };
        let b = if unbounded { b.unbounded() } else { b };
        let (tx, rx) = b.build()?.into_split();
        let (rtx, results) = Queue::<(u8, u32, bool)>::bounded(256)?.into_split();
        let mut procs = Vec::new();
        for p in 0..2u8 {
            let tx = tx.clone();
            procs.push(Process::spawn(move || {
                for seq in 0..PER {
                    let len = SIZES[seq as usize % SIZES.len()];
                    tx.send(&(p, seq, pattern(u64::from(p) << 32 | u64::from(seq), len))).unwrap();
                }
            })?);
        }
        drop(tx);
        for _ in 0..2 {
            let (rx, rtx) = (rx.clone(), rtx.clone());
            procs.push(Process::spawn(move || {
                while let Ok((p, seq, v)) = rx.recv() {
                    let len = SIZES[seq as usize % SIZES.len()];
                    let ok = is_pattern(&v, u64::from(p) << 32 | u64::from(seq), len);
                    rtx.send(&(p, seq, ok)).unwrap();
                }
            })?);
        }
        drop((rx, rtx));
        let mut seen = vec![[0u32; PER as usize]; 2];
        for _ in 0..2 * PER {
            let (p, seq, ok) = results.recv_timeout(HANG_LIMIT * 3)?;
            ensure!(ok, "message {p}/{seq} arrived damaged (slot ring: {slot_ring}, unbounded: {unbounded})");
            seen[p as usize][seq as usize] += 1;
        }
        ensure!(seen.iter().flatten().all(|&n| n == 1), "not exactly once: {seen:?}");
        for mut p in procs {
            ensure!(p.join_timeout(HANG_LIMIT)? == Some(0));
        }
        ensure!(
            results.recv_timeout(HANG_LIMIT) == Err(RecvTimeoutError::Disconnected),
            "a message was delivered twice"
        );
    }
    Ok(())
}

/// A receiver SIGKILLed while it holds a large message in place: the block is
/// freed by whoever drops the message, nothing is left in the segment file or
/// in `/dev/shm`, and the queue goes on.
fn receiver_killed_with_a_large_message_in_flight_leaks_nothing() -> TestResult {
    // 16 MiB blocks are punched when received; 4 MiB ones are kept for reuse
    // (at most 4 of up to 8 MiB per queue), but never the block of a message
    // dropped with its dead reader.
    for (slot_ring, big) in [(false, 16usize << 20), (true, 16 << 20), (false, 4 << 20), (true, 4 << 20)] {
        receiver_killed_with(slot_ring, big)?;
    }
    Ok(())
}

fn receiver_killed_with(slot_ring: bool, big: usize) -> TestResult {
    {
        let seg = Segment::anonymous(1 << 20)?;
        let b = Queue::<Vec<u8>>::builder().capacity(2);
        let b = if slot_ring { b.slot_ring() } else { b };
        let q = b.build_in(&seg, "q")?;
        let (base, shm) = (allocated(&seg), dev_shm_entries());
        q.send(&pattern(1, big))?;
        ensure!(allocated(&seg) >= base + big as u64, "the block is not counted: the test could not fail");
        let ready = Event::new()?;
        let (qc, rc) = (q.clone(), ready.clone());
        let mut reader = Process::spawn(move || {
            let m = qc.recv_ref().unwrap();
            assert_eq!(m.len(), big);
            rc.set();
            std::thread::sleep(Duration::from_secs(600));
        })?;
        ensure!(ready.wait_timeout(HANG_LIMIT), "the reader never got the message");
        reader.kill()?;
        reader.join_timeout(HANG_LIMIT)?;
        // The queue goes on: the dead reader's message is dropped, not
        // delivered again, and new messages pass (on the slot ring, filling
        // the queue makes the waiting sender recover the dead reader's slot).
        q.send(&b"after".to_vec())?;
        ensure!(q.recv_timeout(HANG_LIMIT)? == b"after");
        q.send(&vec![1])?;
        q.send_timeout(&vec![2], HANG_LIMIT)?;
        ensure!(q.recv_timeout(HANG_LIMIT)? == vec![1]);
        ensure!(q.recv_timeout(HANG_LIMIT)? == vec![2]);
        ensure!(
            eventually(HANG_LIMIT, || allocated(&seg) < base + (1 << 20)),
            "the dead reader's block was not freed: {} bytes over the baseline (slot ring: {slot_ring})",
            allocated(&seg) - base
        );
        // And again with a large one (whose block may be kept for reuse).
        q.send(&pattern(2, big))?;
        ensure!(is_pattern(&q.recv()?, 2, big));
        let kept = if big <= 8 << 20 { 4 * (8 << 20) } else { 0 };
        ensure!(allocated(&seg) < base + kept + (1 << 20));
        ensure!(dev_shm_entries() == shm, "/dev/shm changed");
    }
    Ok(())
}

/// Archives aligned to 16 (`u128`) read in place, in the ring and out of
/// line, on both layouts: `recv_ref` never drops what `recv` would deliver.
fn recv_ref_reads_sixteen_byte_aligned_archives() -> TestResult {
    for slot_ring in [false, true] {
        let b = Queue::<(u64, u128)>::builder().capacity(64);
        let q = if slot_ring { b.slot_ring() } else { b }.build()?;
        let tx = q.clone();
        let mut child = Process::spawn(move || {
            for i in 0..2000u64 {
                tx.send(&(i, u128::from(i) << 64 | 7)).unwrap();
            }
        })?;
        for i in 0..2000u64 {
            let m = q.recv_ref_timeout(HANG_LIMIT)?;
            ensure!(m.0.to_native() == i && m.1.to_native() == (u128::from(i) << 64 | 7));
        }
        ensure!(child.join_timeout(HANG_LIMIT)? == Some(0));
        // Out of line.
        let big = Queue::<Vec<(u64, u128)>>::bounded(2)?;
        big.send(&(0..100_000u64).map(|i| (i, u128::from(i) * 3)).collect())?;
        let m = big.recv_ref()?;
        ensure!(m.len() == 100_000 && m.iter().enumerate().all(|(i, e)| e.1.to_native() == i as u128 * 3));
    }
    Ok(())
}

// ------------------------------------------------------- error variants ----

#[derive(Debug)]
struct Refused;
impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused on purpose")
    }
}
impl std::error::Error for Refused {}

thread_local! {
    /// What [`Hook`] runs while its field is serialised.
    static HOOK: RefCell<Option<Box<dyn Fn()>>> = const { RefCell::new(None) };
}

/// A field wrapper whose serialisation fails (`fail = true`) or runs
/// [`HOOK`] (to send from inside a `Serialize` impl).
struct Hook;

impl rkyv::with::ArchiveWith<u8> for Hook {
    type Archived = Archived<u8>;
    type Resolver = ();
    fn resolve_with(field: &u8, _: (), out: Place<Archived<u8>>) {
        field.resolve((), out);
    }
}

impl<S: rancor::Fallible + ?Sized> rkyv::with::SerializeWith<u8, S> for Hook
where
    S::Error: rancor::Source,
{
    fn serialize_with(field: &u8, _: &mut S) -> Result<(), S::Error> {
        if *field == 0xEE {
            return Err(<S::Error as rancor::Source>::new(Refused));
        }
        HOOK.with(|h| {
            if let Some(f) = &*h.borrow() {
                f();
            }
        });
        Ok(())
    }
}

impl<D: rancor::Fallible + ?Sized> rkyv::with::DeserializeWith<Archived<u8>, u8, D> for Hook {
    fn deserialize_with(field: &Archived<u8>, _: &mut D) -> Result<u8, D::Error> {
        Ok(*field)
    }
}

#[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
#[rkyv(crate = shmproc::rkyv)]
struct Hooked {
    #[rkyv(with = Hook)]
    x: u8,
}

/// Every send and receive error variant, from its real cause (this binary
/// runs in debug and in release in CI).
fn every_error_variant() -> TestResult {
    let t = Duration::from_millis(20);
    // Full, Timeout, Disconnected.
    let q = Queue::<u64>::bounded(1)?;
    q.send(&1)?;
    ensure!(q.try_send(&2) == Err(TrySendError::Full));
    ensure!(q.send_timeout(&2, t) == Err(SendTimeoutError::Timeout));
    ensure!(q.recv()? == 1);
    ensure!(q.try_recv() == Err(TryRecvError::Empty));
    ensure!(q.recv_timeout(t) == Err(RecvTimeoutError::Timeout));
    q.close();
    ensure!(q.try_send(&2) == Err(TrySendError::Disconnected));
    ensure!(q.send(&2) == Err(SendError::Disconnected));
    ensure!(q.send_timeout(&2, t) == Err(SendTimeoutError::Disconnected));
    ensure!(q.recv() == Err(RecvError::Disconnected));
    ensure!(q.try_recv() == Err(TryRecvError::Disconnected));
    ensure!(q.recv_timeout(t) == Err(RecvTimeoutError::Disconnected));
    let (tx, rx) = Queue::<u64>::bounded(1)?.into_split();
    tx.send(&1)?;
    drop(rx);
    ensure!(tx.send(&2) == Err(SendError::Disconnected), "a blocked send must see the receivers gone");

    // TooLarge only where a limit exists: an in-place writer that gives up.
    for q in [Queue::<u64>::bounded(2)?, Queue::<u64>::builder().slot_ring().build()?] {
        let limit = q.message_size();
        ensure!(q.send_with(|_| None) == Err(SendError::TooLarge { size: 0, limit }));
        ensure!(q.try_send_with(|_| None) == Err(TrySendError::TooLarge { size: 0, limit }));
        ensure!(q.try_recv() == Err(TryRecvError::Empty), "a refused in-place write must not surface");
    }

    // Serialize: a real serialisation failure, in every path and layout.
    let bad = Hooked { x: 0xEE };
    for q in [Queue::<Hooked>::bounded(2)?, Queue::<Hooked>::builder().slot_ring().build()?] {
        ensure!(matches!(q.try_send(&bad), Err(TrySendError::Serialize { .. })));
        ensure!(matches!(q.send(&bad), Err(SendError::Serialize { .. })));
        ensure!(matches!(q.send_timeout(&bad, t), Err(SendTimeoutError::Serialize { .. })));
        q.send(&Hooked { x: 1 })?;
        ensure!(q.recv()? == Hooked { x: 1 });
    }
    let (ptx, prx) = Pipe::<Hooked>::oneway()?;
    ensure!(matches!(ptx.send(&bad), Err(SendError::Serialize { .. })));

    // Reentered: a Serialize impl sending on the channel it is sent on (the
    // byte ring's producer lock, the pipe end's producer).
    let q = Queue::<Hooked>::bounded(4)?;
    let inner = std::rc::Rc::new(RefCell::new(None));
    let (qc, ic) = (q.clone(), inner.clone());
    HOOK.with(|h| *h.borrow_mut() = Some(Box::new(move || *ic.borrow_mut() = Some(qc.try_send(&Hooked { x: 2 })))));
    q.send(&Hooked { x: 1 })?;
    ensure!(*inner.borrow() == Some(Err(TrySendError::Reentered)), "got {:?}", inner.borrow());
    HOOK.with(|h| h.borrow_mut().take());
    ensure!(q.recv()? == Hooked { x: 1 });
    ensure!(q.try_recv() == Err(TryRecvError::Empty));
    let ptx = std::rc::Rc::new(ptx);
    let piped = std::rc::Rc::new(RefCell::new(None));
    let (pc, pi) = (ptx.clone(), piped.clone());
    HOOK.with(|h| *h.borrow_mut() = Some(Box::new(move || *pi.borrow_mut() = Some(pc.send(&Hooked { x: 2 })))));
    ptx.send(&Hooked { x: 1 })?;
    HOOK.with(|h| h.borrow_mut().take());
    ensure!(*piped.borrow() == Some(Err(SendError::Reentered)), "got {:?}", piped.borrow());
    ensure!(prx.recv()? == Hooked { x: 1 });
    ensure!(prx.try_recv() == Err(TryRecvError::Empty));

    // Reentered on receive: a second receive under a live RecvRef.
    let q = Queue::<u64>::bounded(4)?;
    q.send(&1)?;
    q.send(&2)?;
    let held = q.recv_ref()?;
    ensure!(q.try_recv() == Err(TryRecvError::Reentered));
    ensure!(q.recv_timeout(t) == Err(RecvTimeoutError::Reentered));
    ensure!(q.recv() == Err(RecvError::Reentered));
    drop(held);
    ensure!(q.recv()? == 2);

    // Corrupt: bytes that are not an archive of the type.
    let (btx, brx) = Pipe::<u64>::oneway()?;
    btx.send_bytes(b"x")?;
    ensure!(matches!(brx.recv(), Err(RecvError::Corrupt { .. })));
    Ok(())
}

/// A message whose block cannot get memory: `NoSpace`, not a crash (a file
/// size limit in a child makes the block's `fallocate` fail).
fn no_space_for_a_block_is_an_error() -> TestResult {
    let q = Queue::<Vec<u8>>::bounded(2)?;
    let qc = q.clone();
    let mut child = Process::spawn(move || {
        // SAFETY: plain libc calls in a single-threaded child.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit { rlim_cur: 1 << 30, rlim_max: 1 << 30 };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
        }
        match qc.try_send(&vec![3u8; 1 << 20]) {
            Err(TrySendError::NoSpace { size }) if size > 1 << 20 => 0,
            other => {
                eprintln!("{other:?}");
                1
            }
        }
    })?;
    ensure!(child.join_timeout(HANG_LIMIT)? == Some(0));
    // Nothing was published.
    ensure!(q.try_recv() == Err(TryRecvError::Empty));
    Ok(())
}

/// Python's `Queue()`: a million messages sent before the first receive,
/// none refused, all received in order, and the memory of the backlog
/// returned once it is drained.
fn unbounded_queue_takes_a_million_before_the_first_receive() -> TestResult {
    const N: u64 = 1_000_000;
    let seg = Segment::anonymous(1 << 20)?;
    let (tx, rx) = Queue::<u64>::unbounded_in(&seg, "q")?.into_split();
    ensure!(rx.capacity() == usize::MAX);
    let base = allocated(&seg);
    let mut child = Process::spawn(move || {
        for i in 0..N {
            if let Err(e) = tx.try_send(&i) {
                eprintln!("refused at {i}: {e}");
                return 1;
            }
        }
        0
    })?;
    ensure!(child.join_timeout(HANG_LIMIT * 3)? == Some(0), "a send was refused or waited");
    ensure!(rx.len() as u64 == N);
    let peak = allocated(&seg);
    ensure!(peak > base + (8 << 20), "the backlog did not grow into chained rings ({} bytes)", peak - base);
    for i in 0..N {
        let v = rx.try_recv()?;
        ensure!(v == i, "got {v}, expected {i}");
    }
    // Drained: every ring but the last of the chain is freed; the last one
    // goes with the next send, which takes the senders back to the first ring.
    let drained = allocated(&seg);
    ensure!(
        drained - base <= (peak - base) / 2 + (1 << 20),
        "the drained backlog kept {} bytes (peak {})",
        drained - base,
        peak - base
    );
    let q = Queue::<u64>::open_in(&seg, "q")?;
    q.send(&7)?;
    ensure!(q.recv()? == 7);
    ensure!(allocated(&seg) < base + (1 << 20), "{} bytes left after the next send", allocated(&seg) - base);
    drop(q);
    ensure!(rx.recv_timeout(HANG_LIMIT) == Err(RecvTimeoutError::Disconnected));
    Ok(())
}

/// An unbounded queue whose producer is SIGKILLed mid-burst, and whose
/// consumer is SIGKILLed while it drains a backlog that spans several rings:
/// what arrives is in order, nothing is torn or repeated, the queue goes on,
/// and the drained queue holds no memory beyond its first ring.
fn unbounded_queue_survives_killed_peers() -> TestResult {
    let seg = Segment::anonymous(1 << 20)?;
    let q = Queue::<u64>::unbounded_in(&seg, "q")?;
    let base = allocated(&seg);
    let mut next = 0u64;
    for round in 0..10u64 {
        // A producer killed at some point of a burst.
        let tx = q.sender();
        let start = next;
        let mut producer = Process::spawn(move || {
            for i in start.. {
                tx.send(&i).unwrap();
            }
        })?;
        // Killed some time into its burst (not before its first send: a
        // loaded machine may start it late).
        ensure!(eventually(HANG_LIMIT, || !q.is_empty()), "round {round}: the producer sent nothing");
        std::thread::sleep(Duration::from_millis(5 + 37 * round % 90));
        producer.kill()?;
        let code = producer.join_timeout(HANG_LIMIT)?;
        eprintln!("round {round}: producer exit {code:?}, queued {}", q.len());
        ensure!(code == Some(-9), "round {round}: the producer failed before the kill");
        let sent = q.len() as u64;
        ensure!(sent > 0, "round {round}: nothing was sent");
        // A consumer killed while it drains part of the backlog.
        let (rx, taken) = (q.receiver(), shmproc::Value::new(0u64)?);
        let t2 = taken.clone();
        let mut consumer = Process::spawn(move || {
            for expect in start.. {
                let v = rx.recv().unwrap();
                assert_eq!(v, expect);
                t2.set(expect + 1);
            }
        })?;
        ensure!(eventually(HANG_LIMIT, || taken.get() > start + sent / 3), "the consumer made no progress");
        consumer.kill()?;
        ensure!(consumer.join_timeout(HANG_LIMIT)? == Some(-9), "round {round}: the consumer failed before the kill");
        // The rest, in order: at most the message the consumer was reading
        // when it died is gone.
        let mut expect = taken.get();
        let end = loop {
            match q.try_recv() {
                Ok(v) => {
                    ensure!(v == expect || v == expect + 1, "round {round}: got {v}, expected {expect}");
                    expect = v + 1;
                }
                Err(e) => break e,
            }
        };
        ensure!(expect >= start + sent - 1, "round {round}: stopped at {expect} of {} with {end:?}", start + sent);
        next = expect.max(start + sent);
        q.send(&next)?;
        ensure!(q.recv_timeout(HANG_LIMIT)? == next);
        next += 1;
        ensure!(
            eventually(HANG_LIMIT, || allocated(&seg) < base + (4 << 20)),
            "round {round}: {} bytes left over",
            allocated(&seg) - base
        );
    }
    Ok(())
}

/// Crash torture: producers and consumers of messages from 8 B to 9 MiB
/// (in the ring, out of line, recycled or punched blocks), SIGKILLed at
/// random moments, in every layout. Nothing may hang, no message may arrive
/// damaged or twice, each producer's messages arrive in order, and the
/// memory left over is bounded by what the documented windows can leak
/// (a block a killed sender had written but not published).
fn torture_kills_with_messages_of_every_size() -> TestResult {
    const SIZES: [usize; 6] = [8, 2 << 10, 64 << 10, 1 << 20, 8, 9 << 20];
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for (slot_ring, unbounded) in [(false, false), (true, false), (false, true)] {
        let seg = Segment::anonymous(1 << 20)?;
        let b = Queue::<(u32, u32, Vec<u8>)>::builder().capacity(8);
        let b = if slot_ring { b.slot_ring() } else { b };
        let b = if unbounded { b.unbounded() } else { b };
        let q = b.build_in(&seg, "q")?;
        let base = allocated(&seg);
        // The last sequence number seen from each producer generation.
        let mut last: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
        let mut producer_kills = 0u64;
        let mut total_drained = 0usize;
        for round in 0..20u32 {
            let tx = q.sender();
            let mut producer = Process::spawn(move || {
                for seq in 0u32.. {
                    let len = SIZES[seq as usize % SIZES.len()];
                    tx.send(&(round, seq, pattern(u64::from(round) << 32 | u64::from(seq), len))).unwrap();
                }
            })?;
            let rx = q.receiver();
            let mut consumer = Process::spawn(move || {
                let mut seen: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
                loop {
                    let (p, seq, v) = rx.recv().unwrap();
                    let len = SIZES[seq as usize % SIZES.len()];
                    if !is_pattern(&v, u64::from(p) << 32 | u64::from(seq), len) {
                        return 3;
                    }
                    if seen.insert(p, seq).is_some_and(|prev| prev >= seq) {
                        return 4;
                    }
                }
            })?;
            std::thread::sleep(Duration::from_millis(2 + next() % 40));
            match next() % 3 {
                0 => producer.kill()?,
                1 => consumer.kill()?,
                _ => {
                    producer.kill()?;
                    consumer.kill()?;
                }
            }
            std::thread::sleep(Duration::from_millis(next() % 10));
            producer.kill()?;
            consumer.kill()?;
            ensure!(producer.join_timeout(HANG_LIMIT)? == Some(-9), "round {round}: the producer failed");
            let c = consumer.join_timeout(HANG_LIMIT)?;
            ensure!(c == Some(-9), "round {round}: the consumer found a damaged or repeated message ({c:?})");
            producer_kills += 1;
            // Drain what is left: intact, and in order per producer.
            let mut drained = 0usize;
            loop {
                match q.try_recv() {
                    Ok((p, seq, v)) => {
                        let len = SIZES[seq as usize % SIZES.len()];
                        ensure!(
                            is_pattern(&v, u64::from(p) << 32 | u64::from(seq), len),
                            "round {round}: damaged message {p}/{seq}"
                        );
                        // The consumer may have taken later ones (and died):
                        // what the parent sees must still be in order.
                        let in_order = match last.insert(p, seq) {
                            Some(prev) => prev < seq,
                            None => true,
                        };
                        ensure!(in_order, "round {round}: {p}/{seq} out of order or repeated");
                        drained += 1;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(e) => return Err(format!("round {round}: {e}").into()),
                }
            }
            total_drained += drained;
            q.send(&(u32::MAX, round, vec![1, 2, 3]))?;
            ensure!(
                q.recv_timeout(HANG_LIMIT)? == (u32::MAX, round, vec![1, 2, 3]),
                "round {round}: the queue stopped"
            );
        }
        let left = allocated(&seg).saturating_sub(base);
        let bound = 4 * (8u64 << 20) + producer_kills * (10 << 20) + (16 << 20);
        eprintln!(
            "slot ring {slot_ring}, unbounded {unbounded}: {total_drained} messages left by the killed consumers, \
             {left} bytes left over (bound {bound})"
        );
        ensure!(left <= bound, "{left} bytes left over, more than the documented windows can leak ({bound})");
    }
    Ok(())
}

fn main() {
    shmproc_tests::run(trials![
        pipe_strings_and_vecs_in_every_build,
        huge_messages_through_pipe_and_queue,
        mixed_sizes_two_producers_two_consumers_exactly_once,
        receiver_killed_with_a_large_message_in_flight_leaks_nothing,
        recv_ref_reads_sixteen_byte_aligned_archives,
        every_error_variant,
        no_space_for_a_block_is_an_error,
        unbounded_queue_takes_a_million_before_the_first_receive,
        unbounded_queue_survives_killed_peers,
        torture_kills_with_messages_of_every_size,
    ]);
}
