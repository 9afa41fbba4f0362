//! The `chat_messages` table: a room's chat, numbered by the room (`seq`).

use super::{Store, col, db};
use sqlx::any::AnyRow;
use switchboard_actors::ids::{PeerId, RoomId, UserId};
use switchboard_actors::ports::{Fence, StoreError};
use switchboard_actors::protocol::ChatMessage;

impl Store {
    /// Chat messages of a room, oldest first: the `limit` newest before `before` (a seq).
    pub async fn chat(&self, room: &str, before: Option<i64>, limit: u32) -> Result<Vec<ChatMessage>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, room_id, seq, peer_id, user_id, display_name, text, sent_at FROM chat_messages \
             WHERE room_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
        )
        .bind(room)
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut out: Vec<ChatMessage> = rows.iter().map(chat_row).collect::<Result<_, _>>()?;
        out.reverse();
        Ok(out)
    }
}

pub(super) async fn append_chat(store: &Store, m: &ChatMessage, fence: Option<&Fence>) -> Result<(), StoreError> {
    let mut tx = store.pool.begin().await.map_err(db)?;
    store.check_fence(&mut tx, fence).await?;
    sqlx::query(
        "INSERT INTO chat_messages (id, room_id, seq, peer_id, user_id, display_name, text, sent_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&m.id)
    .bind(m.room_id.as_str())
    .bind(m.seq)
    .bind(m.peer_id.as_str())
    .bind(m.user_id.as_str())
    .bind(&m.display_name)
    .bind(&m.text)
    .bind(m.sent_at)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)
}

pub(super) fn chat_row(r: &AnyRow) -> Result<ChatMessage, StoreError> {
    Ok(ChatMessage {
        id: col(r, 0)?,
        room_id: RoomId::new(col::<String>(r, 1)?),
        seq: col(r, 2)?,
        peer_id: PeerId::new(col::<String>(r, 3)?),
        user_id: UserId::new(col::<String>(r, 4)?),
        display_name: col(r, 5)?,
        text: col(r, 6)?,
        sent_at: col(r, 7)?,
    })
}
