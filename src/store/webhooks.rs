//! The webhook tables: `webhook_endpoints` (where events go, with their signing secrets),
//! `webhook_deliveries` (one per endpoint and event, in event order per endpoint) and
//! `webhook_attempts` (every try, for operators).

use super::{ServiceLease, Store, col, db};
use crate::events::Envelope;
use serde::Serialize;
use sqlx::any::AnyRow;
use switchboard_actors::ports::{StoreError, now_ms};

/// A registered endpoint (without its secret).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Its id.
    pub id: String,
    /// Where events are POSTed.
    pub url: String,
    /// The kinds it gets; `None`: all.
    pub events: Option<Vec<String>>,
    /// `api` or `config`.
    pub source: String,
    /// Unix ms.
    pub created_at: i64,
    /// When it was disabled (a `410 Gone`), unix ms.
    pub disabled_at: Option<i64>,
    /// Why.
    pub disabled_reason: Option<String>,
}

/// A delivery whose turn has come.
#[derive(Clone, Debug)]
pub struct DueDelivery {
    /// The delivery.
    pub id: String,
    /// Its endpoint.
    pub endpoint_id: String,
    /// The endpoint's URL.
    pub url: String,
    /// The endpoint's secret (`whsec_...`).
    pub secret: String,
    /// Attempts so far.
    pub attempts: i64,
    /// When the delivery was created (its retry window starts here), unix ms.
    pub created_at: i64,
    /// The event.
    pub envelope: Envelope,
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// A 2xx answer.
    Delivered {
        /// The status code.
        status: u16,
    },
    /// Another answer or none: try again at `next_at` (unix ms).
    Retry {
        /// The status code, if there was an answer.
        status: Option<u16>,
        /// What went wrong.
        error: String,
        /// When to try again.
        next_at: i64,
    },
    /// The retry window closed: the delivery is dead-lettered.
    Dead {
        /// The last status code.
        status: Option<u16>,
        /// The last error.
        error: String,
    },
    /// `410 Gone`: the endpoint is disabled.
    Gone,
}

/// One attempt, as operators see it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    /// 1, 2, ...
    pub attempt: i64,
    /// Unix ms.
    pub at: i64,
    /// The answer's status code.
    pub status_code: Option<i64>,
    /// What went wrong.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: i64,
}

/// A delivery, as operators see it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    /// The delivery.
    pub id: String,
    /// The event (the `webhook-id` header).
    pub event_id: String,
    /// The event's kind.
    pub event_type: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    /// How many attempts.
    pub attempts: i64,
    /// When the next attempt is due (pending only), unix ms.
    pub next_attempt_at: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
    /// When it was delivered or given up, unix ms.
    pub finished_at: Option<i64>,
    /// Every attempt, oldest first.
    pub attempt_log: Vec<AttemptView>,
}

fn endpoint_row(r: &AnyRow) -> Result<Endpoint, StoreError> {
    let events: Option<String> = col(r, 2)?;
    let events = events
        .map(|s| serde_json::from_str::<Vec<String>>(&s))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("webhook_endpoints.events: {e}")))?;
    Ok(Endpoint {
        id: col(r, 0)?,
        url: col(r, 1)?,
        events,
        source: col(r, 3)?,
        created_at: col(r, 4)?,
        disabled_at: col(r, 5)?,
        disabled_reason: col(r, 6)?,
    })
}

const ENDPOINT_COLUMNS: &str = "id, url, events, source, created_at, disabled_at, disabled_reason";

impl Store {
    /// Registers an endpoint. An endpoint of the config file (`source = "config"`) is written
    /// again at every start: its URL, secret and kinds follow the file.
    pub async fn put_webhook_endpoint(
        &self,
        id: &str,
        url: &str,
        secret: &str,
        events: Option<&[String]>,
        source: &str,
    ) -> Result<(), StoreError> {
        let events = events.map(|e| serde_json::to_string(e).unwrap_or_default());
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, url, secret, events, source, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET url = excluded.url, secret = excluded.secret, events = excluded.events",
        )
        .bind(id)
        .bind(url)
        .bind(secret)
        .bind(events)
        .bind(source)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Every endpoint, oldest first.
    pub async fn webhook_endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(endpoint_row).collect()
    }

    /// One endpoint.
    pub async fn webhook_endpoint(&self, id: &str) -> Result<Option<Endpoint>, StoreError> {
        let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await.map_err(db)?;
        row.as_ref().map(endpoint_row).transpose()
    }

    /// Removes an endpoint with its deliveries; `false` when there was none.
    pub async fn delete_webhook_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        for sql in [
            "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE endpoint_id = $1)",
            "DELETE FROM webhook_deliveries WHERE endpoint_id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await.map_err(db)?;
        }
        let done =
            sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1").bind(id).execute(&mut *tx).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    /// Turns the oldest `limit` events not yet fanned out into deliveries, one per enabled
    /// endpoint that wants the kind, under the dispatcher's lease. Returns the events taken.
    pub async fn fan_out_webhooks(&self, lease: &ServiceLease, limit: u32) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        if !self.hold_service_lease(&mut tx, lease).await? {
            return Err(StoreError::Fenced(lease.name.clone()));
        }
        let events = sqlx::query("SELECT id, kind FROM events WHERE webhooks_at IS NULL ORDER BY id LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        if events.is_empty() {
            return Ok(0);
        }
        let endpoints = sqlx::query("SELECT id, events FROM webhook_endpoints WHERE disabled_at IS NULL")
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        let mut wanted: Vec<(String, Option<Vec<String>>)> = Vec::with_capacity(endpoints.len());
        for r in &endpoints {
            let kinds: Option<String> = col(r, 1)?;
            wanted.push((col(r, 0)?, kinds.and_then(|k| serde_json::from_str(&k).ok())));
        }
        let now = now_ms();
        for e in &events {
            let (id, kind): (String, String) = (col(e, 0)?, col(e, 1)?);
            for (endpoint, kinds) in &wanted {
                if kinds.as_ref().is_some_and(|k| !k.iter().any(|k| k == &kind)) {
                    continue;
                }
                sqlx::query(
                    "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, status, attempts, next_attempt_at, created_at) \
                     VALUES ($1, $2, $3, 'pending', 0, $4, $4) ON CONFLICT (endpoint_id, event_id) DO NOTHING",
                )
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(endpoint)
                .bind(&id)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            sqlx::query("UPDATE events SET webhooks_at = $1 WHERE id = $2")
                .bind(now)
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(events.len())
    }

    /// The deliveries whose turn has come: per enabled endpoint, its oldest pending delivery,
    /// if it is due, except for endpoints in `busy` (an attempt is on its way).
    pub async fn due_webhook_deliveries(&self, busy: &[String], limit: u32) -> Result<Vec<DueDelivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, d.endpoint_id, w.url, w.secret, d.attempts, d.created_at, \
                    e.id, e.kind, e.room_id, e.payload, e.created_at \
             FROM webhook_deliveries d \
             JOIN webhook_endpoints w ON w.id = d.endpoint_id \
             JOIN events e ON e.id = d.event_id \
             WHERE d.status = 'pending' AND w.disabled_at IS NULL AND d.next_attempt_at <= $1 \
               AND d.event_id = (SELECT MIN(o.event_id) FROM webhook_deliveries o \
                                 WHERE o.endpoint_id = d.endpoint_id AND o.status = 'pending') \
             ORDER BY d.event_id LIMIT $2",
        )
        .bind(now_ms())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut due = Vec::with_capacity(rows.len());
        for r in &rows {
            let endpoint_id: String = col(r, 1)?;
            if busy.contains(&endpoint_id) {
                continue;
            }
            let event_id: String = col(r, 6)?;
            let payload: String = col(r, 9)?;
            let data = serde_json::from_str(&payload)
                .map_err(|e| StoreError::Corrupt(format!("events.payload of {event_id}: {e}")))?;
            due.push(DueDelivery {
                id: col(r, 0)?,
                endpoint_id,
                url: col(r, 2)?,
                secret: col(r, 3)?,
                attempts: col(r, 4)?,
                created_at: col(r, 5)?,
                envelope: Envelope::new(event_id, col(r, 7)?, col(r, 8)?, col(r, 10)?, data),
            });
        }
        Ok(due)
    }

    /// Records attempt number `attempt` of a delivery and what it leads to.
    pub async fn record_webhook_attempt(
        &self,
        delivery: &DueDelivery,
        attempt: i64,
        outcome: &Outcome,
        duration_ms: i64,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let (status_code, error) = match outcome {
            Outcome::Delivered { status } => (Some(i64::from(*status)), None),
            Outcome::Retry { status, error, .. } | Outcome::Dead { status, error } => {
                (status.map(i64::from), Some(error.clone()))
            }
            Outcome::Gone => (Some(410), Some("410 Gone: endpoint disabled".to_owned())),
        };
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, error, duration_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (delivery_id, attempt) DO NOTHING",
        )
        .bind(&delivery.id)
        .bind(attempt)
        .bind(now)
        .bind(status_code)
        .bind(error.as_deref())
        .bind(duration_ms)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let (status, next_at, finished) = match outcome {
            Outcome::Delivered { .. } => ("delivered", now, Some(now)),
            Outcome::Retry { next_at, .. } => ("pending", *next_at, None),
            Outcome::Dead { .. } => ("dead", now, Some(now)),
            // The delivery waits with its endpoint: re-enabling it (registering it again) is
            // an operator's decision.
            Outcome::Gone => ("pending", now, None),
        };
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, attempts = $2, next_attempt_at = $3, finished_at = $4, \
             last_status = $5, last_error = $6 WHERE id = $7",
        )
        .bind(status)
        .bind(attempt)
        .bind(next_at)
        .bind(finished)
        .bind(status_code)
        .bind(error.as_deref())
        .bind(&delivery.id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if *outcome == Outcome::Gone {
            sqlx::query(
                "UPDATE webhook_endpoints SET disabled_at = $1, disabled_reason = '410 Gone' \
                 WHERE id = $2 AND disabled_at IS NULL",
            )
            .bind(now)
            .bind(&delivery.endpoint_id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    /// The newest `limit` deliveries of an endpoint with their attempts, newest first.
    pub async fn webhook_deliveries(&self, endpoint: &str, limit: u32) -> Result<Vec<DeliveryView>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, d.event_id, e.kind, d.status, d.attempts, d.next_attempt_at, d.created_at, d.finished_at \
             FROM webhook_deliveries d JOIN events e ON e.id = d.event_id \
             WHERE d.endpoint_id = $1 ORDER BY d.event_id DESC LIMIT $2",
        )
        .bind(endpoint)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = col(r, 0)?;
            let status: String = col(r, 3)?;
            let attempts = sqlx::query(
                "SELECT attempt, at, status_code, error, duration_ms FROM webhook_attempts \
                 WHERE delivery_id = $1 ORDER BY attempt",
            )
            .bind(&id)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(|a| {
                Ok(AttemptView {
                    attempt: col(a, 0)?,
                    at: col(a, 1)?,
                    status_code: col(a, 2)?,
                    error: col(a, 3)?,
                    duration_ms: col(a, 4)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
            let next: i64 = col(r, 5)?;
            out.push(DeliveryView {
                event_id: col(r, 1)?,
                event_type: col(r, 2)?,
                next_attempt_at: (status == "pending").then_some(next),
                status,
                attempts: col(r, 4)?,
                created_at: col(r, 6)?,
                finished_at: col(r, 7)?,
                attempt_log: attempts,
                id,
            });
        }
        Ok(out)
    }
}
