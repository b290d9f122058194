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
pub trait Plain: bytemuck::AnyBitPattern + Send {}

impl<T: bytemuck::AnyBitPattern + Send> Plain for T {}
