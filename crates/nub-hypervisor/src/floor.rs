//! Cost floors for benchmarks (cargo feature `floor`, off by default):
//! the cheapest way to do what a nub path does, measured on bare KVM or
//! bare threads, so that `nub bench`, the criterion benches and the
//! `measure` example report nub's figures as ratios to a floor taken in the
//! same run.
//!
//! - [`ExitFloor`]: a minimal long-mode guest, built with the same page
//!   tables, GDT and TSS as real guests, that does nothing but `out` in a
//!   loop: one exit round trip, at CPL 3 (as nub guests run) or CPL 0
//!   (where kvm_pvm emulates every instruction).
//! - [`KillFloor`]: the same bare VM spinning at CPL 3 (`jmp $`), stopped
//!   from another thread the way nub stops a call ([`Vm::begin_call`] +
//!   [`crate::VcpuInterrupt::kill`]: a signal plus the run window's
//!   `immediate_exit`); the time from the kill until `KVM_RUN` returns.
//! - [`Killer`]: the thread that kills a run `settle` after it begins and
//!   reports when (the kill floor and the sandbox kill rows use it).
//! - [`vm_lifecycle`]: create and drop a bare VM with one vCPU and one
//!   memory slot (the floor guest's setup).
//! - [`PingPong`]: two host threads bouncing one cache line, no VM at all
//!   (the floor of any call that hands work to a thread spinning elsewhere).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nub_host_common::layout::{Access, IMAGE_BASE, PAGE_SIZE, Region};

use crate::{GuestMemory, HypervisorError, Mapping, Vm, VmExit, VmSetup, interrupt::CancelReason};

/// `out 0xE1, eax; jmp back`.
const OUT_LOOP: [u8; 4] = [0xe7, 0xe1, 0xeb, 0xfc];

/// `jmp $`: spins until stopped.
const SPIN: [u8; 2] = [0xeb, 0xfe];

/// The port [`OUT_LOOP`] writes.
const FLOOR_PORT: u16 = 0xE1;

/// Guest memory of a floor VM: code at [`IMAGE_BASE`], one stack page.
const FLOOR_MEMORY: u64 = 4 << 20;

/// Why a floor measurement failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FloorError {
    /// Creating or running the bare VM failed.
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
    /// The floor guest stopped for something other than its own `out`.
    #[error("the floor guest exited with {0:?} instead of its `out` to port {FLOOR_PORT:#x}")]
    UnexpectedExit(VmExit),
    /// The spinning guest of the kill floor came back without being
    /// killed (or was canceled for another reason).
    #[error("the kill floor's run ended with {0} instead of a kill")]
    NotKilled(String),
    /// A [`Killer`]'s thread is gone (it panicked or could not be
    /// started).
    #[error("the killer thread is gone")]
    KillerGone,
}

/// A bare VM whose guest runs `code` from [`IMAGE_BASE`] with one stack
/// page, at CPL 3 when `user_mode`.
fn floor_vm(code: &[u8], user_mode: bool) -> Result<Vm, HypervisorError> {
    let memory = GuestMemory::new(FLOOR_MEMORY)?;
    memory.write(IMAGE_BASE, code)?;
    let stack = Region {
        start: 2 << 20,
        size: PAGE_SIZE,
    };
    let mappings = [
        Mapping {
            region: Region {
                start: IMAGE_BASE,
                size: PAGE_SIZE,
            },
            access: Access::ReadExecute,
        },
        Mapping {
            region: stack,
            access: Access::ReadWrite,
        },
    ];
    let setup = VmSetup {
        mappings: &mappings,
        entry: IMAGE_BASE,
        stack_pointer: stack.end(),
        ist_stack_top: stack.end(),
        boot_info: 0,
        user_mode,
    };
    Vm::new(memory, &setup)
}

/// The exit floor: a bare VM whose guest does `out` in a loop.
#[derive(Debug)]
pub struct ExitFloor {
    vm: Vm,
}

impl ExitFloor {
    /// Creates the floor VM; its guest runs at CPL 3 when `user_mode`, at
    /// CPL 0 otherwise.
    pub fn new(user_mode: bool) -> Result<Self, FloorError> {
        Ok(Self {
            vm: floor_vm(&OUT_LOOP, user_mode)?,
        })
    }

    /// Runs the guest to its next `out`: one exit round trip, timed.
    pub fn round_trip(&mut self) -> Result<Duration, FloorError> {
        let start = Instant::now();
        let exit = self.vm.run()?;
        let elapsed = start.elapsed();
        match exit {
            VmExit::IoOut {
                port: FLOOR_PORT,
                value: 0,
            } => Ok(elapsed),
            other => Err(FloorError::UnexpectedExit(other)),
        }
    }
}

/// Times `iterations` exit round trips of the floor guest, at CPL 3 (as nub
/// guests run) or CPL 0 (where kvm_pvm emulates every instruction). Returns
/// each round trip.
pub fn exit_round_trips(iterations: usize, user_mode: bool) -> Result<Vec<Duration>, FloorError> {
    let mut floor = ExitFloor::new(user_mode)?;
    (0..iterations).map(|_| floor.round_trip()).collect()
}

/// The kill floor: a bare VM spinning at CPL 3 and a killer thread that
/// stops each run the way nub stops a call.
///
/// Each [`KillFloor::kill_latency`] starts a call ([`Vm::begin_call`]) and
/// enters `KVM_RUN` on the calling thread; the killer waits `settle` (so
/// the vCPU is inside the guest, not before it), takes the time and calls
/// [`crate::VcpuInterrupt::kill`]. The result is the time from that kill
/// to `KVM_RUN` returning as canceled.
#[derive(Debug)]
pub struct KillFloor {
    vm: Vm,
    killer: Killer,
}

impl KillFloor {
    /// Creates the spinning VM and the killer thread, which waits `settle`
    /// after a run begins before it kills it.
    pub fn new(settle: Duration) -> Result<Self, FloorError> {
        Ok(Self {
            vm: floor_vm(&SPIN, true)?,
            killer: Killer::new(settle)?,
        })
    }

    /// One run of the spinning guest, killed from the killer thread:
    /// returns the time from the kill to `KVM_RUN` returning.
    pub fn kill_latency(&mut self) -> Result<Duration, FloorError> {
        let (guard, _generation) = self.vm.begin_call();
        let interrupt = Arc::clone(self.vm.interrupt());
        let vm = &mut self.vm;
        let (result, latency) = self
            .killer
            .time_kill(Box::new(move || interrupt.kill()), || vm.run())?;
        guard.finish();
        match result {
            Err(HypervisorError::Canceled(CancelReason::Killed)) => Ok(latency),
            Err(HypervisorError::Canceled(other)) => {
                Err(FloorError::NotKilled(format!("a cancel for {other:?}")))
            }
            Err(e) => Err(e.into()),
            Ok(exit) => Err(FloorError::NotKilled(format!("exit {exit:?}"))),
        }
    }
}

/// Kills a run `settle` after it begins: [`Killer::time_kill`] hands the
/// thread a kill function, and the thread reports when its kill landed.
pub type KillFn = Box<dyn Fn() -> bool + Send>;

/// A thread that kills runs on request, for kill-latency measurements
/// (the kill floor, `nub bench`'s and the criterion benches' sandbox kill
/// rows). Told that a run begins, it waits `settle` (so the run is well
/// inside its spin, not before it), then calls the kill function until it
/// returns `true`: a kill that finds no call running yet does nothing, and
/// on a loaded machine the run may begin late.
#[derive(Debug)]
pub struct Killer {
    /// One message per run: "it begins, kill it with this". Dropping it ends
    /// the thread.
    begun: Option<SyncSender<KillFn>>,
    /// When each kill that landed was issued.
    kills: Receiver<Instant>,
    thread: Option<JoinHandle<()>>,
}

impl Killer {
    /// Starts the killer thread.
    pub fn new(settle: Duration) -> Result<Self, FloorError> {
        let (begun, begun_rx) = sync_channel::<KillFn>(0);
        let (kill_tx, kills) = sync_channel::<Instant>(1);
        let thread = std::thread::Builder::new()
            .name("nub-killer".into())
            .spawn(move || {
                while let Ok(kill) = begun_rx.recv() {
                    std::thread::sleep(settle);
                    let at = loop {
                        let at = Instant::now();
                        if kill() {
                            break at;
                        }
                        std::thread::sleep(settle);
                    };
                    if kill_tx.send(at).is_err() {
                        return;
                    }
                }
            })
            .map_err(|_| FloorError::KillerGone)?;
        Ok(Self {
            begun: Some(begun),
            kills,
            thread: Some(thread),
        })
    }

    /// Runs `run` (which must run until killed) on this thread while the
    /// killer kills it with `kill`; returns what `run` returned and the
    /// time from the kill that landed until `run` returned. It waits for
    /// the kill to be reported even when `run` ended first, so the next run
    /// starts clean.
    pub fn time_kill<T>(
        &mut self,
        kill: KillFn,
        run: impl FnOnce() -> T,
    ) -> Result<(T, Duration), FloorError> {
        self.begun
            .as_ref()
            .ok_or(FloorError::KillerGone)?
            .send(kill)
            .map_err(|_| FloorError::KillerGone)?;
        let result = run();
        let returned = Instant::now();
        let killed_at = self.kills.recv().map_err(|_| FloorError::KillerGone)?;
        Ok((result, returned.saturating_duration_since(killed_at)))
    }
}

impl Drop for Killer {
    fn drop(&mut self) {
        // Closing the channel ends the killer's loop.
        self.begun = None;
        if let Some(thread) = self.thread.take() {
            // A panicked killer has nothing left to clean up.
            let _ = thread.join();
        }
    }
}

/// Creates and drops one bare VM with one vCPU and one memory slot, set up
/// as the exit floor's guest (page tables, GDT, TSS, registers); returns
/// the time both took.
pub fn vm_lifecycle() -> Result<Duration, FloorError> {
    let start = Instant::now();
    let vm = floor_vm(&OUT_LOOP, true)?;
    drop(vm);
    Ok(start.elapsed())
}

/// One cache line, alone on its line (and the adjacent-line prefetch pair).
#[repr(align(128))]
#[derive(Debug)]
struct Line(AtomicU64);

/// The value that tells the partner thread to stop.
const STOP: u64 = u64::MAX;

/// The ping-pong floor: a partner thread that answers every odd value in a
/// shared cache line with the next even one, both sides spinning. The
/// partner spins (a whole core) for as long as this lives.
#[derive(Debug)]
pub struct PingPong {
    line: Arc<Line>,
    /// The last even value the partner answered with.
    last: u64,
    partner: Option<JoinHandle<()>>,
}

impl PingPong {
    /// Starts the partner thread (it spins until this is dropped).
    pub fn new() -> Result<Self, std::io::Error> {
        let line = Arc::new(Line(AtomicU64::new(0)));
        let theirs = Arc::clone(&line);
        let partner = std::thread::Builder::new()
            .name("nub-ping-pong".into())
            .spawn(move || {
                loop {
                    let v = theirs.0.load(Ordering::Acquire);
                    if v == STOP {
                        return;
                    }
                    if v % 2 == 1 {
                        theirs.0.store(v + 1, Ordering::Release);
                    } else {
                        std::hint::spin_loop();
                    }
                }
            })?;
        Ok(Self {
            line,
            last: 0,
            partner: Some(partner),
        })
    }

    /// Bounces the line `n` times (each a write here answered by a write
    /// there); returns the time all `n` round trips took.
    pub fn round_trips(&mut self, n: u32) -> Duration {
        let start = Instant::now();
        for _ in 0..n {
            // Wraps long before u64::MAX: 2^63 round trips is centuries.
            let ping = self.last + 1;
            self.line.0.store(ping, Ordering::Release);
            while self.line.0.load(Ordering::Acquire) != ping + 1 {
                std::hint::spin_loop();
            }
            self.last = ping + 1;
        }
        start.elapsed()
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        self.line.0.store(STOP, Ordering::Release);
        if let Some(partner) = self.partner.take() {
            // A panicked partner has nothing left to clean up.
            let _ = partner.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_guest_exits_through_its_port_in_both_modes() {
        assert_eq!(exit_round_trips(50, true).unwrap().len(), 50);
        assert_eq!(exit_round_trips(50, false).unwrap().len(), 50);
    }

    #[test]
    fn kill_floor_stops_the_spinning_guest_every_time() {
        // Every run ends by its kill (`kill_latency` fails on any other
        // ending), and the VM survives its kills: each later run spins
        // again until killed. (Whether a kill lands inside KVM_RUN or just
        // before it depends on scheduling, so exits are not counted.)
        let mut floor = KillFloor::new(Duration::from_millis(1)).unwrap();
        for _ in 0..5 {
            floor.kill_latency().unwrap();
        }
    }

    #[test]
    fn a_bare_vm_is_created_and_dropped() {
        vm_lifecycle().unwrap();
        vm_lifecycle().unwrap();
    }

    #[test]
    fn ping_pong_partner_answers_every_ping_and_stops_on_drop() {
        let mut p = PingPong::new().unwrap();
        p.round_trips(1000);
        assert_eq!(p.last, 2000);
        assert_eq!(p.line.0.load(Ordering::Acquire), 2000);
        drop(p);
    }
}
