//! Restart policy of a supervisor: restart a failed child with exponential backoff, at most
//! `max_restarts` times in a sliding `window`, then escalate (give up on the child).
//!
//! ractor has no restart strategy of its own (its default stops the parent when a child
//! exits), so every supervisor in Switchboard keeps one [`RestartTracker`] per child.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Limits of a restart policy.
#[derive(Clone, Debug)]
pub struct RestartPolicy {
    /// Most restarts allowed inside `window` before escalating.
    pub max_restarts: u32,
    /// The sliding window restarts are counted in.
    pub window: Duration,
    /// Delay before the first restart; doubled on each further restart in the window.
    pub base_backoff: Duration,
    /// Upper bound of the delay.
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(60),
            base_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// What a supervisor should do about a failed child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart it after this delay.
    Restart(Duration),
    /// Too many failures: stop restarting and report upwards.
    Escalate,
}

/// Failure history of one child.
#[derive(Clone, Debug, Default)]
pub struct RestartTracker {
    failures: VecDeque<Instant>,
}

impl RestartTracker {
    /// Records a failure at `now` and decides what to do.
    pub fn on_failure(&mut self, policy: &RestartPolicy, now: Instant) -> RestartDecision {
        while let Some(&first) = self.failures.front() {
            if now.duration_since(first) > policy.window {
                self.failures.pop_front();
            } else {
                break;
            }
        }
        if self.failures.len() >= policy.max_restarts as usize {
            return RestartDecision::Escalate;
        }
        let exponent = self.failures.len().min(16) as u32;
        self.failures.push_back(now);
        let backoff = policy.base_backoff.saturating_mul(1 << exponent).min(policy.max_backoff);
        RestartDecision::Restart(backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_then_escalates() {
        let policy = RestartPolicy {
            max_restarts: 3,
            window: Duration::from_secs(10),
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(250),
        };
        let mut t = RestartTracker::default();
        let now = Instant::now();
        assert_eq!(t.on_failure(&policy, now), RestartDecision::Restart(Duration::from_millis(100)));
        assert_eq!(t.on_failure(&policy, now), RestartDecision::Restart(Duration::from_millis(200)));
        assert_eq!(t.on_failure(&policy, now), RestartDecision::Restart(Duration::from_millis(250)));
        assert_eq!(t.on_failure(&policy, now), RestartDecision::Escalate);
        // Once the window has passed, the child gets a fresh budget.
        let later = now + Duration::from_secs(11);
        assert_eq!(t.on_failure(&policy, later), RestartDecision::Restart(Duration::from_millis(100)));
    }
}
