//! The guest logger: the `log` crate's macros write records into the log
//! buffer that the host collects (see `nub_host_common::log_buffer`).
//!
//! A record costs no VM exit: it is formatted into a bounded stack buffer
//! (messages are cut at [`log_buffer::MAX_MESSAGE_LEN`] bytes) and appended
//! to the buffer in guest memory. The host reads the buffer when the vCPU
//! stops. Only a full buffer costs one exit ([`ExitPort::Log`]): the host
//! drains it and resumes, and the record is stored on the second try (cut to
//! fit if it is larger than the whole buffer). If even that fails the record
//! is dropped and counted, and the host reports the count.
//!
//! The host chooses the most verbose level per sandbox (BootInfo's
//! `log_level`); [`init`] makes it `log`'s max level, so disabled records
//! cost one comparison.
//!
//! [`ExitPort::Log`]: nub_host_common::ports::ExitPort::Log

use core::fmt::Write;

use nub_host_common::{
    boot::BootInfo,
    log_buffer::{self, Appended, LogLevel},
};

use crate::report::BoundedWriter;

/// Where records go: the buffer, and a way to have the host empty it.
pub trait LogSink {
    /// Runs `f` over the whole log region (header included). The slice must
    /// be the only reference to the region while `f` runs.
    fn with_region(&mut self, f: &mut dyn FnMut(&mut [u8]) -> Appended) -> Appended;
    /// Asks the host to collect and empty the buffer (one exit).
    fn drain(&mut self);
}

/// Maps a `log` level to the ABI's.
pub fn abi_level(level: log::Level) -> LogLevel {
    match level {
        log::Level::Error => LogLevel::Error,
        log::Level::Warn => LogLevel::Warn,
        log::Level::Info => LogLevel::Info,
        log::Level::Debug => LogLevel::Debug,
        log::Level::Trace => LogLevel::Trace,
    }
}

/// The `log` max level for BootInfo's `log_level` (0 off … 5 trace; larger
/// values mean trace).
pub fn level_filter(raw: u64) -> log::LevelFilter {
    match raw {
        0 => log::LevelFilter::Off,
        1 => log::LevelFilter::Error,
        2 => log::LevelFilter::Warn,
        3 => log::LevelFilter::Info,
        4 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// Stores one record: append; if the buffer is full, drain once and append
/// again; if it is still full, count the record as dropped. Returns what
/// happened to the record.
pub fn store(sink: &mut dyn LogSink, level: LogLevel, target: &[u8], message: &[u8]) -> Appended {
    let mut append = |region: &mut [u8]| log_buffer::append(region, level, target, message);
    match sink.with_region(&mut append) {
        Appended::Full => {}
        done => return done,
    }
    sink.drain();
    match sink.with_region(&mut append) {
        Appended::Full => {
            sink.with_region(&mut |region| {
                log_buffer::count_dropped(region);
                Appended::Full
            });
            Appended::Full
        }
        done => done,
    }
}

/// Formats `args` into `buf` (cut at its size); returns the bytes written.
pub fn format_message<'b>(buf: &'b mut [u8], args: &core::fmt::Arguments<'_>) -> &'b [u8] {
    let mut w = BoundedWriter::new(buf);
    // A full buffer cuts the message; BoundedWriter never fails.
    let _ = w.write_fmt(*args);
    let len = w.len();
    buf.get(..len).unwrap_or(&[])
}

/// The log region as BootInfo describes it.
#[cfg(nub_bare)]
#[derive(Debug, Clone, Copy)]
struct Region {
    va: u64,
    size: u64,
}

#[cfg(nub_bare)]
static REGION: spin::Once<Region> = spin::Once::new();

/// The logger `log` calls; it serialises records with a spin lock (the
/// guest is single-threaded, the lock only makes the static sound).
#[cfg(nub_bare)]
struct BufferLogger {
    lock: spin::Mutex<()>,
}

#[cfg(nub_bare)]
static LOGGER: BufferLogger = BufferLogger {
    lock: spin::Mutex::new(()),
};

#[cfg(nub_bare)]
struct KernelSink(Region);

#[cfg(nub_bare)]
impl LogSink for KernelSink {
    fn with_region(&mut self, f: &mut dyn FnMut(&mut [u8]) -> Appended) -> Appended {
        // SAFETY: `va`/`size` come from the BootInfo the host wrote: a
        // mapped, RW region of guest memory that no Rust object of the guest
        // owns. The slice lives only for this call, under the logger's lock,
        // so it is the only reference to the region; the host touches the
        // region only while the vCPU is stopped in an exit, and no exit
        // happens while the slice is alive (`drain` runs between two calls).
        let region =
            unsafe { core::slice::from_raw_parts_mut(self.0.va as *mut u8, self.0.size as usize) };
        f(region)
    }

    fn drain(&mut self) {
        crate::io::exit(nub_host_common::ports::ExitPort::Log, 0);
    }
}

#[cfg(nub_bare)]
impl log::Log for BufferLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let Some(region) = REGION.get().copied() else {
            return;
        };
        let mut buf = [0u8; log_buffer::MAX_MESSAGE_LEN];
        let message = format_message(&mut buf, record.args());
        let _guard = self.lock.lock();
        store(
            &mut KernelSink(region),
            abi_level(record.level()),
            record.target().as_bytes(),
            message,
        );
    }

    fn flush(&self) {}
}

/// Installs the logger over the log buffer `info` describes, at the level
/// the host asked for. Called once by the kernel's entry, before the guest's
/// init.
#[cfg(nub_bare)]
pub fn init(info: &BootInfo) {
    let level = level_filter(info.log_level);
    if level == log::LevelFilter::Off || info.log_size < log_buffer::LOG_HEADER_SIZE as u64 {
        log::set_max_level(log::LevelFilter::Off);
        return;
    }
    REGION.call_once(|| Region {
        va: info.log_va,
        size: info.log_size,
    });
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

/// Off the bare-metal target there is no log buffer: `init` does nothing.
#[cfg(not(nub_bare))]
pub fn init(_info: &BootInfo) {}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::{vec, vec::Vec};

    /// A host buffer standing in for the region; `drain` plays the host.
    struct TestSink {
        region: Vec<u8>,
        drained: Vec<Vec<u8>>,
    }

    impl TestSink {
        fn new(size: usize) -> Self {
            Self {
                region: vec![0u8; size],
                drained: Vec::new(),
            }
        }

        fn messages(region: &[u8]) -> Vec<Vec<u8>> {
            let (write, _) = log_buffer::read_header(region, region.len()).unwrap();
            let data = &region[log_buffer::LOG_HEADER_SIZE..][..write];
            log_buffer::parse_records(data)
                .map(|r| r.unwrap().message.to_vec())
                .collect()
        }
    }

    impl LogSink for TestSink {
        fn with_region(&mut self, f: &mut dyn FnMut(&mut [u8]) -> Appended) -> Appended {
            f(&mut self.region)
        }

        fn drain(&mut self) {
            self.drained.extend(Self::messages(&self.region));
            log_buffer::reset(&mut self.region);
        }
    }

    #[test]
    fn full_buffer_drains_once_and_keeps_order() {
        // 64 header + 40 data: three 12-byte records fit, the fourth drains.
        let mut sink = TestSink::new(104);
        for i in 0..7u8 {
            let msg = [b'0' + i; 8];
            assert_eq!(
                store(&mut sink, LogLevel::Info, b"", &msg),
                Appended::Stored
            );
        }
        let mut all = sink.drained.clone();
        all.extend(TestSink::messages(&sink.region));
        let expected: Vec<Vec<u8>> = (0..7u8).map(|i| vec![b'0' + i; 8]).collect();
        assert_eq!(all, expected);
        assert_eq!(sink.drained.len(), 6, "two drains of three records");
    }

    #[test]
    fn a_record_larger_than_the_buffer_is_cut_and_one_that_cannot_fit_is_dropped() {
        let mut sink = TestSink::new(80);
        assert_eq!(
            store(&mut sink, LogLevel::Warn, b"t", &[b'x'; 100]),
            Appended::Cut
        );
        assert_eq!(TestSink::messages(&sink.region)[0].len(), 16 - 5);
        // A target longer than the data area cannot be stored at all.
        assert_eq!(
            store(&mut sink, LogLevel::Warn, &[b't'; 40], b"m"),
            Appended::Full
        );
        let (_, dropped) = log_buffer::read_header(&sink.region, 80).unwrap();
        assert_eq!(dropped, 1);
    }

    #[test]
    fn messages_are_formatted_and_cut() {
        let mut buf = [0u8; 8];
        assert_eq!(
            format_message(&mut buf, &format_args!("echo: {} bytes", 2)),
            b"echo: 2 "
        );
        assert_eq!(level_filter(0), log::LevelFilter::Off);
        assert_eq!(level_filter(3), log::LevelFilter::Info);
        assert_eq!(level_filter(99), log::LevelFilter::Trace);
        assert_eq!(abi_level(log::Level::Debug), LogLevel::Debug);
    }
}
