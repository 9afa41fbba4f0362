//! Participant actor: one peer session in a room. It owns the session's media state and
//! writes every change of it to the store before the room tells anyone.
//!
//! Supervised by its [`Room`](crate::room::Room), which restarts it from the room's copy
//! of its state if it fails.

use crate::error::{ErrorCode, RoomError};
use crate::ids::PeerId;
use crate::ids::RoomId;
use crate::media::{ControlAction, MediaState};
use crate::ports::{Fence, RoomStore};
use crate::quality::{FallbackChange, FallbackPolicy, Quality, QualityTracker, StatsSample};
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
    /// The room (for quality samples).
    pub room_id: RoomId,
    /// When to fall back to audio only, and back.
    pub fallback: FallbackPolicy,
}

/// The session state it owns.
pub struct ParticipantState {
    peer_id: PeerId,
    media: MediaState,
    store: Arc<dyn RoomStore>,
    fence: Option<Fence>,
    room_id: RoomId,
    fallback: FallbackPolicy,
    quality: QualityTracker,
}

/// What a stats sample led to.
#[derive(Debug, Clone)]
pub struct StatsOutcome {
    /// The sample's score.
    pub quality: Quality,
    /// A fallback or recovery, if this sample caused one.
    pub change: Option<FallbackChange>,
    /// The media state after it.
    pub media: MediaState,
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
    /// Score a stats sample, record it, and decide on audio-only fallback.
    Stats {
        /// The sample.
        sample: StatsSample,
        /// Where the answer goes.
        reply: RpcReplyPort<Result<StatsOutcome, RoomError>>,
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
        Ok(ParticipantState {
            peer_id: args.peer_id,
            media: args.media,
            store: args.store,
            fence: args.fence,
            room_id: args.room_id,
            fallback: args.fallback,
            quality: QualityTracker::default(),
        })
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
            ParticipantMsg::Stats { sample, reply } => {
                let _ = reply.send(observe(state, sample).await);
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
        match e {
            crate::ports::StoreError::Database(_) => {
                RoomError::new(ErrorCode::Unavailable, "the database is unreachable; try again shortly")
            }
            _ => RoomError::new(ErrorCode::Internal, "the change could not be recorded; try again"),
        }
    })?;
    state.media = next.clone();
    Ok(Some(next))
}

async fn observe(state: &mut ParticipantState, sample: StatsSample) -> Result<StatsOutcome, RoomError> {
    sample.validate().map_err(|e| RoomError::new(ErrorCode::InvalidMessage, e))?;
    let (quality, change) =
        state.quality.observe(&state.fallback, &sample).map_err(|e| RoomError::new(ErrorCode::InvalidMessage, e))?;
    metrics::counter!("switchboard_quality_samples_total", "level" => quality.level.as_str()).increment(1);
    let fence = state.fence.as_ref();
    if let Err(e) = state.store.record_quality(&state.room_id, &state.peer_id, &sample, &quality, fence).await {
        // A lost sample is not worth failing the call for; the score still counts.
        tracing::warn!(peer_id = %state.peer_id, error = %e, "quality sample not recorded");
    }
    if let Some(change) = change {
        let mut next = state.media.clone();
        next.video_paused = change == FallbackChange::Fallback;
        match change {
            FallbackChange::Fallback => metrics::counter!("switchboard_fallbacks_total").increment(1),
            FallbackChange::Recover => metrics::counter!("switchboard_fallback_recoveries_total").increment(1),
        }
        if let Err(e) = state.store.record_media(&state.peer_id, &next, fence).await {
            tracing::warn!(peer_id = %state.peer_id, error = %e, "paused video not recorded");
        }
        state.media = next;
    }
    Ok(StatsOutcome { quality, change, media: state.media.clone() })
}
