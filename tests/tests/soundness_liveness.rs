//! Liveness fails closed (issue #14, point 3): a lock owner is judged dead
//! only on proof. An owner in another pid namespace, or a checker without a
//! readable `/proc`, never leads to a live lock being taken.
//!
//! The namespace tests need `unshare(CLONE_NEWPID | CLONE_NEWNS)` and
//! `mount` (root, or a user namespace that allows them); where the machine
//! refuses, they print why and test the rest.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use shmproc::{Event, LockTimeoutError, Mutex, Process, TryLockError};
use shmproc_tests::{ensure, eventually, trials, TestResult, HANG_LIMIT};

/// Exit codes of the helper children.
const OK: i32 = 0;
const STOLEN: i32 = 2;
const LOCKED: i32 = 3;
const TIMED_OUT_WRONGLY: i32 = 4;
/// The child could not set up its sandbox; `SKIP_CODE + stage`.
const SKIP_CODE: i32 = 100;

/// One shared anonymous page of `AtomicI32`s, inherited across `fork`.
struct SharedPage(NonNull<AtomicI32>);

impl SharedPage {
    fn new() -> Result<SharedPage, std::io::Error> {
        // SAFETY: an anonymous shared mapping; no file, no fixed address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        NonNull::new(p.cast::<AtomicI32>()).map(SharedPage).ok_or_else(|| std::io::Error::other("null mapping"))
    }

    fn at(&self, i: usize) -> &AtomicI32 {
        assert!(i < 1024);
        // SAFETY: the page holds 1024 zero-initialised i32s, mapped until drop;
        // AtomicI32 has the layout of i32.
        unsafe { &*self.0.as_ptr().add(i) }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: unmapping the page mapped in `new`, once.
        unsafe { libc::munmap(self.0.as_ptr().cast(), 4096) };
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Exits the calling (forked) child at once, without destructors.
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Makes every mount of a freshly unshared mount namespace private, so that
/// what the child mounts does not reach the test's own namespace.
fn make_mounts_private() -> bool {
    // SAFETY: NUL-terminated path; null source/type/data are allowed for a
    // propagation change.
    unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) == 0
    }
}

/// A grandchild that is pid 1 of a new pid namespace, with its own `/proc`,
/// running `f`; its parent (in our namespace) reaps it.
struct NsChild {
    middle: libc::pid_t,
    page: SharedPage,
}

impl NsChild {
    /// `Err(reason)` if the machine does not allow the namespaces.
    fn spawn(f: impl FnOnce() -> i32) -> Result<NsChild, String> {
        let page = SharedPage::new().map_err(|e| format!("mmap: {e}"))?;
        // SAFETY: the test process is single-threaded (the harness runs tests
        // on the main thread), so the child may do anything.
        let middle = unsafe { libc::fork() };
        if middle < 0 {
            return Err(format!("fork: errno {}", errno()));
        }
        if middle == 0 {
            // SAFETY: plain syscall, flags valid.
            if unsafe { libc::unshare(libc::CLONE_NEWPID | libc::CLONE_NEWNS) } != 0 {
                page.at(1).store(-errno(), Ordering::SeqCst);
                page.at(2).store(1, Ordering::SeqCst);
                exit_now(0);
            }
            if !make_mounts_private() {
                page.at(1).store(-errno(), Ordering::SeqCst);
                page.at(2).store(2, Ordering::SeqCst);
                exit_now(0);
            }
            // SAFETY: single-threaded child.
            let g = unsafe { libc::fork() };
            if g == 0 {
                // Pid 1 of the new namespace: mount its own /proc.
                // SAFETY: NUL-terminated strings, null data.
                let r =
                    unsafe { libc::mount(c"proc".as_ptr(), c"/proc".as_ptr(), c"proc".as_ptr(), 0, std::ptr::null()) };
                if r != 0 {
                    page.at(1).store(-errno(), Ordering::SeqCst);
                    page.at(2).store(3, Ordering::SeqCst);
                    exit_now(0);
                }
                page.at(1).store(1, Ordering::SeqCst);
                exit_now(f());
            }
            if g < 0 {
                page.at(1).store(-errno(), Ordering::SeqCst);
                page.at(2).store(4, Ordering::SeqCst);
                exit_now(0);
            }
            page.at(0).store(g, Ordering::SeqCst);
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(g, &mut status, 0) };
            exit_now(if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) });
        }
        let child = NsChild { middle, page };
        if !eventually(HANG_LIMIT, || child.page.at(1).load(Ordering::SeqCst) != 0) {
            child.kill();
            return Err("the namespace child never started".into());
        }
        let state = child.page.at(1).load(Ordering::SeqCst);
        if state < 0 {
            let stage = ["", "unshare(CLONE_NEWPID|CLONE_NEWNS)", "mount --make-rprivate /", "mount proc", "fork"]
                [child.page.at(2).load(Ordering::SeqCst).clamp(0, 4) as usize];
            let _ = child.wait();
            return Err(format!("{stage} failed with errno {}", -state));
        }
        Ok(child)
    }

    /// SIGKILLs the grandchild (the namespace's pid 1).
    fn kill(&self) {
        let g = self.page.at(0).load(Ordering::SeqCst);
        if g > 0 {
            // SAFETY: signalling a process we created.
            unsafe { libc::kill(g, libc::SIGKILL) };
        }
    }

    /// Waits for the middle child; its exit code is the grandchild's.
    fn wait(self) -> i32 {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(self.middle, &mut status, 0) };
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        }
    }
}

/// A process in another pid namespace holds the lock: it is alive, and its
/// tid (1) names another process here, so a tid check in our namespace
/// "proves" it dead. The lock must not be taken from it. After it is
/// SIGKILLed, its id proves nothing here either, but its kernel-kept
/// liveness record on the segment's file (`kernel_liveness`) is gone: the
/// next locker recovers the lock with `OwnerDied`.
fn lock_of_owner_in_another_pid_namespace_is_not_stolen() -> TestResult {
    let m = Mutex::new(0u64)?;
    let ready = Event::new()?;
    let (m2, r2) = (m.clone(), ready.clone());
    let child = match NsChild::spawn(move || {
        let mut g = m2.lock().unwrap();
        *g = 99;
        r2.set();
        std::thread::sleep(Duration::from_secs(60));
        drop(g);
        OK
    }) {
        Ok(c) => c,
        Err(reason) => {
            eprintln!("SKIPPED lock_of_owner_in_another_pid_namespace_is_not_stolen: {reason}");
            return Ok(());
        }
    };
    if !ready.wait_timeout(HANG_LIMIT) {
        child.kill();
        child.wait();
        return Err("the owner in the other namespace never locked".into());
    }
    let owner = m.owner();
    let try_result = match m.try_lock() {
        Err(TryLockError::WouldBlock) => "would block",
        Err(TryLockError::OwnerDied(_)) => "stolen (owner died)",
        Ok(_) => "locked",
    };
    let timed_result = match m.lock_timeout(Duration::from_millis(200)) {
        Err(LockTimeoutError::Timeout) => "timeout",
        Err(LockTimeoutError::OwnerDied(_)) => "stolen (owner died)",
        Ok(_) => "locked",
    };
    // In a spawned process too (a fresh checker).
    let m3 = m.clone();
    let mut third = Process::spawn(move || match m3.lock_timeout(Duration::from_millis(200)) {
        Err(LockTimeoutError::Timeout) => OK,
        Err(LockTimeoutError::OwnerDied(_)) => STOLEN,
        Ok(_) => LOCKED,
    })?;
    let third_code = third.join_timeout(HANG_LIMIT)?;
    child.kill();
    let code = child.wait();
    ensure!(owner.is_some_and(|o| o.alive), "owner in another namespace reported dead: {owner:?}");
    ensure!(try_result == "would block", "try_lock on a live foreign owner: {try_result}");
    ensure!(timed_result == "timeout", "lock_timeout on a live foreign owner: {timed_result}");
    ensure!(third_code == Some(OK), "another process on a live foreign owner: exit {third_code:?}");
    ensure!(code == 128 + libc::SIGKILL || code == -1 || code == libc::SIGKILL, "grandchild exit {code}");
    // The dead foreign owner is recovered through the kernel's record.
    match m.lock_timeout(HANG_LIMIT) {
        Err(LockTimeoutError::OwnerDied(g)) => ensure!(*g.0 == 99, "the owner's write is there"),
        Err(LockTimeoutError::Timeout) => return Err("a dead foreign owner's lock was not recovered".into()),
        Ok(_) => return Err("locked a dead owner's lock without being told".into()),
    }
    ensure!(m.owner().is_none(), "{:?}", m.owner());
    Ok(())
}

/// The owner of a lock, in another pid namespace, forks a child that
/// outlives it and then dies holding the lock. The child inherited the
/// owner's open files, including its liveness record's description; if it
/// kept it, the dead owner would look alive for as long as the child lives.
/// The fork handler gives the child a record of its own and closes the
/// inherited one, so the lock is recovered while the child still runs.
fn foreign_owner_dead_while_its_forked_child_lives_is_recovered() -> TestResult {
    let m = Mutex::new(0u64)?;
    let ready = Event::new()?;
    let (m2, r2) = (m.clone(), ready.clone());
    let child = match NsChild::spawn(move || {
        // SAFETY: the namespace's pid 1 is single-threaded here.
        let owner = unsafe { libc::fork() };
        if owner == 0 {
            let mut g = m2.lock().unwrap();
            *g = 7;
            // Held until death: never unlocked.
            std::mem::forget(g);
            // SAFETY: single-threaded child.
            if unsafe { libc::fork() } == 0 {
                // The bystander: outlives the owner.
                std::thread::sleep(Duration::from_secs(60));
                exit_now(OK);
            }
            r2.set();
            // SAFETY: signalling ourselves.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            exit_now(OK);
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(owner, &mut status, 0) };
        std::thread::sleep(Duration::from_secs(60));
        OK
    }) {
        Ok(c) => c,
        Err(reason) => {
            eprintln!("SKIPPED foreign_owner_dead_while_its_forked_child_lives_is_recovered: {reason}");
            return Ok(());
        }
    };
    if !ready.wait_timeout(HANG_LIMIT) {
        child.kill();
        child.wait();
        return Err("the owner in the other namespace never locked".into());
    }
    let got = match m.lock_timeout(HANG_LIMIT) {
        Err(LockTimeoutError::OwnerDied(g)) => Ok(*g.0),
        Err(LockTimeoutError::Timeout) => Err("the dead owner still looks alive (its child kept its record?)"),
        Ok(_) => Err("locked a dead owner's lock without being told"),
    };
    child.kill();
    child.wait();
    let value = got?;
    ensure!(value == 7, "the owner's write is there: {value}");
    Ok(())
}

/// What a checker child does with the parent's held lock once its `/proc`
/// is gone: exit code `OK` if nothing was taken.
fn probe_held_lock(m: &Mutex<u64>) -> i32 {
    match m.try_lock() {
        Err(TryLockError::WouldBlock) => {}
        Err(TryLockError::OwnerDied(_)) => return STOLEN,
        Ok(_) => return LOCKED,
    }
    match m.lock_timeout(Duration::from_millis(100)) {
        Err(LockTimeoutError::Timeout) => {}
        Err(LockTimeoutError::OwnerDied(_)) => return STOLEN,
        Ok(_) => return LOCKED,
    }
    if m.owner().is_some_and(|o| o.alive) {
        OK
    } else {
        TIMED_OUT_WRONGLY
    }
}

/// Forks a child that runs `setup` and then [`probe_held_lock`]; its exit
/// code (`SKIP_CODE + n` if `setup` returned `Err(n)`).
fn fork_checker(m: &Mutex<u64>, setup: impl FnOnce() -> Result<(), i32>) -> Result<i32, String> {
    fork_checker_with(m, setup, probe_held_lock)
}

/// A checker's setup: every `/proc` read fails from now on (the test hook;
/// the empty-`/proc` sandbox is the real thing).
fn blind() -> Result<(), i32> {
    shmproc::core::identity::test_hooks::block_proc(true);
    Ok(())
}

/// [`fork_checker`] with the probe `probe`.
fn fork_checker_with(
    m: &Mutex<u64>,
    setup: impl FnOnce() -> Result<(), i32>,
    probe: impl FnOnce(&Mutex<u64>) -> i32,
) -> Result<i32, String> {
    // SAFETY: the test process is single-threaded; the child only uses the
    // mapped mutex and exits with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: errno {}", errno()));
    }
    if pid == 0 {
        let code = match setup() {
            Ok(()) => probe(m),
            Err(n) => SKIP_CODE + n,
        };
        exit_now(code);
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else {
        Err(format!("checker died: status {status:#x}"))
    }
}

/// A checker whose `/proc` is unreadable (a sandbox) must not take a live
/// owner's lock: "cannot read `/proc/<tid>/stat`" is not "dead". The real
/// sandbox is an empty tmpfs mounted over `/proc` in a private mount
/// namespace; the test hook gives the same with no privileges.
fn unreadable_proc_is_not_death() -> TestResult {
    let m = Mutex::new(5u64)?;
    let guard = m.lock().map_err(|_| "fresh mutex reported a dead owner")?;
    // Real: an empty /proc.
    let real = fork_checker(&m, || {
        // SAFETY: plain syscall in a single-threaded child.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            return Err(1);
        }
        if !make_mounts_private() {
            return Err(2);
        }
        // SAFETY: NUL-terminated strings, null data.
        let r = unsafe { libc::mount(c"tmpfs".as_ptr(), c"/proc".as_ptr(), c"tmpfs".as_ptr(), 0, std::ptr::null()) };
        if r != 0 {
            return Err(3);
        }
        if std::path::Path::new("/proc/self/stat").exists() {
            return Err(4);
        }
        Ok(())
    })?;
    // Simulated: every /proc read fails.
    let hooked = fork_checker(&m, blind)?;
    drop(guard);
    if real >= SKIP_CODE {
        eprintln!(
            "SKIPPED the empty-/proc sandbox: stage {} failed (unshare/mount not allowed here)",
            real - SKIP_CODE
        );
    } else {
        ensure!(real == OK, "checker with an empty /proc: exit {real} (2: stole a live lock)");
    }
    ensure!(hooked == OK, "checker with /proc reads failing: exit {hooked} (2: stole a live lock)");
    // The lock works normally afterwards, with no death reported.
    ensure!(m.try_lock().is_ok());
    Ok(())
}

/// A process that is pid 1 of a new pid namespace and holds message 1 of
/// `q` in place (a `RecvRef`) until it is killed; `None` (printed as
/// skipped) where the machine refuses the namespace.
fn receiver_in_another_namespace(q: &shmproc::Queue<u64>, test: &str) -> Result<Option<NsChild>, String> {
    let ready = Event::new().map_err(|e| e.to_string())?;
    let (q2, r2) = (q.clone(), ready.clone());
    let child = match NsChild::spawn(move || {
        let Ok(held) = q2.recv_ref() else { return LOCKED };
        if *held != 1 {
            return LOCKED;
        }
        r2.set();
        std::thread::sleep(Duration::from_secs(60));
        drop(held);
        OK
    }) {
        Ok(c) => c,
        Err(reason) => {
            eprintln!("SKIPPED {test}: {reason}");
            return Ok(None);
        }
    };
    if !ready.wait_timeout(HANG_LIMIT) {
        child.kill();
        child.wait();
        return Err("the receiver in the other namespace never took its message".into());
    }
    Ok(Some(child))
}

/// A receiver in another pid namespace holds a queue's consuming side (a
/// `RecvRef` in place): while it lives, other receivers wait (time out);
/// once it is SIGKILLed, its process's kernel-kept record is gone and the
/// next receive takes the side over, dropping the message it was reading.
fn queue_side_of_a_dead_receiver_in_another_pid_namespace_is_recovered() -> TestResult {
    let q = shmproc::Queue::<u64>::bounded(8)?;
    q.send(&1)?;
    q.send(&2)?;
    let Some(child) =
        receiver_in_another_namespace(&q, "queue_side_of_a_dead_receiver_in_another_pid_namespace_is_recovered")?
    else {
        return Ok(());
    };
    let while_alive = q.recv_timeout(Duration::from_millis(200));
    child.kill();
    child.wait();
    ensure!(
        while_alive == Err(shmproc::RecvTimeoutError::Timeout),
        "a live foreign receiver's side was taken: {while_alive:?}"
    );
    let after = q.recv_timeout(HANG_LIMIT);
    ensure!(after == Ok(2), "after the foreign receiver died: {after:?}");
    Ok(())
}

/// On the slot ring, a receiver in another pid namespace holds a claimed
/// slot (a `RecvRef`): while it lives, a sender that needs that slot waits
/// (times out); once it is SIGKILLed, its process's kernel-kept record is
/// gone and the sender recovers the slot.
fn slot_of_a_dead_receiver_in_another_pid_namespace_is_recovered() -> TestResult {
    let q = shmproc::Queue::<u64>::builder().capacity(2).slot_ring().build()?;
    q.send(&1)?;
    let Some(child) =
        receiver_in_another_namespace(&q, "slot_of_a_dead_receiver_in_another_pid_namespace_is_recovered")?
    else {
        return Ok(());
    };
    // Slot 1 takes 2; 3 needs slot 0 again, which the foreign receiver holds.
    q.send(&2)?;
    let while_alive = q.send_timeout(&3, Duration::from_millis(200));
    child.kill();
    child.wait();
    ensure!(while_alive.is_err(), "a live foreign receiver's slot was taken");
    q.send_timeout(&3, HANG_LIMIT).map_err(|e| format!("after the foreign receiver died: {e:?}"))?;
    ensure!(q.recv_timeout(HANG_LIMIT) == Ok(2));
    ensure!(q.recv_timeout(HANG_LIMIT) == Ok(3));
    Ok(())
}

/// An owner that died holding the lock is recovered by a judge whose `/proc`
/// is unreadable: its id proves nothing there, but its process's kernel-kept
/// liveness record on the segment's file is gone.
fn dead_owner_recovered_by_a_judge_without_proc() -> TestResult {
    let m = Mutex::new(1u64)?;
    // SAFETY: the test process is single-threaded; the child only locks the
    // mapped mutex and kills itself.
    let owner = unsafe { libc::fork() };
    if owner < 0 {
        return Err(format!("fork: errno {}", errno()).into());
    }
    if owner == 0 {
        let mut g = m.lock().unwrap_or_else(|_| exit_now(TIMED_OUT_WRONGLY));
        *g = 42;
        std::mem::forget(g);
        // SAFETY: signalling ourselves.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        exit_now(OK);
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(owner, &mut status, 0) };
    ensure!(libc::WIFSIGNALED(status), "the owner was not killed: {status:#x}");
    let code = fork_checker_with(&m, blind, |m| match m.lock_timeout(HANG_LIMIT) {
        Err(LockTimeoutError::OwnerDied(g)) if *g.0 == 42 => OK,
        Err(LockTimeoutError::OwnerDied(_)) => LOCKED,
        Err(LockTimeoutError::Timeout) => TIMED_OUT_WRONGLY,
        Ok(_) => STOLEN,
    })?;
    ensure!(code == OK, "judge without /proc: exit {code} (4: the dead owner was not recovered)");
    Ok(())
}

/// The only sender of a queue is SIGKILLed; a receiver whose `/proc` is
/// unreadable cannot tell that from its pid, but the sender's process's
/// kernel-kept record on the queue's file is gone: it gets `Disconnected`
/// (before: it waited forever, or timed out).
fn receiver_without_proc_sees_a_dead_sender_disconnect() -> TestResult {
    let (tx, rx) = shmproc::Queue::<u64>::bounded(8)?.into_split();
    let mut sender = Process::spawn(move || {
        tx.send(&1).unwrap();
        std::thread::sleep(Duration::from_secs(60));
    })?;
    ensure!(rx.recv_timeout(HANG_LIMIT) == Ok(1));
    let pid = sender.pid() as libc::pid_t;
    let code = fork_checker_with(&Mutex::new(0u64)?, blind, move |_| {
        // SAFETY: signalling the test's own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        match rx.recv_timeout(HANG_LIMIT) {
            Err(shmproc::RecvTimeoutError::Disconnected) => OK,
            Err(shmproc::RecvTimeoutError::Timeout) => TIMED_OUT_WRONGLY,
            _ => LOCKED,
        }
    })?;
    let _ = sender.join_timeout(HANG_LIMIT)?;
    ensure!(code == OK, "receiver without /proc: exit {code} (4: never told the sender died)");
    Ok(())
}

/// A robust semaphore's only permit is held by a process that is then
/// SIGKILLed; a process whose `/proc` is unreadable gets the permit back
/// through the dead holder's missing kernel-kept record.
fn robust_permit_of_a_dead_holder_returns_to_a_judge_without_proc() -> TestResult {
    let s = shmproc::RobustSemaphore::new(1)?;
    let s2 = s.clone();
    let mut holder = Process::spawn(move || {
        s2.acquire().unwrap();
        // SAFETY: signalling ourselves.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    })?;
    ensure!(holder.join_timeout(HANG_LIMIT)? == Some(-libc::SIGKILL));
    let code = fork_checker_with(&Mutex::new(0u64)?, blind, move |_| match s.acquire_timeout(HANG_LIMIT) {
        Ok(()) => OK,
        Err(_) => TIMED_OUT_WRONGLY,
    })?;
    ensure!(code == OK, "judge without /proc: exit {code} (4: the dead holder's permit never came back)");
    Ok(())
}

/// A party that arrived at a barrier is SIGKILLed while it waits; a party
/// whose `/proc` is unreadable, waiting there too, is told the barrier broke
/// (the dead party's kernel-kept record is gone) instead of timing out.
fn barrier_party_dead_is_seen_by_a_judge_without_proc() -> TestResult {
    let b = shmproc::Barrier::new(3)?;
    let b2 = b.clone();
    let mut party = Process::spawn(move || {
        let _ = b2.wait();
    })?;
    ensure!(eventually(HANG_LIMIT, || b.n_waiting() == 1), "the party never arrived");
    // SAFETY: signalling the test's own child.
    unsafe { libc::kill(party.pid() as libc::pid_t, libc::SIGKILL) };
    ensure!(party.join_timeout(HANG_LIMIT)? == Some(-libc::SIGKILL));
    let code = fork_checker_with(&Mutex::new(0u64)?, blind, move |_| match b.wait_timeout(HANG_LIMIT) {
        Err(shmproc::BarrierError::Broken) => OK,
        Err(shmproc::BarrierError::Timeout) => TIMED_OUT_WRONGLY,
        Ok(_) => LOCKED,
    })?;
    ensure!(code == OK, "judge without /proc: exit {code} (4: the dead party was not noticed)");
    Ok(())
}

/// The core check, directly: only proof counts as death.
fn liveness_answers_unknown_without_proof() -> TestResult {
    use shmproc::core::identity::{current_pid_ns, liveness_in, Liveness};
    use shmproc::core::owner::{OwnerCheck, ProcLiveness};
    use shmproc::core::Identity;
    let me = Identity::current_thread();
    ensure!(me.ns != 0 && me.ns == current_pid_ns());
    ensure!(liveness_in(me.id, me.start, me.ns) == Liveness::Alive);
    // Another start time in our namespace: the tid was reused, proven dead.
    ensure!(liveness_in(me.id, me.start + 1, me.ns) == Liveness::Dead);
    // The same facts recorded in another or no namespace prove nothing.
    ensure!(liveness_in(me.id, me.start + 1, me.ns ^ 1) == Liveness::Unknown);
    ensure!(liveness_in(me.id, me.start + 1, 0) == Liveness::Unknown);
    ensure!(ProcLiveness.is_alive_in(me.id, Some(me.start + 1), me.ns ^ 1));
    // A reaped child is gone from our namespace: proven dead.
    let mut child = std::process::Command::new("true").spawn()?;
    let pid = child.id();
    child.wait()?;
    ensure!(liveness_in(pid, 0, me.ns) == Liveness::Dead);
    ensure!(liveness_in(pid, 0, me.ns ^ 1) == Liveness::Unknown);
    // With /proc unreadable nothing is proven, not even for a reaped child.
    shmproc::core::identity::test_hooks::block_proc(true);
    let blind = (liveness_in(pid, 0, me.ns), current_pid_ns());
    shmproc::core::identity::test_hooks::block_proc(false);
    ensure!(blind == (Liveness::Unknown, 0), "{blind:?}");
    Ok(())
}

fn main() {
    shmproc_tests::run(trials![
        lock_of_owner_in_another_pid_namespace_is_not_stolen,
        foreign_owner_dead_while_its_forked_child_lives_is_recovered,
        queue_side_of_a_dead_receiver_in_another_pid_namespace_is_recovered,
        slot_of_a_dead_receiver_in_another_pid_namespace_is_recovered,
        unreadable_proc_is_not_death,
        dead_owner_recovered_by_a_judge_without_proc,
        receiver_without_proc_sees_a_dead_sender_disconnect,
        robust_permit_of_a_dead_holder_returns_to_a_judge_without_proc,
        barrier_party_dead_is_seen_by_a_judge_without_proc,
        liveness_answers_unknown_without_proof,
    ]);
}
