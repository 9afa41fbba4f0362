//! Edge router: the directory of this node's open connections. Rooms deliver frames through
//! it by connection id, so a room never holds a connection's actor reference and a restarted
//! room finds its participants' connections again from the ids in the store.

use super::connection::ConnectionMsg;
use super::mailbox::Mailbox;
use ractor::{ActorId, ActorRef};
use std::collections::HashMap;
use std::sync::RwLock;
use switchboard_actors::ports::{Edge, Frame, LOCAL_ROUTE, NO_ROUTE};
use switchboard_actors::room::RoomMsg;
use switchboard_actors::{ConnId, RoomId};
use switchboard_cluster::routing::{EdgeMsg, edge_group, node_of};

/// Open connections of this node by id; frames for other nodes' connections go to their
/// node's edge link (process group `edge:{node}`).
pub struct EdgeRouter {
    node_id: String,
    connections: RwLock<HashMap<ConnId, Mailbox>>,
    /// The open connections of each user (most users have one), for what is sent to a person
    /// rather than to a session (notifications).
    users: RwLock<HashMap<String, Vec<ConnId>>>,
    /// Other nodes' edge links as last found, so that a frame for another node's connection
    /// costs no process-group lookup (found again once the link to that node is gone).
    links: RwLock<HashMap<String, ActorRef<EdgeMsg>>>,
}

impl EdgeRouter {
    /// The router of node `node_id`.
    pub fn new(node_id: &str) -> EdgeRouter {
        EdgeRouter {
            node_id: node_id.to_owned(),
            connections: RwLock::default(),
            users: RwLock::default(),
            links: RwLock::default(),
        }
    }

    /// Node `node`'s edge link, if it can be reached now.
    fn link(&self, node: &str) -> Option<ActorRef<EdgeMsg>> {
        let live = |l: &ActorRef<EdgeMsg>| {
            matches!(l.get_status(), ractor::ActorStatus::Running | ractor::ActorStatus::Starting)
        };
        if let Some(link) = self.links.read().unwrap_or_else(|p| p.into_inner()).get(node).filter(|l| live(l)) {
            return Some(link.clone());
        }
        let found: Option<ActorRef<EdgeMsg>> =
            ractor::pg::get_members(&edge_group(node)).into_iter().next().map(ActorRef::from);
        let mut links = self.links.write().unwrap_or_else(|p| p.into_inner());
        match &found {
            Some(link) => links.insert(node.to_owned(), link.clone()),
            None => links.remove(node),
        };
        found
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
        let me = edge_group(&self.node_id);
        for group in ractor::pg::which_groups() {
            if group.starts_with("edge:") && group != me {
                for cell in ractor::pg::get_members(&group) {
                    let link: ActorRef<EdgeMsg> = cell.into();
                    let _ = link.cast(EdgeMsg::ToUser(user.to_owned(), body.to_owned()));
                }
            }
        }
    }

    /// Gives connection `conn` (of this node or another) new grants (JSON of
    /// [`crate::auth::Grants`]); it tells its client `grants_changed`. False when its node is
    /// unreachable.
    pub fn set_grants(&self, conn: &ConnId, grants: &str) -> bool {
        if let Some(node) = self.is_remote(conn) {
            let Some(link) = self.link(node) else { return false };
            return link.cast(EdgeMsg::Grants(conn.to_string(), grants.to_owned())).is_ok();
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

    /// Tells a local connection that its room now lives on `node`.
    pub fn moved(&self, conn: &ConnId, room: RoomId, node: String) {
        if let Some(actor) = self.read().get(conn) {
            actor.cast(ConnectionMsg::Moved { room, node });
        }
    }

    /// Tells connection `conn` (of this node or another) that it was paired in `lobby` and
    /// should join `room`.
    pub fn paired(&self, conn: &ConnId, lobby: &str, room: &str) {
        if let Some(node) = self.is_remote(conn) {
            if let Some(link) = self.link(node) {
                let _ = link.cast(EdgeMsg::Paired(conn.to_string(), lobby.to_owned(), room.to_owned()));
            }
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
            let Some(link) = self.link(node) else { return false };
            crate::telemetry::hot().cross_node_messages.increment(1);
            let msg = match frame.seq {
                Some(seq) => EdgeMsg::Numbered(conn.to_string(), seq, frame.body.to_string(), frame.kind.to_u8()),
                None => EdgeMsg::Deliver(conn.to_string(), frame.body.to_string()),
            };
            return link.cast(msg).is_ok();
        }
        match self.read().get(conn) {
            Some(mailbox) => mailbox.deliver(frame),
            None => false,
        }
    }

    fn reattach(&self, conn: &ConnId, room: &RoomId) {
        if let Some(node) = self.is_remote(conn) {
            if let Some(link) = self.link(node) {
                let _ = link.cast(EdgeMsg::Moved(conn.to_string(), room.to_string(), self.node_id.clone()));
            }
            return;
        }
        self.moved(conn, room.clone(), self.node_id.clone());
    }

    fn receipt(&self, conn: &ConnId, msg_id: &str) {
        if let Some(node) = self.is_remote(conn) {
            if let Some(link) = self.link(node) {
                let _ = link.cast(EdgeMsg::Receipt(conn.to_string(), msg_id.to_owned()));
            }
            return;
        }
        if let Some(mailbox) = self.read().get(conn) {
            mailbox.cast(ConnectionMsg::Receipt(msg_id.to_owned()));
        }
    }

    fn route(&self, conn: &ConnId) -> u64 {
        let Some(node) = self.is_remote(conn) else { return LOCAL_ROUTE };
        match self.link(node).map(|link| link.get_id()) {
            // The node's edge link as this node's cluster session with it knows it: every new
            // session (after the link closed) numbers its remote actors afresh.
            Some(ActorId::Remote { node_id, pid }) => 1 + ((node_id << 32) ^ pid) % (u64::MAX - 2),
            Some(ActorId::Local(pid)) => 1 + pid % (u64::MAX - 2),
            None => NO_ROUTE,
        }
    }

    fn is_connected(&self, conn: &ConnId) -> bool {
        // Another node's connection counts as open while that node is reachable; if it is not,
        // its sessions leave when it is declared down.
        match self.is_remote(conn) {
            Some(node) => self.link(node).is_some(),
            None => self.read().contains_key(conn),
        }
    }
}
