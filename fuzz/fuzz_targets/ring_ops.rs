//! Arbitrary operation sequences on the SPSC byte ring and the MPMC slot ring,
//! checked against a `VecDeque` model: every accepted message comes out once,
//! in order, byte for byte; the rings refuse exactly what cannot fit.
#![no_main]

use std::collections::VecDeque;
use std::ptr::NonNull;

use libfuzzer_sys::fuzz_target;
use shmproc_core::mpmc::{MpmcError, MpmcRing};
use shmproc_core::owner::Owner;
use shmproc_core::spsc::{RingError, SpscRing, FRAME_HEADER};
use shmproc_core::Identity;

#[repr(C, align(128))]
#[derive(Clone, Copy)]
struct Line([u8; 128]);

fn memory(bytes: usize) -> Vec<Line> {
    vec![Line([0; 128]); bytes.div_ceil(128)]
}

fn payload(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

fn padded(n: usize) -> usize {
    (n + 7) & !7
}

fn spsc(data: &[u8]) {
    let cap = 64usize << (data.first().copied().unwrap_or(0) % 5);
    let size = SpscRing::required_size(cap);
    let mut mem = memory(size);
    let base = NonNull::new(mem.as_mut_ptr().cast::<u8>()).unwrap();
    // SAFETY: `mem` is aligned, `size` bytes long and outlives the ring.
    let ring = unsafe { SpscRing::init(base, size, cap) }.unwrap();
    let (mut p, mut c) = (ring.producer(), ring.consumer());
    let mut model: VecDeque<Vec<u8>> = VecDeque::new();
    let mut i = 1;
    while i + 1 < data.len() {
        let op = data[i];
        let arg = data[i + 1] as usize;
        i += 2;
        match op % 6 {
            0 | 1 => {
                // push: sizes up to and beyond the capacity.
                let len = arg * (cap / 64 + 1) / 2;
                let msg = payload(op, len);
                match p.push(&msg) {
                    Ok(()) => model.push_back(msg),
                    Err(RingError::TooLarge) => assert!(len > ring.max_frame()),
                    Err(RingError::Full) if model.is_empty() => {
                        // Only a wrap marker can be in the way: once the
                        // consumer skips it, any frame up to max_frame fits.
                        assert_eq!(c.pop(|b| b.to_vec()).unwrap(), None);
                        p.push(&msg).expect("an empty ring must take a frame up to max_frame");
                        model.push_back(msg);
                    }
                    Err(RingError::Full) => {
                        let used: usize = model.iter().map(|m| FRAME_HEADER + padded(m.len())).sum();
                        assert!(used > 0);
                    }
                    Err(e) => panic!("push: {e:?}"),
                }
            }
            2 => {
                // reserve, write part, commit
                let len = arg % (cap / 2);
                match p.reserve(len) {
                    Ok(r) => {
                        let written = len / 2 + (arg & 1);
                        let written = written.min(len);
                        let msg = payload(op ^ 0x5a, written);
                        p.buffer(&r)[..written].copy_from_slice(&msg);
                        p.commit(r, written);
                        model.push_back(msg);
                    }
                    Err(RingError::Full) if model.is_empty() => {
                        assert_eq!(c.pop(|b| b.to_vec()).unwrap(), None);
                        let r = p.reserve(len).expect("an empty ring must take a frame up to max_frame");
                        p.commit(r, 0);
                        model.push_back(Vec::new());
                    }
                    Err(RingError::Full) => {}
                    Err(e) => panic!("reserve: {e:?}"),
                }
            }
            3 => {
                // pop
                let got = c.pop(|b| b.to_vec()).unwrap();
                assert_eq!(got, model.pop_front());
            }
            4 => {
                // batch push
                let msgs: Vec<Vec<u8>> = (0..arg % 5).map(|k| payload(k as u8, (arg * 3 + k) % (cap / 3))).collect();
                match p.push_batch(msgs.iter().map(Vec::as_slice)) {
                    Ok(n) => model.extend(msgs.into_iter().take(n)),
                    Err(RingError::Full) => {}
                    Err(e) => panic!("batch push: {e:?}"),
                }
            }
            _ => {
                // batch pop
                let mut got = Vec::new();
                let n = c.pop_batch(arg % 7, |b| got.push(b.to_vec())).unwrap();
                assert_eq!(n, got.len());
                for g in got {
                    assert_eq!(Some(g), model.pop_front());
                }
            }
        }
        // A pending wrap marker may occupy the ring while the model is empty.
        let used = ring.used().unwrap();
        if !model.is_empty() {
            assert!(used > 0);
        }
    }
    while let Some(m) = model.pop_front() {
        assert_eq!(c.pop(|b| b.to_vec()).unwrap(), Some(m));
    }
    assert_eq!(c.pop(|b| b.len()).unwrap(), None);
}

fn mpmc(data: &[u8]) {
    let slots = 1 + data.first().copied().unwrap_or(0) as usize % 9;
    let slot_size = 8 + data.get(1).copied().unwrap_or(0) as usize % 64;
    let size = MpmcRing::required_size(slots, slot_size).unwrap();
    let mut mem = memory(size);
    let base = NonNull::new(mem.as_mut_ptr().cast::<u8>()).unwrap();
    // SAFETY: `mem` is aligned, `size` bytes long and outlives the ring.
    let ring = unsafe { MpmcRing::init(base, size, slots, slot_size) }.unwrap();
    let me = Owner { thread: Identity { id: 1, start: 1 }, pid: 1 };
    let mut model: VecDeque<Vec<u8>> = VecDeque::new();
    let mut i = 2;
    while i + 1 < data.len() {
        let (op, arg) = (data[i], data[i + 1] as usize);
        i += 2;
        if op % 2 == 0 {
            let msg = payload(op, arg % (slot_size + 8));
            match ring.try_push(&me, &msg) {
                Ok(()) => model.push_back(msg),
                Err(MpmcError::Full) => assert_eq!(model.len(), slots),
                Err(MpmcError::TooLarge) => assert!(msg.len() > slot_size),
                Err(e) => panic!("push: {e:?}"),
            }
        } else {
            match ring.try_pop(&me) {
                Ok(c) => {
                    assert_eq!(Some(ring.bytes(&c).to_vec()), model.pop_front());
                    ring.release(c);
                }
                Err(MpmcError::Empty) => assert!(model.is_empty()),
                Err(e) => panic!("pop: {e:?}"),
            }
        }
        assert_eq!(ring.len(), model.len());
    }
}

fuzz_target!(|data: &[u8]| {
    match data.first() {
        Some(b) if b & 0x80 != 0 => mpmc(&data[1..]),
        _ => spsc(data),
    }
});
