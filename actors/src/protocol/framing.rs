//! Framing: how a serialized server message gets its per-session `seq`, and what kind of
//! frame it is for the connection that writes it.

use serde::{Deserialize, Serialize};

/// What a server frame is, for the connection that writes it: the few kinds it acts on (it
/// forgets a kept message once answered, drops a relayed message it has written before, ...)
/// are told by the room with the frame, so nobody reads the JSON again to find out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FrameKind {
    /// Nothing the connection acts on.
    #[default]
    Other,
    /// An answer to a client message for good: its `ack`, or an `error` about it other than
    /// `room_unavailable` (which the connection says itself while it keeps the message).
    Answer,
    /// `peer_left`: what was kept for that peer will never be confirmed.
    PeerLeft,
    /// `delivered`: a notice the connection was keeping until written.
    Delivered,
    /// An offer, answer or candidate with the sender's `msgId`: written once, then confirmed.
    Relayed,
    /// `removed`: the session is over (an operator took it out of the room).
    Removed,
}

impl FrameKind {
    /// As one byte (for the cluster link).
    pub fn to_u8(self) -> u8 {
        self as u8
    }

    /// From [`to_u8`](Self::to_u8); unknown bytes read as [`FrameKind::Other`].
    pub fn from_u8(b: u8) -> FrameKind {
        match b {
            1 => FrameKind::Answer,
            2 => FrameKind::PeerLeft,
            3 => FrameKind::Delivered,
            4 => FrameKind::Relayed,
            5 => FrameKind::Removed,
            _ => FrameKind::Other,
        }
    }
}

/// A server message serialized once: the JSON object (without `seq`) and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Body {
    /// The JSON object, starting with `{`.
    pub text: std::sync::Arc<str>,
    /// What it is.
    pub kind: FrameKind,
}

impl Body {
    /// `text`, of kind `kind`.
    pub fn new(text: impl Into<std::sync::Arc<str>>, kind: FrameKind) -> Body {
        Body { text: text.into(), kind }
    }
}

impl std::ops::Deref for Body {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Frames a body with its sequence number: `{"seq":N,` + the body without its `{`.
pub fn with_seq(seq: u64, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 24);
    out.push_str("{\"seq\":");
    out.push_str(&seq.to_string());
    if body.len() > 2 {
        out.push(',');
    }
    out.push_str(body.get(1..).unwrap_or(""));
    out
}

/// The body of a framed message again, without its `seq` (it must have come from [`with_seq`]).
pub fn without_seq(framed: &str) -> String {
    framed.split_once(',').map_or_else(|| "{}".to_owned(), |(_, rest)| format!("{{{rest}"))
}

/// The same framed message under another number.
pub fn renumber(seq: u64, framed: &str) -> String {
    with_seq(seq, &without_seq(framed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RawJson;

    #[test]
    fn server_messages_say_what_kind_of_frame_they_are() {
        use crate::protocol::ServerMessage;
        use crate::{ErrorCode, PeerId};
        use serde_json::json;
        let (id, peer) = (json!(7), PeerId::new("p"));
        let kind = |m: ServerMessage<'_>| m.to_body().kind;
        assert_eq!(kind(ServerMessage::Ack { reference: &id }), FrameKind::Answer);
        let refused = ServerMessage::Error { code: "rate_limited", message: "slow down", reference: Some(&id) };
        assert_eq!(kind(refused), FrameKind::Answer, "a refusal answers the message for good");
        let unavailable = ErrorCode::RoomUnavailable.as_str();
        let moving = ServerMessage::Error { code: unavailable, message: "moving", reference: Some(&id) };
        assert_eq!(kind(moving), FrameKind::Other, "the message is kept and goes again");
        let general = ServerMessage::Error { code: "invalid_message", message: "bad", reference: None };
        assert_eq!(kind(general), FrameKind::Other, "nothing to answer");
        assert_eq!(kind(ServerMessage::PeerLeft { peer_id: &peer, reason: "left" }), FrameKind::PeerLeft);
        assert_eq!(kind(ServerMessage::Delivered { reference: &id }), FrameKind::Delivered);
        let relayed = ServerMessage::Offer { peer_id: &peer, msg_id: Some(&id), sdp: &RawJson::string("v=0") };
        assert_eq!(kind(relayed), FrameKind::Relayed);
        let unnamed = ServerMessage::Offer { peer_id: &peer, msg_id: None, sdp: &RawJson::string("v=0") };
        assert_eq!(kind(unnamed), FrameKind::Other, "nothing to drop a repeat of");
        for k in [
            FrameKind::Other,
            FrameKind::Answer,
            FrameKind::PeerLeft,
            FrameKind::Delivered,
            FrameKind::Relayed,
            FrameKind::Removed,
        ] {
            assert_eq!(FrameKind::from_u8(k.to_u8()), k);
        }
        assert_eq!(FrameKind::from_u8(200), FrameKind::Other);
    }

    #[test]
    fn frames_are_numbered_and_renumbered() {
        let framed = with_seq(7, r#"{"type":"pong"}"#);
        assert_eq!(framed, r#"{"seq":7,"type":"pong"}"#);
        assert_eq!(without_seq(&framed), r#"{"type":"pong"}"#);
        assert_eq!(renumber(41, &framed), r#"{"seq":41,"type":"pong"}"#);
        assert_eq!(with_seq(3, "{}"), r#"{"seq":3}"#);
    }
}
