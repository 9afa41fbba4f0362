//! Edge router: the directory of this node's open connections. Rooms deliver frames through
//! it by connection id, so a room never holds a connection's actor reference and a restarted
//! room finds its participants' connections again from the ids in the store.

use super::connection::ConnectionMsg;
use ractor::ActorRef;
use std::collections::HashMap;
use std::sync::RwLock;
use switchboard_actors::ConnId;
use switchboard_actors::ports::{Edge, Frame};

/// Open connections of this node by id.
#[derive(Default)]
pub struct EdgeRouter {
    connections: RwLock<HashMap<ConnId, ActorRef<ConnectionMsg>>>,
}

impl EdgeRouter {
    /// Registers a new connection.
    pub fn register(&self, conn: ConnId, actor: ActorRef<ConnectionMsg>) {
        self.write().insert(conn, actor);
    }

    /// Removes a closed connection.
    pub fn unregister(&self, conn: &ConnId) {
        self.write().remove(conn);
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks every connection to close with `code` and `reason`.
    pub fn close_all(&self, code: u16, reason: &str) {
        for actor in self.read().values() {
            let _ = actor.cast(ConnectionMsg::Close { code, reason: reason.to_owned() });
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ConnId, ActorRef<ConnectionMsg>>> {
        self.connections.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ConnId, ActorRef<ConnectionMsg>>> {
        self.connections.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Edge for EdgeRouter {
    fn deliver(&self, conn: &ConnId, frame: Frame) -> bool {
        match self.read().get(conn) {
            Some(actor) => actor.cast(ConnectionMsg::Deliver(frame)).is_ok(),
            None => false,
        }
    }

    fn is_connected(&self, conn: &ConnId) -> bool {
        self.read().contains_key(conn)
    }
}
