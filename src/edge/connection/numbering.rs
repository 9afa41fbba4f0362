//! Writing what rooms send: each frame in the session's `seq` (shifted when a room instance
//! numbers afresh), frames of an older instance of the room fenced off, repeats of relayed
//! messages dropped, and a receipt for each relayed message written. The arithmetic is
//! [`Numbers`] and [`Fence`], plain values tested on their own.

use super::*;

/// How this connection numbers the session's frames for its client. The room numbers the
/// frames it sends each session; the client must see one count that rises by one, whatever
/// happens on the way: a room instance that restarted or moved numbers afresh, a relayed frame
/// the client already has is dropped, and the connection numbers some frames itself (a reply
/// while the room could not be reached). So the session's number of a room frame is the
/// room's number plus `offset`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Numbers {
    /// The last number the client was given (0: none yet).
    pub(super) seq: u64,
    /// Added to the room instance's numbers to make the session's.
    pub(super) offset: i64,
}

/// Where a frame the room numbered goes in the session's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Placed {
    /// Its number for the client.
    pub(super) seq: u64,
    /// The room's number fell at or behind what the client already has (a new instance that
    /// did not hear the client's count): the offset moved so that it follows on.
    pub(super) realigned: bool,
    /// Frames the room numbered for this session never came here: the client sees a gap.
    pub(super) jumped: bool,
}

impl Numbers {
    /// A frame this connection numbers itself; its number. In a room, that number belongs to
    /// no room frame, so the room's numbers shift by one more: its next frame follows on, and
    /// a count sent to the room maps back to the room's last frame, not one past it (the room
    /// would then skip one in its replay).
    pub(super) fn own(&mut self, in_room: bool) -> u64 {
        self.seq += 1;
        if in_room {
            self.offset += 1;
        }
        self.seq
    }

    /// A frame the room numbered `room_seq`: its number in the session.
    pub(super) fn place(&mut self, room_seq: u64) -> Placed {
        let room_seq = room_seq as i64;
        let realigned = self.seq > 0 && room_seq + self.offset <= self.seq as i64;
        if realigned {
            self.offset = self.seq as i64 + 1 - room_seq;
        }
        let shifted = (room_seq + self.offset).max(1) as u64;
        let jumped = self.seq > 0 && shifted > self.seq + 1;
        self.seq = shifted;
        Placed { seq: shifted, realigned, jumped }
    }

    /// A relayed frame the client already has, dropped instead of written: the room's numbers
    /// after it close up behind it.
    pub(super) fn skip_repeat(&mut self) {
        self.offset -= 1;
    }

    /// The room's number of the session's frame `last_seq`, if this connection gave the client
    /// that number (a count from the client beyond it, or before the room's first frame, is not
    /// the client's to confirm).
    pub(super) fn room_number(&self, last_seq: u64) -> Option<u64> {
        let room_last = last_seq as i64 - self.offset;
        (room_last >= 1 && last_seq <= self.seq).then_some(room_last as u64)
    }
}

/// The newest ownership epoch this connection heard from its room's instances. An owner woken
/// from a freeze may still write what it numbered before it lost the room, after the new
/// owner has taken up the session's count: written, it would push the client's count past the
/// new owner's numbers. Such frames (and re-attach notices) are dropped instead; what they
/// carried comes again from the new owner (senders re-send what has no receipt or no ack).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fence {
    newest: i64,
}

impl Fence {
    /// Whether a frame of an instance of ownership `epoch` may be written: not when it is
    /// older than one already heard from. A newer epoch is remembered; 0 (a room that is not
    /// fenced) always passes.
    pub(super) fn admits(&mut self, epoch: i64) -> bool {
        if epoch == 0 {
            return true;
        }
        if epoch < self.newest {
            return false;
        }
        self.newest = epoch;
        true
    }

    /// The newest epoch heard (for logs).
    pub(super) fn newest(&self) -> i64 {
        self.newest
    }
}

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
            tracing::debug!(conn_id = %state.conn_id, room_seq = seq, %sender, %msg_id, offset = state.numbers.offset, "a relayed message written before; dropped");
            send_receipt(state, sender, msg_id);
            state.numbers.skip_repeat();
            report_shift(state);
            metrics::counter!("switchboard_duplicates_dropped_total").increment(1);
            return;
        }
        written_receipt = Some((sender, msg_id));
    }
    let before = state.numbers.seq;
    let placed = state.numbers.place(seq);
    if placed.realigned {
        report_shift(state);
        metrics::counter!("switchboard_seq_realigned_total").increment(1);
        tracing::info!(conn_id = %state.conn_id, room_seq = seq, client_seq = before, ?kind, "frame numbers realigned");
    }
    if placed.jumped {
        tracing::debug!(conn_id = %state.conn_id, room_seq = seq, offset = state.numbers.offset, client_seq = before, ?kind, "frame numbers jumped");
    }
    let text = if state.numbers.offset == 0 { body.to_owned() } else { renumber(placed.seq, body) };
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
    let msg = RoomMsg::SeqShift { peer: j.peer.clone(), conn: state.conn_id.clone(), seq_offset: state.numbers.offset };
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

#[cfg(test)]
mod tests {
    use super::{Fence, Numbers};

    #[test]
    fn a_room_that_numbers_afresh_is_shifted_to_follow_on() {
        let mut n = Numbers::default();
        for room_seq in 1..=5 {
            assert_eq!(n.place(room_seq).seq, room_seq);
        }
        // A new instance that did not hear the client's count starts at 1 again.
        let p = n.place(1);
        assert!(p.realigned && !p.jumped);
        assert_eq!((p.seq, n.offset), (6, 5));
        assert_eq!(n.place(2).seq, 7);
        // A count from the client maps back to the instance's numbers.
        assert_eq!(n.room_number(7), Some(2));
    }

    #[test]
    fn a_frame_the_connection_numbers_shifts_the_room_so_a_count_maps_to_its_last_frame() {
        let mut n = Numbers::default();
        for room_seq in 1..=3 {
            n.place(room_seq);
        }
        // The room could not be reached: the connection answered for it (an error, a pong).
        assert_eq!(n.own(true), 4);
        // The client's count is 4; the room's last frame for it is 3, and a replay from there
        // starts at the room's 4, which the client sees as 5.
        assert_eq!(n.room_number(4), Some(3));
        let p = n.place(4);
        assert_eq!((p.seq, p.realigned, p.jumped), (5, false, false));
    }

    #[test]
    fn before_a_join_the_connection_numbers_alone() {
        let mut n = Numbers::default();
        assert_eq!((n.own(false), n.own(false)), (1, 2));
        assert_eq!(n.offset, 0);
    }

    #[test]
    fn a_dropped_repeat_closes_the_numbers_up_behind_it() {
        let mut n = Numbers::default();
        for room_seq in 1..=4 {
            n.place(room_seq);
        }
        // The room's 5 is a relayed message the client already has: not written.
        n.skip_repeat();
        let p = n.place(6);
        assert_eq!((p.seq, p.realigned, p.jumped), (5, false, false));
    }

    #[test]
    fn frames_that_never_came_show_as_a_jump() {
        let mut n = Numbers::default();
        n.place(1);
        let p = n.place(4);
        assert_eq!((p.seq, p.jumped), (4, true));
    }

    #[test]
    fn a_count_beyond_what_was_written_or_before_the_rooms_first_frame_is_not_confirmed() {
        let mut n = Numbers::default();
        n.own(false);
        n.own(false);
        // Joined after two frames of its own: the room's 1 is the session's 3.
        n.offset = 2;
        n.place(1);
        assert_eq!(n.room_number(3), Some(1));
        assert_eq!(n.room_number(4), None);
        assert_eq!(n.room_number(2), None);
    }

    #[test]
    fn the_fence_drops_older_instances_and_remembers_the_newest() {
        let mut f = Fence::default();
        assert!(f.admits(3));
        assert!(f.admits(3));
        assert!(!f.admits(2));
        assert!(f.admits(5));
        assert!(!f.admits(3));
        assert_eq!(f.newest(), 5);
        // An instance that is not fenced (no lease: one node without a database) always passes.
        assert!(f.admits(0));
        assert_eq!(f.newest(), 5);
    }
}
