//! Who is in the room: joins and leaves, recorded in the store with their call status change
//! before anyone is told; leaves the database refused are kept and recorded later, with
//! backoff; an empty room stops after its idle time.

use super::*;

pub(super) async fn join(
    myself: &ActorRef<RoomMsg>,
    state: &mut RoomState,
    req: JoinRequest,
) -> Result<PeerId, RoomError> {
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
        hidden: req.hidden,
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
        hidden: req.hidden,
        disconnects: 0,
        resume_token,
        seq_shift: 0,
        reattach_tries: 0,
        overlay: None,
        participant: Participant::default(),
    });
    let status_changed = state.apply(change);

    state.chat.make_contiguous();
    let body = ServerMessage::Joined {
        room_id: &state.id,
        peer_id: &peer_id,
        session_id: &peer_id,
        resume_token: &state.members[state.members.len() - 1].resume_token,
        peers: state.visible_to(None).map(|m| &m.peer_id).filter(|p| *p != &peer_id).collect(),
        participants: state.visible_to(Some(&peer_id)).collect(),
        ice_servers: &req.ice_servers,
        call_status: state.status,
        call_id: state.call_id.as_deref(),
        chat: state.chat.as_slices().0,
        overlays: state
            .members
            .iter()
            .filter(|m| !m.hidden)
            .filter_map(|m| m.overlay.clone().map(|overlay| PeerOverlay { peer_id: m.info.peer_id.clone(), overlay }))
            .collect(),
    }
    .to_body();
    // Not kept for replay: a client that lacks it has no session id to resume with.
    state.table.lock().send_unkept(state.table.edge(), &peer_id, &body);
    if let Some(me) = state.members.last().map(|m| m.info.clone()) {
        let me = &me;
        let body = ServerMessage::PeerJoined { peer_id: &peer_id, participant: me }.to_body();
        state.broadcast_about(&peer_id, body, Some(&peer_id));
    }
    if status_changed {
        state.announce_status(Some(&peer_id));
    }
    metrics::counter!("switchboard_room_joins_total").increment(1);
    after_presence_change(myself, state);
    Ok(peer_id)
}

/// Removes a member and its session; returns the connection it was on and its next number.
pub(super) fn remove_member(state: &mut RoomState, peer: &PeerId) -> Option<(ConnId, u64)> {
    if let Some(i) = state.members.iter().position(|m| &m.info.peer_id == peer) {
        state.members.remove(i);
    }
    let mut t = state.table.lock();
    let i = t.sessions.iter().position(|s| &s.peer == peer)?;
    let s = t.sessions.remove(i);
    Some((s.conn, s.outbox.next_seq))
}

/// Persists a leave and its call change; removes the member. Returns the connection it was on.
pub(super) async fn record_leave(
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

pub(super) async fn leave(
    myself: &ActorRef<RoomMsg>,
    state: &mut RoomState,
    peer: &PeerId,
    reason: &str,
) -> Result<(), ActorProcessingErr> {
    let Some(hidden) = state.member(peer).map(|m| m.hidden) else { return Ok(()) };
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
        let frame = Frame {
            body: body.into(),
            received_at: None,
            seq: Some(next_seq),
            kind: FrameKind::Other,
            epoch: state.epoch(),
        };
        state.ctx.edge.deliver(&conn, frame);
    }
    if !hidden {
        state.broadcast(ServerMessage::PeerLeft { peer_id: peer, reason }.to_body(), None);
    }
    after_presence_change(myself, state);
    Ok(())
}

/// Removes a member in memory and queues its leave for the store.
pub(super) fn defer_leave(
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
pub(super) async fn retry_leaves(myself: &ActorRef<RoomMsg>, state: &mut RoomState) {
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

pub(super) struct PendingLeave {
    peer: PeerId,
    reason: String,
    change: Option<CallChange>,
}

/// The error a client sees when the store refused a write.
pub(super) fn store_refusal(e: &StoreError, what: &str) -> RoomError {
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

pub(super) fn after_presence_change(myself: &ActorRef<RoomMsg>, state: &mut RoomState) {
    state.present.store(state.members.len(), Ordering::Relaxed);
    if state.members.is_empty() {
        state.empty_since = Some(Instant::now());
        myself.send_after(state.ctx.config.idle_timeout, || RoomMsg::IdleCheck);
    } else {
        state.empty_since = None;
    }
}

pub(super) fn idle_check(myself: &ActorRef<RoomMsg>, state: &RoomState) {
    if let Some(since) = state.empty_since
        && since.elapsed() >= state.ctx.config.idle_timeout
    {
        tracing::debug!(room_id = %state.id, "room idle; stopping");
        myself.stop(Some("idle".into()));
    }
}
