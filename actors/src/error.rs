//! Errors of the actor layer and the error codes clients see.

use thiserror::Error;

/// Every error code a client can receive in `{"type":"error","code":...}`.
///
/// The list is part of the protocol (`docs/protocol.md`); add codes, never rename them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The frame is not valid JSON.
    BadJson,
    /// The frame has no `type`, or one the server does not know.
    UnknownType,
    /// A known type with a missing or ill-typed field.
    InvalidMessage,
    /// A room message before `join`.
    NotJoined,
    /// A second `join` on a connection that is already in a room.
    AlreadyJoined,
    /// The target `peerId` is not in the room.
    PeerNotFound,
    /// The room has reached its participant limit.
    RoomFull,
    /// The room is not open to this user (invitees only), or the token is for another room.
    RoomForbidden,
    /// The token lacks the grant this message needs.
    Forbidden,
    /// The room id is not acceptable.
    InvalidRoomId,
    /// Too many messages: this one was dropped.
    RateLimited,
    /// A field is larger than its limit (chat text, overlay, SDP).
    TooLarge,
    /// Binary frames are not part of the protocol.
    BinaryUnsupported,
    /// The room could not be reached; the client may retry.
    RoomUnavailable,
    /// Another node owns the room (holds its lease).
    RoomElsewhere,
    /// The server is shutting down or not ready.
    Unavailable,
    /// Something failed on the server; details are in its log.
    Internal,
    /// The room is not open to its people yet, or any more (an appointment the host has not
    /// started, or that is over); the message says which.
    NotOpen,
    /// The token has expired (a refreshed one, or the connection's own: it closes next).
    TokenExpired,
    /// The token is not valid (signature, issuer, audience, shape).
    TokenInvalid,
    /// The room does not exist, and this token may not create rooms (`roomCreate`).
    RoomNotFound,
}

impl ErrorCode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::PeerNotFound => "peer_not_found",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::RoomForbidden => "room_forbidden",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InvalidRoomId => "invalid_room_id",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::BinaryUnsupported => "binary_unsupported",
            ErrorCode::RoomUnavailable => "room_unavailable",
            ErrorCode::RoomElsewhere => "room_elsewhere",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::NotOpen => "not_open",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenInvalid => "token_invalid",
            ErrorCode::RoomNotFound => "room_not_found",
        }
    }
}

/// An error a room reports back to the connection that caused it.
#[derive(Debug, Error, Clone)]
#[error("{message}")]
pub struct RoomError {
    /// What the client sees as `code`.
    pub code: ErrorCode,
    /// A sentence the client can show or log.
    pub message: String,
}

impl RoomError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}
