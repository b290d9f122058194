//! Python tutorial: producer–consumer with a bounded `Queue`, timeouts, and a
//! `None` sentinel per consumer to shut down.
//!
//! ```text
//! def consumer(q, name):
//!     while True:
//!         food = q.get()
//!         if food is None: print('%s got None' % name); break
//!         print('%s ate %s' % (name, food))
//! def producer(name, food, q):
//!     for i in range(4): q.put('%s made %s%s' % (name, food, i))
//! q = Queue(20)
//! p1, p2 = Process(target=producer, ...), Process(target=producer, ...)
//! c1, c2 = Process(target=consumer, ...), Process(target=consumer, ...)
//! ... p1.join(); p2.join(); q.put(None); q.put(None)
//! ```
//! `Option<String>` plays the part of Python's `None` sentinel.

use std::time::Duration;

use shmproc::{Process, Queue, RecvTimeoutError, TrySendError};

fn producer(name: &'static str, food: &'static str, q: Queue<Option<String>>) {
    for i in 0..4 {
        let item = format!("{name} made {food} #{i}");
        println!("{item}");
        q.send(&Some(item)).expect("queue closed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn consumer(name: &'static str, q: Queue<Option<String>>) {
    loop {
        match q.recv_timeout(Duration::from_secs(5)) {
            Ok(Some(food)) => {
                println!("\x1b[31m{name} ate: {food}\x1b[0m");
                std::thread::sleep(Duration::from_millis(15));
            }
            Ok(None) => {
                println!("{name} got the sentinel, going home");
                break;
            }
            Err(RecvTimeoutError::Timeout) => println!("{name}: nothing for 5 s"),
            Err(e) => {
                println!("{name}: {e}");
                break;
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    shmproc::init();
    // maxsize = 20, as in the tutorial.
    let q = Queue::<Option<String>>::bounded(20)?;

    // The queue's "full" and "timeout" behaviour, before any process runs
    // (Python's `put_nowait` raising `queue.Full`, `put(timeout=..)` and
    // `get(timeout=..)` giving up).
    let small = Queue::<u8>::bounded(2)?;
    small.send(&1)?;
    small.send(&2)?;
    println!("small queue: {}/{} messages, full: {}", small.len(), small.capacity(), small.is_full());
    assert!(small.is_full());
    let refused = small.try_send(&3);
    println!("try_send(3) on the full queue: {refused:?} (Python: queue.Full)");
    assert_eq!(refused, Err(TrySendError::Full));
    let timed_out = small.send_timeout(&3, Duration::from_millis(50));
    println!("send_timeout(3, 50 ms) on the full queue: {timed_out:?}");
    assert!(timed_out.is_err());
    small.recv()?;
    small.recv()?;
    let empty = small.recv_timeout(Duration::from_millis(50));
    println!("recv_timeout(50 ms) on the empty queue: {empty:?} (Python: queue.Empty)");
    assert_eq!(empty, Err(RecvTimeoutError::Timeout));

    let (q1, q2, q3, q4) = (q.clone(), q.clone(), q.clone(), q.clone());
    let mut p1 = Process::builder().name("Egon").spawn(move || producer("Egon", "buns", q1))?;
    let mut p2 = Process::builder().name("wusir").spawn(move || producer("wusir", "noodles", q2))?;
    let mut c1 = Process::builder().name("alex").spawn(move || consumer("alex", q3))?;
    let mut c2 = Process::builder().name("jinboss").spawn(move || consumer("jinboss", q4))?;
    p1.join()?;
    p2.join()?;
    // One sentinel per consumer: everything produced is already queued ahead.
    q.send(&None)?;
    q.send(&None)?;
    c1.join()?;
    c2.join()?;
    assert!(q.is_empty());
    println!("all food eaten, everyone went home");
    Ok(())
}
