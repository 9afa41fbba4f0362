//! A client that stops reading: the server closes it with 4008 once its backlog passes the
//! configured limit, the others in its room keep receiving, and the bytes waiting for it never
//! exceed the limit (read from the server's own accounting).

use crate::support::{TestServer, WAIT};
use futures_util::StreamExt;
use serde_json::json;
use std::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const LIMIT: usize = 256 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_and_nobody_else_slows_down() {
    let mut s = TestServer::start_with(|c| {
        c.limits.max_queued_bytes = LIMIT;
        c.limits.messages_per_second = 100_000.0;
        c.limits.burst = 100_000.0;
    })
    .await;
    let (mut alice, _) = s.joined("alice", "slow-room").await;
    let (mut bob, _) = s.joined("bob", "slow-room").await;
    let (mut carol, _) = s.joined("carol", "slow-room").await;
    alice.recv_type("peer_joined").await;
    alice.recv_type("peer_joined").await;
    bob.recv_type("peer_joined").await;

    // Carol reads nothing from here on. Alice sends her large offers, and Bob small numbered
    // ones, until the server gives up on Carol (bounded: far more than any socket buffers).
    let big = "v=0\r\n".repeat(6000);
    let mut to_bob = 0u32;
    let mut worst = 0usize;
    let started = Instant::now();
    let overflowed = loop {
        let (most, closing) = s.app().edge.backlog();
        worst = worst.max(most);
        if closing > 0 {
            break true;
        }
        if to_bob >= 3000 || started.elapsed() > WAIT * 3 {
            break false;
        }
        alice.send(json!({"type": "offer", "peerId": carol.peer_id, "sdp": big})).await;
        alice.send(json!({"type": "offer", "peerId": bob.peer_id, "sdp": format!("bob {to_bob}")})).await;
        to_bob += 1;
    };
    assert!(overflowed, "the server never closed the client that stopped reading ({to_bob} rounds)");
    assert!(worst <= LIMIT, "{worst} bytes waited for one client; the limit is {LIMIT}");

    // Carol drains what reached her socket and finds the close code at the end.
    let mut code = None;
    for _ in 0..100_000 {
        match tokio::time::timeout(WAIT, carol.ws.get_mut().next()).await.expect("carol's socket ends in time") {
            Some(Ok(Message::Close(frame))) => {
                code = frame.map(|f| u16::from(f.code));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    assert_eq!(code, Some(4008), "carol is told why she was closed");

    // Bob got every one of his, in order, and sees Carol's session wait for a resume (Alice's
    // last offers may still have been on their way when Carol was closed: either order is fine).
    let (mut next, mut carol_away) = (0u32, false);
    for _ in 0..to_bob + 100 {
        if next == to_bob && carol_away {
            break;
        }
        let m = bob.recv().await;
        match m["type"].as_str() {
            Some("offer") => {
                assert_eq!(m["sdp"], format!("bob {next}"), "bob's offers arrive in order");
                next += 1;
            }
            Some("peer_disconnected") => {
                assert_eq!(m["peerId"], carol.peer_id.as_str());
                carol_away = true;
            }
            _ => {}
        }
    }
    assert_eq!(next, to_bob, "bob got all his offers");
    assert!(carol_away, "bob was told carol is away (her session waits for a resume)");
    alice.send(json!({"type": "answer", "peerId": bob.peer_id, "sdp": "still here"})).await;
    assert_eq!(bob.recv_type("answer").await["sdp"], "still here");
    s.stop().await;
}
