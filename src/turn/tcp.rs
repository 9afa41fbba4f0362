//! TURN over TCP (RFC 5766 §2.1): clients that cannot send UDP reach the server over TCP;
//! relaying towards peers stays UDP.
//!
//! `turn` 0.17's server only reads packets from a packet `Conn` (it has no TCP listener), so
//! all TCP clients of a listener are presented to it as one packet `Conn`: a frame read from a
//! connection is a packet from that connection's remote address, and a packet the server sends
//! to that address is written to that connection. On a stream, a STUN message is framed by the
//! length in its header and a ChannelData message by its own length, padded to four bytes
//! (RFC 5766 §11.5).
//!
//! Writes never wait: each connection has a bounded queue, and a packet for a client whose
//! queue is full is dropped, as UDP would drop it, so one slow client cannot hold up the
//! server's single read loop or anyone else's relay. An allocation made over a connection that
//! closes lives on until its lifetime ends (`turn` has no way to drop it by 5-tuple).

use async_trait::async_trait;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use webrtc_util::Conn;

/// Connections served at once per listener; more are closed as they arrive.
pub const MAX_CLIENTS: usize = 4096;
/// How long a new connection may take to send its first frame, and any frame to arrive once
/// its first byte has: a connection that trickles bytes would otherwise hold a slot for ever.
const FRAME_WAIT: Duration = Duration::from_secs(10);
/// Packets waiting to be written to one client.
const CLIENT_QUEUE: usize = 256;
/// Frames read from all clients, waiting for the server.
const INBOUND_QUEUE: usize = 1024;

/// One framed message read from a stream: a STUN message, or a ChannelData message without
/// its padding.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header).await?;
    read_rest(r, header).await
}

async fn read_rest<R: AsyncRead + Unpin>(r: &mut R, header: [u8; 4]) -> io::Result<Vec<u8>> {
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let (body, padding) = match header[0] >> 6 {
        // STUN: a 20-byte header whose length counts the attributes (a multiple of four).
        0b00 if length % 4 == 0 => (16 + length, 0),
        // ChannelData (channel numbers 0x4000-0x7FFF).
        0b01 => (length, (4 - length % 4) % 4),
        _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "neither STUN nor ChannelData")),
    };
    let mut frame = vec![0u8; 4 + body + padding];
    frame[..4].copy_from_slice(&header);
    r.read_exact(&mut frame[4..]).await?;
    frame.truncate(4 + body);
    Ok(frame)
}

/// `packet` as it goes on a stream: ChannelData padded to four bytes, STUN as it is.
pub fn stream_frame(packet: &[u8]) -> Vec<u8> {
    let mut frame = packet.to_vec();
    if ::turn::proto::chandata::ChannelData::is_channel_data(packet) {
        frame.resize(packet.len().div_ceil(4) * 4, 0);
    }
    frame
}

type Writers = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>;

/// All TCP clients of one listener, as one packet `Conn`.
pub struct TcpClients {
    local: SocketAddr,
    inbound: tokio::sync::Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
    writers: Writers,
}

impl TcpClients {
    /// Accepts connections on `listener` until `stop` turns true; the task ends once every
    /// connection is closed.
    pub fn serve(listener: TcpListener, stop: watch::Receiver<bool>) -> io::Result<(Arc<TcpClients>, JoinHandle<()>)> {
        let local = listener.local_addr()?;
        let (inbound_tx, inbound) = mpsc::channel(INBOUND_QUEUE);
        let writers: Writers = Arc::default();
        let clients =
            Arc::new(TcpClients { local, inbound: tokio::sync::Mutex::new(inbound), writers: writers.clone() });
        let task = tokio::spawn(accept_loop(listener, inbound_tx, writers, stop));
        Ok((clients, task))
    }
}

async fn accept_loop(
    listener: TcpListener,
    inbound: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    writers: Writers,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= MAX_CLIENTS {
                        tracing::warn!(%peer, "turn tcp connection refused: too many clients");
                        continue;
                    }
                    connections.spawn(serve_client(stream, peer, inbound.clone(), writers.clone()));
                }
                // Out of file descriptors and the like: wait a little rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "turn tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { break },
        }
    }
    connections.shutdown().await;
    writers.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

async fn serve_client(
    stream: TcpStream,
    peer: SocketAddr,
    inbound: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    writers: Writers,
) {
    // Signaling-sized messages: each must leave at once, not wait for a delayed ACK.
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(CLIENT_QUEUE);
    writers.lock().unwrap_or_else(|e| e.into_inner()).insert(peer, tx);
    let reading = async {
        let mut first = true;
        loop {
            let mut header = [0u8; 4];
            if first {
                tokio::time::timeout(FRAME_WAIT, rd.read_exact(&mut header)).await.map_err(io::Error::from)??;
                first = false;
            } else {
                rd.read_exact(&mut header).await?;
            }
            let frame =
                tokio::time::timeout(FRAME_WAIT, read_rest(&mut rd, header)).await.map_err(io::Error::from)??;
            if inbound.send((frame, peer)).await.is_err() {
                return Ok::<(), io::Error>(());
            }
        }
    };
    let writing = async {
        while let Some(frame) = rx.recv().await {
            wr.write_all(&frame).await?;
        }
        wr.shutdown().await
    };
    let ended = tokio::select! {
        r = reading => r,
        w = writing => w,
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "turn tcp connection closed");
    }
    writers.lock().unwrap_or_else(|e| e.into_inner()).remove(&peer);
}

fn unsupported() -> webrtc_util::Error {
    webrtc_util::Error::Other("a TCP listener has no single remote".into())
}

#[async_trait]
impl Conn for TcpClients {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(unsupported())
    }

    async fn recv(&self, _buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Err(unsupported())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let mut inbound = self.inbound.lock().await;
        loop {
            let Some((frame, from)) = inbound.recv().await else {
                return Err(webrtc_util::Error::Other("turn tcp listener stopped".into()));
            };
            // The server reads into a buffer of one MTU, as from a UDP socket, where a larger
            // datagram would have been cut short; a frame that does not fit is dropped.
            if frame.len() > buf.len() {
                tracing::debug!(%from, bytes = frame.len(), "turn tcp frame too large; dropped");
                continue;
            }
            buf[..frame.len()].copy_from_slice(&frame);
            return Ok((frame.len(), from));
        }
    }

    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(unsupported())
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        let writer = self.writers.lock().unwrap_or_else(|e| e.into_inner()).get(&target).cloned();
        let Some(writer) = writer else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "turn tcp client gone").into());
        };
        match writer.try_send(stream_frame(buf)) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => Ok(buf.len()),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err(io::Error::new(io::ErrorKind::NotConnected, "turn tcp client gone").into())
            }
        }
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    /// Does nothing: the listener is shared by all its allocations and stops with the server.
    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_cut_by_their_lengths_and_channel_data_unpadded() {
        // A STUN header with 4 bytes of attributes, then ChannelData of 5 bytes padded to 8.
        let mut bytes = vec![0x00, 0x01, 0x00, 0x04];
        bytes.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        bytes.extend_from_slice(&[7; 12]);
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        bytes.extend_from_slice(&[0x40, 0x00, 0x00, 0x05, 9, 9, 9, 9, 9, 0, 0, 0]);
        let mut r = &bytes[..];
        assert_eq!(read_frame(&mut r).await.expect("stun").len(), 24);
        assert_eq!(read_frame(&mut r).await.expect("channel data"), vec![0x40, 0x00, 0x00, 0x05, 9, 9, 9, 9, 9]);
        assert!(r.is_empty());
        assert!(read_frame(&mut r).await.is_err(), "end of stream");
    }

    #[tokio::test]
    async fn garbage_and_truncated_frames_are_errors() {
        let mut r = &[0xff, 0x00, 0x00, 0x00][..];
        assert_eq!(read_frame(&mut r).await.expect_err("garbage").kind(), io::ErrorKind::InvalidData);
        // A STUN length that is not a multiple of four.
        let mut r = &[0x00, 0x01, 0x00, 0x03][..];
        assert_eq!(read_frame(&mut r).await.expect_err("bad length").kind(), io::ErrorKind::InvalidData);
        let mut r = &[0x40, 0x00, 0x00, 0x08, 1, 2][..];
        assert_eq!(read_frame(&mut r).await.expect_err("short").kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn channel_data_is_padded_on_streams() {
        assert_eq!(stream_frame(&[0x40, 0x01, 0x00, 0x01, 5]), vec![0x40, 0x01, 0x00, 0x01, 5, 0, 0, 0]);
        assert_eq!(stream_frame(&[0x40, 0x01, 0x00, 0x00]).len(), 4);
    }
}
