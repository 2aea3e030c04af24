//! Exponential back-off with deterministic jitter.

use std::time::Duration;

/// Exponential back-off: `base · 2^(attempt-1)`, capped at `max`, then reduced by up to
/// `jitter` (a fraction in `0.0..=1.0`) using a caller-supplied random value, so that core stays
/// deterministic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Fraction of the delay that is randomised away.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_millis(500), max: Duration::from_secs(60), jitter: 0.2 }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (1-based; 0 is treated as 1). `random` is any
    /// uniformly distributed `u64`.
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        let raw = self.base.saturating_mul(1u32 << exp.min(31)).min(self.max);
        let jitter = self.jitter.clamp(0.0, 1.0);
        #[allow(clippy::cast_precision_loss)]
        let unit = (random >> 11) as f64 / (1u64 << 53) as f64; // in [0, 1)
        raw.mul_f64(1.0 - jitter * unit)
    }
}

/// A tiny deterministic PRNG (xorshift64*), for jitter in state machines that must not read
/// randomness themselves. Seed it from the daemon's entropy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rng(u64);

impl Rng {
    /// Seeds the generator; a zero seed is replaced by a fixed non-zero one.
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let b = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(1), jitter: 0.0 };
        assert_eq!(b.delay(1, 0), Duration::from_millis(100));
        assert_eq!(b.delay(2, 0), Duration::from_millis(200));
        assert_eq!(b.delay(4, 0), Duration::from_millis(800));
        assert_eq!(b.delay(5, 0), Duration::from_secs(1));
        assert_eq!(b.delay(u32::MAX, 0), Duration::from_secs(1));
    }

    #[test]
    fn jitter_only_shortens() {
        let b = Backoff { base: Duration::from_secs(1), max: Duration::from_secs(1), jitter: 0.5 };
        let mut rng = Rng::new(7);
        for _ in 0..1000 {
            let d = b.delay(1, rng.next_u64());
            assert!(d <= Duration::from_secs(1) && d >= Duration::from_millis(500), "{d:?}");
        }
    }
}
