//! Command line: `serve`, `migrate`, `token`, `dev-cert`, `bench`, `cv-compare`,
//! `verify-report`, `cv-worker`. Flags override environment variables, which override the config file, which
//! overrides the defaults.

use crate::auth::{Authority, Grants, MintRequest, load_or_create_secret};
use crate::config::Config;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Switchboard: the control plane of realtime calls.
#[derive(Parser, Debug)]
#[command(name = "switchboard", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node.
    Serve(Common),
    /// Run database migrations and exit.
    Migrate(Common),
    /// Load generators behind docs/benchmarks.md (each starts its own node).
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        which: BenchKind,
    },
    /// Compare a snapshot with its baseline (SSIM, regions, verdict) and print the result as
    /// JSON; `--repeat N` times it (docs/cv.md).
    CvCompare {
        /// The snapshot (PNG or JPEG).
        snapshot: Option<PathBuf>,
        /// Its baseline.
        baseline: Option<PathBuf>,
        /// A generated pair of this size instead of files, e.g. `1280x720`.
        #[arg(long)]
        synthetic: Option<String>,
        /// Write the heatmap PNG here.
        #[arg(long)]
        heatmap: Option<PathBuf>,
        /// Time decode and compare this many times (one core).
        #[arg(long, default_value_t = 0)]
        repeat: u32,
    },
    /// Run a CV worker: take snapshot comparisons from the event bus, answer with the results.
    CvWorker {
        /// The broker, `mqtt://host:port`.
        #[arg(long, env = "SWITCHBOARD_MQTT_URL")]
        mqtt_url: String,
        /// The cluster's name in topics (`bus.cluster_name` of its nodes).
        #[arg(long, default_value = "default")]
        cluster: String,
        /// This worker's name in results (default: `cv-` and the process id).
        #[arg(long)]
        name: Option<String>,
    },
    /// Check a signed report: its artifacts' CIDs, its signature and its link in the room's
    /// chain (a URL fetches all of it from the node; a file needs `--key-set`).
    VerifyReport {
        /// A report file, or `http://node/reports/{id}`.
        target: String,
        /// The key set (the node's `/.well-known/switchboard-keys.json`) as a file.
        #[arg(long)]
        key_set: Option<PathBuf>,
        /// A token that may read the room (artifacts and chain of a URL).
        #[arg(long, env = "SWITCHBOARD_TOKEN")]
        token: Option<String>,
    },
    /// Write a self-signed certificate for localhost, 127.0.0.1 and ::1 (`cert.pem` and
    /// `key.pem`), to try HTTPS and WSS on this machine.
    DevCert {
        /// The folder to write them to.
        #[arg(long, default_value = "./data/tls")]
        out: PathBuf,
        /// Replace files that exist.
        #[arg(long)]
        force: bool,
    },
    /// Write a cluster CA (`ca.pem`, `ca-key.pem`) and a certificate and key per node
    /// (`NODE.pem`, `NODE-key.pem`) for mutual TLS between the nodes.
    ClusterCerts {
        /// The folder to write them to.
        #[arg(long, default_value = "./data/cluster-tls")]
        out: PathBuf,
        /// Node ids, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<String>,
        /// Replace files that exist.
        #[arg(long)]
        force: bool,
    },
    /// Mint a token offline with the node's signing secret.
    Token {
        /// Config options.
        #[command(flatten)]
        common: Common,
        /// The user (token subject).
        #[arg(long)]
        user: String,
        /// Restrict the token to one room.
        #[arg(long)]
        room: Option<String>,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. `1h`, `15m`.
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        /// Grant admin rights.
        #[arg(long)]
        admin: bool,
    },
}

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchKind {
    /// Open-loop relay of offers A→B (1.5 KB SDP) at fixed rates: latency and CPU per message.
    Relay {
        /// Rooms of two.
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        /// Aggregate offers per second; several (comma-separated) run one after another.
        #[arg(long, value_delimiter = ',', default_value = "20000")]
        rate: Vec<u64>,
        /// Duration of each run in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Offers carry an `id` (acknowledged).
        #[arg(long)]
        ids: bool,
        /// Offers ask for a delivery receipt (implies --ids).
        #[arg(long)]
        receipts: bool,
        /// A and B on two nodes of a cluster (pass `-- --database-url postgres://...`).
        #[arg(long)]
        cross_node: bool,
        /// Shared options.
        #[command(flatten)]
        common: BenchCommon,
    },
    /// Closed-loop relay: the most offers per second the node relays.
    Throughput {
        /// Rooms of two.
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        /// Offers in flight per pair.
        #[arg(long, default_value_t = 4)]
        window: usize,
        /// Duration in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Shared options.
        #[command(flatten)]
        common: BenchCommon,
    },
    /// Chat fan-out in one big room: deliveries per second.
    Fanout {
        /// Members of the room.
        #[arg(long, default_value_t = 50)]
        room_size: usize,
        /// Chat messages per second (each goes to every member).
        #[arg(long, default_value_t = 500)]
        rate: u64,
        /// Duration in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Shared options.
        #[command(flatten)]
        common: BenchCommon,
    },
    /// Join latency (WebSocket open → `joined`) at a fixed rate of new clients.
    Join {
        /// Joins per second.
        #[arg(long, default_value_t = 500)]
        rate: u64,
        /// Duration in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Shared options.
        #[command(flatten)]
        common: BenchCommon,
    },
    /// Lobby pairing latency (`lobby_join` → `paired` when a partner is waiting) at a fixed
    /// rate of arrivals in one lobby.
    Lobby {
        /// Arrivals per second.
        #[arg(long, default_value_t = 200)]
        rate: u64,
        /// Duration in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Shared options.
        #[command(flatten)]
        common: BenchCommon,
    },
    /// The cluster at scale: nodes on this machine, rooms with one participant per node;
    /// join latency, ownership writes, memory per node, and failover after kill -9 and SIGSTOP
    /// (pass `-- --database-url postgres://...`).
    Scale {
        /// Nodes (at least 3).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Rooms, each with one participant on every node.
        #[arg(long, default_value_t = 10_000)]
        rooms: usize,
        /// Shared options.
        #[command(flatten)]
        common: BenchCommon,
    },
    /// One client process of `bench scale` (started by it).
    #[command(hide = true)]
    ScaleClients {
        /// The node to connect to.
        #[arg(long)]
        server: SocketAddr,
        /// Rooms to join.
        #[arg(long)]
        rooms: usize,
        /// Users are `TAG-<room>`.
        #[arg(long)]
        tag: String,
        /// Loopback source addresses.
        #[arg(long, default_value_t = 4)]
        sources: usize,
        /// Rooms are `PREFIX<n>`.
        #[arg(long, default_value = "scale-")]
        room_prefix: String,
        /// The nodes' token secret (default: the benchmark's own).
        #[arg(long, env = "SWITCHBOARD_BENCH_SECRET", hide_env_values = true)]
        secret: Option<String>,
    },
    /// Server memory per idle joined WebSocket connection.
    Idle {
        /// Connections to open; several (comma-separated) run one after another.
        #[arg(long, value_delimiter = ',', default_value = "10000")]
        connections: Vec<usize>,
        /// Participants per room.
        #[arg(long, default_value_t = 2)]
        room_size: usize,
        /// Connect only, without joining (the cost of the connection alone).
        #[arg(long)]
        no_join: bool,
        /// Shared options.
        #[command(flatten)]
        common: BenchCommon,
    },
    /// Snapshot latency: POST of a PNG → `snapshot_ready` at another participant, open loop.
    Snapshot {
        /// Snapshots per second.
        #[arg(long, default_value_t = 5.0)]
        rate: f64,
        /// Duration in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Image width.
        #[arg(long, default_value_t = 1280)]
        width: u32,
        /// Image height.
        #[arg(long, default_value_t = 720)]
        height: u32,
        /// Shared options.
        #[command(flatten)]
        common: BenchCommon,
    },
    /// Outbox publish lag: joins and leaves at a fixed rate, events read from the broker.
    Events {
        /// Joins (each with its leave) per second.
        #[arg(long, default_value_t = 100)]
        rate: u64,
        /// Duration in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The broker the node publishes to and the benchmark reads from.
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        mqtt_url: String,
        /// Shared options.
        #[command(flatten)]
        common: BenchCommon,
    },
    /// Every benchmark with a target, in one run (relay at 5k/20k/50k per second, with ids,
    /// across nodes when PostgreSQL is given, throughput, fan-out, joins, idle memory).
    Suite {
        /// Duration of each timed run in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Also measure idle memory at 50,000 connections.
        #[arg(long)]
        big: bool,
        /// Shared options.
        #[command(flatten)]
        common: BenchCommon,
    },
}

/// Options every benchmark takes.
#[derive(Args, Debug, Clone)]
pub struct BenchCommon {
    /// Loopback source addresses to spread connections over (127.0.0.1, .2, ...).
    #[arg(long, default_value_t = 4)]
    pub sources: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Extra `serve` flags for the node under test, e.g. `-- --database-url postgres://...`.
    #[arg(last = true)]
    pub serve: Vec<String>,
}

/// Options every subcommand takes.
#[derive(Args, Debug)]
pub struct Common {
    /// TOML config file (see config/example.toml).
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP and WebSocket listen address.
    #[arg(long, env = "SWITCHBOARD_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Data directory (SQLite file, generated secret).
    #[arg(long, env = "SWITCHBOARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://...` or `postgres://...`.
    #[arg(long, env = "SWITCHBOARD_DATABASE_URL")]
    pub database_url: Option<String>,
    /// This node's id.
    #[arg(long, env = "SWITCHBOARD_NODE_ID")]
    pub node_id: Option<String>,
    /// Cluster listener address; makes this node a cluster member.
    #[arg(long, env = "SWITCHBOARD_CLUSTER_ADDR")]
    pub cluster_addr: Option<std::net::SocketAddr>,
    /// Where this node takes node links (relayed messages between nodes); default: the
    /// cluster address's host, any free port.
    #[arg(long, env = "SWITCHBOARD_CLUSTER_LINK_ADDR")]
    pub cluster_link_addr: Option<std::net::SocketAddr>,
    /// Cluster members to dial, comma-separated `host:port`.
    #[arg(long, env = "SWITCHBOARD_SEEDS", value_delimiter = ',')]
    pub seeds: Option<Vec<String>>,
    /// This node's certificate for the links between nodes (PEM), issued by --cluster-ca.
    #[arg(long, env = "SWITCHBOARD_CLUSTER_TLS_CERT")]
    pub cluster_tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "SWITCHBOARD_CLUSTER_TLS_KEY")]
    pub cluster_tls_key: Option<PathBuf>,
    /// The cluster's CA certificate (PEM): only nodes with a certificate it issued are linked.
    #[arg(long, env = "SWITCHBOARD_CLUSTER_CA")]
    pub cluster_ca: Option<PathBuf>,
    /// The event bus's MQTT broker, `mqtt://host:port` (default: one embedded in the node).
    #[arg(long, env = "SWITCHBOARD_MQTT_URL")]
    pub mqtt_url: Option<String>,
    /// PEM certificate chain: the node serves HTTPS and WSS (with --tls-key; SIGHUP reloads both).
    #[arg(long, env = "SWITCHBOARD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// A proxy in front of the node terminates TLS: plain HTTP on a public address is allowed.
    #[arg(long, env = "SWITCHBOARD_BEHIND_TLS_PROXY")]
    pub behind_tls_proxy: bool,
    /// Run the embedded TURN server, `true` or `false` (default: on for a single node).
    #[arg(long, env = "SWITCHBOARD_TURN_ENABLED")]
    pub turn_enabled: Option<bool>,
    /// The embedded TURN server's UDP and TCP address (port 0: any free port).
    #[arg(long, env = "SWITCHBOARD_TURN_LISTEN")]
    pub turn_listen: Option<SocketAddr>,
}

impl Common {
    /// Defaults, then the file, then secret env vars, then flags and their env vars.
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config.apply_secret_env();
        if let Some(v) = self.http_addr {
            config.http.addr = v;
        }
        if let Some(v) = &self.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = &self.database_url {
            config.database.url = Some(v.clone());
        }
        if let Some(v) = &self.node_id {
            config.node_id = v.clone();
        }
        if let Some(v) = self.cluster_addr {
            config.cluster.addr = Some(v);
        }
        if let Some(v) = self.cluster_link_addr {
            config.cluster.link_addr = Some(v);
        }
        if let Some(v) = &self.seeds {
            config.cluster.seeds = v.iter().filter(|s| !s.is_empty()).cloned().collect();
        }
        let path = |v: &PathBuf| Some(v.clone()).filter(|p| !p.as_os_str().is_empty());
        if let Some(v) = &self.cluster_tls_cert {
            config.cluster.tls_cert = path(v);
        }
        if let Some(v) = &self.cluster_tls_key {
            config.cluster.tls_key = path(v);
        }
        if let Some(v) = &self.cluster_ca {
            config.cluster.ca = path(v);
        }
        if let Some(v) = &self.mqtt_url {
            config.bus.mqtt_url = Some(v.clone()).filter(|u| !u.is_empty());
        }
        if let Some(v) = &self.tls_cert {
            config.http.tls_cert = Some(v.clone()).filter(|p| !p.as_os_str().is_empty());
        }
        if let Some(v) = &self.tls_key {
            config.http.tls_key = Some(v.clone()).filter(|p| !p.as_os_str().is_empty());
        }
        if self.behind_tls_proxy {
            config.http.behind_tls_proxy = true;
        }
        if let Some(v) = self.turn_enabled {
            config.turn.enabled = Some(v);
        }
        if let Some(v) = self.turn_listen {
            config.turn.listen = Some(v);
        }
        config.validate()?;
        Ok(config)
    }
}

/// `switchboard token`: prints a token.
pub fn mint_offline(config: &Config, req: MintRequest) -> anyhow::Result<String> {
    let secret = load_or_create_secret(&config.auth, &config.data_dir)?;
    let (token, _) = Authority::new(&secret, &config.auth).mint(req).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(token)
}

/// Builds the mint request of `switchboard token`.
pub fn token_request(
    user: String,
    room: Option<String>,
    name: Option<String>,
    ttl: humantime::Duration,
    admin: bool,
) -> MintRequest {
    MintRequest {
        user_id: user,
        room_id: room,
        name,
        ttl: Some(ttl.into()),
        grants: Some(Grants { room_admin: admin, ..Grants::default() }),
    }
}
