//! What a [`Client`](crate::Client) tells its application: typed server messages and the
//! client's own news (reconnecting, reconnected, repeats dropped, numbering gaps).
//!
//! A server message of a type this crate does not know arrives as [`Event::Other`], so a
//! server that grew new messages (the protocol grows by addition) never breaks a client.

use crate::call::MessageId;
use serde_json::Value;

/// The answer to a `join` (or a fresh join after a failed resume).
#[derive(Debug, Clone)]
pub struct Joined {
    pub room_id: String,
    /// This session's peer id (the same value as its session id).
    pub peer_id: String,
    /// The other peers' ids.
    pub peers: Vec<String>,
    /// Everyone in the room, this session included, as the server describes them.
    pub participants: Vec<Value>,
    pub ice_servers: Vec<Value>,
    pub call_status: Option<String>,
    /// The whole `joined` frame.
    pub frame: Value,
}

impl Joined {
    pub(crate) fn from_frame(v: &Value) -> Option<Joined> {
        let strings = |key: &str| -> Vec<String> {
            v[key]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        };
        Some(Joined {
            room_id: v["roomId"].as_str()?.to_owned(),
            peer_id: v["peerId"].as_str()?.to_owned(),
            peers: strings("peers"),
            participants: v["participants"].as_array().cloned().unwrap_or_default(),
            ice_servers: v["iceServers"].as_array().cloned().unwrap_or_default(),
            call_status: v["callStatus"].as_str().map(str::to_owned),
            frame: v.clone(),
        })
    }

    /// The peer id of the participant whose `userId` is `user`, if present.
    pub fn peer_of_user(&self, user: &str) -> Option<String> {
        self.participants
            .iter()
            .find(|p| p["userId"] == user && p["peerId"] != self.peer_id.as_str())
            .and_then(|p| p["peerId"].as_str().map(str::to_owned))
    }
}

/// Why the client is reconnecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReconnectReason {
    /// The socket broke or ended without a close frame.
    Dropped,
    /// The server closed it (close code and reason).
    Closed { code: Option<u16>, reason: String },
    /// Nothing was heard from the server for the configured stale time (a frozen node).
    Stale,
    /// The node is draining (`goaway`).
    GoAway,
    /// The application asked ([`Client::drop_socket`](crate::Client::drop_socket)).
    Requested,
    /// The server said the session is gone (`not_joined`, `room_elsewhere`): join afresh.
    SessionLost,
}

/// Something the application may want to know.
#[derive(Debug, Clone)]
pub enum Event {
    /// A join was answered (also after a failed resume forced a fresh join, with new ids).
    Joined(Joined),
    PeerJoined {
        peer_id: String,
        participant: Value,
    },
    PeerLeft {
        peer_id: String,
        reason: Option<String>,
    },
    /// A peer's connection dropped; its session waits for it to resume.
    PeerDisconnected {
        peer_id: String,
    },
    PeerResumed {
        peer_id: String,
        ice_restart: bool,
    },
    /// The session left its room (`left`).
    Left {
        room_id: String,
    },
    /// An offer, answer or ice-candidate from `from`. `payload` is the whole frame.
    Relayed {
        kind: String,
        from: String,
        msg_id: Option<Value>,
        payload: Value,
    },
    /// A relayed message this client already had (same `peerId` and `msgId`), dropped.
    RepeatDropped {
        from: String,
        msg_id: Value,
    },
    /// A chat message (its `message` object).
    Chat(Value),
    /// A media-state change (the whole `control` frame).
    Control(Value),
    /// An overlay (the whole frame).
    Overlay(Value),
    CallStatus {
        status: String,
        call_id: Option<String>,
    },
    /// `connection_quality` (the whole frame).
    Quality(Value),
    /// `fallback` (the whole frame): audio-only or back to normal.
    Fallback(Value),
    /// `video_paused` (the whole frame).
    VideoPaused(Value),
    /// `snapshot_ready` (the whole frame).
    SnapshotReady(Value),
    /// A message this client sent with an id was acknowledged by the room.
    Acked(MessageId),
    /// A relayed message sent with a receipt was written by its target's connection.
    Delivered(MessageId),
    /// The connection broke; the client is getting back in.
    Reconnecting {
        reason: ReconnectReason,
    },
    /// Back in through `url`: the session resumed (`true`), or a fresh join replaced it.
    Reconnected {
        resumed: bool,
        url: String,
    },
    /// A resume was answered `resume_failed` (its `reason`); a fresh join follows unless the
    /// reason was `unavailable`, which is retried.
    ResumeFailed {
        reason: String,
    },
    /// A frame's `seq` was not the one due: the protocol promises +1 each time.
    SeqGap {
        expected: u64,
        got: u64,
        frame: Value,
    },
    /// An `error` frame not answered to a request (requests get theirs as their result).
    Error {
        code: crate::Code,
        message: String,
        reference: Option<Value>,
    },
    /// The client stopped: closed by the application, or it could not get back in.
    Closed {
        reason: String,
    },
    /// Any other server message, as it came.
    Other(Value),
}

impl Event {
    /// The event of a server frame that is neither an answer nor a relayed message.
    pub(crate) fn from_frame(v: Value) -> Event {
        let text = |key: &str| v[key].as_str().unwrap_or_default().to_owned();
        match v["type"].as_str().unwrap_or_default() {
            "peer_joined" => Event::PeerJoined { peer_id: text("peerId"), participant: v["participant"].clone() },
            "peer_left" => Event::PeerLeft { peer_id: text("peerId"), reason: v["reason"].as_str().map(str::to_owned) },
            "peer_disconnected" => Event::PeerDisconnected { peer_id: text("peerId") },
            "peer_resumed" => {
                Event::PeerResumed { peer_id: text("peerId"), ice_restart: v["iceRestart"].as_bool().unwrap_or(false) }
            }
            "left" => Event::Left { room_id: text("roomId") },
            "chat" => Event::Chat(v["message"].clone()),
            "control" => Event::Control(v),
            "overlay" => Event::Overlay(v),
            "call_status" => {
                Event::CallStatus { status: text("status"), call_id: v["callId"].as_str().map(str::to_owned) }
            }
            "connection_quality" => Event::Quality(v),
            "fallback" => Event::Fallback(v),
            "video_paused" => Event::VideoPaused(v),
            "snapshot_ready" => Event::SnapshotReady(v),
            "error" => {
                let Error::Server { code, message, reference } = Error::from_frame(&v) else { return Event::Other(v) };
                Event::Error { code, message, reference }
            }
            _ => Event::Other(v),
        }
    }
}

use crate::error::Error;
