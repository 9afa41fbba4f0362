//! The REST surface: token minting rules, room policy and reads, ICE servers, health, metrics.

use crate::support::TestServer;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_minting_needs_the_api_key_outside_dev_mode() {
    let mut s = TestServer::start_with(|c| {
        c.auth.api_key = Some("k".repeat(24));
        c.auth.dev_mode = Some(false);
    })
    .await;
    let url = s.url("/auth/token");
    let r = s.http.post(&url).json(&json!({"userId": "alice"})).send().await.expect("post");
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.expect("json")["code"], "api_key_required");
    let r = s
        .http
        .post(&url)
        .bearer_auth("wrong-key-wrong-key-wrong")
        .json(&json!({"userId": "alice"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 401);
    let r = s
        .http
        .post(&url)
        .bearer_auth("k".repeat(24))
        .json(&json!({"userId": "alice", "roomId": "r1"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert!(v["token"].as_str().is_some_and(|t| t.split('.').count() == 3));
    assert!(v["expiresAt"].as_i64().is_some_and(|e| e > switchboard::auth::unix_now()));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_readable_by_participants_only() {
    let mut s = TestServer::start().await;
    let (mut alice, _) = s.joined("alice", "read-room").await;
    alice.send(json!({"type": "chat", "text": "first"})).await;
    alice.recv_type("chat").await;
    alice.send(json!({"type": "chat", "text": "second"})).await;
    alice.recv_type("chat").await;

    let alice_token = s.token(json!({"userId": "alice"})).await;
    let room: Value = crate::support::get_json_as(&s.url("/rooms/read-room"), &alice_token).await;
    assert_eq!(room["callStatus"], "waiting");
    assert_eq!(room["participants"][0]["userId"], "alice");
    let chat: Value = crate::support::get_json_as(&s.url("/rooms/read-room/chat"), &alice_token).await;
    let texts: Vec<&str> =
        chat["messages"].as_array().expect("messages").iter().map(|m| m["text"].as_str().expect("text")).collect();
    assert_eq!(texts, ["first", "second"]);

    let stranger = s.token(json!({"userId": "stranger"})).await;
    let r = s.http.get(s.url("/rooms/read-room")).bearer_auth(&stranger).send().await.expect("get");
    assert_eq!(r.status(), 403);
    let r = s.http.get(s.url("/rooms/read-room/chat")).bearer_auth(&stranger).send().await.expect("get");
    assert_eq!(r.status(), 403);
    let r = s.http.get(s.url("/rooms/read-room")).send().await.expect("get");
    assert_eq!(r.status(), 401);
    let admin = s.token(json!({"userId": "ops", "grants": {"admin": true}})).await;
    let r = s.http.get(s.url("/rooms/read-room")).bearer_auth(&admin).send().await.expect("get");
    assert_eq!(r.status(), 200);

    let r = s
        .http
        .post(s.url("/rooms"))
        .bearer_auth(&admin)
        .json(&json!({"roomId": "read-room"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 409);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_servers_carry_turn_credentials() {
    let mut s = TestServer::start_with(|c| {
        c.ice.stun_urls = vec!["stun:127.0.0.1:3478".into()];
        c.ice.turn_urls = vec!["turn:127.0.0.1:3478?transport=udp".into()];
        c.ice.turn_secret = Some("turn-shared-secret".into());
    })
    .await;
    let token = s.token(json!({"userId": "alice"})).await;
    let v: Value =
        s.http.get(s.url("/ice-servers")).bearer_auth(&token).send().await.expect("get").json().await.expect("json");
    let turn = &v["iceServers"][1];
    let username = turn["username"].as_str().expect("username");
    let (expiry, user) = username.split_once(':').expect("expiry:user");
    assert_eq!(user, "alice");
    assert!(expiry.parse::<i64>().expect("number") > switchboard::auth::unix_now());
    assert_eq!(turn["credential"], switchboard::ice::turn_password("turn-shared-secret", username));
    assert_eq!(v["iceServers"][0]["urls"][0], "stun:127.0.0.1:3478");

    let (_c, joined) = s.joined("bob", "ice-room").await;
    assert_eq!(joined["iceServers"][1]["urls"][0], "turn:127.0.0.1:3478?transport=udp");
    assert!(joined["iceServers"][1]["username"].as_str().expect("username").ends_with(":bob"));

    let r = s.http.get(s.url("/ice-servers")).send().await.expect("get");
    assert_eq!(r.status(), 401);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let mut s = TestServer::start().await;
    assert_eq!(s.http.get(s.url("/healthz")).send().await.expect("get").status(), 200);
    assert_eq!(s.http.get(s.url("/readyz")).send().await.expect("get").status(), 200);
    let (mut a, _) = s.joined("alice", "metrics-room").await;
    let (b, _) = s.joined("bob", "metrics-room").await;
    a.send(json!({"type": "offer", "peerId": b.peer_id, "sdp": "x"})).await;
    a.send(json!({"type": "nonsense"})).await;
    a.recv_type("error").await;
    let text = s.http.get(s.url("/metrics")).send().await.expect("get").text().await.expect("text");
    for needle in [
        "switchboard_ws_connections",
        "switchboard_rooms_active",
        "switchboard_room_participants",
        "switchboard_signaling_messages_total{type=\"offer\"}",
        "switchboard_signaling_errors_total{code=\"unknown_type\"}",
        "switchboard_join_seconds_bucket",
        "switchboard_relay_seconds_bucket",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    assert!(!text.contains("metrics-room"), "labels never carry ids");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_request_bodies_get_the_error_shape() {
    let mut s = TestServer::start().await;
    let url = s.url("/auth/token");
    let r = s.http.post(&url).header("content-type", "application/json").body("{oops").send().await.expect("post");
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.expect("json")["code"], "invalid_request");
    let r = s.http.post(&url).json(&json!({"userId": "a", "isAdmin": true})).send().await.expect("post");
    assert_eq!(r.json::<Value>().await.expect("json")["code"], "invalid_request", "unknown fields are refused");
    let r = s.http.post(&url).json(&json!({"userId": ""})).send().await.expect("post");
    assert_eq!(r.status(), 400);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_accepts_a_bearer_header() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut s = TestServer::start().await;
    let token = s.token(json!({"userId": "alice"})).await;
    let mut req = format!("ws://{}/ws/signal", s.addr).into_client_request().expect("request");
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    let (ws, _) = tokio_tungstenite::connect_async(req).await.expect("connect");
    let mut c = crate::support::Client::over(ws);
    c.send(json!({"type": "join", "roomId": "bearer-room"})).await;
    assert_eq!(c.recv_type("joined").await["roomId"], "bearer-room");
    s.stop().await;
}
