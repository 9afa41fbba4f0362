//! Switchboard's actors: rooms, the participants in them and the supervisor above rooms.
//!
//! This crate does no IO of its own. It talks to the outside world through two ports:
//! [`RoomStore`] (persistence, implemented by the app with sqlx) and [`Edge`] (delivery of
//! frames to client connections, implemented by the app's WebSocket edge). That keeps the
//! actors testable and keeps the dependency direction app → cluster → actors.

pub mod call_status;
pub mod error;
pub mod ids;
pub mod media;
pub mod node_lease;
pub mod outbox;
pub mod participant;
pub mod ports;
pub mod protocol;
pub mod quality;
pub mod recent;
pub mod restart_policy;
pub mod room;
pub mod room_supervisor;

pub use call_status::CallStatus;
pub use error::{ErrorCode, RoomError};
pub use ids::{ConnId, PeerId, RoomId, UserId};
pub use ports::{Edge, RoomStore, StoreError};
