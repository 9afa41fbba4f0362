//! A peer session's media state and call quality, and how a control action or a stats sample
//! changes them: the change is written to the store before anyone is told.
//!
//! The Room actor holds one [`Participant`] per session and calls these in its own handler.
//! It used to be an actor of its own; a ractor actor costs about 8 KiB of memory (its task and
//! its channels' first blocks), which alone was most of a joined connection's budget, and it
//! owned nothing that needs a task: every change goes through the room anyway.

use crate::error::{ErrorCode, RoomError};
use crate::ids::{PeerId, RoomId};
use crate::media::{ControlAction, MediaState};
use crate::ports::{Fence, RoomStore, StoreError};
use crate::quality::{FallbackChange, FallbackPolicy, Quality, QualityTracker, StatsSample};

/// What a session's quality tracking remembers between samples.
#[derive(Default)]
pub struct Participant {
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

/// Where a session's changes are recorded.
pub struct Recorder<'a> {
    /// The store.
    pub store: &'a dyn RoomStore,
    /// The room's lease, carried by every write in a cluster.
    pub fence: Option<&'a Fence>,
    /// The room.
    pub room_id: &'a RoomId,
    /// The session.
    pub peer_id: &'a PeerId,
}

impl Participant {
    /// Applies a control action to `media`: the new state once recorded, or `None` when the
    /// action changes nothing.
    pub async fn apply_control(
        &mut self,
        at: &Recorder<'_>,
        media: &MediaState,
        action: ControlAction,
    ) -> Result<Option<MediaState>, RoomError> {
        let mut next = media.clone();
        if !next.apply(action) {
            return Ok(None);
        }
        at.store.record_media(at.peer_id, &next, at.fence).await.map_err(|e| {
            tracing::warn!(peer_id = %at.peer_id, error = %e, "media state not recorded");
            match e {
                StoreError::Database(_) => {
                    RoomError::new(ErrorCode::Unavailable, "the database is unreachable; try again shortly")
                }
                _ => RoomError::new(ErrorCode::Internal, "the change could not be recorded; try again"),
            }
        })?;
        Ok(Some(next))
    }

    /// Scores a stats sample, records it, and decides on audio-only fallback.
    pub async fn observe(
        &mut self,
        at: &Recorder<'_>,
        media: &MediaState,
        fallback: &FallbackPolicy,
        sample: StatsSample,
    ) -> Result<StatsOutcome, RoomError> {
        sample.validate().map_err(|e| RoomError::new(ErrorCode::InvalidMessage, e))?;
        let (quality, change) =
            self.quality.observe(fallback, &sample).map_err(|e| RoomError::new(ErrorCode::InvalidMessage, e))?;
        metrics::counter!("switchboard_quality_samples_total", "level" => quality.level.as_str()).increment(1);
        if let Err(e) = at.store.record_quality(at.room_id, at.peer_id, &sample, &quality, at.fence).await {
            // A lost sample is not worth failing the call for; the score still counts.
            tracing::warn!(peer_id = %at.peer_id, error = %e, "quality sample not recorded");
        }
        let mut media = media.clone();
        if let Some(change) = change {
            media.video_paused = change == FallbackChange::Fallback;
            match change {
                FallbackChange::Fallback => metrics::counter!("switchboard_fallbacks_total").increment(1),
                FallbackChange::Recover => metrics::counter!("switchboard_fallback_recoveries_total").increment(1),
            }
            if let Err(e) = at.store.record_media(at.peer_id, &media, at.fence).await {
                tracing::warn!(peer_id = %at.peer_id, error = %e, "paused video not recorded");
            }
        }
        Ok(StatsOutcome { quality, change, media })
    }
}
