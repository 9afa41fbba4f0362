//! Grants: each one refuses what it covers when a token lacks it (with `forbidden` and a
//! sentence, the connection serving on), and a token refreshed mid-call keeps the call going
//! with the new token's expiry and grants; one that is not refreshed ends its connection.

use crate::support::{Client, TestServer, get_json_as};
use serde_json::{Value, json};
use std::time::Duration;

const SENDRECV: &str =
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\n";
const RECVONLY: &str =
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\n";
const DATA: &str =
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";

async fn with_grants(s: &TestServer, user: &str, grants: Value) -> Client {
    let token = s.token(json!({"userId": user, "grants": grants})).await;
    Client::connect(s.addr, &token).await
}

/// Sends `msg` with an id; the error it gets, or `None` when it was taken (`ack`).
async fn outcome(c: &mut Client, mut msg: Value, id: u64) -> Option<Value> {
    msg["id"] = json!(id);
    c.send(msg).await;
    for _ in 0..50 {
        let v = c.recv().await;
        if v["ref"] == id && (v["type"] == "error" || v["type"] == "ack") {
            return (v["type"] == "error").then_some(v);
        }
    }
    panic!("no answer to {id}");
}

fn forbidden(e: Option<Value>, about: &str) {
    let e = e.unwrap_or_else(|| panic!("{about}: taken, should be refused"));
    assert_eq!(e["code"], "forbidden", "{about}: {e}");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("this token may not")), "{about}: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_grant_refuses_what_it_covers_and_nothing_else() {
    let mut s = TestServer::start().await;
    let (mut host, _) = s.joined("host", "grants").await;
    let host_peer = host.peer_id.clone();

    // A viewer (no canPublish) may receive media but not send it.
    let mut viewer = with_grants(&s, "viewer", json!({"canPublish": false})).await;
    viewer.send(json!({"type": "join", "roomId": "grants"})).await;
    viewer.recv_type("joined").await;
    let offer = |sdp: &str| json!({"type": "offer", "peerId": host_peer, "sdp": sdp});
    forbidden(outcome(&mut viewer, offer(SENDRECV), 1).await, "a sending offer");
    assert!(outcome(&mut viewer, offer(RECVONLY), 2).await.is_none(), "a receive-only offer is relayed");
    assert_eq!(host.recv_type("offer").await["sdp"], RECVONLY);

    // No canSubscribe: may send, not receive.
    let mut speaker = with_grants(&s, "speaker", json!({"canSubscribe": false})).await;
    speaker.send(json!({"type": "join", "roomId": "grants"})).await;
    speaker.recv_type("joined").await;
    forbidden(outcome(&mut speaker, offer(RECVONLY), 3).await, "a receiving offer");
    forbidden(outcome(&mut speaker, offer(SENDRECV), 4).await, "a sendrecv offer");

    // No canPublishData: no chat, control, overlay, end_call, data channel; media is fine.
    let mut quiet = with_grants(&s, "quiet", json!({"canPublishData": false})).await;
    quiet.send(json!({"type": "join", "roomId": "grants"})).await;
    quiet.recv_type("joined").await;
    forbidden(outcome(&mut quiet, json!({"type": "chat", "text": "hi"}), 5).await, "chat");
    forbidden(outcome(&mut quiet, json!({"type": "control", "action": "mute_audio"}), 6).await, "control");
    forbidden(outcome(&mut quiet, json!({"type": "end_call"}), 7).await, "end_call");
    forbidden(outcome(&mut quiet, offer(DATA), 8).await, "a data channel");
    assert!(outcome(&mut quiet, offer(SENDRECV), 9).await.is_none(), "media is allowed");

    // No roomJoin: neither rooms nor lobbies.
    let mut outsider = with_grants(&s, "outsider", json!({"roomJoin": false})).await;
    forbidden(outcome(&mut outsider, json!({"type": "join", "roomId": "grants"}), 10).await, "join");
    forbidden(outcome(&mut outsider, json!({"type": "lobby_join", "lobby": "l"}), 11).await, "lobby_join");

    // No roomCreate: an existing room yes, a new one no.
    let mut guest = with_grants(&s, "guest", json!({"roomCreate": false})).await;
    let refused = outcome(&mut guest, json!({"type": "join", "roomId": "no-such-room"}), 12).await;
    assert_eq!(refused.expect("refused")["code"], "room_not_found");
    guest.send(json!({"type": "join", "roomId": "grants"})).await;
    guest.recv_type("joined").await;

    // No roomAdmin: no operator APIs; an unknown grant name is refused at minting.
    let plain = s.token(json!({"userId": "plain"})).await;
    let r = s.http.get(s.url("/api/webhooks")).bearer_auth(&plain).send().await.expect("get");
    assert_eq!(r.status(), 403);
    let typo = s.http.post(s.url("/auth/token")).json(&json!({"userId": "x", "grants": {"canPublsh": false}}));
    assert_eq!(typo.send().await.expect("post").status(), 422);

    // Everyone else went on being served.
    host.send(json!({"type": "chat", "text": "still here"})).await;
    assert_eq!(viewer.recv_type("chat").await["message"]["text"], "still here");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_refreshed_mid_call_keeps_the_call_and_one_that_is_not_ends_the_connection() {
    let mut s = TestServer::start_with(|c| c.auth.leeway = Duration::ZERO).await;
    let (mut bob, _) = s.joined("bob", "refresh").await;

    // Four seconds of token: `refresh_token` a second before it runs out.
    let short = s.token(json!({"userId": "alice", "ttlSeconds": 4})).await;
    let mut alice = Client::connect(s.addr, &short).await;
    alice.send(json!({"type": "join", "roomId": "refresh"})).await;
    alice.recv_type("joined").await;
    let asked = alice.recv_type("refresh_token").await;
    let first_exp = asked["expiresAt"].as_i64().expect("expiresAt");

    // A token for someone else is refused; the right one is taken, with its grants.
    let mallory = s.token(json!({"userId": "mallory"})).await;
    alice.send(json!({"type": "token", "token": mallory, "id": "t1"})).await;
    assert_eq!(alice.recv_type("error").await["code"], "forbidden");
    let fresh = s.token(json!({"userId": "alice", "ttlSeconds": 60, "grants": {"canPublishData": false}})).await;
    alice.send(json!({"type": "token", "token": fresh, "id": "t2"})).await;
    let done = alice.recv_type("token_refreshed").await;
    assert!(done["expiresAt"].as_i64().expect("expiresAt") > first_exp, "{done}");
    // Past the first token's expiry (by the clock, not a guess) the call goes on, under the
    // new token's grants.
    let until_first_expiry = first_exp * 1000 + 200 - switchboard_actors::ports::now_ms();
    tokio::time::sleep(Duration::from_millis(until_first_expiry.max(0) as u64)).await;
    bob.send(json!({"type": "chat", "text": "you are still here"})).await;
    assert_eq!(alice.recv_type("chat").await["message"]["text"], "you are still here");
    forbidden(outcome(&mut alice, json!({"type": "chat", "text": "hi"}), 1).await, "chat after the new grants");

    // Carol does not refresh: her connection ends when the token does, with 4001.
    let brief = s.token(json!({"userId": "carol", "ttlSeconds": 2})).await;
    let mut carol = Client::connect(s.addr, &brief).await;
    carol.recv_type("refresh_token").await;
    assert_eq!(carol.recv_type("error").await["code"], "token_expired");
    let frame = carol.closed().await.expect("a close frame");
    assert_eq!(u16::from(frame.code), 4001);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_participant_is_in_the_room_without_the_others_seeing_it() {
    let mut s = TestServer::start().await;
    let (mut alice, _) = s.joined("alice", "observed").await;
    let alice_peer = alice.peer_id.clone();
    let mut observer = with_grants(&s, "supervisor", json!({"hidden": true, "canPublish": false})).await;
    observer.send(json!({"type": "join", "roomId": "observed"})).await;
    let seen = observer.recv_type("joined").await;
    let observer_peer = seen["peerId"].as_str().expect("peer").to_owned();
    // The observer sees everyone (itself too); nobody sees the observer.
    let names: Vec<&str> =
        seen["participants"].as_array().expect("list").iter().map(|p| p["userId"].as_str().unwrap_or("")).collect();
    assert_eq!(names, ["alice", "supervisor"], "{seen}");
    let (mut bob, bob_joined) = s.joined("bob", "observed").await;
    let others: Vec<&str> = bob_joined["participants"]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| p["userId"].as_str().unwrap_or(""))
        .collect();
    assert!(!others.contains(&"supervisor"), "{bob_joined}");
    assert!(!bob_joined["peers"].as_array().expect("peers").iter().any(|p| p == observer_peer.as_str()));
    let first = alice.recv_type("peer_joined").await;
    assert_eq!(first["participant"]["userId"], "bob", "the observer's arrival was not announced: {first}");
    // It can still watch: a receive-only offer reaches Alice.
    let offer = json!({"type": "offer", "peerId": alice_peer, "sdp": RECVONLY, "id": 1});
    observer.send(offer).await;
    assert_eq!(alice.recv_type("offer").await["peerId"], observer_peer.as_str());
    // Its leaving is not announced either: the next peer_left Alice sees is Bob's.
    observer.send(json!({"type": "leave"})).await;
    observer.recv_type("left").await;
    bob.send(json!({"type": "leave"})).await;
    assert_eq!(alice.recv_type("peer_left").await["peerId"], bob.peer_id.as_str());
    // Nor does a member reading the room.
    let alice_token = s.token(json!({"userId": "alice"})).await;
    let room = get_json_as(&s.url("/rooms/observed"), &alice_token).await;
    assert!(!room["participants"].as_array().expect("list").iter().any(|p| p["userId"] == "supervisor"), "{room}");
    s.stop().await;
}
