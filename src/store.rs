//! The operational store: sqlx over SQLite (embedded default) or PostgreSQL, the same SQL on
//! both (`migrations/`), `$n` placeholders, times in unix milliseconds.
//!
//! Every state change is one transaction together with its outbox events (`events` table),
//! so an event exists exactly when the change it records does.

use serde_json::json;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};
use std::time::Duration;
use switchboard_actors::call_status::{CallStatus, CallTransition};
use switchboard_actors::ids::{ConnId, PeerId, RoomId, UserId};
use switchboard_actors::media::MediaState;
use switchboard_actors::ports::{
    CallChange, Fence, RoomPolicy, RoomStore, StoreError, StoredParticipant, StoredRoom, now_ms,
};
use switchboard_actors::protocol::ChatMessage;
use switchboard_actors::quality::{Quality, StatsSample};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Which database is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded file database.
    Sqlite,
    /// Server database (required for clusters).
    Postgres,
}

/// The store of one node.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    node_id: String,
}

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

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// Column `i` of a row, decoded: a value the code cannot read is a corrupt row, not a panic.
fn col<'r, T>(r: &'r AnyRow, i: usize) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    r.try_get(i).map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
}

impl Store {
    /// Connects (creating a SQLite file if needed) and runs the migrations.
    pub async fn open(url: &str, max_connections: u32, node_id: &str) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") { Backend::Sqlite } else { Backend::Postgres };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;").await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open database: {e}"))?;
        MIGRATOR.run(&pool).await.map_err(|e| anyhow::anyhow!("migrations failed: {e}"))?;
        Ok(Store { pool, backend, node_id: node_id.to_owned() })
    }

    /// Which backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The database's clock in unix milliseconds, as SQL: leases expire by one clock, the
    /// database's, whatever the nodes' clocks say.
    fn db_now(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        }
    }

    /// Inside a write's transaction: refuses it unless `fence` is still the room's live lease.
    /// The no-op update takes the lease row's lock, so a takeover cannot commit in between.
    async fn check_fence(&self, tx: &mut Transaction<'_, Any>, fence: Option<&Fence>) -> Result<(), StoreError> {
        let Some(f) = fence else { return Ok(()) };
        let sql = format!(
            "UPDATE room_leases SET node_id = node_id \
             WHERE room_id = $1 AND node_id = $2 AND epoch = $3 AND expires_at >= {}",
            self.db_now()
        );
        let held =
            sqlx::query(&sql).bind(f.room.as_str()).bind(&f.node).bind(f.epoch).execute(&mut **tx).await.map_err(db)?;
        if held.rows_affected() == 1 { Ok(()) } else { Err(StoreError::Fenced(f.room.to_string())) }
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&self.pool))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// After a crash: closes this node's sessions that are still open (unless `close_sessions`
    /// is false: in a cluster they stay resumable, and the room's next owner takes them over)
    /// and ends calls that nobody is in any more. Returns (sessions closed, calls ended).
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
                "participant.left",
                &room,
                json!({"peerId": peer, "userId": user, "reason": "node_restart"}),
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

fn room_row(r: &AnyRow) -> Result<RoomRow, StoreError> {
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

fn chat_row(r: &AnyRow) -> Result<ChatMessage, StoreError> {
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

async fn event(
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

async fn apply_call_change(
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
            event(tx, "session.created", room.as_str(), json!({"callId": c.call_id, "status": s})).await?;
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
            event(tx, "session.closed", room.as_str(), json!({"callId": c.call_id, "reason": c.reason})).await?;
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

#[async_trait::async_trait]
impl RoomStore for Store {
    async fn load_room(
        &self,
        room: &RoomId,
        default_policy: &RoomPolicy,
        chat_history: u32,
    ) -> Result<StoredRoom, StoreError> {
        self.create_room(room.as_str(), default_policy, "join").await?;
        let row =
            self.room(room.as_str()).await?.ok_or_else(|| StoreError::Corrupt(format!("room {room} vanished")))?;
        let rows = sqlx::query(
            "SELECT id, user_id, display_name, conn_id, media, joined_at, resume_token FROM sessions \
             WHERE room_id = $1 AND left_at IS NULL ORDER BY joined_at, id",
        )
        .bind(room.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let participants = rows
            .iter()
            .map(|r| {
                Ok(StoredParticipant {
                    peer_id: PeerId::new(col::<String>(r, 0)?),
                    user_id: UserId::new(col::<String>(r, 1)?),
                    display_name: col(r, 2)?,
                    conn_id: ConnId::new(col::<String>(r, 3)?),
                    media: serde_json::from_str(&col::<String>(r, 4)?).unwrap_or_else(|_| MediaState::initial()),
                    joined_at: col(r, 5)?,
                    resume_token: col::<Option<String>>(r, 6)?.unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let next: AnyRow = sqlx::query("SELECT COALESCE(MAX(seq), 0) + 1 FROM chat_messages WHERE room_id = $1")
            .bind(room.as_str())
            .fetch_one(&self.pool)
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
            recent_chat: self.chat(room.as_str(), None, chat_history).await?,
            next_chat_seq,
        })
    }

    async fn record_join(
        &self,
        room: &RoomId,
        p: &StoredParticipant,
        call: Option<&CallChange>,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(db)?;
        self.check_fence(&mut tx, fence).await?;
        if let Some(c) = call {
            apply_call_change(&mut tx, room, c, now).await?;
        }
        sqlx::query(
            "INSERT INTO sessions (id, room_id, call_id, user_id, display_name, node_id, conn_id, media, joined_at, \
             resume_token) VALUES ($1, $2, (SELECT current_call_id FROM rooms WHERE id = $2), $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(p.peer_id.as_str())
        .bind(room.as_str())
        .bind(p.user_id.as_str())
        .bind(&p.display_name)
        .bind(&self.node_id)
        .bind(p.conn_id.as_str())
        .bind(serde_json::to_string(&p.media).unwrap_or_default())
        .bind(p.joined_at)
        .bind(&p.resume_token)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let payload = json!({"peerId": p.peer_id, "userId": p.user_id, "displayName": p.display_name});
        event(&mut tx, "participant.joined", room.as_str(), payload).await?;
        tx.commit().await.map_err(db)
    }

    async fn record_leave(
        &self,
        room: &RoomId,
        peer: &PeerId,
        reason: &str,
        call: Option<&CallChange>,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(db)?;
        self.check_fence(&mut tx, fence).await?;
        let closed =
            sqlx::query("UPDATE sessions SET left_at = $1, leave_reason = $2 WHERE id = $3 AND left_at IS NULL")
                .bind(now)
                .bind(reason)
                .bind(peer.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        if closed.rows_affected() == 1 {
            event(&mut tx, "participant.left", room.as_str(), json!({"peerId": peer, "reason": reason})).await?;
        }
        if let Some(c) = call {
            apply_call_change(&mut tx, room, c, now).await?;
        }
        tx.commit().await.map_err(db)
    }

    async fn record_call_change(
        &self,
        room: &RoomId,
        call: &CallChange,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        self.check_fence(&mut tx, fence).await?;
        apply_call_change(&mut tx, room, call, now_ms()).await?;
        tx.commit().await.map_err(db)
    }

    async fn record_media(&self, peer: &PeerId, media: &MediaState, fence: Option<&Fence>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        self.check_fence(&mut tx, fence).await?;
        sqlx::query("UPDATE sessions SET media = $1 WHERE id = $2")
            .bind(serde_json::to_string(media).unwrap_or_default())
            .bind(peer.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn append_chat(&self, m: &ChatMessage, fence: Option<&Fence>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        self.check_fence(&mut tx, fence).await?;
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

    async fn record_reattach(&self, peer: &PeerId, conn: &ConnId, fence: Option<&Fence>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        self.check_fence(&mut tx, fence).await?;
        sqlx::query("UPDATE sessions SET conn_id = $1 WHERE id = $2")
            .bind(conn.as_str())
            .bind(peer.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn record_quality(
        &self,
        room: &RoomId,
        peer: &PeerId,
        sample: &StatsSample,
        quality: &Quality,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        self.check_fence(&mut tx, fence).await?;
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

    async fn acquire_lease(&self, room: &RoomId, node: &str, ttl: Duration) -> Result<Result<i64, String>, StoreError> {
        // A live lease of another node blocks; an expired one, or this node's own (its
        // previous room actor died), is taken over with the next epoch.
        let sql = format!(
            "INSERT INTO room_leases (room_id, node_id, epoch, expires_at) VALUES ($1, $2, 1, {now} + $3) \
             ON CONFLICT (room_id) DO UPDATE SET node_id = excluded.node_id, epoch = room_leases.epoch + 1, \
             expires_at = excluded.expires_at \
             WHERE room_leases.expires_at < {now} OR room_leases.node_id = excluded.node_id \
             RETURNING epoch",
            now = self.db_now()
        );
        let row = sqlx::query(&sql)
            .bind(room.as_str())
            .bind(node)
            .bind(ttl.as_millis() as i64)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        if let Some(row) = row {
            return Ok(Ok(col::<i64>(&row, 0)?));
        }
        let holder = sqlx::query("SELECT node_id FROM room_leases WHERE room_id = $1")
            .bind(room.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .map(|r| col::<String>(&r, 0))
            .transpose()?
            .unwrap_or_default();
        Ok(Err(holder))
    }

    async fn renew_lease(&self, fence: &Fence, ttl: Duration) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE room_leases SET expires_at = {now} + $1 \
             WHERE room_id = $2 AND node_id = $3 AND epoch = $4 AND expires_at >= {now}",
            now = self.db_now()
        );
        let done = sqlx::query(&sql)
            .bind(ttl.as_millis() as i64)
            .bind(fence.room.as_str())
            .bind(&fence.node)
            .bind(fence.epoch)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError> {
        // The row stays, expired, so the next owner's epoch is still higher: epochs never repeat.
        sqlx::query("UPDATE room_leases SET expires_at = 0 WHERE room_id = $1 AND node_id = $2 AND epoch = $3")
            .bind(fence.room.as_str())
            .bind(&fence.node)
            .bind(fence.epoch)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }
}

/// Why a node could not claim its id.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another process with this id is beating.
    #[error("node id {node_id:?} is already live in the cluster (at {cluster_addr}); choose another --node-id")]
    Live {
        /// The id.
        node_id: String,
        /// Where the live one is.
        cluster_addr: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Claims `node_id` for this process. A row left by a process that stopped beating (a
    /// crash) is taken over after `liveness_wait` without a beat; a row that keeps beating
    /// means the id is live elsewhere.
    pub async fn claim_node(
        &self,
        node_id: &str,
        incarnation: &str,
        cluster_addr: &str,
        http_addr: &str,
        liveness_wait: Duration,
    ) -> Result<(), ClaimError> {
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO cluster_nodes (node_id, incarnation, cluster_addr, http_addr, beats, seen_at) \
             VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT (node_id) DO NOTHING",
        )
        .bind(node_id)
        .bind(incarnation)
        .bind(cluster_addr)
        .bind(http_addr)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        if inserted.rows_affected() == 1 {
            return Ok(());
        }
        let beats = |s: &Store| {
            let s = s.clone();
            let node_id = node_id.to_owned();
            async move {
                let row = sqlx::query("SELECT beats, incarnation, cluster_addr FROM cluster_nodes WHERE node_id = $1")
                    .bind(&node_id)
                    .fetch_optional(&s.pool)
                    .await
                    .map_err(db)?;
                row.map(|r| Ok::<_, StoreError>((col::<i64>(&r, 0)?, col::<String>(&r, 1)?, col::<String>(&r, 2)?)))
                    .transpose()
            }
        };
        let before = beats(self).await?;
        tokio::time::sleep(liveness_wait).await;
        let after = beats(self).await?;
        match (before, after) {
            (Some((b0, inc0, _)), Some((b1, inc1, addr))) if b0 != b1 || inc0 != inc1 => {
                Err(ClaimError::Live { node_id: node_id.to_owned(), cluster_addr: addr })
            }
            (_, Some((b1, inc1, addr))) => {
                let taken = sqlx::query(
                    "UPDATE cluster_nodes SET incarnation = $1, cluster_addr = $2, http_addr = $3, beats = 0, seen_at = $4 \
                     WHERE node_id = $5 AND incarnation = $6 AND beats = $7",
                )
                .bind(incarnation)
                .bind(cluster_addr)
                .bind(http_addr)
                .bind(now_ms())
                .bind(node_id)
                .bind(&inc1)
                .bind(b1)
                .execute(&self.pool)
                .await
                .map_err(db)?;
                if taken.rows_affected() == 1 {
                    Ok(())
                } else {
                    Err(ClaimError::Live { node_id: node_id.to_owned(), cluster_addr: addr })
                }
            }
            // The row went away while we watched (its owner stopped cleanly): claim afresh.
            (_, None) => Box::pin(self.claim_node(node_id, incarnation, cluster_addr, http_addr, liveness_wait)).await,
        }
    }

    /// One heartbeat of this node's claim; `false` when another process has taken the id.
    pub async fn beat(&self, node_id: &str, incarnation: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE cluster_nodes SET beats = beats + 1, seen_at = $1 WHERE node_id = $2 AND incarnation = $3",
        )
        .bind(now_ms())
        .bind(node_id)
        .bind(incarnation)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives the id back at a clean shutdown, so a restart does not wait.
    pub async fn release_node(&self, node_id: &str, incarnation: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM cluster_nodes WHERE node_id = $1 AND incarnation = $2")
            .bind(node_id)
            .bind(incarnation)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }
}

impl Store {
    /// The node holding a live lease on `room`, if any.
    pub async fn lease_holder(&self, room: &str) -> Result<Option<String>, StoreError> {
        let sql = format!("SELECT node_id FROM room_leases WHERE room_id = $1 AND expires_at >= {}", self.db_now());
        let row = sqlx::query(&sql).bind(room).fetch_optional(&self.pool).await.map_err(db)?;
        row.map(|r| col::<String>(&r, 0)).transpose()
    }

    /// Rooms with open sessions and no live lease: their owner died (or the whole cluster
    /// stopped) and nobody has taken them over yet. At most `limit`.
    pub async fn orphaned_rooms(&self, limit: u32) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "SELECT DISTINCT room_id FROM sessions s WHERE left_at IS NULL \
             AND NOT EXISTS (SELECT 1 FROM room_leases l WHERE l.room_id = s.room_id AND l.expires_at >= {}) \
             ORDER BY room_id LIMIT $1",
            self.db_now()
        );
        let rows = sqlx::query(&sql).bind(i64::from(limit)).fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(|r| col::<String>(r, 0)).collect()
    }

    /// Live leases (room, node, epoch) in room order, `limit` after `after`: the cluster's room map.
    pub async fn live_leases(&self, after: &str, limit: u32) -> Result<Vec<(String, String, i64)>, StoreError> {
        let sql = format!(
            "SELECT room_id, node_id, epoch FROM room_leases WHERE expires_at >= {} AND room_id > $1 ORDER BY room_id LIMIT $2",
            self.db_now()
        );
        let rows = sqlx::query(&sql).bind(after).bind(i64::from(limit)).fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(|r| Ok((col(r, 0)?, col(r, 1)?, col(r, 2)?))).collect()
    }
}

impl Store {
    /// The first column of the rows `sql` selects for `key`, as text.
    async fn texts(&self, sql: &str, key: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(sql).bind(key).fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(|r| col::<String>(r, 0)).collect()
    }

    /// Connection ids of a room's open sessions.
    pub async fn open_connections(&self, room: &str) -> Result<Vec<String>, StoreError> {
        self.texts("SELECT conn_id FROM sessions WHERE room_id = $1 AND left_at IS NULL", room).await
    }

    /// Quality levels recorded for a peer, oldest first.
    pub async fn quality_levels(&self, peer: &str) -> Result<Vec<String>, StoreError> {
        self.texts("SELECT level FROM call_stats WHERE peer_id = $1 ORDER BY sampled_at", peer).await
    }

    /// The room of a session that has not been closed.
    pub async fn session_room(&self, peer: &str) -> Result<Option<String>, StoreError> {
        Ok(self.texts("SELECT room_id FROM sessions WHERE id = $1 AND left_at IS NULL", peer).await?.pop())
    }
}
