//! The outbox publisher: the one task in a cluster (whoever holds the `outbox-publisher`
//! service lease) that takes unpublished events from the `events` table, in id order, publishes
//! each to `switchboard/{cluster}/events/{kind}` with QoS 1, and marks them published only
//! after the broker's PUBACK, under its lease.
//!
//! Delivery is at least once: a publisher that dies between the broker's PUBACK and its own
//! mark leaves events that its successor publishes again, with the same `id`. Consumers
//! de-duplicate by `id`. Order holds per room: a batch goes out in id order, and a batch whose
//! publishes are not all confirmed is marked only up to its first gap and then retried from
//! there, so no event is marked before one of its room that precedes it.

use super::{Bus, topics};
use crate::singleton::Lead;
use crate::store::{LeaseKeeper, ServiceLease, Store};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The service lease's name.
pub const LEASE: &str = "outbox-publisher";

/// How the publisher runs.
#[derive(Clone, Debug)]
pub struct PublisherSettings {
    /// Topic prefix's cluster name.
    pub cluster: String,
    /// How often an idle publisher looks for new events.
    pub poll_interval: Duration,
    /// Events per batch.
    pub batch: u32,
    /// How long a batch waits for the broker's acknowledgements.
    pub confirm_timeout: Duration,
}

/// The publisher's work while it holds the lease (run it with [`crate::singleton::Singleton`]).
pub struct OutboxPublisher {
    bus: Bus,
    settings: PublisherSettings,
}

impl OutboxPublisher {
    /// Publishes on `bus`.
    pub fn new(bus: Bus, settings: PublisherSettings) -> OutboxPublisher {
        OutboxPublisher { bus, settings }
    }
}

impl Lead for OutboxPublisher {
    fn lead<'a>(
        &'a mut self,
        store: &'a Store,
        keeper: &'a mut LeaseKeeper,
        stopped: &'a mut watch::Receiver<bool>,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            metrics::gauge!("switchboard_outbox_publisher_active").set(1.0);
            let stop = lead(store, &self.bus, &self.settings, keeper, stopped).await;
            metrics::gauge!("switchboard_outbox_publisher_active").set(0.0);
            stop
        })
    }
}

/// Publishes while the lease holds. Returns `true` when told to stop, `false` when the lease
/// was lost (or may have run out by this node's own clock).
async fn lead(
    store: &Store,
    bus: &Bus,
    s: &PublisherSettings,
    keeper: &mut LeaseKeeper,
    stopped: &mut watch::Receiver<bool>,
) -> bool {
    let mut backlog_at = Instant::now();
    loop {
        if *stopped.borrow() {
            return true;
        }
        if !keeper.keep(store).await {
            return false;
        }
        if Instant::now() >= backlog_at {
            if let Ok(n) = store.outbox_backlog().await {
                metrics::gauge!("switchboard_outbox_backlog").set(n as f64);
            }
            backlog_at = Instant::now() + Duration::from_secs(1);
        }
        let published = match publish_batch(store, bus, s, &keeper.lease).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "outbox batch not published");
                0
            }
        };
        if published == 0 {
            tokio::select! {
                _ = stopped.changed() => return true,
                _ = tokio::time::sleep(s.poll_interval) => {}
            }
        }
    }
}

/// One batch: publish, wait for the broker, mark the confirmed prefix. Returns how many
/// events were marked.
async fn publish_batch(store: &Store, bus: &Bus, s: &PublisherSettings, lease: &ServiceLease) -> anyhow::Result<usize> {
    if !bus.is_connected() {
        return Ok(0);
    }
    let pending = store.unpublished_events(s.batch).await?;
    if pending.is_empty() {
        return Ok(0);
    }
    let mut confirmations = Vec::with_capacity(pending.len());
    for p in &pending {
        let body = serde_json::to_vec(&p.envelope)?;
        match bus.publish(&topics::event(&s.cluster, &p.envelope.kind), body) {
            Ok(c) => confirmations.push(c),
            Err(e) => {
                tracing::debug!(error = %e, "outbox publish not queued");
                break;
            }
        }
    }
    // Confirmed in order: the marked prefix stops at the first publish without a PUBACK.
    let deadline = tokio::time::Instant::now() + s.confirm_timeout;
    let mut confirmed = 0;
    for c in confirmations {
        match tokio::time::timeout_at(deadline, c).await {
            Ok(Ok(())) => confirmed += 1,
            _ => break,
        }
    }
    let ids: Vec<String> = pending[..confirmed].iter().map(|p| p.envelope.id.clone()).collect();
    store.mark_published(&ids, lease).await?;
    let now = switchboard_actors::ports::now_ms();
    let lag = metrics::histogram!("switchboard_outbox_publish_lag_seconds");
    for p in &pending[..confirmed] {
        lag.record((now - p.created_at).max(0) as f64 / 1000.0);
    }
    metrics::counter!("switchboard_outbox_published_total").increment(confirmed as u64);
    if confirmed < pending.len() {
        metrics::counter!("switchboard_outbox_unconfirmed_total").increment((pending.len() - confirmed) as u64);
    }
    Ok(confirmed)
}
