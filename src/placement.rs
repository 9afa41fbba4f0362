//! Where a new or orphaned room goes: to a live, non-draining, non-cordoned node, by load.
//!
//! The candidates are the members that are up, whose node lease the database holds live for
//! the very process that answers their heartbeats (a frozen node's runs out before the
//! heartbeat calls it down; a restarted one has none until it claims its id), that an operator has not
//! cordoned, and whose room host is reachable (this node only while it does not drain). Among
//! them, each room's two rendezvous candidates are compared and the second takes the room when
//! it is clearly less loaded (rooms and connections, from the heartbeats), else the first: the
//! power of two choices, with a margin so that nearly equal nodes keep the plain rendezvous
//! choice every node agrees on. A node that just
//! joined, with nothing on it, takes new rooms until it carries its share. The choice is a
//! hint; the ownership rows decide.

use crate::app::App;
use crate::store::NodeState;
use std::collections::HashMap;
use std::sync::Mutex;
use switchboard_cluster::routing::host_group;
use switchboard_cluster::{Candidate, NodeId, load_score, place_by_load};

/// The nodes as the database last showed them (refreshed by the orphan sweep, a few times a
/// second, and at once by a cordon).
#[derive(Default)]
pub struct NodeView {
    states: Mutex<HashMap<String, NodeState>>,
}

impl NodeView {
    /// Replaces what is known.
    pub fn update(&self, states: Vec<NodeState>) {
        let mut map = self.states.lock().unwrap_or_else(|p| p.into_inner());
        map.clear();
        map.extend(states.into_iter().map(|s| (s.node_id.clone(), s)));
    }

    /// What is known of `node`.
    pub fn get(&self, node: &str) -> Option<NodeState> {
        self.states.lock().unwrap_or_else(|p| p.into_inner()).get(node).cloned()
    }

    /// The cluster addresses of the nodes whose lease is live (what the dialer keeps linked
    /// when links are made by this node alone, over TLS).
    pub fn live_addresses(&self) -> Vec<String> {
        let map = self.states.lock().unwrap_or_else(|p| p.into_inner());
        map.values().filter(|s| s.live && !s.cluster_addr.is_empty()).map(|s| s.cluster_addr.clone()).collect()
    }

    /// Whether `node`, whose process says it is `incarnation`, may take rooms: its lease is
    /// live, held by that very process (a node restarted under the same id is in the cluster
    /// before it has its lease: its predecessor's lease still looks live until the new process
    /// claims the id), and it is not cordoned.
    fn may_take_rooms(&self, node: &str, incarnation: Option<u64>) -> bool {
        // Unknown (not read yet): the membership alone decides.
        self.get(node).is_none_or(|s| {
            let held_by_it = incarnation.is_none_or(|i| s.incarnation == i.to_string());
            s.live && held_by_it && !s.cordoned
        })
    }
}

/// The nodes that may take a room now, with their loads; this node first when it may.
pub fn candidates(app: &App) -> Vec<(NodeId, u64)> {
    let me = (app.hello)();
    let Some(cluster) = &app.cluster else {
        return NodeId::parse(&me.node_id).map(|n| vec![(n, 0)]).unwrap_or_default();
    };
    let live = cluster.live_nodes();
    let members = cluster.members(&me);
    let loads: HashMap<&str, u64> = members
        .iter()
        .map(|m| (m.node_id.as_str(), load_score(m.rooms.unwrap_or(0), m.connections.unwrap_or(0))))
        .collect();
    let incarnations: HashMap<&str, Option<u64>> =
        members.iter().map(|m| (m.node_id.as_str(), m.incarnation)).collect();
    let draining = app.is_shutting_down();
    live.into_iter()
        .filter(|n| {
            let reachable = match n.as_str() == me.node_id {
                true => !draining,
                false => !ractor::pg::get_members(&host_group(n.as_str())).is_empty(),
            };
            reachable && app.nodes.may_take_rooms(n.as_str(), incarnations.get(n.as_str()).copied().flatten())
        })
        .map(|n| {
            let load = loads.get(n.as_str()).copied().unwrap_or(0);
            (n, load)
        })
        .collect()
}

/// The node a room nobody owns should go to; this node when no other may take it.
pub fn choose(app: &App, room: &str) -> String {
    choose_among(&candidates(app), room).unwrap_or(&app.config.node_id).to_owned()
}

/// [`choose`] over candidates read once (for many rooms at a time); `None` without any.
pub fn choose_among<'a>(nodes: &'a [(NodeId, u64)], room: &str) -> Option<&'a str> {
    let list: Vec<Candidate<'_>> = nodes.iter().map(|(node, load)| Candidate { node, load: *load }).collect();
    place_by_load(room, &list).map(NodeId::as_str)
}

/// Whether node `me` is one of the room's two rendezvous candidates (so that it may take an
/// orphan that the other candidate, seeing other loads, leaves alone).
pub fn is_candidate_among(nodes: &[(NodeId, u64)], room: &str, me: &str) -> bool {
    switchboard_cluster::placement::candidates(room, nodes.iter().map(|(n, _)| n)).iter().any(|n| n.as_str() == me)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(live: bool, cordoned: bool) -> NodeView {
        let view = NodeView::default();
        let state = NodeState {
            node_id: "n2".into(),
            term: 3,
            live,
            incarnation: "77".into(),
            cordoned,
            cluster_addr: "127.0.0.1:1".into(),
        };
        view.update(vec![state]);
        view
    }

    #[test]
    fn a_node_takes_rooms_only_under_a_live_lease_of_its_own_process() {
        assert!(view(true, false).may_take_rooms("n2", Some(77)));
        // Restarted under the same id: the lease the database shows is its predecessor's.
        assert!(!view(true, false).may_take_rooms("n2", Some(78)));
        assert!(!view(false, false).may_take_rooms("n2", Some(77)), "lapsed");
        assert!(!view(true, true).may_take_rooms("n2", Some(77)), "cordoned");
        // Not heard from yet, or not read yet: the membership decides.
        assert!(view(true, false).may_take_rooms("n2", None));
        assert!(view(true, false).may_take_rooms("n9", Some(1)));
    }
}
