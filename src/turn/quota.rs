//! Allocations per user: at most `limit` live at once for one user (the `userId` of its
//! credentials), over the UDP and TCP listeners together, as coturn's `user-quota` does.
//!
//! `turn` 0.17's server says nothing when an allocation is made or ends, so the guard watches
//! both directions of its socket: an Allocate request names the user of a client address, the
//! server's success response to it (with its LIFETIME) makes the allocation live, a Refresh's
//! success response moves its end (a lifetime of zero ends it), and an allocation whose end has
//! passed counts no more. An Allocate beyond the quota is answered 486 (Allocation Quota
//! Reached) before the server sees it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Which allocation: the listener (UDP or TCP) and the client's address on it.
pub type Client = (u8, SocketAddr);

/// The users' live allocations, shared by a server's listeners.
#[derive(Debug)]
pub struct Quota {
    limit: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Allocations asked for and not answered yet: whose they are.
    asked: HashMap<Client, (String, Instant)>,
    /// Live allocations: whose, and until when.
    live: HashMap<Client, (String, Instant)>,
}

/// An Allocate request that is not answered within this time is forgotten.
const ASKED_FOR: Duration = Duration::from_secs(30);

impl Quota {
    /// At most `limit` allocations per user; 0: no limit.
    pub fn new(limit: usize) -> Quota {
        Quota { limit, state: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `client` asks for an allocation for `user`: false when the user has its quota already
    /// (an allocation this client holds already is not counted twice: the server answers
    /// that request itself).
    pub fn ask(&self, client: Client, user: &str, now: Instant) -> bool {
        let mut s = self.lock();
        s.live.retain(|_, (_, until)| *until > now);
        s.asked.retain(|_, (_, at)| now.duration_since(*at) < ASKED_FOR);
        if self.limit > 0 && !s.live.contains_key(&client) {
            let held = s.live.values().filter(|(u, _)| u == user).count();
            if held >= self.limit {
                return false;
            }
        }
        s.asked.insert(client, (user.to_owned(), now));
        true
    }

    /// The server granted `client`'s Allocate for `lifetime`.
    pub fn granted(&self, client: Client, lifetime: Duration, now: Instant) {
        let mut s = self.lock();
        if let Some((user, _)) = s.asked.remove(&client) {
            s.live.insert(client, (user, now + lifetime));
        }
    }

    /// The server refreshed `client`'s allocation for `lifetime` (zero: it ended).
    pub fn refreshed(&self, client: Client, lifetime: Duration, now: Instant) {
        let mut s = self.lock();
        if lifetime.is_zero() {
            s.live.remove(&client);
        } else if let Some((_, until)) = s.live.get_mut(&client) {
            *until = now + lifetime;
        }
    }

    /// Live allocations of `user`.
    pub fn held_by(&self, user: &str, now: Instant) -> usize {
        self.lock().live.values().filter(|(u, until)| u == user && *until > now).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(port: u16) -> Client {
        (0, SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn a_user_holds_at_most_its_quota_until_one_ends() {
        let q = Quota::new(2);
        let now = Instant::now();
        let ten_minutes = Duration::from_secs(600);
        for port in [1, 2] {
            assert!(q.ask(client(port), "alice", now));
            q.granted(client(port), ten_minutes, now);
        }
        assert!(!q.ask(client(3), "alice", now), "a third allocation is refused");
        assert!(q.ask(client(3), "bob", now), "another user has a quota of its own");
        assert!(q.ask(client(1), "alice", now), "a client asking again for what it holds is the server's to answer");
        // One ends (a Refresh of lifetime 0): the next one fits.
        q.refreshed(client(1), Duration::ZERO, now);
        assert!(q.ask(client(4), "alice", now));
        q.granted(client(4), ten_minutes, now);
        assert_eq!(q.held_by("alice", now), 2);
        // One runs out without a refresh; one is refreshed and stays.
        q.refreshed(client(4), Duration::from_secs(1200), now);
        let later = now + ten_minutes + Duration::from_secs(1);
        assert_eq!(q.held_by("alice", later), 1);
        assert!(q.ask(client(5), "alice", later));
    }

    #[test]
    fn no_limit_when_zero() {
        let q = Quota::new(0);
        let now = Instant::now();
        for port in 1..100 {
            assert!(q.ask(client(port), "alice", now));
            q.granted(client(port), Duration::from_secs(600), now);
        }
        assert_eq!(q.held_by("alice", now), 99);
    }
}
