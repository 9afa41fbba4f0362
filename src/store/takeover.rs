//! Taking many rooms at once: when a node's lease ends, a survivor takes the orphaned rooms
//! it is chosen for in one statement per [`CHUNK`] rooms and reads their state in four
//! queries per chunk, instead of a write and five reads for each room. Thousands of rooms then
//! change hands in well under a second; each room's actor starts from what was read here.

use super::rooms::{participant_row, room_row};
use super::{Store, chat::chat_row, col, db};
use std::collections::HashMap;
use switchboard_actors::ids::UserId;
use switchboard_actors::ports::{RoomPolicy, StoreError, StoredRoom};

/// Rooms per statement (well below every backend's limit on bound parameters).
pub const CHUNK: usize = 400;

/// `($first), ($first+1), ...`: one row per room, for `VALUES`.
fn values(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("(${i})")).collect::<Vec<_>>().join(", ")
}

/// `$first, $first+1, ...`: for `IN (...)`.
fn list(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// `sql` with every room of `rooms` bound, in order.
fn bound<'q>(sql: &'q str, rooms: &'q [String]) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    rooms.iter().fold(sqlx::query(sql), |q, room| q.bind(room.as_str()))
}

impl Store {
    /// Takes every room of `rooms` that nobody owns now (its owner's lease ended, or it was
    /// released) for `node` at its lease term `term`, with the next epoch of each; returns the
    /// rooms taken and their epochs. A room owned by anyone, this node included, is left
    /// alone; nothing is taken unless `node`'s own lease at `term` is live.
    pub async fn take_rooms(&self, rooms: &[String], node: &str, term: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let mut rooms: Vec<&String> = rooms.iter().collect();
        rooms.sort();
        rooms.dedup();
        let mut taken = Vec::new();
        for chunk in rooms.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO room_leases (room_id, node_id, node_term, epoch, expires_at) \
                 SELECT v.column1, $1, $2, 1, {now} FROM (VALUES {values}) AS v WHERE EXISTS (SELECT 1 FROM \
                 cluster_nodes me WHERE me.node_id = $1 AND me.term = $2 AND me.lease_until >= {now}) \
                 ON CONFLICT (room_id) DO UPDATE SET node_id = excluded.node_id, node_term = excluded.node_term, \
                 epoch = room_leases.epoch + 1, expires_at = excluded.expires_at WHERE NOT ({owned}) \
                 RETURNING room_id, epoch",
                now = self.db_now(),
                values = values(3, chunk.len()),
                owned = self.owned("room_leases"),
            );
            let mut q = sqlx::query(&sql).bind(node).bind(term);
            for room in chunk {
                q = q.bind(room.as_str());
            }
            let rows = q.fetch_all(&self.pool).await.map_err(db)?;
            for r in &rows {
                taken.push((col::<String>(r, 0)?, col::<i64>(r, 1)?));
                self.counted_ownership_write();
            }
        }
        Ok(taken)
    }

    /// The state of existing rooms, as `load_room` reads it for one, with the `chat_history`
    /// latest chat messages of each; rooms without a row are left out.
    pub async fn load_rooms(
        &self,
        rooms: &[String],
        chat_history: u32,
    ) -> Result<HashMap<String, StoredRoom>, StoreError> {
        let mut out = HashMap::with_capacity(rooms.len());
        for chunk in rooms.chunks(CHUNK) {
            let ids = list(1, chunk.len());
            let sql = format!(
                "SELECT id, created_at, max_participants, invitees, call_status, current_call_id FROM rooms \
                 WHERE id IN ({ids})"
            );
            for r in bound(&sql, chunk).fetch_all(&self.pool).await.map_err(db)? {
                let row = room_row(&r)?;
                let call_id = if row.call_status.is_open() { row.call_id } else { None };
                let policy = RoomPolicy {
                    max_participants: row.max_participants,
                    invitees: row.invitees.map(|v| v.into_iter().map(UserId::from).collect()),
                };
                let room = StoredRoom {
                    policy,
                    status: row.call_status,
                    call_id,
                    participants: Vec::new(),
                    recent_chat: Vec::new(),
                    next_chat_seq: 1,
                };
                out.insert(row.room_id, room);
            }
            let sql = format!(
                "SELECT room_id, id, user_id, display_name, conn_id, media, joined_at, resume_token, hidden \
                 FROM sessions WHERE left_at IS NULL AND room_id IN ({ids}) ORDER BY room_id, joined_at, id"
            );
            for r in bound(&sql, chunk).fetch_all(&self.pool).await.map_err(db)? {
                if let Some(room) = out.get_mut(&col::<String>(&r, 0)?) {
                    room.participants.push(participant_row(&r, 1)?);
                }
            }
            let sql = format!(
                "SELECT room_id, COALESCE(MAX(seq), 0) + 1 FROM chat_messages WHERE room_id IN ({ids}) \
                 GROUP BY room_id"
            );
            for r in bound(&sql, chunk).fetch_all(&self.pool).await.map_err(db)? {
                if let Some(room) = out.get_mut(&col::<String>(&r, 0)?) {
                    room.next_chat_seq = col(&r, 1)?;
                }
            }
            if chat_history == 0 {
                continue;
            }
            let sql = format!(
                "SELECT id, room_id, seq, peer_id, user_id, display_name, text, sent_at FROM (SELECT c.id, \
                 c.room_id, c.seq, c.peer_id, c.user_id, c.display_name, c.text, c.sent_at, ROW_NUMBER() OVER \
                 (PARTITION BY c.room_id ORDER BY c.seq DESC) AS newest FROM chat_messages c WHERE c.room_id IN \
                 ({ids})) t WHERE newest <= {chat_history} ORDER BY room_id, seq"
            );
            for r in bound(&sql, chunk).fetch_all(&self.pool).await.map_err(db)? {
                let message = chat_row(&r)?;
                if let Some(room) = out.get_mut(message.room_id.as_str()) {
                    room.recent_chat.push(message);
                }
            }
        }
        Ok(out)
    }
}
