//! Start methods as a new user meets them: plain `#[test]` functions under
//! libtest's default harness (tests run on threads, so the process is
//! multi-threaded), no `shmproc::init()`, no `allow_threaded_fork` (except
//! where a test checks the fork handler on purpose).
//!
//! Spawn mode and the fork server work here only because shmproc routes
//! re-executed children from an `.init_array` constructor before `main`.
#![deny(warnings)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shmproc::{get_start_method, Pool, Process, ProcessError, Queue, StartMethod, Value};

const METHODS: [StartMethod; 3] = [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer];
const ROLE: &str = "SHMPROC_START_METHODS_ROLE";
const LIMIT: Duration = Duration::from_secs(60);

fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Threads:").and_then(|v| v.trim().parse().ok())))
        .unwrap_or(1)
}

fn square(x: u64) -> u64 {
    x * x
}

fn exit_with(code: i32) -> i32 {
    code
}

fn panics(_: ()) {
    panic!("on purpose");
}

fn exits(code: i32) {
    std::process::exit(code)
}

fn sleeps(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

/// 0 if the child's parent is `expected` by every account, else a code
/// saying which check failed.
fn checks_parent(expected: u32) -> i32 {
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } as u32 != expected {
        return 10;
    }
    match shmproc::parent_process() {
        Some(p) if p.pid() == expected && p.is_alive() => {}
        _ => return 11,
    }
    if shmproc::current_process().name() != "checked" {
        return 12;
    }
    0
}

fn sends(tx: shmproc::Sender<u64>) -> i32 {
    match tx.send(&99) {
        Ok(()) => 0,
        Err(_) => 3,
    }
}

fn sets(v: Value<u64>) {
    v.set(1234);
}

/// Starts `f(arg)` with `m`; in this multi-threaded process fork mode is
/// refused (that is the point of the other two).
fn start<A: shmproc::Message + 'static, R: shmproc::ChildResult + 'static>(
    m: StartMethod,
    b: shmproc::Builder,
    f: fn(A) -> R,
    arg: A,
) -> Option<Process> {
    match b.start_method(m).spawn_fn(f, arg) {
        Ok(p) => Some(p),
        Err(ProcessError::ThreadedParent { threads }) if m == StartMethod::Fork => {
            assert!(threads > 1);
            None
        }
        Err(e) => panic!("{}: {e}", m.name()),
    }
}

#[test]
fn libtest_runs_this_on_a_thread_so_the_default_is_the_fork_server() {
    if threads() > 1 {
        assert_eq!(shmproc::get_start_method(), StartMethod::ForkServer);
    } else {
        println!("skipped the check: libtest ran this test on the only thread");
    }
}

#[test]
fn pool_map_just_works_in_a_test() {
    let pool = Pool::new(2).expect("a pool in a plain #[test]");
    let squares = pool.map(square, 0..100u64).expect("map");
    assert_eq!(squares, (0..100u64).map(|x| x * x).collect::<Vec<_>>());
}

#[test]
fn pool_in_every_start_method() {
    for m in METHODS {
        match Pool::builder().processes(2).start_method(m).build() {
            Ok(pool) => {
                assert_eq!(pool.map(square, 0..50u64).expect("map"), (0..50u64).map(|x| x * x).collect::<Vec<_>>());
                assert_eq!(pool.apply(square, 12).expect("apply"), 144);
            }
            Err(shmproc::PoolError::Process(ProcessError::ThreadedParent { .. })) if m == StartMethod::Fork => {}
            Err(e) => panic!("{}: {e}", m.name()),
        }
    }
}

#[test]
fn exit_codes_names_and_signals_in_every_start_method() {
    for m in METHODS {
        let Some(mut ok) = start(m, Process::builder(), exit_with, 7) else { continue };
        let mut panicked = start(m, Process::builder(), panics, ()).expect("started");
        let mut exited = start(m, Process::builder(), exits, 5).expect("started");
        let sleeper = start(m, Process::builder().name("sleeper"), sleeps, 60).expect("started");
        assert_eq!(ok.join().expect("join"), 7, "{}", m.name());
        assert_eq!(panicked.join().expect("join"), 1, "{}", m.name());
        assert_eq!(exited.join().expect("join"), 5, "{}", m.name());
        assert!(sleeper.is_alive());
        assert_eq!(sleeper.name(), "sleeper");
        assert!(shmproc::active_children().iter().any(|c| c.pid == sleeper.pid() && c.name == "sleeper"));
        let mut sleeper = sleeper;
        assert_eq!(sleeper.join_timeout(Duration::from_millis(10)).expect("wait"), None);
        sleeper.terminate().expect("terminate");
        assert_eq!(sleeper.join().expect("join"), -libc::SIGTERM, "{}", m.name());
        assert_eq!(sleeper.exitcode(), Some(-libc::SIGTERM));
    }
}

#[test]
fn children_are_real_children_of_the_caller() {
    for m in METHODS {
        let b = Process::builder().name("checked");
        let Some(mut p) = start(m, b, checks_parent, std::process::id()) else { continue };
        // A descriptor of this very process, taken while it is our child: a
        // wait on its pid after the join could reap another test's child
        // that reused the pid (pids wrap quickly on a busy machine).
        // SAFETY: pidfd_open takes a pid and flags; the result is checked.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, p.pid() as libc::pid_t, 0) } as libc::c_int;
        assert!(pidfd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
        assert_eq!(p.join().expect("join"), 0, "{}", m.name());
        // Reaped by us: nobody else can wait for it.
        // SAFETY: an all-zero siginfo_t is a valid out-buffer.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our pidfd with a valid out-pointer.
        let r = unsafe { libc::waitid(libc::P_PIDFD, pidfd as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG) };
        let e = std::io::Error::last_os_error();
        // SAFETY: closing the descriptor opened above.
        unsafe { libc::close(pidfd) };
        assert_eq!((r, e.raw_os_error()), (-1, Some(libc::ECHILD)), "{}", m.name());
    }
}

#[test]
fn handles_travel_in_every_start_method() {
    for m in METHODS {
        let q = Queue::<u64>::bounded(4).expect("queue");
        let v = Value::new(0u64).expect("value");
        let Some(mut a) = start(m, Process::builder(), sends, q.sender()) else { continue };
        let mut b = start(m, Process::builder(), sets, v.clone()).expect("started");
        assert_eq!(a.join().expect("join"), 0, "{}", m.name());
        assert_eq!(b.join().expect("join"), 0, "{}", m.name());
        assert_eq!(q.recv_timeout(LIMIT).expect("message"), 99);
        assert_eq!(v.get(), 1234);
    }
}

#[test]
fn daemon_flag_in_the_fork_server() {
    let mut p = Process::builder().daemon(true).start_method(StartMethod::ForkServer).spawn_fn(exit_with, 0).unwrap();
    assert!(p.daemon());
    assert_eq!(p.join().unwrap(), 0);
}

#[test]
fn closures_refuse_other_start_methods() {
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let r = Process::builder().start_method(m).spawn(|| 0);
        assert!(matches!(r, Err(ProcessError::ClosureNeedsFork { method }) if method == m));
    }
}

#[test]
fn infinite_loop_children_compile() {
    // `loop {}` has type `!`: this compiles under `#![deny(warnings)]`
    // without falling back to `()`.
    let p = Process::builder()
        .allow_threaded_fork(true)
        .spawn(move || loop {
            // SAFETY: pause only waits for a signal.
            unsafe { libc::pause() };
        })
        .unwrap();
    p.kill().unwrap();
    let mut p = p;
    assert_eq!(p.join().unwrap(), -libc::SIGKILL);
}

#[test]
fn the_fork_server_is_single_threaded_and_shared() {
    let mut a = Process::builder().start_method(StartMethod::ForkServer).spawn_fn(exit_with, 0).unwrap();
    assert_eq!(a.join().unwrap(), 0);
    let server = shmproc::process::forkserver_pid().expect("a server runs");
    let status = std::fs::read_to_string(format!("/proc/{server}/status")).unwrap();
    assert!(status.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Threads:", "1"]), "{status}");
    let mut b = Process::builder().start_method(StartMethod::ForkServer).spawn_fn(exit_with, 0).unwrap();
    assert_eq!(b.join().unwrap(), 0);
    assert_eq!(shmproc::process::forkserver_pid(), Some(server), "one server per client");
}

/// Stands in for a multi-threaded async runtime: worker threads that start
/// and join children concurrently with the default start method.
#[test]
fn fork_server_children_from_many_threads() {
    let workers: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..5 {
                    let code = t * 10 + i;
                    let mut p = Process::spawn_fn(exit_with, code).expect("start from a runtime thread");
                    assert_eq!(p.join().expect("join"), code);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

/// Inside a multi-threaded tokio runtime (the parent has its worker threads):
/// children and a pool start with the default method, the fork server, from
/// async tasks, and their results come back.
#[test]
fn fork_server_children_from_a_tokio_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).build().expect("runtime");
    rt.block_on(async {
        let starts: Vec<_> = (0..8)
            .map(|code| {
                tokio::task::spawn_blocking(move || {
                    let mut p = Process::spawn_fn(exit_with, code).expect("start from a runtime task");
                    p.join().expect("join")
                })
            })
            .collect();
        for (code, start) in starts.into_iter().enumerate() {
            assert_eq!(start.await.expect("task"), code as i32);
        }
        let pool = tokio::task::spawn_blocking(|| {
            let pool = Pool::new(2).expect("a pool inside the runtime");
            pool.map(square, 0..100u64).expect("map")
        });
        assert_eq!(pool.await.expect("task"), (0..100u64).map(|x| x * x).collect::<Vec<_>>());
    });
    assert_eq!(get_start_method(), StartMethod::ForkServer, "a threaded parent defaults to the fork server");
}

// ------------------------------------------------ SIGKILL of a client ------

fn pid_list(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// Helper (run as its own process): a fork-server client with live children
/// that prints their pids and waits to be killed.
#[test]
fn helper_client() {
    if std::env::var(ROLE).as_deref() != Ok("client") {
        return;
    }
    let pool = Pool::builder().processes(2).start_method(StartMethod::ForkServer).build().unwrap();
    assert_eq!(pool.apply(square, 3).unwrap(), 9);
    let plain = Process::builder().start_method(StartMethod::ForkServer).spawn_fn(sleeps, 2).unwrap();
    // A fork-mode child inherits the client's socket; its fork handler must
    // close it, or the server would outlive the client as long as it runs.
    let forked = Process::builder()
        .allow_threaded_fork(true)
        .spawn(|| loop {
            // SAFETY: pause only waits for a signal.
            unsafe { libc::pause() };
        })
        .unwrap();
    let server = shmproc::process::forkserver_pid().unwrap();
    let line = format!("PIDS {server} {} {} {}\n", pid_list(&pool.worker_pids()), plain.pid(), forked.pid());
    let mut out = std::io::stdout();
    out.write_all(line.as_bytes()).unwrap();
    out.flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn reap_until(wanted: &[u32], reaped: &mut Vec<u32>, deadline: Instant) -> bool {
    loop {
        if wanted.iter().all(|p| reaped.contains(p)) {
            return true;
        }
        let mut status = 0;
        // SAFETY: waitpid on any child with a valid out-pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r > 0 {
            reaped.push(r as u32);
            continue;
        }
        if r < 0 || Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Helper (run as its own process): a subreaper that starts a client, kills
/// it with SIGKILL and checks that the server and the daemon workers exit
/// (and get reaped: no zombies), while a fork-mode child of the client still
/// runs.
#[test]
fn helper_reaper() {
    if std::env::var(ROLE).as_deref() != Ok("reaper") {
        return;
    }
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes an integer flag.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }, 0);
    let mut client = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper_client", "--nocapture", "--test-threads", "2"])
        .env(ROLE, "client")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let line = loop {
        let l = lines.next().expect("the client printed its pids").unwrap();
        if let Some(rest) = l.strip_prefix("PIDS ") {
            break rest.to_owned();
        }
    };
    let f: Vec<&str> = line.split(' ').collect();
    let server: u32 = f[0].parse().unwrap();
    let workers: Vec<u32> = f[1].split(',').map(|p| p.parse().unwrap()).collect();
    let plain: u32 = f[2].parse().unwrap();
    let forked: u32 = f[3].parse().unwrap();
    client.kill().unwrap();
    let status = client.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
    let mut reaped = Vec::new();
    let mut gone = vec![server];
    gone.extend(&workers);
    gone.push(plain);
    assert!(
        reap_until(&gone, &mut reaped, Instant::now() + LIMIT),
        "server {server}, workers {workers:?}, plain child {plain}: reaped only {reaped:?}"
    );
    // The server went while the fork-mode child (holding a copy of the
    // client's end until its fork handler closed it) still runs.
    assert!(!reaped.contains(&forked));
    // SAFETY: the forked child is our (adopted) unreaped child.
    assert_eq!(unsafe { libc::kill(forked as libc::pid_t, 0) }, 0, "the fork-mode child still runs");
    // SAFETY: as above.
    unsafe { libc::kill(forked as libc::pid_t, libc::SIGKILL) };
    assert!(reap_until(&[forked], &mut reaped, Instant::now() + LIMIT));
    // Nothing else is left: no zombies, no stray descendants.
    let mut st = 0;
    // SAFETY: waitpid with a valid out-pointer.
    let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
    assert_eq!(r, -1, "a descendant is left over");
    println!("REAPER OK");
}

#[test]
fn client_sigkill_leaves_no_server_and_no_zombies() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper_reaper", "--nocapture", "--test-threads", "1"])
        .env(ROLE, "reaper")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("REAPER OK"),
        "reaper failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

// ------------------------------------- who may make a process serve ------

/// Runs this test binary with `SHMPROC_FORKSERVER=value` (through `sh` when
/// `via_sh`, so that the socket's creator is not the parent); returns the
/// exit code, whether libtest's `main` ran, and stderr.
fn run_with_server_env(value: &str, keep: Option<i32>, via_sh: bool) -> (Option<i32>, bool, String) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = if via_sh {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg("\"$0\" --list; exit $?").arg(&exe);
        c
    } else {
        let mut c = Command::new(&exe);
        c.arg("--list");
        c
    };
    cmd.env("SHMPROC_FORKSERVER", value);
    if let Some(fd) = keep {
        // SAFETY: only fcntl (async-signal-safe) between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                libc::fcntl(fd, libc::F_SETFD, 0);
                Ok(())
            });
        }
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    (out.status.code(), stdout.contains(": test"), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn forged_fork_server_variables_are_refused() {
    // Garbage, or descriptors that are not sockets: an error exit before main.
    for value in ["", "x", "-1", "999", "0"] {
        let (code, ran_main, err) = run_with_server_env(value, None, false);
        assert_eq!(code, Some(1), "{value:?}: {err}");
        assert!(!ran_main, "{value:?}");
    }
    // A socket created by someone other than the parent (here the parent is
    // `sh`, another executable): refused too.
    if !std::path::Path::new("/bin/sh").exists() {
        println!("skipped the socket case: no /bin/sh");
        return;
    }
    let mut sv = [-1; 2];
    // SAFETY: `sv` has room for two descriptors.
    assert_eq!(
        unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()) },
        0
    );
    let (code, ran_main, err) = run_with_server_env(&sv[1].to_string(), Some(sv[1]), true);
    // SAFETY: closing our own descriptors.
    unsafe {
        libc::close(sv[0]);
        libc::close(sv[1]);
    }
    assert_eq!(code, Some(1), "{err}");
    assert!(!ran_main);
    assert!(err.contains("not serving"), "{err}");
}

fn byte_sum(v: Vec<u8>) -> i32 {
    (v.iter().map(|&b| u64::from(b)).sum::<u64>() % 251) as i32
}

#[test]
fn large_arguments_reach_fork_server_children() {
    // Beyond what travels in the request message: the payload goes in a memfd.
    let v: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let want = byte_sum(v.clone());
    let mut p = Process::builder().start_method(StartMethod::ForkServer).spawn_fn(byte_sum, v).unwrap();
    assert_eq!(p.join().unwrap(), want);
}

/// Helper (run as its own process, so that killing its server disturbs no
/// other test): a killed server is replaced on the next request.
#[test]
fn helper_restart() {
    if std::env::var(ROLE).as_deref() != Ok("restart") {
        return;
    }
    let fs = || Process::builder().start_method(StartMethod::ForkServer);
    assert_eq!(fs().spawn_fn(exit_with, 3).unwrap().join().unwrap(), 3);
    let first = shmproc::process::forkserver_pid().unwrap();
    // SAFETY: our own child.
    unsafe { libc::kill(first as libc::pid_t, libc::SIGKILL) };
    assert_eq!(fs().spawn_fn(exit_with, 4).unwrap().join().unwrap(), 4);
    let second = shmproc::process::forkserver_pid().unwrap();
    assert_ne!(first, second);
    // The dead server was reaped, not left a zombie.
    let mut st = 0;
    // SAFETY: waitpid with a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(first as libc::pid_t, &mut st, libc::WNOHANG) }, -1);
    println!("RESTART OK");
}

#[test]
fn a_killed_fork_server_is_replaced() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper_restart", "--nocapture"])
        .env(ROLE, "restart")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("RESTART OK"),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
