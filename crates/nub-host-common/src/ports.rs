//! I/O ports through which the guest leaves the VM.
//!
//! Every exit is a single `out dx, eax` (or `out dx, al`): the port says why
//! the guest stopped, the value carries a small argument. Everything larger
//! travels through shared memory (the rings or the report page).

/// Why the guest exited. The discriminant is the port number.
#[repr(u16)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitPort {
    /// Init finished; the dispatcher waits for the first request.
    Ready = 0x0E0,
    /// Every request in the input ring was answered in the output ring.
    Done = 0x0E1,
    /// A host-call request is the last frame of the output ring; resume the
    /// vCPU once its response is in the input ring.
    HostCall = 0x0E2,
    /// The guest panicked; the report page holds the message.
    Panic = 0x0E3,
    /// The guest aborted on purpose; the report page holds code and message.
    Abort = 0x0E4,
    /// A CPU exception; the report page holds vector, error code, RIP, CR2.
    Fault = 0x0E5,
    /// The guest log buffer is full; drain it (see [`crate::log_buffer`])
    /// and resume the vCPU.
    Log = 0x0E6,
    /// Resident mode: the guest stopped spinning on a control-block word and
    /// waits for the host to wake it (see [`crate::resident`]).
    Park = 0x0E7,
    /// Resident mode: the guest answered a batch or made a host call while
    /// the calling thread was blocked; wake it and resume.
    Notify = 0x0E8,
}

impl TryFrom<u16> for ExitPort {
    type Error = u16;

    /// The port numbered `port`, or the number back if nub has none.
    fn try_from(port: u16) -> Result<Self, u16> {
        Self::ALL.into_iter().find(|p| p.port() == port).ok_or(port)
    }
}

impl ExitPort {
    /// Every exit port, in port order.
    pub const ALL: [ExitPort; 9] = [
        Self::Ready,
        Self::Done,
        Self::HostCall,
        Self::Panic,
        Self::Abort,
        Self::Fault,
        Self::Log,
        Self::Park,
        Self::Notify,
    ];

    /// The port number.
    pub const fn port(self) -> u16 {
        self as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where each port stands in [`ExitPort::ALL`]: exhaustive, so a new
    /// port does not compile until it is placed (and then must be listed).
    fn position(p: ExitPort) -> usize {
        match p {
            ExitPort::Ready => 0,
            ExitPort::Done => 1,
            ExitPort::HostCall => 2,
            ExitPort::Panic => 3,
            ExitPort::Abort => 4,
            ExitPort::Fault => 5,
            ExitPort::Log => 6,
            ExitPort::Park => 7,
            ExitPort::Notify => 8,
        }
    }

    #[test]
    fn all_lists_every_port_once() {
        for (i, p) in ExitPort::ALL.into_iter().enumerate() {
            assert_eq!(position(p), i, "{p:?}");
        }
    }

    #[test]
    fn every_u16_is_its_port_or_refused() {
        let mut found = 0;
        for port in 0..=u16::MAX {
            match ExitPort::try_from(port) {
                Ok(p) => {
                    assert_eq!(p.port(), port);
                    found += 1;
                }
                Err(back) => assert_eq!(back, port),
            }
        }
        assert_eq!(found, ExitPort::ALL.len(), "ports are distinct");
    }
}
