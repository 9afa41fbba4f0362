//! A room's relay table: its sessions' delivery state (connection, presence, numbering and
//! replay buffer, the ids seen from each), behind one lock that the Room actor and this node's
//! connections share.
//!
//! A relayed message (offer, answer, candidate) from a connection on the room's node does not
//! go through the Room actor's mailbox: the sender's task takes the lock, makes the relay
//! decision (is the sender here, is the target, has this `id` been seen), numbers the frame
//! in the target's sequence, keeps it for replay, hands it to the target's connection and
//! acknowledges it, all at once. Everything else the room does (joins, leaves, chat, control,
//! timers, database work) stays in the actor, which takes the same lock for each frame it
//! sends, so a session's frames are numbered in one sequence whoever sends them.
//!
//! Sender order across both paths: a connection that handed one of its messages to the actor
//! does not take the fast path again until the actor has handled it (`at_room`), so a later
//! offer cannot overtake an earlier chat waiting for the database.

use crate::error::ErrorCode;
use crate::ids::{ConnId, PeerId, RoomId};
use crate::node_lease::NodeLease;
use crate::outbox::{Outbox, REPLAY_FRAMES};
use crate::ports::{Edge, Frame, NO_ROUTE};
use crate::protocol::{Body, RawJson, RelayKind, ServerMessage};
use crate::recent::Recent;
use serde_json::Value;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// The shared table of one room instance.
pub struct RelayTable {
    inner: Mutex<Table>,
    edge: Arc<dyn Edge>,
}

/// What the lock protects.
pub struct Table {
    /// The room.
    pub room: RoomId,
    /// False once the instance stopped or lost its lease: the fast path must not use it.
    pub open: bool,
    /// In a cluster, the node lease and the term the room is owned at: the room may act only
    /// while the lease holds that term.
    pub lease: Option<(Arc<NodeLease>, i64)>,
    /// One per session in the room.
    pub sessions: Vec<Session>,
    /// The instance's ownership epoch, carried by every frame it numbers (see `Frame::epoch`).
    pub epoch: i64,
}

/// A session's delivery state.
pub struct Session {
    /// The session.
    pub peer: PeerId,
    /// The connection that carries it.
    pub conn: ConnId,
    /// False while the connection is gone and the session may still resume.
    pub connected: bool,
    /// Loaded by this instance and not yet synced with its connection: frames are kept, not
    /// sent (see the Room actor).
    pub adopted: bool,
    /// The `id`s of the session's latest messages, to drop re-sent ones.
    pub seen_ids: Recent<String>,
    /// The session's numbered frames.
    pub outbox: Outbox,
    /// Messages from this session on their way through the Room actor.
    pub at_room: u32,
    /// The path its frames took so far ([`Edge::route`]); `None` until the first one.
    pub route: Option<u64>,
    /// Frames may have been lost on the way to the connection (the link to its node changed
    /// under them): they are kept, not sent, until the connection says how far its client
    /// has counted (`SeqSync`), and then everything after that is sent.
    pub stalled: bool,
}

impl Session {
    /// A session on `conn` whose next frame is numbered `first_seq`.
    pub fn new(peer: PeerId, conn: ConnId, first_seq: u64) -> Session {
        Session {
            peer,
            conn,
            connected: true,
            adopted: false,
            seen_ids: Recent::new(REPLAY_FRAMES),
            outbox: Outbox::starting_at(first_seq),
            at_room: 0,
            route: None,
            stalled: false,
        }
    }
}

/// What the fast path did with a relayed message.
#[derive(Debug, PartialEq, Eq)]
pub enum Relayed {
    /// Handled here (delivered and acknowledged, acknowledged again, or answered with an error).
    Done,
    /// Not handled: send it to the Room actor (the instance is closed, or the sender has
    /// messages on their way through the actor).
    ToRoom,
}

/// A relayed message as the edge parsed it.
pub struct RelayRequest<'a> {
    /// Sender session.
    pub from: &'a PeerId,
    /// Target session.
    pub to: &'a PeerId,
    /// Which message.
    pub kind: RelayKind,
    /// The SDP or the candidate.
    pub payload: RelayBody<'a>,
    /// The client's `id`.
    pub reference: Option<&'a Value>,
    /// When the edge received it.
    pub received_at: Instant,
    /// A repeat whose receipt is overdue: passed on even when seen (see `RoomMsg::Relay`).
    pub again: bool,
}

impl RelayRequest<'_> {
    /// The frame body the target gets: the same type, `peerId` set to the sender; `None` for a
    /// kind and payload that do not go together (the parser never makes one).
    pub fn body(&self) -> Option<Body> {
        let (peer_id, msg_id) = (self.from, self.reference);
        let message = match (self.kind, &self.payload) {
            (RelayKind::Offer, RelayBody::Sdp(sdp)) => ServerMessage::Offer { peer_id, msg_id, sdp },
            (RelayKind::Answer, RelayBody::Sdp(sdp)) => ServerMessage::Answer { peer_id, msg_id, sdp },
            (RelayKind::IceCandidate, RelayBody::Candidate(candidate)) => {
                ServerMessage::IceCandidate { peer_id, msg_id, candidate }
            }
            _ => return None,
        };
        Some(message.to_body())
    }
}

/// What a relay carries.
pub enum RelayBody<'a> {
    /// An offer's or answer's SDP (a JSON string, as the client wrote it).
    Sdp(&'a RawJson),
    /// A trickled candidate (as the client wrote it).
    Candidate(&'a RawJson),
}

impl RelayTable {
    /// An empty, open table delivering through `edge`.
    pub fn new(room: RoomId, edge: Arc<dyn Edge>) -> RelayTable {
        RelayTable { inner: Mutex::new(Table { room, open: true, lease: None, sessions: Vec::new(), epoch: 0 }), edge }
    }

    /// The table, locked. Held only for synchronous work (never across an await).
    pub fn lock(&self) -> MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The fast path: relays `req` from the sender's connection if this instance may act.
    pub fn relay_from_edge(&self, req: &RelayRequest<'_>) -> Relayed {
        // Serialized before the lock is taken: the lock covers only the decision and the
        // numbering.
        let Some(body) = req.body() else { return Relayed::ToRoom };
        let mut t = self.lock();
        if !t.open || t.lease.as_ref().is_some_and(|(lease, term)| !lease.holds(*term)) {
            return Relayed::ToRoom;
        }
        match t.session(req.from) {
            Some(s) if s.at_room == 0 => {}
            // Unknown senders and senders with messages queued at the actor go the slow way
            // (the actor ignores the first kind).
            _ => return Relayed::ToRoom,
        }
        t.relay(&*self.edge, req, &body);
        Relayed::Done
    }

    /// The edge hands a message from `peer` to the Room actor (it will call [`handled`]).
    ///
    /// [`handled`]: Self::handled
    pub fn queued_at_room(&self, peer: &PeerId) {
        if let Some(s) = self.lock().session_mut(peer) {
            s.at_room += 1;
        }
    }

    /// The Room actor handled a message the edge counted with [`queued_at_room`].
    ///
    /// [`queued_at_room`]: Self::queued_at_room
    pub fn handled(&self, peer: &PeerId) {
        if let Some(s) = self.lock().session_mut(peer) {
            s.at_room = s.at_room.saturating_sub(1);
        }
    }

    /// Routes a delivery receipt to the connection of `sender`, the session whose message
    /// `msg_id` its target's connection wrote. A sender that is away gets none: its connection,
    /// and what it kept, are gone with it.
    pub fn receipt(&self, sender: &PeerId, msg_id: &str) {
        let t = self.lock();
        if let Some(s) = t.session(sender)
            && s.connected
        {
            self.edge.receipt(&s.conn, msg_id);
        }
    }

    /// The client of `peer`'s connection `conn` has every frame up to `last_seq` (this room's
    /// numbering): what is kept for its replay up to there is forgotten.
    pub fn confirmed(&self, peer: &PeerId, conn: &ConnId, last_seq: u64) {
        if let Some(s) = self.lock().session_mut(peer)
            && &s.conn == conn
            && !s.adopted
        {
            s.outbox.forget_through(last_seq);
        }
    }

    /// Delivery, for the table's owner.
    pub fn edge(&self) -> &dyn Edge {
        &*self.edge
    }
}

impl Table {
    /// The session of `peer`.
    pub fn session(&self, peer: &PeerId) -> Option<&Session> {
        self.sessions.iter().find(|s| &s.peer == peer)
    }

    /// The session of `peer`, to change.
    pub fn session_mut(&mut self, peer: &PeerId) -> Option<&mut Session> {
        self.sessions.iter_mut().find(|s| &s.peer == peer)
    }

    /// Numbers a frame in `peer`'s sequence, keeps it for replay and sends it if the session is
    /// connected. Returns false when there is no such session.
    pub fn send_to(&mut self, edge: &dyn Edge, peer: &PeerId, body: &Body, received_at: Option<Instant>) -> bool {
        self.numbered(edge, peer, received_at, body, |outbox| outbox.push(body))
    }

    /// Like [`send_to`](Self::send_to), for a frame that is not kept for replay.
    pub fn send_unkept(&mut self, edge: &dyn Edge, peer: &PeerId, body: &Body) -> bool {
        self.numbered(edge, peer, None, body, |outbox| outbox.push_unkept(body))
    }

    fn numbered(
        &mut self,
        edge: &dyn Edge,
        peer: &PeerId,
        received_at: Option<Instant>,
        body: &Body,
        number: impl FnOnce(&mut Outbox) -> (u64, Arc<str>),
    ) -> bool {
        let (room, epoch) = (&self.room, self.epoch);
        let Some(s) = self.sessions.iter_mut().find(|s| &s.peer == peer) else { return false };
        let (seq, framed) = number(&mut s.outbox);
        if s.connected && !s.adopted && !s.stalled {
            let route = edge.route(&s.conn);
            if route == NO_ROUTE || s.route.is_some_and(|before| before != route) {
                // What was sent on the old link may not have arrived, and what is sent now
                // would follow a gap: keep it all until the connection says what it has.
                s.stalled = true;
                metrics::counter!("switchboard_session_stalls_total").increment(1);
                tracing::debug!(peer_id = %s.peer, seq, "link to the connection changed; resyncing");
                if route != NO_ROUTE {
                    edge.reattach(&s.conn, room, epoch);
                }
                return true;
            }
            s.route = Some(route);
            edge.deliver(&s.conn, Frame { body: framed, received_at, seq: Some(seq), kind: body.kind, epoch });
        }
        true
    }

    /// Whether a message with this `id` is new from `from` (and remembers it). A message seen
    /// before is acknowledged again instead: re-sending is how clients make delivery reliable,
    /// and it must not deliver twice.
    pub fn first_time(&mut self, edge: &dyn Edge, from: &PeerId, reference: Option<&Value>) -> bool {
        if self.sender_unsynced(from, reference) {
            return false;
        }
        let Some(id) = reference.map(Value::to_string) else { return true };
        let Some(s) = self.session_mut(from) else { return true };
        if !s.seen_ids.insert(id) {
            metrics::counter!("switchboard_duplicates_dropped_total").increment(1);
            let body = ServerMessage::Ack { reference: reference.unwrap_or(&Value::Null) }.to_body();
            self.send_to(edge, from, &body, None);
            return false;
        }
        true
    }

    /// Whether a kept message (one with an `id`) comes from a session this instance adopted
    /// and whose connection has not told it yet how far its client has counted. Such a message
    /// is not taken (nor acknowledged): the connection may still hold older messages that a
    /// dead instance acknowledged and never delivered, and it sends those again first, in
    /// order, once it finds this instance (its `SeqSync` ends the adoption). Taking the newer
    /// one now would let it overtake them; unacknowledged, it simply goes again behind them.
    fn sender_unsynced(&self, from: &PeerId, reference: Option<&Value>) -> bool {
        let unsynced = reference.is_some() && self.session(from).is_some_and(|s| s.adopted);
        if unsynced {
            tracing::debug!(peer_id = %from, "a kept message before the session's count; not taken");
            metrics::counter!("switchboard_unsynced_messages_deferred_total").increment(1);
        }
        unsynced
    }

    /// The relay decision, for both paths: drops repeats, refuses unknown targets, delivers
    /// `body` (from [`RelayRequest::body`]) and acknowledges.
    pub fn relay(&mut self, edge: &dyn Edge, req: &RelayRequest<'_>, body: &Body) {
        if self.session(req.from).is_none() || self.sender_unsynced(req.from, req.reference) {
            return;
        }
        if !self.first_time(edge, req.from, req.reference) {
            // The sender's edge has no receipt for it: a connected target gets it again, and
            // drops it if it has it (confirming again) or writes it if it never did. (An away
            // target's kept frames, replayed on its resume, are not filled with repeats; it
            // confirms what it has when its connection finds the room again.)
            if req.again && self.session(req.to).is_some_and(|s| s.connected && !s.adopted) {
                self.send_to(edge, req.to, body, None);
            }
            return;
        }
        if self.session(req.to).is_none() {
            let message = format!("peer {} is not in this room", req.to);
            let body = ServerMessage::Error {
                code: ErrorCode::PeerNotFound.as_str(),
                message: &message,
                reference: req.reference,
            }
            .to_body();
            self.send_to(edge, req.from, &body, None);
            return;
        }
        self.send_to(edge, req.to, body, Some(req.received_at));
        if let Some(reference) = req.reference {
            self.send_to(edge, req.from, &ServerMessage::Ack { reference }.to_body(), None);
        }
    }
}
