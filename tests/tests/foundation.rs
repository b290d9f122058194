//! Foundation: shared futex, regions, segments and processes, across real
//! processes.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use shmproc::core::futex::{self, WaitOutcome};
use shmproc::core::region::RegionError;
use shmproc::{Deadline, Process, ProcessError, Segment, SegmentError, SegmentStatus, StartMethod};
use shmproc_tests::{ensure, eventually, is_gone, proc_state, trials, TestResult, Word, HANG_LIMIT};

fn word_segment() -> Result<(Segment, u32), Box<dyn std::error::Error>> {
    shmproc_tests::words(1)
}

fn word(seg: &Segment, index: u32) -> &AtomicU32 {
    shmproc_tests::word(seg, index, 0)
}

fn unique(tag: &str) -> String {
    format!("t-{tag}-{}-{:?}", std::process::id(), Instant::now().elapsed().as_nanos() ^ rand_ish())
}

fn rand_ish() -> u128 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    t.as_nanos() % 1_000_000_007
}

// ---------------------------------------------------------------- futex ----

fn futex_parent_wakes_child_across_processes() -> TestResult {
    let (seg, idx) = word_segment()?;
    let s = seg.clone();
    let mut child = Process::spawn(move || {
        let w = word(&s, idx);
        // Wait (no deadline) until the parent publishes 1.
        while w.load(Ordering::Acquire) == 0 {
            futex::wait(w, 0, None);
        }
        if w.load(Ordering::Acquire) == 1 {
            0
        } else {
            2
        }
    })?;
    // The child must really be asleep in the kernel before we wake it.
    ensure!(eventually(HANG_LIMIT, || proc_state(child.pid()) == Some('S')), "child never went to sleep");
    std::thread::sleep(Duration::from_millis(50));
    ensure!(child.is_alive(), "child left the wait without being woken");
    let w = word(&seg, idx);
    w.store(1, Ordering::Release);
    futex::wake_all(w);
    let code = child.join_timeout(HANG_LIMIT)?;
    ensure!(code == Some(0), "child exit {code:?}");
    Ok(())
}

fn futex_timeout_returns_after_the_deadline() -> TestResult {
    let (seg, idx) = word_segment()?;
    let w = word(&seg, idx);
    let t = Duration::from_millis(150);
    let start = Instant::now();
    let deadline = Deadline::after(t);
    let mut outcome = futex::wait(w, 0, Some(deadline));
    while outcome == WaitOutcome::Woken {
        outcome = futex::wait(w, 0, Some(deadline));
    }
    let elapsed = start.elapsed();
    ensure!(outcome == WaitOutcome::TimedOut, "{outcome:?}");
    ensure!(elapsed >= t, "returned early after {elapsed:?}");
    ensure!(elapsed < HANG_LIMIT, "took {elapsed:?}");
    ensure!(futex::wait(w, 7, None) == WaitOutcome::ValueChanged);
    Ok(())
}

fn futex_waiter_times_out_after_waker_is_killed() -> TestResult {
    let (seg, idx) = word_segment()?;
    // The waker would wake the word only after a long sleep; it gets SIGKILLed.
    let s = seg.clone();
    let waker = Process::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        let w = word(&s, idx);
        w.store(1, Ordering::Release);
        futex::wake_all(w);
    })?;
    let s = seg.clone();
    let mut waiter = Process::spawn(move || {
        let w = word(&s, idx);
        let t = Duration::from_millis(300);
        let start = Instant::now();
        let deadline = Deadline::after(t);
        loop {
            match futex::wait(w, 0, Some(deadline)) {
                WaitOutcome::TimedOut => break,
                _ if w.load(Ordering::Acquire) != 0 => return 3,
                _ => {}
            }
        }
        if start.elapsed() >= t {
            0
        } else {
            4
        }
    })?;
    std::thread::sleep(Duration::from_millis(20));
    waker.kill()?;
    let code = waiter.join_timeout(HANG_LIMIT)?;
    ensure!(code == Some(0), "waiter exit {code:?}");
    let mut waker = waker;
    ensure!(waker.join()? == -libc::SIGKILL);
    Ok(())
}

// --------------------------------------------------------------- region ----

fn raw_shm(name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm/{}{name}", shmproc::segment::NAME_PREFIX))
        .expect("segment file")
}

fn named_segment_rejects_garbage_truncation_and_wrong_version() -> TestResult {
    use std::io::{Seek, SeekFrom, Write};
    let name = unique("corrupt");
    let seg = Segment::create_named(&name, 4096)?;
    seg.region().alloc::<Word>(b"w", |_| {})?;
    let len = seg.len() as u64;
    let mut f = raw_shm(&name);

    // Wrong version.
    f.seek(SeekFrom::Start(8))?;
    f.write_all(&99u32.to_le_bytes())?;
    match Segment::open_timeout(&name, Duration::ZERO) {
        Err(SegmentError::Region { source: RegionError::VersionMismatch { found: 99, .. }, .. }) => {}
        other => return Err(format!("wrong version: {other:?}").into()),
    }
    f.seek(SeekFrom::Start(8))?;
    f.write_all(&shmproc::core::region::LAYOUT_VERSION.to_le_bytes())?;
    ensure!(Segment::open_timeout(&name, Duration::ZERO).is_ok());

    // Garbage magic.
    f.seek(SeekFrom::Start(0))?;
    f.write_all(b"GARBAGE!")?;
    match Segment::open_timeout(&name, Duration::ZERO) {
        Err(SegmentError::Region { source: RegionError::BadMagic(_), .. }) => {}
        other => return Err(format!("garbage: {other:?}").into()),
    }
    f.seek(SeekFrom::Start(0))?;
    f.write_all(b"SHMPROC1")?;

    // A corrupt directory entry: open succeeds, the object lookup fails cleanly.
    f.seek(SeekFrom::Start(128 + 8))?;
    f.write_all(&u64::MAX.to_le_bytes())?;
    let reopened = Segment::open_timeout(&name, Duration::ZERO)?;
    ensure!(matches!(reopened.region().get::<Word>(0), Err(RegionError::Corrupt(_))));
    drop(reopened);

    // Truncated.
    f.set_len(len / 2)?;
    match Segment::open_timeout(&name, Duration::ZERO) {
        Err(SegmentError::Truncated { .. }) => {}
        other => return Err(format!("truncated: {other:?}").into()),
    }
    // Truncated to nothing: the opener waits for a creator, then gives up.
    f.set_len(0)?;
    let start = Instant::now();
    match Segment::open_timeout(&name, Duration::from_millis(100)) {
        Err(SegmentError::Region { source: RegionError::NotReady, .. }) => {}
        other => return Err(format!("empty: {other:?}").into()),
    }
    ensure!(start.elapsed() < HANG_LIMIT);
    drop(seg);
    Ok(())
}

fn named_segment_open_waits_for_a_slow_creator() -> TestResult {
    // A file that exists but whose init word is not ready: open waits, then
    // reports NotReady once the deadline passes.
    let name = unique("slow");
    let path = format!("/dev/shm/{}{name}", shmproc::segment::NAME_PREFIX);
    let f = std::fs::File::create(&path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.set_len(8192)?;
    let start = Instant::now();
    let r = Segment::open_timeout(&name, Duration::from_millis(200));
    let elapsed = start.elapsed();
    std::fs::remove_file(&path)?;
    ensure!(matches!(r, Err(SegmentError::Region { source: RegionError::NotReady, .. })), "{r:?}");
    ensure!(elapsed >= Duration::from_millis(200) && elapsed < HANG_LIMIT, "{elapsed:?}");
    Ok(())
}

// -------------------------------------------------------------- segment ----

fn named_segment_mode_exclusive_shared_and_unlinked() -> TestResult {
    let name = unique("named");
    let path = format!("/dev/shm/{}{name}", shmproc::segment::NAME_PREFIX);
    let seg = Segment::create_named(&name, 4096)?;
    let meta = std::fs::metadata(&path)?;
    ensure!(meta.permissions().mode() & 0o777 == 0o600, "mode {:o}", meta.permissions().mode());
    ensure!(matches!(Segment::create_named(&name, 4096), Err(SegmentError::AlreadyExists { .. })));
    let info = seg.region().alloc::<Word>(b"answer", |w| w.0.store(42, Ordering::Relaxed))?;
    // A forked child opens it by name (a fresh mapping) and updates it.
    let n2 = name.clone();
    let mut child = Process::spawn(move || {
        let Ok(s) = Segment::open(&n2) else { return 2 };
        let Ok(found) = s.region().find(b"answer") else {
            return 3;
        };
        let w = &s.region().get::<Word>(found.index).expect("word").0;
        if w.load(Ordering::Relaxed) != 42 {
            return 4;
        }
        w.store(43, Ordering::Relaxed);
        0
    })?;
    ensure!(child.join()? == 0);
    ensure!(seg.region().get::<Word>(info.index)?.0.load(Ordering::Relaxed) == 43);
    // The child's inherited handle did not unlink it.
    ensure!(std::path::Path::new(&path).exists());
    let clone = seg.clone();
    drop(seg);
    ensure!(std::path::Path::new(&path).exists(), "unlinked while a handle remains");
    drop(clone);
    ensure!(!std::path::Path::new(&path).exists(), "still there after drop");
    ensure!(matches!(Segment::open(&name), Err(SegmentError::NotFound { .. })));
    ensure!(matches!(Segment::create_named("a/b", 10), Err(SegmentError::InvalidName { .. })));
    ensure!(matches!(Segment::anonymous(0), Err(SegmentError::InvalidSize { .. })));
    Ok(())
}

fn other_users_segment_is_refused() -> TestResult {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // Without root we cannot create a file owned by someone else; the check
        // is still covered by the uid comparison in open().
        eprintln!("not root: checking only that our own segments are accepted");
        let name = unique("mine");
        let seg = Segment::create_named(&name, 64)?;
        ensure!(Segment::open(&name).is_ok());
        drop(seg);
        return Ok(());
    }
    let name = unique("theirs");
    let path = format!("/dev/shm/{}{name}", shmproc::segment::NAME_PREFIX);
    let seg = Segment::create_named(&name, 4096)?;
    seg.persist();
    drop(seg);
    std::os::unix::fs::chown(&path, Some(65534), Some(65534))?;
    let opened = Segment::open(&name);
    let removed = Segment::remove(&name);
    let listed = Segment::list()?;
    std::fs::remove_file(&path)?;
    ensure!(matches!(opened, Err(SegmentError::NotOwner { uid: 65534, .. })), "{opened:?}");
    ensure!(matches!(removed, Err(SegmentError::NotOwner { .. })), "{removed:?}");
    let entry = listed.iter().find(|i| i.name == name).ok_or("not listed")?;
    ensure!(matches!(entry.status, SegmentStatus::NotOwner));
    Ok(())
}

fn stale_segments_are_listed_and_removed() -> TestResult {
    let name = unique("stale");
    let n2 = name.clone();
    // A child creates a segment, keeps it, and dies without cleaning up.
    let mut child = Process::spawn(move || -> () {
        let s = Segment::create_named(&n2, 4096).expect("create");
        s.persist();
        // SAFETY: simulate a crash: no destructors.
        unsafe { libc::_exit(0) }
    })?;
    ensure!(child.join()? == 0);
    let live_name = unique("live");
    let live = Segment::create_named(&live_name, 4096)?;
    let list = Segment::list()?;
    let stale = list.iter().find(|i| i.name == name).ok_or("stale not listed")?;
    ensure!(stale.is_stale(), "{stale:?}");
    ensure!(matches!(stale.status, SegmentStatus::Valid { creator_alive: false, .. }));
    let alive = list.iter().find(|i| i.name == live_name).ok_or("live not listed")?;
    ensure!(!alive.is_stale(), "{alive:?}");
    let removed = Segment::remove_stale()?;
    ensure!(removed.contains(&name), "{removed:?}");
    ensure!(!removed.contains(&live_name));
    ensure!(matches!(Segment::open(&name), Err(SegmentError::NotFound { .. })));
    ensure!(Segment::open(&live_name).is_ok());
    drop(live);
    Ok(())
}

fn anonymous_segment_is_shared_with_forked_children() -> TestResult {
    let (seg, idx) = word_segment()?;
    let mut kids = Vec::new();
    for _ in 0..4 {
        let s = seg.clone();
        kids.push(Process::spawn(move || {
            for _ in 0..1000 {
                word(&s, idx).fetch_add(1, Ordering::Relaxed);
            }
        })?);
    }
    for k in &mut kids {
        ensure!(k.join()? == 0);
    }
    ensure!(word(&seg, idx).load(Ordering::Relaxed) == 4000);
    Ok(())
}

// -------------------------------------------------------------- process ----

fn exitcodes_follow_python_in_fork_mode() -> TestResult {
    let mut ok = Process::spawn(|| {})?;
    let mut panics = Process::spawn(|| -> () { panic!("expected test panic") })?;
    let mut exits = Process::spawn(|| -> () { std::process::exit(3) })?;
    let mut returns = Process::spawn(|| 5)?;
    let mut errs = Process::spawn(|| -> Result<(), String> { Err("expected error".into()) })?;
    ensure!(ok.join()? == 0);
    ensure!(panics.join()? == 1);
    ensure!(exits.join()? == 3);
    ensure!(returns.join()? == 5);
    ensure!(errs.join()? == 1);
    ensure!(ok.exitcode() == Some(0) && panics.exitcode() == Some(1));
    let sleeper = Process::spawn(|| std::thread::sleep(Duration::from_secs(60)))?;
    let mut term = Process::spawn(|| std::thread::sleep(Duration::from_secs(60)))?;
    ensure!(sleeper.exitcode().is_none());
    sleeper.kill()?;
    term.terminate()?;
    let mut sleeper = sleeper;
    ensure!(sleeper.join()? == -libc::SIGKILL);
    ensure!(term.join()? == -libc::SIGTERM);
    ensure!(!term.is_alive());
    // Signalling an exited child is a no-op.
    term.kill()?;
    Ok(())
}

fn join_timeout_on_a_sleeping_child_returns_none() -> TestResult {
    let mut p = Process::spawn(|| std::thread::sleep(Duration::from_secs(60)))?;
    let start = Instant::now();
    let r = p.join_timeout(Duration::from_millis(100))?;
    let elapsed = start.elapsed();
    ensure!(r.is_none(), "{r:?}");
    ensure!(elapsed >= Duration::from_millis(100) && elapsed < HANG_LIMIT, "{elapsed:?}");
    ensure!(p.is_alive());
    p.kill()?;
    ensure!(p.join_timeout(HANG_LIMIT)? == Some(-libc::SIGKILL));
    Ok(())
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
struct Job {
    name: String,
    values: Vec<u32>,
}

fn sum_job(job: Job) -> i32 {
    if job.name != "sum" {
        return 100;
    }
    (job.values.iter().sum::<u32>() % 100) as i32
}

fn panics_in_spawn(_: u8) {
    panic!("expected spawn-mode panic");
}

fn exits_in_spawn(code: i32) {
    std::process::exit(code);
}

fn sleeps_in_spawn(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

fn reports_identity(expected_parent: u32) -> i32 {
    let me = shmproc::current_process();
    let parent = shmproc::parent_process();
    match parent {
        Some(p) if p.pid() == expected_parent && p.is_alive() && me.name() == "spawned" => 0,
        _ => 9,
    }
}

fn exitcodes_follow_python_in_spawn_mode() -> TestResult {
    let mut sum = Process::builder()
        .start_method(StartMethod::Spawn)
        .spawn_fn(sum_job, Job { name: "sum".into(), values: vec![10, 20, 12] })?;
    let mut panics = Process::builder().start_method(StartMethod::Spawn).spawn_fn(panics_in_spawn, 0u8)?;
    let mut exits = Process::builder().start_method(StartMethod::Spawn).spawn_fn(exits_in_spawn, 7)?;
    let mut ident = Process::builder()
        .name("spawned")
        .start_method(StartMethod::Spawn)
        .spawn_fn(reports_identity, std::process::id())?;
    let sleeper = Process::builder().start_method(StartMethod::Spawn).spawn_fn(sleeps_in_spawn, 60)?;
    ensure!(sum.join()? == 42);
    ensure!(panics.join()? == 1);
    ensure!(exits.join()? == 7);
    ensure!(ident.join()? == 0, "child saw wrong identity");
    ensure!(sleeper.is_alive());
    sleeper.kill()?;
    let mut sleeper = sleeper;
    ensure!(sleeper.join()? == -libc::SIGKILL);
    Ok(())
}

fn current_parent_and_active_children() -> TestResult {
    let me = shmproc::current_process();
    ensure!(me.name() == "MainProcess");
    ensure!(me.pid() == std::process::id());
    ensure!(shmproc::parent_process().is_none());
    ensure!(shmproc::cpu_count() >= 1);
    let parent_pid = std::process::id();
    let mut named = Process::builder().name("w1").spawn(move || {
        let me = shmproc::current_process();
        let p = shmproc::parent_process();
        let ok = me.name() == "w1"
            && me.pid() == std::process::id()
            && p.as_ref().is_some_and(|p| p.pid() == parent_pid && p.name() == "MainProcess");
        if ok {
            0
        } else {
            1
        }
    })?;
    ensure!(named.join()? == 0);
    let a = Process::spawn(|| std::thread::sleep(Duration::from_secs(60)))?;
    let b = Process::spawn(|| {})?;
    ensure!(a.name().starts_with("Process-"), "{}", a.name());
    let bpid = b.pid();
    ensure!(eventually(HANG_LIMIT, || !shmproc::active_children().iter().any(|c| c.pid == bpid)));
    let active = shmproc::active_children();
    ensure!(active.iter().any(|c| c.pid == a.pid()), "{active:?}");
    a.kill()?;
    let mut a = a;
    a.join()?;
    ensure!(!shmproc::active_children().iter().any(|c| c.pid == a.pid()));
    Ok(())
}

fn daemon_children_may_not_start_children() -> TestResult {
    let mut d = Process::builder().daemon(true).spawn(|| match Process::spawn(|| {}) {
        Err(ProcessError::DaemonChildren) => 0,
        Ok(_) => 1,
        Err(_) => 2,
    })?;
    ensure!(d.daemon());
    ensure!(d.join()? == 0, "daemon was allowed to start a child");
    Ok(())
}

/// A child, as Python's, finishes its own children when it returns: joins
/// the non-daemonic ones and terminates the daemonic ones (fork mode, whose
/// child ends with `_exit`, past the atexit hook that does this elsewhere).
fn child_finishes_its_own_children_at_exit() -> TestResult {
    let worker_done = shmproc::Value::new(0u32)?;
    let daemon_pid = shmproc::Value::new(0u32)?;
    let (done, dpid) = (worker_done.clone(), daemon_pid.clone());
    let mut middle = Process::spawn(move || -> () {
        let worker = Process::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            done.set(1);
        })
        .expect("worker");
        let daemon = Process::builder().daemon(true).spawn(|| std::thread::sleep(HANG_LIMIT * 6)).expect("daemon");
        dpid.set(daemon.pid());
        // Handles dropped, children still running: returning must finish them.
        drop((worker, daemon));
    })?;
    ensure!(middle.join_timeout(HANG_LIMIT)? == Some(0), "the middle child did not exit (or not cleanly)");
    ensure!(worker_done.get() == 1, "the middle child exited before its non-daemonic child finished");
    let d = daemon_pid.get();
    ensure!(d != 0);
    ensure!(eventually(HANG_LIMIT, || is_gone(d)), "the daemonic grandchild {d} outlived its parent's exit");
    Ok(())
}

fn daemon_dies_with_its_parent() -> TestResult {
    let (seg, idx) = word_segment()?;
    // An intermediate child starts a daemon, records its pid, and exits.
    let s = seg.clone();
    let mut middle = Process::spawn(move || -> () {
        let d = Process::builder().daemon(true).spawn(|| std::thread::sleep(Duration::from_secs(60))).expect("daemon");
        word(&s, idx).store(d.pid(), Ordering::Release);
        std::mem::forget(d);
        // SAFETY: exit without running destructors or atexit handlers: the
        // parent-death signal alone must take the daemon down.
        unsafe { libc::_exit(0) }
    })?;
    ensure!(middle.join()? == 0);
    let dpid = word(&seg, idx).load(Ordering::Acquire);
    ensure!(dpid != 0);
    ensure!(
        eventually(HANG_LIMIT, || matches!(proc_state(dpid), None | Some('Z'))),
        "daemon {dpid} outlived its parent"
    );
    Ok(())
}

fn non_daemon_outlives_a_killed_parent_but_daemon_does_not() -> TestResult {
    let (seg, idx) = word_segment()?;
    let seg2 = Segment::anonymous(4096)?;
    let idx2 = seg2.region().alloc::<Word>(b"w", |_| {})?.index;
    let (s, s2) = (seg.clone(), seg2.clone());
    let middle = Process::spawn(move || {
        let d = Process::builder().daemon(true).spawn(|| std::thread::sleep(Duration::from_secs(60))).unwrap();
        let n = Process::spawn(|| std::thread::sleep(Duration::from_millis(500))).unwrap();
        word(&s, idx).store(d.pid(), Ordering::Release);
        word(&s2, idx2).store(n.pid(), Ordering::Release);
        std::thread::sleep(Duration::from_secs(60));
    })?;
    ensure!(eventually(HANG_LIMIT, || word(&seg2, idx2).load(Ordering::Acquire) != 0));
    middle.kill()?;
    let mut middle = middle;
    ensure!(middle.join()? == -libc::SIGKILL);
    let dpid = word(&seg, idx).load(Ordering::Acquire);
    let npid = word(&seg2, idx2).load(Ordering::Acquire);
    ensure!(eventually(HANG_LIMIT, || matches!(proc_state(dpid), None | Some('Z'))), "daemon survived");
    // The non-daemon child was still running right after the parent died.
    let n_state = proc_state(npid);
    ensure!(matches!(n_state, Some('S') | Some('R') | None | Some('Z')), "{n_state:?}");
    Ok(())
}

fn no_zombies_after_join_or_drop() -> TestResult {
    // Joined.
    let mut p = Process::spawn(|| {})?;
    let pid = p.pid();
    p.join()?;
    ensure!(is_gone(pid), "joined child {pid} left a zombie: {:?}", proc_state(pid));
    // Exited, then the handle dropped without join.
    let p = Process::spawn(|| {})?;
    let pid = p.pid();
    ensure!(eventually(HANG_LIMIT, || proc_state(pid) == Some('Z')));
    drop(p);
    ensure!(is_gone(pid), "dropped handle left a zombie");
    // Dropped while running: reaped by a later call once it exits.
    let p = Process::spawn(|| std::thread::sleep(Duration::from_millis(100)))?;
    let pid = p.pid();
    drop(p);
    ensure!(
        eventually(HANG_LIMIT, || {
            let _ = shmproc::active_children();
            is_gone(pid)
        }),
        "running child dropped and exited, still a zombie"
    );
    // Spawn mode too.
    let mut s = Process::builder().start_method(StartMethod::Spawn).spawn_fn(exits_in_spawn, 0)?;
    let spid = s.pid();
    s.join()?;
    ensure!(is_gone(spid));
    Ok(())
}

fn threaded_parent_refuses_fork_but_spawn_works() -> TestResult {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let helper = std::thread::spawn(move || {
        let _ = rx.recv();
    });
    let refused = Process::spawn(|| {});
    let mut spawned = Process::spawn_fn(exits_in_spawn, 0)?;
    let mut allowed = Process::builder().allow_threaded_fork(true).spawn(|| {})?;
    tx.send(())?;
    helper.join().map_err(|_| "helper panicked")?;
    ensure!(matches!(refused, Err(ProcessError::ThreadedParent { threads: 2.. })), "{refused:?}");
    ensure!(spawned.join()? == 0);
    ensure!(allowed.join()? == 0);
    Ok(())
}

fn main() {
    shmproc_tests::run(trials![
        futex_parent_wakes_child_across_processes,
        futex_timeout_returns_after_the_deadline,
        futex_waiter_times_out_after_waker_is_killed,
        named_segment_rejects_garbage_truncation_and_wrong_version,
        named_segment_open_waits_for_a_slow_creator,
        named_segment_mode_exclusive_shared_and_unlinked,
        other_users_segment_is_refused,
        stale_segments_are_listed_and_removed,
        anonymous_segment_is_shared_with_forked_children,
        exitcodes_follow_python_in_fork_mode,
        join_timeout_on_a_sleeping_child_returns_none,
        exitcodes_follow_python_in_spawn_mode,
        current_parent_and_active_children,
        daemon_children_may_not_start_children,
        child_finishes_its_own_children_at_exit,
        daemon_dies_with_its_parent,
        non_daemon_outlives_a_killed_parent_but_daemon_does_not,
        no_zombies_after_join_or_drop,
        threaded_parent_refuses_fork_but_spawn_works,
    ]);
}
