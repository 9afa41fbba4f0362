//! The `lobby_queue` table: who waits in which lobby, since when, looking for what. Pairing is
//! one transaction per newcomer, and the transactions of one lobby run one at a time (an
//! advisory lock on PostgreSQL; SQLite has one writer), so the whole cluster sees one queue
//! per lobby: nobody is paired twice, nobody with themself, and the longest-waiting match wins.

use super::{Backend, Store, col, db};
use crate::lobby::tags_match;
use std::time::Duration;
use switchboard_actors::ports::StoreError;

/// What a `lobby_join` came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Entered {
    /// Waiting, with this many people ahead.
    Waiting { ahead: usize },
    /// Paired with the partner who waited longest among the matches; both rows are gone.
    Paired { partner_user: String, partner_conn: String },
    /// This user waits in this lobby already, on another open connection.
    AlreadyWaiting,
}

impl Store {
    /// `user` on connection `conn` waits in `lobby` for someone matching `tags`, and is paired
    /// at once if someone who waits matches. A person whose connection closed less than
    /// `grace` ago takes their place back; one gone longer is forgotten. `alive` says whether
    /// a waiting connection is still open (one that is not is set aside as gone).
    pub async fn lobby_enter(
        &self,
        lobby: &str,
        user: &str,
        conn: &str,
        tags: &[String],
        grace: Duration,
        alive: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Entered, StoreError> {
        let now = self.db_now();
        let grace_ms = grace.as_millis() as i64;
        let tags_text = serde_json::to_string(tags).unwrap_or_else(|_| "[]".into());
        let mut tx = self.pool.begin().await.map_err(db)?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('lobby:' || $1))")
                .bind(lobby)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        // A write first (on SQLite it takes the write lock at once): the long gone are forgotten.
        sqlx::query(&format!(
            "DELETE FROM lobby_queue WHERE lobby = $1 AND gone_at IS NOT NULL AND gone_at < {now} - $2"
        ))
        .bind(lobby)
        .bind(grace_ms)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let mine = sqlx::query("SELECT conn_id, gone_at FROM lobby_queue WHERE lobby = $1 AND user_id = $2")
            .bind(lobby)
            .bind(user)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        match mine {
            Some(row) => {
                let (their_conn, gone_at): (String, Option<i64>) = (col(&row, 0)?, col(&row, 1)?);
                if gone_at.is_none() && their_conn != conn && alive(&their_conn) {
                    tx.commit().await.map_err(db)?;
                    return Ok(Entered::AlreadyWaiting);
                }
                // Back within the grace period (or again on the same connection): the same place.
                sqlx::query(
                    "UPDATE lobby_queue SET conn_id = $1, tags = $2, gone_at = NULL WHERE lobby = $3 AND user_id = $4",
                )
                .bind(conn)
                .bind(&tags_text)
                .bind(lobby)
                .bind(user)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            None => {
                sqlx::query(&format!(
                    "INSERT INTO lobby_queue (lobby, user_id, conn_id, tags, enqueued_at, position, gone_at) \
                     VALUES ($1, $2, $3, $4, {now}, \
                     (SELECT COALESCE(MAX(position), 0) + 1 FROM lobby_queue WHERE lobby = $1), NULL)"
                ))
                .bind(lobby)
                .bind(user)
                .bind(conn)
                .bind(&tags_text)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
        }
        let waiting = sqlx::query(
            "SELECT user_id, conn_id, tags FROM lobby_queue WHERE lobby = $1 AND user_id <> $2 AND gone_at IS NULL \
             ORDER BY position",
        )
        .bind(lobby)
        .bind(user)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        for row in &waiting {
            let (their_user, their_conn, their_tags): (String, String, String) =
                (col(row, 0)?, col(row, 1)?, col(row, 2)?);
            let their_tags: Vec<String> = serde_json::from_str(&their_tags).unwrap_or_default();
            if !tags_match(tags, &their_tags) {
                continue;
            }
            if !alive(&their_conn) {
                // Their connection is gone (its node died, say): not paired while gone.
                sqlx::query(&format!("UPDATE lobby_queue SET gone_at = {now} WHERE lobby = $1 AND user_id = $2"))
                    .bind(lobby)
                    .bind(&their_user)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                continue;
            }
            sqlx::query("DELETE FROM lobby_queue WHERE lobby = $1 AND (user_id = $2 OR user_id = $3)")
                .bind(lobby)
                .bind(user)
                .bind(&their_user)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)?;
            return Ok(Entered::Paired { partner_user: their_user, partner_conn: their_conn });
        }
        let ahead = sqlx::query(
            "SELECT COUNT(*) FROM lobby_queue q WHERE q.lobby = $1 AND q.gone_at IS NULL AND q.position < \
             (SELECT position FROM lobby_queue WHERE lobby = $1 AND user_id = $2)",
        )
        .bind(lobby)
        .bind(user)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        let ahead: i64 = col(&ahead, 0)?;
        tx.commit().await.map_err(db)?;
        Ok(Entered::Waiting { ahead: ahead.max(0) as usize })
    }

    /// `user` stops waiting in `lobby` on `conn` (a leave or a timeout). False when they were
    /// not waiting there on that connection (paired meanwhile, say).
    pub async fn lobby_leave(&self, lobby: &str, user: &str, conn: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM lobby_queue WHERE lobby = $1 AND user_id = $2 AND conn_id = $3")
            .bind(lobby)
            .bind(user)
            .bind(conn)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    /// Connection `conn` closed: whoever waited on it is gone (not paired, and forgotten once
    /// the grace period has passed unless they come back).
    pub async fn lobby_gone(&self, conn: &str) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "UPDATE lobby_queue SET gone_at = {} WHERE conn_id = $1 AND gone_at IS NULL",
            self.db_now()
        ))
        .bind(conn)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// How long each person waiting in `lobby` has waited so far, in milliseconds, longest first.
    pub async fn lobby_waits(&self, lobby: &str) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {} - enqueued_at FROM lobby_queue WHERE lobby = $1 AND gone_at IS NULL ORDER BY position",
            self.db_now()
        ))
        .bind(lobby)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(|r| col::<i64>(r, 0).map(|w| w.max(0))).collect()
    }
}
