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

    fn try_from(port: u16) -> Result<Self, u16> {
        Ok(match port {
            0x0E0 => Self::Ready,
            0x0E1 => Self::Done,
            0x0E2 => Self::HostCall,
            0x0E3 => Self::Panic,
            0x0E4 => Self::Abort,
            0x0E5 => Self::Fault,
            0x0E6 => Self::Log,
            0x0E7 => Self::Park,
            0x0E8 => Self::Notify,
            other => return Err(other),
        })
    }
}

impl ExitPort {
    /// The port number.
    pub const fn port(self) -> u16 {
        self as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_round_trip() {
        for p in [
            ExitPort::Ready,
            ExitPort::Done,
            ExitPort::HostCall,
            ExitPort::Panic,
            ExitPort::Abort,
            ExitPort::Fault,
            ExitPort::Log,
            ExitPort::Park,
            ExitPort::Notify,
        ] {
            assert_eq!(ExitPort::try_from(p.port()), Ok(p));
        }
        assert_eq!(ExitPort::try_from(0x3f8), Err(0x3f8));
    }
}
