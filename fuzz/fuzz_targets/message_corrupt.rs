//! Operates a live `Queue<Vec<u8>>` carrying messages of every size (in the
//! ring, and out of line in blocks of the segment file), in each layout
//! (byte ring, slot ring, unbounded byte ring with its chain of rings),
//! through the public API while scribbling arbitrary bytes over its shared
//! state: locks, counters, ring headers, frames, block descriptors and link
//! frames. Before the first scribble the queue must behave exactly like a
//! FIFO (bounded: `Full` exactly at its capacity; unbounded: never `Full`),
//! every message intact, checked against a `VecDeque`; after it, only values
//! or errors are allowed: never a panic, a fault, an out-of-bounds access or
//! a hang (every operation used here is non-blocking).
#![no_main]

use std::collections::VecDeque;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shmproc::{Queue, Segment, TryRecvError, TrySendError};

const CAPACITY: usize = 8;

/// A message of `len` bytes that says which message it is.
fn message(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| tag.wrapping_add(i as u8)).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let seg = Segment::anonymous(2 << 20).unwrap();
    let b = Queue::<Vec<u8>>::builder().capacity(CAPACITY).message_size(64);
    let (b, unbounded) = match mode % 3 {
        0 => (b, false),
        1 => (b.slot_ring(), false),
        _ => (b.unbounded(), true),
    };
    let q = b.build_in(&seg, "q").unwrap();
    let info = seg.region().find(b"q").unwrap();
    let base = seg.region().base().as_ptr();
    let span = info.size.min(8192);
    let mut model: VecDeque<Vec<u8>> = VecDeque::new();
    let mut scribbled = false;
    for chunk in rest.chunks(4) {
        let [op, a, b, c] = match chunk {
            [op, a, b, c] => [*op, *a, *b, *c],
            _ => break,
        };
        match op % 7 {
            0 | 1 => {
                // Sizes from empty to 60 KiB (in the ring while there is room
                // to spare, out of line otherwise), now and then 300 KiB.
                let len = match a % 4 {
                    0 => usize::from(b),
                    1 | 2 => usize::from(u16::from_le_bytes([b, c])) % 61_440,
                    _ => 300 << 10,
                };
                let m = message(c, len);
                let r = q.try_send(&m);
                if !scribbled {
                    match r {
                        Ok(()) => model.push_back(m),
                        Err(TrySendError::Full) if !unbounded => assert_eq!(model.len(), CAPACITY),
                        Err(e) => panic!("clean queue refused a send: {e}"),
                    }
                }
            }
            2 => {
                let r = q.try_recv();
                if !scribbled {
                    match r {
                        Ok(v) => assert!(Some(v) == model.pop_front(), "a message changed"),
                        Err(TryRecvError::Empty) => assert!(model.is_empty()),
                        Err(e) => panic!("clean queue failed a receive: {e}"),
                    }
                }
            }
            3 => {
                let r = q.recv_ref_timeout(Duration::ZERO).map(|g| g.as_slice().to_vec());
                if !scribbled {
                    match r {
                        Ok(v) => assert!(Some(v) == model.pop_front(), "a message changed in place"),
                        Err(_) => assert!(model.is_empty()),
                    }
                }
            }
            4 => {
                let (len, full) = (q.len(), q.is_full());
                if !scribbled {
                    assert_eq!(len, model.len());
                    assert_eq!(full, !unbounded && model.len() == CAPACITY);
                }
            }
            _ => {
                let off = info.offset + (usize::from(u16::from_le_bytes([a, b])) % span);
                // SAFETY: inside the mapped object; its shared state is atomics
                // and plain bytes, valid for any value.
                unsafe { base.add(off).write_volatile(c) };
                scribbled = true;
            }
        }
    }
});
