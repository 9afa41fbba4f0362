//! Starting and stopping a node: store, actors, HTTP listener, and the graceful shutdown
//! that closes sessions and calls in the store and tells every client why its socket closes.

use crate::app::App;
use crate::auth::{Authority, load_or_create_secret};
use crate::config::Config;
use crate::edge::connection::close_code;
use crate::edge::edge_router::EdgeRouter;
use crate::store::Store;
use crate::{http, telemetry};
use ractor::Actor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_actors::ports::RoomPolicy;
use switchboard_actors::restart_policy::RestartPolicy;
use switchboard_actors::room::{RoomConfig, RoomContext};
use switchboard_actors::room_supervisor::{RoomSupervisor, RoomSupervisorArgs, RoomSupervisorMsg};
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
}

/// Opens the store and runs migrations, nothing else (`switchboard migrate`).
pub async fn migrate(config: &Config) -> anyhow::Result<Store> {
    if config.database.url.is_none() {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", config.data_dir.display()))?;
    }
    Store::open(&config.database_url(), config.database.max_connections, &config.node_id).await
}

/// Starts a node on an already bound listener.
pub async fn start(config: Config, listener: TcpListener) -> anyhow::Result<RunningServer> {
    config.validate()?;
    let started = Instant::now();
    let metrics = telemetry::metrics();
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", config.data_dir.display()))?;
    let secret = load_or_create_secret(&config.auth, &config.data_dir)?;
    let authority = Authority::new(&secret, &config.auth);
    let store = migrate(&config).await?;
    let (sessions, calls) = store.reconcile().await?;
    if sessions + calls > 0 {
        tracing::warn!(sessions, calls, "closed sessions and calls left open by an earlier run");
    }
    let edge = Arc::new(EdgeRouter::default());
    let ctx = Arc::new(RoomContext {
        store: Arc::new(store.clone()),
        edge: edge.clone(),
        config: RoomConfig {
            default_policy: RoomPolicy { max_participants: config.rooms.max_participants, invitees: None },
            chat_history: config.rooms.chat_history,
            idle_timeout: config.rooms.idle_timeout,
            participant_restart: RestartPolicy::default(),
        },
    });
    let (rooms, _) =
        Actor::spawn(None, RoomSupervisor, RoomSupervisorArgs { ctx, policy: RestartPolicy::default() }).await?;
    let addr = listener.local_addr()?;
    let app = Arc::new(App::new(config, authority, store, rooms, edge, metrics));
    let (stop_http, stopped) = oneshot::channel::<()>();
    let router = http::router(app.clone());
    let http = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(
        %addr,
        node_id = %app.config.node_id,
        database = ?app.store.backend(),
        dev_mode = app.dev_mode,
        startup_ms = started.elapsed().as_millis() as u64,
        "switchboard serving; signaling at ws://{addr}/ws/signal"
    );
    Ok(RunningServer { addr, app, stop_http: Some(stop_http), http })
}

impl RunningServer {
    /// Graceful shutdown: refuse new work, close every session and open call in the store,
    /// tell every client (close frame 1001 with a reason), then stop listening.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let app = self.app.clone();
        app.begin_shutdown();
        tracing::info!(connections = app.edge.len(), "shutting down");
        let _ = app.rooms.call(RoomSupervisorMsg::Shutdown, Some(Duration::from_secs(15))).await;
        app.edge.close_all(close_code::GOING_AWAY, "server shutting down");
        let deadline = Instant::now() + app.config.http.shutdown_grace;
        while !app.edge.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        app.rooms.stop(Some("shutdown".into()));
        if let Some(stop) = self.stop_http.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(app.config.http.shutdown_grace, &mut self.http).await {
            Ok(joined) => joined??,
            Err(_) => self.http.abort(),
        }
        app.store.close().await;
        tracing::info!("stopped");
        Ok(())
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
