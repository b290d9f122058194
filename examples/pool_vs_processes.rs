//! Python tutorial (seeds 000, 002 and 003): the same 100 tasks on a
//! `Pool(5)` and with one `Process` per task, timing both.
//!
//! ```text
//! def func(n):
//!     for i in range(10): print(n + 1)
//! start = time.time()
//! pool = Pool(5); pool.map(func, range(100))
//! t1 = time.time() - start
//! start = time.time()
//! for i in range(100): p = Process(target=func, args=(i,)); p_lst.append(p); p.start()
//! for p in p_lst: p.join()
//! t2 = time.time() - start
//! print(t1, t2)
//! ```
//!
//! The task here adds up its ten values instead of printing them (a thousand
//! lines of output would time the terminal, not the processes). The pool
//! wins by far: its 5 workers start once, while every process costs a fork
//! and a wait.

use std::time::Instant;

use shmproc::{Pool, Process};

fn func(n: u64) -> u64 {
    (0..10).map(|i| n + 1 + i).sum()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    shmproc::init();
    let start = Instant::now();
    let pool = Pool::new(5)?;
    let by_pool = pool.map(func, 0..100u64)?;
    pool.close();
    pool.join()?;
    let t1 = start.elapsed();

    let start = Instant::now();
    let mut p_lst = Vec::new();
    for i in 0..100u64 {
        // The exit code carries nothing here; the work is the same.
        p_lst.push(Process::spawn(move || {
            std::hint::black_box(func(i));
        })?);
    }
    for p in &mut p_lst {
        assert_eq!(p.join()?, 0);
    }
    let t2 = start.elapsed();
    assert_eq!(by_pool, (0..100).map(func).collect::<Vec<_>>());
    println!("100 tasks on a pool of 5: {t1:?}");
    println!("100 tasks, one process each: {t2:?}");
    Ok(())
}
