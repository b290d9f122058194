//! Python tutorial: buying tickets with a `Lock` so that two buyers never sell
//! the same ticket.
//!
//! ```text
//! def buy_ticket(i, lock):
//!     lock.acquire()
//!     ... read remaining tickets, sleep, decrement, write back ...
//!     lock.release()
//! for i in range(10): Process(target=buy_ticket, args=(i, lock)).start()
//! ```
//! The Python version keeps the count in a JSON file; here it lives in the
//! lock itself (`Mutex<u32>`), which is what the tutorial's closing remark asks
//! for: shared memory, with the locking handled for you.

use std::time::Duration;

use shmproc::{Mutex, Process};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    shmproc::init();
    let tickets = Mutex::new(3u32)?;
    let mut buyers = Vec::new();
    for i in 0..10u64 {
        let tickets = tickets.clone();
        buyers.push(Process::spawn(move || {
            // The guard is the Python `acquire()`; dropping it is `release()`.
            let mut left = tickets.lock().unwrap_or_else(|e| e.into_inner());
            println!("buyer {i} sees {} tickets left", *left);
            std::thread::sleep(Duration::from_millis(10 + 7 * i % 30));
            if *left > 0 {
                *left -= 1;
                println!("buyer {i} got a ticket");
            } else {
                println!("buyer {i} got nothing");
            }
        })?);
    }
    for b in &mut buyers {
        b.join()?;
    }
    let left = *tickets.lock().unwrap_or_else(|e| e.into_inner());
    println!("tickets left: {left}");
    assert_eq!(left, 0);
    Ok(())
}
