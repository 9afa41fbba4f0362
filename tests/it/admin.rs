//! The room admin API: an operator lists rooms and participants, mutes, changes grants live,
//! removes a participant, ends the call and closes the room; each participant sees what
//! happened, each action is audited (table and outbox), nobody else may do any of it; across
//! nodes the request reaches the room wherever it runs.

use crate::support::{Client, TestServer, fresh_postgres, get_json_as, node_token};
use serde_json::{Value, json};

async fn post(http: &reqwest::Client, url: String, token: &str, body: Value) -> (u16, Value) {
    let r = http.post(url).bearer_auth(token).json(&body).send().await.expect("post");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The next frame of `type` (others skipped), bounded.
async fn next(c: &mut Client, t: &str) -> Value {
    for _ in 0..50 {
        let v = c.recv().await;
        if v["type"] == t {
            return v;
        }
    }
    panic!("no {t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_mutes_restricts_removes_ends_and_closes_and_every_step_is_audited() {
    let mut s = TestServer::start().await;
    let ops = s.token(json!({"userId": "ops", "grants": {"roomAdmin": true}})).await;
    let plain = s.token(json!({"userId": "alice"})).await;
    let (mut alice, _) = s.joined("alice", "admin-room").await;
    let (mut bob, _) = s.joined("bob", "admin-room").await;
    let bob_peer = bob.peer_id.clone();
    let url = |p: &str| s.url(&format!("/api/rooms/admin-room{p}"));

    // Nobody but an operator.
    assert_eq!(post(&s.http, url("/end"), &plain, json!({})).await.0, 403);
    let r = s.http.get(s.url("/api/rooms")).bearer_auth(&plain).send().await.expect("get");
    assert_eq!(r.status(), 403);

    let rooms = get_json_as(&s.url("/api/rooms"), &ops).await;
    assert!(rooms["rooms"].as_array().is_some_and(|r| r.iter().any(|r| r["roomId"] == "admin-room")), "{rooms}");
    let room = get_json_as(&url(""), &ops).await;
    assert_eq!(room["participants"].as_array().map(Vec::len), Some(2), "{room}");

    // Mute: Bob is told, Alice sees Bob's microphone off.
    let (status, done) =
        post(&s.http, url(&format!("/participants/{bob_peer}/mute")), &ops, json!({"audio": true})).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(next(&mut bob, "muted_by_admin").await["audio"], true);
    let seen = next(&mut alice, "control").await;
    assert_eq!((seen["peerId"].as_str(), seen["action"].as_str()), (Some(bob_peer.as_str()), Some("mute_audio")));

    // Grants changed live: Bob may no longer chat.
    let body = json!({"grants": {"canPublishData": false}});
    assert_eq!(post(&s.http, url(&format!("/participants/{bob_peer}/grants")), &ops, body).await.0, 200);
    assert_eq!(next(&mut bob, "grants_changed").await["grants"]["canPublishData"], false);
    bob.send(json!({"type": "chat", "text": "can I?", "id": 1})).await;
    assert_eq!(next(&mut bob, "error").await["code"], "forbidden");

    // Removed: Bob is out (and may join again), Alice sees him leave.
    assert_eq!(post(&s.http, url(&format!("/participants/{bob_peer}/remove")), &ops, json!({})).await.0, 200);
    assert_eq!(next(&mut bob, "removed").await["reason"], "removed_by_admin");
    assert_eq!(next(&mut alice, "peer_left").await["reason"], "removed_by_admin");
    bob.send(json!({"type": "join", "roomId": "admin-room"})).await;
    next(&mut bob, "joined").await;
    let (status, _) = post(&s.http, url("/participants/nobody/remove"), &ops, json!({})).await;
    assert_eq!(status, 404);

    // End the call, then close the room: everyone out.
    assert_eq!(post(&s.http, url("/end"), &ops, json!({})).await.1["done"]["callEnded"], true);
    assert_eq!(next(&mut alice, "call_status").await["status"], "ended");
    let (_, closed) = post(&s.http, url("/close"), &ops, json!({})).await;
    assert_eq!(closed["done"]["removed"], 2, "{closed}");
    assert_eq!(next(&mut alice, "removed").await["reason"], "room_closed");

    // Audited, newest first, and on the outbox.
    let log = get_json_as(&s.url("/api/audit?room=admin-room"), &ops).await;
    let actions: Vec<&str> =
        log["entries"].as_array().expect("entries").iter().map(|e| e["action"].as_str().unwrap_or("")).collect();
    assert_eq!(actions, ["close", "end_call", "remove", "grants", "mute"], "{log}");
    assert!(log["entries"].as_array().expect("entries").iter().all(|e| e["actor"] == "ops"));
    let events = s.app().store.events("admin-room").await.expect("events");
    assert_eq!(events.iter().filter(|e| e.kind == "admin.action").count(), 5);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_on_any_node_reaches_the_room_where_it_runs() {
    use crate::cluster::{member, until};
    let Some(db) = fresh_postgres("an_operator_on_any_node_reaches_the_room").await else { return };
    let (n1, _d1) = member(&db, "n1", &[], &[]);
    let (n2, _d2) = member(&db, "n2", &[&n1], &[]);
    for n in [&n1, &n2] {
        until(n, "formed", |v| v.len() == 2 && v.values().all(|s| s == "up")).await;
    }
    let http = reqwest::Client::new();
    let mint = |addr: std::net::SocketAddr, user: &'static str| async move { node_token(addr, user).await };
    let mut alice = Client::connect(n1.addr, &mint(n1.addr, "alice").await).await;
    let mut bob = Client::connect(n2.addr, &mint(n2.addr, "bob").await).await;
    alice.send(json!({"type": "join", "roomId": "admin-cluster"})).await;
    next(&mut alice, "joined").await;
    bob.send(json!({"type": "join", "roomId": "admin-cluster"})).await;
    let bob_peer = next(&mut bob, "joined").await["peerId"].as_str().expect("peer").to_owned();
    let ops: Value = http
        .post(format!("http://{}/auth/token", n1.addr))
        .json(&json!({"userId": "ops", "grants": {"roomAdmin": true}}))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let ops = ops["token"].as_str().expect("token").to_owned();
    // From both nodes, whichever runs the room: one of them is the other one.
    for n in [&n1, &n2] {
        let room = get_json_as(&format!("http://{}/api/rooms/admin-cluster", n.addr), &ops).await;
        assert_eq!(room["participants"].as_array().map(Vec::len), Some(2), "{room}");
    }
    let body = json!({"grants": {"canPublishData": false}});
    let url = format!("http://{}/api/rooms/admin-cluster/participants/{bob_peer}/grants", n1.addr);
    assert_eq!(post(&http, url, &ops, body).await.0, 200);
    assert_eq!(next(&mut bob, "grants_changed").await["grants"]["canPublishData"], false, "bob on n2, asked on n1");
    let url = format!("http://{}/api/rooms/admin-cluster/participants/{bob_peer}/remove", n1.addr);
    assert_eq!(post(&http, url, &ops, json!({})).await.0, 200);
    next(&mut bob, "removed").await;
    assert_eq!(next(&mut alice, "peer_left").await["reason"], "removed_by_admin");
}
