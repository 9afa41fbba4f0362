//! Membership: who is in the cluster and whether they are alive.
//!
//! The table is keyed by node id. ractor_cluster reports sessions (TCP links), which flap
//! during transitive dialing and duplicate-connection elections, so a member is judged by
//! its heartbeat answers, not by session events alone: `joining` until its first answer,
//! `up` while it answers, `suspect` when it misses one or loses its last session, `down`
//! once it has been silent for the heartbeat timeout (its sessions are then killed, so a
//! frozen peer is cut off), `refused` when it is signed with another secret.

use crate::dialer;
use crate::heartbeat;
use crate::node_agent::{HelloSource, NodeAgent, NodeHello};
use crate::node_id::NodeId;
use ractor::{Actor, ActorId, ActorRef};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{
    IncomingEncryptionMode, NodeEventSubscription, NodeServer, NodeServerMessage, NodeSessionMessage,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::task::JoinHandle;

/// How a node joins and watches the cluster.
#[derive(Clone)]
pub struct ClusterConfig {
    /// This node.
    pub node_id: NodeId,
    /// Where the cluster listener binds (port 0: a free port is chosen).
    pub addr: SocketAddr,
    /// Addresses dialled until connected, and again whenever the link drops.
    pub seeds: Vec<String>,
    /// Shared secret of the cluster's handshake.
    pub cookie: String,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Silence after which a peer is down.
    pub heartbeat_timeout: Duration,
    /// Mutual TLS on every link, when set: the listener accepts only peers with a certificate
    /// the acceptor trusts, and the dialer presents this node's. Links are then made by this
    /// node's dialer only (seeds and [`ClusterConfig::peers`]), never by ractor's transitive
    /// dials, which would be plain TCP.
    pub tls: Option<ClusterTls>,
    /// More addresses to dial, read on every round of the dialer (the members the database
    /// knows, say): with TLS the mesh is formed from these and the seeds.
    pub peers: Option<PeerSource>,
}

/// Both ends of the cluster's TLS.
#[derive(Clone)]
pub struct ClusterTls {
    /// For links other nodes open to this one (asks for and checks their certificate).
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// For links this node opens (presents its certificate, checks theirs).
    pub connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The cookie is a secret: never printed.
        f.debug_struct("ClusterConfig")
            .field("node_id", &self.node_id)
            .field("addr", &self.addr)
            .field("seeds", &self.seeds)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Addresses the dialer should also keep linked.
pub type PeerSource = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// Failure to start the cluster layer.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// The listener or an actor did not start.
    #[error("cluster start failed: {0}")]
    Start(String),
}

/// A member's state as the failure detector sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Connected, first heartbeat not answered yet.
    Joining,
    /// Answering heartbeats.
    Up,
    /// Missed a heartbeat or lost its links; not yet down.
    Suspect,
    /// Silent for the heartbeat timeout, or gone.
    Down,
    /// Not admitted: its configuration differs from ours (signing secret).
    Refused,
}

impl MemberState {
    /// All states, for metrics.
    pub const ALL: [MemberState; 5] =
        [MemberState::Joining, MemberState::Up, MemberState::Suspect, MemberState::Down, MemberState::Refused];

    /// The spelling used in metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Joining => "joining",
            MemberState::Up => "up",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
            MemberState::Refused => "refused",
        }
    }
}

/// A member as the operator view shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    /// Node id.
    pub node_id: String,
    /// Cluster address.
    pub cluster_addr: String,
    /// HTTP address, once known.
    pub http_addr: Option<String>,
    /// Node link address, once known.
    pub link_addr: Option<String>,
    /// State.
    pub state: MemberState,
    /// Whether this is the node answering.
    pub is_self: bool,
    /// Last answered heartbeat, unix milliseconds.
    pub last_heartbeat: Option<i64>,
    /// Round trip of that heartbeat, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Rooms it hosts (from its last heartbeat).
    pub rooms: Option<u64>,
    /// Its open connections (from its last heartbeat).
    pub connections: Option<u64>,
    /// Its process's incarnation (from its last heartbeat): a node restarted under the same id
    /// has a new one.
    pub incarnation: Option<u64>,
    /// Why it is refused, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused_because: Option<String>,
}

impl MemberView {
    /// This node as a member, from its own hello.
    pub fn own(me: &NodeHello, cluster_addr: String) -> MemberView {
        MemberView {
            node_id: me.node_id.clone(),
            cluster_addr,
            http_addr: Some(me.http_addr.clone()),
            link_addr: Some(me.link_addr.clone()),
            state: MemberState::Up,
            is_self: true,
            last_heartbeat: None,
            rtt_ms: None,
            rooms: Some(me.rooms),
            connections: Some(me.connections),
            incarnation: Some(me.incarnation),
            refused_because: None,
        }
    }
}

pub(crate) struct Member {
    pub(crate) sessions: HashMap<ActorId, ActorRef<NodeSessionMessage>>,
    pub(crate) cluster_addr: String,
    pub(crate) hello: Option<NodeHello>,
    pub(crate) state: MemberState,
    pub(crate) last_ok: Option<Instant>,
    pub(crate) last_ok_unix_ms: Option<i64>,
    pub(crate) rtt: Option<Duration>,
    pub(crate) joined_at: Instant,
    pub(crate) sessionless_since: Option<Instant>,
    pub(crate) refused_because: Option<String>,
}

impl Member {
    fn new(cluster_addr: String) -> Member {
        Member {
            sessions: HashMap::new(),
            cluster_addr,
            hello: None,
            state: MemberState::Joining,
            last_ok: None,
            last_ok_unix_ms: None,
            rtt: None,
            joined_at: Instant::now(),
            sessionless_since: None,
            refused_because: None,
        }
    }

    pub(crate) fn kill_sessions(&mut self) {
        for (_, s) in self.sessions.drain() {
            s.kill();
        }
    }
}

pub(crate) struct Table {
    pub(crate) me: NodeId,
    pub(crate) members: BTreeMap<String, Member>,
    pub(crate) duplicate: Option<String>,
}

pub(crate) type SharedTable = Arc<Mutex<Table>>;

pub(crate) fn lock(t: &SharedTable) -> std::sync::MutexGuard<'_, Table> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// Receives ractor_cluster's session events (synchronous callbacks: only table updates here).
struct Events(SharedTable);

fn short_name(full: &str) -> &str {
    full.split('@').next().unwrap_or(full)
}

impl NodeEventSubscription for Events {
    fn node_session_opened(&self, _ses: NodeServerSessionInformation) {}
    fn node_session_authenticated(&self, _ses: NodeServerSessionInformation) {}

    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        let Some(peer) = ses.peer_name.clone() else { return };
        let id = short_name(&peer.name).to_owned();
        let mut t = lock(&self.0);
        if id == t.me.as_str() {
            tracing::error!(peer = %peer.connection_string, "another live node uses this node's id");
            t.duplicate = Some(peer.connection_string.clone());
            ses.actor.kill();
            return;
        }
        let member = t.members.entry(id.clone()).or_insert_with(|| Member::new(peer.connection_string.clone()));
        if member.state == MemberState::Refused {
            ses.actor.kill();
            return;
        }
        member.cluster_addr = peer.connection_string.clone();
        member.sessions.insert(ses.actor.get_id(), ses.actor.clone());
        member.sessionless_since = None;
        if member.state == MemberState::Down {
            tracing::info!(node_id = %id, "peer is back");
            member.state = MemberState::Joining;
            member.joined_at = Instant::now();
        }
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let Some(peer) = ses.peer_name.clone() else { return };
        let id = short_name(&peer.name).to_owned();
        let mut t = lock(&self.0);
        if let Some(member) = t.members.get_mut(&id)
            && member.sessions.remove(&ses.actor.get_id()).is_some()
            && member.sessions.is_empty()
        {
            member.sessionless_since = Some(Instant::now());
            if matches!(member.state, MemberState::Up | MemberState::Joining) {
                member.state = MemberState::Suspect;
            }
        }
    }
}

/// A cheap, cloneable view of who is up (for code that cannot hold the [`Cluster`]).
#[derive(Clone)]
pub struct LiveView {
    table: SharedTable,
}

impl LiveView {
    /// Ids of the members that are up, this node included, sorted.
    pub fn live_nodes(&self) -> Vec<NodeId> {
        live_nodes(&self.table)
    }
}

fn live_nodes(table: &SharedTable) -> Vec<NodeId> {
    let t = lock(table);
    let mut out: Vec<NodeId> = t
        .members
        .iter()
        .filter(|(_, m)| m.state == MemberState::Up)
        .filter_map(|(id, _)| NodeId::parse(id).ok())
        .chain(std::iter::once(t.me.clone()))
        .collect();
    out.sort();
    out
}

/// A running cluster layer.
pub struct Cluster {
    node: ActorRef<NodeServerMessage>,
    agent: ActorRef<crate::node_agent::AgentMsg>,
    table: SharedTable,
    tasks: Vec<JoinHandle<()>>,
    addr: SocketAddr,
    links: crate::link::Links,
}

impl Cluster {
    /// Starts the node server, the agent, the seed dialer and the heartbeat.
    pub async fn start(cfg: ClusterConfig, hello: HelloSource) -> Result<Cluster, ClusterError> {
        let addr = resolve_port(cfg.addr)?;
        let (encryption, mode) = match &cfg.tls {
            Some(tls) => (IncomingEncryptionMode::Tls(tls.acceptor.clone()), NodeConnectionMode::Isolated),
            None => (IncomingEncryptionMode::Raw, NodeConnectionMode::Transitive),
        };
        let server = NodeServer::new(
            addr.port(),
            cfg.cookie.clone(),
            cfg.node_id.to_string(),
            addr.ip().to_string(),
            Some(encryption),
            Some(mode),
        )
        .with_listen_addr(addr.ip());
        let (node, _) = Actor::spawn(None, server, ()).await.map_err(|e| ClusterError::Start(e.to_string()))?;
        let table: SharedTable =
            Arc::new(Mutex::new(Table { me: cfg.node_id.clone(), members: BTreeMap::new(), duplicate: None }));
        node.cast(NodeServerMessage::SubscribeToEvents {
            id: "membership".into(),
            subscription: Box::new(Events(table.clone())),
        })
        .map_err(|e| ClusterError::Start(e.to_string()))?;
        let (agent, _) =
            Actor::spawn(None, NodeAgent, hello.clone()).await.map_err(|e| ClusterError::Start(e.to_string()))?;
        let tasks = vec![
            tokio::spawn(dialer::run(
                node.clone(),
                table.clone(),
                dialer::Dialing {
                    seeds: cfg.seeds.clone(),
                    peers: cfg.peers.clone(),
                    tls: cfg.tls.as_ref().map(|t| t.connector.clone()),
                    me: addr,
                },
            )),
            tokio::spawn(heartbeat::run(table.clone(), hello, cfg.heartbeat_interval, cfg.heartbeat_timeout)),
        ];
        tracing::info!(node_id = %cfg.node_id, cluster_addr = %addr, seeds = ?cfg.seeds, "cluster listener up");
        let links =
            crate::link::Links::new(cfg.node_id.as_str(), cfg.cookie.clone(), cfg.tls.clone(), Some(table.clone()));
        Ok(Cluster { node, agent, table, tasks, addr, links })
    }

    /// This node's links to the others.
    pub fn links(&self) -> crate::link::Links {
        self.links.clone()
    }

    /// The cluster address in use (the chosen port when 0 was configured).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of another live node that has this node's id, if one was seen.
    pub fn duplicate_of(&self) -> Option<String> {
        lock(&self.table).duplicate.clone()
    }

    /// Every known member, this node first.
    pub fn members(&self, me: &NodeHello) -> Vec<MemberView> {
        let t = lock(&self.table);
        let mut out = vec![MemberView::own(me, self.addr.to_string())];
        out.extend(t.members.iter().map(|(id, m)| MemberView {
            node_id: id.clone(),
            cluster_addr: m.cluster_addr.clone(),
            http_addr: m.hello.as_ref().map(|h| h.http_addr.clone()),
            link_addr: m.hello.as_ref().map(|h| h.link_addr.clone()),
            state: m.state,
            is_self: false,
            last_heartbeat: m.last_ok_unix_ms,
            rtt_ms: m.rtt.map(|d| d.as_secs_f64() * 1000.0),
            rooms: m.hello.as_ref().map(|h| h.rooms),
            connections: m.hello.as_ref().map(|h| h.connections),
            incarnation: m.hello.as_ref().map(|h| h.incarnation),
            refused_because: m.refused_because.clone(),
        }));
        out
    }

    /// Ids of the members that are up, this node included, sorted.
    pub fn live_nodes(&self) -> Vec<NodeId> {
        live_nodes(&self.table)
    }

    /// A view of the live members that can be cloned into other tasks.
    pub fn live_view(&self) -> LiveView {
        LiveView { table: self.table.clone() }
    }

    /// Stops the dialer, the heartbeat, the agent and the node server (closing every link).
    pub async fn shutdown(&self) {
        for t in &self.tasks {
            t.abort();
        }
        self.agent.stop(None);
        self.node.stop(None);
    }
}

/// Port 0 means "any free port": ractor_cluster's listener needs a number up front, so one is
/// taken from the OS and released just before the listener binds it.
fn resolve_port(addr: SocketAddr) -> Result<SocketAddr, ClusterError> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let probe =
        std::net::TcpListener::bind(addr).map_err(|e| ClusterError::Start(format!("cannot bind {addr}: {e}")))?;
    probe.local_addr().map_err(|e| ClusterError::Start(e.to_string()))
}
