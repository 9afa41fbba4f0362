//! The `room_leases` table: which node owns a room, under which of its lease terms, with which
//! epoch (the fence every write of the room carries).
//!
//! A row is written only when the room changes hands (taken, handed over, released); while its
//! node keeps its node lease (`cluster_nodes`) the room stays owned at no cost. A row is live
//! while it is not released (`expires_at > 0`) and its node's lease at the row's term is live,
//! on the database's clock.

use super::{Store, col, db};
use switchboard_actors::ids::RoomId;
use switchboard_actors::ports::{Fence, StoreError};

impl Store {
    /// SQL: the ownership row `l` is live (not released, its node's lease at its term live).
    pub(super) fn owned(&self, l: &str) -> String {
        format!(
            "{l}.expires_at > 0 AND EXISTS (SELECT 1 FROM cluster_nodes n WHERE n.node_id = {l}.node_id \
             AND n.term = {l}.node_term AND n.lease_until >= {now})",
            now = self.db_now()
        )
    }

    /// The node owning `room` now, if any.
    pub async fn lease_holder(&self, room: &str) -> Result<Option<String>, StoreError> {
        let sql = format!("SELECT l.node_id FROM room_leases l WHERE l.room_id = $1 AND {}", self.owned("l"));
        let row = sqlx::query(&sql).bind(room).fetch_optional(&self.pool).await.map_err(db)?;
        row.map(|r| col::<String>(&r, 0)).transpose()
    }

    /// How many rooms `node` owns now.
    pub async fn owned_by(&self, node: &str) -> Result<i64, StoreError> {
        let sql = format!("SELECT COUNT(*) FROM room_leases l WHERE l.node_id = $1 AND {}", self.owned("l"));
        let row = sqlx::query(&sql).bind(node).fetch_one(&self.pool).await.map_err(db)?;
        col::<i64>(&row, 0)
    }

    /// Rooms with open sessions and no live owner: their owner died (or the whole cluster
    /// stopped, or a single node crashed) and nobody has taken them over yet. At most `limit`,
    /// in room order after `after`.
    pub async fn orphaned_rooms(&self, after: &str, limit: u32) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "SELECT DISTINCT room_id FROM sessions s WHERE left_at IS NULL AND room_id > $1 \
             AND NOT EXISTS (SELECT 1 FROM room_leases l WHERE l.room_id = s.room_id AND {}) \
             ORDER BY room_id LIMIT $2",
            self.owned("l")
        );
        let rows = sqlx::query(&sql).bind(after).bind(i64::from(limit)).fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(|r| col::<String>(r, 0)).collect()
    }

    /// Live ownership (room, node, epoch) in room order, `limit` after `after`: the cluster's
    /// room map.
    pub async fn live_leases(&self, after: &str, limit: u32) -> Result<Vec<(String, String, i64)>, StoreError> {
        let sql = format!(
            "SELECT l.room_id, l.node_id, l.epoch FROM room_leases l WHERE {} AND l.room_id > $1 \
             ORDER BY l.room_id LIMIT $2",
            self.owned("l")
        );
        let rows = sqlx::query(&sql).bind(after).bind(i64::from(limit)).fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(|r| Ok((col(r, 0)?, col(r, 1)?, col(r, 2)?))).collect()
    }
}

/// SQL: this node's own lease at term `$3` (node `$2`) is live.
fn mine_live(store: &Store) -> String {
    format!(
        "EXISTS (SELECT 1 FROM cluster_nodes me WHERE me.node_id = $2 AND me.term = $3 AND me.lease_until >= {})",
        store.db_now()
    )
}

pub(super) async fn acquire_lease(
    store: &Store,
    room: &RoomId,
    node: &str,
    term: i64,
) -> Result<Result<i64, String>, StoreError> {
    // A live owner blocks; a released row, one whose node's lease has run out, or this node's
    // own at this term (its previous room actor died) is taken over with the next epoch. The
    // taker's own lease must be live.
    let sql = format!(
        "INSERT INTO room_leases (room_id, node_id, node_term, epoch, expires_at) \
         SELECT $1, $2, $3, 1, {now} WHERE {mine} \
         ON CONFLICT (room_id) DO UPDATE SET node_id = excluded.node_id, node_term = excluded.node_term, \
         epoch = room_leases.epoch + 1, expires_at = excluded.expires_at \
         WHERE (room_leases.node_id = excluded.node_id AND room_leases.node_term = excluded.node_term) \
         OR NOT ({owned}) \
         RETURNING epoch",
        now = store.db_now(),
        mine = mine_live(store),
        owned = store.owned("room_leases"),
    );
    let row =
        sqlx::query(&sql).bind(room.as_str()).bind(node).bind(term).fetch_optional(&store.pool).await.map_err(db)?;
    if let Some(row) = row {
        store.counted_ownership_write();
        return Ok(Ok(col::<i64>(&row, 0)?));
    }
    let holder = sqlx::query("SELECT node_id FROM room_leases WHERE room_id = $1")
        .bind(room.as_str())
        .fetch_optional(&store.pool)
        .await
        .map_err(db)?
        .map(|r| col::<String>(&r, 0))
        .transpose()?
        .unwrap_or_default();
    Ok(Err(holder))
}

pub(super) async fn release_lease(store: &Store, fence: &Fence) -> Result<(), StoreError> {
    // The row stays, released, so the next owner's epoch is still higher: epochs never repeat.
    sqlx::query("UPDATE room_leases SET expires_at = 0 WHERE room_id = $1 AND node_id = $2 AND epoch = $3")
        .bind(fence.room.as_str())
        .bind(&fence.node)
        .bind(fence.epoch)
        .execute(&store.pool)
        .await
        .map_err(db)?;
    store.counted_ownership_write();
    Ok(())
}

pub(super) async fn transfer_lease(
    store: &Store,
    from: &Fence,
    node: &str,
    term: i64,
) -> Result<Option<i64>, StoreError> {
    // The row is still the one the previous owner handed over (same node, same epoch) exactly
    // when nobody took the room since: any other taker raises the epoch.
    let sql = format!(
        "UPDATE room_leases SET node_id = $2, node_term = $3, epoch = epoch + 1, expires_at = {now} \
         WHERE room_id = $1 AND node_id = $4 AND epoch = $5 AND {mine} RETURNING epoch",
        now = store.db_now(),
        mine = mine_live(store),
    );
    let row = sqlx::query(&sql)
        .bind(from.room.as_str())
        .bind(node)
        .bind(term)
        .bind(&from.node)
        .bind(from.epoch)
        .fetch_optional(&store.pool)
        .await
        .map_err(db)?;
    store.counted_ownership_write();
    row.map(|r| col::<i64>(&r, 0)).transpose()
}
