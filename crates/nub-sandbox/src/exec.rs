//! A booted guest: its VM's engine ([`crate::engine`]), the host's view of
//! its memory ([`MemorySide`]) and the call-by-call state (where host-call
//! responses go, the request scratch buffer). The boot itself, and the
//! hand-back of the VM to the pool when the guest is dropped.

use std::{sync::Arc, time::Duration};

use nub_host_common::ports::ExitPort;
use nub_hypervisor::{VcpuInterrupt, Vm};

use crate::{
    config::SandboxConfiguration,
    engine::{self, Engine, Halted, RestPoint, exit::run_exit},
    error::{HyperlightError, Result},
    frames::RawResponse,
    guest_side::MemorySide,
    host_functions::HostFunctions,
    image::MemoryImage,
    pool,
};

/// The engine, and what handing its VM back needs. The last field of
/// [`GuestVm`], so it drops after the host's other handle on guest memory
/// (`GuestVm::side`): when its `Drop` hands the VM to the pool, the VM
/// holds the memory alone, which a reset requires.
#[derive(Debug)]
struct EngineSlot {
    engine: Option<Box<dyn Engine>>,
    image: Arc<MemoryImage>,
    pooled: bool,
}

impl Drop for EngineSlot {
    fn drop(&mut self) {
        // A resident engine stops and joins its vCPU thread here, which
        // hands back the VM.
        if let Some(vm) = self.engine.take().and_then(|engine| engine.stop()) {
            pool::retire(vm, &self.image, self.pooled);
        }
    }
}

/// A booted VM, the host's view of its memory, and the engine that runs
/// its calls. Dropping it hands the VM to the pool or the reaper
/// ([`crate::pool`]).
#[derive(Debug)]
pub(crate) struct GuestVm {
    pub(crate) side: MemorySide,
    pub(crate) config: SandboxConfiguration,
    /// Data offset in the input ring just past the queued requests: where
    /// host-call responses go. Host-owned, never read back from the guest.
    input_tail: usize,
    /// Where requests are encoded before they are copied into the input
    /// ring (kept between calls).
    scratch: Vec<u8>,
    interrupt: Arc<VcpuInterrupt>,
    /// What [`Self::published_directory`] returns.
    published_directory: Option<u64>,
    /// Last: see [`EngineSlot`].
    engine: EngineSlot,
}

impl GuestVm {
    /// Boots `vm` (runs the guest until READY, on this thread) and starts
    /// the engine of the configured call mode. A VM whose boot fails goes
    /// back to the pool (a guest that faults or times out in its init
    /// leaves a VM that can be reset).
    pub(crate) fn boot(
        mut vm: Vm,
        image: Arc<MemoryImage>,
        config: SandboxConfiguration,
        id: u64,
        host: &mut HostFunctions,
    ) -> Result<Self> {
        let side = MemorySide::new(Arc::clone(vm.memory()), image.layout, id);
        if let Err(e) = run_exit(
            &mut vm,
            &side,
            0,
            ExitPort::Ready,
            host,
            config.max_boot_time,
        ) {
            // The VM must hold its memory alone to be reset.
            drop(side);
            pool::retire(vm, &image, config.vm_pool);
            return Err(e);
        }
        let directory = published_directory(&side);
        let mut guest = Self::with_engine(vm, side, image, config, RestPoint::default())?;
        guest.published_directory = directory;
        Ok(guest)
    }

    /// The directory address the guest published at boot (its control
    /// block's `DIRECTORY_ADDRESS` word, read once right after READY), if
    /// it published one; untrusted, like every guest answer.
    pub(crate) fn published_directory(&self) -> Option<u64> {
        self.published_directory
    }

    /// Resumes `vm`, built from (or reset to) the persisted `image`: no
    /// boot runs, the guest continues from where it rested when the image
    /// was captured, and the engine numbers calls on from there.
    pub(crate) fn resume(
        vm: Vm,
        image: Arc<MemoryImage>,
        config: SandboxConfiguration,
        id: u64,
    ) -> Result<Self> {
        let side = MemorySide::new(Arc::clone(vm.memory()), image.layout, id);
        let rest = image.resume.map(|r| r.rest).unwrap_or_default();
        Self::with_engine(vm, side, image, config, rest)
    }

    fn with_engine(
        vm: Vm,
        side: MemorySide,
        image: Arc<MemoryImage>,
        config: SandboxConfiguration,
        rest: RestPoint,
    ) -> Result<Self> {
        let interrupt = Arc::clone(vm.interrupt());
        let engine = engine::start(vm, &side, config.call_mode, rest)?;
        Ok(Self {
            side,
            config,
            input_tail: 0,
            scratch: Vec::new(),
            interrupt,
            published_directory: None,
            engine: EngineSlot {
                engine: Some(engine),
                image,
                pooled: config.vm_pool,
            },
        })
    }

    /// The image the guest's memory maps.
    pub(crate) fn image(&self) -> &Arc<MemoryImage> {
        &self.engine.image
    }

    /// Runs `f` on the VM while the guest rests between calls (waiting at
    /// most `wait` for a resident guest to park): see [`Engine::at_rest`].
    pub(crate) fn at_rest(
        &mut self,
        wait: Duration,
        f: &mut dyn FnMut(&mut Vm) -> Result<()>,
    ) -> Result<RestPoint> {
        match &mut self.engine.engine {
            None => Err(HyperlightError::PoisonedSandbox),
            Some(engine) => engine.at_rest(wait, f),
        }
    }

    /// Stops the guest for good, for a sandbox that was just poisoned: a
    /// resident vCPU thread is stopped and joined at once (a guest that
    /// cannot be trusted must not keep running), and no call runs again.
    pub(crate) fn halt(&mut self) {
        let vm = self.engine.engine.take().and_then(|engine| engine.stop());
        self.engine.engine = vm.map(|vm| Box::new(Halted(vm)) as Box<dyn Engine>);
    }

    /// The guest failed outside a call (a resident vCPU thread stopped
    /// it): the sandbox is as good as poisoned.
    pub(crate) fn failed(&self) -> bool {
        self.engine.engine.as_ref().is_some_and(|e| e.failed())
    }

    /// The interrupt state (for handles and deadlines).
    pub(crate) fn interrupt(&self) -> &Arc<VcpuInterrupt> {
        &self.interrupt
    }

    /// VM exits since creation.
    pub(crate) fn exit_count(&self) -> u64 {
        self.engine.engine.as_ref().map_or(0, |e| e.exit_count())
    }

    /// Output ring data capacity.
    pub(crate) fn output_capacity(&self) -> usize {
        self.side.output_capacity()
    }

    /// Queues requests in order; resets both rings first (see
    /// [`MemorySide::queue_requests`]).
    pub(crate) fn queue_requests(&mut self, calls: &[(u32, &[u8])]) -> Result<()> {
        self.input_tail = self.side.queue_requests(calls, &mut self.scratch)?;
        Ok(())
    }

    /// Reads up to `n` responses from the output ring, in order.
    pub(crate) fn take_responses(&self, n: usize) -> Result<Vec<RawResponse>> {
        self.side.take_responses(n)
    }

    /// Runs the queued requests to completion (serving host calls on the
    /// way) in the sandbox's call mode. `limit` bounds the run.
    pub(crate) fn run_call(
        &mut self,
        host: &mut HostFunctions,
        limit: Option<Duration>,
    ) -> Result<()> {
        match &mut self.engine.engine {
            None => Err(HyperlightError::PoisonedSandbox),
            Some(engine) => engine.run_call(&self.side, self.input_tail, host, limit),
        }
    }
}

/// Reads the control block's `DIRECTORY_ADDRESS` word (a copy: the guest
/// may write it at any time); `None` for 0 (not published) or an address
/// outside guest memory's mapping.
fn published_directory(side: &MemorySide) -> Option<u64> {
    let word = side.layout.control.start + nub_host_common::resident::DIRECTORY_ADDRESS as u64;
    side.memory.read_u64(word).ok().filter(|&va| va != 0)
}
