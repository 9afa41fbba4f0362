//! The node link: how commands for rooms and frames for connections cross between nodes.
//!
//! Every node listens on a link address of its own (told to peers in its hello) and dials one
//! outgoing link to each peer it sends to; a pair of nodes talks over two TCP connections, one
//! per direction, each under the cluster's TLS when it is configured (mutual, against the
//! cluster's CA) and always behind the cookie handshake ([`handshake`]). On a link, records
//! are pre-serialised bytes with compact ids ([`codec`]), appended by the sending task
//! (a connection's, or a room's) to the link's buffer and written in batches by one writer
//! task ([`outbound`]); on the receiving node one reader task per link hands each record to
//! its room or connection directly ([`inbound`]). So a relayed message crosses one hop from
//! the sender's edge to the room's node and one from there to the target's edge, and the
//! messages of one sender to one room keep their order (one link, one reader).
//!
//! ractor_cluster's sessions still carry membership, heartbeats and the request/answer calls
//! (join, resume, admin, hand-off); a peer is reachable on the link while it has a session
//! there and has told its link address.

pub mod codec;
pub mod door;
pub mod handshake;
pub mod inbound;
pub mod outbound;

use crate::dialer::CLUSTER_SERVER_NAME;
use crate::membership::{MemberState, SharedTable, lock};
use crate::routing::EdgeMsg;
use outbound::Outbound;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use switchboard_actors::ids::{ConnId, RoomId};
use switchboard_actors::room::RoomMsg;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::ServerName;

pub use inbound::Receiver;

/// A link's byte stream: TCP, or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// This node's links to the others (cheap to clone). A node outside a cluster has links to
/// nobody.
#[derive(Clone)]
pub struct Links(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) me: String,
    pub(crate) cookie: String,
    pub(crate) tls: Option<crate::ClusterTls>,
    table: Option<SharedTable>,
    out: RwLock<HashMap<String, Arc<Outbound>>>,
    /// Peers whose connections are all gone (they drain), until they link again.
    gone: Mutex<HashSet<String>>,
}

impl Links {
    /// Links of a node that is in no cluster.
    pub fn detached(me: &str) -> Links {
        Links::new(me, String::new(), None, None)
    }

    pub(crate) fn new(me: &str, cookie: String, tls: Option<crate::ClusterTls>, table: Option<SharedTable>) -> Links {
        Links(Arc::new(Inner { me: me.to_owned(), cookie, tls, table, out: RwLock::default(), gone: Mutex::default() }))
    }

    /// Accepts the links other nodes open to this one on `listener`, handing their records to
    /// `receiver`.
    pub fn serve(&self, listener: TcpListener, receiver: Receiver) -> tokio::task::JoinHandle<()> {
        tokio::spawn(inbound::serve(listener, self.clone(), receiver))
    }

    fn outbound(&self, node: &str) -> Option<Arc<Outbound>> {
        if node == self.0.me || !self.0.reachable(node) {
            return None;
        }
        if let Some(out) = self.0.out.read().unwrap_or_else(|p| p.into_inner()).get(node) {
            return Some(out.clone());
        }
        let mut all = self.0.out.write().unwrap_or_else(|p| p.into_inner());
        let out = all.entry(node.to_owned()).or_insert_with(|| {
            let out = Arc::new(Outbound::new(node));
            tokio::spawn(outbound::run(out.clone(), Arc::downgrade(&self.0)));
            out
        });
        Some(out.clone())
    }

    /// Sends a command for `room` from connection `conn` to `node`, which serves the room.
    /// False when `node` cannot be reached now (or the message never crosses nodes).
    pub fn to_room(&self, node: &str, room: &RoomId, conn: &ConnId, msg: &RoomMsg) -> bool {
        match self.outbound(node) {
            Some(out) => out.push(|enc| enc.to_room(room, conn, msg)),
            None => false,
        }
    }

    /// Sends `msg` to `node`'s connections. False when `node` cannot be reached now.
    pub fn to_edge(&self, node: &str, msg: &EdgeMsg) -> bool {
        match self.outbound(node) {
            Some(out) => out.push(|enc| {
                enc.to_edge(msg);
                true
            }),
            None => false,
        }
    }

    /// Tells every peer that this node's connections are all gone (it drains).
    pub fn announce_edge_gone(&self) {
        for node in self.peers() {
            if let Some(out) = self.outbound(&node) {
                out.push(|enc| {
                    enc.edge_gone();
                    true
                });
            }
        }
    }

    /// Whether `node` can be sent to now.
    pub fn reachable(&self, node: &str) -> bool {
        self.0.reachable(node)
    }

    /// Whether `node`'s connections count as open: it is reachable and has not said they are
    /// all gone.
    pub fn edge_open(&self, node: &str) -> bool {
        self.reachable(node) && !self.0.gone.lock().unwrap_or_else(|p| p.into_inner()).contains(node)
    }

    pub(crate) fn edge_gone(&self, node: &str) {
        self.0.gone.lock().unwrap_or_else(|p| p.into_inner()).insert(node.to_owned());
    }

    pub(crate) fn edge_back(&self, node: &str) {
        self.0.gone.lock().unwrap_or_else(|p| p.into_inner()).remove(node);
    }

    /// The number of the link to `node` as it is now: it changes whenever records sent on it
    /// may have been lost. `None` when `node` cannot be reached.
    pub fn route(&self, node: &str) -> Option<u64> {
        self.outbound(node).map(|out| out.route())
    }

    /// The peers that can be reached now.
    pub fn peers(&self) -> Vec<String> {
        let Some(table) = &self.0.table else { return Vec::new() };
        let t = lock(table);
        t.members.keys().filter(|id| reachable_in(&t, id)).cloned().collect()
    }

    /// Waits (at most `within`) until everything sent so far has been written to its socket.
    pub async fn flushed(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let idle = self.0.out.read().unwrap_or_else(|p| p.into_inner()).values().all(|o| o.idle());
            if idle {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

fn reachable_in(t: &crate::membership::Table, node: &str) -> bool {
    t.members.get(node).is_some_and(|m| {
        !m.sessions.is_empty()
            && !matches!(m.state, MemberState::Down | MemberState::Refused)
            && m.hello.as_ref().is_some_and(|h| !h.link_addr.is_empty())
    })
}

impl Inner {
    /// Whether the heartbeat has declared `node` down (it went silent: it died, or it is
    /// frozen and may wake up with records it queued before).
    pub(crate) fn is_down(&self, node: &str) -> bool {
        self.table
            .as_ref()
            .is_some_and(|table| lock(table).members.get(node).is_some_and(|m| m.state == MemberState::Down))
    }

    pub(crate) fn reachable(&self, node: &str) -> bool {
        match &self.table {
            Some(table) => reachable_in(&lock(table), node),
            None => false,
        }
    }

    /// Where `node` takes links: the address it told, its host taken from its cluster
    /// address when it told an unspecified one (it listens on every interface).
    fn link_addr(&self, node: &str) -> Option<SocketAddr> {
        let table = self.table.as_ref()?;
        let t = lock(table);
        let member = t.members.get(node)?;
        let told: SocketAddr = member.hello.as_ref()?.link_addr.parse().ok()?;
        if !told.ip().is_unspecified() {
            return Some(told);
        }
        let cluster: SocketAddr = member.cluster_addr.parse().ok()?;
        Some(SocketAddr::new(cluster.ip(), told.port()))
    }
}

/// Opens a link to `node`: TCP (no Nagle), TLS when configured, the handshake.
pub(crate) async fn dial(inner: &Inner, node: &str) -> Result<Box<dyn Io>, String> {
    let addr = inner.link_addr(node).ok_or("no link address known")?;
    let tcp = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("dialling {addr} timed out"))?
        .map_err(|e| format!("dialling {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let mut stream: Box<dyn Io> = match &inner.tls {
        None => Box::new(tcp),
        Some(tls) => {
            let name = ServerName::try_from(CLUSTER_SERVER_NAME).map_err(|e| e.to_string())?;
            let tls = tokio::time::timeout(DIAL_TIMEOUT, tls.connector.connect(name, tcp))
                .await
                .map_err(|_| "TLS handshake timed out".to_owned())?
                .map_err(|e| format!("TLS: {e}"))?;
            Box::new(tls)
        }
    };
    handshake::dial(&mut stream, &inner.me, node, &inner.cookie).await?;
    Ok(stream)
}
