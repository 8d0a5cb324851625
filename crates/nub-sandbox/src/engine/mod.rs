//! How a booted guest's calls run: one engine per call mode behind one
//! interface ([`Engine`]). A new call mode is one module here plus its
//! `CallMode` variant; [`start`] is the one place that picks the engine.
//!
//! - [`exit`]: the caller's thread runs `KVM_RUN` for each call;
//! - [`resident`]: the vCPU stays in the guest on a thread of its own, and
//!   calls cross through words in shared memory (docs/resident.md);
//! - [`Halted`]: a poisoned sandbox's VM, which nothing runs again.

use std::time::Duration;

use nub_hypervisor::Vm;

use crate::{
    config::CallMode, error::HyperlightError, error::Result, guest_side::MemorySide,
    host_functions::HostFunctions,
};

pub(crate) mod exit;
pub(crate) mod resident;

/// A call mode's engine: it owns the VM (or the thread that runs it).
pub(crate) trait Engine: std::fmt::Debug + Send {
    /// Runs the requests queued in the input ring to completion, serving
    /// host calls on the way; `input_tail` is where host-call responses go
    /// and `limit` bounds the call.
    fn run_call(
        &mut self,
        side: &MemorySide,
        input_tail: usize,
        host: &mut HostFunctions,
        limit: Option<Duration>,
    ) -> Result<()>;

    /// VM exits since the VM was created.
    fn exit_count(&self) -> u64;

    /// The guest failed outside a call (its engine stopped it): the
    /// sandbox is as good as poisoned.
    fn failed(&self) -> bool {
        false
    }

    /// Stops running the guest, for good, and gives the VM back (`None`
    /// if it was lost with a thread that panicked).
    fn stop(self: Box<Self>) -> Option<Vm>;

    /// Runs `f` on the VM while the guest rests between calls and nothing
    /// runs it (exit mode: always between calls; resident mode: once the
    /// guest has parked, waiting for it at most `wait`), for a persisted
    /// image. Returns what the engine resumes with ([`RestPoint`]).
    fn at_rest(
        &mut self,
        wait: Duration,
        f: &mut dyn FnMut(&mut Vm) -> Result<()>,
    ) -> Result<RestPoint>;
}

/// What a call mode's host side must resume a rested guest with, beside
/// the guest's memory and registers: the resident engine's sequence
/// numbers (the guest remembers the last batch it answered). Zero in exit
/// mode, which keeps no state between calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RestPoint {
    /// The last call's sequence number.
    pub(crate) seq: u64,
    /// The last host call's sequence number.
    pub(crate) last_hostcall: u64,
}

/// Starts the engine of `mode` for a booted `vm`, or for one resumed from
/// a persisted image at `rest`.
pub(crate) fn start(
    vm: Vm,
    side: &MemorySide,
    mode: CallMode,
    rest: RestPoint,
) -> Result<Box<dyn Engine>> {
    Ok(match mode {
        CallMode::Exit => Box::new(exit::ExitEngine(vm)),
        CallMode::Resident { spin } => {
            Box::new(resident::Resident::start(vm, side.clone(), spin, rest)?)
        }
    })
}

/// A poisoned sandbox's VM: its vCPU thread (if any) is joined and nothing
/// runs it again; it waits here for the pool.
#[derive(Debug)]
pub(crate) struct Halted(pub(crate) Vm);

impl Engine for Halted {
    fn run_call(
        &mut self,
        _: &MemorySide,
        _: usize,
        _: &mut HostFunctions,
        _: Option<Duration>,
    ) -> Result<()> {
        Err(HyperlightError::PoisonedSandbox)
    }

    fn exit_count(&self) -> u64 {
        self.0.exit_count()
    }

    fn stop(self: Box<Self>) -> Option<Vm> {
        Some(self.0)
    }

    fn at_rest(
        &mut self,
        _: Duration,
        _: &mut dyn FnMut(&mut Vm) -> Result<()>,
    ) -> Result<RestPoint> {
        Err(HyperlightError::PoisonedSandbox)
    }
}
