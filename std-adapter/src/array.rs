//! `Array<T>`: a fixed-length shared slice behind a lock (Python's `Array`).
//!
//! ```
//! let a = shmproc::Array::<f64>::zeroed(4)?;
//! let a2 = a.clone();
//! let mut child = shmproc::Process::spawn(move || {
//!     let mut xs = a2.lock().unwrap();
//!     for (i, x) in xs.iter_mut().enumerate() {
//!         *x = i as f64;
//!     }
//! })?;
//! child.join()?;
//! assert_eq!(a.to_vec(), vec![0.0, 1.0, 2.0, 3.0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The length is recorded in shared memory and validated against the object's
//! size whenever a handle is made, so a corrupt length is an error, not an
//! out-of-bounds slice.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};

use shmproc_core::owner::Owner;
use shmproc_core::raw_mutex::{Acquired, RawMutex};
use shmproc_core::region::{kind, RegionObject, OBJECT_ALIGN};

use crate::error::Error;
use crate::held::{Refused, Site};
use crate::mutex::{LockResult, OwnerDied};
use crate::object::{impl_handle_archive, Object};
use crate::plain::Plain;
use crate::segment::Segment;
use crate::thread_id;

#[repr(C, align(128))]
struct ArrayHead {
    lock: RawMutex,
    len: AtomicU64,
}

// SAFETY: atomics only (RawMutex is atomics), valid for any bits; align 128.
unsafe impl RegionObject for ArrayHead {
    const KIND: u32 = kind::ARRAY;
}

const DATA_OFFSET: usize = 2 * OBJECT_ALIGN;
const _: () = assert!(std::mem::size_of::<ArrayHead>() <= DATA_OFFSET);

/// A shared fixed-length array of `T` behind one lock.
///
/// ```
/// let a = shmproc::Array::<u32>::zeroed(4)?;
/// let a2 = a.clone();
/// let mut child = shmproc::Process::spawn(move || {
///     a2.set(2, 7);
/// })?;
/// child.join()?;
/// assert_eq!(a.to_vec(), [0, 0, 7, 0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Array<T> {
    obj: Object,
    len: usize,
    _t: PhantomData<T>,
}

impl<T> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array { obj: self.obj.clone(), len: self.len, _t: PhantomData }
    }
}

impl<T> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array").field("len", &self.len).finish_non_exhaustive()
    }
}

fn bytes_for<T>(len: usize) -> Result<usize, Error> {
    if std::mem::align_of::<T>() > OBJECT_ALIGN {
        return Err(Error::Layout("type aligned to more than 128 bytes"));
    }
    len.checked_mul(std::mem::size_of::<T>())
        .and_then(|b| b.checked_add(DATA_OFFSET))
        .ok_or(Error::Layout("array length overflows"))
}

impl<T: Plain> Array<T> {
    /// `len` zeroed elements, in a segment of their own.
    ///
    /// ```
    /// let a = shmproc::Array::<f64>::zeroed(3)?;
    /// assert_eq!(a.to_vec(), [0.0; 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn zeroed(len: usize) -> Result<Array<T>, Error> {
        Array::create(None, "", len, |_| T::zeroed())
    }

    /// A copy of `items`, in a segment of its own.
    ///
    /// ```
    /// let a = shmproc::Array::from_slice(&[1u8, 2, 3])?;
    /// assert_eq!(a.get(1), Some(2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_slice(items: &[T]) -> Result<Array<T>, Error> {
        Array::create(None, "", items.len(), |i| items[i])
    }

    /// `len` zeroed elements named `name` in `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// let a = shmproc::Array::<i32>::zeroed_in(&seg, "grid", 8)?;
    /// assert_eq!(a.len(), 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn zeroed_in(seg: &Segment, name: &str, len: usize) -> Result<Array<T>, Error> {
        Array::create(Some(seg), name, len, |_| T::zeroed())
    }

    fn create(seg: Option<&Segment>, name: &str, len: usize, item: impl Fn(usize) -> T) -> Result<Array<T>, Error> {
        let size = bytes_for::<T>(len)?;
        let obj = Object::create_sized(seg, name, size, |head: &ArrayHead, p| {
            head.lock.init();
            head.len.store(len as u64, Ordering::Relaxed);
            // SAFETY: `p` is OBJECT_ALIGN-aligned with `size` bytes: `len` Ts
            // (align <= 128) from DATA_OFFSET.
            unsafe {
                let data = p.as_ptr().add(DATA_OFFSET).cast::<T>();
                for i in 0..len {
                    data.add(i).write(item(i));
                }
            }
        })?;
        Ok(Array { obj, len, _t: PhantomData })
    }

    /// Opens the array named `name` in `seg`.
    ///
    /// ```
    /// let seg = shmproc::Segment::anonymous(1 << 16)?;
    /// shmproc::Array::<i32>::zeroed_in(&seg, "grid", 8)?.set(0, 5);
    /// assert_eq!(shmproc::Array::<i32>::open_in(&seg, "grid")?.get(0), Some(5));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_in(seg: &Segment, name: &str) -> Result<Array<T>, Error> {
        let obj = Object::open_as::<ArrayHead>(seg, name)?.at_least(DATA_OFFSET)?;
        Array::validate(obj)
    }

    fn from_parts(seg: Segment, index: u32) -> Result<Array<T>, Error> {
        Array::validate(Object::from_index_as::<ArrayHead>(seg, index)?.at_least(DATA_OFFSET)?)
    }

    fn validate(obj: Object) -> Result<Array<T>, Error> {
        let len = obj.head::<ArrayHead>().len.load(Ordering::Relaxed);
        let len = usize::try_from(len).map_err(|_| Error::Layout("array length"))?;
        if bytes_for::<T>(len)? > obj.size() {
            return Err(Error::Layout("array length exceeds its object"));
        }
        Ok(Array { obj, len, _t: PhantomData })
    }

    /// Number of elements.
    ///
    /// ```
    /// assert_eq!(shmproc::Array::<u8>::zeroed(10)?.len(), 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    ///
    /// ```
    /// assert!(!shmproc::Array::<u8>::zeroed(1)?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn head(&self) -> &ArrayHead {
        self.obj.head::<ArrayHead>()
    }

    fn site(&self) -> Site<'_> {
        Site { raw: &self.head().lock, seg: self.obj.segment() }
    }

    /// Locks the whole array; the guard derefs to `[T]`.
    ///
    /// A lock word forged by a peer to name this thread is taken over like a
    /// dead owner's (`Err(OwnerDied(guard))`), as for [`Mutex::lock`](crate::Mutex::lock).
    ///
    /// # Panics
    ///
    /// If this thread already holds the array's lock (a bug in the caller,
    /// judged from this thread's private memory, never from peer data).
    ///
    /// ```
    /// let a = shmproc::Array::<u32>::zeroed(3)?;
    /// {
    ///     let mut all = a.lock().unwrap(); // the whole array, under its lock
    ///     all.copy_from_slice(&[1, 2, 3]);
    /// }
    /// assert_eq!(a.to_vec(), [1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        let me = thread_id::owner();
        let how = match self.site().lock(&me, None) {
            Ok(h) => h,
            Err(Refused::Reentered) => panic!("shmproc::Array locked twice by the same thread"),
            // Without a deadline the site waits until it gets the lock.
            Err(Refused::Timeout | Refused::WouldBlock) => return self.lock(),
        };
        let g = ArrayGuard { array: self, owner: me, _not_send: PhantomData };
        match how {
            Acquired::Locked => Ok(g),
            Acquired::OwnerDied => Err(OwnerDied(g)),
        }
    }

    /// A copy of element `i`, or `None` past the end.
    ///
    /// ```
    /// let a = shmproc::Array::from_slice(&[9u16])?;
    /// assert_eq!(a.get(0), Some(9));
    /// assert_eq!(a.get(1), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn get(&self, i: usize) -> Option<T> {
        let g = self.lock().unwrap_or_else(OwnerDied::into_inner);
        g.get(i).copied()
    }

    /// Sets element `i`; returns false (and changes nothing) past the end.
    ///
    /// ```
    /// let a = shmproc::Array::<u8>::zeroed(2)?;
    /// assert!(a.set(1, 4));
    /// assert!(!a.set(2, 4)); // out of bounds
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set(&self, i: usize, value: T) -> bool {
        let mut g = self.lock().unwrap_or_else(OwnerDied::into_inner);
        match g.get_mut(i) {
            Some(slot) => {
                *slot = value;
                true
            }
            None => false,
        }
    }

    /// A copy of all elements.
    ///
    /// ```
    /// let a = shmproc::Array::from_slice(&[3i8, -3])?;
    /// assert_eq!(a.to_vec(), vec![3, -3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn to_vec(&self) -> Vec<T> {
        self.lock().unwrap_or_else(OwnerDied::into_inner).to_vec()
    }

    fn data(&self) -> *mut T {
        self.obj.at(DATA_OFFSET).as_ptr().cast::<T>()
    }
}

impl_handle_archive!([T: Plain,] Array<T>, a => &a.obj, |seg, idx| Array::<T>::from_parts(seg, idx));

/// The locked contents of an [`Array`]; unlocks on drop.
///
/// ```
/// let a = shmproc::Array::<u8>::zeroed(4)?;
/// let mut guard: shmproc::ArrayGuard<'_, u8> = a.lock().unwrap();
/// guard[0] = 1;
/// assert_eq!(guard.iter().sum::<u8>(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "if unused the Array will immediately unlock"]
pub struct ArrayGuard<'a, T: Plain> {
    array: &'a Array<T>,
    owner: Owner,
    _not_send: PhantomData<*const ()>,
}

impl<T: Plain> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the lock is held; `len` Ts from DATA_OFFSET lie inside the
        // object (validated at construction); any bit pattern is a valid T.
        unsafe { std::slice::from_raw_parts(self.array.data(), self.array.len) }
    }
}

impl<T: Plain> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`; `&mut self` makes the access unique locally.
        unsafe { std::slice::from_raw_parts_mut(self.array.data(), self.array.len) }
    }
}

impl<T: Plain> Drop for ArrayGuard<'_, T> {
    fn drop(&mut self) {
        self.array.site().unlock(&self.owner);
    }
}
