//! This node's lease, as every room of the node sees it: which term the node holds and until
//! when (on this process's monotonic clock) it may act on it.
//!
//! In a cluster, liveness is one lease per node (a row the node renews a few times a second)
//! and a room is owned by the node and term its ownership row names, while that term's lease
//! is live. The node's keeper renews the lease and moves the instant below; rooms and their
//! relay tables read it on every action, lock-free. A term ends for good when a renewal is
//! refused or when the instant passes without one: the keeper then starts a new term, which
//! invalidates every room of the old one at once (their ownership rows are dead in the
//! database from then on, and [`NodeLease::holds`] answers false for them here).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The node's lease: a term and the instant until which it may be acted on.
#[derive(Debug)]
pub struct NodeLease {
    /// The zero of `valid_until`.
    base: Instant,
    /// The term held (0: none yet).
    term: AtomicI64,
    /// Nanoseconds after `base` until which `term` may be acted on; 0 when it may not.
    valid_until: AtomicU64,
}

impl Default for NodeLease {
    fn default() -> Self {
        NodeLease::new()
    }
}

impl NodeLease {
    /// No term held yet.
    pub fn new() -> NodeLease {
        NodeLease { base: Instant::now(), term: AtomicI64::new(0), valid_until: AtomicU64::new(0) }
    }

    /// A lease already held at `term` until `until` (tests and single-process setups).
    pub fn held(term: i64, until: Instant) -> NodeLease {
        let lease = NodeLease::new();
        lease.begin(term, until);
        lease
    }

    fn nanos(&self, at: Instant) -> u64 {
        // 1 ns at least: 0 means "not valid".
        (at.saturating_duration_since(self.base).as_nanos() as u64).max(1)
    }

    /// Whether a room owned at `term` may act now. The instant is read before the term and the
    /// clock after both, so a term change in between is always seen (see [`NodeLease::begin`]).
    /// A lapse, once seen, is recorded (the instant is cleared), so that a renewal answered
    /// later cannot revive a term that a room has already stopped for: see
    /// [`NodeLease::extend`].
    pub fn holds(&self, term: i64) -> bool {
        loop {
            let until = self.valid_until.load(Ordering::SeqCst);
            let current = self.term.load(Ordering::SeqCst);
            if current != term || until == 0 {
                return false;
            }
            if self.nanos(Instant::now()) < until {
                return true;
            }
            // Lapsed: record it, unless a renewal moved the instant meanwhile (then look again).
            if self.valid_until.compare_exchange(until, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                return false;
            }
        }
    }

    /// The term held now, if it may be acted on.
    pub fn current(&self) -> Option<i64> {
        let term = self.term.load(Ordering::SeqCst);
        self.holds(term).then_some(term)
    }

    /// How long the current term may still be acted on without a renewal.
    pub fn remaining(&self) -> Option<Duration> {
        let until = self.valid_until.load(Ordering::SeqCst);
        let now = self.nanos(Instant::now());
        (until > now).then(|| Duration::from_nanos(until - now))
    }

    /// A new term, valid until `until`. Validity is withdrawn before the term changes, so no
    /// reader pairs the old term with the new term's instant.
    pub fn begin(&self, term: i64, until: Instant) {
        self.valid_until.store(0, Ordering::SeqCst);
        self.term.store(term, Ordering::SeqCst);
        self.valid_until.store(self.nanos(until), Ordering::SeqCst);
    }

    /// A renewal of `term` granted: valid until `until` (never moved back). False when the
    /// term had already lapsed (somebody saw it, or it was lost): the term must not be revived,
    /// since rooms may have stopped for it; the keeper starts a new one instead.
    pub fn extend(&self, term: i64, until: Instant) -> bool {
        let until = self.nanos(until);
        loop {
            let old = self.valid_until.load(Ordering::SeqCst);
            if old == 0 || self.term.load(Ordering::SeqCst) != term {
                return false;
            }
            let new = old.max(until);
            if self.valid_until.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                return true;
            }
        }
    }

    /// The term is over: nothing of it may act any more.
    pub fn lose(&self) {
        self.valid_until.store(0, Ordering::SeqCst);
    }

    /// The term last begun (valid or not).
    pub fn term(&self) -> i64 {
        self.term.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_term_holds_until_its_instant_and_not_after_a_new_term() {
        let lease = NodeLease::new();
        assert!(!lease.holds(0), "nothing held before the first term");
        lease.begin(3, Instant::now() + Duration::from_secs(60));
        assert!(lease.holds(3));
        assert!(!lease.holds(2));
        assert_eq!(lease.current(), Some(3));
        lease.begin(4, Instant::now() + Duration::from_secs(60));
        assert!(!lease.holds(3), "rooms of the old term stop at once");
        assert!(lease.holds(4));
        lease.lose();
        assert!(!lease.holds(4));
        assert_eq!(lease.current(), None);
    }

    #[test]
    fn renewals_extend_but_never_shorten_or_revive() {
        let far = Instant::now() + Duration::from_secs(60);
        let lease = NodeLease::held(1, Instant::now() + Duration::from_secs(1));
        assert!(lease.extend(1, far));
        assert!(lease.holds(1));
        assert!(lease.extend(1, Instant::now()));
        assert!(lease.holds(1), "an older renewal answered late does not shorten the lease");
        assert!(!lease.extend(2, far + Duration::from_secs(60)), "another term's renewal is refused");
        assert!(lease.remaining().is_some_and(|d| d <= Duration::from_secs(60)));

        let lapsed = NodeLease::held(1, Instant::now());
        assert!(!lapsed.holds(1), "an instant in the past holds nothing");
        assert!(!lapsed.extend(1, far), "a lapse once seen is never revived");
        assert!(!lapsed.holds(1));
    }
}
