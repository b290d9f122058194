//! The bound on data that lives in shared memory.

/// Plain data that may live in shared memory: no pointers or references
/// (each process maps memory at its own address), and valid for *any* bit
/// pattern (a crashed or malicious peer may leave any bytes behind).
///
/// This is [`bytemuck::AnyBitPattern`] plus `Send`: integers, floats, arrays
/// and `#[repr(C)]` structs of them qualify; derive it with
/// `#[derive(Clone, Copy, bytemuck::Zeroable, bytemuck::AnyBitPattern)]`.
/// `bool`, `char`, enums, references and `NonZero*` do not (not every bit
/// pattern is valid for them).
///
/// ```
/// #[derive(Clone, Copy, shmproc::bytemuck::AnyBitPattern)]
/// #[repr(C)]
/// struct Point {
///     x: f32,
///     y: f32,
/// }
/// // Any bit pattern is a valid Point, so it may live in shared memory as is.
/// let p = shmproc::Value::new(Point { x: 1.0, y: 2.0 })?;
/// assert_eq!(p.get().y, 2.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Plain: bytemuck::AnyBitPattern + Send {}

impl<T: bytemuck::AnyBitPattern + Send> Plain for T {}
