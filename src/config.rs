//! Node configuration: defaults here, then the TOML file, then `SWITCHBOARD_*` environment
//! variables, then command-line flags (applied by `cli.rs`). `validate` names the bad key.

use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything a node is configured with. Every key is documented in `config/example.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's id (sessions record where they live).
    pub node_id: String,
    /// Where state lives when no database URL is given, and the generated secrets.
    pub data_dir: PathBuf,
    /// HTTP and WebSocket listener.
    pub http: HttpConfig,
    /// Database.
    pub database: DatabaseConfig,
    /// Tokens and API key.
    pub auth: AuthConfig,
    /// STUN and TURN servers handed to clients.
    pub ice: IceConfig,
    /// Room defaults.
    pub rooms: RoomsConfig,
    /// Per-connection limits.
    pub limits: LimitsConfig,
    /// Cluster membership.
    pub cluster: ClusterSettings,
    /// The event bus (MQTT) and the outbox publisher.
    pub bus: BusConfig,
    /// Webhooks from the outbox.
    pub webhooks: WebhooksConfig,
    /// Snapshots and their reports.
    pub snapshots: SnapshotsConfig,
    /// Where evidence is kept.
    pub evidence: EvidenceConfig,
    /// The TURN server embedded in the node.
    pub turn: TurnConfig,
    /// Lobbies that pair people into rooms.
    pub lobby: LobbyConfig,
    /// `[appointments]`.
    pub appointments: AppointmentsConfig,
}

/// `[appointments]`: booked calls between a host and guests (`appointments.rs`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppointmentsConfig {
    /// How long before its start time an appointment's call may be started and joined.
    #[serde(with = "duration_text")]
    pub join_window: Duration,
    /// How long after its start time an appointment nobody arrived at becomes a no-show.
    #[serde(with = "duration_text")]
    pub noshow_after: Duration,
    /// How often a node looks for appointments that became no-shows.
    #[serde(with = "duration_text")]
    pub sweep_interval: Duration,
}

impl Default for AppointmentsConfig {
    fn default() -> Self {
        Self {
            join_window: Duration::from_secs(600),
            noshow_after: Duration::from_secs(900),
            sweep_interval: Duration::from_secs(5),
        }
    }
}

/// `[lobby]`: people who send `lobby_join` wait to be paired with someone (`lobby.rs`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LobbyConfig {
    /// How long someone waits for a partner before `lobby_timeout`.
    #[serde(with = "duration_text")]
    pub wait: Duration,
    /// How long the place of someone whose connection dropped is kept: not paired while gone,
    /// taken back by a `lobby_join` of the same user within it.
    #[serde(with = "duration_text")]
    pub grace: Duration,
}

impl Default for LobbyConfig {
    fn default() -> Self {
        Self { wait: Duration::from_secs(120), grace: Duration::from_secs(10) }
    }
}

/// `[turn]`: the TURN server embedded in the node (`turn.rs`). It accepts the credentials
/// the node hands out in `iceServers`, signed with `ice.turn_secret`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// Whether this node runs it. Unset: on for a single node, off for a cluster member.
    pub enabled: Option<bool>,
    /// UDP and TCP listen address. Unset: the HTTP address's IP, port 3478. Port 0 picks a
    /// free port (the same for UDP and TCP), which the advertised URLs then carry.
    pub listen: Option<SocketAddr>,
    /// The address relay ports are bound to and that clients are told. Unset: the listen IP
    /// (required when that is a wildcard address).
    pub relay_address: Option<IpAddr>,
    /// Relay ports, `"min-max"` (inclusive).
    #[serde(with = "port_range")]
    pub relay_ports: (u16, u16),
    /// Realm of the long-term credentials.
    pub realm: String,
    /// Refuse to relay to loopback, private, link-local, CGNAT and other non-public peer
    /// addresses. Unset: refused exactly when the relay address is public (a relay on a
    /// private or loopback address serves a network of its own kind).
    pub deny_internal_peers: Option<bool>,
    /// Allocations one user may hold at once, over UDP and TCP (a browser makes one or two
    /// per peer connection); 0: no limit.
    pub allocations_per_user: usize,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            listen: None,
            relay_address: None,
            relay_ports: (49152, 65535),
            realm: "switchboard".into(),
            deny_internal_peers: None,
            allocations_per_user: 32,
        }
    }
}

/// `[evidence]`
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvidenceConfig {
    /// `s3://bucket[/prefix]`; unset, a folder under the data directory. Credentials come from
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    pub url: Option<String>,
    /// An S3-compatible endpoint other than AWS's.
    pub endpoint: Option<String>,
    /// The bucket's region.
    pub region: String,
    /// Whether a plain `http://` endpoint is allowed.
    pub allow_http: bool,
    /// Access key id (else `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// Secret access key (else `AWS_SECRET_ACCESS_KEY`; prefer the environment).
    pub secret_access_key: Option<String>,
    /// The report-signing key (a file of its 32 secret bytes, such as another node's
    /// `report_signing_key`); unset, the node's own key in the data directory, made at first
    /// start.
    pub signing_key_file: Option<PathBuf>,
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        Self {
            url: None,
            endpoint: None,
            region: "us-east-1".into(),
            allow_http: false,
            access_key_id: None,
            secret_access_key: None,
            signing_key_file: None,
        }
    }
}

/// `[snapshots]`
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotsConfig {
    /// Whether this node's worker scores snapshots (of the snapshots this node stored).
    pub work: bool,
    /// Largest snapshot accepted, bytes (PNG or JPEG; at most 8192 pixels on a side).
    pub max_image_bytes: usize,
    /// Where comparisons are made: `local` (in the node's worker) or `bus` (by CV workers
    /// through the event bus).
    pub cv: String,
    /// With `cv = "bus"`: CV workers this node runs itself (0: only `switchboard cv-worker`
    /// processes).
    pub local_cv_workers: u32,
    /// With `cv = "bus"`: how long a job waits for a worker's answer before it is tried again.
    #[serde(with = "duration_text")]
    pub cv_timeout: Duration,
    /// A job whose node stopped renewing its claim for this long (the node died) is taken
    /// over by another node (with a shared evidence store) or by this one when it is back.
    #[serde(with = "duration_text")]
    pub claim_timeout: Duration,
}

impl Default for SnapshotsConfig {
    fn default() -> Self {
        Self {
            work: true,
            max_image_bytes: 10 * 1024 * 1024,
            cv: "local".into(),
            local_cv_workers: 1,
            cv_timeout: Duration::from_secs(15),
            claim_timeout: Duration::from_secs(10),
        }
    }
}

/// `[webhooks]`
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Whether this node may dispatch webhooks (one node of the cluster does at a time).
    pub dispatch: bool,
    /// Endpoints from this file (besides those registered through the API).
    pub endpoints: Vec<WebhookEndpointConfig>,
    /// The first retry's delay; each next one doubles.
    #[serde(with = "duration_text")]
    pub retry_base: Duration,
    /// The longest delay between two attempts.
    #[serde(with = "duration_text")]
    pub retry_max: Duration,
    /// How long a delivery is retried before it is dead-lettered.
    #[serde(with = "duration_text")]
    pub retry_for: Duration,
    /// How long one attempt may take.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// How often an idle dispatcher looks for work.
    #[serde(with = "duration_text")]
    pub poll_interval: Duration,
    /// Lifetime of the dispatcher's lease.
    #[serde(with = "duration_text")]
    pub lease_ttl: Duration,
}

/// `[[webhooks.endpoints]]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpointConfig {
    /// Where events are POSTed.
    pub url: String,
    /// `whsec_` and the base64 of at least 24 bytes.
    pub secret: String,
    /// The kinds it gets (all when absent).
    #[serde(default)]
    pub events: Option<Vec<String>>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            dispatch: true,
            endpoints: Vec::new(),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(3600),
            retry_for: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(200),
            lease_ttl: Duration::from_secs(5),
        }
    }
}

/// `[bus]`
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// The broker, `mqtt://host:port`. Unset: a broker embedded in this node.
    pub mqtt_url: Option<String>,
    /// Where the embedded broker listens (port 0: any free port, logged at start).
    pub embedded_listen: SocketAddr,
    /// Names this cluster in topics: `switchboard/{cluster}/...`.
    pub cluster_name: String,
    /// Whether this node may publish the outbox (one node of the cluster does at a time).
    pub publish_outbox: bool,
    /// How often an idle publisher looks for new events.
    #[serde(with = "duration_text")]
    pub poll_interval: Duration,
    /// Lifetime of the publisher's lease; another node takes over once it has expired.
    #[serde(with = "duration_text")]
    pub publisher_lease_ttl: Duration,
    /// Events per publish batch.
    pub batch: u32,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            mqtt_url: None,
            embedded_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            cluster_name: "default".into(),
            publish_outbox: true,
            poll_interval: Duration::from_millis(100),
            publisher_lease_ttl: Duration::from_secs(5),
            batch: 256,
        }
    }
}

/// `[cluster]`
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// Cluster listener; setting it makes this node a cluster member.
    pub addr: Option<SocketAddr>,
    /// Where this node takes node links (relayed messages between nodes); unset: the cluster
    /// listener's host, any free port (told to the peers in the heartbeat).
    pub link_addr: Option<SocketAddr>,
    /// Other members to dial (`host:port`), usually one or two stable nodes.
    pub seeds: Vec<String>,
    /// Shared secret of the cluster handshake. Outside dev mode it must be set.
    pub cookie: Option<String>,
    /// Heartbeat period.
    #[serde(with = "duration_text")]
    pub heartbeat_interval: Duration,
    /// Silence after which a peer is down.
    #[serde(with = "duration_text")]
    pub heartbeat_timeout: Duration,
    /// Lifetime of the node's lease (one row per node, renewed five times per lifetime); the
    /// node's rooms stop acting 4/5 of it after the last renewal granted, and another node may
    /// take them once it has run out. A killed node's rooms serve again elsewhere within about
    /// this plus a sweep (a quarter of it).
    #[serde(with = "duration_text")]
    pub lease_ttl: Duration,
    /// This node's certificate for the links between nodes (PEM), issued by `ca`.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// The cluster's CA certificate (PEM): only nodes with a certificate it issued are linked.
    pub ca: Option<PathBuf>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            addr: None,
            link_addr: None,
            seeds: Vec::new(),
            cookie: None,
            heartbeat_interval: Duration::from_millis(500),
            heartbeat_timeout: Duration::from_secs(2),
            lease_ttl: Duration::from_millis(1200),
            tls_cert: None,
            tls_key: None,
            ca: None,
        }
    }
}

/// The cookie a dev-mode cluster uses when none is configured.
pub const DEV_COOKIE: &str = "switchboard-dev-cookie";

/// `[http]`
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address.
    pub addr: SocketAddr,
    /// How long a shutdown waits for connections to close.
    #[serde(with = "duration_text")]
    pub shutdown_grace: Duration,
    /// PEM certificate chain; with `tls_key`, the node serves HTTPS and WSS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// A proxy in front of the node terminates TLS: plain HTTP on a public address is then
    /// allowed.
    pub behind_tls_proxy: bool,
    /// Web origins (`scheme://host[:port]`) whose pages may call the API and open the
    /// signaling WebSocket; in dev mode loopback origins may as well.
    pub allowed_origins: Vec<String>,
}

/// `[database]`
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://...` or `postgres://...`; empty means a SQLite file in the data dir.
    pub url: Option<String>,
    /// Pool size.
    pub max_connections: u32,
}

/// `[auth]`
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HMAC secret that signs tokens (HS256). Generated into the data dir when absent.
    pub secret: Option<String>,
    /// Bearer key that `POST /auth/token` and `POST /rooms` require outside dev mode.
    pub api_key: Option<String>,
    /// Token issuer (`iss`).
    pub issuer: String,
    /// Token audience (`aud`).
    pub audience: String,
    /// Lifetime of a minted token unless the request asks for less.
    #[serde(with = "duration_text")]
    pub token_ttl: Duration,
    /// Longest lifetime a request may ask for.
    #[serde(with = "duration_text")]
    pub max_token_ttl: Duration,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "duration_text")]
    pub leeway: Duration,
    /// Token minting without an API key. `None`: on exactly when listening on loopback
    /// without an API key.
    pub dev_mode: Option<bool>,
}

/// `[ice]`
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IceConfig {
    /// STUN URLs, e.g. `stun:stun.example.org:3478`.
    pub stun_urls: Vec<String>,
    /// TURN URLs, e.g. `turn:turn.example.org:3478?transport=udp`.
    pub turn_urls: Vec<String>,
    /// coturn `static-auth-secret`; required when TURN URLs are set. With the embedded TURN
    /// server on and none set, generated into the data dir.
    pub turn_secret: Option<String>,
    /// Lifetime of TURN credentials (a client must allocate within it).
    #[serde(with = "duration_text")]
    pub turn_ttl: Duration,
}

/// `[rooms]`
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    /// Participant limit of rooms created by a join.
    pub max_participants: u32,
    /// How long an empty room's actor stays up.
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// Chat messages sent in `joined`.
    pub chat_history: u32,
    /// Quality poor without a break for this long: the peer falls back to audio only.
    #[serde(with = "duration_text")]
    pub fallback_after: Duration,
    /// Quality good without a break for this long: video comes back.
    #[serde(with = "duration_text")]
    pub recover_after: Duration,
    /// How long a session whose connection dropped stays in its room, resumable.
    #[serde(with = "duration_text")]
    pub resume_grace: Duration,
}

/// `[limits]`
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest WebSocket message accepted, in bytes; larger ones close the connection (1009).
    pub max_message_bytes: usize,
    /// Sustained messages per second per connection.
    pub messages_per_second: f64,
    /// Burst above the sustained rate.
    pub burst: f64,
    /// Messages dropped for rate in a row before the connection is closed (1008).
    pub max_rate_violations: u32,
    /// Bytes that may wait for a client that is not reading before its connection is closed
    /// (4008; its session stays resumable).
    pub max_queued_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: "local".into(),
            data_dir: PathBuf::from("./data"),
            http: HttpConfig::default(),
            database: DatabaseConfig::default(),
            auth: AuthConfig::default(),
            ice: IceConfig::default(),
            rooms: RoomsConfig::default(),
            limits: LimitsConfig::default(),
            cluster: ClusterSettings::default(),
            bus: BusConfig::default(),
            webhooks: WebhooksConfig::default(),
            snapshots: SnapshotsConfig::default(),
            evidence: EvidenceConfig::default(),
            turn: TurnConfig::default(),
            lobby: LobbyConfig::default(),
            appointments: AppointmentsConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_grace: Duration::from_secs(10),
            tls_cert: None,
            tls_key: None,
            behind_tls_proxy: false,
            allowed_origins: Vec::new(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: None, max_connections: 8 }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            secret: None,
            api_key: None,
            issuer: "switchboard".into(),
            audience: "switchboard".into(),
            token_ttl: Duration::from_secs(3600),
            max_token_ttl: Duration::from_secs(24 * 3600),
            leeway: Duration::from_secs(5),
            dev_mode: None,
        }
    }
}

impl Default for IceConfig {
    fn default() -> Self {
        Self { stun_urls: Vec::new(), turn_urls: Vec::new(), turn_secret: None, turn_ttl: Duration::from_secs(3600) }
    }
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            max_participants: 16,
            idle_timeout: Duration::from_secs(30),
            chat_history: 50,
            fallback_after: Duration::from_secs(4),
            recover_after: Duration::from_secs(10),
            resume_grace: Duration::from_secs(20),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            messages_per_second: 50.0,
            burst: 200.0,
            max_rate_violations: 100,
            max_queued_bytes: 1024 * 1024,
        }
    }
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
    }

    /// Applies the environment variables that have no flag (secrets stay out of `ps`).
    pub fn apply_secret_env(&mut self) {
        if let Ok(v) = std::env::var("SWITCHBOARD_AUTH_SECRET") {
            self.auth.secret = Some(v);
        }
        if let Ok(v) = std::env::var("SWITCHBOARD_API_KEY") {
            self.auth.api_key = Some(v);
        }
        if let Ok(v) = std::env::var("SWITCHBOARD_TURN_SECRET") {
            self.ice.turn_secret = Some(v);
        }
        if let Ok(v) = std::env::var("SWITCHBOARD_CLUSTER_COOKIE") {
            self.cluster.cookie = Some(v);
        }
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) if !url.is_empty() => url.clone(),
            _ => format!("sqlite://{}?mode=rwc", self.data_dir.join("switchboard.db").display()),
        }
    }

    /// Whether this node is a cluster member.
    pub fn clustered(&self) -> bool {
        self.cluster.addr.is_some() || !self.cluster.seeds.is_empty()
    }

    /// Whether the embedded TURN server runs: as configured, else on for a single node.
    pub fn turn_enabled(&self) -> bool {
        self.turn.enabled.unwrap_or(!self.clustered())
    }

    /// The cluster's TLS files, when all three are set.
    pub fn cluster_tls_files(&self) -> Option<crate::tls::cluster::ClusterTlsFiles> {
        let c = &self.cluster;
        match (&c.tls_cert, &c.tls_key, &c.ca) {
            (Some(cert), Some(key), Some(ca)) => {
                Some(crate::tls::cluster::ClusterTlsFiles { cert: cert.clone(), key: key.clone(), ca: ca.clone() })
            }
            _ => None,
        }
    }

    /// The cluster cookie in effect.
    pub fn cluster_cookie(&self) -> String {
        self.cluster.cookie.clone().unwrap_or_else(|| DEV_COOKIE.to_owned())
    }

    /// The certificate and key files when the node serves TLS itself.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        let (cert, key) = (self.http.tls_cert.clone()?, self.http.tls_key.clone()?);
        Some(crate::tls::TlsFiles { cert, key })
    }

    /// Whether `POST /auth/token` is open without an API key.
    pub fn dev_mode(&self) -> bool {
        self.auth.dev_mode.unwrap_or_else(|| self.http.addr.ip().is_loopback() && self.auth.api_key.is_none())
    }

    /// Checks the configuration; the error names the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::bail;
        if switchboard_cluster::NodeId::parse(&self.node_id).is_err() {
            bail!("node_id {:?}: use 1-64 characters of [A-Za-z0-9._-]", self.node_id);
        }
        let url = self.database_url();
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!("database.url: expected sqlite:... or postgres://...");
        }
        if self.database.max_connections == 0 {
            bail!("database.max_connections must be at least 1");
        }
        if let Some(s) = &self.auth.secret
            && s.len() < 32
        {
            bail!("auth.secret must be at least 32 characters");
        }
        if let Some(k) = &self.auth.api_key
            && k.len() < 16
        {
            bail!("auth.api_key must be at least 16 characters");
        }
        if !self.http.addr.ip().is_loopback() {
            if self.auth.api_key.is_none() || self.auth.secret.is_none() {
                bail!(
                    "http.addr {} is not a loopback address: set auth.api_key and auth.secret \
                     (or SWITCHBOARD_API_KEY and SWITCHBOARD_AUTH_SECRET) before exposing the node",
                    self.http.addr
                );
            }
            if self.auth.dev_mode == Some(true) {
                bail!("auth.dev_mode cannot be on for a node listening on a public address");
            }
        }
        match (&self.http.tls_cert, &self.http.tls_key) {
            (Some(_), None) => bail!("http.tls_key is required when http.tls_cert is set (--tls-key)"),
            (None, Some(_)) => bail!("http.tls_cert is required when http.tls_key is set (--tls-cert)"),
            _ => {}
        }
        // Tokens travel in headers and in the WebSocket URL: on a public address they must not
        // cross the network in clear.
        if !self.http.addr.ip().is_loopback() && self.tls_files().is_none() && !self.http.behind_tls_proxy {
            bail!(
                "http.addr {} is not a loopback address and would serve plain HTTP: set http.tls_cert and \
                 http.tls_key (--tls-cert, --tls-key), or http.behind_tls_proxy = true (--behind-tls-proxy) \
                 when a proxy in front of the node terminates TLS",
                self.http.addr
            );
        }
        for (i, origin) in self.http.allowed_origins.iter().enumerate() {
            crate::http::cors::check_origin(origin).map_err(|m| anyhow::anyhow!("http.allowed_origins[{i}]: {m}"))?;
        }
        if self.auth.token_ttl > self.auth.max_token_ttl || self.auth.token_ttl.is_zero() {
            bail!("auth.token_ttl must be positive and at most auth.max_token_ttl");
        }
        if !self.ice.turn_urls.is_empty() && self.ice.turn_secret.is_none() {
            bail!("ice.turn_secret is required when ice.turn_urls is set");
        }
        let (min, max) = self.turn.relay_ports;
        if min == 0 || min > max {
            bail!("turn.relay_ports must be \"min-max\" with 1 <= min <= max");
        }
        let realm = &self.turn.realm;
        // A STUN REALM is at most 127 characters; quotes would break coturn-style digests.
        if realm.is_empty() || realm.chars().count() > 127 || realm.chars().any(|c| c.is_control() || c == '"') {
            bail!("turn.realm must be 1-127 printable characters without quotes");
        }
        if self.turn.enabled == Some(true) {
            crate::turn::Settings::of(self).map_err(|e| anyhow::anyhow!(e))?;
        }
        if self.rooms.max_participants == 0 {
            bail!("rooms.max_participants must be at least 1");
        }
        if self.limits.max_message_bytes < 1024 {
            bail!("limits.max_message_bytes must be at least 1024");
        }
        if self.limits.max_queued_bytes < self.limits.max_message_bytes {
            bail!("limits.max_queued_bytes must be at least limits.max_message_bytes");
        }
        if self.clustered() {
            if self.cluster.addr.is_none() {
                bail!(
                    "cluster.seeds is set but cluster.addr is not: a member needs its own cluster address (--cluster-addr)"
                );
            }
            if url.starts_with("sqlite:") {
                bail!(
                    "a cluster needs PostgreSQL: set database.url (--database-url postgres://...); \
                     SQLite is one node's file and cannot be shared"
                );
            }
            match &self.cluster.cookie {
                None if !self.dev_mode() => {
                    bail!(
                        "cluster.cookie must be set (or SWITCHBOARD_CLUSTER_COOKIE) outside dev mode; the default is for development only"
                    )
                }
                Some(c) if c.len() < 16 => bail!("cluster.cookie must be at least 16 characters"),
                Some(c) if c == DEV_COOKIE && !self.dev_mode() => {
                    bail!("cluster.cookie: the development cookie is refused outside dev mode")
                }
                _ => {}
            }
            let c = &self.cluster;
            match (&c.tls_cert, &c.tls_key, &c.ca) {
                (None, None, None) if !self.dev_mode() => bail!(
                    "a cluster outside dev mode needs TLS between its nodes: set cluster.tls_cert, cluster.tls_key \
                     and cluster.ca (--cluster-tls-cert, --cluster-tls-key, --cluster-ca; \
                     `switchboard cluster-certs` makes a CA and node certificates); plain links are for dev mode only"
                ),
                (None, None, None) | (Some(_), Some(_), Some(_)) => {}
                _ => bail!("cluster.tls_cert, cluster.tls_key and cluster.ca go together: set all three or none"),
            }
            if self.cluster.lease_ttl < Duration::from_millis(300) {
                bail!("cluster.lease_ttl must be at least 300ms");
            }
            if self.cluster.heartbeat_interval.is_zero()
                || self.cluster.heartbeat_timeout <= self.cluster.heartbeat_interval
            {
                bail!(
                    "cluster.heartbeat_timeout must be longer than cluster.heartbeat_interval (and the interval positive)"
                );
            }
        }
        if let Some(url) = &self.bus.mqtt_url {
            crate::bus::check_url(url).map_err(|e| anyhow::anyhow!("bus.mqtt_url: {e}"))?;
        }
        let name = &self.bus.cluster_name;
        if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            bail!("bus.cluster_name {name:?}: use 1-64 characters of [A-Za-z0-9._-] (it is a topic level)");
        }
        if self.bus.batch == 0 || self.bus.poll_interval.is_zero() {
            bail!("bus.batch and bus.poll_interval must be positive");
        }
        if self.bus.publisher_lease_ttl < Duration::from_millis(300) {
            bail!("bus.publisher_lease_ttl must be at least 300ms");
        }
        for (i, e) in self.webhooks.endpoints.iter().enumerate() {
            crate::webhooks::check_endpoint(&e.url, e.events.as_deref())
                .map_err(|m| anyhow::anyhow!("webhooks.endpoints[{i}].{m}"))?;
            crate::webhooks::signing::key_of(&e.secret)
                .map_err(|m| anyhow::anyhow!("webhooks.endpoints[{i}].secret: {m}"))?;
        }
        if let Some(url) = &self.evidence.url
            && !url.starts_with("s3://")
        {
            bail!("evidence.url must be s3://bucket[/prefix]");
        }
        if let Some(endpoint) = &self.evidence.endpoint
            && endpoint.starts_with("http://")
            && !self.evidence.allow_http
        {
            bail!("evidence.endpoint is plain http: set evidence.allow_http = true to allow it");
        }
        if !matches!(self.snapshots.cv.as_str(), "local" | "bus") {
            bail!("snapshots.cv must be \"local\" or \"bus\"");
        }
        if self.snapshots.claim_timeout < Duration::from_millis(300) {
            bail!("snapshots.claim_timeout must be at least 300ms");
        }
        if self.snapshots.cv_timeout.is_zero() {
            bail!("snapshots.cv_timeout must be positive");
        }
        if self.snapshots.max_image_bytes == 0 || self.snapshots.max_image_bytes > 10 * 1024 * 1024 {
            bail!("snapshots.max_image_bytes must be 1 to 10485760");
        }
        let w = &self.webhooks;
        if w.retry_base.is_zero() || w.retry_max < w.retry_base || w.timeout.is_zero() || w.poll_interval.is_zero() {
            bail!("webhooks: retry_base, timeout and poll_interval must be positive, retry_max at least retry_base");
        }
        if w.lease_ttl < Duration::from_millis(300) {
            bail!("webhooks.lease_ttl must be at least 300ms");
        }
        if self.limits.messages_per_second <= 0.0 || self.limits.burst < 1.0 {
            bail!("limits.messages_per_second must be positive and limits.burst at least 1");
        }
        Ok(())
    }
}

/// Durations as text: `"30s"`, `"1h"`, `"500ms"`.
mod duration_text {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Port ranges as text: `"49152-65535"`.
mod port_range {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<(u16, u16), D::Error> {
        let text = String::deserialize(d)?;
        parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?}: expected \"min-max\", e.g. \"49152-65535\"")))
    }

    pub fn parse(text: &str) -> Option<(u16, u16)> {
        let (min, max) = text.split_once('-')?;
        Some((min.trim().parse().ok()?, max.trim().parse().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_dev_mode_on_loopback() {
        let c = Config::default();
        c.validate().expect("defaults validate");
        assert!(c.dev_mode());
    }

    #[test]
    fn public_address_needs_key_and_secret() {
        let mut c = Config::default();
        c.http.addr = "0.0.0.0:8080".parse().expect("addr");
        let err = c.validate().expect_err("must refuse").to_string();
        assert!(err.contains("auth.api_key"), "{err}");
        c.auth.api_key = Some("k".repeat(20));
        c.auth.secret = Some("s".repeat(40));
        c.http.behind_tls_proxy = true;
        c.validate().expect("valid with key and secret");
        assert!(!c.dev_mode());
    }

    #[test]
    fn a_public_address_needs_tls_or_a_tls_proxy() {
        let mut c = Config::default();
        c.http.addr = "0.0.0.0:8443".parse().expect("addr");
        c.auth.api_key = Some("k".repeat(20));
        c.auth.secret = Some("s".repeat(40));
        let err = c.validate().expect_err("plain HTTP refused").to_string();
        assert!(
            err.contains("plain HTTP") && err.contains("http.tls_cert") && err.contains("behind_tls_proxy"),
            "{err}"
        );
        c.http.tls_cert = Some("cert.pem".into());
        c.http.tls_key = Some("key.pem".into());
        c.validate().expect("valid with TLS (the files are read at start)");
        c.http.tls_cert = None;
        c.http.tls_key = None;
        c.http.behind_tls_proxy = true;
        c.validate().expect("valid behind a TLS proxy");
        // Loopback needs neither.
        Config::default().validate().expect("loopback");
    }

    #[test]
    fn tls_cert_and_key_go_together() {
        let mut c = Config::default();
        c.http.tls_cert = Some("cert.pem".into());
        assert!(c.validate().expect_err("no key").to_string().contains("http.tls_key"));
        assert!(c.tls_files().is_none());
        c.http.tls_cert = None;
        c.http.tls_key = Some("key.pem".into());
        assert!(c.validate().expect_err("no cert").to_string().contains("http.tls_cert"));
        c.http.tls_cert = Some("cert.pem".into());
        c.validate().expect("both");
        let files = c.tls_files().expect("tls");
        assert_eq!((files.cert, files.key), (PathBuf::from("cert.pem"), PathBuf::from("key.pem")));
    }

    #[test]
    fn allowed_origins_are_exact_origins() {
        let text = "[http]\nallowed_origins = [\"https://app.example.com\", \"http://localhost:3000\"]\n\
                    behind_tls_proxy = true\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n";
        let c: Config = toml::from_str(text).expect("parse");
        c.validate().expect("valid");
        assert_eq!(c.http.allowed_origins.len(), 2);
        assert!(c.http.behind_tls_proxy);
        assert_eq!(c.http.tls_key.as_deref(), Some(Path::new("k.pem")));
        for bad in ["https://app.example.com/", "app.example.com", "*", "https://APP.example.com"] {
            let mut c = Config::default();
            c.http.allowed_origins = vec!["https://ok.example.com".into(), bad.into()];
            let err = c.validate().expect_err(bad).to_string();
            assert!(err.contains("http.allowed_origins[1]"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_example_file_parses_to_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
        let c = Config::from_file(&path).expect("example parses");
        c.validate().expect("example validates");
        let d = Config::default();
        assert_eq!(c.http.addr, d.http.addr);
        assert_eq!(c.limits.max_message_bytes, d.limits.max_message_bytes);
        assert_eq!(c.limits.max_queued_bytes, d.limits.max_queued_bytes);
        assert_eq!(c.rooms.idle_timeout, d.rooms.idle_timeout);
        assert_eq!(c.auth.token_ttl, d.auth.token_ttl);
        assert_eq!(c.http.allowed_origins, d.http.allowed_origins);
        assert_eq!(c.http.behind_tls_proxy, d.http.behind_tls_proxy);
        assert!(c.http.tls_cert.is_none() && c.http.tls_key.is_none());
        assert_eq!(c.turn.relay_ports, d.turn.relay_ports);
        assert_eq!(c.turn.realm, d.turn.realm);
        assert_eq!(c.turn.enabled, d.turn.enabled);
        assert_eq!(c.turn.allocations_per_user, d.turn.allocations_per_user);
        assert_eq!((c.lobby.wait, c.lobby.grace), (d.lobby.wait, d.lobby.grace));
        let (a, b) = (&c.appointments, &d.appointments);
        assert_eq!(
            (a.join_window, a.noshow_after, a.sweep_interval),
            (b.join_window, b.noshow_after, b.sweep_interval)
        );
    }

    #[test]
    fn clusters_need_postgres_and_a_cookie() {
        let mut c = Config::default();
        c.cluster.addr = Some("127.0.0.1:7001".parse().expect("addr"));
        let err = c.validate().expect_err("sqlite refused").to_string();
        assert!(err.contains("PostgreSQL"), "{err}");
        c.database.url = Some("postgres://postgres@127.0.0.1/test".into());
        c.validate().expect("dev mode accepts the dev cookie");
        c.auth.dev_mode = Some(false);
        let err = c.validate().expect_err("cookie required").to_string();
        assert!(err.contains("cluster.cookie"), "{err}");
        c.cluster.cookie = Some("a-long-enough-cluster-cookie".into());
        let err = c.validate().expect_err("TLS required outside dev mode").to_string();
        assert!(err.contains("cluster.tls_cert") && err.contains("--cluster-ca"), "{err}");
        c.cluster.tls_cert = Some("node.pem".into());
        let err = c.validate().expect_err("all three").to_string();
        assert!(err.contains("go together"), "{err}");
        c.cluster.tls_key = Some("node-key.pem".into());
        c.cluster.ca = Some("ca.pem".into());
        c.validate().expect("valid");
        let mut s = Config::default();
        s.cluster.seeds = vec!["127.0.0.1:7001".into()];
        assert!(s.validate().expect_err("no addr").to_string().contains("cluster.addr"));
    }

    #[test]
    fn turn_is_on_for_a_single_node_and_off_in_a_cluster() {
        let mut c = Config::default();
        assert!(c.turn_enabled());
        c.cluster.addr = Some("127.0.0.1:7001".parse().expect("addr"));
        assert!(!c.turn_enabled());
        c.turn.enabled = Some(true);
        assert!(c.turn_enabled());
    }

    #[test]
    fn turn_keys_are_checked() {
        let c: Config = toml::from_str("[turn]\nrelay_ports = \"40000-40100\"\n").expect("parse");
        assert_eq!(c.turn.relay_ports, (40000, 40100));
        assert!(toml::from_str::<Config>("[turn]\nrelay_ports = \"40000\"\n").is_err());
        assert!(toml::from_str::<Config>("[turn]\nrelay_ports = \"1-70000\"\n").is_err());
        let mut c = Config::default();
        c.turn.relay_ports = (500, 400);
        assert!(c.validate().expect_err("reversed").to_string().contains("turn.relay_ports"));
        let mut c = Config::default();
        c.turn.realm = String::new();
        assert!(c.validate().expect_err("empty").to_string().contains("turn.realm"));
        // A wildcard listen address needs a relay address to tell clients.
        let mut c = Config::default();
        c.turn.enabled = Some(true);
        c.turn.listen = Some("0.0.0.0:3478".parse().expect("addr"));
        assert!(c.validate().expect_err("no relay address").to_string().contains("turn.relay_address"));
        c.turn.relay_address = Some("203.0.113.7".parse().expect("ip"));
        c.validate().expect("valid with a relay address");
    }

    #[test]
    fn toml_overrides_and_unknown_keys_fail() {
        let c: Config = toml::from_str("[rooms]\nmax_participants = 2\nidle_timeout = \"5s\"\n").expect("parse");
        assert_eq!(c.rooms.max_participants, 2);
        assert_eq!(c.rooms.idle_timeout, Duration::from_secs(5));
        assert!(toml::from_str::<Config>("[rooms]\nmax_people = 2\n").is_err());
    }
}
