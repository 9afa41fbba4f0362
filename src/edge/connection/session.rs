//! Entering a room: `join` (checked against the token, routed to wherever the room lives) and
//! `resume` (a session taken over from another connection, on any node); and `end_call` in an
//! appointment's room, which ends the appointment.

use super::*;

pub(super) async fn join(
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
    if let Err((code, message)) = crate::appointments::may_join(&state.app, &room_id, &state.claims.sub).await {
        return send_error(myself, state, code, &message, r).await;
    }
    if !state.claims.grants.room_create {
        match state.app.store.room(&room_id).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                let message = format!("there is no room {room_id}, and this token may not create rooms");
                return send_error(myself, state, ErrorCode::RoomNotFound, &message, r).await;
            }
            Err(_) => {
                let message = "the room could not be read; try again";
                return send_error(myself, state, ErrorCode::Unavailable, message, r).await;
            }
        }
    }
    let room_id = RoomId::new(room_id);
    let ice = ice_servers(&state.app.config.ice, &state.claims.sub, now_ms() / 1000);
    let request = JoinRequest {
        conn: state.conn_id.clone(),
        user: UserId::new(&state.claims.sub),
        display_name: name,
        ice_servers: ice,
        admin: state.claims.grants.room_admin,
        first_seq: state.numbers.seq + 1,
        hidden: state.claims.grants.hidden,
    };
    match routing::join(&state.app, &room_id, request).await {
        Ok((peer, room)) => {
            metrics::histogram!("switchboard_join_seconds").record(received_at.elapsed().as_secs_f64());
            if room_id.as_str().starts_with(crate::appointments::ROOM_PREFIX) {
                let (app, room, user) = (state.app.clone(), room_id.to_string(), state.claims.sub.clone());
                tokio::spawn(async move { crate::appointments::joined(&app, &room, &user).await });
            }
            state.joined = Some(Joined { room_id, peer, room, fence: Fence::default() });
        }
        Err((code, message)) => send_error(myself, state, code, &message, r).await,
    }
}

pub(super) async fn resume(
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
        Ok(handle) => {
            state.joined =
                Some(Joined { room_id: room, peer: PeerId::new(session_id), room: handle, fence: Fence::default() })
        }
        Err((reason, message)) => write(myself, state, &failed(&reason, &message)).await,
    }
}

/// `end_call` in an appointment's room: the appointment ends (fulfilled, or a no-show), and
/// with it the room's call; answered with `ack` when the message had an `id`.
pub(super) async fn end_appointment(myself: &Mailbox, state: &mut ConnectionState, reference: Option<Value>) {
    use crate::appointments::{self, Caller, Refusal};
    let r = reference.as_ref();
    let Some(room) = state.joined.as_ref().map(|j| j.room_id.to_string()) else { return };
    let found = match state.app.store.appointment_of_room(&room).await {
        Ok(Some(a)) => a,
        _ => {
            let message = "the appointment could not be read; try again";
            return send_error(myself, state, ErrorCode::Unavailable, message, r).await;
        }
    };
    let by = Caller::User(state.claims.sub.clone());
    match appointments::end(&state.app, &found.id, &by).await {
        Ok(_) => {
            if let Some(id) = r {
                let body = ServerMessage::Ack { reference: id }.to_body();
                Box::pin(reply(myself, state, &body)).await;
            }
        }
        Err(Refusal::Conflict(_, message)) => send_error(myself, state, ErrorCode::InvalidMessage, &message, r).await,
        Err(Refusal::Forbidden(message)) => send_error(myself, state, ErrorCode::Forbidden, &message, r).await,
        Err(Refusal::NotFound) => send_error(myself, state, ErrorCode::RoomForbidden, "no such appointment", r).await,
        Err(Refusal::Invalid(message) | Refusal::Unavailable(message)) => {
            send_error(myself, state, ErrorCode::Unavailable, &message, r).await
        }
    }
}
