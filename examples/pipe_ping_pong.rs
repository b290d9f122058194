//! Python tutorial: `Pipe()` between two processes. One end sends five
//! messages and then receives five; the other receives, then answers. A
//! `None`-style sentinel (`Option`) ends the conversation, and closing an end
//! makes the other side's `recv` report the disconnection (Python's
//! `EOFError`).
//!
//! ```text
//! def task1(pipe):
//!     for i in range(5): pipe.send('task1-%d' % i)
//!     for i in range(5): print(pipe.recv())
//! def task2(pipe):
//!     for i in range(5): print(pipe.recv())
//!     for i in range(5): pipe.send('task2-%d' % i)
//! pipe = Pipe(); Process(target=task1, args=(pipe[0],)); Process(target=task2, args=(pipe[1],))
//! ```

use shmproc::{Pipe, Process, RecvError};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    shmproc::init();
    let (a, b) = Pipe::<Option<String>>::duplex()?;
    let mut t2 = Process::builder().name("task2").spawn(move || {
        for _ in 0..5 {
            println!("task2 received: {:?}", b.recv().unwrap());
        }
        for i in 0..5 {
            b.send(&Some(format!("task2-{i}"))).unwrap();
        }
        b.send(&None).unwrap();
    })?;
    for i in 0..5 {
        a.send(&Some(format!("task1-{i}")))?;
    }
    while let Some(msg) = a.recv()? {
        println!("task1 received: {msg}");
    }
    t2.join()?;
    // task2's end is gone: the Python version would raise EOFError here.
    assert_eq!(a.recv(), Err(RecvError::Disconnected));
    println!("the other end closed");
    Ok(())
}
