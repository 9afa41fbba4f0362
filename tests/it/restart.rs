//! Restarts of a real `switchboard` process: what was stored survives; after a crash the
//! sessions of the calls in progress can be resumed on the restarted node (and those that are
//! not come back leave when their grace period runs out, ending the call); SIGTERM closes
//! sessions and calls cleanly and tells clients why.

use crate::support::{Client, Node, fresh_postgres, node_token};
use serde_json::{Value, json};

async fn join(node: &Node, user: &str, room: &str) -> (Client, Value) {
    let mut c = Client::connect(node.addr, &node_token(node.addr, user).await).await;
    c.send(json!({"type": "join", "roomId": room})).await;
    let joined = c.recv_type("joined").await;
    c.peer_id = joined["peerId"].as_str().expect("peerId").to_owned();
    (c, joined)
}

async fn get(node: &Node, path: &str, user: &str) -> Value {
    crate::support::get_json_as(&node.url(path), &node_token(node.addr, user).await).await
}

async fn kill_and_restart(extra: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    // A short grace period, so that the session nobody resumes leaves within the test.
    let config = dir.path().join("grace.toml");
    std::fs::write(&config, "[rooms]\nresume_grace = \"2s\"\n").expect("config");
    let config = config.to_str().expect("path").to_owned();
    let args: Vec<&str> = extra.iter().copied().chain(["--config", config.as_str()]).collect();
    let mut node = Node::spawn(dir.path(), &args);
    let (mut alice, joined) = join(&node, "alice", "durable").await;
    let (mut bob, _) = join(&node, "bob", "durable").await;
    alice.send(json!({"type": "chat", "text": "remember me"})).await;
    bob.recv_type("chat").await;
    assert_eq!(get(&node, "/rooms/durable", "alice").await["callStatus"], "active");

    node.kill();
    let node = Node::spawn(dir.path(), &args);
    assert!(node.log().contains("rooms of a run that did not stop cleanly are back"), "{}", node.log());
    // Alice comes back on a new connection and resumes her session: the call goes on.
    let token = node_token(node.addr, "alice").await;
    let (session, resume_token) =
        (joined["peerId"].as_str().expect("id"), joined["resumeToken"].as_str().expect("token"));
    let (mut again, resumed) = crate::resume::resume(node.addr, &token, session, resume_token, alice.last_seq).await;
    assert_eq!(resumed["type"], "resumed", "the session outlived the crash: {resumed}");
    assert_eq!(get(&node, "/rooms/durable", "alice").await["callStatus"], "active", "the call goes on");
    let chat = get(&node, "/rooms/durable/chat", "bob").await;
    assert_eq!(chat["messages"][0]["text"], "remember me");
    // Bob does not come back: his session leaves when its grace runs out, and Alice is told.
    let left = again.recv_type("peer_left").await;
    assert_eq!(left["peerId"], bob.peer_id.as_str());
    again.send(json!({"type": "leave"})).await;
    again.recv_type("left").await;
    let mut ended = false;
    for _ in 0..100 {
        if get(&node, "/rooms/durable", "alice").await["callStatus"] == "ended" {
            ended = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ended, "the call ends when the last one leaves");
    // The outbox has the whole story: two joins, two leaves, the call opened and closed.
    let url = match extra {
        ["--database-url", url] => url.to_string(),
        _ => format!("sqlite://{}?mode=rw", dir.path().join("switchboard.db").display()),
    };
    let store = switchboard::store::Store::open(&url, 1, "observer").await.expect("open the node's store");
    let kinds: Vec<String> = store.events("durable").await.expect("events").into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, crate::support::RECONCILED_CALL_EVENTS);
    store.close().await;

    // The room works again: a fresh join opens a new call.
    let (mut carol, _) = join(&node, "carol", "durable").await;
    carol.send(json!({"type": "ping"})).await;
    carol.recv_type("pong").await;
    assert!(!node.log().contains("panicked"), "{}", node.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_sessions_resume_after_its_restart_on_sqlite() {
    kill_and_restart(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_sessions_resume_after_its_restart_on_postgres() {
    let Some(url) = fresh_postgres("a_killed_nodes_sessions_resume_after_its_restart").await else { return };
    kill_and_restart(&["--database-url", &url]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_sessions_and_calls_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::spawn(dir.path(), &[]);
    let (mut alice, _) = join(&node, "alice", "orderly").await;
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
