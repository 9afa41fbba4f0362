//! Seed dialer: ractor_cluster never re-dials, so each seed is dialled until a live session
//! to it exists, with a connect timeout and exponential backoff, and again whenever it drops.
//! Failures are logged on the first attempt and then every tenth, never silently.
//!
//! With TLS between nodes the dialer also forms the mesh: ractor's transitive dials are plain
//! TCP, so they are off, and every address the peer source names (the members the database
//! knows) is dialled like a seed, over TLS.

use crate::membership::{MemberState, PeerSource, SharedTable, lock};
use ractor::ActorRef;
use ractor_cluster::NodeServerMessage;
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

struct SeedState {
    next_try: Instant,
    backoff: Duration,
    failures: u32,
    /// Whether the last attempt connected at the TCP level.
    dialled: bool,
}

fn connected(table: &SharedTable, seed: &SocketAddr) -> bool {
    lock(table).members.values().any(|m| {
        !m.sessions.is_empty()
            && m.state != MemberState::Down
            && m.cluster_addr.to_socket_addrs().ok().and_then(|mut a| a.next()).as_ref() == Some(seed)
    })
}

/// What the dialer dials, and how.
pub(crate) struct Dialing {
    /// Dialled until linked, always.
    pub seeds: Vec<String>,
    /// More addresses, read every round.
    pub peers: Option<PeerSource>,
    /// Dial over TLS with this connector.
    pub tls: Option<tokio_rustls::TlsConnector>,
    /// This node's own cluster address (never dialled).
    pub me: SocketAddr,
}

fn fresh() -> SeedState {
    SeedState { next_try: Instant::now(), backoff: MIN_BACKOFF, failures: 0, dialled: false }
}

async fn connect(
    node: &ActorRef<NodeServerMessage>,
    addr: SocketAddr,
    tls: Option<&TlsConnector>,
) -> Result<(), String> {
    match tls {
        None => ractor_cluster::client_connect(node, addr).await.map_err(|e| e.to_string()),
        Some(tls) => {
            // The peer is dialled by address; its certificate is checked against the cluster's
            // CA (see the app's cluster TLS), the name is this fixed one.
            let name = ServerName::try_from(CLUSTER_SERVER_NAME).map_err(|e| e.to_string())?;
            ractor_cluster::client_connect_enc(node, addr, tls.clone(), name).await.map_err(|e| e.to_string())
        }
    }
}

/// The server name a node asks for when it dials another over TLS.
pub const CLUSTER_SERVER_NAME: &str = "switchboard-cluster";

pub(crate) async fn run(node: ActorRef<NodeServerMessage>, table: SharedTable, dialing: Dialing) {
    let mut states: HashMap<String, SeedState> = dialing.seeds.iter().map(|s| (s.clone(), fresh())).collect();
    loop {
        let mut targets = dialing.seeds.clone();
        if let Some(peers) = &dialing.peers {
            for peer in peers() {
                let own = peer.to_socket_addrs().ok().and_then(|mut a| a.next()) == Some(dialing.me);
                if !own && !targets.contains(&peer) {
                    targets.push(peer);
                }
            }
        }
        for seed in &targets {
            let state = states.entry(seed.clone()).or_insert_with(|| {
                if !dialing.seeds.contains(seed) {
                    tracing::info!(peer = %seed, "dialling a member the database knows");
                }
                fresh()
            });
            let Some(addr) = seed.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
                if state.failures.is_multiple_of(10) {
                    tracing::warn!(%seed, "seed address does not resolve");
                }
                state.failures += 1;
                continue;
            };
            if connected(&table, &addr) {
                state.backoff = MIN_BACKOFF;
                state.failures = 0;
                state.dialled = false;
                continue;
            }
            if Instant::now() < state.next_try {
                continue;
            }
            let result = tokio::time::timeout(CONNECT_TIMEOUT, connect(&node, addr, dialing.tls.as_ref())).await;
            let error = match result {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some("connect timed out".to_owned()),
            };
            // A TCP connection that was made on the previous try but never became a ready
            // session failed too: the handshake was refused (another cookie, or a node with
            // this node's id is already connected there).
            let error = match (error, state.dialled) {
                (None, true) => Some(
                    "connected, but the cluster handshake did not complete (check the cookie, the node id and, with TLS, that both nodes' certificates come from the cluster's CA)"
                        .to_owned(),
                ),
                (error, _) => error,
            };
            match error {
                None => {
                    // Connected at the TCP level; authentication finishes asynchronously. Check
                    // again after a short wait rather than dialling twice.
                    state.dialled = true;
                    state.next_try = Instant::now() + state.backoff;
                }
                Some(error) => {
                    if state.failures.is_multiple_of(10) {
                        tracing::warn!(%seed, %error, attempts = state.failures + 1, "cannot reach seed; retrying");
                    }
                    state.failures += 1;
                    state.dialled = false;
                    state.next_try = Instant::now() + state.backoff;
                    state.backoff = (state.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
