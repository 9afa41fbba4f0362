//! Session continuity: a dropped connection's session waits for a resume; a resume (on any
//! node) takes it over and replays what it missed; a new instance of the room syncs each
//! session's numbering with its connection; a drain hands sessions to the next instance.

use super::*;
use crate::protocol::without_seq;

pub(super) async fn disconnected(
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
    state.broadcast_about(peer, ServerMessage::PeerDisconnected { peer_id: peer }.to_body(), Some(peer));
    Ok(())
}

/// Takes a hand-over that arrived after this instance started: a session this instance has
/// sent nothing yet continues the previous instance's frames and numbering, with what this
/// instance kept for it since appended; every session keeps the ids seen before.
pub(super) fn absorb(state: &mut RoomState, carry: Carry) {
    let table = state.table.clone();
    for c in carry.sessions {
        let adopted_here = {
            let mut t = table.lock();
            let epoch = t.epoch;
            let Some(s) = t.sessions.iter_mut().find(|s| s.peer.as_str() == c.peer_id) else { continue };
            for id in c.seen_ids {
                s.seen_ids.insert(id);
            }
            if !s.adopted {
                continue;
            }
            let (_, mine) = s.outbox.snapshot();
            let mut outbox = Outbox::restore(c.next_seq, c.frames);
            let first_new = outbox.next_seq;
            for (_, framed, kind) in mine {
                outbox.push(&Body::new(without_seq(&framed), kind));
            }
            s.outbox = outbox;
            s.adopted = c.adopted;
            if s.connected && !s.adopted {
                for (seq, body, kind) in s.outbox.after(first_new - 1).unwrap_or_default() {
                    table.edge().deliver(&s.conn, Frame { body, received_at: None, seq: Some(seq), kind, epoch });
                }
            }
            true
        };
        if adopted_here && let Some(m) = state.members.iter_mut().find(|m| m.info.peer_id.as_str() == c.peer_id) {
            m.seq_shift = c.seq_shift;
        }
    }
}

pub(super) fn carry(state: &RoomState) -> Carry {
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
    Carry { sessions, lease: None }
}

/// A session's connection told how far its client has counted. An adopted session's kept
/// frames are numbered to follow that count and sent; a session taken for disconnected (its
/// node was unreachable when this instance started) is connected again and gets what it
/// missed. Anything else is already in step.
pub(super) fn seq_sync(state: &mut RoomState, peer: &PeerId, conn: &ConnId, last_seq: u64, seq_offset: i64) {
    let table = state.table.clone();
    // An answer can come from a node this one cannot reach yet (it is back from a freeze, and
    // its connections are not routable from here again): what would be sent now would be lost.
    // An adopted session is asked again at the next lease renewal.
    if !table.edge().is_connected(conn) {
        tracing::debug!(peer_id = %peer, "seq sync from a connection not reachable yet");
        return;
    }
    let came_back = {
        let mut t = table.lock();
        let epoch = t.epoch;
        let Some(s) = t.session_mut(peer) else { return };
        if &s.conn != conn || (s.connected && !s.adopted && !s.stalled) {
            tracing::debug!(
                peer_id = %peer, last_seq, session_conn = %s.conn, adopted = s.adopted, connected = s.connected,
                "seq sync not taken (another connection's, or the session is in step)"
            );
            return;
        }
        // The client's last frame in this room's numbers.
        let room_last = last_seq as i64 - seq_offset;
        if s.adopted {
            let shift = room_last + 1 - s.outbox.first_kept() as i64;
            s.outbox.shift(shift);
        }
        let came_back = !s.connected;
        tracing::debug!(peer_id = %peer, last_seq, adopted = s.adopted, connected = s.connected, "seq sync");
        s.adopted = false;
        s.connected = true;
        // A stalled session (the link to its connection changed) gets everything after the
        // client's count, in this instance's numbering, which goes on unbroken.
        s.stalled = false;
        s.route = Some(table.edge().route(conn));
        match s.outbox.after(room_last.max(0) as u64) {
            Some(missed) => {
                tracing::debug!(peer_id = %peer, room_last, replayed = missed.len(), next_seq = s.outbox.next_seq(), "seq sync replay");
                for (seq, body, kind) in missed {
                    table.edge().deliver(conn, Frame { body, received_at: None, seq: Some(seq), kind, epoch });
                }
            }
            None => {
                // The client lacks frames this instance no longer keeps: they cannot be sent.
                metrics::counter!("switchboard_seq_sync_unserved_total").increment(1);
                tracing::warn!(
                    peer_id = %peer, room_last, first_kept = s.outbox.first_kept(), next_seq = s.outbox.next_seq(),
                    "seq sync asks for frames no longer kept"
                );
            }
        }
        came_back
    };
    if let Some(m) = state.member_mut(peer) {
        m.seq_shift = seq_offset;
        m.disconnects += 1;
    }
    if came_back {
        state.broadcast_about(
            peer,
            ServerMessage::PeerResumed { peer_id: peer, ice_restart: false }.to_body(),
            Some(peer),
        );
    }
}

pub(super) fn resume(
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
        let epoch = t.epoch;
        let Some(s) = t.session_mut(peer) else {
            return fail("expired", "the session has ended (its grace period is over); join again");
        };
        // The room's numbers for this session become the client's: an adopted session's kept
        // frames all follow `lastSeq`; otherwise the last connection's shift maps one onto the
        // other.
        let shift = if s.adopted { last_seq as i64 + 1 - s.outbox.first_kept() as i64 } else { seq_shift };
        if s.outbox.after((last_seq as i64 - shift).max(0) as u64).is_none() {
            tracing::debug!(
                peer_id = %peer, last_seq, shift, adopted = s.adopted, first_kept = s.outbox.first_kept(),
                next_seq = s.outbox.next_seq, "resume refused: frames after lastSeq no longer kept"
            );
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
        s.stalled = false;
        s.route = Some(table.edge().route(&conn));
        s.at_room = 0;
        // `resumed` carries the client's lastSeq: it does not take a number, the replay follows it.
        let resumed = ServerMessage::Resumed { room_id: &state.id, session_id: peer, replayed: missed.len() }.to_body();
        let edge = table.edge();
        edge.deliver(
            &conn,
            Frame {
                body: with_seq(last_seq, &resumed).into(),
                received_at: None,
                seq: Some(last_seq),
                kind: resumed.kind,
                epoch,
            },
        );
        for (seq, body, kind) in missed {
            edge.deliver(&conn, Frame { body, received_at: None, seq: Some(seq), kind, epoch });
        }
    }
    let m = &mut state.members[idx];
    m.seq_shift = 0;
    m.disconnects += 1;
    metrics::counter!("switchboard_resumes_total").increment(1);
    state.broadcast_about(peer, ServerMessage::PeerResumed { peer_id: peer, ice_restart: true }.to_body(), Some(peer));
    Ok(())
}
