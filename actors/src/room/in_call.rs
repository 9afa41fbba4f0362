//! What happens during a call besides relaying: control actions on a participant's media,
//! overlays, chat, ending the call, and quality samples with audio-only fallback.

use super::*;

pub(super) async fn control(state: &mut RoomState, from: &PeerId, action: ControlAction, reference: Option<&Value>) {
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
        state.broadcast_about(from, body, None);
    }
}

pub(super) fn set_overlay(state: &mut RoomState, from: &PeerId, overlay: Overlay) {
    let Some(m) = state.member_mut(from) else { return };
    m.overlay = (overlay != Overlay::Clear).then(|| overlay.clone());
    let body = ServerMessage::Overlay { peer_id: from, overlay: &overlay }.to_body();
    state.broadcast_about(from, body, Some(from));
}

pub(super) async fn chat(state: &mut RoomState, from: &PeerId, text: String, reference: Option<&Value>) {
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

pub(super) async fn end_call(state: &mut RoomState, from: &PeerId, reference: Option<&Value>) {
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

pub(super) async fn stats(state: &mut RoomState, from: &PeerId, sample: StatsSample, reference: Option<&Value>) {
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
    state.broadcast_about(from, body.to_body(), None);
    let Some(change) = outcome.change else { return };
    if let Some(m) = state.member_mut(from) {
        m.info.media = outcome.media;
    }
    let (mode, reason, paused) = match change {
        FallbackChange::Fallback => ("audio_only", "poor_connection", true),
        FallbackChange::Recover => ("normal", "connection_recovered", false),
    };
    state.send_to_peer(from, &ServerMessage::Fallback { mode, reason }.to_body(), None);
    state.broadcast_about(from, ServerMessage::VideoPaused { peer_id: from, paused, reason }.to_body(), Some(from));
}

pub(super) fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

pub(super) fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
