//! The signaling protocol end to end: seed 002's flow, then control, overlay, chat and call
//! status, with late joiners seeing the room as it is.

use crate::support::TestServer;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_flow_with_two_clients() {
    let mut s = TestServer::start().await;
    let (mut alice, joined_a) = s.joined("alice", "seed-002").await;
    assert_eq!(joined_a["roomId"], "seed-002");
    assert_eq!(joined_a["peers"], json!([]));
    assert_eq!(joined_a["callStatus"], "waiting");
    assert!(joined_a["iceServers"].is_array());

    let (mut bob, joined_b) = s.joined("bob", "seed-002").await;
    assert_eq!(joined_b["peers"], json!([alice.peer_id]));
    assert_eq!(joined_b["callStatus"], "active");
    let participants = joined_b["participants"].as_array().expect("participants");
    assert_eq!(participants.len(), 2);
    assert_eq!(participants[0]["userId"], "alice");

    let pj = alice.recv_type("peer_joined").await;
    assert_eq!(pj["peerId"], bob.peer_id.as_str());
    assert_eq!(pj["participant"]["userId"], "bob");
    let status = alice.recv_type("call_status").await;
    assert_eq!(status["status"], "active");

    alice.send(json!({"type": "offer", "peerId": bob.peer_id, "sdp": "v=0 offer"})).await;
    let offer = bob.recv_type("offer").await;
    assert_eq!(offer["peerId"], alice.peer_id.as_str(), "peerId is rewritten to the sender");
    assert_eq!(offer["sdp"], "v=0 offer");

    bob.send(json!({"type": "answer", "peerId": alice.peer_id, "sdp": "v=0 answer"})).await;
    let answer = alice.recv_type("answer").await;
    assert_eq!(answer["peerId"], bob.peer_id.as_str());
    assert_eq!(answer["sdp"], "v=0 answer");

    let cand =
        json!({"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0});
    alice.send(json!({"type": "ice-candidate", "peerId": bob.peer_id, "candidate": cand})).await;
    let got = bob.recv_type("ice-candidate").await;
    assert_eq!(got["peerId"], alice.peer_id.as_str());
    assert_eq!(got["candidate"], cand);
    bob.send(json!({"type": "ice-candidate", "peerId": alice.peer_id, "candidate": cand})).await;
    assert_eq!(alice.recv_type("ice-candidate").await["peerId"], bob.peer_id.as_str());

    bob.send(json!({"type": "leave"})).await;
    assert_eq!(bob.recv_type("left").await["roomId"], "seed-002");
    let left = alice.recv_type("peer_left").await;
    assert_eq!(left["peerId"], bob.peer_id.as_str());
    assert_eq!(left["reason"], "left");

    // Bob's connection stays usable after leaving.
    bob.send(json!({"type": "ping", "id": 1})).await;
    assert_eq!(bob.recv_type("pong").await["ref"], 1);

    let events: Vec<String> =
        s.app().store.events("seed-002").await.expect("events").into_iter().map(|e| e.kind).collect();
    assert_eq!(events, ["session.created", "participant.joined", "participant.joined", "participant.left"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_overlay_and_chat_reach_everyone_and_late_joiners() {
    let mut s = TestServer::start().await;
    let (mut alice, _) = s.joined("alice", "media-room").await;
    let (mut bob, _) = s.joined("bob", "media-room").await;

    alice.send(json!({"type": "control", "action": "mute_audio"})).await;
    for c in [&mut alice, &mut bob] {
        let m = c.recv_type("control").await;
        assert_eq!(m["action"], "mute_audio");
        assert_eq!(m["media"]["audioMuted"], true);
    }
    alice.send(json!({"type": "overlay", "overlay": {"kind": "pointer", "x": 0.25, "y": 0.75}})).await;
    let o = bob.recv_type("overlay").await;
    assert_eq!(o["peerId"], alice.peer_id.as_str());
    assert_eq!(o["overlay"]["kind"], "pointer");

    bob.send(json!({"type": "chat", "text": "hello there", "id": "c1"})).await;
    for c in [&mut alice, &mut bob] {
        let m = c.recv_type("chat").await;
        assert_eq!(m["message"]["text"], "hello there");
        assert_eq!(m["message"]["userId"], "bob");
        assert_eq!(m["message"]["seq"], 1);
    }

    let (_carol, joined) = s.joined("carol", "media-room").await;
    let alice_info = joined["participants"]
        .as_array()
        .expect("list")
        .iter()
        .find(|p| p["userId"] == "alice")
        .cloned()
        .expect("alice");
    assert_eq!(alice_info["media"]["audioMuted"], true, "late joiner sees media state");
    assert_eq!(joined["overlays"][0]["peerId"], alice.peer_id.as_str());
    assert_eq!(joined["chat"][0]["text"], "hello there");
    assert_eq!(joined["peers"].as_array().expect("peers").len(), 2);

    // Ending the call reaches everyone and is recorded.
    alice.send(json!({"type": "end_call"})).await;
    assert_eq!(bob.recv_type("call_status").await["status"], "ended");
    // Leaving an ended call does not start a new one.
    bob.send(json!({"type": "leave"})).await;
    assert_eq!(alice.recv_type("peer_left").await["peerId"], bob.peer_id.as_str());
    alice.send(json!({"type": "ping", "id": "after"})).await;
    let next = alice.recv().await;
    assert_eq!(next["type"], "pong", "no call_status after a leave from an ended call: {next}");
    let calls = s.app().store.calls("media-room").await.expect("calls");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].2.as_deref(), Some("ended_by_participant"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_tells_clients_and_closes_calls() {
    let mut s = TestServer::start().await;
    let (mut alice, _) = s.joined("alice", "shutdown-room").await;
    let (_bob, _) = s.joined("bob", "shutdown-room").await;
    s.stop().await;
    let close = alice.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1001);
    assert_eq!(close.reason.as_str(), "server shutting down");
    // The stopped node left its call ended and both sessions closed in the store.
    let url = format!("sqlite://{}?mode=rw", s.dir.path().join("switchboard.db").display());
    let store = switchboard::store::Store::open(&url, 1, "observer").await.expect("store");
    let calls = store.calls("shutdown-room").await.expect("calls");
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].1.as_str(), calls[0].2.as_deref()), ("ended", Some("server_shutdown")));
    let left =
        store.events("shutdown-room").await.expect("events").iter().filter(|e| e.kind == "participant.left").count();
    assert_eq!(left, 2);
    store.close().await;
}
