//! Python tutorial (seed 000): `Manager().dict({'count': 100})`, 50
//! processes each decrementing `count` under a `Lock`; the parent prints
//! the dict with `count` at 50. Here the dict is a [`SharedMap`] in shared
//! memory (no manager server process) and the lock a [`Lock`].
//!
//! ```text
//! def main(dic, lock):
//!     lock.acquire()
//!     dic['count'] -= 1
//!     lock.release()
//! m = Manager(); l = Lock(); dic = m.dict({'count': 100})
//! for i in range(50): p = Process(target=main, args=(dic, l)); p.start(); p_lst.append(p)
//! for i in p_lst: i.join()
//! print('主进程', dic)
//! ```

use shmproc::{Lock, Process, SharedMap};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    shmproc::init();
    let dic = SharedMap::<String, i64>::with_capacity(16)?;
    dic.insert(&"count".to_string(), &100)?;
    let lock = Lock::new()?;
    let mut p_lst = Vec::new();
    for _ in 0..50 {
        let (dic, lock) = (dic.clone(), lock.clone());
        p_lst.push(Process::spawn(move || {
            let _key = lock.acquire(); // held until the end of the block
            let count = dic.get(&"count".to_string()).unwrap().unwrap_or(0);
            dic.insert(&"count".to_string(), &(count - 1)).unwrap();
        })?);
    }
    for p in &mut p_lst {
        assert_eq!(p.join()?, 0);
    }
    println!("main process {:?}", dic.snapshot()?);
    assert_eq!(dic.get(&"count".to_string())?, Some(50));
    println!("count is 50");
    Ok(())
}
