//! Locks, semaphores, events, conditions, barriers, values and arrays across
//! real processes, including holders killed with SIGKILL.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use shmproc::core::region::{kind, RegionObject};
use shmproc::{
    Array, Barrier, BarrierError, BoundedSemaphore, Condition, Event, Lock, LockTimeoutError, Mutex, OwnerDied,
    Process, RLock, Segment, Semaphore, TryLockError, Value,
};
use shmproc_tests::{ensure, eventually, proc_state, trials, TestResult, HANG_LIMIT};

struct Word(AtomicU32);
// SAFETY: a single atomic: valid for any bits.
unsafe impl RegionObject for Word {
    const KIND: u32 = kind::BYTES;
}

/// Shared counters for observing children (not under test themselves).
struct Counters {
    seg: Segment,
    first: u32,
}

impl Counters {
    fn new(n: u32) -> Counters {
        let seg = Segment::anonymous(4096 + n as usize * 128).unwrap();
        let mut first = u32::MAX;
        for i in 0..n {
            let info =
                seg.region().alloc::<Word>(format!("c{i}").as_bytes(), |w| w.0.store(0, Ordering::Relaxed)).unwrap();
            first = first.min(info.index);
        }
        Counters { seg, first }
    }
    fn get(&self, i: u32) -> &AtomicU32 {
        &self.seg.region().get::<Word>(self.first + i).unwrap().0
    }
}

fn mutex_counter_is_exact_across_four_processes() -> TestResult {
    let m = Mutex::new(0u64)?;
    let mut kids = Vec::new();
    for _ in 0..4 {
        let m = m.clone();
        kids.push(Process::spawn(move || {
            for _ in 0..20_000 {
                let mut g = m.lock().unwrap_or_else(OwnerDied::into_inner);
                // A non-atomic read-modify-write: only mutual exclusion keeps it exact.
                let v = *g;
                std::hint::black_box(&v);
                *g = v + 1;
            }
        })?);
    }
    for k in &mut kids {
        ensure!(k.join_timeout(HANG_LIMIT * 6)? == Some(0));
    }
    let total = *m.lock().map_err(|_| "owner died")?;
    ensure!(total == 80_000, "lost updates: {total}");
    ensure!(!m.is_locked());
    Ok(())
}

fn killed_holder_gives_owner_died_with_its_value() -> TestResult {
    let m = Mutex::new(0u64)?;
    let ready = Event::new()?;
    let (m2, r2) = (m.clone(), ready.clone());
    let holder = Process::spawn(move || {
        let mut g = m2.lock().unwrap();
        *g = 1234;
        r2.set();
        std::thread::sleep(Duration::from_secs(60));
        drop(g);
    })?;
    ensure!(ready.wait_timeout(HANG_LIMIT), "holder never locked");
    ensure!(m.owner().is_some_and(|o| o.alive && o.pid == holder.pid()), "{:?}", m.owner());
    // A second process blocks in lock() while the holder lives.
    let m3 = m.clone();
    let mut waiter = Process::spawn(move || match m3.lock() {
        Err(OwnerDied(g)) if *g == 1234 => 0,
        Err(OwnerDied(_)) => 2,
        Ok(_) => 3,
    })?;
    ensure!(eventually(HANG_LIMIT, || proc_state(waiter.pid()) == Some('S')));
    let killed_at = Instant::now();
    holder.kill()?;
    let code = waiter.join_timeout(HANG_LIMIT)?;
    eprintln!("blocked waiter recovered {:?} after the kill", killed_at.elapsed());
    ensure!(code == Some(0), "waiter exit {code:?}");
    // The lock works normally afterwards.
    let mut g = m.lock().map_err(|_| "OwnerDied reported twice")?;
    ensure!(*g == 1234);
    *g = 1;
    drop(g);
    ensure!(m.try_lock().is_ok());
    let mut holder = holder;
    ensure!(holder.join()? == -libc::SIGKILL);
    Ok(())
}

fn killed_holder_detected_by_lock_and_try_lock() -> TestResult {
    for use_try in [false, true] {
        let m = Mutex::new(0u64)?;
        let ready = Event::new()?;
        let (m2, r2) = (m.clone(), ready.clone());
        let holder = Process::spawn(move || {
            let mut g = m2.lock().unwrap();
            *g = 77;
            r2.set();
            std::thread::sleep(Duration::from_secs(60));
            drop(g);
        })?;
        ensure!(ready.wait_timeout(HANG_LIMIT));
        ensure!(matches!(m.try_lock(), Err(TryLockError::WouldBlock)));
        holder.kill()?;
        let mut holder = holder;
        holder.join()?;
        let start = Instant::now();
        let value = if use_try {
            match m.try_lock() {
                Err(TryLockError::OwnerDied(e)) => *e.into_inner(),
                other => return Err(format!("try_lock after death: {:?}", other.map(|_| ())).into()),
            }
        } else {
            match m.lock() {
                Err(e) => *e.into_inner(),
                Ok(_) => return Err("lock after death did not report OwnerDied".into()),
            }
        };
        eprintln!("recovered with {} in {:?}", if use_try { "try_lock" } else { "lock" }, start.elapsed());
        ensure!(value == 77);
        ensure!(m.lock().is_ok());
    }
    Ok(())
}

fn lock_timeouts_return_on_time() -> TestResult {
    let l = Lock::new()?;
    let holder = shmproc_tests::lock_holder(&l)?;
    let t = Duration::from_millis(120);
    let start = Instant::now();
    let r = l.lock_timeout(t);
    let elapsed = start.elapsed();
    ensure!(matches!(r, Err(LockTimeoutError::Timeout)), "{:?}", r.map(|_| ()));
    ensure!(elapsed >= t && elapsed < HANG_LIMIT, "{elapsed:?}");
    holder.kill()?;
    let mut holder = holder;
    holder.join()?;
    // Now the owner is dead: lock_timeout recovers instead of timing out.
    ensure!(matches!(l.lock_timeout(HANG_LIMIT), Err(LockTimeoutError::OwnerDied(_))));
    Ok(())
}

fn rlock_is_recursive_and_exclusive() -> TestResult {
    let l = RLock::new()?;
    let c = Counters::new(1);
    let outer = l.lock().map_err(|_| "died")?;
    let inner = l.lock().map_err(|_| "died")?;
    let l2 = l.clone();
    let seg = c.seg.clone();
    let first = c.first;
    let mut child = Process::spawn(move || {
        let c = Counters { seg, first };
        if l2.try_lock().is_ok() {
            return 1;
        }
        let _g = l2.lock().unwrap();
        // Only reached once the parent released both levels.
        if c.get(0).load(Ordering::SeqCst) != 1 {
            return 2;
        }
        0
    })?;
    std::thread::sleep(Duration::from_millis(50));
    drop(inner);
    ensure!(l.is_locked(), "released after the inner level");
    std::thread::sleep(Duration::from_millis(20));
    c.get(0).store(1, Ordering::SeqCst);
    drop(outer);
    ensure!(child.join_timeout(HANG_LIMIT)? == Some(0));
    Ok(())
}

fn semaphore_of_two_never_admits_three() -> TestResult {
    let sem = Semaphore::new(2)?;
    let c = Counters::new(2); // 0: inside now, 1: most seen inside
    let mut kids = Vec::new();
    for _ in 0..6 {
        let sem = sem.clone();
        let (seg, first) = (c.seg.clone(), c.first);
        kids.push(Process::spawn(move || {
            let c = Counters { seg, first };
            for _ in 0..40 {
                let _permit = sem.access();
                let now = c.get(0).fetch_add(1, Ordering::SeqCst) + 1;
                c.get(1).fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_micros(200));
                c.get(0).fetch_sub(1, Ordering::SeqCst);
            }
        })?);
    }
    for k in &mut kids {
        ensure!(k.join_timeout(HANG_LIMIT * 3)? == Some(0));
    }
    let max = c.get(1).load(Ordering::SeqCst);
    ensure!(max == 2, "most holders at once: {max}");
    ensure!(sem.value() == 2);
    Ok(())
}

fn semaphore_timeouts_and_bounds() -> TestResult {
    let s = Semaphore::new(0)?;
    let t = Duration::from_millis(100);
    let start = Instant::now();
    ensure!(!s.acquire_timeout(t));
    let elapsed = start.elapsed();
    ensure!(elapsed >= t && elapsed < HANG_LIMIT, "{elapsed:?}");
    // A release from another process wakes a blocked acquirer.
    let s2 = s.clone();
    let mut child = Process::spawn(move || if s2.acquire_timeout(HANG_LIMIT) { 0 } else { 1 })?;
    ensure!(eventually(HANG_LIMIT, || proc_state(child.pid()) == Some('S')));
    s.release()?;
    ensure!(child.join_timeout(HANG_LIMIT)? == Some(0));
    let b = BoundedSemaphore::new(1)?;
    ensure!(b.release().is_err(), "bounded semaphore released above its initial value");
    ensure!(b.try_acquire());
    ensure!(!b.try_acquire());
    b.release()?;
    ensure!(b.value() == 1);
    Ok(())
}

fn event_set_wakes_every_waiting_child() -> TestResult {
    let e = Event::new()?;
    let mut kids = Vec::new();
    for _ in 0..3 {
        let e = e.clone();
        kids.push(Process::spawn(move || if e.wait() && e.is_set() { 0 } else { 1 })?);
    }
    for k in &kids {
        ensure!(eventually(HANG_LIMIT, || proc_state(k.pid()) == Some('S')), "child not asleep");
    }
    ensure!(kids.iter().all(Process::is_alive));
    e.set();
    for k in &mut kids {
        ensure!(k.join_timeout(HANG_LIMIT)? == Some(0));
    }
    e.clear();
    ensure!(!e.is_set());
    let t = Duration::from_millis(80);
    let start = Instant::now();
    ensure!(!e.wait_timeout(t));
    ensure!(start.elapsed() >= t && start.elapsed() < HANG_LIMIT);
    Ok(())
}

fn condition_hands_off_between_processes() -> TestResult {
    let state = Mutex::new([0u64; 2])?; // [produced, consumed]
    let cond = Condition::new()?;
    let (s2, c2) = (state.clone(), cond.clone());
    let mut consumer = Process::spawn(move || {
        let mut consumed = 0;
        while consumed < 100 {
            let mut g = c2.wait_while(s2.lock().unwrap(), |s| s[0] == s[1]).unwrap();
            g[1] += 1;
            consumed = g[1];
            drop(g);
            c2.notify_all();
        }
        0
    })?;
    for _ in 0..100 {
        let mut g = cond.wait_while(state.lock().map_err(|_| "died")?, |s| s[0] != s[1]).map_err(|_| "died")?;
        g[0] += 1;
        drop(g);
        cond.notify_all();
    }
    ensure!(consumer.join_timeout(HANG_LIMIT)? == Some(0));
    let g = state.lock().map_err(|_| "died")?;
    ensure!(g[0] == 100 && g[1] == 100, "{:?}", *g);
    drop(g);
    let t = Duration::from_millis(60);
    let start = Instant::now();
    let (g, r) = cond.wait_timeout(state.lock().map_err(|_| "died")?, t).map_err(|_| "died")?;
    ensure!(r.timed_out() || start.elapsed() < t, "spurious early return must not claim a timeout");
    drop(g);
    let (_g, r) = cond.wait_timeout_while(state.lock().map_err(|_| "died")?, t, |_| true).map_err(|_| "died")?;
    ensure!(r.timed_out() && start.elapsed() >= t && start.elapsed() < HANG_LIMIT);
    Ok(())
}

/// `notify(n)` wakes `n` of the processes asleep on the condition, and
/// no more; a later `notify(n)` with `n` above the sleepers wakes the rest.
fn condition_notify_n_wakes_that_many() -> TestResult {
    // [ready to wait, woken by a notify, timed out]
    let state = Mutex::new([0u32; 3])?;
    let cond = Condition::new()?;
    let mut kids = Vec::new();
    for _ in 0..3 {
        let (state, cond) = (state.clone(), cond.clone());
        kids.push(Process::spawn(move || {
            let mut g = state.lock().unwrap();
            g[0] += 1;
            let (mut g, r) = cond.wait_timeout(g, HANG_LIMIT).unwrap();
            g[if r.timed_out() { 2 } else { 1 }] += 1;
        })?);
    }
    let count = |i: usize| state.lock().map(|g| g[i]).map_err(|_| "died");
    ensure!(eventually(HANG_LIMIT, || count(0) == Ok(3)));
    // Each has released the mutex inside its wait: wait until all three sleep.
    ensure!(eventually(HANG_LIMIT, || kids.iter().all(|k| proc_state(k.pid()) == Some('S'))));
    cond.notify(2);
    ensure!(eventually(HANG_LIMIT, || count(1) == Ok(2)), "notify(2) did not wake two");
    std::thread::sleep(Duration::from_millis(200));
    ensure!(count(1)? == 2 && count(2)? == 0, "notify(2) woke more than two");
    cond.notify(usize::MAX);
    for k in &mut kids {
        ensure!(k.join_timeout(HANG_LIMIT)? == Some(0));
    }
    ensure!(count(1)? == 3 && count(2)? == 0);
    Ok(())
}

fn barrier_releases_all_with_one_leader() -> TestResult {
    let b = Barrier::new(3)?;
    let leaders = Counters::new(1);
    let mut kids = Vec::new();
    for _ in 0..3 {
        let b = b.clone();
        let (seg, first) = (leaders.seg.clone(), leaders.first);
        kids.push(Process::spawn(move || {
            let c = Counters { seg, first };
            for _ in 0..20 {
                match b.wait_timeout(HANG_LIMIT) {
                    Ok(r) if r.is_leader() => {
                        c.get(0).fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(_) => return 1,
                }
            }
            0
        })?);
    }
    for k in &mut kids {
        ensure!(k.join_timeout(HANG_LIMIT * 3)? == Some(0));
    }
    ensure!(leaders.get(0).load(Ordering::SeqCst) == 20, "one leader per round");
    ensure!(!b.is_broken());
    Ok(())
}

/// Python's `action`: run once per round by the last party to arrive,
/// before any party is released (each party sees the round's count at once).
fn barrier_action_runs_once_before_release() -> TestResult {
    let rounds = Value::new(0u32)?;
    let r = rounds.clone();
    let b = Barrier::new(3)?.with_action(move || {
        std::thread::sleep(Duration::from_millis(2));
        r.update(|n| *n += 1);
    });
    let mut kids = Vec::new();
    for _ in 0..2 {
        let (b, rounds) = (b.clone(), rounds.clone());
        kids.push(Process::spawn(move || {
            for round in 1..=10 {
                match b.wait_timeout(HANG_LIMIT) {
                    Ok(_) if rounds.get() == round => {}
                    Ok(_) => return 1, // released before the action ran
                    Err(_) => return 2,
                }
            }
            0
        })?);
    }
    for round in 1..=10 {
        b.wait_timeout(HANG_LIMIT).map_err(|e| format!("round {round}: {e}"))?;
        ensure!(rounds.get() == round, "released before the round's action ran");
    }
    for k in &mut kids {
        ensure!(k.join_timeout(HANG_LIMIT)? == Some(0));
    }
    ensure!(rounds.get() == 10 && !b.is_broken());
    Ok(())
}

/// An action that panics breaks the barrier for the others and panics on in
/// the party that ran it; an action whose process dies breaks it too.
fn barrier_action_failure_breaks_it() -> TestResult {
    let b = Barrier::new(2)?;
    let waiter = b.clone();
    let mut child = Process::spawn(move || match waiter.wait_timeout(HANG_LIMIT) {
        Err(BarrierError::Broken) => 0,
        _ => 1,
    })?;
    ensure!(eventually(HANG_LIMIT, || b.n_waiting() == 1), "the child never arrived");
    let panicking = b.clone().with_action(|| panic!("the action failed"));
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| panicking.wait_timeout(HANG_LIMIT)));
    ensure!(ran.is_err(), "the action's panic did not reach the party that ran it");
    ensure!(child.join_timeout(HANG_LIMIT)? == Some(0), "the other party was not told the barrier broke");
    ensure!(b.is_broken());

    // The last party dies inside its action: the waiting one is not left hanging.
    b.reset();
    let in_action = Event::new()?;
    let (leader, flag) = (b.clone(), in_action.clone());
    let arrive_last = b.clone();
    let mut dying = Process::spawn(move || {
        ensure_arrived_after(&arrive_last);
        let b = leader.with_action(move || {
            flag.set();
            std::thread::sleep(HANG_LIMIT * 6);
        });
        let _ = b.wait();
    })?;
    let killer = {
        let in_action = in_action.clone();
        let pid = dying.pid();
        std::thread::spawn(move || {
            if in_action.wait_timeout(HANG_LIMIT) {
                // SAFETY: plain kill(2) of our own child.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        })
    };
    let r = b.wait_timeout(HANG_LIMIT);
    killer.join().map_err(|_| "killer thread")?;
    ensure!(in_action.is_set(), "the child never ran its action");
    ensure!(r == Err(BarrierError::Broken), "waiting party got {r:?}, not Broken");
    ensure!(dying.join_timeout(HANG_LIMIT)?.is_some());
    Ok(())
}

/// Waits until one party (the test's main process) waits at `b`.
fn ensure_arrived_after(b: &Barrier) {
    while b.n_waiting() == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `with_timeout` is the default of `wait` (and of `wait_async`: see the
/// async_wait tests, whose binary may start threads).
fn barrier_default_timeout_applies_to_wait() -> TestResult {
    let b = Barrier::new(2)?.with_timeout(Duration::from_millis(30));
    ensure!(b.wait() == Err(BarrierError::Timeout));
    ensure!(b.is_broken() && b.n_waiting() == 0);
    b.reset();
    // An explicit timeout overrides it.
    let b2 = b.clone();
    let mut child = Process::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        b2.wait_timeout(HANG_LIMIT).is_ok() as i32
    })?;
    ensure!(b.wait_timeout(HANG_LIMIT).is_ok(), "the explicit timeout did not replace the default");
    ensure!(child.join_timeout(HANG_LIMIT)? == Some(1));
    Ok(())
}

fn dead_barrier_party_breaks_the_barrier() -> TestResult {
    let b = Barrier::new(3)?;
    let b1 = b.clone();
    let mut survivor = Process::spawn(move || match b1.wait() {
        Err(BarrierError::Broken) => 0,
        Err(BarrierError::Timeout) => 2,
        Ok(_) => 3,
    })?;
    let b2 = b.clone();
    let victim = Process::spawn(move || {
        let _ = b2.wait();
    })?;
    ensure!(eventually(HANG_LIMIT, || b.n_waiting() == 2), "parties never arrived");
    victim.kill()?;
    let code = survivor.join_timeout(HANG_LIMIT)?;
    ensure!(code == Some(0), "survivor exit {code:?}");
    ensure!(b.is_broken());
    ensure!(b.wait() == Err(BarrierError::Broken));
    b.reset();
    ensure!(!b.is_broken());
    let mut victim = victim;
    victim.join()?;
    Ok(())
}

/// The only other party of a two-party barrier dies waiting; nobody is
/// left asleep to notice, so the last party must: it gets `Broken`, not a
/// round tripped with a dead party (after which the next round would hang),
/// with or without an action.
fn last_party_finds_a_dead_waiter_and_breaks() -> TestResult {
    for with_action in [false, true] {
        let ran = Value::new(0u32)?;
        let r = ran.clone();
        let mut b = Barrier::new(2)?;
        if with_action {
            b = b.with_action(move || {
                r.set(1);
            });
        }
        let b2 = b.clone();
        let mut victim = Process::spawn(move || {
            let _ = b2.wait();
        })?;
        ensure!(eventually(HANG_LIMIT, || b.n_waiting() == 1), "the victim never arrived");
        victim.kill()?;
        ensure!(victim.join_timeout(HANG_LIMIT)?.is_some());
        let got = b.wait_timeout(HANG_LIMIT);
        ensure!(got == Err(BarrierError::Broken), "last party got {got:?} (action: {with_action})");
        ensure!(b.is_broken() && ran.get() == 0, "the action ran for a round with a dead party");
        b.reset();
        ensure!(!b.is_broken() && b.n_waiting() == 0);
    }
    Ok(())
}

fn barrier_timeout_breaks_it_for_the_others() -> TestResult {
    let b = Barrier::new(3)?;
    let b1 = b.clone();
    let mut other = Process::spawn(move || match b1.wait() {
        Err(BarrierError::Broken) => 0,
        _ => 1,
    })?;
    ensure!(eventually(HANG_LIMIT, || b.n_waiting() == 1));
    let t = Duration::from_millis(100);
    let start = Instant::now();
    ensure!(b.wait_timeout(t) == Err(BarrierError::Timeout));
    ensure!(start.elapsed() >= t && start.elapsed() < HANG_LIMIT);
    ensure!(other.join_timeout(HANG_LIMIT)? == Some(0));
    b.reset();
    let b2 = b.clone();
    let b3 = b.clone();
    let mut p1 = Process::spawn(move || b2.wait().map(|_| ()).map_err(|e| e.to_string()))?;
    let mut p2 = Process::spawn(move || b3.wait().map(|_| ()).map_err(|e| e.to_string()))?;
    ensure!(b.wait_timeout(HANG_LIMIT).is_ok(), "barrier unusable after reset");
    ensure!(p1.join()? == 0 && p2.join()? == 0);
    Ok(())
}

fn value_and_array_are_shared_not_copied() -> TestResult {
    let v = Value::new(100i64)?;
    let a = Array::<f64>::zeroed(8)?;
    let plain = 100i64;
    let (v2, a2) = (v.clone(), a.clone());
    let mut child = Process::spawn(move || {
        let mut plain = plain;
        plain -= 100; // the child's own copy
        std::hint::black_box(plain);
        v2.update(|x| *x += 1);
        let mut xs = a2.lock().unwrap();
        for (i, x) in xs.iter_mut().enumerate() {
            *x = i as f64 * 0.5;
        }
    })?;
    ensure!(child.join()? == 0);
    ensure!(plain == 100);
    ensure!(v.get() == 101);
    ensure!(a.to_vec() == (0..8).map(|i| i as f64 * 0.5).collect::<Vec<_>>());
    ensure!(a.get(8).is_none() && !a.set(8, 1.0));
    ensure!(a.len() == 8);
    let seg = Segment::anonymous(1 << 16)?;
    let named = Array::<u32>::zeroed_in(&seg, "xs", 5)?;
    named.set(4, 9);
    let opened = Array::<u32>::open_in(&seg, "xs")?;
    ensure!(opened.len() == 5 && opened.get(4) == Some(9));
    ensure!(Mutex::<u64>::open_in(&seg, "xs").is_err(), "an array opened as a mutex");
    Ok(())
}

// Spawn-mode children get the handles through rkyv: the segment fds travel
// with the argument.
fn spawned_child_uses_handles((m, e, v): (Mutex<u64>, Event, Value<u32>)) -> i32 {
    *m.lock().unwrap() += 5;
    v.set(7);
    e.set();
    0
}

fn spawned_child_waits((b, s): (Barrier, Semaphore)) -> i32 {
    if b.wait_timeout(HANG_LIMIT).is_err() {
        return 1;
    }
    s.release().map(|_| 0).unwrap_or(2)
}

fn handles_move_into_spawn_mode_children() -> TestResult {
    let m = Mutex::new(10u64)?;
    let e = Event::new()?;
    let v = Value::new(0u32)?;
    let mut child = Process::builder()
        .start_method(shmproc::StartMethod::Spawn)
        .spawn_fn(spawned_child_uses_handles, (m.clone(), e.clone(), v.clone()))?;
    ensure!(child.join_timeout(HANG_LIMIT)? == Some(0));
    ensure!(e.is_set());
    ensure!(*m.lock().map_err(|_| "died")? == 15);
    ensure!(v.get() == 7);
    let b = Barrier::new(2)?;
    let s = Semaphore::new(0)?;
    let mut child = Process::builder()
        .start_method(shmproc::StartMethod::Spawn)
        .spawn_fn(spawned_child_waits, (b.clone(), s.clone()))?;
    ensure!(b.wait_timeout(HANG_LIMIT).is_ok());
    ensure!(s.acquire_timeout(HANG_LIMIT));
    ensure!(child.join_timeout(HANG_LIMIT)? == Some(0));
    Ok(())
}

fn named_segment_holds_many_objects() -> TestResult {
    let name = format!("sync-{}", std::process::id());
    let seg = Segment::create_named(&name, 1 << 16)?;
    let m = Mutex::new_in(&seg, "counter", 0u64)?;
    let _s = Semaphore::new_in(&seg, "slots", 3)?;
    let _e = Event::new_in(&seg, "go")?;
    let n2 = name.clone();
    let mut child = Process::spawn(move || {
        let seg = Segment::open(&n2).unwrap();
        let m = Mutex::<u64>::open_in(&seg, "counter").unwrap();
        let s = Semaphore::open_in(&seg, "slots").unwrap();
        let e = Event::open_in(&seg, "go").unwrap();
        *m.lock().unwrap() += 1;
        if s.value() != 3 {
            return 2;
        }
        e.set();
        0
    })?;
    ensure!(child.join()? == 0);
    ensure!(*m.lock().map_err(|_| "died")? == 1);
    ensure!(Event::open_in(&seg, "go")?.is_set());
    ensure!(seg.region().objects().count() == 3);
    Ok(())
}

fn main() {
    shmproc_tests::run(trials![
        mutex_counter_is_exact_across_four_processes,
        killed_holder_gives_owner_died_with_its_value,
        killed_holder_detected_by_lock_and_try_lock,
        lock_timeouts_return_on_time,
        rlock_is_recursive_and_exclusive,
        semaphore_of_two_never_admits_three,
        semaphore_timeouts_and_bounds,
        event_set_wakes_every_waiting_child,
        condition_hands_off_between_processes,
        condition_notify_n_wakes_that_many,
        barrier_releases_all_with_one_leader,
        barrier_action_runs_once_before_release,
        barrier_action_failure_breaks_it,
        barrier_default_timeout_applies_to_wait,
        dead_barrier_party_breaks_the_barrier,
        last_party_finds_a_dead_waiter_and_breaks,
        barrier_timeout_breaks_it_for_the_others,
        value_and_array_are_shared_not_copied,
        handles_move_into_spawn_mode_children,
        named_segment_holds_many_objects,
    ]);
}
