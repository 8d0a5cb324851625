//! The VM pool: VMs that dropped sandboxes left behind, reset and reused by
//! new sandboxes, so that a rebuild does not pay for creating a VM.
//!
//! Creating a VM (`KVM_CREATE_VM`, its memory slots, a vCPU) costs most of a
//! millisecond here; resetting one costs tens of microseconds (see
//! docs/lifecycle.md). So dropping a sandbox whose
//! [`SandboxConfiguration::vm_pool`](crate::SandboxConfiguration::vm_pool)
//! is on (the default) puts its VM into this process-wide, bounded pool
//! ([`set_capacity`], [`DEFAULT_CAPACITY`]), and `evolve` takes one from it
//! when one of the same memory size is idle.
//!
//! **Reset** ([`nub_hypervisor::Vm::reset`]) makes the VM what a new VM
//! built from the guest's prepared image is: every page the old guest wrote
//! reads the image again (up to 64 written pages are copied back from the
//! image, more are discarded; a VM recycled for another image has that
//! image mapped over the old one), and the vCPU's general and special
//! registers (segments, FS/GS bases, control registers, CR2, descriptor
//! tables), its XSAVE state (x87, SSE, AVX, MXCSR) and its pending events
//! are a fresh vCPU's. MSRs other than the FS/GS bases, the debug registers
//! and XCR0 are not touched: only CPL 0 code can write them, and a nub
//! guest has none. Then the new guest boots from
//! its first instruction and runs its init: a recycled sandbox behaves
//! exactly like a new one; nothing of the old guest survives (this is not
//! snapshot/restore). Each sandbox gets its own interrupt state, so a handle
//! of a dropped sandbox never reaches the VM's next owner.
//!
//! **Who pays.** The dropping thread only puts the VM on the pool's dirty
//! list (a lock and a push); the reaper thread (`reaper.rs`) resets it in
//! the background. A sandbox created before the reaper got to it resets it
//! on its own thread, or waits for the reaper if it is busy with that very
//! VM. VMs that must be destroyed (pool full or off, or a VM whose vCPU
//! state is uncertain: any exit other than an `out`, any failed ioctl, a
//! failed reset) are destroyed on the reaper thread too.

use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};

use nub_hypervisor::{VcpuInterrupt, Vm};

use crate::{
    error::{HyperlightError, Result},
    image::MemoryImage,
    reaper,
};

/// How many idle VMs the pool keeps unless told otherwise
/// ([`set_capacity`]). An idle VM holds two file descriptors and the
/// kernel's VM and vCPU structures, but no guest memory (its pages were
/// discarded).
pub const DEFAULT_CAPACITY: usize = 16;

/// VMs waiting for the reaper to destroy them beyond which a drop destroys
/// its VM itself: the queue stays bounded however fast sandboxes drop.
const MAX_DOOMED: usize = 64;

/// The pool's counters since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Idle VMs in the pool now (reset or waiting to be).
    pub idle: usize,
    /// VMs created because none was idle (or the sandbox opted out).
    pub created: u64,
    /// VMs taken from the pool.
    pub reused: u64,
    /// VMs destroyed instead of pooled: the sandbox opted out, the pool
    /// was full, the VM's state was uncertain or its reset failed.
    pub discarded: u64,
}

/// An idle VM and the image it was (or is to be) reset to.
struct Entry {
    vm: Vm,
    image: Arc<MemoryImage>,
}

struct State {
    /// Reset to their image: ready.
    clean: Vec<Entry>,
    /// As their sandbox left them: the reaper (or a taker) resets them.
    dirty: Vec<Entry>,
    /// Memory sizes of the VMs the reaper is resetting now.
    cleaning: Vec<u64>,
    /// VMs the reaper is to destroy.
    doomed: Vec<Vm>,
    /// VMs the reaper is destroying now.
    destroying: usize,
    capacity: usize,
    stats: PoolStats,
}

impl State {
    fn idle(&self) -> usize {
        self.clean.len() + self.dirty.len() + self.cleaning.len()
    }
}

struct Pool {
    state: Mutex<State>,
    /// The reaper waits here for work.
    work: Condvar,
    /// Signalled whenever the reaper finished something: takers waiting
    /// for a VM being reset, [`wait_idle`].
    done: Condvar,
}

fn pool() -> &'static Pool {
    static POOL: LazyLock<Pool> = LazyLock::new(|| Pool {
        state: Mutex::new(State {
            clean: Vec::new(),
            dirty: Vec::new(),
            cleaning: Vec::new(),
            doomed: Vec::new(),
            destroying: 0,
            capacity: DEFAULT_CAPACITY,
            stats: PoolStats::default(),
        }),
        work: Condvar::new(),
        done: Condvar::new(),
    });
    &POOL
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic elsewhere (plain data).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `vm` to the reaper for destruction (or destroys it here when
    /// there is no reaper or its queue is full).
    fn doom(&self, mut state: MutexGuard<'_, State>, vm: Vm) {
        if state.doomed.len() < MAX_DOOMED && reaper::ensure_running(reap) {
            state.doomed.push(vm);
            drop(state);
            self.work.notify_one();
        } else {
            drop(state);
            drop(vm);
        }
    }

    /// An idle VM reset to `image`, if one of its size is (or is about to
    /// be) idle.
    fn take(&self, image: &Arc<MemoryImage>) -> Option<Vm> {
        let size = image.prepared.size();
        let mut state = self.lock();
        loop {
            let same = |e: &Entry| Arc::ptr_eq(&e.image, image);
            let fits = |e: &Entry| e.vm.memory().size() == size;
            if let Some(i) = state.clean.iter().rposition(same) {
                return Some(state.clean.swap_remove(i).vm);
            }
            // One that still needs a reset, to this image (a discard) or
            // to another of the same size (a remap): cheaper than a new VM.
            let found = if let Some(i) = state.dirty.iter().rposition(same) {
                Some(state.dirty.swap_remove(i))
            } else if let Some(i) = state.clean.iter().rposition(fits) {
                Some(state.clean.swap_remove(i))
            } else {
                state
                    .dirty
                    .iter()
                    .rposition(fits)
                    .map(|i| state.dirty.swap_remove(i))
            };
            if let Some(Entry { mut vm, .. }) = found {
                drop(state);
                if vm.reset(&image.prepared).is_ok() {
                    return Some(vm);
                }
                let mut locked = self.lock();
                locked.stats.discarded += 1;
                self.doom(locked, vm);
                state = self.lock();
                continue;
            }
            if state.cleaning.contains(&size) {
                // The reaper is resetting one: it is done in tens of µs.
                state = self.done.wait(state).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            return None;
        }
    }

    /// One unit of the reaper's work, waiting for it if there is none:
    /// reset a dirty VM (first: sandboxes may be waiting for it) or destroy
    /// a doomed one.
    fn reap(&self) {
        let mut state = self.lock();
        loop {
            if let Some(mut entry) = state.dirty.pop() {
                let size = entry.vm.memory().size();
                state.cleaning.push(size);
                drop(state);
                let reset = entry.vm.reset(&entry.image.prepared).is_ok();
                state = self.lock();
                if let Some(i) = state.cleaning.iter().position(|&s| s == size) {
                    state.cleaning.swap_remove(i);
                }
                if reset && state.idle() < state.capacity {
                    state.clean.push(entry);
                    drop(state);
                } else {
                    state.stats.discarded += 1;
                    drop(state);
                    drop(entry);
                }
                self.done.notify_all();
                return;
            }
            if let Some(vm) = state.doomed.pop() {
                state.destroying += 1;
                drop(state);
                drop(vm);
                self.lock().destroying -= 1;
                self.done.notify_all();
                return;
            }
            state = self.work.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The reaper thread's loop body (see [`crate::reaper`]).
fn reap() {
    pool().reap();
}

/// A VM for a sandbox of `image` whose calls `interrupt` is to stop: an
/// idle one from the pool, reset to the image (when `use_pool`), or a new
/// one. Returns it and whether it came from the pool.
pub(crate) fn acquire(
    image: &Arc<MemoryImage>,
    interrupt: Arc<VcpuInterrupt>,
    use_pool: bool,
) -> Result<(Vm, bool)> {
    let pool = pool();
    if use_pool && let Some(mut vm) = pool.take(image) {
        vm.replace_interrupt(interrupt);
        pool.lock().stats.reused += 1;
        return Ok((vm, true));
    }
    let handles = Arc::clone(&interrupt);
    match Vm::from_image(&image.prepared, interrupt) {
        Ok(vm) => {
            pool.lock().stats.created += 1;
            Ok((vm, false))
        }
        Err(e) => {
            // No VM will ever run with it: handles learn it is gone.
            handles.mark_dropped();
            Err(HyperlightError::from(e))
        }
    }
}

/// Takes `vm` back from a sandbox of `image` that is going away: every
/// interrupt handle on it becomes inert now; the VM goes to the pool's
/// dirty list (the reaper resets it) when `use_pool`, the pool has room and
/// its state is resettable; otherwise the reaper destroys it. Never blocks
/// on KVM.
pub(crate) fn retire(vm: Vm, image: &Arc<MemoryImage>, use_pool: bool) {
    vm.interrupt().mark_dropped();
    let pool = pool();
    let mut state = pool.lock();
    if use_pool && vm.is_resettable() && state.idle() < state.capacity {
        state.dirty.push(Entry {
            vm,
            image: Arc::clone(image),
        });
        drop(state);
        // Without a reaper the VM stays dirty; the next taker resets it.
        if reaper::ensure_running(reap) {
            pool.work.notify_one();
        }
        return;
    }
    state.stats.discarded += 1;
    pool.doom(state, vm);
}

/// The pool's counters.
pub fn stats() -> PoolStats {
    let state = pool().lock();
    PoolStats {
        idle: state.idle(),
        ..state.stats
    }
}

/// The most idle VMs the pool keeps.
pub fn capacity() -> usize {
    pool().lock().capacity
}

/// Sets the most idle VMs the pool keeps; 0 turns pooling off for the
/// whole process. Idle VMs beyond the new capacity are handed to the
/// reaper for destruction. When this returns the pool holds at most
/// `capacity` idle VMs: a VM the reaper is resetting at that moment is
/// waited for (tens of µs) and then discarded.
pub fn set_capacity(capacity: usize) {
    let pool = pool();
    let mut state = pool.lock();
    state.capacity = capacity;
    while state.idle() > state.capacity {
        if let Some(entry) = state.clean.pop().or_else(|| state.dirty.pop()) {
            state.stats.discarded += 1;
            pool.doom(state, entry.vm);
            state = pool.lock();
        } else {
            // The rest is being reset: the reaper sees the new capacity
            // when it finishes, discards the VM and signals `done`.
            state = pool.done.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Blocks until the reaper has nothing left to do: every VM handed to it
/// is destroyed or reset. For callers that count file descriptors or
/// memory at a quiet point (tests, soak runs).
pub fn wait_idle() {
    let pool = pool();
    let mut state = pool.lock();
    while !state.doomed.is_empty()
        || state.destroying > 0
        || !state.cleaning.is_empty()
        || (!state.dirty.is_empty() && reaper::is_running())
    {
        state = pool.done.wait(state).unwrap_or_else(|e| e.into_inner());
    }
}
