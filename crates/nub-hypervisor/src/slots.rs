//! A VM's KVM memory slots: registering guest memory (and a prepared
//! image's read-only view) with KVM, and deleting the slots again when a
//! reset maps another image.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;

use crate::{
    HypervisorError,
    error::ioctl,
    image::{PreparedImage, Slot},
    kvm::kvm,
    memory::GuestMemory,
};

/// Deletes slots `0..count` of `vm`.
pub(crate) fn delete(vm: &VmFd, count: u32) -> Result<(), HypervisorError> {
    for slot in 0..count {
        let region = kvm_userspace_memory_region {
            slot,
            ..Default::default()
        };
        // SAFETY: a zero-sized region deletes the slot; no memory is named.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(ioctl("KVM_SET_USER_MEMORY_REGION (delete)"))?;
    }
    Ok(())
}

/// Registers the memory slots of `memory` (backed by `image`, if any) on
/// `vm`, which has none, numbered from 0; returns how many there are.
///
/// With an image and `KVM_CAP_READONLY_MEM`, the image's read-only pages
/// (code, read-only data, the system pages and page tables) are backed by
/// the image's own read-only view, one mapping shared by every VM of the
/// image, in slots KVM maps read-only; the rest by `memory`, the VM's
/// private copy-on-write mapping. So the host maps an image's read-only
/// pages once for all its VMs, not once per VM, and a reset leaves KVM's
/// mappings of them alone. Otherwise one slot covers `memory` whole.
///
/// The caller keeps `memory` and `image` alive for as long as the slots
/// exist (the `Vm` drops its VM fd before both).
pub(crate) fn register(
    vm: &VmFd,
    memory: &GuestMemory,
    image: Option<&PreparedImage>,
) -> Result<u32, HypervisorError> {
    let base = memory.host_address();
    let whole = [Slot {
        start: 0,
        size: memory.size(),
        readonly: false,
    }];
    let (layout, view) = match image {
        Some(image) if kvm()?.readonly_mem => (image.slots(), image.view().host_address()),
        _ => (&whole[..], 0),
    };
    let mut count = 0;
    for s in layout {
        let (host, flags) = if s.readonly {
            (view, kvm_bindings::KVM_MEM_READONLY)
        } else {
            (base, 0)
        };
        let region = kvm_userspace_memory_region {
            slot: count,
            flags,
            guest_phys_addr: s.start,
            memory_size: s.size,
            userspace_addr: host + s.start,
        };
        // SAFETY: the region lies inside a live mapping that outlives the
        // slot: `memory`'s own (the `Vm` drops the VM fd before its
        // memory), or the image's read-only view, which lives as long as
        // the image, and the `Vm` holds the image. KVM writes guest memory
        // only through writable slots, i.e. `memory`'s mapping, which the
        // host itself accesses only atomically (see [`GuestMemory`]).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;
        count += 1;
    }
    Ok(count)
}
