//! Python tutorial: `Manager().dict()` and `Manager().list()` shared by
//! several processes: here a `SharedMap` and a `SharedList` in shared memory,
//! with no manager server process.
//!
//! ```text
//! with Manager() as m:
//!     d = m.dict(); l = m.list()
//!     ps = [Process(target=work, args=(d, l, i)) for i in range(4)]
//! ```

use shmproc::{Process, SharedList, SharedMap};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    shmproc::init();
    let d = SharedMap::<String, u64>::with_capacity(64)?;
    let l = SharedList::<String>::with_capacity(64)?;
    let mut workers = Vec::new();
    for i in 0..4u64 {
        let (d, l) = (d.clone(), l.clone());
        workers.push(Process::spawn(move || {
            d.insert(&format!("worker-{i}"), &(i * i)).unwrap();
            // An atomic read-modify-write across processes (`d['count'] += 1`).
            d.update(&"count".to_string(), |c| Some(c.copied().unwrap_or(0) + 1)).unwrap();
            l.push(&format!("hello from {}", std::process::id())).unwrap();
        })?);
    }
    for w in &mut workers {
        w.join()?;
    }
    let mut entries = d.snapshot()?;
    entries.sort();
    println!("dict: {entries:?}");
    println!("list: {:?}", l.to_vec()?);
    assert_eq!(d.get(&"count".to_string())?, Some(4));
    assert_eq!(l.len(), 4);
    Ok(())
}
