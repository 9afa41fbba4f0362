//! The crate's one error type, and the error codes a Switchboard server sends
//! (`{"type":"error","code":...}`, docs/protocol.md section 6).

use serde_json::Value;

/// What went wrong with a connection or a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused the message or the connection with an `error` frame.
    #[error("{code}: {message}")]
    Server {
        code: Code,
        message: String,
        /// The `ref` of the refused message, when the server gave one.
        reference: Option<Value>,
    },
    /// The join or resume was refused with `resume_failed` (its `reason`).
    #[error("resume failed: {0}")]
    ResumeFailed(String),
    /// The WebSocket could not be opened or broke.
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The server closed the connection (its close code and reason, if it sent a close frame).
    #[error("connection closed ({code:?}: {reason})")]
    Closed { code: Option<u16>, reason: String },
    /// No answer came within the time allowed.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The server sent something that is not protocol v1 (not JSON, or a required field missing).
    #[error("protocol: {0}")]
    Protocol(String),
    /// The configuration cannot work (no URL, a `wss://` URL without TLS support...).
    #[error("config: {0}")]
    Config(String),
    /// The client was closed (or its task stopped) before the answer came.
    #[error("the client is closed")]
    ClientClosed,
}

impl Error {
    /// The server's error code, when the server refused something.
    pub fn code(&self) -> Option<&Code> {
        match self {
            Error::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The error of an `error` frame.
    pub(crate) fn from_frame(v: &Value) -> Error {
        Error::Server {
            code: Code::from(v["code"].as_str().unwrap_or_default()),
            message: v["message"].as_str().unwrap_or_default().to_owned(),
            reference: v.get("ref").cloned().filter(|r| !r.is_null()),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error codes of protocol v1. The protocol grows by addition, so an unknown code is kept
/// as [`Code::Other`] rather than refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Code {
    BadJson,
    UnknownType,
    InvalidMessage,
    NotJoined,
    AlreadyJoined,
    PeerNotFound,
    RoomFull,
    RoomForbidden,
    Forbidden,
    InvalidRoomId,
    RateLimited,
    TooLarge,
    BinaryUnsupported,
    RoomUnavailable,
    RoomElsewhere,
    Unavailable,
    Internal,
    TokenMissing,
    TokenExpired,
    TokenNotYetValid,
    TokenInvalid,
    Other(String),
}

const CODES: [(&str, Code); 21] = [
    ("bad_json", Code::BadJson),
    ("unknown_type", Code::UnknownType),
    ("invalid_message", Code::InvalidMessage),
    ("not_joined", Code::NotJoined),
    ("already_joined", Code::AlreadyJoined),
    ("peer_not_found", Code::PeerNotFound),
    ("room_full", Code::RoomFull),
    ("room_forbidden", Code::RoomForbidden),
    ("forbidden", Code::Forbidden),
    ("invalid_room_id", Code::InvalidRoomId),
    ("rate_limited", Code::RateLimited),
    ("too_large", Code::TooLarge),
    ("binary_unsupported", Code::BinaryUnsupported),
    ("room_unavailable", Code::RoomUnavailable),
    ("room_elsewhere", Code::RoomElsewhere),
    ("unavailable", Code::Unavailable),
    ("internal", Code::Internal),
    ("token_missing", Code::TokenMissing),
    ("token_expired", Code::TokenExpired),
    ("token_not_yet_valid", Code::TokenNotYetValid),
    ("token_invalid", Code::TokenInvalid),
];

impl Code {
    /// The code as the server spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Code::Other(s) => s,
            known => CODES.iter().find(|(_, c)| c == known).map(|(s, _)| *s).unwrap_or_default(),
        }
    }

    /// A token error: the connection is closed after it, and retrying with the same token is
    /// pointless.
    pub fn is_token_error(&self) -> bool {
        matches!(self, Code::TokenMissing | Code::TokenExpired | Code::TokenNotYetValid | Code::TokenInvalid)
    }
}

impl From<&str> for Code {
    fn from(s: &str) -> Code {
        CODES.iter().find(|(name, _)| *name == s).map(|(_, c)| c.clone()).unwrap_or_else(|| Code::Other(s.to_owned()))
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_ones_are_kept() {
        for (name, code) in CODES.iter() {
            assert_eq!(&Code::from(*name), code);
            assert_eq!(code.as_str(), *name);
        }
        assert_eq!(Code::from("brand_new"), Code::Other("brand_new".into()));
        assert_eq!(Code::from("brand_new").as_str(), "brand_new");
    }
}
