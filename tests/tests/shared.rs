//! SharedMap and SharedList across processes, including writers killed
//! mid-update.

use std::collections::BTreeMap;
use std::time::Duration;

use shmproc::{Process, SharedError, SharedList, SharedMap};
use shmproc_tests::{ensure, trials, TestResult, HANG_LIMIT};

fn map_updated_by_four_processes_is_exact() -> TestResult {
    let m = SharedMap::<String, u64>::with_capacity(512)?;
    let mut kids = Vec::new();
    for p in 0..4u64 {
        let m = m.clone();
        kids.push(Process::spawn(move || {
            for j in 0..50u64 {
                m.insert(&format!("p{p}-{j}"), &(p * 1000 + j)).unwrap();
                m.update(&"total".to_string(), |old| Some(old.copied().unwrap_or(0) + 1)).unwrap();
            }
            // Replace and remove some of our own keys.
            for j in 0..10u64 {
                m.insert(&format!("p{p}-{j}"), &(j + 7)).unwrap();
            }
            m.remove(&format!("p{p}-49")).unwrap();
        })?);
    }
    for k in &mut kids {
        ensure!(k.join_timeout(HANG_LIMIT)? == Some(0));
    }
    let snap: BTreeMap<String, u64> = m.snapshot()?.into_iter().collect();
    let mut expected = BTreeMap::new();
    for p in 0..4u64 {
        for j in 0..49u64 {
            expected.insert(format!("p{p}-{j}"), if j < 10 { j + 7 } else { p * 1000 + j });
        }
    }
    expected.insert("total".to_string(), 200);
    ensure!(snap == expected, "map content differs: {} vs {} entries", snap.len(), expected.len());
    ensure!(m.len() == expected.len());
    ensure!(m.get(&"p2-20".to_string())? == Some(2020));
    ensure!(m.get(&"nope".to_string())?.is_none());
    Ok(())
}

fn map_capacity_and_size_limits() -> TestResult {
    let m = SharedMap::<u32, String>::with_sizes(4, 64, 64)?;
    for i in 0..4 {
        m.insert(&i, &format!("v{i}"))?;
    }
    ensure!(m.insert(&99, &"x".into()) == Err(SharedError::Full));
    ensure!(m.insert(&1, &"replaced".into())? == Some("v1".into()), "replacing works when full");
    // A value larger than its slot is kept out of line; a key must fit.
    ensure!(m.insert(&2, &"y".repeat(500))? == Some("v2".into()));
    ensure!(m.get(&2)? == Some("y".repeat(500)));
    let wide = SharedMap::<String, u8>::with_sizes(4, 16, 16)?;
    ensure!(wide.insert(&"k".repeat(100), &1) == Err(SharedError::TooLarge));
    ensure!(m.remove(&3)? == Some("v3".into()));
    m.insert(&99, &"now fits".into())?;
    ensure!(m.len() == 4 && m.capacity() == 4);
    m.clear();
    ensure!(m.is_empty() && m.snapshot()?.is_empty());
    Ok(())
}

fn map_stays_consistent_when_writers_are_killed() -> TestResult {
    let m = SharedMap::<u64, Vec<u64>>::with_sizes(64, 32, 256)?;
    for round in 0..12u64 {
        let m2 = m.clone();
        let writer = Process::spawn(move || -> () {
            let mut i = 0u64;
            loop {
                let k = i % 40;
                m2.insert(&k, &vec![k; (i % 20) as usize]).unwrap();
                if i.is_multiple_of(3) {
                    m2.remove(&((i + 7) % 40)).unwrap();
                }
                i += 1;
            }
        })?;
        std::thread::sleep(Duration::from_micros(300 + 700 * round));
        writer.kill()?;
        let mut writer = writer;
        writer.join()?;
        // Consistent: every entry decodes, values match keys, no duplicates,
        // len agrees with the contents.
        let snap = m.snapshot()?;
        let mut keys: Vec<u64> = snap.iter().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        let n = keys.len();
        keys.dedup();
        ensure!(keys.len() == n, "duplicate keys after a kill in round {round}");
        ensure!(snap.iter().all(|(k, v)| v.iter().all(|x| x == k)), "torn value in round {round}");
        ensure!(m.len() == n, "len {} vs {} entries", m.len(), n);
    }
    Ok(())
}

fn list_pushed_by_four_processes() -> TestResult {
    let l = SharedList::<String>::with_capacity(128)?;
    let mut kids = Vec::new();
    for p in 0..4 {
        let l = l.clone();
        kids.push(Process::spawn(move || {
            for j in 0..25 {
                l.push(&format!("{p}:{j}")).unwrap();
            }
        })?);
    }
    for k in &mut kids {
        ensure!(k.join_timeout(HANG_LIMIT)? == Some(0));
    }
    let mut all = l.to_vec()?;
    ensure!(all.len() == 100 && l.len() == 100);
    all.sort();
    let mut expected: Vec<String> = (0..4).flat_map(|p| (0..25).map(move |j| format!("{p}:{j}"))).collect();
    expected.sort();
    ensure!(all == expected);
    l.set(0, &"first".into())?;
    ensure!(l.get(0)? == "first");
    ensure!(l.get(100) == Err(SharedError::OutOfBounds));
    let last = l.pop()?.ok_or("empty")?;
    ensure!(l.len() == 99 && !last.is_empty());
    let small = SharedList::<u8>::with_capacity(2)?;
    small.push(&1)?;
    small.push(&2)?;
    ensure!(small.push(&3) == Err(SharedError::Full));
    Ok(())
}

/// Bytes of memory a segment's file holds (out-of-line values included).
fn allocated(seg: &shmproc::Segment) -> u64 {
    // SAFETY: an all-zero stat is a valid value to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on the segment's open fd into a valid buffer.
    assert_eq!(unsafe { libc::fstat(seg.as_raw_fd(), &mut st) }, 0);
    st.st_blocks as u64 * 512
}

/// Values of any size (Python's `Manager().dict()` takes any picklable value):
/// across processes, and the memory of replaced, removed and cleared values
/// is returned.
fn map_values_of_any_size_are_freed_when_retired() -> TestResult {
    const BIG: usize = 1 << 20;
    let seg = shmproc::Segment::anonymous(1 << 20)?;
    let m = SharedMap::<u32, Vec<u8>>::new_in(&seg, "m", 8)?;
    let base = allocated(&seg);
    let m2 = m.clone();
    let mut child = shmproc::Process::spawn(move || {
        for k in 0..4u32 {
            m2.insert(&k, &vec![k as u8; 4 * BIG]).unwrap();
        }
    })?;
    ensure!(child.join_timeout(HANG_LIMIT)? == Some(0));
    for k in 0..4u32 {
        ensure!(m.get(&k)? == Some(vec![k as u8; 4 * BIG]));
    }
    ensure!(allocated(&seg) >= base + 16 * BIG as u64, "values not counted: the test could not fail");
    for round in 0..3u8 {
        for k in 0..4u32 {
            ensure!(m.insert(&k, &vec![round; BIG])?.is_some());
        }
    }
    ensure!(m.update(&0, |v| v.map(|v| v[..10].to_vec()))?.map(|v| v.len()) == Some(BIG));
    ensure!(m.remove(&1)?.map(|v| v.len()) == Some(BIG));
    ensure!(m.snapshot()?.len() == 3);
    ensure!(allocated(&seg) <= base + 3 * BIG as u64 + (1 << 16), "replaced values were not freed");
    m.clear();
    ensure!(allocated(&seg) <= base + (1 << 16), "{} bytes left after clear", allocated(&seg) - base);
    Ok(())
}

/// A peer that writes random bytes over a map's slots without taking its
/// lock, while this process reads and writes: every call gives a value or a
/// typed error, and the process neither faults, panics nor hangs (entries
/// are compared and copied out through atomic loads, then validated).
fn scribbled_map_entries_give_values_or_errors() -> TestResult {
    let seg = shmproc::Segment::anonymous(4 << 20)?;
    let m = SharedMap::<u32, String>::new_in(&seg, "m", 64)?;
    for k in 0..32u32 {
        m.insert(&k, &format!("value {k}"))?;
    }
    let info = seg.region().find(b"m")?;
    let base = seg.region().base().as_ptr() as usize + info.offset;
    // Spare the head (the lock and counters: a forged lock word is another
    // test's subject) and scribble over the slots.
    let (lo, hi) = (base + 512, base + info.size);
    let scribbler = shmproc_tests::scribbler(lo, hi, Duration::from_millis(1500))?;
    let (mut ok, mut errors) = (0u32, 0u32);
    let started = std::time::Instant::now();
    while scribbler.is_alive() && started.elapsed() < HANG_LIMIT {
        for k in 0..32u32 {
            let outcomes =
                [m.get(&k).map(|_| ()), m.insert(&k, &format!("value {k}")).map(|_| ()), m.snapshot().map(|_| ())];
            for r in outcomes {
                match r {
                    Ok(()) => ok += 1,
                    Err(_) => errors += 1,
                }
            }
        }
    }
    let mut scribbler = scribbler;
    ensure!(scribbler.join()? == 0);
    ensure!(ok > 0, "nothing succeeded at all");
    println!("scribbled map: {ok} calls succeeded, {errors} typed errors");
    Ok(())
}

fn main() {
    shmproc_tests::run(trials![
        scribbled_map_entries_give_values_or_errors,
        map_updated_by_four_processes_is_exact,
        map_capacity_and_size_limits,
        map_values_of_any_size_are_freed_when_retired,
        map_stays_consistent_when_writers_are_killed,
        list_pushed_by_four_processes,
    ]);
}
