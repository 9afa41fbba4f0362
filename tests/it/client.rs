//! The Rust client crate (`switchboard-client`) against a real server: joining and relaying
//! with acks and receipts, a refused token, a dropped socket that resumes without losing or
//! repeating anything, and a resume that falls back to a fresh join after a server restart.

use crate::support::{TestServer, WAIT};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchboard_client::{Backoff, Client, ClientConfig, Code, Event, JoinOptions, MessageId};

fn ws_url(s: &TestServer) -> String {
    format!("ws://{}/ws/signal", s.addr)
}

/// A config with quick reconnects, so tests do not wait on long backoffs.
async fn config(s: &TestServer, user: &str) -> ClientConfig {
    let mut c = ClientConfig::new(ws_url(s), s.token(json!({"userId": user})).await);
    c.reconnect = Backoff { initial: Duration::from_millis(20), max: Duration::from_millis(200), ..Backoff::default() };
    c.seed = Some(7);
    c
}

/// Waits (bounded) for the first event `pick` accepts, skipping the others.
async fn until<T>(client: &mut Client, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, client.next_event())
            .await
            .unwrap_or_else(|_| panic!("no {what} in time"))
            .unwrap_or_else(|| panic!("the client stopped before {what}"));
        if let Some(t) = pick(&event) {
            return t;
        }
    }
}

/// A client whose first message is its join.
async fn joined(s: &TestServer, user: &str, room: &str) -> (Client, String) {
    let (client, joined) =
        Client::connect_to_room(config(s, user).await, room, JoinOptions::default()).await.expect("connect and join");
    (client, joined.peer_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_relay_with_ack_and_receipt_and_chat_is_acknowledged() {
    let mut s = TestServer::start().await;
    // Connected first (a ping proves the token), then joined: the join is not the connection's
    // first frame, and the numbering must still rise by one.
    let mut alice = Client::connect(config(&s, "alice").await).await.expect("connect");
    let alice_id = alice.join("crate-relay", JoinOptions::default()).await.expect("join").peer_id;
    let (mut bob, bob_id) = joined(&s, "bob", "crate-relay").await;
    let newcomer = until(&mut alice, "peer_joined", |e| match e {
        Event::PeerJoined { peer_id, .. } => Some(peer_id.clone()),
        _ => None,
    })
    .await;
    assert_eq!(newcomer, bob_id);

    let id = alice.send_relay(&bob_id, "offer", json!({"sdp": "v=0 hello"})).expect("send");
    let (kind, from, msg_id, sdp) = until(&mut bob, "the offer", |e| match e {
        Event::Relayed { kind, from, msg_id, payload } => {
            Some((kind.clone(), from.clone(), msg_id.clone(), payload["sdp"].clone()))
        }
        _ => None,
    })
    .await;
    assert_eq!((kind.as_str(), from.as_str(), sdp), ("offer", alice_id.as_str(), json!("v=0 hello")));
    assert_eq!(msg_id, Some(json!(id.0)));
    until(&mut alice, "the ack", |e| matches!(e, Event::Acked(a) if *a == id).then_some(())).await;
    until(&mut alice, "the receipt", |e| matches!(e, Event::Delivered(d) if *d == id).then_some(())).await;

    let ack = alice.send_chat("hello bob").await.expect("chat acknowledged");
    assert_eq!(ack["type"], "ack");
    let text = until(&mut bob, "the chat", |e| match e {
        Event::Chat(m) => Some(m["text"].clone()),
        _ => None,
    })
    .await;
    assert_eq!(text, "hello bob");

    let pong = bob.request(json!({"type": "ping"})).await.expect("pong");
    assert_eq!(pong["type"], "pong");
    // A refused request fails with the server's code, and the client goes on.
    let refused = bob.request(json!({"type": "offer", "peerId": "0000000000000000", "sdp": "x"})).await;
    assert_eq!(refused.expect_err("unknown peer").code(), Some(&Code::PeerNotFound));

    bob.leave().await.expect("leave");
    until(&mut alice, "peer_left", |e| {
        matches!(e, Event::PeerLeft { peer_id, .. } if *peer_id == bob_id).then_some(())
    })
    .await;
    alice.close().await;
    bob.close().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_fails_connect_with_its_code() {
    let mut s = TestServer::start().await;
    let err = Client::connect(ClientConfig::new(ws_url(&s), "not-a-token")).await.expect_err("refused");
    assert_eq!(err.code(), Some(&Code::TokenInvalid), "{err}");
    let err = Client::connect_to_room(ClientConfig::new(ws_url(&s), "not-a-token"), "r", JoinOptions::default())
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Some(&Code::TokenInvalid), "{err}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_sockets_resume_and_nothing_is_lost_or_repeated() {
    const N: u64 = 60;
    let mut s = TestServer::start().await;
    let (mut alice, _) = joined(&s, "alice", "crate-resume").await;
    let (mut bob, bob_id) = joined(&s, "bob", "crate-resume").await;

    let mut ids: Vec<MessageId> = Vec::new();
    for i in 0..N {
        ids.push(alice.send_relay(&bob_id, "offer", json!({"sdp": format!("m{i}")})).expect("send"));
        if i == 20 {
            alice.drop_socket().expect("drop");
        }
        if i == 40 {
            bob.drop_socket().expect("drop");
        }
        // Pace the stream so that the drops land between messages in flight.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Bob gets every message once, in order, whatever broke in between.
    let mut got: Vec<String> = Vec::new();
    let mut bob_resumed = false;
    while (got.len() as u64) < N {
        until(&mut bob, "the offers", |e| {
            match e {
                Event::Relayed { payload, .. } => got.push(payload["sdp"].as_str().unwrap_or_default().to_owned()),
                Event::Reconnected { resumed, .. } => {
                    assert!(*resumed, "bob resumes");
                    bob_resumed = true;
                }
                Event::SeqGap { .. } => panic!("bob saw a seq gap: {e:?}"),
                _ => return None,
            }
            Some(())
        })
        .await;
    }
    let expected: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(got, expected);
    assert!(bob_resumed, "bob resumed his session");
    // Alice resumed (not a fresh join) and every message was confirmed delivered.
    let mut delivered = std::collections::BTreeSet::new();
    let mut alice_resumed = None;
    while (delivered.len() as u64) < N {
        until(&mut alice, "the receipts", |e| {
            match e {
                Event::Delivered(id) => {
                    delivered.insert(*id);
                }
                Event::Reconnected { resumed, .. } => alice_resumed = Some(*resumed),
                Event::SeqGap { .. } => panic!("alice saw a seq gap: {e:?}"),
                _ => return None,
            }
            Some(())
        })
        .await;
    }
    assert_eq!(alice_resumed, Some(true), "alice resumed her session");
    assert_eq!(delivered.into_iter().collect::<Vec<_>>(), ids);
    // Nothing more arrives for Bob: no repeat reached the application.
    bob.request(json!({"type": "ping"})).await.expect("pong");
    while let Some(e) = bob.try_next_event() {
        assert!(!matches!(e, Event::Relayed { .. }), "a repeat reached bob: {e:?}");
    }
    alice.close().await;
    bob.close().await;
    s.stop().await;
}

/// A client in `crate-restart` that asks `live` for the servers' URLs at each reconnect.
async fn following(live: &Arc<Mutex<Vec<String>>>, user: &str, s: &TestServer) -> (Client, String) {
    let mut c = config(s, user).await;
    let urls = live.clone();
    c.live_urls = Some(Arc::new(move || urls.lock().expect("urls").clone()));
    let (client, joined) = Client::connect_to_room(c, "crate-restart", JoinOptions::default()).await.expect("join");
    (client, joined.peer_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_falls_back_to_a_fresh_join_after_the_server_restarts() {
    let mut first = TestServer::start().await;
    // The clients ask this list at each reconnect: the restarted server has a new address.
    let live = Arc::new(Mutex::new(vec![ws_url(&first)]));
    let (mut alice, old_alice) = following(&live, "alice", &first).await;
    let (mut bob, old_bob) = following(&live, "bob", &first).await;

    first.stop().await;
    let second = TestServer::start().await;
    *live.lock().expect("urls") = vec![ws_url(&second)];

    // Both come back with fresh sessions (the new server knows none), in the same room.
    let mut fresh = Vec::new();
    for client in [&mut alice, &mut bob] {
        let mut peer = None;
        let resumed = until(client, "the reconnect", |e| match e {
            Event::Joined(j) => {
                peer = Some(j.peer_id.clone());
                None
            }
            Event::Reconnected { resumed, .. } => Some(*resumed),
            _ => None,
        })
        .await;
        assert!(!resumed, "a restarted server cannot resume the session");
        fresh.push(peer.expect("a fresh joined before reconnected"));
    }
    assert_ne!(fresh[0], old_alice);
    assert_ne!(fresh[1], old_bob);

    // The new sessions work: Alice reaches Bob's new peer id.
    alice.send_relay(&fresh[1], "offer", json!({"sdp": "after restart"})).expect("send");
    let from = until(&mut bob, "the offer", |e| match e {
        Event::Relayed { from, .. } => Some(from.clone()),
        _ => None,
    })
    .await;
    assert_eq!(from, fresh[0]);
    alice.close().await;
    bob.close().await;
    let mut second = second;
    second.stop().await;
}
