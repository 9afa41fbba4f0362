//! The `room_leases` table: which node owns a room, until when, with which epoch (the fence
//! every write of the room carries).

use super::{Store, col, db};
use std::time::Duration;
use switchboard_actors::ids::RoomId;
use switchboard_actors::ports::{Fence, StoreError};

impl Store {
    /// The node holding a live lease on `room`, if any.
    pub async fn lease_holder(&self, room: &str) -> Result<Option<String>, StoreError> {
        let sql = format!("SELECT node_id FROM room_leases WHERE room_id = $1 AND expires_at >= {}", self.db_now());
        let row = sqlx::query(&sql).bind(room).fetch_optional(&self.pool).await.map_err(db)?;
        row.map(|r| col::<String>(&r, 0)).transpose()
    }

    /// Rooms with open sessions and no live lease: their owner died (or the whole cluster
    /// stopped, or a single node crashed) and nobody has taken them over yet. At most `limit`,
    /// in room order after `after`.
    pub async fn orphaned_rooms(&self, after: &str, limit: u32) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "SELECT DISTINCT room_id FROM sessions s WHERE left_at IS NULL AND room_id > $1 \
             AND NOT EXISTS (SELECT 1 FROM room_leases l WHERE l.room_id = s.room_id AND l.expires_at >= {}) \
             ORDER BY room_id LIMIT $2",
            self.db_now()
        );
        let rows = sqlx::query(&sql).bind(after).bind(i64::from(limit)).fetch_all(&self.pool).await.map_err(db)?;
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

    /// Gives a lease that its node is handing over a full lifetime again, expired or not, as long
    /// as nobody took the room since (same node, same epoch): the room's instance has stopped and
    /// its state travels in the hand-off, so the successor must find the lease still unclaimed
    /// however long the hand-off took. True when the lease was still the one handed over.
    pub async fn extend_handed_lease(&self, fence: &Fence, ttl: Duration) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE room_leases SET expires_at = {} + $1 WHERE room_id = $2 AND node_id = $3 AND epoch = $4",
            self.db_now()
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
}

pub(super) async fn acquire_lease(
    store: &Store,
    room: &RoomId,
    node: &str,
    ttl: Duration,
) -> Result<Result<i64, String>, StoreError> {
    // A live lease of another node blocks; an expired one, or this node's own (its
    // previous room actor died), is taken over with the next epoch.
    let sql = format!(
        "INSERT INTO room_leases (room_id, node_id, epoch, expires_at) VALUES ($1, $2, 1, {now} + $3) \
         ON CONFLICT (room_id) DO UPDATE SET node_id = excluded.node_id, epoch = room_leases.epoch + 1, \
         expires_at = excluded.expires_at \
         WHERE room_leases.expires_at < {now} OR room_leases.node_id = excluded.node_id \
         RETURNING epoch",
        now = store.db_now()
    );
    let row = sqlx::query(&sql)
        .bind(room.as_str())
        .bind(node)
        .bind(ttl.as_millis() as i64)
        .fetch_optional(&store.pool)
        .await
        .map_err(db)?;
    if let Some(row) = row {
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

pub(super) async fn renew_lease(store: &Store, fence: &Fence, ttl: Duration) -> Result<bool, StoreError> {
    let sql = format!(
        "UPDATE room_leases SET expires_at = {now} + $1 \
         WHERE room_id = $2 AND node_id = $3 AND epoch = $4 AND expires_at >= {now}",
        now = store.db_now()
    );
    let done = sqlx::query(&sql)
        .bind(ttl.as_millis() as i64)
        .bind(fence.room.as_str())
        .bind(&fence.node)
        .bind(fence.epoch)
        .execute(&store.pool)
        .await
        .map_err(db)?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn release_lease(store: &Store, fence: &Fence) -> Result<(), StoreError> {
    // The row stays, expired, so the next owner's epoch is still higher: epochs never repeat.
    sqlx::query("UPDATE room_leases SET expires_at = 0 WHERE room_id = $1 AND node_id = $2 AND epoch = $3")
        .bind(fence.room.as_str())
        .bind(&fence.node)
        .bind(fence.epoch)
        .execute(&store.pool)
        .await
        .map_err(db)?;
    Ok(())
}

pub(super) async fn transfer_lease(
    store: &Store,
    from: &Fence,
    node: &str,
    ttl: Duration,
) -> Result<Option<i64>, StoreError> {
    // The row is still the one the previous owner handed over (same node, same epoch) exactly
    // when nobody took the room since: any other taker raises the epoch.
    let sql = format!(
        "UPDATE room_leases SET node_id = $1, epoch = epoch + 1, expires_at = {} + $2 \
         WHERE room_id = $3 AND node_id = $4 AND epoch = $5 RETURNING epoch",
        store.db_now()
    );
    let row = sqlx::query(&sql)
        .bind(node)
        .bind(ttl.as_millis() as i64)
        .bind(from.room.as_str())
        .bind(&from.node)
        .bind(from.epoch)
        .fetch_optional(&store.pool)
        .await
        .map_err(db)?;
    row.map(|r| col::<i64>(&r, 0)).transpose()
}
