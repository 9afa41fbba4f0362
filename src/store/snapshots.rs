//! The snapshot tables: `snapshot_jobs` (each job's state machine, claimed by one node at a
//! time), `snapshot_baselines` (the first snapshot of each subject in a room), `reports` (the
//! signed chain of each room) and `signing_keys` (every node's public key).

use super::events::event;
use super::{Store, col, db};
use crate::events::Event;
use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use switchboard_actors::ports::{StoreError, now_ms};

/// A snapshot job.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// Its id.
    #[serde(rename = "jobId")]
    pub id: String,
    /// The room.
    pub room_id: String,
    /// What the snapshot shows.
    pub subject: String,
    /// The user who sent it.
    pub requested_by: String,
    /// `queued`, `dispatched`, `scored`, `reported` or `failed`.
    pub state: String,
    /// Attempts so far.
    pub attempts: i64,
    /// Why it failed (a code), when it did.
    pub error_code: Option<String>,
    /// The last error, when there was one.
    pub last_error: Option<String>,
    /// The snapshot's content id.
    pub snapshot_cid: String,
    /// Its baseline's, once known.
    pub baseline_cid: Option<String>,
    /// The heatmap's, once made.
    pub heatmap_cid: Option<String>,
    /// The report, once made.
    pub report_id: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// The node that claimed it last (works it now, while `dispatched` or `scored`).
    pub claimed_by: Option<String>,
}

/// What a new job needs.
#[derive(Clone, Debug)]
pub struct NewJob {
    /// The room.
    pub room_id: String,
    /// What the snapshot shows.
    pub subject: String,
    /// Who sent it.
    pub requested_by: String,
    /// The client's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// The stored snapshot.
    pub snapshot_cid: String,
    /// The node whose evidence store holds it.
    pub origin_node: String,
}

const JOB_COLUMNS: &str = "id, room_id, subject, requested_by, state, attempts, error_code, last_error, snapshot_cid, \
                           baseline_cid, heatmap_cid, report_id, created_at, updated_at, claimed_by";

fn job_row(r: &AnyRow) -> Result<Job, StoreError> {
    Ok(Job {
        id: col(r, 0)?,
        room_id: col(r, 1)?,
        subject: col(r, 2)?,
        requested_by: col(r, 3)?,
        state: col(r, 4)?,
        attempts: col(r, 5)?,
        error_code: col(r, 6)?,
        last_error: col(r, 7)?,
        snapshot_cid: col(r, 8)?,
        baseline_cid: col(r, 9)?,
        heatmap_cid: col(r, 10)?,
        report_id: col(r, 11)?,
        created_at: col(r, 12)?,
        updated_at: col(r, 13)?,
        claimed_by: col(r, 14)?,
    })
}

/// A signed report as stored.
#[derive(Clone, Debug)]
pub struct StoredReport {
    /// Its id.
    pub id: String,
    /// The report JSON, signed.
    pub body: Value,
    /// Hex SHA-256 of its JCS bytes.
    pub hash: String,
}

impl Store {
    /// Queues a job (with its `snapshot.requested` event). A repeated idempotency key of the
    /// same user in the same room returns the job it made first; `bool` says whether this
    /// call made it.
    pub async fn create_snapshot_job(&self, new: &NewJob) -> Result<(Job, bool), StoreError> {
        if let Some(key) = &new.idempotency_key
            && let Some(job) = self.job_by_key(&new.room_id, &new.requested_by, key).await?
        {
            return Ok((job, false));
        }
        let id = format!("job_{}", uuid::Uuid::now_v7().simple());
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(db)?;
        let inserted = sqlx::query(
            "INSERT INTO snapshot_jobs (id, room_id, subject, requested_by, idempotency_key, state, attempts, \
             next_attempt_at, snapshot_cid, created_at, updated_at, origin_node) \
             VALUES ($1, $2, $3, $4, $5, 'queued', 0, $6, $7, $6, $6, $8) \
             ON CONFLICT (room_id, requested_by, idempotency_key) DO NOTHING",
        )
        .bind(&id)
        .bind(&new.room_id)
        .bind(&new.subject)
        .bind(&new.requested_by)
        .bind(new.idempotency_key.as_deref())
        .bind(now)
        .bind(&new.snapshot_cid)
        .bind(&new.origin_node)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if inserted.rows_affected() == 1 {
            let requested = Event::SnapshotRequested {
                job_id: id.clone(),
                subject: new.subject.clone(),
                requested_by: new.requested_by.clone(),
                snapshot_cid: new.snapshot_cid.clone(),
            };
            event(&mut tx, &new.room_id, &requested).await?;
            // The first snapshot posted of a subject is its baseline, whichever job runs first.
            sqlx::query(
                "INSERT INTO snapshot_baselines (room_id, subject, cid, job_id) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (room_id, subject) DO NOTHING",
            )
            .bind(&new.room_id)
            .bind(&new.subject)
            .bind(&new.snapshot_cid)
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        if inserted.rows_affected() == 0
            && let Some(key) = &new.idempotency_key
            && let Some(job) = self.job_by_key(&new.room_id, &new.requested_by, key).await?
        {
            return Ok((job, false));
        }
        let job = self.snapshot_job(&id).await?.ok_or_else(|| StoreError::Corrupt(format!("job {id} vanished")))?;
        Ok((job, true))
    }

    async fn job_by_key(&self, room: &str, user: &str, key: &str) -> Result<Option<Job>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM snapshot_jobs WHERE room_id = $1 AND requested_by = $2 AND idempotency_key = $3"
        );
        let row = sqlx::query(&sql).bind(room).bind(user).bind(key).fetch_optional(&self.pool).await.map_err(db)?;
        row.as_ref().map(job_row).transpose()
    }

    /// One job.
    pub async fn snapshot_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM snapshot_jobs WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await.map_err(db)?;
        row.as_ref().map(job_row).transpose()
    }

    /// Claims the oldest due job for `node`: a queued one whose time has come, or one whose
    /// claim is older than `stale_ms` (the worker died on the way). Two claims never get the
    /// same job: the update re-checks the state under the row's lock. Unless `any_node` (the
    /// evidence store is shared), only jobs whose snapshot this node stored (`origin_node`).
    pub async fn claim_snapshot_job(
        &self,
        node: &str,
        stale_ms: i64,
        any_node: bool,
    ) -> Result<Option<Job>, StoreError> {
        let now = now_ms();
        let stale = now - stale_ms;
        let sql = format!(
            "UPDATE snapshot_jobs SET state = 'dispatched', claimed_by = $1, claimed_at = $2, attempts = attempts + 1, \
             updated_at = $2 \
             WHERE id = (SELECT id FROM snapshot_jobs \
                         WHERE (origin_node = $1 OR $4) AND ((state = 'queued' AND next_attempt_at <= $2) \
                            OR (state IN ('dispatched', 'scored') AND claimed_at < $3)) \
                         ORDER BY created_at LIMIT 1) \
               AND ((state = 'queued' AND next_attempt_at <= $2) OR (state IN ('dispatched', 'scored') AND claimed_at < $3)) \
             RETURNING {JOB_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(node)
            .bind(now)
            .bind(stale)
            .bind(any_node)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(job_row).transpose()
    }

    /// How many jobs are `queued`, `dispatched` and `scored` (cluster-wide), in that order.
    pub async fn snapshot_job_counts(&self) -> Result<[i64; 3], StoreError> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) FROM snapshot_jobs WHERE state IN ('queued', 'dispatched', 'scored') GROUP BY state",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut counts = [0; 3];
        for r in &rows {
            let state: String = col(r, 0)?;
            let at = ["queued", "dispatched", "scored"].iter().position(|s| *s == state);
            if let Some(at) = at {
                counts[at] = col(r, 1)?;
            }
        }
        Ok(counts)
    }

    /// Keeps this claim (`node`, `attempts`) fresh while its job runs, so that only a claim
    /// whose worker stopped renewing it goes stale. `false` when the claim was taken over.
    pub async fn renew_snapshot_claim(&self, job: &Job, node: &str) -> Result<bool, StoreError> {
        let renewed = sqlx::query(
            "UPDATE snapshot_jobs SET claimed_at = $1 WHERE id = $2 AND claimed_by = $3 AND attempts = $4 \
             AND state IN ('dispatched', 'scored')",
        )
        .bind(now_ms())
        .bind(&job.id)
        .bind(node)
        .bind(job.attempts)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Whether `job` is still this claim's (`node`, `attempts`): a claim taken over is not.
    async fn holds(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        job: &Job,
        node: &str,
    ) -> Result<bool, StoreError> {
        let held = sqlx::query(
            "UPDATE snapshot_jobs SET updated_at = updated_at WHERE id = $1 AND claimed_by = $2 AND attempts = $3 \
             AND state IN ('dispatched', 'scored')",
        )
        .bind(&job.id)
        .bind(node)
        .bind(job.attempts)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        Ok(held.rows_affected() == 1)
    }

    /// Makes `cid` the baseline of `subject` in `room` unless it has one (the first job posted
    /// of a subject is made its baseline when it is posted; this covers a subject whose
    /// baseline failed for good); returns the baseline (cid, job) in effect.
    pub async fn baseline_for(
        &self,
        room: &str,
        subject: &str,
        cid: &str,
        job: &str,
    ) -> Result<(String, String), StoreError> {
        sqlx::query(
            "INSERT INTO snapshot_baselines (room_id, subject, cid, job_id) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (room_id, subject) DO NOTHING",
        )
        .bind(room)
        .bind(subject)
        .bind(cid)
        .bind(job)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        let row = sqlx::query("SELECT cid, job_id FROM snapshot_baselines WHERE room_id = $1 AND subject = $2")
            .bind(room)
            .bind(subject)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok((col(&row, 0)?, col(&row, 1)?))
    }

    /// Records the comparison (state `scored`, with its event), if the claim still holds.
    pub async fn mark_snapshot_scored(
        &self,
        job: &Job,
        node: &str,
        baseline_cid: Option<&str>,
        heatmap_cid: Option<&str>,
        scored: &Event,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        if !self.holds(&mut tx, job, node).await? {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE snapshot_jobs SET state = 'scored', baseline_cid = $1, heatmap_cid = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(baseline_cid)
        .bind(heatmap_cid)
        .bind(now_ms())
        .bind(&job.id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        event(&mut tx, &job.room_id, scored).await?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    /// Writes the job's report as the room's next in its chain, exactly once: `make` gets the
    /// previous report's hash and returns the signed report with its id and hash. `None` when
    /// the claim no longer holds (another node took the job over).
    pub async fn finish_snapshot_job(
        &self,
        job: &Job,
        node: &str,
        make: impl FnOnce(Option<String>) -> Result<StoredReport, String>,
    ) -> Result<Option<StoredReport>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        if !self.holds(&mut tx, job, node).await? {
            return Ok(None);
        }
        let last = sqlx::query("SELECT hash, seq FROM reports WHERE room_id = $1 ORDER BY seq DESC LIMIT 1")
            .bind(&job.room_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let (prev, seq) = match &last {
            Some(r) => (Some(col::<String>(r, 0)?), col::<i64>(r, 1)? + 1),
            None => (None, 1),
        };
        let report = make(prev).map_err(StoreError::Corrupt)?;
        let now = now_ms();
        sqlx::query("INSERT INTO reports (id, room_id, job_id, seq, body, hash, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&report.id)
            .bind(&job.room_id)
            .bind(&job.id)
            .bind(seq)
            .bind(report.body.to_string())
            .bind(&report.hash)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query("UPDATE snapshot_jobs SET state = 'reported', report_id = $1, updated_at = $2 WHERE id = $3")
            .bind(&report.id)
            .bind(now)
            .bind(&job.id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let created =
            Event::ReportCreated { report_id: report.id.clone(), job_id: job.id.clone(), hash: report.hash.clone() };
        event(&mut tx, &job.room_id, &created).await?;
        tx.commit().await.map_err(db)?;
        Ok(Some(report))
    }

    /// Records a failed attempt: queued again at `retry_at`, or failed for good (and then no
    /// longer its subject's baseline, if it was).
    pub async fn fail_snapshot_job(
        &self,
        job: &Job,
        node: &str,
        code: &str,
        error: &str,
        retry_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        if !self.holds(&mut tx, job, node).await? {
            return Ok(());
        }
        let state = if retry_at.is_some() { "queued" } else { "failed" };
        sqlx::query(
            "UPDATE snapshot_jobs SET state = $1, error_code = $2, last_error = $3, next_attempt_at = $4, updated_at = $5 \
             WHERE id = $6",
        )
        .bind(state)
        .bind(code)
        .bind(error)
        .bind(retry_at.unwrap_or(0))
        .bind(now_ms())
        .bind(&job.id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if retry_at.is_none() {
            // A job that failed for good is nobody's baseline: the subject's next snapshot is.
            sqlx::query("DELETE FROM snapshot_baselines WHERE job_id = $1")
                .bind(&job.id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    /// A report by id, with its room.
    pub async fn report(&self, id: &str) -> Result<Option<(String, Value)>, StoreError> {
        let row = sqlx::query("SELECT room_id, body FROM reports WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| {
            let body: String = col(&r, 1)?;
            let v =
                serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(format!("reports.body of {id}: {e}")))?;
            Ok((col(&r, 0)?, v))
        })
        .transpose()
    }

    /// A room's reports, oldest first (the chain).
    pub async fn room_reports(&self, room: &str) -> Result<Vec<Value>, StoreError> {
        let rows = sqlx::query("SELECT body FROM reports WHERE room_id = $1 ORDER BY seq")
            .bind(room)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let body: String = col(r, 0)?;
                serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(format!("reports.body: {e}")))
            })
            .collect()
    }

    /// The rooms whose jobs refer to the artifact `cid`.
    pub async fn evidence_rooms(&self, cid: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT room_id FROM snapshot_jobs WHERE snapshot_cid = $1 OR baseline_cid = $1 OR heatmap_cid = $1",
        )
        .bind(cid)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(|r| col::<String>(r, 0)).collect()
    }

    /// Publishes this node's report-signing public key for the key set.
    pub async fn put_signing_key(&self, kid: &str, node: &str, jwk: &Value) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, node_id, jwk, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (kid) DO NOTHING",
        )
        .bind(kid)
        .bind(node)
        .bind(jwk.to_string())
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Every node's public key, as JWKs.
    pub async fn signing_keys(&self) -> Result<Vec<Value>, StoreError> {
        let rows = sqlx::query("SELECT jwk FROM signing_keys ORDER BY created_at, kid")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let jwk: String = col(r, 0)?;
                serde_json::from_str(&jwk).map_err(|e| StoreError::Corrupt(format!("signing_keys.jwk: {e}")))
            })
            .collect()
    }
}
