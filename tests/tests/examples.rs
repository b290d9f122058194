//! Runs every example binary (built by `cargo test` alongside the tests) and
//! checks its exit status and key lines of its output.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use shmproc_tests::{ensure, TestResult, Trial};

fn example_path(name: &str) -> PathBuf {
    // target/<profile>/deps/examples-xxxx -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent().and_then(|d| d.parent()).expect("target dir").join("examples").join(name)
}

fn run_example(name: &str, expect: &[&str]) -> TestResult {
    let path = example_path(name);
    if let Ok(cargo) = std::env::var("CARGO") {
        // `cargo test --workspace` builds every example, but a narrower run
        // (`-p shmproc-tests`) neither builds nor rebuilds them: make sure the
        // binary is current (a no-op when it is).
        let profile = if path.to_string_lossy().contains("/release/") { vec!["--release"] } else { vec![] };
        let st = Command::new(cargo)
            .args(["build", "-q", "-p", "shmproc-examples", "--example", name])
            .args(profile)
            .status()?;
        ensure!(st.success(), "building example {name} failed");
    }
    ensure!(path.exists(), "{} was not built", path.display());
    let start = Instant::now();
    let mut child = Command::new(&path).stdout(std::process::Stdio::piped()).spawn()?;
    // A hang detector, not a speed check.
    let limit = Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > limit {
            child.kill()?;
            return Err(format!("{name} did not finish within {limit:?}").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().expect("stdout"), &mut out)?;
    ensure!(status.success(), "{name} exited with {status}; output:\n{out}");
    for line in expect {
        ensure!(out.contains(line), "{name}: missing {line:?} in output:\n{out}");
    }
    Ok(())
}

fn main() {
    let cases: Vec<(&'static str, &'static [&'static str])> = vec![
        ("process_basics", &["parent sees the shared Value = 0", "(unchanged)", "spawn-mode child exited with 0"]),
        ("daemon", &["p1 alive: false, exit code -15", "daemon"]),
        ("lock_tickets", &["tickets left: 0", "got a ticket"]),
        ("semaphore_ktv", &["entered the KTV", "at most"]),
        ("event_traffic_light", &["green light", "all cars passed"]),
        ("producer_consumer", &["ate:", "got the sentinel", "all food eaten"]),
        ("joinable_queue", &["all items were processed", "consumed"]),
        ("pipe_ping_pong", &["task2 received", "task1 received: task2-4", "the other end closed"]),
        ("zero_copy", &["probe-2: 1000 samples"]),
        ("pool", &["apply: 144", "map: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]", "10 callbacks ran"]),
        ("shared_dict", &["(\"count\", 4)", "hello from"]),
        ("process_subclass", &["Jedan is chatting", "alexDSB is chatting", "name Myprocess-4 arg1 4 arg2 5"]),
        ("echo_server_process", &["4 clients got their upper-cased echoes", "server stopped"]),
        ("echo_server_pool", &["worker pid:", "6 clients served by"]),
        ("crawler", &["5 pages fetched, 1 not found", "callbacks parsed 5 pages in the parent"]),
        ("pool_vs_processes", &["100 tasks on a pool of 5:", "100 tasks, one process each:"]),
        ("pipe_three_consumers", &["10 products consumed by three consumers"]),
        ("manager_dict_decrements", &["main process [(\"count\", 50)]", "count is 50"]),
        ("async_service", &["32 handlers served 1600 requests", "sum of squares 1293600", "workers exited"]),
    ];
    let trials: Vec<Trial> = cases
        .into_iter()
        .map(|(name, expect)| Trial::test(name, move || run_example(name, expect).map_err(|e| e.to_string().into())))
        .collect();
    shmproc_tests::run(trials);
}
