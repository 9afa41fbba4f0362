//! The `rooms` table: a room's policy and its current call, and who may read it.

use super::{Store, col, db};
use sqlx::any::AnyRow;
use switchboard_actors::call_status::CallStatus;
use switchboard_actors::ids::{ConnId, PeerId, RoomId, UserId};
use switchboard_actors::media::MediaState;
use switchboard_actors::ports::{RoomPolicy, StoreError, StoredParticipant, StoredRoom, now_ms};

/// A room row.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomRow {
    /// Id.
    pub room_id: String,
    /// Unix ms.
    pub created_at: i64,
    /// Limit.
    pub max_participants: u32,
    /// Closed list, if any.
    pub invitees: Option<Vec<String>>,
    /// Current call status.
    pub call_status: CallStatus,
    /// Current call.
    pub call_id: Option<String>,
}

impl Store {
    /// Creates a room with a policy; `Ok(false)` when it exists already.
    pub async fn create_room(&self, room: &str, policy: &RoomPolicy, created_by: &str) -> Result<bool, StoreError> {
        let invitees = policy.invitees.as_ref().map(|v| serde_json::to_string(v).unwrap_or_default());
        let done = sqlx::query(
            "INSERT INTO rooms (id, created_at, created_by, max_participants, invitees) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(room)
        .bind(now_ms())
        .bind(created_by)
        .bind(i64::from(policy.max_participants))
        .bind(invitees)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    /// A room row.
    pub async fn room(&self, room: &str) -> Result<Option<RoomRow>, StoreError> {
        let row = sqlx::query(
            "SELECT id, created_at, max_participants, invitees, call_status, current_call_id FROM rooms WHERE id = $1",
        )
        .bind(room)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|r| room_row(&r)).transpose()
    }

    /// Whether `user` may read `room`: an invitee, or someone who has had a session in it.
    pub async fn is_member(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        let had_session = sqlx::query("SELECT 1 FROM sessions WHERE room_id = $1 AND user_id = $2 LIMIT 1")
            .bind(room)
            .bind(user)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .is_some();
        if had_session {
            return Ok(true);
        }
        let invited = self.room(room).await?.and_then(|r| r.invitees).is_some_and(|i| i.iter().any(|u| u == user));
        Ok(invited)
    }
}

pub(super) async fn load_room(
    store: &Store,
    room: &RoomId,
    default_policy: &RoomPolicy,
    chat_history: u32,
) -> Result<StoredRoom, StoreError> {
    store.create_room(room.as_str(), default_policy, "join").await?;
    let row = store.room(room.as_str()).await?.ok_or_else(|| StoreError::Corrupt(format!("room {room} vanished")))?;
    let rows = sqlx::query(
        "SELECT id, user_id, display_name, conn_id, media, joined_at, resume_token, hidden FROM sessions \
         WHERE room_id = $1 AND left_at IS NULL ORDER BY joined_at, id",
    )
    .bind(room.as_str())
    .fetch_all(&store.pool)
    .await
    .map_err(db)?;
    let participants = rows.iter().map(|r| participant_row(r, 0)).collect::<Result<Vec<_>, StoreError>>()?;
    let next: AnyRow = sqlx::query("SELECT COALESCE(MAX(seq), 0) + 1 FROM chat_messages WHERE room_id = $1")
        .bind(room.as_str())
        .fetch_one(&store.pool)
        .await
        .map_err(db)?;
    let next_chat_seq: i64 = col(&next, 0)?;
    let call_id = if row.call_status.is_open() { row.call_id } else { None };
    Ok(StoredRoom {
        policy: RoomPolicy {
            max_participants: row.max_participants,
            invitees: row.invitees.map(|v| v.into_iter().map(UserId::from).collect()),
        },
        status: row.call_status,
        call_id,
        participants,
        recent_chat: store.chat(room.as_str(), None, chat_history).await?,
        next_chat_seq,
    })
}

/// A session row as a participant, its columns from `base` on: id, user_id, display_name,
/// conn_id, media, joined_at, resume_token, hidden.
pub(super) fn participant_row(r: &AnyRow, base: usize) -> Result<StoredParticipant, StoreError> {
    Ok(StoredParticipant {
        peer_id: PeerId::new(col::<String>(r, base)?),
        user_id: UserId::new(col::<String>(r, base + 1)?),
        display_name: col(r, base + 2)?,
        conn_id: ConnId::new(col::<String>(r, base + 3)?),
        media: serde_json::from_str(&col::<String>(r, base + 4)?).unwrap_or_else(|_| MediaState::initial()),
        joined_at: col(r, base + 5)?,
        resume_token: col::<Option<String>>(r, base + 6)?.unwrap_or_default(),
        hidden: col::<i64>(r, base + 7)? != 0,
    })
}

pub(super) fn room_row(r: &AnyRow) -> Result<RoomRow, StoreError> {
    let invitees: Option<String> = col(r, 3)?;
    let invitees = invitees
        .map(|s| serde_json::from_str::<Vec<String>>(&s))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("rooms.invitees: {e}")))?;
    Ok(RoomRow {
        room_id: col(r, 0)?,
        created_at: col(r, 1)?,
        max_participants: u32::try_from(col::<i64>(r, 2)?).unwrap_or(u32::MAX),
        invitees,
        call_status: CallStatus::parse(&col::<String>(r, 4)?),
        call_id: col(r, 5)?,
    })
}
