//! Operates a live `Queue<u64>` (either layout: byte ring with biased side
//! locks, or slot ring) through the public API while scribbling arbitrary
//! bytes over its shared state. Before the first scribble the queue must
//! behave exactly like a bounded FIFO (checked against a `VecDeque`); after
//! it, only values or errors are allowed: never a panic, an out-of-bounds
//! access or a hang (every operation used here is non-blocking or has a zero
//! timeout).
#![no_main]

use std::collections::VecDeque;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shmproc::{Queue, Segment, TryRecvError, TrySendError};

const CAPACITY: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let seg = Segment::anonymous(2 << 20).unwrap();
    let b = Queue::<u64>::builder().capacity(CAPACITY).message_size(16);
    let q = if mode & 1 == 1 { b.slot_ring() } else { b }.build_in(&seg, "q").unwrap();
    let info = seg.region().find(b"q").unwrap();
    let base = seg.region().base().as_ptr();
    // The queue's shared state that matters: locks, counters, ring headers
    // and the first frames or slots.
    let span = info.size.min(4096);
    let mut model: VecDeque<u64> = VecDeque::new();
    let mut scribbled = false;
    for chunk in rest.chunks(4) {
        let [op, a, b, c] = match chunk {
            [op, a, b, c] => [*op, *a, *b, *c],
            _ => break,
        };
        let value = u64::from(u32::from_le_bytes([a, b, c, op]));
        match op % 6 {
            // A batch (runs of equal frames: `u64` has a fixed size) or a
            // batch receive, by the top bit.
            1 if op & 0x80 != 0 => {
                let batch: Vec<u64> = (0..u64::from(a % 11)).map(|k| value ^ k).collect();
                let r = q.try_send_batch(&batch);
                if !scribbled {
                    match r {
                        Ok(n) => {
                            assert_eq!(n, batch.len().min(CAPACITY - model.len()));
                            model.extend(&batch[..n]);
                        }
                        Err(TrySendError::Full) => assert!(model.len() == CAPACITY || batch.is_empty()),
                        Err(e) => panic!("clean queue refused a batch: {e}"),
                    }
                }
            }
            2 if op & 0x80 != 0 => {
                let mut got = Vec::new();
                let r = q.try_recv_batch(&mut got, 1 + usize::from(b % 9));
                if !scribbled {
                    match r {
                        Ok(n) => {
                            assert_eq!(n, got.len());
                            for v in got {
                                assert_eq!(Some(v), model.pop_front());
                            }
                        }
                        Err(TryRecvError::Empty) => assert!(model.is_empty()),
                        Err(e) => panic!("clean queue failed a batch receive: {e}"),
                    }
                }
            }
            0 | 1 => {
                let r = q.try_send(&value);
                if !scribbled {
                    match r {
                        Ok(()) => model.push_back(value),
                        Err(TrySendError::Full) => assert_eq!(model.len(), CAPACITY),
                        Err(e) => panic!("clean queue refused a send: {e}"),
                    }
                }
            }
            2 => {
                let r = q.try_recv();
                if !scribbled {
                    match r {
                        Ok(v) => assert_eq!(Some(v), model.pop_front()),
                        Err(TryRecvError::Empty) => assert!(model.is_empty()),
                        Err(e) => panic!("clean queue failed a receive: {e}"),
                    }
                }
            }
            3 => {
                let r = q.recv_ref_timeout(Duration::ZERO).map(|g| g.to_native());
                if !scribbled {
                    match r {
                        Ok(v) => assert_eq!(Some(v), model.pop_front()),
                        Err(_) => assert!(model.is_empty()),
                    }
                }
            }
            4 => {
                let (len, full) = (q.len(), q.is_full());
                if !scribbled {
                    assert_eq!(len, model.len());
                    assert_eq!(full, model.len() == CAPACITY);
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
