//! [`SandboxConfiguration`]: memory sizes, deadlines, the guest log level,
//! the call mode and whether VMs are pooled.

use std::time::Duration;

use nub_host_common::layout::LayoutSizes;

/// How calls reach the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CallMode {
    /// Each call runs the vCPU on the calling thread until the guest exits
    /// with its answer: one VM exit per call (plus one per host call). No
    /// thread, no spinning; the default.
    #[default]
    Exit,
    /// The vCPU stays inside the guest on a thread the sandbox owns. Between
    /// calls the guest spins on a doorbell word in shared memory for up to
    /// `spin`, then parks (one exit; the thread then sleeps, so an idle
    /// sandbox burns no core). A call writes its request and rings the
    /// doorbell, then spins on a completion word for up to `spin` before it
    /// blocks; host calls are served the same way. While both sides spin, a
    /// call costs what two threads sharing a cache line cost, with no VM
    /// exit at all. See docs/resident.md.
    Resident {
        /// How long either side polls before it sleeps.
        spin: Duration,
    },
}

impl CallMode {
    /// Resident mode with a spin window suited to back-to-back calls
    /// (100 µs).
    pub const fn resident() -> Self {
        Self::Resident {
            spin: Duration::from_micros(100),
        }
    }
}

/// The default boot deadline: far above a normal boot (about a millisecond)
/// and well below what a caller would wait for a hung one.
pub const DEFAULT_MAX_BOOT_TIME: Duration = Duration::from_secs(5);

/// How a sandbox is sized. Every size is in bytes and must be a non-zero
/// multiple of 4 KiB; [`Default`] suits small guests (a little over 2 MiB
/// of guest memory in all, most of it never touched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxConfiguration {
    /// Guest heap. Default 1 MiB.
    pub heap_size: u64,
    /// Guest stack; the page below it is a guard. Default 128 KiB.
    pub stack_size: u64,
    /// Host-to-guest ring: bounds the request payload (a little less than
    /// this). Default 256 KiB.
    pub input_ring_size: u64,
    /// Guest-to-host ring: bounds the response payload. Default 256 KiB.
    pub output_ring_size: u64,
    /// Longest a single call may run before it is canceled with
    /// [`crate::HyperlightError::ExecutionTimeout`]. `None` (the default)
    /// means no limit, and so does a duration too large to add to the
    /// current instant (e.g. `Duration::MAX`).
    pub max_execution_time: Option<Duration>,
    /// Longest the boot in `evolve` (the guest's init, host calls included)
    /// may run before it is canceled with
    /// [`crate::HyperlightError::ExecutionTimeout`]. Default
    /// [`DEFAULT_MAX_BOOT_TIME`]: a guest whose init never finishes must not
    /// hang `evolve`. `None` means no limit.
    pub max_boot_time: Option<Duration>,
    /// The most verbose guest log records the host collects and emits
    /// through the `log` crate (target `nub::guest`). Default
    /// [`log::LevelFilter::Info`]; [`log::LevelFilter::Off`] turns guest
    /// logging off (the guest's `log` macros then cost nothing).
    pub guest_log_level: log::LevelFilter,
    /// Guest log buffer, header included. Records wait here until the call
    /// returns; a full buffer costs one VM exit to drain. Default 16 KiB.
    pub log_buffer_size: u64,
    /// How calls reach the guest. Default [`CallMode::Exit`].
    pub call_mode: CallMode,
    /// Whether `evolve` may take its VM from the process's pool of VMs
    /// that dropped sandboxes left behind, and whether dropping the sandbox
    /// may put its VM there (reset to the guest's prepared image: no state
    /// of this guest survives; see [`crate::pool`]). Default `true`;
    /// `false` creates a new VM for every sandbox and destroys it on drop
    /// (on the reaper thread either way).
    pub vm_pool: bool,
}

impl Default for SandboxConfiguration {
    fn default() -> Self {
        Self {
            heap_size: 1 << 20,
            stack_size: 128 << 10,
            input_ring_size: 256 << 10,
            output_ring_size: 256 << 10,
            max_execution_time: None,
            max_boot_time: Some(DEFAULT_MAX_BOOT_TIME),
            guest_log_level: log::LevelFilter::Info,
            log_buffer_size: 16 << 10,
            call_mode: CallMode::Exit,
            vm_pool: true,
        }
    }
}

impl SandboxConfiguration {
    /// Sets the heap size.
    pub fn with_heap_size(mut self, bytes: u64) -> Self {
        self.heap_size = bytes;
        self
    }

    /// Sets the stack size.
    pub fn with_stack_size(mut self, bytes: u64) -> Self {
        self.stack_size = bytes;
        self
    }

    /// Sets both ring sizes.
    pub fn with_ring_sizes(mut self, input: u64, output: u64) -> Self {
        self.input_ring_size = input;
        self.output_ring_size = output;
        self
    }

    /// Sets the per-call deadline.
    pub fn with_max_execution_time(mut self, limit: Option<Duration>) -> Self {
        self.max_execution_time = limit;
        self
    }

    /// Sets the boot deadline (`None`: no limit).
    pub fn with_max_boot_time(mut self, limit: Option<Duration>) -> Self {
        self.max_boot_time = limit;
        self
    }

    /// Sets the most verbose guest log level collected.
    pub fn with_guest_log_level(mut self, level: log::LevelFilter) -> Self {
        self.guest_log_level = level;
        self
    }

    /// Sets how calls reach the guest.
    pub fn with_call_mode(mut self, mode: CallMode) -> Self {
        self.call_mode = mode;
        self
    }

    /// Sets whether VMs come from and go back to the process's pool (see
    /// [`SandboxConfiguration::vm_pool`]).
    pub fn with_vm_pool(mut self, pooled: bool) -> Self {
        self.vm_pool = pooled;
        self
    }

    /// Sets the guest log buffer size.
    pub fn with_log_buffer_size(mut self, bytes: u64) -> Self {
        self.log_buffer_size = bytes;
        self
    }

    /// The layout sizes this configuration asks for.
    pub fn layout_sizes(&self) -> LayoutSizes {
        LayoutSizes {
            heap: self.heap_size,
            stack: self.stack_size,
            input_ring: self.input_ring_size,
            output_ring: self.output_ring_size,
            log_buffer: self.log_buffer_size,
        }
    }
}

/// Options for one call (or one batch), overriding the sandbox's
/// configuration for that call only: pass them to
/// [`MultiUseSandbox::call_raw_with`](crate::MultiUseSandbox::call_raw_with)
/// or [`MultiUseSandbox::call_batch_with`](crate::MultiUseSandbox::call_batch_with).
/// [`Default`] changes nothing: the call runs exactly as
/// [`call_raw`](crate::MultiUseSandbox::call_raw) would. Build them with the
/// `with_*` methods (the type may gain fields, so it cannot be written as a
/// struct literal outside this crate).
///
/// ```
/// use std::time::Duration;
/// use nub_sandbox::config::CallOptions;
///
/// let opts = CallOptions::default().with_deadline(Duration::from_millis(50));
/// assert_eq!(opts.deadline, Some(Duration::from_millis(50)));
/// assert_eq!(CallOptions::default().deadline, None); // the configured one
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CallOptions {
    /// Longest this call (all of a batch) may run before it is canceled
    /// with [`crate::HyperlightError::ExecutionTimeout`] carrying this
    /// duration, in place of [`SandboxConfiguration::max_execution_time`],
    /// shorter or longer. `None` (the default) keeps the configured limit.
    /// A duration too large to add to the current instant (e.g.
    /// `Duration::MAX`, see [`CallOptions::without_deadline`]) means no
    /// limit for this call, whatever is configured. The deadline is
    /// enforced the same way in both call modes (see docs/cancellation.md).
    pub deadline: Option<Duration>,
}

impl CallOptions {
    /// This call may run at most `limit` (instead of the configured
    /// [`SandboxConfiguration::max_execution_time`]).
    pub fn with_deadline(mut self, limit: Duration) -> Self {
        self.deadline = Some(limit);
        self
    }

    /// This call runs with no deadline, whatever is configured (it can
    /// still be stopped with [`crate::InterruptHandle::kill`]): the same
    /// as `with_deadline(Duration::MAX)`.
    pub fn without_deadline(self) -> Self {
        self.with_deadline(Duration::MAX)
    }

    /// The deadline this call runs with in a sandbox configured with
    /// `config`: this call's own, else the configured one.
    pub(crate) fn limit(&self, config: &SandboxConfiguration) -> Option<Duration> {
        self.deadline.or(config.max_execution_time)
    }
}
