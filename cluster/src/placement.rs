//! Room placement: rendezvous (highest-random-weight) hashing, and the power of two choices
//! by load among each room's two rendezvous candidates.
//!
//! Every node computes the same candidates for a room from the same membership, without
//! talking to the others, and when a node leaves only its rooms move. Among the two, the less
//! loaded takes the room, so a loaded node gets fewer new rooms and one that just joined gets
//! more. The result is a hint: the ownership rows decide.

use crate::node_id::NodeId;

/// The node among `members` that should own `room`, or `None` when there are no members.
pub fn place<'a>(room: &str, members: impl IntoIterator<Item = &'a NodeId>) -> Option<&'a NodeId> {
    members.into_iter().max_by_key(|node| (weight(room, node.as_str()), node.as_str().to_owned()))
}

/// A node that may take rooms, with its load (see [`load_score`]).
#[derive(Clone, Debug)]
pub struct Candidate<'a> {
    /// The node.
    pub node: &'a NodeId,
    /// Its load.
    pub load: u64,
}

/// A node's load for placement: its connections plus twice its rooms (a room's owner relays
/// for all of its participants, wherever their connections are).
pub fn load_score(rooms: u64, connections: u64) -> u64 {
    connections.saturating_add(rooms.saturating_mul(2))
}

/// The room's two rendezvous candidates, best first.
pub fn candidates<'a>(room: &str, members: impl IntoIterator<Item = &'a NodeId>) -> Vec<&'a NodeId> {
    let mut ranked: Vec<(u64, &NodeId)> = members.into_iter().map(|n| (weight(room, n.as_str()), n)).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.as_str().cmp(a.1.as_str())));
    ranked.into_iter().take(2).map(|(_, n)| n).collect()
}

/// Power of two choices: of the room's two rendezvous candidates, the second only when it is
/// clearly less loaded (by more than a quarter and 8), else the first, the plain rendezvous
/// choice: among nearly equal nodes every node, each seeing slightly different loads, still
/// agrees. `None` when there are no candidates.
pub fn place_by_load<'a>(room: &str, members: &[Candidate<'a>]) -> Option<&'a NodeId> {
    let two = candidates(room, members.iter().map(|c| c.node));
    let load = |n: &NodeId| members.iter().find(|c| c.node == n).map_or(u64::MAX, |c| c.load);
    match two.as_slice() {
        [first, second] if clearly_less(load(second), load(first)) => Some(second),
        [first, ..] => Some(first),
        [] => None,
    }
}

fn clearly_less(a: u64, b: u64) -> bool {
    a.saturating_mul(5) / 4 + 8 < b
}

/// A 64-bit weight of (room, node): FNV-1a over both, then a SplitMix64 finalizer so that
/// ids that differ in one character still get unrelated weights.
fn weight(room: &str, node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.bytes().chain([0xff]).chain(node.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<NodeId> {
        (1..=n).map(|i| NodeId::parse(&format!("n{i}")).expect("valid")).collect()
    }

    #[test]
    fn placement_is_deterministic_and_total() {
        let members = nodes(3);
        assert_eq!(place("r1", &members), place("r1", &members));
        assert!(place("r1", &[]).is_none());
    }

    #[test]
    fn rooms_spread_evenly() {
        let members = nodes(3);
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            let owner = place(&format!("room-{i}"), &members).expect("owner");
            counts[members.iter().position(|m| m == owner).expect("member")] += 1;
        }
        for c in counts {
            assert!((800..=1200).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn the_first_candidate_is_the_rendezvous_choice() {
        let members = nodes(5);
        for i in 0..200 {
            let room = format!("room-{i}");
            assert_eq!(candidates(&room, &members)[0], place(&room, &members).expect("owner"));
        }
    }

    #[test]
    fn the_less_loaded_of_two_candidates_takes_the_room() {
        let members = nodes(3);
        let loaded = |busy: &str, load: u64| -> Vec<Candidate<'_>> {
            members.iter().map(|n| Candidate { node: n, load: if n.as_str() == busy { load } else { 0 } }).collect()
        };
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            let owner = place_by_load(&format!("room-{i}"), &loaded("n1", 500)).expect("owner");
            counts[members.iter().position(|m| m == owner).expect("member")] += 1;
        }
        assert_eq!(counts[0], 0, "a loaded node gets no new room while two idle ones can: {counts:?}");
        assert!(counts[1] > 1200 && counts[2] > 1200, "{counts:?}");
        // Equal or nearly equal loads: plain rendezvous.
        for i in 0..300 {
            let room = format!("room-{i}");
            assert_eq!(place_by_load(&room, &loaded("n1", 0)), place(&room, &members));
            assert_eq!(place_by_load(&room, &loaded("n1", 8)), place(&room, &members));
        }
        assert!(place_by_load("r", &[]).is_none());
    }

    #[test]
    fn only_the_rooms_of_a_leaving_node_move() {
        let all = nodes(3);
        let without_n3: Vec<NodeId> = all[..2].to_vec();
        for i in 0..1000 {
            let room = format!("room-{i}");
            let before = place(&room, &all).expect("owner");
            let after = place(&room, &without_n3).expect("owner");
            if before.as_str() != "n3" {
                assert_eq!(before, after, "{room} moved although its owner stayed");
            }
        }
    }
}
