//! Signaling protocol v1: the JSON messages clients send and receive (`docs/protocol.md`).
//!
//! Client messages are parsed in one pass into [`ClientMessage`]; only when that fails is the
//! frame looked at again to tell malformed JSON, an unknown type and a bad field apart.
//! Server messages are serialized once into a [`Frame`](crate::ports::Frame); the connection
//! that writes a frame adds its per-session `seq`.

mod client;
mod framing;
mod overlay;
mod raw_json;
mod server;

pub use client::*;
pub use framing::*;
pub use overlay::*;
pub use raw_json::RawJson;
pub use server::*;

use crate::call_status::CallStatus;
use crate::error::ErrorCode;
use crate::ids::{PeerId, RoomId, UserId};
use crate::media::{ControlAction, MediaState};
use crate::quality::{QualityLevel, StatsSample};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest chat message, in characters.
pub const MAX_CHAT_CHARS: usize = 2000;
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_may_name_what_the_client_received() {
        let env = parse_client(
            r#"{"type":"resume","sessionId":"s","resumeToken":"t","lastSeq":3,"received":[{"peerId":"p","msgId":7}]}"#,
        )
        .expect("resume");
        let ClientMessage::Resume { last_seq, received, .. } = env.message else { panic!("not a resume") };
        assert_eq!(last_seq, 3);
        assert_eq!(received, vec![ReceivedId { peer_id: "p".into(), msg_id: Value::from(7) }]);
        let too_many: Vec<Value> = (0..=MAX_RECEIVED).map(|i| serde_json::json!({"peerId": "p", "msgId": i})).collect();
        let text = serde_json::json!({"type": "resume", "sessionId": "s", "resumeToken": "t", "lastSeq": 3,
            "received": too_many, "id": 1})
        .to_string();
        let err = parse_client(&text).expect_err("too many");
        assert_eq!((err.code, err.reference), (ErrorCode::InvalidMessage, Some(Value::from(1))));
    }

    #[test]
    fn parses_seed_002_messages() {
        let env = parse_client(r#"{"type":"join","roomId":"r1"}"#).expect("join");
        assert!(matches!(env.message, ClientMessage::Join { ref room_id, .. } if room_id == "r1"));
        let env = parse_client(r#"{"type":"offer","peerId":"p","sdp":"v=0","id":7}"#).expect("offer");
        assert_eq!(env.id, Some(Value::from(7)));
        let env = parse_client(r#"{"type":"ice-candidate","peerId":"p","candidate":{"candidate":"c","sdpMid":"0"}}"#);
        assert!(matches!(env.expect("candidate").message, ClientMessage::IceCandidate { .. }));
    }

    #[test]
    fn classifies_bad_input() {
        assert_eq!(parse_client("{not json").unwrap_err().code, ErrorCode::BadJson);
        assert_eq!(parse_client(r#"{"type":"fly","id":1}"#).unwrap_err().code, ErrorCode::UnknownType);
        let e = parse_client(r#"{"type":"offer","peerId":"p","id":"x"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidMessage);
        assert_eq!(e.reference, Some(Value::from("x")));
        assert!(e.message.contains("sdp"), "{}", e.message);
        let e = parse_client(r#"{"type":"answer","peerId":"p","sdp":{"v":0},"id":2}"#).unwrap_err();
        assert_eq!((e.code, e.reference), (ErrorCode::InvalidMessage, Some(Value::from(2))));
        assert!(e.message.contains("`sdp` must be a string"), "{}", e.message);
        assert_eq!(parse_client("[1]").unwrap_err().code, ErrorCode::InvalidMessage);
        assert_eq!(parse_client(r#"{"roomId":"r"}"#).unwrap_err().code, ErrorCode::UnknownType);
    }

    #[test]
    fn overlays_are_validated() {
        assert!(Overlay::Pointer { x: 0.5, y: 0.5, color: None }.validate().is_ok());
        assert!(Overlay::Pointer { x: 1.5, y: 0.5, color: None }.validate().is_err());
        assert!(Overlay::Measure { points: vec![], label: None }.validate().is_err());
        let many = vec![Point { x: 0.1, y: 0.1 }; MAX_OVERLAY_POINTS + 1];
        assert!(Overlay::Measure { points: many, label: None }.validate().is_err());
        let e = parse_client(r#"{"type":"overlay","overlay":{"kind":"laser"}}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidMessage);
    }

    #[test]
    fn sdp_and_candidate_are_relayed_as_the_sender_wrote_them() {
        let text = r#"{"type":"offer","peerId":"p","sdp":"v=0\r\na=x:\u0041\"q\""}"#;
        let ClientMessage::Offer { sdp, .. } = parse_client(text).expect("offer").message else { panic!("an offer") };
        let peer = PeerId::new("a");
        let body = ServerMessage::Offer { peer_id: &peer, msg_id: None, sdp: &sdp }.to_body();
        assert_eq!(&*body, r#"{"type":"offer","peerId":"a","sdp":"v=0\r\na=x:\u0041\"q\""}"#);
        let text = r#"{"type":"ice-candidate","peerId":"p","candidate":{ "candidate" : "c", "sdpMid":"0" }}"#;
        let ClientMessage::IceCandidate { candidate, .. } = parse_client(text).expect("candidate").message else {
            panic!("a candidate")
        };
        let body = ServerMessage::IceCandidate { peer_id: &peer, msg_id: None, candidate: &candidate }.to_body();
        assert_eq!(&*body, r#"{"type":"ice-candidate","peerId":"a","candidate":{ "candidate" : "c", "sdpMid":"0" }}"#);
    }

    #[test]
    fn server_messages_have_the_seed_002_shape() {
        let peer = PeerId::new("a");
        let body = ServerMessage::Offer { peer_id: &peer, msg_id: None, sdp: &RawJson::string("v=0") }.to_body();
        assert_eq!(&*body, r#"{"type":"offer","peerId":"a","sdp":"v=0"}"#);
    }
}
