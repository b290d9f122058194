//! Python tutorial (seed 003): a TCP echo server that starts one process per
//! connection; the child answers each message upper-cased. With fork, the
//! child inherits the accepted socket, as in Python.
//!
//! ```text
//! def talk(conn, client_addr):
//!     while True:
//!         msg = conn.recv(1024)
//!         if not msg: break
//!         conn.send(msg.upper())
//! server = socket(AF_INET, SOCK_STREAM); server.bind(('127.0.0.1', 8080)); server.listen(5)
//! while True:
//!     conn, client_addr = server.accept()
//!     p = Process(target=talk, args=(conn, client_addr)); p.start()
//! ```
//!
//! Modes:
//!
//! * no argument: the demo. It starts the server (in a child process, on
//!   127.0.0.1 with a free port), drives four clients at once, checks the
//!   upper-cased echoes, stops the server, and exits;
//! * `server [port]`: the server alone, until interrupted;
//! * `client <port>`: the seed's client, sending each line of standard input
//!   and printing the answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

use shmproc::Process;

/// The child's part: answer every message upper-cased until the client
/// closes.
fn talk(mut conn: TcpStream) {
    let peer = conn.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut buf = [0u8; 1024];
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        println!(
            "[pid {}] client {peer} says >> {}",
            std::process::id(),
            String::from_utf8_lossy(&buf[..n]).trim_end()
        );
        if conn.write_all(&buf[..n].to_ascii_uppercase()).is_err() {
            break;
        }
    }
}

/// Accepts forever, one child process per connection (children that
/// finished are reaped by the next spawn).
fn serve(server: TcpListener) -> ! {
    loop {
        match server.accept() {
            Ok((conn, _)) => {
                // The child inherits `conn` with the fork; the parent's copy
                // is dropped (closed) at the end of this iteration.
                if let Err(e) = Process::spawn(move || talk(conn)) {
                    eprintln!("could not start a handler: {e}");
                }
            }
            Err(e) => eprintln!("accept failed: {e}"),
        }
    }
}

/// One client of the demo: three lines, each echoed upper-cased.
fn client(port: u16, id: usize) -> std::io::Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    let mut r = BufReader::new(s.try_clone()?);
    for i in 0..3 {
        let msg = format!("hello {i} from client {id}\n");
        s.write_all(msg.as_bytes())?;
        let mut back = String::new();
        r.read_line(&mut back)?;
        assert_eq!(back, msg.to_uppercase());
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    shmproc::init();
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("server") => {
            let port = args.get(2).map(|p| p.parse()).transpose()?.unwrap_or(8080u16);
            let server = TcpListener::bind(("127.0.0.1", port))?;
            println!("serving on {}", server.local_addr()?);
            serve(server)
        }
        Some("client") => {
            let port: u16 = args.get(2).ok_or("client needs a port")?.parse()?;
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            for line in std::io::stdin().lock().lines() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                s.write_all(line.as_bytes())?;
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf)?;
                println!("{}", String::from_utf8_lossy(&buf[..n]));
            }
            Ok(())
        }
        _ => {
            let server = TcpListener::bind("127.0.0.1:0")?;
            let port = server.local_addr()?.port();
            // The server runs in a child (it forks a handler per connection);
            // this process then runs the clients on threads.
            let mut srv = Process::builder().name("echo-server").spawn(move || serve(server))?;
            let clients: Vec<_> = (0..4).map(|id| std::thread::spawn(move || client(port, id))).collect();
            for c in clients {
                c.join().map_err(|_| "a client panicked")??;
            }
            println!("4 clients got their upper-cased echoes");
            srv.terminate()?;
            println!("server stopped: exit code {}", srv.join()?);
            Ok(())
        }
    }
}
