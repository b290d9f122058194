//! Process start+join per start method (fork, spawn, forkserver) beside
//! CPython's `multiprocessing` with the same three start methods (run from a
//! python3 script when python3 exists), in the same run. Target: the fork
//! server at most 2x fork mode.

use criterion::{criterion_group, Criterion};
use shmproc::{Process, StartMethod};
use shmproc_benches::mean_ns;

fn nothing(_: ()) {}

const METHODS: [(StartMethod, &str); 3] = [
    (StartMethod::Fork, "shmproc_fork"),
    (StartMethod::Spawn, "shmproc_spawn"),
    (StartMethod::ForkServer, "shmproc_forkserver"),
];

fn start_join(c: &mut Criterion) {
    let mut g = c.benchmark_group("start_method_start_join");
    for (m, name) in METHODS {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut child =
                    Process::builder().start_method(m).allow_threaded_fork(true).spawn_fn(nothing, ()).expect("start");
                child.join().expect("join")
            })
        });
    }
    g.finish();
}

criterion_group! { name = benches; config = shmproc_benches::criterion_config(20); targets = start_join }

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let py = shmproc_benches::python_json("start_bench.py", &[]);
    if py.is_none() {
        println!("\n(python3 not available: CPython baseline skipped)");
    }
    println!("\n== process start+join per start method: shmproc vs CPython (same machine, same run) ==");
    for ((_, name), key) in METHODS.iter().zip(["fork_ns", "spawn_ns", "forkserver_ns"]) {
        let ours = mean_ns("start_method_start_join", name);
        let theirs = py.as_ref().and_then(|p| p.get(key)).and_then(serde_json::Value::as_f64);
        match (ours, theirs) {
            (Some(a), Some(b)) => println!("{name:<20} shmproc {a:>14.1} ns   CPython {b:>14.1} ns   {:>8.2}x", b / a),
            (Some(a), None) => println!("{name:<20} shmproc {a:>14.1} ns   CPython not measured"),
            _ => println!("{name:<20} not measured"),
        }
    }
    if let (Some(fork), Some(server)) =
        (mean_ns("start_method_start_join", "shmproc_fork"), mean_ns("start_method_start_join", "shmproc_forkserver"))
    {
        let ratio = server / fork;
        let verdict = if ratio <= 2.0 { "meets" } else { "misses" };
        println!("forkserver / fork = {ratio:.2} ({verdict} the target of at most 2x)");
    }
}
