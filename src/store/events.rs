//! The `events` table, the outbox: written in the transaction of the change it records.

use super::{Store, col, db};
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
}

pub(super) async fn event(
    tx: &mut Transaction<'_, Any>,
    kind: &str,
    room: &str,
    payload: serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO events (id, kind, room_id, payload, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(kind)
        .bind(room)
        .bind(payload.to_string())
        .bind(now_ms())
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}
