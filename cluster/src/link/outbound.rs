//! One node's outgoing link to another: a pending buffer that senders encode into under a
//! short lock, and one writer task that dials the peer and writes whatever has gathered in one
//! write.
//!
//! A sender never waits on the socket: it appends its record and wakes the writer if the
//! buffer was empty; at high rates many records go out per write. Records wait in order while
//! the link is being dialled, up to [`MAX_PENDING`] bytes. When a connection breaks (or a dial
//! fails with records waiting), what was pending is dropped with the name table and the link's
//! route number changes, so rooms resynchronise their sessions across it (see
//! `Edge::route`). The writer also reads its half of the socket: the peer never writes on it,
//! so a read that returns means the peer closed or broke the link.

use super::codec::{Encoder, Names};
use super::{Inner, Io};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

/// The most bytes that may wait for a link; past it records are dropped (and counted).
pub const MAX_PENDING: usize = 64 * 1024 * 1024;
const MIN_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

static NEXT_ROUTE: AtomicU64 = AtomicU64::new(1);

fn next_route() -> u64 {
    NEXT_ROUTE.fetch_add(1, Ordering::Relaxed)
}

/// The outgoing link to one peer.
pub(crate) struct Outbound {
    pub(crate) node: String,
    pending: Mutex<Pending>,
    wake: Notify,
    route: AtomicU64,
}

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    names: Names,
    writing: bool,
}

impl Outbound {
    pub(crate) fn new(node: &str) -> Outbound {
        Outbound {
            node: node.to_owned(),
            pending: Mutex::default(),
            wake: Notify::new(),
            route: AtomicU64::new(next_route()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends what `encode` writes; false when it wrote nothing or the link is too far behind.
    pub(crate) fn push(&self, encode: impl FnOnce(&mut Encoder<'_>) -> bool) -> bool {
        let mut pending = self.lock();
        if pending.buf.len() > MAX_PENDING {
            drop(pending);
            // The record is not sent: rooms must see that frames may be missing on this link.
            self.route.store(next_route(), Ordering::Release);
            metrics::counter!("switchboard_cluster_link_dropped_total").increment(1);
            return false;
        }
        let was_empty = pending.buf.is_empty();
        let Pending { buf, names, .. } = &mut *pending;
        let wrote = encode(&mut Encoder::new(buf, names));
        drop(pending);
        if was_empty && wrote {
            self.wake.notify_one();
        }
        wrote
    }

    /// The number that changes whenever records sent on this link may have been lost.
    pub(crate) fn route(&self) -> u64 {
        self.route.load(Ordering::Acquire)
    }

    /// Whether everything pushed has been written to the socket.
    pub(crate) fn idle(&self) -> bool {
        let pending = self.lock();
        pending.buf.is_empty() && !pending.writing
    }

    /// Drops what waits (a new connection starts afresh) and, if anything may have been
    /// lost, changes the route.
    fn lost(&self, connected: bool) {
        let mut pending = self.lock();
        let lost = connected || !pending.buf.is_empty();
        pending.buf.clear();
        pending.names.clear();
        pending.writing = false;
        if lost {
            self.route.store(next_route(), Ordering::Release);
        }
    }
}

/// The writer task of `out`: dials while the peer is reachable, pumps, dials again.
pub(crate) async fn run(out: Arc<Outbound>, links: Weak<Inner>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let Some(inner) = links.upgrade() else { return };
        if !inner.reachable(&out.node) {
            drop(inner);
            out.lost(false);
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let dialled = super::dial(&inner, &out.node).await;
        drop(inner);
        match dialled {
            Ok(stream) => {
                backoff = MIN_BACKOFF;
                tracing::debug!(node_id = %out.node, "node link up");
                metrics::counter!("switchboard_cluster_links_opened_total").increment(1);
                let why = pump(&out, stream).await;
                tracing::info!(node_id = %out.node, reason = %why, "node link closed; dialling again");
                metrics::counter!("switchboard_cluster_links_closed_total", "side" => "out").increment(1);
                out.lost(true);
            }
            Err(e) => {
                tracing::debug!(node_id = %out.node, error = %e, "node link not dialled");
                out.lost(false);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn pump(out: &Outbound, stream: Box<dyn Io>) -> String {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut batch: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut probe = [0u8; 1];
    loop {
        loop {
            {
                let mut pending = out.lock();
                if pending.buf.is_empty() {
                    pending.writing = false;
                    break;
                }
                std::mem::swap(&mut pending.buf, &mut batch);
                pending.writing = true;
            }
            if let Err(e) = wr.write_all(&batch).await {
                return e.to_string();
            }
            if let Err(e) = wr.flush().await {
                return e.to_string();
            }
            metrics::counter!("switchboard_cluster_link_bytes_total").increment(batch.len() as u64);
            batch.clear();
            if batch.capacity() > 4 * 1024 * 1024 {
                batch = Vec::with_capacity(64 * 1024);
            }
        }
        tokio::select! {
            _ = out.wake.notified() => {}
            read = rd.read(&mut probe) => {
                return match read {
                    Ok(0) => "closed by the peer".to_owned(),
                    Ok(_) => "the peer wrote on an outgoing link".to_owned(),
                    Err(e) => e.to_string(),
                };
            }
        }
    }
}
