//! Waiting in a lobby: `lobby_join` on a connection that is in no room puts its person in the
//! lobby's queue (or pairs them at once), `lobby_leave` takes them out, the lobby's wait ends
//! in `lobby_timeout`; when paired, the connection is told `paired` and joins the fresh room
//! itself, as if its client had sent `join`.

use super::*;
use crate::lobby::{self, Outcome};

/// What a connection waiting in a lobby remembers.
pub(super) struct Waiting {
    /// The lobby.
    pub(super) lobby: String,
    /// Since when.
    pub(super) since: Instant,
    /// Counts this connection's `lobby_join`s: a timeout belongs to one of them.
    pub(super) attempt: u64,
    /// The wait ran out after the queue had let this person go (paired): `paired` should be
    /// on its way, and the next timeout gives up on it.
    pub(super) overdue: bool,
}

pub(super) async fn lobby_join(
    myself: &Mailbox,
    state: &mut ConnectionState,
    lobby: String,
    tags: Vec<String>,
    reference: Option<Value>,
) {
    let r = reference.as_ref();
    if let Some(j) = &state.joined {
        let message = format!("already in room {}; leave it first", j.room_id);
        return send_error(myself, state, ErrorCode::AlreadyJoined, &message, r).await;
    }
    if !valid_room_id(&lobby) {
        let message = "lobby must be 1-64 characters of [A-Za-z0-9._:-]";
        return send_error(myself, state, ErrorCode::InvalidMessage, message, r).await;
    }
    if state.claims.room.is_some() {
        let message = "this token is for one room; a lobby needs a token for any room";
        return send_error(myself, state, ErrorCode::RoomForbidden, message, r).await;
    }
    if let Some(w) = &state.lobby
        && w.lobby != lobby
    {
        let message = format!("already waiting in lobby {}; lobby_leave it first", w.lobby);
        return send_error(myself, state, ErrorCode::AlreadyJoined, &message, r).await;
    }
    let user = state.claims.sub.clone();
    let conn = state.conn_id.to_string();
    match lobby::enter(&state.app, &lobby, &user, &conn, &tags).await {
        Ok(Outcome::Waiting { ahead }) => {
            let attempt = state.lobby.as_ref().map_or(0, |w| w.attempt) + 1;
            state.lobby =
                Some(Box::new(Waiting { lobby: lobby.clone(), since: Instant::now(), attempt, overdue: false }));
            let wait = state.app.config.lobby.wait;
            myself.send_after(wait, move || ConnectionMsg::LobbyTimeout { attempt });
            let body = ServerMessage::LobbyWaiting { lobby: &lobby, ahead }.to_body();
            write(myself, state, &body).await;
        }
        Ok(Outcome::Paired { room }) => Box::pin(paired(myself, state, lobby, room)).await,
        Ok(Outcome::AlreadyWaiting) => {
            let message = format!("you are waiting in lobby {lobby} on another connection already");
            send_error(myself, state, ErrorCode::AlreadyJoined, &message, r).await;
        }
        Err(e) => {
            tracing::warn!(%lobby, error = %e, "lobby_join failed");
            send_error(myself, state, ErrorCode::Unavailable, "the lobby is not reachable; try again", r).await;
        }
    }
}

pub(super) async fn lobby_leave(myself: &Mailbox, state: &mut ConnectionState, lobby: String) {
    if state.lobby.as_ref().is_some_and(|w| w.lobby == lobby) {
        state.lobby = None;
        let (user, conn) = (state.claims.sub.clone(), state.conn_id.to_string());
        if let Err(e) = state.app.store.lobby_leave(&lobby, &user, &conn).await {
            tracing::warn!(%lobby, error = %e, "lobby_leave not recorded");
        }
    }
    let body = ServerMessage::LobbyLeft { lobby: &lobby }.to_body();
    write(myself, state, &body).await;
}

/// The lobby's wait is over for the `lobby_join` counted `attempt`, unless it was paired or
/// left meanwhile.
pub(super) async fn lobby_timeout(myself: &Mailbox, state: &mut ConnectionState, attempt: u64) {
    let Some(w) = state.lobby.as_ref().filter(|w| w.attempt == attempt) else { return };
    let (lobby, waited, overdue) = (w.lobby.clone(), w.since.elapsed(), w.overdue);
    let (user, conn) = (state.claims.sub.clone(), state.conn_id.to_string());
    match state.app.store.lobby_leave(&lobby, &user, &conn).await {
        // Still in the queue, or let go long ago without a `paired` coming (the pairing node
        // could not make the room, say): the wait is over.
        Ok(left) if left || overdue => {
            state.lobby = None;
            metrics::counter!("switchboard_lobby_timeouts_total").increment(1);
            let body = ServerMessage::LobbyTimeout { lobby: &lobby, waited_ms: waited.as_millis() as u64 }.to_body();
            write(myself, state, &body).await;
        }
        // Paired at the last moment: `paired` is on its way; if it has not come in a few
        // seconds, it will not.
        Ok(_) => {
            if let Some(w) = state.lobby.as_mut() {
                w.overdue = true;
            }
            myself.send_after(Duration::from_secs(5), move || ConnectionMsg::LobbyTimeout { attempt });
        }
        Err(e) => {
            tracing::warn!(%lobby, error = %e, "lobby timeout not recorded; asked again later");
            myself.send_after(Duration::from_secs(1), move || ConnectionMsg::LobbyTimeout { attempt });
        }
    }
}

/// This connection's person was paired in `lobby`: told so, it joins `room`.
pub(super) async fn paired(myself: &Mailbox, state: &mut ConnectionState, lobby: String, room: String) {
    if state.joined.is_some() {
        tracing::warn!(%lobby, %room, "paired while in a room; not joining");
        return;
    }
    state.lobby = None;
    let body = ServerMessage::Paired { lobby: &lobby, room_id: &room }.to_body();
    write(myself, state, &body).await;
    Box::pin(join(myself, state, room, None, None, Instant::now())).await;
}

/// The connection closed while waiting: its person is gone from the queue until they come
/// back within the grace period.
pub(super) async fn gone(state: &mut ConnectionState) {
    if state.lobby.take().is_some()
        && let Err(e) = state.app.store.lobby_gone(state.conn_id.as_str()).await
    {
        tracing::warn!(error = %e, "a lobby's waiting connection not marked gone");
    }
}
