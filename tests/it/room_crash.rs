//! A Room actor that panics is restarted by its supervisor from the store; its participants
//! stay in the room and keep talking.

use crate::support::TestServer;
use ractor::rpc::CallResult;
use serde_json::json;
use std::time::Duration;
use switchboard_actors::RoomId;
use switchboard_actors::room::RoomMsg;
use switchboard_actors::room_supervisor::RoomSupervisorMsg;

async fn room_actor(s: &TestServer, room: &str) -> Option<ractor::ActorRef<RoomMsg>> {
    let found = s
        .app()
        .rooms
        .call(|reply| RoomSupervisorMsg::Lookup { room: RoomId::new(room), reply }, Some(Duration::from_secs(5)))
        .await;
    match found {
        Ok(CallResult::Success(r)) => r,
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_room_restarts_with_its_participants() {
    let mut s = TestServer::start().await;
    let (mut alice, _) = s.joined("alice", "crash-room").await;
    let (mut bob, _) = s.joined("bob", "crash-room").await;
    alice.send(json!({"type": "control", "action": "video_off"})).await;
    bob.recv_type("control").await;

    let before = room_actor(&s, "crash-room").await.expect("room runs");
    before.cast(RoomMsg::InjectFault).expect("cast");

    // Wait, bounded, for the supervisor to put a new actor in place.
    let mut after = None;
    for _ in 0..200 {
        if let Some(r) = room_actor(&s, "crash-room").await
            && r.get_id() != before.get_id()
        {
            after = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = after.expect("room restarted within 2 s");
    let info = match after.call(RoomMsg::Info, Some(Duration::from_secs(5))).await {
        Ok(CallResult::Success(info)) => info,
        other => panic!("room info: {other:?}"),
    };
    assert_eq!(info.participants.len(), 2, "participants survive the crash");
    let alice_info = info.participants.iter().find(|p| p.user_id.as_str() == "alice").expect("alice");
    assert!(alice_info.media.video_off, "media state restored from the store");
    assert_eq!(info.call_status.as_str(), "active");

    // Signaling flows through the restarted room in both directions.
    alice.send(json!({"type": "offer", "peerId": bob.peer_id, "sdp": "after-crash"})).await;
    assert_eq!(bob.recv_type("offer").await["sdp"], "after-crash");
    bob.send(json!({"type": "chat", "text": "still here"})).await;
    assert_eq!(alice.recv_type("chat").await["message"]["text"], "still here");

    let metrics = s.http.get(s.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("switchboard_actor_restarts_total{actor=\"room\"} 1"), "{metrics}");
    s.stop().await;
}
