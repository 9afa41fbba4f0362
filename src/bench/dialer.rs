//! How the generator reaches a node: tokens minted with the benchmark's secret (no HTTP round
//! trip per client), connections spread over several 127.0.0.x source addresses, and joins.

use super::node::BENCH_SECRET;
use super::wire::{self, Conn};
use crate::auth::{Authority, MintRequest};
use crate::config::AuthConfig;
use anyhow::{Result, anyhow};
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Opens connections to one node.
pub struct Dialer {
    server: SocketAddr,
    authority: Authority,
    sources: usize,
    next: AtomicUsize,
}

/// A joined client.
pub struct Joined {
    /// Its connection.
    pub conn: Conn,
    /// Its peer id.
    pub peer_id: String,
}

impl Dialer {
    /// A dialer to `server` from `sources` loopback addresses (127.0.0.1, .2, ...).
    pub fn new(server: SocketAddr, sources: usize) -> Dialer {
        Dialer::with_secret(server, sources, BENCH_SECRET)
    }

    /// The same, for nodes that check tokens against `secret`.
    pub fn with_secret(server: SocketAddr, sources: usize, secret: &str) -> Dialer {
        let authority = Authority::new(secret.as_bytes(), &AuthConfig::default());
        Dialer { server, authority, sources: sources.clamp(1, 250), next: AtomicUsize::new(0) }
    }

    /// A token for `user`, minted with the benchmark's secret.
    pub fn token(&self, user: &str) -> Result<String> {
        let req = MintRequest { user_id: user.to_owned(), ..MintRequest::default() };
        Ok(self.authority.mint(req).map_err(|e| anyhow!("minting a token: {e}"))?.0)
    }

    /// Opens and upgrades a connection for `user`.
    pub async fn connect(&self, user: &str) -> Result<Conn> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.sources;
        let source = Ipv4Addr::new(127, 0, 0, 1 + i as u8);
        let path = format!("/ws/signal?token={}", self.token(user)?);
        Ok(Conn::new(wire::connect(self.server, source, &path).await?))
    }

    /// Opens a connection for `user` and joins `room`.
    pub async fn join(&self, user: &str, room: &str) -> Result<Joined> {
        let waited = std::time::Duration::from_secs(10);
        let mut conn =
            tokio::time::timeout(waited, self.connect(user)).await.map_err(|_| anyhow!("connect timed out"))??;
        conn.send(&json!({"type": "join", "roomId": room}).to_string()).await?;
        let joined =
            tokio::time::timeout(waited, conn.expect("joined")).await.map_err(|_| anyhow!("join timed out"))??;
        let peer_id = joined["peerId"].as_str().unwrap_or_default().to_owned();
        Ok(Joined { conn, peer_id })
    }
}
