//! The ABI shared by the nub host and its guests.
//!
//! Everything that crosses the VM boundary is defined here, once, and used by
//! both sides: the host (`nub-hypervisor`, `nub-sandbox`) and the guest kernel
//! (`nub-arch-x86`). The crate is `no_std` + `alloc` so it compiles for
//! `x86_64-unknown-none`.
//!
//! - [`layout`]: guest physical memory map (identity mapped) and its sizes.
//! - [`boot`]: [`boot::BootInfo`], the block the host hands the guest in RDI.
//! - [`ports`]: the I/O ports through which the guest exits to the host.
//! - [`ring`]: the shared-memory ring header and frame format.
//! - [`rpc`]: rkyv `Request`/`Response` frames and the system fn ids.
//! - [`report`]: the fault/panic report page.
//! - [`directory`]: the capability directory's host-readable layout.
//! - [`log_buffer`]: the guest log buffer and its record format.
//! - [`system`]: the system functions' answers (GET_CAP tags, heap and
//!   directory stats).
//! - [`exceptions`]: the x86 exception table (vector, name, error code).
//! - [`default_guest`]: the default guest's fn ids.
//! - [`hostile_guest`]: the hostile test guest's fn ids.
//! - [`resident`]: the control block of resident (exit-free) calls.
//!
//! `docs/abi.md` at the repository root describes the same contract in prose.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

/// Declares an ABI enum whose values cross the host/guest boundary as
/// integers: the enum (`#[repr]` of the integer type), its `ALL` list in
/// declaration order, and `TryFrom<integer>` (the unknown value comes back
/// as the error), all from one list of variants, so none can be missing
/// from another. Unknown values are reported, never trusted.
macro_rules! abi_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident: $repr:ident {
            $($(#[$vmeta:meta])* $variant:ident = $value:expr),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr($repr)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $($(#[$vmeta])* $variant = $value),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
        }

        impl TryFrom<$repr> for $name {
            type Error = $repr;

            fn try_from(value: $repr) -> Result<Self, $repr> {
                $(if value == $value {
                    return Ok(Self::$variant);
                })+
                Err(value)
            }
        }
    };
}

pub mod boot;
pub mod default_guest;
pub mod directory;
pub mod exceptions;
pub mod hostile_guest;
pub mod layout;
pub mod log_buffer;
pub mod ports;
pub mod report;
pub mod resident;
pub mod ring;
pub mod rpc;
pub mod system;

/// Version of the host/guest ABI described by this crate. Bumped on any
/// incompatible change to a layout, port or frame defined here.
pub const ABI_VERSION: u32 = 5;

/// Reads a little-endian `u64` at `off` in `bytes`, or `None` if out of range.
#[inline]
pub fn read_u64(bytes: &[u8], off: usize) -> Option<u64> {
    let end = off.checked_add(8)?;
    let raw: [u8; 8] = bytes.get(off..end)?.try_into().ok()?;
    Some(u64::from_le_bytes(raw))
}

/// Reads a little-endian `u32` at `off` in `bytes`, or `None` if out of range.
#[inline]
pub fn read_u32(bytes: &[u8], off: usize) -> Option<u32> {
    let end = off.checked_add(4)?;
    let raw: [u8; 4] = bytes.get(off..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(raw))
}

/// Writes a little-endian `u64` at `off` in `bytes`; `false` if out of range.
#[inline]
pub fn write_u64(bytes: &mut [u8], off: usize, value: u64) -> bool {
    match off.checked_add(8).and_then(|end| bytes.get_mut(off..end)) {
        Some(dst) => {
            dst.copy_from_slice(&value.to_le_bytes());
            true
        }
        None => false,
    }
}

/// Writes a little-endian `u32` at `off` in `bytes`; `false` if out of range.
#[inline]
pub fn write_u32(bytes: &mut [u8], off: usize, value: u32) -> bool {
    match off.checked_add(4).and_then(|end| bytes.get_mut(off..end)) {
        Some(dst) => {
            dst.copy_from_slice(&value.to_le_bytes());
            true
        }
        None => false,
    }
}

/// Decodes exactly `N` little-endian u64 words (the shape of the stats
/// results); `None` if `bytes` is not `8 * N` long.
pub fn decode_u64s<const N: usize>(bytes: &[u8]) -> Option<[u64; N]> {
    if bytes.len() != N * 8 {
        return None;
    }
    let mut words = [0u64; N];
    for (i, w) in words.iter_mut().enumerate() {
        *w = read_u64(bytes, i * 8)?;
    }
    Some(words)
}

/// Encodes u64 words little endian, one after another.
pub fn encode_u64s(words: &[u64]) -> alloc::vec::Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Rounds `value` up to a multiple of `align` (a power of two), or `None` on
/// overflow.
#[inline]
pub const fn align_up(value: u64, align: u64) -> Option<u64> {
    match value.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

#[cfg(test)]
mod abi_enum_tests {
    use core::fmt::Debug;

    use crate::{log_buffer::LogLevel, ports::ExitPort, ring::FrameKind, rpc::Status};

    /// Every value in `values` converts to the enum value whose integer it
    /// is, or comes back as the error; exactly `all.len()` of them convert,
    /// and every listed value converts back to itself.
    fn check<T, R>(all: &[T], to_int: fn(T) -> R, values: impl Iterator<Item = R>)
    where
        T: Copy + PartialEq + Debug + TryFrom<R, Error = R>,
        R: Copy + PartialEq + Debug,
    {
        let mut found = 0;
        for value in values {
            match T::try_from(value) {
                Ok(t) => {
                    assert_eq!(to_int(t), value, "{t:?}");
                    found += 1;
                }
                Err(back) => assert_eq!(back, value),
            }
        }
        assert_eq!(found, all.len(), "values are distinct and all in range");
        for &t in all {
            assert_eq!(T::try_from(to_int(t)), Ok(t));
        }
    }

    #[test]
    fn every_abi_enum_converts_both_ways_and_refuses_the_rest() {
        let wide = || (0..=0x1_0000u32).chain([u32::MAX]);
        check(FrameKind::ALL, |k| k as u32, wide());
        check(Status::ALL, |s| s as u32, wide());
        check(LogLevel::ALL, |l| l as u8, 0..=u8::MAX);
        check(ExitPort::ALL, |p| p as u16, 0..=u16::MAX);
    }
}
