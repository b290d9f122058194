//! Python tutorial: a traffic light process flips an `Event` between green
//! (set) and red (clear); car processes wait for green before they pass.
//!
//! ```text
//! def cars(e, i):
//!     if not e.is_set(): print('car%i waits' % i); e.wait()
//!     print('car%i passes' % i)
//! def light(e):
//!     while True:
//!         if e.is_set(): e.clear(); print('red'); time.sleep(2)
//!         else: e.set(); print('green'); time.sleep(2)
//! ```

use std::time::Duration;

use shmproc::{Event, Process};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    shmproc::init();
    let green = Event::new()?; // starts red (clear), as in Python
    let e = green.clone();
    let light = Process::builder().name("light").daemon(true).spawn(move || -> () {
        loop {
            if e.is_set() {
                e.clear();
                println!("\x1b[31mred light\x1b[0m");
            } else {
                e.set();
                println!("\x1b[32mgreen light\x1b[0m");
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    })?;
    let mut cars = Vec::new();
    for i in 0..6u64 {
        let e = green.clone();
        cars.push(Process::spawn(move || {
            if !e.is_set() {
                println!("car{i} waits at the red light");
                e.wait();
            }
            println!("car{i} passes");
        })?);
        std::thread::sleep(Duration::from_millis(40 * (i % 3)));
    }
    for c in &mut cars {
        c.join()?;
    }
    light.terminate()?;
    println!("all cars passed");
    Ok(())
}
