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
use crate::outbox::{Outbox, REPLAY_FRAMES};
use crate::participant::{Participant, Recorder};
use crate::ports::{CallChange, Edge, Fence, Frame, RoomPolicy, RoomStore, StoreError, StoredParticipant, now_ms};
use crate::protocol::{
    ChatMessage, MAX_CHAT_CHARS, Overlay, ParticipantInfo, PeerOverlay, RelayKind, ServerMessage, with_seq,
};
use crate::quality::{FallbackChange, FallbackPolicy, StatsSample};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use relay_table::{RelayBody, RelayRequest, RelayTable, Session};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub mod relay_table;
#[cfg(test)]
mod tests;

/// Settings every room shares.
#[derive(Clone, Debug)]
pub struct RoomConfig {
    /// Policy of a room created by a join (no `POST /rooms` before).
    pub default_policy: RoomPolicy,
    /// Chat messages kept in memory and sent in `joined`.
    pub chat_history: u32,
    /// How long an empty room stays up.
    pub idle_timeout: Duration,
    /// In a cluster, rooms act only while they hold a lease; `None` on a single node.
    pub lease: Option<LeaseSettings>,
    /// When a peer falls back to audio only, and back.
    pub fallback: FallbackPolicy,
    /// How long a session whose connection dropped stays in the room, resumable.
    pub resume_grace: Duration,
}

/// How a clustered room holds its lease.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// This node's id (the lease holder).
    pub node_id: String,
    /// Lease lifetime; renewed every third of it.
    pub ttl: Duration,
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
}

/// What a room instance hands to the next one when its node drains: each session's numbered
/// frames, its numbering and the ids it has seen, so that nothing is lost or repeated across
/// the move and the sessions' `seq` runs on unbroken.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Carry {
    /// One entry per session.
    pub sessions: Vec<CarriedSession>,
}

/// One session in a [`Carry`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CarriedSession {
    /// The session.
    pub peer_id: String,
    /// Its outbox: the next number and the frames kept.
    pub next_seq: u64,
    /// The frames kept, numbered.
    pub frames: Vec<(u64, String)>,
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
}

/// What a relay carries.
#[derive(Debug)]
pub enum RelayPayload {
    /// An offer's or answer's SDP.
    Sdp(String),
    /// A trickled candidate.
    Candidate(Value),
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
    /// Renew the lease (a timer sends it every third of the lease's lifetime).
    RenewLease,
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
    /// A frame the sender's connection made itself (a pong, an error) to number in its session
    /// sequence and deliver back to it.
    Echo {
        /// The session.
        from: PeerId,
        /// The JSON body, without `seq`.
        body: String,
    },
    /// The target's connection wrote relayed message `msg_id` of `sender`: tell the sender's
    /// connection (see [`RelayTable::receipt`]).
    Receipt {
        /// The session that sent the message.
        sender: PeerId,
        /// Its `id`, as JSON text.
        msg_id: String,
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
    /// The room must not act after this instant unless it renews (local monotonic clock, so a
    /// process that was frozen notices it lost the lease before doing anything).
    lease_valid_until: Option<Instant>,
    /// Wall-clock time just after the lease was granted.
    lease_since_ms: i64,
    /// Leaves that happened while the database was unreachable, oldest first, still to record.
    pending_leaves: VecDeque<PendingLeave>,
    /// Delay before the next attempt to record them.
    retry_backoff: Duration,
    /// Whether an error went to the sender while the current message was handled.
    error_sent: bool,
}

struct PendingLeave {
    peer: PeerId,
    reason: String,
    change: Option<CallChange>,
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
        if let (Some(fence), Some(_)) = (&state.fence, state.lease_valid_until) {
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
        if state.lease_valid_until.is_some_and(|until| Instant::now() > until) {
            lose_lease(&myself, state, "lease not renewed in time");
            return Ok(());
        }
        match message {
            RoomMsg::Join { request, reply } => {
                let result = Box::pin(join(&myself, state, request)).await;
                let _ = reply.send(result);
            }
            RoomMsg::Leave { peer, reason } => Box::pin(leave(&myself, state, &peer, &reason)).await?,
            RoomMsg::Relay { from, to, kind, payload, reference, received_at } => {
                let payload = match &payload {
                    RelayPayload::Sdp(sdp) => RelayBody::Sdp(sdp),
                    RelayPayload::Candidate(candidate) => RelayBody::Candidate(candidate),
                };
                let req =
                    RelayRequest { from: &from, to: &to, kind, payload, reference: reference.as_ref(), received_at };
                state.table.lock().relay(state.table.edge(), &req);
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
            RoomMsg::Info(reply) => {
                let _ = reply.send(info(state));
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
                let _ = reply.send(carry(state));
                myself.stop(Some("handoff".into()));
            }
            RoomMsg::InjectFault => panic!("fault injected into room {}", state.id),
            RoomMsg::RenewLease => Box::pin(renew_lease(&myself, state)).await,
            RoomMsg::RetryLeaves => Box::pin(retry_leaves(&myself, state)).await,
            RoomMsg::Echo { from, body } => state.send_to_peer(&from, &body, None),
            RoomMsg::Receipt { sender, msg_id } => state.table.receipt(&sender, &msg_id),
            RoomMsg::SeqSync { peer, conn, last_seq, seq_offset } => {
                seq_sync(state, &peer, &conn, last_seq, seq_offset)
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
    let mut lease_valid_until = None;
    let mut lease_since_ms = 0;
    if let Some(lease) = &ctx.config.lease {
        let asked = Instant::now();
        match ctx.store.acquire_lease(&args.room_id, &lease.node_id, lease.ttl).await? {
            Ok(epoch) => {
                fence = Some(Fence { room: args.room_id.clone(), node: lease.node_id.clone(), epoch });
                lease_valid_until = Some(asked + lease.ttl * 4 / 5);
                lease_since_ms = now_ms();
                myself.send_interval(lease.ttl / 3, || RoomMsg::RenewLease);
            }
            Err(holder) => return Err(Box::new(RoomElsewhere(holder))),
        }
    }
    let stored = ctx.store.load_room(&args.room_id, &ctx.config.default_policy, ctx.config.chat_history).await?;
    let table = Arc::new(RelayTable::new(ctx.edge.clone()));
    table.lock().valid_until = lease_valid_until;
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
        lease_valid_until,
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
            s.seen_ids = c.seen_ids.into();
            s.adopted = c.adopted;
        }
    }
    // Sessions whose connections are still open: ask each connection for its client's count.
    let waiting: Vec<ConnId> =
        state.table.lock().sessions.iter().filter(|s| s.connected && s.adopted).map(|s| s.conn.clone()).collect();
    for conn in waiting {
        ctx.edge.reattach(&conn, &state.id);
    }
    let grace = ctx.config.resume_grace;
    for peer in gone {
        let body = ServerMessage::PeerDisconnected { peer_id: &peer }.to_body();
        state.broadcast(body, Some(&peer));
        myself.send_after(grace, move || RoomMsg::GraceExpired { peer, disconnects: 1 });
    }
    tracing::debug!(room_id = %state.id, present = state.members.len(), status = %state.status, "room started");
    after_presence_change(&myself, &mut state);
    Ok(state)
}

/// Stops the room without another write or delivery: another node may own it now.
fn lose_lease(myself: &ActorRef<RoomMsg>, state: &mut RoomState, why: &str) {
    tracing::warn!(room_id = %state.id, why, "room lost its lease; stopping");
    metrics::counter!("switchboard_lease_lost_total").increment(1);
    state.lease_valid_until = None;
    state.table.lock().open = false;
    myself.stop(Some("lease_lost".into()));
}

async fn renew_lease(myself: &ActorRef<RoomMsg>, state: &mut RoomState) {
    let (Some(fence), Some(lease)) = (&state.fence, &state.ctx.config.lease) else { return };
    let asked = Instant::now();
    match state.ctx.store.renew_lease(fence, lease.ttl).await {
        Ok(true) => {
            state.lease_valid_until = Some(asked + lease.ttl * 4 / 5);
            state.table.lock().valid_until = state.lease_valid_until;
            // Ask again the connections of adopted sessions that have not answered yet (their
            // node may have been unreachable when this instance started, and be back now). One
            // that does not answer is taken for gone: its session waits for a resume like any
            // dropped one (and comes back if its connection answers after all).
            let mut gone = Vec::new();
            let adopted: Vec<(PeerId, ConnId, bool)> = state
                .table
                .lock()
                .sessions
                .iter()
                .filter(|s| s.adopted)
                .map(|s| (s.peer.clone(), s.conn.clone(), s.connected))
                .collect();
            for (peer, conn, connected) in adopted {
                if connected && let Some(m) = state.member_mut(&peer) {
                    m.reattach_tries += 1;
                    if m.reattach_tries > REATTACH_TRIES {
                        gone.push((peer.clone(), conn.clone()));
                    }
                }
                if state.ctx.edge.is_connected(&conn) {
                    state.ctx.edge.reattach(&conn, &state.id);
                }
            }
            for (peer, conn) in gone {
                let _ = Box::pin(disconnected(myself, state, &peer, &conn, 0)).await;
            }
        }
        Ok(false) => lose_lease(myself, state, "lease taken over"),
        // The database is unreachable: keep trying until the lease would have run out.
        Err(e) => {
            metrics::counter!("switchboard_lease_renew_failures_total").increment(1);
            tracing::warn!(room_id = %state.id, error = %e, "lease renewal failed");
        }
    }
}

impl RoomState {
    fn member(&self, peer: &PeerId) -> Option<&Member> {
        self.members.iter().find(|m| &m.info.peer_id == peer)
    }

    fn member_mut(&mut self, peer: &PeerId) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| &m.info.peer_id == peer)
    }

    /// Numbers a frame in the peer's session sequence, keeps it for replay and sends it if the
    /// peer is connected.
    fn send_to_peer(&mut self, peer: &PeerId, body: &str, received_at: Option<Instant>) {
        self.table.lock().send_to(self.table.edge(), peer, body, received_at);
    }

    fn broadcast(&mut self, body: Arc<str>, except: Option<&PeerId>) {
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

async fn join(myself: &ActorRef<RoomMsg>, state: &mut RoomState, req: JoinRequest) -> Result<PeerId, RoomError> {
    if let Some(invitees) = &state.policy.invitees
        && !req.admin
        && !invitees.contains(&req.user)
    {
        return Err(RoomError::new(ErrorCode::RoomForbidden, "this room is open to its invitees only"));
    }
    if state.members.len() >= state.policy.max_participants as usize {
        return Err(RoomError::new(
            ErrorCode::RoomFull,
            format!("the room is full ({} participants)", state.policy.max_participants),
        ));
    }
    let peer_id = PeerId::new(random_id());
    let media = MediaState::initial();
    let resume_token = random_id() + &random_id();
    let stored = StoredParticipant {
        resume_token: resume_token.clone(),
        peer_id: peer_id.clone(),
        user_id: req.user.clone(),
        display_name: req.display_name.clone(),
        conn_id: req.conn.clone(),
        media: media.clone(),
        joined_at: now_ms(),
    };
    let change = state.status.on_join(state.members.len() + 1).map(|t| state.change(t, ""));
    state.ctx.store.record_join(&state.id, &stored, change.as_ref(), state.fence.as_ref()).await.map_err(|e| {
        tracing::warn!(room_id = %state.id, error = %e, "join not recorded");
        store_refusal(&e, "the join was not recorded;")
    })?;
    let info = ParticipantInfo {
        peer_id: peer_id.clone(),
        user_id: req.user,
        display_name: req.display_name,
        media,
        joined_at: stored.joined_at,
    };
    state.table.lock().sessions.push(Session::new(peer_id.clone(), req.conn.clone(), req.first_seq));
    state.members.push(Member {
        info,
        disconnects: 0,
        resume_token,
        seq_shift: 0,
        reattach_tries: 0,
        overlay: None,
        participant: Participant::default(),
    });
    let status_changed = state.apply(change);

    let body = ServerMessage::Joined {
        room_id: &state.id,
        peer_id: &peer_id,
        session_id: &peer_id,
        resume_token: &state.members[state.members.len() - 1].resume_token,
        peers: state.members.iter().map(|m| &m.info.peer_id).filter(|p| *p != &peer_id).collect(),
        participants: state.members.iter().map(|m| &m.info).collect(),
        ice_servers: &req.ice_servers,
        call_status: state.status,
        call_id: state.call_id.as_deref(),
        chat: state.chat.make_contiguous(),
        overlays: state
            .members
            .iter()
            .filter_map(|m| m.overlay.clone().map(|overlay| PeerOverlay { peer_id: m.info.peer_id.clone(), overlay }))
            .collect(),
    }
    .to_body();
    // Not kept for replay: a client that lacks it has no session id to resume with.
    state.table.lock().send_unkept(state.table.edge(), &peer_id, &body);
    if let Some(me) = state.members.last().map(|m| m.info.clone()) {
        let me = &me;
        let body = ServerMessage::PeerJoined { peer_id: &peer_id, participant: me }.to_body();
        state.broadcast(body, Some(&peer_id));
    }
    if status_changed {
        state.announce_status(Some(&peer_id));
    }
    metrics::counter!("switchboard_room_joins_total").increment(1);
    after_presence_change(myself, state);
    Ok(peer_id)
}

/// Removes a member and its session; returns the connection it was on and its next number.
fn remove_member(state: &mut RoomState, peer: &PeerId) -> Option<(ConnId, u64)> {
    if let Some(i) = state.members.iter().position(|m| &m.info.peer_id == peer) {
        state.members.remove(i);
    }
    let mut t = state.table.lock();
    let i = t.sessions.iter().position(|s| &s.peer == peer)?;
    let s = t.sessions.remove(i);
    Some((s.conn, s.outbox.next_seq))
}

/// Persists a leave and its call change; removes the member. Returns the connection it was on.
async fn record_leave(
    state: &mut RoomState,
    peer: &PeerId,
    reason: &str,
) -> Result<Option<(ConnId, u64)>, ActorProcessingErr> {
    let remaining = state.members.iter().filter(|m| &m.info.peer_id != peer).count();
    let close_reason = if reason == "server_shutdown" { reason } else { "empty" };
    let change = state.status.on_leave(remaining).map(|t| state.change(t, close_reason));
    state.ctx.store.record_leave(&state.id, peer, reason, change.as_ref(), state.fence.as_ref()).await?;
    let conn = remove_member(state, peer);
    state.commit(change, None);
    Ok(conn)
}

async fn leave(
    myself: &ActorRef<RoomMsg>,
    state: &mut RoomState,
    peer: &PeerId,
    reason: &str,
) -> Result<(), ActorProcessingErr> {
    if state.member(peer).is_none() {
        return Ok(());
    }
    let conn = match record_leave(state, peer, reason).await {
        Ok(conn) => conn,
        Err(e) if matches!(e.downcast_ref::<StoreError>(), Some(StoreError::Database(_))) => {
            // The database is down: the peer leaves the room now (the others must know), and the
            // leave is recorded when the database answers again.
            tracing::warn!(room_id = %state.id, peer_id = %peer, error = %e, "leave not recorded yet; will retry");
            defer_leave(myself, state, peer, reason)
        }
        Err(e) if matches!(e.downcast_ref::<StoreError>(), Some(StoreError::Fenced(_))) => {
            lose_lease(myself, state, "a write was fenced");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if reason == "left"
        && let Some((conn, next_seq)) = conn
    {
        // The session is over, but its last frame still continues its sequence.
        let body = with_seq(next_seq, &ServerMessage::Left { room_id: &state.id }.to_body());
        state.ctx.edge.deliver(&conn, Frame { body: body.into(), received_at: None, seq: Some(next_seq) });
    }
    state.broadcast(ServerMessage::PeerLeft { peer_id: peer, reason }.to_body(), None);
    after_presence_change(myself, state);
    Ok(())
}

/// Removes a member in memory and queues its leave for the store.
fn defer_leave(
    myself: &ActorRef<RoomMsg>,
    state: &mut RoomState,
    peer: &PeerId,
    reason: &str,
) -> Option<(ConnId, u64)> {
    let remaining = state.members.iter().filter(|m| &m.info.peer_id != peer).count();
    let close_reason = if reason == "server_shutdown" { reason } else { "empty" };
    let change = state.status.on_leave(remaining).map(|t| state.change(t, close_reason));
    let conn = remove_member(state, peer);
    state.pending_leaves.push_back(PendingLeave {
        peer: peer.clone(),
        reason: reason.to_owned(),
        change: change.clone(),
    });
    state.commit(change, None);
    if state.pending_leaves.len() == 1 {
        myself.send_after(state.retry_backoff, || RoomMsg::RetryLeaves);
    }
    conn
}

/// Records queued leaves in order; on failure tries again later, backing off up to 5 s.
async fn retry_leaves(myself: &ActorRef<RoomMsg>, state: &mut RoomState) {
    while let Some(p) = state.pending_leaves.front() {
        let stored =
            state.ctx.store.record_leave(&state.id, &p.peer, &p.reason, p.change.as_ref(), state.fence.as_ref());
        match stored.await {
            Ok(()) => {
                state.pending_leaves.pop_front();
                state.retry_backoff = Duration::from_millis(200);
            }
            Err(StoreError::Fenced(_)) => return lose_lease(myself, state, "a write was fenced"),
            Err(_) => {
                state.retry_backoff = (state.retry_backoff * 2).min(Duration::from_secs(5));
                // Jitter, so the rooms of a node do not all knock at once when it comes back.
                let delay = state.retry_backoff.mul_f64(0.5 + rand::random::<f64>());
                myself.send_after(delay, || RoomMsg::RetryLeaves);
                return;
            }
        }
    }
}

/// The error a client sees when the store refused a write.
fn store_refusal(e: &StoreError, what: &str) -> RoomError {
    match e {
        StoreError::Database(_) => {
            RoomError::new(ErrorCode::Unavailable, format!("the database is unreachable; {what} try again shortly"))
        }
        StoreError::Fenced(_) => {
            RoomError::new(ErrorCode::RoomElsewhere, "the room moved to another node; join it again")
        }
        StoreError::Corrupt(_) => RoomError::new(ErrorCode::Internal, format!("{what} failed; see the server log")),
    }
}

fn after_presence_change(myself: &ActorRef<RoomMsg>, state: &mut RoomState) {
    state.present.store(state.members.len(), Ordering::Relaxed);
    if state.members.is_empty() {
        state.empty_since = Some(Instant::now());
        myself.send_after(state.ctx.config.idle_timeout, || RoomMsg::IdleCheck);
    } else {
        state.empty_since = None;
    }
}

fn idle_check(myself: &ActorRef<RoomMsg>, state: &RoomState) {
    if let Some(since) = state.empty_since
        && since.elapsed() >= state.ctx.config.idle_timeout
    {
        tracing::debug!(room_id = %state.id, "room idle; stopping");
        myself.stop(Some("idle".into()));
    }
}

async fn control(state: &mut RoomState, from: &PeerId, action: ControlAction, reference: Option<&Value>) {
    let fence = state.fence.clone();
    let (store, room_id) = (state.ctx.store.clone(), state.id.clone());
    let Some(member) = state.member_mut(from) else { return };
    let at = Recorder { store: &*store, fence: fence.as_ref(), room_id: &room_id, peer_id: from };
    let media = match member.participant.apply_control(&at, &member.info.media, action).await {
        Ok(Some(media)) => media,
        Ok(None) => return,
        Err(e) => {
            state.error_to(from, e.code, &e.message, reference);
            return;
        }
    };
    if let Some(m) = state.member_mut(from) {
        m.info.media = media;
    }
    if let Some(m) = state.member(from) {
        let body = ServerMessage::Control { peer_id: from, action, media: &m.info.media }.to_body();
        state.broadcast(body, None);
    }
}

fn set_overlay(state: &mut RoomState, from: &PeerId, overlay: Overlay) {
    let Some(m) = state.member_mut(from) else { return };
    m.overlay = (overlay != Overlay::Clear).then(|| overlay.clone());
    let body = ServerMessage::Overlay { peer_id: from, overlay: &overlay }.to_body();
    state.broadcast(body, Some(from));
}

async fn chat(state: &mut RoomState, from: &PeerId, text: String, reference: Option<&Value>) {
    let Some(m) = state.member(from) else { return };
    let text = text.trim().to_owned();
    if text.is_empty() || text.chars().count() > MAX_CHAT_CHARS {
        let message = format!("chat text must be 1 to {MAX_CHAT_CHARS} characters");
        state.error_to(from, ErrorCode::InvalidMessage, &message, reference);
        return;
    }
    let message = ChatMessage {
        id: random_id(),
        room_id: state.id.clone(),
        seq: state.next_chat_seq,
        peer_id: from.clone(),
        user_id: m.info.user_id.clone(),
        display_name: m.info.display_name.clone(),
        text,
        sent_at: now_ms(),
    };
    if let Err(e) = state.ctx.store.append_chat(&message, state.fence.as_ref()).await {
        tracing::warn!(room_id = %state.id, error = %e, "chat message not stored");
        let refusal = store_refusal(&e, "the message was not stored;");
        state.error_to(from, refusal.code, &refusal.message, reference);
        return;
    }
    state.next_chat_seq += 1;
    state.broadcast(ServerMessage::Chat { message: &message }.to_body(), None);
    state.chat.push_back(message);
    while state.chat.len() > state.ctx.config.chat_history as usize {
        state.chat.pop_front();
    }
}

async fn end_call(state: &mut RoomState, from: &PeerId, reference: Option<&Value>) {
    if state.member(from).is_none() {
        return;
    }
    let Some(transition) = state.status.on_end() else {
        state.error_to(from, ErrorCode::InvalidMessage, "there is no call in progress", reference);
        return;
    };
    let change = state.change(transition, "ended_by_participant");
    if let Err(e) = state.ctx.store.record_call_change(&state.id, &change, state.fence.as_ref()).await {
        tracing::warn!(room_id = %state.id, error = %e, "end of call not recorded");
        let refusal = store_refusal(&e, "the call was not ended;");
        state.error_to(from, refusal.code, &refusal.message, reference);
        return;
    }
    state.commit(Some(change), None);
}

fn info(state: &RoomState) -> RoomInfo {
    RoomInfo {
        room_id: state.id.clone(),
        call_status: state.status,
        call_id: state.call_id.clone(),
        participants: state.members.iter().map(|m| m.info.clone()).collect(),
        max_participants: state.policy.max_participants,
        invitees: state.policy.invitees.clone(),
        lease: state.fence.as_ref().filter(|_| state.lease_valid_until.is_some()).map(|f| HeldLease {
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

async fn stats(state: &mut RoomState, from: &PeerId, sample: StatsSample, reference: Option<&Value>) {
    let fence = state.fence.clone();
    let (store, room_id, fallback) = (state.ctx.store.clone(), state.id.clone(), state.ctx.config.fallback.clone());
    let Some(member) = state.member_mut(from) else { return };
    let at = Recorder { store: &*store, fence: fence.as_ref(), room_id: &room_id, peer_id: from };
    let outcome = match member.participant.observe(&at, &member.info.media, &fallback, sample).await {
        Ok(outcome) => outcome,
        Err(e) => return state.error_to(from, e.code, &e.message, reference),
    };
    let q = outcome.quality;
    let body =
        ServerMessage::ConnectionQuality { peer_id: from, level: q.level, score: round1(q.r), mos: round2(q.mos) };
    state.broadcast(body.to_body(), None);
    let Some(change) = outcome.change else { return };
    if let Some(m) = state.member_mut(from) {
        m.info.media = outcome.media;
    }
    let (mode, reason, paused) = match change {
        FallbackChange::Fallback => ("audio_only", "poor_connection", true),
        FallbackChange::Recover => ("normal", "connection_recovered", false),
    };
    state.send_to_peer(from, &ServerMessage::Fallback { mode, reason }.to_body(), None);
    state.broadcast(ServerMessage::VideoPaused { peer_id: from, paused, reason }.to_body(), Some(from));
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

async fn disconnected(
    myself: &ActorRef<RoomMsg>,
    state: &mut RoomState,
    peer: &PeerId,
    conn: &ConnId,
    seq_shift: i64,
) -> Result<(), ActorProcessingErr> {
    let grace = state.ctx.config.resume_grace;
    let adopted = {
        let t = state.table.lock();
        let Some(s) = t.session(peer) else { return Ok(()) };
        if &s.conn != conn || !s.connected {
            return Ok(());
        }
        s.adopted
    };
    let Some(m) = state.member_mut(peer) else { return Ok(()) };
    // A connection that numbered this room's frames for its client: from now on the client's
    // `lastSeq` maps onto this room's numbers by its shift. (An adopted session was sent
    // nothing: everything kept is new to the client whatever it counted.)
    if !adopted {
        m.seq_shift = seq_shift;
    }
    tracing::debug!(peer_id = %peer, seq_shift, adopted, "disconnected");
    if grace.is_zero() {
        return Box::pin(leave(myself, state, peer, "disconnected")).await;
    }
    m.disconnects += 1;
    let (peer_id, disconnects) = (peer.clone(), m.disconnects);
    if let Some(s) = state.table.lock().session_mut(peer) {
        s.connected = false;
    }
    myself.send_after(grace, move || RoomMsg::GraceExpired { peer: peer_id, disconnects });
    state.broadcast(ServerMessage::PeerDisconnected { peer_id: peer }.to_body(), Some(peer));
    Ok(())
}

/// Takes a hand-over that arrived after this instance started: a session this instance has
/// sent nothing yet continues the previous instance's frames and numbering, with what this
/// instance kept for it since appended; every session keeps the ids seen before.
fn absorb(state: &mut RoomState, carry: Carry) {
    let table = state.table.clone();
    for c in carry.sessions {
        let adopted_here = {
            let mut t = table.lock();
            let Some(s) = t.sessions.iter_mut().find(|s| s.peer.as_str() == c.peer_id) else { continue };
            for id in c.seen_ids {
                if !s.seen_ids.contains(&id) {
                    s.seen_ids.push_back(id);
                }
            }
            while s.seen_ids.len() > REPLAY_FRAMES {
                s.seen_ids.pop_front();
            }
            if !s.adopted {
                continue;
            }
            let (_, mine) = s.outbox.snapshot();
            let mut outbox = Outbox::restore(c.next_seq, c.frames);
            let first_new = outbox.next_seq;
            for (_, framed) in mine {
                let body = framed.split_once(',').map_or("{}".to_owned(), |(_, rest)| format!("{{{rest}"));
                outbox.push(&body);
            }
            s.outbox = outbox;
            s.adopted = c.adopted;
            if s.connected && !s.adopted {
                for (seq, body) in s.outbox.after(first_new - 1).unwrap_or_default() {
                    table.edge().deliver(&s.conn, Frame { body, received_at: None, seq: Some(seq) });
                }
            }
            true
        };
        if adopted_here && let Some(m) = state.members.iter_mut().find(|m| m.info.peer_id.as_str() == c.peer_id) {
            m.seq_shift = c.seq_shift;
        }
    }
}

fn carry(state: &RoomState) -> Carry {
    let t = state.table.lock();
    let sessions = state
        .members
        .iter()
        .filter_map(|m| {
            let s = t.session(&m.info.peer_id)?;
            let (next_seq, frames) = s.outbox.snapshot();
            Some(CarriedSession {
                peer_id: m.info.peer_id.to_string(),
                next_seq,
                frames,
                seen_ids: s.seen_ids.iter().cloned().collect(),
                adopted: s.adopted,
                seq_shift: m.seq_shift,
            })
        })
        .collect();
    Carry { sessions }
}

/// A session's connection told how far its client has counted. An adopted session's kept
/// frames are numbered to follow that count and sent; a session taken for disconnected (its
/// node was unreachable when this instance started) is connected again and gets what it
/// missed. Anything else is already in step.
fn seq_sync(state: &mut RoomState, peer: &PeerId, conn: &ConnId, last_seq: u64, seq_offset: i64) {
    let table = state.table.clone();
    let came_back = {
        let mut t = table.lock();
        let Some(s) = t.session_mut(peer) else { return };
        if &s.conn != conn || (s.connected && !s.adopted) {
            return;
        }
        // The client's last frame in this room's numbers.
        let room_last = last_seq as i64 - seq_offset;
        if s.adopted {
            let shift = room_last + 1 - s.outbox.first_kept() as i64;
            s.outbox.shift(shift);
        }
        let came_back = !s.connected;
        s.adopted = false;
        s.connected = true;
        for (seq, body) in s.outbox.after(room_last.max(0) as u64).unwrap_or_default() {
            table.edge().deliver(conn, Frame { body, received_at: None, seq: Some(seq) });
        }
        came_back
    };
    if let Some(m) = state.member_mut(peer) {
        m.seq_shift = seq_offset;
        m.disconnects += 1;
    }
    if came_back {
        state.broadcast(ServerMessage::PeerResumed { peer_id: peer, ice_restart: false }.to_body(), Some(peer));
    }
}

fn resume(
    state: &mut RoomState,
    peer: &PeerId,
    user: &UserId,
    conn: ConnId,
    token: &str,
    last_seq: u64,
) -> Result<(), (String, String)> {
    let fail = |reason: &str, message: &str| Err((reason.to_owned(), message.to_owned()));
    let Some(idx) = state.members.iter().position(|m| &m.info.peer_id == peer) else {
        return fail("expired", "the session has ended (its grace period is over); join again");
    };
    let m = &state.members[idx];
    if &m.info.user_id != user || m.resume_token != token {
        return fail("invalid_token", "the resume token does not match the session");
    }
    let seq_shift = m.seq_shift;
    let table = state.table.clone();
    {
        let mut t = table.lock();
        let Some(s) = t.session_mut(peer) else {
            return fail("expired", "the session has ended (its grace period is over); join again");
        };
        // The room's numbers for this session become the client's: an adopted session's kept
        // frames all follow `lastSeq`; otherwise the last connection's shift maps one onto the
        // other.
        let shift = if s.adopted { last_seq as i64 + 1 - s.outbox.first_kept() as i64 } else { seq_shift };
        if s.outbox.after((last_seq as i64 - shift).max(0) as u64).is_none() {
            return fail("too_far_behind", "frames after lastSeq are no longer kept; join again");
        }
        tracing::debug!(
            peer_id = %peer, last_seq, shift, adopted = s.adopted, connected = s.connected,
            first_kept = s.outbox.first_kept(), next_seq = s.outbox.next_seq, "resume"
        );
        s.outbox.shift(shift);
        let missed = s.outbox.after(last_seq).unwrap_or_default();
        s.conn = conn.clone();
        s.connected = true;
        s.adopted = false;
        s.at_room = 0;
        // `resumed` carries the client's lastSeq: it does not take a number, the replay follows it.
        let resumed = ServerMessage::Resumed { room_id: &state.id, session_id: peer, replayed: missed.len() }.to_body();
        let edge = table.edge();
        edge.deliver(
            &conn,
            Frame { body: with_seq(last_seq, &resumed).into(), received_at: None, seq: Some(last_seq) },
        );
        for (seq, body) in missed {
            edge.deliver(&conn, Frame { body, received_at: None, seq: Some(seq) });
        }
    }
    let m = &mut state.members[idx];
    m.seq_shift = 0;
    m.disconnects += 1;
    metrics::counter!("switchboard_resumes_total").increment(1);
    state.broadcast(ServerMessage::PeerResumed { peer_id: peer, ice_restart: true }.to_body(), Some(peer));
    Ok(())
}
