//! `CachePadded<T>`: a value alone on its own pair of cache lines.

use core::ops::Deref;

/// Pads and aligns `T` to 128 bytes so that values written by different
/// processes never share a cache line (x86's adjacent-line prefetcher pulls
/// lines in pairs, hence 128 rather than 64).
///
/// ```
/// use core::sync::atomic::AtomicU64;
/// use shmproc_core::cache_padded::CachePadded;
/// #[repr(C)]
/// struct Indices {
///     head: CachePadded<AtomicU64>, // written by the consumer
///     tail: CachePadded<AtomicU64>, // written by the producer
/// }
/// assert_eq!(core::mem::size_of::<Indices>(), 256);
/// let i = Indices { head: CachePadded(AtomicU64::new(0)), tail: CachePadded(AtomicU64::new(0)) };
/// assert_eq!(i.tail.load(core::sync::atomic::Ordering::Relaxed), 0);
/// ```
#[repr(C, align(128))]
pub struct CachePadded<T>(pub T);

impl<T> Deref for CachePadded<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}
