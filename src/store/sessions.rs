//! The `sessions` table: one row per participant session, open until it leaves; a
//! crashed node's open sessions are reconciled at its next start.

use super::calls::apply_call_change;
use super::events::event;
use super::{Store, col, db};
use crate::events::Event;
use switchboard_actors::call_status::CallTransition;
use switchboard_actors::ids::{ConnId, PeerId, RoomId};
use switchboard_actors::media::MediaState;
use switchboard_actors::ports::{CallChange, Fence, StoreError, StoredParticipant, now_ms};

impl Store {
    /// After a crash: ends calls that nobody is in any more and, if `close_sessions`, closes
    /// this node's sessions that are still open. A starting node keeps them (`false`): they
    /// stay resumable, their rooms start again (in a cluster on their placement, on a single
    /// node here) and take them back. Returns (sessions closed, calls ended).
    pub async fn reconcile(&self, close_sessions: bool) -> Result<(u64, u64), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(db)?;
        // Rooms with a live lease are in someone's hands (in a cluster, maybe another node's,
        // which took them over from this node): their sessions are theirs to manage.
        let sql = format!(
            "SELECT id, room_id, user_id FROM sessions s WHERE left_at IS NULL AND node_id = $1 \
             AND NOT EXISTS (SELECT 1 FROM room_leases l WHERE l.room_id = s.room_id AND l.expires_at >= {})",
            self.db_now()
        );
        let open = if close_sessions {
            sqlx::query(&sql).bind(&self.node_id).fetch_all(&mut *tx).await.map_err(db)?
        } else {
            Vec::new()
        };
        for row in &open {
            let (peer, room, user): (String, String, String) = (col(row, 0)?, col(row, 1)?, col(row, 2)?);
            sqlx::query("UPDATE sessions SET left_at = $1, leave_reason = 'node_restart' WHERE id = $2")
                .bind(now)
                .bind(&peer)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            event(
                &mut tx,
                &room,
                &Event::ParticipantLeft { peer_id: peer, user_id: user, reason: "node_restart".into() },
            )
            .await?;
        }
        let orphans = sqlx::query(
            "SELECT c.id, c.room_id FROM call_sessions c WHERE c.status <> 'ended' \
             AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.room_id = c.room_id AND s.left_at IS NULL)",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        for row in &orphans {
            let (call, room): (String, String) = (col(row, 0)?, col(row, 1)?);
            let change =
                CallChange { call_id: call, transition: CallTransition::Close, reason: Some("reconciled".into()) };
            apply_call_change(&mut tx, &RoomId::new(&room), &change, now).await?;
        }
        tx.commit().await.map_err(db)?;
        Ok((open.len() as u64, orphans.len() as u64))
    }

    /// Connection ids of a room's open sessions.
    pub async fn open_connections(&self, room: &str) -> Result<Vec<String>, StoreError> {
        self.texts("SELECT conn_id FROM sessions WHERE room_id = $1 AND left_at IS NULL", room).await
    }

    /// The room of a session that has not been closed.
    pub async fn session_room(&self, peer: &str) -> Result<Option<String>, StoreError> {
        Ok(self.texts("SELECT room_id FROM sessions WHERE id = $1 AND left_at IS NULL", peer).await?.pop())
    }
}

pub(super) async fn record_join(
    store: &Store,
    room: &RoomId,
    p: &StoredParticipant,
    call: Option<&CallChange>,
    fence: Option<&Fence>,
) -> Result<(), StoreError> {
    let now = now_ms();
    let mut tx = store.pool.begin().await.map_err(db)?;
    store.check_fence(&mut tx, fence).await?;
    if let Some(c) = call {
        apply_call_change(&mut tx, room, c, now).await?;
    }
    sqlx::query(
        "INSERT INTO sessions (id, room_id, call_id, user_id, display_name, node_id, conn_id, media, joined_at, \
         resume_token, hidden) VALUES ($1, $2, (SELECT current_call_id FROM rooms WHERE id = $2), $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(p.peer_id.as_str())
    .bind(room.as_str())
    .bind(p.user_id.as_str())
    .bind(&p.display_name)
    .bind(&store.node_id)
    .bind(p.conn_id.as_str())
    .bind(serde_json::to_string(&p.media).unwrap_or_default())
    .bind(p.joined_at)
    .bind(&p.resume_token)
    .bind(i64::from(p.hidden))
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    let joined = Event::ParticipantJoined {
        peer_id: p.peer_id.to_string(),
        user_id: p.user_id.to_string(),
        display_name: p.display_name.clone(),
    };
    event(&mut tx, room.as_str(), &joined).await?;
    tx.commit().await.map_err(db)
}

pub(super) async fn record_leave(
    store: &Store,
    room: &RoomId,
    peer: &PeerId,
    reason: &str,
    call: Option<&CallChange>,
    fence: Option<&Fence>,
) -> Result<(), StoreError> {
    let now = now_ms();
    let mut tx = store.pool.begin().await.map_err(db)?;
    store.check_fence(&mut tx, fence).await?;
    let closed = sqlx::query(
        "UPDATE sessions SET left_at = $1, leave_reason = $2 WHERE id = $3 AND left_at IS NULL RETURNING user_id",
    )
    .bind(now)
    .bind(reason)
    .bind(peer.as_str())
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?;
    if let Some(row) = closed {
        let left =
            Event::ParticipantLeft { peer_id: peer.to_string(), user_id: col(&row, 0)?, reason: reason.to_owned() };
        event(&mut tx, room.as_str(), &left).await?;
    }
    if let Some(c) = call {
        apply_call_change(&mut tx, room, c, now).await?;
    }
    tx.commit().await.map_err(db)
}

pub(super) async fn record_media(
    store: &Store,
    peer: &PeerId,
    media: &MediaState,
    fence: Option<&Fence>,
) -> Result<(), StoreError> {
    let mut tx = store.pool.begin().await.map_err(db)?;
    store.check_fence(&mut tx, fence).await?;
    sqlx::query("UPDATE sessions SET media = $1 WHERE id = $2")
        .bind(serde_json::to_string(media).unwrap_or_default())
        .bind(peer.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)
}

pub(super) async fn record_reattach(
    store: &Store,
    peer: &PeerId,
    conn: &ConnId,
    fence: Option<&Fence>,
) -> Result<(), StoreError> {
    let mut tx = store.pool.begin().await.map_err(db)?;
    store.check_fence(&mut tx, fence).await?;
    sqlx::query("UPDATE sessions SET conn_id = $1 WHERE id = $2")
        .bind(conn.as_str())
        .bind(peer.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)
}
