//! Waiting without a thread per waiter: the machinery behind the crate's
//! `async` methods (`recv_async`, `send_async`, `Event::wait_async`,
//! `Semaphore::acquire_async`, `Process::join_async`,
//! `AsyncResult: IntoFuture`).
//!
//! # Mechanism
//!
//! A blocking waiter sleeps on a shared futex word (`core::futex`); the
//! waking process bumps the word and calls `FUTEX_WAKE` when its waiter
//! count says someone sleeps. An `async` waiter does the same bookkeeping
//! (it is counted as a sleeper, so the waking side is **unchanged**) but
//! instead of sleeping it hands `(word, expected value, Waker)` to a
//! **helper thread** of its process and returns `Pending`.
//!
//! * The helper threads (named `shmproc-async-N`) start lazily, on the first
//!   wait that has to wait. Each one sleeps in `futex_waitv(2)` (Linux 5.16+)
//!   on up to [`WORDS_PER_HELPER`] (127) distinct registered words, plus one
//!   private control word through which registering threads tell it that
//!   its set changed. The words are waited on as **shared** futexes
//!   (`FUTEX_32`, no `FUTEX_PRIVATE_FLAG`), so a plain `FUTEX_WAKE` from
//!   another process wakes the helper.
//! * Futures waiting on the same word share one entry. A word that needs a
//!   128th slot goes to a new helper thread, so `n` distinct words use at
//!   most `ceil(n / 127)` helpers, whatever the number of futures, and no
//!   file descriptor is opened per waiter (none at all).
//! * When the kernel reports a word woken, or a word no longer holds its
//!   expected value (`EAGAIN`: every word is then re-read), the helper wakes
//!   every `Waker` registered on it. Each registration fires once; the
//!   future re-checks its condition when polled and registers again if it
//!   must still wait.
//! * A registration may also carry a re-check time (a liveness slice, to
//!   notice a peer that died without waking anyone, or a short back-off
//!   while another receiver holds a queue's side); the helper's
//!   `futex_waitv` timeout is the earliest of them. Waits with nothing to
//!   watch (a child's exit, a pool result) are timed re-checks only.
//! * **Wake-ups are not lost.** A `FUTEX_WAKE` of one waiter (a semaphore
//!   release) may be taken by the helper rather than by a blocked thread.
//!   The helper then wakes every future on that word; a future that was
//!   woken but is dropped before it consumed anything passes the wake-up on
//!   (one `FUTEX_WAKE` on the word), and a wake-up that reaches a word whose
//!   futures are already gone is passed on by the helper itself. The queues
//!   and events wake all sleepers, so nothing can be absorbed there.
//! * A registration holds a clone of the [`Segment`](crate::Segment) handle
//!   its word lives in, so a future leaked with `mem::forget` (whose `Drop`
//!   never unregisters it) keeps that memory mapped until the registration
//!   fires, rather than leaving the helper a dangling address.
//! * **After `fork`** the child has no helper thread: the crate's
//!   `pthread_atfork` child handler forgets the parent's registrations, and
//!   the first wait in the child starts the child's own helpers.
//!
//! # Fallback: polling
//!
//! Where `futex_waitv` is missing (`ENOSYS`, kernels before 5.16) or refused
//! (`EPERM`, a seccomp filter), or when forced with the environment variable
//! `SHMPROC_ASYNC_POLL=1` (read once, at the first async wait) or with
//! [`force_poll`], the helper threads do not sleep in the kernel on the
//! words: they re-read every registered word after a sleep that starts at
//! 50 µs and doubles up to 10 ms while nothing changes, and is reset to
//! 50 µs whenever a future registers. A wake-up is then seen up to one
//! sleep late (10 ms in a long idle wait), and an idle process with pending
//! futures wakes up to 100 times a second. [`backend`] tells which is in
//! use.
//!
//! # Costs
//!
//! A future that finds its message (or room, or set event) ready costs the
//! same as `try_recv` (no registration, no system call). One that has to wait
//! costs, per wait: a lock of the process-wide registry, one `FUTEX_WAKE` of
//! the helper's control word, the helper's re-arm, and finally one wake of the
//! runtime thread by the helper. The queue futures spin briefly (up to
//! [`SPIN_FOR`], 20 µs, on the executor's thread, looking every 1–5 µs as
//! the blocking calls do), then yield to the executor up to [`YIELDS`]
//! times (returning `Pending` with the waker already woken), before they
//! register: a peer on another core usually answers within that time, and a
//! round trip through the helper (a `membarrier`, two futex wakes and the
//! executor's own unpark) costs more.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use shmproc_core::futex;

/// Distinct words one helper thread waits on (`futex_waitv` takes at most
/// 128 futexes; one is the helper's control word).
pub const WORDS_PER_HELPER: usize = 127;

/// How long a queue or event future spins, re-checking, before it
/// registers with a helper thread (see the module docs).
pub const SPIN_FOR: Duration = Duration::from_micros(20);

/// How many times a queue future yields to the executor (polled again at
/// once) after its spin and before it registers with a helper thread.
pub const YIELDS: u32 = 64;

/// The first sleep of the polling fallback; it doubles up to [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_micros(50);
/// The longest sleep of the polling fallback.
pub const POLL_MAX: Duration = Duration::from_millis(10);

/// How the helper threads wait (see the module docs).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `futex_waitv` on the registered shared words: woken by the waking
    /// process's `FUTEX_WAKE`.
    Waitv,
    /// Re-reading the registered words with a growing sleep (10 ms at most).
    Poll,
}

/// 0: not decided yet; 1: waitv; 2: poll (forced); 3: poll (waitv refused).
static MODE: AtomicU8 = AtomicU8::new(0);
const MODE_UNSET: u8 = 0;
const MODE_WAITV: u8 = 1;
const MODE_FORCED: u8 = 2;
const MODE_REFUSED: u8 = 3;

/// The backend in use in this process: decided at the first async wait that
/// had to wait (probing `futex_waitv` once), or by this call if none has.
///
/// ```
/// let b = shmproc::async_wait::backend();
/// assert!(matches!(b, shmproc::async_wait::Backend::Waitv | shmproc::async_wait::Backend::Poll));
/// ```
#[must_use]
pub fn backend() -> Backend {
    match mode() {
        MODE_WAITV => Backend::Waitv,
        _ => Backend::Poll,
    }
}

/// Forces the polling fallback on (`true`) or lets the process use
/// `futex_waitv` again where the kernel allows it (`false`), for waits from
/// now on (the helper threads switch at their next wake-up, which this call
/// causes). `SHMPROC_ASYNC_POLL=1` in the environment does the same as
/// `force_poll(true)` before the first wait.
///
/// ```
/// use shmproc::async_wait::{backend, force_poll, Backend};
/// force_poll(true);
/// assert_eq!(backend(), Backend::Poll);
/// force_poll(false);
/// ```
pub fn force_poll(on: bool) {
    if on {
        MODE.store(MODE_FORCED, Ordering::Relaxed);
    } else {
        MODE.store(if waitv_supported() { MODE_WAITV } else { MODE_REFUSED }, Ordering::Relaxed);
    }
    let g = lock();
    if let Some(st) = g.state() {
        for h in &st.helpers {
            h.shared.poke();
        }
    }
}

/// Helper threads this process has started since it began (or since it was
/// forked); they are never stopped, and each serves at most
/// [`WORDS_PER_HELPER`] words at a time.
///
/// ```
/// let n = shmproc::async_wait::helper_threads();
/// assert!(n < 1_000);
/// ```
#[must_use]
pub fn helper_threads() -> usize {
    let g = lock();
    g.state().map_or(0, |s| s.helpers.len())
}

/// Runs a future to completion on the calling thread, parking it while the
/// future is pending: the smallest executor, for programs without a runtime
/// and for examples. Any executor works with the crate's futures.
///
/// ```
/// let e = shmproc::Event::new()?;
/// e.set();
/// assert!(shmproc::async_wait::block_on(e.wait_async()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// Distinct words the helper threads watch right now (futures waiting on
/// the same word share one).
///
/// ```
/// assert_eq!(shmproc::async_wait::watched_words(), 0);
/// ```
#[must_use]
pub fn watched_words() -> usize {
    let g = lock();
    g.state().map_or(0, |s| s.helpers.iter().map(|h| h.words.len()).sum())
}

fn mode() -> u8 {
    let m = MODE.load(Ordering::Relaxed);
    if m != MODE_UNSET {
        return m;
    }
    let forced = std::env::var_os("SHMPROC_ASYNC_POLL").is_some_and(|v| v == "1");
    let m = if forced {
        MODE_FORCED
    } else if waitv_supported() {
        MODE_WAITV
    } else {
        MODE_REFUSED
    };
    let _ = MODE.compare_exchange(MODE_UNSET, m, Ordering::Relaxed, Ordering::Relaxed);
    MODE.load(Ordering::Relaxed)
}

// ------------------------------------------------------------ futex_waitv --

/// `struct futex_waitv` of `<linux/futex.h>`.
#[repr(C)]
#[derive(Copy, Clone)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// `FUTEX2_SIZE_U32`; no `FUTEX2_PRIVATE`: the words are shared.
const FUTEX2_SIZE_U32: u32 = 0x02;
/// `__NR_futex_waitv` (the same number on every architecture).
const SYS_FUTEX_WAITV: libc::c_long = 449;

/// Elsewhere than Linux there is no `futex_waitv`: the polling fallback.
#[cfg(not(target_os = "linux"))]
fn futex_waitv(_list: &[FutexWaitv], _deadline: Option<Instant>) -> Result<usize, i32> {
    Err(libc::ENOSYS)
}

/// `futex_waitv` on `list` until `deadline` (monotonic); the index woken, or
/// the errno.
#[cfg(target_os = "linux")]
fn futex_waitv(list: &[FutexWaitv], deadline: Option<Instant>) -> Result<usize, i32> {
    let ts = deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        let nanos = shmproc_core::Deadline::after(left).as_nanos();
        libc::timespec { tv_sec: (nanos / 1_000_000_000) as libc::time_t, tv_nsec: (nanos % 1_000_000_000) as _ }
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `list` is a live array of `list.len()` (at most 128) futex_waitv
    // structs; each uaddr is a registered word, or one that was registered
    // when the list was built (the kernel only reads it, failing with EFAULT
    // if it is gone); the timespec is null or points at `ts`.
    let r = unsafe {
        libc::syscall(SYS_FUTEX_WAITV, list.as_ptr(), list.len() as libc::c_uint, 0u32, ts_ptr, libc::CLOCK_MONOTONIC)
    };
    if r >= 0 {
        Ok(r as usize)
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL))
    }
}

/// Whether the kernel lets this process use `futex_waitv`: one call on a
/// word that does not hold the expected value answers `EAGAIN` at once where
/// it does.
fn waitv_supported() -> bool {
    let w = AtomicU32::new(1);
    let list = [FutexWaitv { val: 0, uaddr: w.as_ptr() as u64, flags: FUTEX2_SIZE_U32, reserved: 0 }];
    !matches!(futex_waitv(&list, Some(Instant::now())), Err(libc::ENOSYS | libc::EPERM | libc::EINVAL))
}

#[cfg(not(target_os = "linux"))]
fn wake_one_raw(_addr: usize) {}

/// `FUTEX_WAKE` of one waiter on `addr` (shared). A word that was unmapped
/// meanwhile makes the kernel answer `EFAULT`; one mapped again there gets
/// a spurious wake-up, which every waiter tolerates.
#[cfg(target_os = "linux")]
fn wake_one_raw(addr: usize) {
    // SAFETY: FUTEX_WAKE only looks `addr` up in the kernel's futex hash; it
    // reads and writes no user memory.
    unsafe { libc::syscall(libc::SYS_futex, addr as *const u32, libc::FUTEX_WAKE, 1) };
}

// ---------------------------------------------------------- the registry --

/// One helper thread's shared part.
struct Helper {
    /// The private control word: bumped (and woken) when the helper's set of
    /// words or its earliest re-check changes.
    control: AtomicU32,
}

impl Helper {
    fn poke(&self) {
        self.control.fetch_add(1, Ordering::Release);
        futex::wake_all(&self.control);
    }
}

struct Entry {
    id: u64,
    waker: Waker,
    recheck: Option<Instant>,
    /// The mapping the word lives in, kept alive while the entry exists,
    /// so that the helper's reads of the word stay valid even if the future
    /// that registered it is leaked (`mem::forget`) rather than dropped.
    _keep: Option<crate::Segment>,
}

/// A watched word and the futures waiting on it.
struct Word {
    addr: usize,
    expected: u32,
    pass_on: bool,
    entries: Vec<Entry>,
}

struct Slot {
    shared: Arc<Helper>,
    words: Vec<Word>,
    /// The timeout the helper is sleeping with (`None`: none).
    armed_until: Option<Instant>,
}

struct State {
    /// Bumped when a forked child forgets its parent's registrations.
    epoch: u64,
    next_id: u64,
    helpers: Vec<Slot>,
    /// Re-checks without a word, served by helper 0.
    timers: Vec<Entry>,
}

/// The process-wide registry behind a small futex lock of its own, so that
/// the fork-child handler can reset it (a `std::sync::Mutex` held by another
/// thread at `fork` would stay locked in the child forever).
struct Global {
    lock: AtomicU32,
    state: UnsafeCell<Option<State>>,
    /// Epochs used so far (survives resets).
    epochs: AtomicU32,
}

// SAFETY: `state` is only accessed through `Guard`, which holds `lock`, and
// what it holds may move between threads (checked below).
unsafe impl Sync for Global {}

const _: () = {
    const fn send<T: Send>() {}
    send::<State>();
};

static GLOBAL: Global = Global { lock: AtomicU32::new(0), state: UnsafeCell::new(None), epochs: AtomicU32::new(0) };

struct Guard;

fn lock() -> Guard {
    if GLOBAL.lock.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_ok() {
        return Guard;
    }
    // 0 unlocked, 1 locked, 2 locked with sleepers.
    while GLOBAL.lock.swap(2, Ordering::Acquire) != 0 {
        futex::wait(&GLOBAL.lock, 2, None);
    }
    Guard
}

impl Drop for Guard {
    fn drop(&mut self) {
        if GLOBAL.lock.swap(0, Ordering::Release) == 2 {
            futex::wake_one(&GLOBAL.lock);
        }
    }
}

impl Guard {
    fn state(&self) -> Option<&State> {
        // SAFETY: the lock is held (self exists), so nobody else touches it.
        unsafe { (*GLOBAL.state.get()).as_ref() }
    }

    #[allow(clippy::mut_from_ref)]
    fn state_mut(&self) -> &mut State {
        // SAFETY: the lock is held; `Guard` is neither Clone nor Send, and
        // this is never called twice for one borrow (each caller uses the
        // result within one function while holding the guard).
        let s = unsafe { &mut *GLOBAL.state.get() };
        s.get_or_insert_with(|| State {
            epoch: u64::from(GLOBAL.epochs.fetch_add(1, Ordering::Relaxed)),
            next_id: 1,
            helpers: Vec::new(),
            timers: Vec::new(),
        })
    }
}

/// The fork-child handler's part: the child has no helper thread, so the
/// parent's registrations (and its wakers, which belong to the parent's
/// threads) are forgotten, leaked rather than dropped, and the lock is
/// released whoever held it. Runs in the single thread of a fresh child.
pub(crate) fn reset_after_fork() {
    GLOBAL.lock.store(0, Ordering::Relaxed);
    // SAFETY: the child is single-threaded here; nobody holds a reference
    // into the state (the forking thread was not inside the registry: it
    // was calling fork).
    let old = unsafe { (*GLOBAL.state.get()).take() };
    std::mem::forget(old);
}

/// Starts helper thread `index` (its slot was just pushed).
fn start_helper(index: usize, shared: Arc<Helper>, epoch: u64) -> bool {
    std::thread::Builder::new()
        .name(format!("shmproc-async-{index}"))
        .spawn(move || helper_main(index, &shared, epoch))
        .is_ok()
}

/// Where a [`Waiting`] is registered.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Place {
    Nowhere,
    Word { helper: usize, addr: usize },
    Timer,
}

/// One future's registration with the helper threads; dropping it
/// unregisters.
#[derive(Debug)]
pub(crate) struct Waiting {
    id: u64,
    epoch: u64,
    place: Place,
}

impl Waiting {
    pub(crate) const fn new() -> Waiting {
        Waiting { id: 0, epoch: u64::MAX, place: Place::Nowhere }
    }

    /// Has `waker` woken once `word` no longer holds `expected` or a wake-up
    /// reaches it, or at `recheck`, whichever comes first. Replaces any
    /// previous registration of this `Waiting`. `pass_on`: the word's
    /// wakers wake one waiter at a time (see the module docs).
    ///
    /// # Safety
    ///
    /// `word` must lie in the mapping of `keep` (a clone of which the
    /// registration holds, so the helper thread's reads of the word stay
    /// valid however the future ends), or, with `keep` `None`, stay valid
    /// until this `Waiting` is disarmed, re-registered or dropped, and the
    /// `Waiting` must not be leaked.
    pub(crate) unsafe fn watch(
        &mut self,
        keep: Option<&crate::Segment>,
        word: &AtomicU32,
        expected: u32,
        recheck: Option<Instant>,
        pass_on: bool,
        waker: &Waker,
    ) {
        let addr = word.as_ptr() as usize;
        let mut wake_now: Vec<Waker> = Vec::new();
        let _old: Option<Entry>;
        {
            let g = lock();
            let st = g.state_mut();
            _old = self.rearm_locked(st);
            let entry = Entry { id: self.id, waker: waker.clone(), recheck, _keep: keep.cloned() };
            // The helper that already watches the word, else the first with
            // room, else a new one.
            let found = st.helpers.iter().position(|h| h.words.iter().any(|w| w.addr == addr));
            let index = match found.or_else(|| st.helpers.iter().position(|h| h.words.len() < WORDS_PER_HELPER)) {
                Some(i) => i,
                None => match new_helper(st) {
                    Some(i) => i,
                    None => {
                        // No thread could be started: have the future poll
                        // again at once rather than never.
                        drop(g);
                        waker.wake_by_ref();
                        return;
                    }
                },
            };
            let slot = &mut st.helpers[index];
            let mut poke = recheck.is_some_and(|r| slot.armed_until.map_or(true, |a| r < a));
            match slot.words.iter_mut().find(|w| w.addr == addr) {
                Some(w) if w.expected == expected => {
                    w.pass_on |= pass_on;
                    w.entries.push(entry);
                }
                Some(w) => {
                    // The word moved on since the others registered: they
                    // must look again.
                    wake_now.extend(w.entries.drain(..).map(|e| e.waker));
                    w.expected = expected;
                    w.pass_on |= pass_on;
                    w.entries.push(entry);
                    poke = true;
                }
                None => {
                    slot.words.push(Word { addr, expected, pass_on, entries: vec![entry] });
                    poke = true;
                }
            }
            if poke {
                slot.shared.poke();
            }
            self.place = Place::Word { helper: index, addr };
        }
        for w in wake_now {
            w.wake();
        }
    }

    /// Has `waker` woken at `at` (a timed re-check with nothing to watch).
    pub(crate) fn sleep_until(&mut self, at: Instant, waker: &Waker) {
        let _old: Option<Entry>;
        let g = lock();
        let st = g.state_mut();
        _old = self.rearm_locked(st);
        if st.helpers.is_empty() && new_helper(st).is_none() {
            drop(g);
            waker.wake_by_ref();
            return;
        }
        st.timers.push(Entry { id: self.id, waker: waker.clone(), recheck: Some(at), _keep: None });
        let slot = &mut st.helpers[0];
        if slot.armed_until.map_or(true, |a| at < a) {
            slot.shared.poke();
        }
        self.place = Place::Timer;
    }

    /// Unregisters; returns whether the registration had fired (its waker
    /// was woken by a helper) and was not registered again since.
    pub(crate) fn disarm(&mut self) -> bool {
        if self.place == Place::Nowhere {
            return false;
        }
        let g = lock();
        let st = g.state_mut();
        let removed = self.remove_locked(st);
        drop(g);
        removed.is_none()
    }

    /// Before registering again: removes the previous registration
    /// (returned, to be dropped after unlocking), gives this `Waiting` an id
    /// if it has none, and ties it to the current epoch.
    fn rearm_locked(&mut self, st: &mut State) -> Option<Entry> {
        let old = self.remove_locked(st);
        if self.id == 0 {
            self.id = st.next_id;
            st.next_id += 1;
        }
        self.epoch = st.epoch;
        old
    }

    /// Removes this registration if it is still there, returning it
    /// (`None`: it was not there, it had fired). The state lock is held: the
    /// caller drops the entry after unlocking (dropping the last waker of a
    /// task may drop the task, and so a future that unregisters itself).
    fn remove_locked(&mut self, st: &mut State) -> Option<Entry> {
        let place = std::mem::replace(&mut self.place, Place::Nowhere);
        if self.epoch != st.epoch {
            return None;
        }
        let id = self.id;
        match place {
            Place::Nowhere => None,
            Place::Timer => {
                let i = st.timers.iter().position(|e| e.id == id)?;
                Some(st.timers.swap_remove(i))
            }
            Place::Word { helper, addr } => {
                let slot = st.helpers.get_mut(helper)?;
                let wi = slot.words.iter().position(|w| w.addr == addr)?;
                let w = &mut slot.words[wi];
                let removed = w.entries.iter().position(|e| e.id == id).map(|i| w.entries.swap_remove(i));
                if w.entries.is_empty() {
                    // Dropped from the helper's set at its next wake-up; a
                    // wake-up it takes before then is passed on by it.
                    slot.words.swap_remove(wi);
                }
                removed
            }
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// Adds a helper slot and starts its thread; its index.
fn new_helper(st: &mut State) -> Option<usize> {
    let shared = Arc::new(Helper { control: AtomicU32::new(0) });
    let index = st.helpers.len();
    if !start_helper(index, Arc::clone(&shared), st.epoch) {
        return None;
    }
    st.helpers.push(Slot { shared, words: Vec::new(), armed_until: None });
    Some(index)
}

// --------------------------------------------- waits on a core Notifier --

/// The state of a future that waits on a `Notifier` (a queue's or pipe's
/// "not empty" / "not full" word): counted as a sleeper while it waits,
/// watched by a helper thread, re-checked at liveness slices.
#[derive(Debug)]
pub(crate) struct NotifierWait {
    waiting: Waiting,
    counted: bool,
    /// Yields to the executor so far in this wait.
    yields: u32,
    /// The next liveness re-check, and the interval after it.
    recheck_at: Option<Instant>,
    slice: Duration,
    /// The back-off while the condition holds but the attempt failed (the
    /// side lock held by another receiver).
    busy: Duration,
}

/// The first liveness re-check of a wait; the interval doubles up to
/// [`LIVENESS_MAX`].
const LIVENESS_FIRST: Duration = shmproc_core::raw_mutex::LIVENESS_SLICE;
/// The longest interval between two liveness re-checks of one future: a
/// peer that died without waking anyone is noticed at most this late.
pub const LIVENESS_MAX: Duration = Duration::from_millis(320);
const BUSY_FIRST: Duration = Duration::from_micros(10);
const BUSY_MAX: Duration = Duration::from_millis(1);

impl NotifierWait {
    pub(crate) const fn new() -> NotifierWait {
        NotifierWait {
            waiting: Waiting::new(),
            counted: false,
            yields: 0,
            recheck_at: None,
            slice: LIVENESS_FIRST,
            busy: BUSY_FIRST,
        }
    }

    /// Whether the future has registered in this wait (so a poll now follows
    /// a wake-up or a liveness slice, not the first look).
    pub(crate) fn is_counted(&self) -> bool {
        self.counted
    }

    /// Whether a liveness re-check is due (a peer may have died without
    /// waking anyone); schedules the next one further away.
    pub(crate) fn recheck_due(&mut self) -> bool {
        match self.recheck_at {
            Some(t) if Instant::now() >= t => {
                self.slice = (self.slice * 2).min(LIVENESS_MAX);
                self.recheck_at = Some(Instant::now() + self.slice);
                true
            }
            _ => false,
        }
    }

    /// The condition holds but the attempt failed (a lock held by another
    /// thread): poll again after a short, growing back-off.
    pub(crate) fn back_off(&mut self, waker: &Waker) {
        self.waiting.sleep_until(Instant::now() + self.busy, waker);
        self.busy = (self.busy * 2).min(BUSY_MAX);
    }

    /// After an attempt found nothing to do: first spins up to [`SPIN_FOR`],
    /// looking at `ready` every `look_every()` (looking less often lets a
    /// streaming peer write undisturbed, see `blocking.rs`), then yields to
    /// the executor up to [`YIELDS`] times (the waker woken at once), and only
    /// then counts the future as a sleeper of `n`, re-checks, and has a
    /// helper watch the word. Returns `true` if `ready` held (attempt again
    /// now), `false` if `Pending` is to be returned (the waker is registered,
    /// or already woken for a yield).
    ///
    /// # Safety
    ///
    /// `n` must lie in the mapping of `keep` (see [`Waiting::watch`]).
    pub(crate) unsafe fn park(
        &mut self,
        keep: &crate::Segment,
        n: &shmproc_core::notify::Notifier,
        look_every: impl FnOnce() -> Duration,
        ready: impl Fn() -> bool,
        waker: &Waker,
    ) -> bool {
        if !self.counted {
            if self.yields == 0 {
                let look_every = look_every();
                let until = Instant::now() + SPIN_FOR;
                loop {
                    let next = (Instant::now() + look_every).min(until);
                    while Instant::now() < next {
                        std::hint::spin_loop();
                    }
                    if ready() {
                        return true;
                    }
                    if Instant::now() >= until {
                        break;
                    }
                }
            }
            if self.yields < YIELDS {
                self.yields += 1;
                if ready() {
                    return true;
                }
                waker.wake_by_ref();
                return false;
            }
        }
        let s = if self.counted {
            // Still counted: arming again is enough (see
            // `Notifier::begin_async_wait`).
            n.rearm_async_wait()
        } else {
            self.counted = true;
            n.begin_async_wait()
        };
        if ready() {
            return true;
        }
        let at = *self.recheck_at.get_or_insert_with(|| Instant::now() + self.slice);
        // SAFETY: `n` lies in `keep`'s mapping (this function's contract).
        unsafe { self.waiting.watch(Some(keep), n.word(), s, Some(at), false, waker) };
        false
    }

    /// Ends the wait (on completion, and when the future is dropped).
    pub(crate) fn finish(&mut self, n: &shmproc_core::notify::Notifier) {
        self.waiting.disarm();
        if self.counted {
            self.counted = false;
            n.end_async_wait();
        }
        self.recheck_at = None;
        self.slice = LIVENESS_FIRST;
        self.busy = BUSY_FIRST;
        self.yields = 0;
    }
}

// ------------------------------------------------- timed re-checks only --

/// A future that has no word to watch (a child's exit, a pool result):
/// re-checked after a sleep that starts at 50 µs and doubles up to
/// [`POLL_MAX`].
#[derive(Debug)]
pub(crate) struct Recheck {
    waiting: Waiting,
    interval: Duration,
}

impl Recheck {
    pub(crate) const fn new() -> Recheck {
        Recheck { waiting: Waiting::new(), interval: POLL_FIRST }
    }

    /// Has `waker` woken after the next interval.
    pub(crate) fn later(&mut self, waker: &Waker) {
        self.waiting.sleep_until(Instant::now() + self.interval, waker);
        self.interval = (self.interval * 2).min(POLL_MAX);
    }
}

// ------------------------------------------------------- the helper loop --

/// What the helper sleeps on this round.
struct Armed {
    control: u32,
    list: Vec<FutexWaitv>,
    /// `(addr, pass_on)` per list entry after the control word.
    words: Vec<(usize, bool)>,
    deadline: Option<Instant>,
}

fn helper_main(index: usize, shared: &Helper, epoch: u64) {
    let mut poll_sleep = POLL_FIRST;
    let mut last_control = None;
    let mut faults = 0u32;
    loop {
        let polling = mode() != MODE_WAITV;
        let mut to_wake: Vec<Waker> = Vec::new();
        let armed = {
            let g = lock();
            let st = g.state_mut();
            if st.epoch != epoch {
                return;
            }
            // Read the control word before scanning: a change after this
            // read makes the wait below return at once.
            let control = shared.control.load(Ordering::Acquire);
            if last_control != Some(control) {
                poll_sleep = POLL_FIRST;
                last_control = Some(control);
            }
            let now = Instant::now();
            let mut deadline: Option<Instant> = None;
            let mut earliest = |t: Instant| deadline = Some(deadline.map_or(t, |d: Instant| d.min(t)));
            if index == 0 {
                // Due wakers move to `to_wake`: woken and dropped unlocked.
                for e in std::mem::take(&mut st.timers) {
                    match e.recheck {
                        Some(t) if t > now => {
                            earliest(t);
                            st.timers.push(e);
                        }
                        _ => to_wake.push(e.waker),
                    }
                }
            }
            let slot = &mut st.helpers[index];
            let mut list = Vec::with_capacity(slot.words.len() + 1);
            list.push(FutexWaitv {
                val: u64::from(control),
                uaddr: shared.control.as_ptr() as u64,
                flags: FUTEX2_SIZE_U32,
                reserved: 0,
            });
            let mut words = Vec::with_capacity(slot.words.len());
            slot.words.retain_mut(|w| {
                // SAFETY: a word in the set has entries (empty words are
                // removed at once), and each entry keeps the segment the
                // word lies in mapped (or, without one, is removed under
                // this lock before the memory goes: `Waiting::watch`'s
                // contract); an aligned u32 there is read atomically.
                let now_val = unsafe { (*(w.addr as *const AtomicU32)).load(Ordering::Acquire) };
                if now_val != w.expected {
                    to_wake.extend(w.entries.drain(..).map(|e| e.waker));
                    return false;
                }
                for e in std::mem::take(&mut w.entries) {
                    match e.recheck {
                        Some(t) if t <= now => to_wake.push(e.waker),
                        Some(t) => {
                            earliest(t);
                            w.entries.push(e);
                        }
                        None => w.entries.push(e),
                    }
                }
                if w.entries.is_empty() {
                    return false;
                }
                list.push(FutexWaitv {
                    val: u64::from(w.expected),
                    uaddr: w.addr as u64,
                    flags: FUTEX2_SIZE_U32,
                    reserved: 0,
                });
                words.push((w.addr, w.pass_on));
                true
            });
            if polling && !words.is_empty() {
                earliest(now + poll_sleep);
            }
            slot.armed_until = deadline;
            Armed { control, list, words, deadline }
        };
        for w in to_wake {
            w.wake();
        }
        if polling || armed.words.is_empty() {
            // Only the control word (and timers, or the poll interval).
            let d = armed.deadline.map(|d| shmproc_core::Deadline::after(d.saturating_duration_since(Instant::now())));
            if futex::wait(&shared.control, armed.control, d) == futex::WaitOutcome::TimedOut && polling {
                poll_sleep = (poll_sleep * 2).min(POLL_MAX);
            }
            continue;
        }
        match futex_waitv(&armed.list, armed.deadline) {
            Ok(0) => {}
            Ok(i) => {
                faults = 0;
                let Some(&(addr, pass_on)) = armed.words.get(i - 1) else { continue };
                let mut woken: Vec<Waker> = Vec::new();
                {
                    let g = lock();
                    let st = g.state_mut();
                    if st.epoch != epoch {
                        return;
                    }
                    let slot = &mut st.helpers[index];
                    if let Some(wi) = slot.words.iter().position(|w| w.addr == addr) {
                        woken.extend(slot.words[wi].entries.drain(..).map(|e| e.waker));
                        slot.words.swap_remove(wi);
                    }
                }
                if woken.is_empty() && pass_on {
                    // Nobody left to consume what this wake-up announced.
                    wake_one_raw(addr);
                }
                for w in woken {
                    w.wake();
                }
            }
            Err(libc::ENOSYS | libc::EPERM | libc::EINVAL) => {
                MODE.store(MODE_REFUSED, Ordering::Relaxed);
            }
            Err(libc::EFAULT) => {
                // A word unregistered and unmapped after the list was built:
                // the next list leaves it out. Twice in a row cannot come
                // from that; rest a little rather than spin.
                faults += 1;
                if faults > 1 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            // EAGAIN (a word changed: the next scan finds it), ETIMEDOUT,
            // EINTR.
            Err(_) => faults = 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counted() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (Arc::clone(&c), Waker::from(c))
    }

    fn until(f: impl Fn() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn a_wake_on_a_watched_word_wakes_the_waker() {
        let word = Box::new(AtomicU32::new(5));
        let (c, waker) = counted();
        let mut w = Waiting::new();
        // SAFETY: `word` outlives `w` (dropped first, below).
        unsafe { w.watch(None, &word, 5, None, false, &waker) };
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.0.load(Ordering::SeqCst), 0);
        word.store(6, Ordering::Release);
        futex::wake_all(&word);
        assert!(until(|| c.0.load(Ordering::SeqCst) == 1));
        assert!(w.disarm(), "fired");
        drop(w);
    }

    #[test]
    fn a_word_that_already_moved_fires_at_once_and_timers_fire() {
        let word = Box::new(AtomicU32::new(1));
        let (c, waker) = counted();
        let mut w = Waiting::new();
        // SAFETY: `word` outlives `w`.
        unsafe { w.watch(None, &word, 0, None, false, &waker) };
        assert!(until(|| c.0.load(Ordering::SeqCst) == 1));
        w.sleep_until(Instant::now() + Duration::from_millis(2), &waker);
        assert!(until(|| c.0.load(Ordering::SeqCst) == 2));
        assert!(w.disarm());
        // Disarmed before firing: reported as not fired.
        w.sleep_until(Instant::now() + Duration::from_secs(60), &waker);
        assert!(!w.disarm());
    }
}
