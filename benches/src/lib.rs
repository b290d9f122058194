//! Helpers shared by the benches: the pipe baselines and the
//! ratio report.
//!
//! Every bench runs the shmproc primitive and its pipe / unix-socket (or
//! in-process) equivalent in the same run; [`report`] then reads criterion's
//! estimates for both and prints the ratio.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use shmproc::{Event, Process};

/// Whether `SHMPROC_BENCH_QUICK` asks for a smoke run.
#[must_use]
pub fn quick() -> bool {
    std::env::var_os("SHMPROC_BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The median of a non-empty sample.
#[must_use]
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Forks a child process running `f` (the benches' processes may hold
/// helper threads, hence `allow_threaded_fork`).
pub fn fork(f: impl FnOnce() + 'static) -> Process {
    Process::builder().allow_threaded_fork(true).spawn(f).expect("fork")
}

/// A pipe as two files (read end, write end).
pub fn pipe() -> (fs::File, fs::File) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe() writes.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2 failed");
    // SAFETY: both descriptors are fresh and owned by us from here on.
    unsafe { (fs::File::from(OwnedFd::from_raw_fd(fds[0])), fs::File::from(OwnedFd::from_raw_fd(fds[1]))) }
}

/// Writes one token byte and reads one back: a pipe ping-pong half.
pub fn pipe_roundtrip(tx: &mut fs::File, rx: &mut fs::File) {
    tx.write_all(&[1]).expect("pipe write");
    let mut b = [0u8; 1];
    rx.read_exact(&mut b).expect("pipe read");
}

/// Where the summary report writes its CSV and SVG: `target/shmproc-bench/`.
#[must_use]
pub fn report_dir() -> PathBuf {
    target_dir().join("shmproc-bench")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| {
        // benches run from the package directory; the workspace target is
        // one level up.
        let here = std::env::current_dir().expect("cwd");
        let ws = here.parent().map(PathBuf::from).unwrap_or(here);
        ws.join("target")
    })
}

/// Criterion's mean estimate (ns) for `group/bench`, if it was measured.
#[must_use]
pub fn mean_ns(group: &str, bench: &str) -> Option<f64> {
    let path = target_dir().join("criterion").join(group).join(bench).join("new").join("estimates.json");
    let text = fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("mean")?.get("point_estimate")?.as_f64()
}

/// Prints, for each `(group, ours, baseline)`, both means and how many times
/// faster ours is.
pub fn report(title: &str, rows: &[(&str, &str, &str)]) {
    println!("\n== {title}: shmproc vs baseline (criterion means, same run) ==");
    println!("{:<28} {:<22} {:>14} {:<22} {:>14} {:>9}", "group", "shmproc", "ns", "baseline", "ns", "ratio");
    for &(group, ours, base) in rows {
        match (mean_ns(group, ours), mean_ns(group, base)) {
            (Some(a), Some(b)) => println!("{group:<28} {ours:<22} {a:>14.1} {base:<22} {b:>14.1} {:>8.2}x", b / a),
            _ => println!("{group:<28} {ours:<22} (not measured in this run)"),
        }
    }
}

/// `payload` framed the way the pipe queues send it: a 4-byte little-endian
/// length, then the bytes.
#[must_use]
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// A pipe queue with two writer and two reader processes on one pipe: each
/// message a 4-byte length and a `len`-byte body written with one `write`
/// (atomic: under `PIPE_BUF`) and read with one `read` of the whole frame
/// (every frame has the same size, so reads never split one). The time until
/// both readers have all `n` (rounded down to even: `n / 2` per writer).
pub fn pipe_queue_mpmc(n: u64, len: usize) -> Duration {
    let (r, w) = pipe();
    let go = Event::new().expect("event");
    let per = n / 2;
    let writers: Vec<Process> = (0..2)
        .map(|_| {
            let (mut w, go) = (w.try_clone().expect("dup"), go.clone());
            fork(move || {
                let f = frame(&vec![7u8; len]);
                go.wait();
                for _ in 0..per {
                    w.write_all(&f).expect("write");
                }
            })
        })
        .collect();
    let readers: Vec<Process> = (0..2)
        .map(|_| {
            let (mut r, go) = (r.try_clone().expect("dup"), go.clone());
            fork(move || {
                let mut f = vec![0u8; 4 + len];
                go.wait();
                // A frame of the same size with length 0 ends a reader.
                while r.read(&mut f).expect("read") == 4 + len && f[..4] != [0; 4] {}
            })
        })
        .collect();
    drop(r);
    let t = Instant::now();
    go.set();
    for mut p in writers {
        p.join().expect("join");
    }
    let mut w = w;
    for _ in 0..2 {
        w.write_all(&vec![0u8; 4 + len]).expect("stop");
    }
    for mut c in readers {
        c.join().expect("join");
    }
    t.elapsed()
}

/// A message queue over a byte stream (a pipe or a unix socket), the way a
/// pipe-based `multiprocessing.Queue` moves data: each message is written as
/// a 4-byte length and the payload in one `write`, and read back through a
/// buffered reader.
pub mod stream_queue {
    use std::io::{BufReader, Read, Write};

    /// The sending half.
    pub struct StreamSender<W: Write> {
        w: W,
        buf: Vec<u8>,
    }

    impl<W: Write> StreamSender<W> {
        /// Wraps a writable stream.
        pub fn new(w: W) -> Self {
            StreamSender { w, buf: Vec::with_capacity(4096) }
        }

        /// Sends one message (one `write` syscall for the frame).
        pub fn send(&mut self, payload: &[u8]) {
            self.buf.clear();
            self.buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(payload);
            self.w.write_all(&self.buf).expect("stream write");
        }
    }

    /// The receiving half.
    pub struct StreamReceiver<R: Read> {
        r: BufReader<R>,
    }

    impl<R: Read> StreamReceiver<R> {
        /// Wraps a readable stream.
        pub fn new(r: R) -> Self {
            StreamReceiver { r: BufReader::with_capacity(64 * 1024, r) }
        }

        /// Receives one message into `out`; false at end of stream.
        pub fn recv(&mut self, out: &mut Vec<u8>) -> bool {
            let mut len = [0u8; 4];
            if self.r.read_exact(&mut len).is_err() {
                return false;
            }
            out.resize(u32::from_le_bytes(len) as usize, 0);
            self.r.read_exact(out).is_ok()
        }
    }
}

/// The criterion settings of every bench: short warm-up and measurement,
/// `samples` samples, overridable from the command line.
pub fn criterion_config(samples: usize) -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(samples)
        .configure_from_args()
}

/// Runs a CPython baseline script of `benches/python/` with `args` and
/// parses the JSON it prints; `None` (with the reason on stderr, if it ran)
/// when python3 is missing or the script fails.
pub fn python_json(script: &str, args: &[&str]) -> Option<serde_json::Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python").join(script);
    let out = std::process::Command::new("python3").arg(path).args(args).output().ok()?;
    if !out.status.success() {
        eprintln!("python baseline failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}
