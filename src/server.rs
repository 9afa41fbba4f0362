//! Starting and stopping a node: store, actors, HTTP listener (plain, or TLS with its
//! certificate reloaded on SIGHUP), and the graceful shutdown that closes sessions and calls
//! in the store and tells every client why its socket closes.

use crate::app::{App, AppParts, Successor};
use crate::auth::{Authority, load_or_create_secret, load_or_create_turn_secret, secret_fingerprint};
use crate::bus::Bus;
use crate::bus::broker::EmbeddedBroker;
use crate::bus::outbox_publisher::{OutboxPublisher, PublisherSettings};
use crate::config::Config;
use crate::edge::connection::close_code;
use crate::edge::edge_router::EdgeRouter;
use crate::evidence::report::NodeKey;
use crate::evidence::{BucketEvidence, BucketOptions, EvidenceStore};
use crate::singleton::Singleton;
use crate::snapshots::{RemoteCv, SnapshotWorker, WorkerSettings};
use crate::store::Store;
use crate::turn::TurnServer;
use crate::webhooks::dispatcher::{Dispatcher, DispatcherSettings};
use crate::{http, telemetry, tls, turn};
use axum::serve::ListenerExt;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use ractor::Actor;
use ractor::ActorRef;
use ractor::rpc::CallResult;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use switchboard_actors::ConnId;
use switchboard_actors::node_lease::NodeLease;
use switchboard_actors::ports::{RoomPolicy, RoomStore};
use switchboard_actors::quality::FallbackPolicy;
use switchboard_actors::restart_policy::RestartPolicy;
use switchboard_actors::room::{LeaseSettings, RoomConfig, RoomContext};
use switchboard_actors::room_supervisor::{RoomSupervisor, RoomSupervisorArgs, RoomSupervisorMsg};
use switchboard_cluster::link::Receiver;
use switchboard_cluster::node_agent::HelloSource;
use switchboard_cluster::node_agent::{AgentMsg, agent_group};
use switchboard_cluster::routing::{
    EdgeLinkArgs, EdgeMsg, HostMsg, Moved, Paired, Reroute, RoomHost, RoomHostArgs, SetGrants, ToUser, host_group,
    node_of,
};
use switchboard_cluster::wire::Bincode;
use switchboard_cluster::{Cluster, ClusterConfig, LiveView, NodeHello, NodeId};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A node that is serving.
pub struct RunningServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its shared state (tests reach the actors through it).
    pub app: Arc<App>,
    stop_http: Option<oneshot::Sender<()>>,
    http: JoinHandle<std::io::Result<()>>,
    tls_reload: Option<JoinHandle<()>>,
    beats: Option<JoinHandle<()>>,
    upkeep: JoinHandle<()>,
    /// Marks appointments nobody came to as no-shows.
    appointments: JoinHandle<()>,
    publisher: Option<Singleton>,
    dispatcher: Option<Singleton>,
    snapshots: Option<SnapshotWorker>,
    cv_workers: Option<tokio::sync::watch::Sender<bool>>,
    broker: Option<EmbeddedBroker>,
    turn: Option<TurnServer>,
}

/// Opens the store and runs migrations, nothing else (`switchboard migrate`).
pub async fn migrate(config: &Config) -> anyhow::Result<Store> {
    if config.database.url.is_none() {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", config.data_dir.display()))?;
    }
    Store::open(&config.database_url(), config.database.max_connections, &config.node_id).await
}

/// Tunes every accepted socket (HTTP and WebSocket alike). Small frames must leave at once:
/// without `TCP_NODELAY`, Nagle's algorithm holds each one back until the peer's delayed ACK,
/// which costs tens of milliseconds per frame at high message rates.
fn tune_accepted(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
}

/// The first step of accepting a TLS connection: the socket is tuned like a plain one
/// (`tune_accepted`) before its handshake, which then runs in the connection's own task.
#[derive(Clone, Copy, Debug)]
struct Tuned;

impl<S> axum_server::accept::Accept<tokio::net::TcpStream, S> for Tuned {
    type Stream = tokio::net::TcpStream;
    type Service = S;
    type Future = std::future::Ready<std::io::Result<(Self::Stream, S)>>;

    fn accept(&self, mut stream: tokio::net::TcpStream, service: S) -> Self::Future {
        tune_accepted(&mut stream);
        std::future::ready(Ok((stream, service)))
    }
}

/// Reloads the certificate on SIGHUP (on Unix). A handler that cannot be installed is an
/// error in the log: a SIGHUP would then keep its default effect and end the process.
fn reload_on_hangup(files: tls::TlsFiles, serving: RustlsConfig) -> Option<JoinHandle<()>> {
    #[cfg(unix)]
    match tls::reload_on_hangup(files, serving) {
        Ok(task) => Some(task),
        Err(e) => {
            tracing::error!(error = %e, "no SIGHUP handler: the tls certificate cannot be reloaded without a restart");
            None
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (files, serving);
        None
    }
}

/// Serves `router` on `listener` until `stop` fires, then lets open requests finish (within
/// the shutdown grace, which `shutdown` also bounds); with `tls`, every connection is TLS.
fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<RustlsConfig>,
    grace: Duration,
    stop: oneshot::Receiver<()>,
) -> std::io::Result<JoinHandle<std::io::Result<()>>> {
    let Some(tls) = tls else {
        let listener = listener.tap_io(tune_accepted);
        return Ok(tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.await;
                })
                .await
        }));
    };
    // axum-server rather than `axum::serve` with a TLS listener: it runs each handshake in
    // the connection's task, where a listener's `accept` would make every new client wait
    // for the handshake of the one before. It keeps hyper's upgrades, which WebSockets need.
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp(listener.into_std()?)?
        .acceptor(RustlsAcceptor::new(tls).acceptor(Tuned))
        .handle(handle.clone());
    Ok(tokio::spawn(async move {
        let serving = server.serve(router.into_make_service());
        tokio::pin!(serving);
        tokio::select! {
            done = &mut serving => done,
            _ = stop => {
                handle.graceful_shutdown(Some(grace));
                serving.await
            }
        }
    }))
}

/// The event bus: the configured broker, or one embedded in this node.
async fn start_bus(config: &Config) -> anyhow::Result<(Option<EmbeddedBroker>, Bus)> {
    let (broker, url) = match &config.bus.mqtt_url {
        Some(url) => (None, url.clone()),
        None => {
            if config.clustered() {
                tracing::warn!("bus.mqtt_url is not set: each node of this cluster embeds its own broker");
            }
            let broker = EmbeddedBroker::start(config.bus.embedded_listen).await?;
            let url = broker.url();
            (Some(broker), url)
        }
    };
    let client_id = format!("switchboard-{}-{}", config.node_id, &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let bus = Bus::connect(&url, &client_id).map_err(|e| anyhow::anyhow!("bus.mqtt_url: {e}"))?;
    Ok((broker, bus))
}

/// How the snapshot jobs run, and with `snapshots.cv = "bus"` the CV workers this node runs
/// itself (stopped through the returned sender).
fn snapshot_settings(app: &Arc<App>) -> (WorkerSettings, Option<tokio::sync::watch::Sender<bool>>) {
    let c = &app.config.snapshots;
    let cluster = &app.config.bus.cluster_name;
    let mut settings = WorkerSettings { stale_after: c.claim_timeout, ..WorkerSettings::default() };
    let mut stop_workers = None;
    if c.cv == "bus" {
        settings.remote = Some(RemoteCv::new(app.bus.clone(), cluster, c.cv_timeout));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        for n in 0..c.local_cv_workers {
            let name = format!("{}-cv{n}", app.config.node_id);
            tokio::spawn(crate::cv_worker::run(app.bus.clone(), cluster.clone(), name, stopped.clone()));
        }
        stop_workers = Some(stop);
    }
    (settings, stop_workers)
}

/// Binds the embedded TURN server's sockets when it is to run, and puts its URLs and shared
/// secret into the ICE servers this node hands out (the config in effect is what the node
/// serves from). On by default, a server that cannot start is a warning (the node serves
/// without it); asked for with `turn.enabled = true`, it is an error.
async fn bind_turn(config: &mut Config) -> anyhow::Result<Option<(turn::Bound, String)>> {
    if !config.turn_enabled() {
        return Ok(None);
    }
    let bound = match turn::Settings::of(config) {
        Ok(settings) => {
            let listen = settings.listen;
            turn::Bound::bind(settings).await.map_err(|e| format!("turn.listen {listen}: {e}"))
        }
        Err(e) => Err(e),
    };
    let bound = match bound {
        Ok(bound) => bound,
        Err(e) if config.turn.enabled == Some(true) => anyhow::bail!(e),
        Err(e) => {
            tracing::warn!(error = %e, "embedded turn server not started; set turn.enabled = false to run without it");
            return Ok(None);
        }
    };
    let secret = load_or_create_turn_secret(&config.ice, &config.data_dir)?;
    config.ice.turn_secret = Some(secret.clone());
    config.ice.turn_urls.extend(bound.urls());
    Ok(Some((bound, secret)))
}

/// Registers the config file's webhook endpoints and starts the dispatcher (when enabled).
async fn start_webhooks(app: &App) -> anyhow::Result<Option<Singleton>> {
    let w = &app.config.webhooks;
    crate::webhooks::register_configured(&app.store, &w.endpoints).await?;
    if !w.dispatch {
        return Ok(None);
    }
    let settings = DispatcherSettings {
        poll_interval: w.poll_interval,
        retry_base: w.retry_base,
        retry_max: w.retry_max,
        retry_for: w.retry_for,
        timeout: w.timeout,
    };
    let work = Dispatcher::new(settings)?;
    let lease = crate::webhooks::dispatcher::LEASE;
    Ok(Some(Singleton::spawn(app.store.clone(), lease, app.config.node_id.clone(), w.lease_ttl, work)))
}

/// Stops what a start that failed part-way had set up: the rooms, the bus, the embedded broker
/// and the database pool.
async fn abandon_start(rooms: &ActorRef<RoomSupervisorMsg>, bus: &Bus, broker: Option<EmbeddedBroker>, store: &Store) {
    rooms.stop(None);
    bus.shutdown().await;
    if let Some(broker) = broker {
        broker.stop().await;
    }
    store.close().await;
}

/// Starts a node on an already bound listener.
pub async fn start(mut config: Config, listener: TcpListener) -> anyhow::Result<RunningServer> {
    config.validate()?;
    // Two rustls crypto providers are in the tree (ring, aws-lc-rs): choose one for the process,
    // or TLS clients that ask for the default (the evidence bucket's) would panic.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The certificate is read first: a node that cannot serve what it was told to stops
    // before it has touched anything.
    let tls = match config.tls_files() {
        Some(files) => {
            let serving = RustlsConfig::from_config(files.load()?);
            Some((files, serving))
        }
        None => None,
    };
    let started = Instant::now();
    let metrics = telemetry::metrics();
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", config.data_dir.display()))?;
    let secret = load_or_create_secret(&config.auth, &config.data_dir)?;
    let authority = Authority::new(&secret, &config.auth);
    let turn_bound = bind_turn(&mut config).await?;
    let store = migrate(&config).await?;
    // Sessions of a crashed run stay open: in a cluster the room's next owner takes them over
    // (the orphan sweep), on a single node the rooms start again here at once (below); either
    // way they can still resume within their grace period. Calls nobody is in any more end.
    let (sessions, calls) = store.reconcile(false).await?;
    if sessions + calls > 0 {
        tracing::warn!(sessions, calls, "closed sessions and calls left open by an earlier run");
    }
    let edge = Arc::new(EdgeRouter::new(&config.node_id));
    let live_rooms = Arc::new(AtomicUsize::new(0));
    let node_lease = Arc::new(NodeLease::new());
    let nodes = Arc::new(crate::placement::NodeView::default());
    let ctx = Arc::new(RoomContext {
        store: Arc::new(store.clone()),
        edge: edge.clone(),
        config: RoomConfig {
            default_policy: RoomPolicy { max_participants: config.rooms.max_participants, invitees: None },
            chat_history: config.rooms.chat_history,
            idle_timeout: config.rooms.idle_timeout,
            resume_grace: config.rooms.resume_grace,
            fallback: FallbackPolicy {
                fallback_after: config.rooms.fallback_after,
                recover_after: config.rooms.recover_after,
            },
            lease: config.clustered().then(|| LeaseSettings {
                node_id: config.node_id.clone(),
                lease: node_lease.clone(),
                check_every: crate::node_lease::room_check_every(config.cluster.lease_ttl),
            }),
        },
        live_rooms: live_rooms.clone(),
    });
    let (broker, bus) = match start_bus(&config).await {
        Ok(started) => started,
        Err(e) => {
            store.close().await;
            return Err(e);
        }
    };
    let (rooms, _) =
        Actor::spawn(None, RoomSupervisor, RoomSupervisorArgs { ctx, policy: RestartPolicy::default() }).await?;
    let addr = listener.local_addr()?;
    let link_listener = match config.cluster.addr {
        Some(cluster) => {
            let at = config.cluster.link_addr.unwrap_or(SocketAddr::new(cluster.ip(), 0));
            let bound =
                TcpListener::bind(at).await.map_err(|e| anyhow::anyhow!("cannot bind the node link on {at}: {e}"));
            match bound {
                Ok(bound) => Some(bound),
                Err(e) => {
                    abandon_start(&rooms, &bus, broker, &store).await;
                    return Err(e);
                }
            }
        }
        None => None,
    };
    let link_addr = link_listener.as_ref().and_then(|l| l.local_addr().ok());
    let hello = hello_source(&config, &secret, addr, link_addr, &edge, &live_rooms);
    let cluster = match start_cluster(&config, hello.clone(), &store, &node_lease, &nodes).await {
        Ok(cluster) => cluster,
        Err(e) => {
            abandon_start(&rooms, &bus, broker, &store).await;
            return Err(e);
        }
    };
    let cluster_addr = cluster.as_ref().map(|c| c.addr().to_string());
    let draining = Arc::new(AtomicBool::new(false));
    let app_cell: Arc<std::sync::OnceLock<std::sync::Weak<App>>> = Arc::default();
    let successor = successor_of(&config.node_id, cluster.as_ref().map(Cluster::live_view), app_cell.clone());
    if let (Some(cluster), Some(link_listener)) = (&cluster, link_listener) {
        // Other nodes reach this node's rooms and connections through the room host (calls
        // that wait for an answer) and the node link (everything else).
        let links = cluster.links();
        edge.link_up(links.clone());
        let host = Arc::new(RoomHostArgs {
            node_id: config.node_id.clone(),
            rooms: rooms.clone(),
            edge: edge.clone(),
            draining: draining.clone(),
            successor: successor.clone(),
            links: links.clone(),
        });
        Actor::spawn(None, RoomHost, host.clone()).await?;
        let local = edge.clone();
        let reroute: Reroute = Arc::new(move |conn, room, hint, msg| local.reroute(&conn, room, hint, msg));
        let local = edge.clone();
        let moved: Moved = Arc::new(move |conn, room, node, epoch| local.moved(&conn, room, node, epoch));
        let local = edge.clone();
        let paired: Paired = Arc::new(move |conn, lobby, room| local.paired(&conn, &lobby, &room));
        let local = edge.clone();
        let to_user: ToUser = Arc::new(move |user, body| local.to_local_user(&user, &body));
        let local = edge.clone();
        let grants: SetGrants = Arc::new(move |conn, grants| {
            local.set_local_grants(&conn, &grants);
        });
        let link = Arc::new(EdgeLinkArgs {
            node_id: config.node_id.clone(),
            edge: edge.clone(),
            reroute,
            moved,
            paired,
            to_user,
            grants,
        });
        links.serve(link_listener, Receiver { host, edge: link });
    }
    let evidence = match &config.evidence.url {
        Some(url) => {
            let options = BucketOptions {
                url: url.clone(),
                endpoint: config.evidence.endpoint.clone(),
                region: config.evidence.region.clone(),
                allow_http: config.evidence.allow_http,
                credentials: config.evidence.access_key_id.clone().zip(config.evidence.secret_access_key.clone()),
            };
            EvidenceStore::Bucket(BucketEvidence::new(&options).map_err(|e| anyhow::anyhow!("{e}"))?)
        }
        None => EvidenceStore::local(&config.data_dir.join("evidence"))
            .map_err(|e| anyhow::anyhow!("evidence store under {}: {e}", config.data_dir.display()))?,
    };
    let signing_key = match &config.evidence.signing_key_file {
        Some(path) => {
            NodeKey::load(path).map_err(|e| anyhow::anyhow!("evidence.signing_key_file {}: {e}", path.display()))?
        }
        None => NodeKey::load_or_create(&config.data_dir)
            .map_err(|e| anyhow::anyhow!("report signing key under {}: {e}", config.data_dir.display()))?,
    };
    store.put_signing_key(signing_key.kid(), &config.node_id, &signing_key.public_jwk()).await?;
    let app = Arc::new(App::new(AppParts {
        config,
        authority,
        store,
        rooms,
        edge,
        metrics,
        cluster,
        hello,
        node_lease: node_lease.clone(),
        nodes: nodes.clone(),
        draining,
        successor,
        bus,
        evidence,
        signing_key,
    }));
    let _ = app_cell.set(Arc::downgrade(&app));
    let publisher = app.config.bus.publish_outbox.then(|| {
        let settings = PublisherSettings {
            cluster: app.config.bus.cluster_name.clone(),
            poll_interval: app.config.bus.poll_interval,
            batch: app.config.bus.batch,
            confirm_timeout: Duration::from_secs(5),
        };
        let work = OutboxPublisher::new(app.bus.clone(), settings);
        let (node, ttl) = (app.config.node_id.clone(), app.config.bus.publisher_lease_ttl);
        Singleton::spawn(app.store.clone(), crate::bus::outbox_publisher::LEASE, node, ttl, work)
    });
    let (settings, cv_workers) = snapshot_settings(&app);
    let snapshots = match app.config.snapshots.work {
        true => Some(SnapshotWorker::spawn(app.clone(), app.snapshot_wake.clone(), settings).await?),
        false => None,
    };
    let dispatcher = match start_webhooks(&app).await {
        Ok(dispatcher) => dispatcher,
        Err(e) => {
            tracing::error!(error = %e, "webhooks not started");
            None
        }
    };
    let turn = match turn_bound {
        Some((bound, secret)) => Some(bound.serve(&secret).await?),
        None => None,
    };
    let (stop_http, stopped) = oneshot::channel::<()>();
    let router = http::router(app.clone());
    let tls_reload = tls.as_ref().and_then(|(files, serving)| reload_on_hangup(files.clone(), serving.clone()));
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let serving = tls.map(|(_, serving)| serving);
    if app.cluster.is_none() {
        let restored = crate::routing::restore_rooms(&app).await;
        if restored > 0 {
            tracing::warn!(
                rooms = restored,
                "rooms of a run that did not stop cleanly are back; their sessions may resume"
            );
        }
    }
    let http = serve_http(listener, router, serving, app.config.http.shutdown_grace, stopped)?;
    tracing::info!(
        %addr,
        node_id = %app.config.node_id,
        database = ?app.store.backend(),
        dev_mode = app.dev_mode,
        tls = scheme == "wss",
        cluster_addr = cluster_addr.as_deref().unwrap_or("none"),
        turn = %turn.as_ref().map(|t| t.addr().to_string()).unwrap_or_else(|| "none".into()),
        startup_ms = started.elapsed().as_millis() as u64,
        "switchboard serving; signaling at {scheme}://{addr}/ws/signal"
    );
    let beats = app.cluster.is_some().then(|| {
        let app = app.clone();
        tokio::spawn(async move {
            tokio::join!(crate::node_lease::keep(app.clone()), sweep_orphans(app));
        })
    });
    let upkeep = telemetry::spawn_upkeep(app.metrics.clone());
    let appointments = crate::appointments::spawn_sweeper(app.clone());
    Ok(RunningServer {
        addr,
        app,
        stop_http: Some(stop_http),
        http,
        tls_reload,
        beats,
        upkeep,
        appointments,
        publisher,
        dispatcher,
        snapshots,
        cv_workers,
        broker,
        turn,
    })
}

impl RunningServer {
    /// Where the embedded TURN server listens (UDP and TCP), when it runs.
    pub fn turn_addr(&self) -> Option<SocketAddr> {
        self.turn.as_ref().map(TurnServer::addr)
    }

    /// Graceful shutdown: refuse new work, close every session and open call in the store,
    /// tell every client (close frame 1001 with a reason), then stop listening.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let app = self.app.clone();
        app.begin_shutdown();
        tracing::info!(connections = app.edge.len(), "shutting down");
        let deadline = Instant::now() + app.config.http.shutdown_grace;
        if app.cluster.is_some() {
            drain(&app, deadline).await;
        } else {
            let _ = app.rooms.call(RoomSupervisorMsg::Shutdown, Some(Duration::from_secs(15))).await;
            app.edge.close_all(close_code::GOING_AWAY, "server shutting down");
            wait_for_clients(&app, deadline).await;
        }
        app.rooms.stop(Some("shutdown".into()));
        // Relayed media ends with the calls, which have just been closed.
        if let Some(turn) = self.turn.take() {
            turn.stop().await;
        }
        if let Some(stop) = self.stop_http.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(app.config.http.shutdown_grace, &mut self.http).await {
            Ok(joined) => joined??,
            Err(_) => self.http.abort(),
        }
        // The cluster links close last, so peers see this node leave after its clients did.
        if let Some(cluster) = &app.cluster {
            // Rooms handed over stay this node's until their successors take them (with what
            // was carried): the node lease is kept, renewed, until none is left or a few
            // seconds have passed, so that no other node starts one afresh from the store.
            let waited = Instant::now();
            while waited.elapsed() < Duration::from_secs(5)
                && app.store.owned_by(&app.config.node_id).await.is_ok_and(|n| n > 0)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if let Some(beats) = self.beats.take() {
                beats.abort();
            }
            let me = (app.hello)();
            if let Err(e) = app.store.release_node(&me.node_id, &me.incarnation.to_string()).await {
                tracing::warn!(error = %e, "node id not released");
            }
            cluster.shutdown().await;
        }
        self.upkeep.abort();
        self.appointments.abort();
        if let Some(reload) = self.tls_reload.take() {
            reload.abort();
        }
        // Events written until now stay in the outbox; whichever publisher comes next sends them.
        if let Some(publisher) = self.publisher.take() {
            publisher.stop().await;
        }
        if let Some(dispatcher) = self.dispatcher.take() {
            dispatcher.stop().await;
        }
        if let Some(snapshots) = self.snapshots.take() {
            snapshots.stop().await;
        }
        if let Some(cv_workers) = self.cv_workers.take() {
            let _ = cv_workers.send(true);
        }
        app.bus.shutdown().await;
        if let Some(broker) = self.broker.take() {
            broker.stop().await;
        }
        app.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn wait_for_clients(app: &App, deadline: Instant) {
    while !app.edge.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A clustered node leaves without ending anyone's call: its own clients are told to reconnect
/// elsewhere (their sessions close in their rooms), then its rooms are handed to other nodes
/// with their sessions, which go on through those nodes.
async fn drain(app: &App, deadline: Instant) {
    app.edge.goaway_all("node draining");
    wait_for_clients(app, deadline).await;
    // This node's connections are gone: telling the other nodes so makes the rooms that move
    // keep those sessions as disconnected (resumable elsewhere).
    app.links.announce_edge_gone();
    let handed = match app.rooms.call(RoomSupervisorMsg::Handoff, Some(Duration::from_secs(15))).await {
        Ok(CallResult::Success(rooms)) => rooms,
        _ => Vec::new(),
    };
    let mut touched = std::collections::BTreeSet::new();
    let count = handed.len();
    // Every room goes to its successor first, before anything slower: the successor takes the
    // room's ownership over from the carry.
    let mut adopted = Vec::new();
    for (room, carry) in handed {
        let host = (app.successor)(room.as_str())
            .and_then(|target| ractor::pg::get_members(&host_group(&target)).into_iter().next().map(|c| (target, c)));
        let Some((target, cell)) = host else {
            // Nobody to hand it to: give the lease back, so that any node may start the room
            // at once rather than after the lease runs out.
            if let Some(fence) = &carry.lease
                && let Err(e) = app.store.release_lease(fence).await
            {
                tracing::warn!(room_id = %room, error = %e, "lease of an unadopted room not released");
            }
            continue;
        };
        // The room stays owned by this node (its lease is still renewed while it drains) until
        // the successor takes it over from the carry, however long the rooms before it take.
        let host: ActorRef<HostMsg> = cell.into();
        let _ = host.cast(HostMsg::Adopt(room.to_string(), Bincode(carry)));
        touched.insert(target.clone());
        adopted.push((room, target));
    }
    for (room, target) in adopted {
        // Re-point the edges of the room's remaining sessions at the new owner, so their next
        // message goes there rather than to this node as it leaves.
        for conn in app.store.open_connections(room.as_str()).await.unwrap_or_default() {
            let conn = ConnId::new(conn);
            let Some(node) = node_of(&conn).map(str::to_owned) else { continue };
            if app.links.to_edge(&node, &EdgeMsg::Moved(conn.clone(), room.clone(), target.clone(), 0)) {
                touched.insert(node);
            }
        }
    }
    // Everything sent on the node links is written out (the links close after it, so the
    // peers read it all), and a round trip to every node told anything: the hand-offs before
    // it have arrived when it answers (one session per pair of nodes, in order).
    app.links.flushed(Duration::from_secs(2)).await;
    for node in touched {
        if let Some(cell) = ractor::pg::get_members(&agent_group(&node)).into_iter().next() {
            let agent: ActorRef<AgentMsg> = cell.into();
            let _ = agent.call(AgentMsg::Hello, Some(Duration::from_secs(2))).await;
        }
    }
    tracing::info!(rooms = count, "rooms handed off");
}

/// Where a room goes when this node gives it up: placement (lease-live, not cordoned, by load)
/// over the other members.
fn successor_of(me: &str, view: Option<LiveView>, app: Arc<std::sync::OnceLock<std::sync::Weak<App>>>) -> Successor {
    let me = me.to_owned();
    Arc::new(move |room: &str| {
        // Where placement would put the room now (live, not cordoned, by load), this draining
        // node left out; the rendezvous choice over the live members before the node is built.
        if let Some(app) = app.get().and_then(std::sync::Weak::upgrade) {
            let others: Vec<_> =
                crate::placement::candidates(&app).into_iter().filter(|(n, _)| n.as_str() != me).collect();
            return crate::placement::choose_among(&others, room).map(str::to_owned);
        }
        let view = view.as_ref()?;
        let others: Vec<NodeId> = view.live_nodes().into_iter().filter(|n| n.as_str() != me).collect();
        switchboard_cluster::place(room, &others).map(NodeId::to_string)
    })
}

/// Takes over the rooms placed on this node whose owner died with sessions in them, without
/// waiting for someone to speak: the room starts here, adopts its sessions as disconnected
/// (they can resume; after the grace period they leave, and the call ends as it should).
///
/// Cheap while nothing happens: each tick reads the node leases (one row per node); the
/// orphan search over the sessions runs only for a while after a node's lease ran out or its
/// term changed (long enough for the membership to mark the node down, so that placement gives
/// its rooms to the survivors), and as a backstop every few seconds.
async fn sweep_orphans(app: Arc<App>) {
    let ttl = app.config.cluster.lease_ttl;
    let every = (ttl / 4).max(Duration::from_millis(100));
    let hot_for = app.config.cluster.heartbeat_timeout + ttl * 2;
    let backstop = Duration::from_secs(5).max(ttl * 2);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen: std::collections::HashMap<String, (i64, bool)> = std::collections::HashMap::new();
    let mut sightings = std::collections::HashMap::new();
    let mut hot_until = Instant::now() + hot_for;
    let mut last_full = Instant::now();
    loop {
        ticker.tick().await;
        if app.is_shutting_down() {
            continue;
        }
        match app.store.node_states().await {
            Ok(nodes) => {
                for n in &nodes {
                    let before = seen.insert(n.node_id.clone(), (n.term, n.live));
                    if before.is_some_and(|(t, l)| t != n.term || (l && !n.live)) {
                        hot_until = Instant::now() + hot_for;
                    }
                }
                app.nodes.update(nodes);
            }
            Err(e) => tracing::warn!(error = %e, "node states not read"),
        }
        let now = Instant::now();
        if now < hot_until || now.duration_since(last_full) >= backstop {
            last_full = now;
            crate::routing::adopt_orphans(&app, &mut sightings).await;
        }
    }
}

/// What this node tells its peers in every heartbeat answer.
fn hello_source(
    config: &Config,
    secret: &[u8],
    http: SocketAddr,
    link: Option<SocketAddr>,
    edge: &Arc<EdgeRouter>,
    live_rooms: &Arc<AtomicUsize>,
) -> HelloSource {
    let base = NodeHello {
        node_id: config.node_id.clone(),
        cluster_addr: config.cluster.addr.map(|a| a.to_string()).unwrap_or_default(),
        http_addr: http.to_string(),
        link_addr: link.map(|a| a.to_string()).unwrap_or_default(),
        secret_fingerprint: secret_fingerprint(secret),
        incarnation: rand::random(),
        rooms: 0,
        connections: 0,
    };
    let (edge, live_rooms) = (edge.clone(), live_rooms.clone());
    Arc::new(move || NodeHello {
        rooms: live_rooms.load(Ordering::Relaxed) as u64,
        connections: edge.len() as u64,
        ..base.clone()
    })
}

/// Joins the cluster when configured: waits (up to the heartbeat timeout) for a first peer,
/// and refuses to go on if another live node already has this node's id.
async fn start_cluster(
    config: &Config,
    hello: HelloSource,
    store: &Store,
    node_lease: &NodeLease,
    nodes: &Arc<crate::placement::NodeView>,
) -> anyhow::Result<Option<Cluster>> {
    let Some(addr) = config.cluster.addr else { return Ok(None) };
    let node_id = NodeId::parse(&config.node_id).map_err(|e| anyhow::anyhow!(e))?;
    let cfg = ClusterConfig {
        node_id,
        addr,
        seeds: config.cluster.seeds.clone(),
        cookie: config.cluster_cookie(),
        heartbeat_interval: config.cluster.heartbeat_interval,
        heartbeat_timeout: config.cluster.heartbeat_timeout,
        tls: match config.cluster_tls_files() {
            Some(files) => Some(files.load()?),
            None => None,
        },
        peers: config.cluster_tls_files().map(|_| {
            let nodes = nodes.clone();
            Arc::new(move || nodes.live_addresses()) as switchboard_cluster::PeerSource
        }),
    };
    let cluster = Cluster::start(cfg, hello.clone()).await?;
    let me = hello();
    let claimed = store
        .claim_node(
            &me.node_id,
            &me.incarnation.to_string(),
            &cluster.addr().to_string(),
            &me.http_addr,
            config.cluster.lease_ttl,
        )
        .await;
    match claimed {
        // Valid from when the claim was sent: a restarted node first waits its predecessor's
        // lease out, and a lease counted from before that wait would seem lapsed at once (its
        // rooms would not start until the next renewal began a new term).
        Ok((term, asked)) => node_lease.begin(term, crate::node_lease::valid_until(asked, config.cluster.lease_ttl)),
        Err(e) => {
            cluster.shutdown().await;
            return Err(e.into());
        }
    }
    if config.cluster.seeds.is_empty() {
        return Ok(Some(cluster));
    }
    let deadline = Instant::now() + config.cluster.heartbeat_timeout * 2;
    loop {
        if let Some(other) = cluster.duplicate_of() {
            cluster.shutdown().await;
            anyhow::bail!(
                "node id {:?} is already live in the cluster (at {other}); choose another --node-id",
                config.node_id
            );
        }
        if cluster.live_nodes().len() > 1 {
            return Ok(Some(cluster));
        }
        if Instant::now() >= deadline {
            tracing::warn!(seeds = ?config.cluster.seeds, "no cluster member reached yet; serving alone and still dialling the seeds");
            return Ok(Some(cluster));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Resolves when the process gets SIGINT or SIGTERM.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod socket_tests {
    #[tokio::test]
    async fn accepted_sockets_send_small_frames_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::spawn(tokio::net::TcpStream::connect(addr));
        let (mut accepted, _) = listener.accept().await.expect("accept");
        assert!(!accepted.nodelay().expect("read option"), "the OS default is Nagle on");
        super::tune_accepted(&mut accepted);
        assert!(accepted.nodelay().expect("read option"));
        drop(client);
    }

    #[tokio::test]
    async fn tls_sockets_are_tuned_before_their_handshake() {
        use axum_server::accept::Accept;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::spawn(tokio::net::TcpStream::connect(addr));
        let (accepted, _) = listener.accept().await.expect("accept");
        let (tuned, ()) = super::Tuned.accept(accepted, ()).await.expect("accepted");
        assert!(tuned.nodelay().expect("read option"));
        drop(client);
    }
}
