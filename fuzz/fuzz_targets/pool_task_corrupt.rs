//! Garbage over a live pool task queue: receiving in place (as a worker
//! does) gives a task or an error, never a panic or a fault, and no task
//! that was not queued passes the tag check that guards its code offsets
//! (see `shmproc::pool`'s module docs and `__fuzz_task_queue`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shmproc::pool::__fuzz_task_queue(data);
});
