//! Soundness against peers and careless holders (issue #14, process side):
//! pool tasks rewritten in shared memory never choose the code a worker runs,
//! a holder cannot shrink an anonymous segment under the others, a truncated
//! named segment is a typed error on open, spawn-mode children do not leak
//! segment descriptors to programs they exec, and segments whose creator died
//! mid-creation are cleaned.

use std::path::{Path, PathBuf};
use std::time::Duration;

use shmproc::{Pool, Segment, TaskError};
use shmproc_tests::{ensure, eventually, trials, TestResult, HANG_LIMIT};

fn scratch(tag: &str) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("shmproc-soundness-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

// ------------------------------------------------------ pool tasks ------

/// Holds the (only) worker until `release` exists.
fn blocker(release: String) -> u32 {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !Path::new(&release).exists() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    0
}

/// The function the parent submits.
fn victim(_marker: String) -> u32 {
    1
}

/// The function a peer would like to run instead: it leaves a mark.
fn hijacked(marker: String) -> u32 {
    let _ = std::fs::write(marker, b"ran");
    2
}

/// Replaces every occurrence of the 8 bytes of `from` in the segment's
/// mapping with `to`, as a peer writing the shared task queue could; returns
/// how many it replaced.
fn rewrite_words(seg: &Segment, from: i64, to: i64) -> usize {
    let base = seg.region().base().as_ptr();
    let len = seg.region().len();
    let mut n = 0;
    for off in 0..len.saturating_sub(8) {
        // SAFETY: off + 8 <= len bytes of the live shared mapping; unaligned
        // reads and writes of plain bytes (the worker does not touch the
        // queued task while it is blocked in `blocker`).
        unsafe {
            let p = base.add(off).cast::<i64>();
            if p.read_unaligned() == from {
                p.write_unaligned(to);
                n += 1;
            }
        }
    }
    n
}

/// Queues `victim(marker)` behind a blocked task, lets `rewrite` change the
/// queued bytes, releases the worker and returns the victim's outcome.
fn run_rewritten(
    pool: &Pool,
    dir: &Path,
    tag: &str,
    rewrite: impl FnOnce(&Segment) -> usize,
) -> Result<(Result<u32, TaskError>, PathBuf), Box<dyn std::error::Error>> {
    let release = dir.join(format!("release-{tag}"));
    let marker = dir.join(format!("marker-{tag}"));
    let held = pool.apply_async(blocker, release.to_string_lossy().into_owned())?;
    let queued = pool.apply_async(victim, marker.to_string_lossy().into_owned())?;
    let replaced = rewrite(&pool.__task_queue_segment());
    ensure!(replaced >= 1, "the queued task's function word was not found in the task queue");
    std::fs::write(&release, b"go")?;
    ensure!(held.get_timeout(HANG_LIMIT * 3)? == 0);
    Ok((queued.get_timeout(HANG_LIMIT * 3), marker))
}

fn rewritten_task_functions_never_run(spawn_mode: bool) -> TestResult {
    let dir = scratch(if spawn_mode { "pool-spawn" } else { "pool-fork" })?;
    let pool = Pool::builder().processes(1).spawn_mode(spawn_mode).build()?;
    let from = shmproc::pool::__fn_offset(victim as fn(String) -> u32 as usize);
    let to = shmproc::pool::__fn_offset(hijacked as fn(String) -> u32 as usize);

    // A peer points the queued task at another function of the binary with
    // the same signature (before the fix: the worker ran `hijacked`).
    let (r, marker) = run_rewritten(&pool, &dir, "other-fn", |seg| rewrite_words(seg, from, to))?;
    ensure!(matches!(r, Err(TaskError::Forged)), "a rewritten task must fail as Forged, got {r:?}");
    ensure!(!marker.exists(), "the function the peer chose ran");

    // A peer writes garbage into the function word (before the fix: a jump
    // to a wild address, the worker died of SIGSEGV).
    let (r, marker) = run_rewritten(&pool, &dir, "garbage", |seg| rewrite_words(seg, from, 0x4141_4141_4141_4141))?;
    ensure!(matches!(r, Err(TaskError::Forged)), "a garbled task must fail as Forged, got {r:?}");
    ensure!(!marker.exists());

    // The pool carries on, on the same worker, and runs what it is given.
    let pids = pool.worker_pids();
    ensure!(pool.apply(victim, String::new())? == 1);
    let legit = dir.join("legit");
    ensure!(pool.apply(hijacked, legit.to_string_lossy().into_owned())? == 2);
    ensure!(legit.exists(), "a submitted function runs");
    ensure!(pool.worker_pids() == pids, "no worker died");
    drop(pool);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn fork_pool_rejects_rewritten_tasks() -> TestResult {
    rewritten_task_functions_never_run(false)
}

fn spawn_pool_rejects_rewritten_tasks() -> TestResult {
    rewritten_task_functions_never_run(true)
}

// ------------------------------------------------- segment sizes ------

fn anonymous_segments_cannot_be_shrunk_by_a_child() -> TestResult {
    let seg = Segment::anonymous(1 << 16)?;
    let len = seg.len();
    let last = seg.region().base().as_ptr().wrapping_add(len - 1);
    // SAFETY: the last byte of the live mapping (beyond the region's heap
    // bookkeeping, which this test does not use otherwise).
    unsafe { last.write_volatile(0x5a) };
    let fd = seg.as_raw_fd();
    let mut child = shmproc::Process::spawn(move || -> i32 {
        let eperm = |r: libc::c_int| r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        // SAFETY: ftruncate/fcntl on the inherited segment descriptor.
        unsafe {
            if !eperm(libc::ftruncate(fd, 0)) {
                return 3;
            }
            if !eperm(libc::ftruncate(fd, (len / 2) as libc::off_t)) {
                return 4;
            }
            // The seals themselves are sealed.
            if !eperm(libc::fcntl(fd, libc::F_ADD_SEALS, libc::F_SEAL_WRITE)) {
                return 5;
            }
            // Growing is allowed (out-of-line message blocks live past the
            // region) and harms nobody.
            if libc::ftruncate(fd, (len + 4096) as libc::off_t) != 0 {
                return 6;
            }
        }
        0
    })?;
    let code = child.join()?;
    ensure!(code == 0, "the child's shrink or seal change was not refused as it should be (exit {code})");
    // SAFETY: as above; a shrunk file would make this a SIGBUS.
    ensure!(unsafe { last.read_volatile() } == 0x5a);
    // SAFETY: as above.
    unsafe { last.write_volatile(0xa5) };
    // The segment keeps working for its objects too.
    let ev = shmproc::Event::new_in(&seg, "still-here")?;
    ev.set();
    ensure!(ev.is_set());
    Ok(())
}

fn truncated_named_segment_is_a_typed_error() -> TestResult {
    let name = format!("soundness-trunc-{}", std::process::id());
    let seg = Segment::create_named(&name, 1 << 16)?;
    let path = format!("/dev/shm/{}{name}", shmproc::segment::NAME_PREFIX);
    // A holder shrinks the file (the creator must not touch its mapping now).
    std::fs::OpenOptions::new().write(true).open(&path)?.set_len(4096)?;
    match Segment::open_timeout(&name, Duration::from_millis(200)) {
        Err(shmproc::SegmentError::Truncated { file_len: 4096, region_len, .. }) => {
            ensure!(region_len as usize == seg.len(), "recorded {region_len}, mapped {}", seg.len())
        }
        other => return Err(format!("expected Truncated, got {other:?}").into()),
    }
    // Listing reports it (as corrupt), it does not fail or fault.
    let listed = Segment::list()?.into_iter().find(|i| i.name == name).ok_or("not listed")?;
    ensure!(matches!(listed.status, shmproc::SegmentStatus::Corrupt(_)), "{:?}", listed.status);
    // Not a multiple of a page either.
    std::fs::OpenOptions::new().write(true).open(&path)?.set_len(1000)?;
    ensure!(matches!(
        Segment::open_timeout(&name, Duration::from_millis(200)),
        Err(shmproc::SegmentError::Truncated { file_len: 1000, .. })
    ));
    drop(seg);
    ensure!(!Path::new(&path).exists(), "the creator removed it");
    Ok(())
}

// ------------------------------------------------ spawn-mode fds ------

/// Lines of `readlink` for every descriptor of the calling process.
fn own_fd_links() -> String {
    let mut out = String::new();
    for e in std::fs::read_dir("/proc/self/fd").into_iter().flatten().flatten() {
        if let Ok(l) = std::fs::read_link(e.path()) {
            out.push_str(&l.to_string_lossy());
            out.push('\n');
        }
    }
    out
}

/// A spawn-mode child holding a queue handle: returns 0 if a program it
/// execs sees no segment descriptor, 3 if it does, 4/5 if the check itself
/// could not be made.
fn exec_and_list_fds(q: shmproc::Queue<u32>) -> i32 {
    if q.send(&7).is_err() {
        return 5;
    }
    // Sanity: this process itself holds the segment (mapped from its fd).
    if !own_fd_links().contains("memfd:shmproc ") {
        return 4;
    }
    let out = match std::process::Command::new("/bin/sh")
        .args(["-c", "for f in /proc/self/fd/*; do readlink \"$f\"; done"])
        .output()
    {
        Ok(o) => o,
        Err(_) => return 5,
    };
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("memfd:shmproc") {
        eprintln!("exec'd program inherited: {text}");
        3
    } else {
        0
    }
}

fn spawn_children_do_not_leak_segment_fds_to_exec() -> TestResult {
    if !Path::new("/bin/sh").exists() {
        println!("skipped: no /bin/sh to exec");
        return Ok(());
    }
    let q = shmproc::Queue::<u32>::bounded(4)?;
    let mut p =
        shmproc::Process::builder().start_method(shmproc::StartMethod::Spawn).spawn_fn(exec_and_list_fds, q.clone())?;
    let code = p.join()?;
    ensure!(code != 4 && code != 5, "the check could not be made (exit {code})");
    ensure!(code == 0, "a program exec'd by a spawn-mode child inherited a segment descriptor (exit {code})");
    ensure!(q.recv_timeout(HANG_LIMIT)? == 7, "the child used its handle");
    Ok(())
}

// ------------------------------------------------ spawn payloads ------

/// Where a forged spawn payload points the child: the trampoline's
/// signature, so a child that trusted the payload would run it (and leave a
/// mark).
fn forged_entry(_f: usize, _arg: &[u8]) -> i32 {
    if let Some(p) = std::env::var_os("SOUNDNESS_MARKER") {
        let _ = std::fs::write(p, b"ran");
    }
    42
}

/// A well-formed payload (format version 2) that names `forged_entry`.
fn forged_payload() -> Vec<u8> {
    let entry = shmproc::pool::__fn_offset(forged_entry as fn(usize, &[u8]) -> i32 as usize);
    let mut b = Vec::new();
    b.extend_from_slice(b"SHMPSPWN");
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&entry.to_le_bytes());
    b.extend_from_slice(&0i64.to_le_bytes());
    b.push(0);
    b.extend_from_slice(&std::process::id().to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    for s in ["forged", "1", "parent"] {
        b.extend_from_slice(&(s.len() as u32).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    }
    b.extend_from_slice(&0u32.to_le_bytes()); // no inherited descriptors
    b.extend_from_slice(&0u64.to_le_bytes()); // an empty argument
    b
}

/// A memfd holding `bytes`, inheritable (no close-on-exec), sealed against
/// changes if `seal`.
fn payload_fd(bytes: &[u8], seal: bool) -> Result<std::os::fd::OwnedFd, Box<dyn std::error::Error>> {
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: a valid C string and flags.
    let raw = unsafe { libc::memfd_create(c"forged".as_ptr(), libc::MFD_ALLOW_SEALING) };
    ensure!(raw >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor that we own.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
    let mut f = std::fs::File::from(fd);
    f.write_all(bytes)?;
    if seal {
        let seals = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on our own memfd.
        ensure!(unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, seals) } == 0);
    }
    Ok(f.into())
}

/// Runs this test binary with `SHMPROC_SPAWN=value` (through `/bin/sh` when
/// `via_shell`, so that its parent is another program); returns its exit
/// status and whether `forged_entry` ran.
fn run_with_spawn_env(
    value: &str,
    via_shell: bool,
    tag: &str,
) -> Result<(Option<i32>, bool), Box<dyn std::error::Error>> {
    let dir = scratch(&format!("spawn-env-{tag}"))?;
    let marker = dir.join("marker");
    let exe = std::env::current_exe()?;
    let mut cmd = if via_shell {
        let mut c = std::process::Command::new("/bin/sh");
        c.arg("-c").arg("\"$0\" --list >/dev/null; exit $?").arg(&exe);
        c
    } else {
        let mut c = std::process::Command::new(&exe);
        c.arg("--list");
        c
    };
    let out = cmd.env("SHMPROC_SPAWN", value).env("SOUNDNESS_MARKER", &marker).output()?;
    let ran = marker.exists();
    let _ = std::fs::remove_dir_all(&dir);
    Ok((out.status.code(), ran))
}

fn spawn_env_cannot_choose_the_code_a_process_runs() -> TestResult {
    use std::os::fd::AsRawFd;
    if !Path::new("/bin/sh").exists() {
        println!("skipped: no /bin/sh");
        return Ok(());
    }
    // A well-formed payload naming a function of this binary, sealed, handed
    // over by a parent that is another program (the shell): refused.
    let sealed = payload_fd(&forged_payload(), true)?;
    let (code, ran) = run_with_spawn_env(&sealed.as_raw_fd().to_string(), true, "foreign-parent")?;
    ensure!(!ran, "a payload from another program chose the code the child ran");
    ensure!(code == Some(1), "expected an error exit, got {code:?}");
    // The same payload unsealed, from this very binary as the parent: the
    // contents could still change after a check, so it is refused too.
    let unsealed = payload_fd(&forged_payload(), false)?;
    let (code, ran) = run_with_spawn_env(&unsealed.as_raw_fd().to_string(), false, "unsealed")?;
    ensure!(!ran, "an unsealed payload chose the code the child ran");
    ensure!(code == Some(1), "expected an error exit, got {code:?}");
    // Garbage in the variable, or a descriptor that is not open: error exits.
    for (i, value) in ["", "12abc", "-3", "999", "0"].into_iter().enumerate() {
        let (code, ran) = run_with_spawn_env(value, false, &format!("garbage{i}"))?;
        ensure!(!ran && code == Some(1), "SHMPROC_SPAWN={value:?}: exit {code:?}");
    }
    // Spawning for real still works.
    fn plus_one(x: u32) -> i32 {
        x as i32 + 1
    }
    let mut p = shmproc::Process::builder().start_method(shmproc::StartMethod::Spawn).spawn_fn(plus_one, 41)?;
    ensure!(p.join()? == 42);
    drop((sealed, unsealed));
    Ok(())
}

// ------------------------------------------- half-created leftovers ------

fn shm_path(name: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm/{}{name}", shmproc::segment::NAME_PREFIX))
}

/// Forks a child that starts creating the named segment and stops itself
/// (SIGSTOP) at `stage` of the creation; returns it once it is stopped.
fn creator_stopped_at(name: &str, stage: u8) -> Result<shmproc::Process, Box<dyn std::error::Error>> {
    let n = name.to_owned();
    let child = shmproc::Process::spawn(move || {
        shmproc::segment::__pause_named_creation_at(stage);
        // Never gets past the pause: the test kills it there.
        let _ = Segment::create_named(&n, 1 << 16);
        9
    })?;
    let pid = child.pid();
    ensure!(
        eventually(HANG_LIMIT, || shmproc_tests::proc_state(pid) == Some('T')),
        "the creator did not stop at stage {stage}"
    );
    ensure!(shm_path(name).exists(), "the creator stopped before creating the file");
    Ok(child)
}

fn listed(name: &str) -> Result<shmproc::SegmentInfo, Box<dyn std::error::Error>> {
    Ok(Segment::list()?.into_iter().find(|i| i.name == name).ok_or_else(|| format!("{name} not listed"))?)
}

fn kill_and_reap(child: shmproc::Process) -> TestResult {
    child.kill()?;
    let mut child = child;
    ensure!(child.join()? == -libc::SIGKILL);
    Ok(())
}

fn not_ready_segment_of_a_dead_creator_is_removed() -> TestResult {
    let name = format!("soundness-halfmade-{}", std::process::id());
    let child = creator_stopped_at(&name, 2)?;
    let pid = child.pid();
    // Alive (stopped) mid-creation: listed with its creator, kept.
    let info = listed(&name)?;
    match info.status {
        shmproc::SegmentStatus::NotReady { creator: Some(c), abandoned: false } if c.id == pid => {}
        ref other => return Err(format!("a live creator's half-made segment: {other:?}").into()),
    }
    ensure!(!info.is_stale());
    ensure!(!Segment::remove_stale()?.contains(&name), "removed a live creator's segment");
    ensure!(shm_path(&name).exists());
    // Killed there: stale, and remove_stale removes it.
    kill_and_reap(child)?;
    let info = listed(&name)?;
    ensure!(
        matches!(info.status, shmproc::SegmentStatus::NotReady { creator: Some(c), abandoned: true } if c.id == pid),
        "{:?}",
        info.status
    );
    ensure!(info.is_stale());
    let removed = Segment::remove_stale()?;
    ensure!(removed.contains(&name), "remove_stale skipped the leftover: {removed:?}");
    ensure!(!shm_path(&name).exists());
    Ok(())
}

fn not_ready_segment_without_a_creator_record_ages_out() -> TestResult {
    let name = format!("soundness-norecord-{}", std::process::id());
    // Killed between creating the file and recording itself: nothing says
    // whose it is.
    let child = creator_stopped_at(&name, 1)?;
    kill_and_reap(child)?;
    let info = listed(&name)?;
    ensure!(
        matches!(info.status, shmproc::SegmentStatus::NotReady { creator: None, abandoned: false }),
        "{:?}",
        info.status
    );
    ensure!(!Segment::remove_stale()?.contains(&name), "removed a young file that records no creator");
    // Older than the grace period: abandoned.
    let old = std::time::SystemTime::now() - shmproc::segment::NOT_READY_GRACE - Duration::from_secs(5);
    std::fs::File::options().write(true).open(shm_path(&name))?.set_modified(old)?;
    ensure!(listed(&name)?.is_stale());
    ensure!(Segment::remove_stale()?.contains(&name));
    ensure!(!shm_path(&name).exists());
    Ok(())
}

/// The `shmproc` binary, built like `cli.rs` does.
fn cli() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(|d| d.parent()).ok_or("target dir")?.to_path_buf();
    let path = dir.join("shmproc");
    if let Ok(cargo) = std::env::var("CARGO") {
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-q", "-p", "shmproc-cli", "--bin", "shmproc"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        ensure!(cmd.status()?.success(), "building the CLI failed");
    }
    ensure!(path.exists(), "{} not built", path.display());
    Ok(path)
}

fn cli_clean_removes_a_dead_creators_half_made_segment() -> TestResult {
    let cli = cli()?;
    let name = format!("soundness-cli-halfmade-{}", std::process::id());
    let child = creator_stopped_at(&name, 2)?;
    let pid = child.pid();
    // While the creator lives, `clean` keeps it and `list` shows it.
    let out = std::process::Command::new(&cli).arg("clean").output()?;
    ensure!(out.status.success(), "{out:?}");
    ensure!(shm_path(&name).exists(), "clean removed a live creator's segment");
    let list = std::process::Command::new(&cli).arg("list").output()?;
    let text = String::from_utf8_lossy(&list.stdout).into_owned();
    let line = text.lines().find(|l| l.starts_with(&name)).ok_or("not in the list")?;
    ensure!(line.contains(&pid.to_string()) && line.contains("not initialised"), "{line}");
    kill_and_reap(child)?;
    let out = std::process::Command::new(&cli).arg("clean").output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(out.status.success(), "{out:?}");
    ensure!(text.contains(&format!("removed stale segment {name}")), "{text}");
    ensure!(!shm_path(&name).exists());
    Ok(())
}

fn main() {
    shmproc_tests::run(trials![
        fork_pool_rejects_rewritten_tasks,
        spawn_pool_rejects_rewritten_tasks,
        spawn_children_do_not_leak_segment_fds_to_exec,
        spawn_env_cannot_choose_the_code_a_process_runs,
        anonymous_segments_cannot_be_shrunk_by_a_child,
        truncated_named_segment_is_a_typed_error,
        not_ready_segment_of_a_dead_creator_is_removed,
        not_ready_segment_without_a_creator_record_ages_out,
        cli_clean_removes_a_dead_creators_half_made_segment,
    ]);
}
