//! Cluster singletons: a background task that works only on the node that holds its service
//! lease (the outbox publisher, the webhook dispatcher). Every node runs one; the others keep
//! asking for the lease every third of its lifetime and take over once it expires, or at once
//! when the holder stops cleanly and gives it back.

use crate::store::{LeaseKeeper, Store};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The work a singleton does while it holds its lease.
pub trait Lead: Send + 'static {
    /// Works until told to stop (`true`) or until `keeper` says the lease is lost (`false`).
    fn lead<'a>(
        &'a mut self,
        store: &'a Store,
        keeper: &'a mut LeaseKeeper,
        stopped: &'a mut watch::Receiver<bool>,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
}

/// A running singleton.
pub struct Singleton {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Singleton {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Singleton").finish_non_exhaustive()
    }
}

impl Singleton {
    /// Starts competing for the lease `name` as `node`, and leading with `work` when held.
    pub fn spawn(store: Store, name: &'static str, node: String, ttl: Duration, work: impl Lead) -> Singleton {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(store, name, node, ttl, work, stopped));
        Singleton { stop, task }
    }

    /// Stops it and gives its lease back, so another node takes over at once.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(15), &mut task).await.is_err() {
            task.abort();
        }
    }

    /// Stops it the way a crash would: no release, nothing more written.
    pub fn abort(self) {
        self.task.abort();
    }
}

async fn run(
    store: Store,
    name: &'static str,
    node: String,
    ttl: Duration,
    mut work: impl Lead,
    mut stopped: watch::Receiver<bool>,
) {
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = ttl / 3;
        let mut keeper = match LeaseKeeper::acquire(&store, name, &node, ttl).await {
            Ok(Some(keeper)) => keeper,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(lease = name, error = %e, "service lease not taken");
                continue;
            }
        };
        tracing::info!(lease = name, epoch = keeper.lease.epoch, "active on this node");
        if work.lead(&store, &mut keeper, &mut stopped).await {
            keeper.release(&store).await;
            return;
        }
        tracing::warn!(lease = name, epoch = keeper.lease.epoch, "service lease lost");
    }
}
