//! Switchboard's integration tests: one binary, real servers on 127.0.0.1 ports chosen by
//! the OS, real WebSocket clients, real WebRTC peers, SQLite always and PostgreSQL when
//! `SWITCHBOARD_TEST_DATABASE_URL` is set.

mod admin;
mod appointments;
mod bad_input;
mod cli;
mod client;
mod cluster;
mod cluster_tls;
mod events_bus;
mod grants;
mod http_api;
mod lobby;
mod outage;
mod ownership;
mod quality;
mod receipts;
mod restart;
mod resume;
mod room_crash;
mod signaling;
mod slow_consumer;
mod snapshots;
mod store;
mod support;
mod tls;
mod turn;
mod web;
mod webhooks;
mod webrtc_call;
mod webrtc_peers;
