//! Shared-memory segments: the mappings that regions live in.
//!
//! * [`Segment::anonymous`]: a `memfd`, mapped `MAP_SHARED`. Inherited by
//!   forked children (same address) and passable to exec'd children by fd. It
//!   has no name and cannot leak: it disappears with its last mapping and fd.
//! * [`Segment::create_named`]: `shm_open(O_CREAT | O_EXCL)`, mode `0600`, so
//!   unrelated processes of the same user can [`Segment::open`] it by name. The
//!   process that created it unlinks it when its last handle drops. Leftovers of
//!   a crashed creator can be found with [`Segment::list`] and removed with
//!   [`Segment::remove`] / [`Segment::remove_stale`].
//!
//! # Leftovers of a creator killed mid-creation
//!
//! Creating a named segment takes several steps (`shm_open`, size, map,
//! initialise the header, publish it ready). The creator's identity (pid and
//! start time) is written into the header's creator fields right after the
//! file is sized, before anything else, so a segment whose creator was killed
//! at any later point is listed as [`SegmentStatus::NotReady`] *with* its
//! creator, and is stale once that creator is provably dead (pid and start
//! time no longer match a running process). Only the first two system calls
//! (`shm_open`, `fchmod`) come before the record: a file that records no
//! creator (empty, or zeros there) is treated as abandoned once it is older
//! than [`NOT_READY_GRACE`]. A not-ready segment of a *live* creator is never
//! stale, however old. (As for every removal by name, a segment removed and
//! re-created under the same name between [`Segment::list`] and the unlink
//! in [`Segment::remove_stale`] would be removed too.)
//!
//! Every segment holds a validated [`Region`] at offset 0. Segment memory is
//! reserved up front with `posix_fallocate`, so a full `/dev/shm` is a clear
//! [`SegmentError::NoSpace`] at creation instead of a `SIGBUS` later.
//!
//! # Nobody shrinks a segment under the others
//!
//! Every process that maps a segment also holds its file (children inherit
//! the descriptor), and `ftruncate` to a smaller size would make every other
//! process's next access past the new end a `SIGBUS`.
//!
//! * **Anonymous** segments are memfds created with `MFD_ALLOW_SEALING` and
//!   sealed `F_SEAL_SHRINK | F_SEAL_SEAL` before anything is mapped: a shrink
//!   by any holder fails with `EPERM`, and no holder can remove the seal.
//!   `F_SEAL_GROW` is deliberately *not* set: queues place large messages as
//!   out-of-line blocks in the same file *past* the mapped region (see the
//!   queue docs), which grows the file. Growth is harmless to the others:
//!   nothing anyone mapped goes away, and a block is mapped only after its
//!   descriptor was checked against the file's current size.
//! * **Named** segments (`shm_open`) cannot be sealed. Every attach
//!   ([`Segment::open`], [`Segment::from_fd`], a handle arriving in a
//!   spawn-mode child) compares the file's size with the region size recorded
//!   in the header and refuses a shorter file with
//!   [`SegmentError::Truncated`], before mapping anything. What remains is a
//!   residual risk: a process of the same user that truncates the file *after*
//!   others attached makes their next access past the new end a `SIGBUS`. Only
//!   processes of the owning user can do that (segments are `0600`); use
//!   anonymous segments where that matters.
//!
//! ```
//! use shmproc::Segment;
//! let seg = Segment::anonymous(4096)?;
//! assert!(seg.region().objects().next().is_none());
//! # Ok::<(), shmproc::SegmentError>(())
//! ```

use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shmproc_core::region::{self, Region, RegionError, DEFAULT_DIR_CAPACITY};
use shmproc_core::{Deadline, Identity};

/// Prefix of every named segment in `/dev/shm`, so that [`Segment::list`] finds
/// only ours.
///
/// ```
/// let name = format!("doc-prefix-{}", std::process::id());
/// let _seg = shmproc::Segment::create_named(&name, 4096)?;
/// assert!(std::path::Path::new(&format!("/dev/shm/{}{name}", shmproc::segment::NAME_PREFIX)).exists());
/// # Ok::<(), shmproc::SegmentError>(())
/// ```
pub const NAME_PREFIX: &str = "shmproc-";
const SHM_DIR: &str = "/dev/shm";
const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// How old a not-ready named segment that records no creator must be before
/// it counts as abandoned (see the module docs): its creator gets this long
/// for the two system calls between creating the file and recording itself.
///
/// ```
/// assert!(shmproc::segment::NOT_READY_GRACE >= std::time::Duration::from_secs(1));
/// ```
pub const NOT_READY_GRACE: Duration = Duration::from_secs(60);

/// Byte offset of the creator record (pid `u32`, start time `u64`) in the
/// region header.
const CREATOR_RECORD: libc::off_t = shmproc_core::region::CREATOR_RECORD_OFFSET as libc::off_t;
/// Byte offset of the creator's pid namespace (`u32`), written before the
/// record, so a record implies its namespace.
const CREATOR_NS: libc::off_t = shmproc_core::region::CREATOR_NS_OFFSET as libc::off_t;

/// Test hook: the creation step at which `create_named` stops its own
/// process with SIGSTOP (0: none).
static PAUSE_CREATION_AT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Test hook (not part of the API): makes this process's next named-segment
/// creation stop itself (`SIGSTOP`) at `stage` — 1: right after the file
/// was created, before the creator is recorded; 2: right after the creator
/// is recorded, before the region is initialised — so that tests can kill a
/// creator mid-creation deterministically. Affects only the calling process.
#[doc(hidden)]
pub fn __pause_named_creation_at(stage: u8) {
    PAUSE_CREATION_AT.store(stage, Ordering::Relaxed);
}

fn creation_step(stage: u8) {
    if PAUSE_CREATION_AT.load(Ordering::Relaxed) == stage {
        PAUSE_CREATION_AT.store(0, Ordering::Relaxed);
        // SAFETY: raise has no preconditions; SIGSTOP stops this process.
        unsafe { libc::raise(libc::SIGSTOP) };
    }
}

/// Errors from creating, opening, listing or removing segments. Each carries
/// the segment name where there is one, and the OS error where there is one.
///
/// ```
/// use shmproc::{Segment, SegmentError};
/// assert!(matches!(Segment::open("surely-not-there-4711"), Err(SegmentError::NotFound { .. })));
/// ```
#[derive(Debug)]
pub enum SegmentError {
    /// A system call failed.
    Os {
        /// What we were doing (`"shm_open"`, `"mmap"`, ...).
        op: &'static str,
        /// The segment name, for named segments.
        name: Option<String>,
        /// The OS error.
        source: io::Error,
    },
    /// `create_named` found a segment of that name already there.
    AlreadyExists {
        /// The segment name.
        name: String,
    },
    /// No segment of that name exists.
    NotFound {
        /// The segment name.
        name: String,
    },
    /// The segment belongs to another user and is refused.
    NotOwner {
        /// The segment name.
        name: String,
        /// Its owner's uid.
        uid: u32,
    },
    /// The name is empty, too long, or contains `/` or NUL.
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// The size is zero or too large to lay out.
    InvalidSize {
        /// The rejected size.
        size: usize,
    },
    /// Not enough room in shared memory (`/dev/shm` or the memfd limit).
    NoSpace {
        /// The segment name, for named segments.
        name: Option<String>,
        /// Bytes requested.
        requested: usize,
    },
    /// The segment's file is shorter than the region its header records:
    /// someone truncated it. Refused before mapping (accessing the missing
    /// part would be a `SIGBUS`).
    Truncated {
        /// The segment name, for named segments.
        name: Option<String>,
        /// The file's size now.
        file_len: u64,
        /// The region size recorded by its creator.
        region_len: u64,
    },
    /// The segment's contents are not a valid region.
    Region {
        /// The segment name, for named segments.
        name: Option<String>,
        /// What is wrong.
        source: RegionError,
    },
}

impl fmt::Display for SegmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |name: &Option<String>| name.clone().unwrap_or_else(|| "<anonymous>".into());
        match self {
            SegmentError::Os { op, name, source } => {
                write!(f, "{op} on segment {}: {source}", n(name))
            }
            SegmentError::AlreadyExists { name } => write!(f, "segment {name} already exists"),
            SegmentError::NotFound { name } => write!(f, "segment {name} does not exist"),
            SegmentError::NotOwner { name, uid } => {
                write!(f, "segment {name} belongs to uid {uid}, refusing to use it")
            }
            SegmentError::InvalidName { name } => write!(f, "invalid segment name {name:?}"),
            SegmentError::InvalidSize { size } => write!(f, "invalid segment size {size}"),
            SegmentError::NoSpace { name, requested } => {
                write!(f, "no room in shared memory for segment {} ({requested} bytes)", n(name))
            }
            SegmentError::Truncated { name, file_len, region_len } => {
                write!(f, "segment {} was truncated: its file has {file_len} bytes, its region {region_len}", n(name))
            }
            SegmentError::Region { name, source } => write!(f, "segment {}: {source}", n(name)),
        }
    }
}

impl std::error::Error for SegmentError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SegmentError::Os { source, .. } => Some(source),
            SegmentError::Region { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn os<'a>(op: &'static str, name: Option<&'a str>) -> impl FnOnce(io::Error) -> SegmentError + 'a {
    move |source| SegmentError::Os { op, name: name.map(str::to_owned), source }
}

/// A mapped shared-memory segment holding a [`Region`]. Cloning gives another
/// handle to the same mapping.
///
/// ```
/// let seg = shmproc::Segment::anonymous(1 << 16)?;
/// let counter = shmproc::Value::new_in(&seg, "counter", 0u64)?;
/// let done = shmproc::Event::new_in(&seg, "done")?;
/// counter.set(1);
/// done.set();
/// assert_eq!(shmproc::Value::<u64>::open_in(&seg, "counter")?.get(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Segment {
    inner: Arc<Inner>,
}

struct Inner {
    map: memmap2::MmapRaw,
    fd: OwnedFd,
    name: Option<String>,
    /// pid of the process that created a named segment; only it unlinks.
    unlink_by: Option<u32>,
    unlink_on_drop: AtomicBool,
    region: Region,
    /// This process's kernel-kept liveness record on the file
    /// (`kernel_liveness`), shared with every handle of the same file.
    live: crate::kernel_liveness::FileLiveness,
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.inner.name)
            .field("len", &self.len())
            .field("fd", &self.inner.fd.as_raw_fd())
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let (Some(name), Some(pid)) = (&self.name, self.unlink_by) {
            // Only the creating process unlinks: a forked child that inherited the
            // handle must not remove the name from under its parent.
            if pid == std::process::id() && self.unlink_on_drop.load(Ordering::Relaxed) {
                if let Ok(c) = shm_name(name) {
                    // SAFETY: `c` is a valid NUL-terminated string.
                    unsafe { libc::shm_unlink(c.as_ptr()) };
                }
            }
        }
    }
}

/// Summary of one named segment, from [`Segment::list`].
///
/// ```
/// let name = format!("doc-info-{}", std::process::id());
/// let _seg = shmproc::Segment::create_named(&name, 4096)?;
/// let info = shmproc::Segment::list()?.into_iter().find(|i| i.name == name).expect("listed");
/// assert!(info.size >= 4096 && !info.is_stale());
/// # Ok::<(), shmproc::SegmentError>(())
/// ```
#[derive(Clone, Debug)]
pub struct SegmentInfo {
    /// The name as given to `create_named` (without the prefix).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Owner uid.
    pub uid: u32,
    /// What the header says.
    pub status: SegmentStatus,
}

/// The state of a listed segment.
///
/// ```
/// use shmproc::{Segment, SegmentStatus};
/// let name = format!("doc-status-{}", std::process::id());
/// let _seg = Segment::create_named(&name, 4096)?;
/// let info = Segment::list()?.into_iter().find(|i| i.name == name).expect("listed");
/// assert!(matches!(info.status, SegmentStatus::Valid { creator_alive: true, .. }));
/// # Ok::<(), shmproc::SegmentError>(())
/// ```
#[derive(Clone, Debug)]
pub enum SegmentStatus {
    /// A valid region.
    Valid {
        /// The creating process.
        creator: Identity,
        /// Whether the creator still runs (pid and start time match).
        creator_alive: bool,
        /// Number of published objects.
        objects: usize,
    },
    /// Owned by another user: not opened.
    NotOwner,
    /// Created but never initialised (the creator died or is still starting).
    NotReady {
        /// The creating process, when creation got far enough to record it
        /// (all but the first two system calls; see the module docs).
        creator: Option<Identity>,
        /// Whether it is a leftover: the recorded creator is dead, or no
        /// creator is recorded and the file is older than [`NOT_READY_GRACE`].
        abandoned: bool,
    },
    /// Not a valid region.
    Corrupt(RegionError),
}

impl SegmentInfo {
    /// Whether the segment is a leftover: its creator is dead (a valid
    /// segment's, or a not-ready one's that recorded it), or it is not
    /// ready, records no creator and is older than [`NOT_READY_GRACE`].
    ///
    /// ```
    /// // A segment whose creator died is stale; `remove_stale` unlinks those.
    /// for info in shmproc::Segment::list()? {
    ///     if info.is_stale() {
    ///         println!("stale: {}", info.name);
    ///     }
    /// }
    /// # Ok::<(), shmproc::SegmentError>(())
    /// ```
    #[must_use]
    pub fn is_stale(&self) -> bool {
        matches!(
            self.status,
            SegmentStatus::Valid { creator_alive: false, .. } | SegmentStatus::NotReady { abandoned: true, .. }
        )
    }
}

fn validate_name(name: &str) -> Result<(), SegmentError> {
    let bad =
        name.is_empty() || name.len() > 200 || name.contains('/') || name.contains('\0') || name == "." || name == "..";
    if bad {
        Err(SegmentError::InvalidName { name: name.to_owned() })
    } else {
        Ok(())
    }
}

fn shm_name(name: &str) -> Result<CString, SegmentError> {
    validate_name(name)?;
    CString::new(format!("/{NAME_PREFIX}{name}")).map_err(|_| SegmentError::InvalidName { name: name.to_owned() })
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Total mapping size for `size` usable heap bytes and `dir` directory slots.
fn layout_size(size: usize, dir: u32) -> Result<usize, SegmentError> {
    if size == 0 {
        return Err(SegmentError::InvalidSize { size });
    }
    region::required_size(dir, size)
        .and_then(|t| region::align_up(t, page_size()))
        .filter(|&t| t <= isize::MAX as usize)
        .ok_or(SegmentError::InvalidSize { size })
}

impl Segment {
    /// Creates an anonymous segment with room for `size` bytes of objects.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 20)?;
    /// assert!(seg.name().is_none());
    /// assert!(seg.len() >= 1 << 20);
    /// # Ok::<(), shmproc::SegmentError>(())
    /// ```
    pub fn anonymous(size: usize) -> Result<Segment, SegmentError> {
        Segment::anonymous_with_directory(size, DEFAULT_DIR_CAPACITY)
    }

    /// Like [`anonymous`](Segment::anonymous) with a directory of `dir` slots
    /// (how many named objects the segment can hold).
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous_with_directory(1 << 16, 4)?;
    /// for i in 0..4 {
    ///     shmproc::Event::new_in(&seg, &format!("e{i}"))?;
    /// }
    /// assert!(shmproc::Event::new_in(&seg, "e4").is_err()); // the directory is full
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn anonymous_with_directory(size: usize, dir: u32) -> Result<Segment, SegmentError> {
        let total = layout_size(size, dir)?;
        // SAFETY: the name is a valid C string; flags are valid memfd flags.
        let raw = unsafe { libc::memfd_create(c"shmproc".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if raw < 0 {
            return Err(os("memfd_create", None)(io::Error::last_os_error()));
        }
        // SAFETY: memfd_create returned a fresh fd that we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        size_fd(&fd, total, None)?;
        // No holder may shrink the file under the others (every access past
        // the new end would be a SIGBUS in every process). Growing stays
        // allowed: out-of-line message blocks live past the region (see
        // `bulk.rs`), and growth faults nobody.
        // SAFETY: fcntl on our own fd with valid seal flags.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL) };
        Segment::map_and_create(fd, total, None, dir)
    }

    /// Creates a named segment (`/dev/shm/shmproc-<name>`, mode 0600). Fails with
    /// [`SegmentError::AlreadyExists`] if the name is taken. The name is removed
    /// when the creating process drops its last handle.
    ///
    /// ```
    /// use shmproc::{Segment, SegmentError};
    /// let name = format!("doc-{}", std::process::id());
    /// let seg = Segment::create_named(&name, 4096)?;
    /// assert!(matches!(Segment::create_named(&name, 4096), Err(SegmentError::AlreadyExists { .. })));
    /// let other = Segment::open(&name)?; // what another process would do
    /// assert_eq!(other.len(), seg.len());
    /// drop((seg, other));
    /// assert!(matches!(Segment::open(&name), Err(SegmentError::NotFound { .. })));
    /// # Ok::<(), SegmentError>(())
    /// ```
    pub fn create_named(name: &str, size: usize) -> Result<Segment, SegmentError> {
        Segment::create_named_with_directory(name, size, DEFAULT_DIR_CAPACITY)
    }

    /// Like [`create_named`](Segment::create_named) with a directory of `dir` slots.
    ///
    /// ```
    /// let name = format!("doc-dir-{}", std::process::id());
    /// let seg = shmproc::Segment::create_named_with_directory(&name, 1 << 16, 2)?;
    /// assert_eq!(seg.name(), Some(name.as_str()));
    /// # Ok::<(), shmproc::SegmentError>(())
    /// ```
    pub fn create_named_with_directory(name: &str, size: usize, dir: u32) -> Result<Segment, SegmentError> {
        let c = shm_name(name)?;
        let total = layout_size(size, dir)?;
        // SAFETY: `c` is a valid C string; O_EXCL makes creation atomic.
        let raw = unsafe {
            libc::shm_open(
                c.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC,
                0o600 as libc::mode_t,
            )
        };
        if raw < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EEXIST) {
                return Err(SegmentError::AlreadyExists { name: name.to_owned() });
            }
            return Err(os("shm_open", Some(name))(e));
        }
        // SAFETY: shm_open returned a fresh fd that we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let unlink = || {
            // SAFETY: `c` is a valid C string.
            unsafe { libc::shm_unlink(c.as_ptr()) };
        };
        // The umask may have cleared bits of 0600; set it exactly.
        // SAFETY: fd is valid.
        if unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) } != 0 {
            let e = io::Error::last_os_error();
            unlink();
            return Err(os("fchmod", Some(name))(e));
        }
        creation_step(1);
        // Size the file and record who creates it before anything else, so
        // that a creator killed from here on leaves a leftover that says
        // whose it is (see the module docs).
        let recorded =
            libc::off_t::try_from(total).map_err(|_| SegmentError::InvalidSize { size: total }).and_then(|off| {
                // SAFETY: fd is a valid, writable shared-memory fd.
                if unsafe { libc::ftruncate(fd.as_raw_fd(), off) } != 0 {
                    return Err(os("ftruncate", Some(name))(io::Error::last_os_error()));
                }
                record_creator(&fd, Identity::current_process()).map_err(os("pwrite", Some(name)))
            });
        if let Err(e) = recorded {
            unlink();
            return Err(e);
        }
        creation_step(2);
        if let Err(e) = size_fd(&fd, total, Some(name)) {
            unlink();
            return Err(e);
        }
        match Segment::map_and_create(fd, total, Some(name.to_owned()), dir) {
            Ok(seg) => Ok(seg),
            Err(e) => {
                unlink();
                Err(e)
            }
        }
    }

    /// Opens an existing named segment, waiting up to 5 s for its creator to
    /// finish initialising it.
    ///
    /// ```
    /// let name = format!("doc-open-{}", std::process::id());
    /// let seg = shmproc::Segment::create_named(&name, 1 << 16)?;
    /// shmproc::Value::new_in(&seg, "v", 5u32)?;
    /// let same = shmproc::Segment::open(&name)?; // what another process does
    /// assert_eq!(shmproc::Value::<u32>::open_in(&same, "v")?.get(), 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(name: &str) -> Result<Segment, SegmentError> {
        Segment::open_timeout(name, DEFAULT_OPEN_TIMEOUT)
    }

    /// Opens an existing named segment, waiting up to `timeout` for its creator
    /// to size and initialise it. Refuses segments owned by another user.
    ///
    /// ```
    /// let name = format!("doc-open-timeout-{}", std::process::id());
    /// let _seg = shmproc::Segment::create_named(&name, 4096)?;
    /// let opened = shmproc::Segment::open_timeout(&name, std::time::Duration::from_secs(1))?;
    /// assert_eq!(opened.name(), Some(name.as_str()));
    /// # Ok::<(), shmproc::SegmentError>(())
    /// ```
    pub fn open_timeout(name: &str, timeout: Duration) -> Result<Segment, SegmentError> {
        let deadline = Deadline::after(timeout);
        let c = shm_name(name)?;
        // SAFETY: `c` is a valid C string.
        let raw = unsafe { libc::shm_open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENOENT) => SegmentError::NotFound { name: name.to_owned() },
                Some(libc::EACCES) => SegmentError::NotOwner {
                    name: name.to_owned(),
                    // The owner, when the file can at least be stat'ed.
                    uid: std::fs::metadata(format!("{SHM_DIR}/{NAME_PREFIX}{name}")).map_or(u32::MAX, |m| m.uid()),
                },
                _ => os("shm_open", Some(name))(e),
            });
        }
        // SAFETY: shm_open returned a fresh fd that we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Wait for the creator's ftruncate (it creates with O_EXCL first).
        let len = loop {
            let meta = fd_metadata(&fd).map_err(os("fstat", Some(name)))?;
            if meta.uid() != current_uid() {
                return Err(SegmentError::NotOwner { name: name.to_owned(), uid: meta.uid() });
            }
            if meta.len() > 0 {
                break usize::try_from(meta.len()).map_err(|_| SegmentError::InvalidSize { size: usize::MAX })?;
            }
            if deadline.has_passed() {
                return Err(SegmentError::Region { name: Some(name.to_owned()), source: RegionError::NotReady });
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let len = region_len(&fd, len, Some(name))?;
        Segment::map_and_open(fd, len, Some(name.to_owned()), Some(deadline))
    }

    /// Maps an inherited segment fd (for example one passed to a spawned child)
    /// and validates the region in it.
    ///
    /// # Safety
    ///
    /// `fd` must be an open file descriptor that this call may own (it is closed
    /// when the segment drops) and that refers to shared memory.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// shmproc::Value::new_in(&seg, "v", 3u8)?;
    /// // A descriptor this process owns, as a spawned child would inherit it.
    /// // SAFETY: dup returns a fresh descriptor that nothing else owns.
    /// let fd = unsafe { libc::dup(seg.as_raw_fd()) };
    /// // SAFETY: `fd` is open, ours, and refers to the segment's memory.
    /// let again = unsafe { shmproc::Segment::from_fd(fd) }?;
    /// assert_eq!(shmproc::Value::<u8>::open_in(&again, "v")?.get(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub unsafe fn from_fd(fd: RawFd) -> Result<Segment, SegmentError> {
        // SAFETY: ownership of `fd` is transferred by the caller.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let len = fd_metadata(&fd).map_err(os("fstat", None))?.len();
        let len = usize::try_from(len).map_err(|_| SegmentError::InvalidSize { size: usize::MAX })?;
        let len = region_len(&fd, len, None)?;
        Segment::map_and_open(fd, len, None, Some(Deadline::after(DEFAULT_OPEN_TIMEOUT)))
    }

    fn map(fd: &OwnedFd, len: usize, name: Option<&str>) -> Result<memmap2::MmapRaw, SegmentError> {
        if len == 0 {
            return Err(SegmentError::Region {
                name: name.map(str::to_owned),
                source: RegionError::TooSmall { len: 0, need: 128 },
            });
        }
        // MmapRaw maps MAP_SHARED | PROT_READ | PROT_WRITE: writes are seen by
        // every process mapping the same fd (never `map_anon`, which is private
        // after fork).
        memmap2::MmapOptions::new().len(len).map_raw(fd.as_raw_fd()).map_err(os("mmap", name))
    }

    fn map_and_create(fd: OwnedFd, len: usize, name: Option<String>, dir: u32) -> Result<Segment, SegmentError> {
        let map = Segment::map(&fd, len, name.as_deref())?;
        let base = NonNull::new(map.as_mut_ptr()).expect("mmap never returns null");
        // SAFETY: the mapping is `len` writable bytes, page-aligned, kept alive by
        // `Inner` for as long as the Region is reachable; we just created the
        // segment, so nobody else initialises it.
        let region = unsafe { Region::create(base, len, Identity::current_process(), current_uid(), dir) }
            .map_err(|source| SegmentError::Region { name: name.clone(), source })?;
        let unlink_by = name.as_ref().map(|_| std::process::id());
        let live = crate::kernel_liveness::FileLiveness::of(&fd);
        Ok(Segment {
            inner: Arc::new(Inner { map, fd, name, unlink_by, unlink_on_drop: AtomicBool::new(true), region, live }),
        })
    }

    fn map_and_open(
        fd: OwnedFd,
        len: usize,
        name: Option<String>,
        deadline: Option<Deadline>,
    ) -> Result<Segment, SegmentError> {
        let map = Segment::map(&fd, len, name.as_deref())?;
        let base = NonNull::new(map.as_mut_ptr()).expect("mmap never returns null");
        // SAFETY: the mapping is `len` readable/writable bytes, page-aligned and
        // kept alive by `Inner`; its contents are validated by `open`.
        let region = unsafe { Region::open(base, len, deadline) }
            .map_err(|source| SegmentError::Region { name: name.clone(), source })?;
        let live = crate::kernel_liveness::FileLiveness::of(&fd);
        Ok(Segment {
            inner: Arc::new(Inner {
                map,
                fd,
                name,
                unlink_by: None,
                unlink_on_drop: AtomicBool::new(false),
                region,
                live,
            }),
        })
    }

    /// The owner check for locks in this segment: `/proc`, plus the kernel's
    /// liveness records on the segment's file for owners of other pid
    /// namespaces (`kernel_liveness`).
    pub(crate) fn liveness(&self) -> &crate::kernel_liveness::FileLiveness {
        &self.inner.live
    }

    /// `me` as locks in this segment record it (flagged when this process
    /// holds its liveness record on the segment's file).
    #[inline]
    pub(crate) fn owner(&self, me: &shmproc_core::owner::Owner) -> shmproc_core::owner::Owner {
        self.inner.live.owner(me)
    }

    /// The region at offset 0 of the segment.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// shmproc::Event::new_in(&seg, "ready")?;
    /// let info = seg.region().find(b"ready").expect("published");
    /// assert_eq!(info.name(), b"ready");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn region(&self) -> &Region {
        &self.inner.region
    }

    /// The segment's name, for named segments.
    ///
    /// ```
    /// let name = format!("doc-name-{}", std::process::id());
    /// assert_eq!(shmproc::Segment::create_named(&name, 4096)?.name(), Some(name.as_str()));
    /// # Ok::<(), shmproc::SegmentError>(())
    /// ```
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    /// Size of the mapping in bytes.
    ///
    /// ```
    /// assert!(shmproc::Segment::anonymous(8192)?.len() >= 8192);
    /// # Ok::<(), shmproc::SegmentError>(())
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.map.len()
    }

    /// Always false: a segment holds at least its region header.
    ///
    /// ```
    /// assert!(!shmproc::Segment::anonymous(8192)?.is_empty());
    /// # Ok::<(), shmproc::SegmentError>(())
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The file descriptor behind the mapping (close-on-exec).
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(4096)?;
    /// assert!(seg.as_raw_fd() >= 0);
    /// # Ok::<(), shmproc::SegmentError>(())
    /// ```
    #[must_use]
    pub fn as_raw_fd(&self) -> RawFd {
        self.inner.fd.as_raw_fd()
    }

    /// Keeps a named segment in `/dev/shm` after the creator's handles drop (it
    /// can then be opened later, and removed with [`Segment::remove`]).
    ///
    /// ```
    /// let name = format!("doc-persist-{}", std::process::id());
    /// shmproc::Segment::create_named(&name, 4096)?.persist();
    /// // Still there after the handle dropped; remove it explicitly.
    /// shmproc::Segment::remove(&name)?;
    /// # Ok::<(), shmproc::SegmentError>(())
    /// ```
    pub fn persist(&self) {
        self.inner.unlink_on_drop.store(false, Ordering::Relaxed);
    }

    /// Whether two handles refer to the same mapping.
    ///
    /// ```
    /// let a = shmproc::Segment::anonymous(4096)?;
    /// let b = a.clone();
    /// assert!(a.same_as(&b));
    /// assert!(!a.same_as(&shmproc::Segment::anonymous(4096)?));
    /// # Ok::<(), shmproc::SegmentError>(())
    /// ```
    #[must_use]
    pub fn same_as(&self, other: &Segment) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Lists the named shmproc segments in `/dev/shm`, with their creator and
    /// whether it is alive. Other users' segments are listed but not opened.
    ///
    /// ```
    /// let name = format!("doc-list-{}", std::process::id());
    /// let _seg = shmproc::Segment::create_named(&name, 4096)?;
    /// assert!(shmproc::Segment::list()?.iter().any(|i| i.name == name));
    /// # Ok::<(), shmproc::SegmentError>(())
    /// ```
    pub fn list() -> Result<Vec<SegmentInfo>, SegmentError> {
        let mut out = Vec::new();
        let dir = match std::fs::read_dir(SHM_DIR) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(os("read_dir /dev/shm", None)(e)),
        };
        for entry in dir {
            let entry = entry.map_err(os("read_dir /dev/shm", None))?;
            let file_name = entry.file_name();
            let Some(full) = file_name.to_str() else {
                continue;
            };
            let Some(name) = full.strip_prefix(NAME_PREFIX) else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            let status = if meta.uid() != current_uid() {
                SegmentStatus::NotOwner
            } else {
                match Segment::open_timeout(name, Duration::ZERO) {
                    Ok(seg) => {
                        let region = seg.region();
                        match region.info() {
                            Ok(info) => SegmentStatus::Valid {
                                creator: info.creator,
                                creator_alive: info.creator.is_alive(),
                                objects: region.objects().count(),
                            },
                            Err(e) => SegmentStatus::Corrupt(e),
                        }
                    }
                    Err(SegmentError::Region { source: RegionError::NotReady, .. }) => not_ready_status(&entry.path()),
                    Err(SegmentError::Region { source, .. }) => SegmentStatus::Corrupt(source),
                    Err(SegmentError::Truncated { file_len, region_len, .. }) => {
                        SegmentStatus::Corrupt(RegionError::TooSmall {
                            len: usize::try_from(file_len).unwrap_or(usize::MAX),
                            need: usize::try_from(region_len).unwrap_or(usize::MAX),
                        })
                    }
                    Err(SegmentError::NotFound { .. }) => continue,
                    Err(SegmentError::NotOwner { .. }) => SegmentStatus::NotOwner,
                    Err(e) => return Err(e),
                }
            };
            out.push(SegmentInfo { name: name.to_owned(), size: meta.len(), uid: meta.uid(), status });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes the named segment (processes that have it mapped keep their
    /// mapping). Refuses other users' segments.
    ///
    /// ```
    /// let name = format!("doc-remove-{}", std::process::id());
    /// let seg = shmproc::Segment::create_named(&name, 4096)?;
    /// seg.persist();
    /// drop(seg);
    /// shmproc::Segment::remove(&name)?;
    /// assert!(shmproc::Segment::open(&name).is_err());
    /// # Ok::<(), shmproc::SegmentError>(())
    /// ```
    pub fn remove(name: &str) -> Result<(), SegmentError> {
        let c = shm_name(name)?;
        let path = format!("{SHM_DIR}/{NAME_PREFIX}{name}");
        match std::fs::metadata(&path) {
            Ok(meta) if meta.uid() != current_uid() => {
                return Err(SegmentError::NotOwner { name: name.to_owned(), uid: meta.uid() })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SegmentError::NotFound { name: name.to_owned() })
            }
            _ => {}
        }
        // SAFETY: `c` is a valid C string.
        if unsafe { libc::shm_unlink(c.as_ptr()) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                return Err(SegmentError::NotFound { name: name.to_owned() });
            }
            return Err(os("shm_unlink", Some(name))(e));
        }
        Ok(())
    }

    /// Removes every segment of ours that is stale ([`SegmentInfo::is_stale`]:
    /// its creator is dead, also when it died before the segment was ready);
    /// returns their names. A live creator's segment, ready or not, is kept.
    ///
    /// ```
    /// let removed = shmproc::Segment::remove_stale()?;
    /// for name in removed {
    ///     println!("removed the leftover {name}");
    /// }
    /// # Ok::<(), shmproc::SegmentError>(())
    /// ```
    pub fn remove_stale() -> Result<Vec<String>, SegmentError> {
        let mut removed = Vec::new();
        for info in Segment::list()? {
            if info.is_stale() {
                match Segment::remove(&info.name) {
                    Ok(()) | Err(SegmentError::NotFound { .. }) => removed.push(info.name),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(removed)
    }
}

/// Writes `creator` into the header's creator fields, in one write.
fn record_creator(fd: &OwnedFd, creator: Identity) -> io::Result<()> {
    let ns = creator.ns.to_le_bytes();
    // SAFETY: pwrite from a valid 4-byte buffer to our fd.
    if unsafe { libc::pwrite(fd.as_raw_fd(), ns.as_ptr().cast(), ns.len(), CREATOR_NS) } != ns.len() as isize {
        return Err(io::Error::last_os_error());
    }
    let mut rec = [0u8; 12];
    rec[..4].copy_from_slice(&creator.id.to_le_bytes());
    rec[4..].copy_from_slice(&creator.start.to_le_bytes());
    // SAFETY: pwrite from a valid 12-byte buffer to our fd.
    let n = unsafe { libc::pwrite(fd.as_raw_fd(), rec.as_ptr().cast(), rec.len(), CREATOR_RECORD) };
    if n == rec.len() as isize {
        Ok(())
    } else if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Err(io::Error::new(io::ErrorKind::WriteZero, "short write of the creator record"))
    }
}

/// The creator record of a segment file, if it holds one (pid 0: none).
fn read_creator(file: &File) -> Option<Identity> {
    let mut rec = [0u8; 12];
    // SAFETY: pread into a valid 12-byte buffer from an open fd.
    let n = unsafe { libc::pread(file.as_raw_fd(), rec.as_mut_ptr().cast(), rec.len(), CREATOR_RECORD) };
    if n != rec.len() as isize {
        return None;
    }
    let id = u32::from_le_bytes(rec[..4].try_into().ok()?);
    let start = u64::from_le_bytes(rec[4..].try_into().ok()?);
    let mut ns = [0u8; 4];
    // SAFETY: pread into a valid 4-byte buffer from an open fd.
    let n = unsafe { libc::pread(file.as_raw_fd(), ns.as_mut_ptr().cast(), ns.len(), CREATOR_NS) };
    let ns = if n == ns.len() as isize { u32::from_le_bytes(ns) } else { 0 };
    (id != 0).then_some(Identity { id, start, ns })
}

/// What a not-ready segment file says about its creator.
fn not_ready_status(path: &std::path::Path) -> SegmentStatus {
    let Ok(file) = File::open(path) else {
        return SegmentStatus::NotReady { creator: None, abandoned: false };
    };
    match read_creator(&file) {
        Some(creator) => {
            // A record read while its creator writes it could be torn (a
            // live creator would then look dead): call it dead only if the
            // same record reads back after the liveness check.
            let abandoned = !creator.is_alive() && read_creator(&file) == Some(creator);
            SegmentStatus::NotReady { creator: Some(creator), abandoned }
        }
        None => {
            let age = file.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
            SegmentStatus::NotReady { creator: None, abandoned: age.is_some_and(|a| a >= NOT_READY_GRACE) }
        }
    }
}

fn fd_metadata(fd: &OwnedFd) -> io::Result<std::fs::Metadata> {
    // Borrow the fd as a File without taking ownership.
    // SAFETY: the fd is valid for the duration of the borrow, and ManuallyDrop
    // prevents the temporary File from closing it.
    let f = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd.as_raw_fd()) });
    f.metadata()
}

/// The length to map for a segment whose file is `file_len` bytes: the
/// region's recorded size when the file is larger (out-of-line message blocks
/// live past the region, see `bulk.rs`), otherwise the file's (the region's
/// validation then reports any mismatch). A file shorter than the recorded
/// region was truncated: [`SegmentError::Truncated`], before anything is
/// mapped. (A header not written yet records 0 and is waited for by
/// `Region::open`.)
fn region_len(fd: &OwnedFd, file_len: usize, name: Option<&str>) -> Result<usize, SegmentError> {
    // RegionHeader: magic u64, version u32, header_size u32, total_size u64.
    let mut word = [0u8; 8];
    // SAFETY: pread into a valid 8-byte buffer from our fd.
    let n = unsafe { libc::pread(fd.as_raw_fd(), word.as_mut_ptr().cast(), 8, 16) };
    let total = u64::from_le_bytes(word);
    if n == 8 && total > file_len as u64 {
        return Err(SegmentError::Truncated {
            name: name.map(str::to_owned),
            file_len: file_len as u64,
            region_len: total,
        });
    }
    Ok(match usize::try_from(total) {
        Ok(total) if n == 8 && total > 0 && total < file_len => total,
        _ => file_len,
    })
}

/// Sizes the fd and reserves its pages, so that running out of shared memory is
/// an error now rather than a SIGBUS on first touch.
fn size_fd(fd: &OwnedFd, len: usize, name: Option<&str>) -> Result<(), SegmentError> {
    let off = libc::off_t::try_from(len).map_err(|_| SegmentError::InvalidSize { size: len })?;
    // SAFETY: fd is a valid, writable shared-memory fd.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), off) } != 0 {
        return Err(os("ftruncate", name)(io::Error::last_os_error()));
    }
    // SAFETY: as above; posix_fallocate returns an error number, not -1.
    let r = unsafe { libc::posix_fallocate(fd.as_raw_fd(), 0, off) };
    match r {
        0 => Ok(()),
        libc::ENOSPC | libc::ENOMEM | libc::EFBIG => {
            Err(SegmentError::NoSpace { name: name.map(str::to_owned), requested: len })
        }
        // Filesystems without fallocate support: fall back to lazy allocation.
        libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL => Ok(()),
        e => Err(os("posix_fallocate", name)(io::Error::from_raw_os_error(e))),
    }
}
