//! The two sandbox phases: [`UninitializedSandbox`] (guest image prepared,
//! host functions being registered) and [`MultiUseSandbox`] (booted,
//! callable). Dropping a `MultiUseSandbox` hands its VM to the pool or the
//! reaper thread ([`crate::pool`]); the caller does not wait for KVM.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use nub_host_common::{boot::BootInfo, layout::MemoryLayout, rpc};
use nub_hypervisor::{GuestMemory, VcpuInterrupt};

use crate::{
    binary::GuestBinary,
    config::{CallOptions, SandboxConfiguration},
    error::{HyperlightError, Result, Violation},
    exec::GuestVm,
    host_functions::{HostFunctions, HostResult, Registerable},
    image::MemoryImage,
    interrupt::InterruptHandle,
    persist::SandboxImage,
    pool,
};

/// A guest ready to boot, not yet running: its prepared image (the guest's
/// initial memory, shared with every sandbox of the same binary and
/// configuration) is built, no VM exists yet. Register host functions
/// here, then [`evolve`](Self::evolve) it.
#[derive(Debug)]
pub struct UninitializedSandbox {
    image: Arc<MemoryImage>,
    config: SandboxConfiguration,
    host_functions: HostFunctions,
    id: u64,
    interrupt: InterruptOwner,
}

/// The interrupt state of a sandbox whose VM does not exist yet. Handles
/// taken from an [`UninitializedSandbox`] share it with the VM `evolve`
/// creates; if the sandbox is dropped instead, the handles learn so.
#[derive(Debug)]
struct InterruptOwner(Option<Arc<VcpuInterrupt>>);

impl InterruptOwner {
    /// Hands the state to the VM (which marks it dropped when it goes).
    fn take(mut self) -> Arc<VcpuInterrupt> {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for InterruptOwner {
    fn drop(&mut self) {
        if let Some(interrupt) = self.0.take() {
            interrupt.mark_dropped();
        }
    }
}

/// The most a capture's own call (asking the guest for its directory's
/// address) may take, whatever the configured deadline.
const CAPTURE_CALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Sandbox ids, unique in the process; they tag the guest's log records.
static NEXT_SANDBOX_ID: AtomicU64 = AtomicU64::new(1);

impl UninitializedSandbox {
    /// Prepares `binary` laid out by `config` (or the defaults). Validates
    /// the ELF and the layout the first time a binary and configuration
    /// are seen, and builds the guest's initial memory then; later
    /// sandboxes of the same binary and configuration share it (see
    /// [`crate::binary`]). Creates no VM yet.
    ///
    /// ```
    /// use nub_sandbox::{GuestBinary, HyperlightError, SandboxConfiguration};
    /// use nub_sandbox::UninitializedSandbox;
    /// # let path = nub_tests::DEFAULT_GUEST; // the default guest's ELF
    /// let cfg = SandboxConfiguration::default().with_heap_size(4 << 20);
    /// let sbox = UninitializedSandbox::new(GuestBinary::FilePath(path.into()), Some(cfg))?;
    /// assert_eq!(sbox.layout().heap.size, 4 << 20);
    ///
    /// // Bytes that are not a guest ELF are refused before any VM exists.
    /// let junk = GuestBinary::Buffer(b"not an ELF".to_vec());
    /// let err = UninitializedSandbox::new(junk, None).unwrap_err();
    /// assert!(matches!(err, HyperlightError::BadGuestBinary(_)));
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn new(binary: GuestBinary, config: Option<SandboxConfiguration>) -> Result<Self> {
        let config = config.unwrap_or_default();
        let image = crate::image::sandbox_image(&binary, &config)?;
        Ok(Self {
            image,
            config,
            host_functions: HostFunctions::default(),
            id: NEXT_SANDBOX_ID.fetch_add(1, Ordering::Relaxed),
            interrupt: InterruptOwner(Some(Arc::new(VcpuInterrupt::new()))),
        })
    }

    /// The memory layout this sandbox will use.
    ///
    /// ```
    /// use nub_sandbox::{GuestBinary, SandboxConfiguration, UninitializedSandbox};
    /// # let path = nub_tests::DEFAULT_GUEST; // the default guest's ELF
    /// let cfg = SandboxConfiguration::default().with_ring_sizes(64 << 10, 128 << 10);
    /// let sbox = UninitializedSandbox::new(GuestBinary::FilePath(path.into()), Some(cfg))?;
    /// let layout = sbox.layout();
    /// assert_eq!((layout.input_ring.size, layout.output_ring.size), (64 << 10, 128 << 10));
    /// assert!(layout.stack.end() <= layout.memory_size);
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn layout(&self) -> &MemoryLayout {
        &self.image.layout
    }

    /// A handle that can stop [`evolve`](Self::evolve) (a guest whose init
    /// never finishes) from any thread, and every later call of the
    /// [`MultiUseSandbox`] it becomes: it is the same handle
    /// [`MultiUseSandbox::interrupt_handle`] returns. A kill while nothing
    /// runs has no effect; [`InterruptHandle::kill_next`] instead stops the
    /// next run (the boot, if `evolve` has not begun it yet).
    ///
    /// ```
    /// use nub_sandbox::{GuestBinary, HyperlightError, UninitializedSandbox};
    /// # let path = nub_tests::DEFAULT_GUEST; // the default guest's ELF
    /// let uninit = UninitializedSandbox::new(GuestBinary::FilePath(path.into()), None)?;
    /// let handle = uninit.interrupt_handle(); // taken before the VM exists
    /// let mut sbox = uninit.evolve()?;
    /// let killer = std::thread::spawn(move || {
    ///     // `kill` reports whether a call was running: retry until one is.
    ///     while !handle.kill() {
    ///         std::thread::sleep(std::time::Duration::from_millis(1));
    ///     }
    /// });
    /// let err = sbox.call_raw(9, b"").unwrap_err(); // fn 9 spins forever
    /// killer.join().unwrap();
    /// assert!(matches!(err, HyperlightError::Canceled));
    /// assert!(sbox.is_poisoned());
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn interrupt_handle(&self) -> InterruptHandle {
        InterruptHandle::new(self.interrupt.0.clone().unwrap_or_default())
    }

    /// This sandbox's id: unique in the process, kept by the
    /// [`MultiUseSandbox`] it evolves into, and carried by every guest log
    /// record the host emits (`[sandbox N]`).
    ///
    /// ```
    /// use nub_sandbox::{GuestBinary, UninitializedSandbox};
    /// # let path = nub_tests::DEFAULT_GUEST; // the default guest's ELF
    /// let a = UninitializedSandbox::new(GuestBinary::FilePath(path.into()), None)?;
    /// let b = UninitializedSandbox::new(GuestBinary::FilePath(path.into()), None)?;
    /// assert_ne!(a.id(), b.id());
    /// let id = a.id();
    /// assert_eq!(a.evolve()?.id(), id); // kept by the booted sandbox
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Gets a VM, boots the guest and runs its init until it signals READY.
    /// The VM comes from the process's pool when one is idle (reset to the
    /// prepared image: fresh memory and vCPU state, see [`crate::pool`]) and
    /// [`SandboxConfiguration::vm_pool`] allows it; otherwise a new one is
    /// created. Either way the guest boots from its first instruction.
    /// Host functions registered so far move to the returned sandbox (and
    /// are callable from the guest's init). The boot is bounded by
    /// [`SandboxConfiguration::max_boot_time`] (5 s by default) and can be
    /// stopped with [`Self::interrupt_handle`].
    ///
    /// ```
    /// use nub_sandbox::{GuestBinary, Registerable, UninitializedSandbox};
    /// # let path = nub_tests::DEFAULT_GUEST; // the default guest's ELF
    /// let mut uninit = UninitializedSandbox::new(GuestBinary::FilePath(path.into()), None)?;
    /// uninit.register_host_function(100, |bytes: &[u8]| Ok(bytes.to_ascii_uppercase()))?;
    /// let mut sbox = uninit.evolve()?; // boots the guest and runs its init
    ///
    /// // The default guest's fn 5 calls the host function named by its
    /// // first 4 bytes with the rest of its payload.
    /// let mut payload = 100u32.to_le_bytes().to_vec();
    /// payload.extend_from_slice(b"hi");
    /// assert_eq!(sbox.call_raw(5, &payload)?, b"HI");
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn evolve(self) -> Result<MultiUseSandbox> {
        let (vm, recycled) =
            pool::acquire(&self.image, self.interrupt.take(), self.config.vm_pool)?;
        let mut host_functions = self.host_functions;
        let guest = GuestVm::boot(vm, self.image, self.config, self.id, &mut host_functions)?;
        Ok(MultiUseSandbox {
            directory_va: guest.published_directory(),
            guest,
            host_functions,
            poisoned: false,
            recycled,
        })
    }
}

impl Registerable for UninitializedSandbox {
    fn register_host_function<F>(&mut self, fn_id: u32, f: F) -> Result<()>
    where
        F: FnMut(&[u8]) -> HostResult + Send + 'static,
    {
        self.host_functions.register(fn_id, Box::new(f))
    }
}

/// A booted guest that can be called any number of times. Guest state
/// (globals, heap) persists between calls. After a failed execution the
/// sandbox is poisoned: drop it and build a new one.
#[derive(Debug)]
pub struct MultiUseSandbox {
    guest: GuestVm,
    host_functions: HostFunctions,
    poisoned: bool,
    /// The guest directory's header address: published by the guest at
    /// boot, recorded in an image, or else asked for once.
    pub(crate) directory_va: Option<u64>,
    /// The VM came from the pool.
    recycled: bool,
}

impl MultiUseSandbox {
    /// Calls guest function `fn_id` with `payload` and returns its result.
    /// Costs one VM exit (plus one per host call the guest makes).
    ///
    /// ```
    /// use nub_sandbox::HyperlightError;
    /// # let mut sbox = nub_sandbox::UninitializedSandbox::new(
    /// #     nub_sandbox::GuestBinary::FilePath(nub_tests::DEFAULT_GUEST.into()),
    /// #     None,
    /// # )?
    /// # .evolve()?;
    /// assert_eq!(sbox.call_raw(1, b"hello")?, b"hello"); // fn 1: echo
    ///
    /// // An error the guest function returns leaves the sandbox usable.
    /// let err = sbox.call_raw(3, b"no such thing").unwrap_err(); // fn 3: fail
    /// assert!(matches!(err, HyperlightError::GuestFunctionError { fn_id: 3, .. }));
    /// let err = sbox.call_raw(999, b"").unwrap_err();
    /// assert!(matches!(err, HyperlightError::UnknownFunction { fn_id: 999 }));
    /// assert_eq!(sbox.call_raw(1, b"still here")?, b"still here");
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn call_raw(&mut self, fn_id: u32, payload: &[u8]) -> Result<Vec<u8>> {
        self.call_with_options(fn_id, payload, CallOptions::default())
    }

    /// [`call_raw`](Self::call_raw) with per-call `options`: a deadline of
    /// this call's own ([`CallOptions::with_deadline`]), shorter or longer
    /// than [`SandboxConfiguration::max_execution_time`], which it replaces
    /// for this call only. A call that runs past it fails with
    /// [`HyperlightError::ExecutionTimeout`] carrying that deadline, and
    /// poisons the sandbox. Same cost as `call_raw`, in either call mode.
    ///
    /// ```
    /// use std::time::Duration;
    /// use nub_sandbox::{HyperlightError, config::CallOptions};
    /// # let mut sbox = nub_sandbox::UninitializedSandbox::new(
    /// #     nub_sandbox::GuestBinary::FilePath(nub_tests::DEFAULT_GUEST.into()),
    /// #     None,
    /// # )?
    /// # .evolve()?;
    /// let quick = CallOptions::default().with_deadline(Duration::from_millis(20));
    /// assert_eq!(sbox.call_raw_with(1, b"in time", quick)?, b"in time"); // fn 1: echo
    ///
    /// // No deadline is configured, but this call has one.
    /// let err = sbox.call_raw_with(9, b"", quick).unwrap_err(); // fn 9 spins forever
    /// assert!(matches!(err, HyperlightError::ExecutionTimeout(d) if d == Duration::from_millis(20)));
    /// assert!(sbox.is_poisoned());
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn call_raw_with(
        &mut self,
        fn_id: u32,
        payload: &[u8],
        options: CallOptions,
    ) -> Result<Vec<u8>> {
        self.call_with_options(fn_id, payload, options)
    }

    /// One call with `options`, poisoning the sandbox as
    /// [`call_raw`](Self::call_raw) does: what every single call of the raw
    /// and the typed API goes through.
    pub(crate) fn call_with_options(
        &mut self,
        fn_id: u32,
        payload: &[u8],
        options: CallOptions,
    ) -> Result<Vec<u8>> {
        self.unless_poisoned(|s| {
            let limit = options.limit(&s.guest.config);
            s.call_within(fn_id, payload, limit)
        })
    }

    /// Runs `run` unless the sandbox is poisoned, and poisons it when `run`
    /// fails with an error that [poisons](HyperlightError::poisons).
    pub(crate) fn unless_poisoned<T>(
        &mut self,
        run: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        if self.poisoned {
            return Err(HyperlightError::PoisonedSandbox);
        }
        let result = run(self);
        if let Err(e) = &result
            && e.poisons()
        {
            self.poison();
        }
        result
    }

    /// One call bounded by `limit` (not the configured deadline); the
    /// caller checks and sets poisoning.
    fn call_within(
        &mut self,
        fn_id: u32,
        payload: &[u8],
        limit: Option<std::time::Duration>,
    ) -> Result<Vec<u8>> {
        self.guest.queue_requests(&[(fn_id, payload)])?;
        self.guest.run_call(&mut self.host_functions, limit)?;
        let response = self
            .guest
            .take_responses(1)?
            .pop()
            .ok_or(HyperlightError::ProtocolViolation(Violation::NoResponse))?;
        crate::frames::response_result(fn_id, response, self.guest.output_capacity())
    }

    /// Calls several guest functions in one VM run: all requests go into the
    /// input ring, the guest answers them in order, and the whole batch costs
    /// one exit. The outer `Result` fails (and poisons the sandbox) when the
    /// execution fails; otherwise each call has its own result, in order.
    /// A batch that does not fit the input ring is refused before anything
    /// runs ([`HyperlightError::BatchTooLarge`]); calls whose results no
    /// longer fit the output ring get [`HyperlightError::ResponseTooLarge`].
    ///
    /// ```
    /// use nub_sandbox::HyperlightError;
    /// # let mut sbox = nub_sandbox::UninitializedSandbox::new(
    /// #     nub_sandbox::GuestBinary::FilePath(nub_tests::DEFAULT_GUEST.into()),
    /// #     None,
    /// # )?
    /// # .evolve()?;
    /// let exits = sbox.exit_count();
    /// let results = sbox.call_batch(&[(1, b"a"), (3, b"failed"), (1, b"c")])?;
    /// assert_eq!(sbox.exit_count(), exits + 1); // one exit for the batch
    /// assert_eq!(results[0].as_deref().ok(), Some(&b"a"[..]));
    /// assert!(matches!(results[1], Err(HyperlightError::GuestFunctionError { .. })));
    /// assert_eq!(results[2].as_deref().ok(), Some(&b"c"[..]));
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn call_batch(&mut self, calls: &[(u32, &[u8])]) -> Result<Vec<Result<Vec<u8>>>> {
        self.call_batch_with(calls, CallOptions::default())
    }

    /// [`call_batch`](Self::call_batch) with per-call `options`: its
    /// deadline ([`CallOptions::with_deadline`]) bounds the whole batch's
    /// one run, in place of [`SandboxConfiguration::max_execution_time`].
    /// A batch that runs past it fails as a whole with
    /// [`HyperlightError::ExecutionTimeout`] and poisons the sandbox.
    ///
    /// ```
    /// use std::time::Duration;
    /// use nub_sandbox::{HyperlightError, config::CallOptions};
    /// # let mut sbox = nub_sandbox::UninitializedSandbox::new(
    /// #     nub_sandbox::GuestBinary::FilePath(nub_tests::DEFAULT_GUEST.into()),
    /// #     None,
    /// # )?
    /// # .evolve()?;
    /// let opts = CallOptions::default().with_deadline(Duration::from_millis(20));
    /// let results = sbox.call_batch_with(&[(1, b"a"), (1, b"b")], opts)?;
    /// assert_eq!(results.len(), 2);
    /// let err = sbox.call_batch_with(&[(1, b"a"), (9, b"")], opts).unwrap_err(); // fn 9 spins
    /// assert!(matches!(err, HyperlightError::ExecutionTimeout(_)));
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn call_batch_with(
        &mut self,
        calls: &[(u32, &[u8])],
        options: CallOptions,
    ) -> Result<Vec<Result<Vec<u8>>>> {
        self.unless_poisoned(|s| s.batch_unpoisoned(calls, options))
    }

    fn batch_unpoisoned(
        &mut self,
        calls: &[(u32, &[u8])],
        options: CallOptions,
    ) -> Result<Vec<Result<Vec<u8>>>> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        self.guest.queue_requests(calls)?;
        let limit = options.limit(&self.guest.config);
        self.guest.run_call(&mut self.host_functions, limit)?;
        let responses = self.guest.take_responses(calls.len())?;
        Ok(crate::frames::batch_results(
            calls.iter().map(|(fn_id, _)| *fn_id),
            responses,
            self.guest.output_capacity(),
        ))
    }

    /// Whether an earlier failed execution poisoned this sandbox, or (in
    /// resident mode) its vCPU thread stopped a guest that misbehaved
    /// between calls (it never parked, or logged or made a host call with
    /// no call open); the next call then reports why.
    ///
    /// ```
    /// use nub_sandbox::HyperlightError;
    /// # let mut sbox = nub_sandbox::UninitializedSandbox::new(
    /// #     nub_sandbox::GuestBinary::FilePath(nub_tests::DEFAULT_GUEST.into()),
    /// #     None,
    /// # )?
    /// # .evolve()?;
    /// assert!(!sbox.is_poisoned());
    /// let err = sbox.call_raw(8, &[2]).unwrap_err(); // fn 8 selector 2: ud2
    /// assert!(matches!(err, HyperlightError::GuestFault { vector: 6, .. }));
    /// assert!(sbox.is_poisoned());
    /// assert!(matches!(sbox.call_raw(1, b""), Err(HyperlightError::PoisonedSandbox)));
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn is_poisoned(&self) -> bool {
        self.poisoned || self.guest.failed()
    }

    /// Marks the sandbox poisoned (a failed execution, or a guest answer
    /// that cannot be true found outside the call itself, e.g. a cap whose
    /// hash is wrong) and stops its guest for good: a resident vCPU thread
    /// is joined at once.
    pub(crate) fn poison(&mut self) {
        self.poisoned = true;
        self.guest.halt();
    }

    /// A handle that can stop this sandbox's running call from any thread
    /// ([`InterruptHandle::kill`]), or the next one when none runs yet
    /// ([`InterruptHandle::kill_next`], no retry loop needed).
    ///
    /// ```
    /// use nub_sandbox::HyperlightError;
    /// # let mut sbox = nub_sandbox::UninitializedSandbox::new(
    /// #     nub_sandbox::GuestBinary::FilePath(nub_tests::DEFAULT_GUEST.into()),
    /// #     None,
    /// # )?
    /// # .evolve()?;
    /// let handle = sbox.interrupt_handle();
    /// let killer = std::thread::spawn(move || {
    ///     // `kill` reports whether a call was running: retry until one is.
    ///     while !handle.kill() {
    ///         std::thread::sleep(std::time::Duration::from_millis(1));
    ///     }
    /// });
    /// let err = sbox.call_raw(9, b"").unwrap_err(); // fn 9 spins forever
    /// killer.join().unwrap();
    /// assert!(matches!(err, HyperlightError::Canceled));
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn interrupt_handle(&self) -> InterruptHandle {
        InterruptHandle::new(Arc::clone(self.guest.interrupt()))
    }

    /// The guest's heap figures (one system call into the guest).
    ///
    /// ```
    /// # let mut sbox = nub_sandbox::UninitializedSandbox::new(
    /// #     nub_sandbox::GuestBinary::FilePath(nub_tests::DEFAULT_GUEST.into()),
    /// #     None,
    /// # )?
    /// # .evolve()?;
    /// let stats = sbox.heap_stats()?;
    /// assert_eq!(stats.size, sbox.layout().heap.size);
    /// assert!(stats.used + stats.free <= stats.size);
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn heap_stats(&mut self) -> Result<HeapStats> {
        let bytes = self.call_raw(rpc::FN_ID_NUB_HEAP_STATS, &[])?;
        HeapStats::from_bytes(&bytes)
            .ok_or(HyperlightError::ProtocolViolation(Violation::BadHeapStats))
    }

    /// The guest's copy of its boot info (one system call into the guest).
    ///
    /// ```
    /// # let mut sbox = nub_sandbox::UninitializedSandbox::new(
    /// #     nub_sandbox::GuestBinary::FilePath(nub_tests::DEFAULT_GUEST.into()),
    /// #     None,
    /// # )?
    /// # .evolve()?;
    /// let info = sbox.boot_info()?;
    /// assert_eq!(info.heap_va, sbox.layout().heap.start);
    /// assert_ne!(info.directory_va, 0); // filled in by the guest kernel
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn boot_info(&mut self) -> Result<BootInfo> {
        self.unless_poisoned(|s| {
            let limit = s.guest.config.max_execution_time;
            s.boot_info_within(limit)
        })
    }

    /// The guest's boot info, in one system call bounded by `limit`; the
    /// caller checks and sets poisoning.
    fn boot_info_within(&mut self, limit: Option<std::time::Duration>) -> Result<BootInfo> {
        let bytes = self.call_within(rpc::FN_ID_NUB_GET_BOOT_INFO, &[], limit)?;
        BootInfo::from_bytes(&bytes)
            .ok_or(HyperlightError::ProtocolViolation(Violation::BadBootInfo))
    }

    /// The configured deadline of a call (`max_execution_time`).
    pub(crate) fn configured_limit(&self) -> Option<std::time::Duration> {
        self.guest.config.max_execution_time
    }

    /// The guest directory's header address (the guest's own answer,
    /// untrusted): the one it published at boot or the image recorded,
    /// else asked once in a system call bounded by `limit` (a guest kernel
    /// that published none). The caller checks and sets poisoning.
    pub(crate) fn directory_address(&mut self, limit: Option<std::time::Duration>) -> Result<u64> {
        if let Some(va) = self.directory_va {
            return Ok(va);
        }
        let va = self.boot_info_within(limit)?.directory_va;
        self.directory_va = Some(va);
        Ok(va)
    }

    /// VM exits since the sandbox was created (boot included).
    ///
    /// ```
    /// # let mut sbox = nub_sandbox::UninitializedSandbox::new(
    /// #     nub_sandbox::GuestBinary::FilePath(nub_tests::DEFAULT_GUEST.into()),
    /// #     None,
    /// # )?
    /// # .evolve()?;
    /// let before = sbox.exit_count();
    /// sbox.call_raw(1, b"x")?;
    /// assert_eq!(sbox.exit_count(), before + 1); // one exit per call
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn exit_count(&self) -> u64 {
        self.guest.exit_count()
    }

    /// Whether this sandbox's VM came from the pool: a VM an earlier
    /// sandbox dropped, reset to the prepared image (memory and vCPU state
    /// as new) before this guest booted on it. See [`crate::pool`].
    ///
    /// ```
    /// use nub_sandbox::{GuestBinary, UninitializedSandbox};
    /// # let path = nub_tests::DEFAULT_GUEST; // the default guest's ELF
    /// let boot = || UninitializedSandbox::new(GuestBinary::FilePath(path.into()), None)?.evolve();
    /// let first = boot()?;
    /// assert!(!first.is_recycled()); // this process's pool starts empty
    /// drop(first); // its VM goes to the pool
    /// nub_sandbox::pool::wait_idle(); // and is reset off this thread
    /// assert!(boot()?.is_recycled());
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn is_recycled(&self) -> bool {
        self.recycled
    }

    /// Copies guest memory at guest physical address `addr` into `out`:
    /// what the guest wrote there (hostile data, not to be trusted), for
    /// diagnostics and tests. Fails if the range is outside guest memory.
    ///
    /// ```
    /// use nub_sandbox::HyperlightError;
    /// # let mut sbox = nub_sandbox::UninitializedSandbox::new(
    /// #     nub_sandbox::GuestBinary::FilePath(nub_tests::DEFAULT_GUEST.into()),
    /// #     None,
    /// # )?
    /// # .evolve()?;
    /// let heap = sbox.layout().heap;
    /// let mut word = [0u8; 8];
    /// sbox.read_guest_memory(heap.start, &mut word)?; // guest-written: untrusted
    /// let past_the_end = sbox.layout().memory_size;
    /// let err = sbox.read_guest_memory(past_the_end, &mut word).unwrap_err();
    /// assert!(matches!(err, HyperlightError::GuestMemory(_)));
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn read_guest_memory(&self, addr: u64, out: &mut [u8]) -> Result<()> {
        self.guest
            .side
            .memory
            .read(addr, out)
            .map_err(HyperlightError::from)
    }

    /// The memory layout.
    ///
    /// ```
    /// # let mut sbox = nub_sandbox::UninitializedSandbox::new(
    /// #     nub_sandbox::GuestBinary::FilePath(nub_tests::DEFAULT_GUEST.into()),
    /// #     None,
    /// # )?
    /// # .evolve()?;
    /// let heap = sbox.layout().heap;
    /// assert_eq!(sbox.boot_info()?.heap_size, heap.size);
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn layout(&self) -> &MemoryLayout {
        &self.guest.side.layout
    }

    /// This sandbox's id (see [`UninitializedSandbox::id`]).
    ///
    /// ```
    /// use nub_sandbox::{GuestBinary, UninitializedSandbox};
    /// # let path = nub_tests::DEFAULT_GUEST; // the default guest's ELF
    /// let uninit = UninitializedSandbox::new(GuestBinary::FilePath(path.into()), None)?;
    /// let id = uninit.id();
    /// let sbox = uninit.evolve()?;
    /// assert_eq!(sbox.id(), id); // the id guest log records carry: [sandbox N]
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn id(&self) -> u64 {
        self.guest.side.id
    }

    /// Saves the sandbox, at rest between calls, to an image file at
    /// `path`: [`Self::capture_image`] then [`SandboxImage::save`].
    pub fn save_image(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.capture_image()?.save(path)
    }

    /// Captures the sandbox between calls as a [`SandboxImage`] that any
    /// number of sandboxes start from ([`Self::from_image`]), each where
    /// this guest is now: its writable memory (heap, globals, stack, caps
    /// published in its directory), its CPL 3 registers, and what the
    /// host side of its call mode resumes with. A resident guest is first
    /// let park (its vCPU thread hands the VM back). The sandbox carries
    /// on unchanged. Host function ids registered here are recorded as a
    /// requirement list ([`SandboxImage::required_host_functions`]); the
    /// closures are not. A poisoned sandbox cannot be captured.
    ///
    /// ```
    /// use nub_sandbox::{MultiUseSandbox, SandboxImage};
    /// # let mut sbox = nub_sandbox::UninitializedSandbox::new(
    /// #     nub_sandbox::GuestBinary::FilePath(nub_tests::DEFAULT_GUEST.into()),
    /// #     None,
    /// # )?
    /// # .evolve()?;
    /// let add = |sbox: &mut MultiUseSandbox, n: u64| -> nub_sandbox::Result<u64> {
    ///     let out = sbox.call_raw(2, &n.to_le_bytes())?; // fn 2: a counter
    ///     Ok(u64::from_le_bytes(out.try_into().unwrap()))
    /// };
    /// assert_eq!(add(&mut sbox, 5)?, 5);
    /// let image = sbox.capture_image()?;
    /// let mut a = MultiUseSandbox::from_image(&image, None)?;
    /// let mut b = MultiUseSandbox::from_image(&image, None)?;
    /// assert_eq!(add(&mut a, 1)?, 6); // each goes on from 5, on its own
    /// assert_eq!(add(&mut b, 2)?, 7);
    /// assert_eq!(add(&mut sbox, 10)?, 15);
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn capture_image(&mut self) -> Result<Arc<SandboxImage>> {
        self.unless_poisoned(|s| {
            // A system call the guest kernel answers at once: a guest that
            // does not is not at rest, and a capture must not hang on it
            // when no deadline is configured.
            let limit = s
                .guest
                .config
                .max_execution_time
                .map_or(CAPTURE_CALL_LIMIT, |d| d.min(CAPTURE_CALL_LIMIT));
            let directory_va = s.directory_address(Some(limit))?;
            crate::persist::capture(&mut s.guest, s.host_functions.ids(), Some(directory_va))
        })
    }

    /// Starts a sandbox from `image`, where its guest rested when it was
    /// captured: no boot runs. The VM comes from the pool (reset to the
    /// image, as for a boot image) when `config` allows it, else a new VM
    /// maps the image's sealed memory copy-on-write.
    ///
    /// `config` (`None`: [`SandboxImage::configuration`]) gives the
    /// runtime settings: deadlines, the pool, the resident spin window on
    /// the host's side. What shapes memory (sizes, the guest's log level)
    /// is the image's, whatever `config` says, and its call mode must be
    /// the image's ([`crate::ImageError::CallMode`] otherwise). The new
    /// sandbox has no host functions: register those the image requires
    /// through [`Registerable`] before calling what uses them (a call that
    /// reaches an unregistered one fails as on any sandbox).
    ///
    /// ```
    /// use nub_sandbox::{MultiUseSandbox, Registerable};
    /// # let mut sbox = nub_sandbox::UninitializedSandbox::new(
    /// #     nub_sandbox::GuestBinary::FilePath(nub_tests::DEFAULT_GUEST.into()),
    /// #     None,
    /// # )?
    /// # .evolve()?;
    /// let image = sbox.capture_image()?;
    /// let mut loaded = MultiUseSandbox::from_image(&image, None)?;
    /// loaded.register_host_function(100, |b: &[u8]| Ok(b.to_ascii_uppercase()))?;
    /// let mut payload = 100u32.to_le_bytes().to_vec(); // fn 5 calls host fn 100
    /// payload.extend_from_slice(b"hi");
    /// assert_eq!(loaded.call_raw(5, &payload)?, b"HI");
    /// # Ok::<(), nub_sandbox::HyperlightError>(())
    /// ```
    pub fn from_image(
        image: &Arc<SandboxImage>,
        config: Option<SandboxConfiguration>,
    ) -> Result<Self> {
        let config = image.fit(config)?;
        let memory = image.memory();
        let interrupt = Arc::new(VcpuInterrupt::new());
        let (vm, recycled) = pool::acquire(memory, interrupt, config.vm_pool)?;
        let id = NEXT_SANDBOX_ID.fetch_add(1, Ordering::Relaxed);
        let guest = GuestVm::resume(vm, Arc::clone(memory), config, id)?;
        Ok(Self {
            guest,
            host_functions: HostFunctions::default(),
            poisoned: false,
            directory_va: memory.resume.and_then(|r| r.directory_va),
            recycled,
        })
    }

    /// Guest memory, for readers that run while the vCPU is stopped.
    pub(crate) fn memory(&self) -> &GuestMemory {
        &self.guest.side.memory
    }
}

impl Registerable for MultiUseSandbox {
    fn register_host_function<F>(&mut self, fn_id: u32, f: F) -> Result<()>
    where
        F: FnMut(&[u8]) -> HostResult + Send + 'static,
    {
        self.host_functions.register(fn_id, Box::new(f))
    }
}

/// What [`InterruptHandle::kill_next`] did: canceled the running call,
/// armed a kill for the next one, or found the sandbox gone.
pub use nub_hypervisor::interrupt::KillOutcome;

/// Guest heap figures (the ABI's `FN_ID_NUB_HEAP_STATS` answer).
pub use nub_host_common::system::HeapStats;
