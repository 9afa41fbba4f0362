//! A lean WebSocket client for load generation: the upgrade by hand, masked text frames built
//! in one buffer, server frames parsed from a reusable read buffer. A generator that opens
//! 50,000 connections cannot afford a full client's buffers per socket, and a paced sender
//! must write from a plain thread (see `relay`), so the frames are done here.

use anyhow::{Context, Result, bail};
use std::net::{Ipv4Addr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

/// Appends a client text frame carrying `payload` to `out`. Client frames must be masked
/// (RFC 6455 §5.3); the all-zero key is a valid key and leaves the payload as is, so the
/// generator spends nothing on masking while the server still unmasks every byte.
pub fn text_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x81);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
}

/// A client text frame, alone.
pub fn frame(payload: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    text_frame(&mut out, payload.as_bytes());
    out
}

/// Opens a TCP connection from `source` (any 127.0.0.0/8 address works on loopback, which
/// spreads connections over more than one address's ephemeral ports) and upgrades it.
pub async fn connect(server: SocketAddr, source: Ipv4Addr, path: &str) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0))).with_context(|| format!("binding {source}"))?;
    let mut stream = socket.connect(server).await.with_context(|| format!("connecting to {server}"))?;
    stream.set_nodelay(true)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    // The server says nothing after its 101 until the client speaks, so reading byte by byte
    // up to the blank line leaves no frame bytes behind.
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            bail!("the server closed during the upgrade");
        }
        head.push(byte[0]);
        if head.len() > 8192 {
            bail!("upgrade answer too long");
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        bail!("upgrade refused: {}", String::from_utf8_lossy(&head).lines().next().unwrap_or_default());
    }
    Ok(stream)
}

/// What a server frame was.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A text frame (its payload is in the reader's buffer until the next read).
    Text,
    /// The server closed, with its close code when it sent one.
    Closed(Option<u16>),
}

/// Reads server frames (unmasked, never fragmented by Switchboard) into one reused buffer.
pub struct FrameReader {
    read: OwnedReadHalf,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    frame: std::ops::Range<usize>,
}

impl FrameReader {
    /// A reader over the read half of an upgraded connection.
    pub fn new(read: OwnedReadHalf) -> FrameReader {
        FrameReader { read, buf: vec![0; 4096], start: 0, end: 0, frame: 0..0 }
    }

    /// The payload of the last text frame read.
    pub fn text(&self) -> &[u8] {
        &self.buf[self.frame.clone()]
    }

    /// Reads the next data frame (pings and pongs are skipped).
    pub async fn next(&mut self) -> Result<Incoming> {
        loop {
            if let Some((opcode, header, len)) = self.parse_header() {
                if self.end - self.start >= header + len {
                    let payload = self.start + header..self.start + header + len;
                    self.start += header + len;
                    match opcode {
                        0x1 => {
                            self.frame = payload;
                            return Ok(Incoming::Text);
                        }
                        0x8 => {
                            let code = (len >= 2)
                                .then(|| u16::from_be_bytes([self.buf[payload.start], self.buf[payload.start + 1]]));
                            return Ok(Incoming::Closed(code));
                        }
                        _ => continue,
                    }
                }
                if header + len > self.buf.len() {
                    self.buf.resize(header + len, 0);
                }
            }
            if !self.fill().await? {
                return Ok(Incoming::Closed(None));
            }
        }
    }

    fn parse_header(&self) -> Option<(u8, usize, usize)> {
        let b = &self.buf[self.start..self.end];
        if b.len() < 2 {
            return None;
        }
        let opcode = b[0] & 0x0f;
        let (header, len) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (4, u16::from_be_bytes([b[2], b[3]]) as usize),
            127 if b.len() >= 10 => (10, u64::from_be_bytes(b[2..10].try_into().ok()?) as usize),
            126 | 127 => return None,
            n => (2, n as usize),
        };
        Some((opcode, header, len))
    }
}

impl FrameReader {
    /// Reads more bytes; false at the end of the stream.
    async fn fill(&mut self) -> Result<bool> {
        // Keep what is unread at the front, then read after it.
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let grown = self.buf.len() * 2;
            self.buf.resize(grown, 0);
        }
        let n = self.read.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n > 0)
    }
}

/// An upgraded connection, split into a frame reader and a write half.
pub struct Conn {
    /// Server frames.
    pub reader: FrameReader,
    /// Client frames go here.
    pub writer: OwnedWriteHalf,
}

impl Conn {
    /// Splits an upgraded stream.
    pub fn new(stream: TcpStream) -> Conn {
        let (read, writer) = stream.into_split();
        Conn { reader: FrameReader::new(read), writer }
    }

    /// Turns the connection into a reader and a plain blocking-style writer that a pacing
    /// thread can use without waking the runtime. The writer shares the socket, which stays
    /// non-blocking, so it is written with [`write_all_retrying`]. The returned write half
    /// must be kept: dropping it would shut the socket's sending side.
    pub fn into_paced(self) -> Result<(FrameReader, OwnedWriteHalf, std::net::TcpStream)> {
        let Conn { mut reader, writer } = self;
        let stream = reader.read.reunite(writer).map_err(|_| anyhow::anyhow!("halves of two sockets"))?;
        let std_stream = stream.into_std()?;
        let paced = std_stream.try_clone()?;
        let (read, keep) = TcpStream::from_std(std_stream)?.into_split();
        reader.read = read;
        Ok((reader, keep, paced))
    }

    /// Sends one text frame.
    pub async fn send(&mut self, payload: &str) -> Result<()> {
        self.writer.write_all(&frame(payload)).await?;
        Ok(())
    }

    /// Reads and discards frames until the connection closes: an idle client that keeps its
    /// socket drained.
    pub async fn drain(mut self) {
        while let Ok(Incoming::Text) = self.reader.next().await {}
    }

    /// The next frame whose type is one of `kinds` (an `error` fails).
    pub async fn expect_any(&mut self, kinds: &[&str]) -> Result<serde_json::Value> {
        loop {
            match self.reader.next().await? {
                Incoming::Closed(code) => bail!("closed ({code:?}) while waiting for {kinds:?}"),
                Incoming::Text => {
                    let v: serde_json::Value = serde_json::from_slice(self.reader.text())?;
                    if v["type"].as_str().is_some_and(|t| kinds.contains(&t)) {
                        return Ok(v);
                    }
                    if v["type"] == "error" {
                        bail!("error while waiting for {kinds:?}: {v}");
                    }
                }
            }
        }
    }

    /// Reads text frames until one whose `type` is `kind`, returning it parsed; an `error`
    /// frame or a close before it is an error.
    pub async fn expect(&mut self, kind: &str) -> Result<serde_json::Value> {
        loop {
            match self.reader.next().await? {
                Incoming::Closed(code) => bail!("closed ({code:?}) while waiting for {kind}"),
                Incoming::Text => {
                    let v: serde_json::Value = serde_json::from_slice(self.reader.text())?;
                    if v["type"] == kind {
                        return Ok(v);
                    }
                    if v["type"] == "error" {
                        bail!("error while waiting for {kind}: {v}");
                    }
                }
            }
        }
    }
}

/// Finds the unsigned number that follows `key` in `text` (the generator's sequence numbers
/// inside relayed payloads), without parsing the JSON.
pub fn number_after(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&text[at..at + digits]).ok()?.parse().ok()
}

/// Writes all of `bytes` to a non-blocking socket from a plain thread, waiting briefly while
/// the socket's buffer is full. Returns how often it had to wait.
pub fn write_all_retrying(socket: &mut std::net::TcpStream, mut bytes: &[u8]) -> std::io::Result<u32> {
    use std::io::Write;
    let mut waits = 0;
    while !bytes.is_empty() {
        match socket.write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                waits += 1;
                std::thread::sleep(std::time::Duration::from_micros(20));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(waits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_length_and_a_mask() {
        assert_eq!(frame("hi"), [0x81, 0x82, 0, 0, 0, 0, b'h', b'i']);
        let long = "x".repeat(300);
        let f = frame(&long);
        assert_eq!(&f[..4], &[0x81, 0x80 | 126, 1, 44]);
        assert_eq!(f.len(), 4 + 4 + 300);
    }

    #[test]
    fn finds_numbers_inside_payloads() {
        assert_eq!(number_after(br#"{"seq":4,"sdp":"123;a=x"}"#, br#""sdp":""#), Some(123));
        assert_eq!(number_after(br#"{"seq":4}"#, br#""sdp":""#), None);
    }
}
