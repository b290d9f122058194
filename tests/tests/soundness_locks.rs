//! Issue #14, points 5 and 10, with real processes:
//!
//! * a lock word forged by a peer with the victim's own tid and start time
//!   (read from `/proc`) is taken over like a dead owner's (`OwnerDied`),
//!   never a panic or an endless wait, while genuine re-entrance by the same
//!   thread is still detected;
//! * robust semaphore permits come back when their holder is SIGKILLed.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use shmproc::core::identity::start_time;
use shmproc::core::owner::Owner;
use shmproc::core::raw_mutex::RawMutex;
use shmproc::core::region::kind;
use shmproc::{
    Array, BoundedSemaphore, Event, Identity, LockTimeoutError, Mutex, OwnerDied, PermitError, Process, RLock,
    ReleaseError, RobustSemaphore, Segment, Semaphore, SharedMap, TryLockError, Value,
};
use shmproc_tests::{ensure, trials, TestResult, HANG_LIMIT};

/// The lock word at the head of object `name` (of `kind`) in `seg`. Every
/// lock-carrying object (mutex, value, array, shared map) starts with its
/// `RawMutex`.
fn lock_word<'a>(seg: &'a Segment, name: &str, kind: u32) -> &'a RawMutex {
    let info = seg.region().find(name.as_bytes()).expect("object");
    let (p, size) = seg.region().raw(info.index, kind).expect("object of that kind");
    assert!(size >= std::mem::size_of::<RawMutex>());
    // SAFETY: the object starts with a RawMutex (atomics only, valid for any
    // bits), at OBJECT_ALIGN alignment, inside the mapping `seg` keeps alive.
    unsafe { &*p.as_ptr().cast::<RawMutex>() }
}

/// How a peer forges a lock word.
#[derive(Copy, Clone)]
enum Forgery {
    /// The word plus the side fields, as the victim would have recorded them
    /// (tid, start time from `/proc/<tid>/stat`, pid).
    Full,
    /// Only the word (the victim's tid), side fields left as they are.
    WordOnly,
}

/// In a forger process: writes `victim`'s identity into `raw`.
fn forge(raw: &RawMutex, victim: u32, how: Forgery) -> i32 {
    match how {
        Forgery::Full => {
            let Some(start) = start_time(victim) else { return 10 };
            let as_victim = Owner { thread: Identity::local(victim, start), pid: victim };
            if raw.try_lock(&as_victim).is_err() {
                return 11;
            }
            if !raw.is_owned_by(&as_victim) {
                return 12;
            }
        }
        Forgery::WordOnly => {
            // SAFETY: RawMutex is repr(C) with its state word first.
            let word = unsafe { &*(raw as *const RawMutex).cast::<AtomicU32>() };
            word.store(victim, Ordering::Relaxed);
        }
    }
    0
}

/// Runs `victim` in a child process once a second child has forged the lock
/// `raw_of()` with the victim's identity; returns the victim's exit code (0:
/// every check passed). A victim that hangs is killed and reported.
fn forged_victim(
    seg: &Segment,
    name: &str,
    kind: u32,
    how: Forgery,
    victim: impl FnOnce() -> i32 + 'static,
) -> Result<i32, Box<dyn std::error::Error>> {
    let go = Event::new()?;
    let g2 = go.clone();
    let mut v = Process::spawn(move || {
        if !g2.wait_timeout(HANG_LIMIT) {
            return 90;
        }
        victim()
    })?;
    let vpid = v.pid();
    let (s2, n2) = (seg.clone(), name.to_string());
    let mut f = Process::spawn(move || forge(lock_word(&s2, &n2, kind), vpid, how))?;
    let fc = f.join_timeout(HANG_LIMIT)?;
    ensure!(fc == Some(0), "forger failed: {fc:?}");
    go.set();
    match v.join_timeout(HANG_LIMIT)? {
        Some(code) => Ok(code),
        None => {
            v.kill()?;
            let _ = v.join();
            Err("the victim hung on a forged lock word".into())
        }
    }
}

fn forged_mutex_word_is_taken_over_by_lock() -> TestResult {
    for how in [Forgery::Full, Forgery::WordOnly] {
        let seg = Segment::anonymous(1 << 16)?;
        let m = Mutex::new_in(&seg, "m", 7u64)?;
        let code = forged_victim(&seg, "m", kind::MUTEX, how, move || {
            // Before: a panic ("locked twice"), or (word only) a wait forever.
            let mut g = match m.lock() {
                Err(OwnerDied(g)) => g,
                Ok(_) => return 1,
            };
            if *g != 7 {
                return 2;
            }
            *g = 8;
            drop(g);
            // The lock works normally afterwards.
            match m.lock() {
                Ok(g) if *g == 8 => 0,
                _ => 3,
            }
        })?;
        ensure!(code == 0, "victim exit code {code}");
    }
    Ok(())
}

fn forged_mutex_word_is_taken_over_by_try_lock_and_lock_timeout() -> TestResult {
    let seg = Segment::anonymous(1 << 16)?;
    let m = Mutex::new_in(&seg, "m", 1u32)?;
    let m2 = m.clone();
    let code = forged_victim(&seg, "m", kind::MUTEX, Forgery::Full, move || {
        // Before: WouldBlock (the word said "held by you").
        match m2.try_lock() {
            Err(TryLockError::OwnerDied(_)) => 0,
            Err(TryLockError::WouldBlock) => 1,
            Ok(_) => 2,
        }
    })?;
    ensure!(code == 0, "try_lock: victim exit code {code}");
    let code = forged_victim(&seg, "m", kind::MUTEX, Forgery::Full, move || {
        // Before: Timeout at once.
        match m.lock_timeout(Duration::from_secs(5)) {
            Err(LockTimeoutError::OwnerDied(_)) => 0,
            Err(LockTimeoutError::Timeout) => 1,
            Ok(_) => 2,
        }
    })?;
    ensure!(code == 0, "lock_timeout: victim exit code {code}");
    Ok(())
}

fn forged_value_and_rlock_words_are_taken_over() -> TestResult {
    let seg = Segment::anonymous(1 << 16)?;
    let v = Value::new_in(&seg, "v", 5i64)?;
    let code = forged_victim(&seg, "v", kind::MUTEX, Forgery::Full, move || {
        // `get` takes the lock for us: before, a panic.
        if v.get() != 5 {
            return 1;
        }
        v.set(6);
        i32::from(v.get() != 6)
    })?;
    ensure!(code == 0, "Value: victim exit code {code}");

    let r = RLock::new_in(&seg, "r")?;
    let code = forged_victim(&seg, "r", kind::MUTEX, Forgery::Full, move || {
        // Before: the forged word made the victim "re-enter" (Ok, one more
        // level on a lock it never took).
        let g = match r.lock() {
            Err(OwnerDied(g)) => g,
            Ok(_) => return 1,
        };
        // Now really held: another level is genuine re-entrance.
        let Ok(inner) = r.lock() else { return 2 };
        drop(inner);
        drop(g);
        i32::from(r.is_locked())
    })?;
    ensure!(code == 0, "RLock: victim exit code {code}");
    Ok(())
}

fn forged_array_word_is_taken_over() -> TestResult {
    for how in [Forgery::Full, Forgery::WordOnly] {
        let seg = Segment::anonymous(1 << 16)?;
        let a = Array::<u32>::zeroed_in(&seg, "a", 4)?;
        a.set(1, 9);
        let code = forged_victim(&seg, "a", kind::ARRAY, how, move || {
            // Before: a panic ("Array locked twice").
            match a.lock() {
                Err(OwnerDied(g)) if g[1] == 9 => {}
                _ => return 1,
            }
            if !a.set(2, 3) || a.get(2) != Some(3) {
                return 2;
            }
            0
        })?;
        ensure!(code == 0, "victim exit code {code}");
    }
    Ok(())
}

fn forged_shared_map_word_is_recovered() -> TestResult {
    for how in [Forgery::Full, Forgery::WordOnly] {
        let seg = Segment::anonymous(1 << 20)?;
        let m = SharedMap::<u32, u32>::new_in(&seg, "map", 8)?;
        m.insert(&1, &10)?;
        let code = forged_victim(&seg, "map", kind::SHARED_MAP, how, move || {
            // Before: a panic ("shared container locked twice").
            match m.get(&1) {
                Ok(Some(10)) => {}
                _ => return 1,
            }
            if m.insert(&2, &20).is_err() || m.len() != 2 {
                return 2;
            }
            0
        })?;
        ensure!(code == 0, "victim exit code {code}");
    }
    Ok(())
}

/// Runs `f` in a child and returns its exit code (1: it panicked).
fn in_child(f: impl FnOnce() -> i32 + 'static) -> Result<i32, Box<dyn std::error::Error>> {
    let mut c = Process::spawn(f)?;
    match c.join_timeout(HANG_LIMIT)? {
        Some(code) => Ok(code),
        None => {
            c.kill()?;
            let _ = c.join();
            Err("child hung".into())
        }
    }
}

fn genuine_reentrance_is_still_detected() -> TestResult {
    let m = Mutex::new(0u8)?;
    let g = m.lock().map_err(|_| "owner died")?;
    ensure!(matches!(m.try_lock(), Err(TryLockError::WouldBlock)));
    ensure!(matches!(m.lock_timeout(Duration::from_millis(1)), Err(LockTimeoutError::Timeout)));
    drop(g);
    // `lock` while holding: the documented panic (exit code 1 in a child).
    let m2 = m.clone();
    let code = in_child(move || {
        let _g = m2.lock();
        let _again = m2.lock();
        0
    })?;
    ensure!(code == 1, "Mutex::lock re-entered: exit code {code}");
    // Whatever the child left (unwound or not), the lock still works.
    drop(m.lock().unwrap_or_else(OwnerDied::into_inner));
    let a = Array::<u8>::zeroed(2)?;
    let code = in_child(move || {
        let _g = a.lock();
        let _again = a.lock();
        0
    })?;
    ensure!(code == 1, "Array::lock re-entered: exit code {code}");
    let map = SharedMap::<u8, u8>::with_capacity(4)?;
    let code = in_child(move || {
        let _ = map.update(&1, |_| {
            let _ = map.len();
            Some(1)
        });
        0
    })?;
    ensure!(code == 1, "SharedMap re-entered from update: exit code {code}");
    // RLock: re-entrance is another level, released level by level.
    let r = RLock::new()?;
    let outer = r.lock().map_err(|_| "owner died")?;
    let inner = r.lock().map_err(|_| "owner died")?;
    drop(outer);
    ensure!(r.is_locked(), "one level left");
    let r2 = r.clone();
    ensure!(in_child(move || i32::from(r2.try_lock().is_ok()))? == 0, "another process got a held RLock");
    drop(inner);
    ensure!(!r.is_locked());
    Ok(())
}

fn reentrance_through_a_second_mapping_is_reentrance() -> TestResult {
    // The same named segment mapped twice in one process: the lock has two
    // addresses here, and holding it through one must not let the other take
    // it "over" (that would be two guards for one value).
    let name = format!("soundness-locks-{}", std::process::id());
    let seg_a = Segment::create_named(&name, 1 << 16)?;
    let seg_b = Segment::open(&name)?;
    ensure!(!seg_a.same_as(&seg_b));
    let a = Mutex::new_in(&seg_a, "m", 0u32)?;
    let b = Mutex::<u32>::open_in(&seg_b, "m")?;
    let g = a.lock().map_err(|_| "owner died")?;
    ensure!(matches!(b.try_lock(), Err(TryLockError::WouldBlock)));
    ensure!(matches!(b.lock_timeout(Duration::from_millis(1)), Err(LockTimeoutError::Timeout)));
    drop(g);
    let gb = b.lock().map_err(|_| "owner died")?;
    ensure!(matches!(a.try_lock(), Err(TryLockError::WouldBlock)));
    drop(gb);
    ensure!(!a.is_locked());
    // An RLock through both mappings counts levels on one record.
    let ra = RLock::new_in(&seg_a, "r")?;
    let rb = RLock::open_in(&seg_b, "r")?;
    let l1 = ra.lock().map_err(|_| "owner died")?;
    let l2 = rb.lock().map_err(|_| "re-entrance reported as a dead owner")?;
    drop(l1);
    ensure!(rb.is_locked());
    drop(l2);
    ensure!(!ra.is_locked());
    Ok(())
}

// ------------------------------------------------------- robust permits ----

/// Children that each take `per_child` permits of `sem`, say so on `ready`
/// (one count each) and sleep until killed.
fn holders(sem: &RobustSemaphore, n: usize, per_child: u32) -> Result<Vec<Process>, Box<dyn std::error::Error>> {
    let mut kids = Vec::new();
    for _ in 0..n {
        let s = sem.clone();
        kids.push(Process::spawn(move || {
            for _ in 0..per_child {
                if s.acquire().is_err() {
                    return 2;
                }
            }
            std::thread::sleep(Duration::from_secs(600));
            0
        })?);
    }
    Ok(kids)
}

fn kill_all(kids: Vec<Process>) -> TestResult {
    for mut k in kids {
        k.kill()?;
        let code = k.join_timeout(HANG_LIMIT)?;
        ensure!(code.is_some(), "a killed child did not exit");
    }
    Ok(())
}

fn robust_permits_come_back_after_sigkill() -> TestResult {
    let sem = Semaphore::robust(3)?;
    let kids = holders(&sem, 3, 1)?;
    ensure!(shmproc_tests::eventually(HANG_LIMIT, || sem.value() == 0), "holders never took their permits");
    // A waiter blocked in a plain `acquire()` (no deadline) before the kill.
    let s2 = sem.clone();
    let mut waiter = Process::spawn(move || {
        if s2.acquire().is_err() {
            return 1;
        }
        i32::from(s2.held() != 1)
    })?;
    kill_all(kids)?;
    match waiter.join_timeout(HANG_LIMIT)? {
        Some(0) => {}
        Some(code) => return Err(format!("waiter exit code {code}").into()),
        None => {
            waiter.kill()?;
            let _ = waiter.join();
            return Err("acquire() never got a dead holder's permit".into());
        }
    }
    // All three permits are back (the waiter's died with it, too).
    for _ in 0..3 {
        sem.acquire_timeout(HANG_LIMIT).map_err(|e| format!("permit lost: {e}"))?;
    }
    ensure!(sem.held() == 3 && sem.try_acquire() == Err(PermitError::WouldBlock));
    for _ in 0..3 {
        sem.release()?;
    }
    ensure!(sem.value() == 3, "value {}", sem.value());
    Ok(())
}

fn plain_semaphore_permits_are_lost_as_in_python() -> TestResult {
    // The documented contrast: a plain semaphore does not know its holders.
    let sem = Semaphore::new(1)?;
    let s2 = sem.clone();
    let mut k = Process::spawn(move || {
        s2.acquire();
        std::thread::sleep(Duration::from_secs(600));
    })?;
    ensure!(shmproc_tests::eventually(HANG_LIMIT, || sem.value() == 0));
    k.kill()?;
    let _ = k.join_timeout(HANG_LIMIT)?;
    ensure!(!sem.acquire_timeout(Duration::from_millis(100)), "a plain semaphore got a dead holder's permit back");
    Ok(())
}

fn robust_bounded_semaphore_keeps_its_bound_after_deaths() -> TestResult {
    let sem = RobustSemaphore::bounded(2)?;
    let kids = holders(&sem, 1, 2)?;
    ensure!(shmproc_tests::eventually(HANG_LIMIT, || sem.value() == 0));
    // While the holder lives, its permits are not taken back.
    ensure!(sem.acquire_timeout(Duration::from_millis(60)) == Err(PermitError::Timeout));
    ensure!(sem.release() == Err(ReleaseError), "an unbalanced release went past the bound");
    kill_all(kids)?;
    let a = sem.access_timeout(HANG_LIMIT)?;
    let b = sem.access_timeout(HANG_LIMIT)?;
    ensure!(sem.try_acquire() == Err(PermitError::WouldBlock), "more permits than the bound");
    drop((a, b));
    ensure!(sem.value() == 2);
    ensure!(sem.release() == Err(ReleaseError), "bound exceeded after the dead holder's permits came back");
    // BoundedSemaphore (plain) still refuses too.
    let plain = BoundedSemaphore::new(1)?;
    ensure!(plain.release().is_err());
    Ok(())
}

fn robust_permits_survive_kills_at_any_point() -> TestResult {
    // Children take and return permits as fast as they can and are killed
    // wherever they are: inside the internal lock, between recording a
    // holder and publishing the count, holding permits or not.
    const PERMITS: u32 = 2;
    let sem = RobustSemaphore::bounded(PERMITS)?;
    for round in 0..6u64 {
        let mut kids = Vec::new();
        for _ in 0..3 {
            let s = sem.clone();
            kids.push(Process::spawn(move || -> i32 {
                loop {
                    if let Ok(p) = s.access_timeout(Duration::from_millis(50)) {
                        std::hint::black_box(&p);
                    }
                }
            })?);
        }
        std::thread::sleep(Duration::from_millis(5 + round * 7));
        kill_all(kids)?;
        let mut got = Vec::new();
        for _ in 0..PERMITS {
            got.push(sem.access_timeout(HANG_LIMIT).map_err(|e| format!("round {round}: permit lost: {e}"))?);
        }
        ensure!(sem.try_acquire() == Err(PermitError::WouldBlock), "round {round}: more permits than the bound");
        drop(got);
        ensure!(sem.value() == PERMITS, "round {round}: value {}", sem.value());
    }
    Ok(())
}

fn robust_holder_table_full_is_an_error() -> TestResult {
    let sem = RobustSemaphore::new(64)?;
    let n = shmproc::core::robust_semaphore::HOLDERS;
    let kids = holders(&sem, n, 1)?;
    ensure!(shmproc_tests::eventually(HANG_LIMIT, || sem.value() == 64 - n as u32));
    ensure!(sem.try_acquire() == Err(PermitError::TableFull));
    ensure!(sem.acquire() == Err(PermitError::TableFull));
    kill_all(kids)?;
    // Records of dead holders are freed for new ones.
    ensure!(sem.acquire_timeout(HANG_LIMIT).is_ok());
    ensure!(sem.recover() == 63, "free after recovery: {}", sem.value());
    Ok(())
}

fn main() {
    shmproc_tests::run(trials![
        forged_mutex_word_is_taken_over_by_lock,
        forged_mutex_word_is_taken_over_by_try_lock_and_lock_timeout,
        forged_value_and_rlock_words_are_taken_over,
        forged_array_word_is_taken_over,
        forged_shared_map_word_is_recovered,
        genuine_reentrance_is_still_detected,
        reentrance_through_a_second_mapping_is_reentrance,
        robust_permits_come_back_after_sigkill,
        plain_semaphore_permits_are_lost_as_in_python,
        robust_bounded_semaphore_keeps_its_bound_after_deaths,
        robust_permits_survive_kills_at_any_point,
        robust_holder_table_full_is_an_error,
    ]);
}
