//! The `cluster_nodes` table: one row per node id, claimed by one process at a time and
//! kept by its heartbeat.

use super::{Store, col, db};
use std::time::Duration;
use switchboard_actors::ports::{StoreError, now_ms};

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
