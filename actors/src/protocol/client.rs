//! What clients send: every message type, parsed in one pass into [`ClientMessage`]; only when
//! that fails is the frame looked at again to tell malformed JSON, an unknown type and a bad
//! field apart. A new client message type is added here: `CLIENT_TYPES`, `RawClient`'s fields,
//! the match in `into_envelope`, and the enum.

use super::*;

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
    "lobby_join",
    "token",
    "lobby_leave",
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
pub(super) struct RawClient<'a> {
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
    sdp: Option<RawJson>,
    #[serde(default)]
    candidate: Option<RawJson>,
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
    #[serde(default)]
    lobby: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    token: Option<String>,
}

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
        // An SDP is relayed as the JSON text the client wrote; it must be a JSON string.
        let sdp = |v: Option<RawJson>| match v {
            Some(sdp) if sdp.is_string() => Ok(sdp),
            Some(_) => Err(ParseError {
                code: ErrorCode::InvalidMessage,
                message: format!("invalid {kind:?} message: `sdp` must be a string"),
                reference: id.clone(),
            }),
            None => Err(missing("sdp")),
        };
        let message = match &*kind {
            "join" => ClientMessage::Join { room_id: need(self.room_id, "roomId")?, display_name: self.display_name },
            "leave" => ClientMessage::Leave {},
            "offer" => ClientMessage::Offer { peer_id: need(self.peer_id, "peerId")?, sdp: sdp(self.sdp)? },
            "answer" => ClientMessage::Answer { peer_id: need(self.peer_id, "peerId")?, sdp: sdp(self.sdp)? },
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
            "lobby_join" => {
                let tags = self.tags.unwrap_or_default();
                if tags.len() > MAX_LOBBY_TAGS || tags.iter().any(|t| t.is_empty() || t.chars().count() > MAX_TAG_CHARS)
                {
                    return Err(ParseError {
                        code: ErrorCode::InvalidMessage,
                        message: format!(
                            "invalid \"lobby_join\" message: at most {MAX_LOBBY_TAGS} tags of 1 to {MAX_TAG_CHARS} characters"
                        ),
                        reference: id.clone(),
                    });
                }
                ClientMessage::LobbyJoin { lobby: need(self.lobby, "lobby")?, tags }
            }
            "lobby_leave" => ClientMessage::LobbyLeave { lobby: need(self.lobby, "lobby")? },
            "token" => ClientMessage::Token { token: need(self.token, "token")? },
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

/// At most this many tags in a `lobby_join`.
pub const MAX_LOBBY_TAGS: usize = 16;

/// Longest lobby tag, in characters.
pub const MAX_TAG_CHARS: usize = 64;

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
        /// The session description (a JSON string, kept as the client wrote it).
        sdp: RawJson,
    },
    /// An SDP answer for one peer.
    #[serde(rename = "answer")]
    Answer {
        /// The target peer.
        #[serde(rename = "peerId")]
        peer_id: String,
        /// The session description (a JSON string, kept as the client wrote it).
        sdp: RawJson,
    },
    /// A trickled ICE candidate (the browser's `RTCIceCandidateInit`) for one peer.
    #[serde(rename = "ice-candidate")]
    IceCandidate {
        /// The target peer.
        #[serde(rename = "peerId")]
        peer_id: String,
        /// The candidate object, relayed as the client wrote it.
        candidate: RawJson,
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
    /// Wait in a lobby to be paired with someone (on a connection that is in no room).
    #[serde(rename = "lobby_join")]
    LobbyJoin {
        /// Which lobby.
        lobby: String,
        /// What the person is looking for: two people match when they share a tag or either
        /// has none.
        #[serde(default)]
        tags: Vec<String>,
    },
    /// Stop waiting.
    #[serde(rename = "lobby_leave")]
    LobbyLeave {
        /// Which lobby.
        lobby: String,
    },
    /// A fresh token for this connection (same user), before the current one expires: its
    /// expiry and grants replace the current ones, the call goes on.
    #[serde(rename = "token")]
    Token {
        /// The new token.
        token: String,
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

pub(super) fn classify(text: &str, err: serde_json::Error) -> ParseError {
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
