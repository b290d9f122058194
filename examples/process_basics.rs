//! Python tutorial: starting processes with arguments, `join`, many processes
//! at once, data isolation between processes, and spawn (re-exec) mode.
//!
//! ```text
//! def func(arg1, arg2):
//!     print('##' * arg1); time.sleep(2); print(os.getpid(), os.getppid()); print('***' * arg2)
//! p = Process(target=func, args=(2, 4)); p.start(); p.join()
//! ```

use std::time::Duration;

use shmproc::Process;

fn func(arg1: usize, arg2: usize) {
    println!("{}", "##".repeat(arg1));
    std::thread::sleep(Duration::from_millis(200));
    let me = shmproc::current_process();
    let parent = shmproc::parent_process().map(|p| p.pid()).unwrap_or(0);
    println!("child {} pid={} ppid={parent}", me.name(), me.pid());
    println!("{}", "***".repeat(arg2));
}

/// Spawn mode runs a plain `fn(A) -> R` in a fresh copy of this binary.
fn square(x: u64) -> i32 {
    println!("spawned {}: {x}^2 = {}", shmproc::current_process().name(), x * x);
    0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    shmproc::init();
    println!("main pid={}", std::process::id());

    // One child with arguments: the closure captures them.
    let mut p = Process::spawn(|| func(2, 4))?;
    p.join()?;

    // Ten children at once; join them all ("the order is up to the OS").
    let mut children = Vec::new();
    for i in 0..10 {
        children.push(Process::builder().name(format!("writer-{i}")).spawn(move || {
            println!("{} writes {}", shmproc::current_process().name(), "*".repeat(i));
        })?);
    }
    for c in &mut children {
        c.join()?;
    }

    // Data isolation: the child changes its own copy of `n`.
    let n = 100;
    let mut p = Process::spawn(move || {
        let mut n = n;
        n -= 100; // Python: `global n; n = 0` inside the child
        println!("child pid={} n={n}", std::process::id());
    })?;
    p.join()?;
    println!("parent pid={} n={n} (unchanged)", std::process::id());

    // ...but a `Value` lives in shared memory: the child's change is seen.
    let shared = shmproc::Value::new(100i64)?;
    let s = shared.clone();
    Process::spawn(move || s.set(0))?.join()?;
    println!("parent sees the shared Value = {}", shared.get());
    assert_eq!(shared.get(), 0);

    // Spawn mode.
    let mut s = Process::builder().name("squarer").spawn_fn(square, 12u64)?;
    println!("spawn-mode child exited with {}", s.join()?);
    Ok(())
}
