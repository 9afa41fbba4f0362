//! Writing what rooms send: each frame in the session's `seq` (shifted when a room instance
//! numbers afresh), repeats of relayed messages dropped, and a receipt for each relayed message
//! written.

use super::*;

/// Writes a frame the room numbered (its body carries its `seq`). A room that restarted or
/// moved numbers afresh; the client must still see `seq` rise by one, so from then on this
/// connection shifts the room's numbers by a fixed offset.
pub(super) async fn write_numbered(
    myself: &Mailbox,
    state: &mut ConnectionState,
    seq: u64,
    body: &str,
    kind: FrameKind,
) {
    match kind {
        // The room has answered a message for good (its ack, or an error about it).
        FrameKind::Answer if forget_acknowledged(state, body) => Box::pin(pump(myself, state)).await,
        FrameKind::PeerLeft => forget_target(state, body),
        // Taken out of the room by an operator: the session is over, as after a `leave`.
        FrameKind::Removed => state.joined = None,
        FrameKind::Delivered if !state.announcing.is_empty() => forget_announced(state, body),
        _ => {}
    }
    let mut written_receipt = None;
    if kind == FrameKind::Relayed
        && let Some((sender, msg_id, new)) = first_delivery(state, body)
    {
        if !new {
            // A relayed message this client already has (re-sent after a room moved): not
            // written again, confirmed again, and the numbering closes up behind it.
            tracing::debug!(conn_id = %state.conn_id, room_seq = seq, %sender, %msg_id, offset = state.seq_offset, "a relayed message written before; dropped");
            send_receipt(state, sender, msg_id);
            state.seq_offset -= 1;
            report_shift(state);
            metrics::counter!("switchboard_duplicates_dropped_total").increment(1);
            return;
        }
        written_receipt = Some((sender, msg_id));
    }
    let room_seq = seq as i64;
    if state.seq > 0 && room_seq + state.seq_offset <= state.seq as i64 {
        state.seq_offset = state.seq as i64 + 1 - room_seq;
        report_shift(state);
        metrics::counter!("switchboard_seq_realigned_total").increment(1);
        tracing::info!(conn_id = %state.conn_id, room_seq, client_seq = state.seq, ?kind, "frame numbers realigned");
    }
    let shifted = (room_seq + state.seq_offset).max(1) as u64;
    if state.seq > 0 && shifted > state.seq + 1 {
        // Frames the room numbered for this session that never came here: the client sees a gap.
        tracing::debug!(conn_id = %state.conn_id, room_seq, offset = state.seq_offset, client_seq = state.seq, ?kind, "frame numbers jumped");
    }
    state.seq = shifted;
    let text = if state.seq_offset == 0 { body.to_owned() } else { renumber(shifted, body) };
    feed(myself, state, text).await;
    // Handed to the socket: the sender's edge may forget it.
    if let Some((sender, msg_id)) = written_receipt {
        send_receipt(state, sender, msg_id);
    }
}

/// A `delivered` notice came back from the room to be written: it need not be sent again.
fn forget_announced(state: &mut ConnectionState, body: &str) {
    let Ok(v) = serde_json::from_str::<Value>(body) else { return };
    let Some(reference) = v.get("ref") else { return };
    let id = reference.to_string();
    if let Some(pos) = state.announcing.iter().position(|a| *a == id) {
        state.announcing.remove(pos);
    }
}

/// Tells the room how this connection now shifts its numbers (see `RoomMsg::SeqShift`).
pub(super) fn report_shift(state: &ConnectionState) {
    let Some(j) = &state.joined else { return };
    let msg = RoomMsg::SeqShift { peer: j.peer.clone(), conn: state.conn_id.clone(), seq_offset: state.seq_offset };
    let _ = routing::try_send(&j.room, &j.room_id, &state.conn_id, msg);
}

/// Whether a relayed message (with `msgId`) is new to this client (and remembers it), with its
/// sender and id; `None` when the frame does not read as one.
pub(super) fn first_delivery(state: &mut ConnectionState, body: &str) -> Option<(String, String, bool)> {
    #[derive(serde::Deserialize)]
    struct Relayed {
        #[serde(rename = "peerId")]
        peer_id: String,
        #[serde(rename = "msgId")]
        msg_id: Value,
    }
    let r = serde_json::from_str::<Relayed>(body).ok()?;
    let key = (r.peer_id, r.msg_id.to_string());
    let new = state.delivered.insert(key.clone());
    Some((key.0, key.1, new))
}

/// Confirms to `sender`'s connection, through the room, that its message `msg_id` was written
/// here. On this node the room's table routes it at once; elsewhere it crosses to the room.
pub(super) fn send_receipt(state: &ConnectionState, sender: String, msg_id: String) {
    let Some(j) = &state.joined else { return };
    let sender = PeerId::new(sender);
    match &j.room {
        RoomHandle::Local(local) => local.table.receipt(&sender, &msg_id),
        RoomHandle::Remote(_) => {
            let _ = routing::try_send(&j.room, &j.room_id, &state.conn_id, RoomMsg::Receipt { sender, msg_id });
        }
    }
}
