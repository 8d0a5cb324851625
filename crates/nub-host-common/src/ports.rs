//! I/O ports through which the guest leaves the VM.
//!
//! Every exit is a single `out dx, eax` (or `out dx, al`): the port says why
//! the guest stopped, the value carries a small argument. Everything larger
//! travels through shared memory (the rings or the report page).

abi_enum! {
    /// Why the guest exited. The discriminant is the port number.
    pub enum ExitPort: u16 {
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
}

impl ExitPort {
    /// The port number.
    pub const fn port(self) -> u16 {
        self as u16
    }
}
