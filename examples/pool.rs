//! Python tutorial: a process `Pool` with `apply`, `apply_async` (with a
//! callback, like the tutorials' `callback=`), and `map`; at most 3 tasks run
//! at once with 3 workers.
//!
//! ```text
//! pool = multiprocessing.Pool(processes=3)
//! for i in range(10): pool.apply_async(func=task, args=(i,), callback=done)
//! pool.close(); pool.join()
//! print(pool.map(square, range(10)))
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shmproc::Pool;

fn task(name: u32) -> String {
    println!("{}: task {name} starts", shmproc::current_process().pid());
    std::thread::sleep(Duration::from_millis(50));
    format!("task {name} done")
}

fn square(x: u64) -> u64 {
    x * x
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    shmproc::init();
    let pool = Pool::new(3)?;
    println!("apply: {}", pool.apply(square, 12)?);
    println!("map: {:?}", pool.map(square, 0..10u64)?);

    let finished = Arc::new(AtomicUsize::new(0));
    for i in 0..10 {
        let f = finished.clone();
        // The callback runs in this (the parent) process when the result is
        // collected: here during `join`.
        pool.apply_async_with(
            task,
            i,
            move |msg| {
                println!("callback: {msg}");
                f.fetch_add(1, Ordering::SeqCst);
            },
            |err| println!("error callback: {err}"),
        )?;
    }
    pool.close();
    pool.join()?;
    println!("{} callbacks ran", finished.load(Ordering::SeqCst));
    assert_eq!(finished.load(Ordering::SeqCst), 10);
    Ok(())
}
