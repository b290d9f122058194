//! Python tutorial (seed 003): the chat server on a `Pool(4)`. The parent
//! accepts connections and hands each *accepted socket* to a pool worker
//! with `apply_async(talk, args=(conn,))`; the worker prints its pid and
//! echoes upper-cased. With 6 clients and 4 workers, two clients wait until
//! a worker is free, and only 4 pids ever appear.
//!
//! ```text
//! def talk(conn):
//!     print('进程pid: %s' % os.getpid())
//!     while True:
//!         msg = conn.recv(1024)
//!         if not msg: break
//!         conn.send(msg.upper())
//! p = Pool(4)
//! while True:
//!     conn, *_ = server.accept()
//!     p.apply_async(talk, args=(conn,))
//! ```
//!
//! Python passes the socket by descriptor (`multiprocessing.reduction`); so
//! does shmproc: [`Fd<TcpStream>`](shmproc::Fd) is a ticket that the worker
//! redeems for a working socket (see `shmproc::fd_passing`). The demo starts
//! the server on 127.0.0.1 with a free port, runs 6 clients at once, checks
//! their echoes and shuts down.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

use shmproc::{Fd, Pool};

/// Runs in a pool worker: redeem the socket, echo upper-cased until the
/// client closes, and say which worker served it.
fn talk(conn: Fd<TcpStream>) -> u32 {
    let pid = std::process::id();
    println!("worker pid: {pid}");
    let Ok(mut conn) = conn.take() else { return pid };
    let mut buf = [0u8; 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if conn.write_all(&buf[..n].to_ascii_uppercase()).is_err() {
                    break;
                }
            }
        }
    }
    pid
}

fn client(port: u16, id: usize) -> std::io::Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    let mut r = BufReader::new(s.try_clone()?);
    for i in 0..3 {
        let msg = format!("message {i} from client {id}\n");
        s.write_all(msg.as_bytes())?;
        let mut back = String::new();
        r.read_line(&mut back)?;
        assert_eq!(back, msg.to_uppercase());
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    shmproc::init();
    // The workers start first (forked while this process has one thread).
    let pool = Pool::new(4)?;
    let server = TcpListener::bind("127.0.0.1:0")?;
    let port = server.local_addr()?.port();
    let clients: Vec<_> = (0..6).map(|id| std::thread::spawn(move || client(port, id))).collect();
    let mut results = Vec::new();
    for _ in 0..6 {
        let (conn, _) = server.accept()?;
        results.push(pool.apply_async(talk, Fd::new(conn)?)?);
    }
    for c in clients {
        c.join().map_err(|_| "a client panicked")??;
    }
    let mut pids = BTreeSet::new();
    for r in results {
        pids.insert(r.get()?);
    }
    pool.close();
    pool.join()?;
    println!("6 clients served by {} worker processes: {pids:?}", pids.len());
    assert!(pids.len() <= 4);
    Ok(())
}
