//! Scribbles arbitrary bytes over a robust mutex and a robust semaphore
//! (state word, recorded owner, holder table, counts) between operations and
//! keeps using them with expired or tiny deadlines: only errors are allowed,
//! never a panic or a hang. Owners' liveness is decided by the input, so
//! forged words naming the caller, dead owners and live strangers all occur.
#![no_main]

use std::ptr::NonNull;

use libfuzzer_sys::fuzz_target;
use shmproc_core::owner::Owner;
use shmproc_core::raw_mutex::{LockError, RawMutex};
use shmproc_core::robust_semaphore::RawRobustSemaphore;
use shmproc_core::{Deadline, Identity};

#[repr(C, align(128))]
#[derive(Clone, Copy)]
struct Line([u8; 128]);

const MUTEX_SIZE: usize = std::mem::size_of::<RawMutex>();
const SEM_SIZE: usize = std::mem::size_of::<RawRobustSemaphore>();

fuzz_target!(|data: &[u8]| {
    let Some((&alive_mask, rest)) = data.split_first() else { return };
    let size = MUTEX_SIZE + SEM_SIZE;
    let mut mem = vec![Line([0; 128]); size.div_ceil(128)];
    let base = NonNull::new(mem.as_mut_ptr().cast::<u8>()).unwrap();
    // SAFETY: `mem` is 128-aligned and long enough for a RawMutex followed by
    // a RawRobustSemaphore (both 128-aligned, atomics only, valid for any
    // bits); it outlives the references.
    let (m, s) = unsafe {
        let m = &*base.as_ptr().cast::<RawMutex>();
        let s = &*base.as_ptr().add(MUTEX_SIZE).cast::<RawRobustSemaphore>();
        (m, s)
    };
    m.init();
    s.init(2, if alive_mask & 0x80 != 0 { 2 } else { u32::MAX });
    // Owners 1..=4; which ids count as alive comes from the input.
    let alive = move |id: u32, _: Option<u64>| id < 8 && alive_mask & (1 << id) != 0;
    let owner = |i: u8| {
        let id = u32::from(i % 4) + 1;
        Owner { thread: Identity { id, start: 7, ns: 1 }, pid: id }
    };
    for chunk in rest.chunks(6) {
        if chunk.len() < 6 {
            break;
        }
        let off = usize::from(u16::from_le_bytes([chunk[0], chunk[1]])) % size;
        let end = (off + 3).min(size);
        let bytes = mem.as_mut_ptr().cast::<u8>();
        for (k, pos) in (off..end).enumerate() {
            // SAFETY: pos < size <= the buffer's length; a plain byte store
            // over atomics, as a peer's write (single-threaded here).
            unsafe { *bytes.add(pos) = chunk[2 + k] };
        }
        let op = chunk[5];
        let me = owner(op >> 4);
        let proc_ = me.thread;
        let soon = Some(Deadline::after(std::time::Duration::from_micros(50)));
        match op % 12 {
            0 => {
                let _ = m.try_lock(&me);
            }
            1 => {
                let _ = m.try_lock_checked(&me, &alive);
            }
            2 => {
                if m.lock(&me, soon, &alive) == Err(LockError::Deadlock) {
                    let _ = m.reclaim(&me);
                }
            }
            3 => {
                let _ = m.unlock(&me);
            }
            4 => {
                let _ = m.lock_recursive(&me, soon, &alive);
                let _ = m.unlock_recursive(&me);
            }
            5 => {
                let _ = m.owner(&alive);
                let _ = m.is_owned_by(&me);
            }
            6 => {
                let _ = s.try_acquire(&me, proc_, &alive);
            }
            7 => {
                let _ = s.acquire(&me, proc_, soon, &alive);
            }
            8 => {
                let _ = s.release(&me, proc_, soon, &alive);
            }
            9 => {
                let _ = s.release_held(&me, proc_, soon, &alive);
            }
            10 => {
                let _ = s.recover(&me, soon, &alive);
            }
            _ => {
                let _ = (s.value(), s.held_by(proc_), s.max());
            }
        }
    }
});
