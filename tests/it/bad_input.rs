//! Bad input gets a clear error code; the offender's connection stays usable where that
//! makes sense, and the other client in the room is never affected.

use crate::support::{Client, SECRET, TestServer};
use serde_json::{Value, json};
use switchboard::auth::{Authority, Claims, Grants, unix_now};
use switchboard::config::AuthConfig;

/// Bob still gets what Alice sends him.
async fn still_works(alice: &mut Client, bob: &mut Client) {
    alice.send(json!({"type": "offer", "peerId": bob.peer_id, "sdp": "still-alive"})).await;
    assert_eq!(bob.recv_type("offer").await["sdp"], "still-alive");
}

async fn expect_error(c: &mut Client, code: &str) -> Value {
    let e = c.recv_type("error").await;
    assert_eq!(e["code"], code, "{e}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_get_errors_and_the_room_goes_on() {
    let mut s = TestServer::start().await;
    let (mut alice, _) = s.joined("alice", "bad-room").await;
    let (mut bob, _) = s.joined("bob", "bad-room").await;

    alice.send_raw("{this is not json").await;
    expect_error(&mut alice, "bad_json").await;
    still_works(&mut alice, &mut bob).await;

    alice.send(json!({"type": "teleport", "id": 41})).await;
    assert_eq!(expect_error(&mut alice, "unknown_type").await["ref"], 41);

    alice.send(json!({"type": "offer", "peerId": bob.peer_id, "id": "no-sdp"})).await;
    let e = expect_error(&mut alice, "invalid_message").await;
    assert_eq!(e["ref"], "no-sdp");
    assert!(e["message"].as_str().expect("message").contains("sdp"));

    alice.send(json!({"type": "offer", "peerId": "nobody", "sdp": "x", "id": 7})).await;
    assert_eq!(expect_error(&mut alice, "peer_not_found").await["ref"], 7);

    alice.send(json!({"type": "join", "roomId": "bad-room"})).await;
    expect_error(&mut alice, "already_joined").await;

    alice.send(json!({"type": "overlay", "overlay": {"kind": "pointer", "x": 7, "y": 0}})).await;
    expect_error(&mut alice, "invalid_message").await;

    alice.send(json!({"type": "chat", "text": "x".repeat(2001)})).await;
    expect_error(&mut alice, "invalid_message").await;

    alice.ws.send_binary(vec![1u8, 2, 3]).await.expect("send binary");
    expect_error(&mut alice, "binary_unsupported").await;

    still_works(&mut alice, &mut bob).await;
    still_works(&mut bob, &mut alice).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_before_join_and_bad_room_ids() {
    let mut s = TestServer::start().await;
    let mut c = s.client("carol").await;
    c.send(json!({"type": "offer", "peerId": "p", "sdp": "x"})).await;
    expect_error(&mut c, "not_joined").await;
    c.send(json!({"type": "chat", "text": "hi"})).await;
    expect_error(&mut c, "not_joined").await;
    c.send(json!({"type": "join", "roomId": "../etc/passwd"})).await;
    expect_error(&mut c, "invalid_room_id").await;
    c.send(json!({"type": "join", "roomId": "fine-room"})).await;
    c.recv_type("joined").await;
    s.stop().await;
}

fn claims(user: &str, exp_in: i64, nbf_in: i64) -> Claims {
    let now = unix_now();
    Claims {
        iss: "switchboard".into(),
        aud: "switchboard".into(),
        sub: user.into(),
        exp: now + exp_in,
        nbf: now + nbf_in,
        iat: now,
        jti: "t".into(),
        room: None,
        name: None,
        grants: Grants::default(),
    }
}

async fn refused(s: &TestServer, token: &str, code: &str) {
    let mut c = Client::connect(s.addr, token).await;
    expect_error(&mut c, code).await;
    let close = c.closed().await.expect("close frame");
    assert_eq!(u16::from(close.code), 1008);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_with_their_reason() {
    let mut s = TestServer::start().await;
    let (mut alice, _) = s.joined("alice", "token-room").await;
    let (mut bob, _) = s.joined("bob", "token-room").await;
    let ours = Authority::new(SECRET.as_bytes(), &AuthConfig::default());
    let forger = Authority::new(b"not-the-secret-not-the-secret-00", &AuthConfig::default());

    refused(&s, &ours.sign(&claims("eve", -120, -300)), "token_expired").await;
    refused(&s, &ours.sign(&claims("eve", 600, 300)), "token_not_yet_valid").await;
    refused(&s, &forger.sign(&claims("eve", 600, 0)), "token_invalid").await;
    let payload = ours.sign(&claims("eve", 600, 0)).split('.').nth(1).expect("payload").to_owned();
    refused(&s, &format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}."), "token_invalid").await;
    refused(&s, "garbage", "token_invalid").await;

    still_works(&mut alice, &mut bob).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_and_closed_rooms_refuse_joins() {
    let mut s = TestServer::start().await;
    let resp = s
        .http
        .post(s.url("/rooms"))
        .bearer_auth(s.token(json!({"userId": "host"})).await)
        .json(&json!({"roomId": "consult", "maxParticipants": 2, "invitees": ["doctor", "patient"]}))
        .send()
        .await
        .expect("create room");
    assert_eq!(resp.status(), 201);

    let (mut doctor, _) = s.joined("doctor", "consult").await;
    let mut intruder = s.client("intruder").await;
    intruder.send(json!({"type": "join", "roomId": "consult", "id": "j"})).await;
    assert_eq!(expect_error(&mut intruder, "room_forbidden").await["ref"], "j");
    let (mut patient, _) = s.joined("patient", "consult").await;

    // A third invitee slot does not exist: the room is full.
    let admin_token = s
        .token(json!({"userId": "ops", "grants": {"admin": true, "publish": true, "control": true, "chat": true}}))
        .await;
    let mut admin = Client::connect(s.addr, &admin_token).await;
    admin.send(json!({"type": "join", "roomId": "consult"})).await;
    expect_error(&mut admin, "room_full").await;

    // A token restricted to another room.
    let scoped = s.token(json!({"userId": "patient", "roomId": "elsewhere"})).await;
    let mut c = Client::connect(s.addr, &scoped).await;
    c.send(json!({"type": "join", "roomId": "consult"})).await;
    expect_error(&mut c, "room_forbidden").await;

    still_works(&mut doctor, &mut patient).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_close_with_1009() {
    let mut s = TestServer::start_with(|c| c.limits.max_message_bytes = 4096).await;
    let (mut alice, _) = s.joined("alice", "big-room").await;
    let (mut bob, _) = s.joined("bob", "big-room").await;
    let (mut mallory, _) = s.joined("mallory", "big-room").await;
    mallory.send(json!({"type": "offer", "peerId": alice.peer_id, "sdp": "x".repeat(10_000)})).await;
    let close = mallory.closed().await.expect("close frame");
    assert_eq!(u16::from(close.code), 1009);
    assert_eq!(alice.recv_type("peer_left").await["peerId"], mallory.peer_id.as_str());
    still_works(&mut alice, &mut bob).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_are_rate_limited_then_closed() {
    let mut s = TestServer::start_with(|c| {
        c.limits.messages_per_second = 20.0;
        c.limits.burst = 20.0;
        c.limits.max_rate_violations = 200;
    })
    .await;
    let (mut alice, _) = s.joined("alice", "flood-room").await;
    let (mut bob, _) = s.joined("bob", "flood-room").await;
    let (mut mallory, _) = s.joined("mallory", "flood-room").await;
    for i in 0..100 {
        mallory.send(json!({"type": "ping", "id": i})).await;
    }
    // Some pings are answered, then one rate_limited error (one per run of refusals).
    let mut pongs = 0;
    let mut limited = false;
    for _ in 0..100 {
        let m = mallory.recv().await;
        match m["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") => {
                assert_eq!(m["code"], "rate_limited");
                limited = true;
                break;
            }
            _ => {}
        }
    }
    assert!(limited, "the flood was not limited");
    assert!((15..100).contains(&pongs), "pongs before the limit: {pongs}");
    still_works(&mut alice, &mut bob).await;

    // Keep flooding past the violation cap: the connection is closed with 1008.
    for i in 0..400 {
        if mallory.ws.send_value(&json!({"type": "ping", "id": i})).await.is_err() {
            break;
        }
    }
    let close = mallory.closed().await;
    if let Some(f) = close {
        assert_eq!(u16::from(f.code), 1008);
    }
    still_works(&mut bob, &mut alice).await;
    s.stop().await;
}
