//! The `service_leases` table: cluster-wide singletons such as the outbox publisher. At most
//! one node holds a live lease on a name; the epoch rises with every new holder, and the
//! holder's writes check it, so a holder that lost its lease (frozen, partitioned) writes
//! nothing.

use super::{Store, col, db};
use sqlx::{Any, Transaction};
use std::time::Duration;
use switchboard_actors::ports::StoreError;

/// A held service lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceLease {
    /// The service (`outbox-publisher`).
    pub name: String,
    /// The holder.
    pub node: String,
    /// The holder's epoch.
    pub epoch: i64,
}

impl Store {
    /// Takes the lease on `name` for `node` unless another node holds it live. A node's own
    /// lease (its previous incarnation's) is taken over with the next epoch.
    pub async fn acquire_service_lease(
        &self,
        name: &str,
        node: &str,
        ttl: Duration,
    ) -> Result<Option<ServiceLease>, StoreError> {
        let sql = format!(
            "INSERT INTO service_leases (name, node_id, epoch, expires_at) VALUES ($1, $2, 1, {now} + $3) \
             ON CONFLICT (name) DO UPDATE SET node_id = excluded.node_id, epoch = service_leases.epoch + 1, \
             expires_at = excluded.expires_at \
             WHERE service_leases.expires_at < {now} OR service_leases.node_id = excluded.node_id \
             RETURNING epoch",
            now = self.db_now()
        );
        let row = sqlx::query(&sql)
            .bind(name)
            .bind(node)
            .bind(ttl.as_millis() as i64)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| Ok(ServiceLease { name: name.to_owned(), node: node.to_owned(), epoch: col(&r, 0)? })).transpose()
    }

    /// Extends a held lease; `false` when it is no longer held (expired, or taken over).
    pub async fn renew_service_lease(&self, lease: &ServiceLease, ttl: Duration) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE service_leases SET expires_at = {now} + $1 \
             WHERE name = $2 AND node_id = $3 AND epoch = $4 AND expires_at >= {now}",
            now = self.db_now()
        );
        let done = sqlx::query(&sql)
            .bind(ttl.as_millis() as i64)
            .bind(&lease.name)
            .bind(&lease.node)
            .bind(lease.epoch)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a lease up at once (a clean stop), so the next holder need not wait.
    pub async fn release_service_lease(&self, lease: &ServiceLease) -> Result<(), StoreError> {
        sqlx::query("UPDATE service_leases SET expires_at = 0 WHERE name = $1 AND node_id = $2 AND epoch = $3")
            .bind(&lease.name)
            .bind(&lease.node)
            .bind(lease.epoch)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// The node holding a live lease on `name`, with its epoch.
    pub async fn service_lease_holder(&self, name: &str) -> Result<Option<(String, i64)>, StoreError> {
        let sql =
            format!("SELECT node_id, epoch FROM service_leases WHERE name = $1 AND expires_at >= {}", self.db_now());
        let row = sqlx::query(&sql).bind(name).fetch_optional(&self.pool).await.map_err(db)?;
        row.map(|r| Ok((col(&r, 0)?, col(&r, 1)?))).transpose()
    }

    /// Inside a transaction: whether `lease` is still live, taking its row's lock so that a
    /// takeover cannot commit in between.
    pub(super) async fn hold_service_lease(
        &self,
        tx: &mut Transaction<'_, Any>,
        lease: &ServiceLease,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE service_leases SET node_id = node_id \
             WHERE name = $1 AND node_id = $2 AND epoch = $3 AND expires_at >= {}",
            self.db_now()
        );
        let held = sqlx::query(&sql)
            .bind(&lease.name)
            .bind(&lease.node)
            .bind(lease.epoch)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        Ok(held.rows_affected() == 1)
    }
}

/// Keeps a service lease for a loop that works while it holds it: renews it every third of
/// its lifetime and says when it is lost, or may have run out by this node's own clock (the
/// lease counts from before each renewal was asked for, so this node stops trusting it no
/// later than the database does).
#[derive(Debug)]
pub struct LeaseKeeper {
    /// The lease.
    pub lease: ServiceLease,
    ttl: Duration,
    valid_until: std::time::Instant,
    renew_at: std::time::Instant,
}

impl LeaseKeeper {
    /// Takes `name` for `node` if nobody else holds it.
    pub async fn acquire(store: &Store, name: &str, node: &str, ttl: Duration) -> Result<Option<Self>, StoreError> {
        let asked = std::time::Instant::now();
        Ok(store.acquire_service_lease(name, node, ttl).await?.map(|lease| LeaseKeeper {
            lease,
            ttl,
            valid_until: asked + ttl,
            renew_at: std::time::Instant::now() + ttl / 3,
        }))
    }

    /// Renews when due; `false` once the lease is lost or may have run out.
    pub async fn keep(&mut self, store: &Store) -> bool {
        let now = std::time::Instant::now();
        if now >= self.renew_at {
            match store.renew_service_lease(&self.lease, self.ttl).await {
                Ok(true) => {
                    self.valid_until = now + self.ttl;
                    self.renew_at = std::time::Instant::now() + self.ttl / 3;
                }
                Ok(false) => return false,
                Err(e) => tracing::warn!(lease = %self.lease.name, error = %e, "service lease not renewed"),
            }
        }
        std::time::Instant::now() < self.valid_until
    }

    /// Gives the lease back (a clean stop).
    pub async fn release(self, store: &Store) {
        if let Err(e) = store.release_service_lease(&self.lease).await {
            tracing::debug!(lease = %self.lease.name, error = %e, "service lease not released");
        }
    }
}
