//! The room's ownership in a cluster: held under the node's lease (the room writes nothing to
//! keep it), and the room stops itself, without another write or delivery, the moment the node
//! lease no longer holds the term it took the room at.

use super::*;

/// Stops the room without another write or delivery: another node may own it now.
pub(super) fn lose_lease(myself: &ActorRef<RoomMsg>, state: &mut RoomState, why: &str) {
    tracing::warn!(room_id = %state.id, why, "room lost its lease; stopping");
    metrics::counter!("switchboard_lease_lost_total").increment(1);
    state.held = false;
    state.table.lock().open = false;
    myself.stop(Some("lease_lost".into()));
}

/// The room's timer: stops the room once its node's lease has lapsed (also checked before
/// every message), and asks again the connections of sessions it is still waiting for.
pub(super) async fn check_lease(myself: &ActorRef<RoomMsg>, state: &mut RoomState) {
    if state.fence.is_none() || !state.held {
        return;
    }
    // Ask again the connections of adopted sessions that have not answered yet (their
    // node may have been unreachable when this instance started, and be back now). One
    // that does not answer is taken for gone: its session waits for a resume like any
    // dropped one (and comes back if its connection answers after all).
    let mut gone = Vec::new();
    let adopted: Vec<(PeerId, ConnId, bool)> = state
        .table
        .lock()
        .sessions
        .iter()
        .filter(|s| s.adopted)
        .map(|s| (s.peer.clone(), s.conn.clone(), s.connected))
        .collect();
    for (peer, conn, connected) in adopted {
        if connected && let Some(m) = state.member_mut(&peer) {
            m.reattach_tries += 1;
            if m.reattach_tries > REATTACH_TRIES {
                gone.push((peer.clone(), conn.clone()));
            }
        }
        if state.ctx.edge.is_connected(&conn) {
            state.ctx.edge.reattach(&conn, &state.id, state.epoch());
        }
    }
    // Sessions whose link changed under their frames: ask their connections again (the
    // first ask may have gone out while the link was still down).
    let stalled: Vec<ConnId> =
        state.table.lock().sessions.iter().filter(|s| s.stalled).map(|s| s.conn.clone()).collect();
    for conn in stalled {
        if state.ctx.edge.is_connected(&conn) {
            state.ctx.edge.reattach(&conn, &state.id, state.epoch());
        }
    }
    for (peer, conn) in gone {
        let _ = Box::pin(disconnected(myself, state, &peer, &conn, 0)).await;
    }
}
