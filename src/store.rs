//! The operational store: sqlx over SQLite (embedded default) or PostgreSQL, the same SQL on
//! both (`migrations/`), `$n` placeholders, times in unix milliseconds.
//!
//! Every state change is one transaction together with its outbox events (`events` table),
//! so an event exists exactly when the change it records does. One file per table below;
//! the `RoomStore` port the room actor writes through is implemented here, by delegation.

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use switchboard_actors::ids::{ConnId, PeerId, RoomId};
use switchboard_actors::media::MediaState;
use switchboard_actors::ports::{CallChange, Fence, RoomPolicy, RoomStore, StoreError, StoredParticipant, StoredRoom};
use switchboard_actors::protocol::ChatMessage;
use switchboard_actors::quality::{Quality, StatsSample};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Which database is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded file database.
    Sqlite,
    /// Server database (required for clusters).
    Postgres,
}

/// The store of one node.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// The node lease's own connections (PostgreSQL; the main pool on SQLite): its renewals and
    /// the reads of the other nodes' leases never wait behind room work, however busy the main
    /// pool is (a takeover of thousands of rooms, a burst of joins).
    lease_pool: AnyPool,
    backend: Backend,
    node_id: String,
    ownership: Arc<OwnershipWrites>,
}

/// What keeping the cluster's ownership has written through this store so far: node lease
/// rows (claims, renewals, new terms) and room ownership rows (taken, handed over, released).
/// A room's own writes, which check its fence inside their transaction, are not counted.
#[derive(Debug, Default)]
pub struct OwnershipWrites {
    /// Writes of this node's row in `cluster_nodes`.
    pub node_rows: AtomicU64,
    /// Writes of rows in `room_leases`.
    pub room_rows: AtomicU64,
}

mod appointments;
mod audit;
mod call_stats;
mod calls;
mod chat;
mod cluster_nodes;
mod events;
pub mod lobby;
pub mod notifications;
mod room_leases;
mod rooms;
mod service_leases;
mod sessions;
mod snapshots;
mod takeover;
mod webhooks;

pub use audit::AuditEntry;
pub use call_stats::{CallQuality, LevelSeconds};
pub use cluster_nodes::{ClaimError, NodeState};
pub use events::{EventRow, Pending};
pub use rooms::RoomRow;
pub use service_leases::{LeaseKeeper, ServiceLease};
pub use snapshots::{Job, NewJob, StoredReport};
pub use webhooks::{AttemptView, DeliveryView, DueDelivery, Endpoint, Outcome};

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// Column `i` of a row, decoded: a value the code cannot read is a corrupt row, not a panic.
fn col<'r, T>(r: &'r AnyRow, i: usize) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    r.try_get(i).map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
}

impl Store {
    /// Connects (creating a SQLite file if needed) and runs the migrations.
    pub async fn open(url: &str, max_connections: u32, node_id: &str) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") { Backend::Sqlite } else { Backend::Postgres };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;").await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open database: {e}"))?;
        MIGRATOR.run(&pool).await.map_err(|e| anyhow::anyhow!("migrations failed: {e}"))?;
        let lease_pool = match backend {
            Backend::Sqlite => pool.clone(),
            Backend::Postgres => AnyPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(5))
                .connect(url)
                .await
                .map_err(|e| anyhow::anyhow!("cannot open database: {e}"))?,
        };
        Ok(Store { pool, lease_pool, backend, node_id: node_id.to_owned(), ownership: Arc::default() })
    }

    /// Which backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Ownership writes so far (node rows, room rows).
    pub fn ownership_writes(&self) -> (u64, u64) {
        (self.ownership.node_rows.load(Ordering::Relaxed), self.ownership.room_rows.load(Ordering::Relaxed))
    }

    fn counted_ownership_write(&self) {
        self.ownership.room_rows.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("switchboard_ownership_writes_total", "table" => "room_leases").increment(1);
    }

    fn counted_node_write(&self) {
        self.ownership.node_rows.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("switchboard_ownership_writes_total", "table" => "cluster_nodes").increment(1);
    }

    /// The database's clock in unix milliseconds, as SQL: leases expire by one clock, the
    /// database's, whatever the nodes' clocks say.
    fn db_now(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        }
    }

    /// Inside a write's transaction: refuses it unless `fence` is still the room's live lease.
    /// The no-op update takes the lease row's lock, so a takeover cannot commit in between.
    async fn check_fence(&self, tx: &mut Transaction<'_, Any>, fence: Option<&Fence>) -> Result<(), StoreError> {
        let Some(f) = fence else { return Ok(()) };
        let sql = format!(
            "UPDATE room_leases SET node_id = node_id \
             WHERE room_id = $1 AND node_id = $2 AND epoch = $3 AND node_term = $4 AND {}",
            self.owned("room_leases")
        );
        let held = sqlx::query(&sql)
            .bind(f.room.as_str())
            .bind(&f.node)
            .bind(f.epoch)
            .bind(f.term)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        if held.rows_affected() == 1 { Ok(()) } else { Err(StoreError::Fenced(f.room.to_string())) }
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&self.pool))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The first column of the rows `sql` selects for `key`, as text.
    pub(super) async fn texts(&self, sql: &str, key: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(sql).bind(key).fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(|r| col::<String>(r, 0)).collect()
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.lease_pool.close().await;
        self.pool.close().await;
    }
}

#[async_trait::async_trait]
impl RoomStore for Store {
    async fn load_room(
        &self,
        room: &RoomId,
        default_policy: &RoomPolicy,
        chat_history: u32,
    ) -> Result<StoredRoom, StoreError> {
        rooms::load_room(self, room, default_policy, chat_history).await
    }

    async fn record_join(
        &self,
        room: &RoomId,
        p: &StoredParticipant,
        call: Option<&CallChange>,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        sessions::record_join(self, room, p, call, fence).await
    }

    async fn record_leave(
        &self,
        room: &RoomId,
        peer: &PeerId,
        reason: &str,
        call: Option<&CallChange>,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        sessions::record_leave(self, room, peer, reason, call, fence).await
    }

    async fn record_call_change(
        &self,
        room: &RoomId,
        call: &CallChange,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        calls::record_call_change(self, room, call, fence).await
    }

    async fn record_media(&self, peer: &PeerId, media: &MediaState, fence: Option<&Fence>) -> Result<(), StoreError> {
        sessions::record_media(self, peer, media, fence).await
    }

    async fn append_chat(&self, m: &ChatMessage, fence: Option<&Fence>) -> Result<(), StoreError> {
        chat::append_chat(self, m, fence).await
    }

    async fn record_reattach(&self, peer: &PeerId, conn: &ConnId, fence: Option<&Fence>) -> Result<(), StoreError> {
        sessions::record_reattach(self, peer, conn, fence).await
    }

    async fn record_quality(
        &self,
        room: &RoomId,
        peer: &PeerId,
        sample: &StatsSample,
        quality: &Quality,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        call_stats::record_quality(self, room, peer, sample, quality, fence).await
    }

    async fn acquire_lease(&self, room: &RoomId, node: &str, term: i64) -> Result<Result<i64, String>, StoreError> {
        room_leases::acquire_lease(self, room, node, term).await
    }

    async fn transfer_lease(&self, from: &Fence, node: &str, term: i64) -> Result<Option<i64>, StoreError> {
        room_leases::transfer_lease(self, from, node, term).await
    }

    async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError> {
        room_leases::release_lease(self, fence).await
    }
}
