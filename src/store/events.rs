//! The `events` table, the outbox: written in the transaction of the change it records, read
//! in id order by the cluster's one publisher, and marked published once the broker has it.

use super::{Store, col, db};
use crate::events::{Envelope, Event};
use sqlx::{Any, Transaction};
use switchboard_actors::ports::{StoreError, now_ms};

/// An outbox event.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EventRow {
    /// Idempotency key.
    pub id: String,
    /// `session.created`, `participant.joined`, ...
    pub kind: String,
    /// The room.
    pub room_id: String,
    /// JSON payload.
    pub payload: serde_json::Value,
}

/// An unpublished event, ready to go out.
#[derive(Clone, Debug)]
pub struct Pending {
    /// The envelope to publish.
    pub envelope: Envelope,
    /// When it was written (unix ms): the publish lag is measured from here.
    pub created_at: i64,
}

impl Store {
    /// Outbox events of a room, oldest first.
    pub async fn events(&self, room: &str) -> Result<Vec<EventRow>, StoreError> {
        let rows = sqlx::query("SELECT id, kind, room_id, payload FROM events WHERE room_id = $1 ORDER BY id")
            .bind(room)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(EventRow {
                    id: col(r, 0)?,
                    kind: col(r, 1)?,
                    room_id: col(r, 2)?,
                    payload: serde_json::from_str(&col::<String>(r, 3)?).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// The newest `limit` events of all rooms, newest first: (id, kind, room, created at ms).
    pub async fn recent_events(&self, limit: u32) -> Result<Vec<(String, String, String, i64)>, StoreError> {
        // Ids are UUIDv7, so the primary key's order is the order of creation.
        let rows = sqlx::query("SELECT id, kind, room_id, created_at FROM events ORDER BY id DESC LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(|r| Ok((col(r, 0)?, col(r, 1)?, col(r, 2)?, col(r, 3)?))).collect()
    }

    /// The oldest `limit` events not yet published, in id order (creation order; per room,
    /// the order the room wrote them).
    pub async fn unpublished_events(&self, limit: u32) -> Result<Vec<Pending>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, kind, room_id, payload, created_at FROM events WHERE published_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                let id: String = col(r, 0)?;
                let payload: String = col(r, 3)?;
                let data = serde_json::from_str(&payload)
                    .map_err(|e| StoreError::Corrupt(format!("events.payload of {id}: {e}")))?;
                let created_at: i64 = col(r, 4)?;
                Ok(Pending { envelope: Envelope::new(id, col(r, 1)?, col(r, 2)?, created_at, data), created_at })
            })
            .collect()
    }

    /// Marks events published, if the publisher lease `(name, node, epoch)` is still live:
    /// a publisher that lost its lease marks nothing. Returns how many rows changed.
    pub async fn mark_published(&self, ids: &[String], lease: &super::ServiceLease) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await.map_err(db)?;
        if !self.hold_service_lease(&mut tx, lease).await? {
            return Err(StoreError::Fenced(lease.name.clone()));
        }
        let now = now_ms();
        let mut changed = 0;
        for id in ids {
            let done = sqlx::query("UPDATE events SET published_at = $1 WHERE id = $2 AND published_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            changed += done.rows_affected();
        }
        tx.commit().await.map_err(db)?;
        Ok(changed)
    }

    /// How many events wait to be published.
    pub async fn outbox_backlog(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM events WHERE published_at IS NULL")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        col(&row, 0)
    }

    /// Ids of the published events of a room, in id order, with when they were published.
    pub async fn published_events(&self, room: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, published_at FROM events WHERE room_id = $1 AND published_at IS NOT NULL ORDER BY id",
        )
        .bind(room)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(|r| Ok((col(r, 0)?, col(r, 1)?))).collect()
    }
}

/// Writes `event` of `room` inside the transaction of the change it records.
pub(super) async fn event(tx: &mut Transaction<'_, Any>, room: &str, event: &Event) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO events (id, kind, room_id, payload, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(event.kind())
        .bind(room)
        .bind(event.data().to_string())
        .bind(now_ms())
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}
