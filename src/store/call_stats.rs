//! The `call_stats` table: quality samples and the level each one gave.

use super::{Store, col, db};
use switchboard_actors::ids::{PeerId, RoomId};
use switchboard_actors::ports::{Fence, StoreError, now_ms};
use switchboard_actors::quality::{FallbackChange, FallbackPolicy, Quality, QualityTracker, StatsSample};

impl Store {
    /// Quality levels recorded for a peer, oldest first.
    pub async fn quality_levels(&self, peer: &str) -> Result<Vec<String>, StoreError> {
        self.texts("SELECT level FROM call_stats WHERE peer_id = $1 ORDER BY sampled_at", peer).await
    }
}

pub(super) async fn record_quality(
    store: &Store,
    room: &RoomId,
    peer: &PeerId,
    sample: &StatsSample,
    quality: &Quality,
    fence: Option<&Fence>,
) -> Result<(), StoreError> {
    let mut tx = store.pool.begin().await.map_err(db)?;
    store.check_fence(&mut tx, fence).await?;
    sqlx::query(
        "INSERT INTO call_stats (id, room_id, peer_id, sampled_at, received_at, rtt_ms, fraction_lost, jitter_ms, \
         outgoing_kbps, r_factor, level) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(room.as_str())
    .bind(peer.as_str())
    .bind(sample.timestamp as i64)
    .bind(now_ms())
    .bind(sample.round_trip_time * 1000.0)
    .bind(sample.fraction_lost)
    .bind(sample.jitter * 1000.0)
    .bind(sample.available_outgoing_bitrate.map(|b| b / 1000.0))
    .bind(quality.r)
    .bind(quality.level.as_str())
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)
}

/// One call's quality, from the samples its participants sent while it was open.
#[derive(Clone, Debug, serde::Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CallQuality {
    /// The call.
    pub call_id: String,
    /// Its room.
    pub room_id: String,
    /// Its status now.
    pub status: String,
    /// Unix ms.
    pub started_at: i64,
    /// Unix ms, once ended.
    pub ended_at: Option<i64>,
    /// Samples received.
    pub samples: usize,
    /// Participants who sent any.
    pub peers: usize,
    /// Mean E-model R over the samples (0..100).
    pub mean_score: Option<f64>,
    /// The worst R.
    pub worst_score: Option<f64>,
    /// Seconds spent at each level, summed over participants (each sample holds until the
    /// participant's next, at most 10 s).
    pub seconds_in: LevelSeconds,
    /// Times a participant fell back to audio only, as the room decided it (the same
    /// hysteresis replayed over the same samples).
    pub fallbacks: usize,
}

/// Seconds per quality level.
#[derive(Clone, Debug, Default, serde::Serialize, PartialEq)]
pub struct LevelSeconds {
    /// Fine for video.
    pub good: f64,
    /// Usable.
    pub fair: f64,
    /// Too poor for video.
    pub poor: f64,
}

/// The longest a sample is taken to last.
const HOLD_MS: f64 = 10_000.0;

impl Store {
    /// The quality of call `call` of `room`; `None` when there is no such call.
    pub async fn call_quality(
        &self,
        room: &str,
        call: &str,
        policy: &FallbackPolicy,
    ) -> Result<Option<CallQuality>, StoreError> {
        let row = sqlx::query("SELECT status, created_at, ended_at FROM call_sessions WHERE id = $1 AND room_id = $2")
            .bind(call)
            .bind(room)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let (status, started_at, ended_at): (String, i64, Option<i64>) = (col(&row, 0)?, col(&row, 1)?, col(&row, 2)?);
        let rows = sqlx::query(
            "SELECT peer_id, sampled_at, rtt_ms, fraction_lost, jitter_ms, outgoing_kbps, r_factor, level FROM call_stats \
             WHERE room_id = $1 AND received_at >= $2 AND received_at <= $3 ORDER BY peer_id, sampled_at",
        )
        .bind(room)
        .bind(started_at)
        .bind(ended_at.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut q = CallQuality {
            call_id: call.to_owned(),
            room_id: room.to_owned(),
            status,
            started_at,
            ended_at,
            samples: rows.len(),
            peers: 0,
            mean_score: None,
            worst_score: None,
            seconds_in: LevelSeconds::default(),
            fallbacks: 0,
        };
        let (mut sum, mut peer, mut tracker) = (0.0, None::<String>, QualityTracker::default());
        for (i, r) in rows.iter().enumerate() {
            let this_peer: String = col(r, 0)?;
            let at = col::<i64>(r, 1)? as f64;
            if peer.as_deref() != Some(this_peer.as_str()) {
                q.peers += 1;
                tracker = QualityTracker::default();
                peer = Some(this_peer.clone());
            }
            let score: f64 = col(r, 6)?;
            sum += score;
            q.worst_score = Some(q.worst_score.map_or(score, |w: f64| w.min(score)));
            let next = rows.get(i + 1).map(|n| Ok::<_, StoreError>((col::<String>(n, 0)?, col::<i64>(n, 1)? as f64)));
            let held = match next.transpose()? {
                Some((p, t)) if p == this_peer => (t - at).clamp(0.0, HOLD_MS),
                _ => HOLD_MS.min(ended_at.map_or(HOLD_MS, |e| (e as f64 - at).max(0.0))),
            } / 1000.0;
            match col::<String>(r, 7)?.as_str() {
                "good" => q.seconds_in.good += held,
                "fair" => q.seconds_in.fair += held,
                _ => q.seconds_in.poor += held,
            }
            let sample = StatsSample {
                timestamp: at,
                round_trip_time: col::<f64>(r, 2)? / 1000.0,
                fraction_lost: col(r, 3)?,
                jitter: col::<f64>(r, 4)? / 1000.0,
                available_outgoing_bitrate: col::<Option<f64>>(r, 5)?.map(|k| k * 1000.0),
            };
            if let Ok((_, Some(FallbackChange::Fallback))) = tracker.observe(policy, &sample) {
                q.fallbacks += 1;
            }
        }
        if !rows.is_empty() {
            q.mean_score = Some(sum / rows.len() as f64);
        }
        Ok(Some(q))
    }
}
