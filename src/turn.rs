//! The TURN server embedded in a node, so that a single node relays media for clients that
//! cannot reach each other directly, with no coturn to run beside it. It is `turn` 0.17's
//! server (webrtc-rs's tokio line) with Switchboard's credentials (`turn/auth.rs`), a guard
//! in front of each listener (`turn/guard.rs`: expiry at allocation, failure counts, the peer
//! policy of `turn/peers.rs`), relay ports from a configured range (`turn/relay.rs`) and a TCP
//! listener beside the UDP one (`turn/tcp.rs`).
//!
//! Startup binds the sockets first ([`Bound`]), so that the URLs handed to clients carry the
//! ports actually bound (port 0 in tests) and a failed start releases them; serving starts
//! later ([`Bound::serve`]) and stops with the node ([`TurnServer::stop`]).

pub mod auth;
pub mod guard;
pub mod peers;
pub mod quota;
pub mod relay;
pub mod tcp;

use crate::config::Config;
use ::turn::server::Server;
use ::turn::server::config::{ConnConfig, ServerConfig};
use auth::SharedSecret;
use guard::Guard;
use peers::PeerPolicy;
use quota::Quota;
use relay::Relays;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use webrtc_util::Conn;

/// The port TURN listens on unless told otherwise (coturn's too).
pub const DEFAULT_PORT: u16 = 3478;

/// The embedded server's settings, resolved from `[turn]` and `[http]`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// UDP and TCP listen address (port 0: any free port).
    pub listen: SocketAddr,
    /// Where relay ports are bound, and the address clients are told.
    pub relay_address: IpAddr,
    /// The host in the advertised URLs.
    pub advertised: IpAddr,
    /// Relay ports, inclusive.
    pub relay_ports: (u16, u16),
    /// Realm of the credentials.
    pub realm: String,
    /// Whom data may be relayed to.
    pub peers: PeerPolicy,
    /// Live allocations one user may hold (0: no limit).
    pub allocations_per_user: usize,
}

impl Settings {
    /// The settings in effect; the error names the key to set.
    pub fn of(config: &Config) -> Result<Settings, String> {
        let t = &config.turn;
        let listen = t.listen.unwrap_or_else(|| SocketAddr::new(config.http.addr.ip(), DEFAULT_PORT));
        let relay_address = t.relay_address.unwrap_or(listen.ip());
        if relay_address.is_unspecified() {
            return Err(format!(
                "turn.relay_address must be set (an address clients can reach) when turn.listen is the wildcard address {listen}"
            ));
        }
        if relay_address.is_multicast() {
            return Err(format!("turn.relay_address {relay_address} is a multicast address"));
        }
        let advertised = if listen.ip().is_unspecified() { relay_address } else { listen.ip() };
        let deny_internal = t.deny_internal_peers.unwrap_or(!peers::is_internal(relay_address));
        Ok(Settings {
            listen,
            relay_address,
            advertised,
            relay_ports: t.relay_ports,
            realm: t.realm.clone(),
            peers: PeerPolicy { deny_internal },
            allocations_per_user: t.allocations_per_user,
        })
    }
}

/// The listeners, bound but not yet served.
pub struct Bound {
    settings: Settings,
    udp: UdpSocket,
    tcp: TcpListener,
    addr: SocketAddr,
}

impl Bound {
    /// Binds UDP and TCP on the same port. With port 0 the UDP socket picks it and TCP follows;
    /// if TCP finds that port taken, another is tried.
    pub async fn bind(settings: Settings) -> std::io::Result<Bound> {
        let mut last = None;
        for _ in 0..8 {
            let udp = UdpSocket::bind(settings.listen).await?;
            let addr = udp.local_addr()?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => return Ok(Bound { settings, udp, tcp, addr }),
                Err(e) if settings.listen.port() == 0 => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no port free for both UDP and TCP")))
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URLs clients are given: UDP first (what browsers prefer), then TCP.
    pub fn urls(&self) -> Vec<String> {
        let host = match self.settings.advertised {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        let port = self.addr.port();
        vec![format!("turn:{host}:{port}?transport=udp"), format!("turn:{host}:{port}?transport=tcp")]
    }

    /// Starts serving with the shared secret.
    pub async fn serve(self, secret: &str) -> anyhow::Result<TurnServer> {
        let Bound { settings, udp, tcp, addr } = self;
        let auth = Arc::new(SharedSecret::new(secret, &settings.realm));
        let (stop_tcp, stopped) = watch::channel(false);
        let (tcp_clients, tcp_task) = tcp::TcpClients::serve(tcp, stopped)?;
        let listeners: [Arc<dyn Conn + Send + Sync>; 2] = [Arc::new(udp), tcp_clients];
        let quota = Arc::new(Quota::new(settings.allocations_per_user));
        let conn_configs = listeners
            .into_iter()
            .zip(0u8..)
            .map(|(socket, listener)| ConnConfig {
                conn: Arc::new(Guard::new(
                    socket,
                    listener,
                    auth.clone(),
                    &settings.realm,
                    settings.peers,
                    quota.clone(),
                )),
                relay_addr_generator: Box::new(Relays::new(settings.relay_address, settings.relay_ports)),
            })
            .collect();
        let config = ServerConfig {
            conn_configs,
            realm: settings.realm.clone(),
            auth_handler: auth,
            // Zero: `turn`'s default (ten minutes, as RFC 5766 says).
            channel_bind_timeout: Duration::ZERO,
            alloc_close_notify: None,
        };
        let server = match Server::new(config).await {
            Ok(server) => server,
            Err(e) => {
                let _ = stop_tcp.send(true);
                let _ = tcp_task.await;
                anyhow::bail!("turn server: {e}");
            }
        };
        let (min, max) = settings.relay_ports;
        tracing::info!(
            %addr,
            relay_address = %settings.relay_address,
            relay_ports = %format!("{min}-{max}"),
            realm = %settings.realm,
            deny_internal_peers = settings.peers.deny_internal,
            "turn server listening on udp and tcp {addr}"
        );
        Ok(TurnServer { server, addr, stop_tcp, tcp_task })
    }
}

/// The embedded TURN server, serving.
pub struct TurnServer {
    server: Server,
    addr: SocketAddr,
    stop_tcp: watch::Sender<bool>,
    tcp_task: JoinHandle<()>,
}

impl TurnServer {
    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening and ends every allocation (their relay ports close).
    pub async fn stop(self) {
        if let Err(e) = self.server.close().await {
            tracing::warn!(error = %e, "turn server did not close cleanly");
        }
        let _ = self.stop_tcp.send(true);
        let mut task = self.tcp_task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
            task.abort();
        }
        tracing::info!(addr = %self.addr, "turn server stopped");
    }
}
