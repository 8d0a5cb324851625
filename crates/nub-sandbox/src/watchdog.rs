//! The per-call deadline: one watchdog thread per process.
//!
//! A call with a deadline registers `(deadline, vCPU, generation)`; the
//! watchdog sleeps until the earliest deadline and then cancels that
//! generation through the same interrupt path as `kill()`. Because the
//! cancel names the generation, a deadline can only ever stop the call that
//! registered it. Finished calls unregister their entry.

use std::{
    collections::BTreeMap,
    sync::{Arc, Condvar, Mutex, OnceLock, Weak},
    time::Instant,
};

use nub_hypervisor::{VcpuInterrupt, interrupt::CancelReason};

struct Entry {
    vcpu: Weak<VcpuInterrupt>,
    generation: u64,
}

/// Armed deadlines by (deadline, sequence number), and the last sequence
/// number handed out.
type Armed = (BTreeMap<(Instant, u64), Entry>, u64);

#[derive(Default)]
struct Shared {
    entries: Mutex<Armed>,
    wake: Condvar,
}

fn shared() -> &'static Arc<Shared> {
    static WATCHDOG: OnceLock<Arc<Shared>> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        let shared = Arc::new(Shared::default());
        let worker = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("nub-watchdog".into())
            .spawn(move || run(&worker))
            .map(|_| ())
            .unwrap_or_else(|e| eprintln!("nub: cannot start the deadline watchdog: {e}"));
        shared
    })
}

fn run(shared: &Shared) {
    let mut guard = shared.entries.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        while let Some(entry) = guard.0.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let e = entry.remove();
            if let Some(vcpu) = e.vcpu.upgrade() {
                vcpu.kill_generation(e.generation, CancelReason::DeadlineExceeded);
            }
        }
        guard = match guard.0.first_key_value().map(|(k, _)| k.0) {
            Some(next) => {
                let wait = next.saturating_duration_since(Instant::now());
                shared
                    .wake
                    .wait_timeout(guard, wait)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0)
            }
            None => shared.wake.wait(guard).unwrap_or_else(|e| e.into_inner()),
        };
    }
}

/// A registered deadline; dropping it unregisters.
pub(crate) struct Deadline {
    key: (Instant, u64),
}

/// Arms a deadline for call `generation` on `vcpu`.
pub(crate) fn arm(deadline: Instant, vcpu: &Arc<VcpuInterrupt>, generation: u64) -> Deadline {
    let shared = shared();
    let mut guard = shared.entries.lock().unwrap_or_else(|e| e.into_inner());
    guard.1 += 1;
    let key = (deadline, guard.1);
    let earliest = guard.0.first_key_value().is_none_or(|(k, _)| key < *k);
    guard.0.insert(
        key,
        Entry {
            vcpu: Arc::downgrade(vcpu),
            generation,
        },
    );
    drop(guard);
    if earliest {
        shared.wake.notify_one();
    }
    Deadline { key }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        let mut guard = shared().entries.lock().unwrap_or_else(|e| e.into_inner());
        guard.0.remove(&self.key);
    }
}
