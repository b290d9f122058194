//! `shmproc::net::Queue` against a plain TCP length-prefixed queue on
//! loopback, in the same run (feature `net`:
//! `cargo bench -p shmproc-benches --features net --bench net`).
//!
//! The host (this process) serves the queues; a forked remote process
//! (forked before any zenoh session exists) sends and receives. Measured:
//! throughput of a remote producer into the host (u64 one per call, u64
//! batched, 1 KiB batched), and one-way latency as half a ping-pong round
//! trip (host -> remote -> host). The TCP baseline does the same over one
//! `TcpStream` with `u32` length prefixes (buffered writes for throughput,
//! `TCP_NODELAY` for latency). Prints one table with the ratios.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use shmproc::net::{Node, Queue};
use shmproc::Process;

const SINGLE: u64 = 20_000;
const BATCHED: u64 = 1_000_000;
const KIB: u64 = 100_000;
const PINGS: u32 = 2_000;
const BATCH: usize = 1024;
const WAIT: Duration = Duration::from_secs(60);

/// What the remote side measured: (name, nanoseconds per message).
type Results = shmproc::Queue<(String, f64)>;

fn report(results: &Results, name: &str, start: Instant, n: u64) {
    let per = start.elapsed().as_nanos() as f64 / n as f64;
    results.send(&(name.to_owned(), per)).expect("report");
}

fn remote(port: u16, tcp_port: u16, results: Results) {
    let node = Node::builder().connect(format!("tcp/127.0.0.1:{port}")).prefix("bench").open().expect("node");
    let q = Queue::<u64>::connect(&node, "u64", WAIT).expect("connect u64");
    let k = Queue::<Vec<u8>>::connect(&node, "kib", WAIT).expect("connect kib");
    let ping = Queue::<u64>::connect(&node, "ping", WAIT).expect("connect ping");
    let pong = Queue::<u64>::connect(&node, "pong", WAIT).expect("connect pong");
    let kping = Queue::<Vec<u8>>::connect(&node, "kping", WAIT).expect("connect kping");
    let kpong = Queue::<Vec<u8>>::connect(&node, "kpong", WAIT).expect("connect kpong");

    // Throughput: the clock stops when the host has accepted the last one.
    let t = Instant::now();
    for i in 0..SINGLE {
        q.send(&i).expect("send");
    }
    report(&results, "net_u64_single", t, SINGLE);
    let t = Instant::now();
    let mut i = 0;
    while i < BATCHED {
        let b: Vec<u64> = (i..(i + BATCH as u64).min(BATCHED)).collect();
        q.send_batch(&b).expect("send_batch");
        i += b.len() as u64;
    }
    report(&results, "net_u64_batched", t, BATCHED);
    let payload = vec![7u8; 1024];
    let t = Instant::now();
    let mut i = 0;
    while i < KIB {
        let n = (KIB - i).min(256);
        let b = vec![payload.clone(); n as usize];
        k.send_batch(&b).expect("send_batch kib");
        i += n;
    }
    report(&results, "net_kib_batched", t, KIB);
    // Latency: echo.
    for _ in 0..PINGS {
        let v = ping.recv().expect("ping");
        pong.send(&v).expect("pong");
    }
    for _ in 0..PINGS {
        let v = kping.recv().expect("kping");
        kpong.send(&v).expect("kpong");
    }

    // TCP baseline.
    let s = TcpStream::connect(("127.0.0.1", tcp_port)).expect("tcp connect");
    s.set_nodelay(true).expect("nodelay");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut w = BufWriter::new(s.try_clone().expect("clone"));
    let mut ack = [0u8; 1];
    for (name, n, size, buffered) in [
        ("tcp_u64_single", SINGLE, 8, false),
        ("tcp_u64_batched", BATCHED, 8, true),
        ("tcp_kib_batched", KIB, 1024, true),
    ] {
        let body = vec![1u8; size];
        let t = Instant::now();
        for _ in 0..n {
            w.write_all(&(size as u32).to_le_bytes()).expect("write");
            w.write_all(&body).expect("write");
            if !buffered {
                w.flush().expect("flush");
                // One per call, as a queue's send: wait for the receiver.
                r.read_exact(&mut ack).expect("ack");
            }
        }
        w.flush().expect("flush");
        r.read_exact(&mut ack).expect("final ack");
        report(&results, name, t, n);
    }
    for size in [8usize, 1024] {
        let mut buf = vec![0u8; size];
        for _ in 0..PINGS {
            let mut len = [0u8; 4];
            r.read_exact(&mut len).expect("read");
            r.read_exact(&mut buf).expect("read");
            w.write_all(&len).expect("write");
            w.write_all(&buf).expect("write");
            w.flush().expect("flush");
        }
    }
}

fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).expect("read len");
    buf.resize(u32::from_le_bytes(len) as usize, 0);
    r.read_exact(buf).expect("read body");
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is understood.
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let listener = TcpListener::bind("127.0.0.1:0").expect("tcp listen");
    let tcp_port = listener.local_addr().expect("addr").port();
    let results: Results = shmproc::Queue::unbounded().expect("results queue");
    // Fork before any zenoh session exists in this process.
    let r = results.clone();
    let mut child = Process::spawn(move || remote(port, tcp_port, r)).expect("fork the remote");

    let node = Node::builder().listen(format!("tcp/127.0.0.1:{port}")).prefix("bench").open().expect("node");
    let q = Queue::serve(&node, "u64", shmproc::Queue::<u64>::bounded(65_536).expect("queue")).expect("serve");
    let k = Queue::serve(&node, "kib", shmproc::Queue::<Vec<u8>>::bounded(4096).expect("queue")).expect("serve");
    let ping = Queue::serve(&node, "ping", shmproc::Queue::<u64>::bounded(4).expect("queue")).expect("serve");
    let pong = Queue::serve(&node, "pong", shmproc::Queue::<u64>::bounded(4).expect("queue")).expect("serve");
    let kping = Queue::serve(&node, "kping", shmproc::Queue::<Vec<u8>>::bounded(4).expect("queue")).expect("serve");
    let kpong = Queue::serve(&node, "kpong", shmproc::Queue::<Vec<u8>>::bounded(4).expect("queue")).expect("serve");

    let mut left = SINGLE + BATCHED;
    while left > 0 {
        left -= q.recv_batch(BATCH, WAIT).expect("drain u64").len() as u64;
    }
    let mut left = KIB;
    while left > 0 {
        left -= k.recv_batch(256, WAIT).expect("drain kib").len() as u64;
    }
    let mut lat = Vec::new();
    let t = Instant::now();
    for i in 0..u64::from(PINGS) {
        ping.send(&i).expect("ping");
        assert_eq!(pong.recv_timeout(WAIT).expect("pong"), i);
    }
    lat.push(("net_u64_latency", t.elapsed().as_nanos() as f64 / f64::from(PINGS) / 2.0));
    let body = vec![3u8; 1024];
    let t = Instant::now();
    for _ in 0..PINGS {
        kping.send(&body).expect("kping");
        kpong.recv_timeout(WAIT).expect("kpong");
    }
    lat.push(("net_kib_latency", t.elapsed().as_nanos() as f64 / f64::from(PINGS) / 2.0));

    let (s, _) = listener.accept().expect("accept");
    s.set_nodelay(true).expect("nodelay");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut w = s.try_clone().expect("clone");
    let mut buf = Vec::new();
    for (n, single) in [(SINGLE, true), (BATCHED, false), (KIB, false)] {
        for _ in 0..n {
            read_frame(&mut r, &mut buf);
            if single {
                w.write_all(&[1]).expect("ack");
            }
        }
        w.write_all(&[1]).expect("final ack");
    }
    for (name, size) in [("tcp_u64_latency", 8usize), ("tcp_kib_latency", 1024)] {
        let body = vec![5u8; size];
        let mut frame = (size as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&body);
        let t = Instant::now();
        for _ in 0..PINGS {
            w.write_all(&frame).expect("write");
            read_frame(&mut r, &mut buf);
        }
        lat.push((name, t.elapsed().as_nanos() as f64 / f64::from(PINGS) / 2.0));
    }
    assert_eq!(child.join_timeout(WAIT).expect("join"), Some(0), "the remote failed");

    let mut m: std::collections::HashMap<String, f64> = lat.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    while let Ok((k, v)) = results.try_recv() {
        m.insert(k, v);
    }
    println!("\nshmproc::net::Queue vs TCP length-prefixed queue, loopback (ns per message; ratio = net / tcp)");
    println!("{:<34} {:>12} {:>12} {:>8}", "what", "net", "tcp", "ratio");
    for (what, key) in [
        ("u64 throughput, one per call", "u64_single"),
        ("u64 throughput, batches of 1024", "u64_batched"),
        ("1 KiB throughput, batches of 256", "kib_batched"),
        ("u64 one-way latency", "u64_latency"),
        ("1 KiB one-way latency", "kib_latency"),
    ] {
        let (n, t) = (m.get(&format!("net_{key}")), m.get(&format!("tcp_{key}")));
        if let (Some(n), Some(t)) = (n, t) {
            println!("{what:<34} {n:>12.0} {t:>12.0} {:>8.1}", n / t);
        }
    }
}
