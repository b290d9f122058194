//! `shmproc::wait` (Python's `multiprocessing.connection.wait`): many
//! processes, queues, pipes and events at once, made ready by other
//! processes; `Process::sentinel`.

use std::time::Duration;

use shmproc::wait::Waitable;
use shmproc::{wait, Event, Pipe, PipeReceiver, PipeSender, Pool, Process, Queue};
use shmproc_tests::{ensure, trials, TestResult, HANG_LIMIT};

const N: usize = 16;

/// 16 processes, 16 queues, 16 pipes and 16 events in one wait; a child
/// makes a few of each kind ready, and `wait` returns exactly those indices,
/// in order.
fn wait_over_64_mixed_objects() -> TestResult {
    let queues: Vec<Queue<u32>> = (0..N).map(|_| Queue::bounded(4)).collect::<Result<_, _>>()?;
    let mut pipes: Vec<(Option<PipeSender<u32>>, PipeReceiver<u32>)> =
        (0..N).map(|_| Pipe::oneway().map(|(tx, rx)| (Some(tx), rx))).collect::<Result<_, _>>()?;
    let events: Vec<Event> = (0..N).map(|_| Event::new()).collect::<Result<_, _>>()?;
    let stops: Vec<Event> = (0..N).map(|_| Event::new()).collect::<Result<_, _>>()?;
    let mut procs = Vec::new();
    for stop in &stops {
        let stop = stop.clone();
        procs.push(Process::spawn(move || {
            stop.wait();
        })?);
    }
    // Nothing is ready: a timeout gives nothing.
    {
        let objs = all(&procs, &queues, &pipes, &events);
        ensure!(objs.len() == 64);
        ensure!(wait(&objs, Some(Duration::from_millis(50))).is_empty());
        ensure!(wait(&objs, Some(Duration::ZERO)).is_empty());
    }

    // A child makes process 2, queues 3 and 11, pipe 5, events 7 and 12 ready.
    let (q3, q11, tx5, ev7, ev12, stop2) = (
        queues[3].clone(),
        queues[11].clone(),
        pipes[5].0.take().ok_or("pipe 5")?,
        events[7].clone(),
        events[12].clone(),
        stops[2].clone(),
    );
    let mut trigger = Process::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        q3.send(&3).expect("queue 3");
        tx5.send(&5).expect("pipe 5");
        ev7.set();
        stop2.set();
        q11.send(&11).expect("queue 11");
        ev12.set();
    })?;
    let expected = [2, N + 3, N + 11, 2 * N + 5, 3 * N + 7, 3 * N + 12];
    {
        // Waits until the first of them (whichever it is) becomes ready.
        let objs = all(&procs, &queues, &pipes, &events);
        let first = wait(&objs, Some(HANG_LIMIT));
        ensure!(!first.is_empty(), "nothing became ready");
        ensure!(first.iter().all(|i| expected.contains(i)), "not made ready: {first:?}");
    }
    ensure!(trigger.join()? == 0);
    ensure!(procs[2].join()? == 0);
    {
        let objs = all(&procs, &queues, &pipes, &events);
        let ready = wait(&objs, Some(HANG_LIMIT));
        ensure!(ready == expected, "{ready:?}");
        // Nothing was consumed: asking again gives the same.
        ensure!(wait(&objs, None) == expected);
    }
    ensure!(queues[3].recv()? == 3 && queues[11].recv()? == 11 && pipes[5].1.recv()? == 5);
    events[7].clear();
    events[12].clear();
    {
        // What was ready was consumed. (The sleepers, forked before, hold
        // copies of pipe 5's sender, so it is not at EOF yet.)
        let objs = all(&procs, &queues, &pipes, &events);
        let left = wait(&objs, Some(HANG_LIMIT));
        ensure!(left == [2], "{left:?}");
    }
    for stop in &stops {
        stop.set();
    }
    for p in &mut procs {
        p.join()?;
    }
    {
        // Every process has exited, and pipe 5's last sender with them: EOF.
        let objs = all(&procs, &queues, &pipes, &events);
        let left = wait(&objs, Some(HANG_LIMIT));
        ensure!(left == (0..N).chain([2 * N + 5]).collect::<Vec<_>>(), "{left:?}");
    }
    Ok(())
}

fn all<'a>(
    procs: &'a [Process],
    queues: &'a [Queue<u32>],
    pipes: &'a [(Option<PipeSender<u32>>, PipeReceiver<u32>)],
    events: &'a [Event],
) -> Vec<&'a dyn Waitable> {
    let mut v: Vec<&dyn Waitable> = Vec::new();
    v.extend(procs.iter().map(|p| p as &dyn Waitable));
    v.extend(queues.iter().map(|q| q as &dyn Waitable));
    v.extend(pipes.iter().map(|(_, rx)| rx as &dyn Waitable));
    v.extend(events.iter().map(|e| e as &dyn Waitable));
    v
}

/// A process that exits ends the wait (through its pidfd where there is one),
/// and its sentinel is readable then.
fn process_exit_ends_the_wait_and_the_sentinel_is_readable() -> TestResult {
    let go = Event::new()?;
    let g = go.clone();
    let mut child = Process::spawn(move || {
        g.wait();
        3
    })?;
    let idle = Event::new()?;
    ensure!(wait(&[&child as &dyn Waitable, &idle], Some(Duration::from_millis(30))).is_empty());
    if let Some(fd) = child.sentinel() {
        use std::os::fd::AsRawFd;
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        ensure!(unsafe { libc::poll(&mut pfd, 1, 0) } == 0, "sentinel readable before the exit");
    } else {
        println!("no pidfd on this kernel: sentinel checks skipped");
    }
    go.set();
    ensure!(wait(&[&idle as &dyn Waitable, &child], Some(HANG_LIMIT)) == [1]);
    if let Some(fd) = child.sentinel() {
        use std::os::fd::AsRawFd;
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        ensure!(unsafe { libc::poll(&mut pfd, 1, 0) } == 1, "sentinel not readable after the exit");
    }
    ensure!(child.join()? == 3);
    Ok(())
}

fn slow(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Queue and pipe ends whose peers are gone are ready (a receive would not
/// wait); pool results are ready when their task is done.
fn disconnected_ends_and_pool_results_are_ready() -> TestResult {
    let (tx, rx) = Queue::<u8>::bounded(2)?.into_split();
    let (ptx, prx) = Pipe::<u8>::oneway()?;
    ensure!(wait(&[&rx as &dyn Waitable, &prx], Some(Duration::from_millis(20))).is_empty());
    drop(tx);
    ensure!(wait(&[&rx as &dyn Waitable, &prx], Some(HANG_LIMIT)) == [0]);
    drop(ptx);
    ensure!(wait(&[&prx as &dyn Waitable, &rx], Some(HANG_LIMIT)) == [0, 1]);

    let pool = Pool::new(2)?;
    let long = pool.apply_async(slow, 60_000)?;
    let short = pool.map_async(slow, [10, 20])?;
    let got = wait(&[&long as &dyn Waitable, &short], Some(HANG_LIMIT));
    ensure!(got == [1], "{got:?} {:?}", short.get());
    pool.terminate();
    Ok(())
}

fn main() {
    shmproc_tests::run(trials![
        wait_over_64_mixed_objects,
        process_exit_ends_the_wait_and_the_sentinel_is_readable,
        disconnected_ends_and_pool_results_are_ready,
    ]);
}
