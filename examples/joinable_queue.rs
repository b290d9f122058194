//! Python tutorial: a `JoinableQueue` worker crew. Producers put items and
//! `join()` the queue, which returns once consumers have called `task_done()`
//! for every item; consumers are daemons that die with the main process.
//!
//! ```text
//! def consumer(q, name):
//!     while True: f = q.get(); print(...); q.task_done()
//! def producer(name, product, q):
//!     for i in range(10): q.put(...)
//!     q.join()
//! ```

use std::time::Duration;

use shmproc::{JoinableQueue, Process};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    shmproc::init();
    let q = JoinableQueue::<String>::bounded(15)?;
    let mut producers = Vec::new();
    for (name, product) in [("Egon", "buns"), ("wusir", "noodles")] {
        let q = q.clone();
        producers.push(Process::builder().name(name).spawn(move || {
            for i in 0..5 {
                let item = format!("{name} made {product} #{i}");
                println!("{item}");
                q.send(&item).unwrap();
            }
            // Wait until every item (from both producers) is processed.
            q.join();
            println!("{name}: all items were processed");
        })?);
    }
    for name in ["alex", "jinboss"] {
        let q = q.clone();
        // Daemons: they loop forever and die when the main process exits.
        Process::builder().name(name).daemon(true).spawn(move || -> () {
            while let Ok(item) = q.recv() {
                println!("\x1b[31m{name} consumed {item}\x1b[0m");
                std::thread::sleep(Duration::from_millis(5));
                q.task_done().unwrap();
            }
        })?;
    }
    for p in &mut producers {
        p.join()?;
    }
    assert_eq!(q.unfinished(), 0);
    println!("producers done; daemon consumers end with the main process");
    Ok(())
}
