//! The WebSocket signaling edge: one [`connection`] task per client socket, reached through
//! its [`mailbox::Mailbox`], and the [`edge_router::EdgeRouter`] that rooms deliver frames
//! through.

pub mod connection;
pub mod edge_router;
pub mod mailbox;
pub mod rate_limit;
