//! Guest log records: draining the log buffer
//! (`nub_host_common::log_buffer`) and emitting each record through the
//! `log` crate with target [`GUEST_LOG_TARGET`] (docs/guest-logs.md).

use nub_host_common::log_buffer::{self, LogLevel};

use crate::{
    error::{HyperlightError, Result, Violation},
    guest_side::{MemorySide, memory_error},
};

/// The `log` target of every record a guest logs.
pub const GUEST_LOG_TARGET: &str = "nub::guest";

/// Emits one guest record through the `log` crate: target
/// [`GUEST_LOG_TARGET`], the guest's level, and a message that names the
/// sandbox and the guest module the record came from.
fn emit_guest_record(sandbox: u64, record: &log_buffer::LogRecord<'_>) {
    let level = match record.level {
        LogLevel::Error => log::Level::Error,
        LogLevel::Warn => log::Level::Warn,
        LogLevel::Info => log::Level::Info,
        LogLevel::Debug => log::Level::Debug,
        LogLevel::Trace => log::Level::Trace,
    };
    if !log::log_enabled!(target: GUEST_LOG_TARGET, level) {
        return;
    }
    let target = String::from_utf8_lossy(record.target);
    let message = String::from_utf8_lossy(record.message);
    log::log!(target: GUEST_LOG_TARGET, level, "[sandbox {sandbox}] {target}: {message}");
}

impl MemorySide {
    /// Collects the guest's log records (see `nub_host_common::log_buffer`)
    /// and emits each through the `log` crate with target `nub::guest`,
    /// then empties the buffer. The header is copied once and checked, the
    /// records are copied out once and parsed from that private copy; a
    /// malformed buffer is a protocol violation (after the records before
    /// the bad one were emitted).
    pub(crate) fn drain_log(&self) -> Result<()> {
        let region = self.layout.log_buffer;
        // The common case, checked without the lock: nothing logged (write
        // and dropped both 0). A drain on the other thread that races this
        // is serialised below, where the header is read again.
        let mut used = [0u8; 16];
        self.memory
            .read(region.start, &mut used)
            .map_err(memory_error)?;
        if used == [0u8; 16] {
            return Ok(());
        }
        let _serial = self.log_lock.lock().unwrap_or_else(|e| e.into_inner());
        let size = region.size as usize;
        let mut header = [0u8; log_buffer::LOG_HEADER_SIZE];
        self.memory
            .read(region.start, &mut header)
            .map_err(memory_error)?;
        let checked = log_buffer::read_header(&header, size);
        // Reset the header unless it is already empty (the common case: no
        // write, so the cache line stays shared with the guest).
        if header
            .get(..16)
            .is_none_or(|used| used.iter().any(|&b| b != 0))
        {
            let mut cleared = [0u8; 16];
            log_buffer::reset(&mut cleared);
            self.memory
                .write(region.start, &cleared)
                .map_err(memory_error)?;
        }
        let (write, dropped) =
            checked.map_err(|e| HyperlightError::ProtocolViolation(Violation::Log(e.into())))?;
        if write > 0 {
            let mut data = vec![0u8; write];
            self.memory
                .read(region.start + log_buffer::LOG_HEADER_SIZE as u64, &mut data)
                .map_err(memory_error)?;
            for record in log_buffer::parse_records(&data) {
                let record = record
                    .map_err(|e| HyperlightError::ProtocolViolation(Violation::Log(e.into())))?;
                emit_guest_record(self.id, &record);
            }
        }
        if dropped > 0 {
            log::warn!(target: GUEST_LOG_TARGET, "[sandbox {}] the guest dropped {dropped} log records", self.id);
        }
        Ok(())
    }
}
