//! The `call_stats` table: quality samples and the level each one gave.

use super::{Store, db};
use switchboard_actors::ids::{PeerId, RoomId};
use switchboard_actors::ports::{Fence, StoreError, now_ms};
use switchboard_actors::quality::{Quality, StatsSample};

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
