//! Python tutorial: daemon processes, `terminate` and `is_alive`.
//!
//! ```text
//! p = Process(target=func); p.daemon = True; p.start()     # prints "still alive" every second
//! p1 = Process(target=func1); p1.start()
//! time.sleep(4); p1.terminate(); time.sleep(2); print(p1.is_alive())
//! ```
//! The daemon is terminated when the main process exits.

use std::time::Duration;

use shmproc::Process;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    shmproc::init();
    println!("main process: {}", std::process::id());
    let daemon = Process::builder().daemon(true).spawn(|| -> () {
        loop {
            std::thread::sleep(Duration::from_millis(300));
            println!("daemon {} still alive", std::process::id());
        }
    })?;
    let mut p1 = Process::spawn(|| {
        println!("in func1 start");
        std::thread::sleep(Duration::from_secs(5));
        println!("in func1 end (never printed: terminated first)");
    })?;
    // join with a timeout: p1 is still running after 1 s.
    assert_eq!(p1.join_timeout(Duration::from_millis(1000))?, None);
    p1.terminate()?;
    let code = p1.join()?;
    println!("p1 alive: {}, exit code {code} (-15 = SIGTERM)", p1.is_alive());
    println!("daemon {} alive: {}; main exits now and takes it down", daemon.pid(), daemon.is_alive());
    Ok(())
}
