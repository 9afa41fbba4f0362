//! What the server sends: every message type, serialized once into a frame body that the
//! connection writing it numbers with the session's `seq`.

use super::*;

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
    /// Answer to `lobby_join`: waiting for a partner.
    #[serde(rename = "lobby_waiting", rename_all = "camelCase")]
    LobbyWaiting {
        /// The lobby.
        lobby: &'a str,
        /// People ahead in the queue (who waited longer).
        ahead: usize,
    },
    /// A partner was found: the `joined` of the fresh room follows.
    #[serde(rename = "paired", rename_all = "camelCase")]
    Paired {
        /// The lobby.
        lobby: &'a str,
        /// The room both are put in.
        room_id: &'a str,
    },
    /// Answer to `lobby_leave`: no longer waiting.
    #[serde(rename = "lobby_left", rename_all = "camelCase")]
    LobbyLeft {
        /// The lobby.
        lobby: &'a str,
    },
    /// Nobody was found within the lobby's wait: no longer waiting.
    #[serde(rename = "lobby_timeout", rename_all = "camelCase")]
    LobbyTimeout {
        /// The lobby.
        lobby: &'a str,
        /// How long the wait was, in milliseconds.
        waited_ms: u64,
    },
    /// The connection's token expires soon: send a fresh one (`token`) before `expiresAt`
    /// (unix seconds), or the connection closes then.
    #[serde(rename = "refresh_token", rename_all = "camelCase")]
    RefreshToken {
        /// When the current token expires, unix seconds.
        expires_at: i64,
    },
    /// Answer to `token`: the new token is the connection's from now on.
    #[serde(rename = "token_refreshed", rename_all = "camelCase")]
    TokenRefreshed {
        /// Its expiry, unix seconds.
        expires_at: i64,
        /// The client's `id`.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Value>,
    },
    /// An operator took this session out of the room: it is over (join again to come back,
    /// if the room lets you).
    #[serde(rename = "removed", rename_all = "camelCase")]
    Removed {
        /// The room.
        room_id: &'a RoomId,
        /// Why (`removed_by_admin`, `room_closed`).
        reason: &'a str,
    },
    /// An operator muted this participant's microphone or camera: the client stops sending it.
    #[serde(rename = "muted_by_admin", rename_all = "camelCase")]
    MutedByAdmin {
        /// The microphone was muted.
        audio: bool,
        /// The camera was turned off.
        video: bool,
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
        /// The session description, as its sender wrote it.
        sdp: &'a RawJson,
    },
    /// See [`ServerMessage::Offer`].
    #[serde(rename = "answer", rename_all = "camelCase")]
    Answer {
        /// The sender.
        peer_id: &'a PeerId,
        /// The sender's message id.
        #[serde(skip_serializing_if = "Option::is_none")]
        msg_id: Option<&'a Value>,
        /// The session description, as its sender wrote it.
        sdp: &'a RawJson,
    },
    /// See [`ServerMessage::Offer`].
    #[serde(rename = "ice-candidate", rename_all = "camelCase")]
    IceCandidate {
        /// The sender.
        peer_id: &'a PeerId,
        /// The sender's message id.
        #[serde(skip_serializing_if = "Option::is_none")]
        msg_id: Option<&'a Value>,
        /// The candidate, as the sender wrote it.
        candidate: &'a RawJson,
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
    /// A snapshot's signed report is ready (to everyone in the room).
    #[serde(rename = "snapshot_ready", rename_all = "camelCase")]
    SnapshotReady {
        /// The job.
        job_id: &'a str,
        /// The report (`GET /reports/{reportId}`).
        report_id: &'a str,
        /// What the snapshot shows.
        subject: &'a str,
        /// `baseline`, `unchanged`, `changed` or `lighting`.
        verdict: &'a str,
        /// Mean SSIM, 0..1.
        score: f64,
        /// Who took it.
        requested_by: &'a str,
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
    /// Serializes to a JSON object without `seq`, with its [`FrameKind`].
    pub fn to_body(&self) -> Body {
        // Serializing these types cannot fail: no maps with non-string keys, no custom
        // serializers that return errors.
        let text =
            serde_json::to_string(self).unwrap_or_else(|_| String::from("{\"type\":\"error\",\"code\":\"internal\"}"));
        Body::new(text, self.kind())
    }

    /// What the connection that writes this message must know about it.
    pub fn kind(&self) -> FrameKind {
        match self {
            ServerMessage::Ack { .. } => FrameKind::Answer,
            ServerMessage::Error { reference: Some(_), code, .. } if *code != ErrorCode::RoomUnavailable.as_str() => {
                FrameKind::Answer
            }
            ServerMessage::PeerLeft { .. } => FrameKind::PeerLeft,
            ServerMessage::Removed { .. } => FrameKind::Removed,
            ServerMessage::Delivered { .. } => FrameKind::Delivered,
            ServerMessage::Offer { msg_id: Some(_), .. }
            | ServerMessage::Answer { msg_id: Some(_), .. }
            | ServerMessage::IceCandidate { msg_id: Some(_), .. } => FrameKind::Relayed,
            _ => FrameKind::Other,
        }
    }
}
