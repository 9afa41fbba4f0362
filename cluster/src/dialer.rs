//! Seed dialer: ractor_cluster never re-dials, so each seed is dialled until a live session
//! to it exists, with a connect timeout and exponential backoff, and again whenever it drops.
//! Failures are logged on the first attempt and then every tenth, never silently.

use crate::membership::{MemberState, SharedTable, lock};
use ractor::ActorRef;
use ractor_cluster::NodeServerMessage;
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

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

pub(crate) async fn run(node: ActorRef<NodeServerMessage>, table: SharedTable, seeds: Vec<String>) {
    let mut states: HashMap<String, SeedState> = seeds
        .iter()
        .map(|s| (s.clone(), SeedState { next_try: Instant::now(), backoff: MIN_BACKOFF, failures: 0, dialled: false }))
        .collect();
    loop {
        for seed in &seeds {
            let Some(state) = states.get_mut(seed) else { continue };
            let Some(addr) = seed.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
                if state.failures % 10 == 0 {
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
            let result = tokio::time::timeout(CONNECT_TIMEOUT, ractor_cluster::client_connect(&node, addr)).await;
            let error = match result {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("connect timed out".to_owned()),
            };
            // A TCP connection that was made on the previous try but never became a ready
            // session failed too: the handshake was refused (another cookie, or a node with
            // this node's id is already connected there).
            let error = match (error, state.dialled) {
                (None, true) => Some(
                    "connected, but the cluster handshake did not complete (check the cookie and the node id)"
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
                    if state.failures % 10 == 0 {
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
