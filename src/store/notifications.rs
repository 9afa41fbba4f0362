//! The `notifications` table: what each user is told about, written in the transaction of the
//! change that caused it (with its `notification.created` outbox event), read unread first.

use super::events::event;
use super::{Store, col, db};
use crate::events::Event;
use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};
use switchboard_actors::ports::{StoreError, now_ms};

/// A notification to write.
#[derive(Clone, Debug)]
pub struct NewNotification {
    /// Whom it is for.
    pub user_id: String,
    /// What about (`appointment.booked`, ...).
    pub kind: String,
    /// A line to show.
    pub title: String,
    /// Ids it refers to.
    pub data: serde_json::Value,
}

/// A stored notification, as `GET /notifications` and the `notification` frame show it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Its id.
    pub id: String,
    /// Whom it is for.
    pub user_id: String,
    /// What about.
    pub kind: String,
    /// A line to show.
    pub title: String,
    /// Ids it refers to.
    pub data: serde_json::Value,
    /// Unix ms.
    pub created_at: i64,
    /// When its user read it (unix ms).
    pub read_at: Option<i64>,
}

const COLUMNS: &str = "id, user_id, kind, title, data, created_at, read_at";

impl Store {
    /// A user's notifications, unread first, newest first within each, at most `limit`.
    pub async fn notifications(&self, user: &str, limit: u32) -> Result<Vec<Notification>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 \
             ORDER BY CASE WHEN read_at IS NULL THEN 0 ELSE 1 END, id DESC LIMIT $2"
        );
        let rows = sqlx::query(&sql).bind(user).bind(i64::from(limit)).fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(notification).collect()
    }

    /// How many of a user's notifications are unread.
    pub async fn unread_notifications(&self, user: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL")
            .bind(user)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        col(&row, 0)
    }

    /// Marks a notification of `user` read (once: the first time is kept). `None` when `user`
    /// has no such notification.
    pub async fn read_notification(&self, id: &str, user: &str) -> Result<Option<Notification>, StoreError> {
        sqlx::query("UPDATE notifications SET read_at = $1 WHERE id = $2 AND user_id = $3 AND read_at IS NULL")
            .bind(now_ms())
            .bind(id)
            .bind(user)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        let sql = format!("SELECT {COLUMNS} FROM notifications WHERE id = $1 AND user_id = $2");
        let row = sqlx::query(&sql).bind(id).bind(user).fetch_optional(&self.pool).await.map_err(db)?;
        row.as_ref().map(notification).transpose()
    }
}

/// Writes `notes` inside a change's transaction, each with its `notification.created` event
/// under `room` (the room the change concerns); returns them as stored.
pub(super) async fn insert(
    tx: &mut Transaction<'_, Any>,
    room: &str,
    notes: &[NewNotification],
) -> Result<Vec<Notification>, StoreError> {
    let mut written = Vec::with_capacity(notes.len());
    for n in notes {
        let stored = Notification {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: n.user_id.clone(),
            kind: n.kind.clone(),
            title: n.title.clone(),
            data: n.data.clone(),
            created_at: now_ms(),
            read_at: None,
        };
        sqlx::query(
            "INSERT INTO notifications (id, user_id, kind, title, data, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&stored.id)
        .bind(&stored.user_id)
        .bind(&stored.kind)
        .bind(&stored.title)
        .bind(stored.data.to_string())
        .bind(stored.created_at)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        let created = Event::NotificationCreated {
            notification_id: stored.id.clone(),
            user_id: stored.user_id.clone(),
            kind: stored.kind.clone(),
            title: stored.title.clone(),
            data: stored.data.clone(),
        };
        event(tx, room, &created).await?;
        written.push(stored);
    }
    Ok(written)
}

fn notification(r: &AnyRow) -> Result<Notification, StoreError> {
    let data: String = col(r, 4)?;
    Ok(Notification {
        id: col(r, 0)?,
        user_id: col(r, 1)?,
        kind: col(r, 2)?,
        title: col(r, 3)?,
        data: serde_json::from_str(&data).map_err(|e| StoreError::Corrupt(format!("notifications.data: {e}")))?,
        created_at: col(r, 5)?,
        read_at: col(r, 6)?,
    })
}
