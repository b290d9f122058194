//! Arbitrary operation sequences on the SPSC byte ring and the MPMC slot ring,
//! checked against a `VecDeque` model: every accepted message comes out once,
//! in order, byte for byte, with its kind, 16-byte aligned; the rings refuse
//! exactly what cannot fit (for the SPSC ring: never while
//! `capacity_for_frames` says the frames fit). The MPMC part also lets
//! consumers die holding a message and checks that `recover_reader_with`
//! hands exactly that message to its `on_drop`, once.
#![no_main]

use std::collections::VecDeque;
use std::ptr::NonNull;

use libfuzzer_sys::fuzz_target;
use shmproc_core::mpmc::{MpmcError, MpmcRing};
use shmproc_core::owner::Owner;
use shmproc_core::spsc::{capacity_for_frames, frame_span, RingError, SpscRing, PAYLOAD_ALIGN};
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

/// A kind for an operation: 0 (plain) half the time.
fn kind_of(op: u8, arg: usize) -> u8 {
    if op & 0x40 == 0 {
        0
    } else {
        (arg as u8).wrapping_mul(31) ^ op
    }
}

/// Whether the ring, holding `model`, was bound to take one more frame of
/// `len` bytes: `capacity_for_frames` says that many frames of the largest
/// size fit. That size includes `attempted`, the largest frame tried or
/// reserved since the ring was last empty: a failed try may have left a wrap
/// marker that skips up to its span, and so may a reservation that wrapped
/// and was committed shorter.
fn must_fit(model: &VecDeque<(Vec<u8>, u8)>, len: usize, cap: usize, attempted: usize) -> bool {
    let largest = model.iter().map(|(m, _)| m.len()).chain([len, attempted]).max().unwrap();
    capacity_for_frames(model.len() + 1, largest).is_some_and(|need| need <= cap)
}

fn spsc(data: &[u8]) {
    let cap = 64usize << (data.first().copied().unwrap_or(0) % 5);
    let size = SpscRing::required_size(cap);
    let mut mem = memory(size);
    let base = NonNull::new(mem.as_mut_ptr().cast::<u8>()).unwrap();
    // SAFETY: `mem` is aligned, `size` bytes long and outlives the ring.
    let ring = unsafe { SpscRing::init(base, size, cap) }.unwrap();
    // SAFETY: the target is the ring's only producer and consumer.
    let (mut p, mut c) = unsafe { (ring.producer(), ring.consumer()) };
    let mut model: VecDeque<(Vec<u8>, u8)> = VecDeque::new();
    let mut attempted = 0;
    let mut i = 1;
    while i + 1 < data.len() {
        let op = data[i];
        let arg = data[i + 1] as usize;
        i += 2;
        if ring.used().unwrap() == 0 {
            attempted = 0; // no frame, no marker
        }
        match op % 7 {
            0 | 1 => {
                // push: sizes up to and beyond the capacity; kinds too.
                let len = arg * (cap / 64 + 1) / 2;
                let msg = payload(op, len);
                let kind = kind_of(op, arg);
                let result = if kind == 0 && op & 0x80 == 0 { p.push(&msg) } else { p.push_kind(&msg, kind) };
                match result {
                    Ok(()) => model.push_back((msg, kind)),
                    Err(RingError::TooLarge) => assert!(len > ring.max_frame()),
                    Err(RingError::Full) if model.is_empty() => {
                        // Only a wrap marker can be in the way: once the
                        // consumer skips it, any frame up to max_frame fits.
                        assert_eq!(c.pop(|b| b.to_vec()).unwrap(), None);
                        p.push_kind(&msg, kind).expect("an empty ring must take a frame up to max_frame");
                        model.push_back((msg, kind));
                    }
                    Err(RingError::Full) => {
                        // Only a frame that can fit leaves a marker.
                        attempted = attempted.max(len);
                        assert!(
                            !must_fit(&model, len, cap, attempted),
                            "full below capacity_for_frames: {len} after {:?} in {cap}, used {:?}",
                            model.iter().map(|(m, _)| m.len()).collect::<Vec<_>>(),
                            ring.used()
                        );
                        let used: usize = model.iter().map(|(m, _)| frame_span(m.len())).sum();
                        assert!(used as u64 <= ring.used().unwrap());
                    }
                    Err(e) => panic!("push: {e:?}"),
                }
            }
            2 => {
                // reserve, write part, commit (with a kind)
                let len = arg % (cap / 2);
                let kind = kind_of(op, arg);
                match p.reserve(len) {
                    Ok(r) => {
                        attempted = attempted.max(len);
                        let written = len / 2 + (arg & 1);
                        let written = written.min(len);
                        let msg = payload(op ^ 0x5a, written);
                        let buf = p.buffer(&r);
                        assert_eq!(buf.as_ptr() as usize % PAYLOAD_ALIGN, 0);
                        buf[..written].copy_from_slice(&msg);
                        if kind == 0 {
                            p.commit(r, written);
                        } else {
                            p.commit_kind(r, written, kind);
                        }
                        model.push_back((msg, kind));
                    }
                    Err(RingError::Full) if model.is_empty() => {
                        assert_eq!(c.pop(|b| b.to_vec()).unwrap(), None);
                        let r = p.reserve(len).expect("an empty ring must take a frame up to max_frame");
                        p.commit_kind(r, 0, kind);
                        model.push_back((Vec::new(), kind));
                    }
                    Err(RingError::Full) => {
                        assert!(!must_fit(&model, len, cap, attempted), "full below capacity_for_frames");
                        attempted = attempted.max(len);
                    }
                    Err(e) => panic!("reserve: {e:?}"),
                }
            }
            3 => {
                // pop
                let got = c.pop(|b| b.to_vec()).unwrap();
                assert_eq!(got, model.pop_front().map(|(m, _)| m));
            }
            4 if op & 0x80 != 0 => {
                // a run of frames of one size (`Batch::write_run`), with a
                // kind; the writer stops before frame `stop` when asked
                let (len, count, stop) = (arg % (cap / 3), arg % 7 + 1, (op as usize / 8) % 9);
                let kind = kind_of(op, arg);
                let mut b = p.batch().unwrap();
                let mut sent = Vec::new();
                let n = b.write_run(len, kind, count, arg % 3 * 16, |j, buf| {
                    assert_eq!((buf.len(), buf.as_ptr() as usize % PAYLOAD_ALIGN), (len, 0));
                    if j == stop {
                        return Ok::<bool, ()>(false);
                    }
                    let msg = payload(op ^ j as u8, len);
                    buf.copy_from_slice(&msg);
                    sent.push(msg);
                    Ok(true)
                });
                assert_eq!(n, Ok(sent.len()));
                assert!(sent.len() <= count.min(stop));
                assert_eq!(b.finish(), sent.len());
                model.extend(sent.into_iter().map(|m| (m, kind)));
            }
            4 => {
                // batch push (plain frames)
                let msgs: Vec<Vec<u8>> = (0..arg % 5).map(|k| payload(k as u8, (arg * 3 + k) % (cap / 3))).collect();
                // Only the first frame, tried alone, can leave a marker.
                if let Some(first) = msgs.first() {
                    attempted = attempted.max(first.len());
                }
                match p.push_batch(msgs.iter().map(Vec::as_slice)) {
                    Ok(n) => model.extend(msgs.into_iter().take(n).map(|m| (m, 0))),
                    Err(RingError::Full) => {}
                    Err(e) => panic!("batch push: {e:?}"),
                }
            }
            5 => {
                // batch pop
                let mut got = Vec::new();
                let n = c.pop_batch(arg % 7, |b| got.push(b.to_vec())).unwrap();
                assert_eq!(n, got.len());
                for g in got {
                    assert_eq!(Some(g), model.pop_front().map(|(m, _)| m));
                }
            }
            _ => {
                // peek: payload, kind and alignment, then release
                match c.peek().unwrap() {
                    Some(f) => {
                        let (msg, kind) = model.pop_front().expect("a frame the model does not have");
                        assert_eq!((c.bytes(&f), f.kind(), f.len()), (&msg[..], kind, msg.len()));
                        assert_eq!(c.bytes(&f).as_ptr() as usize % PAYLOAD_ALIGN, 0);
                        c.release(f);
                    }
                    None => assert!(model.is_empty()),
                }
            }
        }
        // A pending wrap marker may occupy the ring while the model is empty.
        let used = ring.used().unwrap();
        if !model.is_empty() {
            assert!(used > 0);
        }
    }
    while let Some((m, kind)) = model.pop_front() {
        let f = c.peek().unwrap().expect("a frame the model has");
        assert_eq!((c.bytes(&f), f.kind()), (&m[..], kind));
        c.release(f);
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
    let me = Owner { thread: Identity { id: 1, start: 1, ns: 1 }, pid: 1 };
    let dead = Owner { thread: Identity { id: 7, start: 1, ns: 1 }, pid: 7 };
    let alive = |tid: u32, _: Option<u64>| tid != 7;
    // Slots in use: a capacity of 1 takes two (see `MpmcRing::init`).
    let real_slots = slots.max(2) as u64;
    // What the positions from `deq` to `enq` hold: a message and its kind,
    // or a skip (a writer that gave up).
    let mut model: VecDeque<Option<(Vec<u8>, u8)>> = VecDeque::new();
    let (mut enq, mut deq) = (0u64, 0u64);
    // Messages claimed by consumers that died, by position.
    let mut held: Vec<(u64, Vec<u8>, u8)> = Vec::new();
    let mut i = 2;
    while i + 1 < data.len() {
        let (op, arg) = (data[i], data[i + 1] as usize);
        i += 2;
        // The slot the next push needs is taken: by the capacity, or by a
        // dead consumer's claim from the lap before.
        let blocked = model.len() >= slots || held.iter().any(|h| h.0 + real_slots == enq);
        match op % 4 {
            0 | 1 => {
                let msg = payload(op, arg % (slot_size + 8));
                let kind = kind_of(op, arg);
                let result = if op % 4 == 0 {
                    ring.try_push(&me, &msg).map(|()| 0)
                } else {
                    ring.try_push_with_kind(&me, kind, |buf| {
                        assert_eq!(buf.as_ptr() as usize % 16, 0);
                        buf.get_mut(..msg.len())?.copy_from_slice(&msg);
                        Some(msg.len())
                    })
                    .map(|()| kind)
                };
                match result {
                    Ok(kind) => {
                        assert!(!blocked);
                        model.push_back(Some((msg, kind)));
                        enq += 1;
                    }
                    Err(MpmcError::Full) => assert!(blocked),
                    Err(MpmcError::TooLarge) => {
                        assert!(msg.len() > slot_size);
                        if op % 4 == 1 {
                            // The writer refused after claiming: a skip.
                            assert!(!blocked);
                            model.push_back(None);
                            enq += 1;
                        }
                    }
                    Err(e) => panic!("push: {e:?}"),
                }
            }
            2 => {
                let dies = op & 0x40 != 0;
                match ring.try_pop(if dies { &dead } else { &me }) {
                    Ok(c) => {
                        // Skips before the message are consumed silently.
                        while let Some(None) = model.front() {
                            model.pop_front();
                            deq += 1;
                        }
                        let (msg, kind) = model.pop_front().flatten().expect("a message the model does not have");
                        assert_eq!((ring.bytes(&c), ring.kind(&c)), (&msg[..], kind));
                        assert_eq!(ring.bytes(&c).as_ptr() as usize % 16, 0);
                        if dies {
                            // This consumer dies holding the message.
                            held.push((deq, msg, kind));
                        } else {
                            ring.release(c);
                        }
                        deq += 1;
                    }
                    Err(MpmcError::Empty) => {
                        assert!(model.iter().all(Option::is_none));
                        deq += model.len() as u64;
                        model.clear();
                    }
                    Err(e) => panic!("pop: {e:?}"),
                }
            }
            _ => {
                // A blocked producer recovers the slot a dead consumer holds,
                // if the next push needs it.
                let expect = held.iter().position(|h| h.0 + real_slots == enq);
                let mut drops = Vec::new();
                let (_, done) = ring.recover_reader_with(&alive, arg & 1 != 0, |kind, bytes| {
                    let mut copy = vec![0; bytes.len()];
                    bytes.copy_to(&mut copy);
                    drops.push((copy, kind));
                });
                match expect {
                    Some(k) => {
                        assert!(done);
                        let (_, msg, kind) = held.remove(k);
                        assert_eq!(drops, [(msg, kind)]);
                    }
                    None => assert!(!done && drops.is_empty()),
                }
            }
        }
        assert_eq!(enq - deq, model.len() as u64);
        assert_eq!(ring.len(), model.len());
        let mut scanned = 0;
        ring.scan_with_kind(|_, _, b| {
            assert_eq!(b.as_ptr() as usize % 16, 0);
            scanned += 1;
        });
        assert_eq!(scanned, model.iter().flatten().count() + held.len());
    }
}

fuzz_target!(|data: &[u8]| {
    match data.first() {
        Some(b) if b & 0x80 != 0 => mpmc(&data[1..]),
        _ => spsc(data),
    }
});
