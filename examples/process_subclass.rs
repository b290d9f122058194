//! Python tutorial: a `Process` subclass with a `run` method (seeds 000 and
//! 003). In Rust the "subclass" is a type implementing
//! [`shmproc::process::Run`]; [`shmproc::Process::start`] forks a child that
//! owns the value (its fields are moved into the child) and calls `run`.
//!
//! ```text
//! class MyProcess(Process):
//!     def __init__(self, person):
//!         super().__init__()
//!         self.person = person
//!     def run(self):
//!         print(os.getpid(), self.pid)
//!         print('%s is chatting' % self.person)
//! p1 = MyProcess('Jedan'); p2 = MyProcess('太白'); p3 = MyProcess('alexDSB')
//! p1.start(); p2.start(); p3.start(); p1.join(); p2.join(); p3.join()
//! ```

use shmproc::process::Run;
use shmproc::Process;

/// Seed 003's `MyProcess(person)`.
struct MyProcess {
    person: String,
}

impl Run for MyProcess {
    fn run(self) {
        let me = shmproc::current_process();
        println!("{} (pid {}): {} is chatting", me.name(), me.pid(), self.person);
    }
}

/// Seed 000's `Myprocess(arg1, arg2)`, which prints its pid, name and both
/// arguments.
struct Myprocess {
    arg1: u32,
    arg2: u32,
}

impl Run for Myprocess {
    fn run(self) {
        let me = shmproc::current_process();
        println!("pid {} name {} arg1 {} arg2 {}", me.pid(), me.name(), self.arg1, self.arg2);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    shmproc::init();
    let mut chats = Vec::new();
    for person in ["Jedan", "太白", "alexDSB"] {
        chats.push(Process::start(MyProcess { person: person.to_string() })?);
    }
    for p in &mut chats {
        assert_eq!(p.join()?, 0);
    }
    let mut ps = Vec::new();
    for i in 0..5 {
        println!("{}", "*".repeat(i as usize)); // seed 000 prints in __init__, in the parent
        ps.push(Process::builder().name(format!("Myprocess-{i}")).start(Myprocess { arg1: i, arg2: i + 1 })?);
    }
    for p in &mut ps {
        assert_eq!(p.join()?, 0);
    }
    println!("all process objects finished");
    Ok(())
}
