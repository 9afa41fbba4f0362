//! The webhook dispatcher: the one task in a cluster (the `webhook-dispatcher` service lease)
//! that turns outbox events into deliveries and sends them. Per endpoint, one attempt at a
//! time and in event order: a delivery that fails holds back the endpoint's later ones until
//! it succeeds or is dead-lettered. Failed attempts are retried with exponential backoff and
//! jitter for `retry_for` (24 hours by default); `410 Gone` disables the endpoint.

use super::signing;
use crate::singleton::Lead;
use crate::store::{DueDelivery, LeaseKeeper, Outcome, Store};
use rand::Rng;
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchboard_actors::ports::now_ms;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The service lease's name.
pub const LEASE: &str = "webhook-dispatcher";

/// How the dispatcher runs.
#[derive(Clone, Debug)]
pub struct DispatcherSettings {
    /// How often an idle dispatcher looks for work.
    pub poll_interval: Duration,
    /// The first retry's delay; each next one doubles, up to `retry_max`.
    pub retry_base: Duration,
    /// The longest delay between two attempts.
    pub retry_max: Duration,
    /// How long a delivery is retried before it is dead-lettered.
    pub retry_for: Duration,
    /// How long one attempt may take.
    pub timeout: Duration,
}

/// The dispatcher's work while it holds the lease (run it with [`crate::singleton::Singleton`]).
pub struct Dispatcher {
    http: reqwest::Client,
    settings: DispatcherSettings,
}

impl Dispatcher {
    /// A dispatcher with its HTTP client.
    pub fn new(settings: DispatcherSettings) -> anyhow::Result<Dispatcher> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("switchboard-webhooks/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| anyhow::anyhow!("webhook HTTP client: {e}"))?;
        Ok(Dispatcher { http, settings })
    }
}

impl Lead for Dispatcher {
    fn lead<'a>(
        &'a mut self,
        store: &'a Store,
        keeper: &'a mut LeaseKeeper,
        stopped: &'a mut watch::Receiver<bool>,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(lead(store, &self.http, &self.settings, keeper, stopped))
    }
}

async fn lead(
    store: &Store,
    http: &reqwest::Client,
    s: &DispatcherSettings,
    keeper: &mut LeaseKeeper,
    stopped: &mut watch::Receiver<bool>,
) -> bool {
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut attempts = JoinSet::new();
    let stop = loop {
        if *stopped.borrow() {
            break true;
        }
        if !keeper.keep(store).await {
            break false;
        }
        while attempts.try_join_next().is_some() {}
        if let Err(e) = store.fan_out_webhooks(&keeper.lease, 256).await {
            tracing::warn!(error = %e, "webhook deliveries not created");
        }
        let in_flight: Vec<String> = lock(&busy).iter().cloned().collect();
        match store.due_webhook_deliveries(&in_flight, 64).await {
            Ok(due) => {
                for delivery in due {
                    lock(&busy).insert(delivery.endpoint_id.clone());
                    let (store, http, s, busy) = (store.clone(), http.clone(), s.clone(), busy.clone());
                    attempts.spawn(async move {
                        attempt(&store, &http, &s, &delivery).await;
                        lock(&busy).remove(&delivery.endpoint_id);
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "due webhook deliveries not read"),
        }
        tokio::select! {
            _ = stopped.changed() => break true,
            _ = tokio::time::sleep(s.poll_interval) => {}
        }
    };
    // Attempts on their way are recorded before the lease goes.
    let _ = tokio::time::timeout(s.timeout + Duration::from_secs(1), async {
        while attempts.join_next().await.is_some() {}
    })
    .await;
    stop
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One attempt: sign, POST, record what came of it.
async fn attempt(store: &Store, http: &reqwest::Client, s: &DispatcherSettings, d: &DueDelivery) {
    let number = d.attempts + 1;
    let started = Instant::now();
    let outcome = match send(http, d).await {
        Ok(status) if (200..300).contains(&status) => Outcome::Delivered { status },
        Ok(410) => Outcome::Gone,
        Ok(status) => next_step(s, d, number, Some(status), format!("answered {status}")),
        Err(e) => next_step(s, d, number, None, e),
    };
    let elapsed = started.elapsed().as_millis() as i64;
    let label = match &outcome {
        Outcome::Delivered { .. } => "delivered",
        Outcome::Retry { .. } => "retry",
        Outcome::Dead { .. } => "dead",
        Outcome::Gone => "gone",
    };
    metrics::counter!("switchboard_webhook_attempts_total", "outcome" => label).increment(1);
    match &outcome {
        Outcome::Dead { error, .. } => {
            tracing::warn!(endpoint = %d.endpoint_id, event = %d.envelope.id, attempts = number, error = %error, "webhook delivery dead-lettered");
        }
        Outcome::Gone => tracing::warn!(endpoint = %d.endpoint_id, "webhook endpoint answered 410 Gone; disabled"),
        _ => {}
    }
    if let Err(e) = store.record_webhook_attempt(d, number, &outcome, elapsed).await {
        tracing::warn!(error = %e, "webhook attempt not recorded");
    }
}

/// After a failed attempt: when the next one is due, or the dead letter once the retry
/// window has closed.
fn next_step(s: &DispatcherSettings, d: &DueDelivery, number: i64, status: Option<u16>, error: String) -> Outcome {
    let delay = backoff(s.retry_base, s.retry_max, number);
    let next_at = now_ms() + delay.as_millis() as i64;
    if next_at - d.created_at > s.retry_for.as_millis() as i64 {
        Outcome::Dead { status, error }
    } else {
        Outcome::Retry { status, error, next_at }
    }
}

/// The delay after attempt `n`: `base · 2^(n-1)`, at most `max`, jittered down by up to a half
/// so that endpoints that failed together do not retry together.
pub fn backoff(base: Duration, max: Duration, n: i64) -> Duration {
    let exp = u32::try_from(n.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let full = base.saturating_mul(2u32.saturating_pow(exp)).min(max);
    full.mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// POSTs the event; the answer's status code, or what went wrong.
async fn send(http: &reqwest::Client, d: &DueDelivery) -> Result<u16, String> {
    let key = signing::key_of(&d.secret)?;
    let body = serde_json::to_vec(&d.envelope).map_err(|e| e.to_string())?;
    let timestamp = now_ms() / 1000;
    let signature = signing::sign(&key, &d.envelope.id, timestamp, &body);
    let resp = http
        .post(&d.url)
        .header("content-type", "application/json")
        .header("webhook-id", &d.envelope.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(|e| if e.is_timeout() { "timed out".to_owned() } else { format!("request failed: {e}") })?;
    Ok(resp.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter() {
        let (base, max) = (Duration::from_secs(5), Duration::from_secs(3600));
        for n in 1..=40 {
            let d = backoff(base, max, n);
            let full = base.saturating_mul(2u32.saturating_pow((n - 1).min(30) as u32)).min(max);
            assert!(d <= full && d >= full / 2, "attempt {n}: {d:?} against {full:?}");
        }
        let late = backoff(base, max, 40);
        assert!(late >= Duration::from_secs(1800) && late <= max);
    }
}
