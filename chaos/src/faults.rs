//! The fault model and the seeded schedule: which faults, in what order, on which node or
//! clients, with what pauses. The same seed gives the same schedule.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::time::Duration;

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// kill -9 a node (started again after the cluster recovered).
    Kill,
    /// SIGSTOP a node for a while, then SIGCONT: it must find itself fenced off.
    Freeze,
    /// SIGSTOP a node for longer than its node lease (1.2 s) but shorter than the heartbeat
    /// timeout (2 s), then SIGCONT: its peers never declare it down and keep their links to it,
    /// while its lease ran out and its rooms may have started elsewhere. What it had queued
    /// before the stop must not reach anyone as if it still owned them.
    ShortFreeze,
    /// kill -9 a node and start it again at once.
    Restart,
    /// SIGTERM: the node drains (goaway, hand-off), then it is started again.
    Drain,
    /// Some clients' sockets drop without a close handshake.
    SocketDrop,
    /// PostgreSQL restarts under the cluster.
    PgRestart,
    /// Some clients go away (their sockets drop and they stay gone for a while) and, while
    /// their sessions wait, the busiest node is killed: what the dead rooms kept for them must
    /// still reach them when they resume elsewhere.
    AwayKill,
}

impl Kind {
    /// The kinds the suites (short, long, mixed) draw from.
    pub const ALL: [Kind; 8] = [
        Kind::Kill,
        Kind::Freeze,
        Kind::ShortFreeze,
        Kind::Restart,
        Kind::Drain,
        Kind::SocketDrop,
        Kind::PgRestart,
        Kind::AwayKill,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Freeze => "freeze",
            Kind::ShortFreeze => "short-freeze",
            Kind::Restart => "restart",
            Kind::Drain => "drain",
            Kind::SocketDrop => "socket-drop",
            Kind::PgRestart => "pg-restart",
            Kind::AwayKill => "away-kill",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Every client must be back (a message sent after the fault acknowledged) within this.
    /// The targets are for rooms (2 s after kill -9, 5 s after a freeze); a client
    /// also needs to notice and reconnect, which the freeze budget includes (a frozen edge is
    /// noticed only by silence).
    pub fn target(self) -> Duration {
        match self {
            Kind::Kill | Kind::Restart | Kind::Drain | Kind::SocketDrop => Duration::from_secs(2),
            Kind::Freeze | Kind::ShortFreeze => Duration::from_secs(5),
            Kind::PgRestart => Duration::from_secs(10),
            // The away clients are silent for their hold (up to 2 s) by design, then resume.
            Kind::AwayKill => Duration::from_secs(5),
        }
    }

    fn on_node(self) -> bool {
        matches!(self, Kind::Kill | Kind::Freeze | Kind::ShortFreeze | Kind::Restart | Kind::Drain | Kind::AwayKill)
    }
}

/// One scheduled fault.
#[derive(Clone, Debug, Serialize)]
pub struct Fault {
    pub kind: Kind,
    /// Node index (node faults), used when `busiest` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<usize>,
    /// Hit the node that owns the most rooms when the fault comes (node faults).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub busiest: bool,
    /// Client indexes (socket drops).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<usize>,
    /// How long a frozen node stays stopped, or away clients stay away, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_ms: Option<u64>,
    /// Quiet time before the fault, in ms.
    pub pause_ms: u64,
}

/// `count` faults drawn from `kinds`: each kind once first (in a seeded order), then at random.
pub fn schedule(seed: u64, kinds: &[Kind], count: usize, nodes: usize, clients: usize) -> Vec<Fault> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<Kind> = kinds.to_vec();
    order.shuffle(&mut rng);
    while order.len() < count {
        order.push(kinds[rng.random_range(0..kinds.len())]);
    }
    order.truncate(count.max(1));
    order
        .into_iter()
        .map(|kind| {
            let node = kind.on_node().then(|| rng.random_range(0..nodes));
            // Two node faults in three hit the busiest node, the others any node.
            let busiest = kind.on_node() && rng.random_range(0..3) < 2;
            let clients = if matches!(kind, Kind::SocketDrop | Kind::AwayKill) {
                let mut all: Vec<usize> = (0..clients).collect();
                all.shuffle(&mut rng);
                all.truncate((clients / 3).max(1));
                all.sort_unstable();
                all
            } else {
                Vec::new()
            };
            let hold_ms = match kind {
                Kind::Freeze => Some(rng.random_range(3000..6000)),
                // Past the default node lease (1.2 s), short of the heartbeat timeout (2 s).
                Kind::ShortFreeze => Some(rng.random_range(1300..1900)),
                Kind::AwayKill => Some(rng.random_range(1000..2000)),
                _ => None,
            };
            Fault { kind, node, busiest, clients, hold_ms, pause_ms: rng.random_range(500..2000) }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let a = schedule(7, &Kind::ALL, 10, 3, 12);
        let b = schedule(7, &Kind::ALL, 10, 3, 12);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        let c = schedule(8, &Kind::ALL, 10, 3, 12);
        assert_ne!(format!("{a:?}"), format!("{c:?}"));
    }

    #[test]
    fn every_kind_comes_first_once() {
        let s = schedule(1, &Kind::ALL, 8, 3, 12);
        let mut first: Vec<Kind> = s.iter().take(Kind::ALL.len()).map(|f| f.kind).collect();
        first.sort();
        assert_eq!(first, Kind::ALL.to_vec());
        assert!(s.iter().filter(|f| matches!(f.kind, Kind::SocketDrop | Kind::AwayKill)).all(|f| f.clients.len() == 4));
        assert!(s.iter().all(|f| f.node.is_some()
            == matches!(
                f.kind,
                Kind::Kill | Kind::Freeze | Kind::ShortFreeze | Kind::Restart | Kind::Drain | Kind::AwayKill
            )));
    }
}
