//! Participant actor: one peer session in a room. It owns the session's media state and
//! writes every change of it to the store before the room tells anyone.
//!
//! Supervised by its [`Room`](crate::room::Room), which restarts it from the room's copy
//! of its state if it fails.

use crate::error::{ErrorCode, RoomError};
use crate::ids::PeerId;
use crate::media::{ControlAction, MediaState};
use crate::ports::{Fence, RoomStore};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::Arc;

/// The actor (stateless; its state is [`ParticipantState`]).
pub struct Participant;

/// Start arguments.
pub struct ParticipantArgs {
    /// The session.
    pub peer_id: PeerId,
    /// Media state to start from (from the store after a restart).
    pub media: MediaState,
    /// Where changes are recorded.
    pub store: Arc<dyn RoomStore>,
    /// The room's lease, carried by every write in a cluster.
    pub fence: Option<Fence>,
}

/// The session state it owns.
pub struct ParticipantState {
    peer_id: PeerId,
    media: MediaState,
    store: Arc<dyn RoomStore>,
    fence: Option<Fence>,
}

/// Messages a participant handles.
pub enum ParticipantMsg {
    /// Apply a control action; replies with the new state, or `None` when nothing changed.
    Control {
        /// The action.
        action: ControlAction,
        /// Where the answer goes.
        reply: RpcReplyPort<Result<Option<MediaState>, RoomError>>,
    },
}

// Local only: never crosses nodes (the cluster feature turns off ractor's blanket impl).
impl ractor::Message for ParticipantMsg {}

impl Actor for Participant {
    type Msg = ParticipantMsg;
    type State = ParticipantState;
    type Arguments = ParticipantArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ParticipantArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(ParticipantState { peer_id: args.peer_id, media: args.media, store: args.store, fence: args.fence })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ParticipantMsg::Control { action, reply } => {
                let _ = reply.send(apply_control(state, action).await);
            }
        }
        Ok(())
    }
}

async fn apply_control(state: &mut ParticipantState, action: ControlAction) -> Result<Option<MediaState>, RoomError> {
    let mut next = state.media.clone();
    if !next.apply(action) {
        return Ok(None);
    }
    state.store.record_media(&state.peer_id, &next, state.fence.as_ref()).await.map_err(|e| {
        tracing::warn!(peer_id = %state.peer_id, error = %e, "media state not recorded");
        RoomError::new(ErrorCode::Internal, "the change could not be recorded; try again")
    })?;
    state.media = next.clone();
    Ok(Some(next))
}
