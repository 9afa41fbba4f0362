//! A connection: one task per client WebSocket that owns the socket. It reads what the client
//! sends (size, rate and kind checked), parses and authorizes it, routes it to the client's
//! room, and writes what rooms deliver, numbering every frame with a per-session `seq`. Rooms
//! and the node reach it through its [`Mailbox`]; frames queued while it works go out in one
//! flush. Not supervised: when it ends, the socket closes and the room is told.

use crate::app::App;
use crate::auth::Claims;
use crate::config::LimitsConfig;
use crate::edge::mailbox::{Inbox, Mailbox};
use crate::edge::rate_limit::TokenBucket;
use crate::ice::ice_servers;
use crate::routing::{self, RoomHandle};
use crate::telemetry;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_actors::ids::{random_id, valid_room_id};
use switchboard_actors::ports::{Frame, now_ms};
use switchboard_actors::protocol::{
    Body, ClientMessage, FrameKind, MAX_NAME_CHARS, RawJson, RelayKind, ServerMessage, parse_client, renumber, with_seq,
};
use switchboard_actors::recent::Recent;
use switchboard_actors::room::{JoinRequest, RelayPayload, RoomMsg};
use switchboard_actors::{ConnId, ErrorCode, PeerId, RoomId, UserId};
use switchboard_cluster::routing::ResumeCmd;

mod grants;
mod intake;
mod kept;
mod lobby;
mod numbering;
mod session;

use intake::{Intake, room_message};
use kept::{Kept, MAX_PENDING, MAX_UNRECEIPTED, RETRY_AFTER, Unreceipted};
use kept::{forget_acknowledged, forget_target, pump, pump_with, receipt, resend_pending};
use kept::{reroute, retry_pending, to_room};
use numbering::{Fence, Numbers, send_receipt, write_numbered};
use session::{join, resume};

/// Close codes (RFC 6455).
pub mod close_code {
    /// The server is going away.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke a rule (flood, bad token).
    pub const POLICY: u16 = 1008;
    /// A message was larger than the limit.
    pub const TOO_BIG: u16 = 1009;
    /// The client did not read: more bytes waited for it than the limit allows. Its session
    /// stays resumable.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// The connection's token expired without a fresh one (`token`). Its session stays
    /// resumable with a new token.
    pub const TOKEN_EXPIRED: u16 = 4001;
}

struct Joined {
    room_id: RoomId,
    peer: PeerId,
    room: RoomHandle,
    /// The newest ownership epoch heard from the room's instances (see `Frame::epoch`).
    fence: Fence,
}

/// Connection state.
pub struct ConnectionState {
    conn_id: ConnId,
    claims: Claims,
    socket: WebSocket,
    app: Arc<App>,
    /// Frames fed to the socket since the last flush.
    unflushed: bool,
    /// The session's frame numbers as the client sees them (see [`Numbers`]).
    numbers: Numbers,
    joined: Option<Joined>,
    /// The session this connection left with `leave` (told again when the connection ends, in
    /// case the room was moving when the first one went).
    left: Option<Joined>,
    /// Bounced commands re-sent since the room last delivered something.
    reroutes: u32,
    /// The same for the edge's own messages (receipts, numbering shifts, echoes), counted apart
    /// so that they never use up a client's command's tries.
    own_reroutes: u32,
    /// Passes over the kept messages scheduled after a bounce since the room last delivered
    /// something (see [`kept::reroute`]); each waits longer than the one before.
    passes: u32,
    /// A pass is scheduled (`ResendPass`): bounced kept messages wait for it.
    pass_due: bool,
    /// Closed for abuse (flood, oversized frame): its session ends instead of waiting for a resume.
    abusive: bool,
    /// The client's side ended the socket without `leave` (not the server's close).
    dropped: bool,
    /// `refresh_token` has been sent for the current token.
    token_warned: bool,
    /// Messages with an `id` the room has not acknowledged yet, oldest first. Only the
    /// oldest is on its way at any time, so none can overtake another, whatever happens to
    /// the room between them.
    pending: VecDeque<Kept>,
    /// Relayed messages (offers, answers, candidates) the room acknowledged whose target's
    /// connection has not yet confirmed writing them (a receipt), oldest first. When the edge
    /// finds its room in another instance, these go again first, in order: the old instance
    /// may have died before they were written, whatever happened in between (the room's node
    /// died, the target was away and resumed elsewhere). Receivers drop what they already have
    /// (`msgId`, and `resume`'s `received`) and confirm it again.
    unreceipted: VecDeque<Unreceipted>,
    /// The latest relayed messages confirmed written. A confirmation means the target's
    /// process handed the frame to its socket, not that the target's client read it: if that
    /// process dies right after, the frame dies with it. So these go again too (after the
    /// unconfirmed ones' elders, in the order they were acknowledged) when the edge finds the
    /// room in another instance, and the target drops what it already has.
    recent_delivered: VecDeque<Unreceipted>,
    /// Acknowledgements counted, to keep re-sent messages in their original order.
    acks: u64,
    /// Whether a `RetryPending` timer is set.
    retry_armed: bool,
    /// Relayed messages delivered lately, as (sender, `msgId`), to drop repeats.
    delivered: Recent<(String, String)>,
    /// `delivered` notices for this client sent through the room (to take their place in the
    /// session's numbering) and not yet written back here: the room instance may die with
    /// them, and a client that never hears `delivered` sends the message again, maybe after
    /// its target has forgotten it. Sent again wherever the room is found next.
    announcing: VecDeque<String>,
    /// The lobby this connection waits in, if any.
    lobby: Option<Box<lobby::Waiting>>,
}

/// Frames written to the socket before one flush (one syscall for a burst of deliveries).
const WRITE_BATCH: usize = 64;

/// Messages a connection's task handles besides what its client sends.
pub enum ConnectionMsg {
    /// A frame from a room.
    Deliver(Frame),
    /// Close the socket with a code and a reason, then stop.
    Close {
        /// RFC 6455 close code.
        code: u16,
        /// Reason text.
        reason: String,
    },
    /// The node is going away: tell the client to reconnect elsewhere, then close.
    GoAway {
        /// Why, for the client and the close frame.
        reason: String,
    },
    /// Send again what the room has not acknowledged for a while (a timer sends it).
    RetryPending,
    /// Kept messages bounced off a node that does not serve the room: find the room and send
    /// them all again, in order, once (a timer sends it).
    ResendPass,
    /// The target's connection wrote this connection's relayed message with this `id` (JSON
    /// text).
    Receipt(String),
    /// The room this connection is in moved to `node` (a drain handed it over, or a new
    /// instance of it started there).
    Moved {
        /// The room.
        room: RoomId,
        /// Its new node.
        node: String,
        /// The ownership epoch of the instance there; 0 when not known.
        epoch: i64,
    },
    /// This connection's person, waiting in `lobby`, was paired: join `room`.
    Paired {
        /// The lobby.
        lobby: String,
        /// The fresh room of the pair.
        room: String,
    },
    /// An operator changed what this connection's token allows, from now on.
    Grants(crate::auth::Grants),
    /// A frame for this connection's person rather than its session (a notification): JSON
    /// body without `seq`, numbered in the session's sequence when in a room.
    ToUser(String),
    /// The lobby wait of this connection's `lobby_join` counted `attempt` is over.
    LobbyTimeout {
        /// Which `lobby_join`.
        attempt: u64,
    },
    /// A command this connection sent reached a node that does not serve the room: find the
    /// room again (`hint`: a node to try) and re-send it.
    Reroute {
        /// The room.
        room: RoomId,
        /// A node to try when no lease names the owner.
        hint: String,
        /// The command (boxed: it is rare, and every queued message is as large as the largest).
        msg: Box<RoomMsg>,
    },
}

/// Registers a connection for an upgraded socket and returns what runs it until it closes:
/// one task that owns the socket, reads the client's frames and writes what rooms deliver, one
/// thing at a time. It is not
/// supervised: when it ends, for any reason, the socket closes and the room is told the peer
/// left (or, for a dropped connection, that its session waits for a resume).
pub fn run(app: Arc<App>, claims: Claims, socket: WebSocket) -> impl Future<Output = ()> + Send {
    // A connection id names its node, so rooms elsewhere can answer through this node's edge.
    let conn_id = ConnId::new(format!("{}/{}", app.config.node_id, random_id()));
    let (mailbox, inbox) = Mailbox::channel(app.config.limits.max_queued_bytes);
    app.edge.register(conn_id.clone(), &claims.sub, mailbox.clone());
    metrics::gauge!("switchboard_ws_connections").increment(1.0);
    let limits = app.config.limits.clone();
    // The state lives in its own allocation and the loop's future holds a pointer to it: an
    // async fn's arguments keep their place in its future for its whole life, so a state
    // passed by value would take its room twice.
    let state = Box::new(ConnectionState {
        conn_id,
        claims,
        socket,
        app,
        unflushed: false,
        numbers: Numbers::default(),
        joined: None,
        left: None,
        reroutes: 0,
        own_reroutes: 0,
        passes: 0,
        pass_due: false,
        abusive: false,
        dropped: false,
        token_warned: false,
        pending: VecDeque::new(),
        unreceipted: VecDeque::new(),
        recent_delivered: VecDeque::new(),
        acks: 0,
        retry_armed: false,
        delivered: Recent::new(MAX_PENDING),
        announcing: VecDeque::new(),
        lobby: None,
    });
    // Not an async fn: what the upgrade's task holds is this pointer, not the arguments.
    Box::pin(serve(state, mailbox, inbox, limits))
}

async fn serve(mut state: Box<ConnectionState>, myself: Mailbox, mut inbox: Inbox, limits: LimitsConfig) {
    let mut intake = Intake::new(&limits);
    // The token's timer (see `grants`): part of this loop, not a task of its own, and set again
    // only when the token or its phase changed.
    let mut armed = (state.claims.exp, state.token_warned);
    let mut woken_by_receipts = false;
    let token_timer = tokio::time::sleep_until(grants::deadline(&state));
    tokio::pin!(token_timer);
    while !myself.is_stopping() {
        tokio::select! {
            biased;
            () = &mut token_timer => Box::pin(grants::timer_fired(&myself, &mut state)).await,
            () = myself.overflowed() => {
                metrics::counter!("switchboard_slow_consumers_closed_total").increment(1);
                tracing::info!(conn_id = %state.conn_id, queued = myself.queued(), "client not reading; closing");
                close(&myself, &mut state, close_code::SLOW_CONSUMER, "client too slow: too many bytes waiting").await;
            }
            msg = inbox.recv() => {
                handle(&myself, &mut state, msg).await;
                // Whatever else is already queued goes out in the same flush.
                for _ in 1..WRITE_BATCH {
                    if myself.is_stopping() {
                        break;
                    }
                    let Some(msg) = inbox.try_recv() else { break };
                    handle(&myself, &mut state, msg).await;
                }
            }
            next = state.socket.next() => {
                let Some(frame) = next else {
                    state.dropped = true;
                    break;
                };
                Box::pin(intake.take(&myself, &mut state, frame, &limits)).await;
            }
        }
        if state.unflushed && !myself.is_stopping() {
            flush(&myself, &mut state).await;
        }
        if woken_by_receipts != kept::wants_receipts(&state) {
            woken_by_receipts = !woken_by_receipts;
            myself.wake_on_receipts(woken_by_receipts);
        }
        if armed != (state.claims.exp, state.token_warned) {
            armed = (state.claims.exp, state.token_warned);
            token_timer.as_mut().reset(grants::deadline(&state));
        }
    }
    inbox.close();
    Box::pin(finish(&mut state)).await;
}

/// What the connection does when it ends: forget it, and tell its room.
async fn finish(state: &mut ConnectionState) {
    state.app.edge.unregister(&state.conn_id, &state.claims.sub);
    lobby::gone(state).await;
    metrics::gauge!("switchboard_ws_connections").decrement(1.0);
    if let Some(mut j) = state.left.take() {
        // A room that was moving may have missed the `leave` (or bounced it back to this
        // connection as it closed); a second one, to wherever the lease says the room is
        // now, is harmless.
        if state.app.cluster.is_some() || !routing::reachable(&j.room) {
            let _ = routing::relocate(&state.app, &mut j.room, &j.room_id).await;
        }
        let leave = RoomMsg::Leave { peer: j.peer, reason: "left".into() };
        let _ = Box::pin(routing::send(&state.app, &mut j.room, &j.room_id, &state.conn_id, leave)).await;
    }
    if let Some(mut j) = state.joined.take() {
        if state.dropped && j.room_id.as_str().starts_with(crate::appointments::ROOM_PREFIX) {
            let (app, room, user) = (state.app.clone(), j.room_id.to_string(), state.claims.sub.clone());
            tokio::spawn(async move { crate::appointments::dropped(&app, &room, &user).await });
        }
        // A dropped connection keeps its session for the grace period (the client may
        // resume); one closed for abuse leaves at once.
        let leave = if state.abusive {
            RoomMsg::Leave { peer: j.peer, reason: "disconnected".into() }
        } else {
            RoomMsg::Disconnected { peer: j.peer, conn: state.conn_id.clone(), seq_shift: state.numbers.offset }
        };
        // The room must hear this (it carries how this connection numbered the session's
        // frames), and a command bounced back to a closed connection is lost: send it to
        // wherever the lease says the room is now.
        if state.app.cluster.is_some() || !routing::reachable(&j.room) {
            let _ = routing::relocate(&state.app, &mut j.room, &j.room_id).await;
        }
        let _ = Box::pin(routing::send(&state.app, &mut j.room, &j.room_id, &state.conn_id, leave)).await;
    }
}

async fn handle(myself: &Mailbox, state: &mut ConnectionState, message: ConnectionMsg) {
    match message {
        ConnectionMsg::Deliver(frame) => {
            myself.written(frame.body.len());
            state.reroutes = 0;
            state.own_reroutes = 0;
            state.passes = 0;
            match frame.seq {
                Some(_) if stale(state, frame.epoch) => {}
                Some(seq) => write_numbered(myself, state, seq, &frame.body, frame.kind).await,
                None => write(myself, state, &frame.body).await,
            }
            if let Some(t) = frame.received_at {
                telemetry::hot().relay_seconds.record(t.elapsed().as_secs_f64());
            }
        }
        ConnectionMsg::Close { code, reason } => {
            state.abusive = matches!(code, close_code::POLICY | close_code::TOO_BIG);
            close(myself, state, code, &reason).await;
        }
        ConnectionMsg::GoAway { reason } => {
            let body = ServerMessage::GoAway { reason: &reason, reconnect: true }.to_body();
            // In a room, the goaway repeats the last `seq` instead of taking the next one:
            // the session's numbers belong to its room, and a `resume` elsewhere must find
            // the room's next frame under the number the client expects.
            if state.joined.is_some() {
                let text = with_seq(state.numbers.seq, &body);
                feed(myself, state, text).await;
            } else {
                write(myself, state, &body).await;
            }
            close(myself, state, close_code::GOING_AWAY, &reason).await;
        }
        ConnectionMsg::RetryPending => Box::pin(retry_pending(myself, state)).await,
        ConnectionMsg::ResendPass => Box::pin(kept::resend_pass(state)).await,
        ConnectionMsg::Receipt(id) => Box::pin(receipt(myself, state, &id)).await,
        ConnectionMsg::Reroute { room, hint, msg } => Box::pin(reroute(myself, state, room, hint, *msg)).await,
        ConnectionMsg::Paired { lobby, room } => Box::pin(lobby::paired(myself, state, lobby, room)).await,
        ConnectionMsg::Grants(grants) => {
            let body = serde_json::json!({"type": "grants_changed", "grants": &grants}).to_string();
            state.claims.grants = grants;
            Box::pin(reply(myself, state, &Body::new(body, FrameKind::Other))).await;
        }
        ConnectionMsg::ToUser(body) => {
            let body = Body::new(body, FrameKind::Other);
            Box::pin(reply(myself, state, &body)).await;
        }
        ConnectionMsg::LobbyTimeout { attempt } => Box::pin(lobby::lobby_timeout(myself, state, attempt)).await,
        ConnectionMsg::Moved { room, node, epoch } => {
            tracing::debug!(conn_id = %state.conn_id, room_id = %room, node_id = %node, epoch, "room found again");
            let ours = state.joined.as_ref().is_some_and(|j| j.room_id == room);
            if ours
                && !stale(state, epoch)
                && let Some(j) = state.joined.as_mut()
            {
                j.room = Box::pin(routing::handle_for(&state.app, &room, &node)).await;
                Box::pin(resend_pending(state)).await;
            }
        }
    }
}

/// Whether a frame (or a `Moved`) comes from an instance of the room older than one this
/// connection has heard from (see [`Fence`]); such a frame is dropped and counted.
fn stale(state: &mut ConnectionState, epoch: i64) -> bool {
    let Some(j) = state.joined.as_mut() else { return false };
    if j.fence.admits(epoch) {
        return false;
    }
    metrics::counter!("switchboard_stale_frames_dropped_total").increment(1);
    tracing::debug!(conn_id = %state.conn_id, epoch, newest = j.fence.newest(), "a frame from an older instance of the room; dropped");
    true
}

/// Sends a close frame (bounded in time: the client may not be reading) and stops.
async fn close(myself: &Mailbox, state: &mut ConnectionState, code: u16, reason: &str) {
    let frame = CloseFrame { code, reason: reason.to_owned().into() };
    let _ = tokio::time::timeout(Duration::from_secs(2), state.socket.send(Message::Close(Some(frame)))).await;
    state.unflushed = false;
    myself.stop(Some("closed".into()));
}

/// Feeds a text frame to the socket without flushing (the loop flushes once per batch). A
/// write that blocks because the client is not reading gives way to the overflow signal.
async fn feed(myself: &Mailbox, state: &mut ConnectionState, text: String) {
    let written = tokio::select! {
        r = state.socket.feed(Message::Text(text.into())) => r.is_ok(),
        () = myself.overflowed() => true,
    };
    state.unflushed = true;
    if !written {
        myself.stop(Some("write failed".into()));
    }
}

async fn flush(myself: &Mailbox, state: &mut ConnectionState) {
    let flushed = tokio::select! {
        r = state.socket.flush() => r.is_ok(),
        () = myself.overflowed() => true,
    };
    state.unflushed = false;
    if !flushed {
        myself.stop(Some("write failed".into()));
    }
}

/// Opens a connection only to tell the client why it cannot stay (a bad token), then closes.
pub async fn refuse(mut socket: WebSocket, code: &str, message: &str) {
    let body = ServerMessage::Error { code, message, reference: None }.to_body();
    let _ = socket.send(Message::Text(with_seq(1, &body).into())).await;
    let frame = CloseFrame { code: close_code::POLICY, reason: code.into() };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// Sends a frame this connection made (pong, error): numbered here before a join, by the room
/// (in the session's sequence) after it.
async fn reply(myself: &Mailbox, state: &mut ConnectionState, body: &Body) {
    if let Some(j) = state.joined.as_mut() {
        let echo = RoomMsg::Echo { from: j.peer.clone(), body: body.to_string(), kind: body.kind };
        if routing::send(&state.app, &mut j.room, &j.room_id, &state.conn_id, echo).await.is_ok() {
            return;
        }
    }
    write(myself, state, body).await;
}

/// Writes a frame this connection numbers itself (see [`Numbers::own`]); in a room, the room
/// hears of the shift.
async fn write(myself: &Mailbox, state: &mut ConnectionState, body: &str) {
    let seq = state.numbers.own(state.joined.is_some());
    if state.joined.is_some() {
        numbering::report_shift(state);
    }
    let text = with_seq(seq, body);
    feed(myself, state, text).await;
}

async fn send_error(
    myself: &Mailbox,
    state: &mut ConnectionState,
    code: ErrorCode,
    message: &str,
    reference: Option<&Value>,
) {
    metrics::counter!("switchboard_signaling_errors_total", "code" => code.as_str()).increment(1);
    let body = ServerMessage::Error { code: code.as_str(), message, reference }.to_body();
    Box::pin(reply(myself, state, &body)).await;
}

fn peer(state: &ConnectionState) -> Option<PeerId> {
    state.joined.as_ref().map(|j| j.peer.clone())
}

async fn not_joined(myself: &Mailbox, state: &mut ConnectionState, reference: Option<Value>) {
    send_error(myself, state, ErrorCode::NotJoined, "join a room first", reference.as_ref()).await;
}

#[cfg(test)]
mod tests {
    use switchboard_actors::protocol::with_seq;

    #[test]
    fn seq_is_spliced_in_front() {
        assert_eq!(with_seq(7, r#"{"type":"pong"}"#), r#"{"seq":7,"type":"pong"}"#);
    }
}
