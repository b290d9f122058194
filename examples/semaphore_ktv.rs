//! Python tutorial: a karaoke bar (KTV) with 4 rooms; a `Semaphore(4)` lets at
//! most 4 of 20 guests in at once.
//!
//! ```text
//! def ktv(i, sem):
//!     sem.acquire(); print('%s entered' % i); time.sleep(random.randint(1, 3)); print('%s left' % i); sem.release()
//! sem = Semaphore(4)
//! for i in range(20): Process(target=ktv, args=(i, sem)).start()
//! ```

use std::time::Duration;

use shmproc::{Process, Semaphore, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    shmproc::init();
    let sem = Semaphore::new(4)?;
    let inside = Value::new(0u32)?;
    let most = Value::new(0u32)?;
    let mut guests = Vec::new();
    for i in 0..20u64 {
        let (sem, inside, most) = (sem.clone(), inside.clone(), most.clone());
        guests.push(Process::spawn(move || {
            let _room = sem.access(); // acquire now, release on drop
            let now = inside.update(|n| *n += 1);
            most.update(|m| *m = (*m).max(now));
            println!("guest {i} entered the KTV ({now} inside)");
            std::thread::sleep(Duration::from_millis(20 + (i * 37) % 40));
            inside.update(|n| *n -= 1);
            println!("guest {i} left the KTV");
        })?);
    }
    for g in &mut guests {
        g.join()?;
    }
    println!("at most {} guests were inside at once", most.get());
    assert!(most.get() <= 4);
    Ok(())
}
