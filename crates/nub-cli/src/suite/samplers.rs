//! What each row times: one constructor per kind of row, which prepares
//! the row's state (sandboxes, threads; not timed) and returns the
//! [`Sampler`] that takes one sample.
//!
//! Samplers know nothing of row names or floors (that is the
//! [catalogue](super::catalogue)); call samplers take the sandbox
//! configuration of the call path they run on. The wasm rows' samplers
//! are in [`wasm`].

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use nub_host_common::default_guest as fn_id;
use nub_hypervisor::floor::{self, ExitFloor, KillFloor, Killer, PingPong};
use nub_sandbox::{
    CallMode, GuestBinary, HyperlightError, MultiUseSandbox, SandboxConfiguration, SandboxImage,
    UninitializedSandbox, javm_cap::Cap,
};

use super::error::RowError;
use crate::{DEFAULT_GUEST, host_fns};

pub mod wasm;

/// Takes one sample: the figure of one operation in the row's unit.
pub type Sampler = Box<dyn FnMut() -> Result<f64, RowError>>;

/// How long the killer waits after a call begins before it kills it: far
/// longer than entering the guest takes (tens of µs), so the kill lands
/// while the guest spins.
const KILL_SETTLE: Duration = Duration::from_millis(1);

/// Sandboxes kept alive at once by the RSS row.
pub const RSS_SANDBOXES: usize = 32;

/// A fresh sandbox of the put_cap row after this many caps, so its guest
/// heap never fills (the replacement is not timed).
const CAPS_PER_SANDBOX: u32 = 4096;

/// Operations timed together for rows cheaper than a clock read; their
/// samples are per operation.
const OPS_PER_SAMPLE: u32 = 100;

/// Boots the default guest with `cfg`, with the CLI's host functions when
/// `host_fns`.
fn boot(cfg: SandboxConfiguration, host_fns: bool) -> Result<MultiUseSandbox, HyperlightError> {
    let mut sandbox = UninitializedSandbox::new(GuestBinary::Static(DEFAULT_GUEST), Some(cfg))?;
    if host_fns {
        host_fns::register(&mut sandbox)?;
    }
    sandbox.evolve()
}

/// Microseconds in `d`.
fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Times `f`; returns microseconds.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let out = f();
    (out, micros(start.elapsed()))
}

/// Fails unless `got` is `want`.
fn expect_answer(what: &str, got: &[u8], want: &[u8]) -> Result<(), RowError> {
    if got == want {
        Ok(())
    } else {
        Err(RowError::WrongAnswer(format!(
            "{what}: {} bytes instead of the expected {}",
            got.len(),
            want.len()
        )))
    }
}

/// One `KVM_RUN` round trip of a bare VM's `out` loop, at CPL 3 when
/// `user_mode`, else at CPL 0.
pub fn exit_floor(user_mode: bool) -> Result<Sampler, RowError> {
    let mut floor = ExitFloor::new(user_mode)?;
    Ok(Box::new(move || Ok(micros(floor.round_trip()?))))
}

/// The kill of a bare VM spinning at CPL 3, from the kill to `KVM_RUN`
/// returning.
pub fn kill_floor() -> Result<Sampler, RowError> {
    let mut floor = KillFloor::new(KILL_SETTLE)?;
    Ok(Box::new(move || Ok(micros(floor.kill_latency()?))))
}

/// Create + drop of a bare VM with one vCPU and one memory slot.
pub fn vm_floor() -> Result<Sampler, RowError> {
    Ok(Box::new(|| Ok(micros(floor::vm_lifecycle()?))))
}

/// One round trip of two host threads bouncing a cache line per sample,
/// timed like the resident call rows it is the floor of (one call per
/// sample): a batch of round trips pipelines and carries no timer, and
/// reads ~2x lower.
pub fn ping_pong() -> Result<Sampler, RowError> {
    let mut pp = PingPong::new()?;
    Ok(Box::new(move || Ok(micros(pp.round_trips(1)))))
}

/// Calls `fn_id` with `payload` in a sandbox booted with `cfg` (and the
/// CLI's host functions when `host_fns`), after checking the first answer
/// is `want`.
fn call(
    cfg: SandboxConfiguration,
    host_fns: bool,
    fn_id: u32,
    payload: Vec<u8>,
    want: Vec<u8>,
) -> Result<Sampler, RowError> {
    let mut s = boot(cfg, host_fns)?;
    expect_answer("first call", &s.call_raw(fn_id, &payload)?, &want)?;
    Ok(Box::new(move || {
        let (answer, us) = timed(|| s.call_raw(fn_id, &payload));
        answer?;
        Ok(us)
    }))
}

/// One `call_raw` of the default guest's echo of `size` bytes.
pub fn echo(cfg: SandboxConfiguration, size: usize) -> Result<Sampler, RowError> {
    let payload = vec![0x5a; size];
    call(cfg, false, fn_id::ECHO, payload.clone(), payload)
}

/// One typed call (`MultiUseSandbox::call`, postcard both ways) of the
/// default guest's `F` with `args`, whose answer must be `want`.
fn typed_call<F>(
    cfg: SandboxConfiguration,
    args: F::Args,
    want: F::Ret,
) -> Result<Sampler, RowError>
where
    F: nub_sandbox::nub_interface::Function,
    F::Ret: PartialEq,
    F::Err: std::fmt::Debug,
{
    let mut s = boot(cfg, false)?;
    let typed = move |s: &mut MultiUseSandbox| {
        s.call::<F>(&args)
            .map_err(|e| RowError::WrongAnswer(format!("typed call of {}: {e}", F::NAME)))
    };
    if typed(&mut s)? != want {
        return Err(RowError::WrongAnswer(format!("{} answered wrong", F::NAME)));
    }
    Ok(Box::new(move || {
        let (answer, us) = timed(|| typed(&mut s));
        answer?;
        Ok(us)
    }))
}

/// A typed call of the default guest's `AddPair` (two u64 → u64).
pub fn typed_small(cfg: SandboxConfiguration) -> Result<Sampler, RowError> {
    use nub_host_common::default_guest::typed::{AddPair, Pair};
    typed_call::<AddPair>(cfg, Pair { a: 40, b: 2 }, 42)
}

/// A typed call of the default guest's `EchoBytes` with 4 KiB (as
/// `nub_interface::Bytes`).
pub fn typed_4k(cfg: SandboxConfiguration) -> Result<Sampler, RowError> {
    use nub_host_common::default_guest::typed::EchoBytes;
    let bytes = nub_sandbox::nub_interface::Bytes::from(vec![0x5a; 4 << 10]);
    typed_call::<EchoBytes>(cfg, bytes.clone(), bytes)
}

/// `host_echo` through the CLI's host fn 1 (echo): two transitions.
pub fn host_call(cfg: SandboxConfiguration) -> Result<Sampler, RowError> {
    let mut payload = host_fns::ECHO.to_le_bytes().to_vec();
    payload.extend_from_slice(b"ping");
    call(cfg, true, fn_id::HOST_ECHO, payload, b"ping".to_vec())
}

/// A `call_batch` of 100 empty echos, per call.
pub fn batch(cfg: SandboxConfiguration) -> Result<Sampler, RowError> {
    let mut s = boot(cfg, false)?;
    let batch: Vec<(u32, &'static [u8])> = (0..OPS_PER_SAMPLE)
        .map(|_| (fn_id::ECHO, &b""[..]))
        .collect();
    let answers = s.call_batch(&batch)?;
    if answers.len() != batch.len() || answers.iter().any(|a| !matches!(a, Ok(v) if v.is_empty())) {
        return Err(RowError::WrongAnswer("a batch of empty echos".into()));
    }
    Ok(Box::new(move || {
        let (answers, us) = timed(|| s.call_batch(&batch));
        for answer in answers? {
            answer?;
        }
        Ok(us / f64::from(OPS_PER_SAMPLE))
    }))
}

/// `put_cap` of a new 64-byte inline cap, in a sandbox with a 16 MiB heap
/// (a fresh one every 4096 caps, untimed).
pub fn put_cap(cfg: SandboxConfiguration) -> Result<Sampler, RowError> {
    let cfg = cfg.with_heap_size(16 << 20);
    let mut s = boot(cfg, false)?;
    let mut sent = 0u32;
    let mut serial = 0u64;
    Ok(Box::new(move || {
        if sent == CAPS_PER_SANDBOX {
            s = boot(cfg, false)?;
            sent = 0;
        }
        sent += 1;
        serial += 1;
        // A new cap each time: 64 bytes, the first 8 a serial.
        let mut data = [0u8; 64];
        data[..8].copy_from_slice(&serial.to_le_bytes());
        let cap = Cap::inline(data.to_vec());
        let (hash, us) = timed(|| s.put_cap(&cap));
        hash?;
        Ok(us)
    }))
}

/// `put_cap_with_hash` of a cap the guest holds (the reader answers; no
/// exit), 100 per sample.
pub fn put_cap_with_hash(cfg: SandboxConfiguration) -> Result<Sampler, RowError> {
    let mut s = boot(cfg, false)?;
    let cap = Cap::inline(vec![1u8; 64]);
    let hash = s.put_cap(&cap)?;
    Ok(Box::new(move || {
        let (result, us) =
            timed(|| (0..OPS_PER_SAMPLE).try_for_each(|_| s.put_cap_with_hash(hash, &cap)));
        result?;
        Ok(us / f64::from(OPS_PER_SAMPLE))
    }))
}

/// Threads that keep every core busy until dropped.
struct Spinners {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Spinners {
    /// One spinning thread per core.
    fn start() -> Result<Self, RowError> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let stop = Arc::new(AtomicBool::new(false));
        let mut spinners = Self {
            stop: Arc::clone(&stop),
            threads: Vec::with_capacity(cores),
        };
        for i in 0..cores {
            let stop = Arc::clone(&stop);
            let thread = std::thread::Builder::new()
                .name(format!("bench-spin-{i}"))
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })?;
            spinners.threads.push(thread);
        }
        Ok(spinners)
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            // A spinner cannot panic; a join error would only mean it did.
            let _ = thread.join();
        }
    }
}

/// Empty echoes in a sandbox booted with `cfg` while spinner threads keep
/// every core busy (started here, stopped when the sampler is dropped).
pub fn loaded_echo(cfg: SandboxConfiguration) -> Result<Sampler, RowError> {
    let mut call = call(cfg, false, fn_id::ECHO, Vec::new(), Vec::new())?;
    let spinners = Spinners::start()?;
    Ok(Box::new(move || {
        let _busy = &spinners;
        call()
    }))
}

/// A call after three back-to-back calls and a pause of 20 resident spin
/// windows: in resident mode the guest spun, then parked; in exit mode the
/// same pause shows what an idle machine costs any call (cold caches, a
/// core waking up), so the two rows compare like with like.
pub fn after_a_pause(cfg: SandboxConfiguration) -> Result<Sampler, RowError> {
    let mut s = boot(cfg, false)?;
    let pause = match CallMode::resident() {
        CallMode::Resident { spin } => spin * 20,
        CallMode::Exit => Duration::from_millis(2),
    };
    Ok(Box::new(move || {
        for _ in 0..3 {
            s.call_raw(fn_id::ECHO, b"")?;
        }
        std::thread::sleep(pause);
        let (answer, us) = timed(|| s.call_raw(fn_id::ECHO, b""));
        answer?;
        Ok(us)
    }))
}

/// `UninitializedSandbox::new` (ELF already in memory) + `evolve` with the
/// default configuration; the drop is not timed.
pub fn create_evolve() -> Result<Sampler, RowError> {
    Ok(Box::new(move || {
        let bin = GuestBinary::Buffer(DEFAULT_GUEST.to_vec());
        let (sandbox, us) = timed(|| {
            UninitializedSandbox::new(bin, Some(SandboxConfiguration::default()))?.evolve()
        });
        drop(sandbox?);
        Ok(us)
    }))
}

/// Dropping an evolved sandbox, as the caller sees it (the boot is not
/// timed).
pub fn drop_sandbox() -> Result<Sampler, RowError> {
    Ok(Box::new(move || {
        let sandbox = boot(SandboxConfiguration::default(), false)?;
        Ok(timed(|| drop(sandbox)).1)
    }))
}

/// One timed create + evolve + empty echo + drop of a default-guest
/// sandbox with `cfg`, in microseconds.
fn one_cycle(cfg: SandboxConfiguration) -> Result<f64, RowError> {
    let bin = GuestBinary::Buffer(DEFAULT_GUEST.to_vec());
    let (answer, us) = timed(|| -> Result<Vec<u8>, HyperlightError> {
        let mut s = UninitializedSandbox::new(bin, Some(cfg))?.evolve()?;
        s.call_raw(fn_id::ECHO, b"")
    });
    answer?;
    Ok(us)
}

/// The recovery path without the VM pool: new, evolve, one empty echo,
/// drop, with a new VM every cycle.
pub fn cycle_without_pool() -> Result<Sampler, RowError> {
    Ok(Box::new(move || {
        one_cycle(SandboxConfiguration::default().with_vm_pool(false))
    }))
}

/// The same cycle with the VM pool (the default): each cycle's VM is the
/// previous cycle's, reset. One VM is put in the pool before the first
/// sample.
pub fn cycle_with_pool() -> Result<Sampler, RowError> {
    drop(boot(SandboxConfiguration::default(), false)?);
    Ok(Box::new(move || one_cycle(SandboxConfiguration::default())))
}

/// An image of the default guest with the default configuration (1 MiB
/// heap, exit mode, the pool on), captured after one empty echo: the
/// image every image row starts from.
fn default_image() -> Result<Arc<SandboxImage>, RowError> {
    let mut s = boot(SandboxConfiguration::default(), false)?;
    expect_answer("first call", &s.call_raw(fn_id::ECHO, b"")?, b"")?;
    Ok(s.capture_image()?)
}

/// `MultiUseSandbox::from_image` of [`default_image`] with the pool on
/// (the image's configuration, `None`), as `create+evolve` times a boot:
/// the drop is not timed, and its VM is the next sample's, reset to the
/// image. One VM is put in the pool before the first sample.
pub fn create_from_image() -> Result<Sampler, RowError> {
    let image = default_image()?;
    drop(MultiUseSandbox::from_image(&image, None)?);
    Ok(Box::new(move || {
        let (sandbox, us) = timed(|| MultiUseSandbox::from_image(&image, None));
        drop(sandbox?);
        Ok(us)
    }))
}

/// The recovery path from an image, with the pool on: from_image of
/// [`default_image`], one empty echo, drop, all timed (as
/// `create+evolve+call+drop (pool)` times it from a boot).
pub fn image_cycle_with_pool() -> Result<Sampler, RowError> {
    let image = default_image()?;
    drop(MultiUseSandbox::from_image(&image, None)?);
    Ok(Box::new(move || {
        let (answer, us) = timed(|| -> Result<Vec<u8>, HyperlightError> {
            let mut s = MultiUseSandbox::from_image(&image, None)?;
            s.call_raw(fn_id::ECHO, b"")
        });
        answer?;
        Ok(us)
    }))
}

/// `SandboxImage::load` of [`default_image`] saved once to a file in a
/// temporary directory (removed with the sampler): each sample loads the
/// file anew (read, check, build its memory) from a warm page cache; the
/// loaded image's drop is not timed.
pub fn load_image() -> Result<Sampler, RowError> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("default-guest.img");
    default_image()?.save(&path)?;
    Ok(Box::new(move || {
        let _dir = &dir;
        let (image, us) = timed(|| SandboxImage::load(&path));
        drop(image?);
        Ok(us)
    }))
}

/// The time from a kill until the default guest's `spin` in `sandbox`
/// returned, killed from `killer`'s thread.
fn time_kill(killer: &mut Killer, sandbox: &mut MultiUseSandbox) -> Result<Duration, RowError> {
    let handle = sandbox.interrupt_handle();
    let (result, latency) = killer.time_kill(Box::new(move || handle.kill()), || {
        sandbox.call_raw(fn_id::SPIN, b"")
    })?;
    match result {
        Err(HyperlightError::Canceled) => Ok(latency),
        Err(e) => Err(e.into()),
        Ok(answer) => Err(RowError::WrongAnswer(format!(
            "spin returned {} bytes instead of being killed",
            answer.len()
        ))),
    }
}

/// A fresh sandbox in the default guest's `spin` (fn 9), killed 1 ms
/// after the call starts through its `InterruptHandle`: from the kill to
/// `call_raw` returning `Canceled` (boot and drop untimed).
pub fn kill_latency() -> Result<Sampler, RowError> {
    let mut killer = Killer::new(KILL_SETTLE)?;
    Ok(Box::new(move || {
        let mut sandbox = boot(SandboxConfiguration::default(), false)?;
        Ok(micros(time_kill(&mut killer, &mut sandbox)?))
    }))
}

/// This process's resident set in KiB (`VmRSS` in `/proc/self/status`).
fn rss_kib() -> Result<f64, std::io::Error> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u32>().ok())
        .map(f64::from)
        .ok_or_else(|| std::io::Error::other("no VmRSS line in /proc/self/status"))
}

/// VmRSS growth of the process over [`RSS_SANDBOXES`] sandboxes made by
/// `make` and called once each, divided by their number, in KiB.
fn rss_sample(
    make: &mut dyn FnMut() -> Result<MultiUseSandbox, HyperlightError>,
) -> Result<f64, RowError> {
    // VMs the reaper has not destroyed yet (the previous sample's) would
    // still count in `before` and leave the sample.
    nub_sandbox::pool::wait_idle();
    let before = rss_kib()?;
    // Each sandbox made and called once (an idle, used sandbox).
    let alive = (0..RSS_SANDBOXES)
        .map(|_| {
            let mut s = make()?;
            s.call_raw(fn_id::ECHO, b"")?;
            Ok(s)
        })
        .collect::<Result<Vec<_>, RowError>>()?;
    let after = rss_kib()?;
    drop(alive);
    // 32 is exact in f64.
    Ok((after - before) / RSS_SANDBOXES as f64)
}

/// VmRSS growth of the process over [`RSS_SANDBOXES`] sandboxes booted and
/// called once, divided by their number, in KiB.
pub fn rss_per_sandbox() -> Result<Sampler, RowError> {
    Ok(Box::new(|| {
        rss_sample(&mut || boot(SandboxConfiguration::default(), false))
    }))
}

/// The same with the [`RSS_SANDBOXES`] sandboxes started from one image
/// ([`default_image`], captured after a call; made before the first
/// sample, so its own memory is not in the figure), each called once.
/// VmRSS counts a mapped page once per mapping: the image's pages the
/// guest wrote before the capture and only reads now (in its writable
/// ranges, so in each VM's private mapping) count once per sandbox here,
/// though the machine holds them once.
pub fn rss_per_sandbox_from_image() -> Result<Sampler, RowError> {
    let image = default_image()?;
    Ok(Box::new(move || {
        rss_sample(&mut || MultiUseSandbox::from_image(&image, None))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_proc() {
        assert!(rss_kib().unwrap() > 0.0);
    }
}
