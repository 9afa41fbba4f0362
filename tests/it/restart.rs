//! Restarts of a real `switchboard` process: what was stored survives, a call that was
//! active when the process was killed is reconciled at the next start, and SIGTERM closes
//! sessions and calls cleanly and tells clients why.

use crate::support::{Client, Node, fresh_postgres, node_token};
use serde_json::{Value, json};

async fn join(node: &Node, user: &str, room: &str) -> Client {
    let mut c = Client::connect(node.addr, &node_token(node.addr, user).await).await;
    c.send(json!({"type": "join", "roomId": room})).await;
    let joined = c.recv_type("joined").await;
    c.peer_id = joined["peerId"].as_str().expect("peerId").to_owned();
    c
}

async fn get(node: &Node, path: &str, user: &str) -> Value {
    crate::support::get_json_as(&node.url(path), &node_token(node.addr, user).await).await
}

async fn kill_and_restart(extra: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::spawn(dir.path(), extra);
    let mut alice = join(&node, "alice", "durable").await;
    let mut bob = join(&node, "bob", "durable").await;
    alice.send(json!({"type": "chat", "text": "remember me"})).await;
    bob.recv_type("chat").await;
    assert_eq!(get(&node, "/rooms/durable", "alice").await["callStatus"], "active");

    node.kill();
    let node = Node::spawn(dir.path(), extra);
    let room = get(&node, "/rooms/durable", "alice").await;
    assert_eq!(room["callStatus"], "ended", "the call active at the crash is reconciled: {room}");
    let chat = get(&node, "/rooms/durable/chat", "bob").await;
    assert_eq!(chat["messages"][0]["text"], "remember me");
    // The outbox has the whole story, the reconciliation included.
    let url = match extra {
        ["--database-url", url] => url.to_string(),
        _ => format!("sqlite://{}?mode=rw", dir.path().join("switchboard.db").display()),
    };
    let store = switchboard::store::Store::open(&url, 1, "observer").await.expect("open the node's store");
    let kinds: Vec<String> = store.events("durable").await.expect("events").into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, crate::support::RECONCILED_CALL_EVENTS);
    store.close().await;
    assert!(node.log().contains("closed sessions and calls left open by an earlier run"), "{}", node.log());

    // The room works again: a fresh join opens a new call.
    let (mut carol, _) = (join(&node, "carol", "durable").await, ());
    carol.send(json!({"type": "ping"})).await;
    carol.recv_type("pong").await;
    assert!(!node.log().contains("panicked"), "{}", node.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_restarts_and_reconciles_on_sqlite() {
    kill_and_restart(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_restarts_and_reconciles_on_postgres() {
    let Some(url) = fresh_postgres("killed_node_restarts_and_reconciles_on_postgres").await else { return };
    kill_and_restart(&["--database-url", &url]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_sessions_and_calls_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::spawn(dir.path(), &[]);
    let mut alice = join(&node, "alice", "orderly").await;
    let _bob = join(&node, "bob", "orderly").await;
    let status = node.terminate();
    assert!(status.success(), "exit status {status:?}\n{}", node.log());
    let close = alice.closed().await.expect("close frame");
    assert_eq!(u16::from(close.code), 1001);

    let node = Node::spawn(dir.path(), &[]);
    assert!(
        !node.log().contains("left open by an earlier run"),
        "a clean stop leaves nothing to reconcile:\n{}",
        node.log()
    );
    let room = get(&node, "/rooms/orderly", "alice").await;
    assert_eq!(room["callStatus"], "ended");
}
