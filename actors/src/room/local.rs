//! A room instance as the code on its node reaches it: the actor, and its relay table for
//! the one-hop path. Used by this node's connections and by the node's room host for messages
//! from other nodes, so that both keep the same order rules.

use super::RoomMsg;
use super::relay_table::{RelayBody, RelayRequest, RelayTable, Relayed};
use crate::ids::PeerId;
use ractor::{ActorRef, MessagingErr};
use std::sync::Arc;

/// A room instance on this node: its actor, and its relay table (the one-hop path).
#[derive(Clone)]
pub struct LocalRoom {
    /// The Room actor.
    pub actor: ActorRef<RoomMsg>,
    /// Its sessions' delivery state.
    pub table: Arc<RelayTable>,
}

impl LocalRoom {
    /// Casts `msg` to the actor, counting it in the sender's session first so that the sender's
    /// later relays wait behind it (see `relay_table`).
    pub fn cast(&self, msg: RoomMsg) -> Result<(), Box<MessagingErr<RoomMsg>>> {
        let from = counted_sender(&msg).cloned();
        if let Some(from) = &from {
            self.table.queued_at_room(from);
        }
        let sent = self.actor.cast(msg).map_err(Box::new);
        if sent.is_err()
            && let Some(from) = &from
        {
            self.table.handled(from);
        }
        sent
    }

    /// Whether the instance still runs.
    pub fn running(&self) -> bool {
        matches!(self.actor.get_status(), ractor::ActorStatus::Running | ractor::ActorStatus::Starting)
    }

    /// Relays an offer, answer or candidate in one hop: the caller's task makes the room's
    /// relay decision through the room's table and hands the frame to the target's connection.
    /// False when `msg` must go to the Room actor instead (not a relay, the sender has messages
    /// waiting there, the instance stopped or lost its lease).
    pub fn relay(&self, msg: &RoomMsg) -> bool {
        let RoomMsg::Relay { from, to, kind, payload, reference, received_at, again } = msg else {
            return false;
        };
        if !self.running() {
            return false;
        }
        let payload = match payload {
            super::RelayPayload::Sdp(sdp) => RelayBody::Sdp(sdp),
            super::RelayPayload::Candidate(candidate) => RelayBody::Candidate(candidate),
        };
        let reference = reference.as_ref();
        let req = RelayRequest { from, to, kind: *kind, payload, reference, received_at: *received_at, again: *again };
        self.table.relay_from_edge(&req) == Relayed::Done
    }
}

/// The sender of a message the room answers with frames in its session's sequence, or (a
/// `SeqSync`) that must reach the actor before the session's next relay does.
fn counted_sender(msg: &RoomMsg) -> Option<&PeerId> {
    match msg {
        RoomMsg::SeqSync { peer, .. } => Some(peer),
        RoomMsg::Relay { from, .. }
        | RoomMsg::Control { from, .. }
        | RoomMsg::Overlay { from, .. }
        | RoomMsg::Chat { from, .. }
        | RoomMsg::EndCall { from, .. }
        | RoomMsg::Stats { from, .. } => Some(from),
        _ => None,
    }
}
