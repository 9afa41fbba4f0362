//! Room actor: one per active room on this node. It owns who is in the room, the call
//! status, the latest overlays and the recent chat, and relays signaling between its peers.
//!
//! Supervised by the [`RoomSupervisor`](crate::room_supervisor::RoomSupervisor), which
//! restarts it after a failure. A room starts from what the store holds, so a restarted
//! room has the same participants (those whose connection is still open), call status,
//! media states and chat. It keeps one [`Participant`] (media state, call quality) per peer
//! session, and stops itself after it has been empty for `idle_timeout`.

use crate::call_status::{CallStatus, CallTransition};
use crate::error::{ErrorCode, RoomError};
use crate::ids::{ConnId, PeerId, RoomId, UserId, random_id};
use crate::media::{ControlAction, MediaState};
use crate::node_lease::NodeLease;
use crate::outbox::{Outbox, REPLAY_FRAMES};
use crate::participant::{Participant, Recorder};
use crate::ports::{CallChange, Edge, Fence, Frame, RoomPolicy, RoomStore, StoreError, StoredParticipant, now_ms};
use crate::protocol::{
    Body, ChatMessage, FrameKind, MAX_CHAT_CHARS, Overlay, ParticipantInfo, PeerOverlay, RawJson, RelayKind,
    ServerMessage, with_seq,
};
use crate::quality::{FallbackChange, FallbackPolicy, StatsSample};
use crate::recent::Recent;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use relay_table::{RelayBody, RelayRequest, RelayTable, Session};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub mod admin;
mod continuity;
mod in_call;
mod lease;
pub mod local;
mod membership;
pub mod relay_table;
#[cfg(test)]
mod tests;

use admin::{AdminAction, AdminDone};
use continuity::{absorb, carry, disconnected, resume, seq_sync};
use in_call::{chat, control, end_call, set_overlay, stats};
use lease::{check_lease, lose_lease};
use membership::{
    PendingLeave, after_presence_change, idle_check, join, leave, record_leave, retry_leaves, store_refusal,
};

/// Settings every room shares.
#[derive(Clone, Debug)]
pub struct RoomConfig {
    /// Policy of a room created by a join (no `POST /rooms` before).
    pub default_policy: RoomPolicy,
    /// Chat messages kept in memory and sent in `joined`.
    pub chat_history: u32,
    /// How long an empty room stays up.
    pub idle_timeout: Duration,
    /// In a cluster, rooms act only while they own the room under this node's live lease;
    /// `None` on a single node.
    pub lease: Option<LeaseSettings>,
    /// When a peer falls back to audio only, and back.
    pub fallback: FallbackPolicy,
    /// How long a session whose connection dropped stays in the room, resumable.
    pub resume_grace: Duration,
}

/// How a clustered room holds its ownership: under this node's lease.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// This node's id (the owner it writes).
    pub node_id: String,
    /// The node's lease, kept by the node (the room only reads it).
    pub lease: Arc<NodeLease>,
    /// How often a room looks after sessions adopted from the store whose connections have not
    /// answered yet (no database work).
    pub check_every: Duration,
}

/// A room could not start here because another node holds its lease.
#[derive(Debug, thiserror::Error)]
#[error("room is served by node {0}")]
pub struct RoomElsewhere(pub String);

/// What every room of a node shares: its ports and settings.
pub struct RoomContext {
    /// Persistence.
    pub store: Arc<dyn RoomStore>,
    /// Delivery to connections.
    pub edge: Arc<dyn Edge>,
    /// Settings.
    pub config: RoomConfig,
    /// Rooms running on this node, kept by the supervisor (read by heartbeats and metrics).
    pub live_rooms: Arc<AtomicUsize>,
}

/// The actor.
pub struct Room;

/// Start arguments.
pub struct RoomArgs {
    /// Which room.
    pub room_id: RoomId,
    /// Shared ports and settings.
    pub ctx: Arc<RoomContext>,
    /// Where the room publishes its participant count (read by `/metrics`).
    pub present: Arc<AtomicUsize>,
    /// What the previous instance handed over, when a draining node gave the room up.
    pub carry: Option<Carry>,
    /// The room's ownership and state, already taken and read for it (a takeover of many
    /// rooms at once): the start does no database work of its own.
    pub taken: Option<Box<Taken>>,
}

/// A room taken over in a batch: its ownership (the node lease term and the epoch it was
/// taken at) and its state as read right after.
#[derive(Debug)]
pub struct Taken {
    /// The node lease term the room was taken at.
    pub term: i64,
    /// The room's new epoch.
    pub epoch: i64,
    /// What the store holds for it.
    pub stored: crate::ports::StoredRoom,
}

/// What a room instance hands to the next one when its node drains: each session's numbered
/// frames, its numbering and the ids it has seen, so that nothing is lost or repeated across
/// the move and the sessions' `seq` runs on unbroken.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Carry {
    /// One entry per session.
    pub sessions: Vec<CarriedSession>,
    /// The lease the previous instance held and did not release: the next instance takes it
    /// over, so that no other instance can start the room from the store in between.
    #[serde(default)]
    pub lease: Option<Fence>,
}

/// One session in a [`Carry`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CarriedSession {
    /// The session.
    pub peer_id: String,
    /// Its outbox: the next number and the frames kept.
    pub next_seq: u64,
    /// The frames kept, numbered, with their kinds.
    pub frames: Vec<(u64, String, FrameKind)>,
    /// The latest client message ids seen.
    pub seen_ids: Vec<String>,
    /// Whether it was still waiting for its connection's count.
    pub adopted: bool,
    /// See `Member::seq_shift`.
    pub seq_shift: i64,
}

/// Unanswered requests for a connection's count after which an adopted session is taken for
/// disconnected (its connection is gone; it may still resume).
const REATTACH_TRIES: u8 = 3;

/// A join request, already authenticated by the edge.
#[derive(Debug)]
pub struct JoinRequest {
    /// The connection asking.
    pub conn: ConnId,
    /// The token's subject.
    pub user: UserId,
    /// Name to show.
    pub display_name: String,
    /// ICE servers for this user, sent in `joined`.
    pub ice_servers: Value,
    /// Admins pass the invitee list.
    pub admin: bool,
    /// The session's next frame number: the connection has numbered its frames so far.
    pub first_seq: u64,
    /// Not shown to the others (the `hidden` grant).
    pub hidden: bool,
}

/// What a relay carries.
#[derive(Debug)]
pub enum RelayPayload {
    /// An offer's or answer's SDP (a JSON string, as the client wrote it).
    Sdp(RawJson),
    /// A trickled candidate (as the client wrote it).
    Candidate(RawJson),
}

/// A room as `GET /rooms/{id}` shows it.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomInfo {
    /// The room.
    pub room_id: RoomId,
    /// Call status.
    pub call_status: CallStatus,
    /// Current call session.
    pub call_id: Option<String>,
    /// Who is present.
    pub participants: Vec<ParticipantInfo>,
    /// Participant limit.
    pub max_participants: u32,
    /// Invitees, when the room is closed to others.
    pub invitees: Option<Vec<UserId>>,
    /// The lease this instance holds, in a cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<HeldLease>,
}

/// A clustered room's lease as the room itself sees it, with wall-clock times (milliseconds
/// since the Unix epoch) so that observers on one host can compare two nodes' claims.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldLease {
    /// The lease's epoch.
    pub epoch: i64,
    /// Taken just after the database granted the lease: the grant happened no later.
    pub since_ms: i64,
    /// When the room checked that its lease is still valid and answered.
    pub checked_at_ms: i64,
}

/// Messages a room handles. Every message from a peer names the sending session and the
/// connection it came on; the room ignores messages from sessions it does not have.
pub enum RoomMsg {
    /// Enter the room; replies with the new peer id.
    Join {
        /// Who and from where.
        request: JoinRequest,
        /// The answer.
        reply: RpcReplyPort<Result<PeerId, RoomError>>,
    },
    /// A session leaves (`reason`: `left` when asked for, `disconnected` when its connection closed).
    Leave {
        /// The session.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// Relay an offer, answer or candidate to one peer.
    Relay {
        /// Sender session.
        from: PeerId,
        /// Target session.
        to: PeerId,
        /// Which message.
        kind: RelayKind,
        /// Its content.
        payload: RelayPayload,
        /// The client's `id`, for an error answer.
        reference: Option<Value>,
        /// When the edge received it.
        received_at: Instant,
        /// Sent again because its receipt is overdue (a receipt lost on its way): passed on to
        /// the target even when this room has seen it; the target drops what it has and
        /// confirms it again.
        again: bool,
    },
    /// A control action on the sender's media.
    Control {
        /// Sender session.
        from: PeerId,
        /// The action.
        action: ControlAction,
        /// The client's `id`.
        reference: Option<Value>,
    },
    /// An overlay from the sender (already validated by the edge).
    Overlay {
        /// Sender session.
        from: PeerId,
        /// The overlay.
        overlay: Overlay,
    },
    /// A chat message from the sender.
    Chat {
        /// Sender session.
        from: PeerId,
        /// The text.
        text: String,
        /// The client's `id`.
        reference: Option<Value>,
    },
    /// End the current call.
    EndCall {
        /// Who ends it.
        from: PeerId,
        /// The client's `id`.
        reference: Option<Value>,
    },
    /// Describe the room.
    Info(RpcReplyPort<RoomInfo>),
    /// The room's relay table, for this node's connections' fast path.
    Table(RpcReplyPort<Arc<RelayTable>>),
    /// Stop if still empty (scheduled when the room becomes empty).
    IdleCheck,
    /// The node is going down: close every session and the call, then stop.
    Shutdown(RpcReplyPort<()>),
    /// The node drains: reply with what the next instance needs, then stop.
    HandOff(RpcReplyPort<Carry>),
    /// What the previous instance handed over, arriving after this one started.
    Absorb(Carry),
    /// Fault injection for tests and chaos runs: the room panics.
    InjectFault,
    /// Check the node lease and ask again the connections of adopted sessions (a timer).
    LeaseCheck,
    /// Try again to record leaves the database refused (a timer sends it).
    RetryLeaves,
    /// A session's connection dropped without `leave`: keep it, resumable, for the grace period.
    Disconnected {
        /// The session.
        peer: PeerId,
        /// The connection that dropped (a newer one may have taken the session over).
        conn: ConnId,
        /// How far that connection's `seq` numbers were ahead of this room's for the session
        /// (a connection that outlived an earlier room instance shifts the new one's numbers).
        seq_shift: i64,
    },
    /// A session's connection tells how far its client has counted: its answer to
    /// [`Edge::reattach`], and the first thing it sends a room instance it has found again.
    /// Until it comes, an adopted session's frames are kept but not sent; a session the room
    /// took for disconnected is connected again and gets what it missed.
    SeqSync {
        /// The session.
        peer: PeerId,
        /// The connection.
        conn: ConnId,
        /// The last frame number the client has.
        last_seq: u64,
        /// What the connection adds to this room's numbers (see `Member::seq_shift`).
        seq_offset: i64,
    },
    /// A session's connection renumbered the room's frames for its client (after a realignment
    /// or a dropped repeat): the client's number for a frame is now the room's plus
    /// `seq_offset`. Kept so that a resume maps the client's `lastSeq` right even when it comes
    /// before the old connection's [`RoomMsg::Disconnected`] (a drain's hand-off carries it).
    SeqShift {
        /// The session.
        peer: PeerId,
        /// The connection.
        conn: ConnId,
        /// What the connection adds to this room's numbers.
        seq_offset: i64,
    },
    /// The client of a session has every frame up to `last_seq` (this room's numbering); see
    /// [`RelayTable::confirmed`].
    Confirmed {
        /// The session.
        peer: PeerId,
        /// Its connection.
        conn: ConnId,
        /// The last frame the client has.
        last_seq: u64,
    },
    /// The grace period of a disconnected session ended (sent by its timer).
    GraceExpired {
        /// The session.
        peer: PeerId,
        /// Which disconnect the timer was for.
        disconnects: u64,
    },
    /// A new connection takes a session over and gets what it missed.
    Resume {
        /// The session.
        peer: PeerId,
        /// The user of the new connection's token (must be the session's).
        user: UserId,
        /// The new connection.
        conn: ConnId,
        /// The session's secret, from `joined`.
        token: String,
        /// The last frame the client received.
        last_seq: u64,
        /// `Ok`, or the reason code and a sentence for `resume_failed`.
        reply: RpcReplyPort<Result<(), (String, String)>>,
    },
    /// A server frame for everyone in the room (a snapshot's report is ready, say), numbered
    /// in each session's sequence and kept for replay like any room frame.
    Notify {
        /// The JSON body, without `seq`.
        body: String,
    },
    /// A frame the sender's connection made itself (a pong, an error) to number in its session
    /// sequence and deliver back to it.
    Echo {
        /// The session.
        from: PeerId,
        /// The JSON body, without `seq`.
        body: String,
        /// What it is.
        kind: FrameKind,
    },
    /// The target's connection wrote relayed message `msg_id` of `sender`: tell the sender's
    /// connection (see [`RelayTable::receipt`]).
    Receipt {
        /// The session that sent the message.
        sender: PeerId,
        /// Its `id`, as JSON text.
        msg_id: String,
    },
    /// A command from the node (an appointment, an operator), not from a session.
    Admin {
        /// What to do.
        action: AdminAction,
        /// What it did.
        reply: RpcReplyPort<Result<AdminDone, RoomError>>,
    },
    /// Connection statistics from a peer.
    Stats {
        /// Sender session.
        from: PeerId,
        /// The sample.
        sample: StatsSample,
        /// The client's `id`.
        reference: Option<Value>,
    },
}

// Local only: never crosses nodes (the cluster feature turns off ractor's blanket impl).
impl ractor::Message for RoomMsg {}

/// A participant as the actor knows it; its delivery state (connection, presence, numbering,
/// ids seen) is its [`Session`] in the relay table.
struct Member {
    info: ParticipantInfo,
    /// Not shown to the others: no presence, media or quality of it reaches them.
    hidden: bool,
    /// Bumped at every disconnect, so a grace timer knows whether it is still current.
    disconnects: u64,
    /// Secret a new connection presents to take this session over.
    resume_token: String,
    /// The client's number for a frame minus this room's, as the session's last connection
    /// reported when it dropped (0 while both count alike).
    seq_shift: i64,
    /// Times this instance asked the session's connection for its count without an answer.
    reattach_tries: u8,
    overlay: Option<Overlay>,
    participant: Participant,
}

/// The room's state.
pub struct RoomState {
    id: RoomId,
    ctx: Arc<RoomContext>,
    /// The sessions' delivery state, shared with this node's connections (see [`relay_table`]).
    /// A session is "adopted" there when this instance loaded it (after a restart or move)
    /// and has neither resumed nor synced it with its connection: nothing kept for it has been
    /// sent, so all of it is new to the client, numbered once the client's count is known.
    table: Arc<RelayTable>,
    policy: RoomPolicy,
    status: CallStatus,
    call_id: Option<String>,
    members: Vec<Member>,
    chat: VecDeque<ChatMessage>,
    next_chat_seq: i64,
    present: Arc<AtomicUsize>,
    empty_since: Option<Instant>,
    /// The lease this room holds, in a cluster.
    fence: Option<Fence>,
    /// Whether this instance still owns the room: set at start, cleared when the ownership is
    /// lost or handed over. It may act only while the node lease also holds the fence's term
    /// (read on the local monotonic clock, so a process that was frozen notices before doing
    /// anything).
    held: bool,
    /// Wall-clock time just after the lease was granted.
    lease_since_ms: i64,
    /// Leaves that happened while the database was unreachable, oldest first, still to record.
    pending_leaves: VecDeque<PendingLeave>,
    /// Delay before the next attempt to record them.
    retry_backoff: Duration,
    /// Whether an error went to the sender while the current message was handled.
    error_sent: bool,
}

impl Actor for Room {
    type Msg = RoomMsg;
    type State = RoomState;
    type Arguments = RoomArgs;

    async fn pre_start(&self, myself: ActorRef<RoomMsg>, args: RoomArgs) -> Result<RoomState, ActorProcessingErr> {
        // Boxed: starting is a deep future, and the actor's task keeps its size for life.
        Box::pin(start_room(myself, args)).await
    }

    async fn post_stop(&self, _myself: ActorRef<RoomMsg>, state: &mut RoomState) -> Result<(), ActorProcessingErr> {
        state.present.store(0, Ordering::Relaxed);
        state.table.lock().open = false;
        // A clean stop hands the lease back so the next owner need not wait for it to expire.
        if let Some(fence) = &state.fence
            && state.held
            && !state.lapsed()
        {
            let _ = state.ctx.store.release_lease(fence).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RoomMsg>,
        message: RoomMsg,
        state: &mut RoomState,
    ) -> Result<(), ActorProcessingErr> {
        if state.lapsed() {
            lose_lease(&myself, state, "the node's lease ran out");
            return Ok(());
        }
        match message {
            RoomMsg::Join { request, reply } => {
                let result = Box::pin(join(&myself, state, request)).await;
                let _ = reply.send(result);
            }
            RoomMsg::Leave { peer, reason } => Box::pin(leave(&myself, state, &peer, &reason)).await?,
            RoomMsg::Relay { from, to, kind, payload, reference, received_at, again } => {
                let payload = match &payload {
                    RelayPayload::Sdp(sdp) => RelayBody::Sdp(sdp),
                    RelayPayload::Candidate(candidate) => RelayBody::Candidate(candidate),
                };
                let reference = reference.as_ref();
                let req = RelayRequest { from: &from, to: &to, kind, payload, reference, received_at, again };
                if let Some(body) = req.body() {
                    state.table.lock().relay(state.table.edge(), &req, &body);
                }
                state.table.handled(&from);
            }
            RoomMsg::Control { from, action, reference } => {
                if state.first_time(&from, reference.as_ref()) {
                    Box::pin(control(state, &from, action, reference.as_ref())).await;
                    state.ack(&from, reference.as_ref());
                }
                state.table.handled(&from);
            }
            RoomMsg::Overlay { from, overlay } => {
                set_overlay(state, &from, overlay);
                state.table.handled(&from);
            }
            RoomMsg::Chat { from, text, reference } => {
                if state.first_time(&from, reference.as_ref()) {
                    Box::pin(chat(state, &from, text, reference.as_ref())).await;
                    state.ack(&from, reference.as_ref());
                }
                state.table.handled(&from);
            }
            RoomMsg::EndCall { from, reference } => {
                if state.first_time(&from, reference.as_ref()) {
                    Box::pin(end_call(state, &from, reference.as_ref())).await;
                    state.ack(&from, reference.as_ref());
                }
                state.table.handled(&from);
            }
            RoomMsg::Admin { action, reply } => {
                let done = Box::pin(admin::admin(&myself, state, action)).await;
                let _ = reply.send(done);
            }
            RoomMsg::Info(reply) => {
                let _ = reply.send(info(state, false));
            }
            RoomMsg::Table(reply) => {
                let _ = reply.send(state.table.clone());
            }
            RoomMsg::IdleCheck => idle_check(&myself, state),
            RoomMsg::Shutdown(reply) => {
                Box::pin(shutdown(state)).await;
                let _ = reply.send(());
                myself.stop(Some("shutdown".into()));
            }
            RoomMsg::Absorb(carry) => absorb(state, carry),
            RoomMsg::HandOff(reply) => {
                // Nothing may be relayed into this instance once its sessions are handed over.
                state.table.lock().open = false;
                let mut handed = carry(state);
                // The lease goes with the carry, unreleased: until the next instance takes it
                // over, nobody can start the room from the store without what is carried.
                if std::mem::take(&mut state.held) {
                    handed.lease = state.fence.clone();
                }
                let _ = reply.send(handed);
                myself.stop(Some("handoff".into()));
            }
            RoomMsg::InjectFault => panic!("fault injected into room {}", state.id),
            RoomMsg::LeaseCheck => Box::pin(check_lease(&myself, state)).await,
            RoomMsg::RetryLeaves => Box::pin(retry_leaves(&myself, state)).await,
            RoomMsg::Echo { from, body, kind } => state.send_to_peer(&from, &Body::new(body, kind), None),
            RoomMsg::Notify { body } => state.broadcast(Body::new(body, FrameKind::Other), None),
            RoomMsg::Receipt { sender, msg_id } => state.table.receipt(&sender, &msg_id),
            RoomMsg::Confirmed { peer, conn, last_seq } => state.table.confirmed(&peer, &conn, last_seq),
            RoomMsg::SeqShift { peer, conn, seq_offset } => {
                let current = state.table.lock().session(&peer).is_some_and(|s| s.conn == conn && !s.adopted);
                if current && let Some(m) = state.member_mut(&peer) {
                    m.seq_shift = seq_offset;
                }
            }
            RoomMsg::SeqSync { peer, conn, last_seq, seq_offset } => {
                seq_sync(state, &peer, &conn, last_seq, seq_offset);
                state.table.handled(&peer);
            }
            RoomMsg::Disconnected { peer, conn, seq_shift } => {
                disconnected(&myself, state, &peer, &conn, seq_shift).await?
            }
            RoomMsg::GraceExpired { peer, disconnects } => {
                let away = state.table.lock().session(&peer).is_some_and(|s| !s.connected);
                let expired = away && state.member(&peer).is_some_and(|m| m.disconnects == disconnects);
                if expired {
                    Box::pin(leave(&myself, state, &peer, "disconnected")).await?;
                }
            }
            RoomMsg::Resume { peer, user, conn, token, last_seq, reply } => {
                let outcome = resume(state, &peer, &user, conn.clone(), &token, last_seq);
                if outcome.is_ok() {
                    // A room that restarts or moves later must find the session on this connection.
                    let fence = state.fence.clone();
                    if let Err(e) = state.ctx.store.record_reattach(&peer, &conn, fence.as_ref()).await {
                        tracing::warn!(room_id = %state.id, peer_id = %peer, error = %e, "resumed connection not recorded");
                    }
                }
                let _ = reply.send(outcome);
            }
            RoomMsg::Stats { from, sample, reference } => {
                if state.first_time(&from, reference.as_ref()) {
                    Box::pin(stats(state, &from, sample, reference.as_ref())).await;
                    state.ack(&from, reference.as_ref());
                }
                state.table.handled(&from);
            }
        }
        Ok(())
    }
}

async fn start_room(myself: ActorRef<RoomMsg>, args: RoomArgs) -> Result<RoomState, ActorProcessingErr> {
    let ctx = args.ctx;
    let mut fence = None;
    let mut lease_since_ms = 0;
    if let Some(lease) = &ctx.config.lease {
        let Some(term) = lease.lease.current() else {
            return Err("this node holds no live node lease".into());
        };
        let handed = match (&args.taken, args.carry.as_ref().and_then(|c| c.lease.as_ref())) {
            // Taken at an earlier term: that term's rooms are not this node's any more.
            (Some(taken), _) if taken.term != term => return Err("the room was taken under a lapsed lease".into()),
            (Some(taken), _) => Some(Ok(taken.epoch)),
            (None, Some(from)) if from.room == args.room_id => {
                ctx.store.transfer_lease(from, &lease.node_id, term).await?.map(Ok)
            }
            _ => None,
        };
        let acquired = match handed {
            Some(epoch) => epoch,
            None => ctx.store.acquire_lease(&args.room_id, &lease.node_id, term).await?,
        };
        match acquired {
            Ok(epoch) => {
                fence = Some(Fence { room: args.room_id.clone(), node: lease.node_id.clone(), term, epoch });
                lease_since_ms = now_ms();
                myself.send_interval(lease.check_every, || RoomMsg::LeaseCheck);
            }
            Err(holder) => return Err(Box::new(RoomElsewhere(holder))),
        }
    }
    let loaded = match args.taken {
        Some(taken) => Ok(taken.stored),
        None => ctx.store.load_room(&args.room_id, &ctx.config.default_policy, ctx.config.chat_history).await,
    };
    let stored = match loaded {
        Ok(stored) => stored,
        Err(e) => {
            // Taken but not started: give the room back, so that the next try (here or on
            // another node) need not wait for this node's lease to run out.
            if let Some(fence) = &fence {
                let _ = ctx.store.release_lease(fence).await;
            }
            return Err(e.into());
        }
    };
    let table = Arc::new(RelayTable::new(args.room_id.clone(), ctx.edge.clone()));
    table.lock().lease = match (&ctx.config.lease, &fence) {
        (Some(lease), Some(fence)) => Some((lease.lease.clone(), fence.term)),
        _ => None,
    };
    table.lock().epoch = fence.as_ref().map_or(0, |f| f.epoch);
    let held = fence.is_some();
    let mut state = RoomState {
        id: args.room_id,
        ctx: ctx.clone(),
        table,
        policy: stored.policy,
        status: stored.status,
        call_id: stored.call_id,
        members: Vec::new(),
        chat: stored.recent_chat.into(),
        next_chat_seq: stored.next_chat_seq,
        present: args.present,
        empty_since: None,
        fence,
        held,
        lease_since_ms,
        pending_leaves: VecDeque::new(),
        retry_backoff: Duration::from_millis(200),
        error_sent: false,
    };
    let mut gone = Vec::new();
    for p in stored.participants {
        // A session whose connection is gone (its node died, or it dropped while the room was
        // down) is kept for the grace period, resumable, like any dropped session.
        let connected = ctx.edge.is_connected(&p.conn_id);
        if !connected {
            gone.push(p.peer_id.clone());
        }
        let info = ParticipantInfo {
            peer_id: p.peer_id,
            user_id: p.user_id,
            display_name: p.display_name,
            media: p.media,
            joined_at: p.joined_at,
        };
        // A restarted room starts a fresh sequence for the sessions it finds: their connections
        // keep numbering from where they are (the room does not know), so replay starts here.
        let mut session = Session::new(info.peer_id.clone(), p.conn_id, 1);
        session.connected = connected;
        session.adopted = true;
        state.table.lock().sessions.push(session);
        state.members.push(Member {
            info,
            hidden: p.hidden,
            disconnects: u64::from(!connected),
            resume_token: p.resume_token,
            seq_shift: 0,
            reattach_tries: 0,
            overlay: None,
            participant: Participant::default(),
        });
    }
    // What the previous instance handed over continues here as it was.
    for c in args.carry.map(|c| c.sessions).unwrap_or_default() {
        if let Some(m) = state.members.iter_mut().find(|m| m.info.peer_id.as_str() == c.peer_id) {
            m.seq_shift = c.seq_shift;
        }
        if let Some(s) = state.table.lock().sessions.iter_mut().find(|s| s.peer.as_str() == c.peer_id) {
            s.outbox = Outbox::restore(c.next_seq, c.frames);
            s.seen_ids = Recent::new(REPLAY_FRAMES);
            for id in c.seen_ids {
                s.seen_ids.insert(id);
            }
            s.adopted = c.adopted;
        }
    }
    // Sessions whose connections are still open: ask each connection for its client's count.
    let waiting: Vec<ConnId> =
        state.table.lock().sessions.iter().filter(|s| s.connected && s.adopted).map(|s| s.conn.clone()).collect();
    let epoch = state.epoch();
    for conn in waiting {
        ctx.edge.reattach(&conn, &state.id, epoch);
    }
    let grace = ctx.config.resume_grace;
    for peer in gone {
        let body = ServerMessage::PeerDisconnected { peer_id: &peer }.to_body();
        state.broadcast_about(&peer, body, Some(&peer));
        myself.send_after(grace, move || RoomMsg::GraceExpired { peer, disconnects: 1 });
    }
    tracing::debug!(room_id = %state.id, present = state.members.len(), status = %state.status, "room started");
    after_presence_change(&myself, &mut state);
    Ok(state)
}

impl RoomState {
    fn member(&self, peer: &PeerId) -> Option<&Member> {
        self.members.iter().find(|m| &m.info.peer_id == peer)
    }

    /// In a cluster: the room still thinks it owns itself, but the node lease no longer holds
    /// the term it took the room at. It must stop without another write or delivery.
    /// The instance's ownership epoch (0 outside a cluster): see `Frame::epoch`.
    fn epoch(&self) -> i64 {
        self.fence.as_ref().map_or(0, |f| f.epoch)
    }

    fn lapsed(&self) -> bool {
        match (&self.ctx.config.lease, &self.fence) {
            (Some(lease), Some(fence)) => self.held && !lease.lease.holds(fence.term),
            _ => false,
        }
    }

    fn member_mut(&mut self, peer: &PeerId) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| &m.info.peer_id == peer)
    }

    /// Numbers a frame in the peer's session sequence, keeps it for replay and sends it if the
    /// peer is connected.
    fn send_to_peer(&mut self, peer: &PeerId, body: &Body, received_at: Option<Instant>) {
        self.table.lock().send_to(self.table.edge(), peer, body, received_at);
    }

    /// A frame about `about` (its presence, media, quality): to everyone but `except`, or,
    /// when `about` is hidden, to `about` alone.
    fn broadcast_about(&mut self, about: &PeerId, body: Body, except: Option<&PeerId>) {
        if self.member(about).is_some_and(|m| m.hidden) {
            if except != Some(about) {
                self.send_to_peer(about, &body, None);
            }
            return;
        }
        self.broadcast(body, except);
    }

    /// The participants as `viewer` may see them: without the hidden ones (but itself).
    fn visible_to<'s>(&'s self, viewer: Option<&'s PeerId>) -> impl Iterator<Item = &'s ParticipantInfo> + 's {
        self.members.iter().filter(move |m| !m.hidden || Some(&m.info.peer_id) == viewer).map(|m| &m.info)
    }

    fn broadcast(&mut self, body: Body, except: Option<&PeerId>) {
        let mut t = self.table.lock();
        let peers: Vec<PeerId> = t.sessions.iter().map(|s| s.peer.clone()).filter(|p| Some(p) != except).collect();
        for peer in peers {
            t.send_to(self.table.edge(), &peer, &body, None);
        }
    }

    /// Whether a client message with this `id` is new from this session (see
    /// [`relay_table::Table::first_time`]).
    fn first_time(&mut self, from: &PeerId, reference: Option<&Value>) -> bool {
        if !self.table.lock().first_time(self.table.edge(), from, reference) {
            return false;
        }
        self.error_sent = false;
        true
    }

    /// Acknowledges a message with an `id` that the room accepted (no error was sent for it).
    fn ack(&mut self, from: &PeerId, reference: Option<&Value>) {
        if let Some(reference) = reference
            && !self.error_sent
        {
            self.send_to_peer(from, &ServerMessage::Ack { reference }.to_body(), None);
        }
    }

    fn error_to(&mut self, peer: &PeerId, code: ErrorCode, message: &str, reference: Option<&Value>) {
        self.error_sent = true;
        let body = ServerMessage::Error { code: code.as_str(), message, reference }.to_body();
        self.send_to_peer(peer, &body, None);
    }

    fn change(&self, transition: CallTransition, reason: &str) -> CallChange {
        let call_id = match (transition, &self.call_id) {
            (CallTransition::Open(_), _) | (_, None) => random_id(),
            (_, Some(id)) => id.clone(),
        };
        let reason = matches!(transition, CallTransition::Close).then(|| reason.to_owned());
        CallChange { call_id, transition, reason }
    }

    /// Applies a persisted call change and tells everyone present.
    fn commit(&mut self, change: Option<CallChange>, except: Option<&PeerId>) {
        if self.apply(change) {
            self.announce_status(except);
        }
    }

    /// Applies a persisted call change; returns whether there was one.
    fn apply(&mut self, change: Option<CallChange>) -> bool {
        let Some(change) = change else { return false };
        self.status = self.status.apply(change.transition);
        self.call_id = Some(change.call_id);
        true
    }

    fn announce_status(&mut self, except: Option<&PeerId>) {
        let body = ServerMessage::CallStatus { status: self.status, call_id: self.call_id.as_deref() }.to_body();
        self.broadcast(body, except);
    }
}

/// The room as its members may see it; with `with_hidden`, as an operator does (hidden
/// participants too).
fn info(state: &RoomState, with_hidden: bool) -> RoomInfo {
    let participants = match with_hidden {
        true => state.members.iter().map(|m| m.info.clone()).collect(),
        false => state.visible_to(None).cloned().collect(),
    };
    RoomInfo {
        room_id: state.id.clone(),
        call_status: state.status,
        call_id: state.call_id.clone(),
        participants,
        max_participants: state.policy.max_participants,
        invitees: state.policy.invitees.clone(),
        lease: state.fence.as_ref().filter(|_| state.held && !state.lapsed()).map(|f| HeldLease {
            epoch: f.epoch,
            since_ms: state.lease_since_ms,
            checked_at_ms: now_ms(),
        }),
    }
}

async fn shutdown(state: &mut RoomState) {
    let peers: Vec<PeerId> = state.members.iter().map(|m| m.info.peer_id.clone()).collect();
    for peer in peers {
        if let Err(e) = record_leave(state, &peer, "server_shutdown").await {
            tracing::warn!(room_id = %state.id, peer_id = %peer, error = %e, "leave not recorded at shutdown");
        }
    }
}
