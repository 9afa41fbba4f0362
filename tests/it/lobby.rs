//! Lobbies: people who wait are paired into fresh rooms (first come first served among those
//! who match, by tags), and leave, time out, drop and come back; across nodes the queue is one.

use crate::support::{Client, TestServer, fresh_postgres, get_json_as, node_token};
use serde_json::{Value, json};
use std::time::Duration;

async fn wait_in(s: &TestServer, user: &str, lobby: &str, tags: &[&str]) -> (Client, Value) {
    let mut c = s.client(user).await;
    c.send(json!({"type": "lobby_join", "lobby": lobby, "tags": tags})).await;
    let first = c.recv().await;
    (c, first)
}

/// `paired` then the room's `joined`; the room id.
async fn paired(c: &mut Client, lobby: &str) -> (String, Value) {
    let p = c.recv_type("paired").await;
    assert_eq!(p["lobby"], lobby, "{p}");
    let room = p["roomId"].as_str().expect("roomId").to_owned();
    let joined = c.recv_type("joined").await;
    assert_eq!(joined["roomId"], room.as_str(), "{joined}");
    c.peer_id = joined["peerId"].as_str().expect("peerId").to_owned();
    (room, joined)
}

async fn lobby_status(s: &TestServer, lobby: &str) -> Value {
    let token = s.token(json!({"userId": "observer"})).await;
    get_json_as(&s.url(&format!("/lobbies/{lobby}")), &token).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_are_paired_into_a_room_of_their_own() {
    let mut s = TestServer::start().await;
    let (mut alice, waiting) = wait_in(&s, "alice", "default", &[]).await;
    assert_eq!((waiting["type"].as_str(), waiting["ahead"].as_u64()), (Some("lobby_waiting"), Some(0)), "{waiting}");
    let status = lobby_status(&s, "default").await;
    assert_eq!(status["waiting"], 1, "{status}");

    let (mut bob, first) = wait_in(&s, "bob", "default", &[]).await;
    assert_eq!(first["type"], "paired", "bob finds alice waiting: {first}");
    let room = first["roomId"].as_str().expect("room").to_owned();
    let bob_joined = bob.recv_type("joined").await;
    let (alice_room, _) = paired(&mut alice, "default").await;
    assert_eq!(alice_room, room, "one room for the pair");
    // Both are in (whoever joined second saw the other there); they talk as in any room.
    assert!(bob_joined["peers"].as_array().is_some_and(|p| p.len() <= 1), "{bob_joined}");
    alice.send(json!({"type": "chat", "text": "hi stranger"})).await;
    assert_eq!(bob.recv_type("chat").await["message"]["text"], "hi stranger");
    assert_eq!(lobby_status(&s, "default").await["waiting"], 0, "nobody waits any more");

    // The room is theirs: nobody else may join it.
    let (mut carol, _) = (s.client("carol").await, ());
    carol.send(json!({"type": "join", "roomId": room, "id": 1})).await;
    let refused = carol.recv_type("error").await;
    assert_eq!(refused["code"], "room_forbidden", "{refused}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_waiting_match_wins_and_tags_must_meet() {
    let mut s = TestServer::start().await;
    let (mut en, _) = wait_in(&s, "en-speaker", "talk", &["en"]).await;
    let (mut fr, w) = wait_in(&s, "fr-speaker", "talk", &["fr"]).await;
    assert_eq!((w["type"].as_str(), w["ahead"].as_u64()), (Some("lobby_waiting"), Some(1)), "no shared tag: {w}");
    // Both match the newcomer; the one who waited longest is paired.
    let (mut both, first) = wait_in(&s, "bilingual", "talk", &["fr", "en"]).await;
    assert_eq!(first["type"], "paired", "{first}");
    let (room, _) = paired(&mut en, "talk").await;
    assert_eq!(first["roomId"], room.as_str(), "paired with the first to wait");
    both.recv_type("joined").await;
    // Someone with no tags matches anyone: the French speaker, who is left.
    let (mut anyone, first) = wait_in(&s, "anyone", "talk", &[]).await;
    assert_eq!(first["type"], "paired", "{first}");
    let (room, _) = paired(&mut fr, "talk").await;
    assert_eq!(first["roomId"], room.as_str());
    anyone.recv_type("joined").await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_timing_out_and_dropping_take_people_out_of_the_queue() {
    let mut s = TestServer::start_with(|c| {
        c.lobby.wait = Duration::from_millis(400);
        c.lobby.grace = Duration::from_secs(30);
    })
    .await;
    // A wait with nobody to meet ends in lobby_timeout.
    let (mut lonely, _) = wait_in(&s, "lonely", "quiet", &[]).await;
    let timeout = lonely.recv_type("lobby_timeout").await;
    assert_eq!(timeout["lobby"], "quiet");
    assert!(timeout["waitedMs"].as_u64().is_some_and(|w| w >= 400), "{timeout}");
    // lobby_leave takes someone out at once.
    let (mut shy, _) = wait_in(&s, "shy", "quiet", &[]).await;
    shy.send(json!({"type": "lobby_leave", "lobby": "quiet"})).await;
    assert_eq!(shy.recv_type("lobby_left").await["lobby"], "quiet");
    // One waiting on two connections at once is refused on the second.
    let (_first, _) = wait_in(&s, "twice", "busy", &[]).await;
    let (_second, refused) = wait_in(&s, "twice", "busy", &[]).await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("already_joined")),
        "{refused}"
    );
    // Someone whose connection dropped is not paired while gone...
    let (dropper, _) = wait_in(&s, "dropper", "flaky", &[]).await;
    drop(dropper);
    let mut gone = false;
    for _ in 0..100 {
        if lobby_status(&s, "flaky").await["waiting"] == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "a dropped connection's person is not counted as waiting");
    let (mut patient, w) = wait_in(&s, "patient", "flaky", &[]).await;
    assert_eq!(w["type"], "lobby_waiting", "not paired with someone gone: {w}");
    // ...and comes back within the grace period with their place: paired at once.
    let (mut back, first) = wait_in(&s, "dropper", "flaky", &[]).await;
    assert_eq!(first["type"], "paired", "{first}");
    back.recv_type("joined").await;
    let (room, _) = paired(&mut patient, "flaky").await;
    assert_eq!(first["roomId"], room.as_str());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lobby_messages_get_clear_errors() {
    let mut s = TestServer::start().await;
    let mut c = s.client("mallory").await;
    c.send(json!({"type": "lobby_join", "id": 1})).await;
    let e = c.recv_type("error").await;
    assert_eq!((e["code"].as_str(), e["ref"].as_u64()), (Some("invalid_message"), Some(1)), "{e}");
    let many: Vec<String> = (0..17).map(|i| format!("t{i}")).collect();
    c.send(json!({"type": "lobby_join", "lobby": "x", "tags": many, "id": 2})).await;
    assert_eq!(c.recv_type("error").await["code"], "invalid_message");
    c.send(json!({"type": "lobby_join", "lobby": "not a valid name!", "id": 3})).await;
    assert_eq!(c.recv_type("error").await["code"], "invalid_message");
    // In a room already: leave it first.
    c.send(json!({"type": "join", "roomId": "somewhere"})).await;
    c.recv_type("joined").await;
    c.send(json!({"type": "lobby_join", "lobby": "default", "id": 4})).await;
    assert_eq!(c.recv_type("error").await["code"], "already_joined");
    // A token for one room cannot wait in a lobby.
    let token = s.token(json!({"userId": "scoped", "roomId": "only-this"})).await;
    let mut scoped = Client::connect(s.addr, &token).await;
    scoped.send(json!({"type": "lobby_join", "lobby": "default", "id": 5})).await;
    assert_eq!(scoped.recv_type("error").await["code"], "room_forbidden");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_on_two_nodes_wait_in_one_queue() {
    use crate::cluster::{member, until};
    let Some(db) = fresh_postgres("people_on_two_nodes_wait_in_one_queue").await else { return };
    let (n1, _d1) = member(&db, "n1", &[], &[]);
    let (n2, _d2) = member(&db, "n2", &[&n1], &[]);
    for n in [&n1, &n2] {
        until(n, "formed", |v| v.len() == 2 && v.values().all(|s| s == "up")).await;
    }
    let join = |addr, user: &'static str| async move {
        let mut c = Client::connect(addr, &node_token(addr, user).await).await;
        c.send(json!({"type": "lobby_join", "lobby": "cluster"})).await;
        let first = c.recv().await;
        (c, first)
    };
    let (mut alice, w) = join(n1.addr, "alice").await;
    assert_eq!(w["type"], "lobby_waiting", "{w}");
    let (mut bob, first) = join(n2.addr, "bob").await;
    assert_eq!(first["type"], "paired", "bob, on n2, finds alice waiting on n1: {first}");
    bob.recv_type("joined").await;
    let (room, _) = paired(&mut alice, "cluster").await;
    assert_eq!(first["roomId"], room.as_str());
    alice.send(json!({"type": "chat", "text": "across nodes"})).await;
    assert_eq!(bob.recv_type("chat").await["message"]["text"], "across nodes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_people_on_three_nodes_pair_into_a_hundred_rooms() {
    use crate::cluster::{member, until};
    use std::collections::{BTreeMap, BTreeSet};
    let Some(db) = fresh_postgres("two_hundred_people_on_three_nodes_pair").await else { return };
    let (n1, _d1) = member(&db, "n1", &[], &[]);
    let (n2, _d2) = member(&db, "n2", &[&n1], &[]);
    let (n3, _d3) = member(&db, "n3", &[&n1], &[]);
    for n in [&n1, &n2, &n3] {
        until(n, "formed", |v| v.len() == 3 && v.values().all(|s| s == "up")).await;
    }
    let nodes = [n1.addr, n2.addr, n3.addr];
    let mut clients = Vec::new();
    for i in 0..200 {
        let addr = nodes[i % 3];
        let user = format!("person-{i:03}");
        let mut c = Client::connect(addr, &node_token(addr, &user).await).await;
        c.send(json!({"type": "lobby_join", "lobby": "crowd"})).await;
        clients.push((user, c));
    }
    // Everyone is paired exactly once: a hundred rooms of two different people.
    let mut rooms: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (user, c) in &mut clients {
        let p = c.recv_type("paired").await;
        rooms.entry(p["roomId"].as_str().expect("room").to_owned()).or_default().push(user.clone());
    }
    assert_eq!(rooms.len(), 100, "a hundred rooms");
    for (room, people) in &rooms {
        let distinct: BTreeSet<&String> = people.iter().collect();
        assert!(people.len() == 2 && distinct.len() == 2, "room {room} holds {people:?}");
    }
    let token = node_token(n2.addr, "observer").await;
    let status = get_json_as(&format!("http://{}/lobbies/crowd", n2.addr), &token).await;
    assert_eq!(status["waiting"], 0, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_waiting_people_are_not_paired_and_the_others_keep_their_places() {
    use crate::cluster::{member, until};
    let Some(db) = fresh_postgres("a_dead_nodes_waiting_people_are_not_paired").await else { return };
    let (n1, _d1) = member(&db, "n1", &[], &[]);
    let (n2, _d2) = member(&db, "n2", &[&n1], &[]);
    let (mut n3, _d3) = member(&db, "n3", &[&n1], &[]);
    for n in [&n1, &n2, &n3] {
        until(n, "formed", |v| v.len() == 3 && v.values().all(|s| s == "up")).await;
    }
    let wait = |addr, user: &'static str| async move {
        let mut c = Client::connect(addr, &node_token(addr, user).await).await;
        c.send(json!({"type": "lobby_join", "lobby": "mid-queue", "tags": ["x"]})).await;
        let first = c.recv().await;
        (c, first)
    };
    // Alice (tag x) waits on n1, then Carol (tag y, no match for Alice) on n3.
    let (mut alice, w) = wait(n1.addr, "alice").await;
    assert_eq!(w["type"], "lobby_waiting", "{w}");
    let mut carol = Client::connect(n3.addr, &node_token(n3.addr, "carol").await).await;
    carol.send(json!({"type": "lobby_join", "lobby": "mid-queue", "tags": ["y"]})).await;
    assert_eq!(carol.recv().await["type"], "lobby_waiting");
    // n3 dies with Carol's connection.
    n3.kill();
    until(&n2, "n3 down", |v| v.get("n3").is_some_and(|s| s == "down")).await;
    // Bob (tag x) on n2 is paired with Alice, whose place the death of n3 did not touch.
    let (mut bob, first) = wait(n2.addr, "bob").await;
    assert_eq!(first["type"], "paired", "{first}");
    bob.recv_type("joined").await;
    let (room, _) = paired(&mut alice, "mid-queue").await;
    assert_eq!(first["roomId"], room.as_str());
    // Dave (tag y) is not paired with Carol while she is gone...
    let mut dave = Client::connect(n2.addr, &node_token(n2.addr, "dave").await).await;
    dave.send(json!({"type": "lobby_join", "lobby": "mid-queue", "tags": ["y"]})).await;
    let w = dave.recv().await;
    assert_eq!(w["type"], "lobby_waiting", "not paired with someone whose node died: {w}");
    // ...and Carol, back on n1 within the grace period, takes her place and meets Dave.
    let mut back = Client::connect(n1.addr, &node_token(n1.addr, "carol").await).await;
    back.send(json!({"type": "lobby_join", "lobby": "mid-queue", "tags": ["y"]})).await;
    let first = back.recv().await;
    assert_eq!(first["type"], "paired", "{first}");
    back.recv_type("joined").await;
    let (room, _) = paired(&mut dave, "mid-queue").await;
    assert_eq!(first["roomId"], room.as_str());
}
