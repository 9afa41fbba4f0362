//! Delivery receipts: a relayed message is kept by its sender's edge until the target's
//! connection has written it, so it survives whatever dies in between. Here the target is
//! away when the room's node is killed, and resumes on another node.

use crate::cluster::{fast_trio, join_at, room_on};
use crate::resume::{drop_connection, resume};
use crate::support::{WAIT, fresh_postgres, node_token};
use serde_json::json;
use std::time::Instant;

const N: u64 = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_for_an_away_target_survive_the_rooms_death_and_arrive_once_each_with_a_receipt() {
    let Some(db) = fresh_postgres("receipts_survive_the_rooms_death").await else { return };
    let (_cfg, [(n1, _d1), (n2, _d2), (mut n3, _d3)]) = fast_trio(&db).await;
    let room = room_on("n3", "receipts");
    // Alice on n1 sends; Bob on n2 receives; the room lives on n3.
    let (mut alice, _) = join_at(n1.addr, "alice", &room).await;
    let (bob, joined) = join_at(n2.addr, "bob", &room).await;
    let bob_token = joined["resumeToken"].as_str().expect("token").to_owned();
    alice.recv_type("peer_joined").await;

    // Bob's connection drops: his session waits in the room for a resume.
    let (bob_id, bob_seq) = drop_connection(bob);
    alice.recv_type("peer_disconnected").await;

    // Alice sends offers, answers and candidates, each with an id and asking for a receipt;
    // the room (on n3) acknowledges every one, and keeps them for Bob.
    for i in 0..N {
        let msg = match i % 3 {
            0 => json!({"type": "offer", "peerId": bob_id, "sdp": format!("m{i}"), "id": i, "receipt": true}),
            1 => json!({"type": "answer", "peerId": bob_id, "sdp": format!("m{i}"), "id": i, "receipt": true}),
            _ => json!({"type": "ice-candidate", "peerId": bob_id, "candidate": {"candidate": format!("m{i}")},
                "id": i, "receipt": true}),
        };
        alice.send(msg).await;
    }
    let mut acked = std::collections::BTreeSet::new();
    for _ in 0..(4 * N) {
        if acked.len() as u64 == N {
            break;
        }
        let v = alice.recv().await;
        assert_ne!(v["type"], "delivered", "nothing can be delivered while Bob is away: {v}");
        if v["type"] == "ack" {
            acked.insert(v["ref"].as_u64().expect("numeric ref"));
        }
    }
    assert_eq!(acked.len() as u64, N, "every message acknowledged");

    // The room's node dies with everything it kept for Bob; Bob resumes on n1.
    n3.kill();
    let token = node_token(n1.addr, "bob").await;
    let (mut bob, resumed) = resume(n1.addr, &token, &bob_id, &bob_token, bob_seq).await;
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    let resumed_at = Instant::now();

    // Bob reads in a task of his own while Alice waits for her receipts.
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        for _ in 0..(10 * N) {
            if got.len() as u64 == N {
                break;
            }
            let v = bob.recv().await;
            let kind = v["type"].as_str().unwrap_or_default().to_owned();
            if matches!(kind.as_str(), "offer" | "answer" | "ice-candidate") {
                let text = v["sdp"].as_str().or(v["candidate"]["candidate"].as_str()).expect("payload").to_owned();
                got.push((text, kind));
            }
        }
        (got, bob)
    });
    let mut receipts = Vec::new();
    let started = Instant::now();
    while (receipts.len() as u64) < N && started.elapsed() < WAIT * 3 {
        let v = alice.recv().await;
        if v["type"] == "delivered" {
            receipts.push((v["ref"].as_u64().expect("numeric ref"), Instant::now()));
        }
    }
    let (got, mut bob) = reader.await.expect("bob's reader");
    let texts: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    let expected: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected, "every message arrived exactly once, in order");
    assert_eq!(got[0].1, "offer");
    assert_eq!(got[1].1, "answer");
    assert_eq!(got[2].1, "ice-candidate");
    // A receipt means the target's connection wrote the frame to its socket; when the test's
    // two readers see it is a matter of scheduling, so the order is checked on the server's
    // side of it: none came while Bob was away (above), one came for every message, in the
    // order of the messages, and each for a message Bob then had exactly once.
    let refs: Vec<u64> = receipts.iter().map(|r| r.0).collect();
    assert_eq!(refs, (0..N).collect::<Vec<_>>(), "one receipt per message, in order");
    assert!(receipts.iter().all(|(_, at)| *at >= resumed_at), "no receipt before Bob resumed");
    // Nothing more reaches Bob afterwards (no repeat).
    bob.send(json!({"type": "ping", "id": "barrier"})).await;
    let mut next = bob.recv().await;
    while next["type"] != "pong" {
        assert!(!matches!(next["type"].as_str(), Some("offer" | "answer" | "ice-candidate")), "a repeat: {next}");
        next = bob.recv().await;
    }
}
