//! [`ResendTimer`]: how long one group's retained logs wait uncovered before they are sent again,
//! adapted to how long commit vectors take to cover them (RFC 6298's estimator, with its backoff
//! and Karn's rule), never below the configured timeout and never above [`CEILING`] times it.
//!
//! A fixed timeout resends every retained log once commit vectors take longer than it to come
//! back, which they do when the chain is loaded: queues grow, the resends add to them, and each
//! resend costs a frame and a duplicate at the successor. The estimate follows the time from a
//! log's first sending to the commit vector that covers it; logs sent again give no sample
//! (which copy was covered is unknown), and each round of resends doubles the timeout until a
//! sample comes, so that a chain whose every log outlives the timeout still learns.

/// The adapted timeout stays within this many times the configured one: a lost log is sent
/// again within that, however slow commit vectors were before.
pub(crate) const CEILING: u64 = 8;

/// Most doublings of the timeout without a sample (2^3 = [`CEILING`]).
const MAX_BACKOFF: u32 = 3;

/// The round-trip estimate of one group's retained logs.
#[derive(Debug, Clone, Default)]
pub(crate) struct ResendTimer {
    /// Smoothed time to coverage and its mean deviation (ns), once a sample came.
    estimate: Option<(u64, u64)>,
    /// Doublings since the last sample.
    backoff: u32,
}

impl ResendTimer {
    /// A log sent once was covered `elapsed` ns after it was sent.
    pub(crate) fn sample(&mut self, elapsed: u64) {
        self.estimate = Some(match self.estimate {
            None => (elapsed, elapsed / 2),
            Some((srtt, rttvar)) => (
                srtt - srtt / 8 + elapsed / 8,
                rttvar - rttvar / 4 + srtt.abs_diff(elapsed) / 4,
            ),
        });
        self.backoff = 0;
    }

    /// A round of resent logs arrived (a commit vector covers its last): the resends were
    /// needed, not early, so the timeout goes back to the estimate.
    pub(crate) fn round_arrived(&mut self) {
        self.backoff = 0;
    }

    /// Logs were sent again: wait twice as long before the next round.
    pub(crate) fn backed_off(&mut self) {
        self.backoff = (self.backoff + 1).min(MAX_BACKOFF);
    }

    /// How long a log may stay uncovered, given the configured timeout `floor`.
    pub(crate) fn timeout(&self, floor: u64) -> u64 {
        let base = self.estimate.map_or(floor, |(srtt, rttvar)| {
            srtt.saturating_add(rttvar.saturating_mul(4))
        });
        base.saturating_mul(1 << self.backoff)
            .clamp(floor, floor.saturating_mul(CEILING))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn without_samples_the_configured_timeout_holds() {
        assert_eq!(ResendTimer::default().timeout(10 * MS), 10 * MS);
    }

    #[test]
    fn steady_samples_above_the_floor_raise_it_to_the_round_trip_and_some() {
        let mut t = ResendTimer::default();
        for _ in 0..50 {
            t.sample(30 * MS);
        }
        // The deviation decays towards 0 with equal samples: the timeout nears 30 ms.
        let timeout = t.timeout(10 * MS);
        assert!((30 * MS..32 * MS).contains(&timeout), "{timeout}");
        // Fast round trips leave the floor in force.
        let mut fast = ResendTimer::default();
        fast.sample(MS / 10);
        assert_eq!(fast.timeout(10 * MS), 10 * MS);
    }

    #[test]
    fn a_jittery_round_trip_keeps_a_margin() {
        let mut t = ResendTimer::default();
        for i in 0..100 {
            t.sample(if i % 2 == 0 { 10 * MS } else { 30 * MS });
        }
        // srtt about 20 ms, deviation about 10 ms: 20 + 4 · 10.
        let timeout = t.timeout(10 * MS);
        assert!((50 * MS..=70 * MS).contains(&timeout), "{timeout}");
    }

    #[test]
    fn the_ceiling_bounds_even_slow_round_trips() {
        let mut t = ResendTimer::default();
        t.sample(500 * MS);
        assert_eq!(t.timeout(10 * MS), CEILING * 10 * MS);
    }

    #[test]
    fn resends_double_the_timeout_up_to_the_ceiling_and_a_sample_resets_it() {
        let mut t = ResendTimer::default();
        let floor = 10 * MS;
        let mut seen = Vec::new();
        for _ in 0..5 {
            t.backed_off();
            seen.push(t.timeout(floor) / MS);
        }
        assert_eq!(seen, [20, 40, 80, 80, 80]);
        // A first sample r gives r + 4 · r/2.
        t.sample(12 * MS);
        assert_eq!(t.timeout(floor), 36 * MS);
    }
}
