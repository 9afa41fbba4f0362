//! Links other nodes open to this one: the accept loop, and one reader task per link that
//! decodes records and hands each straight to its room (through the room's relay table when
//! it can; a room not found yet is found off the reader, see [`super::door`]) or to this
//! node's connections, with no actor in between.
//!
//! A link whose handshake fails is refused; a link that sends a malformed record is closed and
//! counted (`switchboard_cluster_links_closed_total{side="in",cause="malformed"}`). Either way
//! only that link is affected: the peer dials again, every other link goes on. A link from a
//! peer the heartbeat has declared down is closed (and a new one refused) until the peer
//! answers again: a node that was frozen must not deliver, on waking, what it queued before.

use super::codec::{Decoder, Record, next_record};
use super::door::RoomDoor;
use super::{Io, Links, handshake};
use crate::routing::{EdgeLinkArgs, RoomHostArgs};
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// Where a link's records go on this node.
#[derive(Clone)]
pub struct Receiver {
    /// Rooms this node serves.
    pub host: Arc<RoomHostArgs>,
    /// This node's connections.
    pub edge: Arc<EdgeLinkArgs>,
}

pub(crate) async fn serve(listener: TcpListener, links: Links, receiver: Receiver) {
    loop {
        let (tcp, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "node link accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (links, receiver) = (links.clone(), receiver.clone());
        tokio::spawn(async move {
            let stream: Box<dyn Io> = match &links.0.tls {
                None => Box::new(tcp),
                Some(tls) => {
                    let accepted = tokio::time::timeout(handshake::HANDSHAKE_TIMEOUT, tls.acceptor.accept(tcp)).await;
                    match accepted {
                        Ok(Ok(tls)) => Box::new(tls),
                        Ok(Err(e)) => return refused(&from, &e.to_string()),
                        Err(_) => return refused(&from, "TLS handshake timed out"),
                    }
                }
            };
            let mut stream = stream;
            let peer = match handshake::accept(&mut stream, &links.0.me, &links.0.cookie).await {
                Ok(peer) => peer,
                Err(e) => return refused(&from, &e),
            };
            if links.0.is_down(&peer) {
                // Until its heartbeat answers again, a peer that went silent is not heard: what it
                // sends now was queued before it went silent (see `read`).
                tracing::debug!(node_id = %peer, "refused a node link from a peer that is down");
                return;
            }
            links.edge_back(&peer);
            match read(stream, &receiver, &links, &peer).await {
                Ok(()) => {
                    metrics::counter!("switchboard_cluster_links_closed_total", "side" => "in", "cause" => "closed")
                        .increment(1)
                }
                Err(Closed::Io(e)) => {
                    tracing::debug!(node_id = %peer, error = %e, "node link from a peer broke");
                    metrics::counter!("switchboard_cluster_links_closed_total", "side" => "in", "cause" => "io")
                        .increment(1)
                }
                Err(Closed::Malformed(e)) => {
                    tracing::warn!(node_id = %peer, error = %e, "closed a node link that sent a malformed record");
                    metrics::counter!("switchboard_cluster_links_closed_total", "side" => "in", "cause" => "malformed")
                        .increment(1)
                }
                Err(Closed::PeerDown) => {
                    tracing::info!(node_id = %peer, "closed the node link from a peer declared down");
                    metrics::counter!("switchboard_cluster_links_closed_total", "side" => "in", "cause" => "peer_down")
                        .increment(1)
                }
            }
        });
    }
}

fn refused(from: &std::net::SocketAddr, why: &str) {
    tracing::warn!(peer = %from, reason = %why, "refused a node link");
    metrics::counter!("switchboard_cluster_links_refused_total").increment(1);
}

enum Closed {
    Io(String),
    Malformed(String),
    /// The heartbeat declared the peer down.
    PeerDown,
}

/// How often a link's reader checks, while nothing comes, that its peer is not down.
const DOWN_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

async fn read(mut stream: Box<dyn Io>, receiver: &Receiver, links: &Links, peer: &str) -> Result<(), Closed> {
    let mut door = RoomDoor::new(receiver.host.clone());
    let mut decoder = Decoder::default();
    let mut buf = bytes::BytesMut::with_capacity(64 * 1024);
    loop {
        while let Some(body) = next_record(&mut buf).map_err(|e| Closed::Malformed(e.to_string()))? {
            match decoder.decode(&body).map_err(|e| Closed::Malformed(e.to_string()))? {
                Some(Record::ToRoom { room, conn, msg }) => door.deliver(room, conn, msg),
                Some(Record::ToEdge(msg)) => receiver.edge.handle(msg),
                Some(Record::EdgeGone) => links.edge_gone(peer),
                None => {}
            }
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        // A peer the heartbeat declared down is cut off at once: a frozen node that wakes up
        // would otherwise write here what it queued before its freeze (frames its rooms had
        // numbered, since sent again by their new instances), and connections would see them
        // after the new ones. Its link goes down, what it had not written is dropped, and it
        // dials again once it answers heartbeats.
        let read = tokio::time::timeout(DOWN_CHECK, stream.read_buf(&mut buf)).await;
        if links.0.is_down(peer) {
            return Err(Closed::PeerDown);
        }
        match read {
            Err(_) => {}
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(Closed::Io(e.to_string())),
        }
    }
}
