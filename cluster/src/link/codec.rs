//! The records of a node link, and their encoding.
//!
//! A link carries one stream of length-prefixed records: `u32` (little-endian) length of the
//! body, then the body, whose first byte is its tag. Ids (rooms, connections, peers) cross as
//! `u32` names defined once per connection (`NAME` records, numbered from 0 in order) and
//! reset together (`RESET`), so the hot records hold no id text. Payloads that the receiver
//! only forwards (a frame's JSON body, an offer's SDP, a candidate) are the sender's bytes as
//! they are: nothing is re-escaped or re-encoded on the way.
//!
//! Everything here is untrusted input on the receiving side: a record longer than
//! [`MAX_RECORD`], an unknown tag, a name that was never defined, text that is not UTF-8 or a
//! rare record whose bincode does not decode is a [`LinkError`], and the reader closes that
//! link (only that one).

use crate::routing::{EdgeMsg, RoomCmd};
use crate::wire;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use switchboard_actors::ids::{ConnId, PeerId, RoomId};
use switchboard_actors::protocol::{FrameKind, RawJson, RelayKind};
use switchboard_actors::room::{RelayPayload, RoomMsg};
use thiserror::Error;

/// The longest record a peer may send: far above any frame a client may send.
pub const MAX_RECORD: usize = 4 * 1024 * 1024;
/// The most names one connection may define before the sender resets them.
pub const MAX_NAMES: usize = 65_536;
/// The longest id text (ids are far shorter: the edge bounds them).
const MAX_NAME: usize = 1024;

const NAME: u8 = 1;
const RESET: u8 = 2;
const RELAY: u8 = 3;
const ROOM: u8 = 4;
/// A numbered frame with its instance's epoch (tag 5 carried one without; it is refused now).
const NUMBERED: u8 = 10;
const DELIVER: u8 = 6;
const RECEIPT: u8 = 7;
const EDGE: u8 = 8;
const EDGE_GONE: u8 = 9;

/// Why a link's input was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LinkError {
    /// The length prefix is past [`MAX_RECORD`] (or zero).
    #[error("record length {0} out of bounds")]
    Length(usize),
    /// The record ended before its fields did.
    #[error("truncated record")]
    Truncated,
    /// A tag this build does not know.
    #[error("unknown record tag {0}")]
    Tag(u8),
    /// A name used before it was defined, or defined out of order.
    #[error("undefined or out-of-order name {0}")]
    Name(u32),
    /// Text that is not UTF-8, or a JSON value that does not parse.
    #[error("malformed payload: {0}")]
    Payload(String),
}

/// A record, decoded.
pub enum Record {
    /// A command for a room this node serves, from a connection of the sending node.
    ToRoom {
        /// The room.
        room: RoomId,
        /// The sending connection.
        conn: ConnId,
        /// The command.
        msg: RoomMsg,
    },
    /// Something for this node's connections.
    ToEdge(EdgeMsg),
    /// The sending node's connections are all gone (it drains).
    EdgeGone,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Record::ToRoom { room, conn, .. } => write!(f, "ToRoom({room:?}, {conn:?})"),
            Record::ToEdge(msg) => write!(f, "ToEdge({msg:?})"),
            Record::EdgeGone => f.write_str("EdgeGone"),
        }
    }
}

/// The sender's half of the name table, kept with the pending bytes it refers to.
#[derive(Default)]
pub struct Names {
    ids: HashMap<Arc<str>, u32>,
}

impl Names {
    /// Forgets every name (a new connection starts with none).
    pub fn clear(&mut self) {
        self.ids.clear();
    }

    /// How many names are defined.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Writes records into a pending buffer.
pub struct Encoder<'a> {
    buf: &'a mut Vec<u8>,
    names: &'a mut Names,
}

impl<'a> Encoder<'a> {
    /// An encoder appending to `buf`, with the names `buf`'s connection has been told.
    pub fn new(buf: &'a mut Vec<u8>, names: &'a mut Names) -> Encoder<'a> {
        Encoder { buf, names }
    }

    fn name(&mut self, text: &Arc<str>) -> u32 {
        if let Some(id) = self.names.ids.get(&**text) {
            return *id;
        }
        if self.names.ids.len() >= MAX_NAMES - 1 {
            self.names.ids.clear();
            let at = self.open(RESET);
            self.close(at);
        }
        let id = self.names.ids.len() as u32;
        self.names.ids.insert(text.clone(), id);
        let at = self.open(NAME);
        self.buf.extend_from_slice(&id.to_le_bytes());
        self.buf.extend_from_slice(text.as_bytes());
        self.close(at);
        id
    }

    fn open(&mut self, tag: u8) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0, 0, 0, tag]);
        at
    }

    fn close(&mut self, at: usize) {
        let len = (self.buf.len() - at - 4) as u32;
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A command for the room `room` from connection `conn`. False for a message that never
    /// crosses nodes (nothing is written).
    pub fn to_room(&mut self, room: &RoomId, conn: &ConnId, msg: &RoomMsg) -> bool {
        if let RoomMsg::Relay { from, to, kind, payload, reference, again, .. } = msg {
            let ids =
                [self.name(room.as_arc()), self.name(conn.as_arc()), self.name(from.as_arc()), self.name(to.as_arc())];
            let at = self.open(RELAY);
            for id in ids {
                self.u32(id);
            }
            let kind = match kind {
                RelayKind::Offer => 0u8,
                RelayKind::Answer => 1,
                RelayKind::IceCandidate => 2,
            };
            let flags = u8::from(*again) | (u8::from(reference.is_some()) << 1);
            self.buf.extend_from_slice(&[kind, flags]);
            if let Some(reference) = reference {
                let text = reference.to_string();
                self.u32(text.len() as u32);
                self.buf.extend_from_slice(text.as_bytes());
            }
            // The SDP or candidate as its sender wrote it (JSON text).
            let (RelayPayload::Sdp(raw) | RelayPayload::Candidate(raw)) = payload;
            self.buf.extend_from_slice(raw.as_str().as_bytes());
            self.close(at);
            return true;
        }
        let Some(cmd) = RoomCmd::from_room_msg(msg) else { return false };
        let ids = [self.name(room.as_arc()), self.name(conn.as_arc())];
        let at = self.open(ROOM);
        for id in ids {
            self.u32(id);
        }
        let _ = bincode::serde::encode_into_std_write(&cmd, &mut *self.buf, bincode::config::standard());
        self.close(at);
        true
    }

    /// Something for the receiving node's connections.
    pub fn to_edge(&mut self, msg: &EdgeMsg) {
        match msg {
            EdgeMsg::Numbered(conn, seq, body, kind, epoch) => {
                let id = self.name(conn.as_arc());
                let at = self.open(NUMBERED);
                self.u32(id);
                self.buf.extend_from_slice(&seq.to_le_bytes());
                self.buf.extend_from_slice(&epoch.to_le_bytes());
                self.buf.push(kind.to_u8());
                self.buf.extend_from_slice(body.as_bytes());
                self.close(at);
            }
            EdgeMsg::Deliver(conn, body) => {
                let id = self.name(conn.as_arc());
                let at = self.open(DELIVER);
                self.u32(id);
                self.buf.extend_from_slice(body.as_bytes());
                self.close(at);
            }
            EdgeMsg::Receipt(conn, msg_id) => {
                let id = self.name(conn.as_arc());
                let at = self.open(RECEIPT);
                self.u32(id);
                self.buf.extend_from_slice(msg_id.as_bytes());
                self.close(at);
            }
            other => {
                let Some(rare) = Rare::from_msg(other) else { return };
                let at = self.open(EDGE);
                let _ = bincode::serde::encode_into_std_write(&rare, &mut *self.buf, bincode::config::standard());
                self.close(at);
            }
        }
    }

    /// Tells the receiver that this node's connections are all gone.
    pub fn edge_gone(&mut self) {
        let at = self.open(EDGE_GONE);
        self.close(at);
    }
}

/// The edge messages that are not on the hot path, in bincode.
#[derive(Serialize, Deserialize)]
enum Rare {
    Bounce(String, String, String, RoomCmd),
    Moved(String, String, String, i64),
    Paired(String, String, String),
    ToUser(String, String),
    Grants(String, String),
}

impl Rare {
    fn from_msg(msg: &EdgeMsg) -> Option<Rare> {
        Some(match msg {
            EdgeMsg::Bounce(conn, room, hint, cmd) => {
                Rare::Bounce(conn.to_string(), room.to_string(), hint.clone(), cmd.clone())
            }
            EdgeMsg::Moved(conn, room, node, epoch) => {
                Rare::Moved(conn.to_string(), room.to_string(), node.clone(), *epoch)
            }
            EdgeMsg::Paired(conn, lobby, room) => Rare::Paired(conn.to_string(), lobby.clone(), room.clone()),
            EdgeMsg::ToUser(user, body) => Rare::ToUser(user.clone(), body.clone()),
            EdgeMsg::Grants(conn, grants) => Rare::Grants(conn.to_string(), grants.clone()),
            EdgeMsg::Numbered(..) | EdgeMsg::Deliver(..) | EdgeMsg::Receipt(..) => return None,
        })
    }

    fn into_msg(self) -> EdgeMsg {
        match self {
            Rare::Bounce(conn, room, hint, cmd) => EdgeMsg::Bounce(ConnId::new(conn), RoomId::new(room), hint, cmd),
            Rare::Moved(conn, room, node, epoch) => EdgeMsg::Moved(ConnId::new(conn), RoomId::new(room), node, epoch),
            Rare::Paired(conn, lobby, room) => EdgeMsg::Paired(ConnId::new(conn), lobby, room),
            Rare::ToUser(user, body) => EdgeMsg::ToUser(user, body),
            Rare::Grants(conn, grants) => EdgeMsg::Grants(ConnId::new(conn), grants),
        }
    }
}

/// Splits the next whole record's body off the front of `buf`, if it holds one.
pub fn next_record(buf: &mut bytes::BytesMut) -> Result<Option<bytes::BytesMut>, LinkError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 || len > MAX_RECORD {
        return Err(LinkError::Length(len));
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    let mut record = buf.split_to(4 + len);
    let _ = record.split_to(4);
    Ok(Some(record))
}

/// The receiver's half of the name table: one per connection.
#[derive(Default)]
pub struct Decoder {
    names: Vec<Arc<str>>,
}

struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LinkError> {
        if self.0.len() < n {
            return Err(LinkError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, LinkError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, LinkError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, LinkError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

fn text(bytes: &[u8]) -> Result<&str, LinkError> {
    std::str::from_utf8(bytes).map_err(|e| LinkError::Payload(e.to_string()))
}

fn json(bytes: &[u8]) -> Result<serde_json::Value, LinkError> {
    serde_json::from_slice(bytes).map_err(|e| LinkError::Payload(e.to_string()))
}

/// A JSON value kept as text (checked, not decoded).
fn raw_json(bytes: &[u8]) -> Result<RawJson, LinkError> {
    RawJson::parse(text(bytes)?.to_owned()).map_err(|e| LinkError::Payload(e.to_string()))
}

/// An SDP: a JSON string kept as text.
fn raw_sdp(bytes: &[u8]) -> Result<RawJson, LinkError> {
    RawJson::parse_string(text(bytes)?.to_owned())
        .ok_or_else(|| LinkError::Payload("an SDP that is not a JSON string".into()))
}

impl Decoder {
    fn name(&self, f: &mut Fields<'_>) -> Result<Arc<str>, LinkError> {
        let id = f.u32()?;
        self.names.get(id as usize).cloned().ok_or(LinkError::Name(id))
    }

    /// Decodes one record's body. `None` for the records that only change the name table.
    pub fn decode(&mut self, body: &[u8]) -> Result<Option<Record>, LinkError> {
        let mut f = Fields(body);
        let tag = f.u8()?;
        Ok(Some(match tag {
            NAME => {
                let id = f.u32()?;
                let name = text(f.rest())?;
                if id as usize != self.names.len() || self.names.len() >= MAX_NAMES || name.len() > MAX_NAME {
                    return Err(LinkError::Name(id));
                }
                self.names.push(Arc::from(name));
                return Ok(None);
            }
            RESET => {
                self.names.clear();
                return Ok(None);
            }
            RELAY => {
                let room = RoomId::from(self.name(&mut f)?);
                let conn = ConnId::from(self.name(&mut f)?);
                let from = PeerId::from(self.name(&mut f)?);
                let to = PeerId::from(self.name(&mut f)?);
                let kind = f.u8()?;
                let flags = f.u8()?;
                let reference = match flags & 2 {
                    0 => None,
                    _ => {
                        let len = f.u32()? as usize;
                        Some(json(f.take(len)?)?)
                    }
                };
                let rest = f.rest();
                let (kind, payload) = match kind {
                    0 => (RelayKind::Offer, RelayPayload::Sdp(raw_sdp(rest)?)),
                    1 => (RelayKind::Answer, RelayPayload::Sdp(raw_sdp(rest)?)),
                    2 => (RelayKind::IceCandidate, RelayPayload::Candidate(raw_json(rest)?)),
                    other => return Err(LinkError::Payload(format!("relay kind {other}"))),
                };
                let msg = RoomMsg::Relay {
                    from,
                    to,
                    kind,
                    payload,
                    reference,
                    received_at: Instant::now(),
                    again: flags & 1 == 1,
                };
                Record::ToRoom { room, conn, msg }
            }
            ROOM => {
                let room = RoomId::from(self.name(&mut f)?);
                let conn = ConnId::from(self.name(&mut f)?);
                let cmd: RoomCmd = wire::decode(f.rest()).map_err(|e| LinkError::Payload(e.to_string()))?;
                let msg = cmd.into_room_msg().ok_or_else(|| LinkError::Payload("room command".into()))?;
                Record::ToRoom { room, conn, msg }
            }
            NUMBERED => {
                let conn = ConnId::from(self.name(&mut f)?);
                let seq = f.u64()?;
                let epoch = f.u64()? as i64;
                let kind = FrameKind::from_u8(f.u8()?);
                Record::ToEdge(EdgeMsg::Numbered(conn, seq, Arc::from(text(f.rest())?), kind, epoch))
            }
            DELIVER => {
                let conn = ConnId::from(self.name(&mut f)?);
                Record::ToEdge(EdgeMsg::Deliver(conn, Arc::from(text(f.rest())?)))
            }
            RECEIPT => {
                let conn = ConnId::from(self.name(&mut f)?);
                Record::ToEdge(EdgeMsg::Receipt(conn, text(f.rest())?.to_owned()))
            }
            EDGE => {
                let rare: Rare = wire::decode(f.rest()).map_err(|e| LinkError::Payload(e.to_string()))?;
                Record::ToEdge(rare.into_msg())
            }
            EDGE_GONE => Record::EdgeGone,
            other => return Err(LinkError::Tag(other)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Record>, LinkError> {
        let mut buf = BytesMut::from(bytes);
        let mut decoder = Decoder::default();
        let mut out = Vec::new();
        while let Some(body) = next_record(&mut buf)? {
            if let Some(r) = decoder.decode(&body)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    #[test]
    fn records_cross_with_their_ids_named_once() {
        let (mut buf, mut names) = (Vec::new(), Names::default());
        let room = RoomId::new("r1");
        let conn = ConnId::new("n1/c1");
        let offer = RoomMsg::Relay {
            from: PeerId::new("pa"),
            to: PeerId::new("pb"),
            kind: RelayKind::Offer,
            payload: RelayPayload::Sdp(RawJson::string("v=0\r\n\"quoted\"")),
            reference: Some(serde_json::json!(7)),
            received_at: Instant::now(),
            again: true,
        };
        let mut enc = Encoder::new(&mut buf, &mut names);
        assert!(enc.to_room(&room, &conn, &offer));
        let first = enc.buf.len();
        assert!(enc.to_room(&room, &conn, &offer));
        let second = enc.buf.len() - first;
        enc.to_edge(&EdgeMsg::Numbered(conn.clone(), 9, Arc::from("{\"seq\":9}"), FrameKind::Relayed, 41));
        enc.to_edge(&EdgeMsg::Moved(conn.clone(), room.clone(), "n3".into(), 42));
        enc.edge_gone();
        assert!(second < first, "the second record names nothing again ({second} vs {first} bytes)");
        let records = decode_all(&buf).expect("decodes");
        assert_eq!(records.len(), 5);
        match &records[1] {
            Record::ToRoom {
                room: r,
                conn: c,
                msg: RoomMsg::Relay { payload: RelayPayload::Sdp(s), reference, again, .. },
            } => {
                assert_eq!((r, c), (&room, &conn));
                assert_eq!(s.decoded_string().as_deref(), Some("v=0\r\n\"quoted\""));
                assert_eq!(reference, &Some(serde_json::json!(7)));
                assert!(*again);
            }
            _ => panic!("wrong record"),
        }
        assert!(
            matches!(&records[2], Record::ToEdge(EdgeMsg::Numbered(c, 9, b, FrameKind::Relayed, 41)) if c == &conn && &**b == "{\"seq\":9}")
        );
        assert!(matches!(&records[3], Record::ToEdge(EdgeMsg::Moved(_, r, n, 42)) if r == &room && n == "n3"));
        assert!(matches!(records[4], Record::EdgeGone));
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert_eq!(decode_all(&(MAX_RECORD as u32 + 1).to_le_bytes()).unwrap_err(), LinkError::Length(MAX_RECORD + 1));
        assert_eq!(decode_all(&[1, 0, 0, 0, 200]).unwrap_err(), LinkError::Tag(200));
        // A frame for a connection never named.
        let mut rec = vec![0, 0, 0, 0, DELIVER, 5, 0, 0, 0, b'{'];
        rec[0] = (rec.len() - 4) as u8;
        assert_eq!(decode_all(&rec).unwrap_err(), LinkError::Name(5));
        // A name out of order.
        let mut rec = vec![0, 0, 0, 0, NAME, 3, 0, 0, 0, b'x'];
        rec[0] = (rec.len() - 4) as u8;
        assert_eq!(decode_all(&rec).unwrap_err(), LinkError::Name(3));
        // A truncated relay, and bincode that does not decode.
        let mut rec = vec![0, 0, 0, 0, RELAY, 0];
        rec[0] = (rec.len() - 4) as u8;
        assert_eq!(decode_all(&rec).unwrap_err(), LinkError::Truncated);
        let mut rec = vec![0, 0, 0, 0, EDGE, 0xff, 0xff];
        rec[0] = (rec.len() - 4) as u8;
        assert!(matches!(decode_all(&rec).unwrap_err(), LinkError::Payload(_)));
        // A relay whose SDP is not a JSON string, and a candidate that is not JSON.
        for (kind, payload) in [(0u8, &b"17"[..]), (2, &b"{\"candidate\":"[..])] {
            let (mut buf, mut names) = (Vec::new(), Names::default());
            let offer = RoomMsg::Relay {
                from: PeerId::new("pa"),
                to: PeerId::new("pb"),
                kind: RelayKind::Offer,
                payload: RelayPayload::Sdp(RawJson::string("v=0")),
                reference: None,
                received_at: Instant::now(),
                again: false,
            };
            let (room, conn) = (RoomId::new("r1"), ConnId::new("n1/c1"));
            let mut enc = Encoder::new(&mut buf, &mut names);
            assert!(enc.to_room(&room, &conn, &offer));
            // A second record names nothing: it is the relay record alone, which ends with the
            // kind, the flags and the payload. Put others in their place.
            let at = enc.buf.len();
            assert!(enc.to_room(&room, &conn, &offer));
            let tail = 2 + br#""v=0""#.len();
            buf.truncate(buf.len() - tail);
            buf.extend_from_slice(&[kind, 0]);
            buf.extend_from_slice(payload);
            let len = (buf.len() - at - 4) as u32;
            buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
            assert!(matches!(decode_all(&buf).unwrap_err(), LinkError::Payload(_)), "kind {kind}");
        }
        // A partial record waits for more bytes.
        let mut buf = BytesMut::from(&[9u8, 0, 0, 0, EDGE_GONE][..]);
        assert_eq!(next_record(&mut buf), Ok(None));
    }

    #[test]
    fn names_are_reset_before_the_table_is_full() {
        let (mut buf, mut names) = (Vec::new(), Names::default());
        let mut enc = Encoder::new(&mut buf, &mut names);
        for i in 0..MAX_NAMES + 10 {
            enc.to_edge(&EdgeMsg::Receipt(ConnId::new(format!("n1/{i}")), "m".into()));
        }
        assert!(names.len() < MAX_NAMES);
        assert_eq!(decode_all(&buf).expect("decodes").len(), MAX_NAMES + 10);
    }
}
