//! `CachePadded<T>`: a value alone on its own pair of cache lines.

use core::ops::Deref;

/// Pads and aligns `T` to 128 bytes so that values written by different
/// processes never share a cache line (x86's adjacent-line prefetcher pulls
/// lines in pairs, hence 128 rather than 64).
#[repr(C, align(128))]
pub struct CachePadded<T>(pub T);

impl<T> Deref for CachePadded<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}
