//! Helpers for shmproc's cross-process integration tests.
//!
//! Every test binary uses `harness = false` with [`run`] as its `main`: it calls
//! `shmproc::init()` first (so spawn-mode children re-executed from the binary
//! work) and runs the tests one after another **on the main thread**, so the
//! test process is single-threaded and may fork safely. nextest runs each test
//! in its own process through the same entry point.

use std::error::Error;
use std::time::{Duration, Instant};

pub use libtest_mimic::{Failed, Trial};

/// The result type of a test function.
pub type TestResult = Result<(), Box<dyn Error>>;

/// Turns `fn` items into trials named after them.
#[macro_export]
macro_rules! trials {
    ($($f:path),* $(,)?) => {
        vec![$($crate::trial(stringify!($f), $f)),*]
    };
}

/// One trial from a test function.
pub fn trial(name: &str, f: fn() -> TestResult) -> Trial {
    Trial::test(name, move || f().map_err(|e| Failed::from(e.to_string())))
}

/// The `main` of a test binary.
pub fn run(tests: Vec<Trial>) -> ! {
    shmproc::init();
    let mut args = libtest_mimic::Arguments::from_args();
    // Sequential, on the main thread: the process stays single-threaded.
    args.test_threads = Some(1);
    libtest_mimic::run(&args, tests).exit()
}

/// Fails the test with a message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+).into());
        }
    };
    ($cond:expr) => {
        if !$cond {
            return Err(format!("assertion failed: {}", stringify!($cond)).into());
        }
    };
}

/// Polls `f` every millisecond until it returns true or `limit` passes; returns
/// whether it became true. Used to wait for another process's effect without
/// assuming how fast it happens.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The scheduler state letter of a process from `/proc/<pid>/stat` (`R`, `S`,
/// `Z`, ...), or `None` if there is no such process.
pub fn proc_state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    rest.split_whitespace().next()?.chars().next()
}

/// True if `pid` neither exists nor lingers as a zombie.
pub fn is_gone(pid: u32) -> bool {
    proc_state(pid).is_none()
}

/// A generous upper bound for "returns on time": catches hangs, not slowness.
pub const HANG_LIMIT: Duration = Duration::from_secs(10);

/// One futex word (or counter) in a region, for tests that need raw shared
/// atomics beside the primitives under test.
pub struct Word(pub std::sync::atomic::AtomicU32);

// SAFETY: a single atomic: valid for any bits, mutated only atomically.
unsafe impl shmproc::core::region::RegionObject for Word {
    const KIND: u32 = shmproc::core::region::kind::BYTES;
}

/// `n` zeroed [`Word`]s in a fresh anonymous segment, returned with the
/// directory index of the first (the others follow in order).
pub fn words(n: u32) -> Result<(shmproc::Segment, u32), Box<dyn Error>> {
    let seg = shmproc::Segment::anonymous(4096 + n as usize * 128)?;
    let mut first = u32::MAX;
    for i in 0..n {
        let info = seg
            .region()
            .alloc::<Word>(format!("w{i}").as_bytes(), |w| w.0.store(0, std::sync::atomic::Ordering::Relaxed))?;
        first = first.min(info.index);
    }
    Ok((seg, first))
}

/// Word `i` of a segment made by [`words`].
pub fn word(seg: &shmproc::Segment, first: u32, i: u32) -> &std::sync::atomic::AtomicU32 {
    &seg.region().get::<Word>(first + i).expect("word object").0
}

/// A forked child that writes random bytes over `lo..hi` (addresses in a
/// shared mapping the child inherits) for `for_how_long`, as a hostile peer
/// would, with volatile stores; exits with 0.
pub fn scribbler(lo: usize, hi: usize, for_how_long: Duration) -> Result<shmproc::Process, Box<dyn Error>> {
    Ok(shmproc::Process::builder().spawn(move || {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let until = Instant::now() + for_how_long;
        while Instant::now() < until {
            for _ in 0..1024 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = lo + (x as usize % (hi - lo));
                // SAFETY: inside the segment's mapping, which the child
                // inherited at the same address; volatile, as a hostile
                // peer's plain stores would be.
                unsafe { std::ptr::write_volatile(at as *mut u8, (x >> 56) as u8) };
            }
        }
    })?)
}

/// A forked child that takes `lock`, and holds it until it is killed
/// (returned once it holds it).
pub fn lock_holder(lock: &shmproc::Lock) -> Result<shmproc::Process, Box<dyn Error>> {
    let ready = shmproc::Event::new()?;
    let (l2, r2) = (lock.clone(), ready.clone());
    let holder = shmproc::Process::spawn(move || {
        let _g = l2.acquire();
        r2.set();
        std::thread::sleep(Duration::from_secs(60));
    })?;
    if !ready.wait_timeout(HANG_LIMIT) {
        return Err("the lock holder did not take the lock".into());
    }
    Ok(holder)
}
