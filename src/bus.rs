//! The event bus: one MQTT connection per node (rumqttc, QoS 1), kept up by a driver task.
//!
//! rumqttc's event loop must be polled all the time, forgets subscriptions when it reconnects
//! and retries at once. The driver polls it, backs off with jitter between failed attempts,
//! and subscribes again after every CONNACK.
//!
//! Publishes that need the broker's word (the outbox) get it. The broker acknowledges QoS 1
//! publishes under the packet id the event loop gave each one, and the event loop reports
//! each id as it sends the publish, in the order they were queued: the driver pairs ids with
//! waiters in that order and resolves a waiter at its PUBACK. A lost connection fails every
//! waiter and starts a fresh event loop (a fresh request queue too), so a publish is never
//! re-sent behind the caller's back and an acknowledgement never lands on the wrong waiter:
//! the caller retries what was not confirmed.

pub mod broker;
pub mod outbox_publisher;
pub mod topics;

use bytes::Bytes;
use rand::Rng;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// What went wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The URL is not `mqtt://host:port`.
    #[error("bad MQTT URL {0:?}: expected mqtt://host:port")]
    BadUrl(String),
    /// The request queue is full: too many publishes wait for the connection.
    #[error("the MQTT request queue is full")]
    Busy,
    /// The connection dropped before the broker acknowledged the publish.
    #[error("the MQTT connection dropped before the broker acknowledged")]
    NotConfirmed,
    /// The bus has stopped.
    #[error("the event bus has stopped")]
    Stopped,
}

/// A message that arrived on a subscription.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Bytes,
}

/// A node's connection to the broker. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("url", &self.inner.url).field("connected", &self.is_connected()).finish()
    }
}

struct Inner {
    url: String,
    link: Mutex<Link>,
    subscriptions: Mutex<Vec<Subscription>>,
    connected: AtomicBool,
    connected_tx: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    driver: Mutex<Option<JoinHandle<()>>>,
}

/// The current event loop's client and the waiters of its publishes that have no packet id yet.
struct Link {
    client: AsyncClient,
    unassigned: VecDeque<oneshot::Sender<()>>,
}

struct Subscription {
    filter: String,
    deliver: mpsc::Sender<Delivery>,
}

/// Requests one event loop queues before publishers get `Busy`.
const REQUEST_QUEUE: usize = 1024;
/// Largest packet either way: a snapshot job carries two images (10 MiB at most each, base64).
pub const MAX_PACKET: usize = 32 << 20;
/// Reconnect backoff.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Bus {
    /// Connects to `url` (`mqtt://host:port`) as `client_id` and keeps the connection up until
    /// `shutdown`. Returns at once; publishes queue until the first CONNACK.
    pub fn connect(url: &str, client_id: &str) -> Result<Bus, BusError> {
        let options = options(url, client_id)?;
        let (client, eventloop) = AsyncClient::new(options.clone(), REQUEST_QUEUE);
        let (stop, stopped) = watch::channel(false);
        let (connected_tx, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            url: url.to_owned(),
            link: Mutex::new(Link { client, unassigned: VecDeque::new() }),
            subscriptions: Mutex::new(Vec::new()),
            connected: AtomicBool::new(false),
            connected_tx,
            stop,
            driver: Mutex::new(None),
        });
        let driver = tokio::spawn(drive(inner.clone(), options, eventloop, stopped));
        *lock(&inner.driver) = Some(driver);
        Ok(Bus { inner })
    }

    /// The broker's URL.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Whether the broker has accepted the current connection.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// Waits until the broker has accepted a connection (or `limit` passes).
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        let mut rx = self.inner.connected_tx.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|c| *c)).await.is_ok_and(|r| r.is_ok())
    }

    /// Publishes with QoS 1; the receiver resolves when the broker has acknowledged it, and
    /// fails when the connection dropped first (then the caller decides whether to retry).
    pub fn publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
    ) -> Result<impl Future<Output = Result<(), BusError>> + use<>, BusError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut link = lock(&self.inner.link);
            link.client.try_publish(topic, QoS::AtLeastOnce, false, payload).map_err(|_| BusError::Busy)?;
            link.unassigned.push_back(tx);
        }
        Ok(async move { rx.await.map_err(|_| BusError::NotConfirmed) })
    }

    /// Subscribes to `filter` (MQTT wildcards, `$share/group/...` for a shared subscription);
    /// the subscription is renewed after every reconnect. Messages are acknowledged to the
    /// broker when they are handed to the receiver.
    pub fn subscribe(&self, filter: &str, buffer: usize) -> mpsc::Receiver<Delivery> {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        lock(&self.inner.subscriptions).push(Subscription { filter: filter.to_owned(), deliver: tx });
        if self.is_connected() {
            let _ = lock(&self.inner.link).client.try_subscribe(filter, QoS::AtLeastOnce);
        }
        rx
    }

    /// Disconnects and stops the driver.
    pub async fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
        let driver = lock(&self.inner.driver).take();
        if let Some(driver) = driver
            && tokio::time::timeout(Duration::from_secs(2), driver).await.is_err()
        {
            tracing::debug!("event bus driver did not stop in time");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Client options from `mqtt://host:port`.
fn options(url: &str, client_id: &str) -> Result<MqttOptions, BusError> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(|| BusError::BadUrl(url.to_owned()))?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| BusError::BadUrl(url.to_owned()))?),
        None => (rest, 1883),
    };
    if host.is_empty() {
        return Err(BusError::BadUrl(url.to_owned()));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(Duration::from_secs(10));
    o.set_clean_session(true);
    o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    o.set_inflight(256);
    Ok(o)
}

/// Checks a URL without connecting.
pub fn check_url(url: &str) -> Result<(), BusError> {
    options(url, "check").map(|_| ())
}

async fn drive(inner: Arc<Inner>, options: MqttOptions, mut eventloop: EventLoop, mut stopped: watch::Receiver<bool>) {
    let mut inflight: HashMap<u16, oneshot::Sender<()>> = HashMap::new();
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0u32;
    loop {
        let event = tokio::select! {
            _ = stopped.changed() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if failures > 0 {
                    tracing::info!(url = %inner.url, "event bus connected again");
                }
                backoff = BACKOFF_MIN;
                failures = 0;
                set_connected(&inner, true);
                let link = lock(&inner.link);
                for s in lock(&inner.subscriptions).iter() {
                    if let Err(e) = link.client.try_subscribe(s.filter.clone(), QoS::AtLeastOnce) {
                        tracing::warn!(filter = %s.filter, error = %e, "event bus subscription not renewed");
                    }
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => {
                // A packet id already waiting is a re-send of the same publish.
                if let std::collections::hash_map::Entry::Vacant(slot) = inflight.entry(pkid)
                    && let Some(waiter) = lock(&inner.link).unassigned.pop_front()
                {
                    slot.insert(waiter);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(waiter) = inflight.remove(&ack.pkid) {
                    let _ = waiter.send(());
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => deliver(&inner, p.topic, p.payload).await,
            Ok(_) => {}
            Err(e) => {
                set_connected(&inner, false);
                if failures == 0 {
                    tracing::warn!(url = %inner.url, error = %e, "event bus connection lost; reconnecting");
                }
                failures = failures.saturating_add(1);
                metrics::counter!("switchboard_bus_reconnects_total").increment(1);
                // A fresh event loop: what the old one had queued or in flight is failed, not
                // re-sent later under packet ids the waiters no longer match.
                inflight.clear();
                let (client, fresh) = AsyncClient::new(options.clone(), REQUEST_QUEUE);
                {
                    let mut link = lock(&inner.link);
                    link.client = client;
                    link.unassigned.clear();
                }
                eventloop = fresh;
                let jittered = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = tokio::time::sleep(jittered) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    let client = lock(&inner.link).client.clone();
    let _ = client.try_disconnect();
    // Let the disconnect go out, briefly.
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while let Ok(ev) = eventloop.poll().await {
            if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
    set_connected(&inner, false);
}

fn set_connected(inner: &Inner, connected: bool) {
    inner.connected.store(connected, Ordering::Relaxed);
    inner.connected_tx.send_replace(connected);
    metrics::gauge!("switchboard_bus_connected").set(if connected { 1.0 } else { 0.0 });
}

/// Hands a message to every subscription whose filter matches. A full receiver holds the
/// event loop back (and so the broker), rather than dropping an acknowledged message.
async fn deliver(inner: &Inner, topic: String, payload: Bytes) {
    let targets: Vec<mpsc::Sender<Delivery>> = lock(&inner.subscriptions)
        .iter()
        .filter(|s| topics::matches(&s.filter, &topic))
        .map(|s| s.deliver.clone())
        .collect();
    for t in targets {
        let _ = t.send(Delivery { topic: topic.clone(), payload: payload.clone() }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(check_url("mqtt://127.0.0.1:1883").is_ok());
        assert!(check_url("tcp://localhost").is_ok());
        assert!(check_url("mqtt://[::1]:1884").is_ok());
        assert!(check_url("http://127.0.0.1:1883").is_err());
        assert!(check_url("mqtt://:1883").is_err());
        assert!(check_url("mqtt://host:port").is_err());
    }
}
