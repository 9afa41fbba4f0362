//! The room's lease in a cluster: renewed every third of its lifetime, and the room stops
//! itself, without another write or delivery, the moment it may no longer hold it.

use super::*;

/// Stops the room without another write or delivery: another node may own it now.
pub(super) fn lose_lease(myself: &ActorRef<RoomMsg>, state: &mut RoomState, why: &str) {
    tracing::warn!(room_id = %state.id, why, "room lost its lease; stopping");
    metrics::counter!("switchboard_lease_lost_total").increment(1);
    state.lease_valid_until = None;
    state.table.lock().open = false;
    myself.stop(Some("lease_lost".into()));
}

pub(super) async fn renew_lease(myself: &ActorRef<RoomMsg>, state: &mut RoomState) {
    let (Some(fence), Some(lease)) = (&state.fence, &state.ctx.config.lease) else { return };
    let asked = Instant::now();
    match state.ctx.store.renew_lease(fence, lease.ttl).await {
        Ok(true) => {
            state.lease_valid_until = Some(asked + lease.ttl * 4 / 5);
            state.table.lock().valid_until = state.lease_valid_until;
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
                    state.ctx.edge.reattach(&conn, &state.id);
                }
            }
            // Sessions whose link changed under their frames: ask their connections again (the
            // first ask may have gone out while the link was still down).
            let stalled: Vec<ConnId> =
                state.table.lock().sessions.iter().filter(|s| s.stalled).map(|s| s.conn.clone()).collect();
            for conn in stalled {
                if state.ctx.edge.is_connected(&conn) {
                    state.ctx.edge.reattach(&conn, &state.id);
                }
            }
            for (peer, conn) in gone {
                let _ = Box::pin(disconnected(myself, state, &peer, &conn, 0)).await;
            }
        }
        Ok(false) => lose_lease(myself, state, "lease taken over"),
        // The database is unreachable: keep trying until the lease would have run out.
        Err(e) => {
            metrics::counter!("switchboard_lease_renew_failures_total").increment(1);
            tracing::warn!(room_id = %state.id, error = %e, "lease renewal failed");
        }
    }
}
