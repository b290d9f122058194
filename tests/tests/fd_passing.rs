//! Descriptors (sockets, files) through Queue, Pipe and Pool across real
//! processes: they arrive working, none leak, and a dead sender is an error,
//! not a hang.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use shmproc::{Fd, FdError, Pipe, Pool, Process, Queue};
use shmproc_tests::{ensure, eventually, trials, TestResult, HANG_LIMIT};

/// Open descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// A connected TCP pair on loopback: (client, server side).
fn tcp_pair() -> std::io::Result<(TcpStream, TcpStream)> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let c = TcpStream::connect(l.local_addr()?)?;
    let (s, _) = l.accept()?;
    Ok((c, s))
}

/// Reads lines from `s` and answers each upper-cased, until end of file.
fn echo_upper<S: Read + Write>(s: S) -> std::io::Result<u32> {
    let mut r = BufReader::new(s);
    let mut n = 0;
    let mut line = String::new();
    while r.read_line(&mut line)? > 0 {
        r.get_mut().write_all(line.to_uppercase().as_bytes())?;
        line.clear();
        n += 1;
    }
    Ok(n)
}

/// Sends a few lines through `client` and checks the upper-cased echoes.
fn talk(client: &mut TcpStream, tag: &str) -> TestResult {
    client.set_read_timeout(Some(HANG_LIMIT))?;
    let mut r = BufReader::new(client.try_clone()?);
    for i in 0..3 {
        let msg = format!("{tag} line {i}\n");
        client.write_all(msg.as_bytes())?;
        let mut back = String::new();
        r.read_line(&mut back)?;
        ensure!(back == msg.to_uppercase(), "echo {back:?} for {msg:?}");
    }
    Ok(())
}

fn socket_through_queue_to_a_child() -> TestResult {
    let q = Queue::<Fd<TcpStream>>::bounded(4)?;
    let (mut client, server) = tcp_pair()?;
    let rx = q.clone();
    let mut child = Process::spawn(move || {
        let s = rx.recv_timeout(HANG_LIMIT).unwrap().take().unwrap();
        echo_upper(s).unwrap();
    })?;
    q.send(&Fd::new(server)?)?;
    talk(&mut client, "queue")?;
    client.shutdown(std::net::Shutdown::Write)?;
    ensure!(child.join_timeout(HANG_LIMIT)? == Some(0));
    Ok(())
}

/// The other direction, through a pipe: the child is the sender (its own
/// broker, started after the fork), the parent the receiver.
fn socket_through_pipe_from_a_child() -> TestResult {
    let (tx, rx) = Pipe::<Fd<UnixStream>>::oneway()?;
    let mut child = Process::spawn(move || {
        let (mine, theirs) = UnixStream::pair().unwrap();
        tx.send(&Fd::new(theirs).unwrap()).unwrap();
        echo_upper(mine).unwrap();
    })?;
    let mut s = rx.recv_timeout(HANG_LIMIT)?.take()?;
    s.set_read_timeout(Some(HANG_LIMIT))?;
    s.write_all(b"through a pipe\n")?;
    let mut back = String::new();
    BufReader::new(&s).read_line(&mut back)?;
    ensure!(back == "THROUGH A PIPE\n", "echo {back:?}");
    drop(s);
    ensure!(child.join_timeout(HANG_LIMIT)? == Some(0));
    Ok(())
}

fn pool_talk(conn: Fd<TcpStream>) -> (u32, u32) {
    let s = conn.take().unwrap();
    (std::process::id(), echo_upper(s).unwrap())
}

/// Accepted sockets as pool arguments (the Pool chat server of the seed), in
/// a fork-mode and a spawn-mode pool.
fn sockets_as_pool_arguments() -> TestResult {
    for spawn in [false, true] {
        let pool = Pool::builder().processes(2).spawn_mode(spawn).build()?;
        let workers = pool.worker_pids();
        let mut clients = Vec::new();
        let mut results = Vec::new();
        for _ in 0..4 {
            let (client, server) = tcp_pair()?;
            results.push(pool.apply_async(pool_talk, Fd::new(server)?)?);
            clients.push(client);
        }
        for (i, c) in clients.iter_mut().enumerate() {
            talk(c, &format!("pool {i}"))?;
            c.shutdown(std::net::Shutdown::Write)?;
        }
        for r in results {
            let (pid, lines) = r.get_timeout(HANG_LIMIT)?;
            ensure!(lines == 3, "worker {pid} echoed {lines} lines");
            ensure!(workers.contains(&pid), "served by {pid}, not a worker of {workers:?}");
        }
        pool.close();
        pool.join()?;
    }
    Ok(())
}

/// 10,000 descriptors to a child and back (each checked to be the right
/// socket), and neither process's descriptor count grows.
fn ten_thousand_descriptors_leave_fd_counts_unchanged() -> TestResult {
    const N: usize = 10_000;
    const WINDOW: usize = 32;
    let there = Queue::<Fd<UnixStream>>::bounded(64)?;
    let back = Queue::<Fd<UnixStream>>::bounded(64)?;
    let counts = Queue::<(u64, u64)>::bounded(2)?;
    // Set once this process has redeemed every descriptor the child sent:
    // the child's broker must outlive its last ticket.
    let redeemed = shmproc::Event::new()?;
    let (rx, tx, report, redeemed2) = (there.clone(), back.clone(), counts.clone(), redeemed.clone());
    let mut child = Process::spawn(move || {
        // Warm up (starts this process's broker), then count.
        let first = rx.recv().unwrap().take().unwrap();
        tx.send(&Fd::new(first).unwrap()).unwrap();
        let mut before = 0u64;
        for n in 1..N {
            let fd = rx.recv().unwrap();
            if n == 1 {
                before = open_fds() as u64;
            }
            let s = fd.take().unwrap();
            tx.send(&Fd::new(s).unwrap()).unwrap();
        }
        // Our copies are closed once the parent redeemed them.
        redeemed2.wait();
        let mut after = open_fds() as u64;
        eventually(HANG_LIMIT, || {
            after = open_fds() as u64;
            after <= before
        });
        report.send(&(before, after)).unwrap();
    })?;
    let mut pending = std::collections::VecDeque::new();
    let check = |mine: UnixStream, fd: Fd<UnixStream>, i: usize| -> TestResult {
        let mut got = fd.take()?;
        got.write_all(&(i as u32).to_le_bytes())?;
        let mut buf = [0u8; 4];
        (&mine).read_exact(&mut buf)?;
        ensure!(u32::from_le_bytes(buf) == i as u32, "descriptor {i} came back as another socket");
        Ok(())
    };
    // Warm-up round trip: starts this process's broker.
    let (a, b) = UnixStream::pair()?;
    there.send(&Fd::new(b)?)?;
    check(a, back.recv_timeout(HANG_LIMIT)?, 0)?;
    let before = open_fds();
    let mut sent = 1;
    let mut done = 1;
    while done < N {
        while sent < N && pending.len() < WINDOW {
            let (a, b) = UnixStream::pair()?;
            there.send(&Fd::new(b)?)?;
            pending.push_back((a, sent));
            sent += 1;
        }
        let (a, i) = pending.pop_front().ok_or("nothing pending")?;
        check(a, back.recv_timeout(HANG_LIMIT)?, i)?;
        done += 1;
    }
    redeemed.set();
    let (child_before, child_after) = counts.recv_timeout(HANG_LIMIT)?;
    ensure!(child.join_timeout(HANG_LIMIT)? == Some(0));
    ensure!(child_after <= child_before, "child: {child_before} descriptors before, {child_after} after");
    let mut after = open_fds();
    eventually(HANG_LIMIT, || {
        after = open_fds();
        after <= before
    });
    ensure!(after <= before, "parent: {before} descriptors before, {after} after");
    Ok(())
}

/// The sender is SIGKILLed after sending, before the receiver redeems:
/// `take` fails with `SenderGone` (quickly, not a hang), even though the
/// sender had forked a child that is still alive (the fork handler closed
/// the child's copy of the broker's socket).
fn killed_sender_gives_an_error_not_a_hang() -> TestResult {
    let q = Queue::<Fd<UnixStream>>::bounded(4)?;
    let pids = Queue::<u32>::bounded(4)?;
    let (tx, ptx) = (q.clone(), pids.clone());
    let mut sender = Process::spawn(move || {
        let (_mine, theirs) = UnixStream::pair().unwrap();
        let fd = Fd::new(theirs).unwrap(); // the broker runs from here on
                                           // Forking beside the broker thread is allowed (and the grandchild
                                           // must not keep the broker's name alive).
        let grandchild = Process::spawn(|| std::thread::sleep(Duration::from_secs(120))).unwrap();
        ptx.send(&grandchild.pid()).unwrap();
        tx.send(&fd).unwrap();
        std::thread::sleep(Duration::from_secs(120));
    })?;
    let grandchild = pids.recv_timeout(HANG_LIMIT)?;
    let fd = q.recv_timeout(HANG_LIMIT)?;
    sender.kill()?;
    sender.join_timeout(HANG_LIMIT)?;
    let start = Instant::now();
    let got = fd.take();
    let took = start.elapsed();
    // SAFETY: kill(2) on the grandchild's pid, which is alive (it sleeps)
    // and reparented away from us; nothing else reuses it meanwhile.
    unsafe { libc::kill(grandchild as i32, libc::SIGKILL) };
    ensure!(matches!(got, Err(FdError::SenderGone { .. })), "take after the sender died: {got:?}");
    ensure!(took < HANG_LIMIT, "take took {took:?}");
    Ok(())
}

/// A descriptor sent and never received is closed when its time to live
/// passes (its peer sees end of file), and the ticket then says `NotFound`.
fn unreceived_descriptor_expires() -> TestResult {
    let q = Queue::<Fd<UnixStream>>::bounded(4)?;
    let (mut a, b) = UnixStream::pair()?;
    q.send(&Fd::with_ttl(b, Duration::from_millis(100))?)?;
    a.set_read_timeout(Some(HANG_LIMIT))?;
    let mut buf = [0u8; 1];
    ensure!(a.read(&mut buf)? == 0, "the expired descriptor is still open");
    ensure!(matches!(q.recv_timeout(HANG_LIMIT)?.take(), Err(FdError::NotFound)));
    Ok(())
}

/// A sending `Fd` dropped without ever being sent closes its descriptor at
/// once.
fn unsent_fd_closes_on_drop() -> TestResult {
    let (mut a, b) = UnixStream::pair()?;
    drop(Fd::new(b)?);
    a.set_read_timeout(Some(HANG_LIMIT))?;
    let mut buf = [0u8; 1];
    ensure!(a.read(&mut buf)? == 0, "the unsent descriptor is still open");
    Ok(())
}

/// A received `Fd` dropped without `take` closes the sender's copy; a forked
/// child's inherited copy of a brokered descriptor is closed in the child.
fn dropped_ticket_and_forked_copies_close_the_descriptor() -> TestResult {
    let q = Queue::<Fd<UnixStream>>::bounded(4)?;
    let (mut a, b) = UnixStream::pair()?;
    q.send(&Fd::new(b)?)?;
    // This child inherits the broker's copy of `b` with the fork.
    let sleeper = Process::spawn(|| std::thread::sleep(Duration::from_secs(120)))?;
    let rx = q.clone();
    let mut dropper = Process::spawn(move || drop(rx.recv_timeout(HANG_LIMIT).unwrap()))?;
    ensure!(dropper.join_timeout(HANG_LIMIT)? == Some(0));
    a.set_read_timeout(Some(HANG_LIMIT))?;
    let mut buf = [0u8; 1];
    let n = a.read(&mut buf);
    sleeper.kill()?;
    let mut sleeper = sleeper;
    sleeper.join_timeout(HANG_LIMIT)?;
    ensure!(matches!(n, Ok(0)), "the dropped descriptor is still open somewhere: {n:?}");
    Ok(())
}

/// A message type of the user's with a descriptor inside (derived rkyv).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(crate = rkyv)]
struct Job {
    id: u32,
    name: String,
    conn: Fd<UnixStream>,
}

fn descriptor_inside_a_derived_message() -> TestResult {
    let q = Queue::<Job>::bounded(4)?;
    let rx = q.clone();
    let mut child = Process::spawn(move || {
        let job = rx.recv_timeout(HANG_LIMIT).unwrap();
        let mut s = job.conn.take().unwrap();
        s.write_all(format!("{} {}\n", job.id, job.name).as_bytes()).unwrap();
    })?;
    let (a, b) = UnixStream::pair()?;
    q.send(&Job { id: 7, name: "seven".into(), conn: Fd::new(b)? })?;
    a.set_read_timeout(Some(HANG_LIMIT))?;
    let mut line = String::new();
    BufReader::new(&a).read_line(&mut line)?;
    ensure!(line == "7 seven\n", "got {line:?}");
    ensure!(child.join_timeout(HANG_LIMIT)? == Some(0));
    Ok(())
}

/// Forged and garbage tickets (raw bytes where an `Fd` is expected) give
/// errors, never a hang, a panic or someone else's descriptor.
fn forged_and_garbage_tickets_give_errors() -> TestResult {
    let (tx, rx) = Pipe::<Fd<UnixStream>>::oneway()?;
    // A real descriptor in this process's broker, which forgers try to get.
    let (_a, b) = UnixStream::pair()?;
    let real = Fd::new(b)?;
    let me = real.ticket();
    let forged = [
        shmproc::fd_passing::Ticket { token: me.token ^ 1, ..me },
        shmproc::fd_passing::Ticket { start: me.start + 1, ..me },
        shmproc::fd_passing::Ticket { pid: 0, ..me },
        shmproc::fd_passing::Ticket { pid: u32::MAX, start: 0, token: 0 },
    ];
    let mut child = Process::spawn(move || {
        for t in forged {
            tx.send_bytes(&rkyv::to_bytes::<rkyv::rancor::Error>(&t).unwrap()).unwrap();
        }
        for len in [0usize, 3, 20, 64] {
            tx.send_bytes(&vec![0xA5; len]).unwrap();
        }
    })?;
    ensure!(child.join_timeout(HANG_LIMIT)? == Some(0));
    for i in 0..8 {
        let start = Instant::now();
        match rx.recv_timeout(HANG_LIMIT) {
            Ok(fd) => {
                let got = fd.take_timeout(Duration::from_secs(2));
                ensure!(got.is_err(), "forged ticket {i} was honoured");
            }
            Err(e) => ensure!(matches!(e, shmproc::RecvTimeoutError::Corrupt { .. }), "garbage {i}: unexpected {e:?}"),
        }
        ensure!(start.elapsed() < HANG_LIMIT, "message {i} took {:?}", start.elapsed());
    }
    // The real one is still there for its owner.
    real.take()?;
    Ok(())
}

fn main() {
    shmproc_tests::run(trials![
        socket_through_queue_to_a_child,
        socket_through_pipe_from_a_child,
        sockets_as_pool_arguments,
        ten_thousand_descriptors_leave_fd_counts_unchanged,
        killed_sender_gives_an_error_not_a_hang,
        unreceived_descriptor_expires,
        unsent_fd_closes_on_drop,
        dropped_ticket_and_forked_copies_close_the_descriptor,
        descriptor_inside_a_derived_message,
        forged_and_garbage_tickets_give_errors,
    ]);
}
