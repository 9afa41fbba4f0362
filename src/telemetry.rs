//! Logs and metrics setup. Metric names are `switchboard_<subsystem>_<thing>_<unit>`; labels
//! never carry ids.

pub mod exposition;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn metrics() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed (embedding): render from a private one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            describe();
            handle
        })
        .clone()
}

/// Handles of the metrics recorded for every relayed message, registered once: building a
/// metric's key (name and labels) costs more than updating it.
pub struct HotMetrics {
    /// `switchboard_relay_seconds`.
    pub relay_seconds: Histogram,
    /// `switchboard_cross_node_messages_total`.
    pub cross_node_messages: Counter,
    messages: Vec<(&'static str, Counter)>,
}

impl HotMetrics {
    /// `switchboard_signaling_messages_total` for a client message type.
    pub fn message(&self, kind: &'static str) -> Option<&Counter> {
        self.messages.iter().find(|(k, _)| *k == kind).map(|(_, c)| c)
    }
}

static HOT: OnceLock<HotMetrics> = OnceLock::new();

/// The hot-path handles (after the recorder is installed, so they record into it).
pub fn hot() -> &'static HotMetrics {
    HOT.get_or_init(|| {
        metrics();
        let messages = switchboard_actors::protocol::CLIENT_TYPES
            .iter()
            .map(|&kind| (kind, metrics::counter!("switchboard_signaling_messages_total", "type" => kind)))
            .collect();
        HotMetrics {
            relay_seconds: metrics::histogram!("switchboard_relay_seconds"),
            cross_node_messages: metrics::counter!("switchboard_cross_node_messages_total"),
            messages,
        }
    })
}

/// Drains the histograms' samples into their buckets now and then, so that memory does not
/// grow between scrapes (the exporter only does it when rendering otherwise).
pub fn spawn_upkeep(handle: PrometheusHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            handle.run_upkeep();
        }
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("switchboard_ws_connections", "open WebSocket connections");
    describe_gauge!("switchboard_rooms_active", "rooms with a running actor on this node");
    describe_gauge!("switchboard_room_participants", "participants present in this node's rooms");
    describe_counter!("switchboard_signaling_messages_total", "client messages accepted, by type");
    describe_counter!("switchboard_signaling_errors_total", "errors sent to clients, by code");
    describe_counter!("switchboard_actor_restarts_total", "actors restarted after a failure, by actor");
    describe_counter!("switchboard_room_joins_total", "successful joins");
    describe_histogram!("switchboard_join_seconds", "join received to joined sent");
    describe_histogram!("switchboard_relay_seconds", "relayed message received to written to its target");
    describe_counter!(
        "switchboard_slow_consumers_closed_total",
        "connections closed because too many bytes waited for a client that was not reading"
    );
    describe_gauge!("switchboard_cluster_members", "cluster members by state, this node included");
    describe_histogram!("switchboard_cluster_heartbeat_seconds", "heartbeat round trip to a peer");
    describe_gauge!("switchboard_leases_held", "room leases this node holds");
    describe_counter!("switchboard_lease_lost_total", "rooms stopped because their lease was lost");
    describe_counter!(
        "switchboard_orphan_rooms_adopted_total",
        "rooms taken over by this node after their owner died with sessions in them"
    );
    describe_counter!(
        "switchboard_node_lease_renew_failures_total",
        "node lease renewals that failed (database error or timeout)"
    );
    describe_counter!(
        "switchboard_node_lease_lapses_total",
        "node lease terms that lapsed and were replaced by a new one"
    );
    describe_counter!("switchboard_ownership_writes_total", "writes of node lease and room ownership rows, by table");
    describe_counter!(
        "switchboard_cluster_undecodable_payloads_total",
        "payloads from other nodes that could not be decoded and were dropped"
    );
    describe_counter!("switchboard_rehomes_total", "rooms started here after another node lost or gave them up");
    describe_counter!("switchboard_cross_node_messages_total", "commands and frames sent to another node");
    describe_counter!("switchboard_routing_misses_total", "commands that reached a node not serving their room");
    describe_gauge!("switchboard_turn_allocations", "allocations (relay ports) of the embedded TURN server");
    describe_counter!("switchboard_lobby_waiting_total", "lobby_join answered with lobby_waiting (nobody matched yet)");
    describe_counter!("switchboard_lobby_pairs_total", "pairs made by this node's lobby_joins");
    describe_counter!("switchboard_lobby_timeouts_total", "lobby waits that ended in lobby_timeout");
    describe_histogram!(
        "switchboard_lobby_pairing_seconds",
        "a pairing lobby_join: its transaction and the pair's room made"
    );
    describe_counter!(
        "switchboard_session_stalls_total",
        "sessions whose frames were held because the link to their connection changed, until it said what it has"
    );
    describe_counter!(
        "switchboard_turn_auth_failures_total",
        "TURN requests refused for their credential, by reason (malformed, expired, realm, password)"
    );
    describe_counter!(
        "switchboard_turn_peers_denied_total",
        "TURN permissions refused for a peer address outside the relay policy"
    );
    describe_counter!(
        "switchboard_turn_quota_refusals_total",
        "TURN allocations refused because their user holds turn.allocations_per_user already"
    );
}

/// Installs the log subscriber (`RUST_LOG` filters, default `info`). The `turn` crate logs an
/// error for every datagram it cannot use (a stray packet after an allocation ended, any junk
/// sent to the port), which anyone could turn into a flood of log lines: it is off by default,
/// and the embedded server logs what matters itself.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,ractor_cluster=warn,turn=off"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).try_init();
}
