//! A Rust client for Switchboard's signaling protocol v1 (docs/protocol.md).
//!
//! [`Client`] is the careful client an application wants: it joins a room, relays offers,
//! answers and candidates with ids and receipts, resolves requests by their `ack`, and when
//! its connection breaks it reconnects (to the next node of its list, with exponential backoff
//! and jitter), resumes its session and sends again what the server may not have, as
//! docs/reliability.md asks of a client. Its news arrive as typed [`Event`]s.
//!
//! [`RawConnection`] is one WebSocket with no policy (JSON frames in and out, the `seq`
//! numbering checked), for tests and tools that must send what a careful client never would.
//!
//! ```no_run
//! use serde_json::json;
//! use switchboard_client::{Client, ClientConfig, Event, JoinOptions};
//!
//! # async fn example(token: String) -> switchboard_client::Result<()> {
//! let config = ClientConfig::new("ws://127.0.0.1:8080/ws/signal", token)
//!     .with_urls(["ws://127.0.0.1:8080/ws/signal", "ws://127.0.0.1:8081/ws/signal"]);
//! let mut client = Client::connect(config).await?;
//! let joined = client.join("consult-42", JoinOptions::default()).await?;
//! for peer in &joined.peers {
//!     client.send_relay(peer, "offer", json!({"sdp": "v=0..."}))?;
//! }
//! client.send_chat("hello").await?;
//! while let Some(event) = client.next_event().await {
//!     match event {
//!         Event::Relayed { kind, from, payload, .. } => println!("{kind} from {from}: {payload}"),
//!         Event::Reconnected { resumed, .. } => println!("back in (resumed: {resumed})"),
//!         Event::Closed { reason } => {
//!             println!("stopped: {reason}");
//!             break;
//!         }
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod backoff;
mod call;
mod connection;
mod error;
mod event;
#[cfg(feature = "webrtc")]
pub mod peer;

pub use backoff::Backoff;
pub use call::{Client, ClientConfig, JoinOptions, LiveUrls, MessageId, TokenFuture, TokenSource};
pub use connection::{DefaultStream, RawConnection, SeqGap, with_token};
pub use error::{Code, Error, Result};
pub use event::{Event, Joined, ReconnectReason};
#[cfg(feature = "rustls")]
pub use rustls;
/// The WebSocket library underneath, for the types [`RawConnection`] exposes.
pub use tokio_tungstenite;
