//! Kept messages and receipts: a message with an `id` stays with its connection until its room
//! acknowledges it (one on its way at a time, so none overtakes another), and a relayed one until
//! its target's connection confirms writing it; both go again, in order, wherever the room is
//! found next.

use super::*;

/// A client message with an `id`, kept until the room acknowledges it.
pub(super) struct Kept {
    /// Its id, as JSON text.
    pub(super) id: String,
    /// The frame as the client sent it.
    pub(super) text: String,
    /// When it was last sent to the room; `None` while it waits its turn.
    pub(super) sent: Option<Instant>,
    /// The target of an offer, answer or candidate (relayed to one peer, who drops repeats
    /// and confirms the write); `None` for other messages.
    pub(super) target: Option<String>,
    /// The client asked for `delivered`.
    pub(super) receipt: bool,
}

/// A relayed message acknowledged by a room and not yet confirmed by its target's connection.
pub(super) struct Unreceipted {
    /// Its id, as JSON text.
    pub(super) id: String,
    /// The frame as the client sent it.
    pub(super) text: String,
    /// The target session.
    pub(super) target: String,
    /// The client asked for `delivered`.
    pub(super) receipt: bool,
    /// When it was acknowledged, counted on this connection.
    pub(super) order: u64,
    /// When it was acknowledged or last sent again for its overdue receipt.
    pub(super) sent: Instant,
}

/// Relayed messages kept after their receipt (see `ConnectionState::recent_delivered`).
pub(super) const RECENT_DELIVERED: usize = 16;

/// Relayed messages kept until their receipt; while this many wait, the next kept message
/// waits too (a target that is away holds its senders back instead of their memory growing).
pub(super) const MAX_UNRECEIPTED: usize = 256;

/// Unacknowledged messages kept per connection, and relayed ids remembered.
pub(super) const MAX_PENDING: usize = 256;

/// A message not acknowledged this long after it was sent is sent again.
pub(super) const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A relayed message whose receipt has not come this long after its acknowledgement is sent
/// again, marked so: its receipt was lost on the way (a room instance or a node died between
/// the target's write and the sender), and the target still remembers what it wrote, so it
/// drops the repeat and confirms again. Left longer, the target could have forgotten it.
pub(super) const RECEIPT_OVERDUE: Duration = Duration::from_secs(3);

/// Overdue messages sent again per timer tick.
const OVERDUE_PER_TICK: usize = 16;

/// Whether receipts must be taken as they come (see [`Mailbox::receipt`]): the client asked
/// for a `delivered`, or the receipt limit holds kept messages back. Otherwise they wait for
/// the task's next turn.
pub(super) fn wants_receipts(state: &ConnectionState) -> bool {
    state.unreceipted.len() >= MAX_UNRECEIPTED || state.unreceipted.iter().any(|u| u.receipt)
}

/// Drops an answered message (acknowledged or refused) from the ones kept for re-sending;
/// true when it was the one on its way (the next may go).
pub(super) fn forget_acknowledged(state: &mut ConnectionState, body: &str) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(body) else { return false };
    let Some(reference) = v.get("ref") else { return false };
    let id = reference.to_string();
    let was_head = state.pending.front().is_some_and(|k| k.id == id);
    let acked = v.get("type").and_then(Value::as_str) == Some("ack");
    if let Some(pos) = state.pending.iter().position(|k| k.id == id)
        && let Some(kept) = state.pending.remove(pos)
        && acked
        && let Some(target) = kept.target
    {
        state.acks += 1;
        let order = state.acks;
        let sent = Instant::now();
        state.unreceipted.push_back(Unreceipted { id, text: kept.text, target, receipt: kept.receipt, order, sent });
    }
    was_head
}

/// A receipt came for one of this client's relayed messages: it is forgotten (and the client
/// told, if it asked), and a message held back by the receipt limit may go.
///
/// Each receipt confirms its own message only: a message is forgotten when its target wrote
/// it, never because a later one was written. A receipt lost on its way (a room dying) is
/// made up for when the target's connection finds the room's new instance: it confirms again
/// what it wrote lately ([`resend_pending`]).
pub(super) async fn receipt(myself: &Mailbox, state: &mut ConnectionState, id: &str) {
    let Some(pos) = state.unreceipted.iter().position(|u| u.id == id) else { return };
    let was_full = state.unreceipted.len() >= MAX_UNRECEIPTED;
    let Some(done) = state.unreceipted.remove(pos) else { return };
    if done.receipt
        && let Ok(reference) = serde_json::from_str::<Value>(&done.id)
    {
        let body = ServerMessage::Delivered { reference: &reference }.to_body();
        // Through the room, like any reply, and kept until it comes back to be written.
        let echoed = match state.joined.as_mut() {
            Some(j) => {
                let echo = RoomMsg::Echo { from: j.peer.clone(), body: body.to_string(), kind: body.kind };
                routing::send(&state.app, &mut j.room, &j.room_id, &state.conn_id, echo).await.is_ok()
            }
            None => false,
        };
        if echoed {
            state.announcing.push_back(done.id.clone());
            while state.announcing.len() > MAX_PENDING {
                state.announcing.pop_front();
            }
        } else {
            write(myself, state, &body).await;
        }
    }
    state.recent_delivered.push_back(done);
    while state.recent_delivered.len() > RECENT_DELIVERED {
        state.recent_delivered.pop_front();
    }
    if was_full {
        Box::pin(pump(myself, state)).await;
    }
}

/// A peer left for good: what was kept for it will never be confirmed.
pub(super) fn forget_target(state: &mut ConnectionState, body: &str) {
    #[derive(serde::Deserialize)]
    struct Left {
        #[serde(rename = "peerId")]
        peer_id: String,
    }
    if let Ok(left) = serde_json::from_str::<Left>(body) {
        state.unreceipted.retain(|u| u.target != left.peer_id);
        state.recent_delivered.retain(|u| u.target != left.peer_id);
    }
}

/// Sends the oldest kept message if it is not on its way yet (finding the room again first
/// if the instance it pointed at is gone). The next goes when this one is acknowledged.
pub(super) async fn pump(myself: &Mailbox, state: &mut ConnectionState) {
    pump_with(myself, state, None).await;
}

/// [`pump`], with the head's room message when the caller has it already.
pub(super) async fn pump_with(myself: &Mailbox, state: &mut ConnectionState, prepared: Option<RoomMsg>) {
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
        Err((code, message)) => {
            let (code, message) = while_moving(code, message);
            send_error(myself, state, code, &message, reference.as_ref()).await;
        }
    }
}

/// Sends the oldest kept message again if it has gone unacknowledged for `RETRY_AFTER`
/// (finding the room again first if its node is gone), and keeps the timer going while
/// anything is kept.
pub(super) async fn retry_pending(myself: &Mailbox, state: &mut ConnectionState) {
    state.retry_armed = false;
    let Some(j) = state.joined.as_mut() else {
        state.pending.clear();
        return;
    };
    if let Some(head) = state.pending.front() {
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
    }
    Box::pin(resend_overdue(state)).await;
    if !state.pending.is_empty() || !state.unreceipted.is_empty() {
        state.retry_armed = true;
        myself.send_after(RETRY_AFTER, || ConnectionMsg::RetryPending);
    }
}

/// Sends again, marked as such, the relayed messages whose receipts are overdue (see
/// [`RECEIPT_OVERDUE`]), oldest first, a few per tick.
async fn resend_overdue(state: &mut ConnectionState) {
    let Some(from) = peer(state) else { return };
    let now = Instant::now();
    let overdue: Vec<String> = state
        .unreceipted
        .iter_mut()
        .filter(|u| now.duration_since(u.sent) >= RECEIPT_OVERDUE)
        .take(OVERDUE_PER_TICK)
        .map(|u| {
            u.sent = now;
            u.text.clone()
        })
        .collect();
    for text in overdue {
        let Ok(env) = parse_client(&text) else { continue };
        let Some(mut msg) = room_message(from.clone(), env.message, env.id, now) else { continue };
        if let RoomMsg::Relay { again, .. } = &mut msg {
            *again = true;
        }
        let Some(j) = state.joined.as_mut() else { return };
        metrics::counter!("switchboard_receipts_overdue_total").increment(1);
        if !routing::relay_here(&j.room, &msg) {
            let _ = routing::send(&state.app, &mut j.room, &j.room_id, &state.conn_id, msg).await;
        }
    }
}

/// After the session's room moved (or may have), tells its instance how far the client has
/// counted, then sends the oldest unacknowledged message again; the rest follow one by one as
/// they are acknowledged. The room drops ids it has seen; receivers drop relayed messages
/// they already got (`msgId`).
pub(super) async fn resend_pending(state: &mut ConnectionState) {
    let Some(j) = state.joined.as_mut() else { return };
    // The instance may be new: it first learns how far this client has counted (and how this
    // connection shifts its numbers), so that what it sends follows on.
    let sync = RoomMsg::SeqSync {
        peer: j.peer.clone(),
        conn: state.conn_id.clone(),
        last_seq: state.numbers.seq,
        seq_offset: state.numbers.offset,
    };
    let _ = routing::send(&state.app, &mut j.room, &j.room_id, &state.conn_id, sync).await;
    // `delivered` notices the old instance may not have numbered and sent.
    let notices: Vec<String> = state.announcing.iter().cloned().collect();
    for id in notices {
        let Ok(reference) = serde_json::from_str::<Value>(&id) else { continue };
        let Some(j) = state.joined.as_mut() else { return };
        let body = ServerMessage::Delivered { reference: &reference }.to_body();
        let echo = RoomMsg::Echo { from: j.peer.clone(), body: body.to_string(), kind: body.kind };
        let _ = routing::send(&state.app, &mut j.room, &j.room_id, &state.conn_id, echo).await;
    }
    // Receipts for what this connection wrote lately may have died with the old instance:
    // confirm it all again (a sender forgets only what it still keeps).
    let written: Vec<(String, String)> = state.delivered.iter().cloned().collect();
    for (sender, msg_id) in written {
        send_receipt(state, sender, msg_id);
    }
    // What was acknowledged and not confirmed (and the last confirmed) goes again first, in the
    // order it was acknowledged: it is older than anything kept. All of it, whichever instance
    // acknowledged it: a room can come back to a node in a new instance that looks the same
    // from here, and an instance that already has a message drops the repeat.
    let mut again: Vec<(u64, String)> =
        state.recent_delivered.iter().chain(state.unreceipted.iter()).map(|u| (u.order, u.text.clone())).collect();
    again.sort_by_key(|(order, _)| *order);
    let again = again.into_iter().map(|(_, text)| text);
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

/// Sends to the room wherever it lives; errors (moved, unreachable) go back to the client.
pub(super) async fn to_room(myself: &Mailbox, state: &mut ConnectionState, msg: RoomMsg) {
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
        }
        let (code, message) = while_moving(code, message);
        send_error(myself, state, code, &message, reference.as_ref()).await;
    }
}

/// Bounces in a row after which a client's command is given up (the client is told to try
/// again), and after which the edge's own messages wait before they go again.
const REROUTES_AT_ONCE: u32 = 3;
/// Bounces in a row after which the edge's own messages are given up.
const REROUTES_AT_MOST: u32 = 10;

/// Re-sends a bounced command to wherever its room is now. A kept message (one with an `id`)
/// is not sent alone: one pass over everything kept follows (see [`schedule_pass`]). Any other
/// client command bounces at most a few times in a row; then the client is told to try again.
/// The edge's own messages (receipts, numbering shifts, echoes) are never the client's
/// business: while a room is handed over they keep bouncing off its old node until the
/// successor has taken it, so they wait a little longer each time (off the connection's loop),
/// and are dropped after a few more tries.
pub(super) async fn reroute(myself: &Mailbox, state: &mut ConnectionState, room: RoomId, hint: String, msg: RoomMsg) {
    let Some(j) = state.joined.as_mut() else { return };
    if j.room_id != room {
        return;
    }
    let msg = as_of_now(msg, state.numbers.seq, state.numbers.offset);
    let reference = reference_of(&msg).cloned();
    let from_client = matches!(
        msg,
        RoomMsg::Relay { .. }
            | RoomMsg::Control { .. }
            | RoomMsg::Overlay { .. }
            | RoomMsg::Chat { .. }
            | RoomMsg::EndCall { .. }
            | RoomMsg::Stats { .. }
    );
    if from_client && reference.is_some() {
        // A kept message goes again with the others kept, in order, once the room is found.
        // A whole pass of them may bounce at once (they went to a node the room has left):
        // one pass follows, whichever of them bounces, not one per bounced message, and the
        // next waits longer if that one bounces too.
        schedule_pass(myself, state);
        return;
    }
    let (tries, limit) = match from_client {
        true => (&mut state.reroutes, REROUTES_AT_ONCE),
        false => (&mut state.own_reroutes, REROUTES_AT_MOST),
    };
    *tries += 1;
    if !from_client && *tries >= REROUTES_AT_ONCE && *tries <= REROUTES_AT_MOST {
        let delay = Duration::from_millis(20 * u64::from(*tries));
        myself.send_after(delay, move || ConnectionMsg::Reroute { room, hint, msg: Box::new(msg) });
        return;
    }
    let sent = if *tries > limit {
        *tries = 0;
        let _ = routing::relocate(&state.app, &mut j.room, &j.room_id).await;
        Err((ErrorCode::RoomUnavailable, "the room is moving; try again".to_owned()))
    } else {
        routing::reroute(&state.app, &mut j.room, &j.room_id, &state.conn_id, &hint, msg).await
    };
    if let Err((code, message)) = sent
        && from_client
    {
        let (code, message) = while_moving(code, message);
        send_error(myself, state, code, &message, reference.as_ref()).await;
    }
}

/// The wait before the first pass over the kept messages after a bounce (the rest of the
/// bounced pass arrives meanwhile); each pass in a row waits one more step, up to
/// [`PASS_STEPS_AT_MOST`].
const PASS_STEP: Duration = Duration::from_millis(20);
const PASS_STEPS_AT_MOST: u32 = 10;

/// Schedules one pass over the kept messages (see [`resend_pass`]) unless one is due.
fn schedule_pass(myself: &Mailbox, state: &mut ConnectionState) {
    if state.pass_due {
        metrics::counter!("switchboard_bounces_absorbed_total").increment(1);
        return;
    }
    state.pass_due = true;
    state.passes = (state.passes + 1).min(PASS_STEPS_AT_MOST);
    myself.send_after(PASS_STEP * state.passes, || ConnectionMsg::ResendPass);
}

/// Finds the room (the live lease, else placement) and sends every kept message again, in
/// order. A room not reachable yet is tried again by the retry timer.
pub(super) async fn resend_pass(state: &mut ConnectionState) {
    state.pass_due = false;
    let Some(j) = state.joined.as_mut() else { return };
    if routing::relocate(&state.app, &mut j.room, &j.room_id).await.is_ok() {
        Box::pin(resend_pending(state)).await;
    }
}

/// A bounced command as it should go again. A count (`SeqSync`) goes as the connection's count
/// of now (`seq`, `seq_offset`): the client has gone on counting since it was first sent, and an
/// instance that took the old one would number what follows from there, past (or behind) what
/// the client expects. Anything else goes as it was.
fn as_of_now(msg: RoomMsg, seq: u64, seq_offset: i64) -> RoomMsg {
    match msg {
        RoomMsg::SeqSync { peer, conn, .. } => RoomMsg::SeqSync { peer, conn, last_seq: seq, seq_offset },
        msg => msg,
    }
}

/// What a session in progress is told when its room could not be reached while finding it
/// again. `room_elsewhere` (its lease changed hands between the lookup and the start) would
/// tell the client its session is over, and it is not: the session follows its room, and the
/// message is kept and sent again.
fn while_moving(code: ErrorCode, message: String) -> (ErrorCode, String) {
    if code == ErrorCode::RoomElsewhere {
        return (ErrorCode::RoomUnavailable, "the room is moving; try again".to_owned());
    }
    (code, message)
}

pub(super) fn reference_of(msg: &RoomMsg) -> Option<&Value> {
    match msg {
        RoomMsg::Relay { reference, .. }
        | RoomMsg::Control { reference, .. }
        | RoomMsg::Chat { reference, .. }
        | RoomMsg::EndCall { reference, .. }
        | RoomMsg::Stats { reference, .. } => reference.as_ref(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounced_count_goes_again_as_the_count_of_now() {
        let (peer, conn) = (PeerId::new("p1"), ConnId::new("n1/c1"));
        // Sent when the client was at 931; it bounced, and the client is at 1134 when it goes again.
        let old = RoomMsg::SeqSync { peer: peer.clone(), conn: conn.clone(), last_seq: 931, seq_offset: 0 };
        match as_of_now(old, 1134, -3) {
            RoomMsg::SeqSync { peer: p, conn: c, last_seq, seq_offset } => {
                assert_eq!((p, c), (peer, conn));
                assert_eq!((last_seq, seq_offset), (1134, -3));
            }
            _ => panic!("still a count"),
        }
    }

    #[test]
    fn other_bounced_commands_go_again_as_they_were() {
        let leave = RoomMsg::Leave { peer: PeerId::new("p1"), reason: "left".into() };
        assert!(matches!(as_of_now(leave, 1134, 0), RoomMsg::Leave { reason, .. } if reason == "left"));
    }
}
