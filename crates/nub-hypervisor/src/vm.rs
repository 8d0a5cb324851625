//! [`Vm`]: one KVM virtual machine with its vCPU, guest memory and memory
//! slots; its creation (from a [`VmSetup`] or a prepared image), its reset
//! for reuse, and the entry to the run loop.

use std::sync::Arc;

use kvm_ioctls::VmFd;

use crate::{
    HypervisorError,
    error::ioctl,
    exit::VmExit,
    image::PreparedImage,
    interrupt::{self, CallGuard, VcpuInterrupt},
    kvm::kvm,
    memory::GuestMemory,
    regs::UserRegisters,
    setup::{EntryState, VmSetup, write_system_pages},
    slots,
    vcpu::Vcpu,
};

/// A KVM virtual machine with one vCPU and its guest memory's slots.
#[derive(Debug)]
pub struct Vm {
    // Field order is drop order: the vCPU and VM go before the memory they
    // map.
    vcpu: Vcpu,
    vm: VmFd,
    /// Shared with host threads that read and write guest memory while the
    /// vCPU may run (every access is atomic; see [`GuestMemory`]). The VM
    /// fd above is dropped first, so the slot never outlives its mapping,
    /// whoever holds the last `Arc`.
    memory: Arc<GuestMemory>,
    /// The image `memory` maps privately, if it was built from one.
    image: Option<Arc<PreparedImage>>,
    interrupt: Arc<VcpuInterrupt>,
    /// Memory slots registered (numbered from 0).
    slots: u32,
}

impl Vm {
    /// Creates the VM around `memory` (already holding the guest image and
    /// boot data): writes page tables, GDT and TSS, registers the memory
    /// slot and sets the vCPU up to enter the guest as `setup` says.
    pub fn new(memory: GuestMemory, setup: &VmSetup<'_>) -> Result<Self, HypervisorError> {
        Self::with_interrupt(memory, setup, Arc::new(VcpuInterrupt::new()))
    }

    /// As [`Vm::new`], with interrupt state created earlier (so handles
    /// given out before the VM existed stop its calls). The state must be
    /// fresh: not attached to another vCPU.
    pub fn with_interrupt(
        mut memory: GuestMemory,
        setup: &VmSetup<'_>,
        interrupt: Arc<VcpuInterrupt>,
    ) -> Result<Self, HypervisorError> {
        let entry = write_system_pages(&mut memory, setup)?;
        Self::create(memory, None, entry, interrupt)
    }

    /// Creates a VM whose memory maps `image` copy-on-write (no copy: the
    /// guest's writes get private pages) and whose vCPU enters it as the
    /// image says. `interrupt` as for [`Vm::with_interrupt`].
    pub fn from_image(
        image: &Arc<PreparedImage>,
        interrupt: Arc<VcpuInterrupt>,
    ) -> Result<Self, HypervisorError> {
        let memory = GuestMemory::map_file(image.fd(), image.size(), false)?;
        Self::create(memory, Some(Arc::clone(image)), image.entry(), interrupt)
    }

    fn create(
        memory: GuestMemory,
        image: Option<Arc<PreparedImage>>,
        entry: EntryState,
        interrupt: Arc<VcpuInterrupt>,
    ) -> Result<Self, HypervisorError> {
        interrupt::install_signal_handler().map_err(HypervisorError::SignalHandler)?;
        let vm = kvm()?.kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
        let slots = slots::register(&vm, &memory, image.as_deref())?;
        let vcpu = Vcpu::create(&vm, &entry)?;
        interrupt.attach();
        Ok(Self {
            vcpu,
            vm,
            memory: Arc::new(memory),
            image,
            interrupt,
            slots,
        })
    }

    /// Guest memory, shareable with other threads (every access is a
    /// bounds-checked atomic copy, sound while the vCPU runs).
    pub fn memory(&self) -> &Arc<GuestMemory> {
        &self.memory
    }

    /// The image the guest memory maps, if the VM was built from one.
    pub fn image(&self) -> Option<&Arc<PreparedImage>> {
        self.image.as_ref()
    }

    /// Number of VM exits (returns from `KVM_RUN`) since creation or the
    /// last [`Vm::reset`].
    pub fn exit_count(&self) -> u64 {
        self.vcpu.exits()
    }

    /// The shared interrupt state (for interrupt handles and deadlines).
    pub fn interrupt(&self) -> &Arc<VcpuInterrupt> {
        &self.interrupt
    }

    /// Marks the current interrupt state dropped (every handle on it is
    /// inert from now on) and gives the vCPU `interrupt`, which must be
    /// fresh (not attached to another vCPU). A reused VM gets a new state
    /// for each owner, so a handle of an earlier owner never reaches it.
    pub fn replace_interrupt(&mut self, interrupt: Arc<VcpuInterrupt>) {
        self.interrupt.mark_dropped();
        interrupt.attach();
        self.interrupt = interrupt;
    }

    /// Whether [`Vm::reset`] can bring this VM back to a fresh state: it was
    /// built from an image, its vCPU state is known (no exit or failure
    /// left it uncertain), and the fresh vCPU state could be read.
    pub fn is_resettable(&self) -> bool {
        self.vcpu.is_resettable() && self.image.is_some()
    }

    /// Brings the VM back to the state [`Vm::from_image`] creates for
    /// `image` (which must have the same size), so no state of the guest
    /// that ran before can be observed:
    ///
    /// - an operation the last exit left pending (an `out` being completed;
    ///   string I/O would be re-emulated) is finished first, by a `KVM_RUN`
    ///   with `immediate_exit` set, which completes it without running a
    ///   guest instruction;
    /// - memory: every page reads the image again. Same image: every page
    ///   the memory holds a private copy of gets the image's bytes copied
    ///   back (`GuestMemory::revert`), which keeps the host's and KVM's
    ///   mappings, so the next guest does not fault its working set in
    ///   again (a discard with `madvise(MADV_DONTNEED)` made the next boot
    ///   and call cost twice as much). Another image: the new image is
    ///   mapped over the old one at the same host address, so the KVM slot
    ///   stays valid;
    /// - vCPU: the fresh vCPU's FPU/SSE/AVX state (`KVM_SET_XSAVE`); general
    ///   registers at the image's entry, special registers (segments with
    ///   their FS/GS bases, control registers, CR2, descriptor tables) as a
    ///   new VM sets them, and no pending exception, interrupt or NMI. The
    ///   last three go through `kvm_run`'s sync area, applied by the next
    ///   `KVM_RUN` before anything else (`KVM_CAP_SYNC_REGS`; ioctls where
    ///   KVM lacks it). Not touched: MSRs other than the FS/GS bases, the
    ///   debug registers and XCR0, which only CPL 0 code can write (the
    ///   guest has none; the host's exception handlers write none of them);
    /// - the exit count starts again at 0.
    ///
    /// Needs the memory unshared (no other `Arc` on it). On failure the VM
    /// is no longer resettable and must be dropped. The interrupt state is
    /// not touched (see [`Vm::replace_interrupt`]).
    pub fn reset(&mut self, image: &Arc<PreparedImage>) -> Result<(), HypervisorError> {
        let result = self.reset_inner(image);
        if result.is_err() {
            self.vcpu.retire();
        }
        result
    }

    fn reset_inner(&mut self, image: &Arc<PreparedImage>) -> Result<(), HypervisorError> {
        if !self.is_resettable() {
            return Err(HypervisorError::NotResettable(
                "its vCPU state is uncertain or was never read",
            ));
        }
        if image.size() != self.memory.size() {
            return Err(HypervisorError::NotResettable(
                "the image is not the size of its memory",
            ));
        }
        self.vcpu.complete_pending_exit()?;
        let same = self.image.as_ref().is_some_and(|i| Arc::ptr_eq(i, image));
        let memory = Arc::get_mut(&mut self.memory).ok_or(HypervisorError::NotResettable(
            "its guest memory is still shared",
        ))?;
        if same {
            memory.revert(image.view())?;
        } else {
            // The old slots point into the old image's read-only view.
            slots::delete(&self.vm, self.slots)?;
            self.slots = 0;
            memory.remap_file(image.fd())?;
            self.slots = slots::register(&self.vm, memory, Some(image))?;
            self.image = Some(Arc::clone(image));
        }
        self.vcpu.reset(image.entry())
    }

    /// The guest's CPL 3 registers where it stopped (an `out`, whose
    /// instruction is finished first), for a persisted image: resuming a
    /// VM at them ([`PreparedImage::build_resumed`]) continues the guest
    /// as this VM's next `KVM_RUN` would. Fails when the vCPU state is
    /// uncertain (the last exit was not an `out`).
    pub fn user_registers(&mut self) -> Result<UserRegisters, HypervisorError> {
        self.vcpu.user_registers()
    }

    /// Starts a call: from now until the guard drops, `kill` can cancel
    /// [`Vm::run`]. Returns the guard and the call's generation.
    pub fn begin_call(&self) -> (CallGuard, u64) {
        CallGuard::begin(&self.interrupt)
    }

    /// Runs the vCPU until it exits for a reason the caller must handle.
    /// Spurious `EINTR`s (a stale interrupt signal) are retried; a pending
    /// cancel ends the run with [`HypervisorError::Canceled`].
    pub fn run(&mut self) -> Result<VmExit, HypervisorError> {
        self.vcpu.run(&self.interrupt)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.interrupt.mark_dropped();
    }
}
