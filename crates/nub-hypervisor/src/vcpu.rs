//! A VM's one vCPU: its creation, the run loop (every `KVM_RUN` goes
//! through [`kvm_run`]), and the state of a fresh vCPU, captured once per
//! process and written back by every reset.

use std::{
    os::fd::AsRawFd,
    ptr::NonNull,
    sync::{OnceLock, atomic::Ordering},
};

use kvm_bindings::{
    KVM_SYNC_X86_EVENTS, KVM_SYNC_X86_REGS, KVM_SYNC_X86_SREGS, Xsave, kvm_sregs, kvm_sync_regs,
    kvm_vcpu_events,
};
use kvm_ioctls::{Cap, VcpuFd, VmFd};

use crate::{
    HypervisorError, cpu,
    error::ioctl,
    exit::{self, VmExit},
    interrupt::{self, RunWindow, VcpuInterrupt},
    kvm::kvm,
    regs::UserRegisters,
    setup::EntryState,
};

/// `KVM_RUN` = `_IO(KVMIO, 0x80)` (linux/kvm.h). kvm-ioctls keeps its own
/// constant private; nub issues the ioctl itself so that no Rust reference
/// to `kvm_run` exists while the interrupt handler may write to it (see
/// [`crate::interrupt`]).
const KVM_RUN: libc::c_ulong = ((kvm_bindings::KVMIO as libc::c_ulong) << 8) | 0x80;

/// Issues one `KVM_RUN` on `vcpu`: the only place nub does.
///
/// # Safety
///
/// No Rust reference into `vcpu`'s `kvm_run` page may be live during the
/// call, since the kernel writes the page meanwhile; only atomic views of
/// its `immediate_exit` byte ([`interrupt::immediate_exit`]) may be, as
/// the kernel only reads that byte (with `READ_ONCE`).
unsafe fn kvm_run(vcpu: &VcpuFd) -> Result<(), kvm_ioctls::Error> {
    // SAFETY: KVM_RUN on a vCPU fd takes no argument, so no user memory is
    // named; the kernel writes only the vCPU's kvm_run mapping, which
    // `vcpu` keeps mapped past the call and which no Rust reference
    // aliases meanwhile (the caller's contract).
    let rc = unsafe { libc::ioctl(vcpu.as_raw_fd(), KVM_RUN, 0) };
    if rc < 0 {
        Err(kvm_ioctls::Error::last())
    } else {
        Ok(())
    }
}

/// The state of a vCPU that has never run, as KVM creates it: read once
/// per process from the first vCPU (before it runs) and written back by
/// every [`crate::Vm::reset`]. The same for every vCPU nub creates (same
/// CPUID, same kernel).
struct FreshVcpu {
    /// `KVM_GET_XSAVE2`: x87, SSE, AVX… all in their initial state.
    xsave: Xsave,
    /// Bytes of `xsave` KVM may read (its `KVM_CAP_XSAVE2` size).
    xsave_size: usize,
    events: kvm_vcpu_events,
    /// The special registers before nub sets them up (long mode is then
    /// applied on top, as for a new vCPU).
    sregs: kvm_sregs,
}

impl std::fmt::Debug for FreshVcpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FreshVcpu")
            .field("xsave_size", &self.xsave_size)
            .finish_non_exhaustive()
    }
}

impl FreshVcpu {
    /// Reads the state of `vcpu`, which must never have run.
    fn capture(vm: &VmFd, vcpu: &VcpuFd) -> Option<Self> {
        let xsave_size = xsave_size(vm)?;
        let entries = (xsave_size - std::mem::size_of::<kvm_bindings::kvm_xsave>())
            .div_ceil(std::mem::size_of::<u32>());
        let mut xsave = Xsave::new(entries).ok()?;
        // SAFETY: `xsave` holds `xsave_size` bytes, the size KVM reports
        // for this VM's xsave state, so KVM_GET_XSAVE2 writes inside it.
        unsafe { vcpu.get_xsave2(&mut xsave) }.ok()?;
        Some(Self {
            xsave,
            xsave_size,
            events: vcpu.get_vcpu_events().ok()?,
            sregs: vcpu.get_sregs().ok()?,
        })
    }
}

/// The fresh vCPU state, captured from `vcpu` (never run) if no vCPU has
/// been captured yet. `None` when it could not be read: VMs are then not
/// reusable.
fn fresh_vcpu(vm: &VmFd, vcpu: &VcpuFd) -> Option<&'static FreshVcpu> {
    static FRESH: OnceLock<Option<FreshVcpu>> = OnceLock::new();
    FRESH.get_or_init(|| FreshVcpu::capture(vm, vcpu)).as_ref()
}

/// The xsave size KVM uses for this VM's vCPUs (`KVM_CAP_XSAVE2`), or
/// `None` when KVM lacks `KVM_GET_XSAVE2`.
fn xsave_size(vm: &VmFd) -> Option<usize> {
    usize::try_from(vm.check_extension_int(Cap::Xsave2))
        .ok()
        .filter(|&n| n > 0)
        .map(|n| n.max(std::mem::size_of::<kvm_bindings::kvm_xsave>()))
}

/// The registers and special registers that make a vCPU enter the guest
/// as `entry` says, long mode applied on top of `base` (a new vCPU's
/// special registers): what vCPU creation and [`Vcpu::reset`] both set.
fn entry_registers(
    entry: &EntryState,
    mut base: kvm_sregs,
    umip: bool,
) -> (kvm_bindings::kvm_regs, kvm_sregs) {
    cpu::long_mode_sregs(&mut base, entry.cr3, entry.user_mode, umip);
    let regs = match &entry.resume {
        Some(user) => cpu::resume_regs(user),
        None => cpu::entry_regs(
            entry.entry,
            entry.stack_pointer,
            entry.boot_info,
            entry.user_mode,
        ),
    };
    (regs, base)
}

/// A VM's vCPU and what is known about its state.
#[derive(Debug)]
pub(crate) struct Vcpu {
    fd: VcpuFd,
    /// Size of the vCPU's `kvm_run` mapping (bounds the I/O data offset).
    run_size: usize,
    /// Returns from `KVM_RUN` since creation or the last reset.
    exits: u64,
    /// The state to restore on reset; `None` if it could not be read, or
    /// if this VM's xsave state is larger than the captured copy.
    fresh: Option<&'static FreshVcpu>,
    /// Whether the vCPU's state is known well enough to reset it: cleared
    /// by any exit other than an `out` or a cancel, any failed ioctl, and
    /// any failed reset ([`Vcpu::retire`]).
    resettable: bool,
    /// The last `KVM_RUN` returned an exit whose operation KVM finishes at
    /// the start of the next one (an `out`). Any `KVM_RUN` finishes it.
    exit_pending: bool,
}

impl Vcpu {
    /// Creates vCPU 0 of `vm` with the guest CPUID, set up to enter the
    /// guest as `entry` says.
    pub(crate) fn create(vm: &VmFd, entry: &EntryState) -> Result<Self, HypervisorError> {
        let system = kvm()?;
        let fd = vm.create_vcpu(0).map_err(ioctl("KVM_CREATE_VCPU"))?;
        fd.set_cpuid2(&system.cpuid)
            .map_err(ioctl("KVM_SET_CPUID2"))?;
        // Checked once here, not on every reset: KVM_SET_XSAVE reads this
        // VM's xsave size from the fresh copy, which must hold that much.
        let fresh =
            fresh_vcpu(vm, &fd).filter(|f| xsave_size(vm).is_some_and(|size| size <= f.xsave_size));
        let base = fd.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
        let (regs, sregs) = entry_registers(entry, base, system.umip);
        fd.set_sregs(&sregs).map_err(ioctl("KVM_SET_SREGS"))?;
        fd.set_regs(&regs).map_err(ioctl("KVM_SET_REGS"))?;
        Ok(Self {
            fd,
            run_size: system.run_size,
            exits: 0,
            fresh,
            resettable: true,
            exit_pending: false,
        })
    }

    /// Returns from `KVM_RUN` since creation or the last reset.
    pub(crate) fn exits(&self) -> u64 {
        self.exits
    }

    /// Whether [`Vcpu::reset`] can bring the vCPU back to a fresh state:
    /// its state is known and the fresh state could be read.
    pub(crate) fn is_resettable(&self) -> bool {
        self.resettable && self.fresh.is_some()
    }

    /// Marks the vCPU's state uncertain: it is never reset again.
    pub(crate) fn retire(&mut self) {
        self.resettable = false;
    }

    /// Runs the vCPU until it exits for a reason the caller must handle.
    /// Spurious `EINTR`s (a stale interrupt signal) are retried; a cancel
    /// pending on `interrupt` ends the run with
    /// [`HypervisorError::Canceled`].
    pub(crate) fn run(&mut self, interrupt: &VcpuInterrupt) -> Result<VmExit, HypervisorError> {
        loop {
            // The window is closed here, so this short-lived `&mut kvm_run`
            // cannot meet a write from the interrupt handler.
            let run = NonNull::from(self.fd.get_kvm_run());
            let result = {
                // SAFETY: `run` is this vCPU's mapping, kept alive by
                // `&mut self` until the window drops at the end of this
                // block, and nothing in the block references the page: it
                // only checks the pending flag and issues the ioctl.
                let _window = unsafe { RunWindow::open(run) };
                if let Some(reason) = interrupt.pending() {
                    return Err(HypervisorError::Canceled(reason));
                }
                // SAFETY: the reference `run` came from has ended and the
                // open window only makes the handler store to
                // `immediate_exit` atomically, so no Rust reference into
                // the page is live.
                unsafe { kvm_run(&self.fd) }
            };
            self.exits += 1;
            // This KVM_RUN finished what the last exit left pending.
            self.exit_pending = false;
            match result {
                Ok(()) => {}
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
                Err(e) => {
                    self.resettable = false;
                    return Err(ioctl("KVM_RUN")(e));
                }
            }
            // SAFETY: the window is closed (the handler no longer writes),
            // KVM_RUN has returned (the kernel no longer writes), and we hold
            // `&mut self`, so nothing else references the mapping.
            if let Some(exit) = unsafe { exit::decode(run, self.run_size) } {
                // Only an `out` leaves the vCPU in a state a reset is known
                // to undo (see `Vm::reset`); anything else retires the VM.
                if !matches!(exit, VmExit::IoOut { .. }) {
                    self.resettable = false;
                }
                self.exit_pending = true;
                return Ok(exit);
            }
        }
    }

    /// Finishes whatever the last exit left for the next `KVM_RUN` to
    /// complete (an `out`'s instruction skip), if anything: KVM does that
    /// first, then sees `immediate_exit` and returns `EINTR` without
    /// entering the guest (the kernel's KVM API documentation,
    /// "immediate_exit").
    pub(crate) fn complete_pending_exit(&mut self) -> Result<(), HypervisorError> {
        if !self.exit_pending {
            return Ok(());
        }
        let run = NonNull::from(self.fd.get_kvm_run());
        // SAFETY: `run` is this vCPU's live mapping; the reference above has
        // ended and `&mut self` keeps any other from being made, so these
        // atomic stores overlap no other access; no run window is open on
        // this thread for it (the handler never writes here).
        let immediate_exit = unsafe { interrupt::immediate_exit(run) };
        immediate_exit.store(1, Ordering::SeqCst);
        // SAFETY: the only view into the page is the atomic one above (see
        // there), which `kvm_run` allows.
        let result = unsafe { kvm_run(&self.fd) };
        immediate_exit.store(0, Ordering::SeqCst);
        match result {
            Err(e) if e.errno() == libc::EINTR => {
                self.exit_pending = false;
                Ok(())
            }
            _ => Err(HypervisorError::NotResettable(
                "KVM_RUN with immediate_exit did not return EINTR",
            )),
        }
    }

    /// The guest's CPL 3 registers where it stopped, for a persisted image:
    /// the last exit must be an `out` (or a cancel), whose instruction is
    /// finished first, so RIP is past it and resuming there continues the
    /// guest as the next `KVM_RUN` would have.
    pub(crate) fn user_registers(&mut self) -> Result<UserRegisters, HypervisorError> {
        if !self.resettable {
            return Err(HypervisorError::NotResettable(
                "its vCPU state is uncertain",
            ));
        }
        self.complete_pending_exit()?;
        let regs = self.fd.get_regs().map_err(ioctl("KVM_GET_REGS"))?;
        Ok(cpu::user_registers(&regs))
    }

    /// Brings the vCPU back to its fresh state, entering the guest as
    /// `entry` says (see [`crate::Vm::reset`] for what that covers), and
    /// restarts the exit count. Call [`Vcpu::complete_pending_exit`] first.
    pub(crate) fn reset(&mut self, entry: EntryState) -> Result<(), HypervisorError> {
        let fresh = self.fresh.ok_or(HypervisorError::NotResettable(
            "its vCPU state is uncertain or was never read",
        ))?;
        let system = kvm()?;
        // SAFETY: `fresh.xsave` holds `fresh.xsave_size` bytes, at least
        // what KVM reads for this VM's vCPU (checked when the vCPU was
        // created, or `fresh` would be `None`).
        unsafe { self.fd.set_xsave2(&fresh.xsave) }.map_err(ioctl("KVM_SET_XSAVE"))?;
        let (regs, sregs) = entry_registers(&entry, fresh.sregs, system.umip);
        if system.sync_regs {
            // Handed to the next KVM_RUN, which sets them (as the three
            // ioctls below would) before it does anything else; no window is
            // open and `&mut self` rules out any other reference to the page.
            let run = self.fd.get_kvm_run();
            run.s.regs = kvm_sync_regs {
                regs,
                sregs,
                events: fresh.events,
            };
            run.kvm_dirty_regs =
                u64::from(KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS | KVM_SYNC_X86_EVENTS);
        } else {
            self.fd.set_regs(&regs).map_err(ioctl("KVM_SET_REGS"))?;
            self.fd.set_sregs(&sregs).map_err(ioctl("KVM_SET_SREGS"))?;
            self.fd
                .set_vcpu_events(&fresh.events)
                .map_err(ioctl("KVM_SET_VCPU_EVENTS"))?;
        }
        self.exits = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_run_ioctl_number_matches_linux() {
        // _IO(0xAE, 0x80) from linux/kvm.h.
        assert_eq!(KVM_RUN, 0xAE80);
    }
}
