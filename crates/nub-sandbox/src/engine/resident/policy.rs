//! How the caller picks between letting the guest spin on the vCPU
//! thread and running calls itself (docs/resident.md, *The loaded-machine
//! path*).

use std::time::{Duration, Instant};

/// What the caller remembers to make that choice.
#[derive(Debug, Default)]
pub(super) struct Policy {
    /// When the last call the caller ran itself ended.
    pub(super) last_here: Option<Instant>,
    /// What a call the caller runs itself costs (a moving average).
    pub(super) here_cost: Option<Duration>,
    /// No VM is offered to the vCPU thread before this.
    pub(super) backoff_until: Option<Instant>,
    /// The current backoff (doubles with every spun call that lost).
    pub(super) backoff: Duration,
    /// The VM was offered to the vCPU thread and the next call should give
    /// it time to take it (`WAKE_SPIN`).
    pub(super) offered: bool,
}

/// The shortest and longest backoff after a spun call that lost to an
/// exit call.
pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(1);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(1);

impl Policy {
    /// After a call the caller ran itself, from `started` to `now`:
    /// remembers what it cost, and returns whether to offer the VM to the
    /// vCPU thread so the guest spins for the next call: calls come back
    /// to back (this one began within a `spin` window of the last one's
    /// end) and spinning has not lost lately.
    pub(super) fn after_here(&mut self, started: Instant, now: Instant, spin: Duration) -> bool {
        let cost = now.saturating_duration_since(started);
        self.here_cost = Some(match self.here_cost {
            Some(avg) => (avg * 7 + cost) / 8,
            None => cost,
        });
        let back_to_back = self
            .last_here
            .is_some_and(|end| started.saturating_duration_since(end) < spin);
        let backed_off = self.backoff_until.is_some_and(|until| now < until);
        self.last_here = Some(now);
        let offer = back_to_back && !backed_off;
        if offer {
            self.offered = true;
        }
        offer
    }

    /// After a call the guest answered while spinning (not the first after
    /// an offer, which pays the vCPU thread's wake-up). `waited` is how
    /// long past the first 64 polls it took (`None`: answered before). A
    /// call that took longer than a call run here would have (or than the
    /// spin window, if longer) lost: the machine cannot schedule both
    /// threads at once. Returns whether to ask the vCPU thread to hand the
    /// VM back; a win halves the backoff. The clock (`now`) is read only on
    /// a loss: a won call costs no clock read here.
    pub(super) fn after_spun(
        &mut self,
        waited: Option<Duration>,
        now: impl FnOnce() -> Instant,
        spin: Duration,
    ) -> bool {
        let par = self.here_cost.unwrap_or(spin).max(spin);
        if waited.is_none_or(|waited| waited <= par) {
            self.backoff /= 2;
            return false;
        }
        self.lost(now());
        true
    }

    /// Spinning lost (a spun call was slow, or the vCPU thread did not
    /// take the VM it was offered in time): no VM is offered for a backoff
    /// that doubles with each loss, from [`BACKOFF_MIN`] to [`BACKOFF_MAX`].
    pub(super) fn lost(&mut self, now: Instant) {
        self.backoff = (self.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
        self.backoff_until = Some(now + self.backoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPIN: Duration = Duration::from_micros(100);

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn back_to_back_calls_run_here_offer_the_vm() {
        let mut p = Policy::default();
        let t0 = Instant::now();
        assert!(
            !p.after_here(t0, t0 + us(30), SPIN),
            "a first call has no predecessor"
        );
        assert!(!p.offered);
        // The next call began 50 us after the last one ended.
        assert!(p.after_here(t0 + us(80), t0 + us(110), SPIN));
        assert!(p.offered);
        assert_eq!(p.here_cost, Some(us(30)));
    }

    #[test]
    fn calls_a_spin_window_apart_do_not() {
        let mut p = Policy::default();
        let t0 = Instant::now();
        p.after_here(t0, t0 + us(30), SPIN);
        assert!(!p.after_here(t0 + us(30) + SPIN, t0 + us(60) + SPIN, SPIN));
    }

    #[test]
    fn a_slow_spun_call_asks_for_the_vm_back_and_backs_off() {
        let mut p = Policy::default();
        let t0 = Instant::now();
        assert!(!p.after_spun(None, || t0, SPIN), "answered within 64 polls");
        assert!(!p.after_spun(Some(SPIN), || t0, SPIN), "as fast as par");
        assert!(p.after_spun(Some(SPIN * 3), || t0, SPIN));
        assert_eq!(p.backoff, BACKOFF_MIN);
        assert_eq!(p.backoff_until, Some(t0 + BACKOFF_MIN));
        // While backed off, back-to-back calls run here offer nothing.
        p.after_here(t0, t0 + us(10), SPIN);
        assert!(!p.after_here(t0 + us(20), t0 + us(30), SPIN));
    }

    #[test]
    fn losses_double_the_backoff_up_to_its_cap_and_wins_halve_it() {
        let mut p = Policy::default();
        let t0 = Instant::now();
        for _ in 0..40 {
            p.lost(t0);
        }
        assert_eq!(p.backoff, BACKOFF_MAX);
        p.after_spun(None, || t0, SPIN);
        assert_eq!(p.backoff, BACKOFF_MAX / 2);
        p.lost(t0);
        assert_eq!(p.backoff, BACKOFF_MAX);
    }

    #[test]
    fn par_is_the_cost_of_a_call_run_here_when_it_is_longer_than_the_spin() {
        let mut p = Policy {
            here_cost: Some(SPIN * 5),
            ..Policy::default()
        };
        let t0 = Instant::now();
        assert!(!p.after_spun(Some(SPIN * 4), || t0, SPIN));
        assert!(p.after_spun(Some(SPIN * 6), || t0, SPIN));
    }
}
