//! A handle to one object inside a segment, and how handles travel to
//! spawn-mode children.
//!
//! Each handle keeps its [`Segment`] alive and caches the object's address,
//! validated once when the handle is made, so operations never re-read the
//! directory. Forked children inherit handles as plain copies of memory (the
//! mapping is `MAP_SHARED` and inherited at the same address).
//!
//! # Passing handles to spawn-mode children
//!
//! Handles implement rkyv's `Archive`/`Serialize`/`Deserialize`: the archived
//! form is the segment's file descriptor number and the object's directory
//! index. While [`crate::Process::spawn_fn`] serialises its argument it
//! collects the descriptors of every handle it meets and lets the child
//! inherit exactly those (clearing close-on-exec between fork and exec). The
//! child sets close-on-exec on them again first thing (the payload lists
//! them), so programs it execs in turn inherit no segment; it maps each
//! descriptor once ([`inherited_segment`]) and re-validates the region and the
//! object, so a handle is as checked as a fresh `open`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::Mutex as StdMutex;

use rkyv::{Archive, Deserialize, Serialize};
use shmproc_core::participants::{Participants, Role};
use shmproc_core::region::{RegionObject, OBJECT_ALIGN};

use crate::error::Error;
use crate::segment::Segment;

/// Default size of the private segment a standalone object gets.
const MIN_SEGMENT: usize = 256;

/// One object inside a segment.
#[derive(Clone)]
pub(crate) struct Object {
    seg: Segment,
    index: u32,
    base: NonNull<u8>,
    size: usize,
}

// SAFETY: `base` points into the shared mapping owned by `seg` (kept alive by
// this struct); the memory is only accessed through atomics or under the
// protocol of the owning primitive, exactly as from another process.
unsafe impl Send for Object {}
// SAFETY: as above.
unsafe impl Sync for Object {}

impl Object {
    /// Allocates a `H` (directory kind `H::KIND`) in `seg`, or in a fresh
    /// anonymous segment of its own when `seg` is `None`, initialised by
    /// `init` before any other process can see it.
    ///
    /// This is how every handle whose object is one [`RegionObject`] is made;
    /// [`create_sized`](Object::create_sized) is the same with room for data
    /// after the head.
    pub(crate) fn create_as<H: RegionObject>(
        seg: Option<&Segment>,
        name: &str,
        init: impl FnOnce(&H),
    ) -> Result<Object, Error> {
        Object::create_sized::<H>(seg, name, std::mem::size_of::<H>(), |head, _| init(head))
    }

    /// Allocates `size` bytes (at least a `H`) with a `H` at offset 0, of
    /// directory kind `H::KIND`. `init` gets the head and the object's first
    /// byte, for what the object keeps after the head.
    pub(crate) fn create_sized<H: RegionObject>(
        seg: Option<&Segment>,
        name: &str,
        size: usize,
        init: impl FnOnce(&H, NonNull<u8>),
    ) -> Result<Object, Error> {
        let size = size.max(std::mem::size_of::<H>());
        Object::create(seg, name, H::KIND, size, |p| {
            // SAFETY: `create` hands out `size >= size_of::<H>()` fresh bytes of
            // the mapping at an OBJECT_ALIGN-aligned address, and RegionObject
            // promises align_of::<H>() <= OBJECT_ALIGN and that every bit
            // pattern is a valid H (atomics only), so a shared reference to
            // the not-yet-initialised bytes is sound; nobody else sees them
            // before `create` returns.
            let head = unsafe { &*p.as_ptr().cast::<H>() };
            init(head, p)
        })
    }

    /// The `H` called `name` in `seg` (checked to be of kind `H::KIND` and at
    /// least a `H` long).
    pub(crate) fn open_as<H: RegionObject>(seg: &Segment, name: &str) -> Result<Object, Error> {
        Object::open(seg, name, H::KIND, std::mem::size_of::<H>())
    }

    /// The `H` at directory `index` of `seg` (as [`open_as`](Object::open_as)).
    pub(crate) fn from_index_as<H: RegionObject>(seg: Segment, index: u32) -> Result<Object, Error> {
        Object::from_index(seg, index, H::KIND, std::mem::size_of::<H>())
    }

    /// This object, if it is at least `min_size` bytes long (for objects that
    /// keep data after their head).
    pub(crate) fn at_least(self, min_size: usize) -> Result<Object, Error> {
        if self.size < min_size {
            return Err(Error::Layout("object smaller than its type"));
        }
        Ok(self)
    }

    /// Allocates an object of `size` bytes of `kind` in `seg`, or in a fresh
    /// anonymous segment of its own when `seg` is `None`. The untyped form of
    /// [`create_as`](Object::create_as), for objects that have no head type.
    pub(crate) fn create(
        seg: Option<&Segment>,
        name: &str,
        kind: u32,
        size: usize,
        init: impl FnOnce(NonNull<u8>),
    ) -> Result<Object, Error> {
        let seg = match seg {
            Some(s) => s.clone(),
            None => Segment::anonymous_with_directory(size.max(MIN_SEGMENT) + OBJECT_ALIGN, 1)?,
        };
        let info = seg.region().alloc_raw(kind, name.as_bytes(), size, OBJECT_ALIGN, init)?;
        Object::from_index(seg, info.index, kind, size)
    }

    /// The object called `name` in `seg`, of `kind` and at least `min_size`.
    pub(crate) fn open(seg: &Segment, name: &str, kind: u32, min_size: usize) -> Result<Object, Error> {
        let info = seg.region().find(name.as_bytes())?;
        Object::from_index(seg.clone(), info.index, kind, min_size)
    }

    pub(crate) fn from_index(seg: Segment, index: u32, kind: u32, min_size: usize) -> Result<Object, Error> {
        let (base, size) = seg.region().raw(index, kind)?;
        Object { seg, index, base, size }.at_least(min_size)
    }

    /// A typed reference to the object's head.
    #[inline]
    pub(crate) fn head<T: RegionObject>(&self) -> &T {
        debug_assert!(self.size >= std::mem::size_of::<T>());
        // SAFETY: validated at construction: base is OBJECT_ALIGN-aligned inside
        // the mapping and at least size_of::<T>() bytes long (callers pass
        // min_size >= size_of::<T>()); T is valid for any bits.
        unsafe { &*self.base.as_ptr().cast::<T>() }
    }

    /// Address `offset` bytes into the object (`offset <= size`).
    #[inline]
    pub(crate) fn at(&self, offset: usize) -> NonNull<u8> {
        assert!(offset <= self.size);
        // SAFETY: offset <= size, and base..base+size lies inside the mapping.
        unsafe { NonNull::new_unchecked(self.base.as_ptr().add(offset)) }
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.seg
    }

    /// The object's index in its segment's directory.
    pub(crate) fn index(&self) -> u32 {
        self.index
    }

    pub(crate) fn repr(&self) -> HandleRepr {
        HandleRepr { fd: self.seg.as_raw_fd(), index: self.index }
    }
}

/// The archived form of every handle: a descriptor number and an index.
///
/// ```
/// // Every handle crosses into a spawn-mode child as a HandleRepr
/// // (a descriptor number and a directory index), inside the child's argument.
/// fn child(q: shmproc::Queue<u32>) {
///     q.send(&1).unwrap();
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     shmproc::init();
///     let q = shmproc::Queue::<u32>::bounded(2)?;
///     let mut p = shmproc::Process::spawn_fn(child, q.clone())?;
///     assert_eq!(q.recv()?, 1);
///     p.join()?;
///     Ok(())
/// }
/// ```
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy)]
pub struct HandleRepr {
    fd: i32,
    index: u32,
}

type Roles = Vec<(usize, Role)>;

thread_local! {
    static COLLECTED: RefCell<Option<(Vec<RawFd>, Roles)>> = const { RefCell::new(None) };
}

/// Runs `f` while collecting the descriptors (and queue roles) of serialised
/// handles.
pub(crate) fn collecting_fds<R>(f: impl FnOnce() -> R) -> (R, (Vec<RawFd>, Roles)) {
    COLLECTED.with(|c| *c.borrow_mut() = Some((Vec::new(), Vec::new())));
    let r = f();
    let got = COLLECTED.with(|c| c.borrow_mut().take()).unwrap_or_default();
    (r, got)
}

pub(crate) fn note_fd(fd: RawFd) {
    COLLECTED.with(|c| {
        if let Some((v, _)) = c.borrow_mut().as_mut() {
            if !v.contains(&fd) {
                v.push(fd);
            }
        }
    });
}

/// Notes that a serialised handle holds `role` on the table at `table`.
pub(crate) fn note_role(table: &Participants, role: Role) {
    COLLECTED.with(|c| {
        if let Some((_, r)) = c.borrow_mut().as_mut() {
            let key = (table as *const Participants as usize, role);
            // Resolving and serialising both pass here; once per role is all
            // a pre-registration needs.
            if !r.contains(&key) {
                r.push(key);
            }
        }
    });
}

static INHERITED: StdMutex<Option<HashMap<i32, Segment>>> = StdMutex::new(None);

/// The segment behind an inherited descriptor, mapped once per process.
pub(crate) fn inherited_segment(fd: i32) -> Result<Segment, Error> {
    let mut map = INHERITED.lock().unwrap_or_else(|e| e.into_inner());
    let map = map.get_or_insert_with(HashMap::new);
    if let Some(s) = map.get(&fd) {
        return Ok(s.clone());
    }
    // In the parent (a handle deserialised in the same process, e.g. in a
    // test) the fd is one of our own open segments; mapping it again is fine.
    // SAFETY: fcntl(F_GETFD) only queries the descriptor.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Error::Layout("handle names a descriptor this process does not have"));
    }
    // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor that the segment owns.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(Error::Layout("cannot duplicate the handle's descriptor"));
    }
    // SAFETY: `dup` is a fresh descriptor we own, referring to shared memory
    // (its contents are validated by from_fd).
    let seg = unsafe { Segment::from_fd(dup) }?;
    map.insert(fd, seg.clone());
    Ok(seg)
}

/// Implements rkyv's traits for a handle type so it can be an argument of a
/// spawn-mode child. `$open` turns `(Segment, index)` into the handle.
macro_rules! impl_handle_archive {
    ([$($gen:tt)*] $ty:ty, $obj:ident => $get:expr, |$seg:ident, $idx:ident| $open:expr) => {
        impl<$($gen)*> rkyv::Archive for $ty {
            type Archived = <$crate::object::HandleRepr as rkyv::Archive>::Archived;
            type Resolver = <$crate::object::HandleRepr as rkyv::Archive>::Resolver;
            fn resolve(&self, resolver: Self::Resolver, out: rkyv::Place<Self::Archived>) {
                let $obj = self;
                let o: &$crate::object::Object = $get;
                rkyv::Archive::resolve(&o.repr(), resolver, out)
            }
        }
        impl<$($gen)* __S: rkyv::rancor::Fallible + ?Sized> rkyv::Serialize<__S> for $ty
        where
            $crate::object::HandleRepr: rkyv::Serialize<__S>,
        {
            fn serialize(&self, s: &mut __S) -> Result<Self::Resolver, __S::Error> {
                let $obj = self;
                let o: &$crate::object::Object = $get;
                $crate::object::note_fd(o.segment().as_raw_fd());
                rkyv::Serialize::serialize(&o.repr(), s)
            }
        }
        impl<$($gen)* __D: rkyv::rancor::Fallible + ?Sized> rkyv::Deserialize<$ty, __D>
            for <$crate::object::HandleRepr as rkyv::Archive>::Archived
        where
            __D::Error: rkyv::rancor::Source,
        {
            fn deserialize(&self, _: &mut __D) -> Result<$ty, __D::Error> {
                let ($seg, $idx) = $crate::object::archived_parts(self)
                    .map_err(<__D::Error as rkyv::rancor::Source>::new)?;
                let r: Result<$ty, $crate::Error> = $open;
                r.map_err(<__D::Error as rkyv::rancor::Source>::new)
            }
        }
    };
}
pub(crate) use impl_handle_archive;

/// The segment and index named by an archived handle.
pub(crate) fn archived_parts(a: &ArchivedHandleRepr) -> Result<(Segment, u32), Error> {
    let fd = a.fd.to_native();
    let index = a.index.to_native();
    Ok((inherited_segment(fd)?, index))
}
