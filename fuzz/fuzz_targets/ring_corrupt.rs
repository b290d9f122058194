//! Scribbles arbitrary bytes over live rings (headers, frames, slots) between
//! operations and keeps using them: only errors are allowed, never a panic,
//! an out-of-bounds access or a hang.
#![no_main]

use std::ptr::NonNull;

use libfuzzer_sys::fuzz_target;
use shmproc_core::mpmc::MpmcRing;
use shmproc_core::owner::Owner;
use shmproc_core::spsc::SpscRing;
use shmproc_core::Identity;

#[repr(C, align(128))]
#[derive(Clone, Copy)]
struct Line([u8; 128]);

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let spsc_size = SpscRing::required_size(256);
    let mpmc_size = MpmcRing::required_size(4, 32).unwrap();
    let size = if mode & 1 == 0 { spsc_size } else { mpmc_size };
    let mut mem = vec![Line([0; 128]); size.div_ceil(128)];
    let base = NonNull::new(mem.as_mut_ptr().cast::<u8>()).unwrap();
    let me = Owner { thread: Identity { id: 1, start: 1, ns: 1 }, pid: 1 };
    let dead = |_: u32, _: Option<u64>| false;
    // SAFETY: `mem` is aligned, `size` bytes long and outlives the rings.
    unsafe {
        if mode & 1 == 0 {
            SpscRing::init(base, size, 256).unwrap();
        } else {
            MpmcRing::init(base, size, 4, 32).unwrap();
        }
    }
    for chunk in rest.chunks(6) {
        if chunk.len() < 6 {
            break;
        }
        // Scribble 4 bytes at an offset that favours the header and the
        // first frames/slots.
        let off = (u16::from_le_bytes([chunk[0], chunk[1]]) as usize) % size;
        let end = (off + 4).min(size);
        let bytes = mem.as_mut_ptr().cast::<u8>();
        for (k, pos) in (off..end).enumerate() {
            // SAFETY: pos < size <= the buffer's length.
            unsafe { *bytes.add(pos) = chunk[2 + k] };
        }
        let op = chunk[5];
        if mode & 1 == 0 {
            // SAFETY: as above; the contents may be anything.
            let Ok(ring) = (unsafe { SpscRing::attach(base, size) }) else { continue };
            // SAFETY: the target is the ring's only producer and consumer.
            let (mut p, mut c) = unsafe { (ring.producer(), ring.consumer()) };
            for _ in 0..(op % 4) {
                let _ = p.push(&[op; 13]);
                let _ = p.push_kind(&[op; 3], op);
                let _ = p.push_batch([&[1u8][..], &[2u8; 40][..]]);
                if let Ok(r) = p.reserve(op as usize % 300) {
                    let n = r.len();
                    p.buffer(&r).fill(op);
                    p.commit_kind(r, n, op >> 4);
                }
                if let Ok(Some(f)) = c.peek() {
                    assert!(c.bytes(&f).len() <= 256);
                    // Positions are checked to be 16-aligned: so is any payload.
                    assert_eq!(c.bytes(&f).as_ptr() as usize % 16, 0);
                    let _ = f.kind();
                    c.release(f);
                }
                if op & 0x80 != 0 {
                    let _ = p.resync();
                }
                let _ = c.pop_batch(3, |b| assert!(b.len() <= 256));
                let _ = ring.used();
            }
        } else {
            // SAFETY: as above.
            let Ok(ring) = (unsafe { MpmcRing::attach(base, size) }) else { continue };
            for _ in 0..(op % 4) {
                let _ = ring.try_push(&me, &[op; 20]);
                // The slot size comes from the (scribbled) memory too.
                let _ = ring.try_push_with_kind(&me, op, |buf| {
                    let n = buf.len().min(4);
                    buf[..n].fill(op);
                    Some(n)
                });
                if let Ok(cl) = ring.try_pop(&me) {
                    assert!(ring.bytes(&cl).len() <= 32);
                    let _ = ring.kind(&cl);
                    ring.release(cl);
                }
                let _ = ring.recover_writer(&dead, op & 2 != 0);
                let _ = ring.recover_reader(&dead, op & 4 != 0);
                let _ = ring.recover_reader_with(&dead, op & 8 != 0, |_, b| assert!(b.len() <= 32));
                ring.scan_with_kind(|_, _, b| assert!(b.len() <= 32));
                let _ = (ring.len(), ring.has_room(), ring.has_message());
            }
        }
    }
});
