//! The `shmproc` command end to end: list, inspect, remove, clean, other
//! users' segments, corrupt segments.

use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use shmproc::{Event, JoinableQueue, Lock, Mutex, OwnerDied, Process, Queue, Segment, Semaphore};
use shmproc_tests::{ensure, eventually, trials, TestResult, HANG_LIMIT};

fn cli() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(|d| d.parent()).ok_or("target dir")?.to_path_buf();
    let path = dir.join("shmproc");
    if let Ok(cargo) = std::env::var("CARGO") {
        let release = dir.ends_with("release");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "shmproc-cli", "--bin", "shmproc"]);
        if release {
            cmd.arg("--release");
        }
        ensure!(cmd.status()?.success(), "building the CLI failed");
    }
    ensure!(path.exists(), "{} not built", path.display());
    Ok(path)
}

fn run(args: &[&str]) -> Result<(bool, String), Box<dyn std::error::Error>> {
    let out = Command::new(cli()?).args(args).output()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

fn unique(tag: &str) -> String {
    format!("cli-{tag}-{}", std::process::id())
}

fn inspect_shows_every_object() -> TestResult {
    let name = unique("inspect");
    let seg = Segment::create_named(&name, 1 << 20)?;
    let m = Mutex::new_in(&seg, "counter", 0u64)?;
    let q = Queue::<u64>::builder().capacity(16).message_size(16).build_in(&seg, "jobs")?;
    let s = Semaphore::new_in(&seg, "slots", 3)?;
    let e = Event::new_in(&seg, "go")?;
    e.set();
    // A receiver that used the queue alone long enough to hold both sides'
    // bias, then dies holding a RecvRef.
    let ready = Event::new()?;
    let (q2, r2) = (q.clone(), ready.clone());
    let reader = Process::spawn(move || {
        for i in 0..70 {
            q2.send(&i).unwrap();
            q2.recv().unwrap();
        }
        q2.send(&70).unwrap();
        let _held = q2.recv_ref().unwrap();
        r2.set();
        std::thread::sleep(Duration::from_secs(60));
    })?;
    ensure!(ready.wait_timeout(HANG_LIMIT));
    let reader_tid = reader.pid(); // its main thread
    reader.kill()?;
    let mut reader = reader;
    reader.join()?;
    for i in 0..5 {
        q.send(&i)?;
    }
    // A holder that dies holding the mutex.
    let ready = Event::new()?;
    let (m2, r2) = (m.clone(), ready.clone());
    let holder = Process::spawn(move || {
        let _g = m2.lock().unwrap();
        r2.set();
        std::thread::sleep(Duration::from_secs(60));
    })?;
    ensure!(ready.wait_timeout(HANG_LIMIT));
    let holder_pid = holder.pid();
    holder.kill()?;
    let mut holder = holder;
    holder.join()?;
    let (ok, out) = run(&["inspect", &name])?;
    ensure!(ok, "{out}");
    ensure!(
        out.contains("counter") && out.contains(&format!("locked by pid {holder_pid}")) && out.contains("dead"),
        "{out}"
    );
    // The dead reader's message still counts until a receiver takes over.
    ensure!(out.contains("jobs") && out.contains("6/16 messages"), "{out}");
    ensure!(out.contains(&format!("consumers: biased to tid {reader_tid} (busy, dead)")), "{out}");
    ensure!(out.contains(&format!("pid {} holds", std::process::id())), "{out}");
    ensure!(out.contains("slots") && out.contains("value 3"), "{out}");
    ensure!(out.contains("go") && out.contains("set, 0 waiting"), "{out}");
    let (ok, out) = run(&["list"])?;
    ensure!(ok && out.contains(&name) && out.contains("ok"), "{out}");
    // Every handle keeps the segment mapped; the last one unlinks it.
    drop((m, q, s, e, seg));
    let (ok, out) = run(&["inspect", &name])?;
    ensure!(!ok && out.contains("does not exist"), "{out}");
    Ok(())
}

/// The `inspect` line of object `name`.
fn line_of<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines().find(|l| l.split_whitespace().nth(2) == Some(name)).unwrap_or("")
}

/// What `inspect` says about numbers it cannot know for sure: a joinable
/// queue's unfinished tasks, waiter counts left behind by killed waiters, and
/// a lock whose holder died (which `Lock::acquire` takes over silently).
fn inspect_tells_the_truth() -> TestResult {
    let name = unique("truth");
    let seg = Segment::create_named(&name, 1 << 20)?;
    let tasks = JoinableQueue::<u32>::bounded_in(&seg, "tasks", 8)?;
    for i in 0..3 {
        tasks.send(&i)?;
    }
    tasks.recv()?;
    tasks.task_done()?;
    let gate = Event::new_in(&seg, "gate")?;
    let permits = Semaphore::new_in(&seg, "permits", 0)?;
    let lock = Lock::new_in(&seg, "printer")?;
    // Waiters that are killed while they wait.
    let (g2, p2) = (gate.clone(), permits.clone());
    let event_waiter = Process::spawn(move || {
        g2.wait();
    })?;
    let sem_waiter = Process::spawn(move || p2.acquire())?;
    ensure!(eventually(HANG_LIMIT, || {
        let out =
            shmproc::inspect::inspect(&seg).map(|r| r.objects.iter().map(|o| o.state.to_string()).collect::<Vec<_>>());
        out.is_ok_and(|v| v.iter().filter(|s| s.contains("up to 1 waiting")).count() == 2)
    }));
    // A holder that dies holding the lock.
    let holder = shmproc_tests::lock_holder(&lock)?;
    // A forked child that never touches the queue still holds the copies of
    // the parent's handles that fork gave it: listed as inherited and
    // unused, not as holding the queue's sides, and said to be so.
    let bystander = Process::spawn(|| std::thread::sleep(Duration::from_secs(60)))?;
    let bystander_pid = bystander.pid();
    let (ok, out) = run(&["inspect", &name])?;
    let listed = line_of(&out, "tasks").contains(&format!("pid {bystander_pid} inherited 1 send/1 recv, unused"))
        && !line_of(&out, "tasks").contains(&format!("pid {bystander_pid} holds"))
        && out.contains("listed as inherited, unused, until it sends, receives or makes a handle");
    // Killed before any check can return, so a failure cannot leave them
    // waiting (their handles' drops would wait for them).
    for mut p in [event_waiter, sem_waiter, holder, bystander] {
        p.kill()?;
        p.join()?;
    }
    ensure!(ok && listed, "{out}");
    let (ok, out) = run(&["inspect", &name])?;
    ensure!(ok, "{out}");
    ensure!(
        line_of(&out, "tasks").contains("2/8 messages") && line_of(&out, "tasks").contains("2 unfinished tasks"),
        "{out}"
    );
    // The killed waiters are still on the counters: never shown as a fact.
    for obj in ["gate", "permits"] {
        let l = line_of(&out, obj);
        ensure!(l.contains("up to 1 waiting") && !l.contains(", 1 waiting"), "{out}");
    }
    ensure!(
        line_of(&out, "printer").contains("dead: the next lock() gets OwnerDied, Lock::acquire takes it over silently"),
        "{out}"
    );
    // And that is what each call does.
    drop(lock.acquire());
    let mut holder = shmproc_tests::lock_holder(&lock)?;
    holder.kill()?;
    holder.join()?;
    ensure!(matches!(lock.lock(), Err(OwnerDied(_))));
    drop((tasks, gate, permits, lock, seg));
    Ok(())
}

fn clean_and_remove() -> TestResult {
    let stale = unique("stale");
    let s2 = stale.clone();
    let mut child = Process::spawn(move || -> () {
        let s = Segment::create_named(&s2, 4096).unwrap();
        s.persist();
        // SAFETY: simulate a crash: no destructors run.
        unsafe { libc::_exit(0) }
    })?;
    child.join()?;
    let live = unique("live");
    let live_seg = Segment::create_named(&live, 4096)?;
    live_seg.persist();
    let (_, out) = run(&["list"])?;
    ensure!(out.lines().any(|l| l.contains(&stale) && l.contains("stale")), "{out}");
    let (ok, out) = run(&["clean"])?;
    ensure!(ok && out.contains(&format!("removed stale segment {stale}")), "{out}");
    ensure!(!out.contains(&live), "clean removed a live segment: {out}");
    let (ok, out) = run(&["remove", &live])?;
    ensure!(ok && out.contains("removed"), "{out}");
    ensure!(matches!(Segment::open(&live), Err(shmproc::SegmentError::NotFound { .. })));
    let (ok, out) = run(&["remove", &live])?;
    ensure!(!ok && out.contains("does not exist"), "{out}");
    Ok(())
}

fn corrupt_and_foreign_segments() -> TestResult {
    let bad = unique("corrupt");
    let seg = Segment::create_named(&bad, 4096)?;
    seg.persist();
    drop(seg);
    let path = format!("/dev/shm/{}{bad}", shmproc::segment::NAME_PREFIX);
    let mut f = std::fs::OpenOptions::new().write(true).open(&path)?;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(b"NOTMAGIC")?;
    let (ok, out) = run(&["inspect", &bad])?;
    ensure!(!ok && out.contains("corrupt"), "{out}");
    let (_, out) = run(&["list"])?;
    ensure!(out.lines().any(|l| l.contains(&bad) && l.contains("CORRUPT")), "{out}");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&path, Some(65534), Some(65534))?;
        let (ok, out) = run(&["remove", &bad])?;
        ensure!(!ok && out.contains("belongs to uid 65534"), "{out}");
        let (ok, out) = run(&["inspect", &bad])?;
        ensure!(!ok && out.contains("65534"), "{out}");
        let (_, out) = run(&["list"])?;
        ensure!(out.lines().any(|l| l.contains(&bad) && l.contains("other user")), "{out}");
    }
    std::fs::remove_file(&path)?;
    Ok(())
}

fn main() {
    shmproc_tests::run(trials![
        inspect_shows_every_object,
        inspect_tells_the_truth,
        clean_and_remove,
        corrupt_and_foreign_segments
    ]);
}
