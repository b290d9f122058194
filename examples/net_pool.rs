//! A pool whose workers run on other machines (feature `net`).
//!
//! One machine runs the host, any number run workers:
//!
//! ```text
//! cargo run -p shmproc-examples --features net --example net_pool -- --host tcp/0.0.0.0:7447
//! cargo run -p shmproc-examples --features net --example net_pool -- --worker tcp/HOST_IP:7447
//! ```
//!
//! With no arguments both run on this machine (loopback): a worker process
//! is forked first, before any zenoh session exists (zenoh starts threads,
//! and a threaded process must not fork), then this process hosts.

use std::time::Duration;

use shmproc::net::{Delivery, Node, Pool, Registry, Worker};

/// Registered under the same name on host and workers: only the name
/// travels, never a code address.
fn square(x: u64) -> u64 {
    x * x
}

fn describe(x: u64) -> String {
    format!("{x} is {}", if x & 1 == 1 { "odd" } else { "even" })
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register("square", square).register("describe", describe);
    r
}

fn worker(endpoint: &str) -> Result<(), Box<dyn std::error::Error>> {
    let node = Node::builder().connect(endpoint).open()?;
    let mut w = Worker::connect(&node, "demo", registry(), Duration::from_secs(60))?;
    println!("worker {} ready", std::process::id());
    w.run()?;
    println!("worker {}: the pool closed", std::process::id());
    Ok(())
}

fn host(endpoint: &str) -> Result<(), Box<dyn std::error::Error>> {
    let node = Node::builder().listen(endpoint).open()?;
    // A task whose worker dies is run again by another worker.
    let pool = Pool::serve(&node, "demo", Delivery::AtLeastOnce)?;
    println!("host: serving pool `demo` on {endpoint}; waiting for a worker");
    while pool.workers() == 0 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let squares: Vec<u64> = pool.map("square", 1..=10u64)?;
    println!("squares: {squares:?}");
    let text: String = pool.apply("describe", &7u64)?;
    println!("describe(7): {text}");
    pool.close();
    // Give the workers a moment to see the close before the host goes.
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["--host", endpoint] => host(endpoint),
        ["--worker", endpoint] => worker(endpoint),
        [] => {
            let endpoint = "tcp/127.0.0.1:7447";
            // Fork before this process opens a zenoh session.
            let mut child = shmproc::Process::spawn(move || worker(endpoint).map_err(|e| e.to_string()).unwrap())?;
            host(endpoint)?;
            child.join()?;
            Ok(())
        }
        _ => Err("usage: net_pool [--host ENDPOINT | --worker ENDPOINT]".into()),
    }
}
