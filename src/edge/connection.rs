//! A connection: one task per client WebSocket that owns the socket. It reads what the client
//! sends (size, rate and kind checked), parses and authorizes it, routes it to the client's
//! room, and writes what rooms deliver, numbering every frame with a per-session `seq`. Rooms
//! and the node reach it through its [`Mailbox`]; frames queued while it works go out in one
//! flush. Not supervised: when it ends, the socket closes and the room is told.

use crate::app::App;
use crate::auth::Claims;
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
use switchboard_actors::protocol::{ClientMessage, MAX_NAME_CHARS, RelayKind, ServerMessage, parse_client, with_seq};
use switchboard_actors::room::{JoinRequest, RelayPayload, RoomMsg};
use switchboard_actors::{ConnId, ErrorCode, PeerId, RoomId, UserId};
use switchboard_cluster::routing::ResumeCmd;

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
}

/// Start arguments of a connection's task.
struct Parts {
    conn_id: ConnId,
    claims: Claims,
    socket: WebSocket,
    app: Arc<App>,
    mailbox: Mailbox,
}

struct Joined {
    room_id: RoomId,
    peer: PeerId,
    room: RoomHandle,
}

/// Connection state.
pub struct ConnectionState {
    conn_id: ConnId,
    claims: Claims,
    socket: WebSocket,
    app: Arc<App>,
    /// Frames fed to the socket since the last flush.
    unflushed: bool,
    seq: u64,
    joined: Option<Joined>,
    /// The session this connection left with `leave` (told again when the connection ends, in
    /// case the room was moving when the first one went).
    left: Option<Joined>,
    /// Bounced commands re-sent since the room last delivered something.
    reroutes: u32,
    /// Added to the room's frame numbers after the room restarted or moved (see `write_numbered`).
    seq_offset: i64,
    /// Closed for abuse (flood, oversized frame): its session ends instead of waiting for a resume.
    abusive: bool,
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
    /// Whether a `RetryPending` timer is set.
    retry_armed: bool,
    /// Relayed messages delivered lately, as (sender, `msgId`), to drop repeats.
    delivered: VecDeque<(String, String)>,
}

/// A client message with an `id`, kept until the room acknowledges it.
struct Kept {
    /// Its id, as JSON text.
    id: String,
    /// The frame as the client sent it.
    text: String,
    /// When it was last sent to the room; `None` while it waits its turn.
    sent: Option<Instant>,
    /// The target of an offer, answer or candidate (relayed to one peer, who drops repeats
    /// and confirms the write); `None` for other messages.
    target: Option<String>,
    /// The client asked for `delivered`.
    receipt: bool,
}

/// A relayed message acknowledged by a room and not yet confirmed by its target's connection.
struct Unreceipted {
    /// Its id, as JSON text.
    id: String,
    /// The frame as the client sent it.
    text: String,
    /// The target session.
    target: String,
    /// The client asked for `delivered`.
    receipt: bool,
    /// The room instance that acknowledged it (see `RoomHandle::target`).
    acked_by: String,
}

/// Relayed messages kept until their receipt; while this many wait, the next kept message
/// waits too (a target that is away holds its senders back instead of their memory growing).
const MAX_UNRECEIPTED: usize = 256;

/// Unacknowledged messages kept per connection, and relayed ids remembered.
const MAX_PENDING: usize = 256;

/// A message not acknowledged this long after it was sent is sent again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

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

/// Runs a connection for an upgraded socket until it closes: one task that owns the socket,
/// reads the client's frames and writes what rooms deliver, one thing at a time. It is not
/// supervised: when it ends, for any reason, the socket closes and the room is told the peer
/// left (or, for a dropped connection, that its session waits for a resume).
pub async fn run(app: Arc<App>, claims: Claims, socket: WebSocket) {
    // A connection id names its node, so rooms elsewhere can answer through this node's edge.
    let conn_id = ConnId::new(format!("{}/{}", app.config.node_id, random_id()));
    let (mailbox, inbox) = Mailbox::channel(app.config.limits.max_queued_bytes);
    app.edge.register(conn_id.clone(), mailbox.clone());
    metrics::gauge!("switchboard_ws_connections").increment(1.0);
    let parts = Parts { conn_id, claims, socket, app, mailbox };
    // Boxed: the loop's future is resident for the connection's whole life.
    Box::pin(serve(parts, inbox)).await;
}

async fn serve(parts: Parts, mut inbox: Inbox) {
    let limits = parts.app.config.limits.clone();
    let mut state = ConnectionState {
        conn_id: parts.conn_id,
        claims: parts.claims,
        socket: parts.socket,
        app: parts.app,
        unflushed: false,
        seq: 0,
        joined: None,
        left: None,
        reroutes: 0,
        seq_offset: 0,
        abusive: false,
        pending: VecDeque::new(),
        unreceipted: VecDeque::new(),
        retry_armed: false,
        delivered: VecDeque::new(),
    };
    let myself = parts.mailbox;
    let mut intake = Intake::new(&limits);
    while !myself.is_stopping() {
        tokio::select! {
            biased;
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
                let Some(frame) = next else { break };
                Box::pin(intake.take(&myself, &mut state, frame, &limits)).await;
            }
        }
        if state.unflushed && !myself.is_stopping() {
            flush(&myself, &mut state).await;
        }
    }
    inbox.close();
    Box::pin(finish(&mut state)).await;
}

/// What the connection does when it ends: forget it, and tell its room.
async fn finish(state: &mut ConnectionState) {
    state.app.edge.unregister(&state.conn_id);
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
        // A dropped connection keeps its session for the grace period (the client may
        // resume); one closed for abuse leaves at once.
        let leave = if state.abusive {
            RoomMsg::Leave { peer: j.peer, reason: "disconnected".into() }
        } else {
            RoomMsg::Disconnected { peer: j.peer, conn: state.conn_id.clone(), seq_shift: state.seq_offset }
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
            match frame.seq {
                Some(seq) => write_numbered(myself, state, seq, &frame.body).await,
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
                let text = with_seq(state.seq, &body);
                feed(myself, state, text).await;
            } else {
                write(myself, state, &body).await;
            }
            close(myself, state, close_code::GOING_AWAY, &reason).await;
        }
        ConnectionMsg::RetryPending => Box::pin(retry_pending(myself, state)).await,
        ConnectionMsg::Receipt(id) => Box::pin(receipt(myself, state, &id)).await,
        ConnectionMsg::Reroute { room, hint, msg } => Box::pin(reroute(myself, state, room, hint, *msg)).await,
        ConnectionMsg::Moved { room, node } => {
            if let Some(j) = state.joined.as_mut()
                && j.room_id == room
            {
                j.room = Box::pin(routing::handle_for(&state.app, &room, &node)).await;
                Box::pin(resend_pending(state)).await;
            }
        }
    }
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

/// The checks every frame from the client passes before it is handled: size (through the
/// WebSocket config), rate (a token bucket), and kind (text only).
struct Intake {
    bucket: TokenBucket,
    violations: u32,
}

impl Intake {
    fn new(limits: &crate::config::LimitsConfig) -> Intake {
        Intake { bucket: TokenBucket::new(limits.messages_per_second, limits.burst, Instant::now()), violations: 0 }
    }

    async fn take(
        &mut self,
        myself: &Mailbox,
        state: &mut ConnectionState,
        next: Result<Message, axum::Error>,
        limits: &crate::config::LimitsConfig,
    ) {
        let now = Instant::now();
        let frame = match next {
            Ok(Message::Close(_)) => return myself.stop(Some("client gone".into())),
            Ok(Message::Ping(_) | Message::Pong(_)) => return,
            Ok(frame) => frame,
            Err(e) => {
                if is_too_big(e) {
                    metrics::counter!("switchboard_signaling_errors_total", "code" => "too_large").increment(1);
                    let reason = format!("message larger than {} bytes", limits.max_message_bytes);
                    state.abusive = true;
                    return close(myself, state, close_code::TOO_BIG, &reason).await;
                }
                return myself.stop(Some("read failed".into()));
            }
        };
        // Every data frame, text or not, spends from the connection's budget.
        if !self.bucket.try_take(now) {
            self.violations += 1;
            metrics::counter!("switchboard_signaling_errors_total", "code" => "rate_limited").increment(1);
            if self.violations > limits.max_rate_violations {
                state.abusive = true;
                return close(myself, state, close_code::POLICY, "rate limit exceeded").await;
            }
            // Tell the client once per run of refused messages, not once per message.
            if self.violations == 1 {
                send_error(myself, state, ErrorCode::RateLimited, "too many messages; slow down", None).await;
            }
            return;
        }
        self.violations = 0;
        match frame {
            Message::Text(text) => inbound(myself, state, &text, now).await,
            _ => {
                let message = "binary frames are not part of the protocol; send JSON text";
                send_error(myself, state, ErrorCode::BinaryUnsupported, message, None).await;
            }
        }
    }
}

/// Whether a read failed because a message or frame exceeded the configured size.
fn is_too_big(e: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    matches!(e.into_inner().downcast_ref::<Error>(), Some(Error::Capacity(_)))
}

/// Writes a frame the room numbered (its body carries its `seq`). A room that restarted or
/// moved numbers afresh; the client must still see `seq` rise by one, so from then on this
/// connection shifts the room's numbers by a fixed offset.
async fn write_numbered(myself: &Mailbox, state: &mut ConnectionState, seq: u64, body: &str) {
    let head = body.get(..body.len().min(160)).unwrap_or(body);
    // An ack, or an error about a message: either way the room has answered it for good (but
    // `room_unavailable`, which this connection says itself while it keeps the message).
    let answered = head.contains("\"type\":\"ack\"")
        || (head.contains("\"type\":\"error\"") && !body.contains("\"code\":\"room_unavailable\""));
    if answered && forget_acknowledged(state, body) {
        Box::pin(pump(myself, state)).await;
    }
    if head.contains("\"type\":\"peer_left\"") {
        forget_target(state, body);
    }
    if head.contains("\"msgId\":")
        && let Some((sender, msg_id, new)) = first_delivery(state, body)
    {
        // Written (or had already): the sender's edge may forget it.
        send_receipt(state, sender, msg_id);
        if !new {
            // A relayed message this client already has (re-sent after a room moved): not
            // written, and the numbering closes up behind it.
            state.seq_offset -= 1;
            metrics::counter!("switchboard_duplicates_dropped_total").increment(1);
            return;
        }
    }
    let room_seq = seq as i64;
    if state.seq > 0 && room_seq + state.seq_offset <= state.seq as i64 {
        state.seq_offset = state.seq as i64 + 1 - room_seq;
        metrics::counter!("switchboard_seq_realigned_total").increment(1);
        tracing::info!(conn_id = %state.conn_id, room_seq, client_seq = state.seq, "frame numbers realigned");
    }
    let shifted = (room_seq + state.seq_offset).max(1) as u64;
    state.seq = shifted;
    let text = if state.seq_offset == 0 {
        body.to_owned()
    } else {
        // Replace the room's `{"seq":N,` with the shifted number.
        let rest = body.split_once(',').map_or("}", |(_, rest)| rest);
        with_seq(shifted, &format!("{{{rest}"))
    };
    feed(myself, state, text).await;
}

/// Drops an answered message (acknowledged or refused) from the ones kept for re-sending;
/// true when it was the one on its way (the next may go).
fn forget_acknowledged(state: &mut ConnectionState, body: &str) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(body) else { return false };
    let Some(reference) = v.get("ref") else { return false };
    let id = reference.to_string();
    let was_head = state.pending.front().is_some_and(|k| k.id == id);
    let acked = v.get("type").and_then(Value::as_str) == Some("ack");
    if let Some(pos) = state.pending.iter().position(|k| k.id == id)
        && let Some(kept) = state.pending.remove(pos)
        && acked
        && let (Some(target), Some(j)) = (kept.target, &state.joined)
    {
        let acked_by = j.room.target();
        state.unreceipted.push_back(Unreceipted { id, text: kept.text, target, receipt: kept.receipt, acked_by });
    }
    was_head
}

/// Whether a relayed message (with `msgId`) is new to this client (and remembers it), with its
/// sender and id; `None` when the frame does not read as one.
fn first_delivery(state: &mut ConnectionState, body: &str) -> Option<(String, String, bool)> {
    #[derive(serde::Deserialize)]
    struct Relayed {
        #[serde(rename = "peerId")]
        peer_id: String,
        #[serde(rename = "msgId")]
        msg_id: Value,
    }
    let r = serde_json::from_str::<Relayed>(body).ok()?;
    let key = (r.peer_id, r.msg_id.to_string());
    if state.delivered.contains(&key) {
        return Some((key.0, key.1, false));
    }
    state.delivered.push_back(key.clone());
    while state.delivered.len() > MAX_PENDING {
        state.delivered.pop_front();
    }
    Some((key.0, key.1, true))
}

/// Confirms to `sender`'s connection, through the room, that its message `msg_id` was written
/// here. On this node the room's table routes it at once; elsewhere it crosses to the room.
fn send_receipt(state: &ConnectionState, sender: String, msg_id: String) {
    let Some(j) = &state.joined else { return };
    let sender = PeerId::new(sender);
    match &j.room {
        RoomHandle::Local(local) => local.table.receipt(&sender, &msg_id),
        RoomHandle::Remote(_) => {
            let _ = routing::try_send(&j.room, &j.room_id, &state.conn_id, RoomMsg::Receipt { sender, msg_id });
        }
    }
}

/// A receipt came for one of this client's relayed messages: it is forgotten (and the client
/// told, if it asked), and a message held back by the receipt limit may go.
///
/// Receipts are cumulative per target: the target's connection writes a sender's messages in
/// the order the room numbered them, and a message acknowledged earlier is numbered earlier
/// in any instance (when the edge finds a new instance it sends again everything not yet
/// confirmed before anything newer). So the receipt for one message confirms every older one
/// to the same target too, which also covers a receipt lost on its way (a room dying).
async fn receipt(myself: &Mailbox, state: &mut ConnectionState, id: &str) {
    let Some(pos) = state.unreceipted.iter().position(|u| u.id == id) else { return };
    let target = state.unreceipted[pos].target.clone();
    let was_full = state.unreceipted.len() >= MAX_UNRECEIPTED;
    let mut done = Vec::new();
    let mut i = 0;
    for _ in 0..=pos {
        if state.unreceipted[i].target == target {
            if let Some(u) = state.unreceipted.remove(i) {
                done.push(u);
            }
        } else {
            i += 1;
        }
    }
    for u in done.into_iter().filter(|u| u.receipt) {
        if let Ok(reference) = serde_json::from_str::<Value>(&u.id) {
            let body = ServerMessage::Delivered { reference: &reference }.to_body();
            Box::pin(reply(myself, state, &body)).await;
        }
    }
    if was_full {
        Box::pin(pump(myself, state)).await;
    }
}

/// A peer left for good: what was kept for it will never be confirmed.
fn forget_target(state: &mut ConnectionState, body: &str) {
    #[derive(serde::Deserialize)]
    struct Left {
        #[serde(rename = "peerId")]
        peer_id: String,
    }
    if let Ok(left) = serde_json::from_str::<Left>(body) {
        state.unreceipted.retain(|u| u.target != left.peer_id);
    }
}

/// Sends a frame this connection made (pong, error): numbered here before a join, by the room
/// (in the session's sequence) after it.
async fn reply(myself: &Mailbox, state: &mut ConnectionState, body: &str) {
    if let Some(j) = state.joined.as_mut() {
        let echo = RoomMsg::Echo { from: j.peer.clone(), body: body.to_owned() };
        if routing::send(&state.app, &mut j.room, &j.room_id, &state.conn_id, echo).await.is_ok() {
            return;
        }
    }
    write(myself, state, body).await;
}

async fn write(myself: &Mailbox, state: &mut ConnectionState, body: &str) {
    state.seq += 1;
    let text = with_seq(state.seq, body);
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

async fn inbound(myself: &Mailbox, state: &mut ConnectionState, text: &str, received_at: Instant) {
    let envelope = match parse_client(text) {
        Ok(env) => env,
        Err(e) => return send_error(myself, state, e.code, &e.message, e.reference.as_ref()).await,
    };
    let reference = envelope.id;
    let wants_receipt = envelope.receipt;
    let kind = message_type(&envelope.message);
    if let Some(counter) = telemetry::hot().message(kind) {
        counter.increment(1);
    }
    let grants = &state.claims.grants;
    let allowed = match &envelope.message {
        ClientMessage::Offer { .. }
        | ClientMessage::Answer { .. }
        | ClientMessage::IceCandidate { .. }
        | ClientMessage::Stats { .. } => grants.publish,
        ClientMessage::Control { .. } | ClientMessage::Overlay { .. } | ClientMessage::EndCall {} => grants.control,
        ClientMessage::Chat { .. } => grants.chat,
        _ => true,
    };
    if !allowed {
        let message = format!("this token does not allow {kind} messages");
        return send_error(myself, state, ErrorCode::Forbidden, &message, reference.as_ref()).await;
    }
    let msg = match envelope.message {
        ClientMessage::Ping {} => {
            let body = ServerMessage::Pong { reference: reference.as_ref(), server_time: now_ms() }.to_body();
            return Box::pin(reply(myself, state, &body)).await;
        }
        ClientMessage::Join { room_id, display_name } => {
            return join(myself, state, room_id, display_name, reference, received_at).await;
        }
        ClientMessage::Resume { session_id, resume_token, last_seq, received } => {
            // What the client already has: a repeat of it in the replay is dropped.
            for r in received {
                state.delivered.push_back((r.peer_id, r.msg_id.to_string()));
            }
            while state.delivered.len() > MAX_PENDING {
                state.delivered.pop_front();
            }
            return Box::pin(resume(myself, state, session_id, resume_token, last_seq, reference)).await;
        }
        ClientMessage::Overlay { overlay } => {
            if let Err(problem) = overlay.validate() {
                return send_error(myself, state, ErrorCode::InvalidMessage, &problem, reference.as_ref()).await;
            }
            let Some(peer) = peer(state) else { return not_joined(myself, state, reference).await };
            RoomMsg::Overlay { from: peer, overlay }
        }
        ClientMessage::Leave {} => {
            let Some(peer) = peer(state) else { return not_joined(myself, state, reference).await };
            // Sent like any room message (after finding the room again if it moved), so a room
            // that restarted still gets it.
            if let Some(j) = state.joined.as_mut()
                && !routing::reachable(&j.room)
            {
                let _ = routing::relocate(&state.app, &mut j.room, &j.room_id).await;
            }
            to_room(myself, state, RoomMsg::Leave { peer, reason: "left".into() }).await;
            state.left = state.joined.take();
            return;
        }
        other => {
            let Some(from) = peer(state) else { return not_joined(myself, state, reference).await };
            if let Some(id) = &reference {
                if state.pending.len() >= MAX_PENDING {
                    let message = format!("{MAX_PENDING} messages wait for acknowledgement; wait for acks");
                    return send_error(myself, state, ErrorCode::RateLimited, &message, Some(id)).await;
                }
                // Kept until the room acknowledges it (and, relayed, until its target's
                // connection wrote it), and sent when its turn comes.
                let target = match &other {
                    ClientMessage::Offer { peer_id, .. }
                    | ClientMessage::Answer { peer_id, .. }
                    | ClientMessage::IceCandidate { peer_id, .. } => Some(peer_id.clone()),
                    _ => None,
                };
                let (id, text, receipt) = (id.to_string(), text.to_owned(), wants_receipt);
                state.pending.push_back(Kept { id, text, sent: None, target, receipt });
                if !state.retry_armed {
                    state.retry_armed = true;
                    myself.send_after(RETRY_AFTER, || ConnectionMsg::RetryPending);
                }
                if state.pending.len() > 1 || state.unreceipted.len() >= MAX_UNRECEIPTED {
                    // Its turn comes when the ones before it are acknowledged (and enough of
                    // the relayed ones confirmed).
                    return;
                }
                // The only one kept: it goes now, as parsed (no second parse on the hot path).
                let Some(msg) = room_message(from, other, reference, received_at) else { return };
                return Box::pin(pump_with(myself, state, Some(msg))).await;
            }
            let Some(msg) = room_message(from, other, reference, received_at) else { return };
            msg
        }
    };
    to_room(myself, state, msg).await;
}

/// The room message for a client message that a room handles as is.
fn room_message(
    from: PeerId,
    message: ClientMessage,
    reference: Option<Value>,
    received_at: Instant,
) -> Option<RoomMsg> {
    Some(match message {
        ClientMessage::Offer { peer_id, sdp } => {
            relay(from, peer_id, RelayKind::Offer, RelayPayload::Sdp(sdp), reference, received_at)
        }
        ClientMessage::Answer { peer_id, sdp } => {
            relay(from, peer_id, RelayKind::Answer, RelayPayload::Sdp(sdp), reference, received_at)
        }
        ClientMessage::IceCandidate { peer_id, candidate } => {
            relay(from, peer_id, RelayKind::IceCandidate, RelayPayload::Candidate(candidate), reference, received_at)
        }
        ClientMessage::Control { action } => RoomMsg::Control { from, action, reference },
        ClientMessage::Chat { text } => RoomMsg::Chat { from, text, reference },
        ClientMessage::EndCall {} => RoomMsg::EndCall { from, reference },
        ClientMessage::Stats { sample } => RoomMsg::Stats { from, sample, reference },
        ClientMessage::Resume { .. }
        | ClientMessage::Ping {}
        | ClientMessage::Join { .. }
        | ClientMessage::Overlay { .. }
        | ClientMessage::Leave {} => return None,
    })
}

/// Sends the oldest kept message if it is not on its way yet (finding the room again first
/// if the instance it pointed at is gone). The next goes when this one is acknowledged.
async fn pump(myself: &Mailbox, state: &mut ConnectionState) {
    pump_with(myself, state, None).await;
}

/// [`pump`], with the head's room message when the caller has it already.
async fn pump_with(myself: &Mailbox, state: &mut ConnectionState, prepared: Option<RoomMsg>) {
    let Some(head) = state.pending.front() else { return };
    if head.sent.is_some() || state.unreceipted.len() >= MAX_UNRECEIPTED {
        return;
    }
    let msg = match prepared {
        Some(msg) => msg,
        None => {
            let text = head.text.clone();
            let (Ok(env), Some(from)) = (parse_client(&text), peer(state)) else {
                state.pending.pop_front();
                return;
            };
            let Some(msg) = room_message(from, env.message, env.id, Instant::now()) else {
                state.pending.pop_front();
                return;
            };
            msg
        }
    };
    let reference = reference_of(&msg).cloned();
    let Some(j) = state.joined.as_mut() else { return };
    // A relay in a room of this node goes in one hop (its ack is already on its way back).
    if routing::relay_here(&j.room, &msg)
        || (routing::reachable(&j.room) && routing::try_send(&j.room, &j.room_id, &state.conn_id, msg))
    {
        if let Some(head) = state.pending.front_mut() {
            head.sent = Some(Instant::now());
        }
        return;
    }
    // The instance it pointed at is gone: the room moved, its node died, or (a room of this
    // node that stopped) it lost its lease and lives elsewhere now.
    match routing::relocate(&state.app, &mut j.room, &j.room_id).await {
        Ok(()) => Box::pin(resend_pending(state)).await,
        Err((code, message)) => send_error(myself, state, code, &message, reference.as_ref()).await,
    }
}

/// Sends the oldest kept message again if it has gone unacknowledged for `RETRY_AFTER`
/// (finding the room again first if its node is gone), and keeps the timer going while
/// anything is kept.
async fn retry_pending(myself: &Mailbox, state: &mut ConnectionState) {
    state.retry_armed = false;
    let Some(j) = state.joined.as_mut() else {
        state.pending.clear();
        return;
    };
    let Some(head) = state.pending.front() else { return };
    match head.sent {
        None => Box::pin(pump(myself, state)).await,
        Some(sent) if sent.elapsed() >= RETRY_AFTER => {
            let found = if routing::reachable(&j.room) {
                Ok(())
            } else {
                routing::relocate(&state.app, &mut j.room, &j.room_id).await
            };
            if found.is_ok() {
                resend_pending(state).await;
            }
        }
        Some(_) => {}
    }
    state.retry_armed = true;
    myself.send_after(RETRY_AFTER, || ConnectionMsg::RetryPending);
}

/// After the session's room moved (or may have), tells its instance how far the client has
/// counted, then sends the oldest unacknowledged message again; the rest follow one by one as
/// they are acknowledged. The room drops ids it has seen; receivers drop relayed messages
/// they already got (`msgId`).
async fn resend_pending(state: &mut ConnectionState) {
    let Some(j) = state.joined.as_mut() else { return };
    // The instance may be new: it first learns how far this client has counted (and how this
    // connection shifts its numbers), so that what it sends follows on.
    let sync = RoomMsg::SeqSync {
        peer: j.peer.clone(),
        conn: state.conn_id.clone(),
        last_seq: state.seq,
        seq_offset: state.seq_offset,
    };
    let _ = routing::send(&state.app, &mut j.room, &j.room_id, &state.conn_id, sync).await;
    // What another instance acknowledged and nobody confirmed goes again first (it is older
    // than anything kept).
    let target = j.room.target();
    let again: Vec<String> = state
        .unreceipted
        .iter_mut()
        .filter(|u| u.acked_by != target)
        .map(|u| {
            u.acked_by.clone_from(&target);
            u.text.clone()
        })
        .collect();
    for text in again {
        let (Ok(env), Some(from)) = (parse_client(&text), peer(state)) else { continue };
        let Some(msg) = room_message(from, env.message, env.id, Instant::now()) else { continue };
        let Some(j) = state.joined.as_mut() else { return };
        metrics::counter!("switchboard_resent_messages_total").increment(1);
        let _ = routing::send(&state.app, &mut j.room, &j.room_id, &state.conn_id, msg).await;
    }
    let Some(head) = state.pending.front_mut() else { return };
    head.sent = Some(Instant::now());
    let text = head.text.clone();
    let (Ok(env), Some(from)) = (parse_client(&text), peer(state)) else { return };
    let Some(msg) = room_message(from, env.message, env.id, Instant::now()) else { return };
    let Some(j) = state.joined.as_mut() else { return };
    metrics::counter!("switchboard_resent_messages_total").increment(1);
    let _ = routing::send(&state.app, &mut j.room, &j.room_id, &state.conn_id, msg).await;
}

fn relay(
    from: PeerId,
    to: String,
    kind: RelayKind,
    payload: RelayPayload,
    reference: Option<Value>,
    received_at: Instant,
) -> RoomMsg {
    RoomMsg::Relay { from, to: PeerId::new(to), kind, payload, reference, received_at }
}

fn message_type(m: &ClientMessage) -> &'static str {
    match m {
        ClientMessage::Join { .. } => "join",
        ClientMessage::Leave {} => "leave",
        ClientMessage::Offer { .. } => "offer",
        ClientMessage::Answer { .. } => "answer",
        ClientMessage::IceCandidate { .. } => "ice-candidate",
        ClientMessage::Control { .. } => "control",
        ClientMessage::Overlay { .. } => "overlay",
        ClientMessage::Chat { .. } => "chat",
        ClientMessage::EndCall {} => "end_call",
        ClientMessage::Ping {} => "ping",
        ClientMessage::Stats { .. } => "stats",
        ClientMessage::Resume { .. } => "resume",
    }
}

fn peer(state: &ConnectionState) -> Option<PeerId> {
    state.joined.as_ref().map(|j| j.peer.clone())
}

async fn not_joined(myself: &Mailbox, state: &mut ConnectionState, reference: Option<Value>) {
    send_error(myself, state, ErrorCode::NotJoined, "join a room first", reference.as_ref()).await;
}

/// Sends to the room wherever it lives; errors (moved, unreachable) go back to the client.
async fn to_room(myself: &Mailbox, state: &mut ConnectionState, msg: RoomMsg) {
    let Some(j) = state.joined.as_mut() else { return };
    if routing::relay_here(&j.room, &msg) {
        return;
    }
    let reference = reference_of(&msg).cloned();
    let sent = routing::send(&state.app, &mut j.room, &j.room_id, &state.conn_id, msg).await;
    if let Err((code, message)) = sent {
        // The session lives on with its room wherever that is now: find it for next time, and
        // tell the client this message did not get there.
        if code == ErrorCode::RoomElsewhere {
            let _ = routing::relocate(&state.app, &mut j.room, &j.room_id).await;
            let message = "the room is moving; try again";
            return send_error(myself, state, ErrorCode::RoomUnavailable, message, reference.as_ref()).await;
        }
        send_error(myself, state, code, &message, reference.as_ref()).await;
    }
}

/// Re-sends a bounced command to wherever its room is now. A command bounces at most a few
/// times in a row; then the client is told to try again.
async fn reroute(myself: &Mailbox, state: &mut ConnectionState, room: RoomId, hint: String, msg: RoomMsg) {
    let Some(j) = state.joined.as_mut() else { return };
    if j.room_id != room {
        return;
    }
    let reference = reference_of(&msg).cloned();
    state.reroutes += 1;
    let sent = if state.reroutes > 3 {
        state.reroutes = 0;
        let _ = routing::relocate(&state.app, &mut j.room, &j.room_id).await;
        Err((ErrorCode::RoomUnavailable, "the room is moving; try again".to_owned()))
    } else if reference.is_some() {
        // A kept message goes again with the others kept, in order, once the room is found.
        routing::relocate(&state.app, &mut j.room, &j.room_id).await
    } else {
        routing::reroute(&state.app, &mut j.room, &j.room_id, &state.conn_id, &hint, msg).await
    };
    if sent.is_ok() && reference.is_some() {
        Box::pin(resend_pending(state)).await;
    }
    if let Err((code, message)) = sent {
        send_error(myself, state, code, &message, reference.as_ref()).await;
    }
}

fn reference_of(msg: &RoomMsg) -> Option<&Value> {
    match msg {
        RoomMsg::Relay { reference, .. }
        | RoomMsg::Control { reference, .. }
        | RoomMsg::Chat { reference, .. }
        | RoomMsg::EndCall { reference, .. }
        | RoomMsg::Stats { reference, .. } => reference.as_ref(),
        _ => None,
    }
}

async fn join(
    myself: &Mailbox,
    state: &mut ConnectionState,
    room_id: String,
    display_name: Option<String>,
    reference: Option<Value>,
    received_at: Instant,
) {
    let r = reference.as_ref();
    if let Some(j) = &state.joined {
        let message = format!("already in room {}; leave it first", j.room_id);
        return send_error(myself, state, ErrorCode::AlreadyJoined, &message, r).await;
    }
    if !valid_room_id(&room_id) {
        return send_error(
            myself,
            state,
            ErrorCode::InvalidRoomId,
            "roomId must be 1-64 characters of [A-Za-z0-9._:-]",
            r,
        )
        .await;
    }
    if state.claims.room.as_ref().is_some_and(|allowed| allowed != &room_id) {
        return send_error(myself, state, ErrorCode::RoomForbidden, "this token is for another room", r).await;
    }
    if state.app.is_shutting_down() {
        return send_error(
            myself,
            state,
            ErrorCode::Unavailable,
            "the server is shutting down; connect to another node",
            r,
        )
        .await;
    }
    let name = display_name.or_else(|| state.claims.name.clone()).unwrap_or_else(|| state.claims.sub.clone());
    if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS {
        let message = format!("displayName must be 1 to {MAX_NAME_CHARS} characters");
        return send_error(myself, state, ErrorCode::InvalidMessage, &message, r).await;
    }
    let room_id = RoomId::new(room_id);
    let ice = ice_servers(&state.app.config.ice, &state.claims.sub, now_ms() / 1000);
    let request = JoinRequest {
        conn: state.conn_id.clone(),
        user: UserId::new(&state.claims.sub),
        display_name: name,
        ice_servers: ice,
        admin: state.claims.grants.admin,
        first_seq: state.seq + 1,
    };
    match routing::join(&state.app, &room_id, request).await {
        Ok((peer, room)) => {
            metrics::histogram!("switchboard_join_seconds").record(received_at.elapsed().as_secs_f64());
            state.joined = Some(Joined { room_id, peer, room });
        }
        Err((code, message)) => send_error(myself, state, code, &message, r).await,
    }
}

async fn resume(
    myself: &Mailbox,
    state: &mut ConnectionState,
    session_id: String,
    token: String,
    last_seq: u64,
    reference: Option<Value>,
) {
    if let Some(j) = &state.joined {
        let message = format!("already in room {}; resume on a new connection", j.room_id);
        return send_error(myself, state, ErrorCode::AlreadyJoined, &message, reference.as_ref()).await;
    }
    let failed = |reason: &str, message: &str| ServerMessage::ResumeFailed { reason, message }.to_body();
    let room = match state.app.store.session_room(&session_id).await {
        Ok(Some(room)) => RoomId::new(room),
        Ok(None) => return write(myself, state, &failed("expired", "the session has ended; join again")).await,
        Err(_) => return write(myself, state, &failed("unavailable", "the database is unreachable; try again")).await,
    };
    let cmd = ResumeCmd {
        room: room.to_string(),
        peer: session_id.clone(),
        user: state.claims.sub.clone(),
        conn: state.conn_id.to_string(),
        token,
        last_seq,
    };
    match routing::resume(&state.app, &room, cmd).await {
        Ok(handle) => state.joined = Some(Joined { room_id: room, peer: PeerId::new(session_id), room: handle }),
        Err((reason, message)) => write(myself, state, &failed(&reason, &message)).await,
    }
}

#[cfg(test)]
mod tests {
    use switchboard_actors::protocol::with_seq;

    #[test]
    fn seq_is_spliced_in_front() {
        assert_eq!(with_seq(7, r#"{"type":"pong"}"#), r#"{"seq":7,"type":"pong"}"#);
    }
}
