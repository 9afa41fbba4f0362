//! The `audit_log` table: every admin action on a room, with its `admin.action` event.

use super::events::event;
use super::{Store, col, db};
use crate::events::Event;
use switchboard_actors::ports::{StoreError, now_ms};

/// One audited action.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Its id.
    pub id: String,
    /// Unix ms.
    pub at: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// The room.
    pub room_id: String,
    /// The session acted on.
    pub target: Option<String>,
    /// Details and outcome.
    pub detail: serde_json::Value,
}

impl Store {
    /// Records an admin action on `room`, with its event.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        room: &str,
        target: Option<&str>,
        detail: &serde_json::Value,
    ) -> Result<AuditEntry, StoreError> {
        let entry = AuditEntry {
            id: uuid::Uuid::now_v7().to_string(),
            at: now_ms(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            room_id: room.to_owned(),
            target: target.map(str::to_owned),
            detail: detail.clone(),
        };
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(
            "INSERT INTO audit_log (id, at, actor, action, room_id, target, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&entry.id)
        .bind(entry.at)
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.room_id)
        .bind(&entry.target)
        .bind(entry.detail.to_string())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let e = Event::AdminAction {
            audit_id: entry.id.clone(),
            actor: entry.actor.clone(),
            action: entry.action.clone(),
            target: entry.target.clone(),
            detail: entry.detail.clone(),
        };
        event(&mut tx, room, &e).await?;
        tx.commit().await.map_err(db)?;
        Ok(entry)
    }

    /// The audit log, newest first (of one room when given), at most `limit`.
    pub async fn audit_log(&self, room: Option<&str>, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let cols = "id, at, actor, action, room_id, target, detail";
        let rows = match room {
            Some(room) => {
                let sql = format!("SELECT {cols} FROM audit_log WHERE room_id = $1 ORDER BY id DESC LIMIT $2");
                sqlx::query(&sql).bind(room).bind(i64::from(limit)).fetch_all(&self.pool).await
            }
            None => {
                let sql = format!("SELECT {cols} FROM audit_log ORDER BY id DESC LIMIT $1");
                sqlx::query(&sql).bind(i64::from(limit)).fetch_all(&self.pool).await
            }
        }
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                let detail: String = col(r, 6)?;
                Ok(AuditEntry {
                    id: col(r, 0)?,
                    at: col(r, 1)?,
                    actor: col(r, 2)?,
                    action: col(r, 3)?,
                    room_id: col(r, 4)?,
                    target: col(r, 5)?,
                    detail: serde_json::from_str(&detail).unwrap_or_default(),
                })
            })
            .collect()
    }
}
