//! Builds a laned `Queue<u64>` (2 to 8 lanes), fills several lanes (each
//! handle opened with `Queue::open_in` is a producer of its own and gets a
//! lane of its own), then scribbles fuzzer bytes over the queue's object:
//! the `Extra` header in front of the rings (layout tag, lane count, lane
//! tickets, task counter) and anywhere in the lanes (locks, counters, ring
//! headers, frames). It then re-opens the queue with `Queue::open_in` and
//! runs a bounded sequence of operations on the re-opened and the older
//! handles: every outcome must be a value or a typed error, never a panic,
//! an out-of-bounds access or a hang (every operation used here is
//! non-blocking or has a timeout of at most 50 µs).
//!
//! Input: `[lanes, fill, scribbles, (kind, a, b, c) × scribbles, (op, arg)…]`.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shmproc::{Queue, Segment};

const CAPACITY: usize = 8;
/// At most this many handles: the builder's and one per extra producer.
const HANDLES: usize = 4;
/// At most this many operations after the scribbles.
const OPS: usize = 64;

/// Where the lanes are in the queue's object: the Extra header's size and a
/// lane's size (measured once from a 1-lane and a 2-lane queue).
static LAYOUT: LazyLock<(usize, usize)> = LazyLock::new(|| {
    let seg = Segment::anonymous(4 << 20).unwrap();
    let size = |name: &str, lanes: usize| {
        let _q = builder().lanes(lanes).build_in(&seg, name).unwrap();
        seg.region().find(name.as_bytes()).unwrap().size
    };
    let (one, two) = (size("one", 1), size("two", 2));
    (one - (two - one), two - one)
});

fn builder() -> shmproc::QueueBuilder<u64> {
    Queue::<u64>::builder().capacity(CAPACITY).message_size(16)
}

fuzz_target!(|data: &[u8]| {
    let [lanes, fill, scribbles, rest @ ..] = data else { return };
    let lanes = 2 + usize::from(*lanes) % 7;
    // Up to 8 lanes of about 260 KiB (a byte ring's smallest buffer).
    let seg = Segment::anonymous(4 << 20).unwrap();
    let q = builder().lanes(lanes).build_in(&seg, "q").unwrap();
    assert_eq!((q.lanes(), q.capacity()), (lanes, lanes * CAPACITY));
    // Producers: the builder's handle and up to three more mappings of the
    // queue (each mapping takes a lane ticket on its first send), each
    // sending up to CAPACITY messages into a lane of its own. Before the
    // scribbles every send must go through and the queue count them all.
    let producers = (1 + usize::from(fill & 3)).min(lanes);
    let per = usize::from(fill >> 2) % (CAPACITY + 1);
    let mut handles = vec![q];
    for _ in 1..producers {
        handles.push(Queue::<u64>::open_in(&seg, "q").unwrap());
    }
    for (h, handle) in handles.iter().enumerate() {
        for s in 0..per {
            if let Err(e) = handle.try_send(&((h as u64) << 32 | s as u64)) {
                panic!("clean queue refused a send into a lane of its own: {e}");
            }
        }
    }
    assert_eq!(handles[0].len(), producers * per);

    let info = seg.region().find(b"q").unwrap();
    let base = seg.region().base().as_ptr();
    let (ring_offset, lane_size) = *LAYOUT;
    assert_eq!(info.size, ring_offset + lanes * lane_size);
    let (scribbles, rest) = rest.split_at((usize::from(*scribbles) % 32 * 4).min(rest.len() / 4 * 4));
    for w in scribbles.chunks_exact(4) {
        let [kind, a, b, c] = [w[0], w[1], w[2], w[3]];
        let off = match kind % 4 {
            // A byte of the Extra header (the task counter, notifier,
            // layout tag, lane count, lane tickets, block counters).
            0 => usize::from(u16::from_le_bytes([a, b])) % ring_offset,
            // An aligned word of its first 128 bytes: small or huge values
            // (a lane count of 0, 9, 65 or 2^31…) in one step.
            1 => {
                let off = usize::from(a) % 32 * 4;
                let v = u32::from(u16::from_le_bytes([b, c]));
                let v = if kind & 4 != 0 { v << 16 | v } else { v };
                // SAFETY: inside the mapped object (its Extra header is at
                // least 128 bytes), 4-aligned (objects are 128-aligned); the
                // shared state is atomics and plain bytes, valid for any
                // value.
                unsafe { base.add(info.offset + off).cast::<u32>().write_volatile(v) };
                continue;
            }
            // A byte of a lane's first 4 KiB: its locks, counters, ring
            // header and first frames.
            2 => {
                let within = usize::from(u16::from_le_bytes([b, kind >> 2])) % 4096;
                ring_offset + usize::from(a) % lanes * lane_size + within
            }
            // A byte anywhere in the object.
            _ => u32::from_le_bytes([a, b, kind >> 2, 0]) as usize % info.size,
        };
        // SAFETY: off < info.size: inside the mapped object, whose shared
        // state is atomics and plain bytes, valid for any value.
        unsafe { base.add(info.offset + off).write_volatile(c) };
    }

    // The re-opened handle comes first; opening may refuse a corrupt queue
    // with a typed error, and the older handles are then used alone.
    if let Ok(r) = Queue::<u64>::open_in(&seg, "q") {
        handles.insert(0, r);
    }
    handles.truncate(HANDLES + 1);
    let mut got = Vec::new();
    for op in rest.chunks_exact(2).take(OPS) {
        let (op, arg) = (op[0], op[1]);
        let h = &handles[usize::from(op >> 3) % handles.len()];
        let tiny = Duration::from_micros(u64::from(arg) % 50);
        match op % 8 {
            0 if arg & 1 == 1 => {
                let _ = h.try_send_batch(&[u64::from(arg); 5][..usize::from(arg >> 5) % 6]);
            }
            0 => {
                let _ = h.try_send(&u64::from(arg));
            }
            1 => {
                let _ = h.try_recv();
            }
            2 => {
                got.clear();
                let _ = h.try_recv_batch(&mut got, 1 + usize::from(arg) % 16);
            }
            3 => {
                let _ = (h.len(), h.is_empty(), h.is_full(), h.lanes(), h.capacity());
            }
            4 => {
                let _ = h.recv_timeout(tiny);
            }
            5 => {
                let _ = h.send_timeout(&u64::from(arg), tiny);
            }
            6 => {
                let _ = h.recv_ref_timeout(Duration::ZERO).map(|g| g.to_native());
            }
            // Another mapping: a new producer (a new lane ticket from the
            // scribbled counter) and a new consumer cursor.
            _ => {
                if handles.len() <= HANDLES {
                    if let Ok(r) = Queue::<u64>::open_in(&seg, "q") {
                        handles.push(r);
                    }
                }
            }
        }
    }
});
