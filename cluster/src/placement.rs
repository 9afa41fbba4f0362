//! Room placement by rendezvous (highest-random-weight) hashing.
//!
//! Every node computes the same owner for a room from the same membership, without talking
//! to the others, and when a node leaves only its rooms move. The result is a hint: the
//! lease table decides ownership.

use crate::node_id::NodeId;

/// The node among `members` that should own `room`, or `None` when there are no members.
pub fn place<'a>(room: &str, members: impl IntoIterator<Item = &'a NodeId>) -> Option<&'a NodeId> {
    members.into_iter().max_by_key(|node| (weight(room, node.as_str()), node.as_str().to_owned()))
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
