//! One WebSocket to a node, with no policy: JSON text frames out and in, the `seq` numbering
//! checked, close frames reported. The careful [`Client`](crate::Client) is built on it, and
//! tests use it as it is to send what a careful client never would (bad JSON, binary frames,
//! floods) and to read exactly what the server wrote.

use crate::error::{Error, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The stream of a connection opened by [`RawConnection::connect`] (plain TCP) or
/// `RawConnection::connect_tls` (TLS, feature `rustls`).
pub type DefaultStream = MaybeTlsStream<TcpStream>;

/// A frame whose `seq` was not the one due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqGap {
    pub expected: u64,
    pub got: u64,
}

/// One WebSocket speaking protocol v1.
pub struct RawConnection<S = DefaultStream> {
    ws: WebSocketStream<S>,
    last_seq: u64,
}

impl<S> std::fmt::Debug for RawConnection<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawConnection").field("last_seq", &self.last_seq).finish_non_exhaustive()
    }
}

/// `url` with the token as its `token` query parameter (browsers cannot set headers on a
/// WebSocket, so the server reads it there first).
pub fn with_token(url: &str, token: Option<&str>) -> String {
    match token {
        Some(t) if url.contains('?') => format!("{url}&token={t}"),
        Some(t) => format!("{url}?token={t}"),
        None => url.to_owned(),
    }
}

impl RawConnection {
    /// Opens `url` (`ws://host:port/ws/signal`) with `token`. For `wss://` use
    /// [`connect_tls`](Self::connect_tls) (feature `rustls`): the crate brings no roots of its
    /// own, so the caller's configuration says whom to trust.
    pub async fn connect(url: &str, token: Option<&str>) -> Result<RawConnection> {
        let (ws, _) = tokio_tungstenite::connect_async(with_token(url, token)).await?;
        Ok(RawConnection::over(ws))
    }

    /// Opens a `wss://` URL with the caller's TLS configuration (its roots, its crypto provider).
    #[cfg(feature = "rustls")]
    pub async fn connect_tls(
        url: &str,
        token: Option<&str>,
        tls: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<RawConnection> {
        let connector = tokio_tungstenite::Connector::Rustls(tls);
        let (ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(with_token(url, token), None, false, Some(connector))
                .await?;
        Ok(RawConnection::over(ws))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawConnection<S> {
    /// A connection on a WebSocket opened by other means (a custom TLS stack, a test stream).
    pub fn over(ws: WebSocketStream<S>) -> RawConnection<S> {
        RawConnection { ws, last_seq: 0 }
    }

    /// Sends one text frame as it is (it need not be JSON).
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<()> {
        self.ws.send(Message::text(text.into())).await?;
        Ok(())
    }

    /// Sends `v` as one JSON text frame.
    pub async fn send_value(&mut self, v: &Value) -> Result<()> {
        self.send_text(v.to_string()).await
    }

    /// Sends a binary frame (not part of the protocol; servers answer `binary_unsupported`).
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.ws.send(Message::binary(bytes)).await?;
        Ok(())
    }

    /// The next text frame as JSON, and whether its `seq` broke the numbering (`goaway`
    /// repeats the last number: it is not part of the room's sequence; `resumed` sets it). A close frame or the
    /// end of the stream is [`Error::Closed`]. Cancel-safe: nothing is lost if the future is
    /// dropped before it is ready.
    pub async fn recv_checked(&mut self) -> Result<(Value, Option<SeqGap>)> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let v: Value = serde_json::from_str(&text)
                        .map_err(|e| Error::Protocol(format!("the server sent a frame that is not JSON ({e})")))?;
                    let gap = self.observe_seq(&v);
                    return Ok((v, gap));
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) =
                        frame.map(|f| (Some(u16::from(f.code)), f.reason.to_string())).unwrap_or((None, String::new()));
                    return Err(Error::Closed { code, reason });
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => return Err(Error::Closed { code: None, reason: "the stream ended".into() }),
            }
        }
    }

    /// The next text frame as JSON, whatever its `seq`.
    pub async fn recv_value(&mut self) -> Result<Value> {
        Ok(self.recv_checked().await?.0)
    }

    /// Reads until the server closes the connection; its close frame (`None` if the stream
    /// ended without one). Frames before it are skipped.
    pub async fn close_frame(&mut self) -> Option<CloseFrame> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Close(f))) => return f,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Closes with a handshake (code 1000).
    pub async fn close(&mut self) -> Result<()> {
        match self.ws.close(None).await {
            Ok(()) | Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The `seq` of the last frame received.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Sets where the numbering stands: after `resumed`, whose `seq` is the client's `lastSeq`.
    pub fn set_last_seq(&mut self, seq: u64) {
        self.last_seq = seq;
    }

    /// The WebSocket itself, for what this type does not offer.
    pub fn get_mut(&mut self) -> &mut WebSocketStream<S> {
        &mut self.ws
    }

    pub fn into_inner(self) -> WebSocketStream<S> {
        self.ws
    }

    fn observe_seq(&mut self, v: &Value) -> Option<SeqGap> {
        let Some(got) = v["seq"].as_u64() else {
            return Some(SeqGap { expected: self.last_seq + 1, got: 0 });
        };
        // `resumed` takes up the session's numbering where the client says it stands.
        if v["type"] == "resumed" {
            self.last_seq = got;
            return None;
        }
        let expected = if v["type"] == "goaway" { self.last_seq } else { self.last_seq + 1 };
        self.last_seq = got;
        (got != expected).then_some(SeqGap { expected, got })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// A client connection and the server's end of it, over an in-memory pipe.
    async fn pair() -> (RawConnection<tokio::io::DuplexStream>, WebSocketStream<tokio::io::DuplexStream>) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let server = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
        (RawConnection::over(client), server)
    }

    #[tokio::test]
    async fn seq_gaps_are_reported_and_goaway_and_resumed_are_not_gaps() {
        let (mut conn, mut server) = pair().await;
        for frame in [
            json!({"seq": 1, "type": "joined"}),
            json!({"seq": 2, "type": "offer"}),
            json!({"seq": 2, "type": "goaway"}),
            json!({"seq": 5, "type": "offer"}),
            json!({"seq": 17, "type": "resumed"}),
            json!({"seq": 18, "type": "offer"}),
            json!({"type": "pong"}),
        ] {
            server.send(Message::text(frame.to_string())).await.expect("server writes");
        }
        let mut gaps = Vec::new();
        for _ in 0..7 {
            gaps.push(conn.recv_checked().await.expect("a frame").1);
        }
        let gap = |expected, got| Some(SeqGap { expected, got });
        assert_eq!(gaps, [None, None, None, gap(3, 5), None, None, gap(19, 0)]);
        assert_eq!(conn.last_seq(), 18);
    }

    #[tokio::test]
    async fn bad_json_and_close_frames_are_errors_not_panics() {
        let (mut conn, mut server) = pair().await;
        server.send(Message::text("not json")).await.expect("server writes");
        server.send(Message::binary(vec![1u8, 2])).await.expect("server writes");
        server.send(Message::text(json!({"seq": 1, "type": "pong"}).to_string())).await.expect("server writes");
        server.close(None).await.expect("server closes");
        assert!(matches!(conn.recv_value().await, Err(Error::Protocol(_))));
        // The binary frame is skipped; the next text frame still comes.
        assert_eq!(conn.recv_value().await.expect("pong")["type"], "pong");
        assert!(matches!(conn.recv_value().await, Err(Error::Closed { .. })));
    }

    #[test]
    fn the_token_goes_in_the_query() {
        assert_eq!(with_token("ws://h/ws/signal", Some("t")), "ws://h/ws/signal?token=t");
        assert_eq!(with_token("ws://h/ws/signal?a=1", Some("t")), "ws://h/ws/signal?a=1&token=t");
        assert_eq!(with_token("ws://h/ws/signal", None), "ws://h/ws/signal");
    }
}
