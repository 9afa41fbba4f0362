//! Ownership at scale: what keeping rooms owned costs the database (node lease renewals only,
//! however many rooms), on a real PostgreSQL.

use crate::support::{TestServer, fresh_postgres, test_config};
use futures_util::StreamExt;
use std::time::{Duration, Instant};
use switchboard::app::App;
use switchboard_actors::RoomId;

/// Ownership writes (node rows, room rows) this node makes over `window`.
async fn writes_over(app: &App, window: Duration) -> (u64, u64) {
    let (n0, r0) = app.store.ownership_writes();
    tokio::time::sleep(window).await;
    let (n1, r1) = app.store.ownership_writes();
    (n1 - n0, r1 - r0)
}

async fn start_rooms(app: &App, from: usize, to: usize) {
    let started = futures_util::stream::iter(from..to)
        .map(|i| async move { switchboard::routing::host_here(app, &RoomId::new(format!("idle-{i}"))).await })
        .buffer_unordered(16)
        .filter(|r| std::future::ready(r.is_ok()))
        .count()
        .await;
    assert_eq!(started, to - from, "every room started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_writes_do_not_grow_with_idle_rooms() {
    let Some(db) = fresh_postgres("ownership_writes_do_not_grow_with_idle_rooms").await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.database.url = Some(db);
    config.cluster.addr = Some("127.0.0.1:0".parse().expect("addr"));
    config.rooms.idle_timeout = Duration::from_secs(3600);
    let server = TestServer::start_in(dir, config).await;
    let app = server.app().clone();
    let window = Duration::from_secs(10);

    start_rooms(&app, 0, 10).await;
    let (few_nodes, few_rooms) = writes_over(&app, window).await;
    let begun = Instant::now();
    start_rooms(&app, 10, 1000).await;
    eprintln!("990 rooms started in {:?}", begun.elapsed());
    let (many_nodes, many_rooms) = writes_over(&app, window).await;
    eprintln!(
        "over 10 s: 10 rooms: {few_nodes} node-row and {few_rooms} room-row writes; 1,000 rooms: {many_nodes} and {many_rooms}"
    );

    assert_eq!((few_rooms, many_rooms), (0, 0), "an owned room costs no writes while nothing changes hands");
    let renewals =
        (window.as_millis() / switchboard::node_lease::renew_every(app.config.cluster.lease_ttl).as_millis()) as u64;
    // However many rooms, the node's own row is written on the renewal schedule and no more
    // (a loaded machine may renew less often, never more); a per-room cost would be thousands.
    for n in [few_nodes, many_nodes] {
        assert!((1..=renewals + 3).contains(&n), "node lease renewals only (at most about {renewals}): {n}");
    }
    let owned = app.store.live_leases("", 2000).await.expect("room map");
    assert_eq!(owned.len(), 1000, "every room is still owned, by this node");
    assert!(owned.iter().all(|(_, node, _)| node == &app.config.node_id));
}
