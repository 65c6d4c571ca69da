//! Failure injection on the data path between servers: `ftc node --ring-loss P` drops each frame
//! that arrives from another server with probability P, as a lossy link would, so that the
//! protocol's repair (holds, retransmission requests and their answers) runs on real links.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Drops frames from other servers at random, at a set rate.
#[derive(Debug)]
pub struct RingLoss {
    /// The chance of each frame to be dropped, in `[0, 1)`.
    chance: f64,
    rng: fastrand::Rng,
    /// Shared with its forks ([`RingLoss::fork`]).
    dropped: Arc<AtomicU64>,
}

/// Why a loss rate was refused.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("a ring loss rate is a probability below 1 (0 for none), not {0}")]
pub struct BadLossRate(pub f64);

impl RingLoss {
    /// Whether `chance` is a loss rate: a probability below 1 (0: no loss).
    pub fn check(chance: f64) -> Result<(), BadLossRate> {
        if (0.0..1.0).contains(&chance) {
            Ok(())
        } else {
            Err(BadLossRate(chance))
        }
    }

    /// Drops with probability `chance` (0: never), from a generator seeded with `seed`.
    pub fn new(chance: f64, seed: u64) -> Result<Self, BadLossRate> {
        Self::check(chance)?;
        Ok(RingLoss {
            chance,
            rng: fastrand::Rng::with_seed(seed),
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Another at the same rate, for another thread (a lane reading its own links), from a
    /// generator seeded by this one's; what it drops counts here too.
    pub fn fork(&mut self) -> RingLoss {
        RingLoss {
            chance: self.chance,
            rng: self.rng.fork(),
            dropped: Arc::clone(&self.dropped),
        }
    }

    /// Whether to drop the frame that just arrived (counted when so).
    #[inline]
    pub fn drops(&mut self) -> bool {
        let drop = self.chance > 0.0 && self.rng.f64() < self.chance;
        if drop {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        drop
    }

    /// Frames dropped so far, by this one and its forks.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_outside_zero_to_one_are_refused() {
        for bad in [-0.1, 1.0, 1.5, f64::NAN, f64::INFINITY] {
            assert!(RingLoss::new(bad, 1).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_loss_drops_nothing() {
        let mut loss = RingLoss::new(0.0, 7).unwrap();
        assert!((0..10_000).all(|_| !loss.drops()));
        assert_eq!(loss.dropped(), 0);
    }

    #[test]
    fn a_fork_drops_at_the_same_rate_and_counts_with_its_parent() {
        let mut loss = RingLoss::new(0.5, 3).unwrap();
        let mut fork = loss.fork();
        let by_fork = (0..1_000).filter(|_| fork.drops()).count() as u64;
        assert!((400..600).contains(&by_fork), "{by_fork}");
        let by_parent = (0..1_000).filter(|_| loss.drops()).count() as u64;
        assert_eq!(loss.dropped(), by_fork + by_parent);
        assert_eq!(fork.dropped(), loss.dropped());
    }

    #[test]
    fn drops_about_the_rate_and_counts_them() {
        let mut loss = RingLoss::new(0.1, 42).unwrap();
        let dropped = (0..100_000).filter(|_| loss.drops()).count() as u64;
        assert_eq!(dropped, loss.dropped());
        // 10,000 expected; the standard deviation is about 95.
        assert!((9_000..11_000).contains(&dropped), "{dropped}");
    }
}
