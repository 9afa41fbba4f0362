//! The proof that a call connects: two real WebRTC peers (the `webrtc` crate, driven by
//! `webrtc_peers.rs`) exchange their offer, answer and trickled ICE candidates through a running
//! Switchboard, open a data channel, talk both ways, then renegotiate on the live connection
//! (an audio track is added) and keep talking. Peers bind and gather on 127.0.0.1 only, with no
//! STUN server.

use crate::support::TestServer;
use crate::webrtc_peers::{call, connect, exchange};
use anyhow::{Result, ensure};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_webrtc_peers_connect_through_switchboard() -> Result<()> {
    let mut s = TestServer::start().await;
    let (alice, _) = s.joined("alice", "webrtc-room").await;
    let (bob, _) = s.joined("bob", "webrtc-room").await;
    call(alice, bob).await?;
    s.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_connects_across_three_nodes() -> Result<()> {
    use crate::cluster::{join_at, member, room_on, until};
    let Some(db) = crate::support::fresh_postgres("a_call_connects_across_three_nodes").await else { return Ok(()) };
    let (n1, _d1) = member(&db, "n1", &[], &[]);
    let (n2, _d2) = member(&db, "n2", &[&n1], &[]);
    let (n3, _d3) = member(&db, "n3", &[&n1], &[]);
    for n in [&n1, &n2, &n3] {
        until(n, "formed", |v| v.len() == 3 && v.values().all(|s| s == "up")).await;
    }
    // A room whose placement is n3: Alice connects to n1, Bob to n2.
    let room = room_on("n3", "call");
    let (alice, _) = join_at(n1.addr, "alice", &room).await;
    let (bob, _) = join_at(n2.addr, "bob", &room).await;
    let lease = crate::cluster::lease_of(&n3, &room).await;
    ensure!(lease["nodeId"] == "n3", "the room lives on n3: {lease}");
    call(alice, bob).await
}

/// Media is peer to peer: when the node that owns the room dies, the data channel keeps
/// working, and signaling comes back (the room re-homed on a survivor) for a renegotiation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_keeps_its_data_channel_through_the_owners_death() -> Result<()> {
    use crate::cluster::{fast_trio, join_at, lease_of, room_on};
    let Some(db) = crate::support::fresh_postgres("a_call_keeps_its_data_channel_through_the_owners_death").await
    else {
        return Ok(());
    };
    let (_cfg, [(n1, _d1), (n2, _d2), (mut n3, _d3)]) = fast_trio(&db).await;
    let room = room_on("n3", "failover-call");
    let (alice, _) = join_at(n1.addr, "alice", &room).await;
    let (bob, _) = join_at(n2.addr, "bob", &room).await;
    let mut call = connect(alice, bob).await?;

    n3.kill();
    // The data channel does not need the server.
    exchange(&call.dc_a, &call.dc_b, "while the owner is dead", "still talking").await?;
    // Signaling comes back: the offer is held by Alice's edge until the room serves again.
    call.renegotiate_with_audio().await?;
    exchange(&call.dc_a, &call.dc_b, "after the failover", "and after renegotiation").await?;
    let lease = lease_of(&n1, &room).await;
    ensure!(lease["nodeId"] != "n3", "the room moved to a survivor: {lease}");
    call.hang_up().await
}
