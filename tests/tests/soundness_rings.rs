//! Borrows into rings and peer-writable bytes (issue #14, points 2 and 8):
//! fork mode refuses to copy a live `RecvRef` into a child, and a peer
//! scribbling over frames while they are received gives values or typed
//! errors, never a fault, a panic or a hang.

use std::time::{Duration, Instant};

use shmproc::{Pool, PoolError, Process, ProcessError, Queue, RecvTimeoutError, Segment};
use shmproc_tests::{ensure, trials, TestResult};

/// A `RecvRef` moved into a fork-mode child (possible with a `'static`
/// queue) would be released by the parent while the child reads it: the
/// fork is refused, and allowed again once the borrow is gone.
fn fork_refused_while_a_recv_ref_lives() -> TestResult {
    let q: &'static Queue<Vec<u8>> = Box::leak(Box::new(Queue::bounded(4)?));
    q.send(&vec![7u8; 100])?;
    let m = q.recv_ref()?;
    ensure!(m.len() == 100);
    match Process::spawn(move || m.iter().map(|&b| i32::from(b)).sum::<i32>() - 700) {
        Err(ProcessError::RingBorrowed { borrows: 1 }) => {}
        Err(e) => return Err(format!("expected RingBorrowed, got {e}").into()),
        Ok(mut p) => {
            let _ = p.join();
            return Err("forked a child holding a RecvRef".into());
        }
    }
    // The closure (and the RecvRef in it) was dropped with the refusal: the
    // frame is released, and forking works again.
    q.send(&vec![1u8; 3])?;
    let q2 = q.clone();
    let mut p = Process::spawn(move || q2.recv().map(|v| v.len() as i32).unwrap_or(-1))?;
    ensure!(p.join()? == 3);
    Ok(())
}

/// A borrow alive anywhere in the process (not moved into the child) also
/// refuses fork mode and a fork-mode pool; a guard dropped first does not.
fn fork_and_pool_refused_while_any_borrow_lives() -> TestResult {
    let q = Queue::<u64>::bounded(4)?;
    q.send(&1)?;
    q.send(&2)?;
    let a = q.recv_ref()?;
    ensure!(matches!(Process::spawn(|| 0), Err(ProcessError::RingBorrowed { borrows: 1 })));
    match Pool::new(1) {
        Err(PoolError::Process(ProcessError::RingBorrowed { borrows: 1 })) => {}
        Err(e) => return Err(format!("expected RingBorrowed, got {e}").into()),
        Ok(_) => return Err("a fork-mode pool started while a RecvRef lives".into()),
    }
    drop(a);
    let b = q.recv_ref()?;
    ensure!(*b == 2);
    drop(b);
    ensure!(Process::spawn(|| 5)?.join()? == 5);
    let pool = Pool::new(1)?;
    ensure!(pool.apply(double, 21)? == 42);
    Ok(())
}

fn double(x: u64) -> u64 {
    x * 2
}

/// A peer that writes random bytes over the ring's frames while this process
/// sends and receives: every receive gives a message or a typed error, and
/// the process neither faults, panics nor hangs (receives are copied out
/// with atomic loads before validation; see `shmproc_core::peer_bytes`).
fn scribbled_frames_give_values_or_errors() -> TestResult {
    let seg = Segment::anonymous(4 << 20)?;
    let q = Queue::<Vec<u8>>::builder().capacity(64).message_size(2048).build_in(&seg, "q")?;
    let info = seg.region().find(b"q")?;
    let end = seg.region().base().as_ptr() as usize + info.offset + info.size;
    // The ring's bytes are the object's last 256 KiB; spare its first frames
    // a while by scribbling only the last 192 KiB.
    let (lo, hi) = (end - (192 << 10), end);
    let scribbler = shmproc_tests::scribbler(lo, hi, Duration::from_millis(1500))?;
    let (mut ok, mut errors) = (0u32, 0u32);
    let started = Instant::now();
    while scribbler.is_alive() && started.elapsed() < Duration::from_secs(60) {
        for i in 0..64u32 {
            let _ = q.try_send(&vec![i as u8; 1000 + i as usize]);
        }
        for _ in 0..64 {
            match q.recv_timeout(Duration::from_millis(1)) {
                Ok(v) => {
                    ensure!(v.len() <= 4 << 20, "a message longer than the segment");
                    ok += 1;
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(_) => errors += 1,
            }
        }
    }
    let mut scribbler = scribbler;
    ensure!(scribbler.join()? == 0);
    ensure!(ok + errors > 0, "nothing was received at all");
    println!("scribbled: {ok} messages, {errors} typed errors");
    Ok(())
}

fn main() {
    shmproc_tests::run(trials![
        fork_refused_while_a_recv_ref_lives,
        fork_and_pool_refused_while_any_borrow_lives,
        scribbled_frames_give_values_or_errors,
    ]);
}
