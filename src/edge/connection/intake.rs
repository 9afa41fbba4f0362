//! What a connection's client sends: the checks every frame passes (size, rate, kind), the
//! parse, the grants, and where each message goes (the room, the kept-message queue, or an
//! answer at once).

use super::*;

/// The checks every frame from the client passes before it is handled: size (through the
/// WebSocket config), rate (a token bucket), and kind (text only).
pub(super) struct Intake {
    bucket: TokenBucket,
    violations: u32,
}

impl Intake {
    pub(super) fn new(limits: &crate::config::LimitsConfig) -> Intake {
        Intake { bucket: TokenBucket::new(limits.messages_per_second, limits.burst, Instant::now()), violations: 0 }
    }

    pub(super) async fn take(
        &mut self,
        myself: &Mailbox,
        state: &mut ConnectionState,
        next: Result<Message, axum::Error>,
        limits: &crate::config::LimitsConfig,
    ) {
        let now = Instant::now();
        let frame = match next {
            Ok(Message::Close(_)) => {
                state.dropped = true;
                return myself.stop(Some("client gone".into()));
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => return,
            Ok(frame) => frame,
            Err(e) => {
                if is_too_big(e) {
                    metrics::counter!("switchboard_signaling_errors_total", "code" => "too_large").increment(1);
                    let reason = format!("message larger than {} bytes", limits.max_message_bytes);
                    state.abusive = true;
                    return close(myself, state, close_code::TOO_BIG, &reason).await;
                }
                state.dropped = true;
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
pub(super) fn is_too_big(e: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    matches!(e.into_inner().downcast_ref::<Error>(), Some(Error::Capacity(_)))
}

pub(super) async fn inbound(myself: &Mailbox, state: &mut ConnectionState, text: &str, received_at: Instant) {
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
    if let Some(message) = super::grants::refusal(&state.claims.grants, &envelope.message) {
        return send_error(myself, state, ErrorCode::Forbidden, &message, reference.as_ref()).await;
    }
    let msg = match envelope.message {
        ClientMessage::Ping { last_seq } => {
            if let Some(last_seq) = last_seq {
                confirm(state, last_seq);
            }
            let body = ServerMessage::Pong { reference: reference.as_ref(), server_time: now_ms() }.to_body();
            return Box::pin(reply(myself, state, &body)).await;
        }
        ClientMessage::Join { room_id, display_name } => {
            if let Some(w) = &state.lobby {
                let message = format!("waiting in lobby {}; lobby_leave it first", w.lobby);
                return send_error(myself, state, ErrorCode::AlreadyJoined, &message, reference.as_ref()).await;
            }
            return join(myself, state, room_id, display_name, reference, received_at).await;
        }
        ClientMessage::LobbyJoin { lobby, tags } => {
            return Box::pin(super::lobby::lobby_join(myself, state, lobby, tags, reference)).await;
        }
        ClientMessage::LobbyLeave { lobby } => return Box::pin(super::lobby::lobby_leave(myself, state, lobby)).await,
        ClientMessage::Token { token } => {
            return Box::pin(super::grants::refresh(myself, state, token, reference)).await;
        }
        ClientMessage::Resume { session_id, resume_token, last_seq, received } => {
            // What the client already has: a repeat of it in the replay is dropped.
            for r in received {
                state.delivered.insert((r.peer_id, r.msg_id.to_string()));
            }
            return Box::pin(resume(myself, state, session_id, resume_token, last_seq, reference)).await;
        }
        // In an appointment's room, ending the call ends the appointment (which ends the
        // room's call), as its REST `end` does.
        ClientMessage::EndCall {}
            if state
                .joined
                .as_ref()
                .is_some_and(|j| j.room_id.as_str().starts_with(crate::appointments::ROOM_PREFIX)) =>
        {
            return Box::pin(super::session::end_appointment(myself, state, reference)).await;
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
pub(super) fn room_message(
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
        | ClientMessage::Ping { .. }
        | ClientMessage::Join { .. }
        | ClientMessage::LobbyJoin { .. }
        | ClientMessage::LobbyLeave { .. }
        | ClientMessage::Token { .. }
        | ClientMessage::Overlay { .. }
        | ClientMessage::Leave {} => return None,
    })
}

pub(super) fn relay(
    from: PeerId,
    to: String,
    kind: RelayKind,
    payload: RelayPayload,
    reference: Option<Value>,
    received_at: Instant,
) -> RoomMsg {
    RoomMsg::Relay { from, to: PeerId::new(to), kind, payload, reference, received_at, again: false }
}

pub(super) fn message_type(m: &ClientMessage) -> &'static str {
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
        ClientMessage::Ping { .. } => "ping",
        ClientMessage::Stats { .. } => "stats",
        ClientMessage::Resume { .. } => "resume",
        ClientMessage::LobbyJoin { .. } => "lobby_join",
        ClientMessage::LobbyLeave { .. } => "lobby_leave",
        ClientMessage::Token { .. } => "token",
    }
}

/// The client has every frame up to `last_seq` (its numbering): its room may forget what it
/// kept for replay up to there. On the room's node the table is trimmed at once; elsewhere the
/// room is told.
fn confirm(state: &ConnectionState, last_seq: u64) {
    let Some(j) = &state.joined else { return };
    // Nothing to forget, or more than this connection wrote: not the client's to confirm.
    let Some(room_last) = state.numbers.room_number(last_seq) else { return };
    match &j.room {
        RoomHandle::Local(local) => local.table.confirmed(&j.peer, &state.conn_id, room_last),
        RoomHandle::Remote(_) => {
            let msg = RoomMsg::Confirmed { peer: j.peer.clone(), conn: state.conn_id.clone(), last_seq: room_last };
            let _ = routing::try_send(&j.room, &j.room_id, &state.conn_id, msg);
        }
    }
}
