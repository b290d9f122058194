//! Opens arbitrary bytes as a region and uses whatever it finds: only errors
//! are allowed, never a panic, an out-of-bounds access or a hang.
#![no_main]

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;
use shmproc_core::region::{kind, Region, RegionObject};
use shmproc_core::Deadline;

#[repr(C, align(128))]
#[derive(Clone, Copy)]
struct Line([u8; 128]);

struct Counter(AtomicU64);
// SAFETY: a single atomic, valid for any bits.
unsafe impl RegionObject for Counter {
    const KIND: u32 = kind::BYTES;
}

fuzz_target!(|data: &[u8]| {
    // The region must be 128-byte aligned, as an mmap'd one is.
    let mut lines = vec![Line([0; 128]); data.len().div_ceil(128).max(1)];
    let len = data.len();
    // SAFETY: `lines` holds at least `len` bytes.
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), lines.as_mut_ptr().cast::<u8>(), len) };
    let base = NonNull::new(lines.as_mut_ptr().cast::<u8>()).unwrap();
    // SAFETY: base..base+len is valid, writable and outlives `region`.
    let Ok(region) = (unsafe { Region::open(base, len, Some(Deadline::now())) }) else {
        return;
    };
    let _ = region.info();
    let mut seen = 0u32;
    for info in region.objects() {
        let Ok(info) = info else { continue };
        seen += 1;
        assert!(info.offset + info.size <= len, "object outside the region");
        if let Ok(c) = region.get::<Counter>(info.index) {
            c.0.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok((p, n)) = region.raw(info.index, info.kind) {
            assert!(p.as_ptr() as usize + n <= base.as_ptr() as usize + len);
        }
    }
    let _ = region.find(b"x");
    // Allocation on a garbage region: bounded, in bounds, or an error.
    if let Ok(info) = region.alloc::<Counter>(b"fz", |c| c.0.store(1, Ordering::Relaxed)) {
        assert!(info.offset + info.size <= len);
        assert!(region.get::<Counter>(info.index).is_ok());
    }
    let _ = seen;
});
