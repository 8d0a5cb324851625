//! Exit mode (`CallMode::Exit`): the caller's thread runs `KVM_RUN` for
//! each call, and the guest exits through DONE when it has answered (one
//! exit per call, plus one per host call).

use std::{sync::Arc, time::Duration};

use nub_host_common::ports::ExitPort;
use nub_hypervisor::Vm;

use crate::{
    call_guard::guarded,
    engine::Engine,
    engine::RestPoint,
    error::Result,
    exits::{Stop, awaited, classify, misplaced_port},
    guest_side::MemorySide,
    host_functions::HostFunctions,
};

/// Exit mode's engine: the VM, run on the caller's thread.
#[derive(Debug)]
pub(crate) struct ExitEngine(pub(crate) Vm);

impl Engine for ExitEngine {
    fn run_call(
        &mut self,
        side: &MemorySide,
        input_tail: usize,
        host: &mut HostFunctions,
        limit: Option<Duration>,
    ) -> Result<()> {
        run_exit(&mut self.0, side, input_tail, ExitPort::Done, host, limit)
    }

    fn exit_count(&self) -> u64 {
        self.0.exit_count()
    }

    fn stop(self: Box<Self>) -> Option<Vm> {
        Some(self.0)
    }

    /// Between calls the guest is stopped at its DONE (or READY) exit.
    fn at_rest(
        &mut self,
        _: Duration,
        f: &mut dyn FnMut(&mut Vm) -> Result<()>,
    ) -> Result<RestPoint> {
        f(&mut self.0)?;
        Ok(RestPoint::default())
    }
}

/// Runs `vm` on this thread until the guest exits through `until` (READY
/// at boot, DONE for exit-mode calls), serving host calls on the way. Any
/// other way of stopping is an error. `limit` bounds the run; a limit too
/// large to add to the current instant means no deadline.
pub(crate) fn run_exit(
    vm: &mut Vm,
    side: &MemorySide,
    input_tail: usize,
    until: ExitPort,
    host: &mut HostFunctions,
    limit: Option<Duration>,
) -> Result<()> {
    let interrupt = Arc::clone(vm.interrupt());
    guarded(&interrupt, side, limit, || {
        run_loop(vm, side, input_tail, until, host)
    })
}

/// The exit-mode run loop: `KVM_RUN` on this thread until `until`.
fn run_loop(
    vm: &mut Vm,
    side: &MemorySide,
    input_tail: usize,
    until: ExitPort,
    host: &mut HostFunctions,
) -> Result<()> {
    loop {
        match classify(vm.run()?, || side.report_error()) {
            Stop::Port(port, _) if port == until => return Ok(()),
            Stop::Port(ExitPort::HostCall, value) => {
                side.serve_host_call(value as usize, input_tail, host)?;
            }
            Stop::Port(ExitPort::Log, _) => side.drain_log()?,
            Stop::Port(other, _) => return Err(misplaced_port(other, awaited(until))),
            Stop::Failed(e) => return Err(e),
        }
    }
}
