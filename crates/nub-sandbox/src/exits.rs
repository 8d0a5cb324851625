//! What a VM exit means for a call: the one classification every run loop
//! (exit mode's, the resident vCPU thread's, a resident call the caller
//! runs itself) starts from, and the typed error of every exit that is not
//! a nub port. Pure functions over `VmExit`, unit-tested without KVM.

use nub_host_common::ports::ExitPort;
use nub_hypervisor::VmExit;

use crate::error::{HyperlightError, Violation};

/// The error a stop of the vCPU other than a nub exit port means.
pub(crate) fn exit_error(exit: VmExit) -> HyperlightError {
    match exit {
        VmExit::Shutdown => HyperlightError::TripleFault,
        VmExit::Mmio { addr, write } => HyperlightError::MemoryAccessViolation { addr, write },
        VmExit::Halt => HyperlightError::UnexpectedExit("the guest halted".into()),
        VmExit::IoIn { port } => HyperlightError::UnexpectedPort { port, value: 0 },
        VmExit::InternalError { suberror } => HyperlightError::UnexpectedExit(format!(
            "KVM internal error (suberror {suberror}): an instruction KVM could not emulate"
        )),
        VmExit::FailEntry { reason } => HyperlightError::UnexpectedExit(format!(
            "VM entry failed (hardware reason {reason:#x})"
        )),
        VmExit::IoOut { port, value } => HyperlightError::UnexpectedPort { port, value },
        VmExit::Other(name) => HyperlightError::UnexpectedExit(name.into()),
        other => HyperlightError::UnexpectedExit(format!("{other:?}")),
    }
}

/// What a VM exit asks of the host: the one classification every run loop
/// (exit mode's, the resident vCPU thread's, a resident call the caller
/// runs itself) starts from.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The guest exited through a nub port that reports no failure, with
    /// the value it wrote.
    Port(ExitPort, u32),
    /// The run failed: a failure the guest reported (decoded from the
    /// report page), an unknown port, or a stop that is not a port write.
    Failed(HyperlightError),
}

/// Classifies `exit` (see [`Stop`]); `report` decodes the failure the
/// guest wrote to its report page, for the ports that announce one.
pub(crate) fn classify(exit: VmExit, report: impl FnOnce() -> HyperlightError) -> Stop {
    match exit {
        VmExit::IoOut { port, value } => match ExitPort::try_from(port) {
            Ok(ExitPort::Panic | ExitPort::Abort | ExitPort::Fault) => Stop::Failed(report()),
            Ok(port) => Stop::Port(port, value),
            Err(port) => Stop::Failed(HyperlightError::UnexpectedPort { port, value }),
        },
        other => Stop::Failed(exit_error(other)),
    }
}

/// The error for a nub port the guest has no business using where it did.
pub(crate) fn misplaced_port(port: ExitPort, waiting_for: &'static str) -> HyperlightError {
    HyperlightError::ProtocolViolation(Violation::MisplacedPort {
        port: port.port(),
        waiting_for,
    })
}

/// What a run loop that ends at `until` waits for, as a violation says it.
pub(crate) fn awaited(until: ExitPort) -> &'static str {
    match until {
        ExitPort::Ready => "READY",
        ExitPort::Done => "DONE",
        _ => "the end of the run",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(port: u16, value: u32) -> VmExit {
        VmExit::IoOut { port, value }
    }

    #[test]
    fn failure_ports_decode_the_report_and_the_others_carry_their_value() {
        for &port in ExitPort::ALL {
            let reported = std::cell::Cell::new(false);
            let stop = classify(out(port as u16, 42), || {
                reported.set(true);
                HyperlightError::GuestAborted {
                    code: 7,
                    message: "from the report".into(),
                }
            });
            match port {
                ExitPort::Panic | ExitPort::Abort | ExitPort::Fault => {
                    assert!(
                        matches!(
                            stop,
                            Stop::Failed(HyperlightError::GuestAborted { code: 7, .. })
                        ),
                        "{port:?}: {stop:?}"
                    );
                    assert!(reported.get());
                }
                _ => {
                    assert!(
                        matches!(stop, Stop::Port(p, 42) if p == port),
                        "{port:?}: {stop:?}"
                    );
                    assert!(!reported.get(), "{port:?} reads no report");
                }
            }
        }
    }

    #[test]
    fn an_unknown_port_is_typed_with_its_value() {
        for port in [0u16, 0x80, 0xDF, 0xE9, 0xFFFF] {
            let stop = classify(out(port, 5), || unreachable!("no report"));
            assert!(
                matches!(stop, Stop::Failed(HyperlightError::UnexpectedPort { port: p, value: 5 }) if p == port),
                "{port:#x}: {stop:?}"
            );
        }
    }

    #[test]
    fn stops_that_are_not_port_writes_are_typed() {
        type Expected = fn(&HyperlightError) -> bool;
        let cases: [(VmExit, Expected); 5] = [
            (VmExit::Shutdown, |e| {
                matches!(e, HyperlightError::TripleFault)
            }),
            (
                VmExit::Mmio {
                    addr: 0x1000,
                    write: true,
                },
                |e| {
                    matches!(
                        e,
                        HyperlightError::MemoryAccessViolation {
                            addr: 0x1000,
                            write: true
                        }
                    )
                },
            ),
            (VmExit::IoIn { port: 0x60 }, |e| {
                matches!(
                    e,
                    HyperlightError::UnexpectedPort {
                        port: 0x60,
                        value: 0
                    }
                )
            }),
            (VmExit::Halt, |e| {
                matches!(e, HyperlightError::UnexpectedExit(_))
            }),
            (
                VmExit::InternalError { suberror: 1 },
                |e| matches!(e, HyperlightError::UnexpectedExit(m) if m.contains("suberror 1")),
            ),
        ];
        for (exit, expected) in cases {
            let shown = format!("{exit:?}");
            match classify(exit, || unreachable!("no report")) {
                Stop::Failed(e) => assert!(expected(&e), "{shown}: {e:?}"),
                other => panic!("{shown}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_misplaced_port_names_itself_and_what_was_awaited() {
        let e = misplaced_port(ExitPort::Park, "DONE");
        assert!(
            matches!(
                &e,
                HyperlightError::ProtocolViolation(Violation::MisplacedPort {
                    port: 0xE7,
                    waiting_for: "DONE"
                })
            ),
            "{e:?}"
        );
    }
}
