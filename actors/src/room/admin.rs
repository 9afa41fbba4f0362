//! Commands a room takes from the node rather than from one of its sessions: an appointment
//! ending its call, an operator acting on the room. They arrive through the room's node
//! (`RoomMsg::Admin`, from any node through its room host) and answer what they did.

use super::RoomState;
use crate::error::RoomError;
use crate::room::membership::store_refusal;
use serde::{Deserialize, Serialize};

/// What the node asks a room to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminAction {
    /// End the current call, if there is one; `reason` goes into the `session.closed` event.
    EndCall {
        /// Why (`appointment_ended`, `appointment_cancelled`, `noshow`, `ended_by_admin`).
        reason: String,
    },
}

/// What a room did with an [`AdminAction`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminDone {
    /// The call ended (everyone in the room was told `call_status: ended`).
    CallEnded,
    /// There was no call in progress: nothing changed.
    Unchanged,
}

pub(super) async fn admin(state: &mut RoomState, action: AdminAction) -> Result<AdminDone, RoomError> {
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
    }
}
