//! Commands a room takes from the node rather than from one of its sessions: an appointment
//! ending its call, an operator acting on the room. They arrive through the room's node
//! (`RoomMsg::Admin`, from any node through its room host) and answer what they did.

use super::{RoomMsg, RoomState, info};
use crate::error::{ErrorCode, RoomError};
use crate::ids::PeerId;
use crate::media::ControlAction;
use crate::protocol::ServerMessage;
use crate::room::in_call::control;
use crate::room::membership::{leave, store_refusal};
use ractor::ActorRef;
use serde::{Deserialize, Serialize};

/// What the node asks a room to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminAction {
    /// End the current call, if there is one; `reason` goes into the `session.closed` event.
    EndCall {
        /// Why (`appointment_ended`, `appointment_cancelled`, `noshow`, `ended_by_admin`).
        reason: String,
    },
    /// Describe the room (as `GET /rooms/{id}` does).
    Info,
    /// Take a session out of the room: it is told `removed`, the others `peer_left`.
    Remove {
        /// The session.
        peer: String,
    },
    /// Mute a participant's microphone and/or turn off their camera, as if they had: everyone
    /// sees the `control`, and they are told `muted_by_admin`.
    Mute {
        /// The session.
        peer: String,
        /// Mute the microphone.
        audio: bool,
        /// Turn off the camera.
        video: bool,
    },
    /// Which connection a session is on (to change its grants there).
    Locate {
        /// The session.
        peer: String,
    },
    /// Take everyone out (`removed`, reason `room_closed`) and end the call.
    Close,
}

/// What a room did with an [`AdminAction`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminDone {
    /// The call ended (everyone in the room was told `call_status: ended`).
    CallEnded,
    /// There was nothing to change.
    Unchanged,
    /// The room, as JSON text (`RoomInfo`).
    Info(String),
    /// The session was taken out.
    Removed,
    /// The media state after the mute, as JSON text.
    Muted(String),
    /// The session's connection id.
    Located(String),
    /// Everyone was taken out: how many.
    Closed(usize),
}

pub(super) async fn admin(
    myself: &ActorRef<RoomMsg>,
    state: &mut RoomState,
    action: AdminAction,
) -> Result<AdminDone, RoomError> {
    match action {
        AdminAction::EndCall { reason } => {
            let Some(transition) = state.status.on_end() else { return Ok(AdminDone::Unchanged) };
            let change = state.change(transition, &reason);
            if let Err(e) = state.ctx.store.record_call_change(&state.id, &change, state.fence.as_ref()).await {
                tracing::warn!(room_id = %state.id, error = %e, "end of call not recorded");
                return Err(store_refusal(&e, "the call was not ended;"));
            }
            state.commit(Some(change), None);
            Ok(AdminDone::CallEnded)
        }
        AdminAction::Info => Ok(AdminDone::Info(serde_json::to_string(&info(state, true)).unwrap_or_default())),
        AdminAction::Remove { peer } => {
            let peer = member(state, &peer)?;
            remove(myself, state, &peer, "removed_by_admin").await?;
            Ok(AdminDone::Removed)
        }
        AdminAction::Mute { peer, audio, video } => {
            let peer = member(state, &peer)?;
            if audio {
                control(state, &peer, ControlAction::MuteAudio, None).await;
            }
            if video {
                control(state, &peer, ControlAction::VideoOff, None).await;
            }
            state.send_to_peer(&peer, &ServerMessage::MutedByAdmin { audio, video }.to_body(), None);
            let media = state.member(&peer).map(|m| serde_json::to_string(&m.info.media).unwrap_or_default());
            Ok(AdminDone::Muted(media.unwrap_or_default()))
        }
        AdminAction::Locate { peer } => {
            let peer = member(state, &peer)?;
            let conn = state.table.lock().session(&peer).map(|s| s.conn.to_string());
            conn.map(AdminDone::Located).ok_or_else(|| not_here(&peer))
        }
        AdminAction::Close => {
            let everyone: Vec<PeerId> = state.members.iter().map(|m| m.info.peer_id.clone()).collect();
            for peer in &everyone {
                remove(myself, state, peer, "room_closed").await?;
            }
            if let Some(transition) = state.status.on_end() {
                let change = state.change(transition, "room_closed");
                if let Err(e) = state.ctx.store.record_call_change(&state.id, &change, state.fence.as_ref()).await {
                    return Err(store_refusal(&e, "the call was not ended;"));
                }
                state.commit(Some(change), None);
            }
            Ok(AdminDone::Closed(everyone.len()))
        }
    }
}

fn member(state: &RoomState, peer: &str) -> Result<PeerId, RoomError> {
    let peer = PeerId::new(peer);
    if state.member(&peer).is_some() { Ok(peer) } else { Err(not_here(&peer)) }
}

fn not_here(peer: &PeerId) -> RoomError {
    RoomError::new(ErrorCode::PeerNotFound, format!("no session {peer} in this room"))
}

/// Takes `peer` out: its leave recorded with `reason`, the session told `removed` in its own
/// numbering (its connection then knows it is out), the others `peer_left`.
async fn remove(
    myself: &ActorRef<RoomMsg>,
    state: &mut RoomState,
    peer: &PeerId,
    reason: &str,
) -> Result<(), RoomError> {
    let removed = ServerMessage::Removed { room_id: &state.id, reason }.to_body();
    state.send_to_peer(peer, &removed, None);
    leave(myself, state, peer, reason).await.map_err(|e| {
        tracing::warn!(room_id = %state.id, error = %e, "removal not recorded");
        RoomError::new(ErrorCode::Unavailable, "the removal was not recorded; try again")
    })
}
