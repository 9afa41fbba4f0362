//! The `cluster_nodes` table: one row per node id, claimed by one process at a time, holding
//! the node's lease: a term (rising with every new process and every lapse) and its expiry on
//! the database's clock. The lease is what makes a node's rooms owned (see `room_leases`).

use super::{Store, col, db};
use std::time::Duration;
use switchboard_actors::ports::{StoreError, now_ms};

/// A node as the database sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeState {
    /// Node id.
    pub node_id: String,
    /// Its lease term.
    pub term: i64,
    /// Whether its lease is live now.
    pub live: bool,
    /// The process that holds it (random per process start, as in its heartbeat's hello).
    pub incarnation: String,
    /// Whether an operator cordoned it.
    pub cordoned: bool,
    /// Its cluster address.
    pub cluster_addr: String,
}

/// Why a node could not claim its id.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another process with this id keeps its lease.
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
    /// Claims `node_id` for this process with a new lease term, valid for `ttl`, and returns
    /// the term with when the statement that claimed the id was sent: the lease is valid for
    /// `ttl` from then (not from the call, which may have waited out a predecessor's lease
    /// first). A row whose lease has run out (its process crashed, or stopped cleanly) is taken
    /// at once; a live lease is waited out once, and if it is still renewed after that, the id is
    /// live elsewhere.
    pub async fn claim_node(
        &self,
        node_id: &str,
        incarnation: &str,
        cluster_addr: &str,
        http_addr: &str,
        ttl: Duration,
    ) -> Result<(i64, std::time::Instant), ClaimError> {
        let asked = std::time::Instant::now();
        let sql = format!(
            "INSERT INTO cluster_nodes (node_id, incarnation, cluster_addr, http_addr, beats, seen_at, term, lease_until) \
             VALUES ($1, $2, $3, $4, 0, $5, 1, {} + $6) ON CONFLICT (node_id) DO NOTHING",
            self.db_now()
        );
        let inserted = sqlx::query(&sql)
            .bind(node_id)
            .bind(incarnation)
            .bind(cluster_addr)
            .bind(http_addr)
            .bind(now_ms())
            .bind(ttl.as_millis() as i64)
            .execute(&self.lease_pool)
            .await
            .map_err(db)?;
        if inserted.rows_affected() == 1 {
            self.counted_node_write();
            return Ok((1, asked));
        }
        for attempt in 0..2 {
            let asked = std::time::Instant::now();
            let sql = format!(
                "UPDATE cluster_nodes SET incarnation = $1, cluster_addr = $2, http_addr = $3, beats = 0, seen_at = $4, \
                 term = term + 1, lease_until = {now} + $5 WHERE node_id = $6 AND lease_until < {now} RETURNING term",
                now = self.db_now()
            );
            let taken = sqlx::query(&sql)
                .bind(incarnation)
                .bind(cluster_addr)
                .bind(http_addr)
                .bind(now_ms())
                .bind(ttl.as_millis() as i64)
                .bind(node_id)
                .fetch_optional(&self.lease_pool)
                .await
                .map_err(db)?;
            if let Some(row) = taken {
                self.counted_node_write();
                return Ok((col::<i64>(&row, 0)?, asked));
            }
            let sql =
                format!("SELECT cluster_addr, lease_until - {} FROM cluster_nodes WHERE node_id = $1", self.db_now());
            let row = sqlx::query(&sql).bind(node_id).fetch_optional(&self.lease_pool).await.map_err(db)?;
            let Some(row) = row else { continue };
            let (addr, left_ms): (String, i64) = (col(&row, 0)?, col(&row, 1)?);
            if attempt == 1 {
                return Err(ClaimError::Live { node_id: node_id.to_owned(), cluster_addr: addr });
            }
            // Wait the lease out: a crashed process's runs out, a live one's is renewed.
            tokio::time::sleep(Duration::from_millis(left_ms.clamp(0, ttl.as_millis() as i64) as u64 + 50)).await;
        }
        Err(ClaimError::Live { node_id: node_id.to_owned(), cluster_addr: String::new() })
    }

    /// Renews this process's node lease at `term` for `ttl`; `false` when the term is over
    /// (the lease ran out first, or another process has the id).
    pub async fn renew_node_lease(
        &self,
        node_id: &str,
        incarnation: &str,
        term: i64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE cluster_nodes SET beats = beats + 1, seen_at = $1, lease_until = {now} + $2 \
             WHERE node_id = $3 AND incarnation = $4 AND term = $5 AND lease_until >= {now}",
            now = self.db_now()
        );
        let done = sqlx::query(&sql)
            .bind(now_ms())
            .bind(ttl.as_millis() as i64)
            .bind(node_id)
            .bind(incarnation)
            .bind(term)
            .execute(&self.lease_pool)
            .await
            .map_err(db)?;
        self.counted_node_write();
        Ok(done.rows_affected() == 1)
    }

    /// Starts a new term of this process's node lease, valid for `ttl`: every room owned under
    /// an older term is unowned from now on. `None` when another process has taken the id.
    pub async fn new_node_term(
        &self,
        node_id: &str,
        incarnation: &str,
        ttl: Duration,
    ) -> Result<Option<i64>, StoreError> {
        let sql = format!(
            "UPDATE cluster_nodes SET term = term + 1, seen_at = $1, lease_until = {} + $2 \
             WHERE node_id = $3 AND incarnation = $4 RETURNING term",
            self.db_now()
        );
        let row = sqlx::query(&sql)
            .bind(now_ms())
            .bind(ttl.as_millis() as i64)
            .bind(node_id)
            .bind(incarnation)
            .fetch_optional(&self.lease_pool)
            .await
            .map_err(db)?;
        self.counted_node_write();
        row.map(|r| col::<i64>(&r, 0)).transpose()
    }

    /// Every node as the database sees it now: its lease term, whether that lease is live, and
    /// whether an operator cordoned it.
    pub async fn node_states(&self) -> Result<Vec<NodeState>, StoreError> {
        let sql = format!(
            "SELECT node_id, term, lease_until - {}, cordoned, cluster_addr, incarnation FROM cluster_nodes ORDER BY node_id",
            self.db_now()
        );
        let rows = sqlx::query(&sql).fetch_all(&self.lease_pool).await.map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(NodeState {
                    node_id: col(r, 0)?,
                    term: col(r, 1)?,
                    live: col::<i64>(r, 2)? >= 0,
                    cordoned: col::<i64>(r, 3)? != 0,
                    cluster_addr: col(r, 4)?,
                    incarnation: col(r, 5)?,
                })
            })
            .collect()
    }

    /// Cordons (or uncordons) a node: a cordoned node takes no new rooms and keeps its own.
    /// False when no node has that id.
    pub async fn set_cordoned(&self, node_id: &str, cordoned: bool) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE cluster_nodes SET cordoned = $1 WHERE node_id = $2")
            .bind(i64::from(cordoned))
            .bind(node_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives the lease up at a clean shutdown, so a restart (or the other nodes' takeover of
    /// anything left) does not wait. The row stays so that terms never repeat.
    pub async fn release_node(&self, node_id: &str, incarnation: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE cluster_nodes SET lease_until = 0 WHERE node_id = $1 AND incarnation = $2")
            .bind(node_id)
            .bind(incarnation)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        self.counted_node_write();
        Ok(())
    }
}
