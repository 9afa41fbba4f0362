//! Session resume: a client whose connection dropped takes its session back on a new
//! connection, gets what it missed in order with the original `seq`, and its peers are told to
//! restart ICE. After the grace period the session is gone and a fresh join works.

use crate::support::{Client, TestServer};
use serde_json::{Value, json};

/// Drops the client's socket without a close handshake (a lost network); returns its session
/// and the last `seq` it received.
pub(crate) fn drop_connection(c: Client) -> (String, u64) {
    let Client { ws, peer_id, last_seq } = c;
    drop(ws);
    (peer_id, last_seq)
}

/// Joins `room` as `user` keeping what a resume needs: the client, its token and the session's
/// resume token.
async fn join_resumable(s: &TestServer, user: &str, room: &str) -> (Client, String, String) {
    let token = s.token(json!({"userId": user})).await;
    let mut c = Client::connect(s.addr, &token).await;
    c.send(json!({"type": "join", "roomId": room})).await;
    let joined = c.recv_type("joined").await;
    c.peer_id = joined["peerId"].as_str().expect("peer").to_owned();
    let resume_token = joined["resumeToken"].as_str().expect("resumeToken").to_owned();
    (c, token, resume_token)
}

/// Sends `resume` on a new connection; returns the client and the first frame it got.
pub(crate) async fn resume(
    addr: std::net::SocketAddr,
    token: &str,
    session: &str,
    resume_token: &str,
    last_seq: u64,
) -> (Client, Value) {
    let mut c = Client::connect(addr, token).await;
    c.send(json!({"type": "resume", "sessionId": session, "resumeToken": resume_token, "lastSeq": last_seq})).await;
    // `resumed` carries the client's lastSeq; the replay continues from there.
    c.last_seq = last_seq.saturating_sub(1);
    let first = c.recv().await;
    (c, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_client_resumes_and_gets_what_it_missed() {
    let mut s = TestServer::start().await;
    let (mut alice, _) = s.joined("alice", "resume-room").await;
    let bob_token = s.token(json!({"userId": "bob"})).await;
    let mut bob = Client::connect(s.addr, &bob_token).await;
    bob.send(json!({"type": "join", "roomId": "resume-room"})).await;
    let joined = bob.recv_type("joined").await;
    bob.peer_id = joined["peerId"].as_str().expect("peer").to_owned();
    let resume_token = joined["resumeToken"].as_str().expect("resumeToken").to_owned();
    assert_eq!(joined["sessionId"], bob.peer_id.as_str());
    alice.recv_type("peer_joined").await;

    let (bob_id, last_seq) = drop_connection(bob);
    assert_eq!(alice.recv_type("peer_disconnected").await["peerId"], bob_id.as_str());
    // Bob misses these.
    alice.send(json!({"type": "offer", "peerId": bob_id, "sdp": "missed-offer"})).await;
    alice.send(json!({"type": "chat", "text": "missed chat"})).await;
    alice.recv_type("chat").await;

    let (mut bob, resumed) = resume(s.addr, &bob_token, &bob_id, &resume_token, last_seq).await;
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    assert_eq!(resumed["seq"], last_seq);
    assert_eq!(resumed["replayed"], 2);
    let offer = bob.recv().await;
    assert_eq!((offer["type"].as_str(), offer["sdp"].as_str()), (Some("offer"), Some("missed-offer")));
    assert_eq!(offer["seq"], last_seq + 1, "original numbering");
    let chat = bob.recv().await;
    assert_eq!(chat["message"]["text"], "missed chat");
    let back = alice.recv_type("peer_resumed").await;
    assert_eq!((back["peerId"].as_str(), back["iceRestart"].as_bool()), (Some(bob_id.as_str()), Some(true)));

    // The session goes on: same peer id, both ways.
    alice.send(json!({"type": "offer", "peerId": bob_id, "sdp": "after-resume"})).await;
    assert_eq!(bob.recv_type("offer").await["sdp"], "after-resume");
    bob.send(json!({"type": "answer", "peerId": alice.peer_id, "sdp": "answer"})).await;
    assert_eq!(alice.recv_type("answer").await["sdp"], "answer");

    // Another user cannot take the session, nor a wrong token.
    let eve = s.token(json!({"userId": "eve"})).await;
    let (_, failed) = resume(s.addr, &eve, &bob_id, &resume_token, 0).await;
    assert_eq!((failed["type"].as_str(), failed["reason"].as_str()), (Some("resume_failed"), Some("invalid_token")));
    let (_, failed) = resume(s.addr, &bob_token, &bob_id, "not-the-token", 0).await;
    assert_eq!(failed["reason"], "invalid_token");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_grace_period_resume_fails_and_a_fresh_join_works() {
    let mut s = TestServer::start_with(|c| c.rooms.resume_grace = std::time::Duration::from_millis(300)).await;
    let (mut alice, _) = s.joined("alice", "grace-room").await;
    let bob_token = s.token(json!({"userId": "bob"})).await;
    let mut bob = Client::connect(s.addr, &bob_token).await;
    bob.send(json!({"type": "join", "roomId": "grace-room"})).await;
    let joined = bob.recv_type("joined").await;
    let (bob_id, resume_token) = (
        joined["peerId"].as_str().expect("peer").to_owned(),
        joined["resumeToken"].as_str().expect("token").to_owned(),
    );
    bob.peer_id = bob_id.clone();
    let (_, last_seq) = drop_connection(bob);
    alice.recv_type("peer_disconnected").await;
    let left = alice.recv_type("peer_left").await;
    assert_eq!((left["peerId"].as_str(), left["reason"].as_str()), (Some(bob_id.as_str()), Some("disconnected")));

    let (mut bob, failed) = resume(s.addr, &bob_token, &bob_id, &resume_token, last_seq).await;
    assert_eq!(
        (failed["type"].as_str(), failed["reason"].as_str()),
        (Some("resume_failed"), Some("expired")),
        "{failed}"
    );
    bob.send(json!({"type": "join", "roomId": "grace-room"})).await;
    let fresh = bob.recv_type("joined").await;
    assert_ne!(fresh["peerId"], bob_id.as_str(), "a new session");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_are_delivered_once_even_when_resent() {
    let mut s = TestServer::start().await;
    let alice_token = s.token(json!({"userId": "alice"})).await;
    let mut alice = Client::connect(s.addr, &alice_token).await;
    alice.send(json!({"type": "join", "roomId": "ack-room"})).await;
    let joined = alice.recv_type("joined").await;
    alice.peer_id = joined["peerId"].as_str().expect("peer").to_owned();
    let alice_resume = joined["resumeToken"].as_str().expect("token").to_owned();
    let (mut bob, _) = s.joined("bob", "ack-room").await;
    alice.recv_type("peer_joined").await;

    alice.send(json!({"type": "offer", "peerId": bob.peer_id, "sdp": "first", "id": "o1"})).await;
    assert_eq!(alice.recv_type("ack").await["ref"], "o1");
    assert_eq!(bob.recv_type("offer").await["sdp"], "first");
    // The same id again (a client unsure it arrived): acknowledged, not delivered twice.
    alice.send(json!({"type": "offer", "peerId": bob.peer_id, "sdp": "first", "id": "o1"})).await;
    assert_eq!(alice.recv_type("ack").await["ref"], "o1");
    alice.send(json!({"type": "offer", "peerId": bob.peer_id, "sdp": "second", "id": "o2"})).await;
    assert_eq!(alice.recv_type("ack").await["ref"], "o2");
    assert_eq!(bob.recv_type("offer").await["sdp"], "second", "no duplicate in between");
    // A refused message gets its error and no ack.
    alice.send(json!({"type": "offer", "peerId": "nobody", "sdp": "x", "id": "o3"})).await;
    assert_eq!(alice.recv().await["code"], "peer_not_found");
    alice.send(json!({"type": "ping", "id": "p"})).await;
    assert_eq!(alice.recv().await["type"], "pong", "no ack for a refused message");

    // Alice drops right after sending; she resumes and sends it again without knowing.
    alice.send(json!({"type": "chat", "text": "once", "id": "c1"})).await;
    assert_eq!(bob.recv_type("chat").await["message"]["text"], "once");
    let (alice_id, last_seq) = drop_connection(alice);
    let (mut alice, resumed) = resume(s.addr, &alice_token, &alice_id, &alice_resume, last_seq).await;
    assert_eq!(resumed["type"], "resumed");
    alice.send(json!({"type": "chat", "text": "once", "id": "c1"})).await;
    assert_eq!(alice.recv_type("ack").await["ref"], "c1");
    bob.send(json!({"type": "ping", "id": "barrier"})).await;
    let mut next = bob.recv().await;
    while next["type"] == "peer_disconnected" || next["type"] == "peer_resumed" {
        next = bob.recv().await;
    }
    assert_eq!(next["type"], "pong", "the re-sent chat was not delivered again: {next}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_confirms_what_it_has_lets_the_room_forget_it() {
    let mut s = TestServer::start().await;
    let (mut alice, _) = s.joined("alice", "confirm-room").await;
    let (mut bob, bob_token, resume_token) = join_resumable(&s, "bob", "confirm-room").await;
    alice.recv_type("peer_joined").await;
    for i in 0..3 {
        alice.send(json!({"type": "offer", "peerId": bob.peer_id, "sdp": format!("o{i}")})).await;
        assert_eq!(bob.recv_type("offer").await["sdp"], format!("o{i}"));
    }
    // Bob confirms everything he has; the room forgets it.
    let confirmed = bob.last_seq;
    bob.send(json!({"type": "ping", "id": 1, "lastSeq": confirmed})).await;
    bob.recv_type("pong").await;
    let (bob_id, last_seq) = drop_connection(bob);
    alice.recv_type("peer_disconnected").await;
    alice.send(json!({"type": "offer", "peerId": bob_id, "sdp": "after"})).await;

    // Resuming from before what he confirmed cannot be served any more...
    let mut late = Client::connect(s.addr, &bob_token).await;
    late.send(json!({"type": "resume", "sessionId": bob_id, "resumeToken": resume_token, "lastSeq": confirmed - 2}))
        .await;
    let failed = late.recv().await;
    assert_eq!((failed["type"].as_str(), failed["reason"].as_str()), (Some("resume_failed"), Some("too_far_behind")));
    // ...and from what he really has, it is.
    let (mut bob, resumed) = resume(s.addr, &bob_token, &bob_id, &resume_token, last_seq).await;
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    assert_eq!(resumed["replayed"], 1);
    assert_eq!(bob.recv().await["sdp"], "after");
    s.stop().await;
}
