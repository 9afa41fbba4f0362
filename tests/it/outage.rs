//! A database outage on a single node: `/readyz` fails, new joins get a clear `unavailable`
//! error, calls in progress keep relaying signaling, and what happened meanwhile (a leave) is
//! recorded once the database is back.

use crate::support::{TestServer, fresh_postgres};
use serde_json::json;
use std::time::Duration;

/// Opens or closes database `name` to new connections and ends the ones it has.
async fn outage(base: &str, name: &str, down: bool) {
    use sqlx::Connection;
    let mut admin = sqlx::AnyConnection::connect(base).await.expect("admin connection");
    sqlx::query(&format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {}", !down))
        .execute(&mut admin)
        .await
        .expect("alter");
    if down {
        sqlx::query(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
            .execute(&mut admin)
            .await
            .expect("terminate");
    }
    let _ = admin.close().await;
}

async fn ready(s: &TestServer) -> u16 {
    s.http.get(s.url("/readyz")).send().await.expect("get").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_stops_joins_but_not_calls() {
    let Some(url) = fresh_postgres("a_database_outage_stops_joins_but_not_calls").await else { return };
    let base = std::env::var("SWITCHBOARD_TEST_DATABASE_URL").expect("set when fresh_postgres returned a URL");
    let name = url.rsplit('/').next().expect("db name").to_owned();
    let db = url.clone();
    let mut s = TestServer::start_with(move |c| c.database.url = Some(db)).await;
    let (mut alice, _) = s.joined("alice", "outage-room").await;
    let (mut bob, _) = s.joined("bob", "outage-room").await;
    let (mut carol, _) = s.joined("carol", "outage-room").await;
    assert_eq!(ready(&s).await, 200);

    outage(&base, &name, true).await;
    assert_eq!(ready(&s).await, 503, "not ready while the database is down");

    // The call goes on.
    alice.send(json!({"type": "offer", "peerId": bob.peer_id, "sdp": "during-outage"})).await;
    assert_eq!(bob.recv_type("offer").await["sdp"], "during-outage");
    // A new join is refused with a reason the client can act on.
    let mut dave = s.client("dave").await;
    dave.send(json!({"type": "join", "roomId": "outage-room", "id": "j"})).await;
    let e = dave.recv_type("error").await;
    assert_eq!((e["code"].as_str(), e["ref"].as_str()), (Some("unavailable"), Some("j")), "{e}");
    // A leave is seen by the others at once, and recorded later.
    carol.send(json!({"type": "leave"})).await;
    carol.recv_type("left").await;
    assert_eq!(alice.recv_type("peer_left").await["peerId"], carol.peer_id.as_str());
    bob.send(json!({"type": "answer", "peerId": alice.peer_id, "sdp": "still-relaying"})).await;
    assert_eq!(alice.recv_type("answer").await["sdp"], "still-relaying");

    outage(&base, &name, false).await;
    let mut recovered = false;
    for _ in 0..100 {
        if ready(&s).await == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "ready again once the database is back");
    let store = switchboard::store::Store::open(&url, 1, "observer").await.expect("store");
    let mut recorded = false;
    for _ in 0..100 {
        let left = store
            .events("outage-room")
            .await
            .expect("events")
            .into_iter()
            .filter(|e| e.kind == "participant.left")
            .count();
        if left == 1 {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recorded, "the leave made during the outage is recorded after it");
    dave.send(json!({"type": "join", "roomId": "outage-room"})).await;
    dave.recv_type("joined").await;
    s.stop().await;
}
