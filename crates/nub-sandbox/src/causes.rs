//! nub-sandbox's own forms of the errors its dependencies report (the
//! memory layout's, guest memory's, the cap wire format's), so that no
//! public [`HyperlightError`](crate::HyperlightError) variant carries
//! another crate's error type: a dependency can change its errors without
//! changing nub-sandbox's API. Each converts from its source one to one.

use javm_cap::WireError;
use nub_host_common::layout::LayoutError;
use nub_hypervisor::MemoryError;

/// Why a configuration cannot produce a memory layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutFault {
    /// A size is zero, not page aligned, or too small for its use.
    #[error("{what} size {value:#x} must be a non-zero multiple of 4 KiB and large enough")]
    BadSize {
        /// Which size.
        what: &'static str,
        /// The value given.
        value: u64,
    },
    /// The guest image's extent is invalid.
    #[error("guest image extent is invalid")]
    BadImage,
    /// The total exceeds the supported guest memory size.
    #[error("guest memory of {needed:#x} bytes exceeds the supported maximum of {max:#x}")]
    TooLarge {
        /// The size that would be needed.
        needed: u64,
        /// The maximum supported.
        max: u64,
    },
}

impl From<LayoutError> for LayoutFault {
    fn from(e: LayoutError) -> Self {
        match e {
            LayoutError::BadSize { what, value } => Self::BadSize { what, value },
            LayoutError::TooLarge { needed, max } => Self::TooLarge { needed, max },
            // BadImage, and any kind a later layout adds.
            _ => Self::BadImage,
        }
    }
}

/// A failed host access to guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryFault {
    /// The range `[addr, addr + len)` is not inside guest memory.
    #[error("guest range {addr:#x}+{len:#x} is outside guest memory of {size:#x} bytes")]
    OutOfBounds {
        /// First guest address of the access.
        addr: u64,
        /// Length of the access.
        len: u64,
        /// Size of guest memory.
        size: u64,
    },
    /// An atomic word access at an address not aligned for it.
    #[error("guest address {addr:#x} is not {align}-byte aligned")]
    Misaligned {
        /// The address.
        addr: u64,
        /// The alignment required.
        align: u64,
    },
    /// The host could not map the memory.
    #[error("cannot map {size:#x} bytes of guest memory: {}", std::io::Error::from_raw_os_error(*errno))]
    Map {
        /// Requested size.
        size: u64,
        /// `errno` from mmap.
        errno: i32,
    },
    /// Discarding the guest's pages failed.
    #[error("discarding {size:#x} bytes of guest memory failed: errno {errno}")]
    Discard {
        /// Size of the mapping.
        size: u64,
        /// `errno` from madvise.
        errno: i32,
    },
}

impl From<MemoryError> for MemoryFault {
    fn from(e: MemoryError) -> Self {
        match e {
            MemoryError::OutOfBounds { addr, len, size } => Self::OutOfBounds { addr, len, size },
            MemoryError::Misaligned { addr, align } => Self::Misaligned { addr, align },
            MemoryError::Map { size, errno } => Self::Map { size, errno },
            MemoryError::Discard { size, errno } => Self::Discard { size, errno },
            // A kind a later hypervisor adds: reported as unmappable.
            _ => Self::Map { size: 0, errno: 0 },
        }
    }
}

/// Why a cap cannot be put on the wire to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireFault {
    /// Paged data never crosses the wire (`put_cap_graph` sends it).
    #[error("paged data cannot cross the wire")]
    PagedData,
    /// Slot `index` of the CNode is a `Ref` (`put_cap_graph` sends it).
    #[error("slot {index} holds a Ref, which cannot cross the wire")]
    RefSlot {
        /// Index of the first `Ref` slot.
        index: usize,
    },
    /// Data longer than the wire format's limit.
    #[error("data of {len} bytes exceeds the limit of {max} bytes")]
    DataTooLarge {
        /// The data length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A CNode with more slots than the wire format's limit.
    #[error("CNode of {count} slots exceeds the limit of {max} slots")]
    TooManySlots {
        /// The number of slots.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a valid archived cap.
    #[error("bytes are not a valid archived cap")]
    Malformed,
    /// The cap could not be serialized.
    #[error("failed to serialize cap")]
    Encode,
}

impl From<WireError> for WireFault {
    fn from(e: WireError) -> Self {
        match e {
            WireError::PagedData => Self::PagedData,
            WireError::RefSlot { index } => Self::RefSlot { index },
            WireError::DataTooLarge { len, max } => Self::DataTooLarge { len, max },
            WireError::TooManySlots { count, max } => Self::TooManySlots { count, max },
            WireError::Malformed => Self::Malformed,
            // Encode, and any kind a later wire format adds.
            _ => Self::Encode,
        }
    }
}
