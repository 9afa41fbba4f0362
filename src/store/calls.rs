//! The `call_sessions` table: one row per call of a room, not_started → waiting → active → ended.

use super::events::event;
use super::{Store, col, db};
use crate::events::Event;
use sqlx::{Any, Transaction};
use switchboard_actors::call_status::{CallStatus, CallTransition};
use switchboard_actors::ids::RoomId;
use switchboard_actors::ports::{CallChange, Fence, StoreError, now_ms};

impl Store {
    /// Call sessions of a room as (id, status, end reason), oldest first.
    pub async fn calls(&self, room: &str) -> Result<Vec<(String, CallStatus, Option<String>)>, StoreError> {
        let rows =
            sqlx::query("SELECT id, status, end_reason FROM call_sessions WHERE room_id = $1 ORDER BY created_at, id")
                .bind(room)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        rows.iter().map(|r| Ok((col(r, 0)?, CallStatus::parse(&col::<String>(r, 1)?), col(r, 2)?))).collect()
    }
}

pub(super) async fn record_call_change(
    store: &Store,
    room: &RoomId,
    call: &CallChange,
    fence: Option<&Fence>,
) -> Result<(), StoreError> {
    let mut tx = store.pool.begin().await.map_err(db)?;
    store.check_fence(&mut tx, fence).await?;
    apply_call_change(&mut tx, room, call, now_ms()).await?;
    tx.commit().await.map_err(db)
}

pub(super) async fn apply_call_change(
    tx: &mut Transaction<'_, Any>,
    room: &RoomId,
    c: &CallChange,
    now: i64,
) -> Result<(), StoreError> {
    let status = match c.transition {
        CallTransition::Open(s) => {
            let active_at = (s == CallStatus::Active).then_some(now);
            sqlx::query(
                "INSERT INTO call_sessions (id, room_id, status, created_at, active_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&c.call_id)
            .bind(room.as_str())
            .bind(s.as_str())
            .bind(now)
            .bind(active_at)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
            event(tx, room.as_str(), &Event::SessionCreated { call_id: c.call_id.clone(), status: s }).await?;
            s
        }
        CallTransition::Change(s) => {
            sqlx::query("UPDATE call_sessions SET status = $1, active_at = COALESCE(active_at, $2) WHERE id = $3")
                .bind(s.as_str())
                .bind(now)
                .bind(&c.call_id)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
            s
        }
        CallTransition::Close => {
            sqlx::query("UPDATE call_sessions SET status = 'ended', ended_at = $1, end_reason = $2 WHERE id = $3")
                .bind(now)
                .bind(c.reason.as_deref())
                .bind(&c.call_id)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
            event(tx, room.as_str(), &Event::SessionClosed { call_id: c.call_id.clone(), reason: c.reason.clone() })
                .await?;
            CallStatus::Ended
        }
    };
    sqlx::query("UPDATE rooms SET call_status = $1, current_call_id = $2 WHERE id = $3")
        .bind(status.as_str())
        .bind(&c.call_id)
        .bind(room.as_str())
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}
