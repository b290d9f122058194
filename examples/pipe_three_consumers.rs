//! Python tutorial (seed 000): one producer and three consumers on one
//! `Pipe`, the consumers sharing the receiving end under a `Lock` (a pipe end
//! is for one process at a time, so the lock makes the three take turns).
//! The producer ends with one `None` per consumer.
//!
//! ```text
//! def producer(con, p, name, product):
//!     con.close()
//!     for i in range(10):
//!         f = '%s生产的%s第%s份' % (name, product, i); print(f); p.send(f)
//!     p.send(None); p.send(None); p.send(None); p.close()
//! def consumer(con, p, name, lock):
//!     p.close()
//!     while True:
//!         lock.acquire(); product = con.recv(); lock.release()
//!         if product is None: con.close(); break
//!         print('%s消费了%s' % (name, product))
//! con, p = Pipe(); lock = Lock()
//! p1 = Process(target=producer, args=(con, p, 'yimi', '面包'))
//! c1..c3 = Process(target=consumer, args=(con, p, 'titi' / 'eva' / 'anni', lock))
//! ```
//!
//! Rust's ownership does the `close()` calls: each process gets (moves in)
//! only the end it uses; the three consumers share the receiving end
//! through an `Rc` copied into each forked child.

use shmproc::{Lock, Pipe, Process, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    shmproc::init();
    let (p, con) = Pipe::<Option<String>>::oneway()?;
    // One receiving end for three processes, as the seed's `con`: each forked
    // child gets its own copy of the `Rc` (and of the end) with the fork.
    let con = std::rc::Rc::new(con);
    let lock = Lock::new()?;
    let consumed = Value::new(0u32)?;
    let mut consumers = Vec::new();
    for name in ["titi", "eva", "anni"] {
        let (con, lock, consumed) = (con.clone(), lock.clone(), consumed.clone());
        consumers.push(Process::builder().name(name).spawn(move || loop {
            let product = {
                let _key = lock.acquire();
                con.recv().unwrap()
            };
            match product {
                None => break,
                Some(product) => {
                    println!("{name} consumed {product}");
                    *consumed.lock().unwrap() += 1;
                }
            }
        })?);
    }
    drop(con);
    let mut producer = Process::builder().name("yimi").spawn(move || {
        for i in 0..10 {
            let f = format!("yimi made bread #{i}");
            println!("{f}");
            p.send(&Some(f)).unwrap();
        }
        for _ in 0..3 {
            p.send(&None).unwrap();
        }
    })?;
    assert_eq!(producer.join()?, 0);
    for c in &mut consumers {
        assert_eq!(c.join()?, 0);
    }
    println!("{} products consumed by three consumers", consumed.get());
    assert_eq!(consumed.get(), 10);
    Ok(())
}
