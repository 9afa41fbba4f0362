//! Signaling protocol v1: the JSON messages clients send and receive (`docs/protocol.md`).
//!
//! Client messages are parsed in one pass into [`ClientMessage`]; only when that fails is the
//! frame looked at again to tell malformed JSON, an unknown type and a bad field apart.
//! Server messages are serialized once into a [`Frame`](crate::ports::Frame); the connection
//! that writes a frame adds its per-session `seq`.

use crate::call_status::CallStatus;
use crate::error::ErrorCode;
use crate::ids::{PeerId, RoomId, UserId};
use crate::media::{ControlAction, MediaState};
use crate::quality::{QualityLevel, StatsSample};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest chat message, in characters.
pub const MAX_CHAT_CHARS: usize = 2000;
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Most points in a `measure` overlay.
pub const MAX_OVERLAY_POINTS: usize = 32;
/// Longest label or color string in an overlay.
pub const MAX_OVERLAY_LABEL: usize = 64;

/// Every `type` a client may send.
pub const CLIENT_TYPES: &[&str] = &[
    "join",
    "leave",
    "offer",
    "answer",
    "ice-candidate",
    "control",
    "overlay",
    "chat",
    "end_call",
    "ping",
    "stats",
    "resume",
];

/// A message from a client, with its optional `id` (echoed as `ref` in answers to it).
#[derive(Debug)]
pub struct ClientEnvelope {
    /// The client's id for this message.
    pub id: Option<Value>,
    /// The client asks to be told (`delivered`) when the message reached its target.
    pub receipt: bool,
    /// The message.
    pub message: ClientMessage,
}

/// Every field any client message has, read in one pass over the frame. The relay path is
/// hot: reading the frame once into this flat shape avoids the buffering that an
/// internally tagged enum (and a flattened envelope) costs, about three passes per frame.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawClient<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    room_id: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    peer_id: Option<String>,
    #[serde(default)]
    sdp: Option<String>,
    #[serde(default)]
    candidate: Option<Value>,
    #[serde(default)]
    action: Option<ControlAction>,
    #[serde(default)]
    overlay: Option<Overlay>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    timestamp: Option<f64>,
    #[serde(default)]
    round_trip_time: Option<f64>,
    #[serde(default)]
    fraction_lost: Option<f64>,
    #[serde(default)]
    jitter: Option<f64>,
    #[serde(default)]
    available_outgoing_bitrate: Option<f64>,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    resume_token: Option<String>,
    #[serde(default)]
    last_seq: Option<u64>,
    #[serde(default)]
    received: Option<Vec<ReceivedId>>,
    #[serde(default)]
    receipt: Option<bool>,
}

/// A relayed message a client already has, named in `resume`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct ReceivedId {
    /// Who sent it.
    #[serde(rename = "peerId")]
    pub peer_id: String,
    /// Its `msgId`.
    #[serde(rename = "msgId")]
    pub msg_id: Value,
}

/// At most this many `received` entries in a `resume`.
pub const MAX_RECEIVED: usize = 256;

impl RawClient<'_> {
    fn into_envelope(self) -> Result<ClientEnvelope, ParseError> {
        let kind = self.kind;
        let id = self.id;
        let missing = |field: &str| ParseError {
            code: ErrorCode::InvalidMessage,
            message: format!("invalid {kind:?} message: missing field `{field}`"),
            reference: id.clone(),
        };
        let need = |v: Option<String>, field: &str| v.ok_or_else(|| missing(field));
        let message = match &*kind {
            "join" => ClientMessage::Join { room_id: need(self.room_id, "roomId")?, display_name: self.display_name },
            "leave" => ClientMessage::Leave {},
            "offer" => ClientMessage::Offer { peer_id: need(self.peer_id, "peerId")?, sdp: need(self.sdp, "sdp")? },
            "answer" => ClientMessage::Answer { peer_id: need(self.peer_id, "peerId")?, sdp: need(self.sdp, "sdp")? },
            "ice-candidate" => ClientMessage::IceCandidate {
                peer_id: need(self.peer_id, "peerId")?,
                candidate: self.candidate.ok_or_else(|| missing("candidate"))?,
            },
            "control" => ClientMessage::Control { action: self.action.ok_or_else(|| missing("action"))? },
            "overlay" => ClientMessage::Overlay { overlay: self.overlay.ok_or_else(|| missing("overlay"))? },
            "chat" => ClientMessage::Chat { text: need(self.text, "text")? },
            "end_call" => ClientMessage::EndCall {},
            "ping" => ClientMessage::Ping { last_seq: self.last_seq },
            "resume" => {
                let received = self.received.unwrap_or_default();
                if received.len() > MAX_RECEIVED {
                    return Err(ParseError {
                        code: ErrorCode::InvalidMessage,
                        message: format!("invalid \"resume\" message: at most {MAX_RECEIVED} `received` entries"),
                        reference: id.clone(),
                    });
                }
                ClientMessage::Resume {
                    session_id: need(self.session_id, "sessionId")?,
                    resume_token: need(self.resume_token, "resumeToken")?,
                    last_seq: self.last_seq.ok_or_else(|| missing("lastSeq"))?,
                    received,
                }
            }
            "stats" => ClientMessage::Stats {
                sample: StatsSample {
                    timestamp: self.timestamp.ok_or_else(|| missing("timestamp"))?,
                    round_trip_time: self.round_trip_time.unwrap_or(0.0),
                    fraction_lost: self.fraction_lost.unwrap_or(0.0),
                    jitter: self.jitter.unwrap_or(0.0),
                    available_outgoing_bitrate: self.available_outgoing_bitrate,
                },
            },
            other => {
                return Err(ParseError {
                    code: ErrorCode::UnknownType,
                    message: format!("unknown message type {other:?}"),
                    reference: id,
                });
            }
        };
        Ok(ClientEnvelope { id, receipt: self.receipt.unwrap_or(false), message })
    }
}

/// The message part of a client frame (wire names in `serde` attributes, for reference).
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
pub enum ClientMessage {
    /// Enter a room.
    #[serde(rename = "join")]
    Join {
        /// The room.
        #[serde(rename = "roomId")]
        room_id: String,
        /// Name to show to others; defaults to the token's name or user id.
        #[serde(rename = "displayName", default)]
        display_name: Option<String>,
    },
    /// Leave the room (the connection stays open).
    #[serde(rename = "leave")]
    Leave {},
    /// An SDP offer for one peer.
    #[serde(rename = "offer")]
    Offer {
        /// The target peer.
        #[serde(rename = "peerId")]
        peer_id: String,
        /// The session description.
        sdp: String,
    },
    /// An SDP answer for one peer.
    #[serde(rename = "answer")]
    Answer {
        /// The target peer.
        #[serde(rename = "peerId")]
        peer_id: String,
        /// The session description.
        sdp: String,
    },
    /// A trickled ICE candidate (the browser's `RTCIceCandidateInit`) for one peer.
    #[serde(rename = "ice-candidate")]
    IceCandidate {
        /// The target peer.
        #[serde(rename = "peerId")]
        peer_id: String,
        /// The candidate object, relayed as is.
        candidate: Value,
    },
    /// An in-call control action on one's own media.
    #[serde(rename = "control")]
    Control {
        /// What to do.
        action: ControlAction,
    },
    /// An overlay drawn over the call (pointer, measurement).
    #[serde(rename = "overlay")]
    Overlay {
        /// The overlay.
        overlay: Overlay,
    },
    /// A chat message to the room.
    #[serde(rename = "chat")]
    Chat {
        /// The text.
        text: String,
    },
    /// End the call for everyone (the room stays open for a new call).
    #[serde(rename = "end_call")]
    EndCall {},
    /// Liveness check; answered with `pong`.
    #[serde(rename = "ping")]
    Ping {
        /// The last `seq` the client has: the server may forget what it kept for replay up
        /// to it.
        #[serde(rename = "lastSeq", default)]
        last_seq: Option<u64>,
    },
    /// Take a session back after the connection dropped.
    #[serde(rename = "resume")]
    Resume {
        /// The session (`sessionId` from `joined`).
        #[serde(rename = "sessionId")]
        session_id: String,
        /// The secret from `joined`.
        #[serde(rename = "resumeToken")]
        resume_token: String,
        /// The last `seq` the client received.
        #[serde(rename = "lastSeq")]
        last_seq: u64,
        /// Relayed messages the client has lately received (so that a repeat of one, which a
        /// room that restarted may send, is dropped).
        #[serde(default)]
        received: Vec<ReceivedId>,
    },
    /// Connection statistics (getStats), for quality scoring and audio-only fallback.
    #[serde(rename = "stats")]
    Stats {
        /// The sample (its fields are at the top level of the message).
        #[serde(flatten)]
        sample: StatsSample,
    },
}

/// The wire name of a relayed signaling message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayKind {
    /// `offer`
    Offer,
    /// `answer`
    Answer,
    /// `ice-candidate`
    IceCandidate,
}

impl RelayKind {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayKind::Offer => "offer",
            RelayKind::Answer => "answer",
            RelayKind::IceCandidate => "ice-candidate",
        }
    }
}

/// A point in normalized video coordinates (0..=1 on both axes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Horizontal, 0 = left edge.
    pub x: f64,
    /// Vertical, 0 = top edge.
    pub y: f64,
}

/// An overlay: typed, validated, size-capped. The latest one per peer is kept for late joiners.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Overlay {
    /// A pointer at one spot.
    Pointer {
        /// Where.
        x: f64,
        /// Where.
        y: f64,
        /// CSS color, optional.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        color: Option<String>,
    },
    /// A measurement: a polyline with an optional label.
    Measure {
        /// The points.
        points: Vec<Point>,
        /// Text shown with it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    /// Removes this peer's overlay.
    Clear,
}

impl Overlay {
    /// Checks coordinates and sizes; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let coord = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
        let text = |s: &Option<String>| s.as_ref().is_none_or(|s| s.chars().count() <= MAX_OVERLAY_LABEL);
        match self {
            Overlay::Pointer { x, y, color } => {
                if !coord(*x) || !coord(*y) {
                    return Err("pointer coordinates must be between 0 and 1".into());
                }
                if !text(color) {
                    return Err(format!("color is longer than {MAX_OVERLAY_LABEL} characters"));
                }
            }
            Overlay::Measure { points, label } => {
                if points.is_empty() || points.len() > MAX_OVERLAY_POINTS {
                    return Err(format!("a measure has 1 to {MAX_OVERLAY_POINTS} points"));
                }
                if !points.iter().all(|p| coord(p.x) && coord(p.y)) {
                    return Err("measure coordinates must be between 0 and 1".into());
                }
                if !text(label) {
                    return Err(format!("label is longer than {MAX_OVERLAY_LABEL} characters"));
                }
            }
            Overlay::Clear => {}
        }
        Ok(())
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

/// What a parse failure was, so the client gets the right error code.
#[derive(Debug)]
pub struct ParseError {
    /// The code.
    pub code: ErrorCode,
    /// A sentence naming the problem.
    pub message: String,
    /// The client's `id`, if the frame had one.
    pub reference: Option<Value>,
}

/// Parses one client text frame.
pub fn parse_client(text: &str) -> Result<ClientEnvelope, ParseError> {
    match serde_json::from_str::<RawClient<'_>>(text) {
        Ok(raw) => raw.into_envelope(),
        Err(err) => Err(classify(text, err)),
    }
}

fn classify(text: &str, err: serde_json::Error) -> ParseError {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return ParseError { code: ErrorCode::BadJson, message: format!("malformed JSON: {e}"), reference: None };
        }
    };
    let reference = value.get("id").cloned();
    let Some(obj) = value.as_object() else {
        return ParseError { code: ErrorCode::InvalidMessage, message: "a message is a JSON object".into(), reference };
    };
    match obj.get("type").and_then(Value::as_str) {
        None => ParseError { code: ErrorCode::UnknownType, message: "message has no \"type\"".into(), reference },
        Some(t) if !CLIENT_TYPES.contains(&t) => {
            ParseError { code: ErrorCode::UnknownType, message: format!("unknown message type {t:?}"), reference }
        }
        Some(t) => {
            ParseError { code: ErrorCode::InvalidMessage, message: format!("invalid {t:?} message: {err}"), reference }
        }
    }
}

/// A participant as other peers see it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantInfo {
    /// Session id.
    pub peer_id: PeerId,
    /// The user.
    pub user_id: UserId,
    /// Name to show.
    pub display_name: String,
    /// Media state.
    pub media: MediaState,
    /// Join time, unix milliseconds.
    pub joined_at: i64,
}

/// A chat message as stored and as sent.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    /// Unique id.
    pub id: String,
    /// The room.
    pub room_id: RoomId,
    /// Order within the room, from 1.
    pub seq: i64,
    /// Sender session.
    pub peer_id: PeerId,
    /// Sender user.
    pub user_id: UserId,
    /// Sender's display name at the time.
    pub display_name: String,
    /// The text.
    pub text: String,
    /// Unix milliseconds.
    pub sent_at: i64,
}

/// The latest overlay of one peer.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerOverlay {
    /// Whose.
    pub peer_id: PeerId,
    /// What.
    pub overlay: Overlay,
}

/// A message from the server to a client.
#[derive(Debug, Serialize)]
#[serde(tag = "type")]
pub enum ServerMessage<'a> {
    /// Answer to `join`.
    #[serde(rename = "joined", rename_all = "camelCase")]
    Joined {
        /// The room.
        room_id: &'a RoomId,
        /// This session's peer id.
        peer_id: &'a PeerId,
        /// This session's id (the same value as `peerId`).
        session_id: &'a PeerId,
        /// Secret that lets this session be resumed on a new connection.
        resume_token: &'a str,
        /// The other peers' ids (seed 002).
        peers: Vec<&'a PeerId>,
        /// Everyone in the room, this session included.
        participants: Vec<&'a ParticipantInfo>,
        /// STUN and TURN servers, with credentials.
        ice_servers: &'a Value,
        /// Status of the current call.
        call_status: CallStatus,
        /// The current call session, if one is open.
        call_id: Option<&'a str>,
        /// Recent chat, oldest first.
        chat: &'a [ChatMessage],
        /// The latest overlay of each peer that has one.
        overlays: Vec<PeerOverlay>,
    },
    /// Someone entered the room.
    #[serde(rename = "peer_joined", rename_all = "camelCase")]
    PeerJoined {
        /// Their peer id.
        peer_id: &'a PeerId,
        /// Who they are.
        participant: &'a ParticipantInfo,
    },
    /// Someone left the room.
    #[serde(rename = "peer_left", rename_all = "camelCase")]
    PeerLeft {
        /// Their peer id.
        peer_id: &'a PeerId,
        /// Why: `left` (asked to), `disconnected` (connection closed), `failed` (its actor kept failing).
        reason: &'a str,
    },
    /// Answer to `leave`.
    #[serde(rename = "left", rename_all = "camelCase")]
    Left {
        /// The room that was left.
        room_id: &'a RoomId,
    },
    /// A relayed offer, answer or candidate; `peerId` is the sender.
    /// `msgId` is the sender's `id` for the message, when it gave one: a receiver that sees the
    /// same (`peerId`, `msgId`) twice drops the second (the server does so for its clients).
    #[serde(rename = "offer", rename_all = "camelCase")]
    Offer {
        /// The sender.
        peer_id: &'a PeerId,
        /// The sender's message id.
        #[serde(skip_serializing_if = "Option::is_none")]
        msg_id: Option<&'a Value>,
        /// The session description.
        sdp: &'a str,
    },
    /// See [`ServerMessage::Offer`].
    #[serde(rename = "answer", rename_all = "camelCase")]
    Answer {
        /// The sender.
        peer_id: &'a PeerId,
        /// The sender's message id.
        #[serde(skip_serializing_if = "Option::is_none")]
        msg_id: Option<&'a Value>,
        /// The session description.
        sdp: &'a str,
    },
    /// See [`ServerMessage::Offer`].
    #[serde(rename = "ice-candidate", rename_all = "camelCase")]
    IceCandidate {
        /// The sender.
        peer_id: &'a PeerId,
        /// The sender's message id.
        #[serde(skip_serializing_if = "Option::is_none")]
        msg_id: Option<&'a Value>,
        /// The candidate, as the sender gave it.
        candidate: &'a Value,
    },
    /// A peer's media state changed.
    #[serde(rename = "control", rename_all = "camelCase")]
    Control {
        /// Whose.
        peer_id: &'a PeerId,
        /// The action that changed it.
        action: ControlAction,
        /// The new state.
        media: &'a MediaState,
    },
    /// A peer drew an overlay.
    #[serde(rename = "overlay", rename_all = "camelCase")]
    Overlay {
        /// Whose.
        peer_id: &'a PeerId,
        /// What.
        overlay: &'a Overlay,
    },
    /// A chat message.
    #[serde(rename = "chat")]
    Chat {
        /// The message (its `seq` numbers the room's chat, not the session's frames).
        message: &'a ChatMessage,
    },
    /// The call status changed.
    #[serde(rename = "call_status", rename_all = "camelCase")]
    CallStatus {
        /// New status.
        status: CallStatus,
        /// The call session.
        call_id: Option<&'a str>,
    },
    /// The room accepted the client message with this `id` (sent only for messages that carry
    /// one: offers, answers, candidates, control, chat, `end_call`, stats).
    #[serde(rename = "ack")]
    Ack {
        /// The message's `id`.
        #[serde(rename = "ref")]
        reference: &'a Value,
    },
    /// A relayed message sent with `"receipt":true` was written to its target's connection.
    #[serde(rename = "delivered")]
    Delivered {
        /// The message's `id`.
        #[serde(rename = "ref")]
        reference: &'a Value,
    },
    /// The node is going away: reconnect to another node and `resume`.
    #[serde(rename = "goaway")]
    GoAway {
        /// Why.
        reason: &'a str,
        /// Always true: the session continues elsewhere.
        reconnect: bool,
    },
    /// Answer to `ping`.
    #[serde(rename = "pong", rename_all = "camelCase")]
    Pong {
        /// The ping's `id`.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Value>,
        /// Server clock, unix milliseconds.
        server_time: i64,
    },
    /// Answer to `resume`: replayed frames follow. Its `seq` is the client's `lastSeq` (it does
    /// not take a number of its own).
    #[serde(rename = "resumed", rename_all = "camelCase")]
    Resumed {
        /// The room.
        room_id: &'a RoomId,
        /// The session.
        session_id: &'a PeerId,
        /// Frames replayed after this one.
        replayed: usize,
    },
    /// The session could not be resumed; join afresh.
    #[serde(rename = "resume_failed")]
    ResumeFailed {
        /// `expired`, `too_far_behind`, `unknown_session`, `invalid_token`.
        reason: &'a str,
        /// A sentence.
        message: &'a str,
    },
    /// A peer's connection dropped; it may resume within the grace period.
    #[serde(rename = "peer_disconnected", rename_all = "camelCase")]
    PeerDisconnected {
        /// Whose.
        peer_id: &'a PeerId,
    },
    /// A peer resumed its session; restart ICE with it, its network path may have changed.
    #[serde(rename = "peer_resumed", rename_all = "camelCase")]
    PeerResumed {
        /// Whose.
        peer_id: &'a PeerId,
        /// Always true: the peer's address may differ.
        ice_restart: bool,
    },
    /// A peer's connection quality, from its latest `stats` (to everyone in the room).
    #[serde(rename = "connection_quality", rename_all = "camelCase")]
    ConnectionQuality {
        /// Whose.
        peer_id: &'a PeerId,
        /// `good`, `fair` or `poor`.
        level: QualityLevel,
        /// E-model R factor, 0..100.
        score: f64,
        /// Mean opinion score, 1..4.5.
        mos: f64,
    },
    /// To one peer: switch to audio only (`audio_only`) or back to audio and video (`normal`).
    #[serde(rename = "fallback")]
    Fallback {
        /// `audio_only` or `normal`.
        mode: &'a str,
        /// `poor_connection` or `connection_recovered`.
        reason: &'a str,
    },
    /// To the others: a peer's video is paused (or resumed) by the server.
    #[serde(rename = "video_paused", rename_all = "camelCase")]
    VideoPaused {
        /// Whose.
        peer_id: &'a PeerId,
        /// Paused or resumed.
        paused: bool,
        /// Why.
        reason: &'a str,
    },
    /// Something was wrong with a message; the connection stays usable unless closed after.
    #[serde(rename = "error")]
    Error {
        /// Machine-readable code.
        code: &'a str,
        /// Human-readable sentence.
        message: &'a str,
        /// The offending message's `id`.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Value>,
    },
}

impl ServerMessage<'_> {
    /// Serializes to a JSON object without `seq`.
    pub fn to_body(&self) -> std::sync::Arc<str> {
        // Serializing these types cannot fail: no maps with non-string keys, no custom
        // serializers that return errors.
        serde_json::to_string(self)
            .unwrap_or_else(|_| String::from("{\"type\":\"error\",\"code\":\"internal\"}"))
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_may_name_what_the_client_received() {
        let env = parse_client(
            r#"{"type":"resume","sessionId":"s","resumeToken":"t","lastSeq":3,"received":[{"peerId":"p","msgId":7}]}"#,
        )
        .expect("resume");
        let ClientMessage::Resume { last_seq, received, .. } = env.message else { panic!("not a resume") };
        assert_eq!(last_seq, 3);
        assert_eq!(received, vec![ReceivedId { peer_id: "p".into(), msg_id: Value::from(7) }]);
        let too_many: Vec<Value> = (0..=MAX_RECEIVED).map(|i| serde_json::json!({"peerId": "p", "msgId": i})).collect();
        let text = serde_json::json!({"type": "resume", "sessionId": "s", "resumeToken": "t", "lastSeq": 3,
            "received": too_many, "id": 1})
        .to_string();
        let err = parse_client(&text).expect_err("too many");
        assert_eq!((err.code, err.reference), (ErrorCode::InvalidMessage, Some(Value::from(1))));
    }

    #[test]
    fn parses_seed_002_messages() {
        let env = parse_client(r#"{"type":"join","roomId":"r1"}"#).expect("join");
        assert!(matches!(env.message, ClientMessage::Join { ref room_id, .. } if room_id == "r1"));
        let env = parse_client(r#"{"type":"offer","peerId":"p","sdp":"v=0","id":7}"#).expect("offer");
        assert_eq!(env.id, Some(Value::from(7)));
        let env = parse_client(r#"{"type":"ice-candidate","peerId":"p","candidate":{"candidate":"c","sdpMid":"0"}}"#);
        assert!(matches!(env.expect("candidate").message, ClientMessage::IceCandidate { .. }));
    }

    #[test]
    fn classifies_bad_input() {
        assert_eq!(parse_client("{not json").unwrap_err().code, ErrorCode::BadJson);
        assert_eq!(parse_client(r#"{"type":"fly","id":1}"#).unwrap_err().code, ErrorCode::UnknownType);
        let e = parse_client(r#"{"type":"offer","peerId":"p","id":"x"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidMessage);
        assert_eq!(e.reference, Some(Value::from("x")));
        assert!(e.message.contains("sdp"), "{}", e.message);
        assert_eq!(parse_client("[1]").unwrap_err().code, ErrorCode::InvalidMessage);
        assert_eq!(parse_client(r#"{"roomId":"r"}"#).unwrap_err().code, ErrorCode::UnknownType);
    }

    #[test]
    fn overlays_are_validated() {
        assert!(Overlay::Pointer { x: 0.5, y: 0.5, color: None }.validate().is_ok());
        assert!(Overlay::Pointer { x: 1.5, y: 0.5, color: None }.validate().is_err());
        assert!(Overlay::Measure { points: vec![], label: None }.validate().is_err());
        let many = vec![Point { x: 0.1, y: 0.1 }; MAX_OVERLAY_POINTS + 1];
        assert!(Overlay::Measure { points: many, label: None }.validate().is_err());
        let e = parse_client(r#"{"type":"overlay","overlay":{"kind":"laser"}}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidMessage);
    }

    #[test]
    fn server_messages_have_the_seed_002_shape() {
        let peer = PeerId::new("a");
        let body = ServerMessage::Offer { peer_id: &peer, msg_id: None, sdp: "v=0" }.to_body();
        assert_eq!(&*body, r#"{"type":"offer","peerId":"a","sdp":"v=0"}"#);
    }
}
