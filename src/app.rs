//! What every HTTP handler and connection of a node shares.

use crate::auth::Authority;
use crate::bus::Bus;
use crate::config::Config;
use crate::edge::edge_router::EdgeRouter;
use crate::evidence::EvidenceStore;
use crate::evidence::report::NodeKey;
use crate::store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use ractor::ActorRef;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use switchboard_actors::node_lease::NodeLease;
use switchboard_actors::room_supervisor::RoomSupervisorMsg;

/// A node's shared state.
pub struct App {
    /// Configuration in effect.
    pub config: Config,
    /// Token minting and verification.
    pub authority: Authority,
    /// The database.
    pub store: Store,
    /// The root of the room actors.
    pub rooms: ActorRef<RoomSupervisorMsg>,
    /// Open connections.
    pub edge: Arc<EdgeRouter>,
    /// Prometheus renderer.
    pub metrics: PrometheusHandle,
    /// Whether token minting is open (see `Config::dev_mode`).
    pub dev_mode: bool,
    /// Cluster membership, when this node is a member.
    pub cluster: Option<switchboard_cluster::Cluster>,
    /// The links to the other nodes (to nobody outside a cluster).
    pub links: switchboard_cluster::Links,
    /// What this node tells its peers about itself.
    pub hello: switchboard_cluster::node_agent::HelloSource,
    /// This node's lease, in a cluster (its rooms are owned under it).
    pub node_lease: Arc<NodeLease>,
    /// The nodes as the database shows them (leases, cordons), for placement.
    pub nodes: Arc<crate::placement::NodeView>,
    /// Where a room goes when this node gives it up.
    pub successor: Successor,
    /// The event bus.
    pub bus: Bus,
    /// Where snapshots, heatmaps and other artifacts are kept, by content id.
    pub evidence: EvidenceStore,
    /// The key this node signs reports with.
    pub signing_key: NodeKey,
    /// Woken when a snapshot job is queued on this node.
    pub snapshot_wake: Arc<tokio::sync::Notify>,
    shutting_down: Arc<AtomicBool>,
}

/// Everything `App` is made of, but its own flags.
pub struct AppParts {
    /// Configuration in effect.
    pub config: Config,
    /// Token minting and verification.
    pub authority: Authority,
    /// The database.
    pub store: Store,
    /// The root of the room actors.
    pub rooms: ActorRef<RoomSupervisorMsg>,
    /// Open connections.
    pub edge: Arc<EdgeRouter>,
    /// Prometheus renderer.
    pub metrics: PrometheusHandle,
    /// Cluster membership, when clustered.
    pub cluster: Option<switchboard_cluster::Cluster>,
    /// What this node tells its peers about itself.
    pub hello: switchboard_cluster::node_agent::HelloSource,
    /// This node's lease.
    pub node_lease: Arc<NodeLease>,
    /// The nodes as the database shows them.
    pub nodes: Arc<crate::placement::NodeView>,
    /// Set when the node begins to shut down or drain (shared with the room host).
    pub draining: Arc<AtomicBool>,
    /// Where a room goes when this node gives it up.
    pub successor: Successor,
    /// The event bus.
    pub bus: Bus,
    /// Where artifacts are kept.
    pub evidence: EvidenceStore,
    /// The key this node signs reports with.
    pub signing_key: NodeKey,
}

pub use switchboard_cluster::routing::Successor;

impl App {
    /// The audio-only fallback policy rooms apply (for replaying it over stored samples).
    pub fn fallback_policy(&self) -> switchboard_actors::quality::FallbackPolicy {
        switchboard_actors::quality::FallbackPolicy {
            fallback_after: self.config.rooms.fallback_after,
            recover_after: self.config.rooms.recover_after,
        }
    }

    /// Assembles the state.
    pub fn new(p: AppParts) -> App {
        let dev_mode = p.config.dev_mode();
        let links = match &p.cluster {
            Some(cluster) => cluster.links(),
            None => switchboard_cluster::Links::detached(&p.config.node_id),
        };
        App {
            config: p.config,
            authority: p.authority,
            store: p.store,
            rooms: p.rooms,
            edge: p.edge,
            metrics: p.metrics,
            dev_mode,
            links,
            cluster: p.cluster,
            hello: p.hello,
            node_lease: p.node_lease,
            nodes: p.nodes,
            successor: p.successor,
            bus: p.bus,
            evidence: p.evidence,
            signing_key: p.signing_key,
            snapshot_wake: Arc::default(),
            shutting_down: p.draining,
        }
    }

    /// Whether the node is draining.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Marks the node as draining: `/readyz` fails and new connections are refused.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }
}
