//! Cross-node routing: what crosses between nodes, and where it lands.
//!
//! - [`RoomHost`] (the remotable actor in process group `host:{node}`) answers the calls that
//!   wait for an answer: a join (answered with the new peer id), a resume, an operator's
//!   command, and takes rooms handed off by a draining node.
//! - Every other room command and every frame for a connection crosses on the node link
//!   ([`crate::link`]): its reader hands a room command to the room through a
//!   [`RoomDoor`](crate::link::door::RoomDoor)
//!   and an [`EdgeMsg`] to this node's connections through [`EdgeLinkArgs::handle`].
//!
//! Rooms and connections stay local-only actors; only ids and payloads cross nodes.

use crate::link::Links;
use crate::wire::Bincode;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use switchboard_actors::ids::{ConnId, PeerId, RoomId, UserId};
use switchboard_actors::media::ControlAction;
use switchboard_actors::ports::{Edge, Frame};
use switchboard_actors::protocol::{FrameKind, Overlay, RawJson, RelayKind, ServerMessage};
use switchboard_actors::room::admin::{AdminAction, AdminDone};
use switchboard_actors::room::local::LocalRoom;
use switchboard_actors::room::{Carry, JoinRequest, RelayPayload, RoomMsg};
use switchboard_actors::room_supervisor::RoomSupervisorMsg;
use switchboard_actors::{ErrorCode, RoomError};

/// The process group of a node's room host.
pub fn host_group(node: &str) -> String {
    format!("host:{node}")
}

/// A join forwarded to the owner's node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinCmd {
    /// The room.
    pub room: String,
    /// The joining connection (its id names its node).
    pub conn: String,
    /// The user.
    pub user: String,
    /// Display name.
    pub display_name: String,
    /// ICE servers for `joined`, as JSON text.
    pub ice_servers: String,
    /// Admin grant.
    pub admin: bool,
    /// The session's next frame number.
    pub first_seq: u64,
    /// Not shown to the others.
    #[serde(default)]
    pub hidden: bool,
}

/// The answer to a forwarded join: the peer id, or an error code and message.
pub type JoinOutcome = Result<String, (String, String)>;

/// A room message forwarded to the owner's node. JSON values travel as text (an SDP and a
/// candidate as their sender wrote them): bincode cannot carry self-describing values.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RoomCmd {
    /// See [`RoomMsg::Leave`].
    Leave { peer: String, reason: String },
    /// See [`RoomMsg::Relay`].
    Relay {
        from: String,
        to: String,
        kind: u8,
        sdp: Option<String>,
        candidate: Option<String>,
        reference: Option<String>,
        again: bool,
    },
    /// See [`RoomMsg::Control`].
    Control { from: String, action: ControlAction, reference: Option<String> },
    /// See [`RoomMsg::Overlay`].
    Overlay { from: String, overlay: String },
    /// See [`RoomMsg::Chat`].
    Chat { from: String, text: String, reference: Option<String> },
    /// See [`RoomMsg::EndCall`].
    EndCall { from: String, reference: Option<String> },
    /// See [`RoomMsg::Stats`] (the sample as JSON text).
    Stats { from: String, sample: String, reference: Option<String> },
    /// See [`RoomMsg::Echo`].
    Echo { from: String, body: String, kind: FrameKind },
    /// See [`RoomMsg::Notify`].
    Notify { body: String },
    /// See [`RoomMsg::Disconnected`].
    Disconnected { peer: String, conn: String, seq_shift: i64 },
    /// See [`RoomMsg::SeqSync`].
    SeqSync { peer: String, conn: String, last_seq: u64, seq_offset: i64 },
    /// See [`RoomMsg::Receipt`].
    Receipt { sender: String, msg_id: String },
    /// See [`RoomMsg::SeqShift`].
    SeqShift { peer: String, conn: String, seq_offset: i64 },
    /// See [`RoomMsg::Confirmed`].
    Confirmed { peer: String, conn: String, last_seq: u64 },
}

fn json_text(v: &Option<Value>) -> Option<String> {
    v.as_ref().map(Value::to_string)
}

fn json_value(s: &Option<String>) -> Option<Value> {
    s.as_deref().and_then(|s| serde_json::from_str(s).ok())
}

impl RoomCmd {
    /// The wire form of a room message; `None` for messages that never cross nodes.
    pub fn from_room_msg(msg: &RoomMsg) -> Option<RoomCmd> {
        Some(match msg {
            RoomMsg::Leave { peer, reason } => RoomCmd::Leave { peer: peer.to_string(), reason: reason.clone() },
            RoomMsg::Relay { from, to, kind, payload, reference, again, .. } => {
                let (sdp, candidate) = match payload {
                    RelayPayload::Sdp(s) => (Some(s.as_str().to_owned()), None),
                    RelayPayload::Candidate(c) => (None, Some(c.as_str().to_owned())),
                };
                let kind = match kind {
                    RelayKind::Offer => 0,
                    RelayKind::Answer => 1,
                    RelayKind::IceCandidate => 2,
                };
                RoomCmd::Relay {
                    from: from.to_string(),
                    to: to.to_string(),
                    kind,
                    sdp,
                    candidate,
                    reference: json_text(reference),
                    again: *again,
                }
            }
            RoomMsg::Control { from, action, reference } => {
                RoomCmd::Control { from: from.to_string(), action: *action, reference: json_text(reference) }
            }
            RoomMsg::Overlay { from, overlay } => {
                RoomCmd::Overlay { from: from.to_string(), overlay: serde_json::to_string(overlay).ok()? }
            }
            RoomMsg::Chat { from, text, reference } => {
                RoomCmd::Chat { from: from.to_string(), text: text.clone(), reference: json_text(reference) }
            }
            RoomMsg::EndCall { from, reference } => {
                RoomCmd::EndCall { from: from.to_string(), reference: json_text(reference) }
            }
            RoomMsg::Echo { from, body, kind } => {
                RoomCmd::Echo { from: from.to_string(), body: body.clone(), kind: *kind }
            }
            RoomMsg::Notify { body } => RoomCmd::Notify { body: body.clone() },
            RoomMsg::SeqSync { peer, conn, last_seq, seq_offset } => RoomCmd::SeqSync {
                peer: peer.to_string(),
                conn: conn.to_string(),
                last_seq: *last_seq,
                seq_offset: *seq_offset,
            },
            RoomMsg::Disconnected { peer, conn, seq_shift } => {
                RoomCmd::Disconnected { peer: peer.to_string(), conn: conn.to_string(), seq_shift: *seq_shift }
            }
            RoomMsg::Stats { from, sample, reference } => RoomCmd::Stats {
                from: from.to_string(),
                sample: serde_json::to_string(sample).ok()?,
                reference: json_text(reference),
            },
            RoomMsg::Receipt { sender, msg_id } => {
                RoomCmd::Receipt { sender: sender.to_string(), msg_id: msg_id.clone() }
            }
            RoomMsg::SeqShift { peer, conn, seq_offset } => {
                RoomCmd::SeqShift { peer: peer.to_string(), conn: conn.to_string(), seq_offset: *seq_offset }
            }
            RoomMsg::Confirmed { peer, conn, last_seq } => {
                RoomCmd::Confirmed { peer: peer.to_string(), conn: conn.to_string(), last_seq: *last_seq }
            }
            _ => return None,
        })
    }

    /// The room message again, on the owner's node.
    pub fn into_room_msg(self) -> Option<RoomMsg> {
        Some(match self {
            RoomCmd::Leave { peer, reason } => RoomMsg::Leave { peer: PeerId::new(peer), reason },
            RoomCmd::Relay { from, to, kind, sdp, candidate, reference, again } => {
                let (kind, payload) = match (kind, sdp, candidate) {
                    (0, Some(s), _) => (RelayKind::Offer, RelayPayload::Sdp(RawJson::parse_string(s)?)),
                    (1, Some(s), _) => (RelayKind::Answer, RelayPayload::Sdp(RawJson::parse_string(s)?)),
                    (2, _, Some(c)) => (RelayKind::IceCandidate, RelayPayload::Candidate(RawJson::parse(c).ok()?)),
                    _ => return None,
                };
                RoomMsg::Relay {
                    from: PeerId::new(from),
                    to: PeerId::new(to),
                    kind,
                    payload,
                    reference: json_value(&reference),
                    received_at: Instant::now(),
                    again,
                }
            }
            RoomCmd::Control { from, action, reference } => {
                RoomMsg::Control { from: PeerId::new(from), action, reference: json_value(&reference) }
            }
            RoomCmd::Overlay { from, overlay } => {
                RoomMsg::Overlay { from: PeerId::new(from), overlay: serde_json::from_str::<Overlay>(&overlay).ok()? }
            }
            RoomCmd::Chat { from, text, reference } => {
                RoomMsg::Chat { from: PeerId::new(from), text, reference: json_value(&reference) }
            }
            RoomCmd::EndCall { from, reference } => {
                RoomMsg::EndCall { from: PeerId::new(from), reference: json_value(&reference) }
            }
            RoomCmd::Echo { from, body, kind } => RoomMsg::Echo { from: PeerId::new(from), body, kind },
            RoomCmd::Notify { body } => RoomMsg::Notify { body },
            RoomCmd::SeqSync { peer, conn, last_seq, seq_offset } => {
                RoomMsg::SeqSync { peer: PeerId::new(peer), conn: ConnId::new(conn), last_seq, seq_offset }
            }
            RoomCmd::Disconnected { peer, conn, seq_shift } => {
                RoomMsg::Disconnected { peer: PeerId::new(peer), conn: ConnId::new(conn), seq_shift }
            }
            RoomCmd::Stats { from, sample, reference } => RoomMsg::Stats {
                from: PeerId::new(from),
                sample: serde_json::from_str(&sample).ok()?,
                reference: json_value(&reference),
            },
            RoomCmd::Receipt { sender, msg_id } => RoomMsg::Receipt { sender: PeerId::new(sender), msg_id },
            RoomCmd::SeqShift { peer, conn, seq_offset } => {
                RoomMsg::SeqShift { peer: PeerId::new(peer), conn: ConnId::new(conn), seq_offset }
            }
            RoomCmd::Confirmed { peer, conn, last_seq } => {
                RoomMsg::Confirmed { peer: PeerId::new(peer), conn: ConnId::new(conn), last_seq }
            }
        })
    }
}

/// Messages of a node's room host. Variants are identified by name on the wire: add, never rename.
#[derive(RactorClusterMessage)]
pub enum HostMsg {
    /// A join for a room this node should own; answers with the outcome.
    #[rpc]
    Join(Bincode<JoinCmd>, RpcReplyPort<Bincode<JoinOutcome>>),
    /// Take over a room handed off by a draining node: start it here from the database and
    /// what its previous instance handed over.
    Adopt(String, Bincode<Carry>),
    /// A new connection resumes a session of a room this node owns.
    #[rpc]
    Resume(Bincode<ResumeCmd>, RpcReplyPort<Bincode<JoinOutcome>>),
    /// A node's command for a room running here. Answers [`AdminOutcome`]; a room that is
    /// not running here is not started for it.
    #[rpc]
    Admin(Bincode<AdminCmd>, RpcReplyPort<Bincode<AdminOutcome>>),
}

/// A node's command for a room, on its way to the room's node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdminCmd {
    /// The room.
    pub room: String,
    /// What to do.
    pub action: AdminAction,
}

/// What a room did with an [`AdminAction`], or why it could not be asked: (code, sentence),
/// code `not_running` when the room runs nowhere here.
pub type AdminOutcome = Result<AdminDone, (String, String)>;

/// Asks the room running on this node to carry out `action`; `not_running` when it is not.
pub async fn local_admin(rooms: &ActorRef<RoomSupervisorMsg>, room: RoomId, action: AdminAction) -> AdminOutcome {
    let found = rooms.call(|reply| RoomSupervisorMsg::Lookup { room, reply }, Some(Duration::from_secs(5))).await;
    let Ok(CallResult::Success(Some(actor))) = found else {
        return Err(("not_running".into(), "the room is not running on this node".into()));
    };
    match actor.call(|reply| RoomMsg::Admin { action, reply }, Some(Duration::from_secs(10))).await {
        Ok(CallResult::Success(Ok(done))) => Ok(done),
        Ok(CallResult::Success(Err(e))) => Err((e.code.as_str().to_owned(), e.message)),
        _ => Err(("room_unavailable".into(), "the room did not answer; try again".into())),
    }
}

/// A resume forwarded to the room's owner.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResumeCmd {
    /// The room.
    pub room: String,
    /// The session.
    pub peer: String,
    /// The new connection's user.
    pub user: String,
    /// The new connection.
    pub conn: String,
    /// The session's secret.
    pub token: String,
    /// The last frame the client received.
    pub last_seq: u64,
}

/// What a room elsewhere (or a node) sends to this node's connections, on the node link.
#[derive(Debug)]
pub enum EdgeMsg {
    /// A frame for one of this node's connections: (connection, JSON body without `seq`).
    Deliver(ConnId, Arc<str>),
    /// A frame the room numbered in the session's sequence: (connection, seq, JSON body with
    /// its `seq`, what it is, the numbering instance's ownership epoch).
    Numbered(ConnId, u64, Arc<str>, FrameKind, i64),
    /// A delivery receipt for one of this node's connections: (connection, message id).
    Receipt(ConnId, String),
    /// A command of one of this node's connections reached a node that does not serve its
    /// room: (connection, room, node to try, command). The connection finds the room again
    /// and re-sends it.
    Bounce(ConnId, RoomId, String, RoomCmd),
    /// A room one of this node's connections is in has moved, or runs in a new instance:
    /// (connection, room, node, the instance's ownership epoch or 0 when not known).
    Moved(ConnId, RoomId, String, i64),
    /// One of this node's connections waiting in a lobby was paired: (connection, lobby,
    /// room to join).
    Paired(ConnId, String, String),
    /// A frame for every connection of a user on this node, in or out of a room: (user, JSON
    /// body without `seq`).
    ToUser(String, String),
    /// New grants for one of this node's connections: (connection, grants as JSON).
    Grants(ConnId, String),
}

/// The room host actor.
pub struct RoomHost;

/// What the room host needs.
pub struct RoomHostArgs {
    /// This node.
    pub node_id: String,
    /// The local room supervisor.
    pub rooms: ActorRef<RoomSupervisorMsg>,
    /// Delivery to connections (for errors about commands that found no room).
    pub edge: Arc<dyn Edge>,
    /// Set while the node drains: it starts no room and sends commands on.
    pub draining: Arc<AtomicBool>,
    /// Where a room should go when this node gives it up (placement over the other members).
    pub successor: Successor,
    /// The links to the other nodes (bounced commands go back on them).
    pub links: Links,
}

/// Picks the node a room should move to when this node gives it up.
pub type Successor = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

impl Actor for RoomHost {
    type Msg = HostMsg;
    type State = Arc<RoomHostArgs>;
    type Arguments = Arc<RoomHostArgs>;

    async fn pre_start(
        &self,
        myself: ActorRef<HostMsg>,
        args: Arc<RoomHostArgs>,
    ) -> Result<Arc<RoomHostArgs>, ActorProcessingErr> {
        ractor::pg::join(host_group(&args.node_id), vec![myself.get_cell()]);
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<HostMsg>,
        msg: HostMsg,
        args: &mut Arc<RoomHostArgs>,
    ) -> Result<(), ActorProcessingErr> {
        let state = &**args;
        match msg {
            HostMsg::Join(cmd, reply) => {
                if state.draining.load(Ordering::Acquire) {
                    let refusal = ("room_elsewhere".to_owned(), "this node is draining; the room is moving".to_owned());
                    let _ = reply.send(Bincode(Err(refusal)));
                    return Ok(());
                }
                // The join waits on the room (a database write); it runs apart so the host
                // keeps taking other commands meanwhile.
                let rooms = state.rooms.clone();
                tokio::spawn(async move {
                    let _ = reply.send(Bincode(remote_join(rooms, cmd.0).await));
                });
            }
            HostMsg::Resume(cmd, reply) => {
                let rooms = state.rooms.clone();
                let may_start = !state.draining.load(Ordering::Acquire);
                tokio::spawn(async move {
                    let _ = reply.send(Bincode(local_resume(rooms, cmd.0, may_start).await));
                });
            }
            HostMsg::Admin(cmd, reply) => {
                let rooms = state.rooms.clone();
                tokio::spawn(async move {
                    let AdminCmd { room, action } = cmd.0;
                    let _ = reply.send(Bincode(local_admin(&rooms, RoomId::new(room), action).await));
                });
            }
            HostMsg::Adopt(room, carry) => {
                if !state.draining.load(Ordering::Acquire) {
                    let room = RoomId::new(room);
                    let asked = state
                        .rooms
                        .call(
                            |reply| RoomSupervisorMsg::Adopt { room: room.clone(), carry: carry.0, reply },
                            Some(Duration::from_secs(10)),
                        )
                        .await;
                    match asked {
                        Ok(CallResult::Success(Ok(_))) => {
                            metrics::counter!("switchboard_rehomes_total", "cause" => "handoff").increment(1)
                        }
                        Ok(CallResult::Success(Err(e))) => {
                            tracing::warn!(room_id = %room, error = %e, "room not adopted: what its previous instance kept is lost")
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }
}

/// Resumes a session in a room of this node. Unless `may_start` is false (the node drains),
/// the room is started if it is not running (after its node died, say): it loads its
/// sessions, this one among them, from the store.
pub async fn local_resume(rooms: ActorRef<RoomSupervisorMsg>, cmd: ResumeCmd, may_start: bool) -> JoinOutcome {
    let room = RoomId::new(&cmd.room);
    let asked = if may_start {
        rooms.call(|reply| RoomSupervisorMsg::Resolve { room, reply }, Some(Duration::from_secs(10))).await
    } else {
        match rooms.call(|reply| RoomSupervisorMsg::Lookup { room, reply }, Some(Duration::from_secs(10))).await {
            Ok(CallResult::Success(Some(actor))) => Ok(CallResult::Success(Ok(actor))),
            _ => return Err(("unavailable".into(), "the room is moving to another node; try again".into())),
        }
    };
    let actor = match asked {
        Ok(CallResult::Success(Ok(actor))) => actor,
        Ok(CallResult::Success(Err(e))) => return Err(("unavailable".into(), e.message)),
        _ => return Err(("unavailable".into(), "the session's room is not reachable yet; try again".into())),
    };
    let msg = |reply| RoomMsg::Resume {
        peer: PeerId::new(&cmd.peer),
        user: UserId::new(&cmd.user),
        conn: ConnId::new(&cmd.conn),
        token: cmd.token.clone(),
        last_seq: cmd.last_seq,
        reply,
    };
    match actor.call(msg, Some(Duration::from_secs(10))).await {
        Ok(CallResult::Success(Ok(()))) => Ok(cmd.peer.clone()),
        Ok(CallResult::Success(Err(e))) => Err(e),
        _ => Err(("unavailable".into(), "the session's room did not answer; try again".into())),
    }
}

async fn remote_join(rooms: ActorRef<RoomSupervisorMsg>, cmd: JoinCmd) -> JoinOutcome {
    let err = |e: RoomError| (e.code.as_str().to_owned(), e.message);
    let room = RoomId::new(&cmd.room);
    let actor =
        match rooms.call(|reply| RoomSupervisorMsg::Resolve { room, reply }, Some(Duration::from_secs(10))).await {
            Ok(CallResult::Success(Ok(actor))) => actor,
            Ok(CallResult::Success(Err(e))) => return Err(err(e)),
            _ => return Err(("room_unavailable".into(), "the room is not reachable; try again".into())),
        };
    let request = JoinRequest {
        conn: ConnId::new(cmd.conn),
        user: UserId::new(cmd.user),
        display_name: cmd.display_name,
        ice_servers: serde_json::from_str(&cmd.ice_servers).unwrap_or(Value::Array(Vec::new())),
        admin: cmd.admin,
        first_seq: cmd.first_seq,
        hidden: cmd.hidden,
    };
    match actor.call(|reply| RoomMsg::Join { request, reply }, Some(Duration::from_secs(10))).await {
        Ok(CallResult::Success(Ok(peer))) => Ok(peer.to_string()),
        Ok(CallResult::Success(Err(e))) => Err(err(e)),
        _ => Err(("room_unavailable".into(), "the room is not reachable; try again".into())),
    }
}

/// The room's instance here, with its relay table; started if nobody runs it. `Err` with where
/// the room should go instead (when this node drains), if known.
pub(crate) async fn find_local_room(state: &RoomHostArgs, room: &RoomId) -> Result<LocalRoom, Option<String>> {
    let found = state
        .rooms
        .call(|reply| RoomSupervisorMsg::Lookup { room: room.clone(), reply }, Some(Duration::from_secs(5)))
        .await;
    let actor = match found {
        Ok(CallResult::Success(Some(actor))) => actor,
        _ if state.draining.load(Ordering::Acquire) => return Err((state.successor)(room.as_str())),
        _ => match state
            .rooms
            .call(|reply| RoomSupervisorMsg::Resolve { room: room.clone(), reply }, Some(Duration::from_secs(10)))
            .await
        {
            Ok(CallResult::Success(Ok(actor))) => {
                // A command for a room that is not running here started it: its previous
                // owner died or gave it up.
                metrics::counter!("switchboard_rehomes_total", "cause" => "on_demand").increment(1);
                actor
            }
            _ => return Err(None),
        },
    };
    // Asked once per instance, never per message.
    match actor.call(RoomMsg::Table, Some(Duration::from_secs(10))).await {
        Ok(CallResult::Success(table)) => Ok(LocalRoom { actor, table }),
        _ => Err(None),
    }
}

pub(crate) fn bounce(state: &RoomHostArgs, room: RoomId, conn: ConnId, cmd: RoomCmd, hint: String) {
    metrics::counter!("switchboard_routing_misses_total").increment(1);
    let node = node_of(&conn).map(str::to_owned).unwrap_or_default();
    let bounced = EdgeMsg::Bounce(conn.clone(), room, hint, cmd);
    match state.links.to_edge(&node, &bounced) {
        true => {}
        false => {
            let body = ServerMessage::Error {
                code: ErrorCode::RoomUnavailable.as_str(),
                message: "the room is moving; try again",
                reference: None,
            }
            .to_body();
            state
                .edge
                .deliver(&conn, Frame { body: body.text, received_at: None, seq: None, kind: body.kind, epoch: 0 });
        }
    }
}

/// Re-sends a bounced command from the connection that sent it: (connection, room, node to
/// try, message).
pub type Reroute = Arc<dyn Fn(ConnId, RoomId, String, RoomMsg) + Send + Sync>;

/// What the node link needs to hand [`EdgeMsg`]s to this node's connections.
pub struct EdgeLinkArgs {
    /// This node.
    pub node_id: String,
    /// This node's connections.
    pub edge: Arc<dyn Edge>,
    /// Hands bounced commands back to their connection.
    pub reroute: Reroute,
    /// Tells a connection its room now lives on another node.
    pub moved: Moved,
    /// Tells a connection waiting in a lobby that it was paired.
    pub paired: Paired,
    /// Writes a frame to every connection of a user on this node.
    pub to_user: ToUser,
    /// Changes the grants of a connection of this node.
    pub grants: SetGrants,
}

/// Changes the grants of a connection of this node: (connection, grants as JSON).
pub type SetGrants = Arc<dyn Fn(ConnId, String) + Send + Sync>;

/// Writes a frame to every connection of a user on this node: (user, JSON body without `seq`).
pub type ToUser = Arc<dyn Fn(String, String) + Send + Sync>;

/// Tells a connection waiting in a lobby which room it was paired into: (connection, lobby,
/// room).
pub type Paired = Arc<dyn Fn(ConnId, String, String) + Send + Sync>;

/// Re-points a connection at its room's new node: (connection, room, node, the instance's
/// ownership epoch or 0 when not known).
pub type Moved = Arc<dyn Fn(ConnId, RoomId, String, i64) + Send + Sync>;

impl EdgeLinkArgs {
    /// Hands `msg` to this node's connections.
    pub fn handle(&self, msg: EdgeMsg) {
        match msg {
            EdgeMsg::Deliver(conn, body) => {
                self.edge
                    .deliver(&conn, Frame { body, received_at: None, seq: None, kind: FrameKind::Other, epoch: 0 });
            }
            EdgeMsg::Numbered(conn, seq, body, kind, epoch) => {
                self.edge.deliver(&conn, Frame { body, received_at: None, seq: Some(seq), kind, epoch });
            }
            EdgeMsg::Moved(conn, room, node, epoch) => (self.moved)(conn, room, node, epoch),
            EdgeMsg::Receipt(conn, msg_id) => self.edge.receipt(&conn, &msg_id),
            EdgeMsg::Paired(conn, lobby, room) => (self.paired)(conn, lobby, room),
            EdgeMsg::ToUser(user, body) => (self.to_user)(user, body),
            EdgeMsg::Grants(conn, grants) => (self.grants)(conn, grants),
            EdgeMsg::Bounce(conn, room, hint, cmd) => {
                if let Some(msg) = cmd.into_room_msg() {
                    (self.reroute)(conn, room, hint, msg);
                }
            }
        }
    }
}

/// The node a connection id belongs to (`"{node}/{random}"`).
pub fn node_of(conn: &ConnId) -> Option<&str> {
    conn.as_str().split_once('/').map(|(node, _)| node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_commands_survive_the_wire() {
        use ractor::BytesConvertable;
        let msg = RoomMsg::Relay {
            from: PeerId::new("a"),
            to: PeerId::new("b"),
            kind: RelayKind::IceCandidate,
            payload: RelayPayload::Candidate(RawJson::of(&serde_json::json!({"candidate": "c", "sdpMid": "0"}))),
            reference: Some(serde_json::json!(7)),
            received_at: Instant::now(),
            again: true,
        };
        let cmd = RoomCmd::from_room_msg(&msg).expect("crosses nodes");
        let bytes = Bincode(cmd).into_bytes();
        let back = Bincode::<RoomCmd>::from_bytes(bytes).0.into_room_msg().expect("decodes");
        match back {
            RoomMsg::Relay { kind, payload: RelayPayload::Candidate(c), reference, again, .. } => {
                assert!(again);
                assert_eq!(kind, RelayKind::IceCandidate);
                assert_eq!(c.as_str(), r#"{"candidate":"c","sdpMid":"0"}"#);
                assert_eq!(reference, Some(serde_json::json!(7)));
            }
            _ => panic!("wrong message"),
        }
        let overlay =
            RoomMsg::Overlay { from: PeerId::new("a"), overlay: Overlay::Pointer { x: 0.5, y: 0.5, color: None } };
        let back = RoomCmd::from_room_msg(&overlay).expect("crosses").into_room_msg();
        assert!(matches!(back, Some(RoomMsg::Overlay { overlay: Overlay::Pointer { .. }, .. })));
    }

    #[test]
    fn connection_ids_name_their_node() {
        assert_eq!(node_of(&ConnId::new("n2/abc")), Some("n2"));
        assert_eq!(node_of(&ConnId::new("abc")), None);
    }
}
