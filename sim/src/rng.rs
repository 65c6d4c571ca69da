//! The simulation's only source of randomness: SplitMix64 from the run's seed.

/// A small, fast, seedable generator (SplitMix64); the same seed gives the same run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A stretch of `0..end` (a fault's time while traffic is offered): from a random moment,
    /// for a tenth to a half of the span, cut off at `end`.
    pub fn stretch(&mut self, end: u64) -> (u64, u64) {
        let span = end.max(10);
        let start = self.below(span);
        let length = span / 10 + self.below(span * 4 / 10);
        (start, (start + length).min(end))
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}
