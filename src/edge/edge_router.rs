//! Edge router: the directory of this node's open connections. Rooms deliver frames through
//! it by connection id, so a room never holds a connection's actor reference and a restarted
//! room finds its participants' connections again from the ids in the store. Frames for other
//! nodes' connections go on the node link to their node.

use super::connection::ConnectionMsg;
use super::mailbox::Mailbox;
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use switchboard_actors::ports::{Edge, Frame, LOCAL_ROUTE, NO_ROUTE};
use switchboard_actors::room::RoomMsg;
use switchboard_actors::{ConnId, RoomId};
use switchboard_cluster::Links;
use switchboard_cluster::routing::{EdgeMsg, node_of};

/// Open connections of this node by id; frames for other nodes' connections go on the node
/// link to their node.
pub struct EdgeRouter {
    node_id: String,
    connections: RwLock<HashMap<ConnId, Mailbox>>,
    /// The open connections of each user (most users have one), for what is sent to a person
    /// rather than to a session (notifications).
    users: RwLock<HashMap<String, Vec<ConnId>>>,
    /// The links to the other nodes, once the cluster is up (none outside a cluster).
    links: OnceLock<Links>,
}

impl EdgeRouter {
    /// The router of node `node_id`.
    pub fn new(node_id: &str) -> EdgeRouter {
        EdgeRouter {
            node_id: node_id.to_owned(),
            connections: RwLock::default(),
            users: RwLock::default(),
            links: OnceLock::new(),
        }
    }

    /// Connects the router to the other nodes (once, when the cluster is up).
    pub fn link_up(&self, links: Links) {
        let _ = self.links.set(links);
    }

    /// Sends `msg` to `node`'s connections; false when it cannot be reached.
    fn to_node(&self, node: &str, msg: &EdgeMsg) -> bool {
        self.links.get().is_some_and(|links| links.to_edge(node, msg))
    }

    fn is_remote<'a>(&self, conn: &'a ConnId) -> Option<&'a str> {
        node_of(conn).filter(|node| *node != self.node_id)
    }

    /// Registers a new connection of `user`.
    pub fn register(&self, conn: ConnId, user: &str, mailbox: Mailbox) {
        self.users_mut().entry(user.to_owned()).or_default().push(conn.clone());
        self.write().insert(conn, mailbox);
    }

    /// Removes a closed connection of `user`.
    pub fn unregister(&self, conn: &ConnId, user: &str) {
        self.write().remove(conn);
        let mut users = self.users_mut();
        if let Some(conns) = users.get_mut(user) {
            conns.retain(|c| c != conn);
            if conns.is_empty() {
                users.remove(user);
            }
        }
    }

    /// Sends a frame (JSON body without `seq`) to every open connection of `user`, on every
    /// node: each numbers it in its own sequence (in a room, the session's).
    pub fn to_user(&self, user: &str, body: &str) {
        self.to_local_user(user, body);
        let Some(links) = self.links.get() else { return };
        let msg = EdgeMsg::ToUser(user.to_owned(), body.to_owned());
        for node in links.peers() {
            links.to_edge(&node, &msg);
        }
    }

    /// Gives connection `conn` (of this node or another) new grants (JSON of
    /// [`crate::auth::Grants`]); it tells its client `grants_changed`. False when its node is
    /// unreachable.
    pub fn set_grants(&self, conn: &ConnId, grants: &str) -> bool {
        if let Some(node) = self.is_remote(conn) {
            return self.to_node(node, &EdgeMsg::Grants(conn.clone(), grants.to_owned()));
        }
        self.set_local_grants(conn, grants)
    }

    /// [`set_grants`](Self::set_grants) for a connection of this node.
    pub fn set_local_grants(&self, conn: &ConnId, grants: &str) -> bool {
        let Ok(grants) = serde_json::from_str::<crate::auth::Grants>(grants) else { return false };
        match self.read().get(conn) {
            Some(mailbox) => {
                mailbox.cast(ConnectionMsg::Grants(grants));
                true
            }
            None => false,
        }
    }

    /// Sends a frame to this node's connections of `user`.
    pub fn to_local_user(&self, user: &str, body: &str) {
        let conns = self.users.read().unwrap_or_else(|p| p.into_inner()).get(user).cloned().unwrap_or_default();
        let connections = self.read();
        for conn in conns {
            if let Some(mailbox) = connections.get(&conn) {
                mailbox.cast(ConnectionMsg::ToUser(body.to_owned()));
            }
        }
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes waiting for the busiest connection, and how many connections are closing
    /// because their client stopped reading.
    pub fn backlog(&self) -> (usize, usize) {
        let connections = self.read();
        let most = connections.values().map(Mailbox::queued).max().unwrap_or(0);
        (most, connections.values().filter(|m| m.is_overflowed()).count())
    }

    /// Tells every connection to reconnect elsewhere (`goaway`), then closes it.
    pub fn goaway_all(&self, reason: &str) {
        for actor in self.read().values() {
            actor.cast(ConnectionMsg::GoAway { reason: reason.to_owned() });
        }
    }

    /// Hands a bounced command back to the local connection that sent it.
    pub fn reroute(&self, conn: &ConnId, room: RoomId, hint: String, msg: RoomMsg) {
        if let Some(actor) = self.read().get(conn) {
            actor.cast(ConnectionMsg::Reroute { room, hint, msg: Box::new(msg) });
        }
    }

    /// Tells a local connection that its room now lives on `node`, in an instance of ownership
    /// `epoch` (0 when not known).
    pub fn moved(&self, conn: &ConnId, room: RoomId, node: String, epoch: i64) {
        if let Some(actor) = self.read().get(conn) {
            actor.cast(ConnectionMsg::Moved { room, node, epoch });
        }
    }

    /// Tells connection `conn` (of this node or another) that it was paired in `lobby` and
    /// should join `room`.
    pub fn paired(&self, conn: &ConnId, lobby: &str, room: &str) {
        if let Some(node) = self.is_remote(conn) {
            self.to_node(node, &EdgeMsg::Paired(conn.clone(), lobby.to_owned(), room.to_owned()));
            return;
        }
        if let Some(actor) = self.read().get(conn) {
            actor.cast(ConnectionMsg::Paired { lobby: lobby.to_owned(), room: room.to_owned() });
        }
    }

    /// Asks every connection to close with `code` and `reason`.
    pub fn close_all(&self, code: u16, reason: &str) {
        for actor in self.read().values() {
            actor.cast(ConnectionMsg::Close { code, reason: reason.to_owned() });
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ConnId, Mailbox>> {
        self.connections.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn users_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Vec<ConnId>>> {
        self.users.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ConnId, Mailbox>> {
        self.connections.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Edge for EdgeRouter {
    fn deliver(&self, conn: &ConnId, frame: Frame) -> bool {
        if let Some(node) = self.is_remote(conn) {
            crate::telemetry::hot().cross_node_messages.increment(1);
            let msg = match frame.seq {
                Some(seq) => EdgeMsg::Numbered(conn.clone(), seq, frame.body, frame.kind, frame.epoch),
                None => EdgeMsg::Deliver(conn.clone(), frame.body),
            };
            return self.to_node(node, &msg);
        }
        match self.read().get(conn) {
            Some(mailbox) => mailbox.deliver(frame),
            None => false,
        }
    }

    fn reattach(&self, conn: &ConnId, room: &RoomId, epoch: i64) {
        if let Some(node) = self.is_remote(conn) {
            self.to_node(node, &EdgeMsg::Moved(conn.clone(), room.clone(), self.node_id.clone(), epoch));
            return;
        }
        self.moved(conn, room.clone(), self.node_id.clone(), epoch);
    }

    fn receipt(&self, conn: &ConnId, msg_id: &str) {
        if let Some(node) = self.is_remote(conn) {
            self.to_node(node, &EdgeMsg::Receipt(conn.clone(), msg_id.to_owned()));
            return;
        }
        if let Some(mailbox) = self.read().get(conn) {
            mailbox.receipt(msg_id.to_owned());
        }
    }

    fn route(&self, conn: &ConnId) -> u64 {
        let Some(node) = self.is_remote(conn) else { return LOCAL_ROUTE };
        // The link's number changes whenever what was sent on it may have been lost.
        self.links.get().and_then(|links| links.route(node)).unwrap_or(NO_ROUTE)
    }

    fn is_connected(&self, conn: &ConnId) -> bool {
        // Another node's connection counts as open while that node is reachable; if it is not,
        // its sessions leave when it is declared down.
        match self.is_remote(conn) {
            Some(node) => self.links.get().is_some_and(|links| links.edge_open(node)),
            None => self.read().contains_key(conn),
        }
    }
}
