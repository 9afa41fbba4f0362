//! The WebSocket signaling edge: one [`connection::Connection`] actor per client socket,
//! and the [`edge_router::EdgeRouter`] that rooms deliver frames through.

pub mod connection;
pub mod edge_router;
pub mod rate_limit;
