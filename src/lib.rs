//! Switchboard, the node: configuration, auth, store, HTTP and WebSocket edge, wired to the
//! room actors of `switchboard-actors`. `main.rs` is only the command line over this.

pub mod app;
pub mod appointments;
pub mod auth;
pub mod bench;
pub mod bus;
pub mod cli;
pub mod config;
pub mod cv;
pub mod cv_worker;
pub mod edge;
pub mod events;
pub mod evidence;
pub mod http;
pub mod ice;
pub mod lobby;
pub mod node_lease;
pub mod notifications;
pub mod placement;
pub mod routing;
pub mod server;
pub mod singleton;
pub mod snapshots;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod turn;
pub mod verify_report;
pub mod webhooks;
