//! The process pool beside CPython's `multiprocessing.Pool` (run from a
//! python3 script when python3 exists) and beside a pipe-based pool, plus
//! fork-mode `Process` start+join. Prints the ratios at the end.

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use shmproc::{Pool, Process};
use shmproc_benches::{mean_ns, pipe, report};

fn square(x: u64) -> u64 {
    x * x
}

const WORKERS: usize = 2;

fn shm_apply_async(pool: &Pool, n: u64) -> Duration {
    let start = Instant::now();
    let rs: Vec<_> = (0..n).map(|i| pool.apply_async(square, i).expect("submit")).collect();
    for r in rs {
        std::hint::black_box(r.get().expect("result"));
    }
    start.elapsed()
}

/// A pool over pipes: one task pipe and one result pipe per worker, tasks
/// dealt round-robin, 8-byte arguments and results.
struct PipePool {
    to: Vec<std::fs::File>,
    from: Vec<BufReader<std::fs::File>>,
    workers: Vec<Process>,
}

impl PipePool {
    fn new(n: usize) -> PipePool {
        let mut to = Vec::new();
        let mut from = Vec::new();
        let mut workers = Vec::new();
        for _ in 0..n {
            let (task_r, task_w) = pipe();
            let (res_r, res_w) = pipe();
            workers.push(
                Process::builder()
                    .allow_threaded_fork(true)
                    .spawn(move || {
                        let mut r = BufReader::new(task_r);
                        let mut w = res_w;
                        let mut b = [0u8; 8];
                        while r.read_exact(&mut b).is_ok() {
                            let x = u64::from_le_bytes(b);
                            if x == u64::MAX {
                                break;
                            }
                            if w.write_all(&square(x).to_le_bytes()).is_err() {
                                break;
                            }
                        }
                    })
                    .expect("worker"),
            );
            to.push(task_w);
            from.push(BufReader::new(res_r));
        }
        PipePool { to, from, workers }
    }

    fn run(&mut self, n: u64) -> Duration {
        let start = Instant::now();
        let k = self.to.len();
        // Submit everything (pipes buffer 64 KiB, plenty for these batches),
        // then collect in order.
        let mut sent = 0u64;
        let mut got = 0u64;
        while got < n {
            while sent < n && sent - got < 4096 {
                self.to[(sent % k as u64) as usize].write_all(&sent.to_le_bytes()).expect("write");
                sent += 1;
            }
            let mut b = [0u8; 8];
            self.from[(got % k as u64) as usize].read_exact(&mut b).expect("read");
            std::hint::black_box(u64::from_le_bytes(b));
            got += 1;
        }
        start.elapsed()
    }
}

impl Drop for PipePool {
    fn drop(&mut self) {
        // A sentinel, not EOF: every forked worker also holds the other
        // workers' write ends, so EOF would never come.
        for t in &mut self.to {
            let _ = t.write_all(&u64::MAX.to_le_bytes());
        }
        for w in &mut self.workers {
            let _ = w.join();
        }
    }
}

fn pool(c: &mut Criterion) {
    // First, while this process is small: fork cost grows with the parent's
    // page tables, and the map bench below allocates a lot.
    let mut g = c.benchmark_group("process_start_join");
    g.bench_function("shmproc_fork", |b| {
        b.iter(|| {
            let mut child = Process::builder().allow_threaded_fork(true).spawn(|| {}).expect("fork");
            child.join().expect("join")
        })
    });
    g.finish();
    let p = Pool::builder().processes(WORKERS).allow_threaded_fork(true).build().expect("pool");
    let mut g = c.benchmark_group("pool_apply_async");
    g.bench_function("shmproc_pool", |b| b.iter_custom(|n| shm_apply_async(&p, n)));
    let mut pp = PipePool::new(WORKERS);
    g.bench_function("pipe_pool", |b| b.iter_custom(|n| pp.run(n)));
    g.finish();
    drop(pp);
    let mut g = c.benchmark_group("pool_map_item");
    g.bench_function("shmproc_pool", |b| {
        b.iter_custom(|n| {
            let start = Instant::now();
            std::hint::black_box(p.map(square, 0..n).expect("map"));
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group! { name = benches; config = shmproc_benches::criterion_config(20); targets = pool }

fn python_baseline() -> Option<serde_json::Value> {
    let v = shmproc_benches::python_json("pool_bench.py", &[&WORKERS.to_string()])?;
    // Kept for the summary report (benches/z_report.rs).
    let dir = shmproc_benches::report_dir();
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("python.json"), v.to_string());
    Some(v)
}

fn main() {
    shmproc::init();
    benches();
    Criterion::default().configure_from_args().final_summary();
    report("pool", &[("pool_apply_async", "shmproc_pool", "pipe_pool")]);
    match python_baseline() {
        Some(py) => {
            println!("\n== pool: shmproc vs CPython multiprocessing ({WORKERS} workers, same machine, same run) ==");
            for (group, bench, key) in [
                ("pool_apply_async", "shmproc_pool", "apply_async_ns"),
                ("pool_map_item", "shmproc_pool", "map_item_ns"),
                ("process_start_join", "shmproc_fork", "process_start_join_ns"),
            ] {
                let ours = mean_ns(group, bench);
                let theirs = py.get(key).and_then(serde_json::Value::as_f64);
                match (ours, theirs) {
                    (Some(a), Some(b)) => {
                        println!("{group:<24} shmproc {a:>12.1} ns   CPython {b:>12.1} ns   {:>8.2}x", b / a)
                    }
                    _ => println!("{group:<24} not measured"),
                }
            }
        }
        None => println!("\n(python3 not available: CPython baseline skipped)"),
    }
}
