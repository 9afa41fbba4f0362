//! The embedded MQTT broker (mqtt5's broker in this process, in memory): the bus of a node
//! that is given no `bus.mqtt_url`. It listens on loopback by default, starts with the node
//! and stops with it. Durability does not depend on it: the outbox in the database is the
//! record, and whatever the broker loses is published again from there.

use mqtt5::broker::config::{BrokerConfig, StorageBackend, StorageConfig};
use mqtt5::broker::{BrokerShutdownHandle, MqttBroker};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::task::JoinHandle;

/// A running embedded broker.
pub struct EmbeddedBroker {
    addr: SocketAddr,
    shutdown: BrokerShutdownHandle,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker").field("addr", &self.addr).finish()
    }
}

impl EmbeddedBroker {
    /// Binds `listen` (port 0 picks one) and serves until `stop`.
    pub async fn start(listen: SocketAddr) -> anyhow::Result<EmbeddedBroker> {
        let storage =
            StorageConfig { backend: StorageBackend::Memory, enable_persistence: false, ..Default::default() };
        let config = BrokerConfig::default()
            .with_bind_addresses(vec![listen])
            .with_storage(storage)
            .with_sys_topics_enabled(false)
            .with_max_packet_size(super::MAX_PACKET);
        let mut broker = MqttBroker::with_config(config)
            .await
            .map_err(|e| anyhow::anyhow!("embedded MQTT broker cannot listen on {listen}: {e}"))?;
        let addr = broker.local_addr().ok_or_else(|| anyhow::anyhow!("embedded MQTT broker has no address"))?;
        let shutdown = broker.shutdown_handle();
        let task = tokio::spawn(async move {
            if let Err(e) = broker.run().await {
                tracing::warn!(error = %e, "embedded MQTT broker stopped");
            }
        });
        tracing::info!(%addr, "embedded MQTT broker listening");
        Ok(EmbeddedBroker { addr, shutdown, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `mqtt://addr`.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// Stops it and waits (briefly) until it has.
    pub async fn stop(self) {
        self.shutdown.shutdown();
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(3), &mut task).await.is_err() {
            task.abort();
        }
    }
}
