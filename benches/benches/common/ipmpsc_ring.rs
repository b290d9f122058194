//! The ipmpsc baseline's ring helpers, shared by the `peers` and
//! `mpmc_scaling` benches (each includes this file with `#[path]`): ipmpsc
//! is a dev-dependency of the benches crate, so its helpers live beside the
//! benches rather than in the crate's library.

use std::sync::atomic::{AtomicU64, Ordering};

/// An ipmpsc ring of `bytes` bytes in a fresh file under /dev/shm (tmpfs,
/// as shmproc's memfd, rather than ipmpsc's `create_temp` under /tmp), and
/// its receiver. Senders open the file by its path ([`ipmpsc_sender`]), as
/// a separate program would. ipmpsc frames a message as a 4-byte length and
/// its bincode bytes (12 bytes for a u64), so a ring of `n * 12` bytes holds
/// about `n` u64 messages.
pub fn ipmpsc_ring(bytes: usize) -> (IpmpscFile, ipmpsc::Receiver) {
    static N: AtomicU64 = AtomicU64::new(0);
    let path = format!("/dev/shm/shmproc-bench-ipmpsc-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let size = u32::try_from(bytes).expect("ipmpsc ring size fits in u32");
    let buf = ipmpsc::SharedRingBuffer::create(&path, size).expect("ipmpsc ring");
    (IpmpscFile(path), ipmpsc::Receiver::new(buf))
}

/// An ipmpsc ring's file (its path), removed on drop: keep it in the process
/// that created the ring, which drops it after the run.
pub struct IpmpscFile(pub String);

impl Drop for IpmpscFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A sender on the ipmpsc ring at `path` (made by [`ipmpsc_ring`]).
#[must_use]
pub fn ipmpsc_sender(path: &str) -> ipmpsc::Sender {
    ipmpsc::Sender::new(ipmpsc::SharedRingBuffer::open(path).expect("ipmpsc open"))
}
