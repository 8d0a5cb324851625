//! The per-call deadline: one watchdog thread per process.
//!
//! A call with a deadline registers `(deadline, vCPU, generation)`; the
//! watchdog sleeps until the earliest deadline and then cancels that
//! generation through the same interrupt path as `kill()`. Because the
//! cancel names the generation, a deadline can only ever stop the call that
//! registered it. Finished calls unregister their entry.
//!
//! The same thread runs periodic checks ([`watch`]): a resident sandbox's
//! park watch (docs/resident.md) asks to be looked at every few
//! milliseconds while its guest runs, and the check decides whether the
//! guest has been running with no call open for too long. Checks run with
//! the watchdog's lock released, so a check may take other locks.
//!
//! The thread starts on the first armed deadline or watch. If it cannot be started
//! (the process is out of threads, say), arming fails with the spawn's
//! `io::Error` and the call does not run ([`arm`]); the next arm tries
//! again. A deadline is never silently ignored.

use std::{
    collections::BTreeMap,
    io,
    sync::{Arc, Condvar, Mutex, OnceLock, Weak},
    time::Instant,
};

use nub_hypervisor::{VcpuInterrupt, interrupt::CancelReason};

/// A periodic check the watchdog runs (see [`watch`]).
pub(crate) trait Watched: Send + Sync {
    /// Runs at (or after) the time it asked for; returns when to run next,
    /// or `None` to be forgotten.
    fn check(&self, now: Instant) -> Option<Instant>;
}

enum Entry {
    /// A call's deadline: cancel `generation` on `vcpu`.
    Cancel {
        vcpu: Weak<VcpuInterrupt>,
        generation: u64,
    },
    /// A periodic check.
    Check(Weak<dyn Watched>),
}

/// The deadlines the watchdog enforces.
#[derive(Default)]
struct Armed {
    /// Armed deadlines by (deadline, sequence number).
    entries: BTreeMap<(Instant, u64), Entry>,
    /// The last sequence number handed out.
    seq: u64,
    /// When the watchdog thread wakes next (`None`: it sleeps until
    /// notified). A deadline armed after that time needs no notification:
    /// the thread looks at the map when it wakes anyway. So a boot or call
    /// that arms and drops its deadline long before it expires (the common
    /// case) wakes the watchdog at most once per deadline period, not once
    /// per call.
    wake_at: Option<Instant>,
}

#[derive(Default)]
struct Shared {
    entries: Mutex<Armed>,
    wake: Condvar,
}

/// The process's watchdog: started once, by the first [`arm`] that
/// succeeds in spawning its thread.
struct Watchdog {
    started: OnceLock<Arc<Shared>>,
    /// Serialises start attempts, so at most one thread is ever spawned.
    starting: Mutex<()>,
}

impl Watchdog {
    const fn new() -> Self {
        Self {
            started: OnceLock::new(),
            starting: Mutex::new(()),
        }
    }

    /// The running watchdog's state, starting it with `spawn` (which gets
    /// the state the new thread must serve) if no start has succeeded yet.
    fn get_or_start(
        &self,
        spawn: impl FnOnce(Arc<Shared>) -> io::Result<()>,
    ) -> io::Result<&Arc<Shared>> {
        if let Some(shared) = self.started.get() {
            return Ok(shared);
        }
        let _starting = self.starting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = self.started.get() {
            return Ok(shared);
        }
        let shared = Arc::new(Shared::default());
        spawn(Arc::clone(&shared))?;
        Ok(self.started.get_or_init(|| shared))
    }
}

fn spawn_thread(shared: Arc<Shared>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("nub-watchdog".into())
        .spawn(move || run(&shared))
        .map(|_| ())
}

fn shared() -> io::Result<&'static Arc<Shared>> {
    static WATCHDOG: Watchdog = Watchdog::new();
    WATCHDOG.get_or_start(spawn_thread)
}

fn run(shared: &Shared) {
    let mut guard = shared.entries.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some(entry) = guard.entries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        if !due.is_empty() {
            // Cancels and checks take the interrupt's and the sandboxes'
            // locks: never under this one.
            drop(guard);
            let mut again = Vec::new();
            for entry in due {
                match entry {
                    Entry::Cancel { vcpu, generation } => {
                        if let Some(vcpu) = vcpu.upgrade() {
                            vcpu.kill_generation(generation, CancelReason::DeadlineExceeded);
                        }
                    }
                    Entry::Check(watched) => {
                        let next = watched.upgrade().and_then(|w| w.check(now));
                        if let Some(next) = next {
                            again.push((next, watched));
                        }
                    }
                }
            }
            guard = shared.entries.lock().unwrap_or_else(|e| e.into_inner());
            for (at, watched) in again {
                guard.seq += 1;
                let key = (at, guard.seq);
                guard.entries.insert(key, Entry::Check(watched));
            }
            continue;
        }
        let next = guard.entries.first_key_value().map(|(k, _)| k.0);
        guard.wake_at = next;
        guard = match next {
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

/// Inserts `entry` at `at`; returns its key. Wakes the thread if it
/// must run earlier than it planned to (or planned nothing).
fn insert(shared: &Shared, at: Instant, entry: Entry) -> (Instant, u64) {
    let mut guard = shared.entries.lock().unwrap_or_else(|e| e.into_inner());
    guard.seq += 1;
    let key = (at, guard.seq);
    let earliest = guard.wake_at.is_none_or(|wake_at| at < wake_at);
    guard.entries.insert(key, entry);
    drop(guard);
    if earliest {
        shared.wake.notify_one();
    }
    key
}

/// Runs `watched`'s check at `first`, and then whenever it asks, until it
/// returns `None` or is dropped. Fails only when the watchdog thread is not
/// running and cannot be started.
pub(crate) fn watch(first: Instant, watched: Weak<dyn Watched>) -> io::Result<()> {
    let shared: &'static Shared = shared()?;
    insert(shared, first, Entry::Check(watched));
    Ok(())
}

/// A registered deadline; dropping it unregisters.
pub(crate) struct Deadline {
    shared: &'static Shared,
    key: (Instant, u64),
}

/// Arms a deadline for call `generation` on `vcpu`. Fails only when the
/// watchdog thread is not running and cannot be started: the caller must
/// not run the call then, since nothing would enforce its deadline.
pub(crate) fn arm(
    deadline: Instant,
    vcpu: &Arc<VcpuInterrupt>,
    generation: u64,
) -> io::Result<Deadline> {
    let shared: &'static Shared = shared()?;
    let entry = Entry::Cancel {
        vcpu: Arc::downgrade(vcpu),
        generation,
    };
    let key = insert(shared, deadline, entry);
    Ok(Deadline { shared, key })
}

impl Drop for Deadline {
    fn drop(&mut self) {
        let mut guard = self
            .shared
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        guard.entries.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_start_is_an_error_and_the_next_arm_retries() {
        let watchdog = Watchdog::new();
        let refused = watchdog
            .get_or_start(|_| Err(io::Error::other("out of threads")))
            .map(Arc::as_ptr);
        assert_eq!(
            refused.unwrap_err().to_string(),
            "out of threads",
            "the spawn's error comes back"
        );
        assert!(watchdog.started.get().is_none(), "nothing is started");
        let mut spawned = 0;
        let first = watchdog
            .get_or_start(|_| {
                spawned += 1;
                Ok(())
            })
            .map(Arc::as_ptr)
            .unwrap();
        let second = watchdog
            .get_or_start(|_| panic!("already started"))
            .map(Arc::as_ptr)
            .unwrap();
        assert_eq!(spawned, 1);
        assert_eq!(first, second);
    }
}
