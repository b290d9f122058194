//! The error for creating or opening shared objects.

use std::fmt;

use shmproc_core::RegionError;

use crate::segment::SegmentError;

/// Why a shared object (lock, semaphore, queue, ...) could not be created or
/// opened.
///
/// ```
/// let seg = shmproc::Segment::anonymous(1 << 16)?;
/// let err: shmproc::Error = shmproc::Event::open_in(&seg, "missing").unwrap_err();
/// println!("{err}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub enum Error {
    /// Mapping or creating the segment failed.
    Segment(SegmentError),
    /// The region refused the object (full, corrupt, wrong kind, no such name).
    Region(RegionError),
    /// The object's layout does not fit (a type aligned to more than 128
    /// bytes, a length that overflows, a recorded size that does not match).
    Layout(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Segment(e) => write!(f, "{e}"),
            Error::Region(e) => write!(f, "{e}"),
            Error::Layout(what) => write!(f, "layout: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Segment(e) => Some(e),
            Error::Region(e) => Some(e),
            Error::Layout(_) => None,
        }
    }
}

impl From<SegmentError> for Error {
    fn from(e: SegmentError) -> Self {
        Error::Segment(e)
    }
}

impl From<RegionError> for Error {
    fn from(e: RegionError) -> Self {
        Error::Region(e)
    }
}
