//! Reconnect delays: exponential with jitter, so that the clients of a node that died do not
//! all come back at the same instant.

use rand::Rng;
use std::time::Duration;

/// How long to wait before each reconnect attempt, and when to give up.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The delay before the second attempt; the first one is made at once, because most breaks
    /// (a dropped socket, a dead node) are mended by going to another node right away.
    pub initial: Duration,
    /// The delay never grows past this.
    pub max: Duration,
    /// Each attempt waits this many times longer than the one before.
    pub factor: f64,
    /// Each delay is drawn from `[d * (1 - jitter), d]`: 0 is no jitter, 1 is "full jitter".
    pub jitter: f64,
    /// Reconnecting stops after trying for this long (`None`: never).
    pub give_up_after: Option<Duration>,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            factor: 2.0,
            jitter: 0.5,
            give_up_after: Some(Duration::from_secs(60)),
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (0 is the first attempt after the break).
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        if attempt == 0 {
            return Duration::ZERO;
        }
        let exp = self.factor.max(1.0).powi(attempt.saturating_sub(1).min(64) as i32);
        let full = self.initial.as_secs_f64() * exp;
        let full = full.min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let low = full * (1.0 - jitter);
        let secs = if full > low { rng.random_range(low..=full) } else { full };
        Duration::from_secs_f64(secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn first_attempt_is_immediate_then_delays_grow_to_the_cap() {
        let b = Backoff { jitter: 0.0, ..Backoff::default() };
        let mut rng = StdRng::seed_from_u64(1);
        let delays: Vec<u128> = (0..10).map(|a| b.delay(a, &mut rng).as_millis()).collect();
        assert_eq!(delays, [0, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }

    #[test]
    fn jitter_stays_within_its_band_and_varies() {
        let b = Backoff::default();
        let mut rng = StdRng::seed_from_u64(7);
        let samples: Vec<Duration> = (0..200).map(|_| b.delay(3, &mut rng)).collect();
        for d in &samples {
            assert!(*d >= Duration::from_millis(200) && *d <= Duration::from_millis(400), "{d:?}");
        }
        let first = samples[0];
        assert!(samples.iter().any(|d| *d != first), "jitter must spread the delays");
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let b = Backoff::default();
        let mut rng = StdRng::seed_from_u64(3);
        assert!(b.delay(u32::MAX, &mut rng) <= b.max);
    }
}
